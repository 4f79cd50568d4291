package config

import (
	"strings"
	"testing"
	"time"
)

func TestPersistSettings(t *testing.T) {
	future := time.Now().AddDate(1, 0, 0).Format(time.DateOnly)
	tests := []struct {
		name     string
		settings string
		key      string   // "" when the table is valid
		want     []string // substrings of the message
	}{
		{"no settings", "", "", nil},
		{"wildcard policy", "policy = \"wildcard\"\n", "", nil},
		{"future date", "persist_until = \"" + future + "\"\n", "", nil},
		{"future date-time", "persist_until = \"2999-01-31T00:00:00Z\"\n", "", nil},
		{"unknown policy", "policy = \"subdomains\"\n", "path.p.policy", []string{`"subdomains" is not a dns-persist-01 policy`, `policy = "wildcard"`}},
		{"upper-case policy", "policy = \"WILDCARD\"\n", "path.p.policy", []string{`write policy = "wildcard"`}},
		{"bad date", "persist_until = \"next year\"\n", "path.p.persist_until", []string{`"next year" is not an RFC 3339 date`, `"2027-01-31"`}},
		{"past date", "persist_until = \"2020-01-01\"\n", "path.p.persist_until", []string{"2020-01-01 is in the past", "set a later date"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := "[path.p]\nkind = \"persist\"\n" + tt.settings
			cfg, err := Parse(testFile, []byte(doc))
			if tt.key == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				p, err := cfg.Path("p")
				if err != nil {
					t.Fatal(err)
				}
				if p.Challenge() != "dns-persist-01" {
					t.Errorf("challenge = %q, want %q", p.Challenge(), "dns-persist-01")
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse accepted %q", doc)
			}
			ce := findError(err, 3, tt.key)
			if ce == nil {
				t.Fatalf("no error at line 3 for %s in: %v", tt.key, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(ce.Error(), w) {
					t.Errorf("error %q lacks %q", ce.Error(), w)
				}
			}
		})
	}
}
