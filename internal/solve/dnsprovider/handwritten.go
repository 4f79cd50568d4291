//go:build !detour_slim

package dnsprovider

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/cloud"
	"github.com/go-acme/lego/v5/challenge"
	"github.com/go-acme/lego/v5/providers/dns/alidns"
	"github.com/go-acme/lego/v5/providers/dns/aliesa"
	"github.com/go-acme/lego/v5/providers/dns/artfiles"
	"github.com/go-acme/lego/v5/providers/dns/azuredns"
	"github.com/go-acme/lego/v5/providers/dns/cloudns"
	"github.com/go-acme/lego/v5/providers/dns/edgeone"
	"github.com/go-acme/lego/v5/providers/dns/gcloud"
	"github.com/go-acme/lego/v5/providers/dns/gigahostno"
	"github.com/go-acme/lego/v5/providers/dns/joker"
	"github.com/go-acme/lego/v5/providers/dns/mythicbeasts"
	"github.com/go-acme/lego/v5/providers/dns/namecheap"
	"github.com/go-acme/lego/v5/providers/dns/namesurfer"
	"github.com/go-acme/lego/v5/providers/dns/nicmanager"
	"github.com/go-acme/lego/v5/providers/dns/otc"
	"github.com/go-acme/lego/v5/providers/dns/selfhostde"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
)

// handWritten are factories for lego providers whose constructors the
// generator cannot read (notGenerated in zz_generated.go says why each is
// left out): SDK credential chains, alternative logins, modes. They are
// keyed and documented like the generated ones, with lego's variable
// names, and left out of the slim build with them. Where lego offers a
// login through the environment or the host (cloud metadata, CLI tools),
// only the explicit credentials are supported: Detour reads nothing but
// the credentials file.
var handWritten = map[string]Factory{
	"linode": linodeFactory,
	"namecheap": {
		Title: "Namecheap", URL: "https://www.namecheap.com",
		Timeout: time.Hour, // lego's default: Namecheap is slow to publish
		Keys: []Key{
			{Name: "NAMECHEAP_API_USER", Required: true, Doc: "API user"},
			{Name: "NAMECHEAP_API_KEY", Required: true, Secret: true, Doc: "API key"},
			{Name: "NAMECHEAP_CLIENT_IP", Doc: "this host's public IP address, as allowed in Namecheap's API settings (default: looked up over the network when the path is built)"},
			{Name: "NAMECHEAP_SANDBOX", Default: "false", Doc: "use Namecheap's sandbox API"},
			{Name: "NAMECHEAP_TTL", Default: "120", Doc: "TTL of the TXT record, in seconds"},
		},
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			base := "https://api.namecheap.com/xml.response"
			if c.Bool("NAMECHEAP_SANDBOX", false) {
				base = "https://api.sandbox.namecheap.com/xml.response"
			}
			return namecheap.NewDNSProviderConfig(&namecheap.Config{BaseURL: base,
				APIUser: c.Need("NAMECHEAP_API_USER"), APIKey: c.Need("NAMECHEAP_API_KEY"), ClientIP: c.Get("NAMECHEAP_CLIENT_IP"),
				TTL: c.Int("NAMECHEAP_TTL", 120), PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPClient: e.httpClient(time.Minute)})
		},
	},
	"gcloud": {
		Title: "Google Cloud DNS", URL: "https://cloud.google.com", Aliases: []string{"google", "googlecloud", "google-cloud-dns"},
		Timeout: 3 * time.Minute,
		Help:    "GCE_SERVICE_ACCOUNT_FILE (the JSON key file of a service account with the DNS Administrator role) or GCE_SERVICE_ACCOUNT (the key itself, on one line); optional GCE_PROJECT (default: the key's project)",
		Keys: []Key{
			{Name: "GCE_SERVICE_ACCOUNT_FILE", Required: true, Doc: "JSON key file of a service account allowed to edit the zone's records (or GCE_SERVICE_ACCOUNT)"},
			{Name: "GCE_SERVICE_ACCOUNT", Secret: true, Doc: "the service account's JSON key itself, on one line, instead of GCE_SERVICE_ACCOUNT_FILE"},
			{Name: "GCE_PROJECT", Doc: "project ID (default: the key's project_id)"},
			{Name: "GCE_ZONE_ID", Doc: "the managed zone's ID (skips the zone lookup)"},
			{Name: "GCE_ALLOW_PRIVATE_ZONE", Default: "false", Doc: "also use private zones"},
			{Name: "GCE_TTL", Default: "120", Doc: "TTL of the TXT record, in seconds"},
		},
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			var key []byte
			if c.Has("GCE_SERVICE_ACCOUNT") {
				key = []byte(c.Get("GCE_SERVICE_ACCOUNT"))
			} else if file := c.Need("GCE_SERVICE_ACCOUNT_FILE"); file != "" {
				var err error
				if key, err = os.ReadFile(file); err != nil {
					return nil, fmt.Errorf("reading GCE_SERVICE_ACCOUNT_FILE: %w", err)
				}
			} else {
				return nil, nil // reported missing
			}
			project := c.Get("GCE_PROJECT")
			if project == "" {
				var k struct {
					ProjectID string `json:"project_id"`
				}
				if err := json.Unmarshal(key, &k); err != nil || k.ProjectID == "" {
					return nil, errors.New("the service account key names no project_id; set GCE_PROJECT")
				}
				project = k.ProjectID
			}
			jwt, err := google.JWTConfigFromJSON(key, "https://www.googleapis.com/auth/ndev.clouddns.readwrite")
			if err != nil {
				return nil, fmt.Errorf("reading the service account key: %w", err)
			}
			// Tokens are fetched, lazily, with Detour's client too.
			ctx := context.WithValue(context.Background(), oauth2.HTTPClient, e.HTTPClient())
			client := jwt.Client(ctx)
			client.Timeout = httpTimeout
			return gcloud.NewDNSProviderConfig(&gcloud.Config{Project: project, ZoneID: c.Get("GCE_ZONE_ID"),
				AllowPrivateZone: c.Bool("GCE_ALLOW_PRIVATE_ZONE", false), TTL: c.Int("GCE_TTL", 120),
				PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPClient: client})
		},
	},
	"azuredns": {
		Title: "Azure DNS", URL: "https://azure.microsoft.com/services/dns/", Aliases: []string{"azure"},
		Keys: []Key{
			{Name: "AZURE_CLIENT_ID", Required: true, Doc: "client (application) ID of a service principal allowed to edit the zone (DNS Zone Contributor)"},
			{Name: "AZURE_CLIENT_SECRET", Required: true, Secret: true, Doc: "its client secret"},
			{Name: "AZURE_TENANT_ID", Required: true, Doc: "its tenant (directory) ID"},
			{Name: "AZURE_SUBSCRIPTION_ID", Required: true, Doc: "subscription of the zone"},
			{Name: "AZURE_RESOURCE_GROUP", Required: true, Doc: "resource group of the zone"},
			{Name: "AZURE_ZONE_NAME", Doc: "the zone's name (default: found through DNS)"},
			{Name: "AZURE_PRIVATE_ZONE", Default: "false", Doc: "the zone is an Azure private DNS zone"},
			{Name: "AZURE_ENVIRONMENT", Default: "public", Doc: "Azure cloud: public, china or usgovernment"},
			{Name: "AZURE_TTL", Default: "60", Doc: "TTL of the TXT record, in seconds"},
		},
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			var environment cloud.Configuration
			switch v := c.GetOr("AZURE_ENVIRONMENT", "public"); v {
			case "public":
				environment = cloud.AzurePublic
			case "china":
				environment = cloud.AzureChina
			case "usgovernment":
				environment = cloud.AzureGovernment
			default:
				return nil, fmt.Errorf("AZURE_ENVIRONMENT %q: use public, china or usgovernment", v)
			}
			// AuthMethod "env" with the three values set is a client
			// secret credential; lego's other methods read the host's
			// environment or tools.
			cfg := &azuredns.Config{AuthMethod: "env",
				ClientID: c.Need("AZURE_CLIENT_ID"), ClientSecret: c.Need("AZURE_CLIENT_SECRET"), TenantID: c.Need("AZURE_TENANT_ID"),
				SubscriptionID: c.Need("AZURE_SUBSCRIPTION_ID"), ResourceGroup: c.Need("AZURE_RESOURCE_GROUP"),
				ZoneName: c.Get("AZURE_ZONE_NAME"), PrivateZone: c.Bool("AZURE_PRIVATE_ZONE", false), Environment: environment,
				TTL: c.Int("AZURE_TTL", 60), PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPClient: e.HTTPClient()}
			if c.failed() {
				return nil, nil // build reports the keys; lego would call the API
			}
			// NB: lego discovers the subscription's zones here, through the
			// Azure SDK's own HTTP pipeline (not e's client).
			return azuredns.NewDNSProviderConfig(cfg)
		},
	},
	"cloudns": {
		Title: "ClouDNS", URL: "https://www.cloudns.net",
		Timeout: 3 * time.Minute,
		Help:    "CLOUDNS_AUTH_ID (or CLOUDNS_SUB_AUTH_ID for a sub-user) and CLOUDNS_AUTH_PASSWORD",
		Keys: []Key{
			{Name: "CLOUDNS_AUTH_ID", Required: true, Doc: "API user ID (or CLOUDNS_SUB_AUTH_ID)"},
			{Name: "CLOUDNS_SUB_AUTH_ID", Doc: "API sub-user ID, instead of CLOUDNS_AUTH_ID"},
			{Name: "CLOUDNS_AUTH_PASSWORD", Required: true, Secret: true, Doc: "API password"},
			{Name: "CLOUDNS_TTL", Default: "60", Doc: "TTL of the TXT record, in seconds"},
		},
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			cfg := &cloudns.Config{AuthPassword: c.Need("CLOUDNS_AUTH_PASSWORD"), TTL: c.Int("CLOUDNS_TTL", 60),
				PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPClient: e.HTTPClient()}
			if c.Has("CLOUDNS_SUB_AUTH_ID") && !c.Has("CLOUDNS_AUTH_ID") {
				cfg.SubAuthID = c.Get("CLOUDNS_SUB_AUTH_ID")
			} else {
				cfg.AuthID = c.Need("CLOUDNS_AUTH_ID")
			}
			return cloudns.NewDNSProviderConfig(cfg)
		},
	},
	"gigahostno": {
		Title: "Gigahost.no", URL: "https://gigahost.no",
		Help: "GIGAHOSTNO_API_KEY, or GIGAHOSTNO_USERNAME and GIGAHOSTNO_PASSWORD (optional GIGAHOSTNO_SECRET for two-factor login)",
		Keys: []Key{
			{Name: "GIGAHOSTNO_API_KEY", Required: true, Secret: true, Doc: "API key (or GIGAHOSTNO_USERNAME and GIGAHOSTNO_PASSWORD)"},
			{Name: "GIGAHOSTNO_USERNAME", Doc: "user name, instead of an API key"},
			{Name: "GIGAHOSTNO_PASSWORD", Secret: true, Doc: "password, with GIGAHOSTNO_USERNAME"},
			{Name: "GIGAHOSTNO_SECRET", Secret: true, Doc: "two-factor secret, with GIGAHOSTNO_USERNAME"},
			{Name: "GIGAHOSTNO_TTL", Default: "120", Doc: "TTL of the TXT record, in seconds"},
		},
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			cfg := &gigahostno.Config{TTL: c.Int("GIGAHOSTNO_TTL", 120), PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPClient: e.HTTPClient()}
			if c.Has("GIGAHOSTNO_USERNAME") || c.Has("GIGAHOSTNO_PASSWORD") {
				cfg.Username, cfg.Password, cfg.Secret = c.Need("GIGAHOSTNO_USERNAME"), c.Need("GIGAHOSTNO_PASSWORD"), c.Get("GIGAHOSTNO_SECRET")
			} else {
				cfg.APIkey = c.Need("GIGAHOSTNO_API_KEY")
			}
			return gigahostno.NewDNSProviderConfig(cfg)
		},
	},
	"joker": {
		Title: "Joker", URL: "https://joker.com",
		Help: "JOKER_API_KEY, or JOKER_USERNAME and JOKER_PASSWORD (DMAPI); with JOKER_API_MODE = SVC, JOKER_USERNAME and JOKER_PASSWORD of the domain's Dynamic DNS",
		Keys: []Key{
			{Name: "JOKER_API_KEY", Required: true, Secret: true, Doc: "DMAPI key (or JOKER_USERNAME and JOKER_PASSWORD)"},
			{Name: "JOKER_USERNAME", Doc: "user name, instead of an API key"},
			{Name: "JOKER_PASSWORD", Secret: true, Doc: "password, with JOKER_USERNAME"},
			{Name: "JOKER_API_MODE", Default: "DMAPI", Doc: "DMAPI or SVC (Dynamic DNS)"},
			{Name: "JOKER_TTL", Default: "120", Doc: "TTL of the TXT record, in seconds"},
		},
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			cfg := &joker.Config{APIMode: c.GetOr("JOKER_API_MODE", "DMAPI"), TTL: c.Int("JOKER_TTL", 120),
				PropagationTimeout: e.Timeout, PollingInterval: e.Interval, SequenceInterval: time.Minute, HTTPClient: e.httpClient(time.Minute)}
			switch {
			case cfg.APIMode != "DMAPI" && cfg.APIMode != "SVC":
				return nil, fmt.Errorf("JOKER_API_MODE %q: use DMAPI or SVC", cfg.APIMode)
			case cfg.APIMode == "SVC" || c.Has("JOKER_USERNAME") || c.Has("JOKER_PASSWORD"):
				cfg.Username, cfg.Password = c.Need("JOKER_USERNAME"), c.Need("JOKER_PASSWORD")
			default:
				cfg.APIKey = c.Need("JOKER_API_KEY")
			}
			return joker.NewDNSProviderConfig(cfg)
		},
	},
	"mythicbeasts": {
		Title: "Mythic Beasts", URL: "https://www.mythic-beasts.com/",
		Keys: []Key{
			{Name: "MYTHICBEASTS_USERNAME", Required: true, Doc: "API key ID"},
			{Name: "MYTHICBEASTS_PASSWORD", Required: true, Secret: true, Doc: "API key secret"},
			{Name: "MYTHICBEASTS_API_ENDPOINT", Default: "https://api.mythic-beasts.com/dns/v2", Doc: "API URL"},
			{Name: "MYTHICBEASTS_AUTH_API_ENDPOINT", Default: "https://auth.mythic-beasts.com/login", Doc: "authentication URL"},
			{Name: "MYTHICBEASTS_TTL", Default: "120", Doc: "TTL of the TXT record, in seconds"},
		},
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			return mythicbeasts.NewDNSProviderConfig(&mythicbeasts.Config{UserName: c.Need("MYTHICBEASTS_USERNAME"), Password: c.Need("MYTHICBEASTS_PASSWORD"),
				APIEndpoint:     c.URL("MYTHICBEASTS_API_ENDPOINT", "https://api.mythic-beasts.com/dns/v2"),
				AuthAPIEndpoint: c.URL("MYTHICBEASTS_AUTH_API_ENDPOINT", "https://auth.mythic-beasts.com/login"),
				TTL:             c.Int("MYTHICBEASTS_TTL", 120), PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPClient: e.HTTPClient()})
		},
	},
	"otc": {
		Title: "Open Telekom Cloud", URL: "https://cloud.telekom.de/en",
		Keys: []Key{
			{Name: "OTC_DOMAIN_NAME", Required: true, Doc: "domain (account) name"},
			{Name: "OTC_USER_NAME", Required: true, Doc: "user name"},
			{Name: "OTC_PASSWORD", Required: true, Secret: true, Doc: "password"},
			{Name: "OTC_PROJECT_NAME", Required: true, Doc: "project name"},
			{Name: "OTC_IDENTITY_ENDPOINT", Default: "https://iam.eu-de.otc.t-systems.com:443/v3/auth/tokens", Doc: "identity endpoint URL"},
			{Name: "OTC_PRIVATE_ZONE", Default: "false", Doc: "the zone is private"},
			{Name: "OTC_TTL", Default: "300", Doc: "TTL of the TXT record, in seconds (at least 300)"},
		},
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			// lego's client uses no keep-alives; Detour's transport is kept
			// (the connections are few).
			return otc.NewDNSProviderConfig(&otc.Config{DomainName: c.Need("OTC_DOMAIN_NAME"), UserName: c.Need("OTC_USER_NAME"),
				Password: c.Need("OTC_PASSWORD"), ProjectName: c.Need("OTC_PROJECT_NAME"),
				IdentityEndpoint: c.GetOr("OTC_IDENTITY_ENDPOINT", "https://iam.eu-de.otc.t-systems.com:443/v3/auth/tokens"),
				PrivateZone:      c.Bool("OTC_PRIVATE_ZONE", false), TTL: c.Int("OTC_TTL", 300),
				PropagationTimeout: e.Timeout, PollingInterval: e.Interval, SequenceInterval: time.Minute, HTTPClient: e.HTTPClient()})
		},
	},
	"alidns": {
		Title: "Alibaba Cloud DNS", URL: "https://www.alibabacloud.com/product/dns", Aliases: []string{"alicloud", "aliyun"},
		Keys: []Key{
			{Name: "ALICLOUD_ACCESS_KEY", Required: true, Secret: true, Doc: "AccessKey ID of a RAM user allowed to edit the zone"},
			{Name: "ALICLOUD_SECRET_KEY", Required: true, Secret: true, Doc: "its AccessKey secret"},
			{Name: "ALICLOUD_SECURITY_TOKEN", Secret: true, Doc: "STS security token of temporary credentials"},
			{Name: "ALICLOUD_REGION_ID", Default: "cn-hangzhou", Doc: "region of the API"},
			{Name: "ALICLOUD_LINE", Doc: "line (view) of the record"},
			{Name: "ALICLOUD_TTL", Default: "600", Doc: "TTL of the TXT record, in seconds"},
		},
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			// lego's other login, an ECS RAM role, asks the instance's
			// metadata service; Detour takes the keys from the file only.
			return alidns.NewDNSProviderConfig(&alidns.Config{APIKey: c.Need("ALICLOUD_ACCESS_KEY"), SecretKey: c.Need("ALICLOUD_SECRET_KEY"),
				SecurityToken: c.Get("ALICLOUD_SECURITY_TOKEN"), RegionID: c.GetOr("ALICLOUD_REGION_ID", "cn-hangzhou"), Line: c.Get("ALICLOUD_LINE"),
				TTL: c.Int("ALICLOUD_TTL", 600), PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPTimeout: httpTimeout})
		},
	},
	"nicmanager": {
		Title: "Nicmanager", URL: "https://www.nicmanager.com/",
		Help: "NICMANAGER_API_PASSWORD and NICMANAGER_API_LOGIN with NICMANAGER_API_USERNAME, or NICMANAGER_API_EMAIL",
		Keys: []Key{
			{Name: "NICMANAGER_API_PASSWORD", Required: true, Secret: true, Doc: "password"},
			{Name: "NICMANAGER_API_LOGIN", Doc: "login (account name), with NICMANAGER_API_USERNAME"},
			{Name: "NICMANAGER_API_USERNAME", Doc: "user name, with NICMANAGER_API_LOGIN"},
			{Name: "NICMANAGER_API_EMAIL", Doc: "email, instead of login and user name"},
			{Name: "NICMANAGER_API_OTP", Secret: true, Doc: "TOTP secret, for two-factor login"},
			{Name: "NICMANAGER_API_MODE", Default: "anycast", Doc: "anycast or zone"},
			{Name: "NICMANAGER_TTL", Default: "900", Doc: "TTL of the TXT record, in seconds (at least 900)"},
		},
		Timeout: 5 * time.Minute,
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			cfg := &nicmanager.Config{Password: c.Need("NICMANAGER_API_PASSWORD"), Mode: c.GetOr("NICMANAGER_API_MODE", "anycast"),
				OTPSecret: c.Get("NICMANAGER_API_OTP"), TTL: c.Int("NICMANAGER_TTL", 900),
				PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPClient: e.HTTPClient()}
			if c.Has("NICMANAGER_API_EMAIL") {
				cfg.Email = c.Get("NICMANAGER_API_EMAIL")
			} else {
				cfg.Login, cfg.Username = c.Need("NICMANAGER_API_LOGIN"), c.Need("NICMANAGER_API_USERNAME")
			}
			if cfg.TTL < 900 {
				return nil, fmt.Errorf("NICMANAGER_TTL %d: Nicmanager needs at least 900", cfg.TTL)
			}
			return nicmanager.NewDNSProviderConfig(cfg)
		},
	},
	"namesurfer": {
		Title: "FusionLayer NameSurfer", URL: "https://www.fusionlayer.com/",
		Keys: []Key{
			{Name: "NAMESURFER_BASE_URL", Required: true, Doc: "API URL"},
			{Name: "NAMESURFER_API_KEY", Required: true, Secret: true, Doc: "API key"},
			{Name: "NAMESURFER_API_SECRET", Required: true, Secret: true, Doc: "API secret"},
			{Name: "NAMESURFER_VIEW", Doc: "DNS view"},
			{Name: "NAMESURFER_INSECURE_SKIP_VERIFY", Default: "false", Doc: "do not verify the server's TLS certificate (a self-signed appliance)"},
			{Name: "NAMESURFER_TTL", Default: "300", Doc: "TTL of the TXT record, in seconds"},
		},
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			client := e.HTTPClient()
			if c.Bool("NAMESURFER_INSECURE_SKIP_VERIFY", false) {
				client.Transport = insecureTransport(e.transport)
			}
			return namesurfer.NewDNSProviderConfig(&namesurfer.Config{BaseURL: c.Need("NAMESURFER_BASE_URL"),
				APIKey: c.Need("NAMESURFER_API_KEY"), APISecret: c.Need("NAMESURFER_API_SECRET"), View: c.Get("NAMESURFER_VIEW"),
				TTL: c.Int("NAMESURFER_TTL", 300), PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPClient: client})
		},
	},
	"artfiles": {
		Title: "ArtFiles", URL: "https://www.artfiles.de/extras/domains/",
		Timeout: 6 * time.Minute, // lego's default
		Keys: []Key{
			{Name: "ARTFILES_USERNAME", Required: true, Doc: "API username"},
			{Name: "ARTFILES_PASSWORD", Required: true, Secret: true, Doc: "API password"},
			{Name: "ARTFILES_SERVER_NAME", Default: "dcp", Doc: "your server name (the API is https://NAME.c.artfiles.de/api/)"},
		},
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			// lego's client follows ArtFiles' redirects between its
			// servers (*.c.artfiles.de) with the Authorization header,
			// which Go drops on a redirect to another host; its
			// CheckRedirect is internal to lego, so artfilesRedirect
			// does the same on Detour's client.
			client := e.HTTPClient()
			client.CheckRedirect = artfilesRedirect
			return artfiles.NewDNSProviderConfig(&artfiles.Config{Username: c.Need("ARTFILES_USERNAME"), Password: c.Need("ARTFILES_PASSWORD"),
				ServerName: c.GetOr("ARTFILES_SERVER_NAME", "dcp"), PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPClient: client})
		},
	},
	"selfhostde": {
		Title: "SelfHost.(de|eu)", URL: "https://www.selfhost.de",
		Timeout: 4 * time.Minute, // lego's default
		Help: "SELFHOSTDE_USERNAME, SELFHOSTDE_PASSWORD and SELFHOSTDE_RECORDS_MAPPING: SelfHost can only update existing TXT records, " +
			"so create _acme-challenge.DOMAIN (two of them for a wildcard as well) and map each domain to their IDs, " +
			"as domain:id[:id] separated by commas (example.com:123:456,example.org:789)",
		Keys: []Key{
			{Name: "SELFHOSTDE_USERNAME", Required: true, Doc: "username"},
			{Name: "SELFHOSTDE_PASSWORD", Required: true, Secret: true, Doc: "password"},
			{Name: "SELFHOSTDE_RECORDS_MAPPING", Required: true, Doc: "the IDs of the existing _acme-challenge TXT records by domain, one or two each (ex: example.com:123:456,example.org:789,foo.example.com:147)"},
			{Name: "SELFHOSTDE_TTL", Default: "120", Doc: "TTL of the TXT record, in seconds"},
		},
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			// lego parses the mapping in its environment-reading
			// constructor only; selfhostdeMapping is its parser.
			cfg := &selfhostde.Config{Username: c.Need("SELFHOSTDE_USERNAME"), Password: c.Need("SELFHOSTDE_PASSWORD"),
				TTL: c.Int("SELFHOSTDE_TTL", 120), PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPClient: e.HTTPClient()}
			if !c.Has("SELFHOSTDE_RECORDS_MAPPING") {
				c.Need("SELFHOSTDE_RECORDS_MAPPING")
			} else {
				cfg.RecordsMapping = selfhostdeMapping(c, "SELFHOSTDE_RECORDS_MAPPING")
			}
			if c.failed() {
				return nil, nil // build reports the keys
			}
			return selfhostde.NewDNSProviderConfig(cfg)
		},
	},
	"aliesa": {
		Title: "AlibabaCloud ESA", URL: "https://www.alibabacloud.com/en/product/esa",
		Keys: []Key{
			{Name: "ALIESA_ACCESS_KEY", Required: true, Secret: true, Doc: "AccessKey ID of a RAM user allowed to edit the site's records"},
			{Name: "ALIESA_SECRET_KEY", Required: true, Secret: true, Doc: "its AccessKey secret"},
			{Name: "ALIESA_SECURITY_TOKEN", Secret: true, Doc: "STS security token of temporary credentials"},
			{Name: "ALIESA_REGION_ID", Default: "cn-hangzhou", Doc: "region of the API"},
			{Name: "ALIESA_TTL", Default: "120", Doc: "TTL of the TXT record, in seconds"},
		},
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			// lego's Config has no HTTPClient: the Alibaba Cloud SDK
			// (darabonba/tea) makes its own client, which does not use
			// Detour's transport and reads HTTP_PROXY, HTTPS_PROXY,
			// NO_PROXY and ALIBABA_CLOUD_USER_AGENT from the environment
			// itself (the credentials are all given, so its ALIBABA_CLOUD_*
			// credential fallbacks are not). lego's other login,
			// ALIESA_RAM_ROLE, asks the ECS instance's metadata service;
			// Detour takes the keys from the file only.
			return aliesa.NewDNSProviderConfig(&aliesa.Config{APIKey: c.Need("ALIESA_ACCESS_KEY"), SecretKey: c.Need("ALIESA_SECRET_KEY"),
				SecurityToken: c.Get("ALIESA_SECURITY_TOKEN"), RegionID: c.GetOr("ALIESA_REGION_ID", "cn-hangzhou"),
				TTL: c.Int("ALIESA_TTL", 120), PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPTimeout: httpTimeout})
		},
	},
	"edgeone": {
		Title: "Tencent EdgeOne", URL: "https://edgeone.ai",
		Timeout: 20 * time.Minute, // lego's default
		Keys: []Key{
			{Name: "EDGEONE_SECRET_ID", Required: true, Doc: "Access key ID"},
			{Name: "EDGEONE_SECRET_KEY", Required: true, Secret: true, Doc: "Access Key secret"},
			{Name: "EDGEONE_SESSION_TOKEN", Secret: true, Doc: "Access Key token"},
			{Name: "EDGEONE_REGION", Doc: "Region"},
			{Name: "EDGEONE_ZONES_MAPPING", Doc: "mapping between DNS zones and site IDs (ex: example.org:id1,example.com:id2); a zone not mapped is looked up"},
			{Name: "EDGEONE_TTL", Default: "60", Doc: "TTL of the TXT record, in seconds"},
		},
		New: func(c *Credentials, e Env) (challenge.Provider, error) {
			// lego's Config has no HTTPClient: the Tencent Cloud SDK makes
			// its own client, which does not use Detour's transport (its
			// proxy comes from the environment, as http.DefaultTransport's
			// does). With the keys given, the SDK reads no credentials
			// from the environment.
			return edgeone.NewDNSProviderConfig(&edgeone.Config{SecretID: c.Need("EDGEONE_SECRET_ID"), SecretKey: c.Need("EDGEONE_SECRET_KEY"),
				SessionToken: c.Get("EDGEONE_SESSION_TOKEN"), Region: c.Get("EDGEONE_REGION"), ZonesMapping: c.Pairs("EDGEONE_ZONES_MAPPING"),
				TTL: c.Int("EDGEONE_TTL", 60), PropagationTimeout: e.Timeout, PollingInterval: e.Interval, HTTPTimeout: httpTimeout})
		},
	},
}

// artfilesRedirect is lego's artfiles CheckRedirect: at most five
// redirects, and one to another ArtFiles server (a host with three labels
// in common, *.c.artfiles.de) keeps the Authorization header, which Go
// drops on a redirect to another host.
func artfilesRedirect(req *http.Request, via []*http.Request) error {
	if len(via) == 0 {
		return nil
	}
	if len(via) >= 5 {
		return errors.New("stopped after 5 redirects")
	}
	prev := via[len(via)-1]
	if commonLabels(req.URL.Host, prev.URL.Host) == 3 {
		if auth := prev.Header.Get("Authorization"); auth != "" {
			req.Header.Set("Authorization", auth)
		}
	}
	return nil
}

// commonLabels counts the labels a and b have in common from the right,
// ignoring case (miekg/dns's CompareDomainName).
func commonLabels(a, b string) int {
	la := strings.Split(strings.ToLower(strings.TrimSuffix(a, ".")), ".")
	lb := strings.Split(strings.ToLower(strings.TrimSuffix(b, ".")), ".")
	n := 0
	for n < len(la) && n < len(lb) && la[len(la)-1-n] == lb[len(lb)-1-n] {
		n++
	}
	return n
}

// selfhostdeMapping reads key as lego's SELFHOSTDE_RECORDS_MAPPING:
// domain:id[:id] separated by commas (spaces ignored), one or two record
// IDs by domain. A malformed value is reported through c.
func selfhostdeMapping(c *Credentials, key string) map[string]*selfhostde.Seq {
	v := c.Get(key)
	m := map[string]*selfhostde.Seq{}
	for item := range strings.SplitSeq(strings.ReplaceAll(v, " ", ""), ",") {
		parts := strings.Split(item, ":")
		if len(parts) < 2 || len(parts) > 3 || slices.Contains(parts, "") {
			c.bad(key, v, "a list of domain:recordID or domain:recordID:recordID separated by commas, such as \"example.com:123:456,example.org:789\"")
			return nil
		}
		m[parts[0]] = selfhostde.NewSeq(parts[1:]...)
	}
	return m
}

// insecureTransport is rt (http.DefaultTransport when nil) without TLS
// certificate verification, for appliances with self-signed certificates.
// A transport that is not an *http.Transport (a test's) is kept.
func insecureTransport(rt http.RoundTripper) http.RoundTripper {
	if rt == nil {
		rt = http.DefaultTransport
	}
	t, ok := rt.(*http.Transport)
	if !ok {
		return rt
	}
	t = t.Clone()
	if t.TLSClientConfig == nil {
		t.TLSClientConfig = &tls.Config{}
	}
	t.TLSClientConfig.InsecureSkipVerify = true //nolint:gosec // the user asked for it (NAMESURFER_INSECURE_SKIP_VERIFY)
	return t
}
