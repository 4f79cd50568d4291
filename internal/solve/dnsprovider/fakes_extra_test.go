//go:build !detour_slim

package dnsprovider

// Fakes of four more provider APIs (Vultr, Porkbun, Namecheap, Google
// Cloud DNS), reached like the others (see fakes_test.go), and the
// issuance test that runs every provider fake but Cloudflare's (which has
// its own, e2e_test.go) through in-process Pebble.
//
// Linode's fake is in fakes_linode_test.go (Detour drives the Linode API
// itself, see linode.go).
//
// Namecheap and Google need two hosts each (the IP lookup and the XML
// API; the OAuth token endpoint and the DNS API), so these fakes are
// started with startFakeHosts.

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/testenv"
)

// shapeLog records one line per API request a fake served, in a form the
// tests match: the method, the path and the fields that matter.
type shapeLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *shapeLog) note(format string, a ...any) {
	l.mu.Lock()
	l.lines = append(l.lines, fmt.Sprintf(format, a...))
	l.mu.Unlock()
}

func (l *shapeLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.lines)
}

// matching returns the lines that start with prefix.
func (l *shapeLog) matching(prefix string) []string {
	var out []string
	for _, s := range l.all() {
		if strings.HasPrefix(s, prefix) {
			out = append(out, s)
		}
	}
	return out
}

// hostsTransport sends requests for any of hosts to a fake's test server.
type hostsTransport struct {
	hosts []string
	addr  string
	base  *http.Transport
}

// startFakeHosts is startFake for a fake that serves f.apiHost() and
// other hosts besides.
func startFakeHosts(t *testing.T, f fakeAPI, other ...string) http.RoundTripper {
	t.Helper()
	hosts := append([]string{f.apiHost()}, other...)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.records().called(r)
		if !slices.Contains(hosts, r.Host) {
			http.Error(w, "fake reached for host "+r.Host, http.StatusMisdirectedRequest)
			return
		}
		f.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	rt := &hostsTransport{hosts: hosts, addr: srv.Listener.Addr().String(), base: &http.Transport{}}
	t.Cleanup(rt.base.CloseIdleConnections)
	return rt
}

// RoundTrip implements http.RoundTripper.
func (rt *hostsTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !slices.Contains(rt.hosts, req.URL.Host) {
		return nil, fmt.Errorf("fake transport: request for %s, but this test fakes only %v", req.URL.Host, rt.hosts)
	}
	out := req.Clone(req.Context())
	out.Host = req.URL.Host
	out.URL.Scheme, out.URL.Host = "http", rt.addr
	return rt.base.RoundTrip(out)
}

// relName is the owner name of sub (relative to the zone, "@" or "" for
// the apex) as an FQDN.
func (z *txtZone) relName(sub string) string {
	if sub == "" || sub == "@" {
		return z.zone
	}
	return dns.Fqdn(sub) + z.zone
}

// fakeVultr is a fake of the Vultr API v2 (domains list, domain records
// create, list and delete), authenticated by a Bearer API key.
type fakeVultr struct {
	z     *txtZone
	key   string
	shape shapeLog

	mu   sync.Mutex
	recs []vultrRecord
	n    int
}

type vultrRecord struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Name     string `json:"name"`
	Data     string `json:"data"`
	Priority int    `json:"priority"`
	TTL      int    `json:"ttl"`
}

func newFakeVultr(zone, key string) *fakeVultr {
	return &fakeVultr{z: newTXTZone(zone), key: key}
}

func (f *fakeVultr) apiHost() string   { return "api.vultr.com" }
func (f *fakeVultr) records() *txtZone { return f.z }

func vultrError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"error": msg, "status": status})
}

func (f *fakeVultr) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+f.key {
		vultrError(w, http.StatusUnauthorized, "Invalid API token.")
		return
	}
	domain := strings.TrimSuffix(f.z.zone, ".")
	records := "/v2/domains/" + domain + "/records"
	meta := map[string]any{"total": 1, "links": map[string]string{"next": "", "prev": ""}}
	if msg := f.z.failure(); msg != "" && r.Method != http.MethodGet {
		vultrError(w, http.StatusForbidden, msg)
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v2/domains":
		f.shape.note("GET /v2/domains per_page=%s", r.URL.Query().Get("per_page"))
		writeJSON(w, http.StatusOK, map[string]any{"domains": []map[string]any{{"domain": domain, "date_created": "2024-01-01T00:00:00+00:00", "dns_sec": "disabled"}}, "meta": meta})
	case r.Method == http.MethodPost && r.URL.Path == records:
		var req struct {
			Name, Type, Data string
			TTL              int
			Priority         *int
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Type != "TXT" {
			vultrError(w, http.StatusBadRequest, fmt.Sprintf("Invalid record: %+v (%v)", req, err))
			return
		}
		f.shape.note("POST %s type=%s name=%s data=%s ttl=%d", records, req.Type, req.Name, req.Data, req.TTL)
		value, err := strconv.Unquote(req.Data) // Vultr TXT data is quoted
		if err != nil {
			vultrError(w, http.StatusBadRequest, "Invalid TXT data: must be quoted")
			return
		}
		f.mu.Lock()
		f.n++
		rec := vultrRecord{ID: fmt.Sprintf("cb676a46-66fd-4dfb-b839-44313%07d", f.n), Type: "TXT", Name: req.Name, Data: req.Data, TTL: req.TTL}
		f.recs = append(f.recs, rec)
		f.mu.Unlock()
		f.z.add(f.z.relName(req.Name), value)
		writeJSON(w, http.StatusCreated, map[string]any{"record": rec})
	case r.Method == http.MethodGet && r.URL.Path == records:
		f.shape.note("GET %s", records)
		f.mu.Lock()
		recs := slices.Clone(f.recs)
		f.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"records": recs, "meta": meta})
	case r.Method == http.MethodDelete && path.Dir(r.URL.Path) == records:
		id := path.Base(r.URL.Path)
		f.shape.note("DELETE %s/{id}", records)
		f.mu.Lock()
		i := slices.IndexFunc(f.recs, func(rec vultrRecord) bool { return rec.ID == id })
		var rec vultrRecord
		if i >= 0 {
			rec = f.recs[i]
			f.recs = slices.Delete(f.recs, i, i+1)
		}
		f.mu.Unlock()
		if i < 0 {
			vultrError(w, http.StatusNotFound, "Invalid record.")
			return
		}
		value, _ := strconv.Unquote(rec.Data)
		f.z.remove(f.z.relName(rec.Name), value)
		w.WriteHeader(http.StatusNoContent)
	default:
		vultrError(w, http.StatusNotFound, "Invalid API endpoint "+r.Method+" "+r.URL.Path)
	}
}

// fakePorkbun is a fake of Porkbun's JSON API v3 (DNS create and delete
// by ID). Every call is a POST whose JSON body carries apikey and
// secretapikey.
type fakePorkbun struct {
	z              *txtZone
	key, secretKey string
	shape          shapeLog

	mu  sync.Mutex
	ids map[int][2]string
	n   int
}

func newFakePorkbun(zone, key, secretKey string) *fakePorkbun {
	return &fakePorkbun{z: newTXTZone(zone), key: key, secretKey: secretKey, ids: map[int][2]string{}}
}

func (f *fakePorkbun) apiHost() string   { return "api.porkbun.com" }
func (f *fakePorkbun) records() *txtZone { return f.z }

func porkbunError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]any{"status": "ERROR", "message": msg})
}

func (f *fakePorkbun) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		APIKey       string `json:"apikey"`
		SecretAPIKey string `json:"secretapikey"`
		Name         string `json:"name"`
		Type         string `json:"type"`
		Content      string `json:"content"`
		TTL          string `json:"ttl"`
	}
	if r.Method != http.MethodPost {
		porkbunError(w, http.StatusMethodNotAllowed, "Only POST is supported.")
		return
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		porkbunError(w, http.StatusBadRequest, "Invalid JSON body.")
		return
	}
	if body.APIKey != f.key || body.SecretAPIKey != f.secretKey {
		porkbunError(w, http.StatusBadRequest, "Invalid API key. (002)")
		return
	}
	domain := strings.TrimSuffix(f.z.zone, ".")
	p := strings.TrimPrefix(r.URL.Path, "/api/json/v3/")
	if msg := f.z.failure(); msg != "" {
		porkbunError(w, http.StatusBadRequest, msg)
		return
	}
	switch {
	case p == "dns/create/"+domain:
		f.shape.note("POST /api/json/v3/dns/create/%s type=%s name=%s content=%s ttl=%s", domain, body.Type, body.Name, body.Content, body.TTL)
		if body.Type != "TXT" || body.Content == "" {
			porkbunError(w, http.StatusBadRequest, "Invalid type or content.")
			return
		}
		name := f.z.relName(body.Name)
		f.mu.Lock()
		f.n++
		id := 106926000 + f.n
		f.ids[id] = [2]string{name, body.Content}
		f.mu.Unlock()
		f.z.add(name, body.Content)
		writeJSON(w, http.StatusOK, map[string]any{"status": "SUCCESS", "id": id})
	case path.Dir(p) == "dns/delete/"+domain:
		f.shape.note("POST /api/json/v3/dns/delete/%s/{id}", domain)
		id, _ := strconv.Atoi(path.Base(p))
		f.mu.Lock()
		rec, ok := f.ids[id]
		delete(f.ids, id)
		f.mu.Unlock()
		if !ok {
			porkbunError(w, http.StatusBadRequest, "Invalid record ID.")
			return
		}
		f.z.remove(rec[0], rec[1])
		writeJSON(w, http.StatusOK, map[string]any{"status": "SUCCESS"})
	default:
		porkbunError(w, http.StatusNotFound, "Invalid endpoint /"+p)
	}
}

// fakeNamecheap is a fake of Namecheap's XML API (namecheap.domains.dns.
// getHosts and setHosts; setHosts replaces the domain's whole host list)
// and of the IP lookup lego uses when no client IP is configured. Calls
// must carry ApiUser, ApiKey, UserName and a ClientIp on the account's
// allow list.
type fakeNamecheap struct {
	z             *txtZone
	user, key, ip string
	shape         shapeLog
	mu            sync.Mutex
	hosts         []ncHost
	sld, tld      string
}

type ncHost struct {
	Name    string `xml:"Name,attr"`
	Type    string `xml:"Type,attr"`
	Address string `xml:"Address,attr"`
	MXPref  string `xml:"MXPref,attr"`
	TTL     string `xml:"TTL,attr"`
}

// ncIPHost is the host of the IP lookup lego's namecheap client calls.
const ncIPHost = "dynamicdns.park-your-domain.com"

// newFakeNamecheap serves zone (an SLD under a one-label TLD) with two
// records of its own besides, which every setHosts must send back.
func newFakeNamecheap(zone, user, key, ip string) *fakeNamecheap {
	z := newTXTZone(zone)
	labels := dns.SplitDomainName(z.zone)
	return &fakeNamecheap{z: z, user: user, key: key, ip: ip, sld: labels[0], tld: strings.Join(labels[1:], "."),
		hosts: []ncHost{{Name: "@", Type: "A", Address: "192.0.2.10", MXPref: "10", TTL: "1800"},
			{Name: "www", Type: "CNAME", Address: "detour.test.", MXPref: "10", TTL: "1800"}}}
}

func (f *fakeNamecheap) apiHost() string   { return "api.namecheap.com" }
func (f *fakeNamecheap) records() *txtZone { return f.z }

func ncWrite(w http.ResponseWriter, command, inner string, errs ...[2]string) {
	w.Header().Set("Content-Type", "text/xml")
	status := "OK"
	var e strings.Builder
	for _, x := range errs {
		status = "ERROR"
		fmt.Fprintf(&e, `<Error Number="%s">`, x[0])
		_ = xml.EscapeText(&e, []byte(x[1]))
		e.WriteString(`</Error>`)
	}
	fmt.Fprintf(w, `<?xml version="1.0" encoding="utf-8"?>
<ApiResponse Status="%s" xmlns="http://api.namecheap.com/xml.response"><Errors>%s</Errors><Warnings /><RequestedCommand>%s</RequestedCommand>%s<Server>FAKE</Server><GMTTimeDifference>--0:00</GMTTimeDifference><ExecutionTime>0.01</ExecutionTime></ApiResponse>`,
		status, e.String(), strings.ToLower(command), inner)
}

func (f *fakeNamecheap) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Host == ncIPHost {
		f.shape.note("GET %s%s", ncIPHost, r.URL.Path)
		if r.Method != http.MethodGet || r.URL.Path != "/getip" {
			http.NotFound(w, r)
			return
		}
		_, _ = io.WriteString(w, f.ip)
		return
	}
	if r.URL.Path != "/xml.response" {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil { // query (GET) or form body (POST)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q := r.Form
	cmd := q.Get("Command")
	switch {
	case q.Get("ApiUser") != f.user || q.Get("UserName") != f.user || q.Get("ApiKey") != f.key:
		ncWrite(w, cmd, "", [2]string{"1011102", "API Key is invalid or API access has not been enabled"})
		return
	case q.Get("ClientIp") != f.ip:
		ncWrite(w, cmd, "", [2]string{"1011150", "Invalid request IP: " + q.Get("ClientIp")})
		return
	case q.Get("SLD") != f.sld || q.Get("TLD") != f.tld:
		ncWrite(w, cmd, "", [2]string{"2019166", "Domain not found"})
		return
	}
	switch {
	case r.Method == http.MethodGet && cmd == "namecheap.domains.dns.getHosts":
		f.shape.note("GET getHosts SLD=%s TLD=%s", q.Get("SLD"), q.Get("TLD"))
		f.mu.Lock()
		var hosts strings.Builder
		for i, h := range f.hosts {
			fmt.Fprintf(&hosts, `<host HostId="%d" Name=%q Type=%q Address=%q MXPref=%q TTL=%q AssociatedAppTitle="" FriendlyName="" IsActive="true" IsDDNSEnabled="false" />`,
				i+1, h.Name, h.Type, xmlAttr(h.Address), h.MXPref, h.TTL)
		}
		f.mu.Unlock()
		ncWrite(w, cmd, fmt.Sprintf(`<CommandResponse Type="namecheap.domains.dns.getHosts"><DomainDNSGetHostsResult Domain="%s.%s" EmailType="FWD" IsUsingOurDNS="true">%s</DomainDNSGetHostsResult></CommandResponse>`,
			f.sld, f.tld, hosts.String()))
	case r.Method == http.MethodPost && cmd == "namecheap.domains.dns.setHosts":
		if msg := f.z.failure(); msg != "" {
			ncWrite(w, cmd, "", [2]string{"2030288", msg})
			return
		}
		var hosts []ncHost
		var txt []string
		for i := 1; q.Has("HostName" + strconv.Itoa(i)); i++ {
			n := strconv.Itoa(i)
			h := ncHost{Name: q.Get("HostName" + n), Type: q.Get("RecordType" + n), Address: q.Get("Address" + n), MXPref: q.Get("MXPref" + n), TTL: q.Get("TTL" + n)}
			if h.Type == "" || h.Address == "" {
				ncWrite(w, cmd, "", [2]string{"2015280", "RecordType" + n + " or Address" + n + " is missing"})
				return
			}
			hosts = append(hosts, h)
			if h.Type == "TXT" {
				txt = append(txt, h.Name+"="+h.Address)
			}
		}
		f.shape.note("POST setHosts SLD=%s TLD=%s hosts=%d TXT=%v", q.Get("SLD"), q.Get("TLD"), len(hosts), txt)
		f.mu.Lock()
		f.hosts = hosts
		f.mu.Unlock()
		f.mirror(hosts)
		ncWrite(w, cmd, fmt.Sprintf(`<CommandResponse Type="namecheap.domains.dns.setHosts"><DomainDNSSetHostsResult Domain="%s.%s" IsSuccess="true"><Warnings /></DomainDNSSetHostsResult></CommandResponse>`, f.sld, f.tld))
	default:
		ncWrite(w, cmd, "", [2]string{"1010101", "Invalid command or method: " + r.Method + " " + cmd})
	}
}

func xmlAttr(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// mirror makes the zone's TXT data that of hosts (setHosts replaces all).
func (f *fakeNamecheap) mirror(hosts []ncHost) {
	want := map[string][]string{}
	for _, h := range hosts {
		if h.Type == "TXT" {
			name := f.z.relName(h.Name)
			want[name] = append(want[name], h.Address)
		}
	}
	f.z.mu.Lock()
	names := map[string]bool{}
	for n := range f.z.txt {
		names[n] = true
	}
	f.z.mu.Unlock()
	for n := range want {
		names[n] = true
	}
	for n := range names {
		f.z.set(n, want[n])
	}
}

// fakeGoogleDNS is a fake of Google Cloud DNS API v1 (managed zones list,
// resource record sets list, changes create) and of Google's OAuth 2.0
// token endpoint: it checks the service account's JWT assertion against
// the account's public key and answers with an access token, which the
// DNS calls must then carry as a Bearer token.
type fakeGoogleDNS struct {
	z       *txtZone
	project string
	email   string
	pub     *rsa.PublicKey
	shape   shapeLog

	mu     sync.Mutex
	tokens map[string]bool
	ttl    map[string]int64
	n      int
}

const googleTokenHost = "oauth2.googleapis.com"

func newFakeGoogleDNS(zone, project, email string, pub *rsa.PublicKey) *fakeGoogleDNS {
	return &fakeGoogleDNS{z: newTXTZone(zone), project: project, email: email, pub: pub, tokens: map[string]bool{}, ttl: map[string]int64{}}
}

func (f *fakeGoogleDNS) apiHost() string   { return "dns.googleapis.com" }
func (f *fakeGoogleDNS) records() *txtZone { return f.z }

func googleError(w http.ResponseWriter, status int, reason, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"code": status, "message": msg, "status": reason,
		"errors": []map[string]any{{"message": msg, "domain": "global", "reason": reason}}}})
}

// token answers the JWT bearer grant (RFC 7523) of a service account key.
func (f *fakeGoogleDNS) token(w http.ResponseWriter, r *http.Request) {
	fail := func(desc string) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_grant", "error_description": desc})
	}
	if r.Method != http.MethodPost || r.URL.Path != "/token" {
		http.NotFound(w, r)
		return
	}
	if err := r.ParseForm(); err != nil || r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		fail("Invalid grant_type")
		return
	}
	parts := strings.Split(r.PostForm.Get("assertion"), ".")
	if len(parts) != 3 {
		fail("Invalid JWT")
		return
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err != nil || rsa.VerifyPKCS1v15(f.pub, crypto.SHA256, digest[:], sig) != nil {
		fail("Invalid JWT Signature.")
		return
	}
	raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var claims struct {
		Iss, Scope, Aud string
		Exp             int64
	}
	if err := json.Unmarshal(raw, &claims); err != nil || claims.Iss != f.email || claims.Aud != "https://oauth2.googleapis.com/token" ||
		claims.Exp < time.Now().Unix() {
		fail(fmt.Sprintf("Invalid JWT claims %s", raw))
		return
	}
	f.shape.note("POST %s/token iss=%s scope=%s", googleTokenHost, claims.Iss, claims.Scope)
	f.mu.Lock()
	f.n++
	tok := fmt.Sprintf("ya29.fake-%d", f.n)
	f.tokens[tok] = slices.Contains(strings.Fields(claims.Scope), "https://www.googleapis.com/auth/ndev.clouddns.readwrite")
	f.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": 3599})
}

type gRRSet struct {
	Kind    string   `json:"kind,omitempty"`
	Name    string   `json:"name"`
	Type    string   `json:"type"`
	TTL     int64    `json:"ttl,omitempty"`
	Rrdatas []string `json:"rrdatas"`
}

// unquoteAll returns rrdatas as plain values: Cloud DNS takes TXT data
// in zone-file form, quoted or not.
func unquoteAll(rrdatas []string) []string {
	var out []string
	for _, d := range rrdatas {
		if v, err := strconv.Unquote(d); err == nil {
			d = v
		}
		out = append(out, d)
	}
	return slices.Sorted(slices.Values(out))
}

func (f *fakeGoogleDNS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Host == googleTokenHost {
		f.token(w, r)
		return
	}
	f.mu.Lock()
	scoped, ok := f.tokens[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
	f.mu.Unlock()
	switch {
	case !ok || !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer "):
		googleError(w, http.StatusUnauthorized, "UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 access token.")
		return
	case !scoped:
		googleError(w, http.StatusForbidden, "PERMISSION_DENIED", "Request had insufficient authentication scopes.")
		return
	}
	const zoneName = "detour-zone"
	projects := "/dns/v1/projects/" + f.project + "/managedZones"
	zonePath := projects + "/" + zoneName
	switch {
	case r.Method == http.MethodGet && r.URL.Path == projects:
		f.shape.note("GET %s dnsName=%s", projects, r.URL.Query().Get("dnsName"))
		zones := []map[string]any{}
		if r.URL.Query().Get("dnsName") == f.z.zone {
			zones = append(zones, map[string]any{"kind": "dns#managedZone", "name": zoneName, "dnsName": f.z.zone, "id": "4242", "visibility": "public"})
		}
		writeJSON(w, http.StatusOK, map[string]any{"kind": "dns#managedZonesListResponse", "managedZones": zones})
	case r.Method == http.MethodGet && r.URL.Path == zonePath+"/rrsets":
		name, typ := r.URL.Query().Get("name"), r.URL.Query().Get("type")
		f.shape.note("GET %s/rrsets name=%s type=%s", zonePath, name, typ)
		sets := []gRRSet{}
		if values := f.z.TXT(name); len(values) > 0 && typ == "TXT" {
			set := gRRSet{Kind: "dns#resourceRecordSet", Name: dns.Fqdn(name), Type: "TXT", TTL: f.ttlOf(name)}
			for _, v := range values {
				set.Rrdatas = append(set.Rrdatas, strconv.Quote(v)) // Cloud DNS answers TXT data quoted
			}
			sets = append(sets, set)
		}
		writeJSON(w, http.StatusOK, map[string]any{"kind": "dns#resourceRecordSetsListResponse", "rrsets": sets})
	case r.Method == http.MethodPost && r.URL.Path == zonePath+"/changes":
		if msg := f.z.failure(); msg != "" {
			googleError(w, http.StatusForbidden, "forbidden", msg)
			return
		}
		var change struct {
			Additions []gRRSet `json:"additions"`
			Deletions []gRRSet `json:"deletions"`
		}
		if err := json.NewDecoder(r.Body).Decode(&change); err != nil {
			googleError(w, http.StatusBadRequest, "invalid", err.Error())
			return
		}
		var desc []string
		for i, d := range change.Deletions {
			desc = append(desc, fmt.Sprintf("-%s %s %v", d.Type, d.Name, unquoteAll(d.Rrdatas)))
			// A deletion must name the current set exactly.
			if d.Type != "TXT" || !slices.Equal(unquoteAll(d.Rrdatas), f.z.TXT(d.Name)) || d.TTL != f.ttlOf(d.Name) {
				googleError(w, http.StatusPreconditionFailed, "conditionNotMet", fmt.Sprintf("Precondition not met for 'entity.change.deletions[%d]'", i))
				return
			}
		}
		for i, a := range change.Additions {
			desc = append(desc, fmt.Sprintf("+%s %s %v", a.Type, a.Name, unquoteAll(a.Rrdatas)))
			deleted := slices.ContainsFunc(change.Deletions, func(d gRRSet) bool { return dns.Fqdn(d.Name) == dns.Fqdn(a.Name) })
			if a.Type != "TXT" || !f.z.inZone(a.Name) || len(a.Rrdatas) == 0 {
				googleError(w, http.StatusBadRequest, "invalid", fmt.Sprintf("Invalid value for 'entity.change.additions[%d]'", i))
				return
			}
			if len(f.z.TXT(a.Name)) > 0 && !deleted {
				googleError(w, http.StatusConflict, "alreadyExists", fmt.Sprintf("The resource 'entity.change.additions[%d]' named '%s (TXT)' already exists", i, a.Name))
				return
			}
		}
		f.shape.note("POST %s/changes %s", zonePath, strings.Join(desc, " "))
		for _, d := range change.Deletions {
			f.z.set(d.Name, nil)
		}
		for _, a := range change.Additions {
			f.mu.Lock()
			f.ttl[dns.Fqdn(a.Name)] = a.TTL
			f.mu.Unlock()
			f.z.set(a.Name, unquoteAll(a.Rrdatas))
		}
		f.mu.Lock()
		f.n++
		id := strconv.Itoa(f.n)
		f.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]any{"kind": "dns#change", "id": id, "status": "done", "startTime": time.Now().UTC().Format(time.RFC3339),
			"additions": change.Additions, "deletions": change.Deletions})
	default:
		googleError(w, http.StatusNotFound, "notFound", "The requested URL "+r.URL.Path+" was not found on this server.")
	}
}

func (f *fakeGoogleDNS) ttlOf(name string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ttl[dns.Fqdn(name)]
}

// gcloudKey writes a service account key file (testFile's) and returns
// its path, client email and public key.
func gcloudKey(t *testing.T) (file, email string, pub *rsa.PublicKey) {
	t.Helper()
	file = testFile(t, "testdata/gcloud")
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var k struct {
		ClientEmail string `json:"client_email"`
		PrivateKey  string `json:"private_key"`
	}
	if err := json.Unmarshal(raw, &k); err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode([]byte(k.PrivateKey))
	if blk == nil {
		t.Fatal("no PEM key in the service account key")
	}
	key, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return file, k.ClientEmail, &key.(*rsa.PrivateKey).PublicKey
}

// issuanceCase is one provider's whole issuance through its fake.
type issuanceCase struct {
	provider string
	// setup returns the credentials file's content, the fake and the
	// other hosts it serves.
	setup func(t *testing.T) (creds string, fake fakeAPI, other []string)
	// check looks at the requests the fake recorded; values are the two
	// TXT values the CA asked for.
	check func(t *testing.T, fake fakeAPI, values []string)
}

// credsOf returns the credentials providerCases give provider.
func credsOf(t *testing.T, provider string) string {
	for _, tc := range providerCases {
		if tc.provider == provider {
			return tc.creds
		}
	}
	t.Fatalf("no providerCases entry for %s", provider)
	return ""
}

func wantLines(t *testing.T, what string, got []string, n int) {
	t.Helper()
	if len(got) != n {
		t.Errorf("%s: %d requests, want %d: %q", what, len(got), n, got)
	}
}

var issuanceCases = []issuanceCase{
	{provider: "route53", setup: func(t *testing.T) (string, fakeAPI, []string) {
		return credsOf(t, "route53"), newFakeRoute53(sandbox.Zone, "AKIAFAKE"), nil
	}},
	{provider: "digitalocean", setup: func(t *testing.T) (string, fakeAPI, []string) {
		return credsOf(t, "digitalocean"), newFakeDigitalOcean(sandbox.Zone, "dop_v1_fake"), nil
	}},
	{provider: "hetzner", setup: func(t *testing.T) (string, fakeAPI, []string) {
		return credsOf(t, "hetzner"), newFakeHetzner(sandbox.Zone, "hz-token"), nil
	}},
	{provider: "gandi", setup: func(t *testing.T) (string, fakeAPI, []string) {
		return credsOf(t, "gandi"), newFakeGandi(sandbox.Zone, "gandi-pat"), nil
	}},
	{provider: "ovh", setup: func(t *testing.T) (string, fakeAPI, []string) {
		return credsOf(t, "ovh"), newFakeOVH(sandbox.Zone, "ak", "as", "ck"), nil
	}},
	{provider: "vultr", setup: func(t *testing.T) (string, fakeAPI, []string) {
		return "VULTR_API_KEY = vultr-key\n", newFakeVultr(sandbox.Zone, "vultr-key"), nil
	}, check: func(t *testing.T, fake fakeAPI, values []string) {
		f := fake.(*fakeVultr)
		for _, v := range values {
			wantLines(t, "create "+v, f.shape.matching(fmt.Sprintf("POST /v2/domains/detour.test/records type=TXT name=_acme-challenge.dp data=%q ttl=120", v)), 1)
		}
		// CleanUp deletes every TXT record at the name, so the second
		// CleanUp finds none.
		wantLines(t, "delete", f.shape.matching("DELETE /v2/domains/detour.test/records/"), 2)
	}},
	{provider: "linode", setup: func(t *testing.T) (string, fakeAPI, []string) {
		f := newFakeLinode(sandbox.Zone, "linode-token")
		f.pageSize = 1 // clean-up must follow the pages to find the record
		return "LINODE_TOKEN = linode-token\n", f, nil
	}, check: func(t *testing.T, fake fakeAPI, values []string) {
		f := fake.(*fakeLinode)
		wantLines(t, "domain lookups", f.shape.matching(`GET /v4/domains filter={"domain":"detour.test"}`), 4)
		for _, v := range values {
			wantLines(t, "create "+v, f.shape.matching("POST /v4/domains/1234/records type=TXT name=_acme-challenge.dp target="+v+" ttl_sec=300"), 1)
		}
		// Each clean-up deletes only the record with its value, found on
		// one of the pages; the user's own TXT at the name stays.
		wantLines(t, "delete", f.shape.matching("DELETE /v4/domains/1234/records/"), 2)
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.recs) != 1 || f.recs[0].Target != "the user's own" {
			t.Errorf("records left at Linode: %+v, want only the user's own", f.recs)
		}
	}},
	{provider: "porkbun", setup: func(t *testing.T) (string, fakeAPI, []string) {
		return "PORKBUN_API_KEY = pk1_fake\nPORKBUN_SECRET_API_KEY = sk1_fake\n", newFakePorkbun(sandbox.Zone, "pk1_fake", "sk1_fake"), nil
	}, check: func(t *testing.T, fake fakeAPI, values []string) {
		f := fake.(*fakePorkbun)
		for _, v := range values {
			wantLines(t, "create "+v, f.shape.matching("POST /api/json/v3/dns/create/detour.test type=TXT name=_acme-challenge.dp content="+v+" ttl=300"), 1)
		}
		wantLines(t, "delete", f.shape.matching("POST /api/json/v3/dns/delete/detour.test/"), 2)
	}},
	{provider: "namecheap", setup: func(t *testing.T) (string, fakeAPI, []string) {
		// No NAMECHEAP_CLIENT_IP: lego looks it up, through the fake.
		return "NAMECHEAP_API_USER = nc-user\nNAMECHEAP_API_KEY = nc-key\n", newFakeNamecheap(sandbox.Zone, "nc-user", "nc-key", "203.0.113.7"), []string{ncIPHost}
	}, check: func(t *testing.T, fake fakeAPI, values []string) {
		f := fake.(*fakeNamecheap)
		wantLines(t, "IP lookup", f.shape.matching("GET "+ncIPHost+"/getip"), 1)
		// Present: getHosts, then setHosts with the whole list plus the
		// new record; CleanUp removes every TXT at the name at once.
		wantLines(t, "getHosts", f.shape.matching("GET getHosts SLD=detour TLD=test"), 4)
		sets := f.shape.matching("POST setHosts SLD=detour TLD=test")
		want := []string{
			fmt.Sprintf("POST setHosts SLD=detour TLD=test hosts=3 TXT=[_acme-challenge.dp=%s]", values[0]),
			fmt.Sprintf("POST setHosts SLD=detour TLD=test hosts=4 TXT=[_acme-challenge.dp=%s _acme-challenge.dp=%s]", values[0], values[1]),
			"POST setHosts SLD=detour TLD=test hosts=2 TXT=[]",
		}
		if !slices.Equal(sets, want) {
			t.Errorf("setHosts calls:\n%s\nwant:\n%s", strings.Join(sets, "\n"), strings.Join(want, "\n"))
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.hosts) != 2 || f.hosts[0].Type != "A" || f.hosts[1].Type != "CNAME" {
			t.Errorf("the domain's own records did not survive: %+v", f.hosts)
		}
	}},
	{provider: "gcloud", setup: func(t *testing.T) (string, fakeAPI, []string) {
		file, email, pub := gcloudKey(t)
		return "GCE_SERVICE_ACCOUNT_FILE = " + strconv.Quote(file) + "\n", newFakeGoogleDNS(sandbox.Zone, "detour-test", email, pub), []string{googleTokenHost}
	}, check: func(t *testing.T, fake fakeAPI, values []string) {
		f := fake.(*fakeGoogleDNS)
		wantLines(t, "token", f.shape.matching("POST "+googleTokenHost+"/token iss=dns@detour-test.iam.gserviceaccount.com scope=https://www.googleapis.com/auth/ndev.clouddns.readwrite"), 1)
		wantLines(t, "zones", f.shape.matching("GET /dns/v1/projects/detour-test/managedZones dnsName=detour.test."), 4)
		changes := f.shape.matching("POST /dns/v1/projects/detour-test/managedZones/detour-zone/changes")
		name := "_acme-challenge.dp.detour.test."
		both := slices.Sorted(slices.Values(values))
		// The second value replaces the set in two changes (delete the
		// set, add it back with both values), not one.
		want := []string{
			fmt.Sprintf("+TXT %s [%s]", name, values[0]),
			fmt.Sprintf("-TXT %s [%s]", name, values[0]),
			fmt.Sprintf("+TXT %s %v", name, both),
			fmt.Sprintf("-TXT %s %v", name, both),
		}
		if len(changes) != len(want) {
			t.Fatalf("changes: %q, want %q", changes, want)
		}
		for i, c := range changes {
			if !strings.HasSuffix(c, " "+want[i]) {
				t.Errorf("change %d = %q, want %q", i, c, want[i])
			}
		}
	}},
}

// TestIssueThroughProviderFakes issues a certificate for a name and its
// wildcard from in-process Pebble through each provider fake (but
// Cloudflare's, see TestIssueThroughCloudflareFake): lego's real client
// talks to the fake, whose record writes land in the sandbox DNS server
// Pebble's validation authority queries. Then it checks the request shapes
// the fake recorded and that nothing is left behind.
func TestIssueThroughProviderFakes(t *testing.T) {
	for _, tc := range issuanceCases {
		t.Run(tc.provider, func(t *testing.T) {
			env := testenv.New(t, testenv.Options{})
			zdns := useDNS(t, env.DNS, env.DNSAddr, sandbox.Zone)
			creds, fake, other := tc.setup(t)
			var values []string
			var vmu sync.Mutex
			fake.records().sink = valueSink{zdns, func(v string) {
				vmu.Lock()
				if !slices.Contains(values, v) {
					values = append(values, v)
				}
				vmu.Unlock()
			}}
			s, err := New(Options{Logger: env.Log, Provider: tc.provider, CredentialsFile: writeCreds(t, creds, 0o600),
				Transport: startFakeHosts(t, fake, other...), DNS: zdns.client, PropagationTimeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			names := []string{"dp.detour.test", "*.dp.detour.test"}
			ids, err := ident.ParseAll(names)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			res, err := env.Manager(t).Obtain(testCtx(t), renew.Request{Name: "dp", Identifiers: ids, CA: env.RenewCA(t),
				Paths: []solve.Path{{Name: tc.provider + "-dns", Solver: s}}})
			if err != nil {
				t.Fatalf("Obtain: %v (fake API calls: %q)", err, fake.records().calls)
			}
			t.Logf("issued in %v; API calls: %q", time.Since(start).Round(time.Millisecond), fake.records().calls)
			for _, n := range names {
				if res.PathUsed[n] != tc.provider+"-dns" {
					t.Errorf("path used for %s = %q, want %s-dns", n, res.PathUsed[n], tc.provider)
				}
			}
			full, err := os.ReadFile(env.Store.LivePath("dp", "fullchain.pem"))
			if err != nil {
				t.Fatal(err)
			}
			blk, _ := pem.Decode(full)
			if blk == nil {
				t.Fatal("live fullchain.pem holds no PEM block")
			}
			leaf, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if got := slices.Sorted(slices.Values(leaf.DNSNames)); !slices.Equal(got, slices.Sorted(slices.Values(names))) {
				t.Errorf("certificate names = %v, want %v", got, names)
			}
			name := "_acme-challenge.dp.detour.test."
			if got := fake.records().TXT(name); len(got) != 0 {
				t.Errorf("the provider still holds TXT %q", got)
			}
			if got := env.DNS.TXT(name); len(got) != 0 {
				t.Errorf("the sandbox DNS still answers TXT %q", got)
			}
			vmu.Lock()
			vals := slices.Clone(values)
			vmu.Unlock()
			if len(vals) != 2 || vals[0] == vals[1] {
				t.Fatalf("TXT values published: %q, want two", vals)
			}
			if tc.check != nil {
				tc.check(t, fake, vals)
			}
		})
	}
}

// valueSink passes records on to a recordSink and reports each value
// added, in order.
type valueSink struct {
	recordSink
	added func(value string)
}

func (s valueSink) add(name, value string) {
	s.recordSink.add(name, value)
	s.added(value)
}
