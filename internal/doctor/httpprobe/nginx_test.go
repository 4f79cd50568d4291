package httpprobe

// Probes against a real nginx on loopback ports: 127.0.0.1 stands for the
// name's A record and ::1 for its AAAA record. One nginx serves every case,
// each on its own port.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/doctor/check"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/snippet"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/sideport"
	"github.com/detour-acme/detour/internal/testenv"
)

const name = "site.test"

// nginxConf: each server block is one case. Ports are filled in by the
// test; .Side is the side port the forward of port Fwd leads to.
const nginxConf = `{{.User}}
worker_processes 1;
error_log {{.Dir}}/logs/error.log warn;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path {{.Dir}}/body;
    proxy_temp_path {{.Dir}}/proxy;
    fastcgi_temp_path {{.Dir}}/fastcgi;
    uwsgi_temp_path {{.Dir}}/uwsgi;
    scgi_temp_path {{.Dir}}/scgi;

    # Both families serve the docroot for site.test, and keep.test another
    # root that already has a .well-known directory.
    server {
        listen 127.0.0.1:{{.OK}};
        listen [::1]:{{.OK}};
        server_name site.test;
        root {{.Root}};
    }
    server {
        listen 127.0.0.1:{{.OK}};
        listen [::1]:{{.OK}};
        server_name keep.test;
        root {{.Keep}};
    }

    # The AAAA trap: IPv4 serves the docroot, IPv6 another site.
    server {
        listen 127.0.0.1:{{.Trap}};
        server_name site.test;
        root {{.Root}};
    }
    server {
        listen [::1]:{{.Trap}};
        server_name site.test;
        root {{.Other}};
    }

    # Everything to https on the TLS port, which serves the docroot.
    server {
        listen 127.0.0.1:{{.Redir}};
        listen [::1]:{{.Redir}};
        server_name site.test;
        location / { return 301 https://$host$request_uri; }
    }
    server {
        listen 127.0.0.1:{{.TLS}} ssl;
        listen [::1]:{{.TLS}} ssl;
        server_name site.test;
        root {{.Root}};
        ssl_certificate {{.Dir}}/cert.pem;
        ssl_certificate_key {{.Dir}}/key.pem;
    }

    # A redirect to port 8443, which no CA follows.
    server {
        listen 127.0.0.1:{{.Bad}};
        listen [::1]:{{.Bad}};
        server_name site.test;
        return 301 https://$host:8443$request_uri;
    }

    # The side-port forward as ` + "`detour snippet http`" + ` prints it, beside an
    # HTTPS redirect of everything else.
    server {
        listen 127.0.0.1:{{.Fwd}};
        listen [::1]:{{.Fwd}};
        server_name site.test;
{{.Forward}}
        location / { return 301 https://$host$request_uri; }
    }
}
`

// world is the nginx of these tests and its ports and directories.
type world struct {
	ok, trap, redir, tls, bad, fwd int
	side                           string // where the forward of fwd leads
	root, keep, other              string // document roots
	closed                         int    // a port nothing listens on
}

// loopback resolves every name to 127.0.0.1 and ::1.
func loopback(context.Context, string) ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")}, nil
}

// opts returns Options for a probe through port.
func (w *world) opts(port int) Options {
	return Options{Port: port, TLSPort: w.tls, Lookup: loopback, Timeout: 5 * time.Second}
}

func startWorld(t *testing.T) *world {
	t.Helper()
	dir := t.TempDir()
	w := &world{
		ok: testenv.FreePort(t), trap: testenv.FreePort(t), redir: testenv.FreePort(t), tls: testenv.FreePort(t),
		bad: testenv.FreePort(t), fwd: testenv.FreePort(t), closed: testenv.StaticPort(t),
		side:  "127.0.0.1:" + strconv.Itoa(testenv.StaticPort(t)),
		root:  testenv.WorldReadableDir(t),
		keep:  testenv.WorldReadableDir(t),
		other: testenv.WorldReadableDir(t),
	}
	write(t, filepath.Join(w.root, "index.html"), "docroot\n")
	write(t, filepath.Join(w.other, "index.html"), "another site\n")
	write(t, filepath.Join(w.keep, ".well-known", "security.txt"), "Contact: mailto:ops@keep.test\n")
	os.Chmod(filepath.Join(w.keep, ".well-known"), 0o755)
	writeCert(t, dir)
	fwd, err := snippet.HTTPForward(snippet.Nginx, w.side)
	if err != nil {
		t.Fatal(err)
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user nobody nogroup;" // workers read the docroot as nobody: the probe's modes must allow it
	}
	data := map[string]any{
		"User": user, "OK": w.ok, "Trap": w.trap, "Redir": w.redir, "TLS": w.tls, "Bad": w.bad, "Fwd": w.fwd,
		"Root": w.root, "Keep": w.keep, "Other": w.other, "Forward": indent(fwd, "        "),
	}
	var wait []string
	for _, p := range []int{w.ok, w.trap, w.redir, w.tls, w.bad, w.fwd} {
		wait = append(wait, net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), net.JoinHostPort("::1", strconv.Itoa(p)))
	}
	testenv.StartNginx(t, dir, nginxConf, data, wait...)
	return w
}

func TestNginx(t *testing.T) {
	w := startWorld(t)

	t.Run("webroot served", func(t *testing.T) {
		before := tree(t, w.root)
		res, r := ProbeWebroot(t.Context(), name, w.root, w.opts(w.ok))
		wantStatus(t, r, check.OK, "the CA would get the probe over IPv6", "wrote the probe file "+w.root+"/.well-known/acme-challenge/",
			"removed afterwards", "IPv4 (A record 127.0.0.1):", "the probe was served")
		if !res.OK || len(res.Families) != 2 || !res.Families[0].OK || !res.Families[1].OK || res.CAFamily != IPv6 {
			t.Errorf("result %+v", res)
		}
		if got := tree(t, w.root); got != before {
			t.Errorf("the docroot changed:\nbefore:\n%s\nafter:\n%s", before, got)
		}
	})

	t.Run("webroot with an existing .well-known", func(t *testing.T) {
		before := tree(t, w.keep)
		_, r := ProbeWebroot(t.Context(), "keep.test", w.keep, w.opts(w.ok))
		wantStatus(t, r, check.OK)
		if got := tree(t, w.keep); got != before {
			t.Errorf("the docroot changed:\nbefore:\n%s\nafter:\n%s", before, got)
		}
	})

	t.Run("webroot not served for the name", func(t *testing.T) {
		unserved := testenv.WorldReadableDir(t)
		before := tree(t, unserved)
		_, r := ProbeWebroot(t.Context(), name, unserved, w.opts(w.ok))
		wantStatus(t, r, check.Problem, "the web server serves another document root for site.test",
			"the probe file was written under "+unserved, "answered 404 (nginx", "set the webroot path's root")
		if got := tree(t, unserved); got != before {
			t.Errorf("the root changed:\nbefore:\n%s\nafter:\n%s", before, got)
		}
	})

	t.Run("the AAAA trap", func(t *testing.T) {
		before := tree(t, w.root)
		res, r := ProbeWebroot(t.Context(), name, w.root, w.opts(w.trap))
		wantStatus(t, r, check.Problem, "the AAAA trap: over IPv6 [::1]:"+strconv.Itoa(w.trap)+" answered 404",
			"while IPv4 serves the probe", "will not fall back", "listen [::]:80;", "remove the AAAA record of site.test")
		if res.OK || res.CAFamily != IPv6 {
			t.Errorf("the CA would conclude %v over %s, want a failure over IPv6", res.OK, res.CAFamily)
		}
		if v4, _ := res.Family(IPv4); !v4.OK {
			t.Errorf("IPv4 %+v, want it served", v4)
		}
		if got := tree(t, w.root); got != before {
			t.Errorf("the docroot changed")
		}
	})

	t.Run("redirect to https followed", func(t *testing.T) {
		res, r := ProbeWebroot(t.Context(), name, w.root, w.opts(w.redir))
		wantStatus(t, r, check.OK, "1 redirect followed", "Location: https://site.test/.well-known/acme-challenge/",
			"the CA connects to a redirect's target at its first address, IPv6, whichever family it began with")
		for _, f := range res.Families {
			if len(f.Hops) != 2 || f.Hops[0].Status != 301 || f.Hops[1].Status != 200 ||
				!strings.HasPrefix(f.Hops[1].URL, "https://site.test/") {
				t.Errorf("%s hops %+v", f.Family, f.Hops)
			}
			// The CA connects to a redirect's target at its first
			// address, IPv6, whichever family the chain began with.
			if want := "[::1]:" + strconv.Itoa(w.tls); f.Hops[1].Addr != want {
				t.Errorf("%s: the redirect's target was fetched at %s, want %s", f.Family, f.Hops[1].Addr, want)
			}
		}
	})

	t.Run("redirect to port 8443", func(t *testing.T) {
		res, r := ProbeWebroot(t.Context(), name, w.root, w.opts(w.bad))
		wantStatus(t, r, check.Problem, "the CA stops at a redirect it does not follow",
			"answered 301 with a redirect to port 8443", "Location: https://site.test:8443/.well-known/acme-challenge/",
			"ports 80 and 443", "exempt /.well-known/acme-challenge/")
		if f := res.Families[0]; f.Failure != FailRedirect || len(f.Hops) != 1 || f.Hops[0].Err == "" {
			t.Errorf("IPv6 %+v", f)
		}
	})

	t.Run("connection refused", func(t *testing.T) {
		_, r := ProbeWebroot(t.Context(), name, w.root, w.opts(w.closed))
		wantStatus(t, r, check.Problem, "no connection: over IPv6 the connection to [::1]:", "over IPv4 the connection to 127.0.0.1:",
			"connection refused", "nothing listens on port")
	})

	t.Run("NAT without hairpin", func(t *testing.T) {
		o := w.opts(w.ok)
		o.Timeout = 300 * time.Millisecond
		o.Lookup = func(context.Context, string) ([]netip.Addr, error) {
			return []netip.Addr{netip.MustParseAddr("192.0.2.10")}, nil // TEST-NET-1: on no interface here
		}
		before := tree(t, w.root)
		_, r := ProbeWebroot(t.Context(), name, w.root, o)
		wantStatus(t, r, check.Warning, "over IPv4 the connection to 192.0.2.10:"+strconv.Itoa(w.ok),
			"192.0.2.10 is not an address of this host", "no hairpin NAT", "cannot be proven from here")
		if got := tree(t, w.root); got != before {
			t.Errorf("the docroot changed")
		}
	})

	t.Run("webroot cleaned up when cancelled", func(t *testing.T) {
		before := tree(t, w.root)
		ctx, cancel := context.WithCancel(t.Context())
		o := w.opts(w.ok)
		o.Lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
			if _, err := os.Stat(filepath.Join(w.root, ".well-known", "acme-challenge")); err != nil {
				t.Errorf("the probe is not in place while fetched: %v", err)
			}
			cancel() // doctor is interrupted in the middle of the probe
			return loopback(ctx, host)
		}
		_, r := ProbeWebroot(ctx, name, w.root, o)
		wantStatus(t, r, check.Skipped, "interrupted before the probe finished: context canceled", "removed afterwards")
		if got := tree(t, w.root); got != before {
			t.Errorf("the docroot changed:\nbefore:\n%s\nafter:\n%s", before, got)
		}
	})

	t.Run("side port forwarded", func(t *testing.T) {
		res, r := ProbeSidePort(t.Context(), name, w.side, w.opts(w.fwd))
		wantStatus(t, r, check.OK, "listened on "+w.side, "the CA would get the probe over IPv6")
		if !res.OK {
			t.Errorf("result %+v", res)
		}
		if c, err := net.Dial("tcp", w.side); err == nil {
			c.Close()
			t.Errorf("the side port %s still listens after the probe", w.side)
		}
	})

	t.Run("side port not forwarded", func(t *testing.T) {
		side := "127.0.0.1:" + strconv.Itoa(testenv.StaticPort(t))
		_, r := ProbeSidePort(t.Context(), name, side, w.opts(w.ok))
		wantStatus(t, r, check.Problem, "the web server does not forward /.well-known/acme-challenge/ of site.test to "+side,
			"`detour snippet http --server nginx --addr "+side+"`")
	})

	t.Run("side port forwarded elsewhere", func(t *testing.T) {
		// The forward of port fwd leads to w.side; the probe listens on
		// another address, so nginx finds nothing at its target.
		side := "127.0.0.1:" + strconv.Itoa(testenv.StaticPort(t))
		_, r := ProbeSidePort(t.Context(), name, side, w.opts(w.fwd))
		wantStatus(t, r, check.Problem, "forwards the path, but not to "+side, "answered 502",
			"make the forward's target "+side)
	})

	t.Run("side port busy", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		// Another program, answering HTTP as anything but Detour.
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintln(w, "metrics")
		})}
		go srv.Serve(ln)
		defer srv.Close()
		busy := ln.Addr().String()
		_, r := ProbeSidePort(t.Context(), name, busy, w.opts(w.fwd))
		wantStatus(t, r, check.Problem, busy+" is busy: pid "+strconv.Itoa(os.Getpid())+" (", "listens there",
			"choose another listen address")
	})

	t.Run("side port held by Detour", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		agent, err := sideport.New(sideport.Options{Listener: ln})
		if err != nil {
			t.Fatal(err)
		}
		defer agent.Close()
		id, _ := ident.Parse("other.test")
		ch := solve.Challenge{Type: solve.HTTP01, Identifier: id, Token: random(32), KeyAuthorization: "x.y"}
		if err := agent.Present(t.Context(), ch); err != nil {
			t.Fatal(err)
		}
		_, r := ProbeSidePort(t.Context(), name, ln.Addr().String(), w.opts(w.fwd))
		wantStatus(t, r, check.Skipped, "a Detour already listens on "+ln.Addr().String(), "not probed",
			"answers an unknown token as Detour's side port does")
	})
}

// wantStatus fails unless r has status st and its text holds each of want.
func wantStatus(t *testing.T, r check.Result, st check.Status, want ...string) {
	t.Helper()
	text := r.String()
	t.Log("\n" + text)
	if r.Status != st {
		t.Errorf("status %s, want %s:\n%s", r.Status, st, text)
	}
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("lacks %q:\n%s", w, text)
		}
	}
}

// tree lists every file and directory below root with its mode and size.
func tree(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fmt.Fprintf(&b, "%s %v %d\n", rel, fi.Mode(), fi.Size())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func write(t *testing.T, p, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		if l != "" {
			lines[i] = prefix + l
		}
	}
	return strings.Join(lines, "\n")
}

// writeCert writes a self-signed certificate for site.test to dir.
func writeCert(t *testing.T, dir string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "cert.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	write(t, filepath.Join(dir, "key.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})))
}
