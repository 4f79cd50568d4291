// Package suggest finds the known name closest to a mistyped one, for "did
// you mean" hints in error messages.
package suggest

import (
	"fmt"
	"slices"
	"strings"
)

// maxSuggestDistance is the largest edit distance at which a known name is
// offered as a "did you mean" suggestion.
const maxSuggestDistance = 2

// Closest returns the known name closest to s (case-insensitively) when it is
// within maxSuggestDistance edits, or "" when none is. Ties go to the name
// that sorts first, so the suggestion is deterministic.
func Closest(s string, known []string) string {
	best, bestDist := "", maxSuggestDistance+1
	sorted := slices.Clone(known)
	slices.Sort(sorted)
	for _, k := range sorted {
		if d := Distance(strings.ToLower(s), strings.ToLower(k)); d < bestDist {
			best, bestDist = k, d
		}
	}
	return best
}

// DidYouMean returns ` (did you mean "x"?)` for the closest known name, or
// "" when nothing is close.
func DidYouMean(s string, known []string) string {
	if k := Closest(s, known); k != "" {
		return fmt.Sprintf(" (did you mean %q?)", k)
	}
	return ""
}

// QuoteList renders names as a sorted, comma-separated list of quoted
// strings, or "none" when the list is empty.
func QuoteList(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	sorted := slices.Clone(names)
	slices.Sort(sorted)
	q := make([]string, len(sorted))
	for i, n := range sorted {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}

// Distance is the optimal string alignment distance between a and b:
// insertions, deletions, substitutions and transpositions of adjacent runes
// each cost one.
func Distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	// Three rolling rows: two back (for transpositions), previous, current.
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}
