#!/usr/bin/env bash
# The chat page in a real browser: start `forkhorn chat` on 127.0.0.1, open
# the page in headless Chromium (Selenium, /usr/bin/chromedriver), type a
# message, watch the reply stream in word by word until it is done, take
# screenshots (desktop, phone width), then stop the server and check that a
# message sent now shows a visible error line. Exits non-zero on failure.
#   scripts/browser-test.sh [SCREENSHOT.png]     (default target/browser-test.png;
#   the phone-width and error shots go beside it as NAME-phone.png, NAME-error.png)
# Installs Debian's chromium and chromium-driver when missing, and Selenium
# into scripts/.venv. FORKHORN_BIN picks the binary (default: cargo build,
# then target/debug/forkhorn). Loopback only; bounded by timeouts throughout.
set -euo pipefail
cd "$(dirname "$0")/.."
shot=${1:-target/browser-test.png}
mkdir -p "$(dirname "$shot")"

if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    echo "installing chromium and chromium-driver"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
fi
venv=scripts/.venv
if ! "$venv/bin/python" -c 'import selenium' 2>/dev/null; then
    echo "installing selenium into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'selenium>=4.11,<5'
fi
. "$(dirname "$0")/forkhorn-server.sh"
start_forkhorn chat -w 2

started=$(date +%s)
status=0
# The driver quits Chromium and chromedriver itself, also when `timeout` ends it.
timeout -k 5 150 "$venv/bin/python" scripts/browser/chat_page.py \
    --url "http://127.0.0.1:$port/" --screenshot "$shot" --server-pid "$server_pid" \
    --profile "$dir/profile" || status=$?
if [ "$status" -ne 0 ]; then
    echo "FAILED: the browser test (exit $status) after $(( $(date +%s) - started )) s; server log:"
    tail -20 "$dir/log"
    exit 1
fi
echo "OK: browser test passed in $(( $(date +%s) - started )) s; screenshot $shot"
