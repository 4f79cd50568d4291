package nstest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	echoHelper.RunIfHelper()
	failHelper.RunIfHelper()
	mumHelper.RunIfHelper()
	os.Exit(m.Run())
}

// echoConfig and echoInfo are what the test helper is given and says.
type echoConfig struct{ Word, Dir string }

type echoInfo struct {
	Word  string
	PID   int
	NetNS string // its network namespace
}

// echoHelper echoes its word; stopping it writes Dir/stopped.
var echoHelper = Helper[echoConfig, echoInfo]{Name: "echo", Serve: func(ctx context.Context, c echoConfig) (echoInfo, func() error, error) {
	ns, err := os.Readlink("/proc/self/ns/net")
	stop := func() error {
		if ctx.Err() == nil {
			return errors.New("stopped before its context ended")
		}
		return os.WriteFile(filepath.Join(c.Dir, "stopped"), nil, 0o644)
	}
	return echoInfo{Word: c.Word, PID: os.Getpid(), NetNS: ns}, stop, err
}}

// failHelper cannot start; mumHelper never says anything.
var (
	failHelper = Helper[echoConfig, echoInfo]{Name: "fail", Serve: func(context.Context, echoConfig) (echoInfo, func() error, error) {
		return echoInfo{}, nil, errors.New("port 80 is taken")
	}}
	mumHelper = Helper[echoConfig, echoInfo]{Name: "mum", Serve: func(ctx context.Context, _ echoConfig) (echoInfo, func() error, error) {
		<-ctx.Done()
		return echoInfo{}, nil, ctx.Err()
	}}
)

// TestHelper starts a helper in a namespace, reads what it says, and
// stops it when the (sub)test ends.
func TestHelper(t *testing.T) {
	n := New(t)
	dir := t.TempDir()
	var info echoInfo
	t.Run("serve", func(t *testing.T) {
		info = echoHelper.Start(t, n, echoConfig{Word: "hello", Dir: dir})
	})
	if info.Word != "hello" {
		t.Errorf("the helper said %+v, want the word hello", info)
	}
	if want := inode(t, "/run/netns/"+n.Name); info.NetNS != want {
		t.Errorf("the helper ran in namespace %s, want %s (%s)", info.NetNS, want, n.Name)
	}
	if _, err := os.Stat(filepath.Join(dir, "stopped")); err != nil {
		t.Errorf("the helper was not stopped when its test ended: %v", err)
	}
	if err := syscall.Kill(info.PID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("helper pid %d still runs after its test ended (%v)", info.PID, err)
	}
}

// TestHelperFails: a helper that cannot start fails the test with what
// it said, and one that says nothing is killed after the timeout.
func TestHelperFails(t *testing.T) {
	n := New(t)
	defer func(d time.Duration) { helperStartTimeout = d }(helperStartTimeout)
	helperStartTimeout = 2 * time.Second
	for _, tt := range []struct {
		h    Helper[echoConfig, echoInfo]
		want string
	}{
		{failHelper, "helper fail: port 80 is taken"},
		{mumHelper, "it printed nothing within 2s: killed"},
	} {
		rec := &recorder{TB: t}
		var wg sync.WaitGroup
		wg.Go(func() { tt.h.Start(rec, n, echoConfig{}) })
		wg.Wait()
		if !rec.failedNow || !strings.Contains(rec.errors, tt.want) {
			t.Errorf("helper %s: test ended %v, logged %q; want it ended with %q", tt.h.Name, rec.failedNow, rec.errors, tt.want)
		}
	}
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	r.FailNow()
}

func (r *recorder) Fatal(args ...any) {
	r.Errorf("%s", fmt.Sprint(args...))
	r.FailNow()
}
