package rfc2136

import (
	"strings"
	"testing"
)

func TestParseKeyFile(t *testing.T) {
	text := `# made by tsig-keygen
key "detour-key" {
	algorithm hmac-sha256;
	secret "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==";
};
/* a second one */
key other. { algorithm HMAC-SHA512; secret "b3RoZXI="; };
`
	keys, err := ParseKeyFile("/etc/bind/detour.key", text)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].Name != "detour-key" || keys[0].Algorithm != "hmac-sha256" || keys[0].Secret != "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==" ||
		keys[1].Name != "other" || keys[1].Algorithm != "hmac-sha512" {
		t.Errorf("keys = %+v", keys)
	}
	for _, bad := range []string{"", "zone x {};", `key "k" { algorithm hmac-sha256; };`} {
		if _, err := ParseKeyFile("f.key", bad); err == nil || !strings.Contains(err.Error(), "f.key") {
			t.Errorf("%q: %v; want an error naming the file", bad, err)
		}
	}
}

// TestSecretFromFile: tsig_secret_file holds the bare secret or a BIND key
// file; from the latter the key named tsig_key is taken.
func TestSecretFromFile(t *testing.T) {
	file := `key "detour-key" { algorithm hmac-sha256; secret "c2VjcmV0"; };
key "other" { algorithm hmac-sha256; secret "b3RoZXI="; };`
	for _, tc := range []struct{ text, name, want, err string }{
		{"c2VjcmV0\n", "detour-key", "c2VjcmV0", ""},
		{file, "detour-key", "c2VjcmV0", ""},
		{file, "other.", "b3RoZXI=", ""},
		{file, "missing", "", `holds the keys detour-key, other, not tsig_key "missing"`},
	} {
		got, err := SecretFromFile("/etc/bind/k.key", tc.text, tc.name)
		if got != tc.want || (tc.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("SecretFromFile(%q, %q) = %q, %v; want %q, %q", tc.text, tc.name, got, err, tc.want, tc.err)
		}
	}
}
