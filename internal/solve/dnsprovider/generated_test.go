//go:build !detour_slim

package dnsprovider

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// noNetwork is the transport of the factories under test: it records each
// request and fails it, so that a provider that calls its API while being
// built is seen (and no test reaches the network).
type noNetwork struct {
	mu    sync.Mutex
	calls []string
}

var errNoNetwork = errors.New("no network in tests")

func (n *noNetwork) RoundTrip(r *http.Request) (*http.Response, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.calls = append(n.calls, r.Method+" "+r.URL.Host)
	return nil, errNoNetwork
}

// generatedValues are credentials, beyond dummyValue's, that providers
// check the format of when they are built, or that lego reads as optional
// but the provider needs (one of two logins).
var generatedValues = map[string]map[string]string{
	"dnshomede":  {"DNSHOMEDE_CREDENTIALS": "example.test:secret"},
	"hurricane":  {"HURRICANE_TOKENS": "example.test:token"},
	"myaddr":     {"MYADDR_PRIVATE_KEYS_MAPPING": "example.test:key"},
	"syse":       {"SYSE_CREDENTIALS": "example.test:secret"},
	"gandiv5":    {"GANDIV5_PERSONAL_ACCESS_TOKEN": "pat"},
	"scaleway":   {"SCW_SECRET_KEY": "01234567-89ab-cdef-0123-456789abcdef"},
	"pdns":       {"PDNS_API_VERSION": "1"}, // else it asks the server at construction
	"hyperone":   {"HYPERONE_PASSPORT_LOCATION": "testdata/passport"},
	"transip":    {"TRANSIP_PRIVATE_KEY_PATH": "testdata/key"},
	"bluecatv2":  {},
	"technitium": {},
}

// dialsAtConstruction are providers whose NewDNSProviderConfig calls the
// API: with the transport failing, they fail to build, having sent their
// request through Detour's client (not around it).
var dialsAtConstruction = map[string]string{
	"rackspace": "fetches an identity token (identity.api.rackspacecloud.com) in NewDNSProviderConfig",
}

// dummyValue is a plausible value for a required key.
func dummyValue(key string) string {
	u := strings.ToUpper(key)
	switch {
	case strings.Contains(u, "URL") || strings.Contains(u, "ENDPOINT"):
		return "https://api.example.test/"
	case strings.Contains(u, "EMAIL"):
		return "user@example.test"
	case strings.HasSuffix(u, "ID"):
		return "12345"
	}
	return "dummy-" + strings.ToLower(key)
}

// generatedCreds returns the credentials of a generated provider with
// every required key set.
func generatedCreds(t *testing.T, name string, f Factory) map[string]string {
	vals := map[string]string{}
	for _, k := range f.Keys {
		if k.Required {
			vals[k.Name] = dummyValue(k.Name)
		}
	}
	for k, v := range generatedValues[name] {
		if strings.HasPrefix(v, "testdata/") {
			v = testFile(t, v)
		}
		vals[k] = v
	}
	return vals
}

// testFile writes the files a provider reads at construction: a HyperOne
// passport, a TransIP private key, a Google service account key.
func testFile(t *testing.T, name string) string {
	t.Helper()
	var content []byte
	switch name {
	case "testdata/passport":
		content, _ = json.Marshal(map[string]string{"subject_id": "/iam/project/p/sa/s", "certificate_id": "c",
			"issuer": "https://api.hyperone.com/v2/iam/project/p/sa/s", "private_key": testKeyPEM(t)})
	case "testdata/key":
		content = []byte(testKeyPEM(t))
	case "testdata/gcloud":
		content, _ = json.Marshal(map[string]string{"type": "service_account", "project_id": "detour-test", "private_key_id": "k",
			"private_key": testKeyPEM(t), "client_email": "dns@detour-test.iam.gserviceaccount.com", "client_id": "1",
			"token_uri": "https://oauth2.googleapis.com/token"})
	default:
		t.Fatalf("no test file %s", name)
	}
	p := filepath.Join(t.TempDir(), filepath.Base(name))
	if err := os.WriteFile(p, content, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var testKey = sync.OnceValues(func() (string, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), nil
})

// testKeyPEM returns an RSA private key (PKCS #8, PEM), made once.
func testKeyPEM(t *testing.T) string {
	k, err := testKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// servedByGenerated returns the generated providers the catalog serves
// (not shadowed by a hand-written factory).
func servedByGenerated() []string {
	var out []string
	for _, n := range slices.Sorted(maps.Keys(generated)) {
		if _, hw := handWritten[n]; hw {
			continue
		}
		if _, hw := providers[n]; hw {
			continue
		}
		out = append(out, n)
	}
	return out
}

// TestGeneratedFactories builds every generated provider from credentials
// with its required keys, without the network, and then without each
// required key in turn: that must fail naming the key.
func TestGeneratedFactories(t *testing.T) {
	checkGenerated(t, nil)
}

// checkGenerated is TestGeneratedFactories; with built set, it also
// receives each provider built.
func checkGenerated(t *testing.T, built func(t *testing.T, name string, p any, vals map[string]string)) {
	names := servedByGenerated()
	if len(names) < 150 {
		t.Fatalf("only %d generated providers", len(names))
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			f := generated[name]
			vals := generatedCreds(t, name, f)
			net := &noNetwork{}
			p, err := build(name, f, NewCredentials("creds", vals), 0, net)
			if why, ok := dialsAtConstruction[name]; ok {
				if !errors.Is(err, errNoNetwork) && (err == nil || !strings.Contains(err.Error(), errNoNetwork.Error())) {
					t.Fatalf("%s: build = %v; want the transport's refusal (%s)", name, err, why)
				}
				if len(net.calls) == 0 {
					t.Fatalf("%s: no request went through Detour's client", name)
				}
				return
			}
			if err != nil {
				t.Fatalf("build with %v: %v", vals, err)
			}
			if p == nil {
				t.Fatal("build returned no provider")
			}
			if len(net.calls) > 0 {
				t.Errorf("building called the API: %q", net.calls)
			}
			if built != nil {
				built(t, name, p, vals)
			}
			for _, k := range f.Keys {
				if !k.Required {
					continue
				}
				less := maps.Clone(vals)
				delete(less, k.Name)
				_, err := build(name, f, NewCredentials("creds", less), 0, &noNetwork{})
				if err == nil || !strings.Contains(err.Error(), "creds lacks "+k.Name+",") || !strings.Contains(err.Error(), "DNS provider "+name) {
					t.Errorf("without %s: build = %v; want an error naming %s and %s", k.Name, err, k.Name, name)
				}
			}
		})
	}
}

// TestGeneratedIgnoresEnvironment sets every variable lego reads for every
// generated provider (and its _FILE form) to a wrong value: the providers
// build as without them, no value from the environment reaches a Config,
// and a key missing from the file is still missing.
func TestGeneratedIgnoresEnvironment(t *testing.T) {
	envFile := filepath.Join(t.TempDir(), "from-env-file")
	if err := os.WriteFile(envFile, []byte("from-env-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range generated {
		for _, k := range f.Keys {
			for _, n := range append([]string{k.Name}, k.Also...) {
				t.Setenv(n, "from-env")
				t.Setenv(n+"_FILE", envFile)
			}
		}
	}
	checkGenerated(t, func(t *testing.T, name string, p any, vals map[string]string) {
		if path, ok := findString(reflect.ValueOf(p), "config", 0, "from-env"); ok {
			t.Errorf("%s holds a value from the environment", path)
		}
	})
	// Vultr, field by field: the file's key, lego's default TTL.
	p, err := build("vultr", generated["vultr"], NewCredentials("creds", map[string]string{"vultr_api_key": "file-key"}), 0, &noNetwork{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := reflect.ValueOf(p).Elem().FieldByName("config").Elem()
	if key, ttl := cfg.FieldByName("APIKey").String(), cfg.FieldByName("TTL").Int(); key != "file-key" || ttl != 120 {
		t.Errorf("vultr Config has APIKey %q, TTL %d; want the file's file-key and the default 120", key, ttl)
	}
}

// findString looks for a string with prefix in v, down to a few levels,
// and returns where.
func findString(v reflect.Value, path string, depth int, prefix string) (string, bool) {
	if depth > 4 || !v.IsValid() {
		return "", false
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return "", false
		}
		return findString(v.Elem(), path, depth, prefix)
	case reflect.String:
		return path, strings.HasPrefix(v.String(), prefix)
	case reflect.Struct:
		for i := range v.NumField() {
			if p, ok := findString(v.Field(i), path+"."+v.Type().Field(i).Name, depth+1, prefix); ok {
				return p, true
			}
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			if p, ok := findString(v.MapIndex(k), path+"["+k.String()+"]", depth+1, prefix); ok {
				return p, true
			}
		}
	case reflect.Slice:
		for i := range min(v.Len(), 8) {
			if p, ok := findString(v.Index(i), path, depth+1, prefix); ok {
				return p, true
			}
		}
	}
	return "", false
}

// TestGeneratedKeys: keys are accepted as lego spells them and in lower
// case, by their fallback names, and an unknown one gets "did you mean".
func TestGeneratedKeys(t *testing.T) {
	tests := []struct {
		name, provider, creds string
		want                  string // "" for success
	}{
		{"lego's spelling", "linode", "LINODE_TOKEN = t\n", ""},
		{"lower case", "linode", "linode_token = t\n", ""},
		{"mixed case", "linode", "Linode_Token = t\nlinode_ttl = 600\n", ""},
		{"alias of the provider", "linodev4", "LINODE_TOKEN = t\n", ""},
		{"both cases", "linode", "LINODE_TOKEN = t\nlinode_token = u\n", "linode_token is set twice (also as LINODE_TOKEN"},
		{"fallback name", "scaleway", "SCALEWAY_API_TOKEN = 01234567-89ab-cdef-0123-456789abcdef\n", ""},
		{"name and fallback", "scaleway", "SCW_SECRET_KEY = 01234567-89ab-cdef-0123-456789abcdef\nSCALEWAY_API_TOKEN = 01234567-89ab-cdef-0123-456789abcdef\n",
			"are one key of DNS provider scaleway"},
		{"misspelt", "linode", "LINODE_TOKN = t\n", `LINODE_TOKN is not a credential of DNS provider linode (did you mean "LINODE_TOKEN"?); it reads LINODE_TOKEN, LINODE_TTL`},
		{"propagation timeout", "linode", "LINODE_TOKEN = t\nLINODE_PROPAGATION_TIMEOUT = 600\n", "set propagation_timeout in the path's table instead"},
		{"missing", "porkbun", "PORKBUN_API_KEY = k\n", "lacks PORKBUN_SECRET_API_KEY, which DNS provider porkbun needs"},
		{"not a number", "linode", "LINODE_TOKEN = t\nLINODE_TTL = soon\n", `LINODE_TTL = "soon" is not a whole number (DNS provider linode)`},
		{"no network at construction", "pdns", "PDNS_API_KEY = k\nPDNS_API_URL = https://pdns.example.test\nPDNS_API_VERSION = 1\n", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Options{Provider: tc.provider, CredentialsFile: writeCreds(t, tc.creds, 0o600), Transport: &noNetwork{}})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("New = %v; want an error containing %q", err, tc.want)
			}
		})
	}
}

// TestGeneratedNames: aliases resolve, a lego provider Detour leaves out
// says why, and every lego provider is generated, hand-written or listed
// as left out.
func TestGeneratedNames(t *testing.T) {
	for alias, want := range map[string]string{"powerdns": "pdns", "linodev4": "linode", "he": "hurricane", "gandiv5": "gandiv5"} {
		if p, err := Describe(alias); err != nil || p.Name != want {
			t.Errorf("Describe(%s) = %s, %v; want %s", alias, p.Name, err, want)
		}
	}
	for name, want := range map[string]string{
		"lightsail": "lego's lightsail provider is not in Detour: lego builds its AWS client",
		"linod":     `did you mean "linode"?`,
		"dnsupdate": "use Detour's rfc2136 path kind",
	} {
		_, err := New(Options{Provider: name, CredentialsFile: "/nonexistent"})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("New(%s) = %v; want %q", name, err, want)
		}
		if err := checkProvider(name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("checkProvider(%s) = %v; want %q", name, err, want)
		}
	}
	if len(catalog) < 185 {
		t.Errorf("the catalog has %d providers", len(catalog))
	}
	for name := range notGenerated {
		if _, ok := generated[name]; ok {
			t.Errorf("%s is both generated and not", name)
		}
	}
	p, err := Describe("porkbun")
	if err != nil || !p.Generated || p.Timeout != 10*time.Minute || len(p.Keys) < 2 || !p.Keys[0].Secret || !p.Keys[0].Required {
		t.Errorf("Describe(porkbun) = %+v, %v", p, err)
	}
}

// handWrittenValues are credentials for each factory of handWritten.
var handWrittenValues = map[string]map[string]string{
	"namecheap":    {"NAMECHEAP_API_USER": "u", "NAMECHEAP_API_KEY": "k", "NAMECHEAP_CLIENT_IP": "192.0.2.1"}, // no IP lookup
	"gcloud":       {"GCE_SERVICE_ACCOUNT_FILE": "testdata/gcloud"},
	"azuredns":     {"AZURE_CLIENT_ID": "c", "AZURE_CLIENT_SECRET": "s", "AZURE_TENANT_ID": "t", "AZURE_SUBSCRIPTION_ID": "sub", "AZURE_RESOURCE_GROUP": "rg"},
	"cloudns":      {"CLOUDNS_AUTH_ID": "1", "CLOUDNS_AUTH_PASSWORD": "p"},
	"gigahostno":   {"GIGAHOSTNO_API_KEY": "k"},
	"joker":        {"JOKER_API_KEY": "k"},
	"mythicbeasts": {"MYTHICBEASTS_USERNAME": "u", "MYTHICBEASTS_PASSWORD": "p"},
	"otc":          {"OTC_DOMAIN_NAME": "d", "OTC_USER_NAME": "u", "OTC_PASSWORD": "p", "OTC_PROJECT_NAME": "eu-de"},
	"alidns":       {"ALICLOUD_ACCESS_KEY": "a", "ALICLOUD_SECRET_KEY": "s"},
	"nicmanager":   {"NICMANAGER_API_PASSWORD": "p", "NICMANAGER_API_EMAIL": "me@example.test"},
	"namesurfer":   {"NAMESURFER_BASE_URL": "https://ns.example.test/", "NAMESURFER_API_KEY": "k", "NAMESURFER_API_SECRET": "s"},
	"artfiles":     {"ARTFILES_USERNAME": "u", "ARTFILES_PASSWORD": "p"},
	"selfhostde":   {"SELFHOSTDE_USERNAME": "u", "SELFHOSTDE_PASSWORD": "p", "SELFHOSTDE_RECORDS_MAPPING": "example.test:123:456,example.org:789"},
	"aliesa":       {"ALIESA_ACCESS_KEY": "a", "ALIESA_SECRET_KEY": "s"},
	"edgeone":      {"EDGEONE_SECRET_ID": "id", "EDGEONE_SECRET_KEY": "k"},
	"linode":       {"LINODE_TOKEN": "t"},
}

// handWrittenDials are hand-written providers whose lego client calls the
// API when it is built, around Detour's HTTP client: the test cannot build
// them offline (it still checks the missing keys, reported before).
var handWrittenDials = map[string]string{
	"azuredns": "lego lists the subscription's zones (Azure Resource Graph) in NewDNSProviderConfig, through the Azure SDK's own HTTP pipeline",
}

// TestHandWrittenFactories builds each of handWritten from its test
// credentials without the network, also with lego's variables set to
// wrong values in the environment, and without each key the test gives,
// which must fail naming it (or its alternative).
func TestHandWrittenFactories(t *testing.T) {
	for _, f := range handWritten {
		for _, k := range f.Keys {
			t.Setenv(k.Name, "from-env")
		}
	}
	if got, want := slices.Sorted(maps.Keys(handWritten)), slices.Sorted(maps.Keys(handWrittenValues)); !slices.Equal(got, want) {
		t.Fatalf("handWritten has %q, the test covers %q", got, want)
	}
	for _, name := range slices.Sorted(maps.Keys(handWritten)) {
		t.Run(name, func(t *testing.T) {
			f := handWritten[name]
			vals := map[string]string{}
			for k, v := range handWrittenValues[name] {
				if strings.HasPrefix(v, "testdata/") {
					v = testFile(t, v)
				}
				vals[k] = v
			}
			if why, ok := handWrittenDials[name]; ok {
				t.Logf("not built: %s", why)
			} else {
				net := &noNetwork{}
				p, err := build(name, f, NewCredentials("creds", vals), 0, net)
				if err != nil {
					t.Fatalf("build with %v: %v", vals, err)
				}
				if len(net.calls) > 0 {
					t.Errorf("building called the API: %q", net.calls)
				}
				if path, ok := findString(reflect.ValueOf(p), "provider", 0, "from-env"); ok {
					t.Errorf("%s holds a value from the environment", path)
				}
			}
			for k := range vals {
				if i := slices.IndexFunc(f.Keys, func(key Key) bool { return key.Name == k }); i < 0 || !f.Keys[i].Required {
					continue // optional, or an alternative login
				}
				less := maps.Clone(vals)
				delete(less, k)
				_, err := build(name, f, NewCredentials("creds", less), 0, &noNetwork{})
				if err == nil || !strings.Contains(err.Error(), "creds lacks ") {
					t.Errorf("without %s: build = %v; want a missing-key error", k, err)
				}
			}
		})
	}
	for alias, want := range map[string]string{"google": "gcloud", "azure": "azuredns", "aliyun": "alidns"} {
		if p, err := Describe(alias); err != nil || p.Name != want || p.Generated {
			t.Errorf("Describe(%s) = %+v, %v; want the hand-written %s", alias, p, err, want)
		}
	}
}

// TestHandWrittenParsers: selfhostde's records mapping is read as lego
// reads it, and artfiles keeps the Authorization header on a redirect to
// another ArtFiles server only.
func TestHandWrittenParsers(t *testing.T) {
	c := NewCredentials("creds", map[string]string{"m": " example.com:1:2 , example.org:3"})
	if m := selfhostdeMapping(c, "m"); len(m) != 2 || m["example.com"].Next() != "1" || m["example.com"].Next() != "2" || m["example.org"].Next() != "3" || c.failed() {
		t.Errorf("selfhostdeMapping = %v, %v", m, c.Invalid())
	}
	for _, bad := range []string{"example.com", "example.com:1:2:3", ":1", "example.com:", "a:1,,b:2", "a::1"} {
		c := NewCredentials("creds", map[string]string{"m": bad})
		if selfhostdeMapping(c, "m"); len(c.Invalid()) != 1 {
			t.Errorf("selfhostdeMapping(%q) is not refused", bad)
		}
	}
	for host, keep := range map[string]bool{"other.c.artfiles.de": true, "www.artfiles.de": false, "evil.example": false} {
		prev, _ := http.NewRequest(http.MethodGet, "https://dcp.c.artfiles.de/api/", nil)
		prev.Header.Set("Authorization", "Basic x")
		req, _ := http.NewRequest(http.MethodGet, "https://"+host+"/api/", nil)
		if err := artfilesRedirect(req, []*http.Request{prev}); err != nil || (req.Header.Get("Authorization") != "") != keep {
			t.Errorf("redirect to %s: %v, Authorization %q", host, err, req.Header.Get("Authorization"))
		}
	}
}
