package dnscheck

import (
	"regexp"
	"slices"
	"strings"
)

// ProviderPattern recognises a DNS provider by the names of the servers a
// zone is delegated to.
type ProviderPattern struct {
	// Provider is the dns-provider name (`detour paths dns-provider NAME`).
	Provider string
	// Title names it for people.
	Title string
	// NS matches the provider's name server names, lower case, fully
	// qualified ("ns-1.awsdns-01.org.").
	NS *regexp.Regexp
	// Credentials says briefly what the dns-provider path needs from the
	// user; `detour paths dns-provider NAME` lists the exact keys.
	Credentials string
}

// ns builds the pattern of name servers ending in one of the domains: the
// whole name or any name below it.
func ns(domains ...string) *regexp.Regexp {
	q := make([]string, len(domains))
	for i, d := range domains {
		q[i] = regexp.QuoteMeta(d)
	}
	return regexp.MustCompile(`(^|\.)(` + strings.Join(q, "|") + `)\.$`)
}

// Providers is the table of well-known name servers. Add a provider by
// adding a line; TestProviderNamesKnown checks that each name is one the
// dns-provider path accepts. Keep patterns specific: a name server
// pattern that matches another provider's servers would recommend the
// wrong credentials.
var Providers = []ProviderPattern{
	{"cloudflare", "Cloudflare", ns("ns.cloudflare.com"), "an API token with Zone:DNS:Edit on the zone"},
	{"route53", "Amazon Route 53", regexp.MustCompile(`\.awsdns-[0-9]+\.(com|net|org|co\.uk)\.$`), "AWS credentials allowed route53:ChangeResourceRecordSets and route53:GetChange on the hosted zone"},
	{"digitalocean", "DigitalOcean", ns("digitalocean.com"), "a DigitalOcean API token with write scope"},
	{"hetzner", "Hetzner DNS", ns("ns.hetzner.com", "ns.hetzner.de"), "a Hetzner Cloud API token with read & write permission"},
	{"linode", "Linode (Akamai)", ns("linode.com"), "a Linode API token with Domains read/write"},
	{"gandi", "Gandi LiveDNS", ns("gandi.net"), "a Gandi personal access token with LiveDNS rights"},
	{"ovh", "OVHcloud", ns("ovh.net", "ovh.ca"), "an OVH application key, secret and consumer key allowed /domain/zone"},
	{"vultr", "Vultr", ns("vultr.com"), "a Vultr API key"},
	{"porkbun", "Porkbun", ns("ns.porkbun.com"), "a Porkbun API key and secret key, API access enabled for the domain"},
	{"namecheap", "Namecheap", ns("registrar-servers.com"), "a Namecheap API user and key, with this host's address allowed"},
	{"gcloud", "Google Cloud DNS", regexp.MustCompile(`^ns-cloud-[a-z][0-9]+\.googledomains\.com\.$`), "a Google Cloud service account allowed dns.changes.create on the project"},
	{"azuredns", "Azure DNS", ns("azure-dns.com", "azure-dns.net", "azure-dns.org", "azure-dns.info"), "an Azure service principal with DNS Zone Contributor on the zone"},
	{"desec", "deSEC", ns("desec.io", "desec.org"), "a deSEC token"},
	{"dnsimple", "DNSimple", ns("dnsimple.com", "dnsimple-edge.net", "dnsimple-edge.org"), "a DNSimple OAuth token"},
	{"ns1", "NS1 (IBM)", ns("nsone.net"), "an NS1 API key"},
	{"godaddy", "GoDaddy", ns("domaincontrol.com"), "a GoDaddy API key and secret (GoDaddy limits API access by account size)"},
	{"hurricane", "Hurricane Electric", ns("he.net"), "the DDNS key of the _acme-challenge TXT record, enabled in dns.he.net"},
	{"inwx", "INWX", ns("inwx.de", "inwx.eu", "inwx.net"), "the INWX account's user name and password"},
	{"netcup", "netcup", ns("netcup.net"), "the netcup customer number, API key and API password"},
	{"ionos", "IONOS", ns("ui-dns.com", "ui-dns.de", "ui-dns.org", "ui-dns.biz"), "an IONOS API key (prefix.secret)"},
	{"cloudns", "ClouDNS", ns("cloudns.net"), "a ClouDNS API user id (or sub-user) and password"},
	{"dnsmadeeasy", "DNS Made Easy", ns("dnsmadeeasy.com"), "a DNS Made Easy API key and secret"},
	{"bunny", "bunny.net", ns("bunny.net"), "a bunny.net API key"},
	{"vercel", "Vercel", ns("vercel-dns.com"), "a Vercel token"},
	{"luadns", "LuaDNS", ns("luadns.net"), "the LuaDNS account email and API token"},
	{"scaleway", "Scaleway", ns("scw.cloud"), "a Scaleway API secret key"},
	{"exoscale", "Exoscale", ns("exoscale.ch", "exoscale.com", "exoscale.net", "exoscale.io"), "an Exoscale API key and secret"},
	{"transip", "TransIP", ns("transip.net", "transip.nl", "transip.eu"), "a TransIP account name and private key"},
	{"namesilo", "NameSilo", ns("dnsowl.com"), "a NameSilo API key"},
	{"tencentcloud", "Tencent Cloud DNSPod", ns("dnspod.net"), "a Tencent Cloud secret id and key"},
	{"alidns", "Alibaba Cloud DNS", ns("alidns.com", "hichina.com"), "an Alibaba Cloud access key id and secret"},
	{"infomaniak", "Infomaniak", ns("infomaniak.ch"), "an Infomaniak API token with domain scope"},
	{"dreamhost", "DreamHost", ns("dreamhost.com"), "a DreamHost API key with dns-* rights"},
	{"easydns", "easyDNS", ns("easydns.com", "easydns.net", "easydns.org", "easydns.info"), "an easyDNS API token and key"},
	{"mythicbeasts", "Mythic Beasts", ns("mythic-beasts.com"), "a Mythic Beasts API key and secret"},
	{"joker", "Joker.com", ns("ns.joker.com"), "a Joker.com API key or user name and password"},
	{"domeneshop", "Domeneshop", ns("hyp.net"), "a Domeneshop API token and secret"},
	{"rackspace", "Rackspace Cloud DNS", ns("stabletransit.com"), "a Rackspace user name and API key"},
	{"njalla", "Njalla", ns("njalla.no", "njalla.in", "njalla.one"), "an Njalla API token"},
}

// ProviderOf returns the pattern matching the name server host (any case,
// with or without the trailing dot), and false when none does.
func ProviderOf(host string) (ProviderPattern, bool) {
	h := strings.ToLower(strings.TrimSuffix(host, ".")) + "."
	for _, p := range Providers {
		if p.NS.MatchString(h) {
			return p, true
		}
	}
	return ProviderPattern{}, false
}

// IdentifyProvider returns the provider most of the name servers belong
// to ("" when none is recognised) and each name server's provider ("" for
// an unknown one), in the order given. A tie goes to the provider of the
// first name server.
func IdentifyProvider(nsNames []string) (string, []string) {
	each := make([]string, len(nsNames))
	count := map[string]int{}
	var order []string
	for i, n := range nsNames {
		if p, ok := ProviderOf(n); ok {
			each[i] = p.Provider
			if count[p.Provider] == 0 {
				order = append(order, p.Provider)
			}
			count[p.Provider]++
		}
	}
	best := ""
	for _, p := range order {
		if count[p] > count[best] {
			best = p
		}
	}
	return best, each
}

// providerPattern returns the table entry of a provider name.
func providerPattern(name string) (ProviderPattern, bool) {
	i := slices.IndexFunc(Providers, func(p ProviderPattern) bool { return p.Provider == name })
	if i < 0 {
		return ProviderPattern{}, false
	}
	return Providers[i], true
}
