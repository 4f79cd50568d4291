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
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			cfg, err := a.config(true)
			if err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "%s: ok (%d certificates, %d paths, %d CAs)\n", cfg.File, len(cfg.Certificates), len(cfg.Paths), len(cfg.CAs))
			return nil
		},
	})
	return cmd
}
