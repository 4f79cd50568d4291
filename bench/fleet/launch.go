package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// launchEnv, set in the environment, makes this program a launcher: it
// runs its arguments as a command and writes the command's wall time and
// peak RSS to file descriptor 3.
//
// The harness holds a large heap (three etcd members), and on Linux a
// child's ru_maxrss counts its parent's resident set at fork time (the
// child shares the parent's memory until exec, and exec keeps that
// high-water mark), so a `detour renew` started straight from the
// harness would report the harness's size. Started from this small
// launcher, it reports its own.
const launchEnv = "DETOUR_FLEET_BENCH_LAUNCH"

// launch is main in launcher mode.
func launch(args []string) int {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	t0 := time.Now()
	err := cmd.Run()
	wall := time.Since(t0)
	var rss int64
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		rss = ru.Maxrss
	}
	out := os.NewFile(3, "result")
	fmt.Fprintf(out, "%d %d\n", wall.Nanoseconds(), rss)
	out.Close()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "launcher:", err)
		return 127
	}
	return 0
}

// launched runs bin with args through the launcher and returns its
// combined output, wall time (measured by the launcher) and peak RSS in
// MB.
func launched(bin string, args ...string) (string, time.Duration, float64, error) {
	self, err := os.Executable()
	if err != nil {
		return "", 0, 0, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return "", 0, 0, err
	}
	defer r.Close()
	cmd := exec.Command(self, append([]string{bin}, args...)...)
	cmd.Env = append(os.Environ(), launchEnv+"=1")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.ExtraFiles = []*os.File{w}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return "", 0, 0, err
	}
	res := make([]byte, 64)
	n, _ := r.Read(res)
	werr := cmd.Wait()
	f := strings.Fields(string(res[:n]))
	if len(f) != 2 {
		return out.String(), 0, 0, fmt.Errorf("the launcher reported nothing (%v)", werr)
	}
	ns, _ := strconv.ParseInt(f[0], 10, 64)
	kb, _ := strconv.ParseFloat(f[1], 64)
	return out.String(), time.Duration(ns), kb / 1024, werr
}
