package hostcheck

import (
	"fmt"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// directive is one nginx directive: name, arguments, and its block when it
// has one. Includes are already replaced by what they include.
type directive struct {
	Name  string
	Args  []string
	File  string
	Line  int
	Block []*directive // non-nil when the directive has a block
}

func (d *directive) arg(i int) string {
	if i < len(d.Args) {
		return d.Args[i]
	}
	return ""
}

// find returns the directives named name directly in block.
func find(block []*directive, name string) []*directive {
	var out []*directive
	for _, d := range block {
		if d.Name == name {
			out = append(out, d)
		}
	}
	return out
}

// first returns the first directive named name in block, or nil.
func first(block []*directive, name string) *directive {
	for _, d := range block {
		if d.Name == name {
			return d
		}
	}
	return nil
}

// nginxDump is the output of `nginx -T`: each configuration file read,
// in order, the first being the main one.
type nginxDump struct {
	Files []string          // in the order nginx read them
	Text  map[string]string // by path
}

const nginxDumpHeader = "# configuration file "

// splitNginxDump splits `nginx -T` output into its files. Each starts with
// "# configuration file PATH:" on a line of its own.
func splitNginxDump(out string) (nginxDump, error) {
	d := nginxDump{Text: map[string]string{}}
	var cur string
	var b strings.Builder
	flush := func() {
		if cur != "" {
			if _, seen := d.Text[cur]; !seen {
				d.Files = append(d.Files, cur)
			}
			d.Text[cur] = b.String()
		}
		b.Reset()
	}
	for _, line := range strings.SplitAfter(out, "\n") {
		t := strings.TrimRight(line, "\r\n")
		if strings.HasPrefix(t, nginxDumpHeader) && strings.HasSuffix(t, ":") {
			flush()
			cur = strings.TrimSuffix(strings.TrimPrefix(t, nginxDumpHeader), ":")
			continue
		}
		if cur != "" {
			b.WriteString(line)
		}
	}
	flush()
	if len(d.Files) == 0 {
		return d, fmt.Errorf("nginx -T printed no configuration file (want lines starting %q)", nginxDumpHeader)
	}
	return d, nil
}

// parseNginxDump parses the main file of a dump, replacing each include
// by the dumped files it matches (relative patterns are relative to the
// main file's directory, as nginx resolves them).
func parseNginxDump(d nginxDump) ([]*directive, error) {
	main := d.Files[0]
	p := nginxParser{dump: d, confDir: filepath.Dir(main)}
	return p.file(main, 0)
}

type nginxParser struct {
	dump    nginxDump
	confDir string
}

func (p *nginxParser) file(name string, depth int) ([]*directive, error) {
	if depth > 16 {
		return nil, fmt.Errorf("%s: includes nested more than 16 deep", name)
	}
	text, ok := p.dump.Text[name]
	if !ok {
		return nil, fmt.Errorf("%s is not in nginx -T's output", name)
	}
	toks, err := tokenizeNginx(text)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	i := 0
	ds, err := p.block(name, toks, &i, depth, false)
	if err != nil {
		return nil, err
	}
	return ds, nil
}

func (p *nginxParser) block(file string, toks []ngxToken, i *int, depth int, nested bool) ([]*directive, error) {
	out := []*directive{}
	var cur *directive
	for *i < len(toks) {
		t := toks[*i]
		*i++
		switch {
		case !t.quoted && t.text == ";":
			if cur == nil {
				return nil, fmt.Errorf("%s:%d: unexpected \";\"", file, t.line)
			}
			if cur.Name == "include" && len(cur.Args) == 1 {
				inc, err := p.include(cur.Args[0], depth)
				if err != nil {
					return nil, fmt.Errorf("%s:%d: %w", file, cur.Line, err)
				}
				out = append(out, inc...)
			} else {
				out = append(out, cur)
			}
			cur = nil
		case !t.quoted && t.text == "{":
			if cur == nil {
				return nil, fmt.Errorf("%s:%d: unexpected \"{\"", file, t.line)
			}
			b, err := p.block(file, toks, i, depth, true)
			if err != nil {
				return nil, err
			}
			cur.Block = b
			out = append(out, cur)
			cur = nil
		case !t.quoted && t.text == "}":
			if !nested || cur != nil {
				return nil, fmt.Errorf("%s:%d: unexpected \"}\"", file, t.line)
			}
			return out, nil
		default:
			if cur == nil {
				cur = &directive{Name: t.text, File: file, Line: t.line}
			} else {
				cur.Args = append(cur.Args, t.text)
			}
		}
	}
	if nested || cur != nil {
		return nil, fmt.Errorf("%s: unexpected end of file", file)
	}
	return out, nil
}

// include returns the directives of the dumped files pattern matches, in
// name order (nginx globs, which sort).
func (p *nginxParser) include(pattern string, depth int) ([]*directive, error) {
	if !filepath.IsAbs(pattern) {
		pattern = filepath.Join(p.confDir, pattern)
	}
	var names []string
	for _, f := range p.dump.Files {
		if ok, _ := path.Match(pattern, f); ok || f == pattern {
			names = append(names, f)
		}
	}
	slices.Sort(names)
	var out []*directive
	for _, n := range names {
		ds, err := p.file(n, depth+1)
		if err != nil {
			return nil, err
		}
		out = append(out, ds...)
	}
	return out, nil
}

type ngxToken struct {
	text   string
	line   int
	quoted bool
}

// tokenizeNginx splits nginx configuration text into words, ";", "{" and
// "}", dropping comments and resolving quotes and escapes the way nginx's
// own reader does.
func tokenizeNginx(s string) ([]ngxToken, error) {
	var toks []ngxToken
	line := 1
	i := 0
	for i < len(s) {
		c := s[i]
		switch {
		case c == '\n':
			line++
			i++
		case c == ' ' || c == '\t' || c == '\r':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == ';' || c == '{' || c == '}':
			toks = append(toks, ngxToken{text: string(c), line: line})
			i++
		case c == '"' || c == '\'':
			start := line
			var b strings.Builder
			i++
			closed := false
			for i < len(s) {
				if s[i] == '\\' && i+1 < len(s) {
					if s[i+1] == '\n' {
						line++
					}
					b.WriteString(s[i : i+2])
					i += 2
					continue
				}
				if s[i] == c {
					i++
					closed = true
					break
				}
				if s[i] == '\n' {
					line++
				}
				b.WriteByte(s[i])
				i++
			}
			if !closed {
				return nil, fmt.Errorf("line %d: unterminated quote", start)
			}
			toks = append(toks, ngxToken{text: unescapeNginx(b.String()), line: start, quoted: true})
		default:
			var b strings.Builder
			for i < len(s) {
				c := s[i]
				if c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ';' || c == '{' || c == '}' {
					break
				}
				if c == '\\' && i+1 < len(s) {
					b.WriteByte(c)
					b.WriteByte(s[i+1])
					i += 2
					continue
				}
				if c == '$' && i+1 < len(s) && s[i+1] == '{' { // ${var}
					j := strings.IndexByte(s[i:], '}')
					if j < 0 {
						return nil, fmt.Errorf("line %d: unterminated ${", line)
					}
					b.WriteString(s[i : i+j+1])
					i += j + 1
					continue
				}
				b.WriteByte(c)
				i++
			}
			toks = append(toks, ngxToken{text: unescapeNginx(b.String()), line: line})
		}
	}
	return toks, nil
}

// unescapeNginx resolves the escapes nginx resolves in a word: \" \' \\
// \t \r \n; any other backslash stays (it belongs to a regex).
func unescapeNginx(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '"', '\'', '\\':
			b.WriteByte(s[i+1])
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		case 'n':
			b.WriteByte('\n')
		default:
			b.WriteByte('\\')
			b.WriteByte(s[i+1])
		}
		i++
	}
	return b.String()
}

// nginxArgs are the options of a running nginx master that decide which
// configuration it read.
type nginxArgs struct {
	Prefix, Conf, Globals, ErrorLog string
}

// parseNginxCmdline reads -p, -c, -g and -e from a master's command line.
// nginx rewrites it to "nginx: master process <argv joined by spaces>", so
// argument boundaries are lost: an option's value runs up to the next
// word that is an nginx option letter.
func parseNginxCmdline(cmd string) nginxArgs {
	cmd = strings.TrimPrefix(cmd, "nginx: master process ")
	words := strings.Fields(cmd)
	var a nginxArgs
	isOpt := func(w string) bool {
		return len(w) == 2 && w[0] == '-' && strings.ContainsRune("?hvVtTqspecg", rune(w[1]))
	}
	for i := 1; i < len(words); i++ {
		w := words[i]
		if !isOpt(w) {
			continue
		}
		switch w {
		case "-p", "-c", "-g", "-e", "-s":
			j := i + 1
			for j < len(words) && !isOpt(words[j]) {
				j++
			}
			v := strings.Join(words[i+1:j], " ")
			switch w {
			case "-p":
				a.Prefix = v
			case "-c":
				a.Conf = v
			case "-g":
				a.Globals = v
			case "-e":
				a.ErrorLog = v
			}
			i = j - 1
		}
	}
	return a
}

// parseNginxPrefix returns --prefix= from `nginx -V` output.
func parseNginxPrefix(v string) string {
	for _, w := range strings.Fields(v) {
		if p, ok := strings.CutPrefix(w, "--prefix="); ok {
			return p
		}
	}
	return ""
}
