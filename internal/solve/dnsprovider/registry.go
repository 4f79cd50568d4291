package dnsprovider

import (
	"maps"
	"net/http"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	awsroute53 "github.com/aws/aws-sdk-go-v2/service/route53"
	"github.com/go-acme/lego/v5/challenge"
	"github.com/go-acme/lego/v5/providers/dns/cloudflare"
	"github.com/go-acme/lego/v5/providers/dns/digitalocean"
	"github.com/go-acme/lego/v5/providers/dns/gandiv5"
	"github.com/go-acme/lego/v5/providers/dns/hetzner"
	"github.com/go-acme/lego/v5/providers/dns/ovh"
	"github.com/go-acme/lego/v5/providers/dns/route53"
)

// Factory builds one provider's lego client from a path's credentials.
type Factory struct {
	// Keys lists every credential key the provider reads, for messages
	// and to reject unknown (misspelt) keys in the file.
	Keys []string
	// Help says which keys are needed, shown when one is missing.
	Help string
	// Timeout is the default propagation timeout: how long records of this
	// provider usually take to reach every authoritative server.
	Timeout time.Duration
	// New maps the credentials onto the provider's lego Config and builds
	// the provider. It reads required keys with c.Need and optional ones
	// with c.Get; it MUST NOT read the environment (lego's
	// NewDefaultConfig does, so factories fill Config themselves).
	New func(c *Credentials, e Env) (challenge.Provider, error)
}

// Env is what a Factory gets besides the credentials.
type Env struct {
	// Timeout and Interval bound the provider's own waits (Route 53 change
	// status, Hetzner actions) and are what its Timeout method reports.
	Timeout, Interval time.Duration
	transport         http.RoundTripper
}

// HTTPClient returns a new HTTP client for the provider's API. Each call
// returns a fresh client: some lego providers wrap its Transport.
func (e Env) HTTPClient() *http.Client {
	return &http.Client{Timeout: httpTimeout, Transport: e.transport}
}

// httpTimeout bounds one API request.
const httpTimeout = 30 * time.Second

// providers is the registry of DNS provider APIs, by the name a
// [path.NAME] table gives in provider = "...". Spec's provider setting
// accepts exactly these names (Names()).
var providers = map[string]Factory{
	"cloudflare": {
		Keys: []string{"api_token", "zone_token", "email", "api_key"},
		Help: "api_token (a token with Zone:Read and DNS:Edit; optional zone_token for a separate Zone:Read token), or email and api_key (the global API key)",
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			cfg := &cloudflare.Config{TTL: 120, PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPClient: e.HTTPClient()}
			if c.Has("email") || c.Has("api_key") {
				cfg.AuthEmail, cfg.AuthKey = c.Need("email"), c.Need("api_key")
			} else {
				cfg.AuthToken, cfg.ZoneToken = c.Need("api_token"), c.Get("zone_token")
			}
			return cloudflare.NewDNSProviderConfig(cfg)
		},
	},
	"route53": {
		Keys: []string{"access_key_id", "secret_access_key", "session_token", "region", "hosted_zone_id"},
		Help: "access_key_id and secret_access_key of an IAM user allowed route53:ListHostedZonesByName, ListResourceRecordSets, ChangeResourceRecordSets and GetChange; optional session_token, region (default us-east-1) and hosted_zone_id (skips the zone lookup)",
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			// The AWS client is built here rather than by lego, whose
			// default loads the environment and ~/.aws.
			client := awsroute53.New(awsroute53.Options{
				Region:      c.GetOr("region", "us-east-1"),
				Credentials: aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(c.Need("access_key_id"), c.Need("secret_access_key"), c.Get("session_token"))),
				HTTPClient:  e.HTTPClient(),
			})
			return route53.NewDNSProviderConfig(&route53.Config{Client: client, HostedZoneID: c.Get("hosted_zone_id"), TTL: 10,
				WaitForRecordSetsChanged: true, PropagationTimeout: e.Timeout, PollingInterval: e.Interval})
		},
	},
	"digitalocean": {
		Keys: []string{"auth_token"},
		Help: "auth_token (a personal access token with write scope)",
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			return digitalocean.NewDNSProviderConfig(&digitalocean.Config{AuthToken: c.Need("auth_token"), TTL: 30,
				PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPClient: e.HTTPClient()})
		},
	},
	"hetzner": {
		Keys: []string{"api_token"},
		Help: "api_token (a Hetzner Cloud API token with read & write permission; DNS is managed through the Cloud API)",
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			return hetzner.NewDNSProviderConfig(&hetzner.Config{APIToken: c.Need("api_token"), TTL: 60,
				PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPClient: e.HTTPClient()})
		},
	},
	"gandi": {
		Keys:    []string{"personal_access_token"},
		Help:    "personal_access_token (a Gandi personal access token allowed to manage the domain's DNS records, LiveDNS API v5)",
		Timeout: 20 * time.Minute, // LiveDNS is slow to reach its secondaries
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			return gandiv5.NewDNSProviderConfig(&gandiv5.Config{PersonalAccessToken: c.Need("personal_access_token"), TTL: 300,
				PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPClient: e.HTTPClient()})
		},
	},
	"ovh": {
		Keys: []string{"endpoint", "application_key", "application_secret", "consumer_key"},
		Help: "application_key, application_secret and consumer_key (an API application allowed GET/POST/DELETE on /domain/zone/*); optional endpoint (default ovh-eu; ovh-ca, ovh-us, kimsufi-eu, ... or a URL)",
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			return ovh.NewDNSProviderConfig(&ovh.Config{APIEndpoint: c.GetOr("endpoint", "ovh-eu"),
				ApplicationKey: c.Need("application_key"), ApplicationSecret: c.Need("application_secret"), ConsumerKey: c.Need("consumer_key"),
				TTL: 120, PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPClient: e.HTTPClient()})
		},
	},
}

// Names returns the names of the supported providers, sorted.
func Names() []string { return slices.Sorted(maps.Keys(providers)) }

// Keys returns the credential keys provider reads (nil for an unknown one).
func Keys(provider string) []string { return slices.Clone(providers[provider].Keys) }
