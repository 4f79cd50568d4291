package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// Front names, as given to --fronts.
const (
	frontDirect      = "direct"
	frontHAProxy     = "haproxy"
	frontNginxStream = "nginx-stream"
	frontNaiveGo     = "naive-go"
	frontDetour      = "detour"
	// frontDetourB is a second detour command (--detour-b-cmd), such as
	// another build, measured in the same run as the first: an A/B of a
	// change against the same HAProxy reps. Only when asked for.
	frontDetourB = "detour-b"
)

// allFronts lists the fronts measured by default, in their order.
var allFronts = []string{frontDirect, frontHAProxy, frontNginxStream, frontNaiveGo, frontDetour}

// knownFronts is every front --fronts accepts.
var knownFronts = append(append([]string(nil), allFronts...), frontDetourB)

// readyTimeout bounds how long a server may take to start listening.
const readyTimeout = 10 * time.Second

// bench holds what every front shares: the temp dir, tools, the backend and
// the stub.
type bench struct {
	dir          string
	nginx        string
	haproxy      string
	streamModule string // path of ngx_stream_module.so, "" if built in
	repoRoot     string
	certPath     string
	keyPath      string
	certDER      []byte
	backendAddr  string
	stub         *stub
	progress     io.Writer
	frontWorkers int    // --front-workers; 0 keeps each front's default
	detourBinary string // built on first use
}

// goEnv returns the environment of a Go front: GOMAXPROCS follows
// --front-workers when it is set.
func (b *bench) goEnv() []string {
	if b.frontWorkers == 0 {
		return nil
	}
	return append(os.Environ(), "GOMAXPROCS="+strconv.Itoa(b.frontWorkers))
}

// front is one thing wrk talks to.
type front struct {
	name        string
	addr        string // where clients connect
	proc        *proc  // nil for direct
	routes      bool   // sends acme-tls/1 to the stub
	unavailable string // why it is not measured; "" when it runs
	notes       []string
}

// freeAddr returns a loopback address with a port that was free a moment
// ago. Another process could take it before the server binds it; the
// server then fails to start and the harness says so.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitReady waits until addr accepts TCP connections, the process exits,
// or the timeout passes.
func waitReady(ctx context.Context, p *proc, addr string) error {
	deadline := time.NewTimer(readyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.done:
			return &exitedError{name: p.name, err: p.err, output: p.output.String()}
		case <-deadline.C:
			return fmt.Errorf("%s did not listen on %s within %s; its output:\n%s", p.name, addr, readyTimeout, p.output.String())
		case <-tick.C:
		}
	}
}

// exitedError reports a server that exited before it listened.
type exitedError struct {
	name   string
	err    error
	output string
}

func (e *exitedError) Error() string {
	return fmt.Sprintf("%s exited before listening (%v): %s", e.name, e.err, lastLine(e.output))
}

// backendTmpl is the HTTPS origin: one worker, TLS 1.3 only, no session
// cache and no tickets so that every new connection is a full handshake.
var backendTmpl = template.Must(template.New("backend").Parse(`# written by bench/router
worker_processes 1;
daemon off;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path {{.Dir}}/client_body;
    proxy_temp_path {{.Dir}}/proxy;
    fastcgi_temp_path {{.Dir}}/fastcgi;
    uwsgi_temp_path {{.Dir}}/uwsgi;
    scgi_temp_path {{.Dir}}/scgi;
    default_type application/octet-stream;
    keepalive_requests 100000000;
    keepalive_timeout 120s;
    server {
        listen {{.Listen}} ssl;
        ssl_certificate {{.Cert}};
        ssl_certificate_key {{.Key}};
        ssl_protocols TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets off;
        root {{.Dir}}/www;
    }
}
`))

// haproxyTmpl routes on the ClientHello in TCP mode, without splicing.
var haproxyTmpl = template.Must(template.New("haproxy").Parse(`# written by bench/router
global
    maxconn 8000
{{if .Workers}}    nbthread {{.Workers}}
{{end}}    # no splice options: plain recv/send, as measured in BENCHMARKS.md
defaults
    mode tcp
    timeout connect 5s
    timeout client 120s
    timeout server 120s
frontend tls_in
    bind {{.Listen}}
    tcp-request inspect-delay 5s
    tcp-request content accept if { req.ssl_hello_type 1 }
    use_backend acme if { req.ssl_alpn acme-tls/1 }
    use_backend web if { req.ssl_sni -i localhost 127.0.0.1 }
    default_backend web
backend acme
    server stub {{.Stub}}
backend web
    server web {{.Backend}}
`))

// streamTmpl is nginx stream with ssl_preread and a map on the offered ALPN
// protocols.
var streamTmpl = template.Must(template.New("stream").Parse(`# written by bench/router
{{if .Module}}load_module {{.Module}};
{{end}}worker_processes {{if .Workers}}{{.Workers}}{{else}}auto{{end}};
daemon off;
pid {{.Dir}}/nginx.pid;
error_log {{.Dir}}/error.log warn;
events { worker_connections 8192; }
stream {
    map $ssl_preread_alpn_protocols $route {
        ~\bacme-tls/1\b acme;
        default web;
    }
    upstream acme { server {{.Stub}}; }
    upstream web { server {{.Backend}}; }
    server {
        listen {{.Listen}};
        ssl_preread on;
        proxy_pass $route;
    }
}
`))

// confData fills the templates.
type confData struct {
	Dir, Listen, Backend, Stub, Cert, Key, Module string
	Workers                                       int // 0: the front's own default
}

func render(t *template.Template, d confData) (string, error) {
	var b bytes.Buffer
	if err := t.Execute(&b, d); err != nil {
		return "", fmt.Errorf("rendering %s config: %w", t.Name(), err)
	}
	return b.String(), nil
}

// startBackend writes the pages and starts the nginx origin.
func (b *bench) startBackend(ctx context.Context, smallPage []byte, bulkSize int) (*proc, error) {
	dir := filepath.Join(b.dir, "backend")
	www := filepath.Join(dir, "www")
	if err := os.MkdirAll(www, 0o755); err != nil {
		return nil, fmt.Errorf("creating backend dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(www, "index.html"), smallPage, 0o644); err != nil {
		return nil, fmt.Errorf("writing small page: %w", err)
	}
	if err := os.WriteFile(filepath.Join(www, "bulk.bin"), bytes.Repeat([]byte{'x'}, bulkSize), 0o644); err != nil {
		return nil, fmt.Errorf("writing bulk file: %w", err)
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	conf, err := render(backendTmpl, confData{Dir: dir, Listen: addr, Cert: b.certPath, Key: b.keyPath})
	if err != nil {
		return nil, err
	}
	p, err := b.startNginx(ctx, "backend nginx", dir, conf, addr)
	if err != nil {
		return nil, err
	}
	b.backendAddr = addr
	return p, nil
}

// startNginx writes conf into dir and runs nginx in the foreground.
func (b *bench) startNginx(ctx context.Context, name, dir, conf, addr string) (*proc, error) {
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("writing %s config: %w", name, err)
	}
	p, err := startProc(name, []string{b.nginx, "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log")}, dir, nil)
	if err != nil {
		return nil, err
	}
	if err := waitReady(ctx, p, addr); err != nil {
		p.stop()
		log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		return nil, fmt.Errorf("starting %s: %w\nerror.log:\n%s", name, err, log)
	}
	return p, nil
}

// startFront starts the named front; a front that cannot start is returned
// with unavailable set, and only harness failures are errors.
func (b *bench) startFront(ctx context.Context, name, detourCmd string) (*front, error) {
	f := &front{name: name}
	if name == frontDirect {
		f.addr = b.backendAddr
		return f, nil
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	f.addr = addr
	d := confData{Listen: addr, Backend: b.backendAddr, Stub: b.stub.addr(), Workers: b.frontWorkers}
	switch name {
	case frontHAProxy:
		f.routes = true
		d.Dir = filepath.Join(b.dir, "haproxy")
		if err := os.MkdirAll(d.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("creating haproxy dir: %w", err)
		}
		conf, err := render(haproxyTmpl, d)
		if err != nil {
			return nil, err
		}
		confPath := filepath.Join(d.Dir, "haproxy.cfg")
		if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
			return nil, fmt.Errorf("writing haproxy config: %w", err)
		}
		p, err := startProc("haproxy", []string{b.haproxy, "-db", "-f", confPath}, d.Dir, nil)
		if err != nil {
			return nil, err
		}
		if err := waitReady(ctx, p, addr); err != nil {
			p.stop()
			return nil, fmt.Errorf("starting haproxy: %w", err)
		}
		f.proc = p
	case frontNginxStream:
		f.routes = true
		d.Dir = filepath.Join(b.dir, "stream")
		d.Module = b.streamModule
		if err := os.MkdirAll(d.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("creating nginx stream dir: %w", err)
		}
		conf, err := render(streamTmpl, d)
		if err != nil {
			return nil, err
		}
		p, err := b.startNginx(ctx, "nginx stream", d.Dir, conf, addr)
		if err != nil {
			if strings.Contains(err.Error(), `unknown directive "stream"`) || strings.Contains(err.Error(), "ngx_stream_module.so") {
				return nil, fmt.Errorf("%w\nnginx has no stream module: apt-get install libnginx-mod-stream, or set --nginx-stream-module", err)
			}
			return nil, err
		}
		f.proc = p
	case frontNaiveGo:
		self, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("finding the harness binary: %w", err)
		}
		p, err := startProc("naive-go", []string{self, naiveFrontCommand, "--listen", addr, "--backend", b.backendAddr}, b.dir, b.goEnv())
		if err != nil {
			return nil, err
		}
		if err := waitReady(ctx, p, addr); err != nil {
			p.stop()
			return nil, fmt.Errorf("starting naive-go: %w", err)
		}
		f.proc = p
	case frontDetour, frontDetourB:
		// detour answers acme-tls/1 itself unless told to send it to the stub.
		f.routes = strings.Contains(detourCmd, "{{stub}}")
		b.startDetour(ctx, f, detourCmd)
	default:
		return nil, fmt.Errorf("unknown front %q: use one of %s", name, strings.Join(knownFronts, ", "))
	}
	return f, nil
}

// expandCommand fills the placeholders of --detour-cmd and splits it into
// words (no shell quoting). A first word "detour" means the binary built
// from ./cmd/detour.
func expandCommand(tmpl, frontAddr, backendAddr, stubAddr, detourBin string) []string {
	r := strings.NewReplacer("{{front}}", frontAddr, "{{backend}}", backendAddr, "{{stub}}", stubAddr, "{{detour}}", detourBin)
	words := strings.Fields(r.Replace(tmpl))
	if len(words) > 0 && words[0] == "detour" {
		words[0] = detourBin
	}
	return words
}

// unavailableReason turns a failed start of the detour command into the
// short reason printed in its row.
func unavailableReason(err error) string {
	var ee *exitedError
	if errors.As(err, &ee) {
		if strings.Contains(ee.output, `unknown command "router"`) {
			return "router command missing"
		}
		return "exited: " + lastLine(ee.output)
	}
	return lastLine(err.Error())
}

// startDetour builds detour if the command needs it and starts the command.
// Failures mark the front unavailable rather than stop the benchmark: the
// router command may not exist yet.
func (b *bench) startDetour(ctx context.Context, f *front, tmpl string) {
	needsBinary := strings.Contains(tmpl, "{{detour}}")
	if w := strings.Fields(tmpl); len(w) > 0 && w[0] == "detour" {
		needsBinary = true
	}
	if needsBinary && b.detourBinary == "" {
		bin := filepath.Join(b.dir, "detour")
		fmt.Fprintf(b.progress, "building detour from %s/cmd/detour\n", b.repoRoot)
		bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(bctx, "go", "build", "-o", bin, "./cmd/detour")
		cmd.Dir = b.repoRoot
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
		if out, err := cmd.CombinedOutput(); err != nil {
			f.unavailable = "build failed: " + lastLine(string(out))
			return
		}
		b.detourBinary = bin
	}
	argv := expandCommand(tmpl, f.addr, b.backendAddr, b.stub.addr(), b.detourBinary)
	if len(argv) == 0 {
		f.unavailable = "empty --detour-cmd"
		return
	}
	// Keep detour's state (it creates its state directory on start) in the
	// temp dir rather than in /var/lib/detour.
	env := b.goEnv()
	if env == nil {
		env = os.Environ()
	}
	env = append(env, "DETOUR_STATE_DIR="+filepath.Join(b.dir, "detour-state"))
	p, err := startProc("detour", argv, b.dir, env)
	if err != nil {
		f.unavailable = lastLine(err.Error())
		return
	}
	if err := waitReady(ctx, p, f.addr); err != nil {
		p.stop()
		f.unavailable = unavailableReason(err)
		return
	}
	f.proc = p
}

// checkRouting checks, before any measurement, that a TLS handshake offering
// http/1.1 is passed through to the backend untouched and, for a routing
// front, that one offering acme-tls/1 reaches the stub. Problems become
// notes in the report.
func (b *bench) checkRouting(ctx context.Context, f *front) {
	d := &net.Dialer{Timeout: 3 * time.Second}
	cfg := &tls.Config{InsecureSkipVerify: true, ServerName: "localhost", NextProtos: []string{"http/1.1"}}
	c, err := d.DialContext(ctx, "tcp", f.addr)
	if err == nil {
		tc := tls.Client(c, cfg)
		_ = tc.SetDeadline(time.Now().Add(3 * time.Second))
		err = tc.HandshakeContext(ctx)
		if err == nil {
			if cs := tc.ConnectionState(); len(cs.PeerCertificates) == 0 || !bytes.Equal(cs.PeerCertificates[0].Raw, b.certDER) {
				err = errors.New("the certificate presented is not the backend's")
			}
		}
		tc.Close()
	}
	if err != nil {
		f.notes = append(f.notes, fmt.Sprintf("pass-through check failed: %v", err))
	}
	if !f.routes {
		return
	}
	b.stub.drain()
	c, err = d.DialContext(ctx, "tcp", f.addr)
	if err != nil {
		f.notes = append(f.notes, fmt.Sprintf("acme-tls/1 check: dialing: %v", err))
		return
	}
	acme := tls.Client(c, &tls.Config{InsecureSkipVerify: true, ServerName: "localhost", NextProtos: []string{"acme-tls/1"}})
	_ = acme.SetDeadline(time.Now().Add(3 * time.Second))
	go func() { _ = acme.Handshake(); acme.Close() }() // the stub hangs up: an error is expected
	select {
	case <-b.stub.hits:
	case <-time.After(3 * time.Second):
		f.notes = append(f.notes, "acme-tls/1 did not reach the stub (the front may answer it itself)")
	}
}
