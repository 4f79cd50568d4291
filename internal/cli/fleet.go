package cli

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/plan"
)

func (a *app) fleetCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fleet",
		Short: "Servers behind one load balancer sharing their state in etcd",
		Long: `A fleet is several servers behind one load balancer that renew as one: a
[store] table with kind = "etcd" in every node's config file points them at
one etcd cluster, where they keep accounts, records, certificates (private
keys encrypted) and locks. One node orders each certificate; every node
presents the CA's http-01 and tls-alpn-01 answers (the CA reaches whichever
node the balancer picks) and writes the new certificate to its own live/.`,
	}
	var asJSON bool
	status := &cobra.Command{
		Use:   "status",
		Short: "Show the fleet's nodes, and which version of each certificate each node serves",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := a.planner(true)
			if err != nil {
				return err
			}
			defer p.Close()
			st, err := p.FleetStatus(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			printFleetStatus(a, st)
			return nil
		},
	}
	status.Flags().BoolVar(&asJSON, flagJSON, false, "print JSON")
	initKey := &cobra.Command{
		Use:   "init-key FILE",
		Short: "Write a new key for encrypting the fleet's private keys in etcd",
		Long: `Writes one new random 256-bit key to FILE (mode 0600; an existing file is never
overwritten). Copy it to every node of the fleet and name it in [store]
encryption_key_file. The file holds lines ID:KEY; the first line encrypts and
every line decrypts, which is how a key is rotated:

  1. detour fleet init-key /tmp/new.key, and copy its key line to the top
     of every node's key file (the old line stays below it);
  2. restart every node's agent: each now encrypts with the new key;
  3. detour fleet reencrypt (on any one node): every secret is rewritten
     under the new key;
  4. remove the old line from every node's key file.`,
		Example: "  detour fleet init-key /etc/detour/fleet.key",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := plan.NewFleetKey(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "wrote a new fleet key to %s; copy it to every node and set encryption_key_file = %q in [store]\n", args[0], args[0])
			return nil
		},
	}
	reencrypt := &cobra.Command{
		Use:   "reencrypt",
		Short: "Rewrite the fleet's secrets under the first key of this node's key file",
		Long: `Step 3 of a key rotation (see detour fleet init-key --help): every secret
in etcd (account keys, every certificate version's private key) not encrypted
with the first key of encryption_key_file is rewritten under it, each by a
transaction that never undoes a concurrent write. Running it again rewrites
nothing. A secret encrypted with a key this node lacks is named and left as it
is.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			p, err := a.planner(true)
			if err != nil {
				return err
			}
			defer p.Close()
			n, err := p.FleetReencrypt(cmd.Context())
			fmt.Fprintf(a.stdout, "re-encrypted %d secret(s) with the current key\n", n)
			return err
		},
	}
	cmd.AddCommand(status, initKey, reencrypt)
	return cmd
}

// printFleetStatus prints the members, then one line per certificate and
// node.
func printFleetStatus(a *app, st plan.FleetStatus) {
	fmt.Fprintf(a.stdout, "fleet %s (prefix %s), this node: %s\n\n", st.Fleet, st.Prefix, st.Node)
	w := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "NODE\tSTATE\tSINCE / LAST REPORT\tVERSION\tFIREWALL WINDOWS")
	for _, m := range st.Members {
		state, since, version := "gone", "-", "-"
		if !m.LastReport.IsZero() {
			since = m.LastReport.UTC().Format(time.RFC3339)
		}
		if m.Alive && m.Member != nil {
			state, since, version = "alive", m.Member.Started.UTC().Format(time.RFC3339), m.Member.Version
		}
		windows := "-"
		if len(m.Windows) > 0 {
			var open []string
			for _, win := range m.Windows {
				open = append(open, fmt.Sprintf("%d/%s %s until %s", win.Port, win.Proto, win.Family, win.Until.UTC().Format(time.TimeOnly)))
			}
			windows = strings.Join(open, ", ")
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", m.Name, state, since, version, windows)
	}
	w.Flush()
	fmt.Fprintln(a.stdout)
	if len(st.Certificates) == 0 {
		fmt.Fprintln(a.stdout, "no certificates in the fleet yet")
		return
	}
	w = tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "CERTIFICATE\tFLEET VERSION\tNODE\tSERVES\tPROBLEM")
	for _, c := range st.Certificates {
		renewing := ""
		if c.LockedBy != nil {
			renewing = fmt.Sprintf(" (renewing on %s since %s)", c.LockedBy.Holder, c.LockedBy.Since.UTC().Format(time.TimeOnly))
		}
		head := fmt.Sprintf("%s\tv%d%s", c.Name, c.Version, renewing)
		nodes := make([]string, 0, len(st.Members))
		for _, m := range st.Members {
			nodes = append(nodes, m.Name)
		}
		sort.Strings(nodes)
		for _, n := range nodes {
			d, ok := c.Nodes[n]
			serves, problem := "nothing reported", ""
			if ok {
				serves = fmt.Sprintf("v%d", d.Version)
				if d.Version != c.Version {
					serves += " (behind)"
				}
				if d.Error != "" {
					problem = fmt.Sprintf("v%d: %s", d.ErrorVersion, firstLine(d.Error))
				}
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", head, n, serves, problem)
			head = "\t"
		}
	}
	w.Flush()
}
