# shellcheck shell=bash
# Setup shared by bench.sh and memcheck.sh; source it with the script's name
# after setting KEEP, LIMIT (seconds) and UP_PORT. It gives: TMP (removed on
# exit unless KEEP=1), PIDS (killed on exit), a watchdog that ends the run
# after LIMIT seconds (WATCHDOG), a fresh ./caddy, $TMP/loadgen, the upstream
# (loadgen -serve on UP_PORT), and the helpers wait_port, field, auth_site
# (the sidecar's site block) and start_caddy.
NAME=$1
TMP=$(mktemp -d "/tmp/wappchat-$NAME.XXXXXX")
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	if [ "$KEEP" = 1 ]; then echo "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

# Watchdog: the whole run is bounded even if something hangs.
(
	trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
	sleep "$LIMIT" &
	sleeper=$!
	wait "$sleeper"
	echo "$NAME: time limit ${LIMIT}s reached" >&2
	kill -TERM $$
) &
WATCHDOG=$!
PIDS+=("$WATCHDOG")

# Build ./caddy if missing or older than the plugin sources (a stale binary would measure old code).
if [ ! -x ./caddy ] || [ -n "$(find caddymodule plugin.go go.mod go.sum -newer ./caddy -print -quit)" ]; then ./xcaddy.sh; fi
go build -o "$TMP/loadgen" ./integration/loadgen

wait_port() { # port
	for _ in $(seq 1 100); do
		(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "port $1 did not open" >&2
	return 1
}

field() { # json name: the string value of name in one-line-per-field JSON
	sed -n "s/.*\"$2\": *\"\([^\"]*\)\".*/\1/p" <<<"$1"
}

auth_site() { # port: the sidecar's site for $TMP/Caddyfile, proxying to the upstream
	cat <<EOF
http://127.0.0.1:$1 {
	bind 127.0.0.1
	wappchat_auth {
		signatures optional
	}
	reverse_proxy 127.0.0.1:$UP_PORT
}
EOF
}

start_caddy() { # runs ./caddy on $TMP/Caddyfile, its logs in $TMP/caddy.log; sets CADDY
	./caddy run --config "$TMP/Caddyfile" --adapter caddyfile >"$TMP/caddy.log" 2>&1 &
	CADDY=$!
	PIDS+=("$CADDY")
}

"$TMP/loadgen" -serve "127.0.0.1:$UP_PORT" 2>"$TMP/upstream.log" &
PIDS+=($!)
export XDG_DATA_HOME=$TMP/data XDG_CONFIG_HOME=$TMP/config
