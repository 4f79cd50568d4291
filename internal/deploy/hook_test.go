package deploy

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHookEnvironment(t *testing.T) {
	out := filepath.Join(t.TempDir(), "env")
	h := Hook{Command: `printf '%s|%s|%s|%s' "$DETOUR_NAME" "$DETOUR_FULLCHAIN" "$RENEWED_DOMAINS" "$DETOUR_VERSION" > ` + out}
	i := Info{Name: "www", Domains: []string{"a.example", "b.example"}, LiveDir: "/var/lib/detour/live/www", Version: 3}
	if _, err := h.Run(context.Background(), i); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	want := "www|/var/lib/detour/live/www/fullchain.pem|a.example b.example|3"
	if string(got) != want {
		t.Errorf("hook saw %q, want %q", got, want)
	}
}

func TestHookFailureAndTimeout(t *testing.T) {
	_, err := Hook{Command: "echo reload refused >&2; exit 3"}.Run(context.Background(), Info{})
	if err == nil || !strings.Contains(err.Error(), "reload refused") || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("err = %v, want the command's output and status", err)
	}
	start := time.Now()
	_, err = Hook{Command: "sleep 30 & sleep 30", Timeout: 200 * time.Millisecond}.Run(context.Background(), Info{})
	if err == nil || !strings.Contains(err.Error(), "did not finish within") {
		t.Errorf("err = %v, want a timeout", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("timeout took %v; the process group was not killed", time.Since(start))
	}
	if _, err := (Hook{}).Run(context.Background(), Info{}); err != nil {
		t.Errorf("empty hook: %v", err)
	}
}
