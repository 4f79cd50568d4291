package firewall

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/detour-acme/detour/internal/store"
)

// Lease is one holder's claim on an open window, stored under
// firewall/leases/<ID>.json.
type Lease struct {
	ID         string `json:"id"`
	Backend    string `json:"backend"`
	Port       int    `json:"port"`
	Family     Family `json:"family"`
	Proto      string `json:"proto"`
	Identifier string `json:"identifier,omitempty"`
	// Scope tells apart two firewalls of one backend (two security
	// groups): a lease counts only for windows in the same one.
	Scope  string    `json:"scope,omitempty"`
	PID    int       `json:"pid"`
	Opened time.Time `json:"opened"`
	Until  time.Time `json:"until"`
}

// Window returns the window the lease holds, with the time it has left.
func (l Lease) Window(now time.Time) Window {
	return Window{Port: l.Port, Family: l.Family, Proto: l.Proto, Timeout: max(l.Until.Sub(now), time.Second), Identifier: l.Identifier}
}

// leasePrefix is where leases are stored.
const leasePrefix = "firewall/leases/"

// lockName is the store lock held while leases and windows change. The
// leading underscore keeps it apart from usual certificate names.
const lockName = "_detour-firewall"

// Keeper opens and closes windows on one backend, counting holders across
// processes that share a state directory, so that the first holder to
// finish does not close a port another still needs.
type Keeper struct {
	backend Backend
	store   store.Storage
	locker  store.Locker
	log     *slog.Logger
	now     func() time.Time
	pid     int
	alive   func(pid int) bool

	sweepOnce sync.Once
}

// KeeperOptions configure NewKeeper.
type KeeperOptions struct {
	Backend Backend       // required
	Store   store.Storage // required: where leases live
	Locker  store.Locker  // required: serialises lease changes
	Logger  *slog.Logger
	// Now and PID and Alive replace the clock, this process's ID and the
	// liveness test of another process (tests).
	Now   func() time.Time
	PID   int
	Alive func(pid int) bool
}

// NewKeeper returns a Keeper for opts.Backend.
func NewKeeper(opts KeeperOptions) (*Keeper, error) {
	if opts.Backend == nil || opts.Store == nil || opts.Locker == nil {
		return nil, errors.New("firewall keeper needs a backend, a store and a locker")
	}
	k := &Keeper{backend: opts.Backend, store: opts.Store, locker: opts.Locker, log: opts.Logger,
		now: opts.Now, pid: opts.PID, alive: opts.Alive}
	if k.log == nil {
		k.log = discard
	}
	if k.now == nil {
		k.now = time.Now
	}
	if k.pid == 0 {
		k.pid = os.Getpid()
	}
	if k.alive == nil {
		k.alive = processAlive
	}
	return k, nil
}

// Backend returns the keeper's backend.
func (k *Keeper) Backend() Backend { return k.backend }

// scoped is a backend with several firewalls of one kind (a cloud
// provider's firewalls): Scope names the one it changes.
type scoped interface{ Scope() string }

func (k *Keeper) scope() string {
	if s, ok := k.backend.(scoped); ok {
		return s.Scope()
	}
	return ""
}

// mine reports whether l holds a window on the keeper's firewall.
func (k *Keeper) mine(l Lease) bool { return l.Backend == k.backend.Name() && l.Scope == k.scope() }

// processAlive reports whether a process with pid exists.
func processAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// Check runs the backend's Check, then, once per Keeper, the sweep of
// stale rules and leases left by killed runs. A sweep that fails is
// logged, not returned: it is housekeeping, and a window that cannot be
// opened fails in Open with its own reason.
func (k *Keeper) Check(ctx context.Context, w Window) error {
	if err := k.backend.Check(ctx, w); err != nil {
		return err
	}
	k.sweepOnce.Do(func() {
		if err := k.sweep(ctx); err != nil {
			k.log.WarnContext(ctx, "removing what killed runs left in the firewall failed", "firewall", k.backend.Name(), "error", err)
		}
	})
	return nil
}

// SweepStale removes dead leases and, when no live lease remains on this
// backend, the windows past their deadline that killed runs left (for a
// cloud firewall, whose rules never expire by themselves, the only way
// they go).
func (k *Keeper) SweepStale(ctx context.Context) error { return k.sweep(ctx) }

// sweep removes dead leases and, when no live lease remains on this
// backend, the backend's expired rules.
func (k *Keeper) sweep(ctx context.Context) error {
	unlock, err := k.locker.Lock(ctx, lockName)
	if err != nil {
		return fmt.Errorf("locking the firewall leases: %w", err)
	}
	defer unlock()
	leases, err := k.live(ctx)
	if err != nil {
		return err
	}
	for _, l := range leases {
		if k.mine(l) {
			// Another run holds a window: what looks stale may be its.
			return nil
		}
	}
	if err := k.backend.Sweep(ctx, false); err != nil {
		return fmt.Errorf("removing stale firewall rules: %w", err)
	}
	return nil
}

// live returns the live leases, deleting the dead ones: those past their
// deadline or whose process is gone.
func (k *Keeper) live(ctx context.Context) ([]Lease, error) {
	keys, err := k.store.List(ctx, leasePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing firewall leases: %w", err)
	}
	now := k.now()
	var out []Lease
	for _, key := range keys {
		if !strings.HasSuffix(key, ".json") {
			continue
		}
		data, err := k.store.Load(ctx, key)
		if errors.Is(err, store.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("reading firewall lease %s: %w", key, err)
		}
		var l Lease
		if err := json.Unmarshal(data, &l); err != nil || l.ID == "" {
			k.log.WarnContext(ctx, "removing an unreadable firewall lease", "key", key, "error", err)
			_ = k.store.Delete(ctx, key)
			continue
		}
		if !l.Until.After(now) || (l.PID != k.pid && !k.alive(l.PID)) {
			k.log.DebugContext(ctx, "firewall lease is over", "lease", l.ID, "pid", l.PID, "until", l.Until)
			if err := k.store.Delete(ctx, key); err != nil {
				return nil, fmt.Errorf("removing firewall lease %s: %w", key, err)
			}
			continue
		}
		out = append(out, l)
	}
	return out, nil
}

// OpenLeases returns the leases in st that still hold a window open: not
// past their timeout, their process alive. Unlike a Keeper, it changes
// nothing (the next Keeper at work removes the others); unreadable leases
// are skipped.
func OpenLeases(ctx context.Context, st store.Storage) ([]Lease, error) {
	keys, err := st.List(ctx, leasePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing firewall leases: %w", err)
	}
	now := time.Now()
	var out []Lease
	for _, key := range keys {
		if !strings.HasSuffix(key, ".json") {
			continue
		}
		data, err := st.Load(ctx, key)
		if err != nil {
			continue
		}
		var l Lease
		if json.Unmarshal(data, &l) != nil || l.ID == "" || !l.Until.After(now) || !processAlive(l.PID) {
			continue
		}
		out = append(out, l)
	}
	return out, nil
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Open opens w and records the lease. The lease is written before the
// port opens, so a crash in between leaves a lease that only expires.
func (k *Keeper) Open(ctx context.Context, w Window) (Lease, error) {
	if err := w.validate(); err != nil {
		return Lease{}, err
	}
	unlock, err := k.locker.Lock(ctx, lockName)
	if err != nil {
		return Lease{}, fmt.Errorf("locking the firewall leases: %w", err)
	}
	defer unlock()
	others, err := k.live(ctx)
	if err != nil {
		return Lease{}, err
	}
	now := k.now()
	l := Lease{ID: newID(), Backend: k.backend.Name(), Scope: k.scope(), Port: w.Port, Family: w.Family, Proto: w.proto(),
		Identifier: w.Identifier, PID: k.pid, Opened: now, Until: now.Add(w.Timeout)}
	data, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return Lease{}, err
	}
	if err := k.store.Store(ctx, leasePrefix+l.ID+".json", data); err != nil {
		return Lease{}, fmt.Errorf("recording firewall lease: %w", err)
	}
	if err := k.backend.Open(ctx, w); err != nil {
		_ = k.store.Delete(context.WithoutCancel(ctx), leasePrefix+l.ID+".json")
		return Lease{}, err
	}
	n := 0
	for _, o := range others {
		if k.mine(o) && o.Port == l.Port {
			n++
		}
	}
	k.log.InfoContext(ctx, "firewall window held", "backend", l.Backend, "port", l.Port, "family", l.Family,
		"until", l.Until.Truncate(time.Second), "other_holders", n)
	return l, nil
}

// Close releases l and closes the families of its window that no other
// live lease on the same backend and port holds.
func (k *Keeper) Close(ctx context.Context, l Lease) error {
	unlock, err := k.locker.Lock(ctx, lockName)
	if err != nil {
		return fmt.Errorf("locking the firewall leases: %w", err)
	}
	defer unlock()
	if err := k.store.Delete(ctx, leasePrefix+l.ID+".json"); err != nil {
		return fmt.Errorf("removing firewall lease: %w", err)
	}
	others, err := k.live(ctx)
	if err != nil {
		return err
	}
	held := Family("")
	for _, o := range others {
		if k.mine(o) && o.Port == l.Port {
			held = held.Union(o.Family)
		}
	}
	rest := l.Family.Minus(held)
	if rest == "" {
		k.log.InfoContext(ctx, "firewall window stays open: another Detour run still holds it", "port", l.Port, "family", l.Family)
		return nil
	}
	w := l.Window(k.now())
	w.Family = rest
	return k.backend.Close(ctx, w)
}

// Status returns what the backend holds open and the live leases.
func (k *Keeper) Status(ctx context.Context) ([]Hole, []Lease, error) {
	unlock, err := k.locker.Lock(ctx, lockName)
	if err != nil {
		return nil, nil, fmt.Errorf("locking the firewall leases: %w", err)
	}
	defer unlock()
	leases, err := k.live(ctx)
	if err != nil {
		return nil, nil, err
	}
	leases = slices.DeleteFunc(leases, func(l Lease) bool { return !k.mine(l) })
	holes, err := k.backend.Status(ctx)
	return holes, leases, err
}

// CloseAll closes every window Detour holds on the backend and forgets
// every lease on it, whoever holds it.
func (k *Keeper) CloseAll(ctx context.Context) error {
	unlock, err := k.locker.Lock(ctx, lockName)
	if err != nil {
		return fmt.Errorf("locking the firewall leases: %w", err)
	}
	defer unlock()
	leases, err := k.live(ctx)
	if err != nil {
		return err
	}
	var errs []error
	now := k.now()
	for _, l := range leases {
		if !k.mine(l) {
			continue
		}
		errs = append(errs, k.backend.Close(ctx, l.Window(now)))
		errs = append(errs, k.store.Delete(ctx, leasePrefix+l.ID+".json"))
	}
	errs = append(errs, k.backend.Sweep(ctx, true))
	return errors.Join(errs...)
}
