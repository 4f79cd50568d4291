package suggest

import "testing"

func TestEditDistance(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"email", "email", 0},
		{"emial", "email", 1}, // transposition
		{"domain", "domains", 1},
		{"keytype", "key_type", 1},
		{"directroy", "directory", 1},
		{"", "abc", 3},
		{"kitten", "sitting", 3},
		{"ключ", "клюс", 1}, // runes, not bytes
	}
	for _, tt := range tests {
		t.Run(tt.a+"/"+tt.b, func(t *testing.T) {
			if got := Distance(tt.a, tt.b); got != tt.want {
				t.Errorf("Distance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
			}
			if got := Distance(tt.b, tt.a); got != tt.want {
				t.Errorf("Distance(%q, %q) = %d, want %d", tt.b, tt.a, got, tt.want)
			}
		})
	}
	if got := Closest("LetsEncrypt", []string{"buypass", "letsencrypt", "letsencrypt-staging"}); got != "letsencrypt" {
		t.Errorf("Closest(LetsEncrypt) = %q", got)
	}
	if got := Closest("abc", []string{"xyzw"}); got != "" {
		t.Errorf("Closest(abc) = %q, want none", got)
	}
}
