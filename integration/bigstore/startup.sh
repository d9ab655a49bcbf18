#!/usr/bin/env bash
# Start-up time and memory of Caddy with wappchat_auth over a file-system key
# store, empty vs. the store written by `bigstore -gen` (issue 7).
#
#   integration/bigstore/startup.sh STORAGE_DIR [RUNS]
#
# For an empty storage directory and for STORAGE_DIR, RUNS times each
# (alternating): starts ./caddy, times until the site port accepts a
# connection, waits 2 s, reads VmRSS and the Go heap in use (admin /metrics),
# sends one unsigned request with key 0 of the big store (invalid_key from the
# empty store; signature_required from the big one, so the record was found:
# every generated record has a secret) and stops Caddy.
# Environment: BASE_PORT [18780] (uses BASE_PORT..+2).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIG=${1:?storage directory written by bigstore -gen}
RUNS=${2:-3}
BASE_PORT=${BASE_PORT:-18780}
SITE=$BASE_PORT UP=$((BASE_PORT + 1)) ADMIN=$((BASE_PORT + 2))
TMP=$(mktemp -d /tmp/wappchat-startup.XXXXXX)
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT
go build -o "$TMP/loadgen" ./integration/loadgen
"$TMP/loadgen" -serve "127.0.0.1:$UP" 2>/dev/null &
PIDS+=($!)
mkdir -p "$TMP/empty"
export XDG_DATA_HOME=$TMP/data XDG_CONFIG_HOME=$TMP/config

one() { # label storage-dir
	cat >"$TMP/Caddyfile" <<EOF
{
	admin 127.0.0.1:$ADMIN
	auto_https off
	persist_config off
	storage file_system $2
}
http://127.0.0.1:$SITE {
	bind 127.0.0.1
	wappchat_auth
	reverse_proxy 127.0.0.1:$UP
}
EOF
	local t0 t1 pid
	t0=$(date +%s%N)
	./caddy run --config "$TMP/Caddyfile" --adapter caddyfile >"$TMP/caddy.log" 2>&1 &
	pid=$!
	for _ in $(seq 1 2000); do
		(exec 3<>"/dev/tcp/127.0.0.1/$SITE") 2>/dev/null && break
		sleep 0.005
	done
	t1=$(date +%s%N)
	sleep 2
	local rss heap code
	rss=$(awk '$1 == "VmRSS:" {print $2}' "/proc/$pid/status")
	heap=$(curl -fsS "http://127.0.0.1:$ADMIN/metrics" | awk '$1 == "go_memstats_heap_inuse_bytes" {printf "%.1f", $2 / 1048576}')
	code=$(curl -s -w ' %{http_code}' -X POST -H "x-wappchat-key: wchat_live_bigstore000000000000" \
		-H 'content-type: application/json' -d '{}' "http://127.0.0.1:$SITE/x")
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	printf "  %-6s start-up %5.0f ms  RSS %6.1f MiB  heap_inuse %5s MiB  key 0: %s\n" \
		"$1" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print (b - a) / 1e6}')" "$(awk -v k="$rss" 'BEGIN {print k / 1024}')" "$heap" "$(sed -n 's/.*"error":"\([a-z_]*\)".* \([0-9]*\)$/\2 \1/p' <<<"$code")"
}

echo "== Start-up: empty store vs $BIG ($(find "$BIG/wappchat/keys" -maxdepth 1 -name '*.json' 2>/dev/null | head -2000000 | wc -l) records)"
for _ in $(seq 1 "$RUNS"); do
	one empty "$TMP/empty"
	one big "$BIG"
done
