#!/usr/bin/env bash
# Concurrent chats: forkhorn -w 4 -t 5 chat serves CHATS replies at once (each
# longer than the 5 s timeout: detached streams), every one must end with its
# `done` event, no worker may time out, and /health, polled in parallel the
# whole time, must answer within 1 s every time. Prints a summary.
#   scripts/load-test.sh [CHATS=20] [TOKEN_MS=200]
# FORKHORN_BIN picks the binary (default: cargo build, then target/debug/forkhorn).
# Loopback only; bounded: the client gives up after 90 s.
set -euo pipefail
cd "$(dirname "$0")/.."
chats=${1:-20}
token_ms=${2:-200}
. "$(dirname "$0")/forkhorn-server.sh"
FORKHORN_CHAT_TOKEN_MS=$token_ms start_forkhorn chat -w 4 -t 5
for _ in $(seq 100); do [ "$(grep -c 'Booting worker' "$dir/log")" -ge 4 ] && break; sleep 0.1; done

status=0
timeout 90 python3 - "$port" "$chats" <<'PY' || status=$?
import http.client, json, sys, threading, time

port, chats = int(sys.argv[1]), int(sys.argv[2])
results = [None] * chats
health = {"count": 0, "slowest": 0.0, "failures": []}
stop = threading.Event()

def chat(i):
    started = time.monotonic()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        body = json.dumps({"message": f"load test question {i}", "session_id": f"load-{i}"})
        conn.request("POST", "/chat", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            results[i] = ("fail", f"status {resp.status}: {resp.read()[:200]!r}")
            return
        tokens, first, last_type = 0, None, None
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            last_type = event["type"]
            if last_type == "token":
                tokens += 1
                first = first or time.monotonic() - started
            elif last_type == "done":
                break
            elif last_type == "error":
                results[i] = ("fail", f"error event: {event.get('message')}")
                return
        conn.close()
        if last_type != "done":
            results[i] = ("fail", f"stream ended after {tokens} tokens without done")
        else:
            results[i] = ("ok", tokens, first, time.monotonic() - started)
    except Exception as e:
        results[i] = ("fail", f"{type(e).__name__}: {e}")

def poll_health():
    while not stop.is_set():
        asked = time.monotonic()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            resp = conn.getresponse()
            resp.read()
            conn.close()
            took = time.monotonic() - asked
            if resp.status != 200 or took >= 1.0:
                health["failures"].append(f"status {resp.status} after {took:.2f}s")
        except Exception as e:
            took = time.monotonic() - asked
            health["failures"].append(f"{type(e).__name__} after {took:.2f}s")
        health["count"] += 1
        health["slowest"] = max(health["slowest"], took)
        stop.wait(0.2)

poller = threading.Thread(target=poll_health)
poller.start()
started = time.monotonic()
threads = [threading.Thread(target=chat, args=(i,)) for i in range(chats)]
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.monotonic() - started
stop.set()
poller.join()

ok = [r for r in results if r and r[0] == "ok"]
failed = [r for r in results if not r or r[0] != "ok"]
print(f"{len(ok)}/{chats} chats ended with done in {elapsed:.1f} s", end="")
if ok:
    print(f"; tokens per reply {min(r[1] for r in ok)}..{max(r[1] for r in ok)}, "
          f"first token after {max(r[2] for r in ok) * 1000:.0f} ms at worst, "
          f"replies took {min(r[3] for r in ok):.1f}..{max(r[3] for r in ok):.1f} s")
else:
    print()
print(f"/health: {health['count']} checks, slowest {health['slowest'] * 1000:.0f} ms, "
      f"{len(health['failures'])} slow or failed")
for r in failed[:5]:
    print(f"  chat failed: {r[1] if r else 'no result'}")
for f in health["failures"][:5]:
    print(f"  health: {f}")
sys.exit(0 if not failed and not health["failures"] else 1)
PY
if grep -q "WORKER TIMEOUT" "$dir/log"; then
    echo "FAILED: a worker timed out:"; grep "WORKER TIMEOUT" "$dir/log"; exit 1
fi
if [ "$status" -ne 0 ]; then
    echo "FAILED: see above (exit $status); server log tail:"; tail -10 "$dir/log"; exit 1
fi
echo "OK: no WORKER TIMEOUT in the log"
