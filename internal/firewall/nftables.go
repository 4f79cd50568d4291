package firewall

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/mdlayher/netlink/nltest"
	"golang.org/x/sys/unix"
)

// Names of what the nftables backend creates.
const (
	nftTable   = "detour"      // table inet detour
	nftSet     = "open"        // its set of open (nfproto . port) pairs
	nftChain   = "input"       // its base chain accepting them
	nftUserSet = "detour_open" // the companion set in a user's table
	// nftPriority is the priority of Detour's input chain: just before
	// the usual filter chains (0).
	nftPriority = -10
	// nftRuleComment is the comment of every rule Detour adds.
	nftRuleComment = tag + ": accepts the ports Detour opens while an ACME CA validates"
	// Table flags (NFT_TABLE_F_*).
	nftTableDormant = 0x1
	nftTableOwner   = 0x2
)

// nftKeyType is the set key: "meta nfproto . tcp dport".
var nftKeyType = nftables.MustConcatSetType(nftables.TypeNFProto, nftables.TypeInetService)

// nftMu serialises batches built in this process: the nftables package
// numbers new sets with an unguarded global counter.
var nftMu sync.Mutex

// nftBackend is the nftables backend, speaking netlink.
type nftBackend struct {
	log   *slog.Logger
	netns int
	now   func() time.Time
	dial  nltest.Func // tests: a fake kernel
}

func newNftables(opts Options) *nftBackend {
	return &nftBackend{log: opts.Logger, netns: opts.NetNS, now: opts.Now}
}

// Name implements Backend.
func (b *nftBackend) Name() string { return NameNftables }

// conn opens a netlink connection to nf_tables, failing with
// ErrPermission or ErrUnsupported when that is the reason.
func (b *nftBackend) conn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if b.netns != 0 {
		opts = append(opts, nftables.WithNetNSFd(b.netns))
	}
	if b.dial != nil {
		opts = append(opts, nftables.WithTestDial(b.dial))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, nftError("connecting to nftables", err, true)
	}
	if _, err := c.ListTables(); err != nil {
		return nil, nftError("listing nftables tables", err, true)
	}
	return c, nil
}

// nftError explains err. first marks the first request of a connection,
// where EINVAL means the kernel does not know nf_tables at all.
func nftError(op string, err error, first bool) error {
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		return fmt.Errorf("%s: %w: the nftables firewall window needs root or the CAP_NET_ADMIN capability; "+
			"run detour as root, or grant the capability (AmbientCapabilities=CAP_NET_ADMIN in its systemd unit) (%v)",
			op, ErrPermission, err)
	case errors.Is(err, unix.EPROTONOSUPPORT), errors.Is(err, unix.EAFNOSUPPORT), errors.Is(err, unix.EOPNOTSUPP),
		first && errors.Is(err, unix.EINVAL):
		return fmt.Errorf("%s: %w: this kernel has no nftables (nf_tables); load the module (modprobe nf_tables), "+
			"or set firewall = \"iptables-legacy\" (%v)", op, ErrUnsupported, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// nftKey returns the set key of port for one family.
func nftKey(f Family, port int) []byte {
	k := make([]byte, 8)
	k[0] = unix.NFPROTO_IPV4
	if f == IPv6 {
		k[0] = unix.NFPROTO_IPV6
	}
	binary.BigEndian.PutUint16(k[4:], uint16(port))
	return k
}

// parseNftKey is nftKey reversed.
func parseNftKey(k []byte) (Family, int, bool) {
	if len(k) != 8 {
		return "", 0, false
	}
	port := int(binary.BigEndian.Uint16(k[4:]))
	switch k[0] {
	case unix.NFPROTO_IPV4:
		return IPv4, port, true
	case unix.NFPROTO_IPV6:
		return IPv6, port, true
	}
	return "", 0, false
}

// acceptExprs is "meta l4proto tcp meta nfproto . tcp dport @set accept".
func acceptExprs(set *nftables.Set) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		// NFT_REG32_01 (9) follows NFT_REG_1's first 32 bits: the
		// concatenation is read from consecutive 32-bit registers.
		&expr.Payload{OperationType: expr.PayloadLoad, DestRegister: 9, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}
}

func ruleComment(r *nftables.Rule) string {
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return s
}

func isOurRule(r *nftables.Rule) bool { return strings.HasPrefix(ruleComment(r), tag) }

func tableName(t *nftables.Table) string { return familyName(t.Family) + " " + t.Name }

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyNetdev:
		return "netdev"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyARP:
		return "arp"
	}
	return fmt.Sprintf("family-%d", f)
}

func ours(t *nftables.Table) bool { return t.Name == nftTable && t.Family == nftables.TableFamilyINet }

// companion is Detour's set and rule in one of the user's tables.
type companion struct {
	table *nftables.Table
	set   *nftables.Set // nil when absent
	elems []nftables.SetElement
	rules []*nftables.Rule // Detour's rules in the table's chains
	chain map[*nftables.Rule]*nftables.Chain
}

// nftState is what the backend reads before it changes anything.
type nftState struct {
	table    *nftables.Table // Detour's table, nil when absent
	set      *nftables.Set
	elems    []nftables.SetElement
	hasRule  bool
	targets  []*nftables.Chain // user chains that may drop input: they need a companion
	problems []string          // why the ruleset cannot be changed safely
	comps    map[string]*companion
}

// read reads Detour's table and analyses the user's ruleset.
// current connects and reads the ruleset. With safe set, a ruleset Detour
// cannot change safely is an error (ErrUnsafe) explaining why.
func (b *nftBackend) current(safe bool) (*nftables.Conn, *nftState, error) {
	c, err := b.conn()
	if err != nil {
		return nil, nil, err
	}
	st, err := b.read(c)
	if err != nil {
		return nil, nil, err
	}
	if safe && len(st.problems) > 0 {
		return nil, nil, unsafeError(st.problems)
	}
	return c, st, nil
}

func (b *nftBackend) read(c *nftables.Conn) (*nftState, error) {
	tables, err := c.ListTables()
	if err != nil {
		return nil, nftError("listing nftables tables", err, false)
	}
	chains, err := c.ListChains()
	if err != nil {
		return nil, nftError("listing nftables chains", err, false)
	}
	st := &nftState{comps: map[string]*companion{}}
	byTable := map[string][]*nftables.Chain{}
	for _, ch := range chains {
		k := tableName(ch.Table)
		byTable[k] = append(byTable[k], ch)
	}
	for _, t := range tables {
		if ours(t) {
			st.table = t
			if err := b.readOurs(c, t, byTable[tableName(t)], st); err != nil {
				return nil, err
			}
			continue
		}
		if err := b.analyse(c, t, byTable[tableName(t)], st); err != nil {
			return nil, err
		}
	}
	return st, nil
}

func (b *nftBackend) readOurs(c *nftables.Conn, t *nftables.Table, chains []*nftables.Chain, st *nftState) error {
	set, err := c.GetSetByName(t, nftSet)
	if err == nil {
		st.set = set
		if st.elems, err = c.GetSetElements(set); err != nil {
			return nftError("reading set inet detour open", err, false)
		}
	}
	for _, ch := range chains {
		if ch.Name != nftChain {
			continue
		}
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return nftError("reading chain inet detour input", err, false)
		}
		st.hasRule = slices.ContainsFunc(rules, isOurRule)
	}
	return nil
}

// analyse looks at one of the user's tables: does it drop input, can
// Detour add to it, and what did Detour leave in it.
func (b *nftBackend) analyse(c *nftables.Conn, t *nftables.Table, chains []*nftables.Chain, st *nftState) error {
	if t.Family == nftables.TableFamilyBridge || t.Family == nftables.TableFamilyARP {
		return nil
	}
	var (
		drops, xt   bool
		inputChains []*nftables.Chain
		comp        = &companion{table: t, chain: map[*nftables.Rule]*nftables.Chain{}}
	)
	for _, ch := range chains {
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return nftError("reading chain "+tableName(t)+" "+ch.Name, err, false)
		}
		for _, r := range rules {
			if isOurRule(r) {
				comp.rules = append(comp.rules, r)
				comp.chain[r] = ch
				continue
			}
			for _, e := range r.Exprs {
				switch v := e.(type) {
				case *expr.Match, *expr.Target:
					xt = true
				case *expr.Reject:
					drops = true
				case *expr.Verdict:
					if v.Kind == expr.VerdictDrop {
						drops = true
					}
				}
			}
		}
		if ch.Hooknum == nil || ch.Type != nftables.ChainTypeFilter {
			continue
		}
		policyDrop := ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop
		switch {
		case t.Family == nftables.TableFamilyNetdev && policyDrop:
			st.problems = append(st.problems, fmt.Sprintf("chain %s %s (ingress) drops by policy before packets reach the input hook, "+
				"and Detour does not change ingress chains: accept the port there yourself, or use another validation path", tableName(t), ch.Name))
		case t.Family != nftables.TableFamilyNetdev && *ch.Hooknum == *nftables.ChainHookPrerouting && policyDrop:
			st.problems = append(st.problems, fmt.Sprintf("chain %s %s (prerouting) drops by policy, and Detour only opens input chains: "+
				"accept the port there yourself, or use another validation path", tableName(t), ch.Name))
		case t.Family != nftables.TableFamilyNetdev && *ch.Hooknum == *nftables.ChainHookInput:
			inputChains = append(inputChains, ch)
			if policyDrop {
				drops = true
			}
		}
	}
	if set, err := c.GetSetByName(t, nftUserSet); err == nil {
		comp.set = set
		if comp.elems, err = c.GetSetElements(set); err != nil {
			return nftError("reading set "+tableName(t)+" "+nftUserSet, err, false)
		}
	}
	if comp.set != nil || len(comp.rules) > 0 {
		st.comps[tableName(t)] = comp
	}
	if !drops || len(inputChains) == 0 || t.Flags&nftTableDormant != 0 {
		return nil
	}
	iptablesNft := xt || (t.Family != nftables.TableFamilyINet && t.Name == "filter" &&
		slices.ContainsFunc(inputChains, func(ch *nftables.Chain) bool { return ch.Name == "INPUT" }))
	switch {
	case t.Name == "firewalld":
		st.problems = append(st.problems, fmt.Sprintf("table %s can drop input and belongs to firewalld, which rebuilds it on every reload: "+
			"set firewall = \"firewalld\"", tableName(t)))
	case t.Flags&nftTableOwner != 0:
		st.problems = append(st.problems, fmt.Sprintf("table %s can drop input but is owned by another process (a firewall daemon), "+
			"so no one else may change it: let that daemon open the port (firewall = \"firewalld\" for firewalld)", tableName(t)))
	case iptablesNft:
		st.problems = append(st.problems, fmt.Sprintf("table %s can drop input and is managed by iptables-nft (or ufw on top of it); "+
			"a rule Detour added there would break iptables-save: set firewall = \"iptables-nft\" (or \"ufw\" when ufw manages it)", tableName(t)))
	default:
		st.targets = append(st.targets, inputChains...)
	}
	return nil
}

// Check implements Backend.
func (b *nftBackend) Check(ctx context.Context, w Window) error {
	if err := w.validate(); err != nil {
		return err
	}
	_, st, err := b.current(true)
	if err != nil {
		return err
	}
	for _, ch := range st.targets {
		b.log.InfoContext(ctx, "your nftables ruleset can drop the validation port; while the window is open Detour adds the set "+
			nftUserSet+" and one rule at the top of this chain accepting its ports, and removes both when it closes",
			"table", tableName(ch.Table), "chain", ch.Name, "port", w.Port)
	}
	return nil
}

func unsafeError(problems []string) error {
	return fmt.Errorf("%w; nothing was changed:\n  - %s", ErrUnsafe, strings.Join(problems, "\n  - "))
}

// desired returns the live elements of Detour's set, key -> time left.
func (b *nftBackend) desired(st *nftState) map[string]time.Duration {
	out := map[string]time.Duration{}
	for _, e := range st.elems {
		if e.Expires > 0 {
			out[string(e.Key)] = e.Expires
		}
	}
	return out
}

// sync makes set hold exactly want (key -> remaining time), without
// shortening an element that already has as much time.
func (b *nftBackend) sync(c *nftables.Conn, set *nftables.Set, have []nftables.SetElement, want map[string]time.Duration) error {
	now := b.now()
	var del, add []nftables.SetElement
	haveBy := map[string]nftables.SetElement{}
	for _, e := range have {
		haveBy[string(e.Key)] = e
		if _, keep := want[string(e.Key)]; !keep {
			del = append(del, nftables.SetElement{Key: e.Key})
		}
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		d := want[k]
		if e, ok := haveBy[k]; ok {
			if e.Expires+time.Second >= d {
				continue
			}
			del = append(del, nftables.SetElement{Key: []byte(k)})
		}
		add = append(add, nftables.SetElement{Key: []byte(k), Timeout: d, Comment: tagUntil(now.Add(d))})
	}
	if len(del) > 0 {
		if err := c.SetDeleteElements(set, del); err != nil {
			return err
		}
	}
	if len(add) > 0 {
		return c.SetAddElements(set, add)
	}
	return nil
}

func newSet(t *nftables.Table, name string) *nftables.Set {
	return &nftables.Set{Table: t, Name: name, KeyType: nftKeyType, Concatenation: true, HasTimeout: true}
}

// Open implements Backend.
func (b *nftBackend) Open(ctx context.Context, w Window) error {
	if err := w.validate(); err != nil {
		return err
	}
	nftMu.Lock()
	defer nftMu.Unlock()
	c, st, err := b.current(true)
	if err != nil {
		return err
	}
	want := b.desired(st)
	for _, f := range w.Family.Split() {
		k := string(nftKey(f, w.Port))
		want[k] = max(want[k], w.Timeout)
	}
	t := c.AddTable(&nftables.Table{Name: nftTable, Family: nftables.TableFamilyINet})
	set := newSet(t, nftSet)
	if err := c.AddSet(set, nil); err != nil {
		return fmt.Errorf("adding set inet detour open: %w", err)
	}
	ch := c.AddChain(&nftables.Chain{Name: nftChain, Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookInput,
		Priority: nftables.ChainPriorityRef(nftPriority), Policy: ptr(nftables.ChainPolicyAccept)})
	if !st.hasRule {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: acceptExprs(set), UserData: userdata.AppendString(nil, userdata.TypeComment, nftRuleComment)})
	}
	if err := b.sync(c, set, st.elems, want); err != nil {
		return fmt.Errorf("updating set inet detour open: %w", err)
	}
	var added []string
	for _, target := range st.targets {
		comp := st.comps[tableName(target.Table)]
		if comp == nil {
			comp = &companion{table: target.Table}
			st.comps[tableName(target.Table)] = comp
		}
		if comp.set == nil {
			comp.set = newSet(target.Table, nftUserSet)
			if err := c.AddSet(comp.set, nil); err != nil {
				return fmt.Errorf("adding set %s %s: %w", tableName(target.Table), nftUserSet, err)
			}
		}
		if !slices.ContainsFunc(comp.rules, func(r *nftables.Rule) bool { return comp.chain[r].Name == target.Name }) {
			c.InsertRule(&nftables.Rule{Table: target.Table, Chain: target, Exprs: acceptExprs(comp.set),
				UserData: userdata.AppendString(nil, userdata.TypeComment, nftRuleComment)})
			added = append(added, tableName(target.Table)+" "+target.Name)
		}
	}
	for _, comp := range st.comps {
		if comp.set == nil {
			continue
		}
		if err := b.sync(c, comp.set, comp.elems, want); err != nil {
			return fmt.Errorf("updating set %s %s: %w", tableName(comp.table), nftUserSet, err)
		}
	}
	if err := c.Flush(); err != nil {
		return nftError("opening "+w.String()+" in nftables", err, false)
	}
	for _, a := range added {
		b.log.InfoContext(ctx, "inserted one rule at the top of your input chain: it accepts the ports in set "+nftUserSet+
			" (only while Detour's window is open; the kernel empties the set at the timeout) and is removed when the window closes",
			"chain", a)
	}
	b.log.InfoContext(ctx, "firewall window open", "backend", NameNftables, "port", w.Port, "family", w.Family, "timeout", w.Timeout)
	return nil
}

func ptr[T any](v T) *T { return &v }

// Close implements Backend.
func (b *nftBackend) Close(ctx context.Context, w Window) error {
	nftMu.Lock()
	defer nftMu.Unlock()
	c, st, err := b.current(false)
	if err != nil {
		return err
	}
	want := b.desired(st)
	for _, f := range w.Family.Split() {
		delete(want, string(nftKey(f, w.Port)))
	}
	if len(want) == 0 {
		b.removeAll(c, st)
	} else {
		for _, set := range st.sets() {
			if err := b.sync(c, set.set, set.elems, want); err != nil {
				return err
			}
		}
	}
	if err := c.Flush(); err != nil {
		return nftError("closing "+w.String()+" in nftables", err, false)
	}
	b.log.InfoContext(ctx, "firewall window closed", "backend", NameNftables, "port", w.Port, "family", w.Family)
	return nil
}

type setElems struct {
	set   *nftables.Set
	elems []nftables.SetElement
}

// sets returns Detour's set and the companion sets.
func (st *nftState) sets() []setElems {
	var out []setElems
	if st.set != nil {
		out = append(out, setElems{st.set, st.elems})
	}
	for _, k := range slices.Sorted(maps.Keys(st.comps)) {
		if c := st.comps[k]; c.set != nil {
			out = append(out, setElems{c.set, c.elems})
		}
	}
	return out
}

// removeAll queues the removal of everything Detour holds: companion
// rules and sets in the user's tables, and Detour's table.
func (b *nftBackend) removeAll(c *nftables.Conn, st *nftState) {
	for _, k := range slices.Sorted(maps.Keys(st.comps)) {
		comp := st.comps[k]
		for _, r := range comp.rules {
			_ = c.DelRule(r)
		}
		if comp.set != nil {
			c.DelSet(comp.set)
		}
	}
	if st.table != nil {
		c.DelTable(st.table)
	}
}

// Status implements Backend.
func (b *nftBackend) Status(ctx context.Context) ([]Hole, error) {
	_, st, err := b.current(false)
	if err != nil {
		return nil, err
	}
	where := "table inet detour"
	for _, k := range slices.Sorted(maps.Keys(st.comps)) {
		for _, r := range st.comps[k].rules {
			where += ", rule in " + k + " " + st.comps[k].chain[r].Name
		}
	}
	now := b.now()
	var out []Hole
	for _, e := range st.elems {
		f, port, ok := parseNftKey(e.Key)
		if !ok || e.Expires <= 0 {
			continue
		}
		out = append(out, Hole{Backend: NameNftables, Port: port, Family: f, Proto: ProtoTCP, Until: now.Add(e.Expires).Truncate(time.Second), Where: where})
	}
	return out, nil
}

// Sweep implements Backend. Without all it removes Detour's objects only
// when no window is open any more (every element has expired): after a
// killed run the kernel has closed the port, and this removes the empty
// sets and inert rules it left behind.
func (b *nftBackend) Sweep(ctx context.Context, all bool) error {
	nftMu.Lock()
	defer nftMu.Unlock()
	c, st, err := b.current(false)
	if err != nil {
		return err
	}
	if st.table == nil && len(st.comps) == 0 {
		return nil
	}
	if !all && len(b.desired(st)) > 0 {
		return nil
	}
	b.removeAll(c, st)
	if err := c.Flush(); err != nil {
		return nftError("removing Detour's nftables objects", err, false)
	}
	b.log.InfoContext(ctx, "removed Detour's nftables table and the rules it had added to your chains", "all", all)
	return nil
}
