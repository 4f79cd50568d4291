package statuspage

import "time"

// Schema is the version of the JSON documents /status.json and
// /certificate/{name}/status.json serve (docs/status-json.md). Fields are
// only ever added within one version; a field removed or changing meaning
// makes a new version.
const Schema = 1

// States of a certificate. The page shows the first four most of the
// time; the others are rarer verdicts of `detour status`.
const (
	// StateOK: the live certificate is good and the last attempt, if
	// any, succeeded.
	StateOK = "ok"
	// StateRenewing: a renewal is running now.
	StateRenewing = "renewing"
	// StateFailing: the last renewal failed; the live certificate is
	// untouched and the agent retries.
	StateFailing = "failing"
	// StateBroken: the record cannot be read, or the live files are not
	// what a server can use.
	StateBroken = "broken"
	// StateExpired: the live certificate has expired.
	StateExpired = "expired"
	// StateRevoked: revoked, or the CA asks for it to be replaced now.
	StateRevoked = "revoked"
	// StatePending: configured, not issued yet.
	StatePending = "pending"
)

// Page is everything the overview shows, and the document /status.json
// serves. It is plain data: the agent's side fills it, this package only
// renders it.
type Page struct {
	Schema int `json:"schema"`
	// Generated is when the data was read.
	Generated time.Time `json:"generated"`
	Agent     Agent     `json:"agent"`
	// Certificates are sorted by name.
	Certificates []Certificate `json:"certificates"`
	// Windows are the firewall windows recorded as open on this host.
	Windows []Window `json:"windows"`
	// Fleet is set on a node of a fleet.
	Fleet *Fleet `json:"fleet,omitempty"`
	// Notes are problems reading part of the state (the page shows what
	// it could read).
	Notes []string `json:"notes,omitempty"`
}

// Agent describes the process serving the page.
type Agent struct {
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	// StateDir is the state directory the agent works in.
	StateDir string `json:"state_dir"`
}

// Certificate is one certificate as the overview shows it.
type Certificate struct {
	Name        string   `json:"name"`
	Identifiers []string `json:"identifiers"`
	// State is one of the State constants.
	State string `json:"state"`
	// Problem says what is wrong, in one line; Fix what to do. Both are
	// empty for a good certificate.
	Problem string `json:"problem,omitempty"`
	Fix     string `json:"fix,omitempty"`
	// Version is the live archive version (0: none).
	Version   int       `json:"version"`
	Serial    string    `json:"serial,omitempty"`
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	// CA is the directory URL of the CA that issued the live certificate.
	CA string `json:"ca,omitempty"`
	// Paths are the validation paths the certificate lists, in order.
	Paths []string `json:"paths"`
	// ARIStart and ARIEnd are the CA's renewal window (RFC 9773).
	ARIStart time.Time `json:"ari_start,omitzero"`
	ARIEnd   time.Time `json:"ari_end,omitzero"`
	// NextRenewal is when the agent plans to renew; NextReason why then.
	NextRenewal time.Time `json:"next_renewal,omitzero"`
	NextReason  string    `json:"next_reason,omitempty"`
	// NextCA is the CA the next attempt asks (a fallback after failures).
	NextCA string `json:"next_ca,omitempty"`
	// Failures counts the consecutive failed attempts.
	Failures int `json:"failures"`
	// Last is the last attempt, nil when there was none.
	Last *Attempt `json:"last,omitempty"`
}

// Lifetime returns the certificate's validity period (0 when unknown).
func (c Certificate) Lifetime() time.Duration {
	if c.NotBefore.IsZero() || c.NotAfter.IsZero() {
		return 0
	}
	return c.NotAfter.Sub(c.NotBefore)
}

// Attempt is one renewal attempt.
type Attempt struct {
	Time time.Time `json:"time"`
	OK   bool      `json:"ok"`
	// Path names the path that answered (a success) or the paths the
	// attempt could use (a failure), comma-separated.
	Path string `json:"path,omitempty"`
	// CA is the CA asked: its name from the configuration or its URL.
	CA string `json:"ca,omitempty"`
	// Seconds is how long the attempt took, Steps how long each part.
	Seconds float64 `json:"seconds,omitempty"`
	Steps   []Step  `json:"steps,omitempty"`
	// Stage is where a failure happened: preflight, account, order,
	// self-check, validation, finalize, store (or plan).
	Stage string `json:"stage,omitempty"`
	// Error is the failure in full; its lines after the first explain
	// it and say what to change.
	Error string `json:"error,omitempty"`
	// Version and Serial are what a success stored.
	Version int    `json:"version,omitempty"`
	Serial  string `json:"serial,omitempty"`
	// DeployError is set when the new certificate went live but a deploy
	// step failed.
	DeployError string `json:"deploy_error,omitempty"`
}

// Step is one part of an attempt and how long it took.
type Step struct {
	// Name is "wait" (for the bind addresses and a renewal slot), "plan"
	// (reading the record, building the paths), then the renewal's own
	// steps ("account", "probe", "order", "authz", "self-check",
	// "dns-wait", "validation", "finalize", "store", "deploy"; "obtain"
	// for all of them when they are not known), the stage a failure
	// stopped in, and "record" (the outcome saved).
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

// Detail is one certificate's own page, and the document
// /certificate/{name}/status.json serves.
type Detail struct {
	Schema      int         `json:"schema"`
	Generated   time.Time   `json:"generated"`
	Certificate Certificate `json:"certificate"`
	// History is the agent's attempts, newest first.
	History []Attempt `json:"history"`
	// Versions are the versions in the archive, newest first.
	Versions []Version `json:"versions"`
	// Deploy lists where each new version goes, with the last result.
	Deploy []DeployTarget `json:"deploy"`
	// Nodes is what each node of a fleet serves.
	Nodes []NodeVersion `json:"nodes,omitempty"`
	Notes []string      `json:"notes,omitempty"`
}

// Version is one version in the archive.
type Version struct {
	Version   int       `json:"version"`
	Serial    string    `json:"serial,omitempty"`
	NotBefore time.Time `json:"not_before,omitzero"`
	NotAfter  time.Time `json:"not_after,omitzero"`
	Live      bool      `json:"live"`
	// Error says why the version's certificate cannot be read.
	Error string `json:"error,omitempty"`
}

// Results of a deploy target.
const (
	DeployOK     = "ok"
	DeployFailed = "failed"
	// DeployUnknown: no deploy since the agent keeps a history.
	DeployUnknown = "unknown"
)

// DeployTarget is one thing done with each new version.
type DeployTarget struct {
	// Kind is "output", "reload" or "hook".
	Kind string `json:"kind"`
	// Target is the output file, the server reloaded, or the command.
	Target string `json:"target"`
	// Result is one of the Deploy constants, At when it was reached and
	// Error what failed.
	Result string    `json:"result"`
	At     time.Time `json:"at,omitzero"`
	Error  string    `json:"error,omitempty"`
}

// Window is a firewall window recorded as open.
type Window struct {
	Backend    string    `json:"backend"`
	Port       int       `json:"port"`
	Family     string    `json:"family"`
	Identifier string    `json:"identifier,omitempty"`
	Opened     time.Time `json:"opened"`
	Until      time.Time `json:"until"`
	// Overdue is set when the window is still recorded after its
	// deadline on a firewall that does not close it by itself.
	Overdue bool `json:"overdue"`
}

// Fleet is the fleet this node belongs to.
type Fleet struct {
	Name  string `json:"name"`
	Node  string `json:"node"`
	Nodes []Node `json:"nodes"`
}

// Node is one node of a fleet.
type Node struct {
	Name       string    `json:"name"`
	Alive      bool      `json:"alive"`
	Version    string    `json:"version,omitempty"` // detour's version on the node
	LastReport time.Time `json:"last_report,omitzero"`
	// Serving counts the certificates whose fleet version the node
	// serves; Behind those where it serves another (or none).
	Serving int `json:"serving"`
	Behind  int `json:"behind"`
}

// NodeVersion is what one node of a fleet serves of a certificate.
type NodeVersion struct {
	Node    string    `json:"node"`
	Version int       `json:"version"`
	Serial  string    `json:"serial,omitempty"`
	At      time.Time `json:"at,omitzero"`
	Error   string    `json:"error,omitempty"`
}
