package main

import (
	"errors"
	"fmt"
	"go/ast"
	"go/build"
	"go/constant"
	"go/parser"
	"go/token"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// pkg is one parsed package: its declarations by name.
type pkg struct {
	path   string
	name   string
	files  []*ast.File
	consts map[string]*constDef
	funcs  map[string]*ast.FuncDecl
	types  map[string]*ast.TypeSpec
}

// constDef is a package-level constant, or a variable initialised to a
// constant expression (lego keeps some defaults in variables).
type constDef struct {
	expr ast.Expr
	iota int
	file *ast.File
	val  constant.Value
	err  error
	busy bool
}

// loader parses packages on demand: lego's from its module directory,
// others from where the go command finds them.
type loader struct {
	fset    *token.FileSet
	legoDir string
	modDir  string // a directory of the module whose build list resolves imports
	pkgs    map[string]*pkg
	errs    map[string]error
}

func newLoader(legoDir, modDir string) *loader {
	return &loader{fset: token.NewFileSet(), legoDir: legoDir, modDir: modDir, pkgs: map[string]*pkg{}, errs: map[string]error{}}
}

// load returns the package at import path path.
func (l *loader) load(path string) (*pkg, error) {
	if p, ok := l.pkgs[path]; ok {
		return p, nil
	}
	if err, ok := l.errs[path]; ok {
		return nil, err
	}
	p, err := l.parse(path)
	if err != nil {
		l.errs[path] = err
		return nil, err
	}
	l.pkgs[path] = p
	return p, nil
}

func (l *loader) parse(path string) (*pkg, error) {
	var dir string
	var files []string
	if rest, ok := strings.CutPrefix(path, legoModule+"/"); ok {
		dir = filepath.Join(l.legoDir, filepath.FromSlash(rest))
		bp, err := build.Default.ImportDir(dir, 0)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", path, err)
		}
		files = bp.GoFiles
	} else {
		// Detour's build list first (its modules are in the cache once it
		// builds), else lego's: a provider not generated yet is not in
		// Detour's go.mod.
		var err error
		for _, in := range []string{l.modDir, l.legoDir} {
			if dir, files, err = goList(in, path); err == nil {
				break
			}
		}
		if err != nil {
			return nil, err
		}
	}
	p := &pkg{path: path, consts: map[string]*constDef{}, funcs: map[string]*ast.FuncDecl{}, types: map[string]*ast.TypeSpec{}}
	for _, name := range files {
		f, err := parser.ParseFile(l.fset, filepath.Join(dir, name), nil, parser.SkipObjectResolution)
		if err != nil {
			return nil, fmt.Errorf("parsing %s: %w", path, err)
		}
		p.name = f.Name.Name
		p.files = append(p.files, f)
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil {
					p.funcs[d.Name.Name] = d
				}
			case *ast.GenDecl:
				p.addDecl(d, f)
			}
		}
	}
	return p, nil
}

// goList finds the directory and Go files of the package at path, as the
// module in dir resolves it.
func goList(dir, path string) (string, []string, error) {
	cmd := exec.Command("go", "list", "-f", "{{.Dir}}{{range .GoFiles}}\t{{.}}{{end}}", path)
	cmd.Dir = dir
	b, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", nil, fmt.Errorf("go list %s: %s", path, strings.TrimSpace(string(ee.Stderr)))
		}
		return "", nil, fmt.Errorf("go list %s: %w", path, err)
	}
	f := strings.Split(strings.TrimSpace(string(b)), "\t")
	return f[0], f[1:], nil
}

func (p *pkg) addDecl(d *ast.GenDecl, f *ast.File) {
	switch d.Tok {
	case token.TYPE:
		for _, s := range d.Specs {
			ts := s.(*ast.TypeSpec)
			p.types[ts.Name.Name] = ts
		}
	case token.CONST:
		var last []ast.Expr
		for i, s := range d.Specs {
			vs := s.(*ast.ValueSpec)
			if len(vs.Values) > 0 {
				last = vs.Values
			}
			for j, n := range vs.Names {
				if j < len(last) {
					p.consts[n.Name] = &constDef{expr: last[j], iota: i, file: f}
				}
			}
		}
	case token.VAR:
		for _, s := range d.Specs {
			vs := s.(*ast.ValueSpec)
			if len(vs.Values) != len(vs.Names) {
				continue
			}
			for j, n := range vs.Names {
				p.consts[n.Name] = &constDef{expr: vs.Values[j], iota: -1, file: f}
			}
		}
	}
}

// importPath returns the path file imports as name.
func importPath(f *ast.File, name string) (string, bool) {
	for _, im := range f.Imports {
		path, _ := strconv.Unquote(im.Path.Value)
		local := path[strings.LastIndex(path, "/")+1:]
		if im.Name != nil {
			local = im.Name.Name
		} else if strings.HasPrefix(local, "v") && len(local) > 1 && local[1] >= '0' && local[1] <= '9' {
			// .../foo/v2: the package is named foo (by convention).
			parts := strings.Split(path, "/")
			if len(parts) > 1 {
				local = parts[len(parts)-2]
			}
		}
		local = strings.ReplaceAll(local, "-", "")
		if local == name {
			return path, true
		}
	}
	return "", false
}

// timeUnits are the constants of package time that defaults use.
var timeUnits = map[string]int64{
	"Nanosecond": 1, "Microsecond": 1e3, "Millisecond": 1e6, "Second": 1e9, "Minute": 60e9, "Hour": 3600e9,
}

// eval evaluates x, an expression of file in package p, to a constant.
func (l *loader) eval(p *pkg, file *ast.File, x ast.Expr, iota int) (constant.Value, error) {
	switch x := x.(type) {
	case *ast.BasicLit:
		v := constant.MakeFromLiteral(x.Value, x.Kind, 0)
		if v.Kind() == constant.Unknown {
			return nil, fmt.Errorf("literal %s", x.Value)
		}
		return v, nil
	case *ast.ParenExpr:
		return l.eval(p, file, x.X, iota)
	case *ast.Ident:
		switch x.Name {
		case "iota":
			if iota < 0 {
				return nil, errors.New("iota outside a constant declaration")
			}
			return constant.MakeInt64(int64(iota)), nil
		case "true", "false":
			return constant.MakeBool(x.Name == "true"), nil
		}
		return l.constOf(p, x.Name)
	case *ast.SelectorExpr:
		id, ok := x.X.(*ast.Ident)
		if !ok {
			return nil, fmt.Errorf("%s is not a constant", l.src(x))
		}
		path, ok := importPath(file, id.Name)
		if !ok {
			return nil, fmt.Errorf("%s: no import %s", l.src(x), id.Name)
		}
		if path == "time" {
			if n, ok := timeUnits[x.Sel.Name]; ok {
				return constant.MakeInt64(n), nil
			}
		}
		q, err := l.load(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", l.src(x), err)
		}
		return l.constOf(q, x.Sel.Name)
	case *ast.UnaryExpr:
		v, err := l.eval(p, file, x.X, iota)
		if err != nil {
			return nil, err
		}
		return constant.UnaryOp(x.Op, v, 0), nil
	case *ast.BinaryExpr:
		a, err := l.eval(p, file, x.X, iota)
		if err != nil {
			return nil, err
		}
		b, err := l.eval(p, file, x.Y, iota)
		if err != nil {
			return nil, err
		}
		if a.Kind() != b.Kind() && (a.Kind() == constant.String || b.Kind() == constant.String) {
			return nil, fmt.Errorf("%s mixes kinds", l.src(x))
		}
		switch x.Op {
		case token.EQL, token.NEQ, token.LSS, token.LEQ, token.GTR, token.GEQ:
			return constant.MakeBool(constant.Compare(a, x.Op, b)), nil
		case token.SHL, token.SHR:
			s, ok := constant.Uint64Val(b)
			if !ok {
				return nil, fmt.Errorf("%s: shift", l.src(x))
			}
			return constant.Shift(a, x.Op, uint(s)), nil
		case token.QUO:
			if a.Kind() == constant.Int && b.Kind() == constant.Int {
				return constant.BinaryOp(a, token.QUO_ASSIGN, b), nil // integer division
			}
		}
		return constant.BinaryOp(a, x.Op, b), nil
	case *ast.CallExpr:
		// A conversion: time.Duration(x), int64(x), string(x), T(x).
		if len(x.Args) == 1 && isConversion(x.Fun) {
			return l.eval(p, file, x.Args[0], iota)
		}
	}
	return nil, fmt.Errorf("%s is not a constant", l.src(x))
}

// isConversion reports whether fun names a type (roughly: a basic type or
// a capitalised/known type name; calls of functions are refused).
func isConversion(fun ast.Expr) bool {
	switch f := fun.(type) {
	case *ast.Ident:
		switch f.Name {
		case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64", "float64", "string", "bool":
			return true
		}
	case *ast.SelectorExpr:
		if id, ok := f.X.(*ast.Ident); ok && id.Name == "time" && f.Sel.Name == "Duration" {
			return true
		}
	}
	return false
}

// constOf evaluates the package-level constant name of p.
func (l *loader) constOf(p *pkg, name string) (constant.Value, error) {
	d, ok := p.consts[name]
	if !ok {
		return nil, fmt.Errorf("%s.%s is not a constant", p.name, name)
	}
	if d.val != nil || d.err != nil {
		return d.val, d.err
	}
	if d.busy {
		return nil, fmt.Errorf("%s.%s refers to itself", p.name, name)
	}
	d.busy = true
	d.val, d.err = l.eval(p, d.file, d.expr, d.iota)
	d.busy = false
	return d.val, d.err
}

// src renders x as Go source, on one line.
func (l *loader) src(x ast.Node) string {
	var b strings.Builder
	if err := printNode(&b, l.fset, x); err != nil {
		return fmt.Sprintf("%T", x)
	}
	return oneLine(b.String())
}
