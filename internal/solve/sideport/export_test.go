package sideport

import "github.com/detour-acme/detour/internal/solve/standalone"

// The forwarding-header helpers moved to standalone with the request
// handling; these names let the side port's tests of them run unchanged.
var (
	trustedAddr    = standalone.LocalPeer
	forwardedHosts = standalone.ForwardedHosts
)
