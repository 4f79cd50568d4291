package etcdtest

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// memberProc is a member running as a process of its own.
type memberProc struct {
	cmd    *exec.Cmd
	done   chan struct{}
	stderr *strings.Builder
}

// stop sends sig and waits for the process to end.
func (p *memberProc) stop(sig syscall.Signal) {
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

var (
	buildOnce sync.Once
	memberBin string
	buildErr  error
)

// memberBinary builds command member once per test process, to one path
// per user that every test process shares (each builds its own copy and
// renames it into place, so none leaves a binary behind).
func memberBinary() (string, error) {
	buildOnce.Do(func() {
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("detour-etcdtest-%d", os.Getuid()))
		if buildErr = os.MkdirAll(dir, 0o700); buildErr != nil {
			return
		}
		tmp, err := os.MkdirTemp(dir, "build-")
		if err != nil {
			buildErr = err
			return
		}
		defer os.RemoveAll(tmp)
		built := filepath.Join(tmp, "etcd-member")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, "go", "build", "-o", built, "github.com/detour-acme/detour/internal/testenv/etcdtest/member").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("building the etcd member command (the go command must be on PATH): %v\n%s", err, out)
			return
		}
		memberBin = filepath.Join(dir, "etcd-member")
		buildErr = os.Rename(built, memberBin)
	})
	return memberBin, buildErr
}

// startProcess starts m as a process and waits until it serves.
func (c *Cluster) startProcess(m *Member) error {
	bin, err := memberBinary()
	if err != nil {
		return err
	}
	raw, err := json.Marshal(c.config(m))
	if err != nil {
		return err
	}
	cfgFile := filepath.Join(filepath.Dir(m.dir), m.Name+".json")
	if err := os.WriteFile(cfgFile, raw, 0o600); err != nil {
		return err
	}
	p := &memberProc{cmd: exec.Command(bin, cfgFile), done: make(chan struct{}), stderr: &strings.Builder{}}
	p.cmd.Stderr = p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("member %s: %w", m.Name, err)
	}
	ready := make(chan bool, 1)
	go func() {
		r := bufio.NewReader(out)
		line, _ := r.ReadString('\n')
		ready <- strings.TrimSpace(line) == "ready"
		_, _ = io.Copy(io.Discard, r)
	}()
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	select {
	case ok := <-ready:
		if !ok {
			<-p.done
			return fmt.Errorf("member %s exited before it served: %s", m.Name, p.stderr)
		}
	case <-time.After(30 * time.Second):
		p.stop(syscall.SIGKILL)
		return fmt.Errorf("member %s did not become ready within 30s", m.Name)
	}
	c.mu.Lock()
	m.proc, m.started = p, true
	c.mu.Unlock()
	return nil
}

// processLeader asks each running member who leads.
func (c *Cluster) processLeader() int {
	c.mu.Lock()
	var running []int
	for i, m := range c.members {
		if m.proc != nil {
			running = append(running, i)
		}
	}
	c.mu.Unlock()
	var tlsCfg *tls.Config
	if c.opts.TLS != nil {
		tlsCfg = c.opts.TLS.ClientConfig(c.t)
	}
	for _, i := range running {
		ep := c.members[i].ClientURL
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 2 * time.Second, TLS: tlsCfg, Logger: zap.NewNop()})
		if err != nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := cli.Status(ctx, ep)
		cancel()
		cli.Close()
		if err == nil && st.Leader == st.Header.MemberId {
			return i
		}
	}
	return -1
}
