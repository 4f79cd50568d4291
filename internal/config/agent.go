package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// Agent holds the settings of the running agent (`detour run`): where it
// publishes metrics and whom it tells when a certificate is in danger.
type Agent struct {
	// MetricsListen is the host:port that serves Prometheus metrics at
	// /metrics (and the agent's status at /status); empty: none
	// (metrics_listen, opt-in).
	MetricsListen string
	// NotifyCommand is a shell command run when a certificate is within
	// NotifyDays of expiry and its last renewal failed (notify_command).
	NotifyCommand string
	// NotifyWebhook is a URL that receives a JSON POST in the same case
	// (notify_webhook).
	NotifyWebhook string
	// NotifyDays is the threshold in days (notify_days, default 7).
	NotifyDays int
	// Status is the status page (status_listen and its access keys).
	Status StatusPage
}

// DefaultNotifyDays is notify_days when the file does not set it.
const DefaultNotifyDays = 7

// Top-level keys of the agent.
const (
	keyMetricsListen = "metrics_listen"
	keyNotifyCommand = "notify_command"
	keyNotifyWebhook = "notify_webhook"
	keyNotifyDays    = "notify_days"
)

// agentFields returns the decoders of the agent's top-level keys.
func agentFields(a *Agent) []field {
	return append([]field{
		str(keyMetricsListen, &a.MetricsListen),
		str(keyNotifyCommand, &a.NotifyCommand),
		str(keyNotifyWebhook, &a.NotifyWebhook),
		integer(keyNotifyDays, &a.NotifyDays),
	}, statusFields(&a.Status)...)
}

// validateAgent checks the agent's settings and applies their defaults.
func validateAgent(l *errList, a *Agent, hasDays bool) {
	validateStatus(l, &a.Status)
	if a.MetricsListen != "" {
		if host, port, err := net.SplitHostPort(a.MetricsListen); err != nil {
			l.add(keyMetricsListen, "%q is not host:port; write e.g. metrics_listen = \"127.0.0.1:9464\"", a.MetricsListen)
		} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			l.add(keyMetricsListen, "port %q is not a number from 0 to 65535", port)
		} else if where := beyondLoopback(host); where != "" {
			l.warn(keyMetricsListen, "%q serves /metrics and /status %s: whoever can reach the port learns the certificates' names, "+
				"expiry and renewal schedule; listen on loopback (metrics_listen = %q) unless a firewall limits who connects",
				a.MetricsListen, where, net.JoinHostPort("127.0.0.1", port))
		}
	}
	if a.NotifyWebhook != "" {
		if u, err := url.Parse(a.NotifyWebhook); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			l.add(keyNotifyWebhook, "%q is not an http(s) URL; write e.g. notify_webhook = \"https://hooks.example.com/detour\"", a.NotifyWebhook)
		}
	}
	switch {
	case hasDays && a.NotifyDays < 1:
		l.add(keyNotifyDays, "must be 1 or more (days before expiry)")
	case hasDays && a.NotifyCommand == "" && a.NotifyWebhook == "":
		l.add(keyNotifyDays, "notify_days needs notify_command or notify_webhook; add one or remove notify_days")
	case !hasDays:
		a.NotifyDays = DefaultNotifyDays
	}
}

// beyondLoopback says where a listener on host is reachable from when that
// is more than this host: "" for a loopback address or localhost.
func beyondLoopback(host string) string {
	if host == "" {
		return "on every interface"
	}
	if strings.EqualFold(host, "localhost") {
		return ""
	}
	ip, err := netip.ParseAddr(host)
	switch {
	case err != nil:
		return fmt.Sprintf("on %s, a host name rather than a loopback address", host)
	case ip.IsLoopback():
		return ""
	case ip.IsUnspecified():
		return "on every interface"
	}
	return fmt.Sprintf("on %s, which is not a loopback address", host)
}
