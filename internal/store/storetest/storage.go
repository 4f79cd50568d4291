package storetest

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"slices"
	"sync"
	"testing"

	"github.com/detour-acme/detour/internal/store"
)

func runStorage(t *testing.T, h Harness) {
	t.Run("StoreLoadDelete", func(t *testing.T) { testStoreLoadDelete(t, h) })
	t.Run("LoadMissing", func(t *testing.T) { testLoadMissing(t, h) })
	t.Run("StoreAtomic", func(t *testing.T) { testStoreAtomic(t, h) })
	t.Run("BadKeys", func(t *testing.T) { testBadKeys(t, h) })
	t.Run("List", func(t *testing.T) { testList(t, h) })
	t.Run("ContextCancelled", func(t *testing.T) { testContextCancelled(t, h) })
	t.Run("Peer", func(t *testing.T) { testStoragePeer(t, h) })
}

// testStoreLoadDelete: a value reads back as written (secrets too, empty
// and binary values too), a second Store replaces it, Delete removes it and
// deleting a missing key is not an error.
func testStoreLoadDelete(t *testing.T, h Harness) {
	ctx := context.Background()
	b := h.New(t)
	tests := []struct {
		key   string
		value []byte
	}{
		{"accounts/ca.example/acct1/privkey.pem", []byte("-----BEGIN PRIVATE KEY-----\nsecret\n")},
		{"accounts/ca.example/acct1/account.key", []byte("secret")},
		{"accounts/ca.example/acct1/meta.json", []byte("{}")},
		{"top.txt", []byte("top")},
		{"binary", []byte{0, 1, 2, 0xff, 0xfe, '\n'}},
		{"empty", []byte{}},
		{"empty.key", []byte{}},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			if err := b.Store(ctx, tt.key, []byte("old")); err != nil {
				t.Fatalf("Store: %v", err)
			}
			if err := b.Store(ctx, tt.key, tt.value); err != nil {
				t.Fatalf("Store: %v", err)
			}
			got, err := b.Load(ctx, tt.key)
			if err != nil || !bytes.Equal(got, tt.value) {
				t.Fatalf("Load = %q, %v; want %q", got, err, tt.value)
			}
			if err := b.Delete(ctx, tt.key); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if _, err := b.Load(ctx, tt.key); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Load after Delete: err = %v, want fs.ErrNotExist", err)
			}
			if err := b.Delete(ctx, tt.key); err != nil {
				t.Errorf("Delete of a missing key: %v", err)
			}
		})
	}
}

func testLoadMissing(t *testing.T, h Harness) {
	b := h.New(t)
	for _, key := range []string{"nope", "accounts/none/key.pem", "accounts/none/account.key"} {
		_, err := b.Load(context.Background(), key)
		if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err, store.ErrNotExist) {
			t.Errorf("Load(%q): err = %v, want fs.ErrNotExist", key, err)
		}
	}
}

// testStoreAtomic: a concurrent reader only ever sees a whole old or new
// value, never a truncated or mixed one; secrets as well.
func testStoreAtomic(t *testing.T, h Harness) {
	ctx := context.Background()
	b := h.New(t)
	a := bytes.Repeat([]byte("a"), 256<<10)
	c := bytes.Repeat([]byte("b"), 128<<10)
	for _, key := range []string{"big", "big.key"} {
		t.Run(key, func(t *testing.T) {
			if err := b.Store(ctx, key, a); err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				for {
					select {
					case <-done:
						return
					default:
					}
					got, err := b.Load(ctx, key)
					if err != nil {
						t.Errorf("Load: %v", err)
						return
					}
					if !bytes.Equal(got, a) && !bytes.Equal(got, c) {
						t.Errorf("read a torn value of %d bytes", len(got))
						return
					}
				}
			})
			for i := range 20 {
				v := a
				if i%2 == 0 {
					v = c
				}
				if err := b.Store(ctx, key, v); err != nil {
					t.Fatal(err)
				}
			}
			close(done)
			wg.Wait()
		})
	}
}

// testBadKeys: keys that are not relative "/"-separated paths are refused
// by every method, and a refused Load is not "missing".
func testBadKeys(t *testing.T, h Harness) {
	ctx := context.Background()
	b := h.New(t)
	keys := []string{"", "/etc/passwd", "..", "../x", "a/../../b", "a//b", "a/", "./a", "a/./b", `a\b`, "a\x00b", ".tmp-x", "a/.tmp-y"}
	for _, key := range keys {
		if err := b.Store(ctx, key, []byte("x")); err == nil {
			t.Errorf("Store(%q) accepted the key", key)
		}
		if _, err := b.Load(ctx, key); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load(%q): err = %v, want a key error", key, err)
		}
		if err := b.Delete(ctx, key); err == nil {
			t.Errorf("Delete(%q) accepted the key", key)
		}
	}
	for _, prefix := range []string{"/abs", "../up", "a//b", `a\b`} {
		if _, err := b.List(ctx, prefix); err == nil {
			t.Errorf("List(%q) accepted the prefix", prefix)
		}
	}
	if got, err := b.List(ctx, ""); err != nil || len(got) != 0 {
		t.Errorf("after refused keys, List = %q, %v; want nothing stored", got, err)
	}
}

// testList: keys at or below a prefix, sorted; "a" is a directory, so
// "a-b" is not below it.
func testList(t *testing.T, h Harness) {
	ctx := context.Background()
	b := h.New(t)
	for _, k := range []string{"b/2", "a/x/1", "a/y", "a-b", "a/x/0", "c", "a/z.key"} {
		if err := b.Store(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		prefix string
		want   []string
	}{
		{"", []string{"a-b", "a/x/0", "a/x/1", "a/y", "a/z.key", "b/2", "c"}},
		{"a", []string{"a/x/0", "a/x/1", "a/y", "a/z.key"}},
		{"a/", []string{"a/x/0", "a/x/1", "a/y", "a/z.key"}},
		{"a/x", []string{"a/x/0", "a/x/1"}},
		{"c", []string{"c"}},
		{"missing", nil},
	}
	for _, tt := range tests {
		got, err := b.List(ctx, tt.prefix)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, tt.want) {
			t.Errorf("List(%q) = %q, want %q", tt.prefix, got, tt.want)
		}
	}
}

func testContextCancelled(t *testing.T, h Harness) {
	b := h.New(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.Store(ctx, "k", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Store: %v", err)
	}
	if err := b.Store(ctx, "k.key", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Store of a secret: %v", err)
	}
	if _, err := b.Load(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Load: %v", err)
	}
	if _, err := b.List(ctx, ""); !errors.Is(err, context.Canceled) {
		t.Errorf("List: %v", err)
	}
	if _, err := b.Lock(ctx, "k"); !errors.Is(err, context.Canceled) {
		t.Errorf("Lock: %v", err)
	}
}

// testStoragePeer: what one handle stores, another on the same state reads
// (secrets included), and deletes.
func testStoragePeer(t *testing.T, h Harness) {
	ctx := context.Background()
	b := h.New(t)
	p := h.Peer(t, b)
	for _, key := range []string{"accounts/x/meta.json", "accounts/x/account.key"} {
		if err := b.Store(ctx, key, []byte("v-"+key)); err != nil {
			t.Fatal(err)
		}
		if got, err := p.Load(ctx, key); err != nil || string(got) != "v-"+key {
			t.Errorf("peer Load(%q) = %q, %v", key, got, err)
		}
		if err := p.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Load(ctx, key); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load(%q) after the peer deleted it: %v", key, err)
		}
	}
}
