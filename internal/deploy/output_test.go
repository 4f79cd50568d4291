package deploy

import (
	"bytes"
	"context"
	"crypto/tls"
	"io/fs"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"software.sslmate.com/src/go-pkcs12"
)

func TestOutputFormats(t *testing.T) {
	info, leaf := testLive(t, "out.example")
	dir := t.TempDir()
	live := func(f string) []byte {
		b, err := os.ReadFile(filepath.Join(info.LiveDir, f))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		format   string
		mode     fs.FileMode
		wantMode fs.FileMode
		check    func(t *testing.T, data []byte)
	}{
		{FormatCert, 0, 0o644, func(t *testing.T, b []byte) { same(t, b, live("cert.pem")) }},
		{FormatChain, 0, 0o644, func(t *testing.T, b []byte) { same(t, b, live("chain.pem")) }},
		{FormatFullchain, 0o640, 0o640, func(t *testing.T, b []byte) { same(t, b, live("fullchain.pem")) }},
		{FormatPrivkey, 0, 0o600, func(t *testing.T, b []byte) { same(t, b, live("privkey.pem")) }},
		{FormatCombined, 0, 0o600, func(t *testing.T, b []byte) {
			// HAProxy's crt: certificate and key in one file; it loads
			// as a pair.
			pair, err := tls.X509KeyPair(b, b)
			if err != nil {
				t.Fatalf("combined PEM does not load as a pair: %v", err)
			}
			if len(pair.Certificate) != 2 || !bytes.Equal(pair.Certificate[0], leaf.Raw) {
				t.Errorf("combined PEM holds %d certificates, want leaf + intermediate", len(pair.Certificate))
			}
		}},
		{FormatPKCS12, 0, 0o600, func(t *testing.T, b []byte) {
			key, cert, cas, err := pkcs12.DecodeChain(b, "s3cret")
			if err != nil {
				t.Fatalf("decoding PKCS#12: %v", err)
			}
			if !cert.Equal(leaf) || len(cas) != 1 || key == nil {
				t.Errorf("PKCS#12 holds leaf %v and %d CA certificates", cert.Subject, len(cas))
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.format, func(t *testing.T) {
			p := filepath.Join(dir, tc.format+".out")
			o := Output{Path: p, Format: tc.format, Mode: tc.mode, Password: "s3cret"}
			if err := o.Write(info); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != tc.wantMode {
				t.Errorf("mode = %o, want %o", fi.Mode().Perm(), tc.wantMode)
			}
			b, _ := os.ReadFile(p)
			tc.check(t, b)
		})
	}
}

// The PKCS#12 file is read by OpenSSL, as Java and Windows tools would.
func TestPKCS12WithOpenSSL(t *testing.T) {
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatalf("this test reads the PKCS#12 output with openssl (Debian package openssl): %v", err)
	}
	info, leaf := testLive(t, "p12.example")
	p := filepath.Join(t.TempDir(), "bundle.p12")
	if err := (Output{Path: p, Format: FormatPKCS12, Password: "changeit"}).Write(info); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(openssl, "pkcs12", "-in", p, "-passin", "pass:changeit", "-nokeys", "-clcerts").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl pkcs12: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "CN=p12.example") && !strings.Contains(string(out), "CN = p12.example") {
		t.Errorf("openssl does not show the leaf %v:\n%s", leaf.Subject, out)
	}
}

func TestOutputOwnerAndSweep(t *testing.T) {
	info, _ := testLive(t, "own.example")
	dir := t.TempDir()
	p := filepath.Join(dir, "haproxy.pem")
	// A write killed half-way left a temporary file.
	stale := filepath.Join(dir, ".haproxy.pem"+tmpMarker+"123")
	if err := os.WriteFile(stale, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := Output{Path: p, Format: FormatCombined, Mode: 0o640}
	if os.Geteuid() == 0 {
		nobody, err := user.Lookup("nobody")
		if err != nil {
			t.Fatal(err)
		}
		o.Owner, o.Group = "nobody", strconv.Itoa(os.Getgid()+1)
		defer func() {
			fi, _ := os.Stat(p)
			st := fi.Sys().(*syscall.Stat_t)
			if strconv.Itoa(int(st.Uid)) != nobody.Uid || int(st.Gid) != os.Getgid()+1 {
				t.Errorf("owner %d:%d, want nobody (%s):%d", st.Uid, st.Gid, nobody.Uid, os.Getgid()+1)
			}
		}()
	}
	if err := o.Write(info); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("leftover temporary file not swept: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only the output", len(ents))
	}
	if err := (Output{Path: p, Format: FormatCert, Owner: "no-such-user-detour"}).Write(info); err == nil || !strings.Contains(err.Error(), "existing user") {
		t.Errorf("unknown owner: %v", err)
	}
	if err := (Output{Path: filepath.Join(dir, "missing", "x.pem"), Format: FormatCert}).Write(info); err == nil || !strings.Contains(err.Error(), "directory exists") {
		t.Errorf("missing directory: %v", err)
	}
}

func TestPlanRunsEveryStep(t *testing.T) {
	info, _ := testLive(t, "plan.example")
	dir := t.TempDir()
	marker := filepath.Join(dir, "hook-ran")
	p := Plan{
		Outputs: []Output{
			{Path: filepath.Join(dir, "missing", "x.pem"), Format: FormatCert}, // fails
			{Path: filepath.Join(dir, "ok.pem"), Format: FormatFullchain},
		},
		Hook: Hook{Command: "touch " + marker},
	}
	err := p.Run(context.Background(), info, nil)
	if err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("err = %v, want the failed output", err)
	}
	for _, f := range []string{marker, filepath.Join(dir, "ok.pem")} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("a failed step stopped the others: %v", err)
		}
	}
	if (Plan{}).Empty() != true || p.Empty() {
		t.Error("Empty is wrong")
	}
}

func same(t *testing.T, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Errorf("content differs from the live file")
	}
}
