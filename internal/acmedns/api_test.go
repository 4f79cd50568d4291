package acmedns

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestRegisterResponse(t *testing.T) {
	e := start(t, envOptions{})
	tests := []struct {
		name      string
		body      string
		wantAllow []string
	}{
		{"no body", "", []string{}},
		{"null body (goacmedns without allowfrom)", "null\n", []string{}},
		{"allowfrom", `{"allowfrom": ["192.0.2.0/24", "[2001:db8::]/32"]}`, []string{"192.0.2.0/24", "2001:db8::/32"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(nil, http.MethodPost, "/register", nil, tc.body)
			if r.status != http.StatusCreated || r.ctype != "application/json" {
				t.Fatalf("status %d, content type %q, want 201 application/json (%s)", r.status, r.ctype, r.body)
			}
			var doc map[string]any
			if err := json.Unmarshal(r.body, &doc); err != nil {
				t.Fatal(err)
			}
			if keys := slices.Sorted(maps.Keys(doc)); !slices.Equal(keys, []string{"allowfrom", "fulldomain", "password", "subdomain", "username"}) {
				t.Errorf("response members %v, want acme-dns's five", keys)
			}
			var reg Registration
			_ = json.Unmarshal(r.body, &reg)
			switch {
			case !validUUID(reg.Username), !validUUID(reg.Subdomain):
				t.Errorf("username %q / subdomain %q are not UUIDs", reg.Username, reg.Subdomain)
			case !validKey(reg.Password):
				t.Errorf("password %q is not 40 base64url characters", reg.Password)
			case reg.Fulldomain != reg.Subdomain+".auth.detour.test":
				t.Errorf("fulldomain %q, want <subdomain>.auth.detour.test", reg.Fulldomain)
			case !slices.Equal(reg.AllowFrom, tc.wantAllow):
				t.Errorf("allowfrom %q, want %q", reg.AllowFrom, tc.wantAllow)
			}
		})
	}
	t.Run("credentials differ", func(t *testing.T) {
		a, b := e.register(""), e.register("")
		if a.Username == b.Username || a.Password == b.Password || a.Subdomain == b.Subdomain {
			t.Errorf("two registrations share credentials: %+v %+v", a, b)
		}
	})
}

func TestRegisterRefused(t *testing.T) {
	e := start(t, envOptions{})
	tests := []struct {
		name, body string
		status     int
		code       string
	}{
		{"malformed JSON", `{"allowfrom": `, http.StatusBadRequest, errMalformedJSON},
		{"not a CIDR", `{"allowfrom": ["not-an-ip/8"]}`, http.StatusBadRequest, errInvalidCIDR},
		{"bare address", `{"allowfrom": ["192.0.2.1"]}`, http.StatusBadRequest, errInvalidCIDR},
		{"one bad among good", `{"allowfrom": ["192.0.2.0/24", "192.0.2.0/33"]}`, http.StatusBadRequest, errInvalidCIDR},
		{"too large", `{"allowfrom": ["` + strings.Repeat("1", DefaultMaxBodyBytes) + `"]}`, http.StatusRequestEntityTooLarge, errTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(nil, http.MethodPost, "/register", nil, tc.body)
			if r.status != tc.status || r.errorCode(t) != tc.code {
				t.Errorf("got %d %s, want %d %q", r.status, r.body, tc.status, tc.code)
			}
		})
	}
	if n := len(e.api.accounts); n != 0 {
		t.Errorf("%d accounts created by refused registrations", n)
	}
}

func TestUpdateAndHealth(t *testing.T) {
	e := start(t, envOptions{})
	if r := e.do(nil, http.MethodGet, "/health", nil, ""); r.status != http.StatusOK {
		t.Errorf("GET /health: %d, want 200", r.status)
	}
	reg := e.register("")
	v := value("abc")
	r := e.update(nil, reg, reg.Subdomain, v)
	if r.status != http.StatusOK || r.ctype != "application/json" {
		t.Fatalf("update: %d %q %s", r.status, r.ctype, r.body)
	}
	var doc map[string]string
	if err := json.Unmarshal(r.body, &doc); err != nil || !maps.Equal(doc, map[string]string{"txt": v}) {
		t.Errorf("update body %s, want {\"txt\": %q}", r.body, v)
	}
	if got := e.txt(reg.Fulldomain); !slices.Equal(got, []string{v}) {
		t.Errorf("DNS serves %q at %s, want [%s]", got, reg.Fulldomain, v)
	}
	if r := e.do(nil, http.MethodGet, "/update", nil, ""); r.status != http.StatusMethodNotAllowed {
		t.Errorf("GET /update: %d, want 405", r.status)
	}
}

func TestUpdateRefused(t *testing.T) {
	e := start(t, envOptions{})
	reg, other := e.register(""), e.register("")
	v := value("xyz")
	hdr := func(user, key string) map[string]string {
		return map[string]string{"X-Api-User": user, "X-Api-Key": key}
	}
	body := func(sub, txt string) string { return jsonBody(map[string]string{"subdomain": sub, "txt": txt}) }
	wrongKey := reg.Password[:39] + "A"
	if wrongKey == reg.Password {
		wrongKey = reg.Password[:39] + "B"
	}
	tests := []struct {
		name   string
		hdr    map[string]string
		body   string
		status int
		code   string
	}{
		{"wrong key", hdr(reg.Username, wrongKey), body(reg.Subdomain, v), http.StatusUnauthorized, errForbidden},
		{"other account's key", hdr(reg.Username, other.Password), body(reg.Subdomain, v), http.StatusUnauthorized, errForbidden},
		{"unknown user", hdr("6f1f6f0e-2c7a-4bb0-9a0e-111111111111", reg.Password), body(reg.Subdomain, v), http.StatusUnauthorized, errForbidden},
		{"user not a UUID", hdr("admin", reg.Password), body(reg.Subdomain, v), http.StatusUnauthorized, errForbidden},
		{"key too short", hdr(reg.Username, reg.Password[:39]), body(reg.Subdomain, v), http.StatusUnauthorized, errForbidden},
		{"no headers", nil, body(reg.Subdomain, v), http.StatusUnauthorized, errForbidden},
		{"other account's subdomain", hdr(reg.Username, reg.Password), body(other.Subdomain, v), http.StatusUnauthorized, errForbidden},
		{"malformed JSON", hdr(reg.Username, reg.Password), `{"subdomain": `, http.StatusUnauthorized, errForbidden},
		{"TXT of 42 characters", hdr(reg.Username, reg.Password), body(reg.Subdomain, v[:42]), http.StatusBadRequest, errBadTXT},
		{"TXT of 44 characters", hdr(reg.Username, reg.Password), body(reg.Subdomain, v+"A"), http.StatusBadRequest, errBadTXT},
		{"TXT with padding", hdr(reg.Username, reg.Password), body(reg.Subdomain, v[:42]+"="), http.StatusBadRequest, errBadTXT},
		{"TXT standard base64", hdr(reg.Username, reg.Password), body(reg.Subdomain, v[:42]+"+"), http.StatusBadRequest, errBadTXT},
		{"empty TXT", hdr(reg.Username, reg.Password), body(reg.Subdomain, ""), http.StatusBadRequest, errBadTXT},
		{"too large", hdr(reg.Username, reg.Password), body(reg.Subdomain, strings.Repeat("A", DefaultMaxBodyBytes)), http.StatusRequestEntityTooLarge, errTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(nil, http.MethodPost, "/update", tc.hdr, tc.body)
			if r.status != tc.status || r.errorCode(t) != tc.code {
				t.Errorf("got %d %s, want %d %q", r.status, r.body, tc.status, tc.code)
			}
		})
	}
	for _, name := range []string{reg.Fulldomain, other.Fulldomain} {
		if got := e.txt(name); len(got) != 0 {
			t.Errorf("refused updates left %q at %s", got, name)
		}
	}
}

func TestAllowFrom(t *testing.T) {
	e := start(t, envOptions{})
	only1 := e.register(`{"allowfrom": ["127.0.0.1/32"]}`)
	range8 := e.register(`{"allowfrom": ["10.0.0.0/8", "127.0.0.0/30"]}`)
	open := e.register("")
	v := value("allow")
	tests := []struct {
		name   string
		reg    Registration
		from   string
		status int
	}{
		{"inside /32", only1, "127.0.0.1", http.StatusOK},
		{"outside /32", only1, "127.0.0.2", http.StatusUnauthorized},
		{"inside second range", range8, "127.0.0.3", http.StatusOK},
		{"outside both ranges", range8, "127.0.0.4", http.StatusUnauthorized},
		{"no allowfrom", open, "127.0.0.2", http.StatusOK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.update(clientFrom(tc.from), tc.reg, tc.reg.Subdomain, v)
			if r.status != tc.status {
				t.Fatalf("update from %s: %d %s, want %d", tc.from, r.status, r.body, tc.status)
			}
			if tc.status == http.StatusUnauthorized && r.errorCode(t) != errForbidden {
				t.Errorf("error %s, want forbidden", r.body)
			}
		})
	}
}

func TestSeveralValues(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	e := start(t, envOptions{clock: clock, opts: Options{MaxTXT: 3}})
	reg := e.register("")
	a, b, c, d := value("a1"), value("b2"), value("c3"), value("d4")

	e.mustUpdate(reg, a) // base name
	clock.Add(time.Second)
	e.mustUpdate(reg, b) // wildcard
	clock.Add(time.Second)
	e.mustUpdate(reg, c) // a second order at once
	if got, want := e.txt(reg.Fulldomain), sorted(a, b, c); !slices.Equal(got, want) {
		t.Fatalf("DNS serves %q, want all three %q", got, want)
	}
	clock.Add(time.Second)
	e.mustUpdate(reg, a) // the same value again renews it, no duplicate
	if got, want := e.txt(reg.Fulldomain), sorted(a, b, c); !slices.Equal(got, want) {
		t.Fatalf("after repeating a value DNS serves %q, want %q", got, want)
	}
	clock.Add(time.Second)
	e.mustUpdate(reg, d) // beyond MaxTXT: b expires first and goes
	if got, want := e.txt(reg.Fulldomain), sorted(a, c, d); !slices.Equal(got, want) {
		t.Fatalf("over the limit DNS serves %q, want %q", got, want)
	}
}

func TestExpiry(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	e := start(t, envOptions{clock: clock})
	reg := e.register("")
	old, fresh := value("old"), value("new")
	e.mustUpdate(reg, old)
	clock.Add(DefaultTXTLifetime / 2)
	e.mustUpdate(reg, fresh)
	clock.Add(DefaultTXTLifetime/2 + time.Second)
	if got := e.txt(reg.Fulldomain); !slices.Equal(got, []string{fresh}) {
		t.Errorf("after the first value's lifetime DNS serves %q, want only %q", got, fresh)
	}
	clock.Add(DefaultTXTLifetime / 2)
	if got := e.txt(reg.Fulldomain); len(got) != 0 {
		t.Errorf("after both lifetimes DNS serves %q, want nothing", got)
	}
}

func TestRestart(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	dir := t.TempDir()
	first := start(t, envOptions{dir: dir, clock: clock})
	reg := first.register(`{"allowfrom": ["127.0.0.1/32"]}`)
	expiring, lasting := value("exp"), value("last")
	first.mustUpdate(reg, expiring)
	clock.Add(DefaultTXTLifetime - time.Minute)
	first.mustUpdate(reg, lasting)
	first.stop()

	clock.Add(2 * time.Minute) // expiring is past its lifetime now
	second := start(t, envOptions{dir: dir, clock: clock})
	if got := second.txt(reg.Fulldomain); !slices.Equal(got, []string{lasting}) {
		t.Errorf("after a restart DNS serves %q, want the unexpired %q", got, lasting)
	}
	if r := second.update(clientFrom("127.0.0.2"), reg, reg.Subdomain, value("x")); r.status != http.StatusUnauthorized {
		t.Errorf("allowfrom lost across the restart: update from 127.0.0.2 gave %d", r.status)
	}
	third := value("third")
	second.mustUpdate(reg, third)
	if got, want := second.txt(reg.Fulldomain), sorted(lasting, third); !slices.Equal(got, want) {
		t.Errorf("after an update following the restart DNS serves %q, want %q", got, want)
	}
}

func TestPasswordStoredOnlyAsBcrypt(t *testing.T) {
	dir := t.TempDir()
	e := start(t, envOptions{dir: dir})
	regs := []Registration{e.register(""), e.register(`{"allowfrom": ["192.0.2.0/24"]}`)}
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		raw, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, r := range regs {
			if bytes.Contains(raw, []byte(r.Password)) {
				t.Errorf("%s contains the password of %s in clear", p, r.Username)
			}
		}
		if strings.HasSuffix(p, accountSuffix) {
			n++
			if !bytes.Contains(raw, []byte(`"password_hash": "$2a$`)) {
				t.Errorf("%s has no bcrypt hash:\n%s", p, raw)
			}
			if fi, _ := d.Info(); fi.Mode().Perm() != 0o600 {
				t.Errorf("%s has mode %v, want 0600", p, fi.Mode().Perm())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != len(regs) {
		t.Errorf("found %d account files, want %d", n, len(regs))
	}
}

func TestRateLimit(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	e := start(t, envOptions{clock: clock, opts: Options{RateLimit: 1, RateBurst: 2}})
	reg := e.register("")            // token 1
	e.mustUpdate(reg, value("rate")) // token 2
	r := e.update(nil, reg, reg.Subdomain, value("rate"))
	if r.status != http.StatusTooManyRequests || r.errorCode(t) != errRateLimited {
		t.Fatalf("third request in a burst of 2: %d %s, want 429 rate_limited", r.status, r.body)
	}
	if r := e.update(clientFrom("127.0.0.2"), reg, reg.Subdomain, value("rate")); r.status != http.StatusOK {
		t.Errorf("another source is limited too: %d %s", r.status, r.body)
	}
	if r := e.do(nil, http.MethodGet, "/health", nil, ""); r.status != http.StatusOK {
		t.Errorf("/health is rate limited: %d", r.status)
	}
	clock.Add(time.Second)
	e.mustUpdate(reg, value("rate"))
}

func TestDisableRegistration(t *testing.T) {
	e := start(t, envOptions{opts: Options{DisableRegistration: true}})
	if r := e.do(nil, http.MethodPost, "/register", nil, ""); r.status != http.StatusNotFound {
		t.Errorf("POST /register with registration disabled: %d, want 404", r.status)
	}
	reg, err := e.api.Register(t.Context(), []string{"127.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	e.mustUpdate(reg, value("direct"))
}

func TestConcurrentUpdates(t *testing.T) {
	e := start(t, envOptions{})
	regs := []Registration{e.register(""), e.register("")}
	var wg sync.WaitGroup
	want := map[string][]string{}
	for i := range 8 {
		reg := regs[i%2]
		v := value(string(rune('a'+i)) + "z")
		want[reg.Fulldomain] = append(want[reg.Fulldomain], v)
		wg.Go(func() {
			if r := e.update(nil, reg, reg.Subdomain, v); r.status != http.StatusOK {
				t.Errorf("update: %d %s", r.status, r.body)
			}
		})
	}
	wg.Wait()
	for name, vs := range want {
		if got := e.txt(name); !slices.Equal(got, sorted(vs...)) {
			t.Errorf("%s serves %q, want %q", name, got, sorted(vs...))
		}
	}
}

func sorted(v ...string) []string {
	out := slices.Clone(v)
	slices.Sort(out)
	return out
}
