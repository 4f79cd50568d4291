package config

import (
	"errors"
	"strings"
	"testing"
)

func TestDNSProviderSettings(t *testing.T) {
	const creds = "credentials_file = \"/etc/detour/cf.credentials\"\n"
	tests := []struct {
		name     string
		settings string // after kind, from line 3
		key      string // "" when the table is valid
		line     int
		want     []string // substrings of the message
	}{
		{"valid", "provider = \"cloudflare\"\n" + creds, "", 0, nil},
		{"valid with timeout", "provider = \"gandi\"\n" + creds + "propagation_timeout = \"25m\"\n", "", 0, nil},
		{"misspelt provider", "provider = \"cloudfare\"\n" + creds, "path.p.provider", 3,
			[]string{`"cloudfare" is not a supported DNS provider`, `did you mean "cloudflare"`, `"route53"`}},
		{"no credentials", "provider = \"hetzner\"\n", "path.p.credentials_file", 0, []string{"credentials_file is missing", "key = value"}},
		{"relative credentials", "provider = \"ovh\"\ncredentials_file = \"ovh.ini\"\n", "path.p.credentials_file", 4,
			[]string{`"ovh.ini" must be an absolute path`, "/etc/detour/ovh.credentials"}},
		{"bad timeout", "provider = \"route53\"\n" + creds + "propagation_timeout = \"5 minutes\"\n", "path.p.propagation_timeout", 5,
			[]string{`"5 minutes" is not a positive duration`, `"5m"`}},
		{"negative timeout", "provider = \"route53\"\n" + creds + "propagation_timeout = \"-1m\"\n", "path.p.propagation_timeout", 5, []string{"positive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := "[path.p]\nkind = \"dns-provider\"\n" + tt.settings
			cfg, err := Parse(testFile, []byte(doc))
			if tt.key == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				p, err := cfg.Path("p")
				if err != nil {
					t.Fatal(err)
				}
				if p.Challenge() != "dns-01" || p.Setting("credentials_file") == "" {
					t.Errorf("path = %+v", p)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse accepted %q", doc)
			}
			ce := findKeyError(err, tt.line, tt.key)
			if ce == nil {
				t.Fatalf("no error for %s (line %d) in: %v", tt.key, tt.line, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(ce.Error(), w) {
					t.Errorf("error %q lacks %q", ce.Error(), w)
				}
			}
		})
	}
}

// findKeyError is findError that accepts any line when line is 0.
func findKeyError(err error, line int, key string) *Error {
	if line != 0 {
		return findError(err, line, key)
	}
	list := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	}
	for _, e := range list {
		var ce *Error
		if errors.As(e, &ce) && ce.Key == key {
			return ce
		}
	}
	return nil
}
