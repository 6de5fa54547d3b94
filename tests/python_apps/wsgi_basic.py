"""The plain-WSGI app that tests/wsgi.rs runs under forkhorn: one route per
behaviour a test checks. Standard library only.

`app` is the app itself; `validated_app` is the same app wrapped in
wsgiref.validate.validator, which raises AssertionError (and so logs a
traceback) whenever the server or the app breaks PEP 3333.

Routes that block wait for a "gate" file the test creates; routes whose
response iterable has a close() write a "closed" file when it is called, so
a test can see from outside that close() ran. Both paths come in the query
string (`?gate=PATH&closed=PATH`).
"""

import io
import json
import os
import sys
import threading
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator

# The process that imported this module: the worker, or with --preload the
# process that imported before forking the workers.
IMPORTED_IN = os.getpid()

# How long a blocked route waits for its gate before giving up (so a test
# that fails never leaves a worker stuck for long).
GATE_TIMEOUT_SECS = 10.0


def query(environ):
    pairs = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    return {name: values[-1] for name, values in pairs.items()}


def reply(start_response, body, status="200 OK", content_type="text/plain", extra=()):
    """A whole response with its Content-Length."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
    headers.extend(extra)
    start_response(status, headers)
    return [body]


def wait_for_file(path):
    deadline = time.monotonic() + GATE_TIMEOUT_SECS
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"gate {path} did not appear within {GATE_TIMEOUT_SECS}s")
        time.sleep(0.005)


def mark(path, text="closed\n"):
    """Create `path` holding `text`, atomically (a reader never sees it half written)."""
    if not path:
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class Closing:
    """A response iterable over `chunks` whose close() marks `closed_path`."""

    def __init__(self, chunks, closed_path):
        self._chunks = iter(chunks)
        self._closed_path = closed_path

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._chunks)

    def close(self):
        inner = getattr(self._chunks, "close", None)
        if inner is not None:
            inner()
        mark(self._closed_path)


def describe(value):
    """An environ value as JSON: strings and flags as they are, objects by what they offer."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, tuple):
        return list(value)
    offers = ["read", "readline", "readlines", "__iter__", "write", "writelines", "flush"]
    return {
        "type": type(value).__name__,
        "callable": callable(value),
        "offers": [name for name in offers if hasattr(value, name)],
    }


# ---------------------------------------------------------------- routes


def hello(environ, start_response):
    return reply(start_response, "hello from wsgi\n")


def pid(environ, start_response):
    return reply(start_response, f"{os.getpid()}\n")


def imported_in(environ, start_response):
    """`IMPORTER WORKER`: the pid that imported this module, and the one serving."""
    return reply(start_response, f"{IMPORTED_IN} {os.getpid()}\n")


def show_environ(environ, start_response):
    body = json.dumps({key: describe(value) for key, value in environ.items()}, sort_keys=True)
    return reply(start_response, body, content_type="application/json")


def osenv(environ, start_response):
    key = query(environ).get("key", "")
    return reply(start_response, os.environ.get(key, "<unset>"))


def read_input(environ, start_response):
    """The request body as the pieces one way of reading wsgi.input gave.

    Modes: `read` (read() once; `read-negative` and `read-none` pass -1
    and None), `readn` (read(3) until b""), `readline`
    (readline() until b""), `readline-limit` (readline(4) until b""),
    `readlines`, `iter` (for line in input), `past` (the whole body by
    read(CONTENT_LENGTH), or by read(4096) until b"" when chunked, then
    read(5) and read() past the end: both must give b"").
    """
    stream = environ["wsgi.input"]
    mode = query(environ).get("mode", "readn")
    if mode == "read":
        pieces = [stream.read()]
    elif mode == "read-negative":
        pieces = [stream.read(-1)]
    elif mode == "read-none":
        pieces = [stream.read(None)]
    elif mode == "readn":
        pieces = list(iter(lambda: stream.read(3), b""))
    elif mode == "readline":
        pieces = list(iter(stream.readline, b""))
    elif mode == "readline-limit":
        pieces = list(iter(lambda: stream.readline(4), b""))
    elif mode == "readlines":
        pieces = stream.readlines()
    elif mode == "iter":
        pieces = [line for line in stream]
    elif mode == "past":
        length = environ.get("CONTENT_LENGTH")
        if length:
            whole = stream.read(int(length))
        else:
            whole = b"".join(iter(lambda: stream.read(4096), b""))
        pieces = [whole, stream.read(5), stream.read()]
    else:
        return reply(start_response, f"unknown mode {mode}\n", status="400 Bad Request")
    for piece in pieces:
        if not isinstance(piece, bytes):
            raise TypeError(f"wsgi.input gave {type(piece).__name__}, not bytes")
    body = json.dumps({"mode": mode, "pieces": [p.decode("latin-1") for p in pieces]})
    return reply(start_response, body, content_type="application/json")


def ignore_body(environ, start_response):
    return reply(start_response, "ignored the body\n")


def with_length(environ, start_response):
    """Two chunks under a Content-Length the app set itself."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "11")])
    return Closing([b"hello", b" world"], query(environ).get("closed"))


def chunks(environ, start_response):
    """`n` chunks with no Content-Length: the server must frame them."""
    params = query(environ)
    count = int(params.get("n", "3"))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Closing((f"chunk {i}\n".encode() for i in range(count)), params.get("closed"))


def length_lie(environ, start_response):
    """Declares Content-Length `declared` but sends "hello world" (11 bytes),
    as a list (`kind=list`) or from a generator (`kind=gen`)."""
    params = query(environ)
    declared = params.get("declared", "5")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", declared)])
    if params.get("kind") == "gen":
        return (piece for piece in [b"hello", b" world"])
    return [b"hello world"]


def late_exc_info(environ, start_response):
    """After the headers went out, start_response with exc_info must re-raise (PEP 3333)."""
    params = query(environ)

    def body():
        yield b"partial\n"
        try:
            raise ValueError("late failure")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        yield b"start_response did not re-raise\n"

    start_response("200 OK", [("Content-Type", "text/plain")])
    return Closing(body(), params.get("closed"))


def set_cookies(environ, start_response):
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain"),
            ("Set-Cookie", "a=1; Path=/"),
            ("Set-Cookie", "b=2; Path=/; HttpOnly"),
        ],
    )
    return [b"two cookies\n"]


def header_value(environ, start_response):
    """Sends the query's `value` (percent-decoded as UTF-8) as header X-Value."""
    value = query(environ).get("value", "")
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-Value", value)])
    return [b"sent\n"]


def status_line(environ, start_response):
    """Uses the query's `status` as the status string, as given."""
    start_response(query(environ).get("status", "200 OK"), [("Content-Type", "text/plain")])
    return [b"status as given\n"]


def pattern_check(environ, start_response):
    """Checks the body is byte i == i % 251 throughout, read 64 KiB at a
    time: `length L, mismatch at K` (K is `none` when all match)."""
    stream = environ["wsgi.input"]
    length, mismatch = 0, "none"
    for piece in iter(lambda: stream.read(65536), b""):
        if mismatch == "none":
            want = bytes((length + i) % 251 for i in range(len(piece)))
            if piece != want:
                at = next(i for i in range(len(piece)) if piece[i] != want[i])
                mismatch = str(length + at)
        length += len(piece)
    return reply(start_response, f"length {length}, mismatch at {mismatch}\n")


def big(environ, start_response):
    """`n` bytes (a repeating pattern) in 64 KiB chunks, without a length."""
    remaining = int(query(environ).get("n", "1000000"))
    pattern = bytes(range(256)) * 256

    def body():
        nonlocal remaining
        while remaining > 0:
            piece = pattern[:remaining]
            remaining -= len(piece)
            yield piece

    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return body()


def start_thread(environ, start_response):
    """Starts a daemon thread that appends a line to `path` every 10 ms for
    about 5 s: it makes progress only while the worker lets go of the GIL."""
    path = query(environ)["path"]

    def tick():
        for n in range(500):
            with open(path, "a") as f:
                f.write(f"{n}\n")
            time.sleep(0.01)

    threading.Thread(target=tick, daemon=True).start()
    return reply(start_response, "started\n")


def lazy_start(environ, start_response):
    """A generator that calls start_response only when first iterated,
    after yielding an empty chunk (PEP 3333 lets it)."""

    def body():
        yield b""
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"started late\n"

    return body()


def echo_lines(environ, start_response):
    """Reads wsgi.input while the response is being sent: each body line,
    upper-cased, as it is read."""
    stream = environ["wsgi.input"]

    def body():
        for line in stream:
            yield line.upper()

    start_response("200 OK", [("Content-Type", "text/plain")])
    return body()


def with_write(environ, start_response):
    """The legacy write() callable, then an iterable."""
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    write(b"then ")
    return [b"returned\n"]


def gated(environ, start_response, headers, first, last):
    """`first`, then wait for the gate file, then `last`."""
    params = query(environ)
    gate = params["gate"]

    def body():
        yield first
        wait_for_file(gate)
        yield last

    start_response("200 OK", headers)
    return Closing(body(), params.get("closed"))


def block(environ, start_response):
    """`first`, then wait for the gate file, then `second`."""
    return gated(environ, start_response, [("Content-Type", "text/plain")], b"first\n", b"second\n")


def forever(environ, start_response):
    """1 KiB chunks every few ms until close() (at most about 20 s); with
    `type=sse` as an event stream."""
    params = query(environ)
    is_sse = params.get("type") == "sse"

    def body():
        for _ in range(4000):
            yield b"data: " + b"x" * 1016 + b"\n\n" if is_sse else b"x" * 1023 + b"\n"
            time.sleep(0.005)

    content_type = "text/event-stream" if is_sse else "text/plain"
    start_response("200 OK", [("Content-Type", content_type)])
    return Closing(body(), params.get("closed"))


def fail(environ, start_response):
    message = query(environ).get("msg", "the app failed on purpose")
    raise RuntimeError(message)


def fail_after_headers(environ, start_response):
    """Headers and one chunk go out, then the iterable raises."""
    params = query(environ)
    message = params.get("msg", "the body failed on purpose")

    def body():
        yield b"partial\n"
        raise RuntimeError(message)

    start_response("200 OK", [("Content-Type", "text/plain")])
    return Closing(body(), params.get("closed"))


def exc_info_before_body(environ, start_response):
    """An error caught before any body: start_response again with exc_info replaces the status."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("caught before the body")
    except ValueError:
        start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
    return [b"recovered\n"]


def start_twice(environ, start_response):
    """A second start_response without exc_info must raise (PEP 3333)."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        start_response("201 Created", [("Content-Type", "text/plain")])
    except Exception as e:
        return [f"refused: {type(e).__name__}\n".encode()]
    return [b"accepted a second start_response\n"]


def no_start_response(environ, start_response):
    """Returns a body without ever calling start_response."""
    return [b"this body must not be sent\n"]


def yield_str(environ, start_response):
    """Yields str where WSGI wants bytes."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["this body must not be sent\n"]


BAD_HEADERS = {
    "value-crlf": ("X-Bad", "one\r\nX-Injected: yes"),
    "value-lf": ("X-Bad", "one\nX-Injected: yes"),
    "value-cr": ("X-Bad", "one\rtwo"),
    "value-nul": ("X-Bad", "one\x00two"),
    "name-crlf": ("X-Bad\r\nX-Injected", "yes"),
    "name-colon": ("X-Bad: yes\r\nX", "yes"),
}


def bad_header(environ, start_response):
    name, value = BAD_HEADERS[query(environ).get("kind", "value-crlf")]
    start_response("200 OK", [("Content-Type", "text/plain"), (name, value)])
    return [b"this body must not be sent\n"]


def hop_by_hop(environ, start_response):
    params = query(environ)
    name, value = params.get("name", "Connection"), params.get("value", "close")
    start_response("200 OK", [("Content-Type", "text/plain"), (name, value)])
    return [b"this body must not be sent\n"]


def sse(environ, start_response):
    """A Server-Sent Events stream: one event, wait for the gate, a last event."""
    headers = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
    return gated(environ, start_response, headers, b"data: first\n\n", b"data: last\n\n")


def detached(environ, start_response):
    """A plain-text stream the app asks to have detached (forkhorn.detach)."""
    environ["forkhorn.detach"] = True
    return gated(environ, start_response, [("Content-Type", "text/plain")], b"first\n", b"second\n")


def health(environ, start_response):
    return reply(start_response, "ok\n")


def send_file(environ, start_response):
    """The file at `path` through wsgi.file_wrapper: from byte `offset` (the
    file is positioned there first), or read into a BytesIO first with
    `kind=bytesio` (an object with no file descriptor)."""
    params = query(environ)
    f = open(params["path"], "rb")
    f.seek(int(params.get("offset", "0")))
    if params.get("kind") == "bytesio":
        with f:
            f = io.BytesIO(f.read())
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](f, 4096)


def return_none(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return None


def log_to_errors(environ, start_response):
    errors = environ["wsgi.errors"]
    errors.write(query(environ).get("msg", "a line for wsgi.errors") + "\n")
    errors.flush()
    return reply(start_response, "logged\n")


def busy(environ, start_response):
    """Work for `seconds`, telling forkhorn of progress every 50 ms if `progress=1`."""
    params = query(environ)
    seconds = float(params.get("seconds", "1"))
    progress = environ.get("forkhorn.progress") if params.get("progress") == "1" else None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.05)
        if progress is not None:
            progress()
    return reply(start_response, "done\n")


ROUTES = {
    "/": hello,
    "/pid": pid,
    "/imported-in": imported_in,
    "/osenv": osenv,
    "/input": read_input,
    "/ignore-body": ignore_body,
    "/length": with_length,
    "/chunks": chunks,
    "/write": with_write,
    "/block": block,
    "/forever": forever,
    "/raise": fail,
    "/raise-after-headers": fail_after_headers,
    "/exc-info": exc_info_before_body,
    "/twice": start_twice,
    "/lazy-start": lazy_start,
    "/echo-lines": echo_lines,
    "/length-lie": length_lie,
    "/late-exc-info": late_exc_info,
    "/set-cookies": set_cookies,
    "/header-value": header_value,
    "/status": status_line,
    "/pattern": pattern_check,
    "/big": big,
    "/thread": start_thread,
    "/no-start": no_start_response,
    "/yield-str": yield_str,
    "/return-none": return_none,
    "/bad-header": bad_header,
    "/hop": hop_by_hop,
    "/sse": sse,
    "/detached": detached,
    "/health": health,
    "/file": send_file,
    "/errors": log_to_errors,
    "/busy": busy,
}


def app(environ, start_response):
    path = environ.get("PATH_INFO") or "/"
    # `/environ...`, or any path with `dump=1` in the query (to see the
    # environ of a request whose path maps to no route).
    wants_dump = "dump=1" in environ.get("QUERY_STRING", "").split("&")
    if wants_dump or path == "/environ" or path.startswith("/environ/"):
        return show_environ(environ, start_response)
    route = ROUTES.get(path)
    if route is None:
        return reply(start_response, f"no route {path}\n", status="404 Not Found")
    return route(environ, start_response)


validated_app = validator(app)
