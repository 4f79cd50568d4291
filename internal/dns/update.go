package dns

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	mdns "github.com/miekg/dns"
)

// TSIG algorithms accepted for updates (RFC 8945 §6). HMAC-MD5 and HMAC-SHA1
// are left out on purpose.
var tsigAlgorithms = map[string]string{
	"hmac-sha256": mdns.HmacSHA256,
	"hmac-sha384": mdns.HmacSHA384,
	"hmac-sha512": mdns.HmacSHA512,
}

// DefaultTSIGAlgorithm is the algorithm of a TSIGKey that names none.
const DefaultTSIGAlgorithm = "hmac-sha256"

// DefaultUpdateTimeout bounds one update exchange.
const DefaultUpdateTimeout = 10 * time.Second

// TSIGKey is a shared secret that signs updates (RFC 8945), as declared in
// the server's configuration (a key "NAME" { algorithm ...; secret ...; }
// statement in BIND's named.conf).
type TSIGKey struct {
	// Name is the key's name, e.g. "detour-key".
	Name string
	// Algorithm is "hmac-sha256" (default), "hmac-sha384" or "hmac-sha512".
	Algorithm string
	// Secret is the key in base64, as in named.conf.
	Secret string
}

// Validate reports what is wrong with k, in terms of what to change.
func (k TSIGKey) Validate() error {
	if strings.TrimSpace(k.Name) == "" {
		return errors.New("the TSIG key has no name; set tsig_key to the key's name in the server's configuration")
	}
	if _, ok := mdns.IsDomainName(k.Name); !ok {
		return fmt.Errorf("TSIG key name %q is not a valid DNS name; use the name of the key in the server's configuration", k.Name)
	}
	if _, err := TSIGAlgorithm(k.Algorithm); err != nil {
		return err
	}
	if k.Secret == "" {
		return errors.New("the TSIG secret is empty; set tsig_secret (or tsig_secret_file) to the key's base64 secret")
	}
	if _, err := base64.StdEncoding.DecodeString(k.Secret); err != nil {
		return fmt.Errorf("the TSIG secret is not valid base64 (%v); copy the secret string from the key statement, e.g. of `tsig-keygen`", err)
	}
	return nil
}

// TSIGAlgorithm returns the wire name of a TSIG algorithm given as
// "hmac-sha256" (any case, optional trailing dot); "" means the default.
func TSIGAlgorithm(name string) (string, error) {
	if name == "" {
		name = DefaultTSIGAlgorithm
	}
	if a, ok := tsigAlgorithms[strings.TrimSuffix(strings.ToLower(name), ".")]; ok {
		return a, nil
	}
	return "", fmt.Errorf("TSIG algorithm %q is not supported; use hmac-sha256, hmac-sha384 or hmac-sha512", name)
}

// UpdaterOptions configure an Updater.
type UpdaterOptions struct {
	// Logger receives one message per update; nil discards them.
	Logger *slog.Logger
	// Key signs the updates. Nil sends them unsigned, for servers that allow
	// updates by address.
	Key *TSIGKey
	// Timeout bounds one exchange. Default DefaultUpdateTimeout.
	Timeout time.Duration
}

// Updater changes TXT records with RFC 2136 dynamic updates, over TCP. It is
// safe for concurrent use.
type Updater struct {
	log     *slog.Logger
	key     *TSIGKey
	alg     string
	timeout time.Duration
}

// NewUpdater validates opts and returns an Updater.
func NewUpdater(opts UpdaterOptions) (*Updater, error) {
	u := &Updater{log: opts.Logger, timeout: opts.Timeout}
	if u.log == nil {
		u.log = slog.New(slog.DiscardHandler)
	}
	if u.timeout <= 0 {
		u.timeout = DefaultUpdateTimeout
	}
	if opts.Key != nil {
		if err := opts.Key.Validate(); err != nil {
			return nil, err
		}
		k := *opts.Key
		k.Name = mdns.CanonicalName(k.Name)
		u.key = &k
		u.alg, _ = TSIGAlgorithm(k.Algorithm)
	}
	return u, nil
}

// TXT is one TXT value of a zone.
type TXT struct {
	Zone  string // the zone apex, e.g. "example.com."
	Name  string // the owner name, e.g. "_acme-challenge.example.com."
	Value string
	TTL   uint32 // for AddTXT
}

func (t TXT) rr() *mdns.TXT {
	return &mdns.TXT{
		Hdr: mdns.RR_Header{Name: mdns.Fqdn(t.Name), Rrtype: mdns.TypeTXT, Class: mdns.ClassINET, Ttl: t.TTL},
		Txt: splitTXT(t.Value),
	}
}

// splitTXT cuts v into character-strings of at most 255 octets
// (RFC 1035 §3.3.14).
func splitTXT(v string) []string {
	var out []string
	for len(v) > 255 {
		out = append(out, v[:255])
		v = v[255:]
	}
	return append(out, v)
}

// AddTXT adds t's value to the TXT RRset at t.Name (RFC 2136 §2.5.1),
// keeping the values already there, on the server at host:port.
func (u *Updater) AddTXT(ctx context.Context, server string, t TXT) error {
	m := u.newUpdate(t.Zone)
	m.Insert([]mdns.RR{t.rr()})
	if err := u.send(ctx, server, t.Zone, m, false); err != nil {
		return fmt.Errorf("adding TXT %s: %w", t.Name, err)
	}
	u.log.InfoContext(ctx, "TXT record added", "name", t.Name, "zone", t.Zone, "server", server)
	return nil
}

// RemoveTXT removes exactly t's value from the TXT RRset at t.Name
// (RFC 2136 §2.5.4); other values stay. Removing a value that is not there
// is not an error.
func (u *Updater) RemoveTXT(ctx context.Context, server string, t TXT) error {
	m := u.newUpdate(t.Zone)
	m.Remove([]mdns.RR{t.rr()})
	if err := u.send(ctx, server, t.Zone, m, true); err != nil {
		return fmt.Errorf("removing TXT %s: %w", t.Name, err)
	}
	u.log.InfoContext(ctx, "TXT record removed", "name", t.Name, "zone", t.Zone, "server", server)
	return nil
}

// Probe sends a harmless update to the server: one prerequisite (the zone's
// SOA RRset exists, RFC 2136 §2.4.1) and no change. It proves that the
// server accepts the key and is authoritative for zone, without touching
// the zone.
func (u *Updater) Probe(ctx context.Context, server, zone string) error {
	m := u.newUpdate(zone)
	m.RRsetUsed([]mdns.RR{&mdns.SOA{Hdr: mdns.RR_Header{Name: mdns.Fqdn(zone), Rrtype: mdns.TypeSOA}}})
	if err := u.send(ctx, server, zone, m, false); err != nil {
		return fmt.Errorf("testing the update credentials: %w", err)
	}
	return nil
}

func (u *Updater) newUpdate(zone string) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetUpdate(mdns.Fqdn(zone))
	return m
}

// tsigFudge is the clock difference, in seconds, the TSIG of an update
// allows between this host and the server (the Fudge field; RFC 8945
// recommends 300).
const tsigFudge = 300

// send signs m, sends it over TCP and maps a failure to an *UpdateError.
//
// An answer that says the update was applied counts only when it is signed
// with the update's key and its signature verifies (RFC 8945 §5.4): an
// unsigned or badly signed NOERROR could be forged, so it is an error. A
// refusal fails the update whether it verifies or not.
func (u *Updater) send(ctx context.Context, server, zone string, m *mdns.Msg, deleting bool) error {
	c := &mdns.Client{Net: "tcp", Timeout: u.timeout}
	var sent int64
	if u.key != nil {
		sent = time.Now().Unix()
		m.SetTsig(u.key.Name, u.alg, tsigFudge, sent)
		c.TsigSecret = map[string]string{u.key.Name: u.key.Secret}
	}
	ctx, cancel := context.WithTimeout(ctx, u.timeout)
	defer cancel()
	r, _, err := c.ExchangeContext(ctx, m, server)
	received := time.Now()
	if r == nil {
		return fmt.Errorf("sending the update to %s: %w; check the server address (server = host:port) and that it accepts TCP", server, err)
	}
	t := r.IsTsig()
	if err != nil && (t == nil || errors.Is(err, mdns.ErrId)) {
		// Not a TSIG verification failure: the answer is malformed or not
		// the answer to this update.
		return fmt.Errorf("reading the answer of %s to the update: %w; the update may or may not have been applied, retry it", server, err)
	}
	ue := &UpdateError{Server: server, Zone: mdns.Fqdn(zone), Rcode: r.Rcode}
	if u.key != nil {
		ue.Key = strings.TrimSuffix(u.key.Name, ".")
	}
	if t != nil {
		ue.TSIGError = int(t.Error)
	}
	applied := ue.TSIGError == 0 && (r.Rcode == mdns.RcodeSuccess || deleting && r.Rcode == mdns.RcodeNXRrset)
	switch {
	case !applied:
		if ue.TSIGError == mdns.RcodeBadTime {
			ue.ClockSkew = badTimeSkew(t, sent, received)
		}
		return ue
	case u.key == nil:
		return nil
	case t == nil:
		ue.Unsigned = true
		return ue
	case err != nil:
		ue.Verify = err
		if errors.Is(err, mdns.ErrTime) {
			ue.ClockSkew = skew(t.TimeSigned, received)
		}
		return ue
	}
	return nil
}

// badTimeSkew is how far the server's clock is ahead of this host's, from
// a BADTIME answer: the Other Data holds the server's time (RFC 8945 §5.2.3);
// failing that, a Time Signed other than the update's own is the server's.
// 0 when the answer does not tell.
func badTimeSkew(t *mdns.TSIG, sent int64, received time.Time) time.Duration {
	if t.OtherLen == 6 {
		if b, err := hex.DecodeString(t.OtherData); err == nil && len(b) == 6 {
			var serverTime uint64
			for _, x := range b {
				serverTime = serverTime<<8 | uint64(x)
			}
			return skew(serverTime, received)
		}
	}
	if d := int64(t.TimeSigned) - sent; d > tsigFudge || d < -tsigFudge {
		return skew(t.TimeSigned, received)
	}
	return 0
}

// skew is how far the 48-bit TSIG time serverTime is ahead of received, to
// the second.
func skew(serverTime uint64, received time.Time) time.Duration {
	return time.Unix(int64(serverTime), 0).Sub(received).Round(time.Second)
}

// UpdateError is an update the server refused, or whose answer cannot be
// trusted.
type UpdateError struct {
	Server, Zone string
	Key          string // the TSIG key's name, "" for unsigned updates
	Rcode        int    // the DNS rcode, e.g. mdns.RcodeNotAuth
	TSIGError    int    // the TSIG error (BADSIG, BADKEY, BADTIME), 0 when none
	// Verify is set when the server answered that the update was applied
	// but the answer's TSIG did not verify (mdns.ErrSig, or mdns.ErrTime
	// when it was signed at a time too far from this host's clock).
	Verify error
	// Unsigned is set when the server answered a signed update that it was
	// applied, without signing the answer.
	Unsigned bool
	// ClockSkew is how far the server's clock is ahead of this host's
	// (negative: behind), when a BADTIME answer or a signature dated too
	// far away tells; 0 otherwise.
	ClockSkew time.Duration
}

func (e *UpdateError) codes() string {
	s := rcodeName(e.Rcode)
	if e.TSIGError != 0 {
		s += "/" + rcodeName(e.TSIGError)
	}
	return s
}

// untrusted ends the messages of an answer that cannot be trusted.
const untrusted = "so it cannot be trusted and the update may or may not have been applied"

// fixClock tells how to fix a clock difference.
const fixClock = "fix the time with NTP on whichever host is wrong (compare `timedatectl` or `chronyc tracking` on both)"

func (e *UpdateError) Error() string {
	zone := strings.TrimSuffix(e.Zone, ".")
	switch {
	case e.Unsigned:
		return fmt.Sprintf("the answer of %s to the update of zone %s carries no TSIG signature although the update was signed with key %q, %s (RFC 8945 §5.4); the server does not check TSIG (it may take updates from anyone) or something between answers in its place: declare key %q on the server and require it for the zone (allow-update { key \"%s\"; }; in named.conf), and send updates to the primary directly",
			e.Server, zone, e.Key, untrusted, e.Key, e.Key)
	case e.Verify != nil && errors.Is(e.Verify, mdns.ErrTime):
		return fmt.Sprintf("the answer of %s to the update of zone %s is signed at a time %s this host's clock, more than the %d minutes TSIG allows, %s; %s",
			e.Server, zone, aheadOrBehind(e.ClockSkew), tsigFudge/60, untrusted, fixClock)
	case e.Verify != nil:
		return fmt.Sprintf("the answer of %s to the update of zone %s does not carry a valid TSIG signature of key %q (%v), %s; the key's secret differs between detour (tsig_secret) and the server (the key statement in named.conf), or something between them alters the answers: make the secrets equal and send updates to the zone's primary directly",
			e.Server, zone, e.Key, e.Verify, untrusted)
	case e.TSIGError == mdns.RcodeBadSig || e.TSIGError == mdns.RcodeBadKey:
		return fmt.Sprintf("the server refused the update: wrong TSIG key name or secret for zone %s (%s); check tsig_key and tsig_secret against the key in named.conf", zone, e.codes())
	case e.TSIGError == mdns.RcodeBadTime && e.ClockSkew != 0:
		return fmt.Sprintf("the server refused the update: the server's clock is %s this host's, more than the %d minutes TSIG allows (%s); %s",
			aheadOrBehind(e.ClockSkew), tsigFudge/60, e.codes(), fixClock)
	case e.TSIGError == mdns.RcodeBadTime:
		return fmt.Sprintf("the server refused the update: this host's clock and the server's differ by more than %d minutes (%s); %s", tsigFudge/60, e.codes(), fixClock)
	case e.TSIGError != 0:
		return fmt.Sprintf("the server refused the update's signature for zone %s (%s); check tsig_algorithm, tsig_key and tsig_secret against the key in named.conf", zone, e.codes())
	case e.Rcode == mdns.RcodeNotAuth:
		return fmt.Sprintf("the server %s is not the primary of zone %s (%s); set server to the zone's primary, or zone to the zone it serves", e.Server, zone, e.codes())
	case e.Rcode == mdns.RcodeRefused && e.Key == "":
		return fmt.Sprintf("the server %s refused the unsigned update of zone %s (REFUSED); set tsig_key and tsig_secret, or allow this host in the zone's allow-update", e.Server, zone)
	case e.Rcode == mdns.RcodeRefused:
		return fmt.Sprintf("the server %s refused the update of zone %s (REFUSED): key %q may not update it; add allow-update { key \"%s\"; }; (or an update-policy grant) to the zone in named.conf", e.Server, zone, e.Key, e.Key)
	case e.Rcode == mdns.RcodeNotZone:
		return fmt.Sprintf("the record is outside zone %s (NOTZONE); set zone to the zone that holds it", zone)
	case e.Rcode == mdns.RcodeServerFailure:
		return fmt.Sprintf("the server %s failed to apply the update of zone %s (SERVFAIL); see its log (a zone file or journal it cannot write, for example)", e.Server, zone)
	}
	return fmt.Sprintf("the server %s refused the update of zone %s (%s)", e.Server, zone, e.codes())
}

// aheadOrBehind says how a time stands to another that is d earlier:
// "16m40s ahead of", "16m40s behind".
func aheadOrBehind(d time.Duration) string {
	if d < 0 {
		return (-d).String() + " behind"
	}
	return d.String() + " ahead of"
}

// Unwrap returns the verification error, if any.
func (e *UpdateError) Unwrap() error { return e.Verify }
