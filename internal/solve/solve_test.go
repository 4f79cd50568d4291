package solve_test

import (
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/solve"
)

func TestValidToken(t *testing.T) {
	tests := []struct {
		tok  string
		want bool
	}{
		{"evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA", true},
		{"a", true},
		{"-_09AZaz", true},
		{strings.Repeat("a", 256), true},
		{strings.Repeat("a", 257), false},
		{"", false},
		{"abc=", false},   // padding
		{"ab+/", false},   // base64, not base64url
		{"../etc", false}, // a path
		{"a b", false},
		{"a\x00", false},
		{"é", false},
	}
	for _, tt := range tests {
		if got := solve.ValidToken(tt.tok); got != tt.want {
			t.Errorf("ValidToken(%q) = %v, want %v", tt.tok, got, tt.want)
		}
	}
}
