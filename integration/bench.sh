#!/usr/bin/env bash
# Side-by-side benchmark of wappchat_auth against plain reverse_proxy (issue 7).
#
#   integration/bench.sh
#
# One command: builds ./caddy if missing or stale (./xcaddy.sh), starts one upstream
# (loadgen -serve: drains the body, answers 200) and ONE Caddy with four sites
# on loopback, all proxying to that upstream:
#   plain   http://127.0.0.1:$BASE      reverse_proxy
#   auth    http://127.0.0.1:$BASE+1    wappchat_auth (signatures optional) + reverse_proxy
#   header  http://127.0.0.1:$BASE+4    request_header + reverse_proxy (the header case)
#   logline http://127.0.0.1:$BASE+5    reverse_proxy + access log (the logline case)
# creates a key-only key and a signing key with `caddy wappchat-keys create`,
# then for each case alternates plain/auth ROUNDS times (order swapped every
# round), SECS seconds per arm, with the load generator (integration/loadgen)
# signing every request freshly in both arms:
#   header   not the sidecar: a trivial request_header handler + reverse_proxy,
#            the same requests as key; its ratio is what any handler scores here
#   logline  not the sidecar: plain reverse_proxy writing one access log entry
#            per request to the same log as the sidecar's audit entry, the same
#            requests as key; its ratio is what one log entry per request costs here
#   key      key only (x-wappchat-key), 1 KiB body
#   sig1k    signed, 1 KiB body;  sig64k  signed, 64 KiB;  sig1m  signed, 1 MiB
# For every arm the load generator reads Caddy's utime+stime (/proc/PID/stat)
# right before and after, so CPU per request is per arm. The summary prints per
# case the median auth/plain throughput ratio with its min..max, CPU per request
# of each arm and their difference, the budget for that difference (1.2 x a bare
# HMAC-SHA256 over the body from the Go benchmark + 20 us), and Caddy's peak RSS
# (VmHWM). With PACED=1, each case then runs ROUNDS more rounds with both arms
# at one fixed rate (80% of the auth arm's slowest round), reported as
# CASE/paced: Caddy's CPU per request at equal load, where neither arm's figure
# is inflated by running less busy than the other. Then the memory check: 256
# concurrent signed 1 MiB uploads, Caddy's RSS before, peak during, and after
# (5 s later, and after two forced GCs through the admin API's /debug/pprof/heap?gc=1).
#
# Environment (defaults in brackets):
#   ROUNDS [5]  SECS [10]  CONNS [8]  CASES ["header logline key sig1k sig64k sig1m"]
#   BASE_PORT [18480] (uses BASE_PORT..BASE_PORT+5)  PACED [1]  MEMCHECK [1]  GOBENCH [1]
#   KEEP [0]: keep the temporary directory (Caddyfile, logs, results.jsonl)
#   LOG_LEVEL [INFO]: Caddy's log level; WARN drops the sidecar's per-request
#   "accepted" audit line, to see what writing it costs
# Every step is bounded in time: each arm by SECS (loadgen -duration), the
# whole script by a watchdog of ROUNDS*SECS*2*cases*(1+PACED) + 300 s.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${ROUNDS:-5}
SECS=${SECS:-10}
CONNS=${CONNS:-8}
CASES=${CASES:-"header logline key sig1k sig64k sig1m"}
LOG_LEVEL=${LOG_LEVEL:-INFO}
BASE_PORT=${BASE_PORT:-18480}
PACED=${PACED:-1}
MEMCHECK=${MEMCHECK:-1}
GOBENCH=${GOBENCH:-1}
KEEP=${KEEP:-0}

PLAIN_PORT=$BASE_PORT
AUTH_PORT=$((BASE_PORT + 1))
UP_PORT=$((BASE_PORT + 2))
ADMIN_PORT=$((BASE_PORT + 3))
HEADER_PORT=$((BASE_PORT + 4))
LOGLINE_PORT=$((BASE_PORT + 5))
CLK_TCK=$(getconf CLK_TCK)

ncases=$(wc -w <<<"$CASES")
LIMIT=$((ROUNDS * SECS * 2 * ncases * (1 + PACED) + 300))
# shellcheck source=integration/benchlib.sh
source integration/benchlib.sh bench.sh
cat >"$TMP/Caddyfile" <<EOF
{
	admin 127.0.0.1:$ADMIN_PORT
	auto_https off
	persist_config off
	storage file_system $TMP/storage
	log {
		level $LOG_LEVEL
	}
	wappchat {
		cache_ttl 5s
		# Live claims last the 5 min tolerance: up to ~8k signed req/s here, over
		# the default capacity (sized for 1k/s), which would refuse with 503.
		replay_capacity 4000000
	}
}
http://127.0.0.1:$PLAIN_PORT {
	bind 127.0.0.1
	reverse_proxy 127.0.0.1:$UP_PORT
}
# A trivial handler in front of the same proxy: the "header" case's auth arm,
# which shows the ratio any handler at all scores on this machine.
http://127.0.0.1:$HEADER_PORT {
	bind 127.0.0.1
	request_header X-Tenant-ID bench
	reverse_proxy 127.0.0.1:$UP_PORT
}
# Plain reverse_proxy plus one log entry per request (its access log, filtered as
# the README configures it), written where the sidecar's audit entries go: the
# "logline" case's auth arm, which shows what one entry per request costs here.
http://127.0.0.1:$LOGLINE_PORT {
	bind 127.0.0.1
	log {
		format filter {
			request>headers>X-Wappchat-Key delete
		}
	}
	reverse_proxy 127.0.0.1:$UP_PORT
}
$(auth_site "$AUTH_PORT")
EOF

create_key() { # extra flags...
	./caddy wappchat-keys create --tenant bench --json --config "$TMP/Caddyfile" --adapter caddyfile "$@" 2>>"$TMP/cli.log"
}
KEYONLY_JSON=$(create_key --name key-only)
SIGNING_JSON=$(create_key --name signing --signing)
KEYONLY=$(field "$KEYONLY_JSON" key)
SIGNKEY=$(field "$SIGNING_JSON" key)
SECRET=$(field "$SIGNING_JSON" secret)
[ -n "$KEYONLY" ] && [ -n "$SIGNKEY" ] && [ -n "$SECRET" ] || { echo "could not create keys" >&2; exit 1; }

# Caddy's own logs (the sidecar's audit line per accepted request included) go to a file.
start_caddy
wait_port "$PLAIN_PORT"
wait_port "$AUTH_PORT"
wait_port "$HEADER_PORT"
wait_port "$LOGLINE_PORT"
wait_port "$UP_PORT"

# Bare HMAC-SHA256 per size, from the Go benchmark, for the CPU budget.
BARE=""
if [ "$GOBENCH" = 1 ]; then
	echo "== Go benchmark: bare HMAC-SHA256 (for the CPU budget)"
	go test -run='^$' -bench='VerifySignature/.*/bare' -benchtime=0.5s ./caddymodule/ | tee "$TMP/gobench.txt" | grep Benchmark || true
	ns() { awk -v s="$1" '$1 ~ "/"s"/bare" {print $3}' "$TMP/gobench.txt"; }
	BARE="sig1k=$(ns 1KiB),sig64k=$(ns 64KiB),sig1m=$(ns 1MiB)"
fi

case_args() { # case -> loadgen flags for the auth arm (the plain arm sends the same)
	case $1 in
	key | header | logline) echo "-mode key -size 1024 -key $KEYONLY" ;;
	sig1k) echo "-mode signed -size 1024 -key $SIGNKEY -secret $SECRET" ;;
	sig64k) echo "-mode signed -size 65536 -key $SIGNKEY -secret $SECRET" ;;
	sig1m) echo "-mode signed -size 1048576 -key $SIGNKEY -secret $SECRET" ;;
	*) echo "unknown case $1" >&2; exit 1 ;;
	esac
}

arm_port() { # case arm
	case $2/$1 in
	plain/*) echo "$PLAIN_PORT" ;;
	auth/header) echo "$HEADER_PORT" ;;
	auth/logline) echo "$LOGLINE_PORT" ;;
	*) echo "$AUTH_PORT" ;;
	esac
}

RESULTS=$TMP/results.jsonl
run_arm() { # case arm round [rate]: a rate paces the arm and labels it CASE/paced
	local port label=$1 pace=()
	port=$(arm_port "$1" "$2")
	[ -n "${4:-}" ] && label=$1/paced pace=(-rate "$4")
	# shellcheck disable=SC2046
	"$TMP/loadgen" -url "http://127.0.0.1:$port/api/whatsapp/automation/events" $(case_args "$1") \
		-conns "$CONNS" -duration "${SECS}s" -pid "$CADDY" -clk-tck "$CLK_TCK" "${pace[@]}" \
		-label "case=$label arm=$2 round=$3" | tee -a "$RESULTS" |
		sed -n 's/.*"label":"\([^"]*\)".*"rps":\([0-9.]*\),"p50_us":\([0-9.]*\),"p99_us":\([0-9.]*\).*"cpu_per_req_us":\([0-9.]*\).*/  \1: \2 req\/s, p50 \3 us, p99 \4 us, caddy cpu \5 us\/req/p'
}

rounds() { # case [rate]: ROUNDS rounds of both arms, the order swapped every round
	for r in $(seq 1 "$ROUNDS"); do
		if [ $((r % 2)) = 1 ]; then
			run_arm "$1" plain "$r" "${2:-}"
			run_arm "$1" auth "$r" "${2:-}"
		else
			run_arm "$1" auth "$r" "${2:-}"
			run_arm "$1" plain "$r" "${2:-}"
		fi
	done
}

echo "== A/B: $ROUNDS rounds x ${SECS}s per arm, $CONNS connections, cases: $CASES"
for c in $CASES; do
	# Warm-up of both arms (not recorded): connections, caches, pools.
	for arm in plain auth; do
		# shellcheck disable=SC2046
		"$TMP/loadgen" -url "http://127.0.0.1:$(arm_port "$c" $arm)/api/whatsapp/automation/events" $(case_args "$c") \
			-conns "$CONNS" -duration 1s >/dev/null
	done
	rounds "$c"
	if [ "$PACED" = 1 ]; then
		# The same requests at one fixed rate both arms can keep: CPU per request at equal load.
		rate=$(sed -n "s/.*\"label\":\"case=$c arm=auth [^\"]*\".*\"rps\":\([0-9.]*\).*/\1/p" "$RESULTS" |
			sort -g | head -1 | awk '{printf "%.0f", $1 * 0.8}')
		echo "  paced at $rate req/s (80% of the auth arm's slowest round)"
		rounds "$c" "$rate"
	fi
done

status_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
echo
echo "== Summary"
"$TMP/loadgen" -summarize "$RESULTS" -bare-hmac-ns "$BARE" || SUMMARY_FAILED=1
echo "caddy peak resident memory (VmHWM) after the A/B runs: $(status_kb "$CADDY" VmHWM) kB (VmRSS now $(status_kb "$CADDY" VmRSS) kB)"

if [ "$MEMCHECK" = 1 ]; then
	echo
	echo "== Memory: 256 concurrent signed 1 MiB uploads (256 MiB in total)"
	gc() { curl -fsS -o /dev/null "http://127.0.0.1:$ADMIN_PORT/debug/pprof/heap?gc=1" || true; }
	gc
	gc
	sleep 2
	MEM=$("$TMP/loadgen" -url "http://127.0.0.1:$AUTH_PORT/api/whatsapp/automation/events" -mode signed -size 1048576 \
		-key "$SIGNKEY" -secret "$SECRET" -conns 256 -requests 256 -duration 60s -pid "$CADDY" -clk-tck "$CLK_TCK" -label memcheck)
	echo "$MEM" >>"$RESULTS"
	before=$(sed -n 's/.*"rss_before_kb":\([0-9]*\).*/\1/p' <<<"$MEM")
	peak=$(sed -n 's/.*"rss_peak_kb":\([0-9]*\).*/\1/p' <<<"$MEM")
	errors=$(sed -n 's/.*"errors":\([0-9]*\).*/\1/p' <<<"$MEM")
	sleep 5
	after5=$(status_kb "$CADDY" VmRSS)
	gc
	gc
	sleep 5
	aftergc=$(status_kb "$CADDY" VmRSS)
	total=$((256 * 1024))
	awk -v b="$before" -v p="$peak" -v a="$after5" -v g="$aftergc" -v t="$total" -v e="$errors" 'BEGIN {
		printf "  RSS before %d kB, peak during %d kB (+%d kB = %.2fx of the 256 MiB uploaded; target <= 1.5x)\n", b, p, p-b, (p-b)/t
		printf "  RSS 5 s after %d kB (+%d kB); after two forced GCs + 5 s %d kB (+%d kB over before)\n", a, a-b, g, g-b
		printf "  errors: %d\n", e
	}'
	echo "caddy peak resident memory (VmHWM) at the end: $(status_kb "$CADDY" VmHWM) kB"
fi

kill "$WATCHDOG" 2>/dev/null || true
[ -z "${SUMMARY_FAILED:-}" ]
