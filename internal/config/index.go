package config

import (
	"fmt"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2/unstable"
)

// lineIndex maps key paths ("certificate[1].domains", "path.web.listen") to
// the 1-based line where the key, table header or array element appears.
// It is built from go-toml's AST, which keeps byte offsets that a decoded
// map[string]any has lost.
//
// Array elements and array-of-tables entries are numbered from 0. Only the
// first occurrence of a path is recorded, so a table split over several
// places points at its first header.
type lineIndex struct {
	lines map[string]int
}

// join appends one key segment to a key path.
func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// elem returns the key path of element i of the array at path.
func elem(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// buildIndex parses data, which must already be known to be valid TOML, and
// records the line of every key path.
func buildIndex(data []byte) lineIndex {
	b := &indexBuilder{
		idx:    lineIndex{lines: map[string]int{}},
		arrays: map[string]int{},
	}
	for i, c := range data {
		if c == '\n' {
			b.newlines = append(b.newlines, i)
		}
	}
	var p unstable.Parser
	p.Reset(data)
	prefix := ""
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table:
			keys, line := b.keys(e)
			prefix = b.resolve(keys, line)
			b.record(prefix, line)
		case unstable.ArrayTable:
			keys, line := b.keys(e)
			parent := b.resolve(keys[:len(keys)-1], line)
			full := join(parent, keys[len(keys)-1])
			b.record(full, line)
			n := b.arrays[full]
			b.arrays[full] = n + 1
			prefix = elem(full, n)
			b.record(prefix, line)
		case unstable.KeyValue:
			b.keyValue(prefix, e)
		}
	}
	return b.idx
}

// indexBuilder holds the state of one buildIndex pass.
type indexBuilder struct {
	idx      lineIndex
	arrays   map[string]int // array-of-tables path -> number of entries so far
	newlines []int          // byte offsets of '\n', ascending
}

// line converts a byte offset into a 1-based line number.
func (b *indexBuilder) line(offset uint32) int {
	return sort.SearchInts(b.newlines, int(offset)) + 1
}

// keys returns the key segments of a Table, ArrayTable or KeyValue node and
// the line of its first segment.
func (b *indexBuilder) keys(n *unstable.Node) ([]string, int) {
	var keys []string
	line := 0
	it := n.Key()
	for it.Next() {
		k := it.Node()
		if line == 0 {
			line = b.line(k.Raw.Offset)
		}
		keys = append(keys, string(k.Data))
	}
	return keys, line
}

// resolve turns header segments into a key path, descending into the last
// entry of any array of tables on the way, as TOML does for [a.b] after
// [[a]]. Implicitly defined parent tables get the header's line.
func (b *indexBuilder) resolve(keys []string, line int) string {
	p := ""
	for _, k := range keys {
		p = join(p, k)
		b.record(p, line)
		if n, ok := b.arrays[p]; ok {
			p = elem(p, n-1)
		}
	}
	return p
}

// record stores the line of path unless it is already known.
func (b *indexBuilder) record(path string, line int) {
	if _, ok := b.idx.lines[path]; !ok && line > 0 {
		b.idx.lines[path] = line
	}
}

// keyValue records a (possibly dotted) key and everything inside its value.
func (b *indexBuilder) keyValue(prefix string, kv *unstable.Node) {
	keys, line := b.keys(kv)
	p := prefix
	for _, k := range keys {
		p = join(p, k)
		b.record(p, line)
	}
	b.value(p, kv.Value(), line)
}

// value records the elements of arrays and the keys of inline tables.
// Arrays carry no byte range of their own, so an element without one falls
// back to the line of its parent.
func (b *indexBuilder) value(path string, v *unstable.Node, parentLine int) {
	switch v.Kind {
	case unstable.InlineTable:
		it := v.Children()
		for it.Next() {
			if kv := it.Node(); kv.Kind == unstable.KeyValue {
				b.keyValue(path, kv)
			}
		}
	case unstable.Array:
		i := 0
		it := v.Children()
		for it.Next() {
			c := it.Node()
			if c.Kind == unstable.Comment {
				continue
			}
			line := parentLine
			if c.Raw.Length > 0 {
				line = b.line(c.Raw.Offset)
			}
			p := elem(path, i)
			b.record(p, line)
			b.value(p, c, line)
			i++
		}
	}
}

// line returns the line of path, or of its nearest recorded ancestor, or 0
// when nothing along the path is in the file (a defaulted value).
func (x lineIndex) line(path string) int {
	for path != "" {
		if l, ok := x.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}
