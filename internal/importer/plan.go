package importer

import (
	"crypto/x509"
	"fmt"
	"maps"
	"net/url"
	"path/filepath"
	"slices"
	"strings"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/kinds"
	"github.com/detour-acme/detour/internal/store"
)

// PlanOptions are what the mapping needs from Detour's side.
type PlanOptions struct {
	// Config is the configuration: a [[certificate]] of the same name
	// renews the imported certificate with its own paths, and the import
	// names no path as a [path.NAME] table does. nil: none.
	Config *config.Config
	// StateDir is the absolute state directory the plan is applied to:
	// the files the import writes for paths (a TSIG secret) go under it.
	StateDir string
	// RootBundle is the PEM file of roots the renewals trust for the
	// CA's API (a private CA); "" takes the root_bundle of a [ca.NAME]
	// table with the same directory, if any.
	RootBundle string
	// Profile is the ACME profile the renewals of certificates that name
	// none ask for.
	Profile string
}

// ImportPlan is how a Source maps onto Detour: accounts, certificates and
// their paths, and what cannot be carried over.
type ImportPlan struct {
	// Client and Dir are the source's.
	Client, Dir string
	// StateDir is the state directory it is for.
	StateDir string
	// Accounts are the accounts to store, one per Detour account prefix.
	Accounts []*AccountPlan
	// Certificates are the source's certificates, in its order.
	Certificates []*CertPlan
	// Skipped are the source's Skipped.
	Skipped []string
	// Notes apply to the whole source (certbot's renewal-hooks/).
	Notes []Note
}

// AccountPlan is one account stored under one prefix of Detour's account
// storage (renew.AccountKeyPrefix), where renewals look it up.
type AccountPlan struct {
	*Account
	// Prefix is the storage prefix ("accounts/<ca-host>/<email or default>").
	Prefix string
	// Email is the contact the prefix is for.
	Email string
	// Certificates names the certificates renewed with it.
	Certificates []string
}

// CertPlan is the mapping of one certificate.
type CertPlan struct {
	// Name is the certificate's name in Detour; Source its name in the
	// source; File where its settings are.
	Name, Source, File string
	// Identifiers are its names, from the live certificate.
	Identifiers []string
	// Versions are the versions to store, in order: the live one last.
	Versions []Version
	// Account is the account it is renewed with.
	Account *AccountPlan
	// Record is the record to store; the fields of the live version
	// (Version, Serial, ARIID, dates) are set when it is applied.
	Record store.Record
	// Paths are the validation paths, with where each came from.
	Paths []MappedPath
	// Secrets are files the paths need, stored before the record.
	Secrets []Secret
	// Configured is set when a [[certificate]] of the configuration
	// renews it (with that entry's paths).
	Configured bool
	// Notes are settings that are not carried over.
	Notes []Note
	// Unmapped says why no path could be mapped; the certificate is then
	// not imported.
	Unmapped *Unmapped
	// Conflict says what in Detour's configuration keeps it from being
	// imported; Err why the source's certificate cannot be read.
	Conflict string
	Err      error
}

// MappedPath is a validation path and the source settings it comes from.
type MappedPath struct {
	Ref  store.PathRef
	From string
}

// Secret is a file of the state directory, mode 0600, a path reads.
type Secret struct {
	Key  string // the Storage key
	Data []byte
}

// Note is a setting the import does not carry over, or carries over
// with a difference, and what to do instead.
type Note struct {
	Setting    string // "key = value"
	Where      string // file:line
	Reason     string
	Suggestion string
}

// Unmapped is why a certificate has no path, and what to do.
type Unmapped struct {
	Reason, Suggestion string
}

// Plan maps src onto Detour. It reads nothing but src and opts.
func Plan(src Source, opts PlanOptions) ImportPlan {
	p := ImportPlan{Client: src.Client, Dir: src.Dir, StateDir: opts.StateDir, Skipped: src.Skipped}
	if src.Client == Certbot {
		p.Notes = certbotHookDirNotes(src.Dir)
	}
	m := mapper{opts: opts, plan: &p}
	for _, c := range src.Certificates {
		p.Certificates = append(p.Certificates, m.certificate(&src, c))
	}
	p.oneAccountPrefix()
	return p
}

// oneAccountPrefix keeps each account under one prefix where it can: a
// certificate renewed from its record looks the account up by the
// record's contact, which the import chooses, so it follows the prefix a
// certificate of the configuration needs (two copies of one account key
// would part ways at the first key rollover).
func (p *ImportPlan) oneAccountPrefix() {
	for _, target := range slices.Clone(p.Accounts) {
		if !slices.ContainsFunc(p.Certificates, func(cp *CertPlan) bool { return cp.Account == target && cp.Configured }) {
			continue
		}
		p.Accounts = slices.DeleteFunc(p.Accounts, func(ap *AccountPlan) bool {
			if ap == target || ap.Account != target.Account {
				return false
			}
			for _, cp := range p.Certificates {
				if cp.Account == ap && cp.Configured {
					return false // its configuration needs that prefix
				}
			}
			for _, cp := range p.Certificates {
				if cp.Account == ap {
					cp.Account, cp.Record.Email = target, target.Email
					target.Certificates = append(target.Certificates, cp.Name)
				}
			}
			return true
		})
	}
}

// mapper carries the state of one Plan.
type mapper struct {
	opts PlanOptions
	plan *ImportPlan
}

// certificate maps one certificate.
func (m *mapper) certificate(src *Source, c *Certificate) *CertPlan {
	cp := &CertPlan{Name: c.Name, Source: c.Name, File: c.File, Err: c.Err}
	if c.Err != nil {
		return cp
	}
	live := c.LiveVersion()
	ids, err := identifiers(live.Leaf)
	if err != nil {
		cp.Err = fmt.Errorf("%s: the live certificate's names: %w", live.File, err)
		return cp
	}
	cp.Identifiers = ident.Values(ids)
	if src.Client == Lego || store.ValidName(c.Name) != nil {
		cp.Name = config.DefaultName(ids[0])
	}
	for _, v := range c.Versions {
		if v.Err != nil {
			cp.Notes = append(cp.Notes, Note{Setting: fmt.Sprintf("version %d", v.N), Where: v.File,
				Reason: fmt.Sprintf("cannot be read (%v); left out, the other versions are imported", v.Err)})
			continue
		}
		if v.N != c.Live {
			cp.Versions = append(cp.Versions, v)
		}
	}
	cp.Versions = append(cp.Versions, *live)
	acct := src.account(c.Directory, c.AccountID)
	if acct == nil || acct.Err != nil {
		cp.Err = fmt.Errorf("its account %s cannot be read", c.AccountID)
		return cp
	}
	cp.Record = store.Record{
		Name: cp.Name, Identifiers: cp.Identifiers, CA: c.Directory, Account: acct.URL,
		Profile: m.opts.Profile,
	}
	cp.Record.CAName, cp.Record.RootBundle = m.caName(c.Directory)
	email := acct.Email
	if cc := m.configured(cp.Name); cc != nil {
		email = m.fromConfig(cp, c, *cc)
	} else {
		var mp sourceMapping
		switch src.Client {
		case Certbot:
			mp = m.certbot(c, cp)
		case Lego:
			mp = m.lego(c, cp)
		}
		cp.Record.KeyType = string(m.keyType(c, cp, live.Leaf, mp.keyType))
		cp.Record.PreferredChain = mp.preferredChain
		if mp.profile != "" {
			cp.Record.Profile = mp.profile
		}
		cp.Record.DeployHook = mp.deployHook
		m.checkPathNames(cp)
	}
	cp.Record.Email = email
	if cp.Unmapped == nil && cp.Conflict == "" && !cp.Configured {
		checkPaths(cp)
	}
	if cp.Unmapped != nil || cp.Conflict != "" {
		return cp
	}
	for _, mp := range cp.Paths {
		cp.Record.Paths = append(cp.Record.Paths, mp.Ref)
	}
	for _, ap := range m.plan.Accounts {
		if ap.Prefix == renew.AccountKeyPrefix(host(acct.Directory), email) && ap.Account != acct {
			// certbot can keep several accounts per CA; Detour one per
			// CA and contact, which neither has.
			cp.Conflict = fmt.Sprintf("it was obtained with account %s (%s); the import stores account %s (%s) for the same CA and contact under %s, and Detour keeps one account per CA and contact: import this certificate into another state directory, or issue it anew",
				acct.URL, acct.File, ap.URL, ap.File, ap.Prefix)
			return cp
		}
	}
	cp.Account = m.account(acct, email, cp.Name)
	return cp
}

// sourceMapping is what a client's own mapping decides besides paths.
type sourceMapping struct {
	keyType                             string // as the source names it; "" to take the live key's
	preferredChain, profile, deployHook string
}

// account returns the plan of acct under the prefix renewals with email
// look up, adding it the first time.
func (m *mapper) account(acct *Account, email, cert string) *AccountPlan {
	prefix := renew.AccountKeyPrefix(host(acct.Directory), email)
	for _, ap := range m.plan.Accounts {
		if ap.Prefix == prefix && ap.Account == acct {
			ap.Certificates = append(ap.Certificates, cert)
			return ap
		}
	}
	ap := &AccountPlan{Account: acct, Prefix: prefix, Email: email, Certificates: []string{cert}}
	m.plan.Accounts = append(m.plan.Accounts, ap)
	return ap
}

// configured returns the configuration's certificate called name.
func (m *mapper) configured(name string) *config.Certificate {
	if m.opts.Config == nil {
		return nil
	}
	for i, c := range m.opts.Config.Certificates {
		if c.Name == name {
			return &m.opts.Config.Certificates[i]
		}
	}
	return nil
}

// fromConfig maps a certificate the configuration describes: its entry's
// paths renew it, provided the entry is for the same names and CA. It
// returns the contact the entry's renewals use, whose account prefix the
// imported account is stored under.
func (m *mapper) fromConfig(cp *CertPlan, c *Certificate, cc config.Certificate) string {
	cfg := m.opts.Config
	where := fmt.Sprintf("%s:%d", cfg.File, cc.Line)
	names := ident.Values(cc.Identifiers)
	if !sameSet(names, cp.Identifiers) {
		cp.Conflict = fmt.Sprintf("the configuration's certificate %q (%s) is for %s, the imported one for %s: give the entry another name, or make its domains the same to have it renew the imported certificate",
			cc.Name, where, strings.Join(names, ", "), strings.Join(cp.Identifiers, ", "))
		return ""
	}
	ca, err := config.ResolveCA(cfg, cmpStr(cc.CA, cfg.CA))
	if err != nil {
		cp.Conflict = fmt.Sprintf("the configuration's certificate %q (%s): %v", cc.Name, where, err)
		return ""
	}
	if ca.Directory != c.Directory {
		cp.Conflict = fmt.Sprintf("the configuration's certificate %q (%s) is renewed at %s, the imported one was issued by %s: set ca = %q in that entry to keep the account, or give the entry another name",
			cc.Name, where, ca.Directory, c.Directory, c.Directory)
		return ""
	}
	email := cmpStr(ca.Email, cfg.Email)
	cp.Configured = true
	for _, n := range cc.Paths {
		if p, err := cfg.Path(n); err == nil {
			cp.Paths = append(cp.Paths, MappedPath{Ref: pathRef(p), From: "the configuration (" + where + ")"})
		}
	}
	cp.Record.KeyType, cp.Record.Profile, cp.Record.PreferredChain = cc.KeyType, cmpStr(cc.Profile, cp.Record.Profile), cc.PreferredChain
	if cp.Record.KeyType == "" {
		cp.Record.KeyType = string(cfg.KeyType)
	}
	cp.Record.CAName, cp.Record.RootBundle = ca.Name, cmpStr(m.opts.RootBundle, ca.RootBundle)
	cp.Record.DeployHook = cc.DeployHook
	return email
}

// pathRef describes a configured path for a record: its settings but the
// secrets (see plan.refFor).
func pathRef(p config.Path) store.PathRef {
	settings := map[string]string{}
	if spec, ok := kinds.Lookup(p.Kind); ok {
		for k, v := range p.Settings {
			if s, ok := spec.Setting(k); ok && v != "" && !s.Secret {
				settings[k] = v
			}
		}
	}
	return store.PathRef{Name: p.Name, Kind: p.Kind, Settings: settings}
}

// checkPaths validates each mapped path through its kind's spec, as a
// [path.NAME] table would be: a value the kind refuses leaves the
// certificate unmapped, with the problem.
func checkPaths(cp *CertPlan) {
	for _, mp := range cp.Paths {
		spec, ok := kinds.Lookup(mp.Ref.Kind)
		if !ok {
			cp.Unmapped = &Unmapped{Reason: fmt.Sprintf("%s: Detour has no path kind %q", mp.From, mp.Ref.Kind), Suggestion: configSuggestion(cp.Name)}
			return
		}
		if probs := spec.Validate(mp.Ref.Name, spec.WithDefaults(mp.Ref.Settings)); len(probs) > 0 {
			pr := probs[0]
			cp.Unmapped = &Unmapped{Reason: fmt.Sprintf("%s: the %s path it maps to is not valid: %s: %s", mp.From, mp.Ref.Kind, pr.Key, pr.Msg),
				Suggestion: configSuggestion(cp.Name)}
			cp.Secrets = nil
			return
		}
	}
	// Every name needs a path whose challenge can validate it.
	ids, _ := ident.ParseAll(cp.Identifiers)
	for _, id := range ids {
		ok := false
		last := ""
		for _, mp := range cp.Paths {
			spec, _ := kinds.Lookup(mp.Ref.Kind)
			last = spec.WithDefaults(mp.Ref.Settings)[solve.KeyChallenge]
			ok = ok || solve.Applicable(last, id)
		}
		if !ok {
			cp.Unmapped = &Unmapped{Reason: fmt.Sprintf("%s: %s", id.Value, solve.NotApplicableReason(last, id, kinds.DNS())),
				Suggestion: configSuggestion(cp.Name)}
			cp.Secrets = nil
			return
		}
	}
}

// checkPathNames refuses path names the configuration uses for a table:
// renewing from the record would take that table's settings instead.
func (m *mapper) checkPathNames(cp *CertPlan) {
	if m.opts.Config == nil {
		return
	}
	for _, mp := range cp.Paths {
		if _, ok := m.opts.Config.Paths[mp.Ref.Name]; ok {
			cp.Conflict = fmt.Sprintf("the configuration (%s) defines [path.%s], the name the import gives the %s path of %s: rename that table, or add a [[certificate]] named %q to the configuration to choose its paths yourself",
				m.opts.Config.File, mp.Ref.Name, mp.Ref.Kind, cp.Name, cp.Name)
			return
		}
	}
}

// caName returns the name a record gives the CA at directory (a built-in
// shortcut or a [ca.NAME] table with that directory, else "") and the
// root bundle its renewals trust.
func (m *mapper) caName(directory string) (name, roots string) {
	if cfg := m.opts.Config; cfg != nil {
		for _, n := range slices.Sorted(maps.Keys(cfg.CAs)) {
			if ca := cfg.CAs[n]; ca.Directory == directory {
				return n, cmpStr(m.opts.RootBundle, ca.RootBundle)
			}
		}
	}
	for _, n := range config.Shortcuts() {
		if ca, err := config.ResolveCA(nil, n); err == nil && ca.Directory == directory {
			return n, m.opts.RootBundle
		}
	}
	return "", m.opts.RootBundle
}

// keyType returns the key type renewals use: what the source names when
// Detour has it, else the live key's, else Detour's default (noted).
func (m *mapper) keyType(c *Certificate, cp *CertPlan, leaf *x509.Certificate, named string) acme.KeyType {
	if named != "" {
		if kt, err := acme.ParseKeyType(named); err == nil {
			return kt
		}
	}
	kt, err := acme.KeyTypeOf(leaf.PublicKey)
	if err != nil {
		kt = acme.KeyTypes[0]
	}
	if named != "" || err != nil {
		what := named
		if what == "" {
			what = fmt.Sprintf("the live certificate's key (%T)", leaf.PublicKey)
		}
		cp.Notes = append(cp.Notes, Note{Setting: "key type " + what, Where: c.File,
			Reason:     fmt.Sprintf("Detour makes keys of these types only: %s; renewals use %s", keyTypeNames(), kt),
			Suggestion: fmt.Sprintf("to choose another, add a [[certificate]] named %q with key_type to the configuration and import again", cp.Name)})
	}
	return kt
}

func keyTypeNames() string {
	out := make([]string, len(acme.KeyTypes))
	for i, k := range acme.KeyTypes {
		out[i] = string(k)
	}
	return strings.Join(out, ", ")
}

// identifiers returns the names of leaf: the subject's common name first
// (the first name the client asked for), then the others in order.
func identifiers(leaf *x509.Certificate) ([]ident.Identifier, error) {
	var names []string
	if cn := leaf.Subject.CommonName; cn != "" {
		names = append(names, cn)
	}
	for _, n := range leaf.DNSNames {
		if !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	for _, ip := range leaf.IPAddresses {
		if s := ip.String(); !slices.Contains(names, s) {
			names = append(names, s)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("it names no domain and no IP address")
	}
	return ident.ParseAll(names)
}

// host returns the host[:port] of a URL.
func host(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	return p.Host
}

// secretKey returns the Storage key of a file the import writes for a
// certificate's path, and its absolute file name.
func (m *mapper) secretKey(client, cert, what string) (key, file string) {
	key = "imported/" + client + "/" + cert + "." + what + ".key"
	return key, filepath.Join(m.opts.StateDir, filepath.FromSlash(key))
}

func sameSet(a, b []string) bool {
	x, y := slices.Clone(a), slices.Clone(b)
	slices.Sort(x)
	slices.Sort(y)
	return slices.Equal(x, y)
}

func cmpStr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
