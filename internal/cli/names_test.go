package cli_test

import (
	"net"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/store"
)

// TestIssueDerivedNames issues one-off certificates whose default name
// cannot be the name itself: an IPv6 address starting with "::" (the name
// may not start with "-") and a DNS name longer than a certificate name may
// be. Each gets the name config.DefaultName derives, which the store
// accepts.
func TestIssueDerivedNames(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("l", 63) + "." + strings.Repeat("m", 63) + ".derived.detour.test" // 147 characters
	tests := []struct {
		name   string
		domain string
		want   string // "" for a shortened name
	}{
		{name: "IPv6 loopback", domain: "::1", want: "0--1"},
		{name: "147-character DNS name", domain: long},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			id, err := ident.Parse(tt.domain)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			if id.Type == ident.TypeDNS {
				names = append(names, tt.domain)
			}
			env := newEnv(t, names...)
			name := config.DefaultName(id)
			if err := store.ValidName(name); err != nil {
				t.Fatalf("default name %q: %v", name, err)
			}
			if tt.want != "" && name != tt.want {
				t.Errorf("default name of %s = %q, want %q", tt.domain, name, tt.want)
			}
			if tt.want == "" && (len(name) != store.MaxNameLen || !strings.HasPrefix(name, strings.Repeat("l", 50))) {
				t.Errorf("default name of %s = %q, want %d characters starting with its first label", tt.domain, name, store.MaxNameLen)
			}
			state := t.TempDir()
			args := oneOff(env, emptyConfig(t), state, "-d", tt.domain)
			if id.Type == ident.TypeIP {
				// The CA validates the address itself, on the port it
				// validates names on.
				_, port, _ := net.SplitHostPort(env.HTTPAddr)
				args = append(args, "--http-addr", net.JoinHostPort(id.Value, port))
			}
			r := mustRun(t, args...)
			wantIn(t, "issue output", r.stdout, name+": version 1")
			checkCovers(t, checkLive(t, state, name), id.Value)
		})
	}
}

// TestIssueNameMessages checks what a mistyped name says on the command
// line, before anything is asked of a CA.
func TestIssueNameMessages(t *testing.T) {
	t.Parallel()
	cfg := emptyConfig(t)
	name254 := strings.Repeat(strings.Repeat("a", 62)+".", 3) + strings.Repeat("a", 61) + ".com"
	tests := []struct {
		name   string
		domain string
		want   []string
	}{
		{"two trailing dots", "www.example.com..", []string{"--domain", `"www.example.com.."`, "ends with two dots", `write "www.example.com"`}},
		{"254 characters", name254, []string{"--domain", "254 characters long", "at most 253"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := run(t, "--config", cfg, "--state-dir", t.TempDir(), "issue", "-d", tt.domain)
			if r.code != 2 {
				t.Fatalf("want exit 2: %v", r)
			}
			wantIn(t, "stderr", r.stderr, tt.want...)
			if strings.Contains(r.stderr, "empty label") || strings.Contains(r.stderr, "numeric") || strings.Contains(r.stderr, "idna") {
				t.Errorf("stderr blames something else: %s", r.stderr)
			}
		})
	}
}
