package config

import (
	"strings"
	"testing"
)

func TestACMEDNSSettings(t *testing.T) {
	const head = "[path.adns]\nkind = \"acme-dns\"\n"
	tests := []struct {
		name string
		body string // lines after the head (line 3 on)
		key  string // "" for a valid table
		want string
	}{
		{name: "valid", body: "server = \"https://auth.example.net\"\nallow_from = \"192.0.2.0/24, [2001:db8::]/32\"\n" +
			"credentials_file = \"/etc/detour/acme-dns.json\"\npropagation_timeout = \"90s\"\n"},
		{name: "valid loopback http", body: "server = \"http://127.0.0.1:8053\"\n"},
		{name: "plain http remote", body: "server = \"http://auth.example.net\"\n",
			key: "server", want: "uses plain http, which would send the API key in clear; use https://"},
		{name: "not a URL", body: "server = \"auth.example.net\"\n", key: "server", want: "is not a URL"},
		{name: "other scheme", body: "server = \"ftp://auth.example.net\"\n", key: "server", want: "must start with https://"},
		{name: "bare address", body: "server = \"https://a.example\"\nallow_from = \"192.0.2.7\"\n",
			key: "allow_from", want: `"192.0.2.7" is not a CIDR range`},
		{name: "relative credentials", body: "server = \"https://a.example\"\ncredentials_file = \"acme-dns.json\"\n",
			key: "credentials_file", want: "must be an absolute path"},
		{name: "timeout not a duration", body: "server = \"https://a.example\"\npropagation_timeout = \"2\"\n",
			key: "propagation_timeout", want: "is not a positive duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(testFile, []byte(head+tt.body))
			if tt.key == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse accepted the table; want an error at path.adns.%s", tt.key)
			}
			found := false
			for line := 1; line < 10 && !found; line++ {
				if e := findError(err, line, "path.adns."+tt.key); e != nil {
					found = true
					if !strings.Contains(e.Error(), tt.want) {
						t.Errorf("error = %v\nwant it to contain %q", e, tt.want)
					}
				}
			}
			if !found {
				t.Errorf("no error at path.adns.%s in %v", tt.key, err)
			}
		})
	}
}
