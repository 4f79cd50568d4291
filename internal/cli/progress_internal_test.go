package cli

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/renew"
)

// TestProgressLines renders one event of each kind, at fixed times, into
// the lines `detour issue` shows on a terminal.
func TestProgressLines(t *testing.T) {
	start := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return start.Add(time.Duration(ms) * time.Millisecond) }
	const id = "example.com"
	events := []renew.Event{
		{Kind: renew.EventAccount, At: at(0), URL: "https://acme.test/acct/1"},
		{Kind: renew.EventAccount, At: at(3), URL: "https://acme.test/acct/2", Registered: true},
		{Kind: renew.EventProbe, At: at(10), Identifier: id, Path: "side", Err: errors.New("nginx answered 404\n  for /.well-known")},
		{Kind: renew.EventProbe, At: at(20), Identifier: id, Path: "web"},
		{Kind: renew.EventOrder, At: at(40), Identifiers: []string{id, "www.example.com"}, Profile: "shortlived"},
		{Kind: renew.EventOrder, At: at(41), Identifiers: []string{"a", "b", "c", "d", "e"}},
		{Kind: renew.EventAuthz, At: at(50), Identifier: id, Path: "web", Challenge: "http-01", Reason: renew.ReasonFirstCheck,
			Skipped: []renew.Skipped{{Path: "dns", Reason: "its check failed: no key"}, {Path: "side", Reason: "its probe failed: 404", Kind: renew.EventProbe},
				{Path: "sc", Reason: "x", Kind: renew.EventSelfCheck}, {Path: "pr", Reason: "y", Kind: renew.EventAuthz}}},
		{Kind: renew.EventAuthz, At: at(51), Identifier: "www.example.com", Path: "web", Challenge: "http-01", Reason: renew.ReasonPreferred},
		{Kind: renew.EventAuthz, At: at(52), Identifier: "old.example.com", Reason: renew.ReasonReused},
		{Kind: renew.EventAuthz, At: at(53), Identifier: id, Path: "web", Challenge: "http-01", Err: errors.New("docroot not writable")},
		{Kind: renew.EventSelfCheck, At: at(90), Identifier: id, Path: "web", Challenge: "http-01"},
		{Kind: renew.EventSelfCheck, At: at(91), Identifier: id, Path: "side", Err: errors.New("connection refused")},
		{Kind: renew.EventWait, At: at(95), Identifier: "*.example.com", Path: "dns"},
		{Kind: renew.EventValidation, At: at(310), Identifier: id, Path: "web", Polls: 2},
		{Kind: renew.EventValidation, At: at(311), Identifier: "www.example.com", Path: "web", Polls: 1},
		{Kind: renew.EventValidation, At: at(312), Identifier: "x.example.com", Path: "web", Polls: 3, Err: errors.New("the CA could not validate: 404")},
		{Kind: renew.EventFinalize, At: at(330), Serial: "1f2e", NotAfter: time.Date(2026, 5, 8, 4, 0, 0, 0, time.FixedZone("x", 3600))},
		{Kind: renew.EventStored, At: at(340), Version: 3, LiveDir: "/var/lib/detour/live/example.com"},
		{Kind: renew.EventStored, At: at(341), Version: 4, LiveDir: "/l", Detail: "issued by an earlier run"},
		{Kind: renew.EventDeployed, At: at(400), Hook: "systemctl reload nginx"},
		{Kind: renew.EventDeployed, At: at(401), Hook: "false", Outputs: 2, Reloads: 1, Err: errors.New("exit status 1")},
		{Kind: renew.EventDeployed, At: at(12345), Outputs: 1},
	}
	want := `   0.00s  account     https://acme.test/acct/1 (existing)
   0.00s  account     https://acme.test/acct/2 (registered now)
   0.01s  probe       example.com: path side failed a probe of Detour's own, fetched the way the CA will: nginx answered 404 for /.well-known
   0.02s  probe       example.com: path web answered a probe of Detour's own, fetched the way the CA will
   0.04s  order       example.com, www.example.com (profile shortlived)
   0.04s  order       a, b, c and 2 more
   0.05s  authz       example.com: path web (http-01), the first path whose check passed; passed over: dns: its check failed: no key; side: its probe failed (above); sc: its self-check failed (above); pr: its answer could not be put in place (above)
   0.05s  authz       www.example.com: path web (http-01), the preferred path; its check passed
   0.05s  authz       old.example.com: already valid at the CA (authorization reused)
   0.05s  authz       example.com: path web could not put the answer in place: docroot not writable
   0.09s  self-check  example.com: path web answers as the CA will fetch it
   0.09s  self-check  example.com: path side failed the self-check (the CA was not asked): connection refused
   0.10s  dns-wait    *.example.com: path dns: the record is in place
   0.31s  validation  example.com: valid after 2 polls
   0.31s  validation  www.example.com: valid after 1 poll
   0.31s  validation  x.example.com: failed after 3 polls: the CA could not validate: 404
   0.33s  finalize    certificate issued, serial 1f2e, valid until 2026-05-08T03:00:00Z
   0.34s  stored      version 3 (/var/lib/detour/live/example.com)
   0.34s  stored      version 4 (/l), issued by an earlier run
   0.40s  deployed    hook ` + "`systemctl reload nginx`" + ` ok
   0.40s  deployed    2 outputs written, 1 server reloaded, hook ` + "`false`" + ` failed (the new certificate is live): exit status 1
  12.35s  deployed    1 output written ok
`
	var buf bytes.Buffer
	show := showProgress(&buf, "example.com", false, start)
	for _, e := range events {
		show(e)
	}
	if got := buf.String(); got != want {
		gl, wl := strings.Split(got, "\n"), strings.Split(want, "\n")
		for i := range max(len(gl), len(wl)) {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Errorf("line %d:\n got %q\nwant %q", i+1, g, w)
			}
		}
	}
}

// TestProgressHeader: several certificates in one run, each under its
// name.
func TestProgressHeader(t *testing.T) {
	start := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	var buf bytes.Buffer
	for i, name := range []string{"www", "mail"} {
		showProgress(&buf, name, true, start)(renew.Event{Kind: renew.EventStored, At: start.Add(time.Duration(i+1) * time.Second), Version: i + 1, LiveDir: "/l/" + name})
	}
	want := "www\n   1.00s  stored      version 1 (/l/www)\nmail\n   2.00s  stored      version 2 (/l/mail)\n"
	if got := buf.String(); got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// TestIsTerminal: a buffer, a regular file and /dev/null are not
// terminals (the last is a character device, which a mode check would
// take for one).
func TestIsTerminal(t *testing.T) {
	f, err := os.Create(t.TempDir() + "/log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	for name, w := range map[string]io.Writer{"buffer": &bytes.Buffer{}, "file": f, "/dev/null": null} {
		if isTerminal(w) {
			t.Errorf("%s taken for a terminal", name)
		}
	}
}
