// Package dofake is a local fake of the DigitalOcean API for tests. It is
// not DigitalOcean: it implements only the calls Detour makes to change a
// Cloud Firewall, with the request and response shapes the DigitalOcean
// API v2 reference documents for them:
//
//	GET    /v2/firewalls              list (page, per_page; links.pages.next)
//	GET    /v2/firewalls/{id}         one firewall
//	POST   /v2/firewalls/{id}/rules   add inbound rules (204)
//	DELETE /v2/firewalls/{id}/rules   remove exactly the matching inbound rules (204)
//	GET    /v2/droplets/{id}          one droplet (id, name, tags)
//
// It checks what DigitalOcean checks and a client could get wrong: the
// "Authorization: Bearer <token>" header (401 with DigitalOcean's error
// body otherwise), "Content-Type: application/json" on a body, and the
// body itself, decoded strictly (an unknown field is a 400, a rule that is
// not valid a 422). Errors have DigitalOcean's body, {"id": ..., "message":
// ...}. Inbound rules have address sources only; outbound rules, tags,
// droplet, load balancer and Kubernetes sources and "deny" rules are not
// implemented and are refused with a 422 that says so.
//
// A Server is safe for concurrent use.
package dofake

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultToken is the bearer token a new Server accepts.
const DefaultToken = "dofake-test-token"

// Server is the fake API, listening on 127.0.0.1.
type Server struct {
	// URL is the base URL to give the client (cloud.Config.Endpoint).
	URL string

	srv *httptest.Server

	mu         sync.Mutex
	token      string
	firewalls  []*firewall // in creation order, as listed
	droplets   map[int]droplet
	requests   []Request
	fails      []*failure
	applyAfter int
	applyFails bool
	onApply    func(fwID string, rules []Inbound)
}

// Inbound is one inbound rule as the fake holds it.
type Inbound struct {
	Protocol  string   // "tcp", "udp" or "icmp"
	Ports     string   // "80", "8000-9000", "0" for every port
	Addresses []string // sources.addresses
}

// Request is a request the fake received.
type Request struct {
	Method string
	Path   string // URL path, without the query
	Query  string // raw query
	Body   string
}

type firewall struct {
	id, name   string
	dropletIDs []int
	tags       []string
	rules      []Inbound
	created    time.Time
	// pendingGets is how many more GETs report the last change waiting;
	// failed is whether it then ends as failed.
	pendingGets int
	failed      bool
	// unapplied is whether a change has not been reported applied yet.
	unapplied bool
}

type droplet struct {
	id   int
	tags []string
}

type failure struct {
	method, prefix string
	status         int
	retryAfter     string
	left           int // < 0: forever
}

// New starts a fake accepting DefaultToken. Close it when done.
func New() *Server {
	s := &Server{token: DefaultToken, droplets: map[int]droplet{}}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

// NewOn is New serving on ln (a listener in a test's network namespace).
func NewOn(ln net.Listener) *Server {
	s := &Server{token: DefaultToken, droplets: map[int]droplet{}}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.Listener.Close()
	s.srv.Listener = ln
	s.srv.Start()
	s.URL = s.srv.URL
	return s
}

// OnApply sets f to be called with a firewall's inbound rules whenever a
// change to them takes effect: when the fake first reports it applied
// (status "succeeded"), or at once when ApplyAfter is 0. The end-to-end
// tests enforce the rules there. f runs with the fake locked and must not
// call it.
func (s *Server) OnApply(f func(fwID string, rules []Inbound)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.onApply = f
}

// applied reports fw's rules to the OnApply hook; s.mu is held.
func (s *Server) applied(fw *firewall) {
	fw.unapplied = false
	if s.onApply == nil {
		return
	}
	rules := make([]Inbound, len(fw.rules))
	for i, r := range fw.rules {
		rules[i] = Inbound{Protocol: r.Protocol, Ports: r.Ports, Addresses: slices.Clone(r.Addresses)}
	}
	s.onApply(fw.id, rules)
}

// Close shuts the server down.
func (s *Server) Close() { s.srv.Close() }

// Token returns the bearer token the fake accepts.
func (s *Server) Token() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token
}

// SetToken changes the bearer token the fake accepts.
func (s *Server) SetToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token = token
}

// AddFirewall adds a firewall with no rules, applied to the droplets
// dropletIDs and to those tagged with one of tags. Firewalls are listed
// in the order they were added.
func (s *Server) AddFirewall(id, name string, dropletIDs []int, tags []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.firewalls = append(s.firewalls, &firewall{id: id, name: name,
		dropletIDs: slices.Clone(dropletIDs), tags: slices.Clone(tags), created: time.Now().UTC()})
}

// AddDroplet adds a droplet with tags.
func (s *Server) AddDroplet(id int, tags []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.droplets[id] = droplet{id: id, tags: slices.Clone(tags)}
}

// AddInboundRule adds an inbound rule to firewall fwID, stored as given
// (ports "all" stays "all", unlike a rule added through the API, which is
// stored as DigitalOcean stores it: "0"). It panics if there is no such
// firewall.
func (s *Server) AddInboundRule(fwID string, protocol, ports string, addresses ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fw := s.find(fwID)
	if fw == nil {
		panic("dofake: AddInboundRule: no firewall " + fwID)
	}
	fw.rules = append(fw.rules, Inbound{Protocol: protocol, Ports: ports, Addresses: slices.Clone(addresses)})
}

// InboundRules returns firewall fwID's current inbound rules, exactly, in
// order; nil if there is no such firewall.
func (s *Server) InboundRules(fwID string) []Inbound {
	s.mu.Lock()
	defer s.mu.Unlock()
	fw := s.find(fwID)
	if fw == nil {
		return nil
	}
	out := make([]Inbound, len(fw.rules))
	for i, r := range fw.rules {
		out[i] = Inbound{Protocol: r.Protocol, Ports: r.Ports, Addresses: slices.Clone(r.Addresses)}
	}
	return out
}

// Requests returns the requests received so far, in order, including
// those that failed.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Fail makes the next times requests whose method is method ("" for any)
// and whose path starts with pathPrefix fail with status and
// DigitalOcean's error body for it, with a Retry-After header when
// retryAfter is not empty; times <= 0 means every such request from now
// on. A 429 without retryAfter carries RateLimit-Reset (unix seconds) two
// seconds ahead, as DigitalOcean sends it. Failures are checked before the
// token.
func (s *Server) Fail(method, pathPrefix string, status int, retryAfter string, times int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	left := times
	if times <= 0 {
		left = -1
	}
	s.fails = append(s.fails, &failure{method: method, prefix: pathPrefix, status: status, retryAfter: retryAfter, left: left})
}

// ApplyAfter makes each later change to a firewall's rules report status
// "waiting", with a pending change per droplet, for the next n GETs of
// that firewall (alone or in the list) before status "succeeded". Zero,
// the default, applies changes at once.
func (s *Server) ApplyAfter(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applyAfter = n
}

// ApplyFails makes later changes end in status "failed" instead of
// "succeeded" (the rules are changed all the same, as the API shows them).
func (s *Server) ApplyFails(fails bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.applyFails = fails
}

func (s *Server) find(id string) *firewall {
	for _, fw := range s.firewalls {
		if fw.id == id {
			return fw
		}
	}
	return nil
}

// The wire shapes.

type errorJSON struct {
	ID      string `json:"id"`
	Message string `json:"message"`
}

type sourcesJSON struct {
	Addresses        []string `json:"addresses,omitempty"`
	Tags             []string `json:"tags,omitempty"`
	DropletIDs       []int    `json:"droplet_ids,omitempty"`
	LoadBalancerUIDs []string `json:"load_balancer_uids,omitempty"`
	KubernetesIDs    []string `json:"kubernetes_ids,omitempty"`
}

type inboundJSON struct {
	Protocol string       `json:"protocol"`
	Ports    string       `json:"ports"`
	Sources  *sourcesJSON `json:"sources"`
	Action   string       `json:"action,omitempty"`
}

type rulesRequestJSON struct {
	InboundRules  []inboundJSON     `json:"inbound_rules"`
	OutboundRules []json.RawMessage `json:"outbound_rules"`
}

type pendingJSON struct {
	DropletID int    `json:"droplet_id"`
	Removing  bool   `json:"removing"`
	Status    string `json:"status"`
}

type firewallJSON struct {
	ID             string        `json:"id"`
	Name           string        `json:"name"`
	Status         string        `json:"status"`
	InboundRules   []inboundJSON `json:"inbound_rules"`
	OutboundRules  []struct{}    `json:"outbound_rules"`
	CreatedAt      string        `json:"created_at"`
	DropletIDs     []int         `json:"droplet_ids"`
	Tags           []string      `json:"tags"`
	PendingChanges []pendingJSON `json:"pending_changes"`
}

// view renders fw as a GET shows it, counting the GET.
// view is fw as the API shows it; a change shown applied for the first
// time goes to the OnApply hook. s.mu is held.
func (s *Server) view(fw *firewall) firewallJSON {
	v := fw.view()
	if v.Status == "succeeded" && fw.unapplied {
		s.applied(fw)
	}
	return v
}

func (fw *firewall) view() firewallJSON {
	v := firewallJSON{ID: fw.id, Name: fw.name, Status: "succeeded", CreatedAt: fw.created.Format(time.RFC3339),
		InboundRules: []inboundJSON{}, OutboundRules: []struct{}{}, DropletIDs: slices.Clone(fw.dropletIDs),
		Tags: slices.Clone(fw.tags), PendingChanges: []pendingJSON{}}
	if v.DropletIDs == nil {
		v.DropletIDs = []int{}
	}
	if v.Tags == nil {
		v.Tags = []string{}
	}
	for _, r := range fw.rules {
		v.InboundRules = append(v.InboundRules, inboundJSON{Protocol: r.Protocol, Ports: r.Ports,
			Sources: &sourcesJSON{Addresses: slices.Clone(r.Addresses)}})
	}
	switch {
	case fw.pendingGets > 0:
		fw.pendingGets--
		v.Status = "waiting"
		ids := fw.dropletIDs
		if len(ids) == 0 {
			ids = []int{0}
		}
		for _, id := range ids {
			v.PendingChanges = append(v.PendingChanges, pendingJSON{DropletID: id, Status: "waiting"})
		}
	case fw.failed:
		v.Status = "failed"
	}
	return v
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "reading the body: "+err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Body: string(body)})

	for i, f := range s.fails {
		if (f.method == "" || f.method == r.Method) && strings.HasPrefix(r.URL.Path, f.prefix) {
			if f.left > 0 {
				f.left--
				if f.left == 0 {
					s.fails = slices.Delete(s.fails, i, i+1)
				}
			}
			if f.retryAfter != "" {
				w.Header().Set("Retry-After", f.retryAfter)
			} else if f.status == http.StatusTooManyRequests {
				w.Header().Set("RateLimit-Reset", strconv.FormatInt(time.Now().Add(2*time.Second).Unix(), 10))
			}
			if f.status == http.StatusTooManyRequests {
				w.Header().Set("RateLimit-Limit", "5000")
				w.Header().Set("RateLimit-Remaining", "0")
			}
			id, msg := statusError(f.status)
			writeError(w, f.status, id, msg)
			return
		}
	}

	if r.Header.Get("Authorization") != "Bearer "+s.token {
		writeError(w, http.StatusUnauthorized, "unauthorized", "Unable to authenticate you.")
		return
	}
	if len(body) > 0 {
		mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "application/json" {
			writeError(w, http.StatusBadRequest, "bad_request", "Content-Type must be application/json")
			return
		}
	}

	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case len(parts) == 2 && parts[0] == "v2" && parts[1] == "firewalls":
		if r.Method != http.MethodGet {
			break
		}
		s.listFirewalls(w, r)
		return
	case len(parts) == 3 && parts[0] == "v2" && parts[1] == "firewalls":
		if r.Method != http.MethodGet {
			break
		}
		fw := s.find(parts[2])
		if fw == nil {
			notFound(w)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"firewall": s.view(fw)})
		return
	case len(parts) == 4 && parts[0] == "v2" && parts[1] == "firewalls" && parts[3] == "rules":
		if r.Method != http.MethodPost && r.Method != http.MethodDelete {
			break
		}
		fw := s.find(parts[2])
		if fw == nil {
			notFound(w)
			return
		}
		s.changeRules(w, r.Method, fw, body)
		return
	case len(parts) == 3 && parts[0] == "v2" && parts[1] == "droplets":
		if r.Method != http.MethodGet {
			break
		}
		id, err := strconv.Atoi(parts[2])
		d, ok := s.droplets[id]
		if err != nil || !ok {
			notFound(w)
			return
		}
		tags := slices.Clone(d.tags)
		if tags == nil {
			tags = []string{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"droplet": map[string]any{
			"id": d.id, "name": fmt.Sprintf("droplet-%d", d.id), "status": "active", "tags": tags}})
		return
	default:
		notFound(w)
		return
	}
	writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "The fake does not implement "+r.Method+" "+r.URL.Path+".")
}

func (s *Server) listFirewalls(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	page, perPage := 1, 20
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, "bad_request", "page must be a positive number")
			return
		}
		page = n
	}
	if v := q.Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, "bad_request", "per_page must be a positive number")
			return
		}
		perPage = min(n, 200)
	}
	start := min((page-1)*perPage, len(s.firewalls))
	end := min(start+perPage, len(s.firewalls))
	list := []firewallJSON{}
	for _, fw := range s.firewalls[start:end] {
		list = append(list, s.view(fw))
	}
	pages := map[string]string{}
	if end < len(s.firewalls) {
		pages["next"] = fmt.Sprintf("%s/v2/firewalls?page=%d&per_page=%d", s.URL, page+1, perPage)
		pages["last"] = fmt.Sprintf("%s/v2/firewalls?page=%d&per_page=%d", s.URL, (len(s.firewalls)+perPage-1)/perPage, perPage)
	}
	if page > 1 {
		pages["prev"] = fmt.Sprintf("%s/v2/firewalls?page=%d&per_page=%d", s.URL, page-1, perPage)
		pages["first"] = fmt.Sprintf("%s/v2/firewalls?page=1&per_page=%d", s.URL, perPage)
	}
	writeJSON(w, http.StatusOK, map[string]any{"firewalls": list, "links": map[string]any{"pages": pages},
		"meta": map[string]int{"total": len(s.firewalls)}})
}

// changeRules adds (POST) or removes (DELETE) the inbound rules of body.
func (s *Server) changeRules(w http.ResponseWriter, method string, fw *firewall, body []byte) {
	var req rulesRequestJSON
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "decoding the body: "+err.Error())
		return
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		writeError(w, http.StatusBadRequest, "bad_request", "the body holds more than one JSON value")
		return
	}
	if len(req.OutboundRules) > 0 {
		writeError(w, http.StatusUnprocessableEntity, "unprocessable_entity", "the fake does not implement outbound rules")
		return
	}
	if len(req.InboundRules) == 0 {
		writeError(w, http.StatusUnprocessableEntity, "unprocessable_entity", "at least one rule is required")
		return
	}
	var rules []Inbound
	for i, in := range req.InboundRules {
		r, err := checkInbound(in)
		if err != nil {
			writeError(w, http.StatusUnprocessableEntity, "unprocessable_entity", fmt.Sprintf("inbound_rules[%d]: %v", i, err))
			return
		}
		rules = append(rules, r)
	}
	for _, r := range rules {
		if method == http.MethodPost {
			if !slices.ContainsFunc(fw.rules, r.same) {
				fw.rules = append(fw.rules, r)
			}
		} else {
			fw.rules = slices.DeleteFunc(fw.rules, r.same)
		}
	}
	fw.pendingGets, fw.failed, fw.unapplied = s.applyAfter, s.applyFails, true
	if fw.pendingGets == 0 && !fw.failed {
		s.applied(fw)
	}
	w.WriteHeader(http.StatusNoContent)
}

// checkInbound validates a rule as DigitalOcean would and normalises it
// as DigitalOcean stores it.
func checkInbound(in inboundJSON) (Inbound, error) {
	r := Inbound{Protocol: in.Protocol, Ports: in.Ports}
	switch in.Protocol {
	case "tcp", "udp":
		if r.Ports == "all" {
			r.Ports = "0"
		}
		if !validPorts(r.Ports) {
			return r, fmt.Errorf("ports %q is not a port, a range or \"all\"", in.Ports)
		}
	case "icmp":
		if r.Ports != "" && r.Ports != "0" {
			return r, errors.New("icmp rules have no ports")
		}
		r.Ports = "0"
	default:
		return r, fmt.Errorf("protocol %q is not tcp, udp or icmp", in.Protocol)
	}
	if in.Action != "" && in.Action != "allow" {
		return r, fmt.Errorf("the fake does not implement action %q", in.Action)
	}
	src := in.Sources
	if src == nil || len(src.Addresses) == 0 {
		return r, errors.New("sources.addresses is required (the fake implements address sources only)")
	}
	if len(src.Tags)+len(src.DropletIDs)+len(src.LoadBalancerUIDs)+len(src.KubernetesIDs) > 0 {
		return r, errors.New("the fake implements address sources only")
	}
	for _, a := range src.Addresses {
		if _, err := netip.ParsePrefix(a); err != nil {
			if _, err := netip.ParseAddr(a); err != nil {
				return r, fmt.Errorf("source %q is not an address or a prefix", a)
			}
		}
	}
	r.Addresses = slices.Clone(src.Addresses)
	return r, nil
}

func validPorts(p string) bool {
	if p == "0" {
		return true
	}
	lo, hi, isRange := strings.Cut(p, "-")
	a, err := strconv.Atoi(lo)
	if err != nil || a < 1 || a > 65535 || lo != strconv.Itoa(a) {
		return false
	}
	if !isRange {
		return true
	}
	b, err := strconv.Atoi(hi)
	return err == nil && b >= a && b <= 65535 && hi == strconv.Itoa(b)
}

// same reports whether o is the same rule: protocol, ports and the same
// set of addresses.
func (r Inbound) same(o Inbound) bool {
	if r.Protocol != o.Protocol || r.Ports != o.Ports || len(r.Addresses) != len(o.Addresses) {
		return false
	}
	a, b := slices.Clone(r.Addresses), slices.Clone(o.Addresses)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func statusError(status int) (id, message string) {
	switch status {
	case http.StatusUnauthorized:
		return "unauthorized", "Unable to authenticate you."
	case http.StatusForbidden:
		return "forbidden", "You are not authorized to perform this operation."
	case http.StatusNotFound:
		return "not_found", "The resource you were accessing could not be found."
	case http.StatusUnprocessableEntity:
		return "unprocessable_entity", "The request could not be processed."
	case http.StatusTooManyRequests:
		return "too_many_requests", "API rate limit exceeded."
	}
	if status >= 500 {
		return "server_error", "Server was unable to give you a response."
	}
	return "bad_request", http.StatusText(status)
}

func notFound(w http.ResponseWriter) {
	id, msg := statusError(http.StatusNotFound)
	writeError(w, http.StatusNotFound, id, msg)
}

func writeError(w http.ResponseWriter, status int, id, message string) {
	writeJSON(w, status, errorJSON{ID: id, Message: message})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
