package importer

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
)

// Setting is one key of a source's renewal settings: a line of a certbot
// renewal configuration, or a flag given to `detour import lego`.
type Setting struct {
	// Section is the section the key is in ("renewalparams",
	// "renewalparams/webroot_map"; "" at the top).
	Section string
	// Key and Value as written; List holds the items of a list value
	// ("a, b" or "a,"), and IsList says whether the value was one.
	Key, Value string
	List       []string
	IsList     bool
	// File and Line say where it was read ("" and 0 for flags).
	File string
	Line int
}

// Where returns "file:line", or "the command line" for a flag.
func (s Setting) Where() string {
	if s.File == "" {
		return "the command line"
	}
	return fmt.Sprintf("%s:%d", s.File, s.Line)
}

// Values returns the value as a list: the items of a list, else the one
// value (none when it is empty).
func (s Setting) Values() []string {
	if s.IsList {
		return s.List
	}
	if s.Value == "" {
		return nil
	}
	return []string{s.Value}
}

// ConfError is a line of a renewal configuration that cannot be read.
type ConfError struct {
	File string
	Line int
	Msg  string
}

func (e *ConfError) Error() string { return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg) }

// parseConf reads a renewal configuration as certbot writes it with
// Python's configobj: "key = value" lines, "[section]" and "[[subsection]]"
// markers, "#" comments, values that are bare, 'single-' or
// "double-quoted", triple-quoted (possibly over several lines), or lists
// ("a, b", or "a," for a list of one). The first line that is none of
// these is an error naming file and line; nothing of such a file is used.
func parseConf(file string, data []byte) ([]Setting, error) {
	var out []Setting
	var sections []string // the open section at each depth
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	bad := func(line int, format string, args ...any) error {
		return &ConfError{File: file, Line: line, Msg: fmt.Sprintf(format, args...)}
	}
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasPrefix(line, "[") {
			depth, name, err := sectionMarker(line)
			if err != nil {
				return nil, bad(n, "%v", err)
			}
			if depth > len(sections)+1 {
				return nil, bad(n, "section %q is nested %d deep inside %d open section(s); a [[subsection]] must follow its [section]", name, depth, len(sections))
			}
			sections = append(sections[:depth-1], name)
			continue
		}
		key, raw, ok := strings.Cut(line, "=")
		key = unquoteKey(strings.TrimSpace(key))
		if !ok || key == "" {
			return nil, bad(n, "expected \"key = value\", a [section] or a # comment, found %q", clip(line))
		}
		raw = strings.TrimSpace(raw)
		st := Setting{Section: strings.Join(sections, "/"), Key: key, File: file, Line: n}
		if q := tripleQuote(raw); q != "" {
			// A triple-quoted value, possibly running over more lines.
			body := raw[3:]
			start := n
			for {
				if i := strings.Index(body, q); i >= 0 {
					if rest := strings.TrimSpace(body[i+3:]); rest != "" && !strings.HasPrefix(rest, "#") {
						return nil, bad(n, "unexpected %q after the closing %s of %s", clip(rest), q, key)
					}
					st.Value = body[:i]
					break
				}
				if !sc.Scan() {
					return nil, bad(start, "the value of %s opens with %s and is never closed", key, q)
				}
				n++
				body += "\n" + sc.Text()
			}
			out = append(out, st)
			continue
		}
		items, isList, err := parseValue(raw)
		if err != nil {
			return nil, bad(n, "value of %s: %v", key, err)
		}
		st.IsList = isList
		if isList {
			st.List = items
			st.Value = strings.Join(items, ", ")
		} else if len(items) == 1 {
			st.Value = items[0]
		}
		out = append(out, st)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", file, err)
	}
	return out, nil
}

// sectionMarker parses "[name]", "[[name]]", ... and returns the depth.
func sectionMarker(line string) (int, string, error) {
	if i := strings.Index(line, "#"); i >= 0 && strings.LastIndex(line, "]") < i {
		line = strings.TrimSpace(line[:i])
	}
	open := len(line) - len(strings.TrimLeft(line, "["))
	closing := len(line) - len(strings.TrimRight(line, "]"))
	name := strings.TrimSpace(line[open : len(line)-closing])
	switch {
	case closing == 0:
		return 0, "", fmt.Errorf("section marker %q lacks its closing ]", clip(line))
	case open != closing:
		return 0, "", fmt.Errorf("section marker %q opens with %d [ and closes with %d ]", clip(line), open, closing)
	case name == "":
		return 0, "", fmt.Errorf("section marker %q has no name", clip(line))
	}
	return open, unquoteKey(name), nil
}

// unquoteKey removes the quotes of a quoted key or section name.
func unquoteKey(k string) string {
	if len(k) >= 2 && (k[0] == '"' || k[0] == '\'') && k[len(k)-1] == k[0] {
		return k[1 : len(k)-1]
	}
	return k
}

// tripleQuote returns the triple quote raw starts with, if any.
func tripleQuote(raw string) string {
	for _, q := range []string{`"""`, `'''`} {
		if strings.HasPrefix(raw, q) {
			return q
		}
	}
	return ""
}

// parseValue splits a one-line value into its items: quoted items end at
// their closing quote, bare ones at a comma or a "#" comment. A comma
// anywhere makes the value a list ("a," is a list of one, "," an empty
// list).
func parseValue(raw string) (items []string, isList bool, err error) {
	s := raw
	if s == "," {
		return nil, true, nil
	}
	for {
		s = strings.TrimLeft(s, " \t")
		var item string
		switch {
		case s == "" || s[0] == '#':
			if isList && len(items) > 0 {
				return items, true, nil
			}
			if isList {
				return nil, false, fmt.Errorf("%q has an empty list item", clip(raw))
			}
			return []string{""}, false, nil
		case s[0] == '"' || s[0] == '\'':
			end := strings.IndexByte(s[1:], s[0])
			if end < 0 {
				return nil, false, fmt.Errorf("%q: the quote %c is never closed", clip(raw), s[0])
			}
			item, s = s[1:1+end], s[2+end:]
		default:
			end := strings.IndexAny(s, ",#")
			if end < 0 {
				end = len(s)
			}
			item, s = strings.TrimRight(s[:end], " \t"), s[end:]
		}
		items = append(items, item)
		s = strings.TrimLeft(s, " \t")
		switch {
		case s == "" || s[0] == '#':
			return items, isList, nil
		case s[0] == ',':
			isList = true
			s = s[1:]
			if rest := strings.TrimLeft(s, " \t"); rest == "" || rest[0] == '#' {
				return items, true, nil
			}
		default:
			return nil, false, fmt.Errorf("%q: unexpected %q after a quoted value; quote the whole value", clip(raw), clip(s))
		}
	}
}

// clip shortens s for a message.
func clip(s string) string {
	const max = 60
	if len(s) <= max {
		return s
	}
	return s[:max] + "…"
}
