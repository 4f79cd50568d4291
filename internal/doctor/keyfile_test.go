package doctor

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
	keys, err := parseKeyFile("/etc/bind/detour.key", text)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].Name != "detour-key" || keys[0].Algorithm != "hmac-sha256" || keys[0].Secret != "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0IQ==" ||
		keys[1].Name != "other" || keys[1].Algorithm != "hmac-sha512" || keys[0].Source != "/etc/bind/detour.key" {
		t.Errorf("keys = %+v", keys)
	}
	for _, bad := range []string{"", "zone x {};", `key "k" { algorithm hmac-sha256; };`} {
		if _, err := parseKeyFile("f.key", bad); err == nil || !strings.Contains(err.Error(), "f.key") {
			t.Errorf("%q: %v; want an error naming the file", bad, err)
		}
	}
}
