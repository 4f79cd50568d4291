package firewall

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
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

// nval is what a register holds: a value of the packet, known exactly or
// only in part.
type nval struct {
	name   string // as nft writes it: "tcp dport"
	size   int    // bytes
	known  []byte // the exact value; nil when not known
	not    []byte // not known, but certainly not this (loopback, zero)
	remote bool   // the source address: no list of addresses holds it
	local  bool   // a destination address of this host, not loopback
	host   bool   // host byte order: no ordering comparisons
	flags  bool   // a bitmask (ct state, tcp flags): render by bits
}

// slot is one 32-bit register word.
type slot struct {
	v   *nval
	idx int // word of v
}

type regs [16]slot

// regWord maps a register number to its first 32-bit word.
func regWord(r uint32) int {
	switch {
	case r >= unix.NFT_REG_1 && r <= unix.NFT_REG_4:
		return int(r-unix.NFT_REG_1) * 4
	case r >= unix.NFT_REG32_00 && r <= unix.NFT_REG32_15:
		return int(r - unix.NFT_REG32_00)
	}
	return -1
}

func (rg *regs) load(r uint32, v *nval) {
	w := regWord(r)
	if w < 0 {
		return
	}
	for i := 0; i < (v.size+3)/4 && w+i < len(rg); i++ {
		rg[w+i] = slot{v, i}
	}
}

// clear forgets what a comparison consumed, so that an expression the
// netlink library could not decode never leaves a stale value behind.
func (rg *regs) clear(r uint32, n int) {
	w := regWord(r)
	for i := 0; w >= 0 && i < (n+3)/4 && w+i < len(rg); i++ {
		rg[w+i] = slot{}
	}
}

// comp is one field of a register read: a value, or nil when unknown.
type comp struct {
	v     *nval
	off   int // byte offset in the read
	whole bool
}

func (rg *regs) read(r uint32, n int) []comp {
	w := regWord(r)
	var out []comp
	for i := 0; i < (n+3)/4; i++ {
		var s slot
		if w >= 0 && w+i < len(rg) {
			s = rg[w+i]
		}
		if len(out) > 0 && s.v != nil && s.v == out[len(out)-1].v && s.idx > 0 {
			continue
		}
		out = append(out, comp{v: s.v, off: i * 4, whole: s.v != nil && s.idx == 0})
	}
	return out
}

func pad(b []byte, n int) []byte {
	out := make([]byte, max(n, len(b)))
	copy(out, b)
	return out
}

// eq says whether v equals data (the first len(data) bytes of its
// register words).
func (v *nval) eq(data []byte) tri {
	switch {
	case v.known != nil:
		return triOf(bytes.Equal(pad(v.known, len(data))[:len(data)], data))
	case v.not != nil:
		if len(data) >= v.size && bytes.Equal(pad(v.not, len(data)), data) {
			return no
		}
	case v.remote:
		return no
	case v.local:
		if a, ok := netip.AddrFromSlice(data[:min(len(data), v.size)]); ok && v.size == len(a.AsSlice()) && notLocal(a) {
			return no
		}
	}
	return maybe
}

// notLocal reports whether a is an address a remote packet to this host
// is never sent to.
func notLocal(a netip.Addr) bool { return a.IsLoopback() || a.IsMulticast() || a.IsUnspecified() }

// inRange says whether lo <= v <= hi.
func (v *nval) inRange(lo, hi []byte) tri {
	switch {
	case v.known != nil && !v.host:
		k := pad(v.known, len(lo))[:len(lo)]
		return triOf(bytes.Compare(k, lo) >= 0 && bytes.Compare(k, hi) <= 0)
	case v.known != nil && bytes.Equal(lo, hi):
		return v.eq(lo)
	case v.remote:
		if bytes.Count(lo, []byte{0}) == len(lo) && bytes.Count(hi, []byte{0xff}) == len(hi) {
			return yes
		}
		return no
	case v.local:
		a, ok1 := netip.AddrFromSlice(lo)
		b, ok2 := netip.AddrFromSlice(hi)
		if ok1 && ok2 && a.IsLoopback() && b.IsLoopback() {
			return no
		}
	case v.not != nil && bytes.Equal(lo, hi):
		return v.eq(lo)
	}
	return maybe
}

// compare applies a cmp expression's operator.
func (v *nval) compare(op expr.CmpOp, data []byte) tri {
	switch op {
	case expr.CmpOpEq:
		return v.eq(data)
	case expr.CmpOpNeq:
		return v.eq(data).not()
	}
	if v.known == nil || v.host {
		return maybe
	}
	c := bytes.Compare(pad(v.known, len(data))[:len(data)], data)
	switch op {
	case expr.CmpOpLt:
		return triOf(c < 0)
	case expr.CmpOpLte:
		return triOf(c <= 0)
	case expr.CmpOpGt:
		return triOf(c > 0)
	case expr.CmpOpGte:
		return triOf(c >= 0)
	}
	return maybe
}

func (v *nval) render(data []byte) string {
	switch {
	case strings.HasSuffix(v.name, "dport") || strings.HasSuffix(v.name, "sport") || v.name == "ct proto-dst":
		if len(data) >= 2 {
			return strconv.Itoa(int(binary.BigEndian.Uint16(data)))
		}
	case strings.HasSuffix(v.name, "l4proto") || strings.HasSuffix(v.name, "protocol") || strings.HasSuffix(v.name, "nexthdr"):
		if len(data) >= 1 {
			if n, ok := map[byte]string{1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp"}[data[0]]; ok {
				return n
			}
		}
	case v.name == "meta nfproto":
		if len(data) >= 1 {
			return map[byte]string{unix.NFPROTO_IPV4: "ipv4", unix.NFPROTO_IPV6: "ipv6"}[data[0]]
		}
	case strings.HasSuffix(v.name, "iifname"):
		s, _, term := strings.Cut(string(data), "\x00")
		if !term {
			s += "*"
		}
		return strconv.Quote(s)
	case v.name == "meta iif":
		if len(data) == 4 && binary.NativeEndian.Uint32(data) == 1 {
			return `"lo"`
		}
	case v.name == "ct state":
		if len(data) == 4 {
			var names []string
			bits := binary.NativeEndian.Uint32(data)
			for _, b := range []struct {
				bit  uint32
				name string
			}{{1, "invalid"}, {2, "established"}, {4, "related"}, {8, "new"}, {64, "untracked"}} {
				if bits&b.bit != 0 {
					names = append(names, b.name)
				}
			}
			return strings.Join(names, ",")
		}
	case v.remote || v.local:
		if a, ok := netip.AddrFromSlice(data); ok {
			return a.String()
		}
	}
	return fmt.Sprintf("0x%x", data)
}

// load values: what the packet holds.
func (p packet) meta(key expr.MetaKey) *nval {
	nfproto, proto := byte(unix.NFPROTO_IPV4), []byte{0x08, 0x00}
	if p.fam == IPv6 {
		nfproto, proto = unix.NFPROTO_IPV6, []byte{0x86, 0xdd}
	}
	switch key {
	case expr.MetaKeyNFPROTO:
		return &nval{name: "meta nfproto", size: 1, known: []byte{nfproto}}
	case expr.MetaKeyL4PROTO:
		return &nval{name: "meta l4proto", size: 1, known: []byte{unix.IPPROTO_TCP}}
	case expr.MetaKeyPROTOCOL:
		return &nval{name: "meta protocol", size: 2, known: proto}
	case expr.MetaKeyPKTTYPE:
		return &nval{name: "meta pkttype", size: 1, known: []byte{unix.PACKET_HOST}}
	case expr.MetaKeyIIFNAME:
		if p.iface != "" {
			return &nval{name: "iifname", size: unix.IFNAMSIZ, known: pad([]byte(p.iface), unix.IFNAMSIZ)}
		}
		return &nval{name: "iifname", size: unix.IFNAMSIZ, not: pad([]byte("lo"), unix.IFNAMSIZ)}
	case expr.MetaKeyIIF:
		return &nval{name: "meta iif", size: 4, host: true, not: binary.NativeEndian.AppendUint32(nil, 1)}
	case expr.MetaKeyIIFTYPE:
		return &nval{name: "meta iiftype", size: 2, host: true, not: binary.NativeEndian.AppendUint16(nil, unix.ARPHRD_LOOPBACK)}
	}
	return &nval{name: "meta", size: 4}
}

func (p packet) ct(key expr.CtKey) *nval {
	switch key {
	case expr.CtKeySTATE:
		return &nval{name: "ct state", size: 4, host: true, flags: true, known: binary.NativeEndian.AppendUint32(nil, expr.CtStateBitNEW)}
	case expr.CtKeySTATUS:
		// A new connection nobody translated: no status bit set.
		return &nval{name: "ct status", size: 4, host: true, flags: true, known: make([]byte, 4)}
	case expr.CtKeyDIRECTION:
		return &nval{name: "ct direction", size: 1, known: []byte{0}}
	case expr.CtKeyPROTOCOL:
		return &nval{name: "ct protocol", size: 1, known: []byte{unix.IPPROTO_TCP}}
	case expr.CtKeyPROTODST:
		return &nval{name: "ct proto-dst", size: 2, known: binary.BigEndian.AppendUint16(nil, uint16(p.port))}
	case expr.CtKeySRC:
		return &nval{name: "ct saddr", size: p.addrLen(), remote: true}
	case expr.CtKeyDST:
		return &nval{name: "ct daddr", size: p.addrLen(), local: true}
	}
	return &nval{name: "ct", size: 4}
}

func (p packet) addrLen() int {
	if p.fam == IPv6 {
		return 16
	}
	return 4
}

func (p packet) payload(e *expr.Payload) *nval {
	v := &nval{name: "payload", size: int(e.Len)}
	switch e.Base {
	case expr.PayloadBaseNetworkHeader:
		proto, saddr, daddr, pre := uint32(9), uint32(12), uint32(16), "ip "
		if p.fam == IPv6 {
			proto, saddr, daddr, pre = 6, 8, 24, "ip6 "
		}
		switch {
		case e.Offset == proto && e.Len == 1:
			v.name, v.known = pre+"protocol", []byte{unix.IPPROTO_TCP}
		case e.Offset == saddr && int(e.Len) == p.addrLen():
			v.name, v.remote = pre+"saddr", true
		case e.Offset == daddr && int(e.Len) == p.addrLen():
			v.name, v.local = pre+"daddr", true
		}
	case expr.PayloadBaseTransportHeader:
		switch {
		case e.Offset == 2 && e.Len == 2:
			v.name, v.known = "tcp dport", binary.BigEndian.AppendUint16(nil, uint16(p.port))
		case e.Offset == 0 && e.Len == 2:
			v.name = "tcp sport"
		case e.Offset == 13 && e.Len == 1:
			v.name, v.known, v.flags = "tcp flags", []byte{0x02}, true // SYN
		}
	}
	return v
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

// bitwise applies (v & mask) ^ xor.
func bitwise(c []comp, e *expr.Bitwise) *nval {
	out := &nval{name: "bitwise", size: int(e.Len)}
	if bytes.Count(e.Mask, []byte{0}) == len(e.Mask) {
		out.known = pad(e.Xor, int(e.Len))
		return out
	}
	if len(c) != 1 || !c[0].whole {
		return out
	}
	v := c[0].v
	out.name, out.host, out.flags = v.name, v.host, true
	switch {
	case v.known != nil:
		k := pad(v.known, int(e.Len))[:e.Len]
		for i := range k {
			k[i] = k[i]&pad(e.Mask, len(k))[i] ^ pad(e.Xor, len(k))[i]
		}
		out.known = k
	case v.remote:
		out.remote, out.flags = true, false
	case v.local:
		out.local, out.flags = true, false
	}
	return out
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
