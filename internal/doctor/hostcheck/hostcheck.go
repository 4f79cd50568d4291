// Package hostcheck holds the host-side checks of `detour doctor`: which
// process holds ports 80 and 443 (read from /proc) and which web server it
// is; what that server's effective configuration does with
// /.well-known/acme-challenge/ (RFC 8555 §8.3) for the names diagnosed
// (`nginx -T`, `apache2 -S` and the vhost files it names, haproxy's -f
// files); whether :443 is an nginx stream or HAProxy TCP frontend that can
// route TLS connections offering "acme-tls/1" (RFC 8737); what the local
// firewall does to an inbound TCP connection on each port; and whether the
// host is a cloud machine whose provider's firewall may also apply (from
// DMI data).
//
// Every check only reads: no file is written, no server is signalled, no
// firewall rule changes, and no network call is made.
package hostcheck

import (
	"context"
	"io"
	"log/slog"
	"os/exec"
	"slices"

	"github.com/detour-acme/detour/internal/doctor/check"
	"github.com/detour-acme/detour/internal/firewall"
)

// Server kinds of a Holder, a Site and a Stream.
const (
	ServerNginx    = "nginx"
	ServerApache   = "apache"
	ServerHAProxy  = "haproxy"
	ServerCaddy    = "caddy"
	ServerTraefik  = "traefik"
	ServerLighttpd = "lighttpd"
	ServerDetour   = "detour"
	ServerUnknown  = "unknown"
)

// Stream kinds.
const (
	StreamNginx   = "nginx-stream"
	StreamHAProxy = "haproxy-tcp"
)

// Cloud providers of Facts.Cloud.
const (
	CloudDigitalOcean = "digitalocean"
	CloudAWS          = "aws"
	CloudHetzner      = "hetzner"
	CloudGCP          = "gcp"
)

// Firewall verdicts of a FirewallPort.
const (
	FirewallAccept  = "accept"
	FirewallDrop    = "drop" // dropped or rejected: the connection does not get through
	FirewallUnknown = "unknown"
)

// Options configure Check. The zero value checks ports 80 and 443 of this
// host.
type Options struct {
	// Ports to check; default {80, 443}. The first is taken as the HTTP
	// port (http-01), the others as TLS ports.
	Ports []int
	// Names are the DNS names being diagnosed: their server blocks,
	// virtual hosts and frontends are reported.
	Names []string
	// ProcRoot is where procfs is mounted; default "/proc".
	ProcRoot string
	// DMIRoot is where the DMI identification is; default
	// "/sys/class/dmi/id".
	DMIRoot string
	// Firewall says how to read the local ruleset (see firewall.Inbound);
	// the zero value reads this host's.
	Firewall firewall.InboundOptions
	// SkipFirewall leaves the firewall.inbound check out.
	SkipFirewall bool
	// LookPath finds tools (nginx, apache2ctl, haproxy) when the running
	// server's own executable cannot be used; default exec.LookPath.
	LookPath func(string) (string, error)
	// Logger receives diagnostics; nil discards them.
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if len(o.Ports) == 0 {
		o.Ports = []int{80, 443}
	}
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	if o.DMIRoot == "" {
		o.DMIRoot = "/sys/class/dmi/id"
	}
	if o.LookPath == nil {
		o.LookPath = exec.LookPath
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return o
}

// Holder is a process listening on a checked port (or on the address
// HoldersOf was asked about).
type Holder struct {
	Port int // 0 for a Unix socket
	// Addr is the listening address: "0.0.0.0:80", "[::]:80"; a Unix
	// socket's path.
	Addr string
	// PID is the server's master process: of the processes holding the
	// socket, the one whose parent does not hold it, and above it any
	// parents running the same executable (HAProxy's master in
	// master-worker mode holds no listener itself). 0 when the socket's
	// owner could not be seen (not root).
	PID int
	// Command is PID's command line, arguments space-joined.
	Command string
	// Exe is PID's executable ("/usr/sbin/nginx").
	Exe string
	// Server is ServerNginx, ServerApache, ... or ServerUnknown.
	Server string
	// PIDs lists every process holding the socket (master and workers).
	PIDs []int
}

// Site is what one server block, virtual host or HTTP frontend does for
// one name on one port.
type Site struct {
	Server string
	// Name is the DNS name asked about; "" for a port's default block
	// when no names were given.
	Name string
	Port int
	TLS  bool
	// Match says how the block was chosen for Name: "exact", "wildcard",
	// "regex", "default" (the port's default block), "frontend" (HAProxy).
	Match string
	// ServerNames are the names the block declares (server_name,
	// ServerName and ServerAlias).
	ServerNames []string
	// DocRoot is the directory a webroot path would write into
	// (<DocRoot>/.well-known/acme-challenge/<token> is what the block
	// serves for a challenge); "" when the challenge path is proxied,
	// redirected or answered by the server itself.
	DocRoot string
	// ACMEForward is the target of an existing forward of
	// /.well-known/acme-challenge/ ("http://127.0.0.1:8402",
	// "unix:/run/detour.sock"); "" none.
	ACMEForward string
	// ACMEStatic is the document root of an existing location that serves
	// /.well-known/acme-challenge/ from a directory apart from the rest
	// of the block (then equal to DocRoot); "" none, or when the location
	// maps the path in a way no document root expresses (see ACMEDir).
	ACMEStatic string
	// ACMEDir is the directory such a location reads challenge files
	// from; "" none.
	ACMEDir string
	// ACMERedirect is the target of a redirect the challenge path gets
	// (as written: "https://$host$request_uri"); "" none.
	ACMERedirect string
	// ACMEReturn is the server's own answer to the challenge path (an
	// nginx `return`, Apache's R=<code>, HAProxy's `http-request
	// return`), its status and body as written; "" none.
	ACMEReturn string
	// Proxies is true when the block proxies every other request to a
	// backend (an application that serves no files).
	Proxies bool
	// Backend is that backend, as written; "" none.
	Backend string
	// File and Line locate the block.
	File string
	Line int
	// Notes are what could not be evaluated (an `if` block, a condition
	// on something unknown), for evidence.
	Notes []string
}

// Stream is a TCP (TLS pass-through) frontend on a checked port.
type Stream struct {
	Server string
	Port   int
	Kind   string // StreamNginx or StreamHAProxy
	// Preread is true when the frontend reads the ClientHello (nginx
	// ssl_preread on; HAProxy tcp-request inspect-delay): an acme-tls/1
	// route can be added as it is.
	Preread bool
	// ALPNRoute is the target of an existing acme-tls/1 route; "" none.
	ALPNRoute string
	// Default is where every other connection goes, as written.
	Default string
	File    string
	Line    int
}

// FirewallPort is the local firewall's verdict on inbound TCP to a port.
type FirewallPort struct {
	Port int
	// V4, V6: FirewallAccept, FirewallDrop (dropped or rejected) or
	// FirewallUnknown.
	V4, V6 string
	// Backend is the firewall whose rule decided ("nftables",
	// "iptables-nft", "ufw", "firewalld"); "" when nothing filters.
	Backend string
	// Rule is the deciding rule, as text.
	Rule string
	// Window is the firewall setting that opens a window on a port the
	// firewall drops ("nftables", "iptables", "ufw", "firewalld"), when
	// that backend's own check (which changes nothing) says it could; ""
	// when nothing drops the port, or when it could not, and NoWindow then
	// says why (a prerouting or ingress chain dropping by policy, a table
	// a firewall daemon owns, not root).
	Window, NoWindow string
	// Verdict is firewall.Inbound's whole answer.
	Verdict firewall.Verdict
}

// Facts are what the checks found, for ranking the path kinds.
type Facts struct {
	// Holders by port; an empty slice when nothing listens.
	Holders map[int][]Holder
	// Sites are the blocks that answer the names on the checked ports
	// (the ports' default blocks when no names were given).
	Sites   []Site
	Streams []Stream
	// HAProxyConfig is the first -f file of a running haproxy; "" none.
	HAProxyConfig string
	Firewall      []FirewallPort
	// Cloud is CloudDigitalOcean, CloudAWS, CloudHetzner, CloudGCP or "".
	Cloud         string
	CloudEvidence string
}

// Check runs the host-side checks. Results: "port.<N>" per port,
// "web.nginx", "web.apache", "web.haproxy" for the servers found holding a
// port (one per name, or one when no names were given),
// "firewall.inbound", "host.cloud".
func Check(ctx context.Context, opts Options) (Facts, []check.Result) {
	opts = opts.withDefaults()
	var facts Facts
	var results []check.Result

	holders, rs := checkPorts(opts)
	facts.Holders = holders
	results = append(results, rs...)

	kinds := map[string][]Holder{}
	for _, p := range opts.Ports {
		for _, h := range holders[p] {
			kinds[h.Server] = append(kinds[h.Server], h)
		}
	}
	for _, kind := range []string{ServerNginx, ServerApache, ServerHAProxy} {
		hs := kinds[kind]
		if len(hs) == 0 {
			continue
		}
		wr := checkWeb(ctx, opts, kind, hs)
		facts.Sites = append(facts.Sites, wr.sites...)
		facts.Streams = append(facts.Streams, wr.streams...)
		if kind == ServerHAProxy && facts.HAProxyConfig == "" {
			facts.HAProxyConfig = wr.haproxyConfig
		}
		results = append(results, wr.results...)
	}

	if !opts.SkipFirewall {
		fw, r := checkFirewall(ctx, opts)
		facts.Firewall = fw
		results = append(results, r)
	}

	cloud, ev, r := checkCloud(opts.DMIRoot)
	facts.Cloud, facts.CloudEvidence = cloud, ev
	results = append(results, r)
	return facts, results
}

// uniquePIDs returns the distinct master PIDs of hs, in order.
func uniquePIDs(hs []Holder) []int {
	var pids []int
	for _, h := range hs {
		if h.PID != 0 && !slices.Contains(pids, h.PID) {
			pids = append(pids, h.PID)
		}
	}
	return pids
}
