package agent

import (
	"context"
	"slices"
	"sync"
)

// bindSet keeps renewals whose paths bind the same address apart (two
// standalone paths on :80 cannot answer at once). A renewal takes all of
// its addresses at once or none: it never holds one address while waiting
// for another, so two renewals can never wait on each other, and a
// renewal listing one address twice does not wait on itself. Waiting ends
// with the renewal's context.
type bindSet struct {
	mu   sync.Mutex
	held map[string]bool
	// freed is closed, and replaced, whenever addresses are released.
	freed chan struct{}
}

func newBindSet() *bindSet {
	return &bindSet{held: map[string]bool{}, freed: make(chan struct{})}
}

// acquire takes every address of addrs, waiting until none is held by
// another renewal, and returns the function that releases them. It fails
// only when ctx ends first.
func (b *bindSet) acquire(ctx context.Context, addrs []string) (release func(), err error) {
	addrs = slices.Compact(slices.Sorted(slices.Values(addrs)))
	if len(addrs) == 0 {
		return func() {}, nil
	}
	for {
		b.mu.Lock()
		if !slices.ContainsFunc(addrs, func(a string) bool { return b.held[a] }) {
			for _, a := range addrs {
				b.held[a] = true
			}
			b.mu.Unlock()
			return func() { b.release(addrs) }, nil
		}
		wait := b.freed
		b.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// release frees addrs and wakes every waiter to look again.
func (b *bindSet) release(addrs []string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, a := range addrs {
		delete(b.held, a)
	}
	close(b.freed)
	b.freed = make(chan struct{})
}
