package importer

import (
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/dnsprovider"
	"github.com/detour-acme/detour/internal/solve/rfc2136"
	"github.com/detour-acme/detour/internal/solve/script"
	"github.com/detour-acme/detour/internal/solve/standalone"
	"github.com/detour-acme/detour/internal/solve/webroot"
	"github.com/detour-acme/detour/internal/store"
)

// certbotQuiet are the [renewalparams] keys the mapping reads itself, or
// that only concern certbot's own running (its directories, its logging).
var certbotQuiet = []string{
	"account", "server", "authenticator", "installer", "webroot_path", "http01_port", "http01_address",
	"pre_hook", "post_hook", "renew_hook", "deploy_hook", "manual_auth_hook", "manual_cleanup_hook", "pref_challs",
	"key_type", "rsa_key_size", "elliptic_curve", "preferred_chain", "preferred_profile", "required_profile",
	"dns_rfc2136_credentials", "dns_rfc2136_propagation_seconds",
	"config_dir", "work_dir", "logs_dir", "manual_public_ip_logging_ok", "user_agent", "issuance_timeout",
	"strict_permissions", "no_random_sleep_on_renew", "max_log_backups",
}

// certbotTop are the top-level keys of a renewal configuration.
var certbotTop = []string{"version", "archive_dir", "cert", "privkey", "chain", "fullchain"}

// certbotNotes explains the [renewalparams] keys Detour has no equivalent for.
var certbotNotes = map[string][2]string{
	"reuse_key":                 {"Detour makes a new key at every renewal", ""},
	"must_staple":               {"Detour does not ask for OCSP Must-Staple", ""},
	"allow_subset_of_names":     {"Detour renews all the names or none", "remove the names that no longer validate: add a [[certificate]] with the names to keep, or `detour issue` them anew"},
	"no_verify_ssl":             {"Detour always verifies the CA's certificate", "give the CA's root with --ca-roots"},
	"tls_sni_01_port":           {"tls-sni-01 no longer exists", ""},
	"renew_before_expiry":       {"Detour renews in the CA's ARI window, else when a third of the lifetime is left", ""},
	"eab_kid":                   {"the account exists already; binding is not needed again", ""},
	"eab_hmac_key":              {"the account exists already; binding is not needed again", ""},
	"http01_use_tls":            {"not needed", ""},
	"nginx_server_root":         {"Detour does not edit nginx's configuration", ""},
	"nginx_ctl":                 {"Detour does not edit nginx's configuration", ""},
	"apache_ctl":                {"Detour does not edit Apache's configuration", ""},
	"apache_server_root":        {"Detour does not edit Apache's configuration", ""},
	"apache_vhost_root":         {"Detour does not edit Apache's configuration", ""},
	"apache_challenge_location": {"Detour does not edit Apache's configuration", ""},
}

// Path names the import gives; a [path.NAME] table of the configuration
// must not use them (see checkPathNames).
const (
	certbotWebrootPath    = "certbot-webroot"
	certbotStandalonePath = "certbot-standalone"
	certbotRFC2136Path    = "certbot-rfc2136"
	// certbotManualPath is followed by the challenge: certbot-manual-http,
	// certbot-manual-dns.
	certbotManualPath = "certbot-manual"
)

// certbot maps a certbot lineage's [renewalparams].
func (m *mapper) certbot(c *Certificate, cp *CertPlan) sourceMapping {
	var out sourceMapping
	get := func(k string) (Setting, bool) { return c.Setting(sectionParams, k) }
	val := func(k string) string { s, _ := get(k); return s.Value }
	note := func(s Setting, reason, suggestion string) {
		cp.Notes = append(cp.Notes, Note{Setting: s.Key + " = " + s.Value, Where: s.Where(), Reason: reason, Suggestion: suggestion})
	}
	for _, s := range c.Settings {
		switch {
		case s.Section == "" && !slices.Contains(certbotTop, s.Key):
			if n, ok := certbotNotes[s.Key]; ok {
				note(s, n[0], n[1])
			}
		case s.Section == sectionParams && !slices.Contains(certbotQuiet, s.Key):
			if n, ok := certbotNotes[s.Key]; ok {
				note(s, n[0], n[1])
			} else if !strings.HasPrefix(s.Key, "dns_") { // a DNS plugin's own settings: the plugin is reported
				note(s, "Detour has no equivalent of this certbot setting; it is not carried over", "")
			}
		}
	}

	// Key type: key_type with rsa_key_size or elliptic_curve.
	switch kt := strings.ToLower(val("key_type")); kt {
	case "rsa":
		out.keyType = "rsa" + cmpStr(val("rsa_key_size"), "2048")
	case "ecdsa":
		out.keyType = cmpStr(val("elliptic_curve"), "secp256r1")
	default:
		out.keyType = kt
	}
	out.preferredChain = val("preferred_chain")
	out.profile = cmpStr(val("required_profile"), val("preferred_profile"))

	// Hooks. certbot's deploy hook (renew_hook in the file) is Detour's.
	hook, _ := get("renew_hook")
	if h, ok := get("deploy_hook"); ok && hook.Value == "" {
		hook = h
	}
	out.deployHook = hook.Value
	if s, ok := get("pre_hook"); ok && s.Value != "" {
		note(s, "Detour runs no command before a renewal",
			"if it stops a server so that certbot could bind port 80, keep the server running and use a webroot or side-port path (detour paths)")
	}
	if s, ok := get("post_hook"); ok && s.Value != "" {
		if out.deployHook == "" {
			out.deployHook = s.Value
			note(s, "carried over as the deploy hook: Detour runs it after each new certificate, where certbot ran it after every renewal attempt", "")
		} else {
			note(s, "Detour runs one deploy hook; the deploy hook is carried over, this one is not",
				fmt.Sprintf("join both into one command for deploy_hook, in a [[certificate]] named %q", cp.Name))
		}
	}

	// Installer: after a new certificate, reload the server.
	if s, ok := get("installer"); ok && s.Value != "" && s.Value != "none" && s.Value != "null" {
		unit := map[string]string{"nginx": "nginx", "apache": "apache2"}[s.Value]
		switch {
		case unit == "":
			note(s, "Detour installs no certificate into a server", "point the server at Detour's live/ files and reload it from a deploy hook")
		case out.deployHook == "":
			out.deployHook = "systemctl reload " + unit
			note(s, fmt.Sprintf("carried over as the deploy hook %q; Detour does not edit %s's configuration", out.deployHook, s.Value),
				fmt.Sprintf("the configuration still names certbot's live/ files: point it at %s/live/%s/, or link certbot's live/%s to it (README: Switching from certbot or lego)",
					m.opts.StateDir, cp.Name, c.Name))
		default:
			note(s, fmt.Sprintf("Detour does not edit %s's configuration; the deploy hook is expected to reload it", s.Value),
				fmt.Sprintf("point %s at %s/live/%s/ (README: Switching from certbot or lego)", s.Value, m.opts.StateDir, cp.Name))
		}
	}

	auth, ok := get("authenticator")
	if !ok || auth.Value == "" {
		cp.Unmapped = &Unmapped{Reason: fmt.Sprintf("%s names no authenticator", c.File), Suggestion: configSuggestion(cp.Name)}
		return out
	}
	from := fmt.Sprintf("authenticator = %s (%s)", auth.Value, auth.Where())
	switch a := auth.Value; {
	case a == "webroot":
		m.certbotWebroot(c, cp, from)
	case a == "standalone":
		port := cmpStr(val("http01_port"), "80")
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			s, _ := get("http01_port")
			cp.Unmapped = &Unmapped{Reason: fmt.Sprintf("http01_port = %s (%s) is not a port", port, s.Where()), Suggestion: configSuggestion(cp.Name)}
			return out
		}
		cp.Paths = append(cp.Paths, MappedPath{From: from, Ref: store.PathRef{Name: certbotStandalonePath, Kind: standalone.Kind,
			Settings: map[string]string{solve.KeyChallenge: solve.HTTP01, "listen": net.JoinHostPort(val("http01_address"), port)}}})
	case a == "dns-rfc2136":
		m.certbotRFC2136(c, cp, from)
	case a == "nginx" || a == "apache":
		cp.Unmapped = &Unmapped{
			Reason: fmt.Sprintf("%s: certbot's %s authenticator edits %s's configuration for each validation; Detour leaves server configurations alone", from, a, a),
			Suggestion: fmt.Sprintf("keep %[1]s on port 80 and use a side-port path: add the forward `detour snippet http --server %[2]s` prints once, "+
				"or a webroot path with %[1]s's document root; then add a [[certificate]] named %[3]q with those paths and reload = [\"%[4]s\"] to the configuration and import again",
				a, a, cp.Name, a)}
	case a == "manual":
		m.certbotManual(c, cp, from)
	case strings.HasPrefix(a, "dns-"):
		provider := strings.TrimPrefix(a, "dns-")
		sug := fmt.Sprintf("an rfc2136 or acme-dns path (detour paths rfc2136, detour paths acme-dns); add a [[certificate]] named %q with it to the configuration and import again", cp.Name)
		if slices.Contains(dnsprovider.Names(), provider) {
			sug = fmt.Sprintf("a dns-provider path with provider = %q and a credentials file (detour paths dns-provider names its keys); add a [[certificate]] named %q with it to the configuration and import again", provider, cp.Name)
		}
		cp.Unmapped = &Unmapped{Reason: fmt.Sprintf("%s: the import carries over certbot's dns-rfc2136 plugin only; this plugin's credentials are not converted", from), Suggestion: sug}
	default:
		cp.Unmapped = &Unmapped{Reason: fmt.Sprintf("%s: an authenticator the import does not know", from), Suggestion: configSuggestion(cp.Name)}
	}
	return out
}

// configSuggestion is the general way out: describe the certificate in
// the configuration.
func configSuggestion(name string) string {
	return fmt.Sprintf("choose a path for it (detour paths lists them), add a [[certificate]] named %q with it to the configuration and import again", name)
}

// certbotWebroot maps the webroot authenticator: one webroot path per
// document root, in the order the names use them (webroot_map, which
// certbot fills from webroot_path); for each name Detour uses the first
// whose check answers.
func (m *mapper) certbotWebroot(c *Certificate, cp *CertPlan, from string) {
	var roots []string
	byName := map[string]string{}
	for _, s := range c.Settings {
		if s.Section == sectionWebrootMap {
			byName[strings.ToLower(s.Key)] = s.Value
		}
	}
	for _, id := range cp.Identifiers {
		if r := byName[id]; r != "" && !slices.Contains(roots, r) {
			roots = append(roots, r)
		}
	}
	if len(roots) == 0 {
		if s, ok := c.Setting(sectionParams, "webroot_path"); ok {
			roots = s.Values()
		}
	}
	if len(roots) == 0 {
		cp.Unmapped = &Unmapped{Reason: from + " without webroot_path or [[webroot_map]]", Suggestion: configSuggestion(cp.Name)}
		return
	}
	for i, r := range roots {
		if !filepath.IsAbs(r) {
			cp.Unmapped = &Unmapped{Reason: fmt.Sprintf("%s: the document root %q is not an absolute path", from, r), Suggestion: configSuggestion(cp.Name)}
			cp.Paths = nil
			return
		}
		name := certbotWebrootPath
		if i > 0 {
			name += "-" + strconv.Itoa(i+1)
		}
		cp.Paths = append(cp.Paths, MappedPath{From: from + ", webroot " + r,
			Ref: store.PathRef{Name: name, Kind: webroot.Kind, Settings: map[string]string{solve.KeyChallenge: solve.HTTP01, "root": r}}})
	}
}

// certbotManual maps the manual authenticator with a manual_auth_hook to
// exec paths that run the same hooks, with the variables certbot gave
// them. certbot's manual plugin answers http-01 and dns-01 and takes, for
// each name, the first of pref_challs (default http-01, dns-01) that can
// validate it; the paths are those challenge types, in that order, that
// some name would take, so that a wildcard takes dns-01 as it did. A hook
// is carried over only when it is the absolute path of an executable
// file: certbot ran it through a shell, an exec path runs it without one.
func (m *mapper) certbotManual(c *Certificate, cp *CertPlan, from string) {
	auth, _ := c.Setting(sectionParams, "manual_auth_hook")
	cleanup, _ := c.Setting(sectionParams, "manual_cleanup_hook")
	challs, _ := c.Setting(sectionParams, "pref_challs")
	if auth.Value == "" {
		cp.Unmapped = &Unmapped{Reason: from + " without manual_auth_hook: certbot asked you to publish each answer by hand; Detour renews unattended",
			Suggestion: fmt.Sprintf("put the steps in an executable script and use an exec path with auth = that script (detour paths exec), "+
				"or an rfc2136, dns-provider or acme-dns path; add a [[certificate]] named %q with it to the configuration and import again", cp.Name)}
		return
	}
	settings := map[string]string{}
	for _, h := range []struct {
		s   Setting
		key string
	}{{auth, "auth"}, {cleanup, "cleanup"}} {
		if h.s.Value == "" {
			continue
		}
		if reason, fix := certbotHookProblem(h.s.Value, h.key, cp.Name); reason != "" {
			cp.Unmapped = &Unmapped{Reason: fmt.Sprintf("%s: %s = %s (%s): %s", from, h.s.Key, h.s.Value, h.s.Where(), reason), Suggestion: fix}
			return
		}
		settings[h.key] = h.s.Value
	}
	pref := []string{solve.HTTP01, solve.DNS01}
	if vs := challs.Values(); len(vs) > 0 {
		pref = nil
		for _, v := range vs {
			pref = append(pref, certbotChallenge(v))
		}
	}
	// Per name, certbot took the first of pref that its manual plugin
	// answers and that can validate the name; the paths keep pref's order.
	ids, _ := ident.ParseAll(cp.Identifiers)
	var types []string
	for _, id := range ids {
		for _, typ := range pref {
			if slices.Contains(script.Spec.Challenges, typ) && solve.Applicable(typ, id) {
				if !slices.Contains(types, typ) {
					types = append(types, typ)
				}
				break
			}
		}
	}
	slices.SortStableFunc(types, func(a, b string) int { return slices.Index(pref, a) - slices.Index(pref, b) })
	if len(types) == 0 {
		where := "certbot's default"
		if len(challs.Values()) > 0 {
			where = fmt.Sprintf("pref_challs = %s (%s)", challs.Value, challs.Where())
		}
		cp.Unmapped = &Unmapped{Reason: fmt.Sprintf("%s: %s names no challenge an exec path answers for %s (it answers http-01 and dns-01)", from, where, strings.Join(cp.Identifiers, ", ")),
			Suggestion: configSuggestion(cp.Name)}
		return
	}
	for _, typ := range types {
		ps := maps.Clone(settings)
		ps[solve.KeyChallenge] = typ
		cp.Paths = append(cp.Paths, MappedPath{From: fmt.Sprintf("%s, %s", from, typ),
			Ref: store.PathRef{Name: certbotManualPath + "-" + strings.TrimSuffix(typ, "-01"), Kind: script.Kind, Settings: ps}})
	}
	probe := ""
	if slices.Contains(types, solve.HTTP01) {
		probe = "; for http-01 it also runs, with a token of Detour's own, before each order"
	}
	cp.Notes = append(cp.Notes, Note{Setting: auth.Key + " = " + auth.Value, Where: auth.Where(),
		Reason: "carried over as the exec path's auth hook, with certbot's CERTBOT_ variables; unlike certbot, Detour stops when it exits non-zero" + probe})
}

// certbotChallenge returns the challenge type a pref_challs entry names:
// certbot accepts "http" and "dns" for http-01 and dns-01.
func certbotChallenge(v string) string {
	v = strings.ToLower(strings.TrimSpace(v))
	if !strings.HasSuffix(v, "-01") {
		v += "-01"
	}
	return v
}

// certbotHookProblem says why a certbot hook is not an executable an exec
// path can run as its setting key, and what to do; "" when it is one.
func certbotHookProblem(hook, key, cert string) (reason, fix string) {
	configure := fmt.Sprintf("add a [[certificate]] named %q with it to the configuration and import again", cert)
	if strings.ContainsAny(hook, " \t|&;<>()$`\\\"'*?[]#~=%{}!\n") {
		return "certbot ran this hook through a shell, and it is a command line, not one executable; an exec path runs its hooks without a shell",
			fmt.Sprintf("put the command in an executable script (#!/bin/sh, then the command line) and use an exec path with %s = that script (detour paths exec); %s", key, configure)
	}
	if !filepath.IsAbs(hook) {
		return "certbot's shell found it through PATH; an exec path runs a hook by its absolute path",
			fmt.Sprintf("use an exec path with %s = the hook's absolute path (command -v %s prints it); %s", key, hook, configure)
	}
	fi, err := os.Stat(hook)
	switch {
	case err != nil:
		return fmt.Sprintf("the hook cannot be used: %v", err),
			fmt.Sprintf("put the hook back at %s and import again, or use an exec path with %s = where it is now; %s", hook, key, configure)
	case !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0:
		return "it is not an executable file", fmt.Sprintf("chmod +x %s and import again", hook)
	}
	return "", ""
}

// certbotRFC2136 maps certbot's dns-rfc2136 plugin from its credentials
// file: the server, the TSIG key's name, algorithm and secret. The secret
// goes to a file of the state directory the path reads.
func (m *mapper) certbotRFC2136(c *Certificate, cp *CertPlan, from string) {
	cred, ok := c.Setting(sectionParams, "dns_rfc2136_credentials")
	if !ok || cred.Value == "" {
		cp.Unmapped = &Unmapped{Reason: from + " without dns_rfc2136_credentials", Suggestion: configSuggestion(cp.Name)}
		return
	}
	unmapped := func(format string, args ...any) {
		cp.Unmapped = &Unmapped{Reason: fmt.Sprintf("%s: dns_rfc2136_credentials = %s: ", from, cred.Value) + fmt.Sprintf(format, args...),
			Suggestion: fmt.Sprintf("define an rfc2136 path (detour paths rfc2136), add a [[certificate]] named %q with it to the configuration and import again", cp.Name)}
	}
	data, err := os.ReadFile(cred.Value)
	if err != nil {
		unmapped("%v", err)
		return
	}
	ini, err := parseConf(cred.Value, data)
	if err != nil {
		unmapped("%v", err)
		return
	}
	v := map[string]string{}
	for _, s := range ini {
		v[strings.TrimPrefix(s.Key, "dns_rfc2136_")] = s.Value
	}
	if v["server"] == "" || v["name"] == "" || v["secret"] == "" {
		unmapped("server, name and secret are needed")
		return
	}
	alg := strings.ToLower(strings.TrimSuffix(cmpStr(v["algorithm"], "HMAC-MD5"), "."))
	if !slices.Contains([]string{"hmac-sha256", "hmac-sha384", "hmac-sha512"}, alg) {
		unmapped("algorithm %s: Detour signs updates with hmac-sha256, hmac-sha384 or hmac-sha512 only; make a key of one of them (tsig-keygen -a hmac-sha256)", strings.ToUpper(alg))
		return
	}
	settings := map[string]string{
		solve.KeyChallenge: solve.DNS01,
		"server":           net.JoinHostPort(v["server"], cmpStr(v["port"], "53")),
		"tsig_key":         v["name"],
		"tsig_algorithm":   alg,
	}
	if z := v["base_domain"]; z != "" {
		settings["zone"] = z
	}
	key, file := m.secretKey(Certbot, cp.Name, "tsig")
	settings["tsig_secret_file"] = file
	cp.Secrets = append(cp.Secrets, Secret{Key: key, Data: []byte(v["secret"] + "\n")})
	cp.Paths = append(cp.Paths, MappedPath{From: fmt.Sprintf("%s, credentials %s", from, cred.Value),
		Ref: store.PathRef{Name: certbotRFC2136Path, Kind: rfc2136.Kind, Settings: settings}})
}

// certbotHookDirNotes notes the scripts of certbot's renewal-hooks/
// directories, which certbot runs for every certificate.
func certbotHookDirNotes(dir string) []Note {
	var out []Note
	for _, kind := range []string{"pre", "deploy", "post"} {
		d := filepath.Join(dir, "renewal-hooks", kind)
		ents, err := os.ReadDir(d)
		if err != nil {
			continue
		}
		for _, e := range ents {
			if e.IsDir() {
				continue
			}
			n := Note{Setting: kind + " hook " + e.Name(), Where: filepath.Join(d, e.Name()),
				Reason: "certbot runs the scripts of renewal-hooks/ for every certificate; Detour does not"}
			if kind != "pre" {
				n.Suggestion = "run it from deploy_hook (a [[certificate]] entry) or --deploy-hook; it gets certbot's RENEWED_LINEAGE and RENEWED_DOMAINS"
			}
			out = append(out, n)
		}
	}
	return out
}
