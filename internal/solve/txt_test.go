package solve_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// fakeRecords is a fake Records backend for tests: it sets nothing
// anywhere, only notes each call (method and record) and answers with err.
type fakeRecords struct {
	err error // returned by every method

	mu    sync.Mutex
	calls []recordCall
}

var _ solve.Records = (*fakeRecords)(nil)

// recordCall is one call a fakeRecords got.
type recordCall struct {
	method string // CheckTXT, SetTXT, WaitTXT or DeleteTXT
	r      solve.TXTRecord
	ctxVal any // the value of ctxKey{} in the call's context
}

type ctxKey struct{}

func (f *fakeRecords) note(ctx context.Context, method string, r solve.TXTRecord) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, recordCall{method: method, r: r, ctxVal: ctx.Value(ctxKey{})})
	return f.err
}

func (f *fakeRecords) CheckTXT(ctx context.Context, r solve.TXTRecord) error {
	return f.note(ctx, "CheckTXT", r)
}

func (f *fakeRecords) SetTXT(ctx context.Context, r solve.TXTRecord) error {
	return f.note(ctx, "SetTXT", r)
}

func (f *fakeRecords) WaitTXT(ctx context.Context, r solve.TXTRecord) error {
	return f.note(ctx, "WaitTXT", r)
}

func (f *fakeRecords) DeleteTXT(ctx context.Context, r solve.TXTRecord) error {
	return f.note(ctx, "DeleteTXT", r)
}

func (f *fakeRecords) got() []recordCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// closingRecords is a fake Records backend that holds resources: a
// fakeRecords that counts Close calls and answers them with closeErr.
type closingRecords struct {
	fakeRecords
	closeErr error
	closed   int
}

var (
	_ solve.Records = (*closingRecords)(nil)
	_ io.Closer     = (*closingRecords)(nil)
)

func (c *closingRecords) Close() error {
	c.closed++
	return c.closeErr
}

// accountFunc returns a TXTOptions.AccountURL that gives url and err and
// counts its calls in n.
func accountFunc(n *int, url string, err error) func(context.Context) (string, error) {
	return func(context.Context) (string, error) {
		*n++
		return url, err
	}
}

func TestNewTXT(t *testing.T) {
	rec := &fakeRecords{}
	tests := []struct {
		name     string
		opts     solve.TXTOptions
		wantType string
		wantErr  string
	}{
		{name: "default dns-01", opts: solve.TXTOptions{Records: rec}, wantType: solve.DNS01},
		{name: "dns-01", opts: solve.TXTOptions{Records: rec, Challenge: solve.DNS01}, wantType: solve.DNS01},
		{name: "dns-account-01", opts: solve.TXTOptions{Records: rec, Challenge: solve.DNSAccount01}, wantType: solve.DNSAccount01},
		{name: "no backend", opts: solve.TXTOptions{Challenge: solve.DNS01}, wantErr: "no Records backend"},
		{name: "no backend, no challenge", opts: solve.TXTOptions{}, wantErr: "no Records backend"},
		{name: "http-01", opts: solve.TXTOptions{Records: rec, Challenge: solve.HTTP01}, wantErr: `"http-01" is not answered by a TXT record`},
		{name: "tls-alpn-01", opts: solve.TXTOptions{Records: rec, Challenge: solve.TLSALPN01}, wantErr: "is not answered by a TXT record"},
		{name: "dns-persist-01", opts: solve.TXTOptions{Records: rec, Challenge: solve.DNSPersist01}, wantErr: "is not answered by a TXT record"},
		{name: "upper case", opts: solve.TXTOptions{Records: rec, Challenge: "DNS-01"}, wantErr: "use one of [dns-01 dns-account-01]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := solve.NewTXT(tt.opts)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || s != nil {
					t.Fatalf("NewTXT = %v, %v; want nil and an error containing %q", s, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewTXT: %v", err)
			}
			if s.Type() != tt.wantType {
				t.Errorf("Type() = %q, want %q", s.Type(), tt.wantType)
			}
			if s.Records() != solve.Records(rec) {
				t.Errorf("Records() = %v, want the backend given", s.Records())
			}
		})
	}
}

func TestTXTCheck(t *testing.T) {
	boom := errors.New("zone not found")
	acctErr := errors.New("account not registered")
	label := "_" + exampleAccountLabel
	tests := []struct {
		name       string
		typ        string
		id         ident.Identifier
		noAccount  bool // TXTOptions.AccountURL unset
		accountErr error
		backendErr error

		wantErr      error  // errors.Is; nil with wantMsg "" for success
		wantMsg      string // substring of the error
		wantAccounts int    // calls of AccountURL
		want         *solve.TXTRecord
	}{
		{name: "dns-01", typ: solve.DNS01, id: dnsID("example.com"),
			want: &solve.TXTRecord{Name: "_acme-challenge.example.com.",
				Challenge: solve.Challenge{Type: solve.DNS01, Identifier: dnsID("example.com")}}},
		{name: "dns-01 wildcard", typ: solve.DNS01, id: dnsID("*.example.com"),
			want: &solve.TXTRecord{Name: "_acme-challenge.example.com.",
				Challenge: solve.Challenge{Type: solve.DNS01, Identifier: dnsID("*.example.com")}}},
		{name: "dns-01 needs no account", typ: solve.DNS01, id: dnsID("example.com"), noAccount: true,
			want: &solve.TXTRecord{Name: "_acme-challenge.example.com.",
				Challenge: solve.Challenge{Type: solve.DNS01, Identifier: dnsID("example.com")}}},
		{name: "dns-01 backend error", typ: solve.DNS01, id: dnsID("example.com"), backendErr: boom, wantErr: boom,
			want: &solve.TXTRecord{Name: "_acme-challenge.example.com.",
				Challenge: solve.Challenge{Type: solve.DNS01, Identifier: dnsID("example.com")}}},
		{name: "dns-01 IPv4", typ: solve.DNS01, id: ipID("192.0.2.1"), wantErr: solve.ErrNotApplicable, wantMsg: "192.0.2.1"},
		{name: "dns-01 IPv6", typ: solve.DNS01, id: ipID("2001:db8::1"), wantErr: solve.ErrNotApplicable, wantMsg: "RFC 8738"},
		{name: "dns-account-01", typ: solve.DNSAccount01, id: dnsID("example.org"), wantAccounts: 1,
			want: &solve.TXTRecord{Name: label + "._acme-challenge.example.org.",
				Challenge: solve.Challenge{Type: solve.DNSAccount01, Identifier: dnsID("example.org"), AccountURL: exampleAccount}}},
		{name: "dns-account-01 wildcard", typ: solve.DNSAccount01, id: dnsID("*.example.org"), wantAccounts: 1,
			want: &solve.TXTRecord{Name: label + "._acme-challenge.example.org.",
				Challenge: solve.Challenge{Type: solve.DNSAccount01, Identifier: dnsID("*.example.org"), AccountURL: exampleAccount}}},
		{name: "dns-account-01 IP, account not asked", typ: solve.DNSAccount01, id: ipID("192.0.2.1"), wantErr: solve.ErrNotApplicable},
		{name: "dns-account-01 account error", typ: solve.DNSAccount01, id: dnsID("example.org"), accountErr: acctErr,
			wantErr: acctErr, wantAccounts: 1},
		{name: "dns-account-01 without AccountURL", typ: solve.DNSAccount01, id: dnsID("example.org"), noAccount: true,
			wantMsg: "named after the ACME account"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &fakeRecords{err: tt.backendErr}
			opts := solve.TXTOptions{Challenge: tt.typ, Records: rec}
			accounts := 0
			if !tt.noAccount {
				opts.AccountURL = accountFunc(&accounts, exampleAccount, tt.accountErr)
			}
			s, err := solve.NewTXT(opts)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.WithValue(context.Background(), ctxKey{}, "check")
			err = s.Check(ctx, tt.id)

			switch {
			case tt.wantErr == nil && tt.wantMsg == "":
				if err != nil {
					t.Errorf("Check: %v", err)
				}
			case err == nil:
				t.Errorf("Check = nil, want an error")
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Errorf("Check = %v, want errors.Is %v", err, tt.wantErr)
			case !strings.Contains(err.Error(), tt.wantMsg):
				t.Errorf("Check = %v, want it to contain %q", err, tt.wantMsg)
			}
			if accounts != tt.wantAccounts {
				t.Errorf("AccountURL called %d times, want %d", accounts, tt.wantAccounts)
			}

			calls := rec.got()
			if tt.want == nil {
				if len(calls) != 0 {
					t.Errorf("backend called: %+v", calls)
				}
				return
			}
			if len(calls) != 1 {
				t.Fatalf("backend calls = %+v, want one CheckTXT", calls)
			}
			c := calls[0]
			if c.method != "CheckTXT" || !sameRecord(c.r, *tt.want) || c.ctxVal != "check" {
				t.Errorf("backend got %s(%+v) (ctx %v), want CheckTXT(%+v) (ctx check)", c.method, c.r, c.ctxVal, *tt.want)
			}
		})
	}
}

// sameRecord compares TXT records (Challenge holds a slice).
func sameRecord(a, b solve.TXTRecord) bool {
	ac, bc := a.Challenge, b.Challenge
	return a.Name == b.Name && a.Value == b.Value &&
		ac.Type == bc.Type && ac.Identifier == bc.Identifier && ac.Token == bc.Token &&
		ac.KeyAuthorization == bc.KeyAuthorization && ac.AccountURL == bc.AccountURL &&
		slices.Equal(ac.IssuerDomainNames, bc.IssuerDomainNames)
}

// txtOps are the solver's methods after Check, with the backend method
// each must call.
var txtOps = []struct {
	name, backend string
	call          func(s *solve.TXT, ctx context.Context, ch solve.Challenge) error
}{
	{"Present", "SetTXT", (*solve.TXT).Present},
	{"Wait", "WaitTXT", (*solve.TXT).Wait},
	{"CleanUp", "DeleteTXT", (*solve.TXT).CleanUp},
}

func TestTXTPresentWaitCleanUp(t *testing.T) {
	const keyAuth = "token.thumbprint"
	value := solve.TXTValue(keyAuth)
	boom := errors.New("update refused")
	label := "_" + exampleAccountLabel
	ch := func(typ string, id ident.Identifier, account string) solve.Challenge {
		return solve.Challenge{Type: typ, Identifier: id, Token: "token", KeyAuthorization: keyAuth, AccountURL: account}
	}
	tests := []struct {
		name       string
		solverType string
		ch         solve.Challenge
		backendErr error
		wantName   string // "" when the backend must not be called
		wantType   string // the Type of the record's Challenge
		wantErr    error  // errors.Is
		wantMsg    string // substring
	}{
		{name: "dns-01", solverType: solve.DNS01, ch: ch(solve.DNS01, dnsID("example.com"), ""),
			wantName: "_acme-challenge.example.com.", wantType: solve.DNS01},
		{name: "dns-01 wildcard", solverType: solve.DNS01, ch: ch(solve.DNS01, dnsID("*.example.com"), ""),
			wantName: "_acme-challenge.example.com.", wantType: solve.DNS01},
		{name: "dns-01 ignores an account", solverType: solve.DNS01, ch: ch(solve.DNS01, dnsID("example.com"), exampleAccount),
			wantName: "_acme-challenge.example.com.", wantType: solve.DNS01},
		{name: "empty type is the solver's", solverType: solve.DNS01, ch: ch("", dnsID("example.com"), ""),
			wantName: "_acme-challenge.example.com.", wantType: solve.DNS01},
		{name: "dns-account-01", solverType: solve.DNSAccount01, ch: ch(solve.DNSAccount01, dnsID("example.org"), exampleAccount),
			wantName: label + "._acme-challenge.example.org.", wantType: solve.DNSAccount01},
		{name: "dns-account-01 wildcard", solverType: solve.DNSAccount01, ch: ch(solve.DNSAccount01, dnsID("*.example.org"), exampleAccount),
			wantName: label + "._acme-challenge.example.org.", wantType: solve.DNSAccount01},
		{name: "dns-account-01 empty type", solverType: solve.DNSAccount01, ch: ch("", dnsID("example.org"), exampleAccount),
			wantName: label + "._acme-challenge.example.org.", wantType: solve.DNSAccount01},
		{name: "backend error", solverType: solve.DNS01, ch: ch(solve.DNS01, dnsID("example.com"), ""), backendErr: boom,
			wantName: "_acme-challenge.example.com.", wantType: solve.DNS01, wantErr: boom},
		{name: "dns-account-01 without the account", solverType: solve.DNSAccount01, ch: ch(solve.DNSAccount01, dnsID("example.org"), ""),
			wantMsg: "named after the ACME account"},
		{name: "dns-account-01 challenge to a dns-01 solver", solverType: solve.DNS01, ch: ch(solve.DNSAccount01, dnsID("example.org"), exampleAccount),
			wantMsg: "a dns-01 path was given a dns-account-01 challenge"},
		{name: "dns-01 challenge to a dns-account-01 solver", solverType: solve.DNSAccount01, ch: ch(solve.DNS01, dnsID("example.org"), exampleAccount),
			wantMsg: "a dns-account-01 path was given a dns-01 challenge"},
		{name: "http-01 challenge", solverType: solve.DNS01, ch: ch(solve.HTTP01, dnsID("example.com"), ""),
			wantMsg: "was given a http-01 challenge"},
		{name: "IP", solverType: solve.DNS01, ch: ch(solve.DNS01, ipID("192.0.2.1"), ""), wantErr: solve.ErrNotApplicable},
	}
	for _, op := range txtOps {
		for _, tt := range tests {
			t.Run(op.name+"/"+tt.name, func(t *testing.T) {
				rec := &fakeRecords{err: tt.backendErr}
				accounts := 0
				s, err := solve.NewTXT(solve.TXTOptions{Challenge: tt.solverType, Records: rec,
					AccountURL: accountFunc(&accounts, "https://elsewhere.example/acct/9", nil)})
				if err != nil {
					t.Fatal(err)
				}
				ctx := context.WithValue(context.Background(), ctxKey{}, op.name)
				err = op.call(s, ctx, tt.ch)

				switch {
				case tt.wantErr == nil && tt.wantMsg == "":
					if err != nil {
						t.Errorf("%s: %v", op.name, err)
					}
				case err == nil:
					t.Errorf("%s = nil, want an error", op.name)
				case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
					t.Errorf("%s = %v, want errors.Is %v", op.name, err, tt.wantErr)
				case !strings.Contains(err.Error(), tt.wantMsg):
					t.Errorf("%s = %v, want it to contain %q", op.name, err, tt.wantMsg)
				}
				if accounts != 0 {
					t.Errorf("%s asked AccountURL; the challenge carries its own", op.name)
				}

				calls := rec.got()
				if tt.wantName == "" {
					if len(calls) != 0 {
						t.Errorf("backend called: %+v", calls)
					}
					return
				}
				wantCh := tt.ch
				wantCh.Type = tt.wantType
				want := solve.TXTRecord{Name: tt.wantName, Value: value, Challenge: wantCh}
				if len(calls) != 1 {
					t.Fatalf("backend calls = %+v, want one %s", calls, op.backend)
				}
				c := calls[0]
				if c.method != op.backend || !sameRecord(c.r, want) || c.ctxVal != op.name {
					t.Errorf("backend got %s(%+v) (ctx %v), want %s(%+v) (ctx %s)", c.method, c.r, c.ctxVal, op.backend, want, op.name)
				}
			})
		}
	}
}

// TestTXTConcurrent presents, waits for and removes the records of a
// wildcard and its base name at once, as an order does.
func TestTXTConcurrent(t *testing.T) {
	rec := &fakeRecords{}
	s, err := solve.NewTXT(solve.TXTOptions{Challenge: solve.DNSAccount01, Records: rec})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	const n = 8
	for i := range n {
		id := "example.org"
		if i%2 == 1 {
			id = "*.example.org"
		}
		ch := solve.Challenge{Type: solve.DNSAccount01, Identifier: dnsID(id), KeyAuthorization: fmt.Sprint("ka", i), AccountURL: exampleAccount}
		wg.Go(func() {
			for _, op := range txtOps {
				if err := op.call(s, context.Background(), ch); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	calls := rec.got()
	if len(calls) != n*len(txtOps) {
		t.Fatalf("%d backend calls, want %d", len(calls), n*len(txtOps))
	}
	for _, c := range calls {
		if c.r.Name != "_"+exampleAccountLabel+"._acme-challenge.example.org." || c.r.Value != solve.TXTValue(c.r.Challenge.KeyAuthorization) {
			t.Errorf("%s(%+v)", c.method, c.r)
		}
	}
}

func TestTXTClose(t *testing.T) {
	s, err := solve.NewTXT(solve.TXTOptions{Records: &fakeRecords{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close over a backend that is no io.Closer = %v, want nil", err)
	}

	for _, closeErr := range []error{nil, errors.New("connection reset")} {
		rec := &closingRecords{closeErr: closeErr}
		s, err := solve.NewTXT(solve.TXTOptions{Records: rec})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); !errors.Is(err, closeErr) || (closeErr == nil) != (err == nil) {
			t.Errorf("Close = %v, want %v", err, closeErr)
		}
		if rec.closed != 1 {
			t.Errorf("the backend was closed %d times, want 1", rec.closed)
		}
		if calls := rec.got(); len(calls) != 0 {
			t.Errorf("Close called the backend: %+v", calls)
		}
	}
}
