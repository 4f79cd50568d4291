package config

import (
	"github.com/detour-acme/detour/internal/suggest"

	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Deploy is what happens to a certificate after each new version is live,
// besides its deploy_hook: extra files written elsewhere, and servers told
// to reload.
type Deploy struct {
	// HookTimeout bounds the deploy hook (deploy_hook_timeout); 0 means
	// the deploy package's default.
	HookTimeout time.Duration
	// Reloads are the servers to reload, in order (reload).
	Reloads []Reload
	// Outputs are extra files to write ([[certificate.output]]).
	Outputs []Output
}

// Reload is one entry of a certificate's reload list: a web server to tell
// about the new certificate.
type Reload struct {
	// Server is "nginx", "apache" or "haproxy".
	Server string
	// Unit, when set, is the systemd unit reloaded with systemctl.
	Unit string
	// PIDFile, when set, names the file holding the pid to signal instead
	// of using systemctl.
	PIDFile string
}

// Output is one [[certificate.output]] entry: a copy of the certificate in
// some format at another place, for a service that runs as another user or
// wants another layout.
type Output struct {
	// Path is the absolute file name to write.
	Path string
	// Format is one of OutputFormats.
	Format string
	// Owner and Group, when set, are the user and group (names or numeric
	// ids) that own the file.
	Owner, Group string
	// Mode is the file's permission bits; 0 means 0600 for formats that
	// hold the private key and 0644 for the others.
	Mode fs.FileMode
	// PasswordFile holds the PKCS#12 password (format pkcs12); without it
	// the password is empty.
	PasswordFile string
	// Line is where the entry starts in the file.
	Line int
}

// Output formats.
const (
	FormatCert      = "cert"
	FormatChain     = "chain"
	FormatFullchain = "fullchain"
	FormatPrivkey   = "privkey"
	// FormatCombined is the leaf, its chain and the private key in one PEM
	// file (HAProxy's crt).
	FormatCombined = "combined"
	// FormatPKCS12 is a PKCS#12 (.p12/.pfx) file holding the key, the leaf
	// and the chain (Java keystores, Windows).
	FormatPKCS12 = "pkcs12"
)

// FormatHoldsKey reports whether an output of format holds the private key.
func FormatHoldsKey(format string) bool {
	return format == FormatPrivkey || format == FormatCombined || format == FormatPKCS12
}

// OutputFormats lists the formats an output accepts.
var OutputFormats = []string{FormatCert, FormatChain, FormatFullchain, FormatPrivkey, FormatCombined, FormatPKCS12}

// ReloadServers lists the servers Detour knows how to reload.
var ReloadServers = []string{"nginx", "apache", "haproxy"}

// Keys of the deploy settings of a [[certificate]].
const (
	keyDeployHookTimeout = "deploy_hook_timeout"
	keyReload            = "reload"
	keyOutput            = "output"
	keyServer            = "server"
	keyUnit              = "unit"
	keyPIDFile           = "pid_file"
	keyFormat            = "format"
	keyOwner             = "owner"
	keyGroup             = "group"
	keyMode              = "mode"
	keyPasswordFile      = "password_file"
	keyOutPath           = "path"
)

// deployFields returns the decoders of the deploy keys of a [[certificate]].
func deployFields(d *Deploy) []field {
	return []field{
		duration(keyDeployHookTimeout, &d.HookTimeout),
		{keyReload, func(l *errList, path string, v any) { decodeReloads(l, d, path, v) }},
		{keyOutput, func(l *errList, path string, v any) { decodeOutputs(l, d, path, v) }},
	}
}

// duration decodes a Go duration string such as "90s" or "5m".
func duration(key string, dst *time.Duration) field {
	return field{key, func(l *errList, path string, v any) {
		s, ok := v.(string)
		if !ok {
			l.typeErr(path, "expected a duration string, got %s; write e.g. %s = \"2m\"", describe(v), key)
			return
		}
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			l.typeErr(path, "%q is not a positive duration; write e.g. %s = \"90s\" or \"5m\"", s, key)
			return
		}
		*dst = d
	}}
}

// integer decodes a TOML integer.
func integer(key string, dst *int) field {
	return field{key, func(l *errList, path string, v any) {
		n, ok := v.(int64)
		if !ok {
			l.typeErr(path, "expected an integer (unquoted), got %s; write e.g. %s = 3", describe(v), key)
			return
		}
		*dst = int(n)
	}}
}

// decodeReloads decodes reload = ["nginx", ...] or [[certificate.reload]]
// tables with server, unit and pid_file.
func decodeReloads(l *errList, d *Deploy, path string, v any) {
	if s, ok := v.(string); ok {
		l.typeErr(path, "expected a list, got a string; write reload = [%q]", s)
		return
	}
	list, ok := v.([]any)
	if !ok {
		l.typeErr(path, "expected a list of servers (e.g. reload = [\"nginx\"]) or [[%s]] tables, got %s", path, describe(v))
		return
	}
	for i, e := range list {
		key := elem(path, i)
		var r Reload
		switch e := e.(type) {
		case string:
			r.Server = e
		case map[string]any:
			has := l.table(key, e, []field{str(keyServer, &r.Server), str(keyUnit, &r.Unit), str(keyPIDFile, &r.PIDFile)})
			if !has[keyServer] {
				l.add(key, "server is missing; add server = \"nginx\" (one of %s)", suggest.QuoteList(ReloadServers))
				continue
			}
		default:
			l.typeErr(key, "expected a server name or a table, got %s", describe(e))
			continue
		}
		if !slices.Contains(ReloadServers, r.Server) {
			l.add(key, "unknown server %q%s; Detour reloads %s (for anything else use deploy_hook)", r.Server, suggest.DidYouMean(r.Server, ReloadServers), suggest.QuoteList(ReloadServers))
			continue
		}
		if r.PIDFile != "" && !filepath.IsAbs(r.PIDFile) {
			l.add(join(key, keyPIDFile), "%q must be an absolute path, e.g. pid_file = \"/run/nginx.pid\"", r.PIDFile)
		}
		if r.PIDFile != "" && r.Unit != "" {
			l.add(key, "set either unit (reload with systemctl) or pid_file (send a signal), not both")
		}
		d.Reloads = append(d.Reloads, r)
	}
}

// decodeOutputs decodes the [[certificate.output]] entries.
func decodeOutputs(l *errList, d *Deploy, path string, v any) {
	list, ok := v.([]any)
	if !ok {
		l.typeErr(path, "expected [[%s]] entries, got %s", path, describe(v))
		return
	}
	for i, e := range list {
		key := elem(path, i)
		m, ok := e.(map[string]any)
		if !ok {
			l.typeErr(key, "expected a table, got %s", describe(e))
			continue
		}
		o := Output{Line: l.idx.line(key)}
		var mode string
		has := l.table(key, m, []field{
			str(keyOutPath, &o.Path), str(keyFormat, &o.Format), str(keyOwner, &o.Owner), str(keyGroup, &o.Group),
			{keyMode, func(l *errList, path string, v any) { mode = decodeMode(l, path, v) }},
			str(keyPasswordFile, &o.PasswordFile),
		})
		k := func(sub string) string { return join(key, sub) }
		switch {
		case !has[keyOutPath]:
			l.add(key, "path is missing; add the file to write, e.g. path = \"/etc/haproxy/certs/example.pem\"")
		case !filepath.IsAbs(o.Path):
			l.add(k(keyOutPath), "%q must be an absolute path", o.Path)
		}
		switch {
		case !has[keyFormat]:
			l.add(key, "format is missing; add format = %q (one of %s)", FormatFullchain, suggest.QuoteList(OutputFormats))
		case !slices.Contains(OutputFormats, o.Format):
			l.add(k(keyFormat), "unknown format %q%s; use one of %s", o.Format, suggest.DidYouMean(o.Format, OutputFormats), suggest.QuoteList(OutputFormats))
		}
		if mode != "" {
			n, err := strconv.ParseUint(strings.TrimPrefix(mode, "0o"), 8, 32)
			if err != nil || n > 0o777 {
				l.add(k(keyMode), "%q is not a file mode; write the octal permission bits as a string, e.g. mode = \"0640\"", mode)
			} else {
				o.Mode = fs.FileMode(n)
			}
		}
		if o.PasswordFile != "" && o.Format != FormatPKCS12 {
			l.add(k(keyPasswordFile), "password_file applies to format %q only; remove it", FormatPKCS12)
		}
		d.Outputs = append(d.Outputs, o)
	}
}

// decodeMode accepts mode = "0640" or mode = 0o640.
func decodeMode(l *errList, path string, v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int64:
		return strconv.FormatInt(v, 8)
	}
	l.typeErr(path, "expected a mode such as \"0640\", got %s", describe(v))
	return ""
}

// Keys of the fallback settings of a [[certificate]].
const (
	keyFallbackCA    = "fallback_ca"
	keyAfterFailures = "after_failures"
)

// DefaultAfterFailures is how many consecutive failures a CA gets before a
// certificate with fallback_ca moves to the next CA.
const DefaultAfterFailures = 3

// validateCertExtras checks the fallback and deploy settings of one
// [[certificate]] and applies their defaults.
func validateCertExtras(l *errList, cfg *Config, t *certTable, c *Certificate) {
	k := func(sub string) string { return join(t.key, sub) }
	for i, ref := range c.FallbackCA {
		if ref == c.CA {
			l.add(elem(k(keyFallbackCA), i), "%q is already the certificate's CA; list other CAs to fall back to", ref)
			continue
		}
		checkCARef(l, cfg, elem(k(keyFallbackCA), i), ref)
	}
	switch {
	case t.has[keyAfterFailures] && c.AfterFailures < 1:
		l.add(k(keyAfterFailures), "must be 1 or more: the consecutive failures on one CA before the next fallback_ca is tried")
	case t.has[keyAfterFailures] && len(c.FallbackCA) == 0:
		l.add(k(keyAfterFailures), "after_failures needs fallback_ca; add fallback_ca = [\"zerossl\"] or remove after_failures")
	case !t.has[keyAfterFailures] && len(c.FallbackCA) > 0:
		c.AfterFailures = DefaultAfterFailures
	}
	seen := map[string]int{}
	for i, o := range c.Deploy.Outputs {
		if j, dup := seen[o.Path]; dup && o.Path != "" {
			l.add(elem(k(keyOutput), i), "%s is written by output %d already; give each output its own path", o.Path, j)
		}
		seen[o.Path] = i
		warnKeyMode(l, elem(k(keyOutput), i), o)
	}
	if t.has[keyDeployHookTimeout] && c.DeployHook == "" {
		l.add(k(keyDeployHookTimeout), "deploy_hook_timeout needs deploy_hook; add the command or remove the timeout")
	}
}

// warnKeyMode warns about an output at key whose mode lets others than its
// owner at the private key: every user (always a mistake), or a group the
// file does not name (root's, usually) or that may change it. A group that
// is named and may only read is what group is for (e.g. haproxy's).
func warnKeyMode(l *errList, key string, o Output) {
	if !FormatHoldsKey(o.Format) || o.Mode == 0 {
		return
	}
	at := join(key, keyMode)
	mode := fmt.Sprintf("mode %q", fmt.Sprintf("%04o", uint32(o.Mode)))
	if verb := access(o.Mode & 0o7); verb != "" {
		l.warn(at, "%s lets every user on this host %s the private key (format %s); use mode = \"0600\", "+
			"or \"0640\" with group = \"NAME\" for a service that reads it through its group", mode, verb, o.Format)
		return
	}
	verb := access(o.Mode >> 3 & 0o7)
	switch {
	case verb == "":
	case o.Group == "":
		l.warn(at, "%s lets the file's group %s the private key (format %s), and group is not set: the file gets the group "+
			"Detour runs as (usually root), or the directory's if it is set-group-ID; set group = \"NAME\" to the group that "+
			"should read it, or use mode = \"0600\"", mode, verb, o.Format)
	case o.Mode&0o020 != 0:
		l.warn(at, "%s lets group %q %s the private key (format %s): any member could replace it; use mode = \"0640\"",
			mode, o.Group, verb, o.Format)
	}
}

// access names what permission bits (one class, 0-7) allow on a file's
// contents; execute alone allows nothing.
func access(bits fs.FileMode) string {
	switch {
	case bits&0o6 == 0o6:
		return "read and change"
	case bits&0o4 != 0:
		return "read"
	case bits&0o2 != 0:
		return "change"
	}
	return ""
}
