package store_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/store/storetest"
)

// TestContract runs the backends' shared contract suite against FS; a peer
// is a second FS on the same state directory, as another process opens it.
func TestContract(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) storetest.Backend {
			f, err := store.NewFS(t.TempDir(), store.FSOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return f
		},
		Peer: func(t *testing.T, b storetest.Backend) storetest.Backend {
			f, err := store.NewFS(b.(*store.FS).Dir(), store.FSOptions{})
			if err != nil {
				t.Fatal(err)
			}
			return f
		},
		PutRawRecord: func(t *testing.T, b storetest.Backend, file string, raw []byte) string {
			dir := filepath.Join(b.(*store.FS).Dir(), "renewal")
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			p := filepath.Join(dir, file)
			if err := os.WriteFile(p, raw, 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		},
	})
}
