package nstest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// TestDo checks that a process started inside Do is born in the
// namespace, and that a Fatal inside Do ends f and then fails the test on
// the test's goroutine.
func TestDo(t *testing.T) {
	n := New(t)
	nsIno := inode(t, "/run/netns/"+n.Name)
	var pid int
	n.Do(t, func(t testing.TB) {
		cmd := exec.Command("sleep", "5")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		pid = cmd.Process.Pid
	})
	if got := inode(t, fmt.Sprintf("/proc/%d/ns/net", pid)); got != nsIno {
		t.Errorf("a process started in Do is in namespace %s, want %s (%s)", got, nsIno, n.Name)
	}

	rec := &recorder{TB: t}
	after := false
	var wg sync.WaitGroup
	wg.Go(func() {
		n.Do(rec, func(t testing.TB) {
			t.Fatalf("boom %d", 1)
			after = true
		})
	})
	wg.Wait()
	if after || !rec.failedNow || !strings.Contains(rec.errors, "boom 1") {
		t.Errorf("Fatalf inside Do: went on %v, test ended %v, logged %q; want it ended with boom 1", after, rec.failedNow, rec.errors)
	}
}

func inode(t *testing.T, path string) string {
	t.Helper()
	s, err := os.Readlink(path)
	if err != nil { // /run/netns/X is a bind mount, not a link
		var fi os.FileInfo
		if fi, err = os.Stat(path); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("net:[%d]", fi.Sys().(*syscall.Stat_t).Ino)
	}
	return s
}

// recorder is the test Do fails: it records instead of failing t.
type recorder struct {
	testing.TB
	errors    string
	failedNow bool
}

func (r *recorder) Errorf(format string, args ...any) { r.errors += fmt.Sprintf(format, args...) }
func (r *recorder) Fail()                             {}
func (r *recorder) FailNow()                          { r.failedNow = true; runtime.Goexit() }
