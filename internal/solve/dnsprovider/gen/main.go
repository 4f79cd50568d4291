// Command gen writes zz_generated.go of package dnsprovider: one Factory
// for each DNS provider of lego (github.com/go-acme/lego/v5/providers/dns)
// whose constructor follows lego's usual pattern, so that Detour offers
// every provider lego has without a hand-written factory for each.
//
// It reads lego's source from the module cache (the version go.mod
// requires, found with `go list -m -json`), parses each provider package
// with go/parser and learns from the syntax tree, never by running lego's
// code:
//
//   - from NewDNSProvider: which environment variables are required
//     (env.Get, env.GetWithFallback) and which optional (env.GetOrFile,
//     env.GetOrDefault*, env.GetOneWithFallback), and the Config field each
//     fills;
//   - from NewDefaultConfig: the defaults (env.GetOrDefault*(EnvX, default)
//     and constant fields), evaluated to constants, so that the generated
//     factory applies them itself: it never calls NewDefaultConfig or
//     NewDNSProvider, which read the process environment;
//   - from <code>.toml beside the package: the provider's name, URL and
//     one-line docs of its variables (docs only: the code decides the keys).
//
// A provider whose constructors do anything else (an SDK credential chain,
// alternative logins, parsing) is not generated; the output lists it with
// the reason, in notGenerated, so that nothing is dropped silently. Names
// taken by a hand-written factory (a map[string]Factory literal in the
// package's other files) are not generated either.
//
// Usage (from package dnsprovider, as //go:generate does):
//
//	go run ./gen [-o zz_generated.go] [-pkgdir .]
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"go/format"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// legoModule is the module whose providers are generated.
const legoModule = "github.com/go-acme/lego/v5"

func main() {
	log.SetFlags(0)
	log.SetPrefix("gen: ")
	out := flag.String("o", "zz_generated.go", "output file")
	pkgDir := flag.String("pkgdir", ".", "directory of package dnsprovider (for the hand-written factories' names)")
	verbose := flag.Bool("v", false, "print each provider's outcome")
	flag.Parse()
	if err := run(*out, *pkgDir, *verbose); err != nil {
		log.Fatal(err)
	}
}

func run(out, pkgDir string, verbose bool) error {
	mod, err := locateLego(pkgDir)
	if err != nil {
		return err
	}
	handWritten, reserved, err := scanPackage(pkgDir)
	if err != nil {
		return err
	}
	ld := newLoader(mod.Dir, pkgDir)
	root := filepath.Join(mod.Dir, "providers", "dns")
	entries, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("reading lego's providers: %w", err)
	}
	var provs []*provider
	for _, e := range entries {
		if !e.IsDir() || e.Name() == "internal" {
			continue
		}
		code := e.Name()
		p := &provider{Code: code, Pkg: legoModule + "/providers/dns/" + code}
		if err := readMeta(filepath.Join(root, code, code+".toml"), p); err != nil {
			return err
		}
		switch {
		case excluded[code] != "":
			p.Skip = excluded[code]
		case handWritten[code]:
			p.Skip = "served by Detour's hand-written factory of that name"
		default:
			analyze(ld, p)
		}
		if verbose {
			log.Printf("%-16s %s", code, cmp(p.Skip, "generated"))
		}
		provs = append(provs, p)
	}
	src := emit(mod.Version, provs, reserved)
	formatted, err := format.Source(src)
	if err != nil {
		_ = os.WriteFile(out+".broken", src, 0o644)
		return fmt.Errorf("formatting the output (written to %s.broken): %w", out, err)
	}
	return writeIfChanged(out, formatted)
}

func cmp(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// module is the part of `go list -m -json` the generator reads.
type module struct {
	Path, Version, Dir string
}

// locateLego finds lego's source in the module cache: the version the
// module in dir requires.
func locateLego(dir string) (module, error) {
	cmd := exec.Command("go", "list", "-m", "-json", legoModule)
	cmd.Dir = dir
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	if err != nil {
		return module{}, fmt.Errorf("locating %s: %w", legoModule, err)
	}
	var m module
	if err := json.Unmarshal(b, &m); err != nil {
		return module{}, fmt.Errorf("locating %s: %w", legoModule, err)
	}
	if m.Dir == "" {
		return module{}, fmt.Errorf("%s %s is not in the module cache; run go mod download %s", legoModule, m.Version, legoModule)
	}
	return m, nil
}

func writeIfChanged(name string, b []byte) error {
	if old, err := os.ReadFile(name); err == nil && bytes.Equal(old, b) {
		return nil
	}
	return os.WriteFile(name, b, 0o644)
}

// sortedKeys returns m's keys, sorted.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// oneLine collapses s's whitespace into single spaces.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
