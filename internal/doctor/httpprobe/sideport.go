package httpprobe

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"

	"github.com/detour-acme/detour/internal/doctor/check"
	"github.com/detour-acme/detour/internal/solve/selfcheck"
	"github.com/detour-acme/detour/internal/solve/sideport"
)

// detourNotFound starts the body of the 404 Detour's side port answers for
// a token it does not hold (internal/solve/standalone).
const detourNotFound = "detour: "

// ProbeSidePort listens on listen ("127.0.0.1:8402" when empty, the
// side-port kind's default; or "unix:/path") for the duration of the
// probe with the side-port path kind's own responder, answers
// /.well-known/acme-challenge/<random> with a random body, fetches it with
// Fetch (through the web server on Port, which must forward the path to
// listen), then closes the listener. When listen is busy it says which
// process holds it; a Detour already answering there is fine, and the
// probe is then skipped. The check.Result is named "http.side-port".
func ProbeSidePort(ctx context.Context, name, listen string, opts Options) (Result, check.Result) {
	o := opts.withDefaults()
	if listen == "" {
		listen = sideport.DefaultAddr
	}
	network, address, err := sideport.ParseAddr(listen)
	if err != nil {
		r := check.New(CheckSidePort, name, check.Problem, err.Error())
		r.Fix = "set listen to host:port, such as " + sideport.DefaultAddr + ", or unix:/run/detour/http.sock"
		return Result{}, r
	}
	ch, err := probeChallenge(name)
	if err != nil {
		return Result{}, skipped(CheckSidePort, name, err)
	}
	s, err := sideport.New(sideport.Options{Logger: o.Logger, Addr: listen})
	if err != nil {
		return Result{}, check.New(CheckSidePort, name, check.Problem, err.Error())
	}
	defer s.Close()
	if err := s.Present(ctx, ch); err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return Result{}, busy(ctx, name, listen, network, address, o)
		}
		r := check.New(CheckSidePort, name, check.Problem, "cannot listen on "+listen)
		r.Add("%v", err)
		r.Fix = "the side-port path listens there while validating: choose an address Detour can bind " +
			"(a port above 1024 on 127.0.0.1, such as " + sideport.DefaultAddr + ") and point the forward at it"
		return Result{}, r
	}
	res := Fetch(ctx, name, ch.HTTP01Path(), ch.KeyAuthorization, opts)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	cleanErr := s.CleanUp(cctx, ch) // the last CleanUp releases the listener
	cancel()
	closeErr := s.Close()

	p := probe{
		check: CheckSidePort,
		name:  name,
		setup: []string{fmt.Sprintf("listened on %s with the side-port responder for the probe, closed afterwards", listen)},
		answer: func(fr FamilyResult) (string, string) {
			return sidePortAnswer(name, listen, fr)
		},
	}
	r := p.verdict(res, o)
	if ctx.Err() != nil {
		r = interrupted(CheckSidePort, name, ctx.Err(), p.setup)
	}
	if err := errors.Join(cleanErr, closeErr); err != nil {
		r.Add("closing the side port: %v", err)
	}
	return res, r
}

// sidePortAnswer explains a wrong final answer to the side-port probe:
// the web server did not pass the request to the probe's listener.
func sidePortAnswer(name, listen string, fr FamilyResult) (summary, fix string) {
	h := fr.last()
	summary = fmt.Sprintf("over %s %s", fr.Family, failureText(fr))
	snippet := "`detour snippet http --addr " + listen + "`"
	if srv := selfcheck.SnippetServer(h.Server); srv != "" {
		snippet = "`detour snippet http --server " + srv + " --addr " + listen + "`"
	}
	switch {
	case fr.Failure == FailStatus && h.Status == http.StatusNotFound && strings.HasPrefix(fr.Body, detourNotFound):
		summary = fmt.Sprintf("a Detour side port answered, but not for this probe: %s", strings.TrimSpace(fr.Body))
		if strings.Contains(fr.Body, "Host header") {
			fix = "the forward reaches Detour but changes the Host header: keep it (nginx: `proxy_set_header Host $host;`), as the block printed by " + snippet + " does"
		} else {
			fix = "the forward leads to another Detour than the side port at " + listen + ": make the forward's target " + listen + " (" + snippet + " prints the block)"
		}
	case fr.Failure == FailStatus && (h.Status == http.StatusNotFound || h.Status == http.StatusGone):
		summary = fmt.Sprintf("the web server does not forward /.well-known/acme-challenge/ of %s to %s: over %s %s",
			name, listen, fr.Family, failureText(fr))
		fix = "add the block printed by " + snippet + " to the server block that serves " + name + " on port 80"
	case fr.Failure == FailStatus && (h.Status == http.StatusBadGateway || h.Status == http.StatusServiceUnavailable ||
		h.Status == http.StatusGatewayTimeout):
		summary = fmt.Sprintf("the web server forwards the path, but not to %s, where the probe was answered: over %s %s",
			listen, fr.Family, failureText(fr))
		fix = "make the forward's target " + listen + " (" + snippet + " prints the block)"
	case fr.Failure == FailStatus && (h.Status == http.StatusUnauthorized || h.Status == http.StatusForbidden):
		fix = "the server refuses /.well-known/acme-challenge/: allow it without authentication or address restrictions " +
			"(the CA connects from addresses it does not publish), then add the block printed by " + snippet
	case fr.Failure == FailStatus:
		fix = "the server failed on /.well-known/acme-challenge/: check its error log, and the block printed by " + snippet
	default: // FailBody
		summary = fmt.Sprintf("something else than the side port answers /.well-known/acme-challenge/ of %s: over %s %s",
			name, fr.Family, failureText(fr))
		fix = "a static file, another ACME client's block or a catch-all answers that path before the forward: " +
			"remove it, and add the block printed by " + snippet + " (a `location ^~` wins over regex locations)"
	}
	return summary, fix
}

// busy reports a side-port address that something else holds: which
// process, and whether it is a Detour (then the probe is skipped: Detour
// answers there itself).
func busy(ctx context.Context, name, listen, network, address string, o Options) check.Result {
	holders, herr := holdersOf(network, address)
	body, answered := askDetour(ctx, network, address)
	detour := answered
	for _, h := range holders {
		detour = detour || h.isDetour()
	}
	r := check.New(CheckSidePort, name, check.Problem, "")
	for _, h := range holders {
		r.Add("%s is held by %s", listen, h)
	}
	if herr != nil {
		r.Add("finding who holds %s: %v", listen, herr)
	}
	if answered {
		r.Add("it answers an unknown token as Detour's side port does: %q", body)
	}
	who := "something"
	if len(holders) > 0 {
		var names []string
		for _, h := range holders {
			names = append(names, h.String())
		}
		who = strings.Join(names, ", ")
	}
	if detour {
		r.Status = check.Skipped
		r.Summary = fmt.Sprintf("a Detour already listens on %s (%s): not probed; that Detour's side port answers the challenges there", listen, who)
		return r
	}
	if len(holders) == 0 {
		r.Add("no process with this socket is visible here (another user's process needs root to see, or another network namespace)")
	}
	r.Summary = fmt.Sprintf("%s is busy: %s listens there, so the side-port path cannot bind it", listen, who)
	r.Fix = fmt.Sprintf("stop %s, or choose another listen address for the side-port path (a free port on 127.0.0.1) "+
		"and point the web server's forward at it (`detour snippet http --addr ADDRESS`)", who)
	return r
}

// askDetour sends a request for a random token to the busy address and
// reports whether it answered as Detour's side port does.
func askDetour(ctx context.Context, network, address string) (string, bool) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	tr := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, address)
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://detour-doctor.invalid"+ChallengePath+random(32), nil)
	if err != nil {
		return "", false
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	body := strings.TrimSpace(string(b))
	return body, resp.StatusCode == http.StatusNotFound && strings.HasPrefix(body, detourNotFound)
}
