package dns_test

import (
	"context"
	"encoding/hex"
	"errors"
	"net"
	"regexp"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/detour-acme/detour/internal/dns"
)

// The key of the TSIG tests, and a secret that is not its own.
const (
	tsigKey     = "detour-key."
	tsigSecret  = "ZGV0b3VyLXRlc3Qtc2VjcmV0LTMyLW9jdGV0cy0tLS0=" // 32 octets
	wrongSecret = "b3RoZXItc2VjcmV0LW9mLTMyLW9jdGV0cy0tLS0tLS0=" // 32 octets
)

// tsigResponder answers RFC 2136 updates the way a misbehaving or
// misconfigured server might:
//
//	good            NOERROR, signed with the key (after checking the update's signature)
//	wrong-secret    NOERROR, signed with another secret under the key's name
//	unsigned        NOERROR without a TSIG
//	nxrrset         NXRRSET without a TSIG
//	badtime         NOTAUTH/BADTIME, signed, the server's time in Other Data
//	badtime-bare    NOTAUTH/BADTIME, signed, without the server's time
//	late-signature  NOERROR, signed with the key at a time outside the fudge
//	badsig          NOTAUTH/BADSIG, MAC empty, as BIND answers a wrong secret
type tsigResponder struct {
	mode string
	skew time.Duration // how far the server's clock is ahead
}

func (f tsigResponder) ServeDNS(w mdns.ResponseWriter, r *mdns.Msg) {
	m := new(mdns.Msg)
	m.SetReply(r)
	req := r.IsTsig()
	serverNow := time.Now().Add(f.skew).Unix()
	// sign adds a TSIG that the mdns.Server signs with its secret (unless
	// the error is BADSIG or BADKEY, RFC 8945 §5.3.2).
	sign := func(tsigErr uint16, timeSigned int64, otherData []byte) {
		m.SetTsig(tsigKey, mdns.HmacSHA256, 300, timeSigned)
		t := m.Extra[len(m.Extra)-1].(*mdns.TSIG)
		t.Error = tsigErr
		t.OtherLen = uint16(len(otherData))
		t.OtherData = hex.EncodeToString(otherData)
	}
	switch f.mode {
	case "good":
		if req == nil || w.TsigStatus() != nil {
			m.Rcode = mdns.RcodeNotAuth
			sign(mdns.RcodeBadSig, int64(req.TimeSigned), nil)
			break
		}
		sign(0, serverNow, nil)
	case "wrong-secret":
		sign(0, serverNow, nil) // w.TsigStatus() is ErrSig: ignored
	case "unsigned":
	case "nxrrset":
		m.Rcode = mdns.RcodeNXRrset
	case "badtime", "badtime-bare":
		m.Rcode = mdns.RcodeNotAuth
		var other []byte
		if f.mode == "badtime" {
			other = []byte{byte(serverNow >> 40), byte(serverNow >> 32), byte(serverNow >> 24), byte(serverNow >> 16), byte(serverNow >> 8), byte(serverNow)}
		}
		sign(mdns.RcodeBadTime, int64(req.TimeSigned), other) // RFC 8945 §5.2.3
	case "late-signature":
		sign(0, serverNow, nil)
	case "badsig":
		m.Rcode = mdns.RcodeNotAuth
		sign(mdns.RcodeBadSig, int64(req.TimeSigned), nil)
	}
	_ = w.WriteMsg(m)
}

// serveTSIG starts a tsigResponder over TCP on 127.0.0.1:0 whose server
// signs with secret, and returns its address.
func serveTSIG(t *testing.T, r tsigResponder, secret string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	srv := &mdns.Server{Listener: ln, Handler: r, TsigSecret: map[string]string{tsigKey: secret},
		MsgAcceptFunc:     func(mdns.Header) mdns.MsgAcceptAction { return mdns.MsgAccept }, // UPDATE too
		NotifyStartedFunc: func() { close(started) }}
	go func() { _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown() })
	return ln.Addr().String()
}

// TestUpdateTSIGAnswers: an answer that is not signed by the key, or a
// BADTIME refusal, fails every kind of update with a message that says what
// is wrong and what to do; a well-signed answer passes.
func TestUpdateTSIGAnswers(t *testing.T) {
	const zone = "example.test."
	rec := dns.TXT{Zone: zone, Name: "_acme-challenge.example.test.", Value: "v", TTL: 60}
	ops := map[string]func(context.Context, *dns.Updater, string) error{
		"AddTXT":    func(ctx context.Context, u *dns.Updater, s string) error { return u.AddTXT(ctx, s, rec) },
		"RemoveTXT": func(ctx context.Context, u *dns.Updater, s string) error { return u.RemoveTXT(ctx, s, rec) },
		"Probe":     func(ctx context.Context, u *dns.Updater, s string) error { return u.Probe(ctx, s, zone) },
	}
	tests := []struct {
		name    string
		r       tsigResponder
		secret  string   // the responder's
		ops     []string // nil: all
		wantErr string   // a regexp; "" for success
		check   func(*testing.T, *dns.UpdateError)
	}{
		{name: "well signed", r: tsigResponder{mode: "good"}, secret: tsigSecret},
		{
			name: "answer signed with another secret", r: tsigResponder{mode: "wrong-secret"}, secret: wrongSecret,
			wantErr: `does not carry a valid TSIG signature of key "detour-key" \(dns: bad signature\), so it cannot be trusted and the update may or may not have been applied; ` +
				`the key's secret differs between detour \(tsig_secret\) and the server \(the key statement in named.conf\)`,
			check: func(t *testing.T, e *dns.UpdateError) {
				if !errors.Is(e, mdns.ErrSig) {
					t.Errorf("Verify = %v, want mdns.ErrSig", e.Verify)
				}
			},
		},
		{
			name: "unsigned answer", r: tsigResponder{mode: "unsigned"}, secret: tsigSecret,
			wantErr: `carries no TSIG signature although the update was signed with key "detour-key", so it cannot be trusted .*declare key "detour-key" on the server and require it`,
		},
		{
			name: "unsigned NXRRSET to a removal", r: tsigResponder{mode: "nxrrset"}, secret: tsigSecret, ops: []string{"RemoveTXT"},
			wantErr: `carries no TSIG signature although the update was signed`,
		},
		{
			name: "BADTIME, the server's clock ahead", r: tsigResponder{mode: "badtime", skew: 1000 * time.Second}, secret: tsigSecret,
			wantErr: `the server refused the update: the server's clock is 16m(39|40|41)s ahead of this host's, more than the 5 minutes TSIG allows \(NOTAUTH/BADTIME\); fix the time with NTP`,
			check: func(t *testing.T, e *dns.UpdateError) {
				if e.TSIGError != mdns.RcodeBadTime {
					t.Errorf("TSIGError %d, want BADTIME", e.TSIGError)
				}
			},
		},
		{
			name: "BADTIME, the server's clock behind", r: tsigResponder{mode: "badtime", skew: -2 * time.Hour}, secret: tsigSecret,
			wantErr: `the server's clock is (1h59m59s|2h0m0s|2h0m1s) behind this host's, more than the 5 minutes TSIG allows \(NOTAUTH/BADTIME\)`,
		},
		{
			name: "BADTIME without the server's time", r: tsigResponder{mode: "badtime-bare", skew: time.Hour}, secret: tsigSecret, ops: []string{"AddTXT"},
			wantErr: `this host's clock and the server's differ by more than 5 minutes \(NOTAUTH/BADTIME\); fix the time with NTP`,
		},
		{
			name: "answer signed outside the fudge", r: tsigResponder{mode: "late-signature", skew: 1000 * time.Second}, secret: tsigSecret,
			wantErr: `is signed at a time 16m(39|40|41)s ahead of this host's clock, more than the 5 minutes TSIG allows, so it cannot be trusted`,
			check: func(t *testing.T, e *dns.UpdateError) {
				if !errors.Is(e, mdns.ErrTime) {
					t.Errorf("Verify = %v, want mdns.ErrTime", e.Verify)
				}
			},
		},
		{
			name: "BADSIG", r: tsigResponder{mode: "badsig"}, secret: tsigSecret, ops: []string{"Probe"},
			wantErr: `wrong TSIG key name or secret for zone example.test \(NOTAUTH/BADSIG\); check tsig_key and tsig_secret against the key in named.conf`,
		},
	}
	u, err := dns.NewUpdater(dns.UpdaterOptions{Key: &dns.TSIGKey{Name: tsigKey, Secret: tsigSecret}, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := serveTSIG(t, tt.r, tt.secret)
			names := tt.ops
			if names == nil {
				names = []string{"AddTXT", "RemoveTXT", "Probe"}
			}
			for _, op := range names {
				err := ops[op](t.Context(), u, addr)
				if tt.wantErr == "" {
					if err != nil {
						t.Errorf("%s: %v", op, err)
					}
					continue
				}
				if err == nil {
					t.Errorf("%s accepted the answer, want an error matching %q", op, tt.wantErr)
					continue
				}
				if !regexp.MustCompile(tt.wantErr).MatchString(err.Error()) {
					t.Errorf("%s: %v\nwant an error matching %q", op, err, tt.wantErr)
				}
				var ue *dns.UpdateError
				if !errors.As(err, &ue) {
					t.Errorf("%s: %v is not an *UpdateError", op, err)
					continue
				}
				if tt.check != nil {
					tt.check(t, ue)
				}
			}
		})
	}
}
