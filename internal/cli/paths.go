package cli

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/detour-acme/detour/internal/config"
	"github.com/detour-acme/detour/internal/plan"
	"github.com/detour-acme/detour/internal/solve"
	"github.com/detour-acme/detour/internal/suggest"
)

// kindDoc is what `detour paths --json` prints of a kind.
type kindDoc struct {
	Kind       string       `json:"kind"`
	Summary    string       `json:"summary"`
	For        string       `json:"for"`
	Challenges []string     `json:"challenges"`
	Builtins   []string     `json:"builtins,omitempty"`
	Settings   []settingDoc `json:"settings"`
}

// settingDoc is one setting of a kindDoc.
type settingDoc struct {
	Key      string            `json:"key"`
	Type     string            `json:"type"`
	Default  string            `json:"default,omitempty"`
	Defaults map[string]string `json:"defaults_by_challenge,omitempty"`
	Values   []string          `json:"values,omitempty"`
	Required bool              `json:"required,omitempty"`
	Secret   bool              `json:"secret,omitempty"`
	Doc      string            `json:"doc"`
}

func (a *app) pathsCommand() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "paths [KIND [PROVIDER]]",
		Short: "List the validation path kinds: their challenges, settings and built-in paths",
		Long: `List every kind of validation path a [path.NAME] table can use: what it does,
on which host it is the right one, the challenges it answers and its settings,
with their types, defaults and docs. With a KIND, that kind in full, and an
example table. This is what 'detour config check' accepts, read from the same
declarations. 'detour paths dns-provider' also lists the DNS providers with
their credential keys, and 'detour paths dns-provider PROVIDER' shows one.`,
		Example: "  detour paths\n  detour paths rfc2136\n  detour paths dns-provider linode\n  detour paths --json",
		Args:    cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if done, err := a.pathsProvider(args, asJSON); done {
				return err
			}
			specs := plan.Kinds()
			if len(args) == 1 {
				sp, ok := plan.Kind(args[0])
				if !ok {
					names := make([]string, len(specs))
					for i, s := range specs {
						names[i] = s.Kind
					}
					return usagef("unknown kind %q%s; kinds: %s", args[0], suggest.DidYouMean(args[0], names), strings.Join(names, ", "))
				}
				specs = []solve.Spec{sp}
			}
			if asJSON {
				docs := make([]kindDoc, len(specs))
				for i, sp := range specs {
					docs[i] = docOf(sp)
				}
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(docs)
			}
			if len(args) == 1 {
				return a.printKind(specs[0])
			}
			return a.printKinds(specs)
		},
	}
	cmd.Flags().BoolVar(&asJSON, flagJSON, false, "print JSON")
	return cmd
}

// builtinsOf returns the built-in paths of kind, as "name (challenge)".
func builtinsOf(kind string) []string {
	var out []string
	for _, b := range plan.Builtins() {
		if b.Kind == kind {
			out = append(out, fmt.Sprintf("%s (%s)", b.Name, b.Settings[solve.KeyChallenge]))
		}
	}
	return out
}

func docOf(sp solve.Spec) kindDoc {
	d := kindDoc{Kind: sp.Kind, Summary: sp.Summary, For: sp.For, Challenges: sp.Challenges, Builtins: builtinsOf(sp.Kind)}
	for _, s := range sp.AllSettings() {
		d.Settings = append(d.Settings, settingDoc{Key: s.Key, Type: string(s.Type), Default: s.Default, Defaults: s.DefaultByChallenge,
			Values: s.Values, Required: s.Required, Secret: s.Secret, Doc: s.Doc})
	}
	return d
}

func (a *app) printKinds(specs []solve.Spec) error {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tCHALLENGES\tFOR A HOST WHERE")
	for _, sp := range specs {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", sp.Kind, strings.Join(sp.Challenges, ", "), sp.For)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var builtins []string
	for _, b := range plan.Builtins() {
		builtins = append(builtins, fmt.Sprintf("%s (%s, %s)", b.Name, b.Kind, b.Settings[solve.KeyChallenge]))
	}
	fmt.Fprintf(a.stdout, "\nBuilt-in paths, usable in paths = [...] without a table:\n  %s\n", strings.Join(builtins, "\n  "))
	fmt.Fprintln(a.stdout, "\n'detour paths KIND' shows a kind's settings and an example [path.NAME] table.")
	return nil
}

func (a *app) printKind(sp solve.Spec) error {
	out := a.stdout
	fmt.Fprintf(out, "%s: %s.\n", sp.Kind, sp.Summary)
	fmt.Fprintf(out, "For a host where %s.\n", sp.For)
	fmt.Fprintf(out, "Challenges: %s (default %s).\n", strings.Join(sp.Challenges, ", "), sp.Challenges[0])
	if b := builtinsOf(sp.Kind); len(b) > 0 {
		fmt.Fprintf(out, "Built-in paths: %s.\n", strings.Join(b, ", "))
	}
	fmt.Fprintln(out)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SETTING\tTYPE\tDEFAULT\tDOC")
	for _, s := range sp.AllSettings() {
		def := s.Default
		if len(s.DefaultByChallenge) > 0 {
			var parts []string
			for _, ch := range slices.Sorted(maps.Keys(s.DefaultByChallenge)) {
				parts = append(parts, fmt.Sprintf("%s (%s)", s.DefaultByChallenge[ch], ch))
			}
			def = strings.Join(parts, ", ")
		}
		switch {
		case s.Required:
			def = "(required)"
		case def == "":
			def = "-"
		}
		doc := s.Doc
		if len(s.Values) > 0 && s.Type == solve.TypeEnum {
			doc += " (" + strings.Join(s.Values, ", ") + ")"
		}
		if s.Secret {
			doc += " [secret: never written to certificate records]"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.Key, s.Type, def, doc)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nExample:\n%s", config.KindExample(sp))
	return nil
}

// builtinHelp lists the built-in paths for command help: name, challenge,
// and on which host the kind fits, wrapped at 80 columns.
func builtinHelp() string {
	var b strings.Builder
	for _, bp := range plan.Builtins() {
		sp, _ := plan.Kind(bp.Kind)
		text := bp.Settings[solve.KeyChallenge] + ": " + sp.For
		fmt.Fprintf(&b, "  %-21s ", bp.Name)
		col := 24
		for i, w := range strings.Fields(text) {
			if i > 0 && col+1+len(w) > 80 {
				fmt.Fprintf(&b, "\n%24s", "")
				col = 24
			} else if i > 0 {
				b.WriteByte(' ')
				col++
			}
			b.WriteString(w)
			col += len(w)
		}
		b.WriteByte('\n')
	}
	return b.String()
}
