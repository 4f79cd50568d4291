package firewall

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// The rules below are the bytecode nft 1.0.6 generates for them, as
// `nft --debug=netlink -f` prints it (captured in a namespace); each
// helper's comment is that listing.

// [ meta load l4proto => reg 1 ] [ cmp eq reg 1 0x00000006 ]
func nftTCP() []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{6}}}
}

// tcp dport PORT: [ payload load 2b @ transport header + 2 => reg 1 ] [ cmp eq reg 1 0x00005000 ]
func nftDport(port uint16) []expr.Any {
	return append(nftTCP(), &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, port)})
}

// ct state established,related: [ ct load state => reg 1 ]
// [ bitwise reg 1 = ( reg 1 & 0x00000006 ) ^ 0x00000000 ] [ cmp neq reg 1 0x00000000 ]
func nftEstablished() []expr.Any {
	return []expr.Any{&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binary.NativeEndian.AppendUint32(nil, 6), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)}}
}

// iif "lo": [ meta load iif => reg 1 ] [ cmp eq reg 1 0x00000001 ]
func nftIifLo() []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyIIF, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, 1)}}
}

// iifname "NAME": [ meta load iifname => reg 1 ] [ cmp eq reg 1 0x00006f6c 0x00000000 0x00000000 0x00000000 ]
func nftIifname(name string) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: pad([]byte(name), 16)}}
}

// ip saddr @SET: [ meta load nfproto => reg 1 ] [ cmp eq reg 1 0x00000002 ]
// [ payload load 4b @ network header + 12 => reg 1 ] [ lookup reg 1 set SET ]
func nftSaddrIn(set string) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: set}}
}

func nftV(k expr.VerdictKind) *expr.Verdict { return &expr.Verdict{Kind: k} }

func rule(parts ...any) *nftables.Rule {
	r := &nftables.Rule{}
	for _, p := range parts {
		switch p := p.(type) {
		case []expr.Any:
			r.Exprs = append(r.Exprs, p...)
		case expr.Any:
			r.Exprs = append(r.Exprs, p)
		}
	}
	return r
}

// nftTableOf builds a table whose chain "input" is a base chain on the
// input hook with the given policy; more chains by name.
func nftTableOf(family nftables.TableFamily, name string, prio int32, policy nftables.ChainPolicy, input []*nftables.Rule, more map[string][]*nftables.Rule) *nftTableSnap {
	t := &nftables.Table{Name: name, Family: family}
	snap := &nftTableSnap{table: t, rules: map[string][]*nftables.Rule{}, sets: map[string]*nftSetSnap{}}
	snap.chains = append(snap.chains, &nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookInput,
		Priority: nftables.ChainPriorityRef(nftables.ChainPriority(prio)), Policy: &policy})
	snap.rules["input"] = input
	for n, rs := range more {
		snap.chains = append(snap.chains, &nftables.Chain{Name: n, Table: t})
		snap.rules[n] = rs
	}
	for i, r := range input {
		r.Handle = uint64(i + 2)
	}
	return snap
}

func inetFilter(policy nftables.ChainPolicy, rules ...*nftables.Rule) *nftTableSnap {
	return nftTableOf(nftables.TableFamilyINet, "filter", 0, policy, rules, nil)
}

// withWindow adds Detour's window for port (IPv4 only) as the nftables
// backend leaves it: its own table, and the companion set and rule in
// user's table u.
func withWindow(u *nftTableSnap, port int) []*nftTableSnap {
	elem := []nftables.SetElement{{Key: nftKey(IPv4, port), Timeout: time.Minute, Expires: 50 * time.Second}}
	comment := userdata.AppendString(nil, userdata.TypeComment, nftRuleComment)
	comp := newSet(u.table, nftUserSet)
	u.sets[nftUserSet] = &nftSetSnap{set: comp, elems: elem}
	u.rules["input"] = append([]*nftables.Rule{{Handle: 99, Exprs: acceptExprs(comp), UserData: comment}}, u.rules["input"]...)
	ours := nftTableOf(nftables.TableFamilyINet, nftTable, nftPriority, nftables.ChainPolicyAccept, nil, nil)
	set := newSet(ours.table, nftSet)
	ours.sets[nftSet] = &nftSetSnap{set: set, elems: elem}
	ours.rules["input"] = []*nftables.Rule{{Handle: 3, Exprs: acceptExprs(set), UserData: comment}}
	return []*nftTableSnap{ours, u}
}

func TestInboundNftables(t *testing.T) {
	drop, accept := nftables.ChainPolicyDrop, nftables.ChainPolicyAccept
	// A typical host firewall: established, loopback, ssh.
	host := func(policy nftables.ChainPolicy, more ...*nftables.Rule) *nftTableSnap {
		return inetFilter(policy, append([]*nftables.Rule{
			rule(nftEstablished(), nftV(expr.VerdictAccept)),
			rule(nftIifLo(), nftV(expr.VerdictAccept)),
			rule(nftDport(22), nftV(expr.VerdictAccept)),
		}, more...)...)
	}
	anon := &nftables.Set{Name: "__set0", Anonymous: true, Constant: true, Interval: true, KeyType: nftables.TypeInetService}
	// tcp dport { 443, 8000-8100 }: [ lookup reg 1 set __set0 ], whose
	// interval elements nft lists as
	// 00000000 : 1 [end]  0000bb01 : 0  0000bc01 : 1 [end]  0000401f : 0  0000a51f : 1 [end]
	portSet := func() *nftTableSnap {
		tb := host(drop, rule(nftTCP(), &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Lookup{SourceRegister: 1, SetName: "__set0"}, nftV(expr.VerdictAccept)))
		be := func(p uint16) []byte { return binary.BigEndian.AppendUint16(nil, p) }
		tb.sets["__set0"] = &nftSetSnap{set: anon, elems: []nftables.SetElement{
			{Key: be(0), IntervalEnd: true}, {Key: be(443)}, {Key: be(444), IntervalEnd: true}, {Key: be(8000)}, {Key: be(8101), IntervalEnd: true}}}
		return tb
	}
	ctVmap := func() *nftTableSnap {
		// ct state vmap { established : accept, related : accept, invalid : drop }
		tb := inetFilter(drop, rule(&expr.Ct{Key: expr.CtKeySTATE, Register: 1},
			&expr.Lookup{SourceRegister: 1, SetName: "__map0", IsDestRegSet: true, DestRegister: 0}),
			rule(nftDport(80), nftV(expr.VerdictAccept)))
		st := func(b uint32) []byte { return binary.NativeEndian.AppendUint32(nil, b) }
		tb.sets["__map0"] = &nftSetSnap{set: &nftables.Set{Name: "__map0", Anonymous: true, IsMap: true}, elems: []nftables.SetElement{
			{Key: st(2), VerdictData: nftV(expr.VerdictAccept)}, {Key: st(4), VerdictData: nftV(expr.VerdictAccept)}, {Key: st(1), VerdictData: nftV(expr.VerdictDrop)}}}
		return tb
	}
	admins := func(tb *nftTableSnap) *nftTableSnap {
		tb.sets["admins"] = &nftSetSnap{set: &nftables.Set{Name: "admins", KeyType: nftables.TypeIPAddr},
			elems: []nftables.SetElement{{Key: []byte{192, 0, 2, 1}}}}
		return tb
	}
	tests := []struct {
		name   string
		tables []*nftTableSnap
		port   int
		iface  string
		want4  FamilyVerdict
		want6  Action // "" same as IPv4
	}{
		{name: "no ruleset", want4: FamilyVerdict{Action: Accept}},
		{name: "drop policy", tables: []*nftTableSnap{host(drop)},
			want4: FamilyVerdict{Action: Drop, Backend: NameNftables, Rule: "chain input policy drop in table inet filter"}},
		{name: "accept for 80 only", tables: []*nftTableSnap{host(drop, rule(nftDport(80), nftV(expr.VerdictAccept)))},
			want4: FamilyVerdict{Action: Accept, Backend: NameNftables, Rule: `rule "meta l4proto tcp tcp dport 80 accept" (handle 5) in chain input in table inet filter`}},
		{name: "accept for 80 only, port 81", port: 81, tables: []*nftTableSnap{host(drop, rule(nftDport(80), nftV(expr.VerdictAccept)))},
			want4: FamilyVerdict{Action: Drop, Backend: NameNftables, Rule: "chain input policy drop in table inet filter"}},
		{name: "reject", tables: []*nftTableSnap{host(accept, rule(nftDport(80), &expr.Reject{Type: 1}))},
			want4: FamilyVerdict{Action: Reject, Backend: NameNftables, Rule: `rule "meta l4proto tcp tcp dport 80 reject" (handle 5) in chain input in table inet filter`}},
		{name: "established only", tables: []*nftTableSnap{inetFilter(drop, rule(nftEstablished(), nftV(expr.VerdictAccept)))},
			want4: FamilyVerdict{Action: Drop, Backend: NameNftables, Rule: "chain input policy drop in table inet filter"}},
		{name: "loopback only", tables: []*nftTableSnap{inetFilter(drop, rule(nftIifLo(), nftV(expr.VerdictAccept)), rule(nftIifname("lo"), nftV(expr.VerdictAccept)))},
			want4: FamilyVerdict{Action: Drop, Backend: NameNftables, Rule: "chain input policy drop in table inet filter"}},
		{name: "window open", tables: withWindow(host(drop), 80),
			want4: FamilyVerdict{Action: Accept, Backend: NameNftables, Window: true,
				Rule: `rule "meta l4proto tcp meta nfproto . tcp dport @detour_open accept" (handle 99, comment "` + nftRuleComment + `") in chain input in table inet filter`},
			want6: Drop},
		{name: "window and the user's own accept", tables: withWindow(host(drop, rule(nftDport(80), nftV(expr.VerdictAccept))), 80),
			want4: FamilyVerdict{Action: Accept, Backend: NameNftables, Window: false,
				Rule: `rule "meta l4proto tcp tcp dport 80 accept" (handle 5) in chain input in table inet filter`}},
		{name: "window for another port", port: 443, tables: withWindow(host(drop), 80),
			want4: FamilyVerdict{Action: Drop, Backend: NameNftables, Rule: "chain input policy drop in table inet filter"}},
		{name: "interval set", port: 8050, tables: []*nftTableSnap{portSet()},
			want4: FamilyVerdict{Action: Accept, Backend: NameNftables, Rule: `rule "meta l4proto tcp tcp dport { 443, 8000-8100 } accept" (handle 5) in chain input in table inet filter`}},
		{name: "interval set, port outside", port: 8101, tables: []*nftTableSnap{portSet()},
			want4: FamilyVerdict{Action: Drop, Backend: NameNftables, Rule: "chain input policy drop in table inet filter"}},
		{name: "ct state vmap", tables: []*nftTableSnap{ctVmap()},
			want4: FamilyVerdict{Action: Accept, Backend: NameNftables, Rule: `rule "meta l4proto tcp tcp dport 80 accept" (handle 3) in chain input in table inet filter`}},
		{name: "a list of sources is not the CA", tables: []*nftTableSnap{admins(host(drop, rule(nftSaddrIn("admins"), nftDport(80)[2:], nftV(expr.VerdictAccept))))},
			want4: FamilyVerdict{Action: Drop, Backend: NameNftables, Rule: "chain input policy drop in table inet filter", BySource: true}, want6: Drop},
		{name: "a block-list", tables: []*nftTableSnap{admins(host(accept, rule(nftSaddrIn("admins"), nftV(expr.VerdictDrop)), rule(nftDport(80), &expr.Reject{Type: 1})))},
			want4: FamilyVerdict{Action: Reject, Backend: NameNftables}},
		{name: "another interface: unknown", tables: []*nftTableSnap{inetFilter(drop, rule(nftIifname("wg0"), nftV(expr.VerdictAccept)))},
			want4: FamilyVerdict{Action: Unknown, Backend: NameNftables,
				Rule: `rule "iifname \"wg0\" accept" (handle 2) in chain input in table inet filter depends on iifname "wg0" ` +
					`(drop by chain input policy drop in table inet filter, or accept by rule "iifname \"wg0\" accept" (handle 2) in chain input in table inet filter)`}},
		{name: "another interface, known", iface: "wg0", tables: []*nftTableSnap{inetFilter(drop, rule(nftIifname("wg0"), nftV(expr.VerdictAccept)))},
			want4: FamilyVerdict{Action: Accept, Backend: NameNftables, Rule: `rule "iifname \"wg0\" accept" (handle 2) in chain input in table inet filter`}},
		{name: "a rate limit: unknown", tables: []*nftTableSnap{inetFilter(drop, rule(nftDport(80), &expr.Limit{Rate: 10, Unit: expr.LimitTimeSecond}, nftV(expr.VerdictAccept)))},
			want4: FamilyVerdict{Action: Unknown, Backend: NameNftables}},
		{name: "a rate limit that does not matter", tables: []*nftTableSnap{inetFilter(drop, rule(nftDport(80), &expr.Limit{Rate: 10, Unit: expr.LimitTimeSecond}, nftV(expr.VerdictDrop)))},
			want4: FamilyVerdict{Action: Drop, Backend: NameNftables}},
		{name: "jump to a user chain", tables: []*nftTableSnap{nftTableOf(nftables.TableFamilyINet, "filter", 0, drop,
			[]*nftables.Rule{rule(nftTCP(), &expr.Verdict{Kind: expr.VerdictJump, Chain: "web"})},
			map[string][]*nftables.Rule{"web": {rule(nftDport(22), nftV(expr.VerdictReturn)), rule(nftDport(80), nftV(expr.VerdictAccept))}})},
			want4: FamilyVerdict{Action: Accept, Backend: NameNftables, Rule: `rule "meta l4proto tcp tcp dport 80 accept" (handle 0) in chain web in table inet filter`}},
		{name: "every base chain must accept", tables: []*nftTableSnap{
			host(drop, rule(nftDport(80), nftV(expr.VerdictAccept))),
			nftTableOf(nftables.TableFamilyIPv4, "other", 10, drop, nil, nil)},
			want4: FamilyVerdict{Action: Drop, Backend: NameNftables, Rule: "chain input policy drop in table ip other"}, want6: Accept},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			port := tc.port
			if port == 0 {
				port = 80
			}
			st := &inboundState{iface: tc.iface, nft: &nftRuleset{tables: tc.tables}}
			v := st.verdict(port, time.Now())
			check := func(f Family, got, want FamilyVerdict) {
				t.Helper()
				if got.Action != want.Action || got.Backend != want.Backend || got.Window != want.Window || got.BySource != want.BySource || (want.Rule != "" && got.Rule != want.Rule) {
					t.Errorf("%s: got %+v\nwant %+v", f, got, want)
				}
			}
			check(IPv4, v.IPv4, tc.want4)
			if tc.want6 == "" {
				check(IPv6, v.IPv6, tc.want4)
			} else if v.IPv6.Action != tc.want6 {
				t.Errorf("IPv6: %v, want %s", v.IPv6, tc.want6)
			}
		})
	}
}

// TestInboundNftablesReal reads rulesets from a kernel: Inbound's netlink
// reading and the evaluator agree with what nft wrote.
func TestInboundNftablesReal(t *testing.T) {
	tests := []struct {
		ruleset string
		want    Action
		rule    string
	}{
		{userRuleset, Drop, "chain input policy drop in table inet filter"},
		{strings.Replace(userRuleset, "tcp dport 22", "tcp dport { 22, 80 }", 1), Accept, `tcp dport { 22, 80 } accept`},
		{strings.Replace(userRuleset, "tcp dport 22 accept", "tcp dport 80 reject", 1), Reject, `tcp dport 80 reject`},
		{"table ip6 six {\n\tchain in {\n\t\ttype filter hook input priority 0; policy drop;\n\t}\n}\n", Accept, "nothing filters"},
		// iptables-nft-save shows an empty stand-in for a table nft made
		// under an iptables name: nftables' own view decides.
		{"table ip filter {\n\tchain input {\n\t\ttype filter hook input priority 0; policy drop;\n\t\tmeta l4proto tcp counter\n\t}\n}\n", Drop, "chain input policy drop in table ip filter"},
	}
	for _, tc := range tests {
		ns := newNetns(t)
		ns.LoadRuleset(t, tc.ruleset)
		v, err := Inbound(t.Context(), 80, InboundOptions{NetNS: ns.FD})
		if err != nil {
			t.Fatal(err)
		}
		if v.IPv4.Action != tc.want || !strings.Contains(v.IPv4.Rule, tc.rule) {
			t.Errorf("%s\nIPv4: %v; want %s mentioning %q", tc.ruleset, v.IPv4, tc.want, tc.rule)
		}
	}
}
