package store

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestTryLockExcludes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f, err := NewFS(dir, FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A second FS on the same directory in this process takes the flock
	// through its own file descriptor.
	other, err := NewFS(dir, FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := f.Lock(ctx, "example.com")
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		fs   *FS
	}{
		{"same FS, other goroutine", f},
		{"other FS, same process", other},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			errc := make(chan error, 1)
			go func() {
				_, err := tt.fs.TryLock(ctx, "example.com")
				errc <- err
			}()
			if err := <-errc; !errors.Is(err, ErrLocked) {
				t.Errorf("TryLock while held: err = %v, want ErrLocked", err)
			}
			// A different name is independent.
			u, err := tt.fs.TryLock(ctx, "other.example")
			if err != nil {
				t.Fatalf("TryLock of another name: %v", err)
			}
			if err := u(); err != nil {
				t.Fatal(err)
			}
		})
	}

	if err := unlock(); err != nil {
		t.Fatalf("unlock: %v", err)
	}
	if err := unlock(); err != nil {
		t.Errorf("second unlock: %v", err)
	}
	for _, fsys := range []*FS{f, other} {
		u, err := fsys.TryLock(ctx, "example.com")
		if err != nil {
			t.Fatalf("TryLock after unlock: %v", err)
		}
		if err := u(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestLockSerialises(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	var fss [2]*FS
	for i := range fss {
		f, err := NewFS(dir, FSOptions{})
		if err != nil {
			t.Fatal(err)
		}
		fss[i] = f
	}
	var inside, entries atomic.Int32
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				unlock, err := fss[i%2].Lock(ctx, "shared")
				if err != nil {
					t.Error(err)
					return
				}
				if n := inside.Add(1); n != 1 {
					t.Errorf("%d holders at once", n)
				}
				entries.Add(1)
				inside.Add(-1)
				if err := unlock(); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if got := entries.Load(); got != 40 {
		t.Errorf("entries = %d, want 40", got)
	}
}

func TestLockContext(t *testing.T) {
	f := newFS(t)
	unlock, err := f.Lock(context.Background(), "n")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = unlock() }()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := f.Lock(ctx, "n"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Lock while held: err = %v, want DeadlineExceeded", err)
	}
}

func TestLockBadNames(t *testing.T) {
	f := newFS(t)
	for _, name := range []string{"", ".hidden", "-x", "a/b", "../x", `a\b`, "a b"} {
		t.Run(name, func(t *testing.T) {
			if _, err := f.Lock(context.Background(), name); err == nil {
				t.Error("Lock accepted the name")
			}
			if _, err := f.TryLock(context.Background(), name); err == nil {
				t.Error("TryLock accepted the name")
			}
		})
	}
}

// TestLockOtherProcess holds the lock in a child process and checks that
// the kernel releases it when the child is killed with SIGKILL.
func TestLockOtherProcess(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	f, err := NewFS(dir, FSOptions{})
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=lock", helperDirEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe() // held open: the helper waits on it
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	t.Cleanup(func() {
		if !waited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "locked\n" {
		t.Fatalf("helper said %q, %v; want \"locked\"", line, err)
	}

	if _, err := f.TryLock(ctx, helperLock); !errors.Is(err, ErrLocked) {
		t.Fatalf("TryLock while the helper holds it: err = %v, want ErrLocked", err)
	}

	// Lock waits for the other process, bounded by its context.
	short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancelShort()
	if _, err := f.Lock(short, helperLock); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock while the helper holds it: err = %v, want DeadlineExceeded", err)
	}

	// A waiting Lock gets the lock once the holder dies.
	lockCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	type result struct {
		unlock func() error
		err    error
	}
	got := make(chan result, 1)
	go func() {
		u, err := f.Lock(lockCtx, helperLock)
		got <- result{u, err}
	}()

	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	waited = true
	if err := cmd.Wait(); err == nil {
		t.Fatal("helper exited cleanly; it should have been killed")
	}
	r := <-got
	if r.err != nil {
		t.Fatalf("Lock after the holder was killed: %v", r.err)
	}
	if err := r.unlock(); err != nil {
		t.Fatal(err)
	}
}
