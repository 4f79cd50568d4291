package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/config"
)

func (a *app) configCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print an example configuration, or check one",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "example",
		Short: "Print a commented example configuration file",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprint(a.stdout, config.Example)
			return err
		},
	}, &cobra.Command{
		Use:   "check",
		Short: "Load and validate the configuration file; report every problem with its line",
		Long: `Load and validate the configuration file; report every problem with its line.
Warnings (settings that are valid but probably a mistake, such as a private key
other users can read) are printed too; they do not make the check fail.`,
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			// Not a.config: it would log the warnings printed here.
			cfg, err := a.loadConfig(true)
			if err != nil {
				return err
			}
			for _, w := range cfg.Warnings {
				fmt.Fprintf(a.stdout, "warning: %v\n", w)
			}
			warnings := ""
			switch n := len(cfg.Warnings); n {
			case 0:
			case 1:
				warnings = ", 1 warning"
			default:
				warnings = fmt.Sprintf(", %d warnings", n)
			}
			fmt.Fprintf(a.stdout, "%s: ok (%d certificates, %d paths, %d CAs%s)\n", cfg.File, len(cfg.Certificates), len(cfg.Paths), len(cfg.CAs), warnings)
			return nil
		},
	}, a.hashPasswordCommand())
	return cmd
}
