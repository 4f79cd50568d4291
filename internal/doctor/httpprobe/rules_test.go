package httpprobe

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/doctor/check"
	"github.com/detour-acme/detour/internal/doctor/hostcheck"
	"github.com/detour-acme/detour/internal/solve/selfcheck"
)

// fam is a FamilyResult for the table tests.
func fam(family string, f Failure) FamilyResult {
	addr, hop := "127.0.0.1", "127.0.0.1:80"
	if family == IPv6 {
		addr, hop = "::1", "[::1]:80"
	}
	fr := FamilyResult{Family: family, Addr: netip.MustParseAddr(addr), Failure: f, OK: f == FailNone,
		Hops: []Hop{{URL: "http://site.test/.well-known/acme-challenge/x", Addr: hop, Status: 200}}}
	switch f {
	case FailRefused, FailTimeout, FailNetwork, FailNoAnswer:
		fr.Hops[0].Status = 0
		fr.Hops[0].Err = string(f)
	case FailStatus:
		fr.Hops[0].Status = 404
	}
	return fr
}

// TestCAFamily is the CA's rule: IPv6 first when the name has an AAAA
// record; IPv4 only after IPv6 failed to connect; never after an answer.
func TestCAFamily(t *testing.T) {
	tests := []struct {
		name string
		fams []FamilyResult
		want int // index; -1 none
		ok   bool
	}{
		{"no address", nil, -1, false},
		{"IPv4 only, passes", []FamilyResult{fam(IPv4, FailNone)}, 0, true},
		{"IPv4 only, 404", []FamilyResult{fam(IPv4, FailStatus)}, 0, false},
		{"IPv6 only, refused: nothing to fall back to", []FamilyResult{fam(IPv6, FailRefused)}, 0, false},
		{"both pass: IPv6 used", []FamilyResult{fam(IPv6, FailNone), fam(IPv4, FailNone)}, 0, true},
		{"IPv6 refused: fallback to IPv4", []FamilyResult{fam(IPv6, FailRefused), fam(IPv4, FailNone)}, 1, true},
		{"IPv6 dial timeout: fallback to IPv4", []FamilyResult{fam(IPv6, FailTimeout), fam(IPv4, FailNone)}, 1, true},
		{"IPv6 unreachable: fallback to IPv4", []FamilyResult{fam(IPv6, FailNetwork), fam(IPv4, FailNone)}, 1, true},
		{"IPv6 refused, IPv4 404: the CA gets the 404", []FamilyResult{fam(IPv6, FailRefused), fam(IPv4, FailStatus)}, 1, false},
		{"IPv6 answers 404: no fallback (the AAAA trap)", []FamilyResult{fam(IPv6, FailStatus), fam(IPv4, FailNone)}, 0, false},
		{"IPv6 wrong body: no fallback", []FamilyResult{fam(IPv6, FailBody), fam(IPv4, FailNone)}, 0, false},
		{"IPv6 bad redirect: no fallback", []FamilyResult{fam(IPv6, FailRedirect), fam(IPv4, FailNone)}, 0, false},
		{"IPv6 connected then silent: no fallback", []FamilyResult{fam(IPv6, FailNoAnswer), fam(IPv4, FailNone)}, 0, false},
		{"IPv6 redirect target unresolvable: no fallback", []FamilyResult{fam(IPv6, FailDNS), fam(IPv4, FailNone)}, 0, false},
		{"IPv6 passes, IPv4 refused: IPv6 used", []FamilyResult{fam(IPv6, FailNone), fam(IPv4, FailRefused)}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := CAFamily(tt.fams)
			if got != tt.want {
				t.Fatalf("CAFamily = %d, want %d", got, tt.want)
			}
			if got >= 0 && tt.fams[got].OK != tt.ok {
				t.Errorf("the CA's conclusion = %v, want %v", tt.fams[got].OK, tt.ok)
			}
		})
	}
}

// TestRedirect is the CA's redirect rule.
func TestRedirect(t *testing.T) {
	from, _ := url.Parse("http://site.test/.well-known/acme-challenge/tok")
	tests := []struct {
		name     string
		status   int
		location string
		n        int
		seen     []string
		next     string   // "" when refused
		problem  []string // substrings of the problem
	}{
		{name: "https on 443", status: 301, location: "https://site.test/.well-known/acme-challenge/tok", n: 1,
			next: "https://site.test/.well-known/acme-challenge/tok"},
		{name: "relative", status: 302, location: "/other/tok", n: 1, next: "http://site.test/other/tok"},
		{name: "explicit :80", status: 307, location: "http://www.site.test:80/x", n: 1, next: "http://www.site.test:80/x"},
		{name: "308 to :443", status: 308, location: "https://site.test:443/x", n: 1, next: "https://site.test:443/x"},
		{name: "test's own ports count as 80 and 443", status: 301, location: "https://site.test:8443/x", n: 1,
			next: "https://site.test:8443/x"}, // tlsPort is 8443 in this table
		{name: "port 8080", status: 301, location: "http://site.test:8080/x", n: 1,
			problem: []string{"answered 301 with a redirect to port 8080", "Location: http://site.test:8080/x", "ports 80 and 443"}},
		{name: "https on 444", status: 302, location: "https://site.test:444/x", n: 1,
			problem: []string{"a redirect to port 444"}},
		{name: "ftp", status: 301, location: "ftp://site.test/x", n: 1,
			problem: []string{`scheme "ftp"`, "http:// and https://"}},
		{name: "IP address", status: 301, location: "http://192.0.2.1/x", n: 1,
			problem: []string{"the IP address 192.0.2.1", "names, not IP addresses"}},
		{name: "303 is not followed", status: 303, location: "https://site.test/x", n: 1,
			problem: []string{"answered 303", "301, 302, 307 and 308"}},
		{name: "eleventh redirect", status: 301, location: "https://site.test/x", n: 11,
			problem: []string{"redirect number 11", "at most 10"}},
		{name: "loop", status: 301, location: "http://site.test/a", n: 2, seen: []string{"http://site.test/a"},
			problem: []string{"a redirect loop"}},
		{name: "missing slash", status: 301, location: "https://site.test.well-known/acme-challenge/tok", n: 1,
			problem: []string{"slash is missing"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seen := map[string]bool{}
			for _, s := range tt.seen {
				seen[s] = true
			}
			next, problem := Redirect(from, tt.status, tt.location, tt.n, seen, 80, 8443)
			if tt.next != "" {
				if problem != "" || next == nil || next.String() != tt.next {
					t.Fatalf("Redirect = %v, %q; want %s", next, problem, tt.next)
				}
				return
			}
			if next != nil || problem == "" {
				t.Fatalf("Redirect = %v, %q; want it refused", next, problem)
			}
			for _, w := range tt.problem {
				if !strings.Contains(problem, w) {
					t.Errorf("problem %q lacks %q", problem, w)
				}
			}
		})
	}
}

// TestVerdict checks the causes named from synthetic fetches; the real
// fetches are in nginx_test.go.
func TestVerdict(t *testing.T) {
	public4 := netip.MustParseAddr("192.0.2.10")
	natFam := fam(IPv4, FailTimeout)
	natFam.Addr = public4
	natFam.Hops[0].Addr = "192.0.2.10:80"
	p := probe{check: "http.test", name: "site.test", answer: func(fr FamilyResult) (string, string) {
		return "wrong answer " + failureText(fr), "fix the answer"
	}}
	local := func(a netip.Addr) bool { return a.IsLoopback() }
	tests := []struct {
		name   string
		res    Result
		status check.Status
		want   []string
	}{
		{"both pass", Result{Families: []FamilyResult{fam(IPv6, FailNone), fam(IPv4, FailNone)}}, check.OK,
			[]string{"over IPv6 ([::1]:80, no redirect)"}},
		{"no address", Result{Err: "site.test does not resolve: no such host"}, check.Problem,
			[]string{"does not resolve", "create an A or AAAA record"}},
		{"the AAAA trap", Result{Families: []FamilyResult{fam(IPv6, FailStatus), fam(IPv4, FailNone)}}, check.Problem,
			[]string{"the AAAA trap", "[::1]:80 answered 404", "will not fall back", "listen [::]:80;", "remove the AAAA record of site.test"}},
		{"fallback", Result{Families: []FamilyResult{fam(IPv6, FailRefused), fam(IPv4, FailNone)}}, check.Warning,
			[]string{"only by falling back to IPv4", "[::1]:80 failed: refused", "remove the AAAA record"}},
		{"IPv4 fails, IPv6 passes", Result{Families: []FamilyResult{fam(IPv6, FailNone), fam(IPv4, FailStatus)}}, check.Warning,
			[]string{"IPv4 fails", "127.0.0.1:80 answered 404"}},
		{"refused locally", Result{Families: []FamilyResult{fam(IPv4, FailRefused)}}, check.Problem,
			[]string{"over IPv4 the connection to 127.0.0.1:80 failed: refused", "nothing listens on port 80"}},
		{"both refused", Result{Families: []FamilyResult{fam(IPv6, FailRefused), fam(IPv4, FailRefused)}}, check.Problem,
			[]string{"over IPv6 the connection to [::1]:80", "over IPv4 the connection to 127.0.0.1:80"}},
		{"timeout", Result{Families: []FamilyResult{fam(IPv4, FailTimeout)}}, check.Problem,
			[]string{"a firewall drops port 80", "firewall window"}},
		{"NAT without hairpin", Result{Families: []FamilyResult{natFam}}, check.Warning,
			[]string{"192.0.2.10 is not an address of this host", "no hairpin NAT", "cannot be proven from here", "--staging"}},
		{"connected, no answer", Result{Families: []FamilyResult{fam(IPv4, FailNoAnswer)}}, check.Problem,
			[]string{"accepted the connection", "without answering HTTP"}},
		{"wrong answer goes to the kind", Result{Families: []FamilyResult{fam(IPv4, FailStatus)}}, check.Problem,
			[]string{"wrong answer 127.0.0.1:80 answered 404", "fix the answer"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := p.verdict(tt.res, Options{IsLocal: local})
			if r.Status != tt.status {
				t.Errorf("status %s, want %s\n%s", r.Status, tt.status, r)
			}
			text := r.String()
			for _, w := range tt.want {
				if !strings.Contains(text, w) {
					t.Errorf("lacks %q:\n%s", w, text)
				}
			}
		})
	}
}

// TestJudge is the final answer's rule: 200, and with a wanted body that
// body (trailing whitespace ignored) under Boulder's 128-byte limit.
func TestJudge(t *testing.T) {
	long := strings.Repeat("a", 128)
	tests := []struct {
		name   string
		status int
		body   string
		expect string
		want   Failure
	}{
		{"200 with the body", 200, "probe", "probe", FailNone},
		{"trailing whitespace ignored", 200, "probe \r\n\t", "probe", FailNone},
		{"leading whitespace is not", 200, " probe", "probe", FailBody},
		{"another body", 200, "<html>", "probe", FailBody},
		{"any 200 wanted", 200, "<html>", "", FailNone},
		{"128 bytes is too long", 200, long, long, FailBody},
		{"127 bytes pass", 200, long[:127], long[:127], FailNone},
		{"404", 404, "probe", "probe", FailStatus},
		{"204", 204, "", "", FailStatus},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := judge(selfcheck.Answer{Status: tt.status, Body: []byte(tt.body)}, tt.expect)
			if got != tt.want || (got != FailNone) != (why != "") {
				t.Errorf("judge = %q, %q; want %q", got, why, tt.want)
			}
		})
	}
}

func TestFetchUnresolvable(t *testing.T) {
	res := Fetch(t.Context(), "site.test", "/.well-known/acme-challenge/x", "", Options{
		Lookup: func(context.Context, string) ([]netip.Addr, error) { return nil, errors.New("NXDOMAIN") },
	})
	if res.OK || res.Err == "" || len(res.Families) != 0 || res.CAFamily != "" {
		t.Fatalf("Fetch = %+v, want the name's failure", res)
	}
	if !strings.Contains(res.Err, "site.test does not resolve: NXDOMAIN") {
		t.Errorf("Err = %q", res.Err)
	}
}

func TestHolderIsDetour(t *testing.T) {
	for _, tt := range []struct {
		h    Holder
		want bool
	}{
		{Holder{Command: "/usr/local/bin/detour agent --config /etc/detour.toml", Exe: "/usr/local/bin/detour"}, true},
		{Holder{Command: "/proc/self/fd/3 agent", Exe: "/usr/bin/detour (deleted)"}, true}, // upgraded under a running agent
		{Holder{Command: "detour agent"}, true},                                            // exe unreadable
		{Holder{Command: "nginx: master process /usr/sbin/nginx", Exe: "/usr/sbin/nginx"}, false},
		{Holder{Command: "/opt/detour-helper serve", Exe: "/opt/detour-helper"}, false},
	} {
		if got := tt.h.isDetour(); got != tt.want {
			t.Errorf("%+v: isDetour = %v, want %v", tt.h, got, tt.want)
		}
	}
}

func TestProcesses(t *testing.T) {
	nginx := hostcheck.Holder{Port: 80, Addr: "0.0.0.0:80", PID: 100, Command: "nginx: master process", Exe: "/usr/sbin/nginx", PIDs: []int{100, 101}}
	nginx6 := nginx
	nginx6.Addr = "[::]:80"
	got := processes([]hostcheck.Holder{nginx, {Port: 80, Addr: "[::1]:80"}, nginx6})
	want := []Holder{{PID: 100, Command: "nginx: master process", Exe: "/usr/sbin/nginx"}}
	if !slices.Equal(got, want) {
		t.Errorf("processes = %+v, want %+v", got, want)
	}
	if got := processes([]hostcheck.Holder{{Port: 80, Addr: "0.0.0.0:80"}}); len(got) != 0 {
		t.Errorf("a socket nobody visible holds: %+v", got)
	}
}

// TestHoldersOf finds this test's own listeners in /proc.
func TestHoldersOf(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "side.sock")
	for _, l := range []struct{ network, addr string }{
		{"tcp", "127.0.0.1:0"}, {"tcp", "[::1]:0"}, {"tcp", "0.0.0.0:0"}, {"unix", sock},
	} {
		ln, err := net.Listen(l.network, l.addr)
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		if l.addr == "0.0.0.0:0" {
			// A wildcard listener holds every address of its port.
			addr = "127.0.0.1:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		}
		hs, err := holdersOf(l.network, addr)
		ln.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(hs) != 1 || hs[0].PID != os.Getpid() || !strings.Contains(hs[0].Command, "httpprobe.test") {
			t.Errorf("holders of %s %s = %+v, want this test (pid %d)", l.network, addr, hs, os.Getpid())
		}
	}
	if hs, err := holdersOf("unix", filepath.Join(t.TempDir(), "none.sock")); err != nil || len(hs) != 0 {
		t.Errorf("holders of a socket nobody listens on = %+v, %v", hs, err)
	}
}
