#!/usr/bin/env bash
# Memory check of wappchat_auth (issue 7): 256 concurrent signed 1 MiB uploads
# raise resident memory by at most 1.5x their total size (256 MiB), and memory
# returns to baseline afterwards.
#
#   integration/memcheck.sh
#
# RSS alone is a poor witness of "returns to baseline" in Go: freed heap pages
# go back to the OS only when the runtime's scavenger releases them, and
# buffers in a sync.Pool survive one GC (victim cache) and are dropped by the
# second. So this prints, at each step, Caddy's VmRSS and the Go heap from the
# admin /metrics: go_memstats_heap_inuse_bytes (spans in use), heap_alloc
# (live + not yet swept objects), heap_idle - heap_released (free pages the
# process still holds). The peak during the burst is VmRSS sampled every
# 10 ms by the load generator (the admin endpoint is too starved then to sample
# the heap reliably). IDLE=250 spans two of the runtime's periodic GCs.
#
# Steps: baseline (after two forced GCs) -> burst (peak RSS and heap sampled)
# -> right after -> IDLE seconds with no forced GC (only the runtime's own GC,
# forced at least every 2 minutes; sampled every 10 s) -> one forced GC -> a
# second forced GC -> 5 s later (scavenger).
#
# Environment: IDLE [30]  BASE_PORT [18580] (uses BASE_PORT..+3)  KEEP [0]
# GODEBUG is passed to Caddy as it is (e.g. GODEBUG=madvdontneed=1).
set -euo pipefail
cd "$(dirname "$0")/.."

IDLE=${IDLE:-30}
BASE_PORT=${BASE_PORT:-18580}
KEEP=${KEEP:-0}
AUTH_PORT=$((BASE_PORT + 1))
UP_PORT=$((BASE_PORT + 2))
ADMIN_PORT=$((BASE_PORT + 3))

LIMIT=$((IDLE + 300))
# shellcheck source=integration/benchlib.sh
source integration/benchlib.sh memcheck.sh
cat >"$TMP/Caddyfile" <<EOF
{
	admin 127.0.0.1:$ADMIN_PORT
	auto_https off
	persist_config off
	storage file_system $TMP/storage
}
$(auth_site "$AUTH_PORT")
EOF
JSON=$(./caddy wappchat-keys create --tenant bench --json --config "$TMP/Caddyfile" --adapter caddyfile --name signing --signing 2>>"$TMP/cli.log")
KEY=$(field "$JSON" key)
SECRET=$(field "$JSON" secret)

start_caddy
wait_port "$AUTH_PORT"
wait_port "$UP_PORT"
wait_port "$ADMIN_PORT"

rss_kb() { awk '$1 == "VmRSS:" {print $2}' "/proc/$CADDY/status"; }
metric() { # metrics-text name -> MiB
	awk -v n="$2" '$1 == n {printf "%.1f", $2 / 1048576}' <<<"$1"
}
snapshot() { # label
	local m
	m=$(curl -fsS "http://127.0.0.1:$ADMIN_PORT/metrics")
	local idle released
	idle=$(awk '$1 == "go_memstats_heap_idle_bytes" {print $2}' <<<"$m")
	released=$(awk '$1 == "go_memstats_heap_released_bytes" {print $2}' <<<"$m")
	printf "  %-34s RSS %7.1f MiB  heap_inuse %7s MiB  heap_alloc %7s MiB  held-free %7.1f MiB  gc#%s\n" "$1" \
		"$(awk -v k="$(rss_kb)" 'BEGIN {print k / 1024}')" \
		"$(metric "$m" go_memstats_heap_inuse_bytes)" "$(metric "$m" go_memstats_heap_alloc_bytes)" \
		"$(awk -v i="$idle" -v r="$released" 'BEGIN {print (i - r) / 1048576}')" \
		"$(awk '$1 == "go_gc_duration_seconds_count" {print $2}' <<<"$m")"
}
gc() { curl -fsS -o /dev/null "http://127.0.0.1:$ADMIN_PORT/debug/pprof/heap?gc=1"; }

# Warm up (pools, connections), then baseline.
"$TMP/loadgen" -url "http://127.0.0.1:$AUTH_PORT/x" -mode signed -size 1048576 -key "$KEY" -secret "$SECRET" \
	-conns 2 -requests 20 -duration 20s >/dev/null
gc
gc
sleep 2
echo "== Memory: 256 concurrent signed 1 MiB uploads (256 MiB in total); GODEBUG=${GODEBUG:-}"
snapshot "baseline (2 forced GCs + 2 s)"
base_kb=$(rss_kb)

OUT=$("$TMP/loadgen" -url "http://127.0.0.1:$AUTH_PORT/x" -mode signed -size 1048576 -key "$KEY" -secret "$SECRET" \
	-conns 256 -requests 256 -duration 60s -pid "$CADDY" -label memcheck)
peak_kb=$(sed -n 's/.*"rss_peak_kb":\([0-9]*\).*/\1/p' <<<"$OUT")
errors=$(sed -n 's/.*"errors":\([0-9]*\).*/\1/p' <<<"$OUT")
awk -v b="$base_kb" -v p="$peak_kb" -v e="$errors" 'BEGIN {
	printf "  burst: peak RSS %.1f MiB (+%.1f MiB = %.2fx of 256 MiB; target <= 1.5x); errors %d\n",
		p / 1024, (p - b) / 1024, (p - b) / (256 * 1024), e
}'
snapshot "right after the burst"
for ((s = 10; s <= IDLE; s += 10)); do
	sleep 10
	snapshot "idle ${s} s (no forced GC)"
done
gc
snapshot "after 1 forced GC"
gc
snapshot "after 2 forced GCs"
sleep 5
snapshot "2 forced GCs + 5 s"
echo "  VmHWM $(awk '$1 == "VmHWM:" {print $2}' "/proc/$CADDY/status") kB"
