package hostcheck

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// apacheDump is what `apache2 -t -D DUMP_VHOSTS -D DUMP_RUN_CFG -D
// DUMP_MODULES` (apachectl -S plus -M) prints.
type apacheDump struct {
	Vhosts      []apacheVhost
	ServerRoot  string
	MainDocRoot string
	Defines     map[string]string // Define: NAME[=value]
	Modules     map[string]bool   // "alias_module"; nil when not listed
}

// apacheVhost is one virtual host of the dump.
type apacheVhost struct {
	Addr    string // "*:80", "127.0.0.1:8080", "[::]:443"
	Port    int
	Name    string
	Aliases []string // ServerAlias, wildcards included
	Default bool     // the default server of its address
	File    string
	Line    int
}

// parseApacheDump reads the dump. Each address either has one virtual
// host on its line, or "is a NameVirtualHost" followed by its default
// server and every name-based virtual host, with their aliases.
func parseApacheDump(out string) (apacheDump, error) {
	d := apacheDump{Defines: map[string]string{}}
	inVhosts, inModules, sawHeader := false, false, false
	var addr, defFile string
	var port, defLine int
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := sc.Text()
		t := strings.TrimSpace(line)
		switch {
		case t == "VirtualHost configuration:":
			inVhosts, sawHeader = true, true
			continue
		case t == "Loaded Modules:":
			inModules, inVhosts = true, false
			d.Modules = map[string]bool{}
			continue
		case strings.HasPrefix(t, "ServerRoot:"):
			d.ServerRoot = unquoteApache(strings.TrimSpace(strings.TrimPrefix(t, "ServerRoot:")))
			inVhosts = false
			continue
		case strings.HasPrefix(t, "Main DocumentRoot:"):
			d.MainDocRoot = unquoteApache(strings.TrimSpace(strings.TrimPrefix(t, "Main DocumentRoot:")))
			continue
		case strings.HasPrefix(t, "Define:"):
			k, v, _ := strings.Cut(strings.TrimSpace(strings.TrimPrefix(t, "Define:")), "=")
			d.Defines[k] = v
			continue
		}
		if inModules {
			if f := strings.Fields(t); len(f) >= 1 && strings.HasSuffix(f[0], "_module") {
				d.Modules[f[0]] = true
			}
			continue
		}
		if !inVhosts || t == "" {
			continue
		}
		indented := line != "" && (line[0] == ' ' || line[0] == '\t')
		switch {
		case !indented:
			f := strings.Fields(t)
			addr = f[0]
			port = apachePort(addr)
			defFile, defLine = "", 0
			if len(f) >= 3 && f[1] == "is" { // "is a NameVirtualHost"
				continue
			}
			name, file, ln := parseApacheVhostRef(strings.TrimSpace(strings.TrimPrefix(t, addr)))
			d.Vhosts = append(d.Vhosts, apacheVhost{Addr: addr, Port: port, Name: name, Default: true, File: file, Line: ln})
		case strings.HasPrefix(t, "default server "):
			// Listed again among the namevhosts that follow.
			_, defFile, defLine = parseApacheVhostRef(strings.TrimPrefix(t, "default server "))
		case strings.HasPrefix(t, "port ") && strings.Contains(t, " namevhost "):
			_, rest, _ := strings.Cut(t, " namevhost ")
			name, file, ln := parseApacheVhostRef(rest)
			d.Vhosts = append(d.Vhosts, apacheVhost{Addr: addr, Port: port, Name: name, File: file, Line: ln,
				Default: file == defFile && ln == defLine})
		case strings.HasPrefix(t, "alias "), strings.HasPrefix(t, "wild alias "):
			if n := len(d.Vhosts); n > 0 {
				a := strings.TrimPrefix(strings.TrimPrefix(t, "wild "), "alias ")
				d.Vhosts[n-1].Aliases = append(d.Vhosts[n-1].Aliases, a)
			}
		}
	}
	if !sawHeader {
		return d, fmt.Errorf("no \"VirtualHost configuration:\" in apache's dump")
	}
	return d, nil
}

// parseApacheVhostRef reads "NAME (FILE:LINE)".
func parseApacheVhostRef(s string) (name, file string, line int) {
	i := strings.LastIndex(s, " (")
	if i < 0 {
		return strings.TrimSpace(s), "", 0
	}
	name = strings.TrimSpace(s[:i])
	ref := strings.TrimSuffix(s[i+2:], ")")
	if j := strings.LastIndex(ref, ":"); j >= 0 {
		file = ref[:j]
		line, _ = strconv.Atoi(ref[j+1:])
	}
	return name, file, line
}

// apachePort returns the port of "*:80", "[::]:443", "_default_:443".
func apachePort(addr string) int {
	i := strings.LastIndex(addr, ":")
	if i < 0 {
		return 0
	}
	p, _ := strconv.Atoi(addr[i+1:])
	return p
}

func unquoteApache(s string) string {
	if len(s) >= 2 && s[0] == '"' && s[len(s)-1] == '"' {
		return s[1 : len(s)-1]
	}
	return s
}

// apNode is a directive or section of an Apache configuration.
type apNode struct {
	Name     string // as written; compare with strings.EqualFold
	Args     []string
	File     string
	Line     int
	Section  bool
	Children []*apNode
}

func (n *apNode) is(name string) bool { return strings.EqualFold(n.Name, name) }

func (n *apNode) arg(i int) string {
	if i < len(n.Args) {
		return n.Args[i]
	}
	return ""
}

// apacheLoader reads a configuration tree from disk, following Include
// and IncludeOptional, keeping only the branches of <IfDefine> and
// <IfModule> that apply, and expanding ${VAR}.
type apacheLoader struct {
	serverRoot string
	defines    map[string]string
	env        map[string]string
	modules    map[string]bool // nil: every <IfModule> is taken as true
	readFile   func(string) ([]byte, error)
	depth      int
}

func (l *apacheLoader) load(file string) ([]*apNode, error) {
	l.depth++
	defer func() { l.depth-- }()
	if l.depth > 16 {
		return nil, fmt.Errorf("%s: includes nested more than 16 deep", file)
	}
	b, err := l.readFile(file)
	if err != nil {
		return nil, err
	}
	return l.parse(file, string(b))
}

// parse parses one file's text.
func (l *apacheLoader) parse(file, text string) ([]*apNode, error) {
	root := &apNode{Section: true}
	stack := []*apNode{root}
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		start := i + 1
		line := strings.TrimRight(lines[i], "\r")
		for strings.HasSuffix(line, "\\") && i+1 < len(lines) {
			i++
			line = strings.TrimSuffix(line, "\\") + strings.TrimRight(lines[i], "\r")
		}
		t := strings.TrimSpace(line)
		if t == "" || t[0] == '#' {
			continue
		}
		top := stack[len(stack)-1]
		if strings.HasPrefix(t, "</") {
			if len(stack) == 1 {
				return nil, fmt.Errorf("%s:%d: %s closes no section", file, start, t)
			}
			stack = stack[:len(stack)-1]
			continue
		}
		if strings.HasPrefix(t, "<") {
			inner := strings.TrimSuffix(strings.TrimPrefix(t, "<"), ">")
			args := splitApacheArgs(inner)
			if len(args) == 0 {
				continue
			}
			n := &apNode{Name: args[0], Args: l.expand(args[1:]), File: file, Line: start, Section: true}
			top.Children = append(top.Children, n)
			stack = append(stack, n)
			continue
		}
		args := splitApacheArgs(t)
		n := &apNode{Name: args[0], Args: l.expand(args[1:]), File: file, Line: start}
		if n.is("Define") && len(n.Args) > 0 {
			l.defines[n.Args[0]] = n.arg(1)
		}
		if n.is("Include") || n.is("IncludeOptional") {
			inc, err := l.include(n)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", file, start, err)
			}
			top.Children = append(top.Children, inc...)
			continue
		}
		top.Children = append(top.Children, n)
	}
	return root.Children, nil
}

// include loads the files an Include names: a path relative to
// ServerRoot, with wildcards, or a directory (its files, in order).
func (l *apacheLoader) include(n *apNode) ([]*apNode, error) {
	p := n.arg(0)
	if !filepath.IsAbs(p) {
		p = filepath.Join(l.serverRoot, p)
	}
	names, err := filepath.Glob(p)
	if err != nil {
		return nil, fmt.Errorf("include %s: %w", p, err)
	}
	if len(names) == 0 && !strings.ContainsAny(p, "*?[") && n.is("Include") {
		return nil, fmt.Errorf("include %s: no such file", p)
	}
	slices.Sort(names)
	var out []*apNode
	for _, name := range names {
		fi, err := os.Stat(name)
		if err != nil {
			continue
		}
		files := []string{name}
		if fi.IsDir() {
			ents, _ := os.ReadDir(name)
			files = nil
			for _, e := range ents {
				if !e.IsDir() {
					files = append(files, filepath.Join(name, e.Name()))
				}
			}
		}
		for _, f := range files {
			ns, err := l.load(f)
			if err != nil {
				return nil, err
			}
			out = append(out, ns...)
		}
	}
	return out, nil
}

// expand replaces ${VAR} by a Define or an environment variable.
func (l *apacheLoader) expand(args []string) []string {
	for i, a := range args {
		for {
			j := strings.Index(a, "${")
			if j < 0 {
				break
			}
			k := strings.Index(a[j:], "}")
			if k < 0 {
				break
			}
			name := a[j+2 : j+k]
			v, ok := l.defines[name]
			if !ok {
				v, ok = l.env[name]
			}
			if !ok {
				break
			}
			a = a[:j] + v + a[j+k+1:]
		}
		args[i] = a
	}
	return args
}

// splitApacheArgs splits a directive line into words; "..." and '...'
// quote (a backslash escapes the quote character inside them).
func splitApacheArgs(s string) []string {
	var out []string
	i := 0
	for i < len(s) {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i >= len(s) {
			break
		}
		if c := s[i]; c == '"' || c == '\'' {
			var b strings.Builder
			i++
			for i < len(s) && s[i] != c {
				if s[i] == '\\' && i+1 < len(s) && (s[i+1] == c || s[i+1] == '\\') {
					i++
				}
				b.WriteByte(s[i])
				i++
			}
			i++
			out = append(out, b.String())
			continue
		}
		j := i
		for j < len(s) && s[j] != ' ' && s[j] != '\t' {
			j++
		}
		out = append(out, s[i:j])
		i = j
	}
	return out
}

// active flattens the conditional sections that apply (<IfDefine>,
// <IfModule>, <IfVersion>, <IfFile>, <IfDirective>, <IfSection>) into
// their parent; other sections are kept.
func (l *apacheLoader) active(nodes []*apNode) []*apNode {
	var out []*apNode
	for _, n := range nodes {
		if !n.Section {
			out = append(out, n)
			continue
		}
		switch strings.ToLower(n.Name) {
		case "ifdefine":
			name, neg := strings.CutPrefix(n.arg(0), "!")
			_, set := l.defines[name]
			if set != neg {
				out = append(out, l.active(n.Children)...)
			}
		case "ifmodule":
			name, neg := strings.CutPrefix(n.arg(0), "!")
			if l.hasModule(name) != neg {
				out = append(out, l.active(n.Children)...)
			}
		case "ifversion", "iffile", "ifdirective", "ifsection":
			out = append(out, l.active(n.Children)...)
		default:
			c := *n
			c.Children = l.active(n.Children)
			out = append(out, &c)
		}
	}
	return out
}

// hasModule answers <IfModule>, whose argument is a module's identifier
// (rewrite_module) or its source file (mod_rewrite.c).
func (l *apacheLoader) hasModule(name string) bool {
	if l.modules == nil {
		return true
	}
	if m, ok := strings.CutSuffix(name, ".c"); ok {
		name = strings.TrimPrefix(m, "mod_") + "_module"
	}
	return l.modules[name]
}

// parseApacheCmdline returns the options of a running httpd that decide
// which configuration it read: -d, -f, -C, -c and -D.
func parseApacheCmdline(cmd string) []string {
	w := strings.Fields(cmd)
	var out []string
	for i := 1; i < len(w); i++ {
		switch a := w[i]; {
		case a == "-d" || a == "-f" || a == "-C" || a == "-c" || a == "-D":
			if i+1 < len(w) {
				out = append(out, a, w[i+1])
				i++
			}
		case strings.HasPrefix(a, "-D") && len(a) > 2:
			out = append(out, "-D", a[2:])
		}
	}
	return out
}

// argValue returns the value of option opt in args, "" none.
func argValue(args []string, opt string) string {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == opt {
			return args[i+1]
		}
	}
	return ""
}

// parseApacheV returns HTTPD_ROOT and SERVER_CONFIG_FILE from `apache2
// -V`.
func parseApacheV(out string) (root, conf string) {
	for _, line := range strings.Split(out, "\n") {
		t := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "-D "))
		if v, ok := strings.CutPrefix(t, "HTTPD_ROOT="); ok {
			root = unquoteApache(v)
		}
		if v, ok := strings.CutPrefix(t, "SERVER_CONFIG_FILE="); ok {
			conf = unquoteApache(v)
		}
	}
	return root, conf
}
