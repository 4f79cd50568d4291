package agent

import (
	"context"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/detour-acme/detour/internal/store"
)

// Metrics are the agent's Prometheus figures. A nil *Metrics records
// nothing, so the agent calls its methods unconditionally.
type Metrics struct {
	reg *prometheus.Registry

	notAfter    *prometheus.GaugeVec
	notBefore   *prometheus.GaugeVec
	lastSuccess *prometheus.GaugeVec
	nextRenewal *prometheus.GaugeVec
	failing     *prometheus.GaugeVec
	broken      *prometheus.GaugeVec
	attempts    *prometheus.CounterVec
	failures    *prometheus.CounterVec
	ariPolls    *prometheus.CounterVec
	notices     *prometheus.CounterVec
	deployFails prometheus.Counter
	running     prometheus.Gauge

	windowsMu sync.Mutex
	windows   func(context.Context) ([]Window, error)
}

// Window is a firewall window recorded as open, for the metrics.
type Window struct {
	Backend string
	Port    int
	Family  string
	Until   time.Time
}

// NewMetrics returns metrics on a registry of their own, with the Go and
// process collectors.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	cert := []string{"certificate"}
	m := &Metrics{
		reg: reg,
		notAfter: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "detour_certificate_expiry_timestamp_seconds",
			Help: "NotAfter of the live certificate, as a Unix time."}, cert),
		notBefore: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "detour_certificate_not_before_timestamp_seconds",
			Help: "NotBefore of the live certificate, as a Unix time: with the expiry, its lifetime."}, cert),
		lastSuccess: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "detour_certificate_last_success_timestamp_seconds",
			Help: "When the live certificate was obtained, as a Unix time."}, cert),
		nextRenewal: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "detour_certificate_next_renewal_timestamp_seconds",
			Help: "When the agent will next try to renew the certificate, as a Unix time."}, cert),
		failing: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "detour_certificate_consecutive_failures",
			Help: "Consecutive failed renewal attempts of the certificate (0 after a success)."}, cert),
		broken: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "detour_certificate_record_broken",
			Help: "1 while the certificate's record in renewal/ cannot be read: it is not renewed until the file is restored or the certificate issued again (detour status says how)."}, cert),
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "detour_renewal_attempts_total",
			Help: "Renewal attempts, by CA and by the validation paths the certificate lists."}, []string{"ca", "path"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "detour_renewal_failures_total",
			Help: "Failed renewal attempts, by CA and by the validation paths the certificate lists."}, []string{"ca", "path"}),
		ariPolls: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "detour_ari_polls_total",
			Help: "Renewal-information requests to the CA (RFC 9773), by result."}, []string{"result"}),
		notices: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "detour_notifications_total",
			Help: "Notifications about failing certificates close to expiry, by result."}, []string{"result"}),
		deployFails: prometheus.NewCounter(prometheus.CounterOpts{Name: "detour_deploy_failures_total",
			Help: "Renewals whose certificate went live but whose deploy step (output, reload, hook) failed."}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{Name: "detour_renewals_in_flight",
			Help: "Renewals running now."}),
	}
	reg.MustRegister(m.notAfter, m.notBefore, m.lastSuccess, m.nextRenewal, m.failing, m.broken, m.attempts, m.failures, m.ariPolls,
		m.notices, m.deployFails, m.running,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo(), windowCollector{m})
	return m
}

// buildInfo is detour_build_info: 1, labelled with the version, so that
// a dashboard shows what runs and an alert sees an agent that is gone.
func buildInfo() prometheus.Collector {
	version, revision := "devel", "unknown"
	if info, ok := debug.ReadBuildInfo(); ok {
		if v := info.Main.Version; v != "" && v != "(devel)" {
			version = v
		}
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				revision = s.Value
			}
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "detour_build_info",
		Help:        "Always 1: the version of the detour agent running, as labels.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision}})
	g.Set(1)
	return g
}

// ObserveWindows makes every scrape ask windows for the firewall windows
// recorded as open (a local read), for detour_firewall_windows_open and
// detour_firewall_window_expiry_timestamp_seconds.
func (m *Metrics) ObserveWindows(windows func(context.Context) ([]Window, error)) {
	if m == nil {
		return
	}
	m.windowsMu.Lock()
	m.windows = windows
	m.windowsMu.Unlock()
}

var (
	windowsOpenDesc = prometheus.NewDesc("detour_firewall_windows_open",
		"Firewall windows recorded as open now (a window past its deadline on a firewall that does not close it by itself counts until Detour removes it).", nil, nil)
	windowExpiryDesc = prometheus.NewDesc("detour_firewall_window_expiry_timestamp_seconds",
		"When the firewall window on a port is due to close, as a Unix time; a time in the past means it was not closed.", []string{"backend", "port", "family"}, nil)
)

// windowCollector reads the windows at scrape time.
type windowCollector struct{ m *Metrics }

func (c windowCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- windowsOpenDesc
	ch <- windowExpiryDesc
}

func (c windowCollector) Collect(ch chan<- prometheus.Metric) {
	c.m.windowsMu.Lock()
	read := c.m.windows
	c.m.windowsMu.Unlock()
	var ws []Window
	if read != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		if ws, err = read(ctx); err != nil {
			ch <- prometheus.NewInvalidMetric(windowsOpenDesc, err)
			return
		}
	}
	ch <- prometheus.MustNewConstMetric(windowsOpenDesc, prometheus.GaugeValue, float64(len(ws)))
	type key struct {
		backend, port, family string
	}
	latest := map[key]time.Time{}
	for _, w := range ws {
		k := key{w.Backend, strconv.Itoa(w.Port), w.Family}
		if w.Until.After(latest[k]) {
			latest[k] = w.Until
		}
	}
	for k, until := range latest {
		ch <- prometheus.MustNewConstMetric(windowExpiryDesc, prometheus.GaugeValue, float64(until.Unix()), k.backend, k.port, k.family)
	}
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Registry returns the registry, for tests and extra collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

func (m *Metrics) record(r store.Record) {
	if m == nil {
		return
	}
	m.broken.DeleteLabelValues(r.Name)
	m.notAfter.WithLabelValues(r.Name).Set(float64(r.NotAfter.Unix()))
	m.notBefore.WithLabelValues(r.Name).Set(float64(r.NotBefore.Unix()))
	if !r.Issued.IsZero() {
		m.lastSuccess.WithLabelValues(r.Name).Set(float64(r.Issued.Unix()))
	}
	failures := 0
	if r.Last != nil && !r.Last.OK {
		failures = r.Last.Failures
	}
	m.failing.WithLabelValues(r.Name).Set(float64(failures))
}

func (m *Metrics) scheduled(s *certState) {
	if m == nil {
		return
	}
	if s.rec != nil {
		m.record(*s.rec)
	}
	if s.action == actionRenew {
		m.nextRenewal.WithLabelValues(s.cert.Name).Set(float64(s.next.Unix()))
	}
}

func (m *Metrics) forget(name string) {
	if m == nil {
		return
	}
	for _, v := range []*prometheus.GaugeVec{m.notAfter, m.notBefore, m.lastSuccess, m.nextRenewal, m.failing, m.broken} {
		v.DeleteLabelValues(name)
	}
}

// brokenRecord marks name's record as unreadable.
func (m *Metrics) brokenRecord(name string) {
	if m == nil {
		return
	}
	m.broken.WithLabelValues(name).Set(1)
}

func (m *Metrics) attempt(ca, path string, err error) {
	if m == nil {
		return
	}
	m.attempts.WithLabelValues(ca, path).Inc()
	if err != nil {
		m.failures.WithLabelValues(ca, path).Inc()
	}
}

func (m *Metrics) ariPoll(err error) {
	if m == nil {
		return
	}
	m.ariPolls.WithLabelValues(outcome(err)).Inc()
}

func (m *Metrics) notification(err error) {
	if m == nil {
		return
	}
	m.notices.WithLabelValues(outcome(err)).Inc()
}

func (m *Metrics) deployFailed() {
	if m != nil {
		m.deployFails.Inc()
	}
}

func (m *Metrics) inFlight(d float64) {
	if m != nil {
		m.running.Add(d)
	}
}

func outcome(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}
