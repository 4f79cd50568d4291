#!/usr/bin/env bash
# Wall time of one issuance as a command: `detour issue` against certbot
# (Debian's certbot, http-01 standalone), both against the same local CA
# (`detour sandbox --serve`: Pebble in-process, no retry hints), interleaved.
# Usage: bench/issue/run.sh [runs]   (default 5). Needs certbot installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
command -v certbot >/dev/null || { echo "run.sh: install certbot (apt-get install certbot)" >&2; exit 1; }
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
go build -o "$work/detour" ./cmd/detour
"$work/detour" --state-dir "$work/sbx" sandbox --serve --va-http-addr 127.0.0.1:5402 --va-tls-addr 127.0.0.1:5401 \
	--dns-addr 127.0.0.1:8453 --name bench.detour.test >"$work/serve.out" 2>&1 &
for _ in $(seq 100); do grep -q '^  directory:' "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
dir=$(grep '^  directory:' "$work/serve.out" | awk '{print $2}')
roots="$work/sbx/sandbox-ca-roots.pem"

detour_once() {
	"$work/detour" --state-dir "$work/d" --log-level warn issue --ca "$dir" --ca-roots "$roots" --agree-tos \
		--email b@detour.test --profile tlsserver -d bench.detour.test --http-addr 127.0.0.1:5402 \
		--resolver 127.0.0.1:8453 --check-http-port 5402 --check-tls-port 5401 >/dev/null
}
certbot_once() {
	REQUESTS_CA_BUNDLE="$roots" certbot certonly --standalone --non-interactive --agree-tos -m b@detour.test \
		--server "$dir" --http-01-port 5402 --http-01-address 127.0.0.1 -d bench.detour.test \
		--config-dir "$work/c/etc" --work-dir "$work/c/work" --logs-dir "$work/c/logs" --force-renewal --no-random-sleep-on-renew >/dev/null 2>&1
}
ms() { date +%s%N; }
detour_once; certbot_once # accounts, caches
declare -a dt ct
for i in $(seq "$runs"); do
	t0=$(ms); detour_once; t1=$(ms); certbot_once; t2=$(ms)
	dt+=($(( (t1 - t0) / 1000000 ))); ct+=($(( (t2 - t1) / 1000000 )))
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
dm=$(median "${dt[@]}"); cm=$(median "${ct[@]}")
echo "runs: $runs (interleaved)"
echo "detour issue:  median ${dm} ms  (all: ${dt[*]})"
echo "certbot 2.1:   median ${cm} ms  (all: ${ct[*]})"
awk -v d="$dm" -v c="$cm" 'BEGIN { printf "ratio detour/certbot: %.3f\n", d / c }'
