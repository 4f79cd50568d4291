package stateless

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

const (
	tp      = "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
	otherTP = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
)

func TestNew(t *testing.T) {
	tests := []struct {
		name, tp, wantErr string
	}{
		{"valid", tp, ""},
		{"empty", "", "thumbprint is empty"},
		{"too short", "abc", "not an account key thumbprint"},
		{"padding", tp + "=", "not an account key thumbprint"},
		{"standard base64", strings.Replace(tp, "X", "+", 1), "not an account key thumbprint"},
		{"quote", tp[:42] + `"`, "not an account key thumbprint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(Options{Thumbprint: tt.tp})
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if s.Thumbprint() != tt.tp || s.Type() != solve.HTTP01 {
					t.Errorf("got %q %q", s.Thumbprint(), s.Type())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("New(%q): %v, want %q", tt.tp, err, tt.wantErr)
			}
		})
	}
}

func TestPresent(t *testing.T) {
	ctx := context.Background()
	s, err := New(Options{Thumbprint: tp})
	if err != nil {
		t.Fatal(err)
	}
	id := ident.Identifier{Type: ident.TypeDNS, Value: "example.com"}
	tests := []struct {
		name    string
		ch      solve.Challenge
		wantErr string
	}{
		{"matching account", solve.Challenge{Type: solve.HTTP01, Identifier: id, Token: "tok-1", KeyAuthorization: "tok-1." + tp}, ""},
		{"ip identifier", solve.Challenge{Type: solve.HTTP01, Identifier: ident.Identifier{Type: ident.TypeIP, Value: "192.0.2.1"}, Token: "t", KeyAuthorization: "t." + tp}, ""},
		{"other account", solve.Challenge{Type: solve.HTTP01, Identifier: id, Token: "tok-1", KeyAuthorization: "tok-1." + otherTP}, "rerun `detour snippet stateless`"},
		{"other token", solve.Challenge{Type: solve.HTTP01, Identifier: id, Token: "tok-1", KeyAuthorization: "tok-2." + tp}, "generated for another account"},
		{"token the rule cannot match", solve.Challenge{Type: solve.HTTP01, Identifier: id, Token: "a.b", KeyAuthorization: "a.b." + tp}, "not base64url"},
		{"wrong type", solve.Challenge{Type: solve.DNS01, Identifier: id, Token: "t", KeyAuthorization: "t." + tp}, "wrong challenge type"},
		{"wildcard", solve.Challenge{Type: solve.HTTP01, Identifier: ident.Identifier{Type: ident.TypeDNS, Value: "*.example.com"}, Token: "t", KeyAuthorization: "t." + tp}, "not applicable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Present(ctx, tt.ch)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Present: %v", err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Present: %v, want an error containing %q", err, tt.wantErr)
			}
			if err := s.CleanUp(ctx, tt.ch); err != nil {
				t.Errorf("CleanUp: %v", err)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	s, err := New(Options{Thumbprint: tp})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Check(ctx, ident.Identifier{Type: ident.TypeDNS, Value: "example.com"}); err != nil {
		t.Errorf("Check(example.com): %v", err)
	}
	err = s.Check(ctx, ident.Identifier{Type: ident.TypeDNS, Value: "*.example.com"})
	if !errors.Is(err, solve.ErrNotApplicable) {
		t.Errorf("Check(wildcard): %v, want ErrNotApplicable", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Check(cctx, ident.Identifier{Type: ident.TypeDNS, Value: "example.com"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Check with a cancelled context: %v", err)
	}
}
