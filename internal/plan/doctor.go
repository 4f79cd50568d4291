package plan

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/doctor"
	"github.com/detour-acme/detour/internal/doctor/dnscheck"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/snippet"
	"github.com/detour-acme/detour/internal/solve/acmedns"
	"github.com/detour-acme/detour/internal/solve/dnsprovider"
	"github.com/detour-acme/detour/internal/solve/rfc2136"
)

// FieldTSIGKeyFile is doctor's --tsig-key-file flag.
const FieldTSIGKeyFile = "tsig-key-file"

// DoctorInput asks `detour doctor` about names.
type DoctorInput struct {
	// Names to diagnose; empty = every name of the configuration's
	// certificates.
	Names []string
	// CA overrides the configuration's default CA.
	CA string
	// TSIGKeyFiles are BIND key files to try RFC 2136 updates with,
	// besides the keys of the configuration's rfc2136 paths.
	TSIGKeyFiles []string
	// NoProbe skips the HTTP probes.
	NoProbe bool
}

// Doctor diagnoses the names: which path works on this host and why. It
// changes nothing (see package doctor).
func (p *Planner) Doctor(ctx context.Context, in DoctorInput) (doctor.Report, error) {
	names, cert, exists, err := p.doctorNames(in.Names)
	if err != nil {
		return doctor.Report{}, err
	}
	opts := doctor.Options{Names: names, Certificate: cert, CertificateExists: exists, ProviderPaths: map[string]string{}, TakenPaths: slices.Collect(maps.Keys(p.cfg.Paths)), HTTPPort: p.opts.CheckHTTPPort, TLSPort: p.opts.CheckTLSPort,
		Resolver: p.opts.Resolver, NoProbe: in.NoProbe, Logger: p.log, Snippet: doctorSnippet}
	if _, port, err := net.SplitHostPort(p.opts.Resolver); err == nil && port != "53" {
		// A rehearsal: the authoritative servers answer on the
		// resolver's port too (as for persist-record).
		opts.NSPort, _ = strconv.Atoi(port)
	}
	for _, f := range in.TSIGKeyFiles {
		keys, err := rfc2136.ReadKeyFile(f)
		if err != nil {
			return doctor.Report{}, inputErr(FieldTSIGKeyFile, err)
		}
		for _, k := range keys {
			opts.Keys = append(opts.Keys, dnscheck.TSIGKey{Name: k.Name, Algorithm: k.Algorithm, Secret: k.Secret, Source: f})
		}
	}
	for _, n := range slices.Sorted(maps.Keys(p.cfg.Paths)) {
		if p.cfg.Paths[n].Kind == "" {
			continue
		}
		cp := p.cfg.Paths[n]
		switch cp.Kind {
		case rfc2136.Kind:
			k, err := configKey(cp)
			if err != nil {
				return doctor.Report{}, err
			}
			if k.Secret != "" {
				opts.Keys = append(opts.Keys, k)
			}
		case dnsprovider.Kind:
			if pr, err := dnsprovider.Describe(cp.Settings["provider"]); err == nil {
				opts.ProviderPaths[pr.Name] = n
			}
		}
	}
	// The CA: --ca, else the certificate's own, else the default.
	caRef := orDefault(in.CA, p.cfg.CA)
	if c, err := p.cfg.Certificate(cert); exists && err == nil && in.CA == "" && c.CA != "" {
		caRef = c.CA
	}
	ca, err := config.ResolveCA(p.cfg, caRef)
	if err != nil {
		return doctor.Report{}, inputErr(FieldCA, err)
	}
	rca, err := p.CAClient(ca, false, false)
	if err != nil {
		return doctor.Report{}, inputErr(FieldCA, err)
	}
	defer rca.Client.Close()
	opts.CA = rca.Client
	if u := p.storedAccountURL(ctx, rca, orDefault(ca.Email, p.cfg.Email)); u != "" {
		opts.AccountURIs = []string{u}
	}
	opts.AcmeDNSServer = func(name string) string { return acmedns.Registered(ctx, p.Store, name) }
	return doctor.Run(ctx, opts), nil
}

// doctorNames returns the names to diagnose and the certificate of the
// recommendation: the configuration's certificate that has exactly these
// names (exists), else a new one named after the first name (or, when
// that name is taken, with "-doctor" added).
func (p *Planner) doctorNames(names []string) ([]string, string, bool, error) {
	if len(names) == 0 {
		for _, c := range p.cfg.Certificates {
			names = append(names, c.Domains...)
		}
		if len(names) == 0 {
			return nil, "", false, inputErr(FieldDomains, fmt.Errorf("no names to diagnose: give them (detour doctor example.com www.example.com) or add [[certificate]] entries to the configuration"))
		}
	}
	var out []string
	for _, n := range names {
		id, err := ident.Parse(n)
		if err != nil {
			return nil, "", false, inputErr(FieldDomains, err)
		}
		if !slices.Contains(out, id.Value) {
			out = append(out, id.Value)
		}
	}
	for _, c := range p.cfg.Certificates {
		var have []string
		for _, id := range c.Identifiers {
			have = append(have, id.Value)
		}
		if slices.Equal(slices.Sorted(slices.Values(have)), slices.Sorted(slices.Values(out))) {
			return out, c.Name, true, nil
		}
	}
	cert := out[0]
	if _, err := p.cfg.Certificate(cert); err == nil {
		cert += "-doctor"
	}
	return out, cert, false, nil
}

// configKey is the TSIG key of an rfc2136 path, with its secret (none
// when the path signs nothing). A secret file that cannot be read is an
// error naming it: doctor would otherwise say no key is known.
func configKey(cp config.Path) (dnscheck.TSIGKey, error) {
	s := cp.Settings
	if s["tsig_key"] == "" {
		return dnscheck.TSIGKey{}, nil
	}
	k := dnscheck.TSIGKey{Name: s["tsig_key"], Algorithm: strings.ToLower(orDefault(s["tsig_algorithm"], "hmac-sha256")), Secret: s["tsig_secret"],
		Source: "config path." + cp.Name}
	if f := s["tsig_secret_file"]; f != "" {
		raw, err := os.ReadFile(f)
		if err != nil {
			return k, fmt.Errorf("path %s: reading tsig_secret_file: %w; run doctor as a user who may read it (detour itself must)", cp.Name, err)
		}
		if k.Secret, err = rfc2136.SecretFromFile(f, string(raw), k.Name); err != nil {
			return k, fmt.Errorf("path %s: %w", cp.Name, err)
		}
	}
	return k, nil
}

// storedAccountURL is the URL of the account Detour holds at ca, "" when
// none: doctor never registers one.
func (p *Planner) storedAccountURL(ctx context.Context, ca renew.CA, email string) string {
	raw, err := p.Store.Load(ctx, renew.AccountKeyPrefix(ca.Client.Host(), email)+"/account.json")
	if err != nil {
		return ""
	}
	var meta struct {
		URL string `json:"url"`
	}
	if json.Unmarshal(raw, &meta) != nil {
		return ""
	}
	return meta.URL
}

// doctorSnippet is the configuration block a path needs in a server.
func doctorSnippet(kind, server, listen string) string {
	var s string
	var err error
	switch kind {
	case "http":
		if snippet.CheckServer(server, snippet.HTTPForwardServers()) != nil {
			return ""
		}
		s, err = snippet.HTTPForward(server, listen)
	case "tls-alpn":
		if snippet.CheckServer(server, snippet.TLSALPNForwardServers()) != nil {
			return ""
		}
		s, err = snippet.TLSALPNForward(server, listen)
	}
	if err != nil {
		return ""
	}
	return s
}

// DoctorStaging prepares `detour doctor --staging`: the configuration with
// the recommendation appended (its certificate renamed, so it never
// touches a configured one), and the dry-run target of that certificate at
// the CA's staging directory. A CA without a staging directory is refused:
// --staging never orders at the production CA.
func (p *Planner) DoctorStaging(rep doctor.Report, caRef string, agreeTOS bool) (*Planner, []renew.Target, error) {
	rec := rep.Recommendation
	if rec.TOML == "" || !rec.Ready {
		return nil, nil, fmt.Errorf("--staging orders through the recommended configuration, and there is none that works now: make the change above first")
	}
	ca, err := config.ResolveCA(p.cfg, orDefault(caRef, p.cfg.CA))
	if err != nil {
		return nil, nil, inputErr(FieldCA, err)
	}
	if ca.Staging == "" {
		return nil, nil, inputErr(FieldCA, fmt.Errorf("CA %s has no staging directory, and --staging never orders at the production CA; "+
			"give one (staging = \"...\" in its [ca.NAME] table) or use a CA that has one (letsencrypt, google, buypass)", ca.Name))
	}
	var base []byte
	if p.cfg.File != "" {
		if base, err = os.ReadFile(p.cfg.File); err != nil {
			return nil, nil, err
		}
	}
	const name = "doctor-staging"
	var names, paths []string
	noSelfCheck := false
	for _, n := range rep.Names {
		names = append(names, strconv.Quote(n.Name))
	}
	for _, c := range rec.Paths {
		paths = append(paths, strconv.Quote(c.Path))
		noSelfCheck = noSelfCheck || c.NoSelfCheck
	}
	text := rec.Tables + fmt.Sprintf("\n[[certificate]]\nname = %q\ndomains = [%s]\npaths = [%s]\n", name, strings.Join(names, ", "), strings.Join(paths, ", "))
	if noSelfCheck {
		text += "self_check = false\n"
	}
	if caRef != "" {
		text += "ca = " + strconv.Quote(caRef) + "\n"
	}
	file := p.cfg.File + " with doctor's recommendation"
	cfg, err := config.Parse(file, append(append(base, '\n'), text...))
	if err != nil {
		return nil, nil, fmt.Errorf("the recommendation does not load with the configuration: %w", err)
	}
	q := p.with(cfg)
	targets, err := q.Configured([]string{name}, RequestOptions{DryRun: true, AgreeTOS: agreeTOS || cfg.AgreeTOS})
	if err != nil {
		return nil, nil, err
	}
	return q, targets, nil
}
