package config

import (
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/kinds"
	"github.com/detour-acme/detour/internal/solve/standalone"

	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/store"
)

// validName is the syntax of certificate, CA and path names: they become
// directory names and command-line arguments.
var validName = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*$`)

// nameRule explains validName to the user.
const nameRule = "use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit"

// validate checks the defaulted file and converts it into a Config. Problems
// go to l; the returned Config is only meaningful when l stays empty.
func validate(l *errList, f *file, filename string) *Config {
	cfg := &Config{
		File:     filename,
		StateDir: f.StateDir,
		Email:    f.Email,
		CA:       f.CA,
		AgreeTOS: f.AgreeTOS,
		CAs:      map[string]CA{},
		Paths:    map[string]Path{},
		Router:   f.Router,
		Agent:    f.Agent,
		Store:    f.Store,
	}
	validateRouter(l, f.Router)
	validateStore(l, &cfg.Store, f.storeHas)
	validateAgent(l, &cfg.Agent, f.agentDays)
	if !filepath.IsAbs(f.StateDir) {
		l.add(keyStateDir, "%q is a relative path; use an absolute directory, e.g. state_dir = %q", f.StateDir, DefaultStateDir)
	}
	if err := checkEmail(f.Email); err != nil {
		l.add(keyEmail, "%v", err)
	}
	if kt, err := acme.ParseKeyType(f.KeyType); err != nil {
		l.add(keyKeyType, "%v", err)
	} else {
		cfg.KeyType = kt
	}
	for _, name := range slices.Sorted(maps.Keys(f.CAs)) {
		cfg.CAs[name] = validateCA(l, f.CAs[name])
	}
	broken := map[string]bool{} // paths with a kind or challenge error
	for _, name := range slices.Sorted(maps.Keys(f.Paths)) {
		t := f.Paths[name]
		broken[name] = !validatePath(l, t)
		cfg.Paths[name] = t.path
	}
	if f.caKey != "" {
		checkCARef(l, cfg, f.caKey, f.CA)
	}
	seen := map[string]*certTable{}
	for _, t := range f.Certs {
		cfg.Certificates = append(cfg.Certificates, validateCert(l, cfg, t, seen, broken))
	}
	return cfg
}

// checkEmail accepts "" or a bare address such as "ops@example.com".
func checkEmail(s string) error {
	if s == "" {
		return nil
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return fmt.Errorf("%q is not an email address; write a bare address, e.g. email = \"ops@example.com\"", s)
	}
	return nil
}

// checkCARef resolves a CA reference written at key and reports an unknown
// CA, or a built-in that needs External Account Binding the file does not
// provide.
func checkCARef(l *errList, cfg *Config, key, ref string) {
	ca, err := ResolveCA(cfg, ref)
	if err != nil {
		l.add(key, "%v", err)
		return
	}
	if _, configured := cfg.CAs[ref]; configured || !ca.RequiresEAB {
		return
	}
	if isURL(ref) {
		l.add(key, "%s requires External Account Binding; add a [ca.NAME] table with directory = %q, eab_kid and eab_hmac_key, and use its NAME here", ref, ref)
		return
	}
	l.add(key, "%s requires External Account Binding; add a [ca.%s] table with eab_kid and eab_hmac_key from your account at the CA", ref, ref)
}

// validateCA checks one [ca.NAME] table and reads its key file.
func validateCA(l *errList, t *caTable) CA {
	k := func(sub string) string { return join(t.key, sub) }
	ca := CA{
		Name: t.name, Directory: t.Directory, Staging: t.Staging, RootBundle: t.RootBundle,
		EABKeyID: t.EABKeyID, EABHMACKey: strings.TrimSpace(t.EABHMACKey), Email: t.Email,
	}
	if !validName.MatchString(t.name) {
		l.add(t.key, "%q is not a valid CA name; %s", t.name, nameRule)
	}
	if t.Directory == "" {
		l.add(t.key, "directory is missing; add directory = \"https://...\" with the CA's ACME directory URL")
	} else if err := checkDirectoryURL(t.Directory); err != nil {
		l.add(k(keyDirectory), "%v", err)
	}
	if t.Staging != "" {
		if err := checkDirectoryURL(t.Staging); err != nil {
			l.add(k(keyStaging), "%v", err)
		}
	}
	if t.RootBundle != "" {
		if err := checkRootBundle(t.RootBundle); err != nil {
			l.add(k(keyRootBundle), "%v", err)
		}
	}
	if err := checkEmail(t.Email); err != nil && t.has[keyEmail] {
		l.add(k(keyEmail), "%v", err)
	}

	keyAt := keyEABHMACKey
	if t.EABHMACKeyFile != "" {
		keyAt = keyEABHMACKeyFile
		if t.EABHMACKey != "" {
			l.add(k(keyEABHMACKeyFile), "set either eab_hmac_key or eab_hmac_key_file, not both; remove one of them")
		} else if b, err := os.ReadFile(t.EABHMACKeyFile); err != nil {
			l.add(k(keyEABHMACKeyFile), "reading the EAB HMAC key: %v; check the path and its permissions", err)
			l.bad[k(keyEABHMACKeyFile)] = true
		} else {
			ca.EABHMACKey = strings.TrimSpace(string(b))
			if ca.EABHMACKey == "" {
				l.add(k(keyEABHMACKeyFile), "%s is empty; put the EAB HMAC key from your account at the CA in it", t.EABHMACKeyFile)
				l.bad[k(keyEABHMACKeyFile)] = true
			}
		}
	}
	hasKey := t.EABHMACKey != "" || t.EABHMACKeyFile != ""
	switch {
	case ca.EABKeyID != "" && !hasKey:
		l.add(k(keyEABKID), "eab_kid is set but eab_hmac_key is not; External Account Binding needs both: add eab_hmac_key (or eab_hmac_key_file), or remove eab_kid")
	case ca.EABKeyID == "" && hasKey:
		l.add(k(keyAt), "%s is set but eab_kid is not; External Account Binding needs both: add eab_kid, or remove %s", keyAt, keyAt)
	}
	if ca.EABHMACKey != "" {
		if err := checkHMACKey(ca.EABHMACKey); err != nil {
			where := "eab_hmac_key"
			if keyAt == keyEABHMACKeyFile {
				where = "the key in " + t.EABHMACKeyFile
			}
			l.add(k(keyAt), "%s is not valid base64url (%v); copy the HMAC key exactly as the CA shows it", where, err)
		}
	}

	if s, ok := shortcutByDirectory(ca.Directory); ok && s.requiresEAB {
		ca.RequiresEAB = true
		if ca.EABKeyID == "" && !hasKey {
			l.add(t.key, "this CA requires External Account Binding; add eab_kid and eab_hmac_key from your account at the CA")
		}
	}
	return ca
}

// checkRootBundle requires a readable PEM file with at least one
// certificate, all of which parse.
func checkRootBundle(name string) error {
	data, err := os.ReadFile(name)
	if err != nil {
		return fmt.Errorf("reading the root bundle: %w; point root_bundle at a PEM file of CA certificates", err)
	}
	n := 0
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(b.Bytes); err != nil {
			return fmt.Errorf("%s: certificate %d does not parse (%v); replace it with the CA's PEM certificate", name, n+1, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("%s holds no PEM certificate (no \"-----BEGIN CERTIFICATE-----\" block); point root_bundle at a PEM file of CA certificates", name)
	}
	return nil
}

// checkHMACKey requires base64url text (padding optional) of a non-empty
// key, as RFC 8555 §7.3.4 providers hand it out.
func checkHMACKey(s string) error {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		var ce base64.CorruptInputError
		if errors.As(err, &ce) {
			return fmt.Errorf("bad character or length at byte %d", int64(ce))
		}
		return err
	}
	if len(b) == 0 {
		return errors.New("it decodes to nothing")
	}
	return nil
}

// quoted quotes each string.
func quoted(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// tomlList renders names as a TOML array of strings.
func tomlList(names []string) string {
	return "[" + strings.Join(quoted(names), ", ") + "]"
}

// validateCert checks one [[certificate]] entry.
func validateCert(l *errList, cfg *Config, t *certTable, seen map[string]*certTable, broken map[string]bool) Certificate {
	c := t.cert
	k := func(sub string) string { return join(t.key, sub) }

	// Domains: each entry on its own line when the list spans several.
	domainsOK := false
	switch {
	case !t.has[keyDomains]:
		l.add(t.key, "domains is missing; add the names to certify, e.g. domains = [\"example.com\"]")
	case len(c.Domains) == 0:
		l.add(k(keyDomains), "the list is empty; add the names to certify, e.g. domains = [\"example.com\"]")
	default:
		domainsOK = true
		for i, d := range c.Domains {
			if _, err := ident.Parse(d); err != nil {
				l.addAt(k(keyDomains), elem(k(keyDomains), i), "%v", err)
				domainsOK = false
			}
		}
		if domainsOK {
			ids, err := ident.ParseAll(c.Domains)
			if err != nil {
				l.add(k(keyDomains), "%v; remove the duplicate", err)
				domainsOK = false
			}
			c.Identifiers = ids
		}
	}

	// Name: explicit or from the first domain; unique.
	nameKey := k(keyName)
	if !t.has[keyName] {
		nameKey = t.key
	}
	switch {
	case t.has[keyName] && !validName.MatchString(c.Name):
		l.add(nameKey, "%q is not a valid certificate name; %s", c.Name, nameRule)
	case t.has[keyName] && len(c.Name) > store.MaxNameLen:
		l.add(nameKey, "%q is %d characters long; a certificate name may have at most %d", c.Name, len(c.Name), store.MaxNameLen)
	case c.Name == "":
		// No usable domain to name it after; reported above.
	case seen[c.Name] != nil:
		prev := seen[c.Name]
		what := fmt.Sprintf("%q", c.Name)
		if !t.has[keyName] {
			what = fmt.Sprintf("the default name %q (from the first domain)", c.Name)
		}
		l.add(nameKey, "%s is already used by %s (line %d); give one of them a distinct name = \"...\"", what, prev.key, prev.cert.Line)
	default:
		seen[c.Name] = t
	}

	if t.has[keyCA] {
		checkCARef(l, cfg, k(keyCA), c.CA)
	}
	if kt, err := acme.ParseKeyType(c.KeyType); err != nil {
		if t.has[keyKeyType] {
			l.add(k(keyKeyType), "%v", err)
		}
	} else {
		c.KeyType = string(kt)
	}

	validateCertExtras(l, cfg, t, &c)

	// Paths: all known, then able to validate every identifier.
	if t.has[keyPaths] && len(c.Paths) == 0 {
		l.add(k(keyPaths), "the list is empty; list path names in order of preference, or remove paths to use %s", tomlList(DefaultPaths))
		return c
	}
	paths := make([]Path, 0, len(c.Paths))
	for i, name := range c.Paths {
		p, err := cfg.Path(name)
		if err != nil {
			l.add(elem(k(keyPaths), i), "%v", err)
			continue
		}
		if !broken[name] {
			paths = append(paths, p)
		}
	}
	if len(paths) == len(c.Paths) && domainsOK {
		checkCoverage(l, cfg, k(keyDomains), c, paths)
	}
	return c
}

// checkCoverage reports identifiers that none of the paths can validate: a
// wildcard needs a DNS challenge (RFC 8555 §7.1.3), an IP address cannot
// use one (RFC 8738 §7); solve.Applicable is the rule.
func checkCoverage(l *errList, cfg *Config, key string, c Certificate, paths []Path) {
	var challenges []string
	for _, p := range paths {
		if ch := p.Challenge(); !slices.Contains(challenges, ch) {
			challenges = append(challenges, ch)
		}
	}
	for i, id := range c.Identifiers {
		if slices.ContainsFunc(challenges, func(ch string) bool { return solve.Applicable(ch, id) }) {
			continue
		}
		switch {
		case id.IsWildcard():
			l.addAt(key, elem(key, i), "%q is a wildcard, which only dns-01 can validate, but paths %s are all %s; add a dns-01 path (e.g. paths = %s)",
				c.Domains[i], tomlList(c.Paths), strings.Join(challenges, " or "), tomlList(append(slices.Clone(c.Paths), pathFor(cfg, solve.DNS01))))
			return
		case id.Type == ident.TypeIP:
			l.addAt(key, elem(key, i), "%q is an IP address, which dns-01 cannot validate, but paths %s are all dns-01; add an http-01 or tls-alpn-01 path (e.g. paths = %s)",
				c.Domains[i], tomlList(c.Paths), tomlList(append(slices.Clone(c.Paths), pathFor(cfg, solve.HTTP01))))
			return
		}
	}
}

// pathFor suggests a path answering challenge: the first configured one by
// name, else a built-in.
func pathFor(cfg *Config, challenge string) string {
	for _, n := range slices.Sorted(maps.Keys(cfg.Paths)) {
		if cfg.Paths[n].Challenge() == challenge {
			return n
		}
	}
	for _, b := range kinds.Builtins() {
		if b.Settings[solve.KeyChallenge] == challenge {
			return b.Name
		}
	}
	return standalone.BuiltinHTTP
}
