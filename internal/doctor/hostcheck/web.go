package hostcheck

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"

	"github.com/detour-acme/detour/internal/doctor/check"
)

// webResult is what checkWeb found for one server kind.
type webResult struct {
	sites         []Site
	streams       []Stream
	haproxyConfig string
	results       []check.Result
}

// webRead is one running server's configuration as read.
type webRead struct {
	holder  Holder
	ports   []int
	how     string // the command run or the files read
	err     error
	sites   []Site
	streams []Stream
	extra   []string // more evidence
}

// checkWeb reads the effective configuration of every running server of
// one kind (nginx, Apache, HAProxy) that holds a checked port, and
// reports, for each name, what the block answering it does with the
// challenge path: "web.<kind>".
func checkWeb(ctx context.Context, opts Options, kind string, holders []Holder) webResult {
	var res webResult
	var reads []webRead
	for _, pid := range uniquePIDs(holders) {
		var h Holder
		var ports []int
		for _, x := range holders {
			if x.PID == pid {
				h = x
				if !slices.Contains(ports, x.Port) {
					ports = append(ports, x.Port)
				}
			}
		}
		slices.Sort(ports)
		r := webRead{holder: h, ports: ports}
		switch kind {
		case ServerNginx:
			m, how, err := readNginx(ctx, opts, h)
			r.how, r.err = how, err
			if err == nil {
				r.sites, r.streams = m.sites(opts.Names, ports), m.streams(ports)
			}
		case ServerApache:
			m, how, err := readApache(ctx, opts, h)
			r.how, r.err = how, err
			if err == nil {
				r.sites = m.sites(opts.Names, ports)
			}
		case ServerHAProxy:
			files, texts, err := readHAProxyFiles(opts.ProcRoot, h)
			r.how, r.err = "read "+strings.Join(files, ", "), err
			if err == nil {
				if res.haproxyConfig == "" {
					res.haproxyConfig = files[0]
				}
				secs, perr := parseHAProxy(files, texts)
				if perr != nil {
					r.err = fmt.Errorf("parsing haproxy's configuration: %w", perr)
				} else {
					m := newHAPModel(secs)
					r.sites, r.streams = m.sites(opts.Names, ports), m.streams(ports)
					r.extra = append(r.extra, haproxyValid(ctx, opts, h, files))
				}
			}
		}
		if r.err != nil {
			opts.Logger.Warn("reading a web server's configuration", "server", kind, "pid", pid, "error", r.err)
		}
		res.sites = append(res.sites, r.sites...)
		res.streams = append(res.streams, r.streams...)
		reads = append(reads, r)
	}
	names := opts.Names
	if len(names) == 0 {
		names = []string{""}
	}
	for _, name := range names {
		res.results = append(res.results, webVerdict(kind, name, reads))
	}
	return res
}

// webVerdict is the "web.<kind>" result for one name.
func webVerdict(kind, name string, reads []webRead) check.Result {
	title := serverTitle(kind)
	var summaries []string
	var failed []error
	r := check.New("web."+kind, name, check.Info, "")
	for _, rd := range reads {
		r.Add("%s pid %d holds port %s", title, rd.holder.PID, joinInts(rd.ports))
		if rd.how != "" {
			r.Add("  configuration: %s", rd.how)
		}
		if rd.err != nil {
			failed = append(failed, rd.err)
			r.Add("  could not be read: %v", rd.err)
			continue
		}
		for _, e := range rd.extra {
			if e != "" {
				r.Add("  %s", e)
			}
		}
		for _, port := range rd.ports {
			i := slices.IndexFunc(rd.sites, func(s Site) bool { return s.Name == name && s.Port == port })
			if i < 0 {
				if !slices.ContainsFunc(rd.streams, func(s Stream) bool { return s.Port == port }) {
					r.Add("  port %d: no HTTP block of the configuration listens on it", port)
				}
				continue
			}
			s := rd.sites[i]
			r.Add("  port %d: %s", port, describeSite(s))
			for _, n := range s.Notes {
				r.Add("    note: %s", n)
			}
			summaries = append(summaries, fmt.Sprintf("port %d: %s", port, siteSummary(s)))
		}
		for _, st := range rd.streams {
			r.Add("  port %d: %s", st.Port, describeStream(st))
			summaries = append(summaries, fmt.Sprintf("port %d: %s", st.Port, streamSummary(st)))
		}
	}
	switch {
	case len(failed) == len(reads):
		r.Status = check.Warning
		r.Summary = fmt.Sprintf("%s's configuration could not be read", title)
		r.Fix = webFix(kind, failed[0])
	case len(failed) > 0:
		r.Status = check.Warning
		r.Summary = strings.Join(summaries, "; ") + fmt.Sprintf(" (one %s's configuration could not be read)", title)
		r.Fix = webFix(kind, failed[0])
	case len(summaries) == 0:
		r.Summary = fmt.Sprintf("%s has no block on the checked ports", title)
	default:
		r.Summary = strings.Join(summaries, "; ")
	}
	return r
}

func webFix(kind string, err error) string {
	if errors.Is(err, fs.ErrPermission) || strings.Contains(err.Error(), "ermission denied") {
		return "run detour doctor as root: the server's configuration is readable only by root"
	}
	switch kind {
	case ServerNginx:
		return "make `nginx -T` succeed with the options the running nginx was started with (its error names the cause)"
	case ServerApache:
		return "make `apache2ctl -S` succeed with the options the running Apache was started with (its error names the cause)"
	}
	return "make haproxy's -f configuration files readable by detour doctor"
}

// siteSummary says in a few words what a block does with the challenge
// path.
func siteSummary(s Site) string {
	switch {
	case s.ACMEForward != "":
		return "already forwards /.well-known/acme-challenge/ to " + s.ACMEForward
	case s.ACMEReturn != "":
		return "answers /.well-known/acme-challenge/ itself (" + s.ACMEReturn + ")"
	case s.ACMERedirect != "":
		return "redirects /.well-known/acme-challenge/ to " + s.ACMERedirect
	case s.ACMEStatic != "":
		return "serves /.well-known/acme-challenge/ from " + s.ACMEStatic + " (webroot possible)"
	case s.DocRoot != "":
		return "document root " + s.DocRoot + " (webroot possible)"
	case s.ACMEDir != "":
		return "serves /.well-known/acme-challenge/ from " + s.ACMEDir
	case s.Proxies:
		return "proxies every request to " + s.Backend + ", no document root"
	}
	return "no document root"
}

func describeSite(s Site) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s:%d", s.File, s.Line)
	if s.TLS {
		b.WriteString(" (TLS)")
	}
	how := map[string]string{"exact": "its name", "wildcard": "a wildcard name", "regex": "a regex name",
		"default": "being the port's default", "frontend": "being the frontend bound to the port"}[s.Match]
	if s.Name != "" {
		fmt.Fprintf(&b, ", chosen for %s by %s", s.Name, how)
	} else {
		fmt.Fprintf(&b, ", chosen by %s", how)
	}
	if len(s.ServerNames) > 0 {
		fmt.Fprintf(&b, " (names: %s)", strings.Join(s.ServerNames, " "))
	}
	b.WriteString(": ")
	var facts []string
	if s.DocRoot != "" {
		facts = append(facts, "challenge files served from document root "+s.DocRoot)
	}
	if s.ACMEStatic != "" || s.ACMEDir != "" {
		facts = append(facts, "a location of its own serves /.well-known/acme-challenge/ from "+s.ACMEDir)
	}
	if s.ACMEForward != "" {
		facts = append(facts, "/.well-known/acme-challenge/ forwarded to "+s.ACMEForward)
	}
	if s.ACMERedirect != "" {
		facts = append(facts, "/.well-known/acme-challenge/ redirected to "+s.ACMERedirect)
	}
	if s.ACMEReturn != "" {
		facts = append(facts, "/.well-known/acme-challenge/ answered by the server: "+s.ACMEReturn)
	}
	if s.Proxies {
		facts = append(facts, "every other request proxied to "+s.Backend)
	}
	if len(facts) == 0 {
		facts = append(facts, "nothing serves /.well-known/acme-challenge/")
	}
	b.WriteString(strings.Join(facts, "; "))
	return b.String()
}

func streamSummary(s Stream) string {
	switch {
	case s.ALPNRoute != "":
		return "TLS pass-through (" + s.Kind + ") already routes acme-tls/1 to " + s.ALPNRoute
	case s.Preread:
		return "TLS pass-through (" + s.Kind + ") reading the ClientHello: an acme-tls/1 route can be added (ALPN forward)"
	}
	return "TCP pass-through (" + s.Kind + ")"
}

func describeStream(s Stream) string {
	d := fmt.Sprintf("%s:%d: %s", s.File, s.Line, s.Kind)
	if s.Preread {
		d += ", reads the ClientHello"
	}
	if s.ALPNRoute != "" {
		d += ", acme-tls/1 routed to " + s.ALPNRoute
	} else {
		d += ", no acme-tls/1 route"
	}
	if s.Default != "" {
		d += ", other connections to " + s.Default
	}
	return d
}

// haproxyValid runs `haproxy -c` on the files, for evidence.
func haproxyValid(ctx context.Context, opts Options, h Holder, files []string) string {
	bin := h.Exe
	if !executable(bin) {
		var err error
		if bin, err = opts.LookPath("haproxy"); err != nil {
			return ""
		}
	}
	args := []string{"-c", "-q"}
	for _, f := range files {
		args = append(args, "-f", f)
	}
	if _, err := runTool(ctx, nil, bin, args...); err != nil {
		return fmt.Sprintf("haproxy -c: %v (the files differ from what the running haproxy loaded, or it was reloaded since)", err)
	}
	return "haproxy -c: the configuration is valid"
}
