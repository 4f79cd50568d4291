package doctor

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	wire "github.com/mholt/acmez/v3/acme"

	"github.com/detour-acme/detour/internal/doctor/check"
)

// Directory fetches a CA's ACME directory; *acme.Client does.
type Directory interface {
	Directory(ctx context.Context) (wire.Directory, error)
	DirectoryURL() string
}

// CAFacts is what the CA's directory says.
type CAFacts struct {
	Directory string `json:"directory"`
	Reachable bool   `json:"reachable"`
	// Profiles are the profile names it offers.
	Profiles []string `json:"profiles,omitempty"`
	// ARI: it offers renewal information (RFC 9773).
	ARI bool `json:"ari"`
	// CAAIdentities are the issuer domain names CAA records name it by.
	CAAIdentities []string `json:"caa_identities,omitempty"`
	// EAB: it requires External Account Binding.
	EAB bool `json:"eab"`
	// Local: the CA runs on this host or a private network (a rehearsal
	// against `detour sandbox`, a private CA): private and loopback
	// addresses in DNS are reachable for it.
	Local bool `json:"local"`
	// Offers are the challenge types it offers, when known (a directory
	// does not list them: they are known for well-known CAs, else learned
	// at an order); nil = unknown.
	Offers []string `json:"offers,omitempty"`
}

// knownOffers are the challenge types well-known CAs offer, by the host
// of their directory.
var knownOffers = map[string][]string{
	"acme-v02.api.letsencrypt.org":         {"http-01", "dns-01", "tls-alpn-01"},
	"acme-staging-v02.api.letsencrypt.org": {"http-01", "dns-01", "tls-alpn-01"},
	"dv.acme-v02.api.pki.goog":             {"http-01", "dns-01", "tls-alpn-01", "dns-account-01"},
	"dv.acme-v02.test-api.pki.goog":        {"http-01", "dns-01", "tls-alpn-01", "dns-account-01"},
	"acme.zerossl.com":                     {"http-01", "dns-01"},
	"api.buypass.com":                      {"http-01", "dns-01"},
	"api.test4.buypass.no":                 {"http-01", "dns-01"},
}

// CheckCA reads the CA's directory: reachable, profiles, ARI, CAA
// identities, EAB, and the challenge types when the CA is well known.
func CheckCA(ctx context.Context, d Directory) (CAFacts, check.Result) {
	f := CAFacts{Directory: d.DirectoryURL()}
	dir, err := d.Directory(ctx)
	if err != nil {
		r := check.New("ca.directory", "", check.Problem, "the CA's directory cannot be read")
		r.Add("%v", err)
		r.Fix = "check the CA's directory URL (default_ca / [ca.NAME] directory), DNS and outbound HTTPS from this host"
		return f, r
	}
	f.Reachable = true
	f.ARI = dir.RenewalInfo != ""
	if m := dir.Meta; m != nil {
		f.Profiles = slices.Sorted(maps.Keys(m.Profiles))
		f.CAAIdentities = m.CAAIdentities
		f.EAB = m.ExternalAccountRequired
	}
	if u, err := url.Parse(f.Directory); err == nil {
		f.Offers = knownOffers[strings.ToLower(u.Hostname())]
		if ip, err := netip.ParseAddr(u.Hostname()); err == nil {
			f.Local = ip.IsLoopback() || ip.IsPrivate()
		}
		f.Local = f.Local || strings.EqualFold(u.Hostname(), "localhost")
	}
	r := check.New("ca.directory", "", check.OK, "the CA's directory answers")
	r.Add("directory %s", f.Directory)
	r.Add("profiles: %s", orNone(f.Profiles))
	r.Add("renewal information (ARI): %s", yesNo(f.ARI))
	r.Add("CAA identities: %s", orNone(f.CAAIdentities))
	if f.EAB {
		r.Add("External Account Binding required: give eab_kid and eab_hmac_key in the CA's [ca.NAME] table")
	}
	if f.Local {
		r.Add("the CA is on this host or a private network: private and loopback addresses in DNS are reachable for it")
	}
	if f.Offers != nil {
		r.Add("challenge types (known for this CA): %s", strings.Join(f.Offers, ", "))
	} else {
		r.Add("challenge types: not listed in a directory; learned at the first order (detour doctor --staging orders at the staging CA)")
	}
	return f, r
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// issuerAllowed is CAFacts.CAAIdentities for messages.
func (f CAFacts) issuer() string {
	if len(f.CAAIdentities) == 0 {
		return "the CA"
	}
	return fmt.Sprintf("the CA (%s)", strings.Join(f.CAAIdentities, ", "))
}
