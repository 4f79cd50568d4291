package firewall

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// nftRuleset is the part of the nftables ruleset Inbound reads: the
// tables with a base chain on the ingress, prerouting or input hook, with
// all their chains, rules and sets.
type nftRuleset struct {
	tables []*nftTableSnap
}

type nftTableSnap struct {
	table  *nftables.Table
	chains []*nftables.Chain
	rules  map[string][]*nftables.Rule // by chain name
	sets   map[string]*nftSetSnap
}

type nftSetSnap struct {
	set   *nftables.Set
	elems []nftables.SetElement
}

// inboundHook reports whether ch is a filter base chain a packet to this
// host crosses, and the stage's hook number (0 ingress, 1 prerouting, 2
// input).
func inboundHook(t *nftables.Table, ch *nftables.Chain) (int, bool) {
	if ch.Hooknum == nil || ch.Type != nftables.ChainTypeFilter {
		return 0, false
	}
	switch t.Family {
	case nftables.TableFamilyNetdev:
		return 0, *ch.Hooknum == *nftables.ChainHookIngress
	case nftables.TableFamilyIPv4, nftables.TableFamilyIPv6, nftables.TableFamilyINet:
		switch *ch.Hooknum {
		case *nftables.ChainHookPrerouting:
			return 1, true
		case *nftables.ChainHookInput:
			return 2, true
		}
	}
	return 0, false
}

// readNft reads the ruleset over netlink; nil when the kernel has no
// nf_tables.
func readNft(netns int) (*nftRuleset, error) {
	c, err := newNftables(Options{NetNS: netns}.withDefaults()).conn()
	if errors.Is(err, ErrUnsupported) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer c.CloseLasting()
	tables, err := c.ListTables()
	if err != nil {
		return nil, nftError("listing nftables tables", err, false)
	}
	chains, err := c.ListChains()
	if err != nil {
		return nil, nftError("listing nftables chains", err, false)
	}
	rs := &nftRuleset{}
	for _, t := range tables {
		snap := &nftTableSnap{table: t, rules: map[string][]*nftables.Rule{}, sets: map[string]*nftSetSnap{}}
		relevant := false
		for _, ch := range chains {
			if ch.Table.Name == t.Name && ch.Table.Family == t.Family {
				snap.chains = append(snap.chains, ch)
				_, ok := inboundHook(t, ch)
				relevant = relevant || ok
			}
		}
		if !relevant {
			continue
		}
		for _, ch := range snap.chains {
			if snap.rules[ch.Name], err = c.GetRules(t, ch); err != nil {
				return nil, nftError("reading chain "+ch.Name+" in table "+tableName(t), err, false)
			}
		}
		sets, err := c.GetSets(t)
		if err != nil {
			return nil, nftError("reading the sets of table "+tableName(t), err, false)
		}
		for _, s := range sets {
			elems, err := c.GetSetElements(s)
			if err != nil {
				return nil, nftError("reading set "+s.Name+" in table "+tableName(t), err, false)
			}
			snap.sets[s.Name] = &nftSetSnap{set: s, elems: elems}
		}
		rs.tables = append(rs.tables, snap)
	}
	return rs, nil
}

// appliesTo reports whether table family tf sees packets of family f.
func appliesTo(tf nftables.TableFamily, f Family) bool {
	switch tf {
	case nftables.TableFamilyIPv4:
		return f == IPv4
	case nftables.TableFamilyIPv6:
		return f == IPv6
	}
	return true
}

// stages returns a stage per inbound base chain. Tables in deferred are
// judged from iptables-nft's view; firewalld's table, when fwdOuts is
// set, from firewalld's (usedFwd then reports it was).
func (rs *nftRuleset) stages(p packet, deferred map[string]bool, fwdOuts []outcome) (out []stage, usedFwd bool) {
	for _, t := range rs.tables {
		if t.table.Flags&nftTableDormant != 0 || !appliesTo(t.table.Family, p.fam) || deferred[tableName(t.table)] {
			continue
		}
		if t.table.Name == "firewalld" && fwdOuts != nil {
			if !usedFwd {
				out = append(out, stage{backend: NameFirewalld, hook: 2, priority: 10, outs: fwdOuts})
				usedFwd = true
			}
			continue
		}
		var chains map[string]*evChain
		for _, ch := range t.chains {
			hook, ok := inboundHook(t.table, ch)
			if !ok || ch.Device == "lo" || (p.iface != "" && ch.Device != "" && ch.Device != p.iface) {
				continue
			}
			if chains == nil {
				chains = t.compile(p)
			}
			policy, pol := Accept, "accept"
			if ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
				policy, pol = Drop, "drop"
			}
			outs := newEngine(chains).base(ch.Name, policy, fmt.Sprintf("chain %s policy %s in table %s", ch.Name, pol, tableName(t.table)))
			if ch.Device != "" && p.iface == "" {
				// An ingress chain sees only its device's packets.
				outs = addOutcome(outs, outcome{action: Accept, why: "chain " + ch.Name + " in table " + tableName(t.table) + " is not crossed",
					cond: fmt.Sprintf("chain %s in table %s depends on whether the connection arrives on %s", ch.Name, tableName(t.table), ch.Device)})
			}
			prio := 0
			if ch.Priority != nil {
				prio = int(*ch.Priority)
			}
			out = append(out, stage{backend: NameNftables, hook: hook, priority: prio, outs: outs})
		}
	}
	return out, usedFwd
}

// compile compiles every chain of t for p.
func (t *nftTableSnap) compile(p packet) map[string]*evChain {
	chains := map[string]*evChain{}
	for _, ch := range t.chains {
		ec := &evChain{where: "chain " + ch.Name + " in table " + tableName(t.table)}
		for _, r := range t.rules[ch.Name] {
			ec.rules = append(ec.rules, t.compileRule(ch, r, p))
		}
		chains[ch.Name] = ec
	}
	return chains
}

// compileRule compiles one rule for p.
func (t *nftTableSnap) compileRule(ch *nftables.Chain, r *nftables.Rule, p packet) evRule {
	var (
		rg    regs
		m     = yes
		conds []string // what could not be decided
		text  []string
		alts  []alt
		v     *verdict
	)
	undecided := func(what string) {
		m = m.and(maybe)
		conds = append(conds, what)
	}
	test := func(t tri, what string) {
		text = append(text, what)
		if t == maybe {
			conds = append(conds, what)
		}
		m = m.and(t)
	}
	for _, e := range r.Exprs {
		if v != nil {
			break
		}
		switch e := e.(type) {
		case *expr.Meta:
			if !e.SourceRegister {
				rg.load(e.Register, p.meta(e.Key))
			}
		case *expr.Ct:
			if !e.SourceRegister {
				rg.load(e.Register, p.ct(e.Key))
			}
		case *expr.Payload:
			if e.OperationType == expr.PayloadLoad {
				rg.load(e.DestRegister, p.payload(e))
			}
		case *expr.Immediate:
			rg.load(e.Register, &nval{name: "value", size: len(e.Data), known: e.Data})
		case *expr.Bitwise:
			rg.load(e.DestRegister, bitwise(rg.read(e.SourceRegister, int(e.Len)), e))
		case *expr.Cmp:
			c := rg.read(e.Register, len(e.Data))
			rg.clear(e.Register, len(e.Data))
			if len(c) != 1 || !c[0].whole {
				test(maybe, "a comparison of several fields")
				continue
			}
			op := map[expr.CmpOp]string{expr.CmpOpNeq: "!= ", expr.CmpOpLt: "< ", expr.CmpOpLte: "<= ", expr.CmpOpGt: "> ", expr.CmpOpGte: ">= "}[e.Op]
			what := c[0].v.name + " " + op + c[0].v.render(e.Data)
			if c[0].v.flags && e.Op == expr.CmpOpNeq && bytes.Count(e.Data, []byte{0}) == len(e.Data) {
				what = c[0].v.name
			}
			test(c[0].v.compare(e.Op, e.Data), what)
		case *expr.Range:
			c := rg.read(e.Register, len(e.FromData))
			rg.clear(e.Register, len(e.FromData))
			if len(c) != 1 || !c[0].whole {
				test(maybe, "a range of several fields")
				continue
			}
			in := c[0].v.inRange(e.FromData, e.ToData)
			if e.Op == expr.CmpOpNeq {
				in = in.not()
			}
			test(in, c[0].v.name+" "+c[0].v.render(e.FromData)+"-"+c[0].v.render(e.ToData))
		case *expr.Lookup:
			s := t.sets[e.SetName]
			if s == nil {
				test(maybe, "set @"+e.SetName)
				continue
			}
			ents := entries(s)
			keyLen := int(s.set.KeyType.Bytes)
			if len(s.elems) > 0 {
				keyLen = len(s.elems[0].Key)
			}
			if keyLen == 0 {
				keyLen = 4
			}
			c := rg.read(e.SourceRegister, keyLen)
			rg.clear(e.SourceRegister, keyLen)
			var names []string
			for _, f := range c {
				names = append(names, f.v.nameOr("?"))
			}
			name := strings.Join(names, " . ")
			if e.IsDestRegSet && e.DestRegister == unix.NFT_REG_VERDICT {
				text = append(text, name+" vmap @"+e.SetName)
				for _, en := range ents {
					if t := en.match(c); t != no {
						alts = append(alts, alt{t: m.and(t), v: nftVerdict(en.verdict)})
						if t == maybe {
							conds = append(conds, name+" (in the map's element "+c[0].v.nameOr("")+" "+c[0].v.renderOr(en.lo)+")")
						}
					}
				}
				v = &verdict{kind: vContinue} // a miss: no match
				m = no
				continue
			}
			in := no
			for _, en := range ents {
				if in = in.or(en.match(c)); in == yes {
					break
				}
			}
			if e.Invert {
				in, name = in.not(), name+" !="
			}
			test(in, name+" "+setText(s, ents, c[0].v))
			if e.IsDestRegSet {
				rg.load(e.DestRegister, &nval{name: "map value", size: int(s.set.DataType.Bytes)})
			}
		case *expr.Fib:
			fv := &nval{name: "fib", size: 4, host: true}
			switch {
			case e.ResultADDRTYPE && e.FlagDADDR && !e.FlagIIF && !e.FlagOIF:
				fv.name, fv.known = "fib daddr type", binary.NativeEndian.AppendUint32(nil, unix.RTN_LOCAL)
			case e.ResultOIF && e.FlagSADDR:
				// Reverse path filtering: the CA's address is routed back.
				fv.name, fv.not = "fib saddr oif", make([]byte, 4)
			}
			rg.load(e.Register, fv)
		case *expr.Exthdr:
			if e.DestRegister != 0 {
				rg.load(e.DestRegister, &nval{name: "exthdr", size: int(e.Len)})
			}
		case *expr.Hash:
			rg.load(e.DestRegister, &nval{name: "hash", size: 4})
		case *expr.Numgen:
			rg.load(e.Register, &nval{name: "numgen", size: 4})
		case *expr.Counter, *expr.Log, *expr.Notrack, *expr.SecMark, *expr.CtHelper, *expr.CtTimeout, *expr.CtExpect, *expr.FlowOffload:
		case *expr.Objref:
			if e.Type != 1 { // not a counter: a quota, limit...
				undecided("a named " + objrefKind(e.Type) + " @" + e.Name)
			}
		case *expr.Dynset:
			if len(e.Exprs) > 0 {
				undecided("a rate limit in set @" + e.SetName)
			}
		case *expr.Limit:
			undecided("a rate limit")
		case *expr.Quota:
			undecided("a quota")
		case *expr.Connlimit:
			undecided("a connection limit")
		case *expr.Match:
			undecided("the iptables match " + e.Name)
		case *expr.Verdict:
			vv := nftVerdict(e)
			v = &vv
		case *expr.Reject:
			v = &verdict{kind: vReject}
		case *expr.Target:
			v = &verdict{kind: vUnknown, reason: "the iptables target " + e.Name}
		case *expr.Queue:
			v = &verdict{kind: vUnknown, reason: "it queues packets to a program"}
		case *expr.NAT, *expr.Masq, *expr.Redir:
			v = &verdict{kind: vUnknown, reason: "it translates addresses"}
		case *expr.SynProxy:
			v = &verdict{kind: vUnknown, reason: "synproxy answers the SYN itself"}
		default:
			rg = regs{}
			undecided(fmt.Sprintf("an expression Detour does not know (%T)", e))
		}
	}
	if v == nil {
		v = &verdict{kind: vContinue}
	}
	if m != no {
		alts = append(alts, alt{t: m, v: *v})
	}
	if v.kind != vContinue || len(text) == 0 {
		text = append(text, verdictWord(*v))
	}
	comment := ruleComment(r)
	where := fmt.Sprintf("rule %q (handle %d) in chain %s in table %s", strings.Join(text, " "), r.Handle, ch.Name, tableName(t.table))
	if comment != "" {
		where = fmt.Sprintf("rule %q (handle %d, comment %q) in chain %s in table %s", strings.Join(text, " "), r.Handle, comment, ch.Name, tableName(t.table))
	}
	ours := isOurRule(r)
	if ours && p.skipDetour {
		alts = nil
	}
	return evRule{alts: alts, where: where, cond: strings.Join(conds, ", "), window: ours}
}

// setText names a set, or lists a small anonymous one: "{ 80, 443 }".
func setText(s *nftSetSnap, ents []entry, v *nval) string {
	if !s.set.Anonymous || len(ents) > 8 {
		return "@" + s.set.Name
	}
	var parts []string
	for _, e := range ents {
		t := v.renderOr(e.lo)
		if e.hi != nil && !bytes.Equal(e.lo, e.hi) {
			t += "-" + v.renderOr(e.hi)
		}
		parts = append(parts, t)
	}
	return "{ " + strings.Join(parts, ", ") + " }"
}

func objrefKind(t int) string {
	switch t {
	case 2:
		return "quota"
	case 4:
		return "limit"
	case 5:
		return "connlimit"
	}
	return "object"
}

func (v *nval) nameOr(def string) string {
	if v == nil {
		return def
	}
	return v.name
}

func (v *nval) renderOr(data []byte) string {
	if v == nil {
		return fmt.Sprintf("0x%x", data)
	}
	return v.render(data)
}

func nftVerdict(v *expr.Verdict) verdict {
	if v == nil {
		return verdict{kind: vUnknown, reason: "a map element without a verdict"}
	}
	switch v.Kind {
	case expr.VerdictAccept:
		return verdict{kind: vAccept}
	case expr.VerdictDrop:
		return verdict{kind: vDrop}
	case expr.VerdictJump:
		return verdict{kind: vJump, chain: v.Chain}
	case expr.VerdictGoto:
		return verdict{kind: vGoto, chain: v.Chain}
	case expr.VerdictReturn:
		return verdict{kind: vReturn}
	case expr.VerdictContinue, expr.VerdictBreak:
		return verdict{kind: vContinue}
	case expr.VerdictQueue:
		return verdict{kind: vUnknown, reason: "it queues packets to a program"}
	}
	return verdict{kind: vUnknown, reason: fmt.Sprintf("verdict %d", v.Kind)}
}

func verdictWord(v verdict) string {
	switch v.kind {
	case vAccept:
		return "accept"
	case vDrop:
		return "drop"
	case vReject:
		return "reject"
	case vJump:
		return "jump " + v.chain
	case vGoto:
		return "goto " + v.chain
	case vReturn:
		return "return"
	case vUnknown:
		return "(" + v.reason + ")"
	}
	return "continue"
}

// entry is one element of a set, or one interval of an interval set.
type entry struct {
	lo, hi  []byte // hi nil: an exact key
	verdict *expr.Verdict
}

// entries lists the elements of s; intervals are [lo, hi] inclusive.
func entries(s *nftSetSnap) []entry {
	var out []entry
	if !s.set.Interval || s.set.Concatenation {
		for _, e := range s.elems {
			if e.IntervalEnd {
				continue
			}
			en := entry{lo: e.Key, verdict: e.VerdictData}
			if e.KeyEnd != nil {
				en.hi = e.KeyEnd
			}
			out = append(out, en)
		}
		return out
	}
	elems := slices.Clone(s.elems)
	slices.SortStableFunc(elems, func(a, b nftables.SetElement) int {
		if c := bytes.Compare(a.Key, b.Key); c != 0 {
			return c
		}
		if a.IntervalEnd != b.IntervalEnd {
			if a.IntervalEnd {
				return -1
			}
			return 1
		}
		return 0
	})
	for i, e := range elems {
		if e.IntervalEnd {
			continue
		}
		hi := bytes.Repeat([]byte{0xff}, len(e.Key))
		for _, n := range elems[i+1:] {
			if bytes.Compare(n.Key, e.Key) > 0 {
				hi = decrement(n.Key)
				break
			}
		}
		out = append(out, entry{lo: e.Key, hi: hi, verdict: e.VerdictData})
	}
	return out
}

func decrement(b []byte) []byte {
	out := slices.Clone(b)
	for i := len(out) - 1; i >= 0; i-- {
		out[i]--
		if out[i] != 0xff {
			break
		}
	}
	return out
}

// match says whether the fields c of a register read are in e.
func (e entry) match(c []comp) tri {
	m := yes
	for i, f := range c {
		if f.v == nil || !f.whole || f.off >= len(e.lo) {
			m = m.and(maybe)
			continue
		}
		end := len(e.lo)
		if i+1 < len(c) {
			end = min(end, c[i+1].off)
		}
		if e.hi == nil {
			m = m.and(f.v.eq(e.lo[f.off:end]))
		} else {
			m = m.and(f.v.inRange(e.lo[f.off:end], e.hi[f.off:end]))
		}
		if m == no {
			return no
		}
	}
	return m
}
