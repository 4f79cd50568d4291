package cli

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/detour-acme/detour/internal/plan"
	"github.com/detour-acme/detour/internal/solve"
)

// `detour paths dns-provider [PROVIDER]`: the dns-provider kind has a
// provider setting with some 200 values, each with its own credential
// keys, so the kind's page lists the providers and their keys, and a
// second argument shows one provider in full.

// providerDoc is what `detour paths dns-provider NAME --json` prints.
type providerDoc struct {
	Name      string   `json:"name"`
	Aliases   []string `json:"aliases,omitempty"`
	Title     string   `json:"title"`
	URL       string   `json:"url,omitempty"`
	Lego      string   `json:"lego,omitempty"`
	Generated bool     `json:"generated"`
	Timeout   string   `json:"propagation_timeout"`
	Keys      []keyDoc `json:"keys"`
}

// keyDoc is one credentials-file key of a providerDoc.
type keyDoc struct {
	Key      string   `json:"key"`
	Also     []string `json:"also,omitempty"`
	Required bool     `json:"required,omitempty"`
	Secret   bool     `json:"secret,omitempty"`
	Default  string   `json:"default,omitempty"`
	Doc      string   `json:"doc,omitempty"`
}

// pathsProvider handles the dns-provider forms of `detour paths`; it
// reports false for the others, which the generic code prints.
func (a *app) pathsProvider(args []string, asJSON bool) (bool, error) {
	switch {
	case len(args) == 2 && args[0] != plan.DNSProviderKind:
		return true, usagef("only %s takes a second argument (a provider); %s has none", plan.DNSProviderKind, args[0])
	case len(args) == 2:
		p, err := plan.DescribeDNSProvider(args[1])
		if err != nil {
			return true, usagef("%v", err)
		}
		if asJSON {
			enc := json.NewEncoder(a.stdout)
			enc.SetIndent("", "  ")
			return true, enc.Encode(docOfProvider(p))
		}
		return true, a.printProvider(p)
	case len(args) == 1 && args[0] == plan.DNSProviderKind && !asJSON:
		sp, _ := plan.Kind(plan.DNSProviderKind)
		// The provider setting's values are the table below, not a line.
		sp.Settings = append([]solve.Setting(nil), sp.Settings...)
		for i, s := range sp.Settings {
			if len(s.Values) > 12 {
				s.Doc += fmt.Sprintf(" (one of the %d providers below)", len(plan.DNSProviders()))
				s.Values = nil
				sp.Settings[i] = s
			}
		}
		if err := a.printKind(sp); err != nil {
			return true, err
		}
		return true, a.printProviders()
	}
	return false, nil
}

func docOfProvider(p plan.DNSProvider) providerDoc {
	d := providerDoc{Name: p.Name, Aliases: p.Aliases, Title: p.Title, URL: p.URL, Lego: p.Lego, Generated: p.Generated,
		Timeout: shortDur(p.Timeout), Keys: []keyDoc{}}
	for _, k := range p.Keys {
		d.Keys = append(d.Keys, keyDoc{Key: k.Name, Also: k.Also, Required: k.Required, Secret: k.Secret, Default: k.Default, Doc: k.Doc})
	}
	return d
}

// printProviders lists every provider with its keys, required ones first.
func (a *app) printProviders() error {
	provs := plan.DNSProviders()
	fmt.Fprintf(a.stdout, "\nProviders (%d), with the keys of their credentials file (* required; either case):\n", len(provs))
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROVIDER\tNAME\tKEYS")
	for _, p := range provs {
		name := p.Name
		if len(p.Aliases) > 0 {
			name += " (" + strings.Join(p.Aliases, ", ") + ")"
		}
		var keys []string
		for _, k := range p.Keys {
			if k.Required {
				keys = append(keys, k.Name+"*")
			}
		}
		for _, k := range p.Keys {
			if !k.Required {
				keys = append(keys, k.Name)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", name, p.Title, strings.Join(keys, " "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "\n'detour paths %s PROVIDER' shows a provider's keys with their docs and defaults.\n", plan.DNSProviderKind)
	return nil
}

// printProvider shows one provider: its keys and an example file.
func (a *app) printProvider(p plan.DNSProvider) error {
	out := a.stdout
	fmt.Fprintf(out, "%s: %s", p.Name, p.Title)
	if p.URL != "" {
		fmt.Fprintf(out, " (%s)", p.URL)
	}
	fmt.Fprintln(out)
	if len(p.Aliases) > 0 {
		fmt.Fprintf(out, "Also called: %s.\n", strings.Join(p.Aliases, ", "))
	}
	how := "Detour's own factory"
	if p.Generated {
		how = "generated from lego's source"
	}
	client := fmt.Sprintf("lego's %s provider (%s)", p.Lego, how)
	if p.Lego == "" {
		client = "Detour's own client of the provider's API"
	}
	fmt.Fprintf(out, "Client: %s. Default propagation_timeout: %s.\n", client, shortDur(p.Timeout))
	fmt.Fprintf(out, "Needs: %s.\n\n", p.Help)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tDEFAULT\tDOC")
	for _, k := range p.Keys {
		def := k.Default
		switch {
		case k.Required:
			def = "(required)"
		case def == "":
			def = "-"
		}
		doc := k.Doc
		if len(k.Also) > 0 {
			doc += " (also read as " + strings.Join(k.Also, ", ") + ")"
		}
		if k.Secret {
			doc += " [secret]"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", k.Name, def, doc)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nExample credentials file (mode 0600), named by credentials_file in a [path.NAME] table with provider = %q:\n", p.Name)
	for _, k := range p.Keys {
		if k.Required {
			fmt.Fprintf(out, "%s = ...\n", k.Name)
		}
	}
	for _, k := range p.Keys {
		if !k.Required && k.Default == "" {
			fmt.Fprintf(out, "# %s = ...\n", k.Name)
		}
	}
	return nil
}

// shortDur renders d as "2m" rather than "2m0s".
func shortDur(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
