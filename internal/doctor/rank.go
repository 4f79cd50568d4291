package doctor

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Verdict says whether a path kind works for a name on this host.
type Verdict string

const (
	// Works: the path works now, with no change by the user (Detour may
	// open a firewall window itself).
	Works Verdict = "works"
	// AfterChange: the path works after the one change Ranked.Change
	// names.
	AfterChange Verdict = "after-change"
	// Impossible: the path cannot work here; Ranked.Why says why.
	Impossible Verdict = "impossible"
)

// Probe is the outcome of a probe doctor ran (or did not).
type Probe struct {
	// Ran is false when the probe was not run (nothing to probe).
	Ran bool `json:"ran"`
	// OK is true when the CA would have seen the answer.
	OK bool `json:"ok"`
	// Why says what failed, in the check's words.
	Why string `json:"why,omitempty"`
	// Fix is the check's fix.
	Fix string `json:"fix,omitempty"`
	// Unproven: the probe could not reach the name's address from this
	// host, which is not on any local interface (NAT without hairpin):
	// the CA, fetching from outside, may well get through.
	Unproven bool `json:"unproven,omitempty"`
}

// Situation is what ranking needs to know about one name, distilled from
// the checks' facts. It is a plain value, so ranking is a pure function
// with table tests.
type Situation struct {
	Name string
	// HTTPPort and TLSPort are the ports the CA connects to (80 and 443
	// but in rehearsals); 0 means the standard ones.
	HTTPPort, TLSPort int
	Wildcard          bool // *.example.com: only DNS challenges
	IP                bool // an IP address identifier: http-01 and tls-alpn-01 only

	// Reachability over the web ports (http-01, tls-alpn-01).
	// AddressProblem blocks http-01 and tls-alpn-01 ("no A or AAAA
	// record", "a private address in public DNS"); AddressFix says how to
	// fix it.
	AddressProblem, AddressFix string
	// NAT: a public address is on no local interface.
	NAT bool

	// Port 80 and 443: who holds them ("" = free).
	Server80, Server443 string
	// HolderPID80/443 is the holder's process, for messages.
	Holder80, Holder443 string

	// Webroot is the document root of the server block for the name on
	// port 80 ("" none: it proxies, or no server).
	Webroot string
	// WebrootProbe is the probe through Webroot.
	WebrootProbe Probe
	// Proxies: the block for the name proxies everything (an app that
	// serves no files).
	Proxies bool
	// ACMEForward is an existing forward of /.well-known/acme-challenge/
	// ("http://127.0.0.1:8402"), "" none.
	ACMEForward string
	// SidePortListen is where a side-port path would listen: the forward's
	// target when there is one, else the kind's default.
	SidePortListen string
	// SidePortProbe is the probe through a temporary side-port listener.
	SidePortProbe Probe
	// SidePortSnippet is the configuration block to add to Server80 for
	// a side-port path (from `detour snippet http`).
	SidePortSnippet string

	// Stream443 is "nginx-stream" or "haproxy-tcp" when :443 is a TCP
	// proxy that can route acme-tls/1; ALPNRoute its existing route's
	// target ("" none); ALPNSnippet the block to add.
	Stream443, ALPNRoute, ALPNSnippet string
	// ALPNRouteBusy names a program (not Detour) listening at the route's
	// target, where Detour must listen while the CA validates.
	ALPNRouteBusy string

	// Firewall80/443: the local ruleset's verdict on inbound TCP from
	// the Internet: "accept", "drop" or "unknown"; FirewallBackend is the
	// Detour firewall backend that can open a window ("nftables", ...).
	Firewall80, Firewall443, FirewallBackend string
	// Cloud is the cloud the host runs in ("digitalocean", "aws",
	// "hetzner", "gcp", ""); CloudBackend the matching Detour firewall
	// backend ("" none).
	Cloud, CloudBackend string

	// DNS side.
	Zone     string
	Provider string // recognised dns-provider name, "" none
	// ProviderConfigured: the configuration has a dns-provider path for
	// Provider (its credentials exist).
	ProviderConfigured string
	// ProviderPath is the configuration's path for it.
	ProviderPath string
	// NoZone says why the name is not in DNS at all (no zone holds it):
	// nothing works until it is.
	NoZone string
	// CAAChange is a change CAA needs before any path works (an accounturi
	// naming an account, and this host has none yet).
	CAAChange string
	// RFC2136Key is the TSIG key the primary accepted ("" none);
	// RFC2136Algorithm, RFC2136SecretFile/Secret where it came from;
	// RFC2136Server the primary.
	RFC2136Key, RFC2136Algorithm, RFC2136Source, RFC2136Server string
	// RFC2136Refused: keys were tried and refused (the fix is the server's
	// update policy).
	RFC2136Refused string
	// AcmeDNSCNAME is the target of _acme-challenge.<name>'s CNAME ("" none),
	// AcmeDNSLive whether it answers, AcmeDNSServer the API URL of a
	// registration Detour holds for the name ("" none).
	AcmeDNSCNAME  string
	AcmeDNSLive   bool
	AcmeDNSServer string
	// Persist: the _validation-persist record names this account and CA.
	PersistOK bool
	// DNSSECBroken blocks every path (the CA's CAA lookup fails too);
	// DNSSECReason says why.
	DNSSECBroken bool
	DNSSECReason string

	// CA and CAA.
	// CAAForbids is set when CAA forbids the CA for every method (the
	// issuer is not listed, or accounturi names another account).
	CAAForbids string
	// CAAMethods, when non-nil, are the only validation methods CAA allows.
	CAAMethods []string
	// CAOffers lists the challenge types the CA offers; nil = unknown
	// (assume http-01, dns-01, tls-alpn-01).
	CAOffers []string
}

// Ranked is one path kind's verdict for a name.
type Ranked struct {
	// Kind is the path kind ("webroot"); Challenge the type it answers.
	Kind      string `json:"kind"`
	Challenge string `json:"challenge"`
	// Window names the firewall backend the path opens a window in ("" none).
	Window  string  `json:"firewall,omitempty"`
	Verdict Verdict `json:"verdict"`
	// Why is the evidence for the verdict, in one sentence.
	Why string `json:"why"`
	// Change is the one change the user must make (AfterChange), with
	// Snippet its configuration text when there is one.
	Change  string `json:"change,omitempty"`
	Snippet string `json:"snippet,omitempty"`
	// Settings are the [path.NAME] table's settings, for the configuration.
	Settings map[string]string `json:"settings,omitempty"`
	// Existing names the configuration's own [path.NAME] of this kind the
	// verdict is about (its credentials are there): the recommendation
	// lists it rather than writing a new table.
	Existing string `json:"existing,omitempty"`
	// Placeholders are settings the user must fill in (after the change
	// Change names): key -> {example value, what to put there}.
	Placeholders map[string][2]string `json:"placeholders,omitempty"`
	// NoSelfCheck: the path works for the CA but Detour's self-check,
	// fetching from this host, cannot reach the name's public address
	// (NAT without hairpin): the certificate needs self_check = false.
	NoSelfCheck bool `json:"self_check_off,omitempty"`

	// tier orders the kinds within a verdict: lower first.
	tier int
}

// Rank returns every path kind's verdict for s, best first: what works
// now (least intrusive first: no firewall window before a window), then
// what works after one change (least effort first), then what cannot
// work, each with its reason.
func Rank(s Situation) []Ranked {
	var out []Ranked
	add := func(r Ranked) { out = append(out, r) }
	add(rankWebroot(s))
	add(rankSidePort(s))
	add(rankStandalone(s, "http-01"))
	add(rankStandalone(s, "tls-alpn-01"))
	add(rankALPNForward(s))
	add(rankFrontDoor(s))
	add(rankRFC2136(s))
	add(rankAcmeDNS(s))
	add(rankProvider(s))
	add(rankPersist(s))
	add(rankEmbedded(s))
	add(rankStateless(s))
	for i := range out {
		applyGlobal(s, &out[i])
	}
	order := map[Verdict]int{Works: 0, AfterChange: 1, Impossible: 2}
	slices.SortStableFunc(out, func(a, b Ranked) int {
		return cmp.Or(cmp.Compare(order[a.Verdict], order[b.Verdict]), cmp.Compare(a.tier, b.tier))
	})
	return out
}

// Best returns the first ranked path that is not impossible, and whether
// there is one.
func Best(rs []Ranked) (Ranked, bool) {
	if len(rs) > 0 && rs[0].Verdict != Impossible {
		return rs[0], true
	}
	return Ranked{}, false
}

// webChallenge reports whether typ needs the host's web ports.
func webChallenge(typ string) bool { return typ == "http-01" || typ == "tls-alpn-01" }

// applyGlobal applies what blocks paths whatever their own state: the
// identifier's type, DNS addresses, CAA, DNSSEC, what the CA offers.
func applyGlobal(s Situation, r *Ranked) {
	impossible := func(why string) {
		r.Verdict, r.Why, r.Change, r.Snippet = Impossible, why, "", ""
	}
	web := webChallenge(r.Challenge)
	switch {
	case s.DNSSECBroken:
		impossible("the zone's DNSSEC chain is broken (" + s.DNSSECReason + "): the CA's lookups of CAA (and of any DNS record) fail, so no validation can succeed")
		return
	case s.CAAForbids != "":
		impossible(s.CAAForbids)
		return
	case s.CAAMethods != nil && !slices.Contains(s.CAAMethods, r.Challenge):
		impossible(fmt.Sprintf("CAA allows only validationmethods=%s for this CA, not %s", strings.Join(s.CAAMethods, ","), r.Challenge))
		return
	case s.CAOffers != nil && !slices.Contains(s.CAOffers, r.Challenge):
		impossible(fmt.Sprintf("the CA does not offer %s (it offers %s)", r.Challenge, strings.Join(s.CAOffers, ", ")))
		return
	case s.Wildcard && web:
		impossible("a wildcard name can only be validated through DNS (RFC 8555 §7.1.3)")
		return
	case s.IP && !web:
		impossible("an IP address can only be validated over http-01 or tls-alpn-01 (RFC 8738)")
		return
	case s.NoZone != "" && r.Verdict != Impossible:
		r.Verdict, r.Why, r.Snippet = AfterChange, s.NoZone, ""
		r.Change = "check the spelling of " + s.Name + ", and that its domain is registered and delegated to name servers (`dig SOA` from another network); then run doctor again"
		r.tier += 30
	case s.CAAChange != "":
		r.Verdict, r.Why, r.Change, r.Snippet = AfterChange, s.CAAChange, s.CAAChange, ""
		r.tier += 20
	case web && s.AddressProblem != "" && r.Verdict != Impossible:
		// Fixing the record is one change and cheap: these stay ahead of
		// setting up a DNS path from nothing.
		r.Verdict = AfterChange
		r.Why = s.AddressProblem
		r.Change, r.Snippet = s.AddressFix, ""
		r.tier += 2
	case web && s.NAT && r.Verdict == Works && !r.NoSelfCheck && !probedOK(s, r):
		// Nothing here proves the CA gets through the NAT; nothing
		// proves it does not either. Detour's own self-check cannot
		// tell from inside, so it is turned off, and the why says what
		// the router must do.
		r.NoSelfCheck = true
		r.Why += fmt.Sprintf("; %s's address is on no interface of this host (NAT or a balancer): the router must forward port %d to this host, and the self-check, which cannot reach the public address from inside, is turned off for this certificate",
			s.Name, portOf(s, r.Challenge))
	}
}

// probedOK reports whether a probe fetched through the name's public
// address proved r (hairpin NAT works): the self-check can stay on.
func probedOK(s Situation, r *Ranked) bool {
	switch r.Kind {
	case "webroot":
		return s.WebrootProbe.OK
	case "side-port":
		return s.SidePortProbe.OK
	}
	return false
}

// portOf is the port the CA connects to for typ.
func portOf(s Situation, typ string) int {
	if typ == "tls-alpn-01" {
		return cmp.Or(s.TLSPort, 443)
	}
	return cmp.Or(s.HTTPPort, 80)
}

func rankWebroot(s Situation) Ranked {
	r := Ranked{Kind: "webroot", Challenge: "http-01", tier: 1}
	switch {
	case s.Server80 == "":
		r.Verdict, r.Why = Impossible, "nothing serves files on port 80 (it is free: standalone binds it instead)"
	case s.Webroot == "" && s.Proxies:
		r.Verdict, r.Why = Impossible, fmt.Sprintf("%s's block for %s proxies every request; no document root serves files (side-port forwards the challenge path instead)", s.Server80, s.Name)
	case s.Webroot == "":
		r.Verdict, r.Why = Impossible, fmt.Sprintf("no document root of %s for %s was found", s.Server80, s.Name)
	case s.WebrootProbe.Unproven:
		r.Verdict, r.Why, r.NoSelfCheck = Works, fmt.Sprintf("the probe file written under %s could not be fetched from this host: %s; the CA fetches from outside", s.Webroot, s.WebrootProbe.Why), true
		r.Settings = map[string]string{"root": s.Webroot}
	case s.WebrootProbe.OK:
		r.Verdict, r.Why = Works, fmt.Sprintf("a probe file written under %s was served on port 80 for %s over every address family the CA uses", s.Webroot, s.Name)
		r.Settings = map[string]string{"root": s.Webroot}
	case s.WebrootProbe.Ran:
		r.Verdict, r.Why, r.Change = AfterChange, "the probe file written under "+s.Webroot+" was not served: "+s.WebrootProbe.Why, s.WebrootProbe.Fix
		r.Settings = map[string]string{"root": s.Webroot}
		r.tier = 2
	default:
		r.Verdict, r.Why = AfterChange, "the document root "+s.Webroot+" was not probed"
		r.Change = "run detour doctor as a user who may write " + s.Webroot
		r.Settings = map[string]string{"root": s.Webroot}
		r.tier = 2
	}
	return withWindow(s, r, s.Firewall80)
}

func rankSidePort(s Situation) Ranked {
	r := Ranked{Kind: "side-port", Challenge: "http-01", tier: 2}
	listen := cmp.Or(s.SidePortListen, "127.0.0.1:8402")
	r.Settings = map[string]string{"listen": listen}
	switch {
	case s.Server80 == "":
		r.Verdict, r.Why, r.Settings = Impossible, "nothing holds port 80 to forward the challenge path (standalone binds it instead)", nil
	case s.ACMEForward != "" && s.SidePortProbe.Unproven:
		r.Verdict, r.Why, r.NoSelfCheck = Works, fmt.Sprintf("%s already forwards /.well-known/acme-challenge/ to %s; the probe could not be fetched from this host (%s); the CA fetches from outside", s.Server80, s.ACMEForward, s.SidePortProbe.Why), true
	case s.ACMEForward != "" && s.SidePortProbe.OK:
		r.Verdict, r.Why = Works, fmt.Sprintf("%s already forwards /.well-known/acme-challenge/ to %s, and a probe answered there was served on port 80", s.Server80, s.ACMEForward)
	case s.ACMEForward != "" && !s.SidePortProbe.Ran:
		r.Verdict, r.Why = Works, fmt.Sprintf("%s already forwards /.well-known/acme-challenge/ to %s (not probed: %s)", s.Server80, s.ACMEForward, cmp.Or(s.SidePortProbe.Why, "doctor ran without probes"))
	case s.ACMEForward != "" && s.SidePortProbe.Ran:
		r.Verdict, r.Why, r.Change = AfterChange, fmt.Sprintf("%s forwards /.well-known/acme-challenge/ to %s, but the probe was not served: %s", s.Server80, s.ACMEForward, s.SidePortProbe.Why), s.SidePortProbe.Fix
		r.tier = 3
	case s.Server80 == "unknown":
		r.Verdict = AfterChange
		r.Why = fmt.Sprintf("%s holds port 80; it is not a web server Detour knows, so whether it can forward a path is unknown", cmp.Or(s.Holder80, "a program"))
		r.Change = fmt.Sprintf("if it can, make it forward /.well-known/acme-challenge/ to %s (e.g. put nginx or HAProxy in front of it)", listen)
		r.tier = 9
	default:
		r.Verdict = AfterChange
		r.Why = fmt.Sprintf("%s holds port 80 and does not forward /.well-known/acme-challenge/ yet", s.Server80)
		r.Change = fmt.Sprintf("add the forward of /.well-known/acme-challenge/ to %s in %s's configuration for %s, then reload it", listen, s.Server80, s.Name)
		r.Snippet = s.SidePortSnippet
		r.tier = 3
		if s.Proxies {
			// An app behind the proxy serves no files: the forward is the
			// one change, and the cheapest.
			r.tier = 1
		}
	}
	return withWindow(s, r, s.Firewall80)
}

func rankStateless(s Situation) Ranked {
	r := Ranked{Kind: "stateless", Challenge: "http-01", tier: 6}
	switch s.Server80 {
	case "":
		r.Verdict, r.Why = Impossible, "nothing holds port 80 to answer by itself"
	case "nginx", "apache", "haproxy", "caddy", "lighttpd", "traefik":
		r.Verdict, r.Why = AfterChange, s.Server80+" can answer http-01 by itself with the account's thumbprint"
		r.Change = "add the block `detour snippet stateless --server " + s.Server80 + "` prints to " + s.Server80 + "'s configuration for " + s.Name
	default:
		r.Verdict, r.Why = Impossible, "the server on port 80 ("+cmp.Or(s.Holder80, "unknown")+") is not one Detour has a stateless block for"
	}
	return withWindow(s, r, s.Firewall80)
}

func rankStandalone(s Situation, typ string) Ranked {
	r := Ranked{Kind: "standalone", Challenge: typ, tier: 1}
	server, holder, fw, port, std := s.Server80, s.Holder80, s.Firewall80, cmp.Or(s.HTTPPort, 80), 80
	if typ == "tls-alpn-01" {
		server, holder, fw, port, std = s.Server443, s.Holder443, s.Firewall443, cmp.Or(s.TLSPort, 443), 443
		r.tier = 3
	}
	r.Settings = map[string]string{}
	if typ == "tls-alpn-01" {
		r.Settings["challenge"] = typ
	}
	if port != std {
		r.Settings["listen"] = fmt.Sprintf(":%d", port)
	}
	if server != "" {
		r.Verdict, r.Why = Impossible, fmt.Sprintf("%s holds port %d and must keep it", cmp.Or(holder, server), port)
		return r
	}
	r.Verdict, r.Why = Works, fmt.Sprintf("port %d is free: Detour binds it only while the CA validates", port)
	return withWindow(s, r, fw)
}

func rankALPNForward(s Situation) Ranked {
	r := Ranked{Kind: "alpn-forward", Challenge: "tls-alpn-01", tier: 2}
	switch {
	case s.Stream443 == "":
		r.Verdict = Impossible
		if s.Server443 == "" {
			r.Why = "nothing holds port 443 to forward acme-tls/1 (standalone binds it instead)"
		} else {
			r.Why = fmt.Sprintf("%s terminates TLS on port 443 itself (not a TCP proxy such as an nginx stream or a HAProxy mode tcp frontend); front-door puts Detour in front instead", cmp.Or(s.Holder443, s.Server443))
		}
		return r
	case s.ALPNRoute != "" && s.ALPNRouteBusy != "":
		r.Verdict, r.Why = AfterChange, fmt.Sprintf("the %s on port 443 sends acme-tls/1 to %s, but %s listens there", s.Stream443, s.ALPNRoute, s.ALPNRouteBusy)
		r.Change = "point the acme-tls/1 route at a free address (Detour listens there only while the CA validates), e.g. 127.0.0.1:8403, and reload"
		r.Settings = map[string]string{"listen": "127.0.0.1:8403"}
		r.tier = 4
	case s.ALPNRoute != "":
		r.Verdict, r.Why = Works, fmt.Sprintf("the %s on port 443 already sends acme-tls/1 to %s, where nothing else listens", s.Stream443, s.ALPNRoute)
		r.Settings = map[string]string{"listen": s.ALPNRoute}
	default:
		r.Verdict, r.Why = AfterChange, fmt.Sprintf("port 443 is a %s: it can send acme-tls/1 connections to Detour", s.Stream443)
		r.Change = "add the acme-tls/1 route to 127.0.0.1:8403 in the " + s.Stream443 + " configuration, then reload it"
		r.Snippet = s.ALPNSnippet
		r.Settings = map[string]string{"listen": "127.0.0.1:8403"}
		r.tier = 4
	}
	return withWindow(s, r, s.Firewall443)
}

func rankFrontDoor(s Situation) Ranked {
	r := Ranked{Kind: "front-door", Challenge: "tls-alpn-01", tier: 8}
	if s.Server443 == "" {
		r.Verdict, r.Why = Impossible, "nothing holds port 443 to put Detour in front of (standalone binds it instead)"
		return r
	}
	r.Verdict, r.Why = AfterChange, fmt.Sprintf("%s holds port 443; Detour's router can take :443 and pass every other connection to it", cmp.Or(s.Holder443, s.Server443))
	r.Change = "move " + s.Server443 + "'s HTTPS listener to a local port (e.g. 127.0.0.1:8443) and run `detour router` on :443"
	return withWindow(s, r, s.Firewall443)
}

// withWindow applies the local firewall's verdict on the path's port:
// a drop makes the path open a window (Detour does it; still Works, but
// after the paths that need none).
func withWindow(s Situation, r Ranked, fw string) Ranked {
	if r.Verdict == Impossible || fw != "drop" {
		return r
	}
	backend := s.FirewallBackend
	if backend == "" {
		r.Verdict, r.Why = Impossible, r.Why+"; but the host firewall drops inbound connections to the port and no firewall Detour can open was recognised"
		r.Change, r.Snippet = "", ""
		return r
	}
	r.Window = backend
	if r.Settings == nil {
		r.Settings = map[string]string{}
	}
	r.Settings["firewall"] = backend
	r.Why += "; the host firewall drops the port, so Detour opens it in " + backend + " only while the CA validates"
	if s.CloudBackend != "" {
		r.Why += fmt.Sprintf(" (on %s the cloud firewall may drop it too, which this host cannot see: then list it first, firewall = [%q, %q], with its firewall_id)", s.Cloud, s.CloudBackend, backend)
	}
	// A temporary hole ranks after the paths that need none, and after a
	// proven DNS update.
	r.tier += 5
	return r
}

func rankRFC2136(s Situation) Ranked {
	r := Ranked{Kind: "rfc2136", Challenge: "dns-01", tier: 5}
	switch {
	case s.RFC2136Key != "":
		r.Verdict = Works
		r.Why = fmt.Sprintf("the zone's primary %s accepted an update signed with the TSIG key %s (%s) that changed nothing", s.RFC2136Server, s.RFC2136Key, s.RFC2136Source)
		r.Settings = map[string]string{"tsig_key": s.RFC2136Key, "tsig_algorithm": s.RFC2136Algorithm}
		if path, ok := strings.CutPrefix(s.RFC2136Source, "config path."); ok {
			r.Existing, r.Settings = path, nil
		} else if strings.HasPrefix(s.RFC2136Source, "/") {
			r.Settings["tsig_secret_file"] = s.RFC2136Source
		}
		if s.RFC2136Server != "" && r.Existing == "" {
			r.Settings["server"] = s.RFC2136Server
		}
	case s.RFC2136Refused != "":
		r.Verdict, r.Why = AfterChange, "the zone's primary refused the updates tried: "+s.RFC2136Refused
		r.Change = "allow the key to update " + s.Zone + " on the primary (BIND: update-policy { grant KEY zonesub TXT; };)"
		r.tier = 9
	default:
		r.Verdict, r.Why = AfterChange, "no TSIG key for the zone "+s.Zone+" is known to Detour"
		r.Change = "create a TSIG key allowed to update TXT records in " + s.Zone + " on its primary (tsig-keygen), then rerun doctor with --tsig-key-file"
		r.tier = 11
	}
	return r
}

func rankAcmeDNS(s Situation) Ranked {
	r := Ranked{Kind: "acme-dns", Challenge: "dns-01", tier: 5}
	switch {
	case s.AcmeDNSCNAME != "" && s.AcmeDNSLive && s.AcmeDNSServer != "":
		r.Verdict, r.Why = Works, fmt.Sprintf("_acme-challenge.%s is a CNAME to %s, whose zone answers, and Detour holds the acme-dns registration at %s", s.Name, s.AcmeDNSCNAME, s.AcmeDNSServer)
		r.Settings = map[string]string{"server": s.AcmeDNSServer}
	case s.AcmeDNSCNAME != "" && s.AcmeDNSLive:
		r.Verdict, r.Why = AfterChange, fmt.Sprintf("_acme-challenge.%s is a CNAME to %s, whose zone answers, but Detour holds no acme-dns registration for %s", s.Name, s.AcmeDNSCNAME, s.Name)
		r.Change = "import the registration (credentials_file = the acme-dns JSON of certbot or lego), or register anew with `detour acme-dns register " + s.Name + " --server URL` and update the CNAME to the target it prints"
		r.Placeholders = map[string][2]string{"server": {"https://acme-dns.example.com", "the acme-dns server's API URL"}}
		r.tier = 7
	case s.AcmeDNSCNAME != "":
		r.Verdict, r.Why = AfterChange, fmt.Sprintf("_acme-challenge.%s is a CNAME to %s, but that zone does not answer", s.Name, s.AcmeDNSCNAME)
		r.Change = "start the acme-dns server the CNAME points to (or `detour dns-server`), or point the CNAME at a live one"
		r.Placeholders = map[string][2]string{"server": {"https://acme-dns.example.com", "the acme-dns server's API URL"}}
		r.tier = 8
	default:
		r.Verdict, r.Why = AfterChange, "no _acme-challenge CNAME exists; acme-dns needs one CNAME once, then no DNS change per renewal"
		r.Change = "run `detour acme-dns register " + s.Name + " --server URL` and create the CNAME it prints"
		r.Placeholders = map[string][2]string{"server": {"https://acme-dns.example.com", "the acme-dns server's API URL"}}
		r.tier = 10
	}
	return r
}

func rankProvider(s Situation) Ranked {
	r := Ranked{Kind: "dns-provider", Challenge: "dns-01", tier: 5}
	switch {
	case s.ProviderConfigured != "":
		r.Verdict, r.Why = Works, "the configuration has a dns-provider path for "+s.ProviderConfigured
		r.Existing = s.ProviderPath
	case s.Provider != "":
		r.Verdict, r.Why = AfterChange, fmt.Sprintf("the zone %s is served by %s's name servers", s.Zone, s.Provider)
		r.Change = fmt.Sprintf("create an API credentials file for %s (mode 0600; `detour paths dns-provider %s` lists its keys)", s.Provider, s.Provider)
		r.Settings = map[string]string{"provider": s.Provider, "credentials_file": "/etc/detour/" + s.Provider + ".credentials"}
		r.tier = 6
	default:
		r.Verdict, r.Why = AfterChange, "the zone's name servers belong to no provider Detour recognises"
		r.Change = "if the DNS provider has an API, pick it from `detour paths dns-provider` and create its credentials file"
		r.Placeholders = map[string][2]string{"provider": {"cloudflare", "your DNS provider, as `detour paths dns-provider` names it"},
			"credentials_file": {"/etc/detour/dns.credentials", "its credentials file (mode 0600)"}}
		r.tier = 12
	}
	return r
}

func rankPersist(s Situation) Ranked {
	r := Ranked{Kind: "persist", Challenge: "dns-persist-01", tier: 4}
	switch {
	case s.PersistOK:
		r.Verdict, r.Why = Works, "_validation-persist."+s.Name+" names this account and the CA"
	default:
		r.Verdict, r.Why = AfterChange, "no _validation-persist record for this account and CA"
		r.Change = "publish once the TXT record `detour persist-record " + s.Name + "` prints"
		r.tier = 7
	}
	// Only where the CA offers it (applyGlobal checks CAOffers); unknown
	// means unproven, so it is not recommended over a path known to work.
	if s.CAOffers == nil {
		r.Verdict, r.Why, r.Change = Impossible, "whether the CA offers dns-persist-01 is unknown (its directory does not say; run doctor --staging)", ""
	}
	return r
}

func rankEmbedded(s Situation) Ranked {
	return Ranked{Kind: "dns-embedded", Challenge: "dns-01", tier: 13, Verdict: AfterChange,
		Why:    "Detour can answer for a delegated _acme-challenge zone itself",
		Change: "delegate _acme-challenge." + s.Name + " (NS) to this host and let the CA's resolvers reach it on port 53"}
}
