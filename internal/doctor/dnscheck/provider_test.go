package dnscheck_test

import (
	"slices"
	"testing"

	"github.com/detour-acme/detour/internal/doctor/dnscheck"
	"github.com/detour-acme/detour/internal/solve/dnsprovider"
)

func TestProviderOf(t *testing.T) {
	tests := []struct{ ns, want string }{
		{"amy.ns.cloudflare.com.", "cloudflare"},
		{"KURT.NS.CLOUDFLARE.COM", "cloudflare"},
		{"ns-1234.awsdns-56.org.", "route53"},
		{"ns-789.awsdns-01.co.uk.", "route53"},
		{"ns-12.awsdns-01.net", "route53"},
		{"ns1.digitalocean.com.", "digitalocean"},
		{"hydrogen.ns.hetzner.com.", "hetzner"},
		{"helium.ns.hetzner.de.", "hetzner"},
		{"ns3.linode.com.", "linode"},
		{"ns-27-a.gandi.net.", "gandi"},
		{"dns110.ovh.net.", "ovh"},
		{"ns110.ovh.net.", "ovh"},
		{"ns1.vultr.com.", "vultr"},
		{"curitiba.ns.porkbun.com.", "porkbun"},
		{"dns1.registrar-servers.com.", "namecheap"},
		{"pdns1.registrar-servers.com.", "namecheap"},
		{"ns-cloud-a1.googledomains.com.", "gcloud"},
		{"ns1-01.azure-dns.com.", "azuredns"},
		{"ns4-01.azure-dns.info.", "azuredns"},
		{"ns1.desec.io.", "desec"},
		{"ns2.desec.org.", "desec"},
		{"ns1.dnsimple.com.", "dnsimple"},
		{"ns2.dnsimple-edge.net.", "dnsimple"},
		{"dns1.p01.nsone.net.", "ns1"},
		{"ns01.domaincontrol.com.", "godaddy"},
		{"ns5.he.net.", "hurricane"},
		{"ns.inwx.de.", "inwx"},
		{"ns3.inwx.eu.", "inwx"},
		{"root-dns.netcup.net.", "netcup"},
		{"ns1045.ui-dns.com.", "ionos"},
		{"ns1112.ui-dns.biz.", "ionos"},
		{"pns41.cloudns.net.", "cloudns"},
		{"ns0.dnsmadeeasy.com.", "dnsmadeeasy"},
		{"kiki.bunny.net.", "bunny"},
		{"ns1.vercel-dns.com.", "vercel"},
		{"ns0.dom.scw.cloud.", "scaleway"},
		{"ns1.dnsowl.com.", "namesilo"},
		{"a.ns.joker.com.", "joker"},
		// Not providers: look-alikes and self-hosted servers.
		{"ns1.example.com.", ""},
		{"ns.notcloudflare.com.", ""},
		{"cloudflare.com.evil.example.", ""},
		{"ns1.awsdns.example.", ""},
		{"ns-cloud-a1.example.com.", ""},
		{"ns1.linode.com.example.", ""},
		{"she.net.", ""},
	}
	for _, tc := range tests {
		p, ok := dnscheck.ProviderOf(tc.ns)
		if p.Provider != tc.want || ok != (tc.want != "") {
			t.Errorf("ProviderOf(%q) = %q, %v; want %q", tc.ns, p.Provider, ok, tc.want)
		}
	}
}

func TestIdentifyProvider(t *testing.T) {
	tests := []struct {
		ns   []string
		want string
		each []string
	}{
		{[]string{"amy.ns.cloudflare.com.", "kurt.ns.cloudflare.com."}, "cloudflare", []string{"cloudflare", "cloudflare"}},
		{[]string{"ns1.example.com.", "ns2.example.com."}, "", []string{"", ""}},
		{[]string{"ns1.example.com.", "ns1.digitalocean.com."}, "digitalocean", []string{"", "digitalocean"}},
		// Two providers: the one with more servers wins, a tie goes to the first.
		{[]string{"ns1.he.net.", "amy.ns.cloudflare.com.", "kurt.ns.cloudflare.com."}, "cloudflare", []string{"hurricane", "cloudflare", "cloudflare"}},
		{[]string{"ns1.he.net.", "amy.ns.cloudflare.com."}, "hurricane", []string{"hurricane", "cloudflare"}},
		{nil, "", []string{}},
	}
	for _, tc := range tests {
		got, each := dnscheck.IdentifyProvider(tc.ns)
		if got != tc.want || !slices.Equal(each, tc.each) {
			t.Errorf("IdentifyProvider(%v) = %q %q, want %q %q", tc.ns, got, each, tc.want, tc.each)
		}
	}
}

// TestProviderNamesKnown checks that every provider of the table is a name
// the dns-provider path accepts, and each appears once.
func TestProviderNamesKnown(t *testing.T) {
	known := dnsprovider.Names()
	seen := map[string]bool{}
	for _, p := range dnscheck.Providers {
		if !slices.Contains(known, p.Provider) {
			t.Errorf("provider %q (%s) is not a dns-provider name", p.Provider, p.Title)
		}
		if seen[p.Provider] {
			t.Errorf("provider %q listed twice", p.Provider)
		}
		seen[p.Provider] = true
		if p.Title == "" || p.Credentials == "" || p.NS == nil {
			t.Errorf("provider %q lacks a title, credentials or pattern", p.Provider)
		}
	}
}
