#!/usr/bin/env python3
"""Fault injection and soak for forkhorn: the long versions of tests/faults.rs.

    chaos.py kill-storm [SECONDS]   kill -9 a random worker every 200 ms under load (10 s)
    chaos.py deaths [N]             N worker deaths in a row; master fds/RSS/tmp dir flat (1000)
    chaos.py soak [SECONDS]         mixed traffic, kills and reloads (600 s)

Run through scripts/chaos/kill_storm.sh, scripts/chaos/worker_deaths.sh and
scripts/soak.sh, which build the release binary first (or pass --bin).
Standard library only. Everything stays on 127.0.0.1; every loop is bounded
in count and time; every process started is killed on exit, error or ^C.
Exit status 0 when every check held, 1 on any violation (listed at the end).

How a failed request is judged (kill-storm and soak)
----------------------------------------------------
A client cannot know which worker holds its connection before it gets an
answer, so a failure is attributed by time: a request that failed (reset,
early close, a 5xx, or no answer) is *explained* when a worker of the server
it talked to was SIGKILLed by us between the request's start and its end
(50 ms slack either side for the two clocks' threads). The rule is
defensible because a SIGKILLed worker can break only the connections it
holds, and each client thread has one connection at a time; so we also
require failures <= kills x client threads. Reloads (HUP), max-requests
recycling and timeouts of healthy workers must fail nothing: a failure with
no kill in its lifetime is a violation, and so is any request that got no
answer within the client timeout (a hang), whatever else happened.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLIENT_TIMEOUT = 10.0  # seconds for any one connect, read or write
ATTRIBUTION_SLACK = 0.05
HZ = os.sysconf("SC_CLK_TCK")


def say(msg: str) -> None:
    print(f"[chaos] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- /proc


def proc_stat(pid: int):
    """(state, ppid, cpu seconds) or None once the pid is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2 :].split()
    return rest[0], int(rest[1]), (int(rest[11]) + int(rest[12])) / HZ


def children(parent: int, zombies: bool = False) -> set[int]:
    out = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = proc_stat(int(name))
        if st and st[1] == parent and ((st[0] == "Z") == zombies) and st[0] != "X":
            out.add(int(name))
    return out


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- a server


class Server:
    """One forkhorn master started with its own worker tmp dir; its stderr
    (the error log) is collected by a thread."""

    def __init__(self, binary: str, args: list[str], name: str):
        self.name = name
        self.tmp_dir = tempfile.mkdtemp(prefix=f"forkhorn-chaos-{name}-")
        env = {k: v for k, v in os.environ.items() if k not in ("WEB_CONCURRENCY", "XDG_RUNTIME_DIR")}
        self.proc = subprocess.Popen(
            [binary, *args, "-b", "127.0.0.1:0", "--worker-tmp-dir", self.tmp_dir],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.master = self.proc.pid
        self.lines: list[str] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        line = self.wait_for(lambda l: "Listening at: http://127.0.0.1:" in l, 10)
        if not line:
            self.stop()
            raise SystemExit(f"{name}: forkhorn did not start: {self.lines[-5:]}")
        self.port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self.lock:
                self.lines.append(line.rstrip("\n"))

    def count(self, pred) -> int:
        with self.lock:
            return sum(1 for l in self.lines if pred(l))

    def wait_for(self, pred, timeout: float):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                for l in self.lines:
                    if pred(l):
                        return l
            time.sleep(0.02)
        return None

    def workers(self) -> set[int]:
        return children(self.master)

    def booted(self, pid: int) -> bool:
        needle = f"Booting worker with pid: {pid}"
        with self.lock:
            return any(needle in l for l in self.lines)

    def wait_workers(self, n: int, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            w = self.workers()
            if len(w) == n and all(self.booted(p) for p in w):
                return True
            time.sleep(0.05)
        return False

    def zombies(self) -> set[int]:
        return children(self.master, zombies=True)

    def tmp_entries(self) -> list[str]:
        try:
            return sorted(os.listdir(self.tmp_dir))
        except OSError:
            return []

    def kill_random_worker(self, rng: random.Random):
        workers = sorted(self.workers())
        if not workers:
            return None
        victim = rng.choice(workers)
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            return None
        return victim

    def terminate(self, timeout: float = 40):
        """TERM the master; its exit status, or None if it did not exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        for pid in self.workers():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


# ---------------------------------------------------------------- HTTP


class Http:
    """A tiny HTTP/1.1 client on a raw socket (keep-alive aware)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT)
        self.sock.settimeout(CLIENT_TIMEOUT)
        self.buf = b""

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed in the middle of a response")
        self.buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            if len(self.buf) > 65536:
                raise ValueError("line too long")
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def response(self):
        """(status, headers dict lower-case, body, closes)."""
        parts = self._line().split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ValueError(f"bad status line {parts!r}")
        status = int(parts[1])
        headers = {}
        while True:
            line = self._line()
            if not line:
                break
            k, _, v = line.partition(b":")
            headers[k.strip().lower().decode()] = v.strip().decode()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._exactly(size)
                if self._line():
                    raise ValueError("chunk not followed by CRLF")
        elif "content-length" in headers:
            body = self._exactly(int(headers["content-length"]))
        else:
            while True:
                try:
                    self._fill()
                except EOFError:
                    break
            body, self.buf = self.buf, b""
        closes = headers.get("connection", "").lower() == "close"
        return status, headers, body, closes


def request(method: str, target: str, body: bytes = b"", chunked: bool = False, close: bool = False) -> bytes:
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: forkhorn-chaos/1\r\n"
    if close:
        head += "Connection: close\r\n"
    if chunked:
        head += "Transfer-Encoding: chunked\r\n\r\n"
        data = b""
        for i in range(0, len(body), 700):
            piece = body[i : i + 700]
            data += f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        return head.encode() + data + b"0\r\n\r\n"
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


# ---------------------------------------------------------------- load


@dataclass
class Attempt:
    server: str
    kind: str
    started: float
    ended: float
    ok: bool
    what: str  # "200", "400", or the error


@dataclass
class Record:
    attempts: list[Attempt] = field(default_factory=list)
    kills: list[tuple[float, str, int]] = field(default_factory=list)  # (when, server, pid)
    reloads: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, a: Attempt) -> None:
        with self.lock:
            self.attempts.append(a)


def timed(record: Record, server: str, kind: str, fn) -> None:
    """Run one exchange `fn` (returns None when the answer was right, or a
    description of what was wrong) and record how it ended."""
    started = time.monotonic()
    try:
        wrong = fn()
        ok, what = wrong is None, wrong or "ok"
    except (OSError, EOFError, ValueError) as e:
        ok, what = False, f"{type(e).__name__}: {e}"
    record.add(Attempt(server, kind, started, time.monotonic(), ok, what))


def get_pid(port: int):
    c = Http(port)
    try:
        c.send(request("GET", "/pid", close=True))
        status, _, body, _ = c.response()
        if status != 200 or not body.strip().isdigit():
            return f"status {status} body {body[:60]!r}"
    finally:
        c.close()
    return None


def keep_alive_bodies(port: int, rng: random.Random):
    """GET, a sized POST and a chunked POST on one connection (a new one if
    the server closes it, as a recycling worker does)."""
    c = Http(port)
    try:
        for i in range(3):
            body = rng.randbytes(rng.randint(0, 3000))
            if i == 0:
                req = request("GET", "/pid")
            else:
                req = request("POST", "/pid", body, chunked=(i == 2))
            c.send(req)
            status, _, resp, closes = c.response()
            if status != 200 or not resp.strip().isdigit():
                return f"request {i}: status {status} body {resp[:60]!r}"
            if closes and i < 2:
                c.close()
                c = Http(port)
    finally:
        c.close()
    return None


def slow(port: int):
    c = Http(port)
    try:
        c.send(request("GET", "/sleep?s=0.2", close=True))
        status, _, _, _ = c.response()
        return None if status == 200 else f"status {status}"
    finally:
        c.close()


def stream(port: int):
    c = Http(port)
    try:
        c.send(request("GET", "/stream?chunks=5&interval_ms=50", close=True))
        status, _, body, _ = c.response()
        want = b"".join(f"chunk {i}\n".encode() for i in range(5))
        return None if (status, body) == (200, want) else f"status {status} body {body[:60]!r}"
    finally:
        c.close()


BAD_REQUESTS = [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
    b"GET / HTTP/1.1\r\nHost: a\r\nBad Header: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
    b"GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n",
]


def bad(port: int, rng: random.Random):
    c = Http(port)
    try:
        c.send(rng.choice(BAD_REQUESTS))
        status, _, _, _ = c.response()
        return None if status == 400 else f"status {status} (wanted 400)"
    finally:
        c.close()


def echo(port: int, rng: random.Random):
    body = rng.randbytes(rng.randint(1, 4000))
    c = Http(port)
    try:
        c.send(request("POST", "/upload", body, chunked=rng.random() < 0.5, close=True))
        status, _, resp, _ = c.response()
        if status != 200:
            return f"status {status}"
        echoed = base64.b64decode(json.loads(resp)["body_base64"])
        return None if echoed == body else f"body of {len(body)} bytes came back as {len(echoed)} different bytes"
    finally:
        c.close()


def attribute(record: Record, clients: int) -> dict:
    """Judge the failures by the rule in the module doc."""
    failures = [a for a in record.attempts if not a.ok]
    hangs = [a for a in failures if "timed out" in a.what or a.ended - a.started >= CLIENT_TIMEOUT]
    explained, unexplained = [], []
    for a in failures:
        if a in hangs:
            continue
        hit = any(
            s == a.server and a.started - ATTRIBUTION_SLACK <= t <= a.ended + ATTRIBUTION_SLACK
            for t, s, _ in record.kills
        )
        (explained if hit else unexplained).append(a)
    return {
        "failures": failures,
        "hangs": hangs,
        "explained": explained,
        "unexplained": unexplained,
        "bound": len(record.kills) * clients,
    }


# ---------------------------------------------------------------- kill storm


def kill_storm(binary: str, seconds: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    violations = []
    server = Server(binary, ["-w", "4", "--min-worker-lifetime", "0", "chaos"], "storm")
    record = Record()
    stop = threading.Event()
    try:
        if not server.wait_workers(4):
            return ["the 4 workers did not boot"]

        def client():
            end = time.monotonic() + seconds + 60
            while not stop.is_set() and time.monotonic() < end:
                timed(record, "storm", "GET /pid", lambda: get_pid(server.port))

        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        killed = set()
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            now = time.monotonic()
            pid = server.kill_random_worker(rng)
            if pid:
                record.kills.append((now, "storm", pid))
                killed.add(pid)
            time.sleep(0.2)
        back = server.wait_workers(4, 30)
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(CLIENT_TIMEOUT + 5)
        if not back:
            violations.append(f"workers not back: {sorted(server.workers())}")
        if server.workers() & killed:
            violations.append("a killed worker is still alive")
        j = attribute(record, 2)
        total = len(record.attempts)
        served = sum(a.ok for a in record.attempts)
        after = [a for a in record.attempts if a.started > start + seconds + 0.1]
        print(f"kill storm {seconds:g}s (seed {seed}): {len(record.kills)} kills, {total} requests, "
              f"{served} served, {len(j['failures'])} failed ({len(j['explained'])} in flight on a kill, "
              f"{len(j['unexplained'])} unexplained, {len(j['hangs'])} hangs; bound {j['bound']}); "
              f"slowest {max((a.ended - a.started for a in record.attempts), default=0):.3f}s; "
              f"{sum(a.ok for a in after)}/{len(after)} served after the storm")
        for a in j["hangs"] + j["unexplained"]:
            violations.append(f"{a.kind}: {a.what} after {a.ended - a.started:.3f}s (no kill in flight)")
        if len(j["failures"]) > j["bound"]:
            violations.append(f"{len(j['failures'])} failures for {len(record.kills)} kills")
        if not after or not all(a.ok for a in after):
            violations.append("requests after the storm did not all succeed")
        zombies = server.zombies()
        if zombies:
            time.sleep(1)
            zombies &= server.zombies()
        if zombies:
            violations.append(f"zombies {zombies}")
        status = server.terminate()
        if status != 0:
            violations.append(f"master exit status {status} after TERM")
    finally:
        stop.set()
        server.stop()
    return violations


# ---------------------------------------------------------------- deaths


DEATH_LINES = {
    "abort": "died unexpectedly (signal SIGABRT)",
    "exit 1": "died unexpectedly (exit code 1)",
    "exit 7": "died unexpectedly (exit code 7)",
    "SIGKILL": "was sent SIGKILL!",
    "timeout": "ended after timeout",
}


def is_death(line: str) -> bool:
    return any(n in line for n in DEATH_LINES.values())


def master_sample(server: Server) -> tuple[int, int]:
    return open_fds(server.master), rss_kib(server.master)


def deaths(binary: str, n: int, seed: int) -> list[str]:
    violations = []
    args = ["-w", "4", "-t", "2", "--min-worker-lifetime", "0", "--max-boot-failures", "0", "chaos"]
    server = Server(binary, args, "deaths")
    stop = threading.Event()
    try:
        if not server.wait_workers(4):
            return ["the 4 workers did not boot"]
        cold = master_sample(server)
        port = server.port
        answered = Counter()

        def killer(i: int):
            # Exit codes 3 and 4 mean "cannot boot" and halt the master: avoided.
            routes = ["/crash", "/exit?code=1", "/exit?code=7", "kill -9"]
            end = time.monotonic() + 600
            while not stop.is_set() and time.monotonic() < end:
                route = routes[i % len(routes)]
                i += 1
                try:
                    c = Http(port)
                    try:
                        c.send(request("GET", "/pid" if route == "kill -9" else route, close=True))
                        status, _, body, _ = c.response()
                    finally:
                        c.close()
                except (OSError, EOFError, ValueError):
                    continue
                if route != "kill -9":
                    answered[status] += 1
                    continue
                pid = int(body)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                deadline = time.monotonic() + 10
                while proc_stat(pid) and time.monotonic() < deadline:
                    time.sleep(0.001)

        def run_until(total: int, timeout: float) -> bool:
            deadline = time.monotonic() + timeout
            while server.count(is_death) < total and time.monotonic() < deadline:
                time.sleep(0.05)
            return server.count(is_death) >= total

        threads = [threading.Thread(target=killer, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        if not run_until(40, 60):
            violations.append("warm-up deaths did not happen")
        warm_deaths = server.count(is_death)
        warm = master_sample(server)

        timed_out = []

        def sleeper():
            # A worker SIGKILLed by a killer thread first: try again.
            for _ in range(5):
                try:
                    c = Http(port)
                    try:
                        c.send(request("GET", "/sleep?s=10", close=True))
                        if c.response()[0] == 504:
                            timed_out.append(True)
                            return
                    finally:
                        c.close()
                except (OSError, EOFError, ValueError):
                    pass

        sleepers = [threading.Thread(target=sleeper) for _ in range(2)]
        for t in sleepers:
            t.start()
        started = time.monotonic()
        done = run_until(warm_deaths + n, 600)
        took = time.monotonic() - started
        stop.set()
        for t in threads + sleepers:
            t.join(CLIENT_TIMEOUT + 5)
        if not done:
            violations.append(f"only {server.count(is_death) - warm_deaths} of {n} deaths in {took:.0f}s")
        if not server.wait_workers(4, 30):
            violations.append(f"workers not back: {sorted(server.workers())}")
        deadline = time.monotonic() + 10
        while server.zombies() and time.monotonic() < deadline:
            time.sleep(0.05)
        if server.zombies():
            violations.append(f"zombies {server.zombies()}")
        after = master_sample(server)
        kinds = {k: server.count(lambda l, v=v: v in l) for k, v in DEATH_LINES.items()}
        died = server.count(is_death) - warm_deaths
        entries = server.tmp_entries()
        print(f"deaths: {died} after the warm-up in {took:.1f}s; all runs by kind {kinds}")
        print(f"master fds {cold[0]} cold, {warm[0]} warm, {after[0]} after; "
              f"RSS {cold[1]} KiB cold, {warm[1]} KiB warm, {after[1]} KiB after; tmp dir {entries}")
        if after[0] != warm[0]:
            violations.append(f"master fds went from {warm[0]} to {after[0]}")
        if after[1] > warm[1] * 1.05 + 256:
            violations.append(f"master RSS grew from {warm[1]} KiB to {after[1]} KiB")
        if any(e != "forkhorn.ctl" for e in entries):
            violations.append(f"tmp dir holds {entries}")
        if len(timed_out) < 2 or kinds["timeout"] < 2:
            violations.append(f"{len(timed_out)} /sleep requests answered 504, {kinds['timeout']} timeouts logged")
        if any(s < 500 for s in answered):
            violations.append(f"a deadly route was answered normally: {dict(answered)}")
        status = server.terminate()
        if status != 0:
            violations.append(f"master exit status {status} after TERM")
    finally:
        stop.set()
        server.stop()
    return violations


# ---------------------------------------------------------------- soak


def soak(binary: str, seconds: float, seed: int, clients: int) -> list[str]:
    rng = random.Random(seed)
    violations = []
    chaos_args = ["-w", "4", "--max-requests", "200", "--max-requests-jitter", "50", "-t", "5", "chaos"]
    echo_args = ["-w", "2", "--max-requests", "200", "--max-requests-jitter", "50", "-t", "5", "echo"]
    servers = {"chaos": Server(binary, chaos_args, "chaos")}
    record = Record()
    stop = threading.Event()
    try:
        servers["echo"] = Server(binary, echo_args, "echo")
        if not servers["chaos"].wait_workers(4) or not servers["echo"].wait_workers(2):
            return ["the workers did not boot"]
        chaos_port, echo_port = servers["chaos"].port, servers["echo"].port
        mix = [
            ("GET /pid", "chaos", 30, lambda r: get_pid(chaos_port)),
            ("keep-alive bodies", "chaos", 20, lambda r: keep_alive_bodies(chaos_port, r)),
            ("GET /sleep?s=0.2", "chaos", 10, lambda r: slow(chaos_port)),
            ("GET /stream", "chaos", 10, lambda r: stream(chaos_port)),
            ("bad request", "chaos", 10, lambda r: bad(chaos_port, r)),
            ("POST echo", "echo", 20, lambda r: echo(echo_port, r)),
        ]
        weights = [m[2] for m in mix]

        def client(i: int):
            crng = random.Random(seed * 1000 + i)
            end = time.monotonic() + seconds + 60
            while not stop.is_set() and time.monotonic() < end:
                kind, server, _, fn = crng.choices(mix, weights)[0]
                timed(record, server, kind, lambda: fn(crng))
                time.sleep(0.002)  # moderate load on a 2-core machine

        samples = []

        def sample(when: float) -> None:
            m = servers["chaos"].master
            samples.append((when, open_fds(m), rss_kib(m)))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        start = time.monotonic()
        warm_at = start + min(10.0, seconds / 6)
        baseline = None
        next_kill, next_hup, next_sample = start + 2, start + 7, start
        while time.monotonic() - start < seconds:
            now = time.monotonic()
            if now >= next_kill:
                name = rng.choice(["chaos", "chaos", "chaos", "echo"])
                pid = servers[name].kill_random_worker(rng)
                if pid:
                    record.kills.append((now, name, pid))
                next_kill = now + rng.uniform(1.0, 3.0)
            if now >= next_hup:
                name = rng.choice(["chaos", "echo"])
                os.kill(servers[name].master, signal.SIGHUP)
                record.reloads.append((now, name))
                next_hup = now + rng.uniform(5.0, 15.0)
            if now >= next_sample:
                sample(now - start)
                next_sample = now + 1
                if baseline is None and now >= warm_at:
                    baseline = samples[-1]
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(CLIENT_TIMEOUT * 3 + 5)
        elapsed = time.monotonic() - start

        # Settle: the configured workers, no zombies, then measure.
        for name, n in (("chaos", 4), ("echo", 2)):
            if not servers[name].wait_workers(n, 30):
                violations.append(f"{name}: workers not back to {n}: {sorted(servers[name].workers())}")
            deadline = time.monotonic() + 10
            while servers[name].zombies() and time.monotonic() < deadline:
                time.sleep(0.05)
            if servers[name].zombies():
                violations.append(f"{name}: zombie children {servers[name].zombies()}")
            entries = servers[name].tmp_entries()
            if any(e != "forkhorn.ctl" for e in entries):
                violations.append(f"{name}: tmp dir holds {entries}")
        sample(time.monotonic() - start)
        end_sample = samples[-1]
        baseline = baseline or samples[0]

        j = attribute(record, clients)
        by_kind = Counter(a.kind for a in record.attempts)
        failed_kind = Counter(a.kind for a in j["failures"])
        recycled = servers["chaos"].count(lambda l: "(max-requests)" in l) + servers["echo"].count(
            lambda l: "(max-requests)" in l
        )
        timeouts = sum(s.count(lambda l: "WORKER TIMEOUT" in l) for s in servers.values())
        fds = [s[1] for s in samples]
        rss = [s[2] for s in samples]
        total = len(record.attempts)
        print("=" * 72)
        print(f"soak {elapsed:.0f}s, seed {seed}, {clients} clients, binary {binary}")
        print(f"requests: {total} ({total / elapsed:.0f}/s); by kind:")
        for kind, n in sorted(by_kind.items()):
            print(f"    {kind:<20} {n:>7}  failed {failed_kind.get(kind, 0)}")
        print(f"faults: {len(record.kills)} kill -9, {len(record.reloads)} HUP, "
              f"{recycled} max-requests recycles, {timeouts} worker timeouts")
        print(f"failures: {len(j['failures'])}: {len(j['explained'])} in flight on a killed worker, "
              f"{len(j['unexplained'])} unexplained, {len(j['hangs'])} hangs "
              f"(bound kills x clients = {j['bound']})")
        print(f"chaos master fds: min {min(fds)} max {max(fds)}, at warm-up {baseline[1]}, end {end_sample[1]}")
        print(f"chaos master RSS KiB: min {min(rss)} max {max(rss)}, at warm-up {baseline[2]}, end {end_sample[2]}")
        for a in j["hangs"][:5] + j["unexplained"][:5]:
            print(f"    {a.server} {a.kind}: {a.what} after {a.ended - a.started:.3f}s")
        if j["hangs"]:
            violations.append(f"{len(j['hangs'])} requests hung")
        if j["unexplained"]:
            violations.append(f"{len(j['unexplained'])} failures with no kill in flight")
        if len(j["failures"]) > j["bound"]:
            violations.append(f"{len(j['failures'])} failures > {j['bound']}")
        if end_sample[1] != baseline[1]:
            violations.append(f"master fds went from {baseline[1]} to {end_sample[1]}")
        if end_sample[2] > baseline[2] * 1.05 + 512:
            violations.append(f"master RSS grew from {baseline[2]} KiB to {end_sample[2]} KiB")
        if total == 0 or by_kind["bad request"] == 0:
            violations.append("no traffic")
        for name, s in servers.items():
            status = s.terminate()
            if status != 0:
                violations.append(f"{name}: master exit status {status} after TERM")
    finally:
        stop.set()
        for s in servers.values():
            s.stop()
    return violations


# ---------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bin", default=os.path.join(ROOT, "target/release/forkhorn"))
    p.add_argument("--seed", type=int, default=None)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("kill-storm")
    s.add_argument("seconds", nargs="?", type=float, default=10)
    s = sub.add_parser("deaths")
    s.add_argument("n", nargs="?", type=int, default=1000)
    s = sub.add_parser("soak")
    s.add_argument("seconds", nargs="?", type=float, default=600)
    s.add_argument("--clients", type=int, default=4)
    args = p.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    if not os.access(args.bin, os.X_OK):
        say(f"no forkhorn binary at {args.bin}; run cargo build --release or pass --bin")
        return 2
    # SIGTERM (CI's timeout) ends us like ^C, so the finally blocks run.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    started = time.monotonic()
    try:
        if args.cmd == "kill-storm":
            violations = kill_storm(args.bin, args.seconds, seed)
        elif args.cmd == "deaths":
            violations = deaths(args.bin, args.n, seed)
        else:
            violations = soak(args.bin, args.seconds, seed, args.clients)
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    took = time.monotonic() - started
    if violations:
        print(f"FAIL ({args.cmd}, seed {seed}, {took:.0f}s): {len(violations)} violation(s)")
        for v in violations[:20]:
            print(f"  - {v}")
        return 1
    print(f"PASS ({args.cmd}, seed {seed}, {took:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
