"""A Flask chat UI whose replies stream in as Server-Sent Events.

This is the app forkhorn was written for. Under
`gunicorn --worker-class sync --timeout 300 app:app` each streaming reply
pins a sync worker for its whole length, so two workers serve two chats at
a time, `/health` waits behind them, and a reply longer than the timeout
ends in WORKER TIMEOUT.

The model is an asyncio async generator (as a client for a real model
server would be). Flask views are synchronous, so the tokens cross over the
classic way: one background thread per worker process runs an event loop,
a reply's coroutine pushes tokens into a `queue.Queue`, and the view's
generator takes them out with a timeout and yields `data: ...` events.

Settings (environment; the JSON body of `POST /chat` may override the
first two per request with "seconds" and "tokens"):

    CHAT_REPLY_SECONDS   how long one reply takes            (default 3)
    CHAT_TOKENS          how many tokens one reply has        (default 30)
    CHAT_KEEPALIVE_SECONDS  a `: keepalive` comment after this long
                         without a token                      (default 5)
    CHAT_STALL_SECONDS   give up on a reply after this long
                         without a token                      (default 60)
"""

import asyncio
import json
import os
import queue
import threading
import time

from flask import Flask, Response, jsonify, request

app = Flask(__name__)

REPLY_SECONDS = float(os.environ.get("CHAT_REPLY_SECONDS", "3"))
TOKENS = int(os.environ.get("CHAT_TOKENS", "30"))
KEEPALIVE_SECONDS = float(os.environ.get("CHAT_KEEPALIVE_SECONDS", "5"))
STALL_SECONDS = float(os.environ.get("CHAT_STALL_SECONDS", "60"))
# How long /health waits for the event loop to run a no-op.
HEALTH_CHECK_SECONDS = 0.25
# A model server that never answers: long enough for any --timeout.
MODEL_HANG_SECONDS = 3600

FILLER = (
    "Streaming keeps the page alive while the model thinks, one token at "
    "a time, until the whole answer is there."
).split()


# ---------------------------------------------------------------- the model


async def generate_reply(message, tokens, seconds):
    """The model: `tokens` words over `seconds`, one at a time."""
    words = ["You", "said:"] + message.split() + ["."] + FILLER
    pause = seconds / tokens
    for i in range(tokens):
        await asyncio.sleep(pause)
        yield words[i % len(words)] + " "


def wait_for_model(seconds):
    """Block until the model server is ready, as a blocking client call
    with no timeout would. `{"hang": true}` makes it never be."""
    time.sleep(seconds)


# ---------------------------------------------------------------- the bridge

# Marks the end of a reply in its queue.
_END = object()


class Bridge:
    """An asyncio event loop on a background thread, started on first use
    in each process (threads do not survive a fork, so a loop started
    before the workers fork would be dead in all of them)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._loop = None
        self._thread = None
        self._pid = None

    def loop(self):
        with self._lock:
            if self._pid != os.getpid() or not self._thread.is_alive():
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="chat-bridge", daemon=True
                )
                self._thread.start()
                self._pid = os.getpid()
            return self._loop

    def submit(self, coroutine):
        """Run `coroutine` on the loop; a concurrent.futures.Future."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop())

    def is_alive(self, timeout):
        """Whether the loop runs a no-op within `timeout` seconds."""
        try:
            self.submit(asyncio.sleep(0)).result(timeout=timeout)
            return True
        except Exception:
            return False


bridge = Bridge()


async def pump(tokens, into):
    """Move every token of the async generator `tokens` into the queue
    `into`, then `_END` (after an exception, the exception)."""
    try:
        async for token in tokens:
            into.put(token)
    except Exception as e:  # noqa: BLE001 - the client is told, see events()
        into.put(e)
    finally:
        into.put(_END)


def sse(data):
    return f"data: {data}\n\n"


def events(tokens, future):
    """The response body: each token from the queue as an event, a
    keepalive comment while the model is quiet, `[DONE]` at the end."""
    silent_since = time.monotonic()
    try:
        while True:
            try:
                item = tokens.get(timeout=KEEPALIVE_SECONDS)
            except queue.Empty:
                if time.monotonic() - silent_since > STALL_SECONDS:
                    yield sse(json.dumps({"error": "the model stopped sending"}))
                    return
                yield ": keepalive\n\n"
                continue
            silent_since = time.monotonic()
            if item is _END:
                break
            if isinstance(item, Exception):
                yield sse(json.dumps({"error": str(item)}))
                return
            yield sse(json.dumps({"token": item}))
        yield sse("[DONE]")
    finally:
        # The client hung up, or the reply ended: stop the model either way.
        future.cancel()


# ---------------------------------------------------------------- the views


@app.get("/")
def page():
    return Response(PAGE, mimetype="text/html")


@app.post("/chat")
def chat():
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        return jsonify(error='send JSON like {"message": "hello"}'), 400
    message = body["message"].strip()
    if not message:
        return jsonify(error='"message" is empty'), 400
    try:
        tokens = int(body.get("tokens", TOKENS))
        seconds = float(body.get("seconds", REPLY_SECONDS))
    except (TypeError, ValueError):
        return jsonify(error='"tokens" and "seconds" must be numbers'), 400
    if not 1 <= tokens <= 10_000 or not 0 <= seconds <= 3600:
        return jsonify(error='"tokens" must be 1..10000, "seconds" 0..3600'), 400
    if body.get("hang"):
        wait_for_model(MODEL_HANG_SECONDS)

    q = queue.Queue()
    future = bridge.submit(pump(generate_reply(message, tokens, seconds), q))
    return Response(
        events(q, future),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@app.get("/health")
def health():
    """Answers within HEALTH_CHECK_SECONDS: 200 if the bridge's event loop
    runs, else 503."""
    if bridge.is_alive(HEALTH_CHECK_SECONDS):
        return jsonify(status="ok", pid=os.getpid())
    return jsonify(status="unhealthy", pid=os.getpid(), error="event loop stuck"), 503


PAGE = """<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>Chat</title>
<style>
  body { font: 16px/1.4 system-ui, sans-serif; max-width: 40em; margin: 2em auto; }
  #log p { white-space: pre-wrap; }
  .you { color: #555; }
</style>
<div id="log"></div>
<form id="ask">
  <input id="message" autocomplete="off" size="50" placeholder="Say something" autofocus>
  <button>Send</button>
</form>
<script>
const log = document.getElementById("log");
const input = document.getElementById("message");

function line(text, cls) {
  const p = document.createElement("p");
  p.className = cls;
  p.textContent = text;
  log.appendChild(p);
  return p;
}

document.getElementById("ask").addEventListener("submit", async (event) => {
  event.preventDefault();
  const message = input.value.trim();
  if (!message) return;
  input.value = "";
  line("You: " + message, "you");
  const reply = line("", "bot");
  const resp = await fetch("/chat", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ message }),
  });
  if (!resp.ok) { reply.textContent = "Error " + resp.status; return; }
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pending += value;
    let end;
    while ((end = pending.indexOf("\\n\\n")) >= 0) {
      const block = pending.slice(0, end);
      pending = pending.slice(end + 2);
      if (!block.startsWith("data: ")) continue;  // a keepalive comment
      const data = block.slice(6);
      if (data === "[DONE]") return;
      const event = JSON.parse(data);
      if (event.error) { reply.textContent += " [" + event.error + "]"; return; }
      reply.textContent += event.token;
    }
  }
});
</script>
</html>
"""
