//go:build unix

package script

import (
	"io/fs"
	"os/exec"
	"syscall"
)

// owner returns the user id owning the file fi describes.
func owner(fi fs.FileInfo) (uint32, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Uid, true
}

// ownGroup runs cmd in a process group of its own, killed as a whole when
// cmd's context ends: a hook stopped at its timeout takes the processes it
// started with it (as deploy hooks do).
func ownGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
}
