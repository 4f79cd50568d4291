package hostcheck

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// acmeProbePath is the request path the checks follow through a server's
// configuration: what an http-01 validation asks for (RFC 8555 §8.3),
// with a token of the base64url alphabet.
const acmeProbePath = "/.well-known/acme-challenge/Detour-probe_0123456789"

// acmeALPN is the ALPN protocol of tls-alpn-01 (RFC 8737 §6.2).
const acmeALPN = "acme-tls/1"

// ngxListen is one listen directive of an http server block.
type ngxListen struct {
	Addr string
	Port int
	SSL  bool
	Def  bool // default_server
}

// parseNginxListen reads a listen directive's arguments: "80",
// "127.0.0.1:8080", "[::]:443 ssl default_server", "unix:/path" (ok false).
func parseNginxListen(args []string) (ngxListen, bool) {
	if len(args) == 0 {
		return ngxListen{}, false
	}
	a := args[0]
	l := ngxListen{Addr: a}
	if strings.HasPrefix(a, "unix:") {
		return l, false
	}
	portStr := a
	switch {
	case strings.HasPrefix(a, "["):
		i := strings.Index(a, "]")
		if i < 0 {
			return l, false
		}
		portStr = strings.TrimPrefix(a[i+1:], ":")
		if portStr == "" {
			portStr = "80"
		}
	case strings.Contains(a, ":"):
		portStr = a[strings.LastIndex(a, ":")+1:]
	default:
		if _, err := strconv.Atoi(a); err != nil {
			portStr = "80" // a host name or address alone
		}
	}
	p, err := strconv.Atoi(portStr)
	if err != nil || p < 1 || p > 65535 {
		return l, false
	}
	l.Port = p
	for _, o := range args[1:] {
		switch o {
		case "ssl":
			l.SSL = true
		case "default_server", "default":
			l.Def = true
		}
	}
	return l, true
}

// ngxServer is an http server block.
type ngxServer struct {
	d       *directive
	listens []ngxListen
	names   []string
}

func (s *ngxServer) on(port int) (ngxListen, bool) {
	for _, l := range s.listens {
		if l.Port == port {
			return l, true
		}
	}
	return ngxListen{}, false
}

// nginxModel is what the checks need of an nginx configuration.
type nginxModel struct {
	prefix       string
	http         []*directive // the http block's directives
	servers      []*ngxServer
	upstreams    map[string][]string // http upstream name -> its server addresses
	streamBlocks []*directive        // stream blocks
}

func newNginxModel(tree []*directive, prefix string) *nginxModel {
	m := &nginxModel{prefix: prefix, upstreams: map[string][]string{}}
	for _, h := range find(tree, "http") {
		m.http = append(m.http, h.Block...)
	}
	for _, d := range m.http {
		switch d.Name {
		case "server":
			s := &ngxServer{d: d}
			for _, l := range find(d.Block, "listen") {
				if nl, ok := parseNginxListen(l.Args); ok {
					s.listens = append(s.listens, nl)
				}
			}
			if len(find(d.Block, "listen")) == 0 {
				s.listens = []ngxListen{{Addr: "*:80", Port: 80}} // nginx's default as root
			}
			for _, n := range find(d.Block, "server_name") {
				s.names = append(s.names, n.Args...)
			}
			m.servers = append(m.servers, s)
		case "upstream":
			m.upstreams[d.arg(0)] = upstreamServers(d)
		}
	}
	m.streamBlocks = find(tree, "stream")
	return m
}

func upstreamServers(d *directive) []string {
	var out []string
	for _, s := range find(d.Block, "server") {
		out = append(out, s.arg(0))
	}
	return out
}

// serverFor picks the server block nginx gives a request for name on
// port: exact name, longest leading wildcard, longest trailing wildcard,
// first matching regex, else the port's default_server, else its first
// block. ok is false when no block listens on port.
func (m *nginxModel) serverFor(name string, port int) (*ngxServer, string, bool) {
	var on []*ngxServer
	for _, s := range m.servers {
		if _, ok := s.on(port); ok {
			on = append(on, s)
		}
	}
	if len(on) == 0 {
		return nil, "", false
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if name != "" {
		for _, s := range on {
			for _, n := range s.names {
				if strings.ToLower(n) == name {
					return s, "exact", true
				}
			}
		}
		var best *ngxServer
		bestLen := 0
		for _, s := range on { // *.example.com and .example.com
			for _, n := range s.names {
				n = strings.ToLower(n)
				suffix, ok := strings.CutPrefix(n, "*")
				if !ok && strings.HasPrefix(n, ".") {
					suffix = n
					if name == n[1:] && len(n) > bestLen {
						best, bestLen = s, len(n)
						continue
					}
				} else if !ok {
					continue
				}
				if strings.HasPrefix(suffix, ".") && strings.HasSuffix(name, suffix) && len(name) > len(suffix) && len(n) > bestLen {
					best, bestLen = s, len(n)
				}
			}
		}
		if best != nil {
			return best, "wildcard", true
		}
		for _, s := range on { // www.example.*
			for _, n := range s.names {
				n = strings.ToLower(n)
				if p, ok := strings.CutSuffix(n, ".*"); ok && strings.HasPrefix(name, p+".") && len(n) > bestLen {
					best, bestLen = s, len(n)
				}
			}
		}
		if best != nil {
			return best, "wildcard", true
		}
		for _, s := range on {
			for _, n := range s.names {
				if re, ok := strings.CutPrefix(n, "~"); ok {
					if r, err := regexp.Compile(re); err == nil && r.MatchString(name) {
						return s, "regex", true
					}
				}
			}
		}
	}
	for _, s := range on {
		if l, _ := s.on(port); l.Def {
			return s, "default", true
		}
	}
	return on[0], "default", true
}

// handler is what a server block or virtual host does with one request
// path.
type handler struct {
	kind   string // "static", "proxy", "redirect", "return"
	id     any    // what decided (an nginx location, an Apache directive): two paths handled alike have the same id
	target string // proxy target, redirect URL or return, as written
	served string // static: the file served for the path
	root   string // static: the document root that serves the path; "" when an alias maps it otherwise
	notes  []string
}

// handle follows path through server block s the way nginx does: the
// server-level rewrite phase (return, rewrite), location selection, the
// location's own return/rewrite, then its content handler.
func (m *nginxModel) handle(s *ngxServer, path string) handler {
	var h handler
	if done := rewritePhase(s.d.Block, path, &h); done {
		return h
	}
	loc, chain, note := selectLocation(s.d.Block, path)
	if note != "" {
		h.notes = append(h.notes, note)
	}
	h.id = loc
	var block []*directive
	if loc != nil {
		block = loc.Block
		if done := rewritePhase(block, path, &h); done {
			return h
		}
		for _, pass := range []string{"proxy_pass", "fastcgi_pass", "uwsgi_pass", "scgi_pass", "grpc_pass", "memcached_pass"} {
			if d := first(block, pass); d != nil {
				h.kind, h.target = "proxy", m.resolveUpstream(d.arg(0))
				return h
			}
		}
	}
	h.kind = "static"
	// The innermost root or alias wins: location chain inside out, then
	// server, then http.
	levels := [][]*directive{}
	for i := len(chain) - 1; i >= 0; i-- {
		levels = append(levels, chain[i].Block)
	}
	levels = append(levels, s.d.Block, m.http)
	for i, lv := range levels {
		if a := first(lv, "alias"); a != nil && i < len(chain) {
			loc := chain[len(chain)-1-i]
			alias := a.arg(0) // appended to as it is: its trailing slash matters
			if !filepath.IsAbs(alias) && m.prefix != "" {
				alias = filepath.Join(m.prefix, alias) + strings.Repeat("/", btoi(strings.HasSuffix(alias, "/")))
			}
			mod, lpath := locationPattern(loc)
			if mod == "" || mod == "^~" || mod == "=" {
				h.served = alias + strings.TrimPrefix(path, lpath)
				if strings.HasSuffix(h.served, path) {
					h.root = strings.TrimSuffix(h.served, path)
				}
			} else {
				h.served = alias
				h.notes = append(h.notes, fmt.Sprintf("alias %s in a regex location (%s:%d): where it maps the path depends on the captures", a.arg(0), a.File, a.Line))
			}
			return h
		}
		if r := first(lv, "root"); r != nil {
			h.root = m.abs(r.arg(0))
			h.served = h.root + path
			return h
		}
	}
	h.root = m.abs("html") // nginx's default root, under its prefix
	h.served = h.root + path
	h.notes = append(h.notes, "no root directive: nginx serves its default root "+h.root)
	return h
}

// abs makes a root relative to nginx's prefix absolute, and drops a
// trailing slash.
func (m *nginxModel) abs(p string) string {
	if !filepath.IsAbs(p) && !strings.HasPrefix(p, "$") {
		if m.prefix == "" {
			return p
		}
		p = filepath.Join(m.prefix, p)
	}
	if len(p) > 1 {
		p = strings.TrimSuffix(p, "/")
	}
	return p
}

// rewritePhase applies the return and rewrite directives of a block to
// path, in order; done when one of them answers the request.
func rewritePhase(block []*directive, path string, h *handler) bool {
	for _, d := range block {
		switch d.Name {
		case "return":
			code, _ := strconv.Atoi(d.arg(0))
			switch {
			case code >= 300 && code < 400 && code != 304 || code == 0:
				h.kind = "redirect"
				h.target = d.arg(len(d.Args) - 1)
			default:
				h.kind = "return"
				h.target = strings.Join(d.Args, " ")
			}
			return true
		case "rewrite":
			re, err := regexp.Compile(d.arg(0))
			if err != nil {
				h.notes = append(h.notes, fmt.Sprintf("rewrite %s (%s:%d): the regex could not be evaluated: %v", d.arg(0), d.File, d.Line, err))
				continue
			}
			if !re.MatchString(path) {
				continue
			}
			repl, flag := d.arg(1), d.arg(2)
			if flag == "redirect" || flag == "permanent" || strings.HasPrefix(repl, "http://") || strings.HasPrefix(repl, "https://") || strings.HasPrefix(repl, "$scheme") {
				h.kind = "redirect"
				h.target = repl
				return true
			}
			h.notes = append(h.notes, fmt.Sprintf("rewrite %s %s (%s:%d) changes the path internally: not followed", d.arg(0), repl, d.File, d.Line))
		case "if":
			h.notes = append(h.notes, fmt.Sprintf("an if block (%s:%d) was not evaluated", d.File, d.Line))
		}
	}
	return false
}

// locationPattern returns a location's modifier ("", "=", "^~", "~",
// "~*", "@") and its path or regex, also when the modifier is written
// against it ("=/x", "~*\.php$").
func locationPattern(d *directive) (mod, pat string) {
	if len(d.Args) >= 2 {
		return d.Args[0], d.Args[1]
	}
	a := d.arg(0)
	for _, m := range []string{"^~", "~*", "=", "~", "@"} {
		if rest, ok := strings.CutPrefix(a, m); ok {
			if m == "@" {
				return m, a
			}
			return m, rest
		}
	}
	return "", a
}

// selectLocation picks the location nginx uses for path among those of
// block: an exact match; else the longest prefix, kept when marked ^~;
// else the first matching regex (those nested in the longest prefix
// first); else the longest prefix. chain lists the locations from the
// outermost to the one chosen.
func selectLocation(block []*directive, path string) (*directive, []*directive, string) {
	var best *directive
	bestLen := -1
	var note string
	for _, d := range find(block, "location") {
		mod, pat := locationPattern(d)
		switch mod {
		case "=":
			if pat == path {
				return d, []*directive{d}, ""
			}
		case "", "^~":
			if strings.HasPrefix(path, pat) && len(pat) > bestLen {
				best, bestLen = d, len(pat)
			}
		}
	}
	if best != nil {
		mod, _ := locationPattern(best)
		if inner, chain, n := selectLocation(best.Block, path); inner != nil {
			innerMod, _ := locationPattern(inner)
			if mod == "^~" || innerMod == "=" || innerMod == "~" || innerMod == "~*" || innerMod == "^~" {
				return inner, append([]*directive{best}, chain...), n
			}
		}
		if mod == "^~" {
			return best, []*directive{best}, ""
		}
	}
	for _, d := range find(block, "location") {
		mod, pat := locationPattern(d)
		if mod != "~" && mod != "~*" {
			continue
		}
		if mod == "~*" {
			pat = "(?i)" + pat
		}
		re, err := regexp.Compile(pat)
		if err != nil {
			note = fmt.Sprintf("location %s %s (%s:%d): the regex could not be evaluated: %v", mod, pat, d.File, d.Line, err)
			continue
		}
		if re.MatchString(path) {
			if inner, chain, _ := selectLocation(d.Block, path); inner != nil {
				return inner, append([]*directive{d}, chain...), note
			}
			return d, []*directive{d}, note
		}
	}
	if best != nil {
		if inner, chain, _ := selectLocation(best.Block, path); inner != nil {
			return inner, append([]*directive{best}, chain...), note
		}
		return best, []*directive{best}, note
	}
	return nil, nil, note
}

// resolveUpstream turns an http proxy target naming an upstream with one
// server into that server's URL, and normalizes a URL to its scheme and
// authority ("http://127.0.0.1:8402/x" -> "http://127.0.0.1:8402";
// "http://unix:/run/d.sock:/x" -> "unix:/run/d.sock").
func (m *nginxModel) resolveUpstream(target string) string {
	scheme, rest, ok := strings.Cut(target, "://")
	if !ok {
		return target
	}
	if sock, ok := strings.CutPrefix(rest, "unix:"); ok {
		if i := strings.Index(sock, ":"); i >= 0 {
			sock = sock[:i]
		}
		return "unix:" + sock
	}
	host := rest
	if i := strings.IndexAny(host, "/?"); i >= 0 {
		host = host[:i]
	}
	if ss, ok := m.upstreams[host]; ok && len(ss) == 1 {
		if sock, ok := strings.CutPrefix(ss[0], "unix:"); ok {
			return "unix:" + sock
		}
		return scheme + "://" + ss[0]
	}
	return scheme + "://" + host
}

// sites returns what the server blocks do for each name (or the default
// block when names is empty) on each port.
func (m *nginxModel) sites(names []string, ports []int) []Site {
	if len(names) == 0 {
		names = []string{""}
	}
	var out []Site
	for _, port := range ports {
		for _, name := range names {
			s, match, ok := m.serverFor(name, port)
			if !ok {
				continue
			}
			l, _ := s.on(port)
			site := Site{Server: ServerNginx, Name: name, Port: port, TLS: l.SSL, Match: match,
				ServerNames: s.names, File: s.d.File, Line: s.d.Line}
			if d := first(s.d.Block, "ssl"); d != nil && d.arg(0) == "on" {
				site.TLS = true
			}
			acme := m.handle(s, acmeProbePath)
			root := m.handle(s, "/")
			fillSite(&site, acme, root)
			out = append(out, site)
		}
	}
	return out
}

// fillSite sets a Site's fields from what the block does with the
// challenge path and with "/".
func fillSite(site *Site, acme, root handler) {
	dedicated := acme.id != root.id
	switch acme.kind {
	case "proxy":
		if dedicated {
			site.ACMEForward = acme.target
		}
	case "static":
		site.DocRoot = acme.root
		if dedicated && acme.served != "" {
			site.ACMEStatic = acme.root
			site.ACMEDir = filepath.Dir(acme.served)
		}
	case "redirect":
		site.ACMERedirect = acme.target
	case "return":
		site.ACMEReturn = acme.target
	}
	if root.kind == "proxy" {
		site.Proxies, site.Backend = true, root.target
	}
	for _, n := range append(slices.Clone(acme.notes), root.notes...) {
		if !slices.Contains(site.Notes, n) {
			site.Notes = append(site.Notes, n)
		}
	}
}

// streams returns the stream servers listening on the ports.
func (m *nginxModel) streams(ports []int) []Stream {
	var out []Stream
	for _, st := range m.streamBlocks {
		maps := map[string]*directive{}
		ups := map[string][]string{}
		for _, d := range st.Block {
			switch d.Name {
			case "map":
				maps[d.arg(1)] = d
			case "upstream":
				ups[d.arg(0)] = upstreamServers(d)
			}
		}
		resolve := func(v string) string {
			if ss, ok := ups[v]; ok && len(ss) == 1 {
				return ss[0]
			}
			return v
		}
		for _, srv := range find(st.Block, "server") {
			for _, l := range find(srv.Block, "listen") {
				nl, ok := parseNginxListen(l.Args)
				if !ok || !slices.Contains(ports, nl.Port) {
					continue
				}
				s := Stream{Server: ServerNginx, Port: nl.Port, Kind: StreamNginx, File: srv.File, Line: srv.Line}
				if d := first(srv.Block, "ssl_preread"); d != nil && d.arg(0) == "on" {
					s.Preread = true
				}
				pass := first(srv.Block, "proxy_pass")
				if pass != nil {
					target := pass.arg(0)
					s.Default = resolve(target)
					if mp, ok := maps[target]; ok && strings.HasPrefix(target, "$") {
						def, route := evalNginxMap(mp, acmeALPN)
						s.Default = resolve(def)
						if mp.arg(0) == "$ssl_preread_alpn_protocols" && route != "" && route != def {
							s.ALPNRoute = resolve(route)
						}
					}
				}
				out = append(out, s)
				break
			}
		}
	}
	return out
}

// evalNginxMap returns a map's default value and the value it gives
// input: exact keys first, then regexes (~, ~*) in order, then default.
func evalNginxMap(mp *directive, input string) (def, got string) {
	var regexVal string
	regexFound := false
	exact := ""
	exactFound := false
	for _, e := range mp.Block {
		if len(e.Args) < 1 {
			continue
		}
		key, val := e.Name, e.arg(0)
		switch {
		case key == "default":
			def = val
		case key == "hostnames" || key == "volatile" || key == "include":
		case strings.HasPrefix(key, "~"):
			pat := key[1:]
			if strings.HasPrefix(pat, "*") {
				pat = "(?i)" + pat[1:]
			}
			if re, err := regexp.Compile(pat); err == nil && re.MatchString(input) && !regexFound {
				regexVal, regexFound = val, true
			}
		default:
			if strings.TrimPrefix(key, "\\") == input && !exactFound {
				exact, exactFound = val, true
			}
		}
	}
	switch {
	case exactFound:
		return def, exact
	case regexFound:
		return def, regexVal
	}
	return def, def
}

// readNginx runs `nginx -T` the way the running master was started and
// returns the model of the configuration it read.
func readNginx(ctx context.Context, opts Options, h Holder) (*nginxModel, string, error) {
	bin := h.Exe
	if !executable(bin) {
		var err error
		if bin, err = opts.LookPath("nginx"); err != nil {
			return nil, "", fmt.Errorf("finding nginx to read its configuration: %w (install the Debian package \"nginx\" or run doctor where the running nginx's executable is visible)", err)
		}
	}
	a := parseNginxCmdline(h.Command)
	args := []string{"-T"}
	if a.Prefix != "" {
		args = append(args, "-p", a.Prefix)
	}
	if a.Conf != "" {
		args = append(args, "-c", a.Conf)
	}
	if a.Globals != "" {
		args = append(args, "-g", a.Globals)
	}
	if a.ErrorLog != "" { // nginx opens it before reading the configuration
		args = append(args, "-e", a.ErrorLog)
	}
	cmdline := bin + " " + strings.Join(quoteArgs(args), " ")
	out, err := runTool(ctx, nil, bin, args...)
	if err != nil {
		return nil, cmdline, fmt.Errorf("reading nginx's effective configuration: %w", err)
	}
	dump, err := splitNginxDump(out)
	if err != nil {
		return nil, cmdline, err
	}
	tree, err := parseNginxDump(dump)
	if err != nil {
		return nil, cmdline, fmt.Errorf("parsing nginx -T output: %w", err)
	}
	prefix := a.Prefix
	if prefix == "" {
		if so, se, err := runToolBoth(ctx, nil, bin, "-V"); err == nil {
			prefix = parseNginxPrefix(so + se)
		}
	}
	return newNginxModel(tree, prefix), cmdline, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
