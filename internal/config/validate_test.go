package config

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

const testFile = "/etc/detour/detour.toml"

// findError returns the *Error joined into err at line and key.
func findError(err error, line int, key string) *Error {
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	for _, e := range list {
		var ce *Error
		if errors.As(e, &ce) && ce.Line == line && ce.Key == key {
			return ce
		}
	}
	return nil
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		line int
		key  string
		want []string // substrings of the message
	}{
		{"unknown top-level key with suggestion", "state_dir = \"/srv\"\nemial = \"a@example.com\"\n",
			2, "emial", []string{`unknown key "emial"`, `did you mean "email"?`}},
		{"unknown key without suggestion", "frobnicate = 1\n",
			1, "frobnicate", []string{`unknown key "frobnicate"`, `"agree_tos"`, `"state_dir"`}},
		{"unknown certificate key", "[[certificate]]\ndomains = [\"example.com\"]\npath = [\"web\"]\n",
			3, "certificate[0].path", []string{`did you mean "paths"?`}},
		{"unknown key in second certificate", "[[certificate]]\ndomains = [\"a.example\"]\n\n[[certificate]]\ndomains = [\"b.example\"]\nkeytype = \"rsa2048\"\n",
			6, "certificate[1].keytype", []string{`did you mean "key_type"?`}},
		{"unknown ca key", "[ca.corp]\ndirectory = \"https://acme.corp.example/dir\"\ndirectroy = \"x\"\n",
			3, "ca.corp.directroy", []string{`did you mean "directory"?`}},
		{"unknown path key", "[path.web]\nkind = \"standalone\"\nlisten_addr = \":80\"\n",
			3, "path.web.listen_addr", []string{`unknown key "listen_addr"`}},
		{"string instead of list", "[[certificate]]\nname = \"x\"\ndomains = \"example.com\"\n",
			3, "certificate[0].domains", []string{"expected a list of strings, got a string", `domains = ["example.com"]`}},
		{"number in list", "[[certificate]]\ndomains = [\n  \"example.com\",\n  42,\n]\n",
			4, "certificate[0].domains[1]", []string{"expected a string, got an integer (42)"}},
		{"list instead of string", "email = [\"a@example.com\"]\n",
			1, "email", []string{"expected a string, got a list"}},
		{"string instead of bool", "agree_tos = \"yes\"\n",
			1, "agree_tos", []string{"expected true or false", `a string ("yes")`}},
		{"single certificate table", "[certificate]\ndomains = [\"example.com\"]\n",
			1, "certificate", []string{"[[certificate]]"}},
		{"ca entry not a table", "[ca]\ncorp = \"https://x.example/dir\"\n",
			2, "ca.corp", []string{"expected a [ca.corp] table"}},
		{"toml syntax", "email = \"ops@example.com\"\nkey_type = \n",
			2, "", []string{"invalid TOML"}},
		{"ca string and tables", "ca = \"corp\"\n[ca.corp]\ndirectory = \"https://x.example/dir\"\n",
			2, "", []string{"default_ca"}},
		{"ca and default_ca", "ca = \"letsencrypt\"\ndefault_ca = \"buypass\"\n",
			1, "ca", []string{"set twice"}},
		{"date instead of string", "email = 1979-05-27\n",
			1, "email", []string{"got a date/time"}},
		{"eab url without table", "default_ca = \"https://dv.acme-v02.api.pki.goog/directory\"\n",
			1, "default_ca", []string{"requires External Account Binding", "[ca.NAME] table"}},
		{"unparsable directory url", "[ca.corp]\ndirectory = \"https://acme%zz.example/dir\"\n",
			2, "ca.corp.directory", []string{"not a valid URL", "invalid URL escape"}},
		{"path entry not a table", "[path]\nweb = \"standalone\"\n",
			2, "path.web", []string{"expected a [path.web] table"}},
		{"certificate entry not a table", "certificate = [\"example.com\"]\n",
			1, "certificate[0]", []string{"expected a table"}},
		{"relative state_dir", "state_dir = \"var/lib/detour\"\n",
			1, "state_dir", []string{"relative path", "absolute"}},
		{"bad email", "email = \"ops at example.com\"\n",
			1, "email", []string{"not an email address"}},
		{"bad ca email", "[ca.corp]\ndirectory = \"https://x.example/dir\"\nemail = \"nope\"\n",
			3, "ca.corp.email", []string{"not an email address"}},
		{"bad key_type", "email = \"a@example.com\"\nkey_type = \"ed25519\"\n",
			2, "key_type", []string{`unknown key type "ed25519"`, "ecdsa-p256"}},
		{"bad certificate key_type", "[[certificate]]\ndomains = [\"example.com\"]\nkey_type = \"rsa1024\"\n",
			3, "certificate[0].key_type", []string{`unknown key type "rsa1024"`}},
		{"unknown default ca", "default_ca = \"letsencrpyt\"\n",
			1, "default_ca", []string{`unknown CA "letsencrpyt"`, `did you mean "letsencrypt"?`, "zerossl"}},
		{"unknown certificate ca", "[ca.corp]\ndirectory = \"https://x.example/dir\"\n[[certificate]]\ndomains = [\"example.com\"]\nca = \"crop\"\n",
			5, "certificate[0].ca", []string{`unknown CA "crop"`, `did you mean "corp"?`, "configured: corp"}},
		{"zerossl without eab", "[[certificate]]\ndomains = [\"example.com\"]\nca = \"zerossl\"\n",
			3, "certificate[0].ca", []string{"requires External Account Binding", "[ca.zerossl]"}},
		{"zerossl table without eab", "[ca.zerossl]\nemail = \"a@example.com\"\n",
			1, "ca.zerossl", []string{"requires External Account Binding"}},
		{"ca directory missing", "[ca.corp]\neab_kid = \"k\"\neab_hmac_key = \"c2VjcmV0\"\n",
			1, "ca.corp", []string{"directory is missing"}},
		{"ca directory http", "[ca.corp]\ndirectory = \"http://acme.corp.example/dir\"\n",
			2, "ca.corp.directory", []string{"must use https", "127.0.0.1"}},
		{"ca staging bad", "[ca.corp]\ndirectory = \"https://acme.corp.example/dir\"\nstaging = \"ftp://x/\"\n",
			3, "ca.corp.staging", []string{`scheme "ftp"`}},
		{"eab kid without key", "[ca.corp]\ndirectory = \"https://x.example/dir\"\neab_kid = \"kid\"\n",
			3, "ca.corp.eab_kid", []string{"eab_hmac_key is not", "both"}},
		{"eab key without kid", "[ca.corp]\ndirectory = \"https://x.example/dir\"\neab_hmac_key = \"c2VjcmV0\"\n",
			3, "ca.corp.eab_hmac_key", []string{"eab_kid is not"}},
		{"eab key and key file", "[ca.corp]\ndirectory = \"https://x.example/dir\"\neab_kid = \"kid\"\neab_hmac_key = \"c2VjcmV0\"\neab_hmac_key_file = \"/etc/detour/eab.key\"\n",
			5, "ca.corp.eab_hmac_key_file", []string{"not both"}},
		{"eab key not base64url", "[ca.corp]\ndirectory = \"https://x.example/dir\"\neab_kid = \"kid\"\neab_hmac_key = \"not+base64/url!\"\n",
			4, "ca.corp.eab_hmac_key", []string{"not valid base64url"}},
		{"eab key file missing", "[ca.corp]\ndirectory = \"https://x.example/dir\"\neab_kid = \"kid\"\neab_hmac_key_file = \"/nonexistent/detour/eab.key\"\n",
			4, "ca.corp.eab_hmac_key_file", []string{"/nonexistent/detour/eab.key"}},
		{"root bundle missing", "[ca.corp]\ndirectory = \"https://x.example/dir\"\nroot_bundle = \"/nonexistent/detour/root.pem\"\n",
			3, "ca.corp.root_bundle", []string{"/nonexistent/detour/root.pem"}},
		{"ca name invalid", "[ca.Corp]\ndirectory = \"https://x.example/dir\"\n",
			1, "ca.Corp", []string{"not a valid CA name"}},
		{"path kind missing", "[path.web]\nlisten = \":80\"\n",
			1, "path.web", []string{"kind is missing", `"standalone"`}},
		{"path kind unknown", "[path.web]\nkind = \"standalon\"\n",
			2, "path.web.kind", []string{`unknown kind "standalon"`, `did you mean "standalone"?`}},
		{"challenge not allowed for standalone", "[path.web]\nkind = \"standalone\"\nchallenge = \"dns-01\"\n",
			3, "path.web.challenge", []string{`"dns-01" is not available for kind "standalone"`, `"http-01" or "tls-alpn-01"`}},
		{"challenge not allowed for dns-embedded", "[path.dns]\nkind = \"dns-embedded\"\nchallenge = \"http-01\"\n",
			3, "path.dns.challenge", []string{`use "dns-01"`}},
		{"listen without port", "[path.web]\nkind = \"standalone\"\nlisten = \"80\"\n",
			3, "path.web.listen", []string{`"80" is not host:port`}},
		{"listen port zero", "[path.web]\nkind = \"standalone\"\nlisten = \":0\"\n",
			3, "path.web.listen", []string{"1 to 65535"}},
		{"listen port too big", "[path.web]\nkind = \"standalone\"\nlisten = \"127.0.0.1:65536\"\n",
			3, "path.web.listen", []string{"1 to 65535"}},
		{"listen port by name", "[path.web]\nkind = \"standalone\"\nlisten = \":http\"\n",
			3, "path.web.listen", []string{"must be a number"}},
		{"path shadows built-in", "[path.dns-embedded]\nkind = \"dns-embedded\"\n",
			1, "path.dns-embedded", []string{"built-in path", "choose another name"}},
		{"no domains", "[[certificate]]\nname = \"x\"\n",
			1, "certificate[0]", []string{"domains is missing"}},
		{"empty domains", "[[certificate]]\nname = \"x\"\ndomains = []\n",
			3, "certificate[0].domains", []string{"the list is empty"}},
		{"invalid domain on its own line", "[[certificate]]\nname = \"x\"\ndomains = [\n  \"example.com\",\n  \"bad_name.example.com\",\n]\n",
			5, "certificate[0].domains", []string{`"bad_name.example.com"`, "underscores"}},
		{"duplicate domain", "[[certificate]]\ndomains = [\"example.com\", \"EXAMPLE.com\"]\n",
			2, "certificate[0].domains", []string{"listed twice"}},
		{"duplicate names", "[[certificate]]\nname = \"web\"\ndomains = [\"a.example.com\"]\n\n[[certificate]]\nname = \"web\"\ndomains = [\"b.example.com\"]\n",
			6, "certificate[1].name", []string{`"web" is already used by certificate[0] (line 1)`}},
		{"duplicate default names", "[[certificate]]\ndomains = [\"a.example.com\"]\n[[certificate]]\ndomains = [\"a.example.com\", \"b.example.com\"]\n",
			3, "certificate[1]", []string{`default name "a.example.com"`}},
		{"invalid certificate name", "[[certificate]]\nname = \"My Cert\"\ndomains = [\"example.com\"]\n",
			2, "certificate[0].name", []string{"not a valid certificate name"}},
		{"wildcard without dns-01", "[path.web]\nkind = \"standalone\"\n\n[[certificate]]\ndomains = [\"example.com\"]\n\n[[certificate]]\ndomains = [\"www.example.com\",\n  \"*.example.com\"]\npaths = [\"web\"]\n",
			9, "certificate[1].domains", []string{`"*.example.com" is a wildcard, which only dns-01 can validate, but paths ["web"] are all http-01; add a dns-01 path (e.g. paths = ["web", "dns-embedded"])`}},
		{"wildcard suggests configured dns path", "[path.dns]\nkind = \"dns-embedded\"\n[[certificate]]\ndomains = [\"*.example.com\"]\npaths = [\"standalone-http\", \"standalone-tls-alpn\"]\n",
			4, "certificate[0].domains", []string{"are all http-01 or tls-alpn-01", `paths = ["standalone-http", "standalone-tls-alpn", "dns"]`}},
		{"ip with only dns-01", "[[certificate]]\ndomains = [\"192.0.2.1\"]\npaths = [\"dns-embedded\"]\n",
			2, "certificate[0].domains", []string{"IP address", "are all dns-01", "standalone-http"}},
		{"unknown path", "[path.web]\nkind = \"standalone\"\n[[certificate]]\ndomains = [\"example.com\"]\npaths = [\"wbe\"]\n",
			5, "certificate[0].paths[0]", []string{`unknown path "wbe"`, `did you mean "web"?`, `"standalone-http"`, `"web"`}},
		{"empty paths", "[[certificate]]\ndomains = [\"example.com\"]\npaths = []\n",
			3, "certificate[0].paths", []string{"the list is empty", `["standalone-http"]`}},
		{"inline certificate table", "certificate = [\n  { domains = [\"example.com\"] },\n  { domains = [\"x\"] },\n]\n",
			3, "certificate[1].domains", []string{"two labels"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse(testFile, []byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", cfg)
			}
			if cfg != nil {
				t.Errorf("Parse returned a config with an error")
			}
			prefix := fmt.Sprintf("%s:%d: ", testFile, tt.line)
			if tt.key != "" {
				prefix += tt.key + ": "
			}
			var line string
			for l := range strings.SplitSeq(err.Error(), "\n") {
				if strings.HasPrefix(l, prefix) {
					line = l
					break
				}
			}
			if line == "" {
				t.Fatalf("no error line starts with %q; got:\n%v", prefix, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(line, w) {
					t.Errorf("error %q does not mention %q", line, w)
				}
			}
			if e := findError(err, tt.line, tt.key); e == nil || e.File != testFile {
				t.Errorf("no *Error{File: %q, Line: %d, Key: %q} in %v", testFile, tt.line, tt.key, err)
			}
		})
	}
}

// A wrong type is reported once, without follow-on errors about the same
// key.
func TestTypeErrorSuppressesFollowOns(t *testing.T) {
	_, err := Parse(testFile, []byte("[[certificate]]\ndomains = \"*.example.com\"\n"))
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	if n := len(strings.Split(err.Error(), "\n")); n != 1 {
		t.Errorf("got %d errors, want 1:\n%v", n, err)
	}
}

func TestErrorsCollectedAndSorted(t *testing.T) {
	doc := `state_dir = "relative"
[path.web]
kind = "standalone"
listen = "nope"

[[certificate]]
domains = ["*.example.com"]
paths = ["web"]

[[certificate]]
domains = ["ok.example.com"]
key_type = "dsa"
bogus = true
`
	_, err := Parse(testFile, []byte(doc))
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	lines := strings.Split(err.Error(), "\n")
	wantLines := []int{1, 4, 7, 12, 13}
	if len(lines) != len(wantLines) {
		t.Fatalf("got %d errors, want %d:\n%v", len(lines), len(wantLines), err)
	}
	for i, l := range lines {
		prefix := fmt.Sprintf("%s:%d: ", testFile, wantLines[i])
		if !strings.HasPrefix(l, prefix) {
			t.Errorf("error %d = %q, want prefix %q", i, l, prefix)
		}
	}
}
