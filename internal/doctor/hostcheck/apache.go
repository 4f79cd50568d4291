package hostcheck

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// apacheModel is an Apache configuration: the dump's virtual hosts and the
// configuration tree they come from.
type apacheModel struct {
	dump   apacheDump
	global []*apNode              // server-config directives and sections, VirtualHosts left out
	vhosts map[string]*apNode     // "file:line" -> its <VirtualHost> section
	load   func(string) []*apNode // reads a vhost's file when the tree lacks it
}

func newApacheModel(dump apacheDump, tree []*apNode) *apacheModel {
	m := &apacheModel{dump: dump, vhosts: map[string]*apNode{}}
	for _, n := range tree {
		if n.Section && n.is("VirtualHost") {
			m.vhosts[n.File+":"+strconv.Itoa(n.Line)] = n
			continue
		}
		m.global = append(m.global, n)
	}
	return m
}

// vhostNode returns the <VirtualHost> section a dump entry names.
func (m *apacheModel) vhostNode(v apacheVhost) *apNode {
	key := v.File + ":" + strconv.Itoa(v.Line)
	if n, ok := m.vhosts[key]; ok {
		return n
	}
	if m.load != nil {
		for _, n := range m.load(v.File) {
			if n.Section && n.is("VirtualHost") && n.Line == v.Line {
				m.vhosts[key] = n
				return n
			}
		}
	}
	return nil
}

// vhostFor picks the virtual host Apache gives a request for name on
// port: the first whose ServerName or ServerAlias matches (wildcards
// allowed), else the default server of the port's address (a wildcard
// address preferred).
func (m *apacheModel) vhostFor(name string, port int) (apacheVhost, string, bool) {
	var on []apacheVhost
	for _, v := range m.dump.Vhosts {
		if v.Port == port {
			on = append(on, v)
		}
	}
	if len(on) == 0 {
		return apacheVhost{}, "", false
	}
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	if name != "" {
		for _, v := range on {
			if strings.EqualFold(v.Name, name) || slices.ContainsFunc(v.Aliases, func(a string) bool { return strings.EqualFold(a, name) }) {
				return v, "exact", true
			}
		}
		for _, v := range on {
			for _, a := range append([]string{v.Name}, v.Aliases...) {
				if strings.ContainsAny(a, "*?") {
					if ok, _ := path.Match(strings.ToLower(a), name); ok {
						return v, "wildcard", true
					}
				}
			}
		}
	}
	wild := func(addr string) bool {
		h := addr[:strings.LastIndex(addr, ":")]
		return h == "*" || h == "_default_" || h == "0.0.0.0" || h == "[::]"
	}
	for _, v := range on {
		if v.Default && wild(v.Addr) {
			return v, "default", true
		}
	}
	for _, v := range on {
		if v.Default {
			return v, "default", true
		}
	}
	return on[0], "default", true
}

// handle follows path through a virtual host in Apache's order:
// mod_rewrite (the vhost's own rules), ProxyPass (Location context, then
// server context), mod_alias Redirect, then Alias, then DocumentRoot.
func (m *apacheModel) handle(vh *apNode, name string, port int, tls bool, p string) handler {
	h := handler{id: (*apNode)(nil)}
	if m.rewrite(vh.Children, name, port, tls, p, &h) {
		return h
	}
	locs := m.locations(vh.Children, p)
	// ProxyPass in a <Location>: the last matching section that has one.
	for i := len(locs) - 1; i >= 0; i-- {
		if d := findAp(locs[i].Children, "ProxyPass"); d != nil {
			if d.arg(0) == "!" {
				break
			}
			h.kind, h.id, h.target = "proxy", d, normalizeURL(d.arg(0))
			return h
		}
	}
	for _, d := range append(directives(m.global, "ProxyPass", "ProxyPassMatch"), directives(vh.Children, "ProxyPass", "ProxyPassMatch")...) {
		if len(d.Args) < 2 {
			continue
		}
		var match bool
		if d.is("ProxyPassMatch") {
			re, err := regexp.Compile(d.arg(0))
			if err != nil {
				h.notes = append(h.notes, fmt.Sprintf("%s:%d: ProxyPassMatch %s could not be evaluated: %v", d.File, d.Line, d.arg(0), err))
				continue
			}
			match = re.MatchString(p)
		} else {
			match = strings.HasPrefix(p, d.arg(0))
		}
		if !match {
			continue
		}
		if d.arg(1) == "!" {
			break
		}
		h.kind, h.id, h.target = "proxy", d, normalizeURL(d.arg(1))
		return h
	}
	// Redirect: in a <Location> (no path argument), then vhost, then
	// server config.
	for i := len(locs) - 1; i >= 0; i-- {
		for _, d := range directives(locs[i].Children, "Redirect", "RedirectPermanent", "RedirectTemp") {
			h.kind, h.id, h.target = "redirect", d, d.arg(len(d.Args)-1)
			return h
		}
	}
	for _, d := range append(directives(vh.Children, "Redirect", "RedirectMatch", "RedirectPermanent", "RedirectTemp"),
		directives(m.global, "Redirect", "RedirectMatch", "RedirectPermanent", "RedirectTemp")...) {
		args := d.Args
		status := ""
		if d.is("Redirect") || d.is("RedirectMatch") {
			if len(args) > 0 && (isApacheStatus(args[0])) {
				status, args = args[0], args[1:]
			}
		}
		if len(args) == 0 {
			continue
		}
		var match bool
		if d.is("RedirectMatch") {
			re, err := regexp.Compile(args[0])
			if err != nil {
				continue
			}
			match = re.MatchString(p)
		} else {
			match = aliasMatch(args[0], p)
		}
		if !match {
			continue
		}
		if status == "gone" || status == "410" || len(args) < 2 {
			h.kind, h.id, h.target = "return", d, "410"
			return h
		}
		h.kind, h.id, h.target = "redirect", d, args[1]
		return h
	}
	for _, d := range append(directives(vh.Children, "Alias", "AliasMatch"), directives(m.global, "Alias", "AliasMatch")...) {
		if len(d.Args) < 2 {
			continue
		}
		var served string
		if d.is("AliasMatch") {
			re, err := regexp.Compile(d.arg(0))
			if err != nil || !re.MatchString(p) {
				continue
			}
			loc := re.FindStringSubmatchIndex(p)
			served = string(re.ExpandString(nil, d.arg(1), p, loc))
		} else {
			if !aliasMatch(d.arg(0), p) {
				continue
			}
			served = d.arg(1) + p[len(d.arg(0)):]
		}
		served = filepath.Clean(served)
		h.kind, h.id, h.served = "static", d, served
		if strings.HasSuffix(served, p) {
			h.root = strings.TrimSuffix(served, p)
		}
		return h
	}
	h.kind = "static"
	h.root = m.docRoot(vh)
	h.served = h.root + p
	return h
}

// docRoot returns the DocumentRoot a virtual host serves.
func (m *apacheModel) docRoot(vh *apNode) string {
	root := m.dump.MainDocRoot
	if ds := directives(m.global, "DocumentRoot"); len(ds) > 0 {
		root = ds[len(ds)-1].arg(0)
	}
	if ds := directives(vh.Children, "DocumentRoot"); len(ds) > 0 {
		root = ds[len(ds)-1].arg(0)
	}
	if root != "" && !filepath.IsAbs(root) && m.dump.ServerRoot != "" {
		root = filepath.Join(m.dump.ServerRoot, root)
	}
	if len(root) > 1 {
		root = strings.TrimSuffix(root, "/")
	}
	return root
}

// rewrite applies the virtual host's mod_rewrite rules to p; done when
// one of them answers the request (a redirect, a status, a proxy).
func (m *apacheModel) rewrite(nodes []*apNode, name string, port int, tls bool, p string, h *handler) bool {
	on := false
	for _, d := range directives(nodes, "RewriteEngine") {
		on = strings.EqualFold(d.arg(0), "on")
	}
	if !on {
		return false
	}
	var conds []*apNode
	for _, d := range nodes {
		if d.Section {
			continue
		}
		if d.is("RewriteCond") {
			conds = append(conds, d)
			continue
		}
		if !d.is("RewriteRule") {
			continue
		}
		rc := conds
		conds = nil
		if len(d.Args) < 2 {
			continue
		}
		flags := rewriteFlags(d.arg(2))
		pat, neg := strings.CutPrefix(d.arg(0), "!")
		if _, nc := flags["nc"]; nc {
			pat = "(?i)" + pat
		}
		re, err := regexp.Compile(pat)
		if err != nil {
			h.notes = append(h.notes, fmt.Sprintf("%s:%d: RewriteRule %s could not be evaluated: %v", d.File, d.Line, d.arg(0), err))
			continue
		}
		if re.MatchString(p) == neg {
			continue
		}
		switch condsMatch(rc, name, port, tls, p) {
		case triNo:
			continue
		case triUnknown:
			h.notes = append(h.notes, fmt.Sprintf("%s:%d: the RewriteConds of RewriteRule %s could not be evaluated: taken as matching", d.File, d.Line, d.arg(0)))
		}
		subst := d.arg(1)
		if code, ok := rewriteRedirect(flags); ok {
			if code >= 300 && code < 400 {
				h.kind, h.id, h.target = "redirect", d, subst
			} else {
				h.kind, h.id, h.target = "return", d, strconv.Itoa(code)
				for _, loc := range m.locations(nodes, p) {
					for _, e := range directives(loc.Children, "ErrorDocument") {
						if e.arg(0) == strconv.Itoa(code) {
							h.target += " " + strconv.Quote(e.arg(1))
						}
					}
				}
			}
			return true
		}
		switch _, f := flags["f"]; {
		case f:
			h.kind, h.id, h.target = "return", d, "403"
			return true
		}
		if _, g := flags["g"]; g {
			h.kind, h.id, h.target = "return", d, "410"
			return true
		}
		if _, px := flags["p"]; px {
			h.kind, h.id, h.target = "proxy", d, normalizeURL(subst)
			return true
		}
		if strings.HasPrefix(subst, "http://") || strings.HasPrefix(subst, "https://") {
			h.kind, h.id, h.target = "redirect", d, subst
			return true
		}
		_, last := flags["l"]
		_, end := flags["end"]
		if subst != "-" {
			h.notes = append(h.notes, fmt.Sprintf("%s:%d: RewriteRule %s %s changes the path internally: not followed", d.File, d.Line, d.arg(0), subst))
			return false
		}
		if last || end {
			return false
		}
	}
	return false
}

// rewriteFlags parses "[R=301,L,NC]" into lower-case names and values,
// long names mapped to their short forms.
func rewriteFlags(s string) map[string]string {
	out := map[string]string{}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	long := map[string]string{"redirect": "r", "last": "l", "proxy": "p", "forbidden": "f", "gone": "g", "nocase": "nc"}
	for _, f := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
		k = strings.ToLower(k)
		if l, ok := long[k]; ok {
			k = l
		}
		if k != "" {
			out[k] = v
		}
	}
	return out
}

// rewriteRedirect returns the status of an R flag.
func rewriteRedirect(flags map[string]string) (int, bool) {
	v, ok := flags["r"]
	if !ok {
		return 0, false
	}
	switch strings.ToLower(v) {
	case "", "temp":
		return 302, true
	case "permanent":
		return 301, true
	case "seeother":
		return 303, true
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 302, true
	}
	return n, true
}

// condsMatch evaluates a rule's RewriteConds (ANDed, [OR] joins one with
// the next).
func condsMatch(conds []*apNode, name string, port int, tls bool, p string) tri {
	result := triYes
	orRun := triNo
	inOr := false
	for _, c := range conds {
		flags := rewriteFlags(c.arg(2))
		v := condMatch(c, flags, name, port, tls, p)
		_, or := flags["or"]
		if or || inOr {
			switch {
			case v == triYes:
				orRun = triYes
			case v == triUnknown && orRun == triNo:
				orRun = triUnknown
			}
			if or {
				inOr = true
				continue
			}
			v, orRun, inOr = orRun, triNo, false
		}
		switch {
		case v == triNo:
			result = triNo
		case v == triUnknown && result == triYes:
			result = triUnknown
		}
	}
	return result
}

func condMatch(c *apNode, flags map[string]string, name string, port int, tls bool, p string) tri {
	test, pat := c.arg(0), c.arg(1)
	var value string
	switch test {
	case "%{HTTPS}":
		value = "off"
		if tls {
			value = "on"
		}
	case "%{SERVER_NAME}", "%{HTTP_HOST}", "%{HTTP:Host}":
		if name == "" {
			return triUnknown
		}
		value = name
	case "%{REQUEST_URI}":
		value = p
	case "%{SERVER_PORT}":
		value = strconv.Itoa(port)
	default:
		return triUnknown
	}
	pat, neg := strings.CutPrefix(pat, "!")
	_, nc := flags["nc"]
	var ok bool
	switch {
	case strings.HasPrefix(pat, "="):
		want := pat[1:]
		ok = value == want || nc && strings.EqualFold(value, want)
	case strings.HasPrefix(pat, "-") || strings.HasPrefix(pat, "<") || strings.HasPrefix(pat, ">"):
		return triUnknown
	default:
		if nc {
			pat = "(?i)" + pat
		}
		re, err := regexp.Compile(pat)
		if err != nil {
			return triUnknown
		}
		ok = re.MatchString(value)
	}
	if ok != neg {
		return triYes
	}
	return triNo
}

// locations returns the <Location>/<LocationMatch> sections of the
// server config and then of the vhost that match p, in merge order.
func (m *apacheModel) locations(vh []*apNode, p string) []*apNode {
	var out []*apNode
	for _, nodes := range [][]*apNode{m.global, vh} {
		for _, n := range nodes {
			if !n.Section {
				continue
			}
			switch {
			case n.is("Location") && n.arg(0) == "~", n.is("LocationMatch"):
				pat := n.arg(0)
				if n.is("Location") {
					pat = n.arg(1)
				}
				if re, err := regexp.Compile(pat); err == nil && re.MatchString(p) {
					out = append(out, n)
				}
			case n.is("Location"):
				if locationMatch(n.arg(0), p) {
					out = append(out, n)
				}
			}
		}
	}
	return out
}

// locationMatch: <Location /x> matches /x, /x/ and /x/..., not /xy.
func locationMatch(loc, p string) bool {
	if loc == "/" || strings.HasSuffix(loc, "/") {
		return strings.HasPrefix(p, loc)
	}
	return p == loc || strings.HasPrefix(p, loc+"/")
}

// aliasMatch is mod_alias's prefix match, which ends at a path segment
// boundary: Alias /x matches /x and /x/y, not /xy.
func aliasMatch(alias, p string) bool {
	return locationMatch(alias, p)
}

func isApacheStatus(s string) bool {
	switch s {
	case "permanent", "temp", "seeother", "gone":
		return true
	}
	n, err := strconv.Atoi(s)
	return err == nil && n >= 300 && n < 500
}

// directives returns the directives among nodes (not in sections) with
// one of names.
func directives(nodes []*apNode, names ...string) []*apNode {
	var out []*apNode
	for _, n := range nodes {
		if n.Section {
			continue
		}
		if slices.ContainsFunc(names, n.is) {
			out = append(out, n)
		}
	}
	return out
}

func findAp(nodes []*apNode, name string) *apNode {
	if ds := directives(nodes, name); len(ds) > 0 {
		return ds[0]
	}
	return nil
}

// normalizeURL reduces a proxy target to its scheme and authority
// ("http://127.0.0.1:8402/.well-known/acme-challenge/" ->
// "http://127.0.0.1:8402"); Apache's "unix:/path|http://host/" becomes
// "unix:/path".
func normalizeURL(u string) string {
	if sock, ok := strings.CutPrefix(u, "unix:"); ok {
		if i := strings.Index(sock, "|"); i >= 0 {
			sock = sock[:i]
		}
		return "unix:" + sock
	}
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	if i := strings.IndexAny(rest, "/?"); i >= 0 {
		rest = rest[:i]
	}
	return scheme + "://" + rest
}

// sites returns what the virtual hosts do for each name (or the default
// one when names is empty) on each port.
func (m *apacheModel) sites(names []string, ports []int) []Site {
	if len(names) == 0 {
		names = []string{""}
	}
	var out []Site
	for _, port := range ports {
		for _, name := range names {
			v, match, ok := m.vhostFor(name, port)
			if !ok {
				continue
			}
			site := Site{Server: ServerApache, Name: name, Port: port, Match: match,
				ServerNames: append([]string{v.Name}, v.Aliases...), File: v.File, Line: v.Line}
			vh := m.vhostNode(v)
			if vh == nil {
				site.Notes = append(site.Notes, fmt.Sprintf("the <VirtualHost> at %s:%d was not found in the configuration files read", v.File, v.Line))
				out = append(out, site)
				continue
			}
			vh = &apNode{Name: vh.Name, Args: vh.Args, File: vh.File, Line: vh.Line, Section: true, Children: vh.Children}
			for _, d := range directives(vh.Children, "SSLEngine") {
				site.TLS = strings.EqualFold(d.arg(0), "on")
			}
			acme := m.handle(vh, name, port, site.TLS, acmeProbePath)
			root := m.handle(vh, name, port, site.TLS, "/")
			fillSite(&site, acme, root)
			out = append(out, site)
		}
	}
	return out
}

// readApache dumps the running httpd's virtual hosts the way it was
// started (its -d, -f, -C, -c and -D options, and the APACHE_*
// variables of its environment, which Debian's configuration uses), then
// reads the configuration files.
func readApache(ctx context.Context, opts Options, h Holder) (*apacheModel, string, error) {
	bin := h.Exe
	if !executable(bin) {
		var err error
		if bin, err = opts.LookPath("apache2"); err != nil {
			if bin, err = opts.LookPath("httpd"); err != nil {
				return nil, "", fmt.Errorf("finding apache2 to read its configuration: %w (install the Debian package \"apache2\")", err)
			}
		}
	}
	start := parseApacheCmdline(h.Command)
	env := apacheEnv(opts.ProcRoot, h.PID)
	args := append(slices.Clone(start), "-t", "-D", "DUMP_VHOSTS", "-D", "DUMP_RUN_CFG", "-D", "DUMP_MODULES")
	cmdline := bin + " " + strings.Join(quoteArgs(args), " ")
	out, err := runTool(ctx, env, bin, args...)
	if err != nil {
		// apache2ctl sets the variables Debian's configuration needs.
		for _, ctl := range []string{"apache2ctl", "apachectl"} {
			if p, lerr := opts.LookPath(ctl); lerr == nil {
				if o, cerr := runTool(ctx, env, p, args...); cerr == nil {
					out, err, cmdline = o, nil, p+" "+strings.Join(quoteArgs(args), " ")
					break
				}
			}
		}
		if err != nil {
			return nil, cmdline, fmt.Errorf("reading Apache's virtual hosts: %w", err)
		}
	}
	dump, err := parseApacheDump(out)
	if err != nil {
		return nil, cmdline, err
	}
	conf := argValue(start, "-f")
	if conf == "" {
		so, se, _ := runToolBoth(ctx, env, bin, "-V")
		root, c := parseApacheV(so + se)
		if d := argValue(start, "-d"); d != "" {
			root = d
		}
		conf = c
		if conf != "" && !filepath.IsAbs(conf) {
			conf = filepath.Join(root, conf)
		}
	}
	if conf != "" && !filepath.IsAbs(conf) {
		conf = filepath.Join(dump.ServerRoot, conf)
	}
	envMap := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		envMap[k] = v
	}
	l := &apacheLoader{serverRoot: dump.ServerRoot, defines: maps(dump.Defines), env: envMap, modules: dump.Modules, readFile: os.ReadFile}
	var tree []*apNode
	if conf != "" {
		t, err := l.load(conf)
		if err != nil {
			return nil, cmdline, fmt.Errorf("reading Apache's configuration: %w", err)
		}
		tree = l.active(t)
	}
	m := newApacheModel(dump, tree)
	m.load = func(file string) []*apNode {
		t, err := l.load(file)
		if err != nil {
			return nil
		}
		return l.active(t)
	}
	return m, cmdline, nil
}

func maps(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// apacheEnv returns the APACHE_* variables of a process's environment
// (Debian's apache2.conf refers to them; apache2ctl sets them from
// /etc/apache2/envvars). Nothing else of the environment is read.
func apacheEnv(procRoot string, pid int) []string {
	b, err := os.ReadFile(filepath.Join(procRoot, strconv.Itoa(pid), "environ"))
	if err != nil {
		return nil
	}
	var out []string
	for _, kv := range bytes.Split(b, []byte{0}) {
		if bytes.HasPrefix(kv, []byte("APACHE_")) {
			out = append(out, string(kv))
		}
	}
	return out
}
