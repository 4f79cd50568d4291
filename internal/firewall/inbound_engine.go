package firewall

import (
	"slices"
	"strings"
)

// This file is the part of Inbound that every ruleset shares: rules
// compiled to what they do to the one packet Inbound asks about (a TCP SYN
// from a remote address to the port), and the walk through chains, jumps
// and returns that turns them into the possible outcomes of a base chain.
// A rule that cannot be decided forks the walk: both the "matches" and the
// "does not match" branches are followed, and the answer is Unknown only
// when the branches end differently.

// tri is a three-valued truth: a condition holds, does not, or cannot be
// decided from the ruleset alone.
type tri int8

const (
	no tri = iota
	maybe
	yes
)

func (t tri) not() tri { return yes - t }

func (t tri) and(u tri) tri { return min(t, u) }

func (t tri) or(u tri) tri { return max(t, u) }

func triOf(b bool) tri {
	if b {
		return yes
	}
	return no
}

// vKind is what a rule does when it matches.
type vKind int8

const (
	vContinue vKind = iota // no verdict: the next rule
	vAccept
	vDrop
	vReject
	vJump
	vGoto
	vReturn
	vUnknown  // a verdict Inbound cannot follow (queue to user space...)
	vOutcomes // decided elsewhere: ufw or firewalld behind an iptables chain
)

// verdict is a rule's verdict.
type verdict struct {
	kind   vKind
	chain  string    // vJump, vGoto
	reason string    // vUnknown: why
	outs   []outcome // vOutcomes
}

// alt is one thing a rule may do: its verdict, when t says it matches.
// Most rules have one; a verdict map has one per element.
type alt struct {
	t tri
	v verdict
}

// evRule is a rule compiled for the packet.
type evRule struct {
	alts   []alt
	where  string // `rule "tcp dport 80 drop" (handle 4) in chain input in table inet filter`
	cond   string // what could not be decided, when some alt is maybe
	window bool   // one of Detour's rules
}

// evChain is a chain compiled for the packet.
type evChain struct {
	where string // "chain input in table inet filter"
	rules []evRule
}

// outcome is one way a packet can leave a chain or a ruleset.
type outcome struct {
	action Action // "" inside a chain: it returned
	why    string // the rule or policy responsible
	cond   string // an undecided condition on the way, "" when none
	window bool   // accepted by one of Detour's rules
	weight int    // how telling an accept is: policy 0, rule 1, Detour's rule 2
	// backend decided it, when not the stage's own (ufw behind an
	// iptables chain).
	backend string
}

// maxDepth bounds jumps, as the kernel does (NFT_JUMP_STACK_SIZE).
const maxDepth = 16

// maxSteps bounds the work on one base chain.
const maxSteps = 200000

// engine walks the chains of one table for one packet.
type engine struct {
	chains map[string]*evChain
	memo   map[memoKey][]outcome
	steps  int
}

type memoKey struct {
	chain string
	i     int
}

func newEngine(chains map[string]*evChain) *engine {
	return &engine{chains: chains, memo: map[memoKey][]outcome{}}
}

// base returns the outcomes of base chain name with the given policy.
func (e *engine) base(name string, policy Action, policyWhy string) []outcome {
	var out []outcome
	for _, o := range e.run(name, 0, 0) {
		if o.action == "" {
			o.action, o.why, o.weight = policy, policyWhy, 0
		}
		out = addOutcome(out, o)
	}
	return out
}

// run evaluates chain name from rule i on.
func (e *engine) run(name string, i, depth int) []outcome {
	ch, ok := e.chains[name]
	if !ok {
		return []outcome{{action: Unknown, why: "a jump to chain " + name + ", which Detour could not read"}}
	}
	if depth > maxDepth {
		return []outcome{{action: Unknown, why: "jumps nested deeper than the kernel allows in " + ch.where}}
	}
	if i >= len(ch.rules) {
		return []outcome{{}}
	}
	k := memoKey{name, i}
	if out, ok := e.memo[k]; ok {
		return out
	}
	e.steps++
	if e.steps > maxSteps {
		return []outcome{{action: Unknown, why: "the ruleset is too large to evaluate (" + ch.where + ")"}}
	}
	r := ch.rules[i]
	var out []outcome
	fall := true
	for _, a := range r.alts {
		if a.t == no {
			continue
		}
		if a.t == yes {
			fall = false
		}
		for _, o := range e.apply(name, i, depth, r, a.v) {
			if a.t == maybe && o.cond == "" {
				o.cond = r.where + " depends on " + r.cond
			}
			out = addOutcome(out, o)
		}
	}
	if fall {
		undecided := len(out) > 0 || slices.ContainsFunc(r.alts, func(a alt) bool { return a.t == maybe })
		for _, o := range e.run(name, i+1, depth) {
			if undecided && o.cond == "" {
				o.cond = r.where + " depends on " + r.cond
			}
			out = addOutcome(out, o)
		}
	}
	e.memo[k] = out
	return out
}

// apply returns the outcomes of rule i of chain name doing v.
func (e *engine) apply(name string, i, depth int, r evRule, v verdict) []outcome {
	switch v.kind {
	case vContinue:
		return e.run(name, i+1, depth)
	case vAccept, vDrop, vReject:
		a := map[vKind]Action{vAccept: Accept, vDrop: Drop, vReject: Reject}[v.kind]
		o := outcome{action: a, why: r.where, window: r.window && a == Accept, weight: 1}
		if o.window {
			o.weight = 2
		}
		return []outcome{o}
	case vReturn:
		return []outcome{{}}
	case vJump, vGoto:
		var out []outcome
		for _, o := range e.run(v.chain, 0, depth+1) {
			if o.action != "" {
				out = addOutcome(out, o)
				continue
			}
			if v.kind == vGoto {
				out = addOutcome(out, o)
				continue
			}
			for _, p := range e.run(name, i+1, depth) {
				if p.cond == "" {
					p.cond = o.cond
				}
				out = addOutcome(out, p)
			}
		}
		return out
	case vOutcomes:
		return v.outs
	}
	return []outcome{{action: Unknown, why: r.where + ": " + v.reason}}
}

func addOutcome(out []outcome, o outcome) []outcome {
	if slices.Contains(out, o) {
		return out
	}
	return append(out, o)
}

// stage is one base chain on the way in (or a firewall that stands for
// several): a packet is accepted only when every stage accepts it.
type stage struct {
	backend  string
	hook     int // 0 ingress, 1 prerouting, 2 input
	priority int
	outs     []outcome
}

// mayAccept says whether some way through stages accepts the packet:
// every stage has an outcome that accepts it or may.
func mayAccept(stages []stage) bool {
	for _, s := range stages {
		if !slices.ContainsFunc(s.outs, func(o outcome) bool { return o.action == Accept || o.action == Unknown }) {
			return false
		}
	}
	return true
}

// combine returns the verdict of stages, which must be in the order the
// kernel runs them.
func combine(stages []stage) FamilyVerdict {
	var (
		final []outcome
		owner = map[int]string{} // index in final -> backend
		best  *outcome
		bestB string
	)
	add := func(o outcome, backend string) {
		if o.backend != "" {
			backend = o.backend
		}
		if !slices.Contains(final, o) {
			owner[len(final)] = backend
			final = append(final, o)
		}
	}
	reachable := true
	for _, s := range stages {
		accepts := false
		for _, o := range s.outs {
			if o.action != Accept {
				add(o, s.backend)
				continue
			}
			accepts = true
			if best == nil || o.weight >= best.weight {
				best, bestB = &o, s.backend
			}
		}
		if !accepts {
			reachable = false
			break
		}
	}
	if reachable {
		if best == nil {
			return FamilyVerdict{Action: Accept, Rule: "nothing filters inbound connections (no chain on the input hook)"}
		}
		add(*best, bestB)
	}
	first := final[0]
	same := !slices.ContainsFunc(final, func(o outcome) bool { return o.action != first.action })
	if same && first.action != Unknown {
		return FamilyVerdict{Action: first.action, Backend: owner[0], Rule: first.why, Window: first.action == Accept && first.window}
	}
	v := FamilyVerdict{Action: Unknown, Backend: owner[0], Rule: first.why}
	for i, o := range final {
		if o.action == Unknown {
			return FamilyVerdict{Action: Unknown, Backend: owner[i], Rule: o.why}
		}
	}
	var alts []string
	for _, o := range final {
		alts = append(alts, string(o.action)+" by "+o.why)
		if o.cond != "" && v.Rule == first.why {
			v.Rule = o.cond
		}
	}
	v.Rule += " (" + strings.Join(alts, ", or ") + ")"
	return v
}
