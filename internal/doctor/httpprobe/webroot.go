package httpprobe

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"github.com/detour-acme/detour/internal/doctor/check"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/solve/webroot"
)

// Check names.
const (
	CheckWebroot  = "http.webroot"
	CheckSidePort = "http.side-port"
)

// cleanupTimeout bounds the removal of a probe once the probe's own
// context may be gone.
const cleanupTimeout = 10 * time.Second

// ChallengePath is where http-01 answers live (RFC 8555 §8.3).
const ChallengePath = "/.well-known/acme-challenge/"

// ProbeWebroot writes a random probe file under
// root/.well-known/acme-challenge/ with the webroot path kind's own code
// (the same modes, the same refusal to follow links out of the root),
// fetches it with Fetch and removes the file and every directory it
// created, whatever happens, also when ctx is cancelled. The check.Result
// is named "http.webroot".
func ProbeWebroot(ctx context.Context, name, root string, opts Options) (Result, check.Result) {
	o := opts.withDefaults()
	ch, err := probeChallenge(name)
	if err != nil {
		return Result{}, skipped(CheckWebroot, name, err)
	}
	s, err := webroot.New(webroot.Options{Logger: o.Logger, Root: root})
	if err != nil {
		return Result{}, cannotWrite(name, root, err)
	}
	root = s.Root()
	file := filepath.Join(root, filepath.FromSlash(strings.TrimPrefix(ch.HTTP01Path(), "/")))
	if err := s.Present(ctx, ch); err != nil {
		return Result{}, cannotWrite(name, root, err)
	}
	res := Fetch(ctx, name, ch.HTTP01Path(), ch.KeyAuthorization, opts)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	cleanErr := s.CleanUp(cctx, ch)
	cancel()

	setup := "wrote the probe file " + file
	if cleanErr == nil {
		setup += ", removed afterwards with the directories it needed"
	}
	p := probe{
		check: CheckWebroot,
		name:  name,
		setup: []string{setup},
		answer: func(fr FamilyResult) (string, string) {
			return webrootAnswer(name, root, fr)
		},
	}
	r := p.verdict(res, o)
	if ctx.Err() != nil {
		r = interrupted(CheckWebroot, name, ctx.Err(), p.setup)
	}
	if cleanErr != nil {
		r.Add("removing the probe: %v", cleanErr)
		if r.Status != check.Problem {
			r.Status = check.Warning
		}
		r.Fix = strings.TrimSpace(r.Fix + " Remove what the probe left under " + filepath.Join(root, ".well-known") + " yourself.")
	}
	return res, r
}

// webrootAnswer explains a wrong final answer to the webroot probe.
func webrootAnswer(name, root string, fr FamilyResult) (summary, fix string) {
	h := fr.last()
	summary = fmt.Sprintf("over %s %s", fr.Family, failureText(fr))
	other := fmt.Sprintf("set the webroot path's root to the document root of the server block that serves %s on port 80 "+
		"(nginx: its `root`; Apache: DocumentRoot), or make that block serve %s for /.well-known/acme-challenge/ "+
		"(nginx: `location ^~ /.well-known/acme-challenge/ { root %s; }`)", name, root, root)
	switch {
	case fr.Failure == FailStatus && (h.Status == http.StatusNotFound || h.Status == http.StatusGone):
		summary = fmt.Sprintf("the web server serves another document root for %s: the probe file was written under %s, "+
			"but over %s %s", name, root, fr.Family, failureText(fr))
		fix = other + "; and check that no rewrite or try_files catches /.well-known/acme-challenge/"
	case fr.Failure == FailStatus && (h.Status == http.StatusUnauthorized || h.Status == http.StatusForbidden):
		fix = "the server refuses /.well-known/acme-challenge/: allow it without authentication or address restrictions " +
			"(the CA connects from addresses it does not publish), and check that the server's user can read " + root
	case fr.Failure == FailStatus:
		fix = "the server did not serve the file: check its error log for /.well-known/acme-challenge/"
	default: // FailBody
		summary = fmt.Sprintf("the web server answers the probe's URL with something else than the file written under %s: "+
			"over %s %s", root, fr.Family, failureText(fr))
		fix = "a catch-all (a rewrite, a single-page app, a proxy to an application) or another document root answers " +
			"/.well-known/acme-challenge/: exempt that path from it, or " + other
	}
	return summary, fix
}

// cannotWrite reports a probe file that could not be written; err, from
// the webroot path kind, says what to change.
func cannotWrite(name, root string, err error) check.Result {
	r := check.New(CheckWebroot, name, check.Problem, "cannot write a probe file under "+root)
	r.Add("%v", err)
	r.Fix = "the webroot path writes its answers there: give Detour's user write access to " + root +
		" (or run Detour as its owner), or set root to the document root the web server really serves for " + name
	return r
}

// skipped reports a probe that does not apply.
func skipped(checkName, name string, err error) check.Result {
	r := check.New(checkName, name, check.Skipped, "not probed: "+err.Error())
	return r
}

// interrupted reports a probe whose context ended before it finished:
// nothing is concluded.
func interrupted(checkName, name string, err error, setup []string) check.Result {
	r := check.New(checkName, name, check.Skipped, "interrupted before the probe finished: "+err.Error())
	r.Evidence = append(r.Evidence, setup...)
	return r
}

// probeChallenge returns an http-01 challenge for name with a random token
// and a random answer, marked as doctor's.
func probeChallenge(name string) (solve.Challenge, error) {
	id, err := ident.Parse(name)
	if err != nil {
		return solve.Challenge{}, err
	}
	if !solve.Applicable(solve.HTTP01, id) {
		return solve.Challenge{}, fmt.Errorf("%s cannot be validated over http-01 (a wildcard needs dns-01)", name)
	}
	return solve.Challenge{
		Type:             solve.HTTP01,
		Identifier:       id,
		Token:            random(32),
		KeyAuthorization: "detour-doctor-probe." + random(16),
	}, nil
}

// random returns n random bytes in base64url.
func random(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}
