package dnsprovider

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/sandbox"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/testenv"
)

// TestIssueThroughCloudflareFake issues a certificate for a name and its
// wildcard from in-process Pebble through the dns-provider path: lego's
// Cloudflare client talks to fakeCloudflare, whose record writes land in
// the sandbox DNS server that Pebble's validation authority queries. It
// proves the adapter, Detour's propagation check (against the sandbox
// DNS's authoritative answers) and the order flow together, two TXT values
// on one name included, and that everything is removed afterwards.
func TestIssueThroughCloudflareFake(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	zdns := useDNS(t, env.DNS, env.DNSAddr, sandbox.Zone)
	fake := newFakeCloudflare(sandbox.Zone, "cf-token")
	fake.records().sink = zdns
	s, err := New(Options{Logger: env.Log, Provider: "cloudflare", CredentialsFile: writeCreds(t, "api_token = \"cf-token\"\n", 0o600),
		Transport: startFake(t, fake), DNS: zdns.client, PropagationTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"dp.detour.test", "*.dp.detour.test"}
	ids, err := ident.ParseAll(names)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	start := time.Now()
	res, err := env.Manager(t).Obtain(ctx, renew.Request{Name: "dp", Identifiers: ids, CA: env.RenewCA(t),
		Paths: []solve.Path{{Name: "cloudflare-dns", Solver: s}}})
	if err != nil {
		t.Fatalf("Obtain: %v (fake API calls: %q)", err, fake.records().calls)
	}
	t.Logf("issued in %v", time.Since(start).Round(time.Millisecond))
	for _, n := range names {
		if res.PathUsed[n] != "cloudflare-dns" {
			t.Errorf("path used for %s = %q, want cloudflare-dns", n, res.PathUsed[n])
		}
	}
	full, err := os.ReadFile(env.Store.LivePath("dp", "fullchain.pem"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(full)
	if blk == nil {
		t.Fatal("live fullchain.pem holds no PEM block")
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if got := slices.Sorted(slices.Values(leaf.DNSNames)); !slices.Equal(got, slices.Sorted(slices.Values(names))) {
		t.Errorf("certificate names = %v, want %v", got, names)
	}
	var posts, deletes int
	for _, c := range fake.records().calls {
		posts += btoi(strings.HasPrefix(c, "POST /client/v4/zones/zone-1/dns_records"))
		deletes += btoi(strings.HasPrefix(c, "DELETE /client/v4/zones/zone-1/dns_records/"))
	}
	if posts != 2 || deletes != 2 {
		t.Errorf("the fake saw %d record creations and %d deletions, want 2 and 2: %q", posts, deletes, fake.records().calls)
	}
	name := "_acme-challenge.dp.detour.test."
	if got := fake.records().TXT(name); len(got) != 0 {
		t.Errorf("the provider still holds TXT %q", got)
	}
	if got := env.DNS.TXT(name); len(got) != 0 {
		t.Errorf("the sandbox DNS still answers TXT %q", got)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
