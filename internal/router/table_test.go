package router

import (
	"strings"
	"testing"
)

func TestNewTableErrors(t *testing.T) {
	tests := []struct {
		name   string
		routes []Route
		want   string
	}{
		{"two defaults", []Route{{Backend: "127.0.0.1:1"}, {Backend: "127.0.0.1:2"}}, "route 2 (default): a second default"},
		{"duplicate name", []Route{{SNI: "a.example", Backend: "127.0.0.1:1"}, {SNI: "A.example.", Backend: "127.0.0.1:2"}}, `route 2 (sni "A.example."): SNI listed twice`},
		{"duplicate wildcard", []Route{{SNI: "*.example", Backend: "127.0.0.1:1"}, {SNI: "*.example", Backend: "127.0.0.1:2"}}, "route 2"},
		{"no port", []Route{{SNI: "a.example", Backend: "127.0.0.1"}}, `route 1 (sni "a.example"): backend "127.0.0.1": want host:port`},
		{"bad port", []Route{{Backend: "127.0.0.1:99999"}}, "port must be a number"},
		{"relative unix", []Route{{Backend: "unix:run/x.sock"}}, "must be absolute"},
		{"ip sni", []Route{{SNI: "192.0.2.1", Backend: "127.0.0.1:1"}}, "cannot be an IP address"},
		{"inner wildcard", []Route{{SNI: "a.*.example", Backend: "127.0.0.1:1"}}, "whole first label"},
		{"bare wildcard", []Route{{SNI: "*", Backend: "127.0.0.1:1"}}, "whole first label"},
		{"empty label", []Route{{SNI: "a..example", Backend: "127.0.0.1:1"}}, "empty or over-long label"},
		{"unicode", []Route{{SNI: "bücher.example", Backend: "127.0.0.1:1"}}, "punycode"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewTable(tt.routes)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestTableMatch(t *testing.T) {
	routes := []Route{
		{SNI: "www.example.com", Backend: "127.0.0.1:1"},
		{SNI: "*.example.com", Backend: "127.0.0.1:2"},
		{SNI: "*.a.example.com", Backend: "127.0.0.1:3"},
		{SNI: "", Backend: "unix:/run/default.sock"},
	}
	tab, err := NewTable(routes)
	if err != nil {
		t.Fatal(err)
	}
	for sni, want := range map[string]string{
		"www.example.com":    "127.0.0.1:1",
		"WWW.EXAMPLE.COM.":   "127.0.0.1:1",
		"x.example.com":      "127.0.0.1:2",
		"x.y.example.com":    "127.0.0.1:2",
		"x.a.example.com":    "127.0.0.1:3",
		"a.example.com":      "127.0.0.1:2",
		"example.com":        "unix:/run/default.sock",
		"":                   "unix:/run/default.sock",
		"notexample.com":     "unix:/run/default.sock",
		"www.example.com.ex": "unix:/run/default.sock",
	} {
		if r, ok := tab.Match(sni); !ok || r.Backend != want {
			t.Errorf("Match(%q) = %q, %v; want %q", sni, r.Backend, ok, want)
		}
	}
	noDefault, _ := NewTable(routes[:1])
	if _, ok := noDefault.Match("other.example"); ok {
		t.Error("matched without a default route")
	}
	if got := tab.Routes(); len(got) != len(routes) || got[3] != routes[3] {
		t.Errorf("Routes() = %v", got)
	}
}

func TestLookupDoesNotAllocate(t *testing.T) {
	tab, _ := NewTable([]Route{{SNI: "*.example.com", Backend: "127.0.0.1:1"}, {Backend: "127.0.0.1:2"}})
	name := []byte("a.b.c.example.com")
	if n := testing.AllocsPerRun(100, func() { tab.lookup(name) }); n != 0 {
		t.Errorf("lookup allocates %v times", n)
	}
}

func TestIsLocal(t *testing.T) {
	for _, tc := range []struct {
		backend string
		want    bool
	}{
		{"127.0.0.1:8443", true},
		{"127.8.9.10:8443", true},
		{"[::1]:8443", true},
		{"localhost:8443", true},
		{"LocalHost:8443", true},
		{"unix:/run/nginx/https.sock", true},
		{"10.0.0.5:8443", false},
		{"[2001:db8::1]:8443", false},
		{"backend.internal:8443", false},
	} {
		t.Run(tc.backend, func(t *testing.T) {
			network, addr, err := parseBackend(tc.backend)
			if err != nil {
				t.Fatal(err)
			}
			if got := isLocal(network, addr); got != tc.want {
				t.Errorf("isLocal(%q, %q) = %v, want %v", network, addr, got, tc.want)
			}
		})
	}
}
