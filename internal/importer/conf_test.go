package importer

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestImportConf(t *testing.T) {
	const file = "/etc/letsencrypt/renewal/example.com.conf"
	conf := `# renew_before_expiry = 30 days
version = 2.1.0
archive_dir = /etc/letsencrypt/archive/example.com

# Options used in the renewal process
[renewalparams]
account = 0123abcd
webroot_path = /var/www/html,
pref_challs = http-01, dns-01
renew_hook = "echo hi, there"
post_hook = 'echo "post"'
pre_hook = systemctl stop nginx # stops it
empty =
manual_auth_hook = """/usr/local/bin/auth \
  --verbose"""
[[webroot_map]]
example.com = /var/www/html
"www.example.com" = /srv/www
`
	got, err := parseConf(file, []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	type kv struct {
		section, key, value string
		list                []string
		line                int
	}
	want := []kv{
		{"", "version", "2.1.0", nil, 2},
		{"", "archive_dir", "/etc/letsencrypt/archive/example.com", nil, 3},
		{"renewalparams", "account", "0123abcd", nil, 7},
		{"renewalparams", "webroot_path", "/var/www/html", []string{"/var/www/html"}, 8},
		{"renewalparams", "pref_challs", "http-01, dns-01", []string{"http-01", "dns-01"}, 9},
		{"renewalparams", "renew_hook", "echo hi, there", nil, 10},
		{"renewalparams", "post_hook", `echo "post"`, nil, 11},
		{"renewalparams", "pre_hook", "systemctl stop nginx", nil, 12},
		{"renewalparams", "empty", "", nil, 13},
		{"renewalparams", "manual_auth_hook", "/usr/local/bin/auth \\\n  --verbose", nil, 14},
		{"renewalparams/webroot_map", "example.com", "/var/www/html", nil, 17},
		{"renewalparams/webroot_map", "www.example.com", "/srv/www", nil, 18},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d settings, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Section != w.section || g.Key != w.key || g.Value != w.value || !slices.Equal(g.List, w.list) || g.Line != w.line || g.File != file {
			t.Errorf("setting %d = %+v, want %+v", i, g, w)
		}
	}
}

func TestImportConfErrors(t *testing.T) {
	for _, tc := range []struct {
		name, conf string
		line       int
		msg        string
	}{
		{"no equals sign", "version = 2\n[renewalparams]\naccount 0123\n", 3, `expected "key = value"`},
		{"unclosed section", "version = 2\n\n[renewalparams\n", 3, "lacks its closing ]"},
		{"unbalanced section", "[renewalparams]]\n", 1, "opens with 1 [ and closes with 2 ]"},
		{"subsection first", "[[webroot_map]]\n", 1, "a [[subsection]] must follow its [section]"},
		{"unclosed quote", "[renewalparams]\nrenew_hook = \"echo hi\n", 2, "never closed"},
		{"text after a quote", "[renewalparams]\nrenew_hook = \"echo\" hi\n", 2, "unexpected"},
		{"unclosed triple quote", "[renewalparams]\nx = 1\nrenew_hook = '''echo\nmore\n", 3, "is never closed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConf("/x.conf", []byte(tc.conf))
			var ce *ConfError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v, want a *ConfError", err)
			}
			if ce.Line != tc.line || !strings.Contains(err.Error(), tc.msg) || !strings.HasPrefix(err.Error(), "/x.conf:") {
				t.Errorf("err = %q (line %d), want line %d mentioning %q", err, ce.Line, tc.line, tc.msg)
			}
		})
	}
}
