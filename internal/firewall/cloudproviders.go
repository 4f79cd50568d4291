package firewall

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/detour-acme/detour/internal/firewall/cloud"
	"github.com/detour-acme/detour/internal/firewall/cloud/awssg"
	"github.com/detour-acme/detour/internal/firewall/cloud/digitalocean"
	"github.com/detour-acme/detour/internal/firewall/cloud/hetzner"
)

// cloudProvider is one cloud firewall Detour drives: the one list below
// is where a new provider is added (its package implements cloud.API).
type cloudProvider struct {
	name string
	new  func(ctx context.Context, c cloud.Config) (cloud.API, error)
	// descriptions is whether the provider keeps a rule's description.
	descriptions bool
	// id and instance say what firewall_id and firewall_instance hold.
	id, instance string
}

var cloudProviders = []cloudProvider{
	{name: NameDigitalOcean, descriptions: false,
		new: func(_ context.Context, c cloud.Config) (cloud.API, error) { return digitalocean.New(c) },
		id:  "the Cloud Firewall's ID, `doctl compute firewall list`", instance: "the droplet ID"},
	{name: NameAWSSG, descriptions: true,
		new: func(ctx context.Context, c cloud.Config) (cloud.API, error) { return awssg.New(ctx, c) },
		id:  "the security group ID, sg-...", instance: "the EC2 instance ID, i-..."},
	{name: NameHetzner, descriptions: true,
		new: func(_ context.Context, c cloud.Config) (cloud.API, error) { return hetzner.New(c) },
		id:  "the firewall's ID, `hcloud firewall list`", instance: "the server ID, `hcloud server list`"},
}

// CloudNames lists the cloud firewalls.
func CloudNames() []string {
	var out []string
	for _, p := range cloudProviders {
		out = append(out, p.name)
	}
	return out
}

// IsCloud reports whether name is a cloud firewall.
func IsCloud(name string) bool { return slices.Contains(CloudNames(), name) }

func cloudProviderOf(name string) (cloudProvider, bool) {
	i := slices.IndexFunc(cloudProviders, func(p cloudProvider) bool { return p.name == name })
	if i < 0 {
		return cloudProvider{}, false
	}
	return cloudProviders[i], true
}

// cloudIDDoc and cloudInstanceDoc say, per provider, what firewall_id and
// firewall_instance hold.
var cloudIDDoc, cloudInstanceDoc = func() (map[string]string, map[string]string) {
	ids, insts := map[string]string{}, map[string]string{}
	for _, p := range cloudProviders {
		ids[p.name], insts[p.name] = p.id, p.instance
	}
	return ids, insts
}()

// cloudTimeout bounds building a provider's client.
const cloudTimeout = 30 * time.Second

func newCloudBackend(name string, opts Options) (Backend, error) {
	p, _ := cloudProviderOf(name)
	c := opts.Cloud
	if c.Logger == nil {
		c.Logger = opts.Logger
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: cloudTimeout}
	}
	ctx, cancel := context.WithTimeout(context.Background(), cloudTimeout)
	defer cancel()
	api, err := p.new(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("%s firewall: %w", name, err)
	}
	b, err := newCloud(api, opts)
	if err != nil {
		return nil, err
	}
	b.descriptions = p.descriptions
	b.scope = "id:" + c.FirewallID
	if c.FirewallID == "" {
		b.scope = "instance:" + c.Instance
	}
	b.forTarget = func(ctx context.Context, id string) (cloud.API, error) {
		other := c
		other.FirewallID, other.Instance = id, ""
		return p.new(ctx, other)
	}
	return b, nil
}
