#!/usr/bin/env bash
# Check config/forkhorn.service and config/forkhorn.socket with systemd-analyze
# verify, against the binary this checkout built (the unit names
# /usr/local/bin/forkhorn, which need not exist here).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "verify-units: systemd-analyze is not installed; skipping (apt-get install systemd)"
    exit 0
fi
bin="$PWD/target/debug/forkhorn"
[ -x "$bin" ] || cargo build --quiet
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# Same names for both, so the socket finds its service.
sed -e "s|/usr/local/bin/forkhorn|$bin|" -e '/^Requires=forkhorn.socket/d' -e '/^After=forkhorn.socket/d' \
    config/forkhorn.service > "$dir/forkhorn-verify.service"
cp config/forkhorn.socket "$dir/forkhorn-verify.socket"
out=$(cd "$dir" && systemd-analyze verify forkhorn-verify.service forkhorn-verify.socket 2>&1) || {
    echo "$out"
    exit 1
}
if [ -n "$out" ]; then
    echo "verify-units: systemd-analyze complained:"
    echo "$out"
    exit 1
fi
echo "verify-units: forkhorn.service and forkhorn.socket pass systemd-analyze verify"
