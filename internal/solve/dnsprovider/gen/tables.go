package main

import "strings"

// excluded are lego providers the generator leaves out on purpose, with
// the reason the output gives.
var excluded = map[string]string{
	// Their SDKs do not build here: the module proxy refuses the versions
	// lego v5.4.1 requires.
	"edgedns":     "does not build here: the module proxy refuses its SDK (Akamai edgegrid)",
	"huaweicloud": "does not build here: the module proxy refuses its SDK (huaweicloud-sdk-go-v3)",
	"oraclecloud": "does not build here: the module proxy refuses its SDK (oci-go-sdk)",
	"sakuracloud": "does not build here: the module proxy refuses its SDK (iaas-api-go)",
	"ucloud":      "does not build here: the module proxy refuses its SDK (ucloud-sdk-go)",
	"yandexcloud": "does not build here: the module proxy refuses its SDK (yandex-cloud go-sdk)",
	// They read the environment below lego's constructors.
	"lightsail": "lego builds its AWS client with the SDK's default chain (AWS_* variables, ~/.aws), which Detour must not read",
	"ibmcloud":  "its SDK's session falls back to SL_*/SOFTLAYER_* variables and ~/.softlayer, which Detour must not read",
	"designate": "OpenStack's client (gophercloud utils) reads clouds.yaml and OS_* variables itself, which Detour must not read",
	"plesk":     "lego's Config keeps the server URL in an unexported field, which only its environment-reading constructor sets",
	"stackpath": "StackPath has shut its DNS down (lego's provider only says so)",
	// Detour's gandi is lego's gandiv5 (LiveDNS).
	"gandi": "lego's gandi speaks Gandi's retired XML-RPC API; Detour's gandi is the LiveDNS API (lego's gandiv5)",
	// Detour has a path kind for these.
	"dnsupdate": "RFC 2136 dynamic updates: use Detour's rfc2136 path kind",
	"acmedns":   "use Detour's acme-dns path kind",
	"exec":      "runs a program: use Detour's exec path kind",
	"manual":    "waits for a human on standard input; a daemon cannot",
}

// aliases are names users type for a provider, besides lego's code and
// the aliases its .toml gives. An alias of a provider that is not
// generated is dropped (the hand-written table has its own).
var aliases = map[string][]string{
	"pdns":       {"powerdns"},
	"hurricane":  {"he", "hurricane-electric"},
	"gandiv5":    {"gandi-livedns"},
	"namedotcom": {"name.com"},
	"godaddy":    {"go-daddy"},
	"ns1":        {"nsone"},
	"lightsail":  {"aws-lightsail"},
	"ionos":      {"1and1"},
	"transip":    {"trans-ip"},
	"vultr":      {"vultr-dns"},
}

// secretParts mark a variable as a secret when one of the words of its
// name (split at "_") contains one. Conservative: a name that might hold a
// secret is marked one, unless its last word says it names a place or a
// kind of thing (…_AUTH_URL, …_KEY_TYPE).
var secretParts = []string{"TOKEN", "KEY", "SECRET", "PASSWORD", "PASSWD", "PASS", "PWD", "AUTH", "CREDENTIAL", "PRIVATE", "PIN", "OTP", "SIGNATURE", "COOKIE", "SESSION", "APIKEY", "HASH"}

// notSecretLast are last words that make a name not a secret.
var notSecretLast = []string{"URL", "ENDPOINT", "HOST", "SERVER", "TYPE", "METHOD", "MODE", "ALGORITHM", "NAME", "REGION", "TTL", "TIMEOUT", "INTERVAL", "FILE", "PATH", "LOCATION", "ID"}

func isSecret(env string) bool {
	words := strings.Split(env, "_")
	if len(words) > 1 {
		for _, w := range notSecretLast {
			if words[len(words)-1] == w {
				return false
			}
		}
	}
	for _, w := range words[1:] { // words[0] is the provider's prefix
		for _, p := range secretParts {
			if strings.Contains(w, p) {
				return true
			}
		}
	}
	return false
}

// detourSets are Config fields Detour fills from its own settings rather
// than from the credentials file; the variables lego reads for them are
// not keys of the file.
var detourSets = map[string]bool{
	"PropagationTimeout": true, // the path's propagation_timeout
	"PollingInterval":    true, // Detour polls itself
	"HTTPClient":         true, // Detour's client (tests point its transport at fakes)
	"HTTPTimeout":        true, // Detour's request timeout
}

// required are variables lego reads as optional that the provider needs
// all the same: its NewDNSProviderConfig refuses a Config without them, or
// falls back to something Detour must not read (a file in $HOME). Marking
// them required makes a missing one a clear "lacks KEY" error.
var required = map[string][]string{
	"dnsimple": {"DNSIMPLE_OAUTH_TOKEN"},
	"hyperone": {"HYPERONE_PASSPORT_LOCATION"}, // else ~/.h1/passport.json
}
