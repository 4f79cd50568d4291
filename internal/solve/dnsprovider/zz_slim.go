//go:build detour_slim

package dnsprovider

// The slim build (-tags detour_slim) has Detour's own factories only
// (registry.go): none generated from lego (zz_generated.go), none of
// handwritten.go, and so none of their SDKs.

// slimBuild reports a binary built with -tags detour_slim.
const slimBuild = true

// legoVersion is empty: no factory is generated.
const legoVersion = ""

var (
	generated        = map[string]Factory{}
	generatedAliases = map[string]string{}
	notGenerated     = map[string]string{}
	handWritten      = map[string]Factory{}
)
