package config

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/store"
)

// long253 is a valid DNS name of 253 characters, the most DNS allows.
var long253 = strings.Repeat(strings.Repeat("a", 62)+".", 3) + strings.Repeat("b", 60) + ".com"

// TestDefaultName checks that every identifier gets a default name the
// store accepts, readable where it fits and the same on every run.
func TestDefaultName(t *testing.T) {
	long100 := strings.Repeat("x", 50) + "." + strings.Repeat("y", 40) + ".example" // 99 characters
	tests := []struct {
		in   string
		want string // "" when shortened: checked by prefix below
		pre  string
	}{
		{in: "example.com", want: "example.com"},
		{in: "*.example.com", want: "wildcard.example.com"},
		{in: "192.0.2.1", want: "192.0.2.1"},
		{in: "2001:db8::1", want: "2001-db8--1"}, // as before: existing lineages keep their name
		{in: "::1", want: "0--1"},
		{in: "::", want: "0--"},
		{in: "::2:3", want: "0--2-3"},
		{in: "fe80::1", want: "fe80--1"},
		{in: strings.Repeat("a", 60) + ".com", want: strings.Repeat("a", 60) + ".com"}, // exactly 64
		{in: long100, pre: strings.Repeat("x", 50) + "."},
		{in: long253, pre: strings.Repeat("a", 53)},
		{in: "*." + long253[2:], pre: "wildcard." + strings.Repeat("a", 44)},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			id, err := ident.Parse(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			got := DefaultName(id)
			if err := store.ValidName(got); err != nil {
				t.Errorf("DefaultName(%q) = %q, which the store refuses: %v", tt.in, got, err)
			}
			if !validName.MatchString(got) {
				t.Errorf("DefaultName(%q) = %q, which config refuses as a name", tt.in, got)
			}
			if again := DefaultName(id); again != got {
				t.Errorf("DefaultName(%q) = %q, then %q", tt.in, got, again)
			}
			switch {
			case tt.want != "" && got != tt.want:
				t.Errorf("DefaultName(%q) = %q, want %q", tt.in, got, tt.want)
			case tt.pre != "" && (!strings.HasPrefix(got, tt.pre) || len(got) != store.MaxNameLen):
				t.Errorf("DefaultName(%q) = %q, want %d characters starting %q", tt.in, got, store.MaxNameLen, tt.pre)
			}
		})
	}
}

// TestDefaultNameDistinct checks that distinct identifiers get distinct
// names: IPv6 addresses with and without leading zero groups, long names
// that differ only after the part kept, a wildcard and its base.
func TestDefaultNameDistinct(t *testing.T) {
	var ids []ident.Identifier
	add := func(s string) {
		id, err := ident.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 5000 {
		var b [16]byte
		for i := range b {
			if r.IntN(3) > 0 { // mostly zero groups, so "::" moves about
				b[i] = byte(r.IntN(3))
			}
		}
		add(netip.AddrFrom16(b).String())
	}
	for i := range 50 {
		add(fmt.Sprintf("%s.n%d.example", strings.Repeat("z", 60), i))
		add(fmt.Sprintf("*.%s.n%d.example", strings.Repeat("z", 60), i))
	}
	seen := map[string]ident.Identifier{}
	for _, id := range ids {
		n := DefaultName(id)
		if prev, dup := seen[n]; dup && prev != id {
			t.Fatalf("%q and %q both get the default name %q", prev, id, n)
		}
		seen[n] = id
		if err := store.ValidName(n); err != nil {
			t.Fatalf("DefaultName(%q) = %q: %v", id, n, err)
		}
	}
}

// TestDefaultNameInConfig checks names derived for [[certificate]] entries
// that leave name out, and the length of names that set it.
func TestDefaultNameInConfig(t *testing.T) {
	doc := fmt.Sprintf(`[[certificate]]
domains = ["::1"]

[[certificate]]
domains = [%q]
`, long253)
	cfg, err := Parse(testFile, []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Certificates[0].Name; got != "0--1" {
		t.Errorf("name of ::1 = %q, want 0--1", got)
	}
	if got := cfg.Certificates[1].Name; store.ValidName(got) != nil || !strings.HasPrefix(got, "aaaa") {
		t.Errorf("name of a 253-character domain = %q", got)
	}

	name65 := strings.Repeat("n", 65)
	_, err = Parse(testFile, []byte(fmt.Sprintf("[[certificate]]\nname = %q\ndomains = [\"example.com\"]\n", name65)))
	e := findError(err, 2, "certificate[0].name")
	if e == nil || !strings.Contains(e.Msg, "65 characters long") || !strings.Contains(e.Msg, "at most 64") {
		t.Errorf("name of 65 characters: %v", err)
	}
	if _, err := Parse(testFile, []byte(fmt.Sprintf("[[certificate]]\nname = %q\ndomains = [\"example.com\"]\n", name65[1:]))); err != nil {
		t.Errorf("name of 64 characters: %v", err)
	}
}
