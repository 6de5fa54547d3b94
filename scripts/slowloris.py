#!/usr/bin/env python3
"""Slowloris against a local forkhorn, while a normal client measures latency.

    scripts/slowloris.py --port P [--connections 1000] [--duration 20] [--keep-alive]

N "slow" connections each send one byte of a request head per second (their
sends are spread evenly over each second, so the server sees a steady trickle
rather than a burst). The head never ends: after the request line come endless
`X-Slow-N: 0` fields, so only the server's header timeout (or a limit) ends a
slow connection; when it does, the connection is opened again at once.

Meanwhile a separate process (so that neither side waits on the other's Python
GIL) sends normal `GET /` requests back to back, each on a new connection
(or all on one with --keep-alive), and records each one's latency: from
connect to the last byte of the response.

At the end it prints the number of normal requests, failures, p50/p99/max
latency and what happened to the slow connections, and exits 1 if any normal
request failed or p99 >= --max-p99-ms (50), 2 if the run could not be set up.

Loopback only: the host must be 127.0.0.1 or ::1. Every loop is bounded by
--duration (plus a bounded ramp-up of at most --ramp-timeout seconds).
"""
import argparse
import multiprocessing
import resource
import selectors
import socket
import sys
import time

LOOPBACK = ("127.0.0.1", "::1", "localhost")
# Per normal request: connect, send, read the whole response.
NORMAL_TIMEOUT_S = 5.0


def slow_head_bytes(index: int):
    """The endless head a slow connection trickles, one byte at a time."""
    yield from b"GET /slowloris HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris\r\n"
    n = 0
    while True:
        yield from f"X-Slow-{index}-{n}: 0\r\n".encode()
        n += 1


class SlowConnection:
    def __init__(self, index: int, family, addr, phase: float):
        self.index = index
        self.family = family
        self.addr = addr
        # Offset within each second at which this connection sends its byte.
        self.phase = phase
        self.sock = None
        self.head = None
        self.sent = 0

    def open(self):
        s = socket.socket(self.family, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.settimeout(5.0)
        s.connect(self.addr)
        s.setblocking(False)
        self.sock = s
        self.head = slow_head_bytes(self.index)
        self.sent = 0

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def send_one(self) -> bool:
        """Send the next byte; False if the server has closed the connection."""
        try:
            self.sock.send(bytes([next(self.head)]))
            self.sent += 1
            return True
        except BlockingIOError:
            return True
        except OSError:
            return False

    def server_spoke(self):
        """None if nothing arrived; else the bytes read (b'' = closed)."""
        try:
            return self.sock.recv(4096)
        except BlockingIOError:
            return None
        except OSError:
            return b""


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def read_response(sock: socket.socket, deadline: float) -> int:
    """Read one response with a Content-Length body; returns its status."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        sock.settimeout(max(0.001, deadline - time.perf_counter()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the end of the head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        sock.settimeout(max(0.001, deadline - time.perf_counter()))
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the end of the body")
        body += chunk
    if len(body) != length:
        raise ConnectionError(f"{len(body) - length} unexpected bytes after the response")
    return status


def normal_client(family, addr, duration: float, keep_alive: bool, results):
    """Runs in its own process: GET / back to back for `duration` seconds."""
    latencies_ms, failures = [], []
    # (latency, seconds since the start) of the slowest requests, for the report.
    slowest = []
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: slowloris-normal\r\n"
    request += b"\r\n" if keep_alive else b"Connection: close\r\n\r\n"
    sock = None
    begin = time.perf_counter()
    end = begin + duration
    while time.perf_counter() < end:
        started = connected = time.perf_counter()
        deadline = started + NORMAL_TIMEOUT_S
        try:
            if sock is None:
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(NORMAL_TIMEOUT_S)
                sock.connect(addr)
            connected = time.perf_counter()
            sock.sendall(request)
            status = read_response(sock, deadline)
            elapsed_ms = (time.perf_counter() - started) * 1000
            if status != 200:
                failures.append(f"status {status} after {elapsed_ms:.1f} ms")
            else:
                latencies_ms.append(elapsed_ms)
                if len(slowest) < 5 or elapsed_ms > slowest[0][0]:
                    connect_ms = (connected - started) * 1000
                    slowest.append((elapsed_ms, started - begin, connect_ms))
                    slowest.sort()
                    del slowest[:-5]
        except (OSError, ValueError, IndexError) as e:
            elapsed_ms = (time.perf_counter() - started) * 1000
            failures.append(f"{type(e).__name__}: {e} after {elapsed_ms:.1f} ms")
            if sock is not None:
                sock.close()
            sock = None
            continue
        if not keep_alive:
            sock.close()
            sock = None
    if sock is not None:
        sock.close()
    results.send((latencies_ms, failures, slowest))
    results.close()


def raise_fd_limit(needed: int):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return soft
    target = needed if hard == resource.RLIM_INFINITY else min(hard, needed)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1", help="loopback only")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--connections", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=20.0, help="seconds of measurement")
    ap.add_argument("--ramp-timeout", type=float, default=30.0, help="most seconds to open them all")
    ap.add_argument("--keep-alive", action="store_true", help="normal requests share one connection")
    ap.add_argument("--max-p99-ms", type=float, default=50.0)
    a = ap.parse_args()

    if a.host not in LOOPBACK:
        print(f"refusing host {a.host!r}: this tool only targets loopback", file=sys.stderr)
        return 2
    if not (1 <= a.connections <= 20000) or not (0 < a.duration <= 600):
        print("--connections must be 1..20000 and --duration 0..600 seconds", file=sys.stderr)
        return 2
    family = socket.AF_INET6 if a.host == "::1" else socket.AF_INET
    addr = (a.host, a.port)
    limit = raise_fd_limit(a.connections + 64)
    if limit < a.connections + 64:
        print(f"RLIMIT_NOFILE is {limit}; cannot open {a.connections} connections", file=sys.stderr)
        return 2

    slow = [SlowConnection(i, family, addr, i / a.connections) for i in range(a.connections)]
    ramp_end = time.monotonic() + a.ramp_timeout
    for c in slow:
        if time.monotonic() > ramp_end:
            print(f"ramp-up timed out after opening {sum(c.sock is not None for c in slow)}",
                  file=sys.stderr)
            for c in slow:
                c.close()
            return 2
        try:
            c.open()
        except OSError as e:
            print(f"slow connection {c.index} failed to open: {e}", file=sys.stderr)
            for c in slow:
                c.close()
            return 2
    print(f"opened {a.connections} slow connections; measuring for {a.duration:.0f} s", flush=True)

    # "spawn", not fork: a forked child would inherit every slow socket, and
    # a slow connection the parent closes would then stay open in the child,
    # so the server would never see the client hang up.
    spawn = multiprocessing.get_context("spawn")
    parent_end, child_end = spawn.Pipe(duplex=False)
    normal = spawn.Process(
        target=normal_client, args=(family, addr, a.duration, a.keep_alive, child_end))
    normal.start()
    child_end.close()

    sel = selectors.DefaultSelector()
    for c in slow:
        sel.register(c.sock, selectors.EVENT_READ, c)
    reopened = answered = reopen_failures = 0
    status_counts = {}
    bytes_sent_before_close = []

    def reopen(c, data):
        nonlocal reopened, answered, reopen_failures
        if data:
            answered += 1
            first = data.split(b"\r\n", 1)[0].decode("latin-1")
            status_counts[first] = status_counts.get(first, 0) + 1
        bytes_sent_before_close.append(c.sent)
        sel.unregister(c.sock)
        c.close()
        try:
            c.open()
        except OSError:
            reopen_failures += 1
            return
        reopened += 1
        sel.register(c.sock, selectors.EVENT_READ, c)

    start = time.monotonic()
    end = start + a.duration
    next_tick = 0  # index of the next connection due
    second = 0
    while time.monotonic() < end:
        # Every connection sends once a second, at its own phase.
        now = time.monotonic()
        while next_tick < len(slow) and start + second + slow[next_tick].phase <= now:
            c = slow[next_tick]
            if c.sock is not None and not c.send_one():
                reopen(c, b"")
            next_tick += 1
        if next_tick == len(slow):
            next_tick, second = 0, second + 1
        for key, _ in sel.select(timeout=0.005):
            c = key.data
            data = c.server_spoke()
            if data is not None:
                reopen(c, data)
    for c in slow:
        c.close()

    normal.join(timeout=NORMAL_TIMEOUT_S + 5)
    if not parent_end.poll(1):
        print("the normal client did not report back", file=sys.stderr)
        if normal.is_alive():
            normal.kill()
        return 2
    latencies, failures, slowest = parent_end.recv()
    latencies.sort()
    count = len(latencies) + len(failures)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    worst = latencies[-1] if latencies else float("nan")
    mode = "keep-alive" if a.keep_alive else "new connection each"
    print(f"normal requests: {count} ({mode}), failures: {len(failures)}")
    print(f"latency ms: p50 {p50:.2f}  p99 {p99:.2f}  max {worst:.2f}")
    print("slowest: " + ", ".join(f"{ms:.1f} ms at {at:.1f} s (connect {c:.1f} ms)"
                                  for ms, at, c in reversed(slowest)))
    print(f"slow connections: {a.connections}, closed by the server and reopened: {reopened} "
          f"({answered} with a response: {status_counts or '-'}; reopen failures: {reopen_failures})")
    if bytes_sent_before_close:
        print(f"slow bytes sent before the server closed: "
              f"min {min(bytes_sent_before_close)} max {max(bytes_sent_before_close)}")
    for f in failures[:10]:
        print(f"  failure: {f}")
    ok = not failures and count > 0 and p99 < a.max_p99_ms
    print("PASS" if ok else f"FAIL (need no failures and p99 < {a.max_p99_ms:g} ms)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
