package testenv

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BINDIP is the address the test BIND servers listen on: named only binds
// addresses configured on an interface, so a secondary cannot take
// 127.0.0.2 and listens on another port of 127.0.0.1 instead.
const BINDIP = "127.0.0.1"

// BINDKeyName is the TSIG key StartBIND allows to update every zone.
const BINDKeyName = "detour-key"

// BINDZone is one zone a test BIND serves.
type BINDZone struct {
	// Name is the apex, e.g. "detour.test" (no trailing dot).
	Name string
	// Records are zone file lines added after the SOA and NS records,
	// relative to the apex, e.g. "_acme-challenge.www IN CNAME x.auth.test.".
	Records []string
	// NoNotify leaves the secondary uninformed of changes (no NOTIFY, a
	// refresh of an hour): it keeps serving the zone as first transferred.
	NoNotify bool
}

// BINDOptions configure StartBIND.
type BINDOptions struct {
	// Zones are the zones served; the first one also holds the
	// nameservers' names ns1 and ns2, both with address 127.0.0.1.
	Zones []BINDZone
	// Secondary starts a second named on another port of 127.0.0.1 that
	// transfers every zone from the primary (NOTIFY, then IXFR) and is
	// listed in each zone's NS RRset as ns2.
	Secondary bool
	// Algorithm of the TSIG key, default "hmac-sha256".
	Algorithm string
	// FastRefresh raises the primary's notify-rate and the secondary's
	// serial-query-rate to 1000. With BIND's defaults (20 per second) both
	// run in ticks of 500ms, so a change may wait up to a second before
	// the secondary has it; FastRefresh shortens the ticks to 10ms.
	FastRefresh bool
	// Resolver starts a third named, a recursive resolver that forwards
	// every zone's questions to the primary, the way a CA's resolver
	// reaches the zone: it follows CNAMEs from one zone into another,
	// which an authoritative-only server does not.
	Resolver bool
}

// BIND is a running primary (and optional secondary) named from Debian's
// bind9 package, started by a test in the foreground with its
// configuration, zone files and journals in a temporary directory.
type BIND struct {
	// Port is the port the primary listens on (UDP and TCP).
	Port int
	// Addr is the primary's host:port: where updates go, and a resolver
	// for names in the zones (it answers authoritatively, recursion off).
	Addr string
	// SecondaryAddr is the secondary's host:port, "" without one.
	SecondaryAddr string
	// ResolverAddr is the recursive resolver's host:port, "" without one.
	// It caches answers (negative ones too) for at most a second.
	ResolverAddr string
	// Nameservers maps each NS name ("ns1.detour.test.") to the host:port
	// it answers on, for clients that must reach every server.
	Nameservers map[string]string
	// Key is the TSIG key's name, Algorithm and Secret (base64).
	Key, Algorithm, Secret string
	// Primary and Secondary are the processes' logs.
	Primary, Secondary, Resolver *NamedProcess
}

// StartBIND starts named for opts.Zones and returns once every zone is
// loaded (and, with a secondary, transferred).
func StartBIND(t testing.TB, opts BINDOptions) *BIND {
	t.Helper()
	bin := RequireBinary(t, "named", "bind9")
	if len(opts.Zones) == 0 {
		t.Fatal("StartBIND: no zones")
	}
	secret := make([]byte, 32)
	rand.Read(secret)
	b := &BIND{Key: BINDKeyName, Algorithm: opts.Algorithm, Secret: base64.StdEncoding.EncodeToString(secret)}
	if b.Algorithm == "" {
		b.Algorithm = "hmac-sha256"
	}
	b.Port = bindPort(t)
	b.Addr = net.JoinHostPort(BINDIP, strconv.Itoa(b.Port))
	nsZone := opts.Zones[0].Name
	b.Nameservers = map[string]string{"ns1." + nsZone + ".": b.Addr}
	secondaryPort := 0
	if opts.Secondary {
		for secondaryPort == 0 || secondaryPort == b.Port {
			secondaryPort = bindPort(t)
		}
		b.SecondaryAddr = net.JoinHostPort(BINDIP, strconv.Itoa(secondaryPort))
		b.Nameservers["ns2."+nsZone+"."] = b.SecondaryAddr
	}

	primaryExtra := ""
	if opts.FastRefresh {
		primaryExtra = "notify-rate 1000;"
	}
	pdir := filepath.Join(t.TempDir(), "primary")
	os.MkdirAll(pdir, 0o700)
	var zones strings.Builder
	for _, z := range opts.Zones {
		notify := ""
		if opts.Secondary && !z.NoNotify {
			notify = fmt.Sprintf("also-notify { %s port %d; };", BINDIP, secondaryPort)
		}
		fmt.Fprintf(&zones, "zone %q { type primary; file %q; allow-update { key %q; }; allow-transfer { any; }; %s };\n",
			z.Name, filepath.Join(pdir, z.Name+".zone"), BINDKeyName, notify)
		writeConf(t, filepath.Join(pdir, z.Name+".zone"), zoneFile(z, nsZone, opts.Secondary))
	}
	writeConf(t, filepath.Join(pdir, "named.conf"), fmt.Sprintf(`key %q { algorithm %s; secret %q; };
options {
	directory %q;
	pid-file %q;
	session-keyfile %q;
	listen-on port %d { %s; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify explicit;
	notify-delay 0;
	%s
};
controls { };
%s`, BINDKeyName, b.Algorithm, b.Secret, pdir, filepath.Join(pdir, "named.pid"), filepath.Join(pdir, "session.key"),
		b.Port, BINDIP, primaryExtra, zones.String()))
	b.Primary = startNamed(t, bin, pdir)
	b.Primary.waitRunning(t)

	if opts.Secondary {
		sdir := filepath.Join(t.TempDir(), "secondary")
		os.MkdirAll(sdir, 0o700)
		zones.Reset()
		extra := ""
		if opts.FastRefresh {
			extra = "serial-query-rate 1000;"
		}
		for _, z := range opts.Zones {
			fmt.Fprintf(&zones, "zone %q { type secondary; file %q; primaries { %s port %d; }; };\n",
				z.Name, filepath.Join(sdir, z.Name+".zone"), BINDIP, b.Port)
		}
		writeConf(t, filepath.Join(sdir, "named.conf"), fmt.Sprintf(`options {
	directory %q;
	pid-file %q;
	session-keyfile %q;
	listen-on port %d { %s; };
	listen-on-v6 { none; };
	recursion no;
	dnssec-validation no;
	notify no;
	%s
};
controls { };
%s`, sdir, filepath.Join(sdir, "named.pid"), filepath.Join(sdir, "session.key"), secondaryPort, BINDIP, extra, zones.String()))
		b.Secondary = startNamed(t, bin, sdir)
		for _, z := range opts.Zones {
			b.Secondary.WaitLog(t, fmt.Sprintf("transfer of '%s/IN' from %s: Transfer status: success", z.Name, BINDIP+"#"+strconv.Itoa(b.Port)))
		}
	}
	if opts.Resolver {
		b.startResolver(t, bin, opts.Zones)
	}
	return b
}

// startResolver starts a recursive named forwarding zones to the primary.
func (b *BIND) startResolver(t testing.TB, bin string, zones []BINDZone) {
	t.Helper()
	port := 0
	for port == 0 || port == b.Port || b.SecondaryAddr == net.JoinHostPort(BINDIP, strconv.Itoa(port)) {
		port = bindPort(t)
	}
	b.ResolverAddr = net.JoinHostPort(BINDIP, strconv.Itoa(port))
	dir := filepath.Join(t.TempDir(), "resolver")
	os.MkdirAll(dir, 0o700)
	var fwd strings.Builder
	for _, z := range zones {
		fmt.Fprintf(&fwd, "zone %q { type forward; forward only; forwarders { %s port %d; }; };\n", z.Name, BINDIP, b.Port)
	}
	writeConf(t, filepath.Join(dir, "named.conf"), fmt.Sprintf(`options {
	directory %q;
	pid-file %q;
	session-keyfile %q;
	listen-on port %d { %s; };
	listen-on-v6 { none; };
	recursion yes;
	allow-recursion { 127.0.0.0/8; };
	dnssec-validation no;
	max-cache-ttl 1;
	max-ncache-ttl 1;
};
controls { };
%s`, dir, filepath.Join(dir, "named.pid"), filepath.Join(dir, "session.key"), port, BINDIP, fwd.String()))
	b.Resolver = startNamed(t, bin, dir)
	b.Resolver.waitRunning(t)
}

// zoneFile renders z with SOA and NS records naming the servers in nsZone.
func zoneFile(z BINDZone, nsZone string, secondary bool) string {
	var f strings.Builder
	// A refresh of an hour: the secondary learns of changes by NOTIFY only.
	fmt.Fprintf(&f, "$TTL 60\n@ IN SOA ns1.%s. hostmaster.%s. 1 3600 600 86400 60\n@ IN NS ns1.%s.\n", nsZone, nsZone, nsZone)
	if secondary {
		fmt.Fprintf(&f, "@ IN NS ns2.%s.\n", nsZone)
	}
	if z.Name == nsZone {
		fmt.Fprintf(&f, "ns1 IN A %s\n", BINDIP)
		if secondary {
			fmt.Fprintf(&f, "ns2 IN A %s\n", BINDIP)
		}
	}
	for _, r := range z.Records {
		f.WriteString(r + "\n")
	}
	return f.String()
}

// bindPort returns a port free for UDP and TCP on BINDIP.
func bindPort(t testing.TB) int {
	t.Helper()
	for range 50 {
		p := StaticPort(t)
		addr := net.JoinHostPort(BINDIP, strconv.Itoa(p))
		pc, err := net.ListenPacket("udp", addr)
		if err == nil {
			pc.Close()
			return p
		}
	}
	t.Fatal("no port free for BIND on " + BINDIP)
	return 0
}

// NamedProcess is one named started by StartBIND, with its log.
type NamedProcess struct {
	Dir string

	cmd     *exec.Cmd
	done    chan struct{}
	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced at each new line
}

func startNamed(t testing.TB, bin, dir string) *NamedProcess {
	t.Helper()
	p := &NamedProcess{Dir: dir, done: make(chan struct{}), changed: make(chan struct{})}
	p.cmd = exec.Command(bin, "-g", "-4", "-n", "2", "-c", filepath.Join(dir, "named.conf"))
	p.cmd.Dir = dir
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = p.cmd.Stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting named: %v", err)
	}
	read := make(chan struct{})
	go func() {
		p.readLog(out)
		close(read)
	}()
	go func() {
		<-read
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("named in %s:\n%s", dir, p.Log())
		}
	})
	return p
}

func (p *NamedProcess) readLog(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		p.mu.Lock()
		p.lines = append(p.lines, sc.Text())
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}
}

// Log returns what named logged so far.
func (p *NamedProcess) Log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// WaitLog waits until named logs a line containing s, failing the test if
// it exits first or takes longer than 15 seconds.
func (p *NamedProcess) WaitLog(t testing.TB, s string) {
	t.Helper()
	if err := p.waitLog(s, func(l string) bool { return strings.Contains(l, s) }, 15*time.Second); err != nil {
		t.Fatalf("%v; named log:\n%s", err, p.Log())
	}
}

// waitRunning waits for named's "running" line, logged once it listens and
// has loaded its zones.
func (p *NamedProcess) waitRunning(t testing.TB) {
	t.Helper()
	if err := p.waitLog("running", func(l string) bool { return strings.HasSuffix(l, " running") }, 15*time.Second); err != nil {
		t.Fatalf("%v; named log:\n%s", err, p.Log())
	}
}

func (p *NamedProcess) waitLog(s string, match func(string) bool, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	seen, exited := 0, false
	for {
		p.mu.Lock()
		lines, changed := p.lines[seen:], p.changed
		seen = len(p.lines)
		p.mu.Unlock()
		for _, l := range lines {
			if match(l) {
				return nil
			}
		}
		if exited {
			return fmt.Errorf("named exited before logging %q", s)
		}
		select {
		case <-changed:
		case <-p.done:
			exited = true // one more look at the last lines
		case <-deadline.C:
			return fmt.Errorf("named did not log %q within %s", s, timeout)
		}
	}
}
