// Package cli implements the detour commands: it parses flags, calls the
// plan layer (package plan) or a capability, and prints. It is the only
// package that reads flags and writes to the terminal, and it holds no
// domain policy and no code of any path kind.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/plan"
)

// Flag names shared by several commands.
const (
	flagConfig    = "config"
	flagStateDir  = "state-dir"
	flagLogLevel  = "log-level"
	flagLogFormat = "log-format"

	flagNoSelfCheck   = "no-self-check"
	flagResolver      = "resolver"
	flagCheckHTTPPort = "check-http-port"
	flagCheckTLSPort  = "check-tls-port"
)

// app holds what the global flags select, loaded lazily by commands.
type app struct {
	stdout, stderr io.Writer

	configFile string
	stateDir   string
	logLevel   string
	logFormat  string

	// Self-check settings: --no-self-check, and for rehearsals against a
	// local CA, the resolver and ports the checks use.
	noSelfCheck                 bool
	resolver                    string
	checkHTTPPort, checkTLSPort int

	log    *slog.Logger
	cfg    *config.Config
	cfgErr error
}

// Run executes the detour command line args and returns the exit code: 0 on
// success, 1 on failure, 2 on a usage error.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(stderr, "detour: interrupted")
		return 1
	}
	fmt.Fprintf(stderr, "detour: %v\n", err)
	var ue *usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// usageError marks a mistake in the command line.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "detour",
		Short: "Get and renew TLS certificates where ports 80/443 or DNS APIs are not available",
		Long: `Detour obtains and renews publicly trusted TLS certificates over ACME (RFC 8555)
on hosts where the usual validation path is blocked: a web server that must keep
ports 80/443, a firewall, NAT, a DNS provider without an API.

Public CAs validate only on port 80 (http-01), port 443 (tls-alpn-01) or through
DNS (dns-01). Detour makes each of those paths work next to what already runs,
checks that a path works before asking the CA, and keeps the working certificate
whatever happens.

Start with a rehearsal against a local CA:    detour sandbox
Issue a certificate:                          detour issue -d example.com --email you@example.com --agree-tos
Renew everything that is due (cron/systemd):  detour renew`,
		Version:       version(debug.ReadBuildInfo()),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.setupLogging()
		},
	}
	root.SetVersionTemplate("detour {{.Version}}\n")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return &usageError{fmt.Errorf("%w\nSee '%s --help'.", err, c.CommandPath())}
	})
	pf := root.PersistentFlags()
	pf.StringVar(&a.configFile, flagConfig, "", "configuration file (default "+config.DefaultFile+"; env DETOUR_CONFIG)")
	pf.StringVar(&a.stateDir, flagStateDir, "", "state directory for accounts and certificates (default from the config, else "+config.DefaultStateDir+"; env DETOUR_STATE_DIR)")
	pf.StringVar(&a.logLevel, flagLogLevel, "info", "log level: debug, info, warn, error")
	pf.StringVar(&a.logFormat, flagLogFormat, "text", "log format: text or json")
	pf.BoolVar(&a.noSelfCheck, flagNoSelfCheck, false, "do not fetch answers before asking the CA (hosts behind NAT without hairpin)")
	pf.StringVar(&a.resolver, flagResolver, "", "DNS server (host:port) the self-check resolves names with (default: the system's)")
	pf.IntVar(&a.checkHTTPPort, flagCheckHTTPPort, 0, "port the self-check fetches http-01 answers on (default 80; for rehearsals)")
	pf.IntVar(&a.checkTLSPort, flagCheckTLSPort, 0, "port the self-check connects to for tls-alpn-01 (default 443; for rehearsals)")
	_ = pf.MarkHidden(flagCheckHTTPPort)
	_ = pf.MarkHidden(flagCheckTLSPort)
	root.AddCommand(
		a.issueCommand(),
		a.doctorCommand(),
		a.renewCommand(),
		a.runCommand(),
		a.listCommand(),
		a.statusCommand(),
		a.revokeCommand(),
		a.accountCommand(),
		a.sandboxCommand(),
		a.configCommand(),
		a.snippetCommand(),
		a.routerCommand(),
		a.persistRecordCommand(),
		a.firewallCommand(),
		a.fleetCommand(),
		a.storeCommand(),
		a.importCommand(),
		a.dnsServerCommand(),
		a.acmeDNSCommand(),
		a.pathsCommand(),
		versionCommand(root),
	)
	return root
}

// versionCommand prints what --version prints.
func versionCommand(root *cobra.Command) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print Detour's version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "detour %s\n", root.Version)
			return err
		},
	}
}

// version describes the build from its embedded information: the module
// version ("devel" when built from a checkout), the commit and whether the
// work tree had changes, the Go version and the platform, e.g.
// "v1.2.0 (commit 0123456789ab, modified) go1.26.8 linux/amd64". A build
// without VCS stamping (go build -buildvcs=false, go install of a module)
// has commit "unknown".
func version(info *debug.BuildInfo, ok bool) string {
	v, commit, modified, goVersion := "devel", "unknown", false, runtime.Version()
	if ok {
		if m := info.Main.Version; m != "" && m != "(devel)" {
			v = m
		}
		if info.GoVersion != "" {
			goVersion = info.GoVersion
		}
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value[:min(len(s.Value), 12)]
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
	}
	if modified {
		commit += ", modified"
	}
	return fmt.Sprintf("%s (commit %s) %s %s/%s", v, commit, goVersion, runtime.GOOS, runtime.GOARCH)
}

func (a *app) setupLogging() error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(a.logLevel)); err != nil {
		return usagef("--%s %q: use debug, info, warn or error", flagLogLevel, a.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(a.logFormat) {
	case "text":
		a.log = slog.New(slog.NewTextHandler(a.stderr, opts))
	case "json":
		a.log = slog.New(slog.NewJSONHandler(a.stderr, opts))
	default:
		return usagef("--%s %q: use text or json", flagLogFormat, a.logFormat)
	}
	if a.resolver != "" {
		_, port, err := net.SplitHostPort(a.resolver)
		if _, perr := strconv.Atoi(port); err != nil || perr != nil {
			return usagef("--%s %q is not host:port with a numeric port, e.g. 127.0.0.1:53", flagResolver, a.resolver)
		}
	}
	if a.configFile == "" {
		a.configFile = os.Getenv("DETOUR_CONFIG")
	}
	if a.stateDir == "" {
		a.stateDir = os.Getenv("DETOUR_STATE_DIR")
	}
	return nil
}

// config loads the configuration file (see loadConfig) and logs its
// warnings the first time.
func (a *app) config(required bool) (*config.Config, error) {
	if a.cfg != nil || a.cfgErr != nil {
		return a.cfg, a.cfgErr
	}
	cfg, err := a.loadConfig(required)
	if err == nil {
		for _, w := range cfg.Warnings {
			a.log.Warn("configuration warning", "warning", w)
		}
	}
	return cfg, err
}

// loadConfig loads the configuration file once. When no file was named and
// the default one does not exist, it returns defaults (one-off use with
// flags); required reports whether a missing file is an error. It does not
// log the warnings: `detour config check` prints them.
func (a *app) loadConfig(required bool) (*config.Config, error) {
	if a.cfg != nil || a.cfgErr != nil {
		return a.cfg, a.cfgErr
	}
	path := a.configFile
	explicit := path != ""
	if path == "" {
		path = config.DefaultFile
	}
	cfg, err := config.Load(path)
	if errors.Is(err, os.ErrNotExist) && !required {
		if explicit {
			// The config package's advice ("run detour issue -d NAME")
			// does not fit a command that already runs from flags.
			err = fmt.Errorf("config file %s, named by --%s or DETOUR_CONFIG, does not exist: correct the path, "+
				"or leave both unset to run from flags alone: %w", path, flagConfig, os.ErrNotExist)
		} else {
			cfg, err = config.Default(), nil
		}
	}
	a.cfg, a.cfgErr = cfg, err
	return cfg, err
}

// planner loads the configuration (see config) and opens the state
// directory chosen by flag, environment or configuration.
func (a *app) planner(required bool, mods ...func(*plan.Options)) (*plan.Planner, error) {
	cfg, err := a.config(required)
	if err != nil {
		return nil, err
	}
	opts := plan.Options{
		Config: cfg, StateDir: a.stateDir, Logger: a.log, Resolver: a.resolver,
		NoSelfCheck: a.noSelfCheck, CheckHTTPPort: a.checkHTTPPort, CheckTLSPort: a.checkTLSPort,
		Getenv: os.Getenv,
	}
	if os.Getenv(envHoldFirewall) == "1" {
		opts.WindowOpened = holdFirewall
	}
	for _, m := range mods {
		m(&opts)
	}
	return plan.Open(opts)
}

// fieldFlags names the flag behind each input field of package plan.
var fieldFlags = map[string]string{
	plan.FieldDomains:     flagDomain,
	plan.FieldName:        flagName,
	plan.FieldCA:          flagCA,
	plan.FieldKeyType:     flagKeyType,
	plan.FieldPaths:       flagPath,
	plan.FieldEAB:         flagEABKID + " and --" + flagEABHMAC,
	plan.FieldWebroot:     flagWebroot,
	plan.FieldChallenge:   flagChallenge,
	plan.FieldServer:      flagACMEDNSServer,
	plan.FieldFirewall:    flagFirewall,
	plan.FieldAddr:        flagAddr,
	plan.FieldPath:        flagPath,
	plan.FieldResolver:    flagResolver,
	plan.FieldTSIGKeyFile: plan.FieldTSIGKeyFile,
	"backend":             flagBackend,
	"api-hostname":        flagAPIHostname,
}

// usage turns a mistake in the input, as package plan reports it, into a
// usage error that names the flag.
func usage(err error) error {
	var ie *plan.InputError
	if errors.As(err, &ie) {
		if f, ok := fieldFlags[ie.Field]; ok {
			return usagef("--%s: %v", f, ie.Err)
		}
		return usagef("%v", ie)
	}
	return err
}
