package plan

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/deploy"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/renew"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/kinds"
	"github.com/detour-acme/detour/internal/solve/selfcheck"
	"github.com/detour-acme/detour/internal/store"
)

// RequestOptions say how a certificate is to be obtained this time.
type RequestOptions struct {
	// DryRun runs against the CA's staging directory, when it has one,
	// and stores nothing.
	DryRun bool
	// AgreeTOS accepts the CA's terms of service (--agree-tos), on top of
	// the configuration's agree_tos.
	AgreeTOS bool
}

// certPaths returns the paths of certificate c, in order of preference.
func (p *Planner) certPaths(c config.Certificate) ([]config.Path, error) {
	names := c.Paths
	if len(names) == 0 {
		names = config.DefaultPaths
	}
	out := make([]config.Path, 0, len(names))
	for _, n := range names {
		cp, err := p.cfg.Path(n)
		if err != nil {
			return nil, fmt.Errorf("certificate %s: %w", c.Name, err)
		}
		out = append(out, cp)
	}
	return out, nil
}

// ConfigTarget returns the renewal step's target for certificate c of the
// configuration: its CAs (the primary, then fallback_ca), the addresses its
// paths bind, and the request each attempt runs.
func (p *Planner) ConfigTarget(c config.Certificate, opt RequestOptions) (renew.Target, error) {
	paths, err := p.certPaths(c)
	if err != nil {
		return renew.Target{}, err
	}
	cas := append([]string{orDefault(c.CA, p.cfg.CA)}, c.FallbackCA...)
	ids := make([]string, len(c.Identifiers))
	for i, id := range c.Identifiers {
		ids[i] = id.Value
	}
	return renew.Target{
		Name: c.Name, Identifiers: ids, CAs: cas, AfterFailures: c.AfterFailures, Binds: binds(paths),
		Request: func(ctx context.Context, ca int) (renew.Request, func(), error) {
			cc := c
			cc.CA = cas[ca]
			return p.configRequest(ctx, cc, opt)
		},
	}, nil
}

// RecordTarget returns the target of a certificate issued without a
// configuration entry, renewed exactly as its record says it was obtained.
func (p *Planner) RecordTarget(rec store.Record, opt RequestOptions) renew.Target {
	paths := make([]config.Path, len(rec.Paths))
	for i, r := range rec.Paths {
		paths[i] = recordPath(p.cfg, r)
	}
	name := rec.Name
	return renew.Target{
		Name: name, CAs: []string{orDefault(rec.CAName, rec.CA)}, Binds: binds(paths),
		Request: func(ctx context.Context, _ int) (renew.Request, func(), error) {
			fresh, err := p.shared.LoadRecord(ctx, name)
			if err != nil {
				return renew.Request{}, nil, err
			}
			return p.recordRequest(ctx, fresh, opt)
		},
	}
}

// configRequest plans one attempt at certificate c of the configuration.
func (p *Planner) configRequest(ctx context.Context, c config.Certificate, opt RequestOptions) (renew.Request, func(), error) {
	ca, err := config.ResolveCA(p.cfg, orDefault(c.CA, p.cfg.CA))
	if err != nil {
		return renew.Request{}, nil, fmt.Errorf("certificate %s: %w", c.Name, err)
	}
	if ca.Email == "" {
		ca.Email = p.cfg.Email
	}
	rca, err := p.CAClient(ca, opt.DryRun, opt.AgreeTOS || p.cfg.AgreeTOS)
	if err != nil {
		return renew.Request{}, nil, err
	}
	kt := p.cfg.KeyType
	if c.KeyType != "" {
		if kt, err = acme.ParseKeyType(c.KeyType); err != nil {
			rca.Client.Close()
			return renew.Request{}, nil, fmt.Errorf("certificate %s: %w", c.Name, err)
		}
	}
	req := renew.Request{
		Name: c.Name, Identifiers: c.Identifiers, KeyType: kt, Profile: c.Profile,
		PreferredChain: c.PreferredChain, CA: rca, DryRun: opt.DryRun,
		DeployHook: deploy.Hook{Command: c.DeployHook},
	}
	if req.Deploy, err = deployPlan(c); err != nil {
		rca.Client.Close()
		return renew.Request{}, nil, err
	}
	paths, err := p.certPaths(c)
	if err != nil {
		rca.Client.Close()
		return renew.Request{}, nil, err
	}
	return p.withPaths(ctx, req, paths, c.SelfCheck)
}

// recordRequest plans a renewal of a certificate obtained without a
// configuration entry, exactly as it was obtained.
func (p *Planner) recordRequest(ctx context.Context, rec store.Record, opt RequestOptions) (renew.Request, func(), error) {
	ids, err := ident.ParseAll(rec.Identifiers)
	if err != nil {
		return renew.Request{}, nil, fmt.Errorf("record of %s: %w", rec.Name, err)
	}
	kt, err := acme.ParseKeyType(rec.KeyType)
	if err != nil {
		return renew.Request{}, nil, fmt.Errorf("record of %s: %w", rec.Name, err)
	}
	ca := config.CA{Name: rec.CAName, Directory: rec.CA, RootBundle: rec.RootBundle, Email: rec.Email}
	if opt.DryRun && rec.CAName != "" {
		if known, err := config.ResolveCA(nil, rec.CAName); err == nil {
			ca.Staging = known.Staging
		}
	}
	// The account exists already: terms were agreed when it was made.
	rca, err := p.CAClient(ca, opt.DryRun, true)
	if err != nil {
		return renew.Request{}, nil, err
	}
	req := renew.Request{
		Name: rec.Name, Identifiers: ids, KeyType: kt, Profile: rec.Profile,
		PreferredChain: rec.PreferredChain, CA: rca, DryRun: opt.DryRun,
		DeployHook: deploy.Hook{Command: rec.DeployHook},
	}
	paths := make([]config.Path, len(rec.Paths))
	for i, r := range rec.Paths {
		var fromConfig bool
		paths[i], fromConfig = recordPathFrom(p.cfg, r)
		if spec, ok := kinds.Lookup(r.Kind); ok && !fromConfig {
			if probs := spec.Complete(r.Name, paths[i].Settings); len(probs) > 0 {
				rca.Client.Close()
				return renew.Request{}, nil, fmt.Errorf("path %s, rebuilt from the record of %s: %s (records keep no secrets: define [path.%s] in the config file again, or issue the certificate anew)",
					r.Name, rec.Name, problemText(probs[0]), r.Name)
			}
		}
	}
	return p.withPaths(ctx, req, paths, !rec.NoSelfCheck)
}

// problemText renders a setting's problem as "key: message".
func problemText(pr solve.Problem) string {
	if pr.Key == "" {
		return pr.Msg
	}
	return pr.Key + ": " + pr.Msg
}

// withPaths builds the solvers of paths into req, with the self-check when
// selfCheck (and not turned off for the run), and returns req's release:
// it closes the solvers and the CA client.
func (p *Planner) withPaths(ctx context.Context, req renew.Request, paths []config.Path, selfCheck bool) (renew.Request, func(), error) {
	ps := newPathSet()
	release := func() {
		ps.Close()
		if req.CA.Client != nil {
			req.CA.Client.Close()
		}
	}
	env := p.env(req.CA)
	env.NoSelfCheck = !selfCheck || p.opts.NoSelfCheck
	for _, cp := range paths {
		sp, ref, err := p.build(ctx, ps, cp, env)
		if err != nil {
			release()
			return renew.Request{}, nil, err
		}
		req.Paths = append(req.Paths, sp)
		req.Refs = append(req.Refs, ref)
	}
	if p.fleet != nil {
		// Every node behind the load balancer presents the answers.
		if err := p.fleet.mirror(req.Paths); err != nil {
			release()
			return renew.Request{}, nil, err
		}
	}
	if selfCheck && !p.opts.NoSelfCheck {
		req.SelfCheck = p.SelfCheck(ps.paths)
	}
	return req, release, nil
}

// SelfCheck returns the check run after each Present: the answer is
// fetched the way the CA will fetch it. paths gives each path by name, so
// that hints speak of what the user set up (a webroot, a forward, a
// stateless block); nil gives generic hints.
func (p *Planner) SelfCheck(paths map[string]config.Path) func(context.Context, solve.Path, solve.Challenge) error {
	opts := selfcheck.Options{Logger: p.log, HTTPPort: p.opts.CheckHTTPPort, TLSPort: p.opts.CheckTLSPort}
	if p.opts.Resolver != "" {
		opts.Resolver = selfcheck.ResolverAt(p.opts.Resolver)
	}
	return selfcheck.Func(opts, func(name string) (selfcheck.Hint, bool) {
		cp, ok := paths[name]
		return selfcheck.Hint{Kind: cp.Kind, Root: cp.Setting("root"), Listen: cp.Setting("listen")}, ok
	})
}

// deployPlan turns a certificate's deploy settings into a plan (the hook is
// left to the request's DeployHook unless a timeout is set).
func deployPlan(c config.Certificate) (deploy.Plan, error) {
	var p deploy.Plan
	if c.Deploy.HookTimeout > 0 {
		p.Hook = deploy.Hook{Command: c.DeployHook, Timeout: c.Deploy.HookTimeout}
	}
	for _, r := range c.Deploy.Reloads {
		p.Reloads = append(p.Reloads, deploy.Reload{Server: r.Server, Unit: r.Unit, PIDFile: r.PIDFile})
	}
	for _, o := range c.Deploy.Outputs {
		out := deploy.Output{Path: o.Path, Format: o.Format, Owner: o.Owner, Group: o.Group, Mode: o.Mode}
		if o.PasswordFile != "" {
			pw, err := os.ReadFile(o.PasswordFile)
			if err != nil {
				return p, fmt.Errorf("certificate %s: output %s: reading password_file: %w", c.Name, o.Path, err)
			}
			out.Password = strings.TrimRight(string(pw), "\r\n")
		}
		p.Outputs = append(p.Outputs, out)
	}
	return p, nil
}

func orDefault(v, def string) string {
	if v != "" {
		return v
	}
	return def
}
