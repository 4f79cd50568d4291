package importer

import (
	"fmt"
	"strings"

	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/dnsprovider"
	"github.com/detour-acme/detour/internal/solve/standalone"
	"github.com/detour-acme/detour/internal/solve/webroot"
	"github.com/detour-acme/detour/internal/store"
)

// Path names the import gives lego's challenges.
const (
	legoWebrootPath = "lego-webroot"
	legoHTTPPath    = "lego-http"
	legoTLSPath     = "lego-tls"
	legoDNSPath     = "lego-dns"
)

// legoProviders maps the lego DNS provider names that Detour's
// dns-provider names differently: every other name is the same in both
// (Detour's providers are lego's). "" marks one Detour lacks: lego's
// legacy "gandi" speaks Gandi's retired API, while Detour's "gandi" is
// LiveDNS (lego's gandiv5).
var legoProviders = map[string]string{
	"gandiv5": "gandi",
	"gandi":   "",
}

// legoFlags is how to give lego's challenge flags to the import.
const legoFlags = "--http [--http.port :80], --http.webroot DIR, --tls [--tls.port :443] or --dns PROVIDER --credentials-file FILE"

// lego maps the lego flags given to the import: lego keeps no record of
// how it validated, so every certificate gets the same paths, in the
// order http, tls, dns (lego too tries each challenge the CA offers).
func (m *mapper) lego(c *Certificate, cp *CertPlan) sourceMapping {
	get := func(k string) (Setting, bool) { return c.Setting("", k) }
	from := func(keys ...string) string {
		var parts []string
		for _, k := range keys {
			if s, ok := get(k); ok {
				if s.Value == "true" {
					parts = append(parts, k)
				} else {
					parts = append(parts, k+" "+s.Value)
				}
			}
		}
		return strings.Join(parts, " ")
	}
	if s, ok := get(legoHTTPWebroot); ok {
		cp.Paths = append(cp.Paths, MappedPath{From: from(legoHTTP, legoHTTPWebroot),
			Ref: store.PathRef{Name: legoWebrootPath, Kind: webroot.Kind, Settings: map[string]string{solve.KeyChallenge: solve.HTTP01, "root": s.Value}}})
	} else if s, ok := get(legoHTTPPort); ok {
		cp.Paths = append(cp.Paths, MappedPath{From: from(legoHTTP, legoHTTPPort),
			Ref: store.PathRef{Name: legoHTTPPath, Kind: standalone.Kind, Settings: map[string]string{solve.KeyChallenge: solve.HTTP01, "listen": s.Value}}})
	}
	if s, ok := get(legoTLSPort); ok {
		cp.Paths = append(cp.Paths, MappedPath{From: from(legoTLS, legoTLSPort),
			Ref: store.PathRef{Name: legoTLSPath, Kind: standalone.Kind, Settings: map[string]string{solve.KeyChallenge: solve.TLSALPN01, "listen": s.Value}}})
	}
	if s, ok := get(legoDNS); ok {
		m.legoDNS(c, cp, s)
	}
	if len(cp.Paths) == 0 && cp.Unmapped == nil {
		cp.Unmapped = &Unmapped{Reason: "lego keeps no record of how it validated a certificate, and no challenge flag was given",
			Suggestion: "run the import again with the flags lego was run with: " + legoFlags}
	}
	if cp.Unmapped != nil && len(cp.Paths) > 0 {
		// Another flag maps: the DNS provider's problem is a note.
		cp.Notes = append(cp.Notes, Note{Setting: from(legoDNS), Where: "the command line", Reason: cp.Unmapped.Reason, Suggestion: cp.Unmapped.Suggestion})
		cp.Unmapped = nil
	}
	return sourceMapping{}
}

// legoDNS maps --dns PROVIDER to a dns-provider path.
func (m *mapper) legoDNS(c *Certificate, cp *CertPlan, s Setting) {
	provider, renamed := legoProviders[s.Value]
	if !renamed {
		provider = s.Value
	}
	var why error = fmt.Errorf("Detour lacks lego's legacy %q provider (Gandi's retired API); Detour's \"gandi\" is LiveDNS, lego's gandiv5", s.Value)
	if provider != "" {
		var p dnsprovider.Provider
		if p, why = dnsprovider.Describe(provider); why == nil {
			provider = p.Name
		}
	}
	if why != nil {
		sug := fmt.Sprintf("a dns-provider path with one of the providers `detour paths dns-provider` lists, or rfc2136 or acme-dns (detour paths KIND); add a [[certificate]] named %q with it to the configuration and import again", cp.Name)
		switch s.Value {
		case "rfc2136":
			sug = fmt.Sprintf("an rfc2136 path with server = $RFC2136_NAMESERVER, tsig_key = $RFC2136_TSIG_KEY and tsig_secret_file holding $RFC2136_TSIG_SECRET; add a [[certificate]] named %q with it to the configuration and import again", cp.Name)
		case "acme-dns", "acmedns":
			sug = fmt.Sprintf("an acme-dns path with server = $ACME_DNS_API_BASE and credentials_file = $ACME_DNS_STORAGE_PATH (Detour reads lego's file); add a [[certificate]] named %q with it to the configuration and import again", cp.Name)
		}
		cp.Unmapped = &Unmapped{Reason: fmt.Sprintf("--dns %s: %v", s.Value, why), Suggestion: sug}
		return
	}
	cred, ok := c.Setting("", legoCredentials)
	if !ok || cred.Value == "" {
		cp.Unmapped = &Unmapped{Reason: fmt.Sprintf("--dns %s: lego takes the provider's credentials from environment variables, which the import does not copy", s.Value),
			Suggestion: fmt.Sprintf("write them to a file (mode 0600) as key = value lines with the keys `detour paths dns-provider` lists for %s, and run the import again with --credentials-file FILE", provider)}
		return
	}
	cp.Paths = append(cp.Paths, MappedPath{From: fmt.Sprintf("--dns %s --credentials-file %s", s.Value, cred.Value),
		Ref: store.PathRef{Name: legoDNSPath, Kind: dnsprovider.Kind, Settings: map[string]string{solve.KeyChallenge: solve.DNS01, "provider": provider, "credentials_file": cred.Value}}})
}
