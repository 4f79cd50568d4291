package acme_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/testenv"
)

func newAccountKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestAgainstCA runs the client against the in-process Pebble CA. One CA
// serves every subtest; each uses its own account key.
func TestAgainstCA(t *testing.T) {
	env := testenv.New(t, testenv.Options{CA: sandbox.CAOptions{AlternateRoots: 1}})

	t.Run("register without agreeing to the terms", func(t *testing.T) {
		c := env.Client(t)
		tos, err := c.TermsOfService(t.Context())
		if err != nil || tos == "" {
			t.Fatalf("TermsOfService = %q, %v; the sandbox CA should have terms", tos, err)
		}
		acct, err := c.Register(t.Context(), acme.RegisterRequest{Key: newAccountKey(t), Email: "a@detour.test"})
		wantContains(t, err, "agree_tos = true", "--agree-tos", tos)
		if acct.Location != "" {
			t.Errorf("Register returned account %q alongside the error", acct.Location)
		}
	})

	t.Run("register twice returns the same account", func(t *testing.T) {
		key := newAccountKey(t)
		c := env.Client(t)
		first, err := c.Register(t.Context(), acme.RegisterRequest{Key: key, Email: "twice@detour.test", AgreeTOS: true})
		if err != nil {
			t.Fatalf("first Register: %v", err)
		}
		if first.Location == "" || first.PrivateKey != key {
			t.Fatalf("first Register = %+v; want a location and the key", first)
		}
		second, err := c.Register(t.Context(), acme.RegisterRequest{Key: key, Email: "twice@detour.test", AgreeTOS: true})
		if err != nil {
			t.Fatalf("second Register: %v", err)
		}
		// A fresh client (as after a restart) finds it too, and needs no
		// terms agreement for an account that already exists.
		third, err := env.Client(t).Register(t.Context(), acme.RegisterRequest{Key: key})
		if err != nil {
			t.Fatalf("Register of an existing key from a new client: %v", err)
		}
		for i, a := range []acme.Account{second, third} {
			if a.Location != first.Location {
				t.Errorf("registration %d returned %q, want %q", i+2, a.Location, first.Location)
			}
			if a.PrivateKey != key {
				t.Errorf("registration %d lost the private key", i+2)
			}
		}
		// Another key is another account.
		other, err := c.Register(t.Context(), acme.RegisterRequest{Key: newAccountKey(t), AgreeTOS: true})
		if err != nil {
			t.Fatal(err)
		}
		if other.Location == first.Location {
			t.Errorf("two keys share account %q", other.Location)
		}
	})

	t.Run("order with an unknown profile", func(t *testing.T) {
		c := env.Client(t)
		acct, err := c.Register(t.Context(), acme.RegisterRequest{Key: newAccountKey(t), AgreeTOS: true})
		if err != nil {
			t.Fatal(err)
		}
		ids := mustParse(t, "profile.detour.test")
		_, err = c.NewOrder(t.Context(), acct, acme.OrderRequest{Identifiers: ids, Profile: "nonesuch"})
		var want []string
		for name, p := range sandbox.DefaultProfiles() {
			want = append(want, name+" ("+p.Description+")")
		}
		wantContains(t, err, append(want, `profile "nonesuch" is not offered`, env.CA.DirectoryURL())...)
	})

	t.Run("finalize polls until issued, chain falls back", func(t *testing.T) {
		testIssue(t, env)
	})
}

func mustParse(t *testing.T, names ...string) []ident.Identifier {
	t.Helper()
	ids, err := ident.ParseAll(names)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// holdProcessing rewrites the CA's "valid" order to "processing" until
// release, as a CA that takes a while to issue would answer.
type holdProcessing struct {
	next http.RoundTripper

	mu       sync.Mutex
	orderURL string
	release  time.Time
	held     int // "valid" answers rewritten
	polls    int // order POSTs after finalize
}

func (h *holdProcessing) hold(orderURL string, d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.orderURL, h.release = orderURL, time.Now().Add(d)
}

func (h *holdProcessing) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := h.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.orderURL == "" || req.Method != http.MethodPost || req.URL.String() != h.orderURL {
		return resp, nil
	}
	h.polls++
	if time.Now().After(h.release) {
		return resp, nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	var o map[string]any
	if json.Unmarshal(body, &o) == nil && o["status"] == "valid" {
		o["status"] = "processing"
		if body, err = json.Marshal(o); err != nil {
			return nil, err
		}
		h.held++
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return resp, nil
}

func testIssue(t *testing.T, env *testenv.Env) {
	ctx := t.Context()
	hold := &holdProcessing{next: env.CA.HTTPClient().Transport}
	c, err := acme.New(acme.Options{
		Directory:  env.CA.DirectoryURL(),
		HTTPClient: &http.Client{Transport: hold},
		PollMin:    2 * time.Millisecond,
		PollMax:    40 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	acct, err := c.Register(ctx, acme.RegisterRequest{Key: newAccountKey(t), AgreeTOS: true})
	if err != nil {
		t.Fatal(err)
	}
	const name = "finalize.detour.test"
	env.AddName(name)
	ids := mustParse(t, name)
	order, err := c.NewOrder(ctx, acct, acme.OrderRequest{Identifiers: ids, Profile: env.CA.DefaultProfile()})
	if err != nil {
		t.Fatalf("NewOrder: %v", err)
	}
	certKey := newAccountKey(t)
	csr, err := acme.CSR(certKey, ids)
	if err != nil {
		t.Fatal(err)
	}

	// Finalizing before the authorizations are done fails at once.
	if _, err := c.Finalize(ctx, acct, order, csr); err == nil || !strings.Contains(err.Error(), "finalizing order") {
		t.Errorf("Finalize of a pending order: %v; want a finalizing error", err)
	}

	for _, url := range order.Authorizations {
		authz, err := c.Authorization(ctx, acct, url)
		if err != nil {
			t.Fatal(err)
		}
		if authz.Status == "valid" {
			continue
		}
		var wc acme.Challenge
		for _, ch := range authz.Challenges {
			if ch.Type == solve.HTTP01 {
				wc = ch
			}
		}
		if wc.Token == "" {
			t.Fatalf("the CA offers no http-01 challenge for %s", name)
		}
		ch := solve.Challenge{Type: solve.HTTP01, Identifier: ids[0], Token: wc.Token, KeyAuthorization: wc.KeyAuthorization}
		if err := env.HTTPPath.Solver.Present(ctx, ch); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.HTTPPath.Solver.CleanUp(ctx, ch) })
		// The authorization answers "processing" for a while: the polls
		// WaitAuthorizationPolls counts are the fetches the CA answered.
		hold.hold(url, 30*time.Millisecond)
		if err := c.Accept(ctx, acct, wc); err != nil {
			t.Fatal(err)
		}
		a, polls, err := c.WaitAuthorizationPolls(ctx, acct, url)
		if err != nil || a.Status != "valid" {
			t.Fatalf("WaitAuthorizationPolls = %q, %v", a.Status, err)
		}
		hold.mu.Lock()
		fetched := hold.polls
		hold.orderURL, hold.held, hold.polls = "", 0, 0
		hold.mu.Unlock()
		if polls < 2 || polls != fetched {
			t.Errorf("WaitAuthorizationPolls counted %d polls; the CA answered %d fetches of the authorization (want the same, at least 2)", polls, fetched)
		}
	}

	// The order stays "processing" well past acmez's short poll budget
	// (8 × PollMin), so Finalize's own polling must carry it to the end.
	const held = 250 * time.Millisecond
	hold.hold(order.Location, held)
	start := time.Now()
	done, err := c.Finalize(ctx, acct, order, csr)
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("Finalize: %v", err)
	}
	if done.Status != "valid" || done.Certificate == "" {
		t.Fatalf("Finalize returned status %q, certificate %q", done.Status, done.Certificate)
	}
	hold.mu.Lock()
	heldN, polls := hold.held, hold.polls
	hold.mu.Unlock()
	if heldN == 0 {
		t.Error("no answer was held in processing; the test did not exercise polling")
	}
	if elapsed < held || elapsed > held+2*time.Second {
		t.Errorf("Finalize took %v; want a little over %v", elapsed, held)
	}
	// Backoff doubles up to PollMax: far fewer polls than at PollMin.
	if max := int(held/(2*time.Millisecond)) / 2; polls > max {
		t.Errorf("Finalize polled the order %d times in %v; want backoff (at most %d)", polls, elapsed, max)
	}

	testChains(t, env, c, acct, done.Certificate, certKey)
}

func testChains(t *testing.T, env *testenv.Env, c *acme.Client, acct acme.Account, certURL string, certKey *ecdsa.PrivateKey) {
	ctx := t.Context()
	leafPEM, chainPEM, _, err := c.Chain(ctx, acct, certURL, "")
	if err != nil {
		t.Fatalf("Chain: %v", err)
	}
	leaf := parseOne(t, leafPEM)
	if !leaf.PublicKey.(*ecdsa.PublicKey).Equal(certKey.Public()) {
		t.Error("the leaf does not carry the CSR's key")
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "finalize.detour.test" {
		t.Errorf("leaf names %v", leaf.DNSNames)
	}
	if bytes.HasPrefix(chainPEM, []byte("\n")) || len(parseAll(t, chainPEM)) == 0 {
		t.Errorf("chain PEM %q: want intermediates with no leading blank line", chainPEM)
	}
	defaultTop := topIssuer(t, chainPEM)

	rootsPEM, err := env.CA.IssuerRootsPEM(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var other string
	for _, r := range parseAll(t, rootsPEM) {
		if r.Subject.CommonName != defaultTop {
			other = r.Subject.CommonName
		}
	}
	if other == "" {
		t.Fatalf("no alternate root besides %q", defaultTop)
	}

	tests := []struct {
		name      string
		preferred string
		wantTop   string
	}{
		{"no preference", "", defaultTop},
		{"preference matching nothing falls back", "No Such Root CA", defaultTop},
		{"preference for the alternate root", other, other},
		{"preference is case-insensitive", strings.ToUpper(other), other},
		{"preference for the default root", defaultTop, defaultTop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, ch, _, err := c.Chain(ctx, acct, certURL, tt.preferred)
			if err != nil {
				t.Fatalf("Chain(%q): %v", tt.preferred, err)
			}
			if !bytes.Equal(l, leafPEM) {
				t.Error("the leaf differs between chains")
			}
			if got := topIssuer(t, ch); got != tt.wantTop {
				t.Errorf("Chain(%q) ends at an intermediate issued by %q, want %q", tt.preferred, got, tt.wantTop)
			}
		})
	}
}

func parseAll(t *testing.T, data []byte) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return out
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}

func parseOne(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	certs := parseAll(t, data)
	if len(certs) != 1 {
		t.Fatalf("want one certificate, got %d", len(certs))
	}
	return certs[0]
}

func topIssuer(t *testing.T, chainPEM []byte) string {
	t.Helper()
	certs := parseAll(t, chainPEM)
	if len(certs) == 0 {
		t.Fatal("empty chain")
	}
	return certs[len(certs)-1].Issuer.CommonName
}
