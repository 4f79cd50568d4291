package config

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/detour-acme/detour/internal/firewall"
	"github.com/detour-acme/detour/internal/firewall/cloud"
	"github.com/detour-acme/detour/internal/solve/kinds"
)

func TestFirewallSettings(t *testing.T) {
	tests := []struct {
		name string
		doc  string // the [path.p] table after its header
		key  string // "" when valid
		line int
		want []string
	}{
		{"valid nftables", "kind = \"standalone\"\nfirewall = \"nftables\"\n", "", 0, nil},
		{"valid with timeout", "kind = \"side-port\"\nfirewall = \"ufw\"\nfirewall_timeout = \"90s\"\nfirewall_port = \"80\"\n", "", 0, nil},
		{"valid exec", "kind = \"webroot\"\nroot = \"/var/www\"\nfirewall = \"exec\"\nfirewall_open = \"/usr/local/bin/open\"\nfirewall_close = \"/usr/local/bin/close\"\n", "", 0, nil},
		{"unknown firewall", "kind = \"standalone\"\nfirewall = \"pf\"\n", "path.p.firewall", 3,
			[]string{`"pf" is not a firewall Detour drives`, `"nftables"`, `"iptables-legacy"`}},
		{"bad timeout", "kind = \"standalone\"\nfirewall = \"nftables\"\nfirewall_timeout = \"ten minutes\"\n", "path.p.firewall_timeout", 4,
			[]string{"not a duration", `"10m"`}},
		{"timeout too long", "kind = \"standalone\"\nfirewall = \"nftables\"\nfirewall_timeout = \"48h\"\n", "path.p.firewall_timeout", 4,
			[]string{"out of range", "24h"}},
		{"timeout without firewall", "kind = \"standalone\"\nfirewall_timeout = \"5m\"\n", "path.p.firewall_timeout", 3,
			[]string{"no effect without firewall"}},
		{"bad port", "kind = \"side-port\"\nfirewall = \"nftables\"\nfirewall_port = \"0\"\n", "path.p.firewall_port", 4,
			[]string{"1 to 65535"}},
		{"unix socket without port", "kind = \"standalone\"\nlisten = \"unix:/run/detour.sock\"\nfirewall = \"nftables\"\n", "path.p.firewall_port", 0,
			[]string{"set firewall_port"}},
		{"exec without commands", "kind = \"standalone\"\nfirewall = \"exec\"\n", "path.p.firewall_open", 0,
			[]string{"needs firewall_open"}},
		{"exec relative", "kind = \"standalone\"\nfirewall = \"exec\"\nfirewall_open = \"open.sh\"\nfirewall_close = \"/bin/true\"\n", "path.p.firewall_open", 4,
			[]string{"absolute path"}},
		{"commands without exec", "kind = \"standalone\"\nfirewall = \"ufw\"\nfirewall_close = \"/bin/true\"\n", "path.p.firewall_close", 4,
			[]string{`only used with firewall = "exec"`}},
		{"not for dns", "kind = \"dns-embedded\"\nfirewall = \"nftables\"\n", "path.p.firewall", 3,
			[]string{"does not apply"}},
		{"valid cloud and host", "kind = \"standalone\"\nfirewall = [\"digitalocean\", \"nftables\"]\nfirewall_id = \"abc\"\n", "", 0, nil},
		{"two host firewalls", "kind = \"standalone\"\nfirewall = \"nftables, ufw\"\n", "path.p.firewall", 3,
			[]string{"at most one of each"}},
		{"misspelt cloud", "kind = \"standalone\"\nfirewall = \"digitalocen\"\n", "path.p.firewall", 3,
			[]string{`did you mean "digitalocean"`}},
		{"cloud without a target", "kind = \"standalone\"\nfirewall = \"aws-sg\"\n", "path.p.firewall_id", 0,
			[]string{"firewall_id (the security group ID, sg-...)", "firewall_instance (the EC2 instance ID"}},
		{"cloud with both targets", "kind = \"standalone\"\nfirewall = \"hetzner\"\nfirewall_id = \"1\"\nfirewall_instance = \"2\"\n", "path.p.firewall_instance", 5,
			[]string{"not both"}},
		{"region for another cloud", "kind = \"standalone\"\nfirewall = \"hetzner\"\nfirewall_id = \"1\"\nfirewall_region = \"eu\"\n", "path.p.firewall_region", 5,
			[]string{`only used with firewall = "aws-sg"`}},
		{"cloud setting for a host firewall", "kind = \"standalone\"\nfirewall = \"nftables\"\nfirewall_id = \"1\"\n", "path.p.firewall_id", 4,
			[]string{"only used with a cloud firewall"}},
		{"relative credentials", "kind = \"standalone\"\nfirewall = \"digitalocean\"\nfirewall_id = \"1\"\nfirewall_credentials = \"token\"\n", "path.p.firewall_credentials", 5,
			[]string{"absolute path"}},
		{"bad endpoint", "kind = \"standalone\"\nfirewall = \"digitalocean\"\nfirewall_id = \"1\"\nfirewall_endpoint = \"api.example\"\n", "path.p.firewall_endpoint", 5,
			[]string{"not an http(s) URL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := "[path.p]\n" + tt.doc
			_, err := Parse(testFile, []byte(doc))
			if tt.key == "" {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Parse accepted %q", doc)
			}
			ce := findKeyError(err, tt.line, tt.key)
			if ce == nil {
				t.Fatalf("no error for %s (line %d) in: %v", tt.key, tt.line, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(ce.Error(), w) {
					t.Errorf("error %q lacks %q", ce.Error(), w)
				}
			}
		})
	}
}

func TestFirewallOf(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want firewall.WindowConfig
	}{
		{"none", "kind = \"standalone\"\n", firewall.WindowConfig{Timeout: firewall.DefaultTimeout, Family: "inet"}},
		{"standalone http", "kind = \"standalone\"\nfirewall = \"nftables\"\n",
			firewall.WindowConfig{Backends: []string{"nftables"}, Timeout: firewall.DefaultTimeout, Port: 80, Family: "inet"}},
		{"standalone tls-alpn on ipv4", "kind = \"standalone\"\nchallenge = \"tls-alpn-01\"\nlisten = \"0.0.0.0:443\"\nfirewall = \"iptables\"\nfirewall_timeout = \"2m\"\n",
			firewall.WindowConfig{Backends: []string{"iptables"}, Timeout: 2 * time.Minute, Port: 443, Family: "ip"}},
		{"standalone on an ipv6 address, test port", "kind = \"standalone\"\nlisten = \"[2001:db8::1]:5002\"\nfirewall = \"nftables\"\n",
			firewall.WindowConfig{Backends: []string{"nftables"}, Timeout: firewall.DefaultTimeout, Port: 5002, Family: "ip6"}},
		{"standalone on [::]", "kind = \"standalone\"\nlisten = \"[::]:80\"\nfirewall = \"nftables\"\n",
			firewall.WindowConfig{Backends: []string{"nftables"}, Timeout: firewall.DefaultTimeout, Port: 80, Family: "inet"}},
		{"side port: the web server's port", "kind = \"side-port\"\nfirewall = \"ufw\"\n",
			firewall.WindowConfig{Backends: []string{"ufw"}, Timeout: firewall.DefaultTimeout, Port: 80, Family: "inet"}},
		{"webroot with firewall_port", "kind = \"webroot\"\nroot = \"/srv\"\nfirewall = \"firewalld\"\nfirewall_port = \"8080\"\n",
			firewall.WindowConfig{Backends: []string{"firewalld"}, Timeout: firewall.DefaultTimeout, Port: 8080, Family: "inet"}},
		{"exec", "kind = \"standalone\"\nfirewall = \"exec\"\nfirewall_open = \"/o\"\nfirewall_close = \"/c\"\n",
			firewall.WindowConfig{Backends: []string{"exec"}, Timeout: firewall.DefaultTimeout, Port: 80, Family: "inet", OpenCommand: "/o", CloseCommand: "/c"}},
		{"cloud and host, as a TOML list", "kind = \"webroot\"\nroot = \"/srv\"\nfirewall = [\"nftables\", \"aws-sg\"]\nfirewall_id = \"sg-1\"\nfirewall_region = \"eu-west-1\"\n",
			firewall.WindowConfig{Backends: []string{"aws-sg", "nftables"}, Timeout: firewall.DefaultTimeout, Port: 80, Family: "inet",
				Cloud: cloud.Config{FirewallID: "sg-1", Region: "eu-west-1"}}},
		{"cloud alone, a comma list", "kind = \"standalone\"\nfirewall = \"hetzner\"\nfirewall_instance = \"42\"\nfirewall_credentials = \"/etc/detour/hcloud\"\n",
			firewall.WindowConfig{Backends: []string{"hetzner"}, Timeout: firewall.DefaultTimeout, Port: 80, Family: "inet",
				Cloud: cloud.Config{Instance: "42", Credentials: "/etc/detour/hcloud"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse(testFile, []byte("[path.p]\n"+tt.doc))
			if err != nil {
				t.Fatal(err)
			}
			p, err := cfg.Path("p")
			if err != nil {
				t.Fatal(err)
			}
			sp, _ := kinds.Lookup(p.Kind)
			got, err := firewall.WindowOf(p.SolveSettings(), *sp.Window)
			if err != nil || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("WindowOf = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}
