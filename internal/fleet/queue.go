package fleet

import (
	"container/heap"
	"strings"
	"time"
)

// dueQueue holds the certificates a Deployer is to look at, by name,
// ordered by when each is due (zero: now), then by name. Every operation
// is O(log n): with thousands of certificates reported at once (a node
// starting), sorting all names on every take made deploying them
// quadratic.
type dueQueue struct {
	items map[string]*dueItem
	h     dueHeap
}

type dueItem struct {
	name  string
	p     pending
	index int
}

func newDueQueue() *dueQueue { return &dueQueue{items: map[string]*dueItem{}} }

// get returns name's pending entry, nil when it has none.
func (q *dueQueue) get(name string) *pending {
	if it := q.items[name]; it != nil {
		return &it.p
	}
	return nil
}

// put adds name, or replaces its entry.
func (q *dueQueue) put(name string, p pending) {
	if it := q.items[name]; it != nil {
		it.p = p
		heap.Fix(&q.h, it.index)
		return
	}
	it := &dueItem{name: name, p: p}
	q.items[name] = it
	heap.Push(&q.h, it)
}

// take removes and returns the first entry due at now, or, when none is,
// "" and when the next one is due (zero: none).
func (q *dueQueue) take(now time.Time) (name string, p pending, next time.Time) {
	if len(q.h) == 0 {
		return "", pending{}, time.Time{}
	}
	first := q.h[0]
	if first.p.at.After(now) {
		return "", pending{}, first.p.at
	}
	heap.Pop(&q.h)
	delete(q.items, first.name)
	return first.name, first.p, time.Time{}
}

type dueHeap []*dueItem

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(i, j int) bool {
	if !h[i].p.at.Equal(h[j].p.at) {
		return h[i].p.at.Before(h[j].p.at)
	}
	return strings.Compare(h[i].name, h[j].name) < 0
}
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *dueHeap) Push(x any) {
	it := x.(*dueItem)
	it.index = len(*h)
	*h = append(*h, it)
}
func (h *dueHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return it
}
