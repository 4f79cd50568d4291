package config

import (
	"github.com/detour-acme/detour/internal/suggest"

	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
)

// DefaultCA is the CA used when the file names none.
const DefaultCA = "letsencrypt"

// CA is a resolved ACME certificate authority.
type CA struct {
	// Name is the shortcut, the [ca.NAME] key, or the directory URL when
	// the CA was given as a URL.
	Name string
	// Directory is the ACME directory URL (RFC 8555 §7.1.1).
	Directory string
	// Staging is the directory used by --dry-run; "" when the CA has none.
	Staging string
	// RootBundle is the path of a PEM bundle trusted for this CA's API, or
	// "" for the system roots.
	RootBundle string
	// EABKeyID and EABHMACKey are the External Account Binding
	// credentials (RFC 8555 §7.3.4). EABHMACKey holds the base64url key
	// text, read from eab_hmac_key_file when that is used.
	EABKeyID, EABHMACKey string
	// Email is the account contact for this CA.
	Email string
	// RequiresEAB reports whether the CA refuses new accounts without
	// External Account Binding.
	RequiresEAB bool
}

// shortcut is a built-in CA.
type shortcut struct {
	directory, staging string
	requiresEAB        bool
}

const (
	letsEncryptProd    = "https://acme-v02.api.letsencrypt.org/directory"
	letsEncryptStaging = "https://acme-staging-v02.api.letsencrypt.org/directory"
	googleProd         = "https://dv.acme-v02.api.pki.goog/directory"
	googleStaging      = "https://dv.acme-v02.test-api.pki.goog/directory"
	buypassProd        = "https://api.buypass.com/acme/directory"
	buypassStaging     = "https://api.test4.buypass.no/acme/directory"
	zeroSSLProd        = "https://acme.zerossl.com/v2/DV90"
)

// shortcuts are the built-in CA names. A staging CA is its own staging.
var shortcuts = map[string]shortcut{
	"letsencrypt":         {directory: letsEncryptProd, staging: letsEncryptStaging},
	"letsencrypt-staging": {directory: letsEncryptStaging, staging: letsEncryptStaging},
	"zerossl":             {directory: zeroSSLProd, requiresEAB: true},
	"google":              {directory: googleProd, staging: googleStaging, requiresEAB: true},
	"google-staging":      {directory: googleStaging, staging: googleStaging, requiresEAB: true},
	"buypass":             {directory: buypassProd, staging: buypassStaging},
	"buypass-staging":     {directory: buypassStaging, staging: buypassStaging},
}

// Shortcuts returns the names of the built-in CAs, sorted.
func Shortcuts() []string {
	return slices.Sorted(maps.Keys(shortcuts))
}

// shortcutByDirectory finds the built-in CA serving directory, so a CA
// given by URL still knows its staging directory and EAB requirement.
func shortcutByDirectory(directory string) (shortcut, bool) {
	for _, n := range Shortcuts() {
		if s := shortcuts[n]; s.directory == directory {
			return s, true
		}
	}
	return shortcut{}, false
}

// isURL reports whether a CA reference is a directory URL rather than a name.
func isURL(s string) bool { return strings.Contains(s, "://") }

// ResolveCA resolves a CA reference: a [ca.NAME] table of cfg, a built-in
// shortcut, or a directory URL (anything containing "://"). The empty string
// means cfg's default CA. cfg may be nil, for references taken from flags
// without a config file; the result then carries no email.
func ResolveCA(cfg *Config, nameOrURL string) (CA, error) {
	email := ""
	var configured map[string]CA
	if cfg != nil {
		email, configured = cfg.Email, cfg.CAs
	}
	if nameOrURL == "" {
		nameOrURL = DefaultCA
		if cfg != nil && cfg.CA != "" {
			nameOrURL = cfg.CA
		}
	}
	if isURL(nameOrURL) {
		if err := checkDirectoryURL(nameOrURL); err != nil {
			return CA{}, err
		}
		ca := CA{Name: nameOrURL, Directory: nameOrURL, Email: email}
		if s, ok := shortcutByDirectory(nameOrURL); ok {
			ca.Staging, ca.RequiresEAB = s.staging, s.requiresEAB
		}
		return ca, nil
	}
	if ca, ok := configured[nameOrURL]; ok {
		return ca, nil
	}
	if s, ok := shortcuts[nameOrURL]; ok {
		return CA{Name: nameOrURL, Directory: s.directory, Staging: s.staging, Email: email, RequiresEAB: s.requiresEAB}, nil
	}
	names := slices.Sorted(maps.Keys(configured))
	all := append(Shortcuts(), names...)
	return CA{}, fmt.Errorf("unknown CA %q%s; use a shortcut (%s), a [ca.NAME] table (configured: %s) or an ACME directory URL (https://...)",
		nameOrURL, suggest.DidYouMean(nameOrURL, all), strings.Join(Shortcuts(), ", "), listOrNone(names))
}

// listOrNone joins names with commas, or returns "none".
func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// checkDirectoryURL requires an absolute https URL; plain http is allowed
// only for loopback hosts (a local test CA such as Pebble).
func checkDirectoryURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a valid URL (%v); write the CA's ACME directory URL, e.g. %q", s, unwrapURLErr(err), letsEncryptProd)
	}
	if u.Host == "" {
		return fmt.Errorf("%q has no host; write the CA's ACME directory URL, e.g. %q", s, letsEncryptProd)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		switch u.Hostname() {
		case "127.0.0.1", "localhost", "::1":
			return nil
		}
		return fmt.Errorf("%q uses http; an ACME directory must use https (http is allowed only for 127.0.0.1, ::1 and localhost)", s)
	}
	return fmt.Errorf("%q: scheme %q is not supported; an ACME directory URL starts with https://", s, u.Scheme)
}

// unwrapURLErr drops the url.Error wrapper, which repeats the URL.
func unwrapURLErr(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}
