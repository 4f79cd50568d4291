package main

import (
	"errors"
	"fmt"
	"go/ast"
	"go/constant"
	"go/printer"
	"go/token"
	"io"
	"net/url"
	"slices"
	"strings"
)

// kind is how a credential's text becomes a Config field's value.
type kind int

const (
	kString  kind = iota // as is
	kInt                 // strconv.Atoi
	kInt64               // int64(strconv.Atoi)
	kInt32               // int32(strconv.Atoi)
	kBool                // strconv.ParseBool
	kSeconds             // whole seconds (lego's env.ParseSecond), time.Duration
	kURL                 // url.Parse, *url.URL
	kPairs               // env.ParsePairs ("a:b,c:d"), map[string]string
)

// key is one variable lego reads, as a key of Detour's credentials file.
type key struct {
	Env      string   // lego's variable, e.g. LINODE_TOKEN
	Also     []string // lego's fallback names for it
	Field    string   // the Config field it fills
	Kind     kind
	Required bool
	Default  constant.Value // nil: none
	Doc      string
	Secret   bool
	// fromDefault: read by NewDefaultConfig (a setting with a default),
	// not by NewDNSProvider (a credential).
	fromDefault bool
}

// fieldInit is one field of the Config literal the factory starts from.
type fieldInit struct {
	Field string
	Key   *key           // set from a key (with its default)
	Const constant.Value // or to a constant
	Kind  kind           // the constant's kind
	Env   string         // or from Detour: "timeout", "interval", "client", "httptimeout"
	Dur   int64          // for "client" and "httptimeout": lego's default request timeout, ns
}

// provider is what the generator learnt about one lego provider.
type provider struct {
	Code, Pkg        string
	Title, URL, Desc string
	Aliases          []string
	Credentials      map[string]string // .toml docs
	Additional       map[string]string

	Keys    []*key
	Inits   []fieldInit
	Assigns []fieldInit // statements after the literal (Env unused)
	// Timeout is lego's default propagation timeout (ns), 0 if unknown.
	Timeout int64

	Skip string // why the provider is not generated; "" when it is
}

// analyze fills p from its package, or sets p.Skip.
func analyze(l *loader, p *provider) {
	if err := analyzeErr(l, p); err != nil {
		msg := err.Error()
		if r := []rune(msg); len(r) > 100 {
			msg = string(r[:100]) + "…"
		}
		p.Skip = "needs a hand-written factory: lego's constructor does more than the generator reads (" + msg + ")"
	}
}

func analyzeErr(l *loader, p *provider) error {
	pk, err := l.load(p.Pkg)
	if err != nil {
		return err
	}
	st, err := configStruct(l, pk)
	if err != nil {
		return err
	}
	fields := map[string]string{} // name -> type, as source
	for _, f := range st.Fields.List {
		for _, n := range f.Names {
			fields[n.Name] = l.src(f.Type)
		}
	}
	for _, fn := range []string{"NewDefaultConfig", "NewDNSProvider", "NewDNSProviderConfig"} {
		if pk.funcs[fn] == nil {
			return fmt.Errorf("no func %s", fn)
		}
	}
	a := &analysis{l: l, p: p, pk: pk, fields: fields, byEnv: map[string]*key{}, maps: map[string]bool{}, locals: map[string]val{}}
	if err := a.defaults(pk.funcs["NewDefaultConfig"]); err != nil {
		return fmt.Errorf("NewDefaultConfig: %w", err)
	}
	if err := a.constructor(pk.funcs["NewDNSProvider"]); err != nil {
		return fmt.Errorf("NewDNSProvider: %w", err)
	}
	// Detour fills these whether or not NewDefaultConfig sets them.
	for _, f := range []struct{ field, typ, env string }{
		{"PropagationTimeout", "time.Duration", "timeout"},
		{"PollingInterval", "time.Duration", "interval"},
		{"HTTPClient", "*http.Client", "client"},
		{"HTTPTimeout", "time.Duration", "httptimeout"},
	} {
		if fields[f.field] == f.typ && !slices.ContainsFunc(p.Inits, func(i fieldInit) bool { return i.Field == f.field }) {
			p.Inits = append(p.Inits, fieldInit{Field: f.field, Env: f.env})
		}
	}
	// Keys in order: credentials lego requires, then optional credentials,
	// then settings with defaults.
	for _, env := range required[p.Code] {
		k, ok := a.byEnv[env]
		if !ok {
			return fmt.Errorf("the generator's table makes %s required, but lego does not read it", env)
		}
		k.Required = true
	}
	var req, opt, set []*key
	for _, k := range a.order {
		switch {
		case k.Required:
			req = append(req, k)
		case k.fromDefault:
			set = append(set, k)
		default:
			opt = append(opt, k)
		}
	}
	p.Keys = slices.Concat(req, opt, set)
	for _, k := range p.Keys {
		k.Doc = oneLine(p.Credentials[k.Env])
		if k.Doc == "" {
			k.Doc = oneLine(p.Additional[k.Env])
		}
		k.Secret = (k.Kind == kString || k.Kind == kPairs) && isSecret(k.Env)
	}
	return nil
}

// analysis is the state of analysing one provider.
type analysis struct {
	l      *loader
	p      *provider
	pk     *pkg
	file   *ast.File // of the function being read
	fields map[string]string
	byEnv  map[string]*key
	order  []*key
	// Of the function being read: the maps env.Get filled, the variables
	// it requires, and the locals holding values.
	maps     map[string]bool
	required []string
	locals   map[string]val
}

// configStruct returns the Config struct of pk, following an alias
// (type Config = internal.Config).
func configStruct(l *loader, pk *pkg) (*ast.StructType, error) {
	ts, ok := pk.types["Config"]
	if !ok {
		return nil, errors.New("no Config type")
	}
	switch t := ts.Type.(type) {
	case *ast.StructType:
		return t, nil
	case *ast.SelectorExpr:
		id, ok := t.X.(*ast.Ident)
		if !ok || ts.Assign == 0 {
			break
		}
		var file *ast.File
		for _, f := range pk.files {
			if f.Pos() <= ts.Pos() && ts.End() <= f.End() {
				file = f
			}
		}
		path, ok := importPath(file, id.Name)
		if !ok {
			break
		}
		q, err := l.load(path)
		if err != nil {
			return nil, err
		}
		if q.types[t.Sel.Name] == nil || t.Sel.Name != "Config" {
			break
		}
		return configStruct(l, q)
	}
	return nil, fmt.Errorf("Config is %s", l.src(ts.Type))
}

// keyFor returns the key for variable env, creating it.
func (a *analysis) keyFor(env string, k kind, fromDefault bool) (*key, error) {
	if old, ok := a.byEnv[env]; ok {
		if old.Kind != k {
			return nil, fmt.Errorf("%s is read both as %v and %v", env, old.Kind, k)
		}
		return old, nil
	}
	nk := &key{Env: env, Kind: k, fromDefault: fromDefault}
	a.byEnv[env] = nk
	a.order = append(a.order, nk)
	return nk, nil
}

// defaults reads NewDefaultConfig: `return &Config{...}` whose fields are
// env.GetOrDefault*(EnvX, default), constants, or an *http.Client with only
// a timeout.
func (a *analysis) defaults(fn *ast.FuncDecl) error {
	a.file = fileOf(a.pk, fn)
	body := fn.Body.List
	for _, s := range body[:len(body)-1] {
		var err error
		switch s := s.(type) {
		case *ast.AssignStmt:
			var ok bool
			if ok, err = a.local(s); !ok && err == nil {
				err = fmt.Errorf("%s", a.l.src(s))
			}
		case *ast.IfStmt:
			err = a.ifErr(s)
		default:
			err = fmt.Errorf("%s", a.l.src(s))
		}
		if err != nil {
			return err
		}
	}
	ret, ok := body[len(body)-1].(*ast.ReturnStmt)
	if !ok || len(ret.Results) != 1 {
		return fmt.Errorf("%s", a.l.src(body[len(body)-1]))
	}
	lit := configLit(ret.Results[0])
	if lit == nil {
		return fmt.Errorf("returns %s, not &Config{...}", a.l.src(ret.Results[0]))
	}
	for _, e := range lit.Elts {
		kv, ok := e.(*ast.KeyValueExpr)
		if !ok {
			return fmt.Errorf("%s", a.l.src(e))
		}
		field := kv.Key.(*ast.Ident).Name
		typ := a.fields[field]
		switch field {
		case "PropagationTimeout", "PollingInterval":
			if v, _, err := a.envRead(kv.Value, true); err == nil && field == "PropagationTimeout" && v.Default != nil {
				a.p.Timeout, _ = constant.Int64Val(v.Default)
			}
			a.p.Inits = append(a.p.Inits, fieldInit{Field: field, Env: map[string]string{"PropagationTimeout": "timeout", "PollingInterval": "interval"}[field]})
			continue
		case "HTTPClient":
			d, err := a.httpClient(kv.Value)
			if err != nil {
				return err
			}
			a.p.Inits = append(a.p.Inits, fieldInit{Field: field, Env: "client", Dur: d})
			continue
		case "HTTPTimeout":
			if typ == "time.Duration" {
				var d int64
				if k, _, err := a.envRead(kv.Value, true); err == nil && k.Default != nil {
					d, _ = constant.Int64Val(k.Default)
				}
				a.p.Inits = append(a.p.Inits, fieldInit{Field: field, Env: "httptimeout", Dur: d})
				continue
			}
		}
		v, err := a.value(kv.Value, true)
		if err != nil {
			return fmt.Errorf("%s: %w", field, err)
		}
		if v.key == nil && typ == "time.Duration" && v.ckind == kInt {
			v.ckind = kSeconds // a constant duration
		}
		if v.key == nil && (typ == "int64" || typ == "int32") && v.ckind == kInt {
			v.ckind = map[string]kind{"int64": kInt64, "int32": kInt32}[typ]
		}
		if err := checkType(field, typ, v.kind()); err != nil {
			return err
		}
		if v.key != nil {
			v.key.Field = field
		}
		a.p.Inits = append(a.p.Inits, fieldInit{Field: field, Key: v.key, Const: v.konst, Kind: v.kind()})
	}
	return nil
}

// configLit returns the literal of &Config{...}.
func configLit(x ast.Expr) *ast.CompositeLit {
	u, ok := x.(*ast.UnaryExpr)
	if !ok || u.Op != token.AND {
		return nil
	}
	lit, ok := u.X.(*ast.CompositeLit)
	if !ok {
		return nil
	}
	if id, ok := lit.Type.(*ast.Ident); !ok || id.Name != "Config" {
		return nil
	}
	return lit
}

// httpClient accepts &http.Client{Timeout: env.GetOrDefaultSecond(...)}
// and returns the default timeout: Detour's client replaces it, and a
// client with anything more (a Transport) cannot be replaced faithfully.
func (a *analysis) httpClient(x ast.Expr) (int64, error) {
	u, ok := x.(*ast.UnaryExpr)
	var lit *ast.CompositeLit
	if ok {
		lit, _ = u.X.(*ast.CompositeLit)
	}
	if lit == nil || a.l.src(lit.Type) != "http.Client" {
		return 0, fmt.Errorf("HTTPClient: %s", a.l.src(x))
	}
	var d int64
	for _, e := range lit.Elts {
		kv, ok := e.(*ast.KeyValueExpr)
		if !ok || kv.Key.(*ast.Ident).Name != "Timeout" {
			return 0, fmt.Errorf("HTTPClient sets more than a timeout: %s", a.l.src(e))
		}
		k, _, err := a.envRead(kv.Value, true)
		if err != nil {
			v, err := a.l.eval(a.pk, a.file, kv.Value, -1)
			if err != nil {
				return 0, fmt.Errorf("HTTPClient timeout: %w", err)
			}
			d, _ = constant.Int64Val(v)
			continue
		}
		// The variable is dropped: Detour sets the client.
		delete(a.byEnv, k.Env)
		a.order = slices.DeleteFunc(a.order, func(o *key) bool { return o == k })
		if k.Default != nil {
			d, _ = constant.Int64Val(k.Default)
		}
	}
	return d, nil
}

var errNotEnv = errors.New("not an environment read")

// envRead recognises a read of one variable with a default:
// env.GetOrDefaultString/Int/Bool/Second(EnvX, def), env.GetOrFile(EnvX),
// os.Getenv(EnvX), env.GetOneWithFallback(EnvX, def, parse, alt...), each
// possibly inside a conversion (int64(...)). It returns the key and the
// conversion ("" or the type converted to). For PropagationTimeout and
// the like it is called only to learn the default; the key it creates is
// then dropped by the caller (fromDefault keys without a field).
func (a *analysis) envRead(x ast.Expr, fromDefault bool) (*key, string, error) {
	conv := ""
	call, ok := x.(*ast.CallExpr)
	if !ok {
		return nil, "", errNotEnv
	}
	if id, ok := call.Fun.(*ast.Ident); ok && (id.Name == "int64" || id.Name == "int32") && len(call.Args) == 1 {
		conv = id.Name
		if call, ok = call.Args[0].(*ast.CallExpr); !ok {
			return nil, "", errNotEnv
		}
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	if !ok {
		if id, ok := call.Fun.(*ast.Ident); ok && len(call.Args) > 0 {
			if _, isEnv := a.envName(call.Args[0]); isEnv == nil {
				return nil, "", fmt.Errorf("reads %s through the package's own %s", a.l.src(call.Args[0]), id.Name)
			}
		}
		return nil, "", errNotEnv
	}
	pkgID, ok := sel.X.(*ast.Ident)
	if !ok {
		return nil, "", errNotEnv
	}
	path, _ := importPath(a.file, pkgID.Name)
	fn := sel.Sel.Name
	if path == "os" && fn == "Getenv" {
		fn = "GetOrFile"
	} else if path != legoModule+"/platform/env" {
		return nil, "", errNotEnv
	}
	var k kind
	var def ast.Expr
	var alts []ast.Expr
	switch fn {
	case "GetOrFile":
		if len(call.Args) != 1 {
			return nil, "", errNotEnv
		}
	case "GetOrDefaultString", "GetOrDefaultInt", "GetOrDefaultBool", "GetOrDefaultSecond":
		if len(call.Args) != 2 {
			return nil, "", errNotEnv
		}
		def = call.Args[1]
		k = map[string]kind{"GetOrDefaultString": kString, "GetOrDefaultInt": kInt, "GetOrDefaultBool": kBool, "GetOrDefaultSecond": kSeconds}[fn]
	case "GetOneWithFallback":
		if len(call.Args) < 3 {
			return nil, "", errNotEnv
		}
		def, alts = call.Args[1], call.Args[3:]
		switch parse := a.l.src(call.Args[2]); parse {
		case "env.ParseString":
			k = kString
		case "env.ParseSecond":
			k = kSeconds
		case "strconv.Atoi":
			k = kInt
		case "strconv.ParseBool":
			k = kBool
		default:
			return nil, "", fmt.Errorf("GetOneWithFallback parses with %s", parse)
		}
	default:
		return nil, "", fmt.Errorf("env.%s", fn)
	}
	switch conv {
	case "int64":
		if k != kInt {
			return nil, "", fmt.Errorf("int64 of %s", a.l.src(call))
		}
		k = kInt64
	case "int32":
		if k != kInt {
			return nil, "", fmt.Errorf("int32 of %s", a.l.src(call))
		}
		k = kInt32
	}
	name, err := a.envName(call.Args[0])
	if err != nil {
		return nil, "", err
	}
	var defVal constant.Value
	if def != nil {
		if defVal, err = a.l.eval(a.pk, a.file, def, -1); err != nil {
			return nil, "", fmt.Errorf("default of %s: %w", name, err)
		}
		if k == kString && defVal.Kind() == constant.String && constant.StringVal(defVal) == "" {
			defVal = nil
		}
	}
	key, err := a.keyFor(name, k, fromDefault)
	if err != nil {
		return nil, "", err
	}
	if defVal != nil {
		key.Default = defVal
	}
	for _, alt := range alts {
		if n, err := a.envName(alt); err == nil && !slices.Contains(key.Also, n) {
			key.Also = append(key.Also, n)
		}
	}
	return key, conv, nil
}

// envName evaluates the name of a variable (EnvToken, envNamespace+"X").
func (a *analysis) envName(x ast.Expr) (string, error) {
	v, err := a.l.eval(a.pk, a.file, x, -1)
	if err != nil {
		return "", err
	}
	if v.Kind() != constant.String {
		return "", fmt.Errorf("%s is not a string", a.l.src(x))
	}
	return constant.StringVal(v), nil
}

// constructor reads NewDNSProvider: env.Get/GetWithFallback into a map,
// config := NewDefaultConfig(), locals parsed from variables (url.Parse,
// env.ParsePairs, strconv), config.F = values[EnvX], a local or an env
// read, and return NewDNSProviderConfig(config).
func (a *analysis) constructor(fn *ast.FuncDecl) error {
	a.file = fileOf(a.pk, fn)
	a.maps, a.locals, a.required = map[string]bool{}, map[string]val{}, nil
	used := map[string]bool{}
	cfgVar := ""
	stmts := fn.Body.List
	for i, s := range stmts {
		switch s := s.(type) {
		case *ast.AssignStmt:
			if len(s.Lhs) == 2 && len(s.Rhs) == 1 && isEnvGet(a.l.src(s.Rhs[0])) {
				// values, err := env.Get(...) / env.GetWithFallback(...)
				names, err := a.envGet(s.Rhs[0])
				if err != nil {
					return err
				}
				a.maps[s.Lhs[0].(*ast.Ident).Name] = true
				a.required = append(a.required, names...)
				continue
			}
			if len(s.Lhs) == 1 && len(s.Rhs) == 1 && s.Tok == token.DEFINE && a.l.src(s.Rhs[0]) == "NewDefaultConfig()" {
				cfgVar = s.Lhs[0].(*ast.Ident).Name
				continue
			}
			if ok, err := a.local(s); ok || err != nil {
				if err != nil {
					return err
				}
				continue
			}
			if len(s.Lhs) != 1 || len(s.Rhs) != 1 {
				return fmt.Errorf("%s", a.l.src(s))
			}
			sel, ok := s.Lhs[0].(*ast.SelectorExpr)
			if !ok || cfgVar == "" || a.l.src(sel.X) != cfgVar || s.Tok != token.ASSIGN {
				return fmt.Errorf("%s", a.l.src(s))
			}
			field := sel.Sel.Name
			typ, ok := a.fields[field]
			if !ok {
				return fmt.Errorf("%s: no field %s", a.l.src(s), field)
			}
			v, err := a.value(s.Rhs[0], false)
			if err != nil {
				return fmt.Errorf("%s: %w", a.l.src(s), err)
			}
			if detourSets[field] {
				continue // Detour sets it (PropagationTimeout = env.GetOrDefault…)
			}
			if err := checkType(field, typ, v.kind()); err != nil {
				return err
			}
			if v.key != nil {
				v.key.Field = field
				used[v.key.Env] = true
			}
			a.p.Assigns = append(a.p.Assigns, fieldInit{Field: field, Key: v.key, Const: v.konst, Kind: v.kind()})
		case *ast.IfStmt:
			if err := a.ifErr(s); err != nil {
				return err
			}
		case *ast.ReturnStmt:
			if i != len(stmts)-1 || len(s.Results) != 1 || cfgVar == "" || a.l.src(s.Results[0]) != "NewDNSProviderConfig("+cfgVar+")" {
				return fmt.Errorf("%s", a.l.src(s))
			}
		default:
			return fmt.Errorf("%s", a.l.src(s))
		}
	}
	if cfgVar == "" {
		return errors.New("does not start from NewDefaultConfig()")
	}
	for _, r := range a.required {
		if !used[r] {
			return fmt.Errorf("requires %s but does not put it in Config", r)
		}
	}
	// The variables of fields Detour sets are not keys.
	a.order = slices.DeleteFunc(a.order, func(k *key) bool {
		if k.Field == "" || detourSets[k.Field] {
			delete(a.byEnv, k.Env)
			return true
		}
		return false
	})
	return nil
}

func isEnvGet(call string) bool {
	return strings.HasPrefix(call, "env.Get(") || strings.HasPrefix(call, "env.GetWithFallback(")
}

// val is what an expression gives a field: a key's value or a constant.
type val struct {
	key   *key
	konst constant.Value
	ckind kind // the constant's kind
}

func (v val) kind() kind {
	if v.key != nil {
		return v.key.Kind
	}
	return v.ckind
}

// value resolves x: values[EnvX] (a required key), an env read (an
// optional key), a local, or a constant.
func (a *analysis) value(x ast.Expr, fromDefault bool) (val, error) {
	if ix, ok := x.(*ast.IndexExpr); ok {
		if id, ok := ix.X.(*ast.Ident); ok && a.maps[id.Name] {
			name, err := a.envName(ix.Index)
			if err != nil {
				return val{}, err
			}
			if !slices.Contains(a.required, name) {
				return val{}, fmt.Errorf("%s is not read by env.Get", name)
			}
			k, err := a.keyFor(name, kString, false)
			if err != nil {
				return val{}, err
			}
			k.Required = true
			return val{key: k}, nil
		}
	}
	if id, ok := x.(*ast.Ident); ok {
		if v, ok := a.locals[id.Name]; ok {
			return v, nil
		}
	}
	k, _, err := a.envRead(x, fromDefault)
	if err == nil {
		return val{key: k}, nil
	}
	if !errors.Is(err, errNotEnv) {
		return val{}, err
	}
	c, err := a.l.eval(a.pk, a.file, x, -1)
	if err != nil {
		return val{}, err
	}
	var ck kind
	switch c.Kind() {
	case constant.String:
		ck = kString
	case constant.Bool:
		ck = kBool
	case constant.Int:
		ck = kInt
	default:
		return val{}, fmt.Errorf("%s: a %s constant", a.l.src(x), c.Kind())
	}
	return val{konst: c, ckind: ck}, nil
}

// local recognises the assignment of a local the constructors then put
// in Config: x := <value>; x, err := url.Parse(<value>);
// x, err := env.ParsePairs(<value>); x, err := strconv.ParseInt(<value>,
// 10, 64) or strconv.Atoi(<value>). It reports whether s is one.
func (a *analysis) local(s *ast.AssignStmt) (bool, error) {
	if len(s.Rhs) != 1 || s.Tok != token.DEFINE {
		return false, nil
	}
	id, ok := s.Lhs[0].(*ast.Ident)
	if !ok {
		return false, nil
	}
	if len(s.Lhs) == 1 {
		v, err := a.value(s.Rhs[0], false)
		if err != nil {
			return true, fmt.Errorf("%s: %w", a.l.src(s), err)
		}
		a.locals[id.Name] = v
		return true, nil
	}
	call, ok := s.Rhs[0].(*ast.CallExpr)
	if len(s.Lhs) != 2 || !ok || len(call.Args) == 0 {
		return false, nil
	}
	var to kind
	switch fn := a.l.src(call.Fun); {
	case fn == "url.Parse" && len(call.Args) == 1:
		to = kURL
	case fn == "env.ParsePairs" && len(call.Args) == 1:
		to = kPairs
	case fn == "strconv.Atoi" && len(call.Args) == 1:
		to = kInt
	case fn == "strconv.ParseInt" && len(call.Args) == 3 && a.l.src(call.Args[1]) == "10" && a.l.src(call.Args[2]) == "64":
		to = kInt64
	default:
		return true, fmt.Errorf("%s", a.l.src(s))
	}
	v, err := a.value(call.Args[0], false)
	if err != nil {
		return true, fmt.Errorf("%s: %w", a.l.src(s), err)
	}
	if v.kind() != kString {
		return true, fmt.Errorf("%s parses a %s", a.l.src(s), v.kind())
	}
	if v.key != nil {
		v.key.Kind = to
	} else {
		if to != kURL {
			return true, fmt.Errorf("%s: parses a constant", a.l.src(s))
		}
		if _, err := url.Parse(constant.StringVal(v.konst)); err != nil {
			return true, fmt.Errorf("%s: %w", a.l.src(s), err)
		}
		v.ckind = kURL
	}
	a.locals[id.Name] = v
	return true, nil
}

// ifErr accepts `if err != nil { return ... }` and
// `if err != nil { x, _ = url.Parse(<constant>) }` (a fallback for an
// invalid URL, which Detour refuses instead).
func (a *analysis) ifErr(s *ast.IfStmt) error {
	if a.l.src(s.Cond) != "err != nil" || s.Init != nil || s.Else != nil || len(s.Body.List) != 1 {
		return fmt.Errorf("if %s", a.l.src(s.Cond))
	}
	switch b := s.Body.List[0].(type) {
	case *ast.ReturnStmt:
		return nil
	case *ast.AssignStmt:
		if call, ok := b.Rhs[0].(*ast.CallExpr); ok && len(b.Rhs) == 1 && a.l.src(call.Fun) == "url.Parse" && len(call.Args) == 1 {
			if _, err := a.l.eval(a.pk, a.file, call.Args[0], -1); err == nil {
				return nil
			}
		}
	}
	return fmt.Errorf("if err != nil { %s }", a.l.src(s.Body.List[0]))
}

// envGet recognises env.Get(EnvA, EnvB) and
// env.GetWithFallback([]string{EnvA, altA}, ...) and returns the
// variables, each required.
func (a *analysis) envGet(x ast.Expr) ([]string, error) {
	call, ok := x.(*ast.CallExpr)
	if !ok {
		return nil, fmt.Errorf("%s", a.l.src(x))
	}
	switch a.l.src(call.Fun) {
	case "env.Get":
		var names []string
		for _, arg := range call.Args {
			n, err := a.envName(arg)
			if err != nil {
				return nil, err
			}
			names = append(names, n)
		}
		return names, nil
	case "env.GetWithFallback":
		var names []string
		for _, arg := range call.Args {
			lit, ok := arg.(*ast.CompositeLit)
			if !ok || len(lit.Elts) == 0 {
				return nil, fmt.Errorf("GetWithFallback(%s)", a.l.src(arg))
			}
			n, err := a.envName(lit.Elts[0])
			if err != nil {
				return nil, err
			}
			k, err := a.keyFor(n, kString, false)
			if err != nil {
				return nil, err
			}
			for _, alt := range lit.Elts[1:] {
				if an, err := a.envName(alt); err == nil && !slices.Contains(k.Also, an) {
					k.Also = append(k.Also, an)
				}
			}
			names = append(names, n)
		}
		return names, nil
	}
	return nil, fmt.Errorf("%s", a.l.src(x))
}

// checkType requires that a value of kind k fits a field of type typ.
func checkType(field, typ string, k kind) error {
	if !ast.IsExported(field) {
		return fmt.Errorf("sets the unexported field %s", field)
	}
	want := map[kind]string{kString: "string", kInt: "int", kInt64: "int64", kInt32: "int32", kBool: "bool", kSeconds: "time.Duration",
		kURL: "*url.URL", kPairs: "map[string]string"}[k]
	if typ != want {
		return fmt.Errorf("%s is a %s, read as %s", field, typ, want)
	}
	return nil
}

func (k kind) String() string {
	return [...]string{"string", "int", "int64", "int32", "bool", "seconds", "URL", "pairs"}[k]
}

// fileOf returns the file of p that declares fn.
func fileOf(p *pkg, fn *ast.FuncDecl) *ast.File {
	for _, f := range p.files {
		if f.Pos() <= fn.Pos() && fn.End() <= f.End() {
			return f
		}
	}
	return p.files[0]
}

func printNode(w io.Writer, fset *token.FileSet, x ast.Node) error {
	return (&printer.Config{Mode: printer.RawFormat}).Fprint(w, fset, x)
}
