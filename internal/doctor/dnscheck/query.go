package dnscheck

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
)

// querier sends single DNS questions. Package dns keeps its own query
// function unexported and asks only without DNSSEC bits, so this is a small
// local version: UDP with one resend, TCP when truncated, and the DO, AD
// and CD bits the DNSSEC check needs.
type querier struct {
	timeout  time.Duration
	log      *slog.Logger
	resolver string
}

// askOpts are the flags of one question.
type askOpts struct {
	rd bool // recursion desired: on for the resolver, off for authoritative servers
	do bool // DNSSEC OK (RFC 3225): ask for RRSIGs
	ad bool // authentic data in the query (RFC 6840 §5.7): ask a validator to say it validated
	cd bool // checking disabled (RFC 4035 §3.2.2): ask a validator not to validate
}

// ask sends one question to addr and returns the answer.
func (q querier) ask(ctx context.Context, addr, name string, qtype uint16, o askOpts) (*mdns.Msg, error) {
	m := new(mdns.Msg)
	m.SetQuestion(mdns.Fqdn(name), qtype)
	m.RecursionDesired = o.rd
	m.AuthenticatedData = o.ad
	m.CheckingDisabled = o.cd
	m.SetEdns0(1232, o.do)
	ctx, cancel := context.WithTimeout(ctx, q.timeout)
	defer cancel()
	const attempts = 2
	per := q.timeout / attempts
	var (
		r   *mdns.Msg
		err error
	)
	for range attempts {
		actx, acancel := context.WithTimeout(ctx, per)
		r, _, err = (&mdns.Client{Net: "udp", Timeout: per}).ExchangeContext(actx, m, addr)
		acancel()
		if !isTimeout(err) || ctx.Err() != nil {
			break
		}
	}
	if err == nil && r.Truncated {
		r, _, err = (&mdns.Client{Net: "tcp", Timeout: q.timeout}).ExchangeContext(ctx, m, addr)
	}
	if err != nil {
		if isTimeout(err) {
			err = errTimeout
		}
		return nil, fmt.Errorf("asking %s for %s %s: %w", addr, mdns.TypeToString[qtype], mdns.Fqdn(name), err)
	}
	q.log.DebugContext(ctx, "dns answer", "server", addr, "name", name, "type", mdns.TypeToString[qtype],
		"rcode", rcodeName(r.Rcode), "answers", len(r.Answer))
	return r, nil
}

// errTimeout replaces the net package's timeout errors in messages.
var errTimeout = errors.New("no answer (timeout)")

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout()
}

// rcodeName returns the mnemonic of a DNS rcode ("NOTAUTH").
func rcodeName(rc int) string {
	if s, ok := mdns.RcodeToString[rc]; ok {
		return s
	}
	return "RCODE" + strconv.Itoa(rc)
}

// addrsIn returns the addresses of type qtype that the answer section
// gives for name, following CNAMEs inside the answer.
func addrsIn(answer []mdns.RR, name string, qtype uint16) []netip.Addr {
	owner := cnameEnd(answer, name)
	var out []netip.Addr
	for _, rr := range answer {
		if !strings.EqualFold(rr.Header().Name, owner) || rr.Header().Rrtype != qtype {
			continue
		}
		switch rr := rr.(type) {
		case *mdns.A:
			if a, ok := netip.AddrFromSlice(rr.A.To4()); ok {
				out = append(out, a)
			}
		case *mdns.AAAA:
			if a, ok := netip.AddrFromSlice(rr.AAAA.To16()); ok {
				out = append(out, a)
			}
		}
	}
	return out
}

// cnameEnd follows the CNAMEs of name inside an answer section and returns
// the last owner name (name itself when there is none).
func cnameEnd(answer []mdns.RR, name string) string {
	cur := mdns.CanonicalName(name)
	for range 16 {
		next := ""
		for _, rr := range answer {
			if cn, ok := rr.(*mdns.CNAME); ok && strings.EqualFold(cn.Hdr.Name, cur) {
				next = mdns.CanonicalName(cn.Target)
			}
		}
		if next == "" {
			break
		}
		cur = next
	}
	return cur
}

// answerDesc describes an answer for evidence: rcode, AA and what it holds.
func answerDesc(m *mdns.Msg) string {
	var parts []string
	for _, rr := range m.Answer {
		if rr.Header().Rrtype == mdns.TypeRRSIG || rr.Header().Rrtype == mdns.TypeOPT {
			continue
		}
		parts = append(parts, rrString(rr))
	}
	s := rcodeName(m.Rcode)
	if len(parts) > 0 {
		s += ": " + strings.Join(parts, ", ")
	} else if m.Rcode == mdns.RcodeSuccess {
		s += ", no records"
	}
	return s
}

// rrString renders a record as "TYPE rdata" (without owner, TTL, class).
func rrString(rr mdns.RR) string {
	h := rr.Header()
	full := rr.String()
	prefix := h.String()
	return strings.TrimSpace(mdns.TypeToString[h.Rrtype] + " " + strings.TrimPrefix(full, prefix))
}
