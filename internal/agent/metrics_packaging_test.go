package agent

import (
	"context"
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/prometheus/common/expfmt"

	"github.com/detour-acme/detour/internal/store"
)

// packagingFiles are the alert rules and the dashboard shipped in
// packaging/: every metric they name must be one the agent exports.
var packagingFiles = []string{"../../packaging/prometheus/detour-alerts.yml", "../../packaging/grafana/detour-dashboard.json"}

// allMetrics returns metrics with every figure set once, as an agent that
// renewed, failed, polled, notified and opened a window would have them.
func allMetrics(t *testing.T) *Metrics {
	t.Helper()
	m := NewMetrics()
	now := time.Now()
	rec := store.Record{Name: "x.example", NotBefore: now.Add(-time.Hour), NotAfter: now.Add(89 * 24 * time.Hour), Issued: now,
		Last: &store.Attempt{Time: now, Failures: 2}}
	m.scheduled(&certState{cert: Cert{Name: rec.Name}, rec: &rec, action: actionRenew, next: now.Add(time.Hour)})
	m.brokenRecord("y.example")
	m.attempt("letsencrypt", "web", errors.New("refused"))
	m.ariPoll(nil)
	m.notification(nil)
	m.deployFailed()
	m.inFlight(1)
	m.ObserveWindows(func(context.Context) ([]Window, error) {
		return []Window{{Backend: "ufw", Port: 80, Family: "ipv4", Until: now.Add(time.Minute)}}, nil
	})
	return m
}

// TestPackagingMetricsExported: each detour_* metric the alert rules and
// the Grafana dashboard use is exported by the agent.
func TestPackagingMetricsExported(t *testing.T) {
	fams, err := allMetrics(t).Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, f := range fams {
		exported[f.GetName()] = true
	}
	name := regexp.MustCompile(`\bdetour_[a-z0-9_]+`)
	for _, file := range packagingFiles {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		used := slices.Compact(slices.Sorted(slices.Values(name.FindAllString(string(data), -1))))
		if len(used) < 5 {
			t.Errorf("%s names only %v", file, used)
		}
		for _, n := range used {
			if !exported[n] {
				t.Errorf("%s uses %s, which the agent does not export", file, n)
			}
		}
	}
}

// TestMetricNames lints the agent's metrics the way Prometheus's own
// tooling does (promlint: units in names, _total counters, help text).
func TestMetricNames(t *testing.T) {
	fams, err := allMetrics(t).Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), "detour_") {
			if _, err := expfmt.MetricFamilyToText(&text, f); err != nil {
				t.Fatal(err)
			}
		}
	}
	problems, err := promlint.New(strings.NewReader(text.String())).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}
