package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

func init() {
	k := kinds[KindACMEDNS]
	k.check = checkACMEDNS
	kinds[KindACMEDNS] = k
}

// checkACMEDNS validates the settings of an acme-dns path: server is the
// API's https:// URL (http:// only on loopback, since the API key travels
// in a header), allow_from a comma-separated list of CIDR ranges,
// credentials_file an absolute path, propagation_timeout a duration.
func checkACMEDNS(p Path) []SettingProblem {
	var probs []SettingProblem
	add := func(key, msg string) { probs = append(probs, SettingProblem{Key: key, Msg: msg}) }
	if s := p.Setting("server"); s != "" {
		if msg := acmeDNSServerProblem(s); msg != "" {
			add("server", msg)
		}
	}
	if a := p.Setting("allow_from"); a != "" {
		for _, c := range strings.Split(a, ",") {
			c = strings.TrimSpace(c)
			if _, err := netip.ParsePrefix(strings.NewReplacer("[", "", "]", "").Replace(c)); err != nil {
				add("allow_from", fmt.Sprintf("%q is not a CIDR range; write ranges such as \"192.0.2.0/24, 2001:db8::/32\" (a single host is 192.0.2.7/32)", c))
				break
			}
		}
	}
	if f := p.Setting("credentials_file"); f != "" && !strings.HasPrefix(f, "/") {
		add("credentials_file", fmt.Sprintf("%q must be an absolute path, e.g. \"/etc/detour/acme-dns.json\"", f))
	}
	if t := p.Setting("propagation_timeout"); t != "" {
		if d, err := time.ParseDuration(t); err != nil || d <= 0 {
			add("propagation_timeout", fmt.Sprintf("%q is not a positive duration; write e.g. \"2m\" or \"90s\"", t))
		}
	}
	return probs
}

// acmeDNSServerProblem says what is wrong with an acme-dns API URL, or "".
func acmeDNSServerProblem(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Sprintf("%q is not a URL; write the acme-dns API's address, e.g. \"https://auth.example.net\"", s)
	}
	switch u.Scheme {
	case "https":
		return ""
	case "http":
		host := u.Hostname()
		if ip, err := netip.ParseAddr(host); host == "localhost" || err == nil && ip.IsLoopback() {
			return ""
		}
		return fmt.Sprintf("%q uses plain http, which would send the API key in clear; use https:// (http:// is accepted only for a loopback address)", s)
	}
	return fmt.Sprintf("%q must start with https://", s)
}
