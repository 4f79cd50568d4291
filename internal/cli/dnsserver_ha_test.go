package cli_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/store/etcdstore"
	"github.com/detour-acme/detour/internal/testenv/etcdtest"
)

// dnsProc is a `detour dns-server` subprocess, its stdout read line by
// line.
type dnsProc struct {
	cmd    *exec.Cmd
	lines  chan string
	stderr *lockedBuffer
	done   chan error
}

// startDNSProc starts bin with args; it is killed when the test ends.
func startDNSProc(t *testing.T, bin string, args ...string) *dnsProc {
	t.Helper()
	p := &dnsProc{lines: make(chan string, 100), stderr: &lockedBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.CommandContext(t.Context(), bin, args...)
	p.cmd.Stderr = p.stderr
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
		p.done <- p.cmd.Wait()
	}()
	return p
}

// await returns the first submatch of re in the next matching stdout line.
func (p *dnsProc) await(t *testing.T, re string) string {
	t.Helper()
	rx := regexp.MustCompile(re)
	timeout := time.After(time.Minute)
	for {
		select {
		case l, ok := <-p.lines:
			if !ok {
				t.Fatalf("dns-server exited before printing a line matching %q\n--- stderr:\n%s", re, p.stderr)
			}
			if m := rx.FindStringSubmatch(l); m != nil {
				return m[1]
			}
		case <-timeout:
			t.Fatalf("no line matching %q within a minute\n--- stderr:\n%s", re, p.stderr)
		}
	}
}

// kill kills the process (SIGKILL: no clean shutdown) and waits for it.
func (p *dnsProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

// txtAt asks the DNS server at addr for the TXT values of name, sorted.
func txtAt(t *testing.T, addr, name string) []string {
	t.Helper()
	c := &dns.Client{Timeout: 5 * time.Second}
	r, _, err := c.Exchange(new(dns.Msg).SetQuestion(dns.Fqdn(name), dns.TypeTXT), addr)
	if err != nil {
		t.Fatalf("TXT %s at %s: %v", name, addr, err)
	}
	var out []string
	for _, rr := range r.Answer {
		if txt, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(txt.Txt, ""))
		}
	}
	slices.Sort(out)
	return out
}

// acmeDNSUpdate posts value for reg through the API at base.
func acmeDNSUpdate(t *testing.T, base string, reg acmeDNSReg, value string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/update", strings.NewReader(`{"subdomain":"`+reg.Subdomain+`","txt":"`+value+`"}`))
	req.Header.Set("X-Api-User", reg.Username)
	req.Header.Set("X-Api-Key", reg.Password)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("update through %s: %v", base, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("update through %s: %d, want 200", base, resp.StatusCode)
	}
}

type acmeDNSReg struct{ Username, Password, Fulldomain, Subdomain string }

// TestDNSServerHA: two `detour dns-server` processes share their accounts
// through etcd ([store] kind = "etcd"). A value updated through the first
// is answered by the second's DNS; then an account registered through the
// first, which is then killed (SIGKILL), is updated through the second,
// whose DNS answers with the new value.
func TestDNSServerHA(t *testing.T) {
	t.Parallel()
	cluster := etcdtest.New(t, etcdtest.Options{})
	bin := buildDetour(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "fleet.key")
	if err := etcdstore.NewKeyFile(key); err != nil {
		t.Fatal(err)
	}
	var eps []string
	for _, e := range cluster.Endpoints() {
		eps = append(eps, fmt.Sprintf("%q", e))
	}
	type instance struct {
		proc             *dnsProc
		dnsAddr, apiBase string
	}
	startInstance := func(node string) instance {
		cfg := filepath.Join(dir, node+".toml")
		doc := fmt.Sprintf("[store]\nkind = \"etcd\"\nendpoints = [%s]\nencryption_key_file = %q\nfleet = \"dns\"\nnode = %q\n",
			strings.Join(eps, ", "), key, node)
		if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		p := startDNSProc(t, bin, "--config", cfg, "--state-dir", filepath.Join(dir, node), "dns-server",
			"--zone", "auth.detour.test", "--ns-addr", "127.0.0.1", "--dns-listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0")
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("%s's log:\n%s", node, p.stderr)
			}
		})
		in := instance{proc: p}
		in.dnsAddr = p.await(t, `^DNS server for auth\.detour\.test listening on (\S+)$`)
		in.apiBase = "http://" + p.await(t, `^acme-dns API http://auth\.detour\.test:\d+ listening on (\S+)$`)
		return in
	}
	one, two := startInstance("dns1"), startInstance("dns2")

	register := func(base string) acmeDNSReg {
		t.Helper()
		resp, err := http.Post(base+"/register", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var reg acmeDNSReg
		if err := json.NewDecoder(resp.Body).Decode(&reg); err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("register through %s: %d %v", base, resp.StatusCode, err)
		}
		return reg
	}

	// Through the first, answered by the second.
	early := register(one.apiBase)
	v1 := strings.Repeat("a", 43)
	acmeDNSUpdate(t, one.apiBase, early, v1)
	const bound = 15 * time.Second // milliseconds in practice
	deadline := time.Now().Add(bound)
	for got := txtAt(t, two.dnsAddr, early.Fulldomain); !slices.Equal(got, []string{v1}); got = txtAt(t, two.dnsAddr, early.Fulldomain) {
		if time.Now().After(deadline) {
			t.Fatalf("after %v the second dns-server serves %q at %s, want [%s] updated through the first", bound, got, early.Fulldomain, v1)
		}
		time.Sleep(10 * time.Millisecond) // polling another process's DNS answers
	}

	// Registered through the first, which dies; updated through the
	// second.
	reg := register(one.apiBase)
	one.proc.kill(t)
	v2 := strings.Repeat("b", 43)
	acmeDNSUpdate(t, two.apiBase, reg, v2)
	if got := txtAt(t, two.dnsAddr, reg.Fulldomain); !slices.Equal(got, []string{v2}) {
		t.Errorf("the second dns-server serves %q at %s after the update through it, want [%s]", got, reg.Fulldomain, v2)
	}
	if got := txtAt(t, two.dnsAddr, early.Fulldomain); !slices.Equal(got, []string{v1}) {
		t.Errorf("the second dns-server serves %q at %s, want [%s]", got, early.Fulldomain, v1)
	}

	if err := two.proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-two.proc.done:
		if err != nil {
			t.Errorf("dns-server exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("dns-server did not stop within 30s of SIGTERM")
	}
}
