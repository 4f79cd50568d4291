package dnsprovider

import (
	"bytes"
	"go/format"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedFileIsCurrent regenerates zz_generated.go into a temporary
// directory, from the lego version go.mod requires, and compares it with
// the committed file: run `go generate ./internal/solve/dnsprovider` after
// changing lego's version, the generator or a hand-written factory's name.
// It needs the go command (as CI has), and fails without it.
func TestGeneratedFileIsCurrent(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to run the generator: %v", err)
	}
	out := filepath.Join(t.TempDir(), "zz_generated.go")
	cmd := exec.Command(goCmd, "run", "./gen", "-o", out, "-pkgdir", ".")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go run ./gen: %v\n%s", err, b)
	}
	want, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("zz_generated.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("zz_generated.go is not what the generator writes now (%d bytes, generator %d); run go generate ./internal/solve/dnsprovider", len(got), len(want))
	}
	if f, err := format.Source(got); err != nil || !bytes.Equal(f, got) {
		t.Errorf("zz_generated.go is not gofmt'd (%v)", err)
	}
}
