package migrate_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/detour-acme/detour/internal/store/migrate"
)

// TestCopyThenAgain: a host's accounts, certificates (every version, the
// live one) and records reach etcd and load back identical; the state
// directory is not touched; a second run writes nothing and says
// everything is already in etcd.
func TestCopyThenAgain(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	accounts := e.account()
	www := e.issue("www", 3)
	api := e.issue("api", 1)
	if err := e.from.Store(t.Context(), "pending/www.renewing", []byte("2026-01-01T00:00:00Z")); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, e.from.Dir())

	rep := e.run(false)
	if err := rep.Err(); err != nil {
		t.Fatalf("Err() = %v\n%s", err, describe(rep))
	}
	want := map[migrate.Outcome]int{migrate.Copied: 6, migrate.Skipped: 1} // 2 accounts, 2 certificates, 2 records; the marker stays
	if got := counts(rep); !maps.Equal(got, want) {
		t.Errorf("outcomes %v, want %v\n%s", got, want, describe(rep))
	}
	if it := item(t, rep, migrate.KindCertificate, "www"); it.Detail != "versions 1, 2, 3, live 3" {
		t.Errorf("www: %q", it.Detail)
	}
	e.checkKV(accounts...)
	e.checkCert("www", []int{1, 2, 3}, 3)
	e.checkCert("api", []int{1}, 1)
	e.checkRecord(www)
	e.checkRecord(api)
	if _, err := e.to.Load(t.Context(), "pending/www.renewing"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("pending/www.renewing reached etcd (%v): it is this host's", err)
	}
	checkSame(t, e.from.Dir(), before)

	rev := e.revision()
	rep = e.run(false)
	if err := rep.Err(); err != nil {
		t.Fatalf("second run: %v\n%s", err, describe(rep))
	}
	want = map[migrate.Outcome]int{migrate.Already: 6, migrate.Skipped: 1}
	if got := counts(rep); !maps.Equal(got, want) {
		t.Errorf("second run: outcomes %v, want %v\n%s", got, want, describe(rep))
	}
	if got := e.revision(); got != rev {
		t.Errorf("the second run wrote to etcd (revision %d -> %d)", rev, got)
	}
	checkSame(t, e.from.Dir(), before)
}

// TestDryRun writes nothing and reports what a run would copy.
func TestDryRun(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.account()
	e.issue("www", 2)
	rev := e.revision()
	rep := e.run(true)
	if !rep.DryRun || rep.Err() != nil || rep.Count(migrate.Copied) != 4 {
		t.Errorf("dry run: %v\n%s", rep.Err(), describe(rep))
	}
	if got := e.revision(); got != rev {
		t.Errorf("the dry run wrote to etcd (revision %d -> %d)", rev, got)
	}
	e.notInEtcd("www")
}

// TestConflictNotOverwritten: what the fleet holds with other content is
// reported, naming the etcd key and what to do, and kept; everything else
// is copied; the run fails, and fails again until the conflict is
// resolved.
func TestConflictNotOverwritten(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	accounts := e.account()
	e.issue("www", 2)
	api := e.issue("api", 1)
	// The fleet has its own www and another account description.
	fleetWWW := newBundle(t, "www.example")
	if _, err := e.to.PutCertificate(ctx, "www", fleetWWW); err != nil {
		t.Fatal(err)
	}
	if err := e.to.Store(ctx, accounts[1], []byte(`{"location":"https://ca.example/acct/fleet"}`)); err != nil {
		t.Fatal(err)
	}

	rep := e.run(false)
	if err := rep.Err(); err == nil || !strings.Contains(err.Error(), "2 conflict") {
		t.Errorf("Err() = %v, want 2 conflicts\n%s", err, describe(rep))
	}
	cert := item(t, rep, migrate.KindCertificate, "www")
	if cert.Outcome != migrate.Conflict || !strings.Contains(cert.Detail, "/detour/store/certs/www/") || !strings.Contains(cert.Detail, "etcdctl del") {
		t.Errorf("www: %+v, want a conflict naming its etcd key and what to do", cert)
	}
	if it := item(t, rep, migrate.KindRecord, "www"); it.Outcome != migrate.Skipped {
		t.Errorf("www's record: %+v, want held back with its certificate", it)
	}
	acct := item(t, rep, migrate.KindAccount, accounts[1])
	if acct.Outcome != migrate.Conflict || !strings.Contains(acct.Detail, "/detour/store/kv/"+accounts[1]) {
		t.Errorf("account: %+v, want a conflict naming its etcd key", acct)
	}
	// Kept as the fleet had them.
	if b, n, err := e.to.LoadCertificate(ctx, "www"); err != nil || n != 1 || string(b.CertPEM) != string(fleetWWW.CertPEM) {
		t.Errorf("the fleet's www was overwritten: version %d, %v", n, err)
	}
	if v, _ := e.to.Load(ctx, accounts[1]); !strings.Contains(string(v), "fleet") {
		t.Errorf("the fleet's account description was overwritten: %s", v)
	}
	if _, err := e.to.LoadRecord(ctx, "www"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("www's record reached etcd beside another certificate (%v)", err)
	}
	// Everything else was copied.
	e.checkKV(accounts[0])
	e.checkCert("api", []int{1}, 1)
	e.checkRecord(api)

	// Again: the same conflicts, nothing overwritten.
	rep = e.run(false)
	if got := counts(rep); got[migrate.Conflict] != 2 || got[migrate.Copied] != 0 {
		t.Errorf("second run: %v\n%s", got, describe(rep))
	}

	// A record this host changed after it was copied is a conflict too.
	changed := api
	changed.DeployHook = "systemctl reload nginx"
	if err := e.from.SaveRecord(ctx, changed); err != nil {
		t.Fatal(err)
	}
	rep = e.run(false)
	if it := item(t, rep, migrate.KindRecord, "api"); it.Outcome != migrate.Conflict || !strings.Contains(it.Detail, "/detour/store/records/api.json") {
		t.Errorf("api's record: %+v, want a conflict naming its etcd key", it)
	}
	e.checkRecord(api)
}

// TestBrokenFilesReported: a truncated record, a damaged old version and
// a version a crash left incomplete are reported with their files; the
// rest is copied, and the versions keep their numbers across the gaps.
func TestBrokenFilesReported(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	accounts := e.account()
	www := e.issue("www", 3)
	e.issue("api", 1)
	gap := e.issue("gap", 3)
	dir := e.from.Dir()
	apiRecord := filepath.Join(dir, "renewal", "api.json")
	if err := os.WriteFile(apiRecord, []byte(`{"name": "a`), 0o644); err != nil {
		t.Fatal(err)
	}
	damaged := filepath.Join(dir, "archive", "www", "chain2.pem")
	if err := os.WriteFile(damaged, []byte("-----BEGIN CERTIFICATE-----\ngarbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A crash while version 1 of gap was written: its key never was.
	if err := os.Remove(filepath.Join(dir, "archive", "gap", "privkey1.pem")); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)

	rep := e.run(false)
	if err := rep.Err(); err == nil || !strings.Contains(err.Error(), "2 unreadable") {
		t.Errorf("Err() = %v, want 2 unreadable\n%s", err, describe(rep))
	}
	rec := item(t, rep, migrate.KindRecord, "api")
	if rec.Outcome != migrate.Unreadable || rec.File != apiRecord || rec.Err == nil {
		t.Errorf("api's record: %+v, want unreadable with its file and reason", rec)
	}
	v2 := item(t, rep, migrate.KindVersion, "www version 2")
	if v2.Outcome != migrate.Unreadable || !strings.Contains(v2.File, filepath.Join(dir, "archive", "www")) || v2.Err == nil {
		t.Errorf("www version 2: %+v, want unreadable with its files and reason", v2)
	}
	e.checkKV(accounts...)
	e.checkCert("www", []int{1, 3}, 3)
	e.checkRecord(www)
	e.checkCert("api", []int{1}, 1)
	e.checkCert("gap", []int{2, 3}, 3)
	e.checkRecord(gap)
	checkSame(t, dir, before)

	// The record removed and api renewed on this host: the next run
	// copies the new version and the new record.
	if err := os.Remove(apiRecord); err != nil {
		t.Fatal(err)
	}
	api := e.issue("api", 1)
	rep = e.run(false)
	if got := item(t, rep, migrate.KindRecord, "api"); got.Outcome != migrate.Copied {
		t.Errorf("api's record: %+v", got)
	}
	if got := item(t, rep, migrate.KindCertificate, "api"); got.Outcome != migrate.Copied || got.Detail != "versions 2, live 2 (1 in etcd already)" {
		t.Errorf("api after a new version: %+v", got)
	}
	e.checkCert("api", []int{1, 2}, 2)
	e.checkRecord(api)
}

// TestPendingIssuedReported: a certificate the CA issued and this host has
// not stored yet is not copied (its key would reach etcd unencrypted): the
// run fails and says how to store it first.
func TestPendingIssuedReported(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.issue("www", 1)
	note, err := json.Marshal(map[string]any{"bundle": newBundle(t, "www.example"), "account": "https://ca.example/acct/1"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.from.Store(t.Context(), "pending/www.issued.json", note); err != nil {
		t.Fatal(err)
	}
	rep := e.run(false)
	if err := rep.Err(); err == nil || !strings.Contains(err.Error(), "1 unfinished") {
		t.Errorf("Err() = %v, want 1 unfinished\n%s", err, describe(rep))
	}
	it := item(t, rep, migrate.KindPending, "pending/www.issued.json")
	if it.Outcome != migrate.Unfinished || !strings.Contains(it.Detail, "detour renew") || it.File != filepath.Join(e.from.Dir(), "pending", "www.issued.json") {
		t.Errorf("pending note: %+v", it)
	}
	if _, err := e.to.Load(t.Context(), "pending/www.issued.json"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the note reached etcd (%v)", err)
	}
	e.checkCert("www", []int{1}, 1)
}

// TestNeverLiveVersionLeft: a version stored after the live one that never
// went live (a crash before the switch) is not copied; the live one stays
// live.
func TestNeverLiveVersionLeft(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.issue("www", 3)
	link := filepath.Join(e.from.Dir(), "live", "www")
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../archive/www/.v2", link); err != nil {
		t.Fatal(err)
	}
	rep := e.run(false)
	if rep.Err() != nil {
		t.Fatalf("%v\n%s", rep.Err(), describe(rep))
	}
	if it := item(t, rep, migrate.KindVersion, "www version 3"); it.Outcome != migrate.Skipped {
		t.Errorf("version 3: %+v", it)
	}
	e.checkCert("www", []int{1, 2}, 2)
}

// TestResume: a run that stopped half-way (some versions stored; or the
// live pointer moved over a gap and the next version not stored) is
// carried on.
func TestResume(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	e.issue("www", 3)
	e.issue("gap", 3)
	if err := os.Remove(filepath.Join(e.from.Dir(), "archive", "gap", "privkey1.pem")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.to.PutCertificate(ctx, "www", e.fsVersion("www", 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cli.Put(ctx, prefix+"/store/certs/gap/live", "1"); err != nil {
		t.Fatal(err)
	}
	rep := e.run(false)
	if rep.Err() != nil {
		t.Fatalf("%v\n%s", rep.Err(), describe(rep))
	}
	if it := item(t, rep, migrate.KindCertificate, "www"); it.Detail != "versions 2, 3, live 3 (1 in etcd already)" {
		t.Errorf("www: %+v", it)
	}
	e.checkCert("www", []int{1, 2, 3}, 3)
	e.checkCert("gap", []int{2, 3}, 3)
}
