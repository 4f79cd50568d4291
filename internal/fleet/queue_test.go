package fleet

import (
	"fmt"
	"testing"
	"time"
)

// TestDueQueue: due entries come out by name, later ones wait and give
// the next time, a put replaces an entry in place.
func TestDueQueue(t *testing.T) {
	now := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	q := newDueQueue()
	q.put("c", pending{version: 1})
	q.put("a", pending{version: 1})
	q.put("b", pending{version: 1, at: now.Add(time.Minute)})
	q.put("d", pending{version: 1, at: now.Add(2 * time.Minute)})
	q.put("b", pending{version: 2}) // reported again: due now
	var got []string
	for {
		name, p, next := q.take(now)
		if name == "" {
			if !next.Equal(now.Add(2 * time.Minute)) {
				t.Errorf("next = %v, want d's time", next)
			}
			break
		}
		got = append(got, fmt.Sprintf("%s=%d", name, p.version))
	}
	if fmt.Sprint(got) != "[a=1 b=2 c=1]" {
		t.Errorf("taken %v, want a=1 b=2 c=1", got)
	}
	if name, _, _ := q.take(now.Add(3 * time.Minute)); name != "d" || q.get("d") != nil || len(q.h) != 0 {
		t.Errorf("after d's time: took %q, queue %d", name, len(q.h))
	}
	if name, _, next := q.take(now); name != "" || !next.IsZero() {
		t.Errorf("empty queue: %q, %v", name, next)
	}
}

// BenchmarkDueQueue: a node starting with 10,000 certificates to deploy.
func BenchmarkDueQueue(b *testing.B) {
	now := time.Now()
	for b.Loop() {
		q := newDueQueue()
		for i := range 10000 {
			q.put(fmt.Sprintf("cert%05d", i), pending{version: 1})
		}
		for name, _, _ := q.take(now); name != ""; name, _, _ = q.take(now) {
		}
	}
}
