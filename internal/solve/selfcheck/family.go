package selfcheck

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/detour-acme/detour/internal/solve"
)

// untried returns the first of addrs whose address family no attempt used:
// the address the CA will not connect to. It is invalid when every family
// was tried (or there is only one).
func untried(addrs []netip.Addr, attempts []Attempt) netip.Addr {
	for _, a := range addrs {
		used := false
		for _, at := range attempts {
			if at.Addr.Addr().Unmap().Is4() == a.Unmap().Is4() {
				used = true
				break
			}
		}
		if !used {
			return a
		}
	}
	return netip.Addr{}
}

// failKind says how the attempt that failed ended, which decides why the CA
// does not fall back to the other family.
type failKind int

const (
	failAnswered     failKind = iota // an HTTP answer, or a completed TLS handshake
	failConnected                    // the connection was made, then reset or left unanswered
	failNotConnected                 // no connection (only a redirect's target has no fallback)
)

// kindOf classifies the last attempt of a failed fetch.
func kindOf(attempts []Attempt) failKind {
	err := attempts[len(attempts)-1].Err
	switch {
	case err == nil:
		return failAnswered
	case notConnected(err):
		return failNotConnected
	}
	return failConnected
}

// differs reports whether two failures are different answers, not the same
// one from two addresses.
func differs(a, b *MismatchError) bool {
	return a.Reason != b.Reason || a.Status != b.Status || a.Server != b.Server || a.Body != b.Body ||
		a.Location != b.Location || a.URL != b.URL || a.Protocol != b.Protocol ||
		a.CertSubject != b.CertSubject || a.CertIssuer != b.CertIssuer
}

// family is the comparison of the answer the CA will get (fail, from the
// address fail.Addr) with the other family's address of host.
type family struct {
	typ   string // solve.HTTP01 or solve.TLSALPN01
	host  string
	kind  failKind
	fail  *MismatchError
	other netip.AddrPort
	https bool // http-01: the fetch was https (after a redirect)
}

// passes builds the error for an other family that answers correctly:
// serves says what it answers ("serves the key authorization").
func (f family) passes(serves string) *MismatchError {
	e := *f.fail
	e.Reason = ReasonFamily
	used := f.fail.Addr
	fam, rr := familyName(used.Addr()), recordType(used.Addr())
	ofam, orr := familyName(f.other.Addr()), recordType(f.other.Addr())
	e.Detail = fmt.Sprintf("%s answers differently over %s and %s: over %s (%s record %s), %s; over %s (%s record %s), %s %s",
		f.host, fam, ofam, fam, rr, used.Addr(), f.fail.Detail, ofam, orr, f.other.Addr(), f.other, serves)
	e.Hint = f.why() + ", so it will get this " + f.what() + " and the validation will fail: " + f.fix()
	return &e
}

// what names what the CA gets from the failing address.
func (f family) what() string {
	switch {
	case f.kind != failAnswered:
		return "failure"
	case f.typ == solve.TLSALPN01:
		return "certificate"
	}
	return "answer"
}

// why says why the CA does not fall back to the other family.
func (f family) why() string {
	used, other := f.fail.Addr, f.other
	fam, ofam := familyName(used.Addr()), familyName(other.Addr())
	switch {
	case f.kind == failNotConnected:
		return fmt.Sprintf("when following a redirect the CA connects to the %s address only (it falls back to %s "+
			"only for the challenge URL itself)", fam, ofam)
	case f.kind == failConnected:
		return fmt.Sprintf("the CA tries the %s address first and falls back to %s only when no connection can be "+
			"made, and %s accepted the connection", fam, ofam, used)
	case f.typ == solve.TLSALPN01:
		return fmt.Sprintf("the CA tries the %s address first and falls back to %s only when the TLS handshake does "+
			"not complete, never after a completed one", fam, ofam)
	}
	return fmt.Sprintf("the CA tries the %s address first and falls back to %s only when no connection can be made, "+
		"never after an answer", fam, ofam)
}

// fix says what to change: the server on the failing address, or the
// record that leads there.
func (f family) fix() string {
	used := f.fail.Addr
	fam, rr := familyName(used.Addr()), recordType(used.Addr())
	var server string
	switch {
	case f.kind == failNotConnected:
		server = fmt.Sprintf("make a server listen on %s and answer for %s as the one on %s does", used, f.host, f.other)
	case f.typ == solve.TLSALPN01:
		server = fmt.Sprintf("make the server listening on %s answer acme-tls/1 for %s as the one on %s does", used, f.host, f.other)
	default:
		server = fmt.Sprintf("make the server listening on %s serve %s as the one on %s does", used, f.host, f.other)
	}
	if used.Addr().Is6() {
		switch f.typ {
		case solve.TLSALPN01:
			server += fmt.Sprintf(" (an nginx stream block needs `listen [::]:%d;` besides `listen %d;`, "+
				"HAProxy `bind [::]:%d`)", used.Port(), used.Port(), used.Port())
		default:
			ssl := ""
			if f.https {
				ssl = " ssl"
			}
			server += fmt.Sprintf(" (nginx: `listen [::]:%d%s;` in the server block of %s, not only `listen %d%s;`; "+
				"Apache: <VirtualHost *:%d>, not one bound to an IPv4 address)", used.Port(), ssl, f.host, used.Port(), ssl, used.Port())
		}
	}
	return fmt.Sprintf("%s, or correct the %s record of %s, or remove it if this host does not serve %s over %s",
		server, rr, f.host, f.host, fam)
}

// alsoFails builds the error for an other family that fails too, but
// differently: the CA's failure stays first, and the other answer and the
// family rule are added.
func (f family) alsoFails(o *MismatchError) *MismatchError {
	e := *f.fail
	used := f.fail.Addr
	ofam, orr := familyName(f.other.Addr()), recordType(f.other.Addr())
	e.Detail = fmt.Sprintf("%s; over %s (%s record %s) the answer differs: %s", f.fail.Detail, ofam, orr, f.other.Addr(), o.Detail)
	e.Hint = fmt.Sprintf("%s; %s and %s answer differently and the CA uses the %s answer (%s): fix the server on %s first, "+
		"or correct the %s record of %s, or remove it if this host does not serve %s over %s",
		f.fail.Hint, familyName(used.Addr()), ofam, familyName(used.Addr()), f.why(), used,
		recordType(used.Addr()), f.host, f.host, familyName(used.Addr()))
	return &e
}

// compareFamilies runs check, the same fetch from the other family's
// address, and returns the error for fail that says how the families differ;
// fail itself when they do not or cannot be compared (the caller checks
// its context afterwards). serves says what a passing answer is.
func compareFamilies(f family, serves string, check func() error) *MismatchError {
	err := check()
	var o *MismatchError
	switch {
	case err == nil:
		return f.passes(serves)
	case errors.As(err, &o) && differs(f.fail, o):
		return f.alsoFails(o)
	}
	return f.fail
}
