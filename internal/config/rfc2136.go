package config

import (
	"encoding/base64"
	"fmt"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// TSIG algorithms an rfc2136 path accepts (RFC 8945 §6).
var tsigAlgorithms = []string{"hmac-sha256", "hmac-sha384", "hmac-sha512"}

func init() {
	k := kinds[KindRFC2136]
	k.check = checkRFC2136
	kinds[KindRFC2136] = k
}

// checkRFC2136 validates the settings of an rfc2136 path. The secret file is
// read when the path is built, not here.
func checkRFC2136(p Path) []SettingProblem {
	var probs []SettingProblem
	add := func(key, format string, args ...any) {
		probs = append(probs, SettingProblem{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if s := p.Setting("server"); s != "" {
		if err := checkListen(s); err != nil || strings.HasPrefix(s, "unix:") || strings.HasPrefix(s, ":") {
			add("server", "%q must be the update server's host:port, e.g. \"192.0.2.53:53\" or \"ns1.example.com:53\"", s)
		}
	}
	if z := p.Setting("zone"); z != "" {
		if _, ok := dns.IsDomainName(z); !ok || strings.Contains(z, " ") {
			add("zone", "%q is not a DNS name; write the zone's apex, e.g. \"example.com\"", z)
		}
	}
	key, secret, file := p.Setting("tsig_key"), p.Setting("tsig_secret"), p.Setting("tsig_secret_file")
	if key != "" {
		if _, ok := dns.IsDomainName(key); !ok || strings.Contains(key, " ") {
			add("tsig_key", "%q is not a valid key name; use the name of the key statement in named.conf, e.g. \"detour-key\"", key)
		}
	}
	switch {
	case secret != "" && file != "":
		add("tsig_secret", "tsig_secret and tsig_secret_file are both set; keep one (tsig_secret_file keeps the secret out of this file)")
	case key != "" && secret == "" && file == "":
		add("tsig_key", "tsig_key is set without a secret; add tsig_secret_file = \"/etc/detour/tsig.secret\" (or tsig_secret)")
	case key == "" && (secret != "" || file != ""):
		add("tsig_key", "a TSIG secret is set without tsig_key; add tsig_key = the key's name in named.conf")
	}
	if secret != "" {
		if _, err := base64.StdEncoding.DecodeString(secret); err != nil {
			add("tsig_secret", "the secret is not valid base64 (%v); copy the secret string of the key statement (as printed by tsig-keygen)", err)
		}
	}
	if file != "" && !strings.HasPrefix(file, "/") {
		add("tsig_secret_file", "%q must be an absolute path", file)
	}
	if a := p.Setting("tsig_algorithm"); a != "" && !containsFold(tsigAlgorithms, strings.TrimSuffix(a, ".")) {
		add("tsig_algorithm", "%q is not supported; use %s", a, strings.Join(quoted(tsigAlgorithms), ", "))
	}
	if t := p.Setting("propagation_timeout"); t != "" {
		d, err := time.ParseDuration(t)
		if err != nil || d <= 0 {
			add("propagation_timeout", "%q is not a positive duration; write e.g. \"2m\" or \"90s\"", t)
		}
	}
	return probs
}

func containsFold(list []string, s string) bool {
	for _, v := range list {
		if strings.EqualFold(v, s) {
			return true
		}
	}
	return false
}
