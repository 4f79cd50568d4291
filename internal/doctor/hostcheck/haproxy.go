package hostcheck

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// hapSection is one section of an HAProxy configuration.
type hapSection struct {
	Kind, Name string // "frontend", "backend", "listen", "defaults", "global", ...
	File       string
	Line       int
	Lines      []hapLine
	defaults   *hapSection // the defaults section in effect
}

type hapLine struct {
	Args []string
	Line int
}

// hapSectionKinds are the keywords that open a section.
var hapSectionKinds = []string{"global", "defaults", "frontend", "backend", "listen", "userlist", "peers",
	"resolvers", "mailers", "program", "cache", "http-errors", "ring", "log-forward", "fcgi-app", "crt-store", "traces"}

// parseHAProxy parses HAProxy configuration files, given in the order
// HAProxy reads them, into sections; each proxy section knows the
// defaults section in effect for it.
func parseHAProxy(files []string, texts map[string]string) ([]*hapSection, error) {
	var out []*hapSection
	var cur, lastDefaults *hapSection
	named := map[string]*hapSection{}
	for _, f := range files {
		for n, raw := range strings.Split(texts[f], "\n") {
			args, err := splitHAProxyLine(raw)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", f, n+1, err)
			}
			if len(args) == 0 {
				continue
			}
			if slices.Contains(hapSectionKinds, args[0]) {
				cur = &hapSection{Kind: args[0], File: f, Line: n + 1}
				if len(args) > 1 && args[1] != "from" {
					cur.Name = args[1]
				}
				switch cur.Kind {
				case "defaults":
					lastDefaults = cur
					if cur.Name != "" {
						named[cur.Name] = cur
					}
				case "frontend", "backend", "listen":
					cur.defaults = lastDefaults
					if i := slices.Index(args, "from"); i > 0 && i+1 < len(args) {
						cur.defaults = named[args[i+1]]
					}
				}
				out = append(out, cur)
				continue
			}
			if cur == nil {
				return nil, fmt.Errorf("%s:%d: %q outside any section", f, n+1, args[0])
			}
			cur.Lines = append(cur.Lines, hapLine{Args: args, Line: n + 1})
		}
	}
	return out, nil
}

// splitHAProxyLine splits one configuration line into words the way
// HAProxy does: blanks separate words, # starts a comment, "..." and
// '...' quote, a backslash escapes the next character.
func splitHAProxyLine(s string) ([]string, error) {
	var out []string
	var b strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
			inWord = true
		case c == '"' || c == '\'':
			j := i + 1
			for ; j < len(s) && s[j] != c; j++ {
				if c == '"' && s[j] == '\\' && j+1 < len(s) {
					j++
					b.WriteByte(s[j])
					continue
				}
				b.WriteByte(s[j])
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated quote")
			}
			i = j
			inWord = true
		case c == '#':
			if inWord {
				out = append(out, b.String())
			}
			return out, nil
		case c == ' ' || c == '\t' || c == '\r':
			if inWord {
				out = append(out, b.String())
				b.Reset()
				inWord = false
			}
		default:
			b.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		out = append(out, b.String())
	}
	return out, nil
}

// hapBind is one address of a bind line.
type hapBind struct {
	Port int
	SSL  bool
}

// parseHAProxyBind returns the TCP ports a bind line's addresses listen
// on: ":80", "*:80", "127.0.0.1:8080", ":::80", "[::]:80", "ipv6@:80",
// "8080-8082"; comma-separated lists; unix sockets and fd@ are skipped.
func parseHAProxyBind(args []string) []hapBind {
	if len(args) < 2 {
		return nil
	}
	ssl := slices.Contains(args[2:], "ssl")
	var out []hapBind
	for _, a := range strings.Split(args[1], ",") {
		if p, ok := strings.CutPrefix(a, "ipv4@"); ok {
			a = p
		} else if p, ok := strings.CutPrefix(a, "ipv6@"); ok {
			a = p
		} else if p, ok := strings.CutPrefix(a, "tcp@"); ok {
			a = p
		} else if p, ok := strings.CutPrefix(a, "tcp4@"); ok {
			a = p
		} else if p, ok := strings.CutPrefix(a, "tcp6@"); ok {
			a = p
		} else if strings.Contains(a, "@") || strings.HasPrefix(a, "/") {
			continue
		}
		i := strings.LastIndex(a, ":")
		if i < 0 {
			continue
		}
		ports := a[i+1:]
		lo, hi, isRange := strings.Cut(ports, "-")
		l, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		h := l
		if isRange {
			if h, err = strconv.Atoi(hi); err != nil || h < l || h-l > 1024 {
				continue
			}
		}
		for p := l; p <= h; p++ {
			out = append(out, hapBind{Port: p, SSL: ssl})
		}
	}
	return out
}

// mode returns a proxy section's mode: its own, the defaults', else tcp.
func (s *hapSection) mode() string {
	for _, sec := range []*hapSection{s, s.defaults} {
		if sec == nil {
			continue
		}
		for _, l := range sec.Lines {
			if l.Args[0] == "mode" && len(l.Args) > 1 {
				return l.Args[1]
			}
		}
	}
	return "tcp"
}

// has reports whether the section has a line starting with words.
func (s *hapSection) has(words ...string) bool {
	for _, l := range s.Lines {
		if len(l.Args) >= len(words) && slices.Equal(l.Args[:len(words)], words) {
			return true
		}
	}
	return false
}

// tri is a three-valued truth: a condition on something the check does
// not know is unknown.
type tri int

const (
	triNo tri = iota
	triYes
	triUnknown
)

// hapReq is the request a condition is evaluated for.
type hapReq struct {
	path string // "" unknown (TCP)
	host string // "" unknown
	alpn string // TCP: the ALPN protocol offered
	ssl  bool   // the frontend terminates TLS on the bind
	http bool
}

// hapEval evaluates conditions of one proxy section.
type hapEval struct {
	acls  map[string][][]string // name -> definitions (ORed)
	notes []string
}

func newHAPEval(s *hapSection) *hapEval {
	e := &hapEval{acls: map[string][][]string{}}
	for _, l := range s.Lines {
		if l.Args[0] == "acl" && len(l.Args) > 2 {
			e.acls[l.Args[1]] = append(e.acls[l.Args[1]], l.Args[2:])
		}
	}
	return e
}

// cond evaluates a rule's condition: the words after "if" or "unless"
// (none: always true).
func (e *hapEval) cond(words []string, req hapReq) tri {
	i := slices.IndexFunc(words, func(w string) bool { return w == "if" || w == "unless" })
	if i < 0 {
		return triYes
	}
	neg := words[i] == "unless"
	v := e.or(words[i+1:], req)
	if neg {
		v = not(v)
	}
	return v
}

func not(v tri) tri {
	switch v {
	case triYes:
		return triNo
	case triNo:
		return triYes
	}
	return triUnknown
}

// or evaluates terms joined by "||" or "or"; consecutive terms are ANDed.
func (e *hapEval) or(words []string, req hapReq) tri {
	result := triNo
	and := triYes
	flush := func() {
		switch {
		case and == triYes:
			result = triYes
		case and == triUnknown && result == triNo:
			result = triUnknown
		}
		and = triYes
	}
	for i := 0; i < len(words); i++ {
		w := words[i]
		if w == "||" || w == "or" {
			flush()
			continue
		}
		neg := false
		if w == "!" {
			neg = true
			i++
			if i >= len(words) {
				break
			}
			w = words[i]
		} else if strings.HasPrefix(w, "!") && w != "!" {
			neg, w = true, w[1:]
		}
		var v tri
		if w == "{" {
			j := slices.Index(words[i:], "}")
			if j < 0 {
				return triUnknown
			}
			v = e.acl(words[i+1:i+j], req)
			i += j
		} else {
			v = e.named(w, req)
		}
		if neg {
			v = not(v)
		}
		switch {
		case v == triNo:
			and = triNo
		case v == triUnknown && and == triYes:
			and = triUnknown
		}
	}
	flush()
	return result
}

// named evaluates a named acl (its definitions ORed) or a predefined one.
func (e *hapEval) named(name string, req hapReq) tri {
	defs, ok := e.acls[name]
	if !ok {
		switch name {
		case "TRUE":
			return triYes
		case "FALSE":
			return triNo
		case "HTTP", "METH_GET", "HTTP_1.1", "HTTP_URL_SLASH":
			if req.http {
				return triYes
			}
		case "HTTP_URL_ABS", "METH_POST", "METH_CONNECT", "HTTP_CONTENT", "WAIT_END":
			return triNo
		}
		return triUnknown
	}
	result := triNo
	for _, d := range defs {
		switch e.acl(d, req) {
		case triYes:
			return triYes
		case triUnknown:
			result = triUnknown
		}
	}
	return result
}

// acl evaluates one acl definition: a fetch with its converters, flags,
// and values.
func (e *hapEval) acl(def []string, req hapReq) tri {
	if len(def) == 0 {
		return triUnknown
	}
	fetch := def[0]
	var convs []string
	if i := strings.Index(fetch, ","); i >= 0 {
		convs = strings.Split(fetch[i+1:], ",")
		fetch = fetch[:i]
	}
	icase := false
	method := ""
	var values []string
	for i := 1; i < len(def); i++ {
		switch def[i] {
		case "-i":
			icase = true
		case "-m":
			if i+1 < len(def) {
				method = def[i+1]
				i++
			}
		case "-f", "-M":
			return triUnknown // values from a file or a map
		case "-n", "-u":
			if def[i] == "-u" {
				i++
			}
		case "--":
			values = append(values, def[i+1:]...)
			i = len(def)
		default:
			values = append(values, def[i])
		}
	}
	for _, c := range convs {
		switch {
		case c == "lower":
			icase = true
		case strings.HasPrefix(c, "field(") || strings.HasPrefix(c, "regsub("):
			return triUnknown
		}
	}
	// The sample and the match method implied by the fetch's suffix.
	var sample string
	known := true
	base := fetch
	if p := strings.Index(base, "("); p >= 0 {
		arg := strings.ToLower(strings.TrimSuffix(base[p+1:], ")"))
		base = base[:p]
		if strings.HasPrefix(base, "hdr") || strings.HasPrefix(base, "req.hdr") || strings.HasPrefix(base, "req.fhdr") {
			if arg != "host" {
				return triUnknown
			}
			base = strings.Replace(strings.Replace(base, "req.fhdr", "hdr", 1), "req.hdr", "hdr", 1)
			sample, known = req.host, req.host != ""
			icase = true
		}
	}
	impl := "str"
	if i := strings.LastIndex(base, "_"); i > 0 {
		switch suf := base[i+1:]; suf {
		case "beg", "end", "sub", "reg", "dom", "dir", "len", "cnt", "found":
			impl = suf
			base = base[:i]
		}
	}
	switch base {
	case "path", "url", "base", "pathq":
		sample, known = req.path, req.path != ""
	case "hdr":
	case "req.ssl_sni", "req_ssl_sni", "ssl_fc_sni":
		sample, known = req.host, req.host != ""
	case "req.ssl_alpn", "req_ssl_alpn":
		sample, known = req.alpn, req.alpn != ""
	case "ssl_fc":
		if len(values) == 0 {
			if req.ssl {
				return triYes
			}
			return triNo
		}
		return triUnknown
	case "req.ssl_hello_type", "req_ssl_hello_type":
		if !req.http && req.alpn != "" {
			sample = "1"
		} else {
			known = false
		}
		impl = "int"
	default:
		return triUnknown
	}
	if !known {
		return triUnknown
	}
	if method == "" {
		method = impl
	}
	for _, v := range values {
		s, val := sample, v
		if icase {
			s, val = strings.ToLower(s), strings.ToLower(val)
		}
		var ok bool
		switch method {
		case "str", "int":
			ok = s == val
		case "beg":
			ok = strings.HasPrefix(s, val)
		case "end":
			ok = strings.HasSuffix(s, val)
		case "sub":
			ok = strings.Contains(s, val)
		case "dom":
			ok = slices.Contains(strings.FieldsFunc(s, func(r rune) bool { return r == '/' || r == '.' || r == '?' }), val) ||
				s == val || strings.HasSuffix(s, "."+val)
		case "dir":
			ok = slices.Contains(strings.Split(s, "/"), strings.Trim(val, "/"))
		case "reg":
			pat := v
			if icase {
				pat = "(?i)" + v
			}
			re, err := regexp.Compile(pat)
			if err != nil {
				return triUnknown
			}
			ok = re.MatchString(sample)
		case "found":
			return triYes
		default:
			return triUnknown
		}
		if ok {
			return triYes
		}
	}
	if method == "found" {
		return triYes
	}
	return triNo
}

// hapRoute is where a proxy section sends one request.
type hapRoute struct {
	kind    string // "backend", "redirect", "return", "deny", "none"
	backend string // the backend's name
	text    string // the redirect or return, as written
	line    int
}

// route follows req through a proxy section: http-request rules and the
// legacy redirect (HTTP), then use_backend in order, then default_backend
// (a listen section serves with its own servers).
func (m *hapModel) route(s *hapSection, req hapReq) hapRoute {
	e := newHAPEval(s)
	var notes []string
	if req.http {
		for _, l := range s.Lines {
			a := l.Args
			var kind string
			switch {
			case a[0] == "http-request" && len(a) > 1 && a[1] == "redirect":
				kind = "redirect"
			case a[0] == "redirect":
				kind = "redirect"
			case a[0] == "http-request" && len(a) > 1 && a[1] == "return":
				kind = "return"
			case a[0] == "http-request" && len(a) > 1 && (a[1] == "deny" || a[1] == "tarpit" || a[1] == "reject"):
				kind = "deny"
			default:
				continue
			}
			switch e.cond(a, req) {
			case triYes:
				end := slices.IndexFunc(a, func(w string) bool { return w == "if" || w == "unless" })
				if end < 0 {
					end = len(a)
				}
				return hapRoute{kind: kind, text: strings.Join(a[:end], " "), line: l.Line}
			case triUnknown:
				notes = append(notes, fmt.Sprintf("%s:%d: the condition of %q could not be evaluated", s.File, l.Line, strings.Join(a, " ")))
			}
		}
	}
	for _, l := range s.Lines {
		a := l.Args
		if a[0] != "use_backend" || len(a) < 2 {
			continue
		}
		switch e.cond(a, req) {
		case triYes:
			m.notes = append(m.notes, notes...)
			return hapRoute{kind: "backend", backend: a[1], line: l.Line}
		case triUnknown:
			notes = append(notes, fmt.Sprintf("%s:%d: the condition of %q could not be evaluated", s.File, l.Line, strings.Join(a, " ")))
		}
	}
	m.notes = append(m.notes, notes...)
	for _, l := range s.Lines {
		if l.Args[0] == "default_backend" && len(l.Args) > 1 {
			return hapRoute{kind: "backend", backend: l.Args[1], line: l.Line}
		}
	}
	if s.Kind == "listen" && s.has("server") {
		return hapRoute{kind: "backend", backend: s.Name, line: s.Line}
	}
	return hapRoute{kind: "none"}
}

// hapModel is an HAProxy configuration's proxies.
type hapModel struct {
	sections []*hapSection
	backends map[string]*hapSection
	notes    []string
}

func newHAPModel(sections []*hapSection) *hapModel {
	m := &hapModel{sections: sections, backends: map[string]*hapSection{}}
	for _, s := range sections {
		if s.Kind == "backend" || s.Kind == "listen" {
			m.backends[s.Name] = s
		}
	}
	return m
}

// servers returns a backend's server addresses, as written.
func (m *hapModel) servers(name string) (addrs []string, ssl bool) {
	b := m.backends[name]
	if b == nil {
		return nil, false
	}
	for _, l := range b.Lines {
		if l.Args[0] == "server" && len(l.Args) > 2 {
			addrs = append(addrs, l.Args[2])
			ssl = ssl || slices.Contains(l.Args[3:], "ssl")
		}
	}
	return addrs, ssl
}

// target describes a backend as a URL: its one server
// ("http://127.0.0.1:8402", "unix:/run/detour.sock"), else its name.
func (m *hapModel) target(name string, http bool) string {
	addrs, ssl := m.servers(name)
	if len(addrs) != 1 {
		return name
	}
	a := addrs[0]
	if p, ok := strings.CutPrefix(a, "unix@"); ok {
		return "unix:" + p
	}
	if strings.HasPrefix(a, "/") {
		return "unix:" + a
	}
	for _, pre := range []string{"ipv4@", "ipv6@"} {
		a = strings.TrimPrefix(a, pre)
	}
	if !http {
		return a
	}
	if ssl {
		return "https://" + a
	}
	return "http://" + a
}

// sites returns what each HTTP frontend bound to a checked port does for
// each name (HAProxy frontends are not chosen by name; a name matters
// only to conditions on the Host header).
func (m *hapModel) sites(names []string, ports []int) []Site {
	if len(names) == 0 {
		names = []string{""}
	}
	var out []Site
	for _, s := range m.sections {
		if (s.Kind != "frontend" && s.Kind != "listen") || s.mode() != "http" {
			continue
		}
		for _, b := range m.binds(s, ports) {
			for _, name := range names {
				site := Site{Server: ServerHAProxy, Name: name, Port: b.Port, TLS: b.SSL, Match: "frontend",
					ServerNames: []string{s.Name}, File: s.File, Line: s.Line}
				acme := m.route(s, hapReq{path: acmeProbePath, host: name, ssl: b.SSL, http: true})
				root := m.route(s, hapReq{path: "/", host: name, ssl: b.SSL, http: true})
				switch acme.kind {
				case "redirect":
					site.ACMERedirect = acme.text
				case "return", "deny":
					site.ACMEReturn = acme.text
				case "backend":
					if root.kind != "backend" || root.backend != acme.backend {
						site.ACMEForward = m.target(acme.backend, true)
					}
				}
				if root.kind == "backend" {
					site.Proxies, site.Backend = true, m.target(root.backend, true)
				}
				site.Notes = slices.Compact(slices.Clone(m.notes))
				m.notes = nil
				out = append(out, site)
			}
		}
	}
	return out
}

// binds returns the checked ports a section binds, once each.
func (m *hapModel) binds(s *hapSection, ports []int) []hapBind {
	var out []hapBind
	for _, l := range s.Lines {
		if l.Args[0] != "bind" {
			continue
		}
		for _, b := range parseHAProxyBind(l.Args) {
			if slices.Contains(ports, b.Port) && !slices.ContainsFunc(out, func(o hapBind) bool { return o.Port == b.Port }) {
				out = append(out, b)
			}
		}
	}
	return out
}

// streams returns the TCP frontends bound to checked ports.
func (m *hapModel) streams(ports []int) []Stream {
	var out []Stream
	for _, s := range m.sections {
		if (s.Kind != "frontend" && s.Kind != "listen") || s.mode() != "tcp" {
			continue
		}
		for _, b := range m.binds(s, ports) {
			st := Stream{Server: ServerHAProxy, Port: b.Port, Kind: StreamHAProxy, File: s.File, Line: s.Line,
				Preread: s.has("tcp-request", "inspect-delay")}
			acme := m.route(s, hapReq{alpn: acmeALPN})
			other := m.route(s, hapReq{alpn: "http/1.1"})
			if other.kind == "backend" {
				st.Default = m.target(other.backend, false)
			}
			if acme.kind == "backend" && (other.kind != "backend" || other.backend != acme.backend) {
				st.ALPNRoute = m.target(acme.backend, false)
			}
			m.notes = nil
			out = append(out, st)
		}
	}
	return out
}

// parseHAProxyCmdline returns the configuration files of a haproxy
// command line (-f FILE|DIR, repeatable; files after "--").
func parseHAProxyCmdline(cmd string) []string {
	w := strings.Fields(cmd)
	var out []string
	for i := 1; i < len(w); i++ {
		switch {
		case w[i] == "-f" && i+1 < len(w):
			out = append(out, w[i+1])
			i++
		case w[i] == "--":
			out = append(out, w[i+1:]...)
			i = len(w)
		}
	}
	return out
}

// readHAProxyFiles reads the configuration files of a running haproxy:
// each -f file, or the *.cfg files of a -f directory in name order. A
// relative path is relative to the process's working directory.
func readHAProxyFiles(procRoot string, h Holder) ([]string, map[string]string, error) {
	args := parseHAProxyCmdline(h.Command)
	if len(args) == 0 {
		return nil, nil, fmt.Errorf("haproxy (pid %d) was started without -f: its command line %q names no configuration file", h.PID, h.Command)
	}
	cwd, _ := os.Readlink(filepath.Join(procRoot, strconv.Itoa(h.PID), "cwd"))
	var files []string
	texts := map[string]string{}
	for _, a := range args {
		if !filepath.IsAbs(a) && cwd != "" {
			a = filepath.Join(cwd, a)
		}
		fi, err := os.Stat(a)
		if err != nil {
			return nil, nil, fmt.Errorf("reading haproxy's configuration: %w", err)
		}
		names := []string{a}
		if fi.IsDir() {
			names, _ = filepath.Glob(filepath.Join(a, "*.cfg"))
			slices.Sort(names)
		}
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err != nil {
				return nil, nil, fmt.Errorf("reading haproxy's configuration: %w", err)
			}
			files = append(files, n)
			texts[n] = string(b)
		}
	}
	return files, texts, nil
}
