package store

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// errCrash is what the failpoint returns to stop PutCertificate where a
// crash would.
var errCrash = errors.New("simulated crash")

// noExchange stands in for renameExchange on a filesystem without
// RENAME_EXCHANGE.
func noExchange(a, b string) error {
	return fmt.Errorf("exchanging %s and %s: %w", a, b, errExchangeUnsupported)
}

// liveHolds reads the four live files through the live/ paths, as a server
// does, and returns the index in bundles of the version they hold, or -1
// when nothing is live. It fails the test if the files are not one whole
// version or the key does not match the leaf.
func liveHolds(t *testing.T, f *FS, name string, bundles ...Bundle) int {
	t.Helper()
	files := make(map[string][]byte)
	for _, kind := range certFiles {
		b, err := os.ReadFile(f.LivePath(name, kind+".pem"))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		files[kind] = b
	}
	if len(files) == 0 {
		return -1
	}
	if _, err := tls.LoadX509KeyPair(f.LivePath(name, "fullchain.pem"), f.LivePath(name, "privkey.pem")); err != nil {
		t.Fatalf("live key pair does not load: %v", err)
	}
	for i, b := range bundles {
		if bytes.Equal(files["cert"], b.CertPEM) && bytes.Equal(files["chain"], b.ChainPEM) &&
			bytes.Equal(files["fullchain"], b.FullchainPEM()) && bytes.Equal(files["privkey"], b.KeyPEM) {
			return i
		}
	}
	t.Fatalf("live files of %s are not one whole version (%d of 4 readable)", name, len(files))
	return -2
}

// crashScenario is a state PutCertificate starts from.
type crashScenario struct {
	name       string
	noExchange bool
	// setup makes old live (or nothing) and returns the version live before
	// the put (0 for none) once recovery has run.
	setup func(t *testing.T, f *FS, old Bundle) int
}

var crashScenarios = []crashScenario{
	{"first version", false, func(t *testing.T, f *FS, old Bundle) int { return 0 }},
	{"single link", false, func(t *testing.T, f *FS, old Bundle) int {
		if _, err := f.PutCertificate(context.Background(), "example.com", old); err != nil {
			t.Fatal(err)
		}
		return 1
	}},
	{"earlier layout", false, func(t *testing.T, f *FS, old Bundle) int {
		makeLegacy(t, f, "example.com", 1, old)
		return 1
	}},
	{"earlier layout without exchange", true, func(t *testing.T, f *FS, old Bundle) int {
		makeLegacy(t, f, "example.com", 1, old)
		return 1
	}},
	{"earlier layout with pending swap", false, func(t *testing.T, f *FS, old Bundle) int {
		// An earlier version was killed half-way through switching the
		// links from version 1 to old, version 2.
		makeLegacy(t, f, "example.com", 1, newBundle(t, "example.com"))
		writeArchive(t, f, "example.com", 2, old, certFiles[:]...)
		if err := os.WriteFile(f.LivePath("example.com", intentFile), []byte("2\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		switchLink(t, f, "example.com", "cert", 2)
		switchLink(t, f, "example.com", "chain", 2)
		return 2
	}},
}

// TestCrashAtEveryStep stops PutCertificate at each of its steps, as
// SIGKILL would, and checks that live/ then holds the old version or the new
// one whole, without any recovery; that LoadCertificate agrees and leaves
// nothing behind; and that the next PutCertificate succeeds.
func TestCrashAtEveryStep(t *testing.T) {
	const name = "example.com"
	for _, sc := range crashScenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			old, next, after := newBundle(t, name), newBundle(t, name), newBundle(t, name)
			fresh := func(t *testing.T) (*FS, int) {
				f := newFS(t)
				if sc.noExchange {
					f.exchange = noExchange
				}
				return f, sc.setup(t, f, old)
			}

			// A run without a crash records the steps.
			f, oldVersion := fresh(t)
			var steps []string
			f.failpoint = func(step string) error { steps = append(steps, step); return nil }
			newVersion, err := f.PutCertificate(context.Background(), name, next)
			if err != nil {
				t.Fatal(err)
			}
			commit := slices.Index(steps, "switched")
			if commit < 0 || len(steps) < 10 {
				t.Fatalf("steps = %q; want at least 10, with \"switched\"", steps)
			}

			for i, step := range steps {
				t.Run(step, func(t *testing.T) {
					ctx := context.Background()
					f, _ := fresh(t)
					f.failpoint = func(s string) error {
						if s == step {
							return errCrash
						}
						return nil
					}
					if _, err := f.PutCertificate(ctx, name, next); !errors.Is(err, errCrash) {
						t.Fatalf("PutCertificate: err = %v, want the simulated crash", err)
					}
					f.failpoint = nil

					// live/ as the crash left it, read as a server would.
					want, wantVersion := 1, newVersion
					if i < commit {
						want, wantVersion = 0, oldVersion
						if oldVersion == 0 {
							want = -1
						}
					}
					got := liveHolds(t, f, name, old, next)
					if step == "legacy aside" {
						// The documented window of a conversion without
						// RENAME_EXCHANGE: live/<name> is missing, not mixed.
						if got != -1 {
							t.Errorf("live holds version index %d while the old directory is aside, want nothing", got)
						}
					} else if got != want {
						t.Errorf("after a crash at %q live holds bundle %d, want %d (0 old, 1 new, -1 none)", step, got, want)
					}

					// LoadCertificate tidies up and agrees.
					b, v, err := f.LoadCertificate(ctx, name)
					switch {
					case wantVersion == 0:
						if !errors.Is(err, fs.ErrNotExist) {
							t.Errorf("LoadCertificate: err = %v, want fs.ErrNotExist", err)
						}
					case err != nil:
						t.Fatalf("LoadCertificate: %v", err)
					case v != wantVersion:
						t.Errorf("LoadCertificate version = %d, want %d", v, wantVersion)
					default:
						sameBundle(t, b, []Bundle{old, next}[want])
					}
					wantTidy(t, f, name)

					// The next renewal works and gets a fresh number.
					v, err = f.PutCertificate(ctx, name, after)
					if err != nil {
						t.Fatalf("PutCertificate after the crash: %v", err)
					}
					if v <= oldVersion {
						t.Errorf("version after the crash = %d, want more than %d", v, oldVersion)
					}
					wantLive(t, f, name, v)
					if got := liveHolds(t, f, name, after); got != 0 {
						t.Errorf("live holds bundle %d after the next renewal", got)
					}
				})
			}
		})
	}
}

// TestConvertEarlierLayout stores a version over live/<name> directories
// written by earlier Detour versions or imported from certbot.
func TestConvertEarlierLayout(t *testing.T) {
	const name = "example.com"
	tests := []struct {
		name       string
		noExchange bool
		live       int    // version the directory's links point at
		intent     string // content of .detour-swap; "" for none
		pending    []string
		wantOld    int // live version LoadCertificate reports before the put
		wantNew    int
	}{
		{"consistent", false, 1, "", nil, 1, 2},
		{"consistent, without exchange", true, 1, "", nil, 1, 2},
		{"pending swap", false, 1, "2\n", []string{"cert", "chain", "fullchain"}, 2, 3},
		{"pending swap, without exchange", true, 1, "2\n", []string{"cert"}, 2, 3},
		{"certbot import at version 5", false, 5, "", nil, 5, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := newFS(t)
			exchanged := 0
			f.exchange = func(a, b string) error {
				if tt.noExchange {
					return noExchange(a, b)
				}
				err := renameExchange(a, b)
				if err == nil {
					exchanged++
				}
				return err
			}
			bundles := map[int]Bundle{tt.live: newBundle(t, name), tt.live + 1: newBundle(t, name), tt.wantNew: newBundle(t, name)}
			makeLegacy(t, f, name, tt.live, bundles[tt.live])
			if tt.intent != "" {
				writeArchive(t, f, name, tt.live+1, bundles[tt.live+1], certFiles[:]...)
				if err := os.WriteFile(f.LivePath(name, intentFile), []byte(tt.intent), 0o644); err != nil {
					t.Fatal(err)
				}
				for _, kind := range tt.pending {
					switchLink(t, f, name, kind, tt.live+1)
				}
			}

			b, v, err := f.LoadCertificate(ctx, name)
			if err != nil || v != tt.wantOld {
				t.Fatalf("LoadCertificate = version %d, %v; want %d", v, err, tt.wantOld)
			}
			sameBundle(t, b, bundles[tt.wantOld])
			wantLegacyLive(t, f, name, tt.wantOld)

			v, err = f.PutCertificate(ctx, name, bundles[tt.wantNew])
			if err != nil || v != tt.wantNew {
				t.Fatalf("PutCertificate = %d, %v; want %d", v, err, tt.wantNew)
			}
			wantLive(t, f, name, tt.wantNew)
			if !tt.noExchange && exchanged != 1 {
				t.Errorf("the directory was exchanged %d times, want once", exchanged)
			}
			b, v, err = f.LoadCertificate(ctx, name)
			if err != nil || v != tt.wantNew {
				t.Fatalf("LoadCertificate = version %d, %v; want %d", v, err, tt.wantNew)
			}
			sameBundle(t, b, bundles[tt.wantNew])
			vs, err := f.ArchiveVersions(ctx, name)
			if err != nil || vs[0] != tt.live || vs[len(vs)-1] != tt.wantNew {
				t.Errorf("ArchiveVersions = %v, %v; want %d to %d", vs, err, tt.live, tt.wantNew)
			}
			// The next version switches the link only.
			v, err = f.PutCertificate(ctx, name, newBundle(t, name))
			if err != nil || v != tt.wantNew+1 {
				t.Fatalf("PutCertificate = %d, %v; want %d", v, err, tt.wantNew+1)
			}
			wantLive(t, f, name, v)
		})
	}
}

// TestConvertKeepsUnknownFiles checks that a file someone put in an old
// live directory is not deleted with it.
func TestConvertKeepsUnknownFiles(t *testing.T) {
	const name = "example.com"
	ctx := context.Background()
	f := newFS(t)
	makeLegacy(t, f, name, 1, newBundle(t, name))
	if err := os.WriteFile(f.LivePath(name, "dhparam.pem"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.PutCertificate(ctx, name, newBundle(t, name)); err != nil {
		t.Fatal(err)
	}
	temps, err := f.liveTemps(name)
	if err != nil || len(temps) != 1 {
		t.Fatalf("old live directory: %v (%v), want one kept aside", temps, err)
	}
	if got, err := os.ReadFile(filepath.Join(temps[0], "dhparam.pem")); err != nil || string(got) != "mine" {
		t.Errorf("unknown file = %q, %v; want it kept", got, err)
	}
	if _, err := os.Lstat(filepath.Join(temps[0], "cert.pem")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("old cert.pem link not removed: %v", err)
	}
	// Recover neither deletes it nor mistakes it for a directory to restore.
	if err := f.Recover(ctx, name); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(temps[0], "dhparam.pem")); err != nil {
		t.Errorf("unknown file removed by Recover: %v", err)
	}
	if _, v, err := f.LoadCertificate(ctx, name); err != nil || v != 2 {
		t.Errorf("LoadCertificate = version %d, %v; want 2", v, err)
	}
}

// TestSwitchConcurrentReaders switches 50 versions while readers load the
// key pair: through the live paths (tls.LoadX509KeyPair, as a server
// reload does), through one open live/<name> directory, and with
// LoadCertificate. Every read that saw a single version must give a
// matching key and leaf of that version.
func TestSwitchConcurrentReaders(t *testing.T) {
	const name, swaps = "example.com", 50
	ctx := context.Background()
	f := newFS(t)
	bundles := make([]Bundle, swaps+1) // bundles[v-1] is version v
	leaves := make(map[string]int)     // leaf DER -> version
	for i := range bundles {
		bundles[i] = newBundle(t, name)
		block, _ := pem.Decode(bundles[i].CertPEM)
		leaves[string(block.Bytes)] = i + 1
	}
	if _, err := f.PutCertificate(ctx, name, bundles[0]); err != nil {
		t.Fatal(err)
	}
	full, key := f.LivePath(name, "fullchain.pem"), f.LivePath(name, "privkey.pem")

	done := make(chan struct{})
	var wg sync.WaitGroup
	var consistent, straddled, viaDir, loads atomic.Int64
	// reader runs read in a loop until done, and returns once the first
	// read has finished, so that every reader overlaps the switches.
	reader := func(read func() bool) {
		ready := make(chan struct{})
		wg.Go(func() {
			var once sync.Once
			defer once.Do(func() { close(ready) })
			for {
				ok := read()
				once.Do(func() { close(ready) })
				if !ok {
					return
				}
				select {
				case <-done:
					return
				default:
				}
			}
		})
		<-ready
	}
	// Through the live paths, bracketed by reads of the live link: when the
	// link did not change, both files came from that version.
	pathRead := func() bool {
		before, err := os.Readlink(f.liveDir(name))
		if err != nil {
			t.Error(err)
			return false
		}
		pair, lerr := tls.LoadX509KeyPair(full, key)
		after, err := os.Readlink(f.liveDir(name))
		if err != nil {
			t.Error(err)
			return false
		}
		if before != after {
			straddled.Add(1)
			return true
		}
		if lerr != nil {
			t.Errorf("live paths at %s give no key pair: %v", before, lerr)
			return false
		}
		n, _ := parseLiveTarget(name, before)
		if got := leaves[string(pair.Certificate[0])]; got != n {
			t.Errorf("live paths at %s give the leaf of version %d", before, got)
			return false
		}
		consistent.Add(1)
		return true
	}
	// Through one open directory: always a single version.
	dirRead := func() bool {
		d, err := os.Open(f.liveDir(name))
		if err != nil {
			t.Error(err)
			return false
		}
		defer d.Close()
		readAt := func(file string) []byte {
			fd, err := unix.Openat(int(d.Fd()), file, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Errorf("opening %s in the live directory: %v", file, err)
				return nil
			}
			fh := os.NewFile(uintptr(fd), file)
			defer fh.Close()
			b, err := io.ReadAll(fh)
			if err != nil {
				t.Error(err)
			}
			return b
		}
		if _, err := tls.X509KeyPair(readAt("fullchain.pem"), readAt("privkey.pem")); err != nil {
			t.Errorf("the open live directory gives no key pair: %v", err)
			return false
		}
		viaDir.Add(1)
		return true
	}
	last := 0
	loadRead := func() bool {
		b, v, err := f.LoadCertificate(ctx, name)
		if err != nil {
			t.Errorf("LoadCertificate: %v", err)
			return false
		}
		if v < last {
			t.Errorf("LoadCertificate went back from version %d to %d", last, v)
			return false
		}
		last = v
		sameBundle(t, b, bundles[v-1])
		loads.Add(1)
		return true
	}
	for _, read := range []func() bool{pathRead, dirRead, loadRead} {
		reader(read)
	}

	for v := 2; v <= swaps+1; v++ {
		got, err := f.PutCertificate(ctx, name, bundles[v-1])
		if err != nil {
			t.Fatal(err)
		}
		if got != v {
			t.Fatalf("PutCertificate = %d, want %d", got, v)
		}
	}
	close(done)
	wg.Wait()
	wantLive(t, f, name, swaps+1)
	t.Logf("path reads: %d of one version, %d straddling a switch; directory reads: %d; LoadCertificate: %d",
		consistent.Load(), straddled.Load(), viaDir.Load(), loads.Load())
}

// TestSIGKILLDuringPut kills, with SIGKILL, a child process that stores
// versions in a loop, at a random point of a PutCertificate, and checks
// each time that live/ holds one whole version whose key matches its leaf,
// before any recovery. The state starts in the earlier layout.
func TestSIGKILLDuringPut(t *testing.T) {
	const name, rounds = "example.com", 8
	ctx := context.Background()
	dir := t.TempDir()
	f, err := NewFS(dir, FSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	makeLegacy(t, f, name, 1, newBundle(t, name))
	for round := range rounds {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), helperEnv+"=puts", helperDirEnv+"="+dir)
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Two finished puts give the length of one; the kill lands at a
		// random point of the next two.
		r := bufio.NewReader(stdout)
		var marks [2]time.Time
		for i := range marks {
			if _, err := r.ReadString('\n'); err != nil {
				_ = cmd.Process.Kill()
				_ = cmd.Wait()
				t.Fatalf("round %d: helper stopped: %v", round, err)
			}
			marks[i] = time.Now()
		}
		one := marks[1].Sub(marks[0])
		delay := rand.N(2*one) + 1
		<-time.After(delay) // the random kill moment, not a synchronisation
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		go func() { _, _ = io.Copy(io.Discard, r) }()
		if err := cmd.Wait(); err == nil {
			t.Fatalf("round %d: helper exited cleanly; it should have been killed", round)
		}

		// live/ as the kill left it, read as a server would.
		pair, err := tls.LoadX509KeyPair(f.LivePath(name, "fullchain.pem"), f.LivePath(name, "privkey.pem"))
		if err != nil {
			t.Fatalf("round %d (killed %v after a put, puts take %v): live key pair does not load: %v", round, delay, one, err)
		}
		cert, err1 := os.ReadFile(f.LivePath(name, "cert.pem"))
		chain, err2 := os.ReadFile(f.LivePath(name, "chain.pem"))
		full, err3 := os.ReadFile(f.LivePath(name, "fullchain.pem"))
		if err := errors.Join(err1, err2, err3); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		block, _ := pem.Decode(cert)
		if block == nil || !bytes.Equal(block.Bytes, pair.Certificate[0]) || !bytes.Equal(full, append(cert, chain...)) {
			t.Fatalf("round %d: cert.pem, chain.pem and fullchain.pem are not one version", round)
		}
	}
	if err := f.Recover(ctx, name); err != nil {
		t.Fatal(err)
	}
	v, err := f.PutCertificate(ctx, name, newBundle(t, name))
	if err != nil {
		t.Fatal(err)
	}
	wantLive(t, f, name, v)
	t.Logf("%d versions stored across %d killed processes", v, rounds)
}
