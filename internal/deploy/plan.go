package deploy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// Plan is everything done after a new version of a certificate is live, in
// this order: write the extra outputs, reload the servers, run the hook.
// Each step runs even when an earlier one failed (a server reloaded without
// its extra output still serves the new live files); the errors are joined.
type Plan struct {
	Outputs []Output
	Reloads []Reload
	Hook    Hook
}

// Empty reports whether the plan does nothing.
func (p Plan) Empty() bool {
	return len(p.Outputs) == 0 && len(p.Reloads) == 0 && p.Hook.Command == ""
}

// Run carries out the plan for i, logging each step to log (nil: discard).
func (p Plan) Run(ctx context.Context, i Info, log *slog.Logger) error {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var errs []error
	for _, o := range p.Outputs {
		if err := o.Write(i); err != nil {
			errs = append(errs, err)
			log.ErrorContext(ctx, "writing output failed", "certificate", i.Name, "output", o.Path, "error", err)
			continue
		}
		log.InfoContext(ctx, "output written", "certificate", i.Name, "output", o.Path, "format", o.Format)
	}
	for _, r := range p.Reloads {
		if err := r.Run(ctx); err != nil {
			errs = append(errs, err)
			log.ErrorContext(ctx, "reload failed", "certificate", i.Name, "server", r.Server, "error", err)
			continue
		}
		log.InfoContext(ctx, "server reloaded", "certificate", i.Name, "server", r.Server)
	}
	if p.Hook.Command != "" {
		if _, err := p.Hook.Run(ctx, i); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("deploying %s: %w", i.Name, err)
	}
	return nil
}
