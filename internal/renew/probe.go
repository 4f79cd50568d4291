package renew

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/detour-acme/detour/internal/acme"
	"github.com/detour-acme/detour/internal/ident"
	"github.com/detour-acme/detour/internal/solve"
)

// probe checks, before the order is created, that each identifier's first
// http-01 or tls-alpn-01 path really answers: it presents a challenge of
// Detour's own (a random token, with the account's real key
// authorization, so that a stateless path answers it too), self-checks it
// the way the CA will, and cleans it up. A path that fails is passed over
// (the log says why); an identifier left without a path fails the
// renewal with every reason, before any order exists, so a host that
// cannot pass costs no order and no failed validation. DNS paths are not
// probed (their Wait checks propagation once the real record is set); the
// real answers are self-checked again when the CA's challenges come.
func (m *Manager) probe(ctx context.Context, req Request, acct acme.Account, cands candidates) (candidates, error) {
	tp, err := acme.Thumbprint(acct)
	if err != nil {
		return cands, err
	}
	j := &journal{m: m, name: req.Name}
	out := make(candidates, len(cands))
	var problems []string
	for _, id := range req.Identifiers {
		var reasons []string
		paths := cands[id]
		for i, p := range paths {
			typ := p.Solver.Type()
			if _, waits := p.Solver.(solve.Waiter); waits || (typ != solve.HTTP01 && typ != solve.TLSALPN01) {
				// Nothing to fetch before the order: keep it and the rest.
				out[id] = append(out[id], paths[i:]...)
				break
			}
			err := m.probeOne(ctx, req, p, id, tp, acct.Location, j)
			if err == nil {
				out[id] = append(out[id], paths[i:]...)
				break
			}
			if ctx.Err() != nil {
				return cands, ctx.Err()
			}
			reasons = append(reasons, fmt.Sprintf("%s (%s): %v", p.Name, typ, err))
			m.log.WarnContext(ctx, "path passed over: a probe of Detour's own failed its self-check", "identifier", id.Value, "path", p.Name, "error", err)
		}
		if len(out[id]) == 0 {
			problems = append(problems, fmt.Sprintf("no path can validate %s (a probe of Detour's own, checked the way the CA checks, failed; no order was created):\n    %s",
				id.Value, strings.Join(reasons, "\n    ")))
		}
	}
	if len(problems) > 0 {
		return cands, &presentError{errors.New(strings.Join(problems, "\n  "))}
	}
	return out, nil
}

// probeOne presents, self-checks and cleans up one probe challenge.
func (m *Manager) probeOne(ctx context.Context, req Request, p solve.Path, id ident.Identifier, thumbprint, accountURL string, j *journal) error {
	var raw [24]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return err
	}
	token := base64.RawURLEncoding.EncodeToString(raw[:])
	ch := solve.Challenge{Type: p.Solver.Type(), Identifier: id, Token: token, KeyAuthorization: token + "." + thumbprint, AccountURL: accountURL}
	entry := journalEntry{Path: p.Name, Challenge: ch}
	if !req.DryRun {
		// A crash between Present and CleanUp leaves the probe for Sweep.
		if err := j.add(ctx, entry); err != nil {
			return err
		}
	}
	err := p.Solver.Present(ctx, ch)
	shown := err // what the progress event says
	if err != nil {
		shown = fmt.Errorf("putting the probe in place: %w", err)
	} else if err = req.SelfCheck(ctx, p, ch); err != nil {
		shown = err
		err = fmt.Errorf("self-check failed, so the CA was not asked: %w", err)
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cleanup)
	defer cancel()
	if cerr := p.Solver.CleanUp(cctx, ch); cerr != nil {
		m.log.ErrorContext(cctx, "cleaning up a probe failed", "identifier", id.Value, "path", p.Name, "error", cerr)
	} else if !req.DryRun {
		j.drop(cctx, entry)
	}
	if ctx.Err() == nil {
		req.progress.emit(Event{Kind: EventProbe, Identifier: id.Value, Path: p.Name, Challenge: ch.Type, Err: shown})
		if shown != nil {
			req.progress.skip(id.Value, p.Name, EventProbe, "its probe failed: "+shown.Error())
		}
	}
	return err
}
