package importer

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/solve/dnsprovider"
)

// TestImportCertbotMapping maps one lineage per certbot setting the import
// knows, from a directory laid out as certbot does.
func TestImportCertbotMapping(t *testing.T) {
	d := newCertbotDir(t)
	tsig := filepath.Join(t.TempDir(), "rfc2136.ini")
	d.write(tsig, "dns_rfc2136_server = 192.0.2.53\ndns_rfc2136_port = 5353\ndns_rfc2136_name = detour-key.\n"+
		"dns_rfc2136_secret = c2VjcmV0IHNlY3JldCBzZWNyZXQ=\ndns_rfc2136_algorithm = HMAC-SHA512\n")
	md5 := filepath.Join(t.TempDir(), "md5.ini")
	d.write(md5, "dns_rfc2136_server = 192.0.2.53\ndns_rfc2136_name = k\ndns_rfc2136_secret = c2VjcmV0\n")
	d.lineage("web", 2, []string{"example.com", "www.example.com"}, "authenticator = webroot", "installer = nginx",
		"webroot_path = /var/www/b, /var/www/a", "[[webroot_map]]", "example.com = /var/www/a", "www.example.com = /var/www/b")
	d.lineage("alone", 1, []string{"alone.example.com"}, "authenticator = standalone", "http01_port = 8080",
		"pre_hook = systemctl stop nginx", "post_hook = systemctl start nginx", "key_type = ecdsa", "elliptic_curve = secp384r1",
		"must_staple = True")
	d.lineage("dns", 1, []string{"dns.example.com"}, "authenticator = dns-rfc2136", "dns_rfc2136_credentials = "+tsig,
		"dns_rfc2136_propagation_seconds = 60")
	d.lineage("md5", 1, []string{"md5.example.com"}, "authenticator = dns-rfc2136", "dns_rfc2136_credentials = "+md5)
	d.lineage("nginx", 1, []string{"nginx.example.com"}, "authenticator = nginx", "installer = nginx")
	d.lineage("cf", 1, []string{"cf.example.com"}, "authenticator = dns-cloudflare", "dns_cloudflare_credentials = /root/cf.ini")
	d.lineage("wild", 1, []string{"*.wild.example.com"}, "authenticator = webroot", "webroot_path = /var/www/a,")
	d.write(filepath.Join(d.dir, "renewal-hooks", "deploy", "reload.sh"), "#!/bin/sh\n")

	src, err := ReadCertbot(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	p := Plan(src, PlanOptions{StateDir: "/var/lib/detour", Profile: "classic"})

	web := certPlan(t, p, "web")
	if len(web.Versions) != 2 || web.Versions[1].N != 2 {
		t.Errorf("web: versions %+v, want 1 then the live 2", web.Versions)
	}
	wantPaths(t, web, "certbot-webroot webroot challenge=http-01 root=/var/www/a", "certbot-webroot-2 webroot challenge=http-01 root=/var/www/b")
	if web.Record.DeployHook != "systemctl reload nginx" || web.Record.Profile != "classic" || web.Record.Account != d.acct || web.Record.CA != testServer {
		t.Errorf("web: record %+v", web.Record)
	}
	wantNote(t, web, "installer = nginx", "point it at /var/lib/detour/live/web/")

	alone := certPlan(t, p, "alone")
	wantPaths(t, alone, "certbot-standalone standalone challenge=http-01 listen=:8080")
	if alone.Record.DeployHook != "systemctl start nginx" || alone.Record.KeyType != string(acme.ECDSAP384) {
		t.Errorf("alone: deploy hook %q, key type %q", alone.Record.DeployHook, alone.Record.KeyType)
	}
	wantNote(t, alone, "pre_hook = systemctl stop nginx", "webroot or side-port")
	wantNote(t, alone, "post_hook = systemctl start nginx", "after every renewal attempt")
	wantNote(t, alone, "must_staple = True", "Must-Staple")

	dns := certPlan(t, p, "dns")
	wantPaths(t, dns, "certbot-rfc2136 rfc2136 challenge=dns-01 server=192.0.2.53:5353 tsig_algorithm=hmac-sha512 tsig_key=detour-key. tsig_secret_file=/var/lib/detour/imported/certbot/dns.tsig.key")
	if len(dns.Secrets) != 1 || dns.Secrets[0].Key != "imported/certbot/dns.tsig.key" || string(dns.Secrets[0].Data) != "c2VjcmV0IHNlY3JldCBzZWNyZXQ=\n" {
		t.Errorf("dns: secrets %+v", dns.Secrets)
	}
	if len(dns.Notes) != 0 {
		t.Errorf("dns: notes %+v, want none (Detour waits for propagation itself)", dns.Notes)
	}

	for name, want := range map[string][]string{
		"md5":   {"algorithm HMAC-MD5", "tsig-keygen -a hmac-sha256", "rfc2136 path"},
		"nginx": {"edits nginx's configuration", "detour snippet http --server nginx", `[[certificate]] named "nginx"`},
		"cf":    {"authenticator = dns-cloudflare", `provider = "cloudflare"`},
		"wild":  {"*.wild.example.com: a wildcard can only be validated with dns-01"},
	} {
		cp := certPlan(t, p, name)
		if cp.Unmapped == nil {
			t.Errorf("%s: mapped to %+v, want unmapped", name, cp.Paths)
			continue
		}
		wantIn(t, name+": why and what to do", cp.Unmapped.Reason+" / "+cp.Unmapped.Suggestion, want...)
	}
	if len(p.Accounts) != 1 || p.Accounts[0].Prefix != "accounts/127.0.0.1_14000/default" ||
		!slices.Equal(p.Accounts[0].Certificates, []string{"alone", "dns", "web"}) {
		t.Errorf("accounts: %+v", p.Accounts)
	}
	if len(p.Notes) != 1 || !strings.Contains(p.Notes[0].Where, "renewal-hooks/deploy/reload.sh") {
		t.Errorf("source notes: %+v, want the deploy hook script", p.Notes)
	}
}

// TestImportCertbotManual: certbot's manual authenticator maps to exec
// paths running the same hooks when each hook is the absolute path of an
// executable, with the challenge types certbot took for the names
// (pref_challs, default http-01 then dns-01; a wildcard needs dns-01).
// A hook certbot ran as a shell command line, found through PATH, or that
// is not there, leaves the certificate unmapped, saying what to do.
func TestImportCertbotManual(t *testing.T) {
	d := newCertbotDir(t)
	hooks := t.TempDir()
	hook := func(name string, mode os.FileMode) string {
		p := filepath.Join(hooks, name)
		d.write(p, "#!/bin/sh\n")
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pub, unpub, plain := hook("publish", 0o755), hook("unpublish", 0o755), hook("plain", 0o644)
	d.lineage("dns", 1, []string{"dns.example.com"}, "authenticator = manual", "pref_challs = dns-01,",
		"manual_auth_hook = "+pub, "manual_cleanup_hook = "+unpub)
	d.lineage("http", 1, []string{"http.example.com"}, "authenticator = manual", "pref_challs = http,", "manual_auth_hook = "+pub)
	d.lineage("both", 1, []string{"both.example.com", "*.both.example.com"}, "authenticator = manual", "manual_auth_hook = "+pub,
		"manual_cleanup_hook = "+unpub)
	d.lineage("dnsfirst", 1, []string{"dnsfirst.example.com", "*.dnsfirst.example.com"}, "authenticator = manual",
		"pref_challs = dns-01, http-01", "manual_auth_hook = "+pub)
	d.lineage("shell", 1, []string{"shell.example.com"}, "authenticator = manual", "pref_challs = http-01,",
		"manual_auth_hook = /usr/bin/python3 /root/auth.py", "manual_cleanup_hook = "+unpub)
	d.lineage("pipe", 1, []string{"pipe.example.com"}, "authenticator = manual", "manual_auth_hook = "+pub,
		"manual_cleanup_hook = '"+unpub+" | logger'")
	d.lineage("inpath", 1, []string{"inpath.example.com"}, "authenticator = manual", "manual_auth_hook = publish.sh")
	d.lineage("gone", 1, []string{"gone.example.com"}, "authenticator = manual", "manual_auth_hook = "+filepath.Join(hooks, "gone"))
	d.lineage("plain", 1, []string{"plain.example.com"}, "authenticator = manual", "manual_auth_hook = "+plain)
	d.lineage("byhand", 1, []string{"byhand.example.com"}, "authenticator = manual", "pref_challs = dns-01,")
	d.lineage("alpn", 1, []string{"alpn.example.com"}, "authenticator = manual", "pref_challs = tls-alpn-01,", "manual_auth_hook = "+pub)
	d.lineage("wildhttp", 1, []string{"wildhttp.example.com", "*.wildhttp.example.com"}, "authenticator = manual",
		"pref_challs = http-01,", "manual_auth_hook = "+pub)

	src, err := ReadCertbot(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	p := Plan(src, PlanOptions{StateDir: "/var/lib/detour"})
	dns := certPlan(t, p, "dns")
	wantPaths(t, dns, "certbot-manual-dns exec auth="+pub+" challenge=dns-01 cleanup="+unpub)
	wantNote(t, dns, "manual_auth_hook = "+pub, "exits non-zero")
	wantPaths(t, certPlan(t, p, "http"), "certbot-manual-http exec auth="+pub+" challenge=http-01")
	wantNote(t, certPlan(t, p, "http"), "manual_auth_hook = "+pub, "token of Detour's own")
	wantPaths(t, certPlan(t, p, "both"), "certbot-manual-http exec auth="+pub+" challenge=http-01 cleanup="+unpub,
		"certbot-manual-dns exec auth="+pub+" challenge=dns-01 cleanup="+unpub)
	wantPaths(t, certPlan(t, p, "dnsfirst"), "certbot-manual-dns exec auth="+pub+" challenge=dns-01")

	for name, want := range map[string][]string{
		"shell":    {"manual_auth_hook = /usr/bin/python3 /root/auth.py", "through a shell", "without a shell", "executable script", "auth = that script", `[[certificate]] named "shell"`},
		"pipe":     {"manual_cleanup_hook = " + unpub + " | logger", "through a shell", "cleanup = that script"},
		"inpath":   {"through PATH", "command -v publish.sh"},
		"gone":     {"no such file or directory", "put the hook back"},
		"plain":    {"not an executable file", "chmod +x " + plain},
		"byhand":   {"without manual_auth_hook", "by hand", "exec path"},
		"alpn":     {"pref_challs = tls-alpn-01", "http-01 and dns-01"},
		"wildhttp": {"*.wildhttp.example.com: a wildcard can only be validated with dns-01"},
	} {
		cp := certPlan(t, p, name)
		if cp.Unmapped == nil {
			t.Errorf("%s: mapped to %+v, want unmapped", name, cp.Paths)
			continue
		}
		wantIn(t, name+": why and what to do", cp.Unmapped.Reason+" / "+cp.Unmapped.Suggestion, want...)
	}
}

// TestImportCertbotUnreadable: a lineage that cannot be read is reported with
// its file and reason, and the others are mapped.
func TestImportCertbotUnreadable(t *testing.T) {
	d := newCertbotDir(t)
	d.lineage("good", 1, []string{"good.example.com"}, "authenticator = standalone")
	d.lineage("noacct", 1, []string{"noacct.example.com"}, "authenticator = standalone")
	d.lineage("badkey", 2, []string{"badkey.example.com"}, "authenticator = standalone")
	d.lineage("oldbad", 2, []string{"oldbad.example.com"}, "authenticator = standalone")
	conf := filepath.Join(d.dir, "renewal", "noacct.conf")
	raw, _ := os.ReadFile(conf)
	d.write(conf, strings.Replace(string(raw), "account = "+d.acctID, "account = ffff", 1))
	d.write(filepath.Join(d.dir, "archive", "badkey", "privkey2.pem"), "not a key")
	d.write(filepath.Join(d.dir, "archive", "oldbad", "cert1.pem"), "truncated")

	src, err := ReadCertbot(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	p := Plan(src, PlanOptions{StateDir: "/var/lib/detour"})
	if cp := certPlan(t, p, "good"); cp.Err != nil || cp.Unmapped != nil {
		t.Errorf("good: %v %+v", cp.Err, cp.Unmapped)
	}
	for name, want := range map[string]string{
		"noacct": conf + ":6 (account = ffff at " + testServer + "): the account is missing",
		"badkey": "the live version 2 cannot be read: " + filepath.Join(d.dir, "archive", "badkey", "cert2.pem"),
	} {
		if cp := certPlan(t, p, name); cp.Err == nil || !strings.Contains(cp.Err.Error(), want) {
			t.Errorf("%s: err %v, want one mentioning %q", name, cp.Err, want)
		}
	}
	// An old version that does not read is left out, with a note.
	old := certPlan(t, p, "oldbad")
	if old.Err != nil || len(old.Versions) != 1 || old.Versions[0].N != 2 {
		t.Errorf("oldbad: err %v, versions %+v", old.Err, old.Versions)
	}
	wantNote(t, old, "version 1", "left out")
}

// TestImportConfigured: a certificate the configuration describes takes its
// paths from there; one with other names, or a path name the import
// needs, is a conflict.
func TestImportConfigured(t *testing.T) {
	d := newCertbotDir(t)
	d.lineage("same", 1, []string{"same.example.com"}, "authenticator = nginx")
	d.lineage("other", 1, []string{"other.example.com"}, "authenticator = standalone")
	d.lineage("named", 1, []string{"named.example.com"}, "authenticator = standalone")
	d.lineage("rec", 1, []string{"rec.example.com"}, "authenticator = webroot", "webroot_path = /var/www,")
	cfgFile := filepath.Join(t.TempDir(), "detour.toml")
	cfg, err := config.Parse(cfgFile, []byte(`email = "ops@example.com"
default_ca = "`+testServer+`"

[path.web]
kind = "side-port"

[path.certbot-standalone]
kind = "webroot"
root = "/srv"

[[certificate]]
name = "same"
domains = ["same.example.com"]
paths = ["web"]

[[certificate]]
name = "other"
domains = ["else.example.com"]
`))
	if err != nil {
		t.Fatal(err)
	}
	src, err := ReadCertbot(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	p := Plan(src, PlanOptions{Config: cfg, StateDir: "/var/lib/detour"})
	same := certPlan(t, p, "same")
	if !same.Configured || same.Unmapped != nil || same.Conflict != "" || len(same.Paths) != 1 || same.Paths[0].Ref.Name != "web" {
		t.Errorf("same: %+v", same)
	}
	// Its renewals use the configuration's contact: the account goes
	// under that prefix.
	if same.Account == nil || same.Account.Prefix != "accounts/127.0.0.1_14000/ops@example.com" {
		t.Errorf("same: account %+v", same.Account)
	}
	// A certificate renewed from its record follows: one account, one
	// prefix.
	rec := certPlan(t, p, "rec")
	if rec.Account != same.Account || rec.Record.Email != "ops@example.com" || len(p.Accounts) != 1 {
		t.Errorf("rec: account %+v, email %q; %d account plans, want 1", rec.Account, rec.Record.Email, len(p.Accounts))
	}
	wantIn(t, "other's conflict", certPlan(t, p, "other").Conflict, cfgFile+":16", "else.example.com", "other.example.com")
	wantIn(t, "named's conflict", certPlan(t, p, "named").Conflict, "[path.certbot-standalone]", cfgFile)
}

func TestImportLegoMapping(t *testing.T) {
	is := newIssuer(t)
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keyPEM, _ := acme.EncodeKey(key)
	acctDir := filepath.Join(dir, "accounts", "127.0.0.1_14000", "lego@example.com")
	d := &certbotDir{t: t}
	d.write(filepath.Join(acctDir, "keys", "lego@example.com.key"), string(keyPEM))
	d.write(filepath.Join(acctDir, "account.json"), `{"email": "lego@example.com", "registration": {"body": {"status": "valid", "contact": ["mailto:lego@example.com"]}, "uri": "https://127.0.0.1:14000/my-account/7"}}`)
	certs := filepath.Join(dir, "certificates")
	add := func(stem, host string, names ...string) {
		cert, k := is.issue(t, names...)
		d.write(filepath.Join(certs, stem+".crt"), string(cert)+string(is.pem))
		d.write(filepath.Join(certs, stem+".issuer.crt"), string(is.pem))
		d.write(filepath.Join(certs, stem+".key"), string(k))
		d.write(filepath.Join(certs, stem+".json"), `{"domain": "`+names[0]+`", "certUrl": "https://`+host+`/certZ/1"}`)
	}
	add("example.com", "127.0.0.1:14000", "example.com", "www.example.com")
	add("_.example.org", "127.0.0.1:14000", "*.example.org")
	add("elsewhere.example", "ca.example:443", "elsewhere.example")
	creds := filepath.Join(t.TempDir(), "gandi.ini")

	for _, tc := range []struct {
		name   string
		opts   LegoOptions
		paths  map[string][]string // by certificate: paths as wantPaths has them
		unmap  map[string]string   // by certificate: part of the reason
		noteOn string
	}{
		{name: "no flags", unmap: map[string]string{"example.com": "no challenge flag was given", "wildcard.example.org": "no challenge flag"}},
		{name: "http", opts: LegoOptions{HTTP: true, HTTPPort: "127.0.0.1:5002"},
			paths: map[string][]string{"example.com": {"lego-http standalone challenge=http-01 listen=127.0.0.1:5002"}},
			unmap: map[string]string{"wildcard.example.org": "a wildcard can only be validated with dns-01"}},
		{name: "webroot and tls", opts: LegoOptions{HTTPWebroot: "/var/www", TLS: true, TLSPort: ":443"},
			paths: map[string][]string{"example.com": {"lego-webroot webroot challenge=http-01 root=/var/www", "lego-tls standalone challenge=tls-alpn-01 listen=:443"}}},
		{name: "dns with credentials", opts: LegoOptions{DNS: "gandiv5", CredentialsFile: creds},
			paths: map[string][]string{"wildcard.example.org": {"lego-dns dns-provider challenge=dns-01 credentials_file=" + creds + " provider=gandi"}}},
		{name: "any of the generated providers, by lego's name", opts: LegoOptions{DNS: "linode", CredentialsFile: creds},
			paths: map[string][]string{"wildcard.example.org": {"lego-dns dns-provider challenge=dns-01 credentials_file=" + creds + " provider=linode"}}},
		{name: "lego's legacy gandi is not Detour's gandi", opts: LegoOptions{DNS: "gandi", CredentialsFile: creds},
			unmap: map[string]string{"wildcard.example.org": "Gandi's retired API"}},
		{name: "dns without credentials", opts: LegoOptions{DNS: "cloudflare"},
			unmap: map[string]string{"example.com": "environment variables"}},
		{name: "http and an unknown provider", opts: LegoOptions{HTTP: true, DNS: "madeup"},
			paths:  map[string][]string{"example.com": {"lego-http standalone challenge=http-01 listen=:80"}},
			noteOn: "example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := dnsprovider.Describe(tc.opts.DNS); tc.opts.DNS == "linode" && err != nil {
				t.Skip("the slim build (-tags detour_slim) has no generated providers")
			}
			tc.opts.Server = testServer
			src, err := ReadLego(dir, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(src.Certificates) != 2 || len(src.Skipped) != 1 || !strings.Contains(src.Skipped[0], "issued by ca.example:443") {
				t.Fatalf("read %d certificates, skipped %q", len(src.Certificates), src.Skipped)
			}
			p := Plan(src, PlanOptions{StateDir: "/var/lib/detour"})
			for name, want := range tc.paths {
				cp := certPlan(t, p, name)
				wantPaths(t, cp, want...)
				if cp.Record.Account != "https://127.0.0.1:14000/my-account/7" || cp.Account.Prefix != "accounts/127.0.0.1_14000/lego@example.com" {
					t.Errorf("%s: account %s under %s", name, cp.Record.Account, cp.Account.Prefix)
				}
			}
			for name, want := range tc.unmap {
				if cp := certPlan(t, p, name); cp.Unmapped == nil || !strings.Contains(cp.Unmapped.Reason, want) {
					t.Errorf("%s: unmapped %+v, want a reason mentioning %q", name, cp.Unmapped, want)
				}
			}
			if tc.noteOn != "" {
				wantNote(t, certPlan(t, p, tc.noteOn), "--dns madeup", `unknown DNS provider "madeup"`)
			}
		})
	}
}

// wantPaths fails unless cp maps to exactly paths, each "name kind k=v...".
func wantPaths(t *testing.T, cp *CertPlan, paths ...string) {
	t.Helper()
	if cp.Unmapped != nil || cp.Err != nil || cp.Conflict != "" {
		t.Errorf("%s: not mapped: %+v %v %s", cp.Name, cp.Unmapped, cp.Err, cp.Conflict)
		return
	}
	var got []string
	for _, mp := range cp.Paths {
		s := mp.Ref.Name + " " + mp.Ref.Kind
		for _, k := range slices.Sorted(maps.Keys(mp.Ref.Settings)) {
			s += " " + k + "=" + mp.Ref.Settings[k]
		}
		got = append(got, s)
	}
	if !slices.Equal(got, paths) {
		t.Errorf("%s: paths\n%s\nwant\n%s", cp.Name, strings.Join(got, "\n"), strings.Join(paths, "\n"))
	}
	if len(cp.Record.Paths) != len(cp.Paths) {
		t.Errorf("%s: the record has %d paths, the plan %d", cp.Name, len(cp.Record.Paths), len(cp.Paths))
	}
}

// wantNote fails unless cp has a note on setting whose text mentions sub.
func wantNote(t *testing.T, cp *CertPlan, setting, sub string) {
	t.Helper()
	for _, n := range cp.Notes {
		if n.Setting == setting && strings.Contains(n.Reason+" "+n.Suggestion, sub) {
			return
		}
	}
	t.Errorf("%s: no note on %q mentioning %q in %+v", cp.Name, setting, sub, cp.Notes)
}

// TestImportTwoCertbotAccounts: certbot may keep two accounts at one CA,
// neither with a contact; Detour keeps one per CA and contact, so the
// certificates of the second are a conflict, not a silent change of
// account.
func TestImportTwoCertbotAccounts(t *testing.T) {
	d := newCertbotDir(t)
	d.lineage("first", 1, []string{"first.example.com"}, "authenticator = standalone")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	second := filepath.Join(d.dir, "accounts", "127.0.0.1:14000", "dir", "ffff")
	d.write(filepath.Join(second, "private_key.json"), ecJWK(key))
	d.write(filepath.Join(second, "regr.json"), `{"body": {}, "uri": "https://127.0.0.1:14000/my-account/2"}`)
	d.lineage("second", 1, []string{"second.example.com"}, "authenticator = standalone")
	conf := filepath.Join(d.dir, "renewal", "second.conf")
	raw, _ := os.ReadFile(conf)
	d.write(conf, strings.Replace(string(raw), "account = "+d.acctID, "account = ffff", 1))
	src, err := ReadCertbot(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	p := Plan(src, PlanOptions{StateDir: "/var/lib/detour"})
	if cp := certPlan(t, p, "first"); cp.Conflict != "" || cp.Account == nil {
		t.Errorf("first: %q", cp.Conflict)
	}
	wantIn(t, "second's conflict", certPlan(t, p, "second").Conflict, "my-account/2", "my-account/1", "one account per CA and contact")
	if len(p.Accounts) != 1 {
		t.Errorf("%d account plans, want 1", len(p.Accounts))
	}
}
