package plan

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/router"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/acmedns"
	"github.com/detour-acme/detour/internal/solve/alpnforward"
	"github.com/detour-acme/detour/internal/solve/frontdoor"
	"github.com/detour-acme/detour/internal/solve/kinds"
	"github.com/detour-acme/detour/internal/solve/persist"
	"github.com/detour-acme/detour/internal/solve/sideport"
)

// More fields of InputError, for the commands below.
const (
	FieldServer   = "server"
	FieldFirewall = "firewall"
	FieldAddr     = "addr"
	FieldPath     = "path"
	FieldResolver = "resolver"
)

// AccountInput selects an ACME account: a CA and a contact.
type AccountInput struct {
	CA, CARoots, Email   string
	EABKeyID, EABHMACKey string
	AgreeTOS             bool
}

// AccountCA returns the renewal CA the account of in lives at.
func (p *Planner) AccountCA(in AccountInput) (renew.CA, error) {
	ca, err := config.ResolveCA(p.cfg, orDefault(in.CA, p.cfg.CA))
	if err != nil {
		return renew.CA{}, inputErr(FieldCA, err)
	}
	if in.CARoots != "" {
		ca.RootBundle = in.CARoots
	}
	if in.Email != "" {
		ca.Email = in.Email
	} else if ca.Email == "" {
		ca.Email = p.cfg.Email
	}
	if in.EABKeyID != "" {
		ca.EABKeyID, ca.EABHMACKey = in.EABKeyID, in.EABHMACKey
	}
	return p.CAClient(ca, false, in.AgreeTOS || p.cfg.AgreeTOS)
}

// RevokeInput says which certificate to revoke: Name's live certificate
// (signed with its own key), or Cert, signed with Key when given, else with
// the account at CA.
type RevokeInput struct {
	Name        string
	Cert        *x509.Certificate
	Key         crypto.Signer
	CA, CARoots string
	Reason      int
}

// Revoked describes a revoked certificate.
type Revoked struct {
	Label, Serial, CA string
	// Marked reports that the certificate's record now says it was
	// revoked: the next renewal replaces it at once.
	Marked bool
}

// ErrAlreadyRevoked is returned (wrapped) by Revoke for a certificate the
// CA has revoked already.
var ErrAlreadyRevoked = errors.New("already revoked")

// Revoke revokes a certificate at its CA (RFC 8555 §7.6).
func (p *Planner) Revoke(ctx context.Context, in RevokeInput) (Revoked, error) {
	cert, key := in.Cert, in.Key
	var ca config.CA
	if in.Name != "" {
		rec, err := p.shared.LoadRecord(ctx, in.Name)
		if err != nil {
			return Revoked{}, fmt.Errorf("no certificate named %q: %w", in.Name, err)
		}
		b, _, err := p.shared.LoadCertificate(ctx, in.Name)
		if err != nil {
			return Revoked{}, err
		}
		if cert, err = b.Leaf(); err != nil {
			return Revoked{}, err
		}
		if key, err = acme.DecodeKey(b.KeyPEM); err != nil {
			return Revoked{}, err
		}
		ca = config.CA{Name: rec.CAName, Directory: rec.CA, RootBundle: rec.RootBundle, Email: rec.Email}
	} else {
		var err error
		if ca, err = config.ResolveCA(p.cfg, orDefault(in.CA, p.cfg.CA)); err != nil {
			return Revoked{}, inputErr(FieldCA, err)
		}
		if ca.Email == "" {
			ca.Email = p.cfg.Email
		}
	}
	if in.CARoots != "" {
		ca.RootBundle = in.CARoots
	}
	rca, err := p.CAClient(ca, false, true)
	if err != nil {
		return Revoked{}, err
	}
	defer rca.Client.Close()
	out := Revoked{Label: CertLabel(cert), Serial: cert.SerialNumber.Text(16), CA: rca.Client.DirectoryURL()}
	var acct acme.Account
	if key == nil {
		if acct, err = p.Manager.Account(ctx, rca); err != nil {
			return out, err
		}
	}
	if err := rca.Client.Revoke(ctx, acct, cert, key, in.Reason); err != nil {
		if acme.IsProblem(err, "urn:ietf:params:acme:error:alreadyRevoked") {
			return out, fmt.Errorf("certificate %s (serial %s) is %w at %s; nothing to do", out.Label, out.Serial, ErrAlreadyRevoked, out.CA)
		}
		return out, err
	}
	if in.Name != "" {
		out.Marked = p.markRevoked(ctx, in.Name, out.Serial)
	}
	return out, nil
}

// markRevoked notes in name's record that its certificate (serial) was
// revoked, so that the next renewal step replaces it at once; it reports
// whether the record now says so.
func (p *Planner) markRevoked(ctx context.Context, name, serial string) bool {
	unlock, err := p.shared.Lock(ctx, name)
	if err != nil {
		p.log.Warn("could not note the revocation in the record", "certificate", name, "error", err)
		return false
	}
	defer unlock()
	rec, err := p.shared.LoadRecord(ctx, name)
	if err == nil && rec.Serial == serial {
		rec.Revoked = time.Now()
		err = p.shared.SaveRecord(ctx, rec)
	}
	if err != nil {
		p.log.Warn("could not note the revocation in the record", "certificate", name, "error", err)
		return false
	}
	return rec.Serial == serial
}

// CertLabel names a certificate in messages: its common name, else its
// first subject alternative name (CAs such as Let's Encrypt may leave the
// common name out).
func CertLabel(c *x509.Certificate) string {
	switch {
	case c.Subject.CommonName != "":
		return c.Subject.CommonName
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	case len(c.IPAddresses) > 0:
		return c.IPAddresses[0].String()
	}
	return "without a name"
}

// PersistUntil parses a persist_until date (RFC 3339 date or date-time)
// and requires it in the future, as the persist kind's setting does.
func PersistUntil(v string) (time.Time, error) { return persist.CheckUntil(v) }

// PersistInput asks for the standing dns-persist-01 record of Name.
type PersistInput struct {
	Account  AccountInput
	Name     string
	Wildcard bool
	Until    time.Time
	// Check asks every authoritative server whether the record is live.
	Check bool
}

// PersistRecord is the standing dns-persist-01 record of a name, and what
// the zone's servers answer for it.
type PersistRecord struct {
	// Covers says what the record authorizes, e.g. "example.com, *.example.com and every subdomain".
	Covers string
	// Draft names the draft of the CA ("draft-01"); Hashed reports that
	// the value hashes the account key (republish after a key rollover).
	Draft  string
	Hashed bool
	// CA is the directory URL; Issuers its issuer domain names, the one
	// the record names first.
	CA      string
	Issuers []string
	Account string
	Until   time.Time
	// Zone is the record in zone-file form.
	Zone string
	// Base is the name without a leading "*.".
	Base string
	// Checked reports that the servers were asked. Live reports that
	// every authoritative server answers the record; Servers names them;
	// Problems say what each server that does not answered; AskErr is why
	// they could not be asked; Expiring are the persistUntil dates the
	// published record names when they are near.
	Checked  bool
	Live     bool
	Servers  []string
	Problems []ServerProblem
	AskErr   error
	Expiring []time.Time
}

// ServerProblem is what one authoritative server answered wrong.
type ServerProblem struct{ Server, Problem string }

// Persist returns the standing dns-persist-01 record that lets the account
// of in.Account get certificates for in.Name with no DNS change at renewal
// (draft-ietf-acme-dns-persist), and with in.Check whether it is live.
func (p *Planner) Persist(ctx context.Context, in PersistInput) (PersistRecord, error) {
	id, err := ident.Parse(in.Name)
	if err != nil {
		return PersistRecord{}, inputErr(FieldDomains, err)
	}
	if id.Type != ident.TypeDNS {
		return PersistRecord{}, inputErr(FieldDomains, fmt.Errorf("%s is an IP address; dns-persist-01 validates DNS names only", id.Value))
	}
	wildcard := in.Wildcard || id.IsWildcard()
	ca, err := p.AccountCA(in.Account)
	if err != nil {
		return PersistRecord{}, err
	}
	defer ca.Client.Close()
	acct, err := p.Manager.Account(ctx, ca)
	if err != nil {
		return PersistRecord{}, err
	}
	tp, err := acme.Thumbprint(acct)
	if err != nil {
		return PersistRecord{}, err
	}
	b, err := persist.BindingFor(ctx, solve.CA{Directory: ca.Client.DirectoryURL(), RootBundle: ca.RootBundle}, solve.Account{URL: acct.Location, Thumbprint: tp})
	if err != nil {
		return PersistRecord{}, err
	}
	dc, err := persist.DNSClient(p.opts.Resolver, p.log)
	if err != nil {
		return PersistRecord{}, inputErr(FieldResolver, err)
	}
	policy := ""
	if wildcard {
		policy = persist.PolicyWildcard
	}
	s, err := persist.New(persist.Options{Logger: p.log, Policy: policy, PersistUntil: in.Until, Lookup: persist.DNSLookup{Client: dc},
		Binding: func(context.Context) (persist.Binding, error) { return b, nil }})
	if err != nil {
		return PersistRecord{}, err
	}
	params, err := s.Params(b, id)
	if err != nil {
		return PersistRecord{}, err
	}
	name, value := persist.Record(params)
	out := PersistRecord{
		Covers: id.Base(), Draft: b.Meta.Draft().String(), Hashed: b.Meta.Draft() == persist.Draft02,
		CA: ca.Client.DirectoryURL(), Issuers: b.Meta.Issuers(), Account: acct.Location, Until: in.Until,
		Zone: persist.ZoneLine(name, value), Base: id.Base(),
	}
	if wildcard {
		out.Covers += ", *." + id.Base() + " and every subdomain"
	}
	if !in.Check {
		return out, nil
	}
	out.Checked = true
	res, err := s.Verify(ctx, params, wildcard)
	var nle *persist.NotLiveError
	switch {
	case errors.As(err, &nle):
		out.AskErr = nle.Err
		for _, sp := range nle.Servers {
			out.Problems = append(out.Problems, ServerProblem{Server: sp.Server, Problem: sp.Problem})
		}
		return out, nil
	case err != nil:
		return out, err
	}
	out.Live, out.Servers, out.Expiring = true, res.Servers, res.Expiring
	return out, nil
}

// ACMEDNSInput asks for acme-dns accounts: the settings of the acme-dns
// path called Path (when set), overridden by the others.
type ACMEDNSInput struct {
	Path            string
	Server          string
	CredentialsFile string
	AllowFrom       []string
	Domains         []string
}

// ACMEDNSAccount is the account of one domain on an acme-dns server.
type ACMEDNSAccount struct {
	Domain  string
	Server  string
	Created bool
	// Record is the CNAME to create, in zone-file form.
	Record string
	// CNAME says whether it is in place: "" when it is, else what is wrong.
	CNAME string
	// InPlace reports the CNAME resolves to the account.
	InPlace bool
	// Err is why the domain failed.
	Err error
}

// ACMEDNS registers (or finds) an acme-dns account for each domain and
// says whether its CNAME is in place.
func (p *Planner) ACMEDNS(ctx context.Context, in ACMEDNSInput) ([]ACMEDNSAccount, error) {
	values := map[string]string{}
	if in.Path != "" {
		cp, err := p.cfg.Path(in.Path)
		if err != nil {
			return nil, inputErr(FieldPath, err)
		}
		if cp.Kind != acmedns.Kind {
			return nil, inputErr(FieldPath, fmt.Errorf("%s is of kind %q, not %q", in.Path, cp.Kind, acmedns.Kind))
		}
		values = maps.Clone(cp.Settings)
	}
	if in.Server != "" {
		values["server"] = in.Server
	}
	if in.CredentialsFile != "" {
		values["credentials_file"] = in.CredentialsFile
	}
	if len(in.AllowFrom) > 0 {
		values["allow_from"] = strings.Join(in.AllowFrom, ",")
	}
	if values["server"] == "" {
		return nil, inputErr(FieldServer, errors.New("the acme-dns server's URL is required (or an acme-dns path of the config that names it)"))
	}
	spec, _ := kinds.Lookup(acmedns.Kind)
	values = spec.WithDefaults(values)
	opts, err := acmedns.OptionsFrom(solve.NewSettings(in.Path, acmedns.Kind, values), solve.Env{Logger: p.log, Store: p.Store, Resolver: p.opts.Resolver})
	if err != nil {
		return nil, err
	}
	s, err := acmedns.New(opts)
	if err != nil {
		return nil, err
	}
	var out []ACMEDNSAccount
	for _, d := range in.Domains {
		r := ACMEDNSAccount{Domain: d, Server: opts.Server}
		id, err := ident.Parse(d)
		if err == nil && id.Type != ident.TypeDNS {
			err = errors.New("acme-dns validates DNS names only, not IP addresses")
		}
		if err != nil {
			r.Err = err
			out = append(out, r)
			continue
		}
		r.Domain = id.Base()
		acct, created, err := s.Account(ctx, r.Domain)
		if err != nil {
			r.Err = err
			out = append(out, r)
			continue
		}
		r.Created, r.Record = created, acct.CNAMERecord(r.Domain)
		var cerr *acmedns.CNAMEError
		switch err := s.Check(ctx, id); {
		case err == nil:
			r.InPlace = true
		case errors.As(err, &cerr) && cerr.Err == nil && cerr.Found == "":
			r.CNAME = "the CNAME does not resolve yet"
		default:
			r.CNAME = err.Error()
		}
		out = append(out, r)
	}
	return out, nil
}

// Snippets the configuration can point at.
const (
	SnippetHTTP    = "http"
	SnippetTLSALPN = "tls-alpn"
)

// SnippetAddr returns the address a snippet's forward points at: the only
// path of the configuration of the snippet's kind, else the kind's default.
func (p *Planner) SnippetAddr(snippet string) (string, error) {
	kind, def := sideport.Kind, sideport.DefaultAddr
	if snippet == SnippetTLSALPN {
		kind, def = alpnforward.Kind, alpnforward.DefaultAddr
	}
	var found []config.Path
	for _, n := range slices.Sorted(maps.Keys(p.cfg.Paths)) {
		if cp := p.cfg.Paths[n]; cp.Kind == kind {
			found = append(found, cp)
		}
	}
	switch len(found) {
	case 0:
		return def, nil
	case 1:
		return found[0].Setting("listen"), nil
	}
	return "", inputErr(FieldAddr, fmt.Errorf("the config has %d %s paths; choose one", len(found), kind))
}

// FrontDoor returns the router's answerer of tls-alpn-01: the challenges
// front-door paths put in the state directory.
func (p *Planner) FrontDoor() router.ACMEResponder { return frontdoor.NewResponder(p.Store, p.log) }

// RouterTable builds the router's table from rc, the [router] table with
// the command line's changes.
func RouterTable(rc config.Router) (*router.Table, error) {
	var routes []router.Route
	for _, r := range rc.Routes {
		routes = append(routes, router.Route{SNI: r.SNI, Backend: r.Backend, ProxyProtocol: r.ProxyProtocol || rc.ProxyProtocol})
	}
	if rc.Backend != "" {
		routes = append(routes, router.Route{Backend: rc.Backend, ProxyProtocol: rc.ProxyProtocol})
	}
	if len(routes) == 0 {
		return nil, inputErr("backend", errors.New("no backend: give the address your HTTPS server listens on now (e.g. 127.0.0.1:8443), or set backend in the [router] table"))
	}
	return router.NewTable(routes)
}
