package persist

import (
	"testing"
	"time"
)

func TestParsePersistUntil(t *testing.T) {
	tests := []struct {
		in   string
		want time.Time
		ok   bool
	}{
		{"2027-01-31", time.Date(2027, 1, 31, 0, 0, 0, 0, time.UTC), true},
		{"2027-01-31T12:30:00+02:00", time.Date(2027, 1, 31, 10, 30, 0, 0, time.UTC), true},
		{"31/01/2027", time.Time{}, false},
		{"1721952000", time.Time{}, false},
	}
	for _, tt := range tests {
		got, err := ParsePersistUntil(tt.in)
		if (err == nil) != tt.ok || (tt.ok && !got.Equal(tt.want)) {
			t.Errorf("ParsePersistUntil(%q) = %v, %v; want %v (ok %v)", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
