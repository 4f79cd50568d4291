package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/ident"
)

func TestExampleParses(t *testing.T) {
	cfg, err := Parse("example.toml", []byte(Example))
	if err != nil {
		t.Fatalf("Example does not validate:\n%v", err)
	}
	if cfg.Email != "ops@example.com" || cfg.CA != "letsencrypt" || cfg.KeyType != acme.ECDSAP256 || !cfg.AgreeTOS {
		t.Errorf("top level = %+v", cfg)
	}
	corp, ok := cfg.CAs["corp"]
	if !ok || corp.EABKeyID != "kid-123" || corp.Email != "pki-team@example.com" || corp.Staging == "" {
		t.Errorf("ca.corp = %+v", corp)
	}
	wantPaths := map[string]Path{
		"web":       {Name: "web", Kind: "standalone", Settings: map[string]string{"challenge": "http-01", "listen": ":80"}},
		"dns":       {Name: "dns", Kind: "dns-embedded", Settings: map[string]string{"challenge": "dns-01", "listen": "[::]:53"}},
		"docroot":   {Name: "docroot", Kind: "webroot", Settings: map[string]string{"challenge": "http-01", "root": "/var/www/html"}},
		"forward":   {Name: "forward", Kind: "side-port", Settings: map[string]string{"challenge": "http-01", "listen": "127.0.0.1:8402"}},
		"nofiles":   {Name: "nofiles", Kind: "stateless", Settings: map[string]string{"challenge": "http-01"}},
		"alpn":      {Name: "alpn", Kind: "alpn-forward", Settings: map[string]string{"challenge": "tls-alpn-01", "listen": "127.0.0.1:8403"}},
		"door":      {Name: "door", Kind: "front-door", Settings: map[string]string{"challenge": "tls-alpn-01", "router": "127.0.0.1:443"}},
		"window":    {Name: "window", Kind: "standalone", Settings: map[string]string{"challenge": "http-01", "listen": ":80", "firewall": "nftables", "firewall_timeout": "10m"}},
		"bind":      {Name: "bind", Kind: "rfc2136", Settings: map[string]string{"challenge": "dns-01", "tsig_algorithm": "hmac-sha256", "tsig_key": "detour-key", "tsig_secret_file": "/etc/detour/tsig.secret"}},
		"delegated": {Name: "delegated", Kind: "acme-dns", Settings: map[string]string{"challenge": "dns-01", "server": "https://auth.example.net"}},
		"cloud":     {Name: "cloud", Kind: "dns-provider", Settings: map[string]string{"challenge": "dns-01", "credentials_file": "/etc/detour/cloudflare.ini", "provider": "cloudflare"}},
		"standing":  {Name: "standing", Kind: "persist", Settings: map[string]string{"challenge": "dns-persist-01", "policy": "wildcard"}},
		"script":    {Name: "script", Kind: "exec", Settings: map[string]string{"challenge": "http-01", "auth": "/etc/detour/hooks/publish", "cleanup": "/etc/detour/hooks/unpublish", "timeout": "2m"}},
	}
	if !reflect.DeepEqual(cfg.Paths, wantPaths) {
		t.Errorf("paths = %+v, want %+v", cfg.Paths, wantPaths)
	}
	var names []string
	for _, c := range cfg.Certificates {
		names = append(names, c.Name)
	}
	if want := []string{"example", "wildcard.example.com", "lb-address"}; !reflect.DeepEqual(names, want) {
		t.Errorf("certificate names = %q, want %q", names, want)
	}
	w, err := cfg.Certificate("wildcard.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if w.CA != "corp" || w.KeyType != "ecdsa-p384" || w.Profile != "tlsserver" || w.PreferredChain != "ISRG Root X1" ||
		!reflect.DeepEqual(w.Paths, []string{"dns", "web"}) || !w.Identifiers[0].IsWildcard() {
		t.Errorf("wildcard certificate = %+v", w)
	}
	if lines := strings.Split(Example, "\n"); !strings.HasPrefix(lines[w.Line-1], "[[certificate]]") {
		t.Errorf("Line = %d points at %q, want a [[certificate]] header", w.Line, lines[w.Line-1])
	}
}

func TestDefaults(t *testing.T) {
	doc := `[[certificate]]
domains = ["*.Example.com", "example.com"]
paths = ["dns-embedded"]

[[certificate]]
domains = ["2001:db8::1"]

[path.alpn]
kind = "standalone"
challenge = "tls-alpn-01"

[path.dns]
kind = "dns-embedded"
`
	cfg, err := Parse(testFile, []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.File != testFile || cfg.StateDir != DefaultStateDir || cfg.CA != DefaultCA || cfg.KeyType != acme.ECDSAP256 || cfg.AgreeTOS {
		t.Errorf("top-level defaults = %+v", cfg)
	}
	want := []Certificate{
		{
			Name: "wildcard.example.com", Domains: []string{"*.Example.com", "example.com"},
			Identifiers: []ident.Identifier{{Type: ident.TypeDNS, Value: "*.example.com"}, {Type: ident.TypeDNS, Value: "example.com"}},
			CA:          DefaultCA, KeyType: "ecdsa-p256", Paths: []string{"dns-embedded"}, Line: 1, SelfCheck: true,
		},
		{
			Name: "2001-db8--1", Domains: []string{"2001:db8::1"},
			Identifiers: []ident.Identifier{{Type: ident.TypeIP, Value: "2001:db8::1"}},
			CA:          DefaultCA, KeyType: "ecdsa-p256", Paths: []string{"standalone-http"}, Line: 5, SelfCheck: true,
		},
	}
	if !reflect.DeepEqual(cfg.Certificates, want) {
		t.Errorf("certificates =\n%+v\nwant\n%+v", cfg.Certificates, want)
	}
	wantPaths := map[string]Path{
		"alpn": {Name: "alpn", Kind: "standalone", Settings: map[string]string{"challenge": "tls-alpn-01", "listen": ":443"}},
		"dns":  {Name: "dns", Kind: "dns-embedded", Settings: map[string]string{"challenge": "dns-01", "listen": ":53"}},
	}
	if !reflect.DeepEqual(cfg.Paths, wantPaths) {
		t.Errorf("paths = %+v, want %+v", cfg.Paths, wantPaths)
	}

	d := Default()
	if d.StateDir != DefaultStateDir || d.CA != DefaultCA || d.KeyType != acme.ECDSAP256 || len(d.Certificates) != 0 {
		t.Errorf("Default() = %+v", d)
	}
}

func TestCAAlias(t *testing.T) {
	cfg, err := Parse(testFile, []byte("ca = \"buypass\"\n[[certificate]]\ndomains = [\"example.com\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CA != "buypass" || cfg.Certificates[0].CA != "buypass" {
		t.Errorf("CA = %q, certificate CA = %q; want buypass", cfg.CA, cfg.Certificates[0].CA)
	}
}

func TestShortcutTable(t *testing.T) {
	doc := "email = \"a@example.com\"\n[ca.zerossl]\neab_kid = \"kid\"\neab_hmac_key = \"c2VjcmV0\"\n[[certificate]]\ndomains = [\"example.com\"]\nca = \"zerossl\"\n"
	cfg, err := Parse(testFile, []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := CA{Name: "zerossl", Directory: zeroSSLProd, EABKeyID: "kid", EABHMACKey: "c2VjcmV0", Email: "a@example.com", RequiresEAB: true}
	got, err := ResolveCA(cfg, "zerossl")
	if err != nil || got != want {
		t.Errorf("ResolveCA(zerossl) = %+v, %v; want %+v", got, err, want)
	}
}

func TestResolveCA(t *testing.T) {
	cfg := &Config{Email: "ops@example.com", CA: "corp", CAs: map[string]CA{
		"corp": {Name: "corp", Directory: "https://acme.corp.example/dir", Email: "pki@example.com"},
	}}
	tests := []struct {
		cfg     *Config
		ref     string
		want    CA
		wantErr []string
	}{
		{nil, "letsencrypt", CA{Name: "letsencrypt", Directory: letsEncryptProd, Staging: letsEncryptStaging}, nil},
		{nil, "letsencrypt-staging", CA{Name: "letsencrypt-staging", Directory: letsEncryptStaging, Staging: letsEncryptStaging}, nil},
		{nil, "zerossl", CA{Name: "zerossl", Directory: "https://acme.zerossl.com/v2/DV90", RequiresEAB: true}, nil},
		{nil, "google", CA{Name: "google", Directory: "https://dv.acme-v02.api.pki.goog/directory", Staging: googleStaging, RequiresEAB: true}, nil},
		{nil, "google-staging", CA{Name: "google-staging", Directory: "https://dv.acme-v02.test-api.pki.goog/directory", Staging: googleStaging, RequiresEAB: true}, nil},
		{nil, "buypass", CA{Name: "buypass", Directory: "https://api.buypass.com/acme/directory", Staging: buypassStaging}, nil},
		{nil, "buypass-staging", CA{Name: "buypass-staging", Directory: "https://api.test4.buypass.no/acme/directory", Staging: buypassStaging}, nil},
		{nil, "", CA{Name: "letsencrypt", Directory: letsEncryptProd, Staging: letsEncryptStaging}, nil},
		{cfg, "letsencrypt", CA{Name: "letsencrypt", Directory: letsEncryptProd, Staging: letsEncryptStaging, Email: "ops@example.com"}, nil},
		{cfg, "corp", cfg.CAs["corp"], nil},
		{cfg, "", cfg.CAs["corp"], nil},
		{cfg, "https://acme.example.net/directory", CA{Name: "https://acme.example.net/directory", Directory: "https://acme.example.net/directory", Email: "ops@example.com"}, nil},
		{nil, "https://acme-v02.api.letsencrypt.org/directory", CA{Name: letsEncryptProd, Directory: letsEncryptProd, Staging: letsEncryptStaging}, nil},
		{nil, "https://dv.acme-v02.api.pki.goog/directory", CA{Name: googleProd, Directory: googleProd, Staging: googleStaging, RequiresEAB: true}, nil},
		{nil, "http://127.0.0.1:14000/dir", CA{Name: "http://127.0.0.1:14000/dir", Directory: "http://127.0.0.1:14000/dir"}, nil},
		{nil, "http://[::1]:14000/dir", CA{Name: "http://[::1]:14000/dir", Directory: "http://[::1]:14000/dir"}, nil},
		{nil, "http://localhost/dir", CA{Name: "http://localhost/dir", Directory: "http://localhost/dir"}, nil},
		{nil, "http://acme.example.net/dir", CA{}, []string{"must use https"}},
		{nil, "https:///dir", CA{}, []string{"has no host"}},
		{nil, "letsencrytp", CA{}, []string{`unknown CA "letsencrytp"`, `did you mean "letsencrypt"?`, "buypass-staging", "configured: none"}},
		{cfg, "crop", CA{}, []string{`did you mean "corp"?`, "configured: corp"}},
		{cfg, "nothing-like-it", CA{}, []string{`unknown CA "nothing-like-it"`, "configured: corp", "directory URL"}},
	}
	for _, tt := range tests {
		name := tt.ref
		if tt.cfg != nil {
			name += " with config"
		}
		t.Run(name, func(t *testing.T) {
			got, err := ResolveCA(tt.cfg, tt.ref)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("ResolveCA = %+v, want an error", got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				if strings.Contains(err.Error(), "did you mean") != strings.Contains(strings.Join(tt.wantErr, " "), "did you mean") {
					t.Errorf("unexpected suggestion in %q", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("ResolveCA =\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
	for _, n := range Shortcuts() {
		if _, err := ResolveCA(nil, n); err != nil {
			t.Errorf("shortcut %s: %v", n, err)
		}
	}
}

func TestEABKeyFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("eab.key", "  c2VjcmV0LWtleQ\n")
	write("empty.key", "\n")
	write("bad.key", "not base64url!\n")
	doc := func(keyFile string) string {
		return "[ca.corp]\ndirectory = \"https://acme.corp.example/dir\"\neab_kid = \"kid\"\neab_hmac_key_file = \"" + keyFile + "\"\n"
	}
	tests := []struct {
		name, keyFile, want string
		wantErr             []string
	}{
		{"absolute", filepath.Join(dir, "eab.key"), "c2VjcmV0LWtleQ", nil},
		{"relative to the config file", "eab.key", "c2VjcmV0LWtleQ", nil},
		{"missing", "missing.key", "", []string{":4: ca.corp.eab_hmac_key_file: reading the EAB HMAC key", "missing.key"}},
		{"empty", "empty.key", "", []string{":4: ca.corp.eab_hmac_key_file:", "empty.key is empty"}},
		{"not base64url", "bad.key", "", []string{":4: ca.corp.eab_hmac_key_file:", "bad.key is not valid base64url"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(dir, "detour.toml")
			write("detour.toml", doc(tt.keyFile))
			cfg, err := Load(file)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatal("Load succeeded")
				}
				if n := strings.Count(err.Error(), "\n"); n != 0 {
					t.Errorf("want one error, got:\n%v", err)
				}
				for _, w := range append(tt.wantErr, file) {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.CAs["corp"].EABHMACKey; got != tt.want {
				t.Errorf("EABHMACKey = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestRootBundle(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test Root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"good.pem":    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"nocert.pem":  []byte("just text\n"),
		"keyonly.pem": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}),
		"broken.pem":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}),
	}
	for n, b := range files {
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		file    string
		wantErr string
	}{
		{"good.pem", ""},
		{"nocert.pem", "holds no PEM certificate"},
		{"keyonly.pem", "holds no PEM certificate"},
		{"broken.pem", "certificate 1 does not parse"},
		{"absent.pem", "reading the root bundle"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join(dir, tt.file)
			doc := "[ca.corp]\ndirectory = \"https://acme.corp.example/dir\"\nroot_bundle = \"" + path + "\"\n"
			cfg, err := Parse(testFile, []byte(doc))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if got := cfg.CAs["corp"].RootBundle; got != path {
					t.Errorf("RootBundle = %q, want %q", got, path)
				}
				return
			}
			if err == nil {
				t.Fatal("Parse succeeded")
			}
			for _, w := range []string{testFile + ":3: ca.corp.root_bundle:", tt.wantErr, tt.file} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestLoad(t *testing.T) {
	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "detour.toml")
		_, err := Load(path)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("Load = %v, want fs.ErrNotExist", err)
		}
		for _, w := range []string{path, "does not exist", "detour issue -d", "detour config example"} {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q does not mention %q", err, w)
			}
		}
	})
	t.Run("example file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "detour.toml")
		if err := os.WriteFile(path, []byte(Example), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.File != path || len(cfg.Certificates) != 3 {
			t.Errorf("Load = %+v", cfg)
		}
	})
	t.Run("error names the file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "detour.toml")
		if err := os.WriteFile(path, []byte("\n\nkey_typ = \"rsa2048\"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		if want := path + `:3: key_typ: unknown key "key_typ"; did you mean "key_type"?`; err == nil || err.Error() != want {
			t.Errorf("Load error = %v, want %s", err, want)
		}
	})
}

func TestLookups(t *testing.T) {
	cfg, err := Parse("example.toml", []byte(Example))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"web", "dns", "standalone-http", "standalone-tls-alpn", "dns-embedded"} {
		p, err := cfg.Path(name)
		if err != nil || p.Name != name {
			t.Errorf("Path(%q) = %+v, %v", name, p, err)
		}
	}
	if _, err := cfg.Path("wbe"); err == nil || !strings.Contains(err.Error(), `did you mean "web"?`) {
		t.Errorf("Path(wbe) error = %v", err)
	}
	var nilCfg *Config
	if p, err := nilCfg.Path("dns-embedded"); err != nil || p.Setting("listen") != ":53" {
		t.Errorf("nil Config Path(dns-embedded) = %+v, %v", p, err)
	}
	if _, err := cfg.Certificate("exmaple"); err == nil ||
		!strings.Contains(err.Error(), `did you mean "example"?`) || !strings.Contains(err.Error(), `"lb-address"`) {
		t.Errorf("Certificate(exmaple) error = %v", err)
	}
}

func TestChallengeOf(t *testing.T) {
	cfg, err := Parse(testFile, []byte("[path.a]\nkind = \"standalone\"\n[path.b]\nkind = \"standalone\"\nchallenge = \"tls-alpn-01\"\n[path.c]\nkind = \"dns-embedded\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		path string
		want string
	}{
		{"a", "http-01"},
		{"b", "tls-alpn-01"},
		{"c", "dns-01"},
		{"standalone-tls-alpn", "tls-alpn-01"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			p, err := cfg.Path(tt.path)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Challenge(); got != tt.want {
				t.Errorf("Challenge(%+v) = %q, want %q", p, got, tt.want)
			}
		})
	}
}

// Settings a kind's spec does not list are rejected with the line of the
// key (stateless has no setting but challenge).
func TestKindTableEntry(t *testing.T) {
	cfg, err := Parse(testFile, []byte("[path.w]\nkind = \"stateless\"\n[[certificate]]\ndomains = [\"example.com\"]\npaths = [\"w\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p := cfg.Paths["w"]; p.Challenge() != "http-01" || p.Setting("listen") != "" {
		t.Errorf("path = %+v, want http-01 with no listener", p)
	}
	_, err = Parse(testFile, []byte("[path.w]\nkind = \"stateless\"\nlisten = \":80\"\n"))
	want := testFile + `:3: path.w.listen: listen does not apply to kind "stateless"; remove it (settings of this kind: "challenge")`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
}

func TestNewPathKinds(t *testing.T) {
	good := `
[path.www]
kind = "webroot"
root = "/var/www/html"

[path.side]
kind = "side-port"
listen = "unix:/run/detour/http.sock"

[path.nofile]
kind = "stateless"

[path.fwd]
kind = "alpn-forward"

[path.door]
kind = "front-door"

[[certificate]]
domains = ["example.com"]
paths = ["www", "side", "nofile", "fwd", "door"]
self_check = false
deploy_hook = "systemctl reload nginx"
`
	cfg, err := Parse(testFile, []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]Path{
		"www":    {Name: "www", Kind: "webroot", Settings: map[string]string{"challenge": "http-01", "root": "/var/www/html"}},
		"side":   {Name: "side", Kind: "side-port", Settings: map[string]string{"challenge": "http-01", "listen": "unix:/run/detour/http.sock"}},
		"nofile": {Name: "nofile", Kind: "stateless", Settings: map[string]string{"challenge": "http-01"}},
		"fwd":    {Name: "fwd", Kind: "alpn-forward", Settings: map[string]string{"challenge": "tls-alpn-01", "listen": "127.0.0.1:8403"}},
		"door":   {Name: "door", Kind: "front-door", Settings: map[string]string{"challenge": "tls-alpn-01", "router": "127.0.0.1:443"}},
	} {
		if got := cfg.Paths[name]; !reflect.DeepEqual(got, want) {
			t.Errorf("path %s = %+v, want %+v", name, got, want)
		}
	}
	c := cfg.Certificates[0]
	if c.SelfCheck || c.DeployHook != "systemctl reload nginx" {
		t.Errorf("certificate = %+v", c)
	}
	bad := []struct{ doc, want string }{
		{"[path.w]\nkind = \"webroot\"\n", testFile + ":1: path.w: root is missing"},
		{"[path.w]\nkind = \"webroot\"\nroot = \"html\"\n", testFile + ":3: path.w.root: \"html\" must be an absolute path"},
		{"[path.s]\nkind = \"side-port\"\nlisten = \"unix:run/x.sock\"\n", testFile + ":3: path.s.listen: \"unix:run/x.sock\": a unix socket path must be absolute"},
		{"[path.s]\nkind = \"stateless\"\nlisten = \":80\"\n", testFile + ":3: path.s.listen: listen does not apply to kind \"stateless\""},
		{"[path.d]\nkind = \"front-door\"\nchallenge = \"http-01\"\n", "is not available for kind \"front-door\""},
	}
	for _, tc := range bad {
		_, err := Parse(testFile, []byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want it to contain %q", tc.doc, err, tc.want)
		}
	}
}

func TestRouterTable(t *testing.T) {
	cfg, err := Parse(testFile, []byte(`
[router]
listen = ":443"
backend = "127.0.0.1:8443"
proxy_protocol = true

[[router.route]]
sni = "*.apps.example.com"
backend = "unix:/run/apps.sock"

[[router.route]]
sni = "mail.example.com"
backend = "127.0.0.1:9443"
`))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Router
	if r.ListenAddr() != ":443" || r.Backend != "127.0.0.1:8443" || !r.ProxyProtocol || len(r.Routes) != 2 || r.Routes[1].SNI != "mail.example.com" || r.Routes[1].Line != 11 {
		t.Errorf("router = %+v", r)
	}
	for _, tc := range []struct{ doc, want string }{
		{"[router]\nbackend = \"8443\"\n", testFile + ":2: router.backend: \"8443\" is not host:port"},
		{"[router]\n[[router.route]]\nbackend = \"127.0.0.1:1\"\n", testFile + ":2: router.route[0]: sni is missing"},
		{"[router]\n[[router.route]]\nsni = \"a*.example.com\"\nbackend = \"127.0.0.1:1\"\n", "a wildcard route must be written"},
		{"[router]\nbakend = \"127.0.0.1:1\"\n", "did you mean \"backend\""},
	} {
		_, err := Parse(testFile, []byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want %q", tc.doc, err, tc.want)
		}
	}
	if d := Default(); d.Router.ListenAddr() != DefaultRouterListen {
		t.Errorf("default router listen = %q", d.Router.ListenAddr())
	}
}
