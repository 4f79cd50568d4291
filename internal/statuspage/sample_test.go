package statuspage

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// sampleNow is the clock of the sample pages.
var sampleNow = time.Date(2026, 5, 20, 12, 0, 0, 0, time.UTC)

// sampleError is a failed validation as Detour reports it: the CA's
// problem, then the explanation and the fix on the lines after.
const sampleError = `certificate "shop.example.net": validation: acme: urn:ietf:params:acme:error:connection: 192.0.2.10: Fetching http://shop.example.net/.well-known/acme-challenge/x: Timeout (path web)
    The CA could not connect to shop.example.net on port 80/tcp: its connection got no answer in time. Allow inbound TCP 80 from anywhere, or use a DNS path (dns-01 needs no inbound port)`

// sampleCert returns certificate i of a sample page: mostly good, with a
// failing, a renewing and a broken one among them.
func sampleCert(i int) Certificate {
	name := fmt.Sprintf("site%04d.example.com", i)
	nb := sampleNow.Add(-time.Duration(i%80) * 24 * time.Hour).Add(-time.Hour)
	c := Certificate{Name: name, Identifiers: []string{name, "www." + name}, State: StateOK, Version: 1 + i%5,
		Serial: fmt.Sprintf("%032x", i*7919), NotBefore: nb, NotAfter: nb.Add(90 * 24 * time.Hour),
		CA: "https://acme-v02.api.letsencrypt.org/directory", Paths: []string{"web", "dns"},
		ARIStart: nb.Add(60 * 24 * time.Hour), ARIEnd: nb.Add(62 * 24 * time.Hour), NextRenewal: nb.Add(61 * 24 * time.Hour),
		NextReason: "inside the CA's renewal window",
		Last:       &Attempt{Time: nb, OK: true, Path: "web", CA: "letsencrypt", Seconds: 4.2}}
	switch {
	case i%50 == 7:
		c.State, c.Failures = StateFailing, 3
		c.Problem = "the last renewal failed: " + strings.SplitN(sampleError, "\n", 2)[0]
		c.Fix = "see the error; the next attempt is at 2026-05-20T14:00:00Z"
		c.Last = &Attempt{Time: sampleNow.Add(-time.Hour), Path: "web", CA: "letsencrypt", Stage: "validation", Error: sampleError, Seconds: 12}
	case i%50 == 13:
		c.State = StateRenewing
	case i%100 == 42:
		c = Certificate{Name: name, Identifiers: []string{}, Paths: []string{}, State: StateBroken,
			Problem: "its record renewal/" + name + ".json cannot be read: unexpected end of JSON input",
			Fix:     "`detour renew " + name + "` (and the agent) rebuild the record from live/" + name + " and the configuration"}
	}
	return c
}

// samplePage returns a page of n certificates.
func samplePage(n int) Page {
	p := Page{Generated: sampleNow, Agent: Agent{Version: "v1.0.0 (commit 0123456789ab)", Started: sampleNow.Add(-48 * time.Hour), StateDir: "/var/lib/detour"}}
	for i := range n {
		p.Certificates = append(p.Certificates, sampleCert(i))
	}
	p.Windows = []Window{{Backend: "nftables", Port: 80, Family: "ipv4", Identifier: "site0007.example.com",
		Opened: sampleNow.Add(-20 * time.Second), Until: sampleNow.Add(100 * time.Second)}}
	return p
}

// sampleDetail is the page of the sample's failing certificate.
func sampleDetail() Detail {
	c := sampleCert(7)
	d := Detail{Generated: sampleNow, Certificate: c,
		Versions: []Version{{Version: 3, Serial: "0a1b2c", NotAfter: c.NotAfter, Live: true}, {Version: 2, Serial: "09f8e7", NotAfter: c.NotAfter.Add(-60 * 24 * time.Hour)}},
		Deploy: []DeployTarget{{Kind: "reload", Target: "nginx", Result: DeployOK, At: c.NotBefore},
			{Kind: "output", Target: "/etc/haproxy/certs/site.pem", Result: DeployFailed, At: c.NotBefore, Error: "output /etc/haproxy/certs/site.pem: creating the file: permission denied"}}}
	d.History = []Attempt{*c.Last, {Time: c.NotBefore, OK: true, Path: "web", CA: "letsencrypt", Seconds: 4.2, Version: 3, Serial: "0a1b2c",
		Steps: []Step{{Name: "wait", Seconds: 0.001}, {Name: "obtain", Seconds: 3.9}, {Name: "deploy", Seconds: 0.3}}}}
	return d
}

// fixedSource serves a fixed page and detail.
type fixedSource struct {
	page   Page
	detail Detail
}

func (s fixedSource) Page(context.Context) (Page, error) { return s.page, nil }

func (s fixedSource) Detail(_ context.Context, name string) (Detail, error) {
	if name != s.detail.Certificate.Name {
		return Detail{}, fmt.Errorf("%q: %w", name, ErrNotFound)
	}
	return s.detail, nil
}
