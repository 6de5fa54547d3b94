#!/usr/bin/env bash
# Zero failed requests across reloads and binary upgrades, measured with wrk:
# forkhorn serves `hello` under `wrk -c16` (keep-alive) while it gets N HUPs
# and then N USR2 upgrades; wrk must report no socket errors and no non-2xx.
# Loopback only; bounded by DURATION seconds of load per phase.
#   scripts/upgrade-under-load.sh [N=5] [DURATION=10]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-5}
duration=${2:-10}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; echo "installed wrk"; }
cargo build --release --quiet
dir=$(mktemp -d)
pidfile="$dir/forkhorn.pid"
cleanup() {
    [ -f "$pidfile" ] && kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
    sleep 1
    rm -rf "$dir"
}
trap cleanup EXIT
./target/release/forkhorn -b 127.0.0.1:0 -w 2 -p "$pidfile" --worker-tmp-dir "$dir" hello 2>"$dir/log" &
for _ in $(seq 100); do grep -q "Listening at" "$dir/log" 2>/dev/null && break; sleep 0.1; done
port=$(sed -n 's/.*Listening at: http:\/\/127.0.0.1:\([0-9]*\) .*/\1/p' "$dir/log" | head -1)
failed=0
phase() { # name signal
    local name=$1 sig=$2
    wrk -t2 -c16 -d"${duration}s" "http://127.0.0.1:$port/" >"$dir/wrk-$name" &
    local wrk_pid=$!
    local gap
    gap=$(python3 -c "print(max(0.5, $duration / ($n + 1)))")
    for _ in $(seq "$n"); do
        sleep "$gap"
        kill "-$sig" "$(cat "$pidfile")"
    done
    wait "$wrk_pid"
    local reqs errors non2xx
    reqs=$(awk '/requests in/ {print $1}' "$dir/wrk-$name")
    errors=$(grep -o 'Socket errors:.*' "$dir/wrk-$name" || echo "Socket errors: none")
    non2xx=$(grep -o 'Non-2xx or 3xx responses: [0-9]*' "$dir/wrk-$name" || echo "Non-2xx or 3xx responses: 0")
    echo "$name: $n x $sig under load: $reqs requests; $errors; $non2xx"
    if grep -q 'Socket errors' "$dir/wrk-$name" || ! echo "$non2xx" | grep -q ': 0$'; then
        failed=1
    fi
}
phase reload HUP
phase upgrade USR2
if [ "$failed" -ne 0 ]; then
    echo "FAILED: requests failed during reloads or upgrades"
    tail -20 "$dir/log"
    exit 1
fi
echo "OK: zero failed requests"
