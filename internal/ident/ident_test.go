package ident

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in       string
		wantType string
		want     string
	}{
		// DNS names: lower-cased, trailing dot and surrounding space removed.
		{"example.com", TypeDNS, "example.com"},
		{"Example.COM", TypeDNS, "example.com"},
		{"example.com.", TypeDNS, "example.com"},
		{"  www.Example.com.\t", TypeDNS, "www.example.com"},
		{"a-b.example.com", TypeDNS, "a-b.example.com"},
		{"xn--bcher-kva.example", TypeDNS, "xn--bcher-kva.example"},
		{"XN--BCHER-KVA.example", TypeDNS, "xn--bcher-kva.example"},
		{"123.example.com", TypeDNS, "123.example.com"},
		{strings.Repeat("a", 63) + ".example.com", TypeDNS, strings.Repeat("a", 63) + ".example.com"},
		// The longest name DNS allows: 253 characters, 254 with the root dot.
		{name253, TypeDNS, name253},
		{name253 + ".", TypeDNS, name253},
		{"*." + name253[2:], TypeDNS, "*." + name253[2:]},
		// Lengths count the A-label: 70 bytes of UTF-8, 42 in punycode.
		{strings.Repeat("ü", 35) + ".example", TypeDNS, "xn--tdaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.example"},
		// Unicode names become A-labels.
		{"bücher.example", TypeDNS, "xn--bcher-kva.example"},
		{"BÜCHER.example", TypeDNS, "xn--bcher-kva.example"},
		{"bücher.example.", TypeDNS, "xn--bcher-kva.example"},
		// Wildcards.
		{"*.example.com", TypeDNS, "*.example.com"},
		{"*.Example.com.", TypeDNS, "*.example.com"},
		{"*.bücher.example", TypeDNS, "*.xn--bcher-kva.example"},
		// IPv4.
		{"192.0.2.1", TypeIP, "192.0.2.1"},
		{" 192.0.2.1 ", TypeIP, "192.0.2.1"},
		// IPv6: canonical (RFC 5952) text, brackets accepted.
		{"2001:DB8::1", TypeIP, "2001:db8::1"},
		{"2001:0db8:0000:0000:0000:0000:0000:0001", TypeIP, "2001:db8::1"},
		{"[2001:db8::1]", TypeIP, "2001:db8::1"},
		{"[::1]", TypeIP, "::1"},
		{"::1", TypeIP, "::1"},
		// IPv4-mapped IPv6 is the IPv4 address.
		{"::ffff:1.2.3.4", TypeIP, "1.2.3.4"},
		{"::FFFF:0102:0304", TypeIP, "1.2.3.4"},
		{"[::ffff:1.2.3.4]", TypeIP, "1.2.3.4"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			id, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if id.Type != tt.wantType || id.Value != tt.want {
				t.Errorf("Parse(%q) = {%s %s}, want {%s %s}", tt.in, id.Type, id.Value, tt.wantType, tt.want)
			}
			if id.String() != tt.want {
				t.Errorf("String() = %q, want %q", id.String(), tt.want)
			}
			// Parsing is idempotent: a normalised value parses to itself.
			again, err := Parse(id.Value)
			if err != nil || again != id {
				t.Errorf("Parse(%q) = %+v, %v; want %+v (idempotent)", id.Value, again, err, id)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // substrings of the error message
	}{
		{"empty", "", []string{"empty name"}},
		{"only space", "   ", []string{"empty name"}},
		{"space inside", "www.example.com example.com", []string{"cannot contain spaces", "list each name separately"}},
		{"tab inside", "a.example.com\tb.example.com", []string{"list each name separately"}},
		{"newline inside", "a.example.com\nb.example.com", []string{"list each name separately"}},
		{"bare wildcard", "*", []string{"bare wildcard", `"*.example.com"`}},
		{"bare wildcard with dot", "*.", []string{"bare wildcard"}},
		{"double wildcard", "*.*.x", []string{"wildcard may only be the whole first label"}},
		{"double wildcard long", "*.*.example.com", []string{"wildcard may only be the whole first label"}},
		{"partial wildcard", "a*.x", []string{"wildcard may only be the whole first label"}},
		{"partial wildcard long", "a*.example.com", []string{"wildcard may only be the whole first label"}},
		{"inner wildcard", "www.*.example.com", []string{"wildcard may only be the whole first label"}},
		{"underscore", "my_host.example.com", []string{"underscores are not allowed", "use a hyphen"}},
		{"underscore label", "_acme-challenge.example.com", []string{"use a hyphen"}},
		{"single label", "localhost", []string{"at least two labels"}},
		{"single label dot", "localhost.", []string{"at least two labels"}},
		{"wildcard of TLD", "*.com", []string{"at least two labels"}},
		{"numeric TLD", "host.123", []string{"last label is numeric", "mistyped IP address"}},
		{"short IPv4", "1.2.3", []string{"mistyped IP address"}},
		{"IPv4 trailing dot", "1.2.3.4.", []string{"mistyped IP address"}},
		{"IPv4 too many octets", "1.2.3.4.5", []string{"mistyped IP address"}},
		{"zone", "fe80::1%eth0", []string{"zone (%eth0)"}},
		{"zone in brackets", "[fe80::1%25eth0]", []string{"zone"}},
		{"label too long", strings.Repeat("a", 64) + ".example.com", nil},
		{"name too long", strings.Repeat(strings.Repeat("a", 63)+".", 4) + "com", nil},
		{"empty label", "a..example.com", nil},
		{"leading hyphen", "-a.example.com", nil},
		{"unbalanced bracket left", "[2001:db8::1", nil},
		{"unbalanced bracket right", "2001:db8::1]", nil},
		{"slash", "example.com/path", nil},
		{"URL", "https://example.com", nil},
		{"comma list", "a.example.com,b.example.com", nil},
		{"port", "example.com:443", nil},
		// Misplaced dots: the message says where and shows the name to write.
		{"two trailing dots", "www.example.com..", []string{"the name ends with two dots", `write "www.example.com"`}},
		{"three trailing dots", "www.example.com...", []string{"the name ends with 3 dots", `write "www.example.com"`}},
		{"wildcard two trailing dots", "*.Example.com..", []string{"ends with two dots", `write "*.Example.com"`}},
		{"IPv4 two trailing dots", "192.0.2.1..", []string{"ends with two dots", `write "192.0.2.1"`}},
		{"leading dot", ".example.com", []string{"starts with a dot", `write "example.com"`}},
		{"only dots", "..", []string{"only dots"}},
		{"only a dot", ".", []string{"only dots"}},
		{"empty label said", "a..example.com", []string{"two dots in a row", `did you mean "a.example.com"?`}},
		{"wildcard empty label", "*..example.com", []string{"two dots in a row", `did you mean "*.example.com"?`}},
		{"ideographic full stops", "a\u3002\u3002example.com", []string{"empty label"}},
		// Lengths: the limit is named.
		{"254 characters", name253 + "a", []string{"254 characters long", "at most 253"}},
		{"wildcard 255 characters", "*." + name253, []string{"255 characters long", "at most 253"}},
		{"label too long said", strings.Repeat("a", 64) + ".example.com", []string{"64 characters long", "at most 63 per label"}},
		{"punycode label too long", strings.Repeat("a", 56) + "ü.example", []string{"64 characters long in its ASCII (punycode) form", "at most 63"}},
		{"punycode name too long", strings.Repeat(strings.Repeat("a", 50)+"ü.", 5) + "com", []string{"in its ASCII (punycode) form", "at most 253"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := Parse(tt.in)
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want an error", tt.in, id)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Parse(%q) error %q does not wrap ErrInvalid", tt.in, err)
			}
			if id != (Identifier{}) {
				t.Errorf("Parse(%q) returned %+v alongside an error", tt.in, id)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse(%q) error %q does not contain %q", tt.in, err, w)
				}
			}
			// Every error but the empty one quotes what the user wrote.
			if strings.TrimSpace(tt.in) != "" && !strings.Contains(err.Error(), strings.Trim(quote(tt.in), `"`)) {
				t.Errorf("Parse(%q) error %q does not quote the input", tt.in, err)
			}
		})
	}
}

// name253 is a valid DNS name of 253 characters, the most DNS allows.
var name253 = strings.Repeat(strings.Repeat("a", 62)+".", 3) + strings.Repeat("a", 60) + ".com"

// quote mirrors the %q the error messages use.
func quote(s string) string {
	var b strings.Builder
	b.WriteString(`"`)
	for _, r := range s {
		switch r {
		case '\t':
			b.WriteString(`\t`)
		case '\n':
			b.WriteString(`\n`)
		case '"':
			b.WriteString(`\"`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteString(`"`)
	return b.String()
}

func TestWildcardAndBase(t *testing.T) {
	tests := []struct {
		in       string
		wildcard bool
		base     string
	}{
		{"*.example.com", true, "example.com"},
		{"*.Sub.Example.com.", true, "sub.example.com"},
		{"example.com", false, "example.com"},
		{"www.example.com", false, "www.example.com"},
		{"192.0.2.1", false, "192.0.2.1"},
		{"2001:db8::1", false, "2001:db8::1"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			id, err := Parse(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := id.IsWildcard(); got != tt.wildcard {
				t.Errorf("IsWildcard() = %v, want %v", got, tt.wildcard)
			}
			if got := id.Base(); got != tt.base {
				t.Errorf("Base() = %q, want %q", got, tt.base)
			}
		})
	}
	// Only DNS identifiers can be wildcards, whatever their value says.
	if (Identifier{Type: TypeIP, Value: "*.example.com"}).IsWildcard() {
		t.Error("an IP identifier reported itself as a wildcard")
	}
}

func TestParseAll(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		want    []string
		wantErr []string
	}{
		{name: "none", in: nil, want: []string{}},
		{name: "distinct", in: []string{"Example.com", "*.example.com", "www.example.com", "192.0.2.1"},
			want: []string{"example.com", "*.example.com", "www.example.com", "192.0.2.1"}},
		{name: "case and trailing dot", in: []string{"Example.com", "example.com."}, wantErr: []string{`"example.com."`, "listed twice"}},
		{name: "exact", in: []string{"a.example.com", "b.example.com", "a.example.com"}, wantErr: []string{"listed twice"}},
		{name: "unicode and A-label", in: []string{"bücher.example", "xn--bcher-kva.example"}, wantErr: []string{"listed twice"}},
		{name: "mapped IPv4", in: []string{"1.2.3.4", "::ffff:1.2.3.4"}, wantErr: []string{"listed twice"}},
		{name: "IPv6 spellings", in: []string{"[2001:db8::1]", "2001:DB8:0::1"}, wantErr: []string{"listed twice"}},
		{name: "invalid second", in: []string{"ok.example.com", "bad_name.example.com"}, wantErr: []string{"bad_name", "hyphen"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids, err := ParseAll(tt.in)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("ParseAll(%q) = %v, want an error", tt.in, ids)
				}
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("error %q does not wrap ErrInvalid", err)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				if ids != nil {
					t.Errorf("ParseAll returned %v alongside an error", ids)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAll(%q): %v", tt.in, err)
			}
			if got := Values(ids); !slices.Equal(got, tt.want) {
				t.Errorf("ParseAll(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestValues(t *testing.T) {
	ids := []Identifier{{TypeDNS, "a.example.com"}, {TypeIP, "192.0.2.1"}}
	if got, want := Values(ids), []string{"a.example.com", "192.0.2.1"}; !slices.Equal(got, want) {
		t.Errorf("Values = %q, want %q", got, want)
	}
	if got := Values(nil); got == nil || len(got) != 0 {
		t.Errorf("Values(nil) = %#v, want an empty slice", got)
	}
}
