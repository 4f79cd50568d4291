//go:build !linux

package store

import "fmt"

// renameExchange would swap the paths a and b atomically; outside Linux it
// always fails with an error wrapping errExchangeUnsupported, and callers
// fall back to two renames.
func renameExchange(a, b string) error {
	return fmt.Errorf("exchanging %s and %s: %w", a, b, errExchangeUnsupported)
}
