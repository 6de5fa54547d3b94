# Sourced by the scripts that drive a real forkhorn: pick the binary, start
# a server on 127.0.0.1:0, read its port, and stop it (and any worker left)
# when the script exits. Loopback only.
#
#   . scripts/forkhorn-server.sh
#   start_forkhorn chat -w 2       # sets $port, $server_pid, $dir (logs in $dir/log)

if [ -z "${FORKHORN_BIN:-}" ]; then
    cargo build --quiet
    FORKHORN_BIN=target/debug/forkhorn
fi
dir=$(mktemp -d)
server_pid=""
cleanup() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$server_pid" 2>/dev/null; then
            for pid in $(pgrep -P "$server_pid") "$server_pid"; do kill -KILL "$pid" 2>/dev/null || true; done
        fi
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

# start_forkhorn ARGS...: start it in the background and wait for its port.
start_forkhorn() {
    "$FORKHORN_BIN" "$@" -b 127.0.0.1:0 --worker-tmp-dir "$dir" --no-control-socket \
        --graceful-timeout 3 2>"$dir/log" &
    server_pid=$!
    for _ in $(seq 100); do grep -q "Listening at" "$dir/log" 2>/dev/null && break; sleep 0.1; done
    port=$(sed -n 's/.*Listening at: http:\/\/127.0.0.1:\([0-9]*\) .*/\1/p' "$dir/log" | head -1)
    if [ -z "$port" ]; then
        echo "FAILED: forkhorn did not start"
        cat "$dir/log"
        exit 1
    fi
}
