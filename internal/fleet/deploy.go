package fleet

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/deploy"
	"github.com/detour-acme/detour/internal/store"
	"github.com/detour-acme/detour/internal/store/etcdstore"
)

// DefaultDeployTimeout is DeployerOptions.Timeout's default.
const DefaultDeployTimeout = 10 * time.Second

// Waits between two attempts to deploy a certificate whose last attempt
// failed (etcd away, the local disk full): doubled from the first to the
// last. A certificate the watch reports again (etcd is back) is tried at
// once.
const (
	deployRetryMin = 250 * time.Millisecond
	deployRetryMax = 30 * time.Second
)

// SharedCerts is what a Deployer reads from the fleet's shared store
// (*etcdstore.Store).
type SharedCerts interface {
	// LoadCertificate returns the live version of name, in the fleet's
	// numbering; a *etcdstore.KeyMismatchError when its private key is
	// encrypted with a key this node lacks.
	LoadCertificate(ctx context.Context, name string) (store.Bundle, int, error)
	// LoadRecord returns the record of name.
	LoadRecord(ctx context.Context, name string) (store.Record, error)
	// WatchLive reports every certificate's live version, then every
	// change, until ctx ends (see etcdstore.Store.WatchLive).
	WatchLive(ctx context.Context, fn func(name string, version int)) error
}

var _ SharedCerts = (*etcdstore.Store)(nil)

// LocalCerts is this node's own state directory (*store.FS), where the
// web servers read live/<name>/.
type LocalCerts interface {
	// Load, Store and Delete keep a note of a deploy under way
	// (fleet/deploying/<name>.json), so that one a crash interrupted is
	// finished at the next start.
	store.Storage
	// Lock serialises the deploys of one certificate on this node: the
	// agent's Deployer and a command run by hand (DeployNow) compare
	// and switch live/ one at a time, so a version is deployed (and its
	// reload and hook run) once.
	store.Locker
	LoadCertificate(ctx context.Context, name string) (store.Bundle, int, error)
	PutCertificate(ctx context.Context, name string, b store.Bundle) (int, error)
	LoadRecord(ctx context.Context, name string) (store.Record, error)
	SaveRecord(ctx context.Context, r store.Record) error
	LiveDir(name string) string
}

var _ LocalCerts = (*store.FS)(nil)

// DeployerOptions configure NewDeployer.
type DeployerOptions struct {
	// Shared is the fleet's store; required.
	Shared SharedCerts
	// Local is this node's state directory; required.
	Local LocalCerts
	// Plan returns the deploy steps (outputs, reloads, hook) this node's
	// configuration gives certificate name; false when it does not
	// configure name: the certificate is still written to live/ (a server
	// may read it), and nothing is run. Nil: no certificate has steps.
	Plan func(name string) (deploy.Plan, bool)
	// Client is the etcd client the reports are written with; required.
	Client *clientv3.Client
	// Prefix is the fleet's key prefix, as in Options; required.
	Prefix string
	// Node is this node's name, as in Options; required.
	Node string
	// Logger receives the deploys and failures; nil discards them.
	Logger *slog.Logger
	// Timeout bounds each request to etcd; zero means
	// DefaultDeployTimeout.
	Timeout time.Duration
}

// Deployer makes this node serve the fleet's live certificates: every node
// runs one (Run). For each certificate whose live version in the shared
// store differs from what this node's live/ holds (compared by content,
// store.Bundle.LiveSum, never by number: the node's archive numbering is
// its own), it
//
//  1. writes it to the local store (store.FS.PutCertificate: the same
//     certbot-compatible live/<name>/ layout, switched atomically, so web
//     server configurations do not change),
//  2. saves a copy of the shared record in the local store, describing the
//     local version, so that `detour status` on the node reads it,
//  3. runs the certificate's deploy plan (outputs, reloads, hook) with
//     deploy.Info naming the local live directory and version,
//  4. reports under <prefix>/fleet/deployed/<node>/<name> (Deployed, JSON)
//     the fleet's version, serial, sum and expiry it serves, when, and any
//     error.
//
// The reports are plain keys, without a lease: a node that is down keeps
// showing what it served last (Deployed.At says since when), which is what
// it still serves if it runs without etcd; a node removed for good leaves
// its reports behind until they are deleted.
//
// A deploy step that fails is logged and reported (Error), and the new
// certificate stays live, as on a single host. A certificate whose private
// key is encrypted with a key this node lacks (*etcdstore.KeyMismatchError)
// is never written: the node keeps serving what it has, logs the key id it
// needs, and reports the error; it is tried again at the next change or
// start. A version that cannot be read or written for another reason is
// reported and tried again with growing waits.
//
// Run starts from the full list of live certificates, so a node that was
// down catches up when it starts. A node cut off from etcd keeps serving
// what it has; the watch (SharedCerts.WatchLive) reads everything again
// once etcd answers, and a deploy interrupted by the outage is tried again
// with growing waits. The outage is logged once when it begins and once
// when it ends, not at every attempt (the watch logs its own through the
// shared store's logger).
//
// Certificates are deployed one at a time. Changes that come while a
// deploy runs are merged: a burst of versions of one certificate deploys
// the last one only.
//
// A crash between the switch of live/ and the end of the deploy plan
// leaves a note (fleet/deploying/<name>.json in the local store); the next
// Run finds live/ already switched and runs the plan then.
type Deployer struct {
	opts    DeployerOptions
	log     *slog.Logger
	keys    keys
	running atomic.Bool

	mu    sync.Mutex
	dirty *dueQueue     // certificates to look at
	wake  chan struct{} // one token: dirty changed

	// The fields below belong to the goroutine of Run.
	reports map[string]*reportState
	logged  map[string]string // the last error logged at Error, by name
	down    time.Time         // when etcd stopped answering; zero while it answers
}

// pending is a certificate a Deployer has to look at.
type pending struct {
	version  int       // the fleet's version the watch reported last
	attempts int       // failed attempts since it was reported
	at       time.Time // not before
}

// NewDeployer checks opts and returns a Deployer; Run starts it.
func NewDeployer(opts DeployerOptions) (*Deployer, error) {
	prefix := strings.TrimRight(opts.Prefix, "/")
	switch {
	case opts.Shared == nil:
		return nil, errors.New("deploying the fleet's certificates: no shared store")
	case opts.Local == nil:
		return nil, errors.New("deploying the fleet's certificates: no local store")
	case opts.Client == nil:
		return nil, errors.New("deploying the fleet's certificates: no etcd client")
	case prefix == "":
		return nil, errors.New("deploying the fleet's certificates: the key prefix is empty; set it to the fleet's prefix in etcd, e.g. /detour/<fleet id>")
	case opts.Timeout < 0:
		return nil, fmt.Errorf("deploying the fleet's certificates: negative timeout %v; leave it zero for the default", opts.Timeout)
	}
	if err := ValidNodeName(opts.Node); err != nil {
		return nil, err
	}
	if opts.Plan == nil {
		opts.Plan = func(string) (deploy.Plan, bool) { return deploy.Plan{}, false }
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultDeployTimeout
	}
	return &Deployer{
		opts: opts,
		log:  opts.Logger.With("node", opts.Node),
		keys: keys{base: prefix + "/fleet/"},
		wake: make(chan struct{}, 1),
	}, nil
}

// Run deploys the fleet's certificates on this node until ctx ends, and
// then returns ctx's error. It returns early only when the watch of the
// shared store ends with an error of its own. A deploy under way when ctx
// ends is finished first (its plan runs to the end, its report is
// written). One Run at a time per Deployer; it may be run again after it
// returned.
func (d *Deployer) Run(ctx context.Context) error {
	if !d.running.CompareAndSwap(false, true) {
		return errors.New("deploying the fleet's certificates: this Deployer already runs")
	}
	defer d.running.Store(false)
	d.mu.Lock()
	d.dirty = newDueQueue()
	d.mu.Unlock()
	d.reports, d.logged, d.down = map[string]*reportState{}, map[string]string{}, time.Time{}

	wctx, cancel := context.WithCancel(ctx)
	watched := make(chan error, 1)
	go func() { watched <- d.opts.Shared.WatchLive(wctx, d.notify) }()
	defer func() {
		cancel()
		<-watched
	}()
	d.log.InfoContext(ctx, "deploying the fleet's certificates on this node")
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		name, p, next := d.take(time.Now())
		if name != "" {
			d.process(ctx, name, p)
			continue
		}
		var due <-chan time.Time
		if !next.IsZero() {
			timer.Reset(time.Until(next))
			due = timer.C
		}
		select {
		case <-ctx.Done():
		case err := <-watched:
			watched <- err // for the deferred receive
			if ctx.Err() == nil {
				return fmt.Errorf("deploying the fleet's certificates: watching them: %w", err)
			}
		case <-d.wake:
		case <-due:
		}
		timer.Stop()
	}
}

// notify is the watch's callback: name's live version is now version.
func (d *Deployer) notify(name string, version int) {
	d.mu.Lock()
	p := pending{version: version}
	if old := d.dirty.get(name); old != nil {
		p.attempts = old.attempts
	}
	d.dirty.put(name, p)
	d.mu.Unlock()
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// take removes and returns the first certificate due at now (the earliest,
// then by name),
// or, when none is, "" and when the next one is due (zero: none).
func (d *Deployer) take(now time.Time) (name string, p pending, next time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dirty.take(now)
}

// retry puts name back to be tried again after a failure, with a wait
// that grows with p's attempts, unless the watch reported it again
// meanwhile (then it is tried at once).
func (d *Deployer) retry(name string, p pending) {
	p.attempts++
	wait := deployRetryMin << min(p.attempts-1, 10)
	wait = min(wait, deployRetryMax)
	wait += rand.N(wait/4 + 1)
	p.at = time.Now().Add(wait)
	d.mu.Lock()
	if d.dirty.get(name) == nil {
		d.dirty.put(name, p)
	}
	d.mu.Unlock()
}

// process looks at name once, logs how it went and, after a failure,
// schedules the next attempt.
func (d *Deployer) process(ctx context.Context, name string, p pending) {
	err := d.deployOne(ctx, name, p.version)
	if err == nil {
		d.answering(ctx)
		return
	}
	if ctx.Err() != nil {
		return // Run is ending; the next one starts from the full list
	}
	switch {
	case etcdDown(err):
		if d.down.IsZero() {
			d.down = time.Now()
			d.log.WarnContext(ctx, "the fleet's etcd does not answer; this node keeps serving its live files and tries again",
				"certificate", name, "error", err)
		} else {
			d.log.DebugContext(ctx, "etcd still does not answer", "certificate", name, "error", err)
		}
	case d.logged[name] != err.Error():
		d.logged[name] = err.Error()
		d.log.ErrorContext(ctx, "deploying the fleet's certificate on this node failed; it keeps serving what it has and tries again",
			"certificate", name, "version", p.version, "error", err)
	default:
		d.log.DebugContext(ctx, "deploying the fleet's certificate failed again", "certificate", name, "error", err)
	}
	d.retry(name, p)
}

// answering notes that etcd answered, and logs the end of an outage.
func (d *Deployer) answering(ctx context.Context) {
	if !d.down.IsZero() {
		d.log.InfoContext(ctx, "the fleet's etcd answers again", "away", time.Since(d.down).Round(time.Millisecond))
		d.down = time.Time{}
	}
}

// etcdDown reports whether err means that etcd did not answer (as
// opposed to an answer this node cannot use).
func etcdDown(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable || ee.Code() == codes.DeadlineExceeded
	}
	if st, ok := status.FromError(err); ok {
		return st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded
	}
	return false
}

// deployNote is what fleet/deploying/<name>.json in the local store holds
// while a deploy runs.
type deployNote struct {
	Sum     string `json:"sum"`
	Version int    `json:"version"` // the fleet's
}

func deployNoteKey(name string) string { return "fleet/deploying/" + name + ".json" }

// deployLockName is the local lock of name's deploys on this node (not the
// renewal's lock, which lives in etcd and is the fleet's).
func deployLockName(name string) string { return "fleet-deploy." + name }

// deployOne brings name on this node in line with the fleet's live
// version (reported by the watch as watched). It returns nil when that is
// done, or when it failed in a way only a new version or a restart can
// change (reported); an error when it is to be tried again.
func (d *Deployer) deployOne(ctx context.Context, name string, watched int) error {
	log := d.log.With("certificate", name)
	lctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	b, version, err := d.opts.Shared.LoadCertificate(lctx, name)
	cancel()
	var km *etcdstore.KeyMismatchError
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrNotExist):
		log.InfoContext(ctx, "the fleet has no live version of this certificate; this node keeps its own live files as they are")
		return nil
	case errors.As(err, &km):
		v := versionOfKey(km.Key, watched)
		if d.logged[name] != err.Error() {
			d.logged[name] = err.Error()
			log.ErrorContext(ctx, "cannot deploy the fleet's certificate: this node lacks the key its private key is encrypted with; it keeps serving what it has",
				"version", v, "key_id", km.KeyID, "error", err)
		}
		return d.reportFailure(ctx, name, v, err)
	case etcdDown(err):
		return err
	default:
		// Unreadable in etcd (damaged, the live pointer names a missing
		// version): report it, and try again later.
		if rerr := d.reportFailure(ctx, name, watched, err); rerr != nil {
			return rerr
		}
		return err
	}
	d.answering(ctx)
	unlock, err := d.opts.Local.Lock(ctx, deployLockName(name))
	if err != nil {
		return fmt.Errorf("locking this node's deploy of %s: %w", name, err)
	}
	defer func() {
		if err := unlock(); err != nil {
			log.WarnContext(ctx, "releasing this node's deploy lock", "error", err)
		}
	}()
	sum := b.LiveSum()
	local, localVersion, lerr := d.opts.Local.LoadCertificate(ctx, name)
	if lerr != nil && !errors.Is(lerr, fs.ErrNotExist) {
		log.WarnContext(ctx, "this node's live files of the certificate cannot be read; writing the fleet's version", "error", lerr)
	}
	serving := lerr == nil && local.LiveSum() == sum
	var note deployNote
	noted := false
	if raw, err := d.opts.Local.Load(ctx, deployNoteKey(name)); err == nil {
		noted = json.Unmarshal(raw, &note) == nil
	}
	if serving && !(noted && note.Sum == sum) {
		if noted {
			d.dropNote(ctx, name)
		}
		if err := d.ensureReport(ctx, name, version, b); err != nil {
			return err
		}
		delete(d.logged, name)
		return nil
	}
	leaf, err := b.Leaf()
	if err != nil {
		err = fmt.Errorf("the fleet's version %d: %w", version, err)
		if rerr := d.reportFailure(ctx, name, version, err); rerr != nil {
			return rerr
		}
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	shared, rerr := d.opts.Shared.LoadRecord(rctx, name)
	cancel()
	haveRecord := rerr == nil
	switch {
	case rerr == nil, errors.Is(rerr, fs.ErrNotExist):
	case etcdDown(rerr):
		return rerr
	default:
		log.WarnContext(ctx, "the fleet's record of the certificate cannot be read; the local copy is made from the certificate alone", "error", rerr)
	}
	plan, configured := d.opts.Plan(name)
	// From here on the deploy runs to its end even if ctx ends: live/ is
	// switched, the plan runs, the report is written.
	wctx := context.WithoutCancel(ctx)
	if serving {
		log.InfoContext(ctx, "finishing a deploy that was interrupted", "version", version, "local_version", localVersion)
	} else {
		if configured && !plan.Empty() {
			if raw, err := json.Marshal(deployNote{Sum: sum, Version: version}); err == nil {
				if err := d.opts.Local.Store(wctx, deployNoteKey(name), raw); err != nil {
					log.WarnContext(ctx, "noting the deploy under way", "error", err)
				}
			}
		}
		localVersion, err = d.opts.Local.PutCertificate(wctx, name, b)
		if err != nil {
			err = fmt.Errorf("writing the fleet's version %d to this node's live files: %w", version, err)
			if rerr := d.reportFailure(wctx, name, version, err); rerr != nil {
				return errors.Join(err, rerr)
			}
			return err
		}
		log.InfoContext(ctx, "the fleet's certificate is live on this node", "version", version, "local_version", localVersion,
			"serial", leaf.SerialNumber.Text(16), "live", d.opts.Local.LiveDir(name))
	}
	rec := localRecord(name, shared, haveRecord, b, leaf, localVersion)
	if err := d.opts.Local.SaveRecord(wctx, rec); err != nil {
		log.WarnContext(ctx, "saving the local copy of the record", "error", err)
	}
	var deployErr error
	switch {
	case !configured:
		log.InfoContext(ctx, "the certificate is not configured on this node: its live files are written, no deploy steps run", "version", version)
	case !plan.Empty():
		info := deploy.Info{Name: name, Domains: rec.Identifiers, LiveDir: d.opts.Local.LiveDir(name), Version: localVersion, NotAfter: leaf.NotAfter}
		deployErr = plan.Run(wctx, info, d.log)
		if deployErr != nil {
			log.ErrorContext(ctx, "deploy failed; the new certificate is live", "version", version, "error", deployErr)
		} else {
			log.InfoContext(ctx, "deployed", "version", version, "command", plan.Hook.Command, "outputs", len(plan.Outputs), "reloads", len(plan.Reloads))
		}
	}
	d.dropNote(wctx, name)
	rep := Deployed{Version: version, Serial: leaf.SerialNumber.Text(16), Sum: sum, NotAfter: leaf.NotAfter, At: time.Now().UTC()}
	if deployErr != nil {
		rep.Error, rep.ErrorVersion = deployErr.Error(), version
	}
	if err := d.report(wctx, name, rep); err != nil {
		return err
	}
	delete(d.logged, name)
	return nil
}

// dropNote removes the note of a deploy under way.
func (d *Deployer) dropNote(ctx context.Context, name string) {
	if err := d.opts.Local.Delete(ctx, deployNoteKey(name)); err != nil {
		d.log.WarnContext(ctx, "removing the note of a deploy under way", "certificate", name, "error", err)
	}
}

// ensureReport makes this node's report of name say that it serves b,
// the fleet's version: the report written last stands if it says so
// (with the error of that version's deploy, if any), else a new one is
// written.
func (d *Deployer) ensureReport(ctx context.Context, name string, version int, b store.Bundle) error {
	cur, ok, err := d.current(ctx, name)
	if err != nil {
		return err
	}
	sum := b.LiveSum()
	if ok && cur.Sum == sum && cur.Version == version && (cur.Error == "" || cur.ErrorVersion == version) {
		return d.report(ctx, name, cur) // written already, unless the last write failed
	}
	leaf, err := b.Leaf()
	if err != nil {
		return fmt.Errorf("the fleet's version %d: %w", version, err)
	}
	return d.report(ctx, name, Deployed{Version: version, Serial: leaf.SerialNumber.Text(16), Sum: sum, NotAfter: leaf.NotAfter, At: time.Now().UTC()})
}

// reportFailure reports that the fleet's version of name could not be
// deployed (err), with what this node serves instead.
func (d *Deployer) reportFailure(ctx context.Context, name string, version int, err error) error {
	rep := Deployed{Error: err.Error(), ErrorVersion: version, At: time.Now().UTC()}
	if b, _, lerr := d.opts.Local.LoadCertificate(ctx, name); lerr == nil {
		rep.Sum = b.LiveSum()
		if leaf, err := b.Leaf(); err == nil {
			rep.Serial, rep.NotAfter = leaf.SerialNumber.Text(16), leaf.NotAfter
		}
		cur, ok, err := d.current(ctx, name)
		if err != nil {
			return err
		}
		if ok && cur.Sum == rep.Sum {
			rep.Version = cur.Version
		}
	}
	return d.report(ctx, name, rep)
}

// versionOfKey returns the version an etcd key .../versions/<N> names,
// else fallback.
func versionOfKey(key string, fallback int) int {
	if i := strings.LastIndex(key, "/versions/"); i >= 0 {
		if n, err := strconv.Atoi(key[i+len("/versions/"):]); err == nil {
			return n
		}
	}
	return fallback
}

// localRecord is the copy of the fleet's record of name (shared, when
// have) that this node keeps beside its live files: it describes the local
// version localVersion of b, whose leaf is leaf. The record may lag behind
// the live version (the orderer saves it after storing the certificate);
// then what depends on the certificate is taken from the certificate.
func localRecord(name string, shared store.Record, have bool, b store.Bundle, leaf *x509.Certificate, localVersion int) store.Record {
	r := store.Record{Name: name}
	if have {
		r = shared
	}
	if !have || shared.LiveSum != b.LiveSum() {
		r.ARIID, _ = acme.ARIID(leaf)
		r.ARI = nil
		r.Issued = leaf.NotBefore
		r.Revoked = time.Time{}
		r.Identifiers = leafIdentifiers(leaf)
	}
	r.Version = localVersion
	r.Serial = leaf.SerialNumber.Text(16)
	r.LiveSum = b.LiveSum()
	r.NotBefore, r.NotAfter = leaf.NotBefore, leaf.NotAfter
	return r
}

// leafIdentifiers returns the DNS names and IP addresses leaf is for.
func leafIdentifiers(leaf *x509.Certificate) []string {
	out := slices.Clone(leaf.DNSNames)
	for _, ip := range leaf.IPAddresses {
		out = append(out, ip.String())
	}
	return out
}
