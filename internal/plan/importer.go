package plan

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/importer"
	"github.com/detour-acme/detour/internal/store"
)

// ImportOptions configure Import.
type ImportOptions struct {
	// Config is the loaded configuration (config.Default() without a
	// file). Required.
	Config *config.Config
	// StateDir overrides the configuration's state directory.
	StateDir string
	// DryRun maps and checks, and writes nothing: not even the state
	// directory is created.
	DryRun bool
	// RootBundle is the PEM file of roots renewals trust for the CA's
	// API (--ca-roots, for a private CA).
	RootBundle string
	// Profile is the ACME profile renewals of the imported certificates
	// ask for, when the source names none.
	Profile string
	// Logger receives what the state directory logs; nil discards.
	Logger *slog.Logger
}

// Import maps src onto Detour (importer.Plan) and applies the plan to the
// state directory (importer.Apply). The error is for what stops the
// whole import; every problem with one entry is in the report.
func Import(ctx context.Context, src importer.Source, opts ImportOptions) (importer.ImportPlan, importer.Report, error) {
	cfg := opts.Config
	if cfg == nil {
		return importer.ImportPlan{}, importer.Report{}, errors.New("importing: no configuration")
	}
	if cfg.Store.IsFleet() {
		return importer.ImportPlan{}, importer.Report{}, fmt.Errorf("importing: the configuration keeps the state in etcd ([store] kind = %q): import into a single host's state directory (a configuration without [store]), then move it with `detour store migrate --to etcd`", cfg.Store.Kind)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	dir := orDefault(opts.StateDir, orDefault(cfg.StateDir, config.DefaultStateDir))
	abs, err := filepath.Abs(dir)
	if err != nil {
		return importer.ImportPlan{}, importer.Report{}, fmt.Errorf("importing: state directory %q: %w", dir, err)
	}
	p := importer.Plan(src, importer.PlanOptions{Config: cfg, StateDir: abs, RootBundle: opts.RootBundle, Profile: opts.Profile})
	var st *store.FS
	if _, err := os.Stat(abs); !opts.DryRun || !errors.Is(err, fs.ErrNotExist) {
		if st, err = store.NewFS(abs, store.FSOptions{Logger: opts.Logger}); err != nil {
			return p, importer.Report{}, err
		}
	}
	rep, err := importer.Apply(ctx, st, p, opts.DryRun)
	return p, rep, err
}
