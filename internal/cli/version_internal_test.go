package cli

import (
	"runtime"
	"runtime/debug"
	"testing"
)

// TestVersionString checks the version line for the builds there are: from
// a checkout with VCS stamping, clean or modified; -buildvcs=false; a
// module installed with go install; no build information at all.
func TestVersionString(t *testing.T) {
	platform := " " + runtime.GOOS + "/" + runtime.GOARCH
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	const rev = "0123456789abcdef0123456789abcdef01234567"
	tests := []struct {
		name string
		info *debug.BuildInfo
		ok   bool
		want string
	}{
		{"checkout", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20260101120000-0123456789ab"}, Settings: vcs(rev, "false")},
			true, "v0.0.0-20260101120000-0123456789ab (commit 0123456789ab) go1.26.8" + platform},
		{"modified checkout", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20260101120000-0123456789ab+dirty"}, Settings: vcs(rev, "true")},
			true, "v0.0.0-20260101120000-0123456789ab+dirty (commit 0123456789ab, modified) go1.26.8" + platform},
		{"-buildvcs=false", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			true, "devel (commit unknown) go1.26.8" + platform},
		{"go install", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.0"}},
			true, "v1.2.0 (commit unknown) go1.26.8" + platform},
		{"short revision", &debug.BuildInfo{GoVersion: "go1.26.8", Settings: vcs("abc", "false")},
			true, "devel (commit abc) go1.26.8" + platform},
		{"no build information", nil, false, "devel (commit unknown) " + runtime.Version() + platform},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := version(tt.info, tt.ok); got != tt.want {
				t.Errorf("version = %q, want %q", got, tt.want)
			}
		})
	}
}
