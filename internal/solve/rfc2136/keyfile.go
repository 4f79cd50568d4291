package rfc2136

import (
	"fmt"
	"os"
	"regexp"
	"strings"
)

// Key is a TSIG key as a BIND key statement gives it.
type Key struct {
	Name, Algorithm, Secret string
}

// keyStmt matches one BIND key statement, as tsig-keygen and
// ddns-confgen print it: key "name" { algorithm hmac-sha256; secret "..."; };
var keyStmt = regexp.MustCompile(`(?s)key\s+"?([^"\s{]+)"?\s*\{(.*?)\}\s*;`)

var (
	keyAlgorithm = regexp.MustCompile(`algorithm\s+"?([A-Za-z0-9.-]+)"?\s*;`)
	keySecret    = regexp.MustCompile(`secret\s+"([A-Za-z0-9+/=]+)"\s*;`)
	blockComment = regexp.MustCompile(`(?s)/\*.*?\*/`)
	lineComment  = regexp.MustCompile(`(?m)(#|//).*$`)
)

// ReadKeyFile reads the TSIG keys of a BIND key file (the format
// tsig-keygen, ddns-confgen and rndc-confgen print). A file with no key
// statement is an error naming the file and the expected form.
func ReadKeyFile(path string) ([]Key, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the TSIG key file: %w", err)
	}
	return ParseKeyFile(path, string(raw))
}

// ParseKeyFile is ReadKeyFile on the file's text.
func ParseKeyFile(path, text string) ([]Key, error) {
	var keys []Key
	text = lineComment.ReplaceAllString(blockComment.ReplaceAllString(text, ""), "")
	for _, m := range keyStmt.FindAllStringSubmatch(text, -1) {
		k := Key{Name: strings.TrimSuffix(m[1], ".")}
		if a := keyAlgorithm.FindStringSubmatch(m[2]); a != nil {
			k.Algorithm = strings.ToLower(a[1])
		}
		s := keySecret.FindStringSubmatch(m[2])
		if s == nil {
			return nil, fmt.Errorf("%s: key %q has no secret \"...\"; statement", path, k.Name)
		}
		k.Secret = s[1]
		if k.Algorithm == "" {
			k.Algorithm = "hmac-md5" // BIND's default, which Detour refuses, saying so
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s holds no TSIG key: expected a BIND key statement such as key \"detour\" { algorithm hmac-sha256; secret \"...\"; }; (tsig-keygen prints one)", path)
	}
	return keys, nil
}

// SecretFromFile returns the TSIG secret a tsig_secret_file holds: the base64
// secret alone, or a BIND key file (tsig-keygen's output), from which the
// key called name (or the only key) is taken.
func SecretFromFile(file, text, name string) (string, error) {
	if !strings.Contains(text, "{") {
		return strings.TrimSpace(text), nil
	}
	keys, err := ParseKeyFile(file, text)
	if err != nil {
		return "", err
	}
	for _, k := range keys {
		if strings.EqualFold(k.Name, strings.TrimSuffix(name, ".")) {
			return k.Secret, nil
		}
	}
	if len(keys) == 1 && name == "" {
		return keys[0].Secret, nil
	}
	var names []string
	for _, k := range keys {
		names = append(names, k.Name)
	}
	return "", fmt.Errorf("tsig_secret_file %s holds the keys %s, not tsig_key %q: set tsig_key to the key's name", file, strings.Join(names, ", "), name)
}
