package dnsprovider

// More fakes of third-party provider APIs (see fakes_test.go for why and
// how they are reached).

import (
	"bytes"
	"crypto/sha1"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// fakeRoute53 is a fake of the AWS Route 53 REST/XML API (2013-04-01):
// hosted zones by name, list/change resource record sets, get change.
// Requests must carry a SigV4 Authorization header for the access key.
type fakeRoute53 struct {
	z         *txtZone
	accessKey string
}

func newFakeRoute53(zone, accessKey string) *fakeRoute53 {
	return &fakeRoute53{z: newTXTZone(zone), accessKey: accessKey}
}

func (f *fakeRoute53) apiHost() string   { return "route53.amazonaws.com" }
func (f *fakeRoute53) records() *txtZone { return f.z }

const r53NS = "https://route53.amazonaws.com/doc/2013-04-01/"

func r53Error(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(status)
	var m bytes.Buffer
	_ = xml.EscapeText(&m, []byte(msg))
	fmt.Fprintf(w, `<?xml version="1.0"?><ErrorResponse xmlns="%s"><Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>fake-req-1</RequestId></ErrorResponse>`,
		r53NS, code, m.String())
}

func r53Write(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "text/xml")
	_, _ = io.WriteString(w, xml.Header)
	_ = xml.NewEncoder(w).Encode(v)
}

type r53RecordSet struct {
	Name    string   `xml:"Name"`
	Type    string   `xml:"Type"`
	TTL     int      `xml:"TTL,omitempty"`
	Records []string `xml:"ResourceRecords>ResourceRecord>Value"`
}

type r53ChangeInfo struct {
	ID          string `xml:"Id"`
	Status      string `xml:"Status"`
	SubmittedAt string `xml:"SubmittedAt"`
}

func (f *fakeRoute53) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.Contains(r.Header.Get("Authorization"), "Credential="+f.accessKey+"/") {
		r53Error(w, http.StatusForbidden, "InvalidClientTokenId", "The security token included in the request is invalid.")
		return
	}
	const zoneID = "ZFAKE1"
	now := time.Now().UTC().Format(time.RFC3339)
	p := strings.TrimPrefix(r.URL.Path, "/2013-04-01/")
	switch {
	case r.Method == http.MethodGet && p == "hostedzonesbyname":
		type zone struct {
			ID      string `xml:"Id"`
			Name    string `xml:"Name"`
			Ref     string `xml:"CallerReference"`
			Private bool   `xml:"Config>PrivateZone"`
		}
		out := struct {
			XMLName   xml.Name `xml:"ListHostedZonesByNameResponse"`
			NS        string   `xml:"xmlns,attr"`
			Zones     []zone   `xml:"HostedZones>HostedZone"`
			Truncated bool     `xml:"IsTruncated"`
			MaxItems  int      `xml:"MaxItems"`
		}{NS: r53NS, MaxItems: 100}
		if dns.Fqdn(r.URL.Query().Get("dnsname")) == f.z.zone {
			out.Zones = append(out.Zones, zone{ID: "/hostedzone/" + zoneID, Name: f.z.zone, Ref: "fake"})
		}
		r53Write(w, out)
	case r.Method == http.MethodGet && p == "hostedzone/"+zoneID+"/rrset":
		out := struct {
			XMLName   xml.Name       `xml:"ListResourceRecordSetsResponse"`
			NS        string         `xml:"xmlns,attr"`
			Sets      []r53RecordSet `xml:"ResourceRecordSets>ResourceRecordSet"`
			Truncated bool           `xml:"IsTruncated"`
			MaxItems  int            `xml:"MaxItems"`
		}{NS: r53NS, MaxItems: 100}
		f.z.mu.Lock()
		for name, values := range f.z.txt {
			set := r53RecordSet{Name: name, Type: "TXT", TTL: 10}
			for _, v := range values {
				set.Records = append(set.Records, strconv.Quote(v))
			}
			out.Sets = append(out.Sets, set)
		}
		f.z.mu.Unlock()
		r53Write(w, out)
	case r.Method == http.MethodPost && p == "hostedzone/"+zoneID+"/rrset":
		if msg := f.z.failure(); msg != "" {
			r53Error(w, http.StatusForbidden, "AccessDenied", msg)
			return
		}
		var req struct {
			Changes []struct {
				Action string       `xml:"Action"`
				Set    r53RecordSet `xml:"ResourceRecordSet"`
			} `xml:"ChangeBatch>Changes>Change"`
		}
		if err := xml.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Changes) == 0 {
			r53Error(w, http.StatusBadRequest, "InvalidInput", fmt.Sprintf("could not parse the change batch: %v", err))
			return
		}
		for _, c := range req.Changes {
			var values []string
			for _, q := range c.Set.Records {
				v, err := strconv.Unquote(q)
				if err != nil || c.Set.Type != "TXT" || !f.z.inZone(c.Set.Name) {
					r53Error(w, http.StatusBadRequest, "InvalidChangeBatch", "Invalid Resource Record: "+q)
					return
				}
				values = append(values, v)
			}
			switch c.Action {
			case "UPSERT":
				f.z.set(c.Set.Name, values)
			case "DELETE":
				for _, v := range values {
					if !f.z.remove(c.Set.Name, v) {
						r53Error(w, http.StatusBadRequest, "InvalidChangeBatch", "Tried to delete resource record set "+c.Set.Name+" but the values provided do not match the current values")
						return
					}
				}
			default:
				r53Error(w, http.StatusBadRequest, "InvalidInput", "unsupported action "+c.Action)
				return
			}
		}
		r53Write(w, struct {
			XMLName xml.Name      `xml:"ChangeResourceRecordSetsResponse"`
			NS      string        `xml:"xmlns,attr"`
			Info    r53ChangeInfo `xml:"ChangeInfo"`
		}{NS: r53NS, Info: r53ChangeInfo{ID: "/change/CFAKE1", Status: "PENDING", SubmittedAt: now}})
	case r.Method == http.MethodGet && path.Dir(p) == "change":
		r53Write(w, struct {
			XMLName xml.Name      `xml:"GetChangeResponse"`
			NS      string        `xml:"xmlns,attr"`
			Info    r53ChangeInfo `xml:"ChangeInfo"`
		}{NS: r53NS, Info: r53ChangeInfo{ID: "/change/" + path.Base(p), Status: "INSYNC", SubmittedAt: now}})
	default:
		r53Error(w, http.StatusNotFound, "UnknownOperationException", "no route for "+r.Method+" "+r.URL.Path)
	}
}

// fakeGandi is a fake of Gandi's LiveDNS API v5 (TXT RRset get, put,
// delete), authenticated by a personal access token.
type fakeGandi struct {
	z     *txtZone
	token string
}

func newFakeGandi(zone, token string) *fakeGandi {
	return &fakeGandi{z: newTXTZone(zone), token: token}
}

func (f *fakeGandi) apiHost() string   { return "api.gandi.net" }
func (f *fakeGandi) records() *txtZone { return f.z }

func gandiError(w http.ResponseWriter, status int, object, msg string) {
	writeJSON(w, status, map[string]any{"code": status, "message": msg, "object": object, "cause": http.StatusText(status)})
}

func (f *fakeGandi) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		gandiError(w, http.StatusUnauthorized, "HTTPUnauthorized", "The server could not verify that you are authorized to access the URL requested.")
		return
	}
	// /v5/livedns/domains/{zone}/records/{name}/TXT
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/v5/livedns/"), "/")
	if len(parts) != 5 || parts[0] != "domains" || parts[2] != "records" || parts[4] != "TXT" || dns.Fqdn(parts[1]) != f.z.zone {
		gandiError(w, http.StatusNotFound, "HTTPNotFound", "The resource could not be found.")
		return
	}
	name := parts[3] + "." + f.z.zone
	if msg := f.z.failure(); msg != "" && r.Method != http.MethodGet {
		gandiError(w, http.StatusForbidden, "HTTPForbidden", msg)
		return
	}
	switch r.Method {
	case http.MethodGet:
		values := f.z.TXT(name)
		if len(values) == 0 {
			gandiError(w, http.StatusNotFound, "HTTPNotFound", "Can't find the DNS record "+parts[3]+"/TXT")
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"rrset_name": parts[3], "rrset_type": "TXT", "rrset_ttl": 300, "rrset_values": values})
	case http.MethodPut:
		var body struct {
			Values []string `json:"rrset_values"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Values) == 0 {
			gandiError(w, http.StatusBadRequest, "HTTPBadRequest", fmt.Sprintf("rrset_values is required (%v)", err))
			return
		}
		f.z.set(name, body.Values)
		writeJSON(w, http.StatusCreated, map[string]any{"message": "DNS Record Created"})
	case http.MethodDelete:
		f.z.set(name, nil)
		w.WriteHeader(http.StatusNoContent)
	default:
		gandiError(w, http.StatusMethodNotAllowed, "HTTPMethodNotAllowed", "method not allowed")
	}
}

// fakeOVH is a fake of the OVHcloud API 1.0 (auth/time, zone record
// create/delete, zone refresh). It checks the application-key signature,
// so it proves all three keys reached the client.
type fakeOVH struct {
	z                      *txtZone
	appKey, secret, consum string

	mu        sync.Mutex
	ids       map[int][2]string
	n         int
	refreshes int
}

func newFakeOVH(zone, appKey, secret, consumer string) *fakeOVH {
	return &fakeOVH{z: newTXTZone(zone), appKey: appKey, secret: secret, consum: consumer, ids: map[int][2]string{}}
}

func (f *fakeOVH) apiHost() string   { return "eu.api.ovh.com" }
func (f *fakeOVH) records() *txtZone { return f.z }

func ovhError(w http.ResponseWriter, status int, class, msg string) {
	w.Header().Set("X-Ovh-QueryID", "EU.fake-1")
	writeJSON(w, status, map[string]any{"class": class, "message": msg})
}

func (f *fakeOVH) signed(r *http.Request, body []byte) bool {
	want := fmt.Sprintf("%s+%s+%s+%s+%s+%s", f.secret, f.consum, r.Method, "https://"+r.Host+r.URL.RequestURI(), body, r.Header.Get("X-Ovh-Timestamp"))
	return r.Header.Get("X-Ovh-Application") == f.appKey && r.Header.Get("X-Ovh-Consumer") == f.consum &&
		r.Header.Get("X-Ovh-Signature") == fmt.Sprintf("$1$%x", sha1.Sum([]byte(want)))
}

func (f *fakeOVH) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet && r.URL.Path == "/1.0/auth/time" {
		writeJSON(w, http.StatusOK, time.Now().Unix())
		return
	}
	body, _ := io.ReadAll(r.Body)
	if !f.signed(r, body) {
		ovhError(w, http.StatusBadRequest, "Client::BadRequest", "Invalid signature")
		return
	}
	zone := "/1.0/domain/zone/" + strings.TrimSuffix(f.z.zone, ".")
	if msg := f.z.failure(); msg != "" {
		ovhError(w, http.StatusForbidden, "Client::Forbidden", msg)
		return
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == zone+"/record":
		var rec struct {
			FieldType, SubDomain, Target string
			TTL                          int
		}
		if err := json.Unmarshal(body, &rec); err != nil || rec.FieldType != "TXT" {
			ovhError(w, http.StatusBadRequest, "Client::BadRequest", fmt.Sprintf("Invalid record %s", body))
			return
		}
		name := rec.SubDomain + "." + f.z.zone
		f.mu.Lock()
		f.n++
		id := f.n
		f.ids[id] = [2]string{name, rec.Target}
		f.mu.Unlock()
		f.z.add(name, rec.Target)
		writeJSON(w, http.StatusOK, map[string]any{"id": id, "fieldType": "TXT", "subDomain": rec.SubDomain, "target": rec.Target, "ttl": rec.TTL, "zone": strings.TrimSuffix(f.z.zone, ".")})
	case r.Method == http.MethodPost && r.URL.Path == zone+"/refresh":
		f.mu.Lock()
		f.refreshes++
		f.mu.Unlock()
		writeJSON(w, http.StatusOK, nil)
	case r.Method == http.MethodDelete && path.Dir(r.URL.Path) == zone+"/record":
		id, _ := strconv.Atoi(path.Base(r.URL.Path))
		f.mu.Lock()
		rec, ok := f.ids[id]
		delete(f.ids, id)
		f.mu.Unlock()
		if !ok {
			ovhError(w, http.StatusNotFound, "Client::NotFound", fmt.Sprintf("The requested object (id = %d) does not exist", id))
			return
		}
		f.z.remove(rec[0], rec[1])
		writeJSON(w, http.StatusOK, nil)
	default:
		ovhError(w, http.StatusNotFound, "Client::NotFound", "Got an invalid (or empty) URL")
	}
}
