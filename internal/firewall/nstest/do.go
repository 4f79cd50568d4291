package nstest

import (
	"runtime"
	"sync"
	"testing"
)

// Do runs f like In, on an OS thread that has entered the namespace, and
// hands f a testing.TB it may fail with: Fatal, FailNow and Skip inside f
// end f's goroutine (the thread in the namespace, not the test's), and Do
// then fails (or skips) the test on the test's goroutine. It lets helpers
// written for the root namespace that take a testing.TB (starting a
// server, waiting for it to listen) run inside the namespace: processes f
// starts with os/exec are born in the namespace, and sockets f opens
// belong to it. Cleanups f registers run at the end of the test as usual,
// outside the namespace.
func (n *NS) Do(t testing.TB, f func(t testing.TB)) {
	t.Helper()
	w := &threadTB{TB: t}
	n.In(t, func() { f(w) })
	w.mu.Lock()
	failed, skipped := w.failed, w.skipped
	w.mu.Unlock()
	switch {
	case failed:
		t.FailNow()
	case skipped:
		t.SkipNow()
	}
}

// threadTB is the testing.TB of a function Do runs: testing's FailNow
// and SkipNow may only be called on the test's goroutine, so these end
// the calling goroutine and leave the rest to Do. The other methods,
// which are safe on any goroutine, are the test's own.
type threadTB struct {
	testing.TB
	mu              sync.Mutex
	failed, skipped bool
}

func (w *threadTB) FailNow() {
	w.TB.Fail()
	w.mu.Lock()
	w.failed = true
	w.mu.Unlock()
	runtime.Goexit()
}

func (w *threadTB) Fatal(args ...any) {
	w.TB.Helper()
	w.TB.Error(args...)
	w.FailNow()
}

func (w *threadTB) Fatalf(format string, args ...any) {
	w.TB.Helper()
	w.TB.Errorf(format, args...)
	w.FailNow()
}

func (w *threadTB) SkipNow() {
	w.mu.Lock()
	w.skipped = true
	w.mu.Unlock()
	runtime.Goexit()
}

func (w *threadTB) Skip(args ...any) {
	w.TB.Helper()
	w.TB.Log(args...)
	w.SkipNow()
}

func (w *threadTB) Skipf(format string, args ...any) {
	w.TB.Helper()
	w.TB.Logf(format, args...)
	w.SkipNow()
}
