package acmedns_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/acmedns"
)

func mustID(t testing.TB, s string) ident.Identifier {
	t.Helper()
	id, err := ident.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// accountFiles lists the client credential files under the state store.
func accountFiles(t testing.TB, w *world) []string {
	t.Helper()
	keys, err := w.state.List(t.Context(), "acme-dns/client")
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func TestFirstUseThenCNAME(t *testing.T) {
	w := newWorld(t)
	s := w.solver(t, acmedns.Options{})
	base, wild := mustID(t, "example.test"), mustID(t, "*.example.test")

	err := s.Check(t.Context(), base)
	var cerr *acmedns.CNAMEError
	if !errors.As(err, &cerr) {
		t.Fatalf("Check on first use: %v, want a *CNAMEError", err)
	}
	acct, created, err := s.Account(t.Context(), "example.test")
	if err != nil || created {
		t.Fatalf("Account after Check: created=%v err=%v, want the stored account", created, err)
	}
	want := "_acme-challenge.example.test. CNAME " + acct.Fulldomain + "."
	if cerr.Record != want || !strings.HasSuffix(cerr.Error(), want) {
		t.Errorf("record %q (message %q), want exactly %q", cerr.Record, cerr.Error(), want)
	}
	if !strings.HasSuffix(acct.Fulldomain, ".auth.detour.test") {
		t.Errorf("fulldomain %q is outside the acme-dns zone", acct.Fulldomain)
	}
	files := accountFiles(t, w)
	if len(files) != 1 {
		t.Fatalf("credential files %v, want one", files)
	}
	fi, err := os.Stat(filepath.Join(w.state.Dir(), files[0]))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("credentials %s: mode %v (%v), want 0600", files[0], fi.Mode().Perm(), err)
	}

	// A new process (new solver, same state): still missing, same account.
	s2 := w.solver(t, acmedns.Options{})
	if err := s2.Check(t.Context(), wild); !errors.As(err, &cerr) || cerr.Record != want {
		t.Fatalf("Check of the wildcard before the CNAME: %v, want the same record %q", err, want)
	}
	if n := len(accountFiles(t, w)); n != 1 {
		t.Errorf("%d accounts stored after a second Check, want the first reused", n)
	}

	w.customer.SetCNAME("_acme-challenge.example.test", "somewhere-else.auth.detour.test")
	if err := s2.Check(t.Context(), base); !errors.As(err, &cerr) || cerr.Found != "somewhere-else.auth.detour.test." {
		t.Errorf("Check with a wrong CNAME: %v, want a *CNAMEError naming the wrong target", err)
	}
	w.customer.SetCNAME("_acme-challenge.example.test", acct.Fulldomain)
	for _, id := range []ident.Identifier{base, wild} {
		if err := s2.Check(t.Context(), id); err != nil {
			t.Errorf("Check(%s) with the CNAME in place: %v", id, err)
		}
	}
	if err := s2.Check(t.Context(), mustID(t, "192.0.2.1")); !errors.Is(err, solve.ErrNotApplicable) {
		t.Errorf("Check of an IP address: %v, want ErrNotApplicable", err)
	}
}

func TestPresentAndWait(t *testing.T) {
	w := newWorld(t)
	s := w.solver(t, acmedns.Options{PropagationTimeout: 10 * time.Second})
	acct, _, err := s.Account(t.Context(), "example.test")
	if err != nil {
		t.Fatal(err)
	}
	w.customer.SetCNAME("_acme-challenge.example.test", acct.Fulldomain)
	chs := []solve.Challenge{
		{Type: solve.DNS01, Identifier: mustID(t, "example.test"), Token: "t1", KeyAuthorization: "t1.thumb"},
		{Type: solve.DNS01, Identifier: mustID(t, "*.example.test"), Token: "t2", KeyAuthorization: "t2.thumb"},
	}
	var want []string
	for _, ch := range chs {
		if err := s.Present(t.Context(), ch); err != nil {
			t.Fatalf("Present(%s): %v", ch.Identifier, err)
		}
		want = append(want, ch.DNS01Value())
	}
	for _, ch := range chs {
		if err := s.Wait(t.Context(), ch); err != nil {
			t.Fatalf("Wait(%s): %v", ch.Identifier, err)
		}
	}
	slices.Sort(want)
	if got := txtAt(t, w.resolverAddr, "_acme-challenge.example.test"); !slices.Equal(got, want) {
		t.Errorf("through the CNAME the resolver sees %q, want both values %q", got, want)
	}
	for _, ch := range chs {
		if err := s.CleanUp(t.Context(), ch); err != nil {
			t.Errorf("CleanUp: %v", err)
		}
	}
}

func TestWaitTimesOut(t *testing.T) {
	w := newWorld(t)
	s := w.solver(t, acmedns.Options{PropagationTimeout: 300 * time.Millisecond})
	ch := solve.Challenge{Type: solve.DNS01, Identifier: mustID(t, "example.test"), Token: "t", KeyAuthorization: "t.never-presented"}
	if _, _, err := s.Account(t.Context(), "example.test"); err != nil {
		t.Fatal(err)
	}
	err := s.Wait(t.Context(), ch)
	if err == nil || !strings.Contains(err.Error(), "propagation_timeout") {
		t.Errorf("Wait for a value never set: %v, want a timeout that mentions propagation_timeout", err)
	}
}

func TestCredentialsFile(t *testing.T) {
	w := newWorld(t)
	// An account registered earlier by another client (lego, certbot),
	// kept in their file format.
	reg, err := w.api.Register(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "acmedns.json")
	raw, _ := json.Marshal(map[string]any{"existing.test": reg})
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	s := w.solver(t, acmedns.Options{CredentialsFile: file})
	got, created, err := s.Account(t.Context(), "existing.test")
	if err != nil || created || got.Username != reg.Username || got.Fulldomain != reg.Fulldomain {
		t.Fatalf("Account(existing.test) = %+v, created %v, %v; want the file's account", got, created, err)
	}
	w.customer.SetCNAME("_acme-challenge.example.test", "placeholder.invalid")
	if _, created, err := s.Account(t.Context(), "example.test"); err != nil || !created {
		t.Fatalf("Account(example.test): created %v, %v; want a new registration", created, err)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	var all map[string]acmedns.Account
	raw, _ = os.ReadFile(file)
	if err := json.Unmarshal(raw, &all); err != nil {
		t.Fatal(err)
	}
	if _, ok := all["existing.test"]; !ok || all["example.test"].Password == "" {
		t.Errorf("credentials file after a registration: %s", raw)
	}
	if keys := accountFiles(t, w); len(keys) != 0 {
		t.Errorf("credentials written to the state store too: %v", keys)
	}
}

func TestUpdateRefusedIsExplained(t *testing.T) {
	w := newWorld(t)
	s := w.solver(t, acmedns.Options{AllowFrom: []string{"192.0.2.0/24"}}) // not where the test runs from
	acct, _, err := s.Account(t.Context(), "example.test")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(acct.AllowFrom, []string{"192.0.2.0/24"}) {
		t.Errorf("account allowfrom %q", acct.AllowFrom)
	}
	ch := solve.Challenge{Type: solve.DNS01, Identifier: mustID(t, "example.test"), Token: "t", KeyAuthorization: "t.k"}
	err = s.Present(t.Context(), ch)
	var ae *acmedns.APIError
	if !errors.As(err, &ae) || ae.Status != 401 || ae.Code != "forbidden" || !strings.Contains(err.Error(), "allow_from") {
		t.Errorf("Present from outside allowfrom: %v, want a 401 forbidden that points at allow_from", err)
	}
}

func TestNewRejects(t *testing.T) {
	w := newWorld(t)
	tests := []struct {
		name string
		opts acmedns.Options
		want string
	}{
		{"no server", acmedns.Options{Server: "", Storage: w.state}, "no acme-dns server"},
		{"plain http to a remote host", acmedns.Options{Server: "http://auth.example.net", Storage: w.state}, "use https://"},
		{"other scheme", acmedns.Options{Server: "ftp://auth.example.net", Storage: w.state}, "https://"},
		{"no credential store", acmedns.Options{Server: "https://auth.example.net"}, "Storage or Options.CredentialsFile"},
		{"bad allowfrom", acmedns.Options{Server: "https://auth.example.net", Storage: w.state, AllowFrom: []string{"10.0.0.1"}}, "not a CIDR"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.DNS = w.dnsClient(t)
			_, err := acmedns.New(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	for _, ok := range []string{"https://auth.example.net", "https://auth.example.net:8443/acme-dns/", "http://127.0.0.1:8053", "http://[::1]:8053", "http://localhost:8053"} {
		if _, err := acmedns.CheckServerURL(ok); err != nil {
			t.Errorf("CheckServerURL(%q): %v", ok, err)
		}
	}
}
