package config

import (
	"bytes"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
)

// TestWarnings checks the settings that are valid but probably a mistake:
// each is a warning with file, line and key, and the file still loads.
func TestWarnings(t *testing.T) {
	output := func(format, mode, group string) string {
		s := fmt.Sprintf("[[certificate]]\ndomains = [\"example.com\"]\n\n[[certificate.output]]\npath = \"/etc/x/out\"\nformat = %q\n", format)
		if group != "" {
			s += fmt.Sprintf("group = %q\n", group)
		}
		return s + fmt.Sprintf("mode = %q\n", mode) // on line 7, or 8 with a group
	}
	type want struct {
		line int
		key  string
		msg  []string
	}
	outKey := "certificate[0].output[0].mode"
	tests := []struct {
		name string
		doc  string
		want []want // nil: no warning
	}{
		{"world-readable privkey", output("privkey", "0644", ""), []want{{7, outKey,
			[]string{`mode "0644" lets every user on this host read the private key (format privkey)`, `mode = "0600"`, `group = "NAME"`}}}},
		{"world-readable combined with group", output("combined", "0604", "haproxy"), []want{{8, outKey,
			[]string{`mode "0604" lets every user on this host read`}}}},
		{"world-writable pkcs12", output("pkcs12", "0602", ""), []want{{7, outKey, []string{"every user on this host change the private key"}}}},
		{"world read-write", output("privkey", "0666", "ssl-cert"), []want{{8, outKey, []string{"read and change"}}}},
		{"group-readable without group", output("combined", "0640", ""), []want{{7, outKey,
			[]string{`mode "0640" lets the file's group read the private key (format combined)`, "group is not set", "Detour runs as",
				`set group = "NAME"`, `mode = "0600"`}}}},
		{"group-writable with group", output("privkey", "0660", "haproxy"), []want{{8, outKey,
			[]string{`lets group "haproxy" read and change the private key`, `mode = "0640"`}}}},
		{"group-readable with group", output("combined", "0640", "haproxy"), nil},
		{"owner only", output("privkey", "0600", ""), nil},
		{"owner executable", output("privkey", "0711", ""), nil},
		{"default mode", strings.Replace(output("privkey", "0600", ""), "mode = \"0600\"\n", "", 1), nil},
		{"world-readable certificate", output("fullchain", "0644", ""), nil},

		{"metrics on every interface", "metrics_listen = \":9464\"\n", []want{{1, "metrics_listen",
			[]string{`":9464" serves /metrics and /status on every interface`, "certificates' names", `metrics_listen = "127.0.0.1:9464"`}}}},
		{"metrics on 0.0.0.0", "metrics_listen = \"0.0.0.0:9464\"\n", []want{{1, "metrics_listen", []string{"on every interface"}}}},
		{"metrics on [::]", "\nmetrics_listen = \"[::]:9464\"\n", []want{{2, "metrics_listen", []string{"on every interface"}}}},
		{"metrics on a public address", "metrics_listen = \"192.0.2.7:9464\"\n", []want{{1, "metrics_listen",
			[]string{"on 192.0.2.7, which is not a loopback address"}}}},
		{"metrics on a host name", "metrics_listen = \"metrics.example.com:9464\"\n", []want{{1, "metrics_listen",
			[]string{"a host name rather than a loopback address"}}}},
		{"metrics on 127.0.0.1", "metrics_listen = \"127.0.0.1:9464\"\n", nil},
		{"metrics on 127.0.0.2", "metrics_listen = \"127.0.0.2:9464\"\n", nil},
		{"metrics on ::1", "metrics_listen = \"[::1]:9464\"\n", nil},
		{"metrics on localhost", "metrics_listen = \"localhost:9464\"\n", nil},

		{"sorted by line", "metrics_listen = \":9464\"\n" + output("privkey", "0644", ""), []want{
			{1, "metrics_listen", []string{"every interface"}}, {8, outKey, []string{"every user"}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse(testFile, []byte(tt.doc))
			if err != nil {
				t.Fatalf("a warning must not stop the file loading: %v", err)
			}
			if len(cfg.Warnings) != len(tt.want) {
				t.Fatalf("warnings = %q, want %d", cfg.Warnings, len(tt.want))
			}
			for i, w := range tt.want {
				got := cfg.Warnings[i]
				if got.File != testFile || got.Line != w.line || got.Key != w.key {
					t.Errorf("warning %d at %s:%d %s, want %s:%d %s", i, got.File, got.Line, got.Key, testFile, w.line, w.key)
				}
				for _, m := range w.msg {
					if !strings.Contains(got.Msg, m) {
						t.Errorf("warning %q does not say %q", got.Msg, m)
					}
				}
			}
		})
	}
}

// TestWarningsLogValue checks that a warning logs as its parts.
func TestWarningsLogValue(t *testing.T) {
	var b bytes.Buffer
	w := &Error{File: testFile, Line: 3, Key: "metrics_listen", Msg: "on every interface"}
	slog.New(slog.NewTextHandler(&b, nil)).Warn("configuration warning", "warning", w)
	for _, s := range []string{"warning.file=" + testFile, "warning.line=3", "warning.key=metrics_listen", `warning.message="on every interface"`} {
		if !strings.Contains(b.String(), s) {
			t.Errorf("log %q does not contain %q", b.String(), s)
		}
	}
}

// TestExampleWarnings checks that the example warns about nothing, with
// its commented-out agent settings switched on too.
func TestExampleWarnings(t *testing.T) {
	cfg, err := Parse("example.toml", []byte(uncomment(t, Example, "metrics_listen", "notify_command", "notify_days")))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Agent.MetricsListen == "" || cfg.Agent.NotifyCommand == "" {
		t.Fatalf("agent = %+v: the settings were not switched on", cfg.Agent)
	}
	if cfg.Warnings != nil {
		t.Errorf("the example warns: %q", cfg.Warnings)
	}
}

// TestExampleNotifyCommand runs the example's notify_command through
// /bin/sh, as the agent does, and checks that the shell expands
// $DETOUR_NAME (single quotes would pass it on literally).
func TestExampleNotifyCommand(t *testing.T) {
	cfg, err := Parse("example.toml", []byte(uncomment(t, Example, "notify_command")))
	if err != nil {
		t.Fatal(err)
	}
	command := cfg.Agent.NotifyCommand
	if !strings.Contains(command, "$DETOUR_NAME") {
		t.Fatalf("notify_command %q does not use $DETOUR_NAME", command)
	}
	// A stand-in for mail(1) prints its arguments, one per line.
	sh := exec.Command("/bin/sh", "-c", `mail() { printf '%s\n' "$@"; }; `+command)
	sh.Env = []string{"PATH=/usr/bin:/bin", "DETOUR_NAME=www.example.com"}
	out, err := sh.CombinedOutput()
	if err != nil {
		t.Fatalf("sh -c %q: %v: %s", command, err, out)
	}
	args := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if want := []string{"-s", "detour: www.example.com", "ops@example.com"}; strings.Join(args, "|") != strings.Join(want, "|") {
		t.Errorf("the example's notify_command %q ran mail with %q, want %q", command, args, want)
	}
}

// uncomment removes the "# " before the example's commented-out keys.
func uncomment(t *testing.T, doc string, keys ...string) string {
	t.Helper()
	lines := strings.Split(doc, "\n")
	for _, k := range keys {
		found := false
		for i, l := range lines {
			if strings.HasPrefix(l, "# "+k+" = ") {
				lines[i] = strings.TrimPrefix(l, "# ")
				found = true
				break
			}
		}
		if !found {
			t.Fatalf("the example has no commented-out %s", k)
		}
	}
	return strings.Join(lines, "\n")
}
