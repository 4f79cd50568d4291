package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// meta is the part of a provider's <code>.toml the generator reads.
type meta struct {
	Name          string
	Description   string
	URL           string
	Code          string
	Aliases       []string
	Configuration struct {
		Credentials map[string]string
		Additional  map[string]string
	}
}

// readMeta reads the provider's documentation into p. A provider without
// one is documented by its code alone.
func readMeta(file string, p *provider) error {
	b, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		p.Title = p.Code
		return nil
	}
	if err != nil {
		return err
	}
	var m meta
	if err := toml.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	p.Title, p.URL, p.Desc = oneLine(m.Name), m.URL, oneLine(m.Description)
	if p.Title == "" {
		p.Title = p.Code
	}
	p.Aliases = m.Aliases
	p.Credentials, p.Additional = m.Configuration.Credentials, m.Configuration.Additional
	return nil
}

// scanPackage reads the hand-written files of package dnsprovider (those
// not named zz_*): the names of the hand-written factories (the keys of
// every map[string]Factory literal) and every package-level identifier,
// which an import of the generated file must not shadow.
func scanPackage(dir string) (handWritten, reserved map[string]bool, err error) {
	handWritten, reserved = map[string]bool{}, map[string]bool{}
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		return nil, nil, err
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasPrefix(filepath.Base(name), "zz_") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, nil, err
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil {
					reserved[d.Name.Name] = true
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						reserved[s.Name.Name] = true
					case *ast.ValueSpec:
						for _, n := range s.Names {
							reserved[n.Name] = true
						}
					}
				}
			}
		}
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.CompositeLit)
			if !ok {
				return true
			}
			mt, ok := lit.Type.(*ast.MapType)
			if !ok || types(mt.Key) != "string" || types(mt.Value) != "Factory" {
				return true
			}
			for _, e := range lit.Elts {
				if kv, ok := e.(*ast.KeyValueExpr); ok {
					if bl, ok := kv.Key.(*ast.BasicLit); ok {
						if s, err := strconv.Unquote(bl.Value); err == nil {
							handWritten[s] = true
						}
					}
				}
			}
			return true
		})
	}
	return handWritten, reserved, nil
}

func types(x ast.Expr) string {
	if id, ok := x.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}
