// Package hcloudfake is a local fake of the Hetzner Cloud API, for tests.
// It is not Hetzner: it implements only the calls Detour's hetzner
// firewall provider makes, on an httptest server on 127.0.0.1, with
// requests checked the way Hetzner documents them
// (https://docs.hetzner.cloud/reference/cloud):
//
//	GET  /v1/servers/{id}                        public_net.firewalls
//	GET  /v1/firewalls/{id}                      the firewall and its rules
//	POST /v1/firewalls/{id}/actions/set_rules    replaces the rules, returns actions
//	GET  /v1/actions/{id}, GET /v1/actions?id=…  the actions' progress
//
// Every request needs "Authorization: Bearer <Token>" (else 401
// unauthorized). Request bodies are decoded strictly (unknown fields and
// trailing data are a 400 json_error) and set_rules validates each rule
// (direction in|out; protocol tcp, udp, icmp, esp or gre; a port for tcp
// and udp only: "80", "80-85" or "any"; source_ips, and no
// destination_ips, for "in"; the reverse for "out"; CIDRs that parse),
// answering 422 invalid_input. Any other path is a 404 not_found.
//
// Rules are kept as they were sent, strings unchanged (Hetzner itself
// rewrites IPv6 CIDRs to their canonical form). A set_rules call returns
// a "set_firewall_rules" action and one "apply_firewall" action per
// server the firewall is applied to, all "running"; see ActionsRunFor.
//
// A Server is safe for concurrent use.
package hcloudfake

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Rule is a firewall rule as the API has it. A nil Port or Description
// is JSON null; nil slices are written as [].
type Rule struct {
	Direction      string   `json:"direction"` // "in" or "out"
	Protocol       string   `json:"protocol"`  // "tcp", "udp", "icmp", "esp", "gre"
	Port           *string  `json:"port"`      // "80", "80-85", "any"; tcp and udp only
	SourceIPs      []string `json:"source_ips"`
	DestinationIPs []string `json:"destination_ips"`
	Description    *string  `json:"description"`
}

// Request is one request the fake received.
type Request struct {
	Method string
	Path   string // the URL path, with /v1
	Query  string // the raw query
	Body   string
}

// Server is the fake API. Seed it with AddFirewall, AddServer and
// AddRule, point the client at URL with Token, inspect it with Rules and
// Requests.
type Server struct {
	// URL is the API endpoint, with /v1, as hcloud.WithEndpoint takes it.
	URL string
	// Token is the API token the fake accepts.
	Token string

	srv *httptest.Server

	mu         sync.Mutex
	firewalls  map[int64]*firewall
	fwOrder    []int64 // firewall IDs in the order they were added
	servers    map[int64]bool
	actions    map[int64]*action
	nextAction int64
	runFor     int
	failAction *actionError
	failures   []*failure
	requests   []Request
}

type firewall struct {
	id      int64
	name    string
	rules   []Rule
	servers []int64
	created time.Time
}

type action struct {
	id        int64
	command   string
	resources []resource
	started   time.Time
	runFor    int // GETs that still report "running"
	gets      int
	fail      *actionError
	finished  time.Time
}

type actionError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type resource struct {
	ID   int64  `json:"id"`
	Type string `json:"type"`
}

type failure struct {
	method, prefix   string
	status           int
	code, retryAfter string
	times            int // left; < 1 means every matching request
}

// New starts a fake on 127.0.0.1; Close stops it.
func New() *Server {
	var tok [32]byte
	_, _ = rand.Read(tok[:])
	s := &Server{
		Token:      hex.EncodeToString(tok[:]),
		firewalls:  map[int64]*firewall{},
		servers:    map[int64]bool{},
		actions:    map[int64]*action{},
		nextAction: 1000,
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL + "/v1"
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// AddFirewall adds firewall id, with no rules, applied to serverIDs
// (which are added as servers when missing). Adding an existing ID
// replaces its name and servers and keeps its rules.
func (s *Server) AddFirewall(id int64, name string, serverIDs ...int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fw, ok := s.firewalls[id]
	if !ok {
		fw = &firewall{id: id, created: time.Now().UTC().Truncate(time.Second)}
		s.firewalls[id] = fw
		s.fwOrder = append(s.fwOrder, id)
	}
	fw.name, fw.servers = name, slices.Clone(serverIDs)
	for _, sid := range serverIDs {
		s.servers[sid] = true
	}
}

// AddServer adds server id. The firewalls applied to it are those
// AddFirewall named it for, in the order they were added.
func (s *Server) AddServer(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.servers[id] = true
}

// AddRule appends r to firewall fwID's rules, unchecked. It panics when
// there is no such firewall. As for every rule stored, nil slices become
// empty ones (Rules returns them so).
func (s *Server) AddRule(fwID int64, r Rule) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fw, ok := s.firewalls[fwID]
	if !ok {
		panic(fmt.Sprintf("hcloudfake: AddRule: no firewall %d", fwID))
	}
	fw.rules = append(fw.rules, cloneRule(wireRule(r)))
}

// Rules returns a copy of firewall fwID's rules; nil when there is no
// such firewall.
func (s *Server) Rules(fwID int64) []Rule {
	s.mu.Lock()
	defer s.mu.Unlock()
	fw, ok := s.firewalls[fwID]
	if !ok {
		return nil
	}
	out := make([]Rule, 0, len(fw.rules))
	for _, r := range fw.rules {
		out = append(out, cloneRule(r))
	}
	return out
}

// Requests returns the requests received so far, in order, including the
// ones answered with an error.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// Fail makes the next times requests whose method is method ("" for any)
// and whose URL path starts with pathPrefix (with /v1, e.g.
// "/v1/firewalls/1/actions/set_rules") fail with HTTP status, before the
// token is checked. With a code the body is Hetzner's error document
// {"error":{"code":code,"message":<status text>}}; without, a text/plain
// body, as a proxy in front of the API would send. A non-empty retryAfter
// is sent as Retry-After. A 429 carries RateLimit-Limit 3600,
// RateLimit-Remaining 0 and RateLimit-Reset an hour from now, as Hetzner
// sends when the budget is spent. times < 1 means every matching request
// from now on. Failures are matched in the order they were added.
func (s *Server) Fail(method, pathPrefix string, status int, code, retryAfter string, times int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, &failure{method: method, prefix: pathPrefix, status: status, code: code, retryAfter: retryAfter, times: times})
}

// ActionsRunFor makes each action created from now on report "running"
// to its first n GETs (by ID or in a list) and its final status from the
// n+1th on. The default, 0, finishes an action at its first GET; the
// set_rules response itself always says "running".
func (s *Server) ActionsRunFor(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.runFor = n
}

// FailAction makes the next action created (the set_firewall_rules
// action of the next set_rules call) end in status "error" with code and
// message. The rules stay as set.
func (s *Server) FailAction(code, message string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failAction = &actionError{Code: code, Message: message}
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Body: string(body)})

	h := w.Header()
	h.Set("RateLimit-Limit", "3600")
	h.Set("RateLimit-Remaining", "3599")
	h.Set("RateLimit-Reset", strconv.FormatInt(time.Now().Add(time.Second).Unix(), 10))

	if f := s.failure(r); f != nil {
		if f.retryAfter != "" {
			h.Set("Retry-After", f.retryAfter)
		}
		if f.status == http.StatusTooManyRequests {
			h.Set("RateLimit-Remaining", "0")
			h.Set("RateLimit-Reset", strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10))
		}
		if f.code == "" {
			http.Error(w, http.StatusText(f.status), f.status)
			return
		}
		writeError(w, f.status, f.code, http.StatusText(f.status), nil)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+s.Token {
		writeError(w, http.StatusUnauthorized, "unauthorized", "unable to authenticate", nil)
		return
	}

	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/v1/"), "/")
	switch {
	case r.Method == http.MethodGet && len(parts) == 2 && parts[0] == "servers":
		s.getServer(w, parts[1])
	case r.Method == http.MethodGet && len(parts) == 2 && parts[0] == "firewalls":
		s.getFirewall(w, parts[1])
	case r.Method == http.MethodPost && len(parts) == 4 && parts[0] == "firewalls" && parts[2] == "actions" && parts[3] == "set_rules":
		s.setRules(w, r, parts[1], body)
	case r.Method == http.MethodGet && len(parts) == 2 && parts[0] == "actions":
		s.getAction(w, parts[1])
	case r.Method == http.MethodGet && len(parts) == 1 && parts[0] == "actions":
		s.listActions(w, r)
	default:
		writeError(w, http.StatusNotFound, "not_found", "the fake has no "+r.Method+" "+r.URL.Path, nil)
	}
}

// failure returns the injected failure r meets, counting it, or nil.
func (s *Server) failure(r *http.Request) *failure {
	for i, f := range s.failures {
		if (f.method == "" || f.method == r.Method) && strings.HasPrefix(r.URL.Path, f.prefix) {
			if f.times > 0 {
				if f.times--; f.times == 0 {
					s.failures = slices.Delete(s.failures, i, i+1)
				}
			}
			return f
		}
	}
	return nil
}

func (s *Server) getServer(w http.ResponseWriter, sid string) {
	id, err := strconv.ParseInt(sid, 10, 64)
	if err != nil || !s.servers[id] {
		writeError(w, http.StatusNotFound, "not_found", "server with ID '"+sid+"' not found", nil)
		return
	}
	type fwRef struct {
		ID     int64  `json:"id"`
		Status string `json:"status"`
	}
	fws := []fwRef{}
	for _, fid := range s.fwOrder {
		if slices.Contains(s.firewalls[fid].servers, id) {
			fws = append(fws, fwRef{ID: fid, Status: "applied"})
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"server": map[string]any{
		"id":     id,
		"name":   "server-" + sid,
		"status": "running",
		"public_net": map[string]any{
			"firewalls":    fws,
			"floating_ips": []int64{},
		},
	}})
}

func (s *Server) firewallByID(w http.ResponseWriter, fid string) *firewall {
	id, err := strconv.ParseInt(fid, 10, 64)
	if fw, ok := s.firewalls[id]; err == nil && ok {
		return fw
	}
	writeError(w, http.StatusNotFound, "not_found", "firewall with ID '"+fid+"' not found", nil)
	return nil
}

func (s *Server) getFirewall(w http.ResponseWriter, fid string) {
	fw := s.firewallByID(w, fid)
	if fw == nil {
		return
	}
	applied := []map[string]any{}
	for _, sid := range fw.servers {
		applied = append(applied, map[string]any{"type": "server", "server": map[string]int64{"id": sid}})
	}
	writeJSON(w, http.StatusOK, map[string]any{"firewall": map[string]any{
		"id":         fw.id,
		"name":       fw.name,
		"labels":     map[string]string{},
		"created":    fw.created.Format(time.RFC3339),
		"rules":      fw.rules,
		"applied_to": applied,
	}})
}

func (s *Server) setRules(w http.ResponseWriter, r *http.Request, fid string, body []byte) {
	fw := s.firewallByID(w, fid)
	if fw == nil {
		return
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		writeError(w, http.StatusBadRequest, "json_error", "Content-Type must be application/json, not "+strconv.Quote(ct), nil)
		return
	}
	var req struct {
		Rules *[]Rule `json:"rules"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "json_error", "invalid JSON: "+err.Error(), nil)
		return
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "json_error", "invalid JSON: data after the object", nil)
		return
	}
	if req.Rules == nil {
		writeInvalid(w, "rules", "Missing data for required field.")
		return
	}
	for i, rule := range *req.Rules {
		if msg := validate(rule); msg != "" {
			writeInvalid(w, "rules", fmt.Sprintf("rule %d: %s", i, msg))
			return
		}
	}
	fw.rules = fw.rules[:0:0]
	for _, rule := range *req.Rules {
		fw.rules = append(fw.rules, cloneRule(wireRule(rule)))
	}

	acts := []*action{s.newAction("set_firewall_rules", resource{ID: fw.id, Type: "firewall"})}
	for _, sid := range fw.servers {
		acts = append(acts, s.newAction("apply_firewall", resource{ID: fw.id, Type: "firewall"}, resource{ID: sid, Type: "server"}))
	}
	out := make([]map[string]any, 0, len(acts))
	for _, a := range acts {
		out = append(out, a.json("running"))
	}
	writeJSON(w, http.StatusCreated, map[string]any{"actions": out})
}

// validate returns what is wrong with rule, or "".
func validate(r Rule) string {
	switch r.Direction {
	case "in":
		if len(r.SourceIPs) == 0 {
			return "source_ips is required for direction in"
		}
		if len(r.DestinationIPs) != 0 {
			return "destination_ips is only allowed for direction out"
		}
	case "out":
		if len(r.DestinationIPs) == 0 {
			return "destination_ips is required for direction out"
		}
		if len(r.SourceIPs) != 0 {
			return "source_ips is only allowed for direction in"
		}
	default:
		return fmt.Sprintf("direction %q is not one of in, out", r.Direction)
	}
	switch r.Protocol {
	case "tcp", "udp":
		if r.Port == nil {
			return "port is required for protocol " + r.Protocol
		}
		if !validPort(*r.Port) {
			return fmt.Sprintf("port %q is not a port (1-65535), a range (80-85) or any", *r.Port)
		}
	case "icmp", "esp", "gre":
		if r.Port != nil {
			return "port is only allowed for protocols tcp and udp"
		}
	default:
		return fmt.Sprintf("protocol %q is not one of tcp, udp, icmp, esp, gre", r.Protocol)
	}
	for _, c := range slices.Concat(r.SourceIPs, r.DestinationIPs) {
		if _, err := netip.ParsePrefix(c); err != nil {
			return fmt.Sprintf("%q is not a CIDR", c)
		}
	}
	return ""
}

func validPort(p string) bool {
	if p == "any" {
		return true
	}
	from, to, isRange := strings.Cut(p, "-")
	a, err := strconv.Atoi(from)
	if err != nil || a < 1 || a > 65535 || strings.HasPrefix(from, "+") {
		return false
	}
	if !isRange {
		return true
	}
	b, err := strconv.Atoi(to)
	return err == nil && a < b && b <= 65535 && !strings.HasPrefix(to, "+")
}

func (s *Server) newAction(command string, res ...resource) *action {
	s.nextAction++
	a := &action{id: s.nextAction, command: command, resources: res, started: time.Now().UTC(), runFor: s.runFor}
	if s.failAction != nil {
		a.fail, s.failAction = s.failAction, nil
	}
	s.actions[a.id] = a
	return a
}

// poll counts one GET of a and returns its status.
func (a *action) poll() string {
	a.gets++
	if a.gets <= a.runFor {
		return "running"
	}
	if a.finished.IsZero() {
		a.finished = time.Now().UTC()
	}
	if a.fail != nil {
		return "error"
	}
	return "success"
}

func (a *action) json(status string) map[string]any {
	m := map[string]any{
		"id":        a.id,
		"command":   a.command,
		"status":    status,
		"progress":  0,
		"started":   a.started.Format(time.RFC3339),
		"finished":  nil,
		"resources": a.resources,
		"error":     nil,
	}
	if status != "running" {
		m["progress"] = 100
		m["finished"] = a.finished.Format(time.RFC3339)
	}
	if status == "error" {
		m["error"] = a.fail
	}
	return m
}

func (s *Server) getAction(w http.ResponseWriter, aid string) {
	id, err := strconv.ParseInt(aid, 10, 64)
	a, ok := s.actions[id]
	if err != nil || !ok {
		writeError(w, http.StatusNotFound, "not_found", "action with ID '"+aid+"' not found", nil)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"action": a.json(a.poll())})
}

func (s *Server) listActions(w http.ResponseWriter, r *http.Request) {
	ids := r.URL.Query()["id"]
	if len(ids) == 0 {
		writeInvalid(w, "id", "at least one id is required")
		return
	}
	out := []map[string]any{}
	for _, sid := range ids {
		id, err := strconv.ParseInt(sid, 10, 64)
		if err != nil {
			writeInvalid(w, "id", fmt.Sprintf("%q is not an ID", sid))
			return
		}
		if a, ok := s.actions[id]; ok {
			out = append(out, a.json(a.poll()))
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"actions": out,
		"meta": map[string]any{"pagination": map[string]any{
			"page": 1, "per_page": len(out), "previous_page": nil, "next_page": nil, "last_page": 1, "total_entries": len(out),
		}},
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, message string, details any) {
	e := map[string]any{"code": code, "message": message}
	if details != nil {
		e["details"] = details
	}
	writeJSON(w, status, map[string]any{"error": e})
}

func writeInvalid(w http.ResponseWriter, field, msg string) {
	writeError(w, http.StatusUnprocessableEntity, "invalid_input", "invalid input in field '"+field+"'",
		map[string]any{"fields": []map[string]any{{"name": field, "messages": []string{msg}}}})
}

// wireRule returns r with nil slices as empty ones, so that they are
// written as [] like Hetzner does; rules are stored so.
func wireRule(r Rule) Rule {
	if r.SourceIPs == nil {
		r.SourceIPs = []string{}
	}
	if r.DestinationIPs == nil {
		r.DestinationIPs = []string{}
	}
	return r
}

func cloneRule(r Rule) Rule {
	c := r
	c.SourceIPs, c.DestinationIPs = slices.Clone(r.SourceIPs), slices.Clone(r.DestinationIPs)
	if r.Port != nil {
		p := *r.Port
		c.Port = &p
	}
	if r.Description != nil {
		d := *r.Description
		c.Description = &d
	}
	return c
}
