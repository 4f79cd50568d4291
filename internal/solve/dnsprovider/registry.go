package dnsprovider

import (
	"net/http"
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
	// Title is the provider's name for people ("Linode (v4)").
	Title string
	// URL is the provider's web site.
	URL string
	// Aliases are other names provider = "..." accepts for it.
	Aliases []string
	// Lego is the code of lego's provider package the factory drives,
	// when it is not the factory's name (Detour's gandi is lego's gandiv5);
	// NoLego when the factory is Detour's own client of the provider's API.
	Lego string
	// Keys lists every credential key the provider reads, for messages,
	// `detour paths dns-provider NAME`, and to reject unknown (misspelt)
	// keys in the file. Keys are matched case-insensitively.
	Keys []Key
	// Help says which keys are needed, shown when one is missing. Empty
	// means the required keys, with their docs.
	Help string
	// AnyName marks a client that writes a TXT record at any name (it
	// implements nameWriter), so the provider answers dns-account-01 too.
	AnyName bool
	// Timeout is the default propagation timeout: how long records of this
	// provider usually take to reach every authoritative server. Less than
	// DefaultPropagationTimeout means DefaultPropagationTimeout.
	Timeout time.Duration
	// New maps the credentials onto the provider's lego Config and builds
	// the provider. It reads required keys with c.Need and optional ones
	// with c.Get (or the typed readers); it MUST NOT read the environment
	// (lego's NewDefaultConfig does, so factories fill Config themselves).
	New func(c *Credentials, e Env) (challenge.Provider, error)
}

// NoLego in Factory.Lego marks a provider Detour talks to with its own
// client, not through a lego package.
const NoLego = "-"

// Key is one key of a provider's credentials file.
type Key struct {
	// Name is the key as the documentation spells it: the variable of
	// lego's documentation for generated providers (LINODE_TOKEN), lower
	// case for Detour's own (api_token). Either case is accepted.
	Name string
	// Also lists other names accepted for the key (lego's older names).
	Also []string
	// Required keys must be set (for Detour's own factories: unless an
	// alternative login is given, see Help).
	Required bool
	// Secret marks a key whose value is a secret (a password, token or
	// key). Conservative: a key that may hold one is marked.
	Secret bool
	// Default is the value used when the file does not set the key.
	Default string
	// Doc is one line about the key.
	Doc string
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

// httpClient is HTTPClient with a request timeout of at least d (lego's
// default for providers whose API is slow).
func (e Env) httpClient(d time.Duration) *http.Client {
	c := e.HTTPClient()
	c.Timeout = max(c.Timeout, d)
	return c
}

// httpTimeout bounds one API request.
const httpTimeout = 30 * time.Second

// providers are Detour's own factories, by the name a [path.NAME] table
// gives in provider = "...". They take precedence over the generated ones
// (see catalog.go) and are in every build, the slim one too.
var providers = map[string]Factory{
	"cloudflare": {
		Title: "Cloudflare", URL: "https://www.cloudflare.com/dns/",
		Keys: []Key{
			{Name: "api_token", Required: true, Secret: true, Doc: "API token with Zone:Read and DNS:Edit (or email and api_key)"},
			{Name: "zone_token", Secret: true, Doc: "separate API token with Zone:Read"},
			{Name: "email", Doc: "account email, with api_key instead of api_token"},
			{Name: "api_key", Secret: true, Doc: "global API key, with email instead of api_token"},
		},
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
		Title: "Amazon Route 53", URL: "https://aws.amazon.com/route53/",
		Keys: []Key{
			{Name: "access_key_id", Required: true, Secret: true, Doc: "access key ID of an IAM user"},
			{Name: "secret_access_key", Required: true, Secret: true, Doc: "its secret access key"},
			{Name: "session_token", Secret: true, Doc: "session token of temporary credentials"},
			{Name: "region", Default: "us-east-1", Doc: "AWS region of the API"},
			{Name: "hosted_zone_id", Doc: "the hosted zone's ID (skips the zone lookup)"},
		},
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
		Title: "DigitalOcean", URL: "https://www.digitalocean.com/",
		Keys: []Key{{Name: "auth_token", Required: true, Secret: true, Doc: "personal access token with write scope"}},
		Help: "auth_token (a personal access token with write scope)",
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			return digitalocean.NewDNSProviderConfig(&digitalocean.Config{AuthToken: c.Need("auth_token"), TTL: 30,
				PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPClient: e.HTTPClient()})
		},
	},
	"hetzner": {
		Title: "Hetzner", URL: "https://www.hetzner.com/",
		Keys: []Key{{Name: "api_token", Required: true, Secret: true, Doc: "Hetzner Cloud API token with read & write permission"}},
		Help: "api_token (a Hetzner Cloud API token with read & write permission; DNS is managed through the Cloud API)",
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			return hetzner.NewDNSProviderConfig(&hetzner.Config{APIToken: c.Need("api_token"), TTL: 60,
				PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPClient: e.HTTPClient()})
		},
	},
	"gandi": {
		Title: "Gandi Live DNS (v5)", URL: "https://www.gandi.net/", Lego: "gandiv5",
		Keys:    []Key{{Name: "personal_access_token", Required: true, Secret: true, Doc: "personal access token allowed to manage the domain's DNS records"}},
		Help:    "personal_access_token (a Gandi personal access token allowed to manage the domain's DNS records, LiveDNS API v5)",
		Timeout: 20 * time.Minute, // LiveDNS is slow to reach its secondaries
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			return gandiv5.NewDNSProviderConfig(&gandiv5.Config{PersonalAccessToken: c.Need("personal_access_token"), TTL: 300,
				PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPClient: e.HTTPClient()})
		},
	},
	"ovh": {
		Title: "OVH", URL: "https://www.ovh.com/",
		Keys: []Key{
			{Name: "application_key", Required: true, Secret: true, Doc: "key of an API application allowed GET/POST/DELETE on /domain/zone/*"},
			{Name: "application_secret", Required: true, Secret: true, Doc: "its secret"},
			{Name: "consumer_key", Required: true, Secret: true, Doc: "its consumer key"},
			{Name: "endpoint", Default: "ovh-eu", Doc: "API endpoint: ovh-eu, ovh-ca, ovh-us, kimsufi-eu, ... or a URL"},
		},
		Help: "application_key, application_secret and consumer_key (an API application allowed GET/POST/DELETE on /domain/zone/*); optional endpoint (default ovh-eu; ovh-ca, ovh-us, kimsufi-eu, ... or a URL)",
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			return ovh.NewDNSProviderConfig(&ovh.Config{APIEndpoint: c.GetOr("endpoint", "ovh-eu"),
				ApplicationKey: c.Need("application_key"), ApplicationSecret: c.Need("application_secret"), ConsumerKey: c.Need("consumer_key"),
				TTL: 120, PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPClient: e.HTTPClient()})
		},
	},
}
