package doctor

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/detour-acme/detour/internal/doctor/dnscheck"
)

// keyStmt matches one BIND key statement, as tsig-keygen and
// ddns-confgen print it: key "name" { algorithm hmac-sha256; secret "..."; };
var keyStmt = regexp.MustCompile(`(?s)key\s+"?([^"\s{]+)"?\s*\{(.*?)\}\s*;`)

var (
	keyAlgorithm = regexp.MustCompile(`algorithm\s+"?([A-Za-z0-9.-]+)"?\s*;`)
	keySecret    = regexp.MustCompile(`secret\s+"([A-Za-z0-9+/=]+)"\s*;`)
)

// ReadKeyFile reads the TSIG keys of a BIND key file (the format
// tsig-keygen, ddns-confgen and rndc-confgen print). A file with no key
// statement is an error naming the file and the expected form.
func ReadKeyFile(path string) ([]dnscheck.TSIGKey, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the TSIG key file: %w", err)
	}
	return parseKeyFile(path, string(raw))
}

func parseKeyFile(path, text string) ([]dnscheck.TSIGKey, error) {
	var keys []dnscheck.TSIGKey
	for _, m := range keyStmt.FindAllStringSubmatch(stripComments(text), -1) {
		k := dnscheck.TSIGKey{Name: strings.TrimSuffix(m[1], "."), Source: path}
		if a := keyAlgorithm.FindStringSubmatch(m[2]); a != nil {
			k.Algorithm = strings.ToLower(a[1])
		}
		s := keySecret.FindStringSubmatch(m[2])
		if s == nil {
			return nil, fmt.Errorf("%s: key %q has no secret \"...\"; statement", path, k.Name)
		}
		k.Secret = s[1]
		if k.Algorithm == "" {
			k.Algorithm = "hmac-md5" // BIND's default, which Detour refuses; the check says so
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s holds no TSIG key: expected a BIND key statement such as key \"detour\" { algorithm hmac-sha256; secret \"...\"; }; (tsig-keygen prints one)", path)
	}
	return keys, nil
}

// stripComments drops BIND comments (#, //, /* */).
func stripComments(s string) string {
	s = regexp.MustCompile(`(?s)/\*.*?\*/`).ReplaceAllString(s, "")
	return regexp.MustCompile(`(?m)(#|//).*$`).ReplaceAllString(s, "")
}
