package plan

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/detour-acme/detour/internal/agent"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/kinds"
	"github.com/detour-acme/detour/internal/statuspage"
)

// versions lists the versions of name in this host's archive, newest
// first, with each certificate's serial and dates; live is the version
// live/ serves.
func (p *Planner) versions(ctx context.Context, name string, live int) ([]statuspage.Version, error) {
	nums, err := p.Store.ArchiveVersions(ctx, name)
	if errors.Is(err, fs.ErrNotExist) {
		return []statuspage.Version{}, nil
	}
	if err != nil {
		return []statuspage.Version{}, err
	}
	out := make([]statuspage.Version, 0, len(nums))
	for _, n := range slices.Backward(nums) {
		v := statuspage.Version{Version: n, Live: n == live}
		// archive/<name>/certN.pem: the certbot layout store.FS keeps.
		leaf, err := readLeaf(filepath.Join(p.Store.Dir(), "archive", name, "cert"+strconv.Itoa(n)+".pem"))
		if err != nil {
			v.Error = err.Error()
		} else {
			v.Serial, v.NotBefore, v.NotAfter = leaf.SerialNumber.Text(16), leaf.NotBefore, leaf.NotAfter
		}
		out = append(out, v)
	}
	return out, nil
}

func readLeaf(file string) (*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, fmt.Errorf("%s holds no PEM certificate", file)
	}
	return x509.ParseCertificate(b.Bytes)
}

// deployTargets lists what is done with each new version of name (its
// outputs, reloads and hook), each with the result of the newest
// successful attempt in the history that deployed. The deploy step joins
// the errors of the targets that failed; each names its target.
func (p *Planner) deployTargets(name string, attempts []agent.Attempt) []statuspage.DeployTarget {
	dp, _ := p.deployPlanOf(name)
	var last *agent.Attempt
	for i := range attempts {
		if attempts[i].OK {
			last = &attempts[i]
			break
		}
	}
	var errLines []string
	if last != nil && last.DeployError != "" {
		errLines = strings.Split(last.DeployError, "\n")
	}
	result := func(kind, target string, names func(line string) bool) statuspage.DeployTarget {
		t := statuspage.DeployTarget{Kind: kind, Target: target, Result: statuspage.DeployUnknown}
		if last == nil {
			return t
		}
		t.Result, t.At = statuspage.DeployOK, last.Time
		for _, l := range errLines {
			if names(l) {
				t.Result, t.Error = statuspage.DeployFailed, strings.TrimPrefix(l, "deploying "+name+": ")
				break
			}
		}
		return t
	}
	out := []statuspage.DeployTarget{}
	for _, o := range dp.Outputs {
		out = append(out, result("output", o.Path+" ("+o.Format+")", func(l string) bool { return strings.Contains(l, "output "+o.Path+":") }))
	}
	for _, r := range dp.Reloads {
		out = append(out, result("reload", r.Server, func(l string) bool {
			return strings.Contains(l, "reload") && strings.Contains(l, " "+r.Server)
		}))
	}
	if c := dp.Hook.Command; c != "" {
		out = append(out, result("hook", c, func(l string) bool { return strings.Contains(l, "deploy hook "+strconv.Quote(c)) }))
	}
	return out
}

// fleet is the fleet as the overview shows it: its nodes, and how many
// certificates each serves in the fleet's version.
func (s *StatusPage) fleet(ctx context.Context, p *Planner) (*statuspage.Fleet, error) {
	st, err := p.FleetStatus(ctx)
	out := &statuspage.Fleet{Name: st.Fleet, Node: st.Node, Nodes: []statuspage.Node{}}
	if err != nil {
		return out, err
	}
	for _, m := range st.Members {
		n := statuspage.Node{Name: m.Name, Alive: m.Alive, LastReport: m.LastReport}
		if m.Member != nil {
			n.Version = m.Member.Version
		}
		for _, c := range st.Certificates {
			if d, ok := c.Nodes[m.Name]; ok && d.Version == c.Version {
				n.Serving++
			} else {
				n.Behind++
			}
		}
		out.Nodes = append(out.Nodes, n)
	}
	return out, nil
}

// fleetNodes is what each node of the fleet serves of certificate name.
func (p *Planner) fleetNodes(ctx context.Context, name string) ([]statuspage.NodeVersion, error) {
	st, err := p.FleetStatus(ctx)
	if err != nil {
		return nil, err
	}
	var out []statuspage.NodeVersion
	for _, c := range st.Certificates {
		if c.Name != name {
			continue
		}
		for _, node := range slices.Sorted(maps.Keys(c.Nodes)) {
			d := c.Nodes[node]
			out = append(out, statuspage.NodeVersion{Node: node, Version: d.Version, Serial: d.Serial, At: d.At, Error: d.Error})
		}
	}
	return out, nil
}

// secrets returns the configuration's secrets, which no page may show:
// the CAs' EAB keys, the paths' secret settings and what the files of
// their credential settings hold, the status page's password hash. Only
// values long enough not to match ordinary words are returned.
func (p *Planner) secrets() []string {
	var out []string
	add := func(v string) {
		if v = strings.TrimSpace(v); len(v) >= 6 {
			out = append(out, v)
		}
	}
	for _, ca := range p.cfg.CAs {
		add(ca.EABHMACKey)
	}
	for _, cp := range p.cfg.Paths {
		spec, ok := kinds.Lookup(cp.Kind)
		if !ok {
			continue
		}
		for _, st := range spec.AllSettings() {
			v := cp.Settings[st.Key]
			switch {
			case v == "":
			case st.Secret:
				add(v)
			case st.Type == solve.TypePath && credentialFile(st.Key):
				for _, s := range fileSecrets(v) {
					add(s)
				}
			}
		}
	}
	add(p.cfg.Agent.Status.PasswordBcrypt)
	return out
}

// credentialFile reports whether a path setting names a file of
// credentials (tsig_secret_file, credentials_file, token_file, ...).
func credentialFile(key string) bool {
	for _, w := range []string{"secret", "credential", "token", "password", "key_file"} {
		if strings.Contains(key, w) {
			return true
		}
	}
	return false
}

// fileSecrets returns what a credentials file holds: its text, each of
// its lines, and, for JSON (acme-dns's registrations), the values of its
// credential keys (password, username, secret, token, key).
func fileSecrets(file string) []string {
	fi, err := os.Stat(file)
	if err != nil || fi.Size() > 64<<10 {
		return nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	out := []string{string(data)}
	out = append(out, strings.Split(string(data), "\n")...)
	var v any
	if json.Unmarshal(data, &v) == nil {
		out = append(out, jsonCredentials(v)...)
	}
	return out
}

// jsonCredentials returns the string values of credential keys in v.
func jsonCredentials(v any) []string {
	var out []string
	switch v := v.(type) {
	case []any:
		for _, e := range v {
			out = append(out, jsonCredentials(e)...)
		}
	case map[string]any:
		for k, e := range v {
			if s, ok := e.(string); ok {
				if slices.ContainsFunc([]string{"password", "user", "secret", "token", "key"}, func(w string) bool { return strings.Contains(strings.ToLower(k), w) }) {
					out = append(out, s)
				}
				continue
			}
			out = append(out, jsonCredentials(e)...)
		}
	}
	return out
}
