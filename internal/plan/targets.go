package plan

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/kinds"
	"github.com/detour-acme/detour/internal/solve/webroot"
	"github.com/detour-acme/detour/internal/store"
)

// ErrNoCertificates is returned by Targets when there is nothing to renew.
var ErrNoCertificates = errors.New("no certificates yet: issue one with `detour issue -d NAME`")

// Renewal is one certificate to run the renewal step for: its target,
// and its record as read when planned (nil: none yet), which saves the
// step reading it again when it runs at once.
type Renewal struct {
	Target renew.Target
	Record *store.Record
	// Broken is the unreadable record of a certificate issued with flags
	// (one of the configuration gets its record rebuilt instead).
	Broken *store.BrokenRecord
}

// Renewals returns a renewal for every certificate of the configuration,
// then every certificate issued with flags (known from its record), or
// only those named. A name that is neither is an error.
func (p *Planner) Renewals(ctx context.Context, names []string, opt RequestOptions) ([]Renewal, error) {
	scan, err := p.shared.ScanRecords(ctx)
	if err != nil {
		return nil, err
	}
	for _, file := range scan.Ignored {
		p.log.WarnContext(ctx, "ignoring a file in renewal/ that is not a certificate record", "file", file)
	}
	configured := make(map[string]config.Certificate, len(p.cfg.Certificates))
	var all []string
	for _, c := range p.cfg.Certificates {
		configured[c.Name] = c
		all = append(all, c.Name)
	}
	byName := make(map[string]*store.Record, len(scan.Records))
	for i := range scan.Records {
		byName[scan.Records[i].Name] = &scan.Records[i]
	}
	broken := map[string]*store.BrokenRecord{}
	for i, b := range scan.Broken {
		if c, ok := configured[b.Name]; ok {
			// The configuration describes the certificate: the record
			// can be written again from it and the live files.
			if rec, err := p.repair(ctx, c); err != nil {
				p.log.ErrorContext(ctx, "a certificate record cannot be read, nor rebuilt", "certificate", b.Name, "file", b.File, "error", b.Err, "rebuild_error", err)
			} else if rec != nil {
				byName[b.Name] = rec
			}
			continue
		}
		broken[b.Name] = &scan.Broken[i]
		p.log.ErrorContext(ctx, "a certificate record cannot be read; this certificate is not renewed until it is restored or issued again",
			"certificate", b.Name, "file", b.File, "error", b.Err)
	}
	for _, r := range scan.Records {
		if _, ok := configured[r.Name]; !ok {
			all = append(all, r.Name)
		}
	}
	for _, b := range scan.Broken {
		if broken[b.Name] != nil {
			all = append(all, b.Name)
		}
	}
	if len(names) == 0 {
		names = all
	}
	var out []Renewal
	for _, n := range names {
		rec := byName[n]
		if c, ok := configured[n]; ok {
			t, err := p.ConfigTarget(c, opt)
			if err != nil {
				return nil, err
			}
			out = append(out, Renewal{Target: t, Record: rec})
			continue
		}
		if b := broken[n]; b != nil {
			out = append(out, Renewal{Target: renew.Target{Name: n, CAs: []string{"?"}, Request: func(ctx context.Context, i int) (renew.Request, func(), error) {
				// Restored since (the agent keeps trying): renew from it.
				if rec, err := p.shared.LoadRecord(ctx, n); err == nil {
					return p.RecordTarget(rec, opt).Request(ctx, i)
				}
				return renew.Request{}, nil, BrokenRecordError{b}
			}}, Broken: b})
			continue
		}
		if rec == nil {
			return nil, fmt.Errorf("no certificate named %q: `detour list` shows the known ones", n)
		}
		out = append(out, Renewal{Target: p.RecordTarget(*rec, opt), Record: rec})
	}
	if len(out) == 0 {
		return nil, ErrNoCertificates
	}
	return out, nil
}

// BrokenRecordError is a certificate issued with flags whose record, the
// only description of it, cannot be read.
type BrokenRecordError struct{ Record *store.BrokenRecord }

func (e BrokenRecordError) Error() string {
	return fmt.Sprintf("its record %s cannot be read (%v); it was issued with flags and the record is the only description of it: "+
		"restore the file from a backup, or issue the certificate again with `detour issue -d ...` (live/%s is untouched meanwhile)",
		e.Record.File, e.Record.Err, e.Record.Name)
}

// repair rebuilds the unreadable record of certificate c of the
// configuration (see renew.Manager.RebuildRecord) and returns the new
// record, nil when there is no live certificate to build it from.
func (p *Planner) repair(ctx context.Context, c config.Certificate) (*store.Record, error) {
	t, err := p.ConfigTarget(c, RequestOptions{})
	if err != nil {
		return nil, err
	}
	req, release, err := t.Request(ctx, 0)
	if err != nil {
		return nil, err
	}
	defer release()
	if _, err := p.Manager.RebuildRecord(ctx, req); err != nil {
		return nil, err
	}
	rec, err := p.shared.LoadRecord(ctx, c.Name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	return &rec, err
}

// Targets returns the targets of Renewals, for the agent, which reads
// each record afresh when it renews.
func (p *Planner) Targets(ctx context.Context, names []string, opt RequestOptions) ([]renew.Target, error) {
	rs, err := p.Renewals(ctx, names, opt)
	if err != nil {
		return nil, err
	}
	out := make([]renew.Target, len(rs))
	for i, r := range rs {
		out[i] = r.Target
	}
	return out, nil
}

// Configured returns the targets of the configuration's certificates
// called names (all of them when none is named), for `detour issue`.
func (p *Planner) Configured(names []string, opt RequestOptions) ([]renew.Target, error) {
	var certs []config.Certificate
	if len(names) == 0 {
		certs = p.cfg.Certificates
		if len(certs) == 0 {
			return nil, fmt.Errorf("%s lists no [[certificate]]; add one, or issue a one-off with -d NAME", p.cfg.File)
		}
	}
	for _, n := range names {
		c, err := p.cfg.Certificate(n)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	out := make([]renew.Target, 0, len(certs))
	for _, c := range certs {
		t, err := p.ConfigTarget(c, opt)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// OneOff describes a certificate given on the command line (detour issue
// -d). Empty fields take the configuration's values, then the defaults.
type OneOff struct {
	Domains              []string
	Name                 string
	CA, CARoots, Email   string
	EABKeyID, EABHMACKey string
	KeyType, Profile     string
	PreferredChain       string
	Paths                []string
	HTTPAddr, TLSAddr    string // listen addresses of the built-in http-01 and tls-alpn-01 paths
	DNSAddr              string // listen address of the built-in DNS path
	Challenge            string // the challenge of the listed built-in paths that can answer it
	Webroot              string // adds a webroot path, first unless Paths lists "webroot"
	DeployHook           string
}

// Fields of OneOff, as InputError names them.
const (
	FieldDomains   = "domains"
	FieldName      = "name"
	FieldCA        = "ca"
	FieldKeyType   = "key-type"
	FieldPaths     = "paths"
	FieldEAB       = "eab"
	FieldWebroot   = "webroot"
	FieldChallenge = "challenge"
)

// InputError is a mistake in a OneOff (the command line): Field says which.
type InputError struct {
	Field string
	Err   error
}

func (e *InputError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

func inputErr(field string, err error) error { return &InputError{Field: field, Err: err} }

// OneOff returns the target of a certificate given on the command line. A
// private copy of the configuration carries what the flags override.
func (p *Planner) OneOff(in OneOff, opt RequestOptions) (renew.Target, error) {
	ids, err := ident.ParseAll(in.Domains)
	if err != nil {
		return renew.Target{}, inputErr(FieldDomains, err)
	}
	name := in.Name
	if name == "" {
		name = config.DefaultName(ids[0])
	}
	if err := store.ValidName(name); err != nil {
		return renew.Target{}, inputErr(FieldName, err)
	}
	if in.Challenge != "" && !slices.Contains(solve.Types(), in.Challenge) {
		return renew.Target{}, inputErr(FieldChallenge, fmt.Errorf("%q is not a challenge type; use one of %s", in.Challenge, strings.Join(solve.Types(), ", ")))
	}
	if in.KeyType != "" {
		if _, err := acme.ParseKeyType(in.KeyType); err != nil {
			return renew.Target{}, inputErr(FieldKeyType, err)
		}
	}
	paths := in.Paths
	if in.Webroot != "" && !slices.Contains(paths, webroot.Kind) {
		paths = append([]string{webroot.Kind}, paths...)
	}
	if len(paths) == 0 {
		paths = config.DefaultPaths
	}
	c := config.Certificate{
		Name: name, Domains: in.Domains, Identifiers: ids, KeyType: in.KeyType,
		Profile: in.Profile, PreferredChain: in.PreferredChain, Paths: paths,
		SelfCheck: true, DeployHook: in.DeployHook,
	}
	local := *p.cfg
	local.Paths = maps.Clone(p.cfg.Paths)
	if local.Paths == nil {
		local.Paths = map[string]config.Path{}
	}
	local.CAs = maps.Clone(p.cfg.CAs)
	if local.CAs == nil {
		local.CAs = map[string]config.CA{}
	}
	if in.Email != "" {
		local.Email = in.Email
	}
	caRef := orDefault(in.CA, p.cfg.CA)
	ca, err := config.ResolveCA(p.cfg, caRef)
	if err != nil {
		return renew.Target{}, inputErr(FieldCA, err)
	}
	if in.CARoots != "" {
		ca.RootBundle = in.CARoots
	}
	if in.EABKeyID != "" || in.EABHMACKey != "" {
		if in.EABKeyID == "" || in.EABHMACKey == "" {
			return renew.Target{}, inputErr(FieldEAB, errors.New("the key ID and the HMAC key go together: give both"))
		}
		ca.EABKeyID, ca.EABHMACKey = in.EABKeyID, in.EABHMACKey
	}
	if in.Email != "" {
		ca.Email = in.Email
	}
	// The resolved CA goes under a private name so that the flags win.
	ca.Name = "(command line)"
	if caRef != "" && !strings.Contains(caRef, "://") {
		ca.Name = caRef
	}
	local.CAs[ca.Name] = ca
	c.CA = ca.Name
	if in.Webroot != "" {
		root, err := filepath.Abs(in.Webroot)
		if err != nil {
			return renew.Target{}, inputErr(FieldWebroot, err)
		}
		spec, _ := kinds.Lookup(webroot.Kind)
		local.Paths[webroot.Kind] = config.Path{Name: webroot.Kind, Kind: webroot.Kind, Settings: spec.WithDefaults(map[string]string{"root": root})}
	}
	answered := false
	for _, n := range c.Paths {
		cp, err := local.Path(n)
		if err != nil {
			return renew.Target{}, inputErr(FieldPaths, err)
		}
		if _, configured := local.Paths[n]; configured {
			answered = answered || cp.Challenge() == in.Challenge
			continue
		}
		// A built-in path: the flags choose its challenge and address.
		spec, _ := kinds.Lookup(cp.Kind)
		values := maps.Clone(cp.Settings)
		if in.Challenge != "" && slices.Contains(spec.Challenges, in.Challenge) {
			values = spec.WithDefaults(map[string]string{solve.KeyChallenge: in.Challenge})
		}
		if _, ok := spec.Setting("listen"); ok {
			switch ch := values[solve.KeyChallenge]; {
			case ch == solve.HTTP01:
				values["listen"] = orDefault(in.HTTPAddr, values["listen"])
			case ch == solve.TLSALPN01:
				values["listen"] = orDefault(in.TLSAddr, values["listen"])
			case solve.IsDNS(ch):
				values["listen"] = orDefault(in.DNSAddr, values["listen"])
			}
		}
		answered = answered || values[solve.KeyChallenge] == in.Challenge
		local.Paths[n] = config.Path{Name: n, Kind: cp.Kind, Settings: values}
	}
	if in.Challenge != "" && !answered {
		return renew.Target{}, inputErr(FieldChallenge, fmt.Errorf("none of the paths %s answers %s; list one that does (kinds answering it: %s)",
			strings.Join(c.Paths, ", "), in.Challenge, strings.Join(kinds.Answering(in.Challenge), ", ")))
	}
	return p.with(&local).ConfigTarget(c, opt)
}
