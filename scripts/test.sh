#!/usr/bin/env bash
# Runs every test of Detour, as CI does. Installs the Debian packages the
# end-to-end tests need (scripts/debian-packages.txt) when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

if ! command -v go >/dev/null 2>&1; then
	echo "test.sh: Go is not installed (Go 1.26 or later is needed): https://go.dev/doc/install" >&2
	exit 1
fi

mapfile -t pkgs < <(grep -Ev '^\s*(#|$)' scripts/debian-packages.txt || true)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "test.sh: installing ${missing[*]}" >&2
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

unformatted=$(gofmt -l cmd internal bench 2>/dev/null || true)
if [ -n "$unformatted" ]; then
	echo "test.sh: gofmt would change:" >&2
	echo "$unformatted" >&2
	exit 1
fi
go vet ./...
# The slim build (no generated DNS providers) must keep compiling and its
# provider catalogue working.
go vet -tags detour_slim ./...
go test -tags detour_slim -count=1 ./internal/solve/dnsprovider/
go test -race -count=1 -timeout 20m ./...
# Benchmarks must keep working: run each once.
go test -run '^$' -bench . -benchtime 1x -count=1 ./... >/dev/null
