package script_test

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	detourdns "github.com/detour-acme/detour/internal/dns"
	"github.com/detour-acme/detour/internal/dnsserver"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/script"
	"github.com/detour-acme/detour/internal/testenv"
)

// recordAPI is a DNS provider's API as a hook script reaches it with
// curl: POST /add and /remove with name and value set TXT records in
// Detour's DNS responder, which serves the zone.
type recordAPI struct {
	srv   *dnsserver.Server
	url   string
	mu    sync.Mutex
	calls []string
}

func startRecordAPI(t *testing.T, srv *dnsserver.Server) *recordAPI {
	t.Helper()
	api := &recordAPI{srv: srv}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, value := r.PostFormValue("name"), r.PostFormValue("value")
		if name == "" || value == "" {
			http.Error(w, "name and value are needed", http.StatusBadRequest)
			return
		}
		api.mu.Lock()
		api.calls = append(api.calls, r.URL.Path+" "+name)
		api.mu.Unlock()
		switch r.URL.Path {
		case "/add":
			srv.AddTXT(name, value, srv.Now().Add(time.Hour))
		case "/remove":
			srv.RemoveTXT(name, value)
		default:
			http.NotFound(w, r)
		}
	})}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	api.url = "http://" + ln.Addr().String()
	return api
}

// seen returns the calls the API answered.
func (a *recordAPI) seen() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.calls)
}

// dnsHooks returns hooks that set and remove the record through api with
// curl, recording their environment in logDir as publishHooks' do.
func dnsHooks(t *testing.T, api *recordAPI, logDir string) (auth, cleanup string) {
	t.Helper()
	curl := testenv.RequireBinary(t, "curl", "curl")
	dir := t.TempDir()
	dump := `env | grep -E '^(DETOUR|CERTBOT)_' | sort > "` + logDir + `/$DETOUR_ACTION-$DETOUR_DOMAIN"` + "\n"
	call := func(op string) string {
		return curl + ` -fsS -X POST --data-urlencode "name=$DETOUR_RECORD" --data-urlencode "value=$CERTBOT_VALIDATION" ` + api.url + "/" + op + "\n"
	}
	auth = writeHook(t, dir, "auth", "set -e\n"+dump+call("add")+`echo "added $CERTBOT_DOMAIN"`+"\n")
	cleanup = writeHook(t, dir, "cleanup", "set -e\n"+dump+call("remove"))
	return auth, cleanup
}

// zoneDNS serves zone from srv on 127.0.0.1 and returns a propagation
// check client that reaches its nameserver there.
func zoneDNS(t *testing.T, srv *dnsserver.Server, zone string) *detourdns.Client {
	t.Helper()
	pc, ln, err := dnsserver.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, pc, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("DNS server: %v", err)
		}
	})
	select {
	case <-srv.Ready():
	case err := <-done:
		t.Fatalf("DNS server stopped: %v", err)
	}
	return dnsClient(t, pc.LocalAddr().String(), zone)
}

func dnsClient(t *testing.T, addr, zone string) *detourdns.Client {
	t.Helper()
	c, err := detourdns.New(detourdns.Options{Resolver: addr, Nameservers: map[string]string{"ns." + zone: addr}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestDNS01: for a name and its wildcard, which share one record name,
// the auth hook adds each value (dns-01's variables: the record's name,
// the TXT value, no token even when Detour's own environment has one),
// Wait returns once the zone's nameserver answers both, and the cleanup
// hook removes them.
func TestDNS01(t *testing.T) {
	const zone = "example.test."
	srv := dnsserver.New(dnsserver.Options{Zones: []string{zone}, RateLimit: -1})
	client := zoneDNS(t, srv, zone)
	api := startRecordAPI(t, srv)
	logs := t.TempDir()
	auth, cleanup := dnsHooks(t, api, logs)
	s, err := script.New(script.Options{Challenge: solve.DNS01, Auth: auth, Cleanup: cleanup, DNS: client, PropagationTimeout: 10 * time.Second,
		Environ: func() []string { return append(os.Environ(), "CERTBOT_TOKEN=stale", "DETOUR_TOKEN=stale") }})
	if err != nil {
		t.Fatal(err)
	}
	w, ok := s.(solve.Waiter)
	if !ok || s.Type() != solve.DNS01 {
		t.Fatalf("the dns-01 solver (%T, type %s) is not a Waiter", s, s.Type())
	}
	ctx := testCtx(t)
	names := []string{"www.example.test", "*.www.example.test"}
	var chs []solve.Challenge
	for i, n := range names {
		if err := s.Check(ctx, mustParse(t, n)); err != nil {
			t.Fatalf("Check(%s): %v", n, err)
		}
		tok := []string{"tokA", "tokB"}[i]
		chs = append(chs, solve.Challenge{Type: solve.DNS01, Identifier: mustParse(t, n), Token: tok, KeyAuthorization: tok + ".thumbprint"})
	}
	if err := s.Check(ctx, mustParse(t, "192.0.2.1")); err == nil {
		t.Error("Check accepts an IP address for dns-01")
	}
	for _, ch := range chs {
		if err := s.Present(ctx, ch); err != nil {
			t.Fatalf("Present(%s): %v", ch.Identifier, err)
		}
	}
	for _, ch := range chs {
		if err := w.Wait(ctx, ch); err != nil {
			t.Fatalf("Wait(%s): %v", ch.Identifier, err)
		}
	}
	record := "_acme-challenge.www.example.test."
	if got, want := slices.Sorted(slices.Values(srv.TXT(record))), slices.Sorted(slices.Values([]string{chs[0].DNS01Value(), chs[1].DNS01Value()})); !slices.Equal(got, want) {
		t.Errorf("TXT %s = %q, want %q", record, got, want)
	}
	want := map[string]string{
		"DETOUR_ACTION": "auth", "DETOUR_CHALLENGE": "dns-01", "DETOUR_DOMAIN": "*.www.example.test",
		"DETOUR_VALIDATION": chs[1].DNS01Value(), "DETOUR_RECORD": "_acme-challenge.www.example.test",
		"DETOUR_REMAINING_CHALLENGES": "0", "DETOUR_ALL_DOMAINS": "www.example.test,*.www.example.test",
		"CERTBOT_DOMAIN": "www.example.test", "CERTBOT_VALIDATION": chs[1].DNS01Value(),
		"CERTBOT_REMAINING_CHALLENGES": "0", "CERTBOT_ALL_DOMAINS": "www.example.test,www.example.test",
	}
	wantVars(t, filepath.Join(logs, "auth-*.www.example.test"), want)
	for _, ch := range chs {
		if err := s.CleanUp(ctx, ch); err != nil {
			t.Fatalf("CleanUp(%s): %v", ch.Identifier, err)
		}
	}
	if got := srv.TXT(record); len(got) != 0 {
		t.Errorf("TXT %s = %q after CleanUp, want none", record, got)
	}
	want["DETOUR_ACTION"], want["CERTBOT_AUTH_OUTPUT"] = "cleanup", "added www.example.test"
	wantVars(t, filepath.Join(logs, "cleanup-*.www.example.test"), want)
	if calls := api.seen(); len(calls) != 4 {
		t.Errorf("the record API saw %q, want two additions and two removals", calls)
	}
}

// TestDNS01HookSetsNothing: an auth hook that exits 0 without setting the
// record fails the wait, naming the nameserver that does not answer it,
// instead of the CA's validation.
func TestDNS01HookSetsNothing(t *testing.T) {
	const zone = "example.test."
	srv := dnsserver.New(dnsserver.Options{Zones: []string{zone}, RateLimit: -1})
	client := zoneDNS(t, srv, zone)
	auth := writeHook(t, t.TempDir(), "auth", "exit 0\n")
	s, err := script.New(script.Options{Challenge: solve.DNS01, Auth: auth, DNS: client, PropagationTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	ch := solve.Challenge{Type: solve.DNS01, Identifier: mustParse(t, "www.example.test"), Token: "tok", KeyAuthorization: "tok.thumbprint"}
	if err := s.Present(ctx, ch); err != nil {
		t.Fatal(err)
	}
	err = s.(solve.Waiter).Wait(ctx, ch)
	if err == nil {
		t.Fatal("Wait succeeded for a record the hook did not set")
	}
	wantIn(t, "Wait's error", err.Error(), auth, "ns.example.test.", "_acme-challenge.www.example.test.")
}
