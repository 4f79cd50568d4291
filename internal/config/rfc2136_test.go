package config

import (
	"strings"
	"testing"
)

func TestRFC2136Settings(t *testing.T) {
	const head = "[path.bind]\nkind = \"rfc2136\"\n"
	tests := []struct {
		name string
		body string // lines after the head (line 3 on)
		key  string // "" for a valid table
		want string
	}{
		{name: "valid", body: "server = \"192.0.2.53:53\"\nzone = \"example.com\"\ntsig_key = \"detour-key\"\ntsig_secret = \"c2VjcmV0\"\npropagation_timeout = \"90s\"\n"},
		{name: "valid with file and algorithm", body: "tsig_key = \"detour-key\"\ntsig_secret_file = \"/etc/detour/tsig\"\ntsig_algorithm = \"HMAC-SHA512\"\n"},
		{name: "valid unsigned", body: "server = \"ns1.example.com:53\"\n"},
		{name: "both secrets", body: "tsig_key = \"k\"\ntsig_secret = \"c2VjcmV0\"\ntsig_secret_file = \"/etc/detour/tsig\"\n",
			key: "tsig_secret", want: "tsig_secret and tsig_secret_file are both set"},
		{name: "secret not base64", body: "tsig_key = \"k\"\ntsig_secret = \"not base64!\"\n",
			key: "tsig_secret", want: "not valid base64"},
		{name: "key without secret", body: "tsig_key = \"k\"\n",
			key: "tsig_key", want: "tsig_key is set without a secret"},
		{name: "secret without key", body: "tsig_secret = \"c2VjcmV0\"\n",
			key: "tsig_key", want: "without tsig_key"},
		{name: "relative secret file", body: "tsig_key = \"k\"\ntsig_secret_file = \"tsig.secret\"\n",
			key: "tsig_secret_file", want: "must be an absolute path"},
		{name: "unknown algorithm", body: "tsig_key = \"k\"\ntsig_secret = \"c2VjcmV0\"\ntsig_algorithm = \"hmac-md5\"\n",
			key: "tsig_algorithm", want: `"hmac-md5" is not supported; use "hmac-sha256", "hmac-sha384", "hmac-sha512"`},
		{name: "server without port", body: "server = \"192.0.2.53\"\n",
			key: "server", want: `"192.0.2.53" must be the update server's host:port`},
		{name: "server without host", body: "server = \":53\"\n",
			key: "server", want: "host:port"},
		{name: "zone not a name", body: "zone = \"exa mple.com\"\n",
			key: "zone", want: "is not a DNS name"},
		{name: "timeout not a duration", body: "propagation_timeout = \"120\"\n",
			key: "propagation_timeout", want: `"120" is not a positive duration; write e.g. "2m"`},
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
				t.Fatalf("Parse accepted the table; want an error at path.bind.%s", tt.key)
			}
			found := false
			for line := 1; line < 10 && !found; line++ {
				if e := findError(err, line, "path.bind."+tt.key); e != nil {
					found = true
					if !strings.Contains(e.Error(), tt.want) {
						t.Errorf("error = %v\nwant it to contain %q", e, tt.want)
					}
				}
			}
			if !found {
				t.Errorf("no error at path.bind.%s in %v", tt.key, err)
			}
		})
	}
}
