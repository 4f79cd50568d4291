package config

import "testing"

func TestLineIndex(t *testing.T) {
	doc := `email = "a@example.com"   # 1
[ca.corp]                    # 2
directory = "https://x/d"    # 3

[[certificate]]              # 5
domains = [                  # 6
  "a.example.com",           # 7
  "b.example.com",           # 8
]
[certificate.extra]          # 10
k = 1                        # 11

[[certificate]]              # 13
domains = ["c.example.com"]  # 14
inline = { x = 1, y = [      # 15
  { z = 2 },                 # 16
] }
dotted.key = 3               # 18
`
	idx := buildIndex([]byte(doc))
	tests := []struct {
		path string
		want int
	}{
		{"email", 1},
		{"ca", 2},
		{"ca.corp", 2},
		{"ca.corp.directory", 3},
		{"certificate", 5},
		{"certificate[0]", 5},
		{"certificate[0].domains", 6},
		{"certificate[0].domains[0]", 7},
		{"certificate[0].domains[1]", 8},
		{"certificate[0].extra", 10},
		{"certificate[0].extra.k", 11},
		{"certificate[1]", 13},
		{"certificate[1].domains[0]", 14},
		{"certificate[1].inline.x", 15},
		{"certificate[1].inline.y[0].z", 16},
		{"certificate[1].dotted.key", 18},
		{"certificate[1].name", 13}, // absent: falls back to the entry
		{"certificate[1].domains[5]", 14},
		{"nothing.here", 0},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			if got := idx.line(tt.path); got != tt.want {
				t.Errorf("line(%q) = %d, want %d", tt.path, got, tt.want)
			}
		})
	}
}
