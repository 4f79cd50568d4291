package dnsprovider

// Fakes of third-party DNS provider HTTP APIs. The real APIs cannot be
// reached from the test machines (and must not be: they need accounts), so
// each fake implements just enough of one API — zone lookup, create TXT,
// delete TXT, in that provider's own request and error formats — for lego's
// real client to run against it, and records what the client did.
//
// Redirection: lego's clients call the providers' real URLs
// (https://api.cloudflare.com/client/v4/..., https://route53.amazonaws.com/
// 2013-04-01/...), and every factory gives them an *http.Client whose
// Transport is Options.Transport. The tests set it to redirectTransport,
// which checks the request is for the provider's real host and sends it, as
// plain HTTP, to the fake's httptest server. No provider needs a base-URL
// override, so the tests also prove each client's default endpoint and
// paths.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// fakeAPI is a fake of one provider's HTTP API.
type fakeAPI interface {
	http.Handler
	// apiHost is the host lego's client calls, e.g. api.cloudflare.com.
	apiHost() string
	// records returns the TXT records the fake holds.
	records() *txtZone
}

// recordSink mirrors a fake's TXT changes somewhere else (the e2e test
// publishes them in the sandbox DNS server the CA queries).
type recordSink interface {
	add(name, value string)
	remove(name, value string)
}

// txtZone is the TXT data of one zone at a fake provider.
type txtZone struct {
	zone string // apex, with trailing dot

	mu    sync.Mutex
	txt   map[string][]string // owner name (FQDN) -> values
	fail  string              // when set, mutating calls fail with this provider message
	calls []string            // "METHOD path" of every request
	sink  recordSink
}

func newTXTZone(zone string) *txtZone {
	return &txtZone{zone: dns.Fqdn(zone), txt: map[string][]string{}}
}

// TXT returns the values at name, sorted.
func (z *txtZone) TXT(name string) []string {
	z.mu.Lock()
	defer z.mu.Unlock()
	return slices.Sorted(slices.Values(z.txt[dns.Fqdn(name)]))
}

// failWith makes every later create or delete fail with msg in the
// provider's error format.
func (z *txtZone) failWith(msg string) {
	z.mu.Lock()
	z.fail = msg
	z.mu.Unlock()
}

func (z *txtZone) failure() string {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.fail
}

func (z *txtZone) called(r *http.Request) {
	z.mu.Lock()
	z.calls = append(z.calls, r.Method+" "+r.URL.Path)
	z.mu.Unlock()
}

// inZone reports whether name is the apex or below it.
func (z *txtZone) inZone(name string) bool {
	return dns.IsSubDomain(z.zone, dns.Fqdn(name))
}

func (z *txtZone) add(name, value string) {
	name = dns.Fqdn(name)
	z.mu.Lock()
	defer z.mu.Unlock()
	if !slices.Contains(z.txt[name], value) {
		z.txt[name] = append(z.txt[name], value)
		if z.sink != nil {
			z.sink.add(name, value)
		}
	}
}

func (z *txtZone) remove(name, value string) bool {
	name = dns.Fqdn(name)
	z.mu.Lock()
	defer z.mu.Unlock()
	i := slices.Index(z.txt[name], value)
	if i < 0 {
		return false
	}
	z.txt[name] = slices.Delete(z.txt[name], i, i+1)
	if len(z.txt[name]) == 0 {
		delete(z.txt, name)
	}
	if z.sink != nil {
		z.sink.remove(name, value)
	}
	return true
}

// set replaces the values at name (RRset semantics).
func (z *txtZone) set(name string, values []string) {
	for _, v := range z.TXT(name) {
		if !slices.Contains(values, v) {
			z.remove(name, v)
		}
	}
	for _, v := range values {
		z.add(name, v)
	}
}

// redirectTransport sends requests for host to a fake's test server.
type redirectTransport struct {
	host string // the provider API's real host
	addr string // the fake's listener
	base *http.Transport
}

// startFake serves f on 127.0.0.1 and returns a transport that sends the
// provider's requests to it.
func startFake(t *testing.T, f fakeAPI) http.RoundTripper {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.records().called(r)
		if r.Host != f.apiHost() {
			http.Error(w, "fake reached for host "+r.Host, http.StatusMisdirectedRequest)
			return
		}
		f.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	rt := &redirectTransport{host: f.apiHost(), addr: srv.Listener.Addr().String(), base: &http.Transport{}}
	t.Cleanup(rt.base.CloseIdleConnections)
	return rt
}

// RoundTrip implements http.RoundTripper.
func (rt *redirectTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != rt.host {
		return nil, fmt.Errorf("fake transport: request for %s, but this test fakes only %s", req.URL.Host, rt.host)
	}
	out := req.Clone(req.Context())
	out.Host = rt.host
	out.URL.Scheme, out.URL.Host = "http", rt.addr
	return rt.base.RoundTrip(out)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// fakeCloudflare is a fake of the Cloudflare API v4 (zones list, DNS
// records create/delete), authenticated by an API token.
type fakeCloudflare struct {
	z     *txtZone
	token string

	mu  sync.Mutex
	ids map[string][2]string // record id -> name, value
	n   int
}

func newFakeCloudflare(zone, token string) *fakeCloudflare {
	return &fakeCloudflare{z: newTXTZone(zone), token: token, ids: map[string][2]string{}}
}

func (f *fakeCloudflare) apiHost() string   { return "api.cloudflare.com" }
func (f *fakeCloudflare) records() *txtZone { return f.z }

func cfError(w http.ResponseWriter, status, code int, msg string) {
	writeJSON(w, status, map[string]any{"success": false, "result": nil, "messages": []any{},
		"errors": []map[string]any{{"code": code, "message": msg}}})
}

func cfOK(w http.ResponseWriter, status int, result any) {
	writeJSON(w, status, map[string]any{"success": true, "errors": []any{}, "messages": []any{}, "result": result})
}

func (f *fakeCloudflare) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		cfError(w, http.StatusForbidden, 9109, "Invalid access token")
		return
	}
	const records = "/client/v4/zones/zone-1/dns_records"
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/client/v4/zones":
		zones := []map[string]any{}
		if name := r.URL.Query().Get("name"); dns.Fqdn(name) == f.z.zone {
			zones = append(zones, map[string]any{"id": "zone-1", "name": name, "status": "active"})
		}
		cfOK(w, http.StatusOK, zones)
	case r.Method == http.MethodPost && r.URL.Path == records:
		if msg := f.z.failure(); msg != "" {
			cfError(w, http.StatusBadRequest, 10000, msg)
			return
		}
		var rec struct{ Type, Name, Content string }
		if err := json.NewDecoder(r.Body).Decode(&rec); err != nil || rec.Type != "TXT" || !f.z.inZone(rec.Name) {
			cfError(w, http.StatusBadRequest, 9005, fmt.Sprintf("bad record %+v (%v)", rec, err))
			return
		}
		value, err := strconv.Unquote(rec.Content) // Cloudflare TXT content is quoted
		if err != nil {
			cfError(w, http.StatusBadRequest, 9005, "content must be a quoted string")
			return
		}
		f.mu.Lock()
		f.n++
		id := fmt.Sprintf("rec-%d", f.n)
		f.ids[id] = [2]string{rec.Name, value}
		f.mu.Unlock()
		f.z.add(rec.Name, value)
		cfOK(w, http.StatusOK, map[string]any{"id": id, "type": "TXT", "name": rec.Name, "content": rec.Content})
	case r.Method == http.MethodDelete && path.Dir(r.URL.Path) == records:
		if msg := f.z.failure(); msg != "" {
			cfError(w, http.StatusBadRequest, 10000, msg)
			return
		}
		id := path.Base(r.URL.Path)
		f.mu.Lock()
		rec, ok := f.ids[id]
		delete(f.ids, id)
		f.mu.Unlock()
		if !ok {
			cfError(w, http.StatusNotFound, 81044, "Record does not exist.")
			return
		}
		f.z.remove(rec[0], rec[1])
		cfOK(w, http.StatusOK, map[string]any{"id": id})
	default:
		cfError(w, http.StatusNotFound, 7003, "Could not route to "+r.URL.Path)
	}
}

// fakeDigitalOcean is a fake of the DigitalOcean API v2 domain records.
type fakeDigitalOcean struct {
	z     *txtZone
	token string

	mu  sync.Mutex
	ids map[int][2]string
	n   int
}

func newFakeDigitalOcean(zone, token string) *fakeDigitalOcean {
	return &fakeDigitalOcean{z: newTXTZone(zone), token: token, ids: map[int][2]string{}}
}

func (f *fakeDigitalOcean) apiHost() string   { return "api.digitalocean.com" }
func (f *fakeDigitalOcean) records() *txtZone { return f.z }

func doError(w http.ResponseWriter, status int, id, msg string) {
	writeJSON(w, status, map[string]any{"id": id, "message": msg})
}

func (f *fakeDigitalOcean) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		doError(w, http.StatusUnauthorized, "unauthorized", "Unable to authenticate you.")
		return
	}
	base := "/v2/domains/" + strings.TrimSuffix(f.z.zone, ".") + "/records"
	if msg := f.z.failure(); msg != "" && r.Method != http.MethodGet {
		doError(w, http.StatusForbidden, "forbidden", msg)
		return
	}
	switch {
	case r.Method == http.MethodPost && r.URL.Path == base:
		var rec struct {
			Type, Name, Data string
			TTL              int
		}
		if err := json.NewDecoder(r.Body).Decode(&rec); err != nil || rec.Type != "TXT" || !f.z.inZone(rec.Name) {
			doError(w, http.StatusUnprocessableEntity, "unprocessable_entity", fmt.Sprintf("bad record %+v (%v)", rec, err))
			return
		}
		f.mu.Lock()
		f.n++
		id := f.n
		f.ids[id] = [2]string{rec.Name, rec.Data}
		f.mu.Unlock()
		f.z.add(rec.Name, rec.Data)
		writeJSON(w, http.StatusCreated, map[string]any{"domain_record": map[string]any{"id": id, "type": "TXT", "name": rec.Name, "data": rec.Data, "ttl": rec.TTL}})
	case r.Method == http.MethodDelete && path.Dir(r.URL.Path) == base:
		id, _ := strconv.Atoi(path.Base(r.URL.Path))
		f.mu.Lock()
		rec, ok := f.ids[id]
		delete(f.ids, id)
		f.mu.Unlock()
		if !ok {
			doError(w, http.StatusNotFound, "not_found", "The resource you were accessing could not be found.")
			return
		}
		f.z.remove(rec[0], rec[1])
		w.WriteHeader(http.StatusNoContent)
	default:
		doError(w, http.StatusNotFound, "not_found", "The resource you were accessing could not be found.")
	}
}

// fakeHetzner is a fake of the Hetzner Cloud API's zone RRset actions
// (add_records, remove_records) and actions endpoint.
type fakeHetzner struct {
	z     *txtZone
	token string

	mu      sync.Mutex
	actions int
}

func newFakeHetzner(zone, token string) *fakeHetzner {
	return &fakeHetzner{z: newTXTZone(zone), token: token}
}

func (f *fakeHetzner) apiHost() string   { return "api.hetzner.cloud" }
func (f *fakeHetzner) records() *txtZone { return f.z }

func hzError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]any{"error": map[string]any{"code": code, "message": msg, "details": map[string]any{}}})
}

func (f *fakeHetzner) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		hzError(w, http.StatusUnauthorized, "unauthorized", "unable to authenticate")
		return
	}
	// /v1/zones/{zone}/rrsets/{name}/{type}/actions/{action}
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/v1/"), "/")
	switch {
	case r.Method == http.MethodGet && len(parts) == 2 && parts[0] == "actions":
		// Actions finish at once; the client's first poll sees success.
		id, _ := strconv.Atoi(parts[1])
		writeJSON(w, http.StatusOK, map[string]any{"action": map[string]any{"id": id, "status": "success", "progress": 100}})
	case r.Method == http.MethodPost && len(parts) == 7 && parts[0] == "zones" && parts[2] == "rrsets" && parts[4] == "TXT" && parts[5] == "actions":
		if msg := f.z.failure(); msg != "" {
			hzError(w, http.StatusForbidden, "forbidden", msg)
			return
		}
		if dns.Fqdn(parts[1]) != f.z.zone {
			hzError(w, http.StatusNotFound, "not_found", "zone not found")
			return
		}
		var body struct {
			Records []struct{ Value string }
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Records) == 0 {
			hzError(w, http.StatusBadRequest, "invalid_input", fmt.Sprintf("invalid input in field 'records' (%v)", err))
			return
		}
		name := parts[3] + "." + f.z.zone
		for _, rec := range body.Records {
			value, err := strconv.Unquote(rec.Value) // TXT values are quoted
			if err != nil {
				hzError(w, http.StatusBadRequest, "invalid_input", "TXT record values must be quoted")
				return
			}
			switch parts[6] {
			case "add_records":
				f.z.add(name, value)
			case "remove_records":
				f.z.remove(name, value)
			default:
				hzError(w, http.StatusNotFound, "not_found", "unknown action "+parts[6])
				return
			}
		}
		f.mu.Lock()
		f.actions++
		id := f.actions
		f.mu.Unlock()
		writeJSON(w, http.StatusCreated, map[string]any{"action": map[string]any{"id": id, "command": parts[6], "status": "running", "progress": 0}})
	default:
		hzError(w, http.StatusNotFound, "not_found", "no route for "+r.URL.Path)
	}
}
