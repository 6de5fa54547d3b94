#!/usr/bin/env python3
"""forkhorn benchmark harness: forkhorn vs gunicorn (sync) vs nginx, same run, same machine;
forkhorn's embedded CPython vs gunicorn (sync) vs Granian on the same WSGI apps; and forkhorn
vs nginx over TLS with one certificate (keep-alive req/s, new handshakes/s, worker memory).

Run it through scripts/bench.sh, which installs wrk, nginx, gunicorn, Granian,
Flask and matplotlib when missing, builds the release binary and raises `ulimit -n`.

    scripts/bench.sh            # full run (< 22 min), writes docs/benchmarks.{md,png,json}
    scripts/bench.sh --quick    # smoke run (< 5 min), same outputs, fewer/shorter runs
    scripts/bench.sh --render-only   # no run: re-render md/png/README from docs/benchmarks.json
    scripts/bench.sh --quick --phases python   # only the Python (WSGI) comparison
    scripts/bench.sh --phases tls              # only TLS vs nginx (full length; --quick: one short run)

Every server runs on 127.0.0.1 with 2 worker processes and access logs off.
Every figure is reported as absolute numbers and as a forkhorn/peer ratio;
throughput/latency figures are medians of N runs (five for the two headline
figures) with the servers' order rotated run by run. Every server started is stopped at the end, also on error
or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import traceback
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
BIN = ROOT / "target" / "release" / "forkhorn"
VENV = SCRIPTS / ".venv"
GUNICORN = VENV / "bin" / "gunicorn"
GRANIAN = VENV / "bin" / "granian"
PYBENCH = SCRIPTS / "python_bench"  # the WSGI apps of the Python phase
LOGDIR = SCRIPTS / ".logs"
HOST = "127.0.0.1"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
KINDS = ("forkhorn", "gunicorn", "nginx")
# The Python phase: each peer runs the same WSGI app from scripts/python_bench/.
PY_PEERS = ("forkhorn", "granian", "gunicorn")
# scenario -> (module:app in scripts/python_bench, POST a 4 KiB body)
PY_APPS = {
    "plain WSGI hello keep-alive c16": ("wsgi_hello:app", False),
    "Flask hello keep-alive c16": ("flask_hello:app", False),
    "4 KiB POST echo keep-alive c16": ("wsgi_echo:app", True),
}
PY_PLAIN, PY_FLASK = "plain WSGI hello keep-alive c16", "Flask hello keep-alive c16"
POST_BYTES = 4096
# The TLS phase: forkhorn (rustls) and nginx (OpenSSL) serve hello over https with one certificate.
TLS_PEERS = ("forkhorn", "nginx")
TLS_KA, TLS_CLOSE = "TLS hello keep-alive c16", "TLS new handshakes (Connection: close) c16"
# wrk's URL host in the TLS phase: a name (resolving to 127.0.0.1 only, see below), so that wrk's SNI is a
# host name as real clients send; with 127.0.0.1 wrk puts the IP address in SNI, which RFC 6066 forbids.
TLS_HOST = "localhost"
# LD_PRELOAD shim that keeps wrk from resuming TLS sessions (see the file); built in the TLS phase.
NO_RESUME_SRC = SCRIPTS / "wrk_no_resume.c"
NO_RESUME: dict = {"so": None}

T_START = time.perf_counter()
TMP = Path(tempfile.mkdtemp(prefix="forkhorn-bench-"))
os.chmod(TMP, 0o755)  # nginx workers may run as nobody
CERT_DIR = TMP / "tls"  # the TLS phase's key and self-signed certificate, shared by both servers
LIVE: list["Server"] = []  # servers to stop on exit
COMMANDS: dict[str, str] = {}  # label -> exact command line (for the doc)
ANOMALIES: list[str] = []  # things worth a look, with evidence
FOREIGN: list[float] = []  # CPU share used by other processes during each throughput run


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:7.1f}s] {msg}", file=sys.stderr, flush=True)


def anomaly(msg: str) -> None:
    ANOMALIES.append(msg)
    log("NOTE: " + msg)


def quote(argv) -> str:
    return " ".join(shlex.quote(str(a)) for a in argv)


def note_cmd(label: str, argv) -> None:
    COMMANDS.setdefault(label, quote(argv))


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- /proc


def children(pid: int) -> list[int]:
    out = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    out += [int(x) for x in f.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return sorted(set(out))


def proc_status(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[k] = int(v.split()[0])  # kB
    except OSError:
        pass
    return out


def smaps_rollup(pid: int) -> dict:
    """kB from /proc/PID/smaps_rollup: Rss, Pss, and Private = Private_Clean + Private_Dirty,
    the memory only this process holds (what each extra worker costs)."""
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Shared_Clean", "Shared_Dirty"):
                    out[k] = int(v.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    if "Private_Clean" in out:
        out["Private"] = out["Private_Clean"] + out.get("Private_Dirty", 0)
    return out


def alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def wchan(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/wchan") as f:
            return f.read()
    except OSError:
        return ""


def socket_fds(pid: int) -> int:
    n = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                    n += 1
            except OSError:
                pass
    except OSError:
        pass
    return n


def pgroup_members(pgid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


HZ = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


def cpu_busy_s() -> float:
    """Busy CPU seconds of the whole machine (all cores) since boot."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / HZ


def group_cpu_s(pgid: int) -> float:
    """CPU seconds used by a server's process group, including reaped workers."""
    t = 0
    for pid in pgroup_members(pgid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            t += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        except (OSError, ValueError, IndexError):
            pass
    return t / HZ


class CpuMeter:
    """Share of the machine's CPU used by processes that are not part of the benchmark
    (other users' builds, tests...) during a measurement: it skews every figure."""

    def __init__(self, servers):
        self.servers = [s for s in servers if s is not None]
        self.t0 = time.perf_counter()
        self.busy0 = cpu_busy_s()
        self.srv0 = sum(group_cpu_s(s.pid) for s in self.servers)
        self.own0 = self._own()

    @staticmethod
    def _own() -> float:
        a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime

    def server_cpu_s(self) -> float:
        """CPU seconds the servers used since the meter started."""
        return sum(group_cpu_s(s.pid) for s in self.servers) - self.srv0

    def foreign_pct(self) -> float:
        wall = time.perf_counter() - self.t0
        used = cpu_busy_s() - self.busy0
        ours = sum(group_cpu_s(s.pid) for s in self.servers) - self.srv0 + self._own() - self.own0
        return max(0.0, (used - ours) / (wall * NCPU) * 100.0) if wall > 0 else 0.0


def machine_load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def wait_quiet(max_wait: float, limit_pct: float = 10.0, sample: float = 1.0) -> float:
    """Wait (up to max_wait s) until other processes use < limit_pct of the CPU over `sample` s."""
    t0 = time.perf_counter()
    while True:
        m = CpuMeter([])
        time.sleep(sample)
        pct = m.foreign_pct()
        if pct < limit_pct or time.perf_counter() - t0 >= max_wait:
            return pct


SETTLE = {"budget": 0.0, "waited": 0.0, "reruns": 0}
NOISY_PCT = 20.0  # a run during which other processes took more than this share of the CPU is redone once


def settle() -> None:
    """Before a throughput run: give other processes' bursts (builds, tests) up to 2 s to pass,
    within a total noise budget (shared with reruns) so the whole run stays bounded."""
    left = SETTLE["budget"] - SETTLE["waited"]
    if left <= 0:
        return
    t0 = time.perf_counter()
    wait_quiet(min(2.0, left), limit_pct=15.0, sample=0.25)
    SETTLE["waited"] += time.perf_counter() - t0


def measure(port: int, server: "Server", path: str = "/", conns: int = 16, duration: float = 10, **kw) -> dict:
    """One throughput run; redone once (keeping the quieter of the two) when other processes took more
    than NOISY_PCT of the CPU during it and the noise budget allows."""
    res = wrk(port, path, conns, duration, server=server, **kw)
    if res["foreign_cpu_pct"] > NOISY_PCT and SETTLE["budget"] - SETTLE["waited"] >= duration + 1:
        t0 = time.perf_counter()
        again = wrk(port, path, conns, duration, server=server, **kw)
        SETTLE["waited"] += time.perf_counter() - t0
        SETTLE["reruns"] += 1
        log(f"  (redone: other load was {res['foreign_cpu_pct']:.0f}%, now {again['foreign_cpu_pct']:.0f}%)")
        if again["foreign_cpu_pct"] < res["foreign_cpu_pct"]:
            res = again
    return res


# ---------------------------------------------------------------- HTTP client


_TLS_CLIENTS: dict = {}


def tls_client(version: str | None = None) -> ssl.SSLContext:
    """The harness's own TLS client, limited to one version ("TLSv1.2", "TLSv1.3") if given: like wrk it
    verifies nothing (the certificate is self-signed)."""
    if version not in _TLS_CLIENTS:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if version:
            v = ssl.TLSVersion.TLSv1_2 if version == "TLSv1.2" else ssl.TLSVersion.TLSv1_3
            ctx.minimum_version = ctx.maximum_version = v
        _TLS_CLIENTS[version] = ctx
    return _TLS_CLIENTS[version]


def http_get(port: int, path: str = "/", timeout: float = 2.0, tls: bool | str = False, session=None,
             info: dict | None = None) -> tuple[int, bytes]:
    """One request on a fresh connection (over TLS when `tls`, only that version when it is "TLSv1.2" or
    "TLSv1.3", offering `session` for resumption if given; `info` receives the TLS version, cipher,
    whether the session was resumed, and the session).
    Returns (status, body); status 0 if no response."""
    with socket.create_connection((HOST, port), timeout=timeout) as raw:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s = tls_client(tls if isinstance(tls, str) else None).wrap_socket(
            raw, server_hostname="localhost", session=session) if tls else raw
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, ssl.SSLError):  # SSLError: a close without close_notify
                break
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                if m and len(body) >= int(m.group(1)):
                    break
        if tls:
            if info is not None:
                # the session after the response: TLS 1.3 tickets, if any, come after the handshake
                info.update(version=s.version(), cipher=(s.cipher() or [None])[0], resumed=s.session_reused,
                            session=s.session)
            s.close()
    if not data.startswith(b"HTTP/"):
        return 0, data
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def get_pid(port: int, timeout: float = 2.0) -> int | None:
    try:
        status, body = http_get(port, "/pid", timeout)
        return int(body.strip()) if status == 200 else None
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------- servers

NGINX_CONF = """\
worker_processes {workers};
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
worker_rlimit_nofile 16384;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_timeout 75s;
    server {{
        listen {host}:{port} backlog=2048;
        default_type text/plain;
        location / {{ return 200 "Hello, World!\\n"; }}
        location = /pid {{ return 200 "$pid\\n"; }}
    }}
}}
"""

# The TLS phase's nginx: the same configuration, the listener with ssl and the same settings as forkhorn's
# (TLS 1.2 and 1.3, nginx's default ciphers, no session tickets and no session cache: every new connection
# is a full handshake on both servers).
NGINX_TLS_LISTEN = """\
        listen {host}:{port} ssl backlog=2048;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_tickets off;
        ssl_session_cache off;
"""
NGINX_CONF_TLS = NGINX_CONF.replace("        listen {host}:{port} backlog=2048;\n", NGINX_TLS_LISTEN)
assert NGINX_CONF_TLS != NGINX_CONF

_seq = 0


class Server:
    """One server under test: forkhorn, gunicorn (sync) or nginx, as its own process group."""

    def __init__(self, kind: str, app: str = "hello", workers: int = 2, extra=(), port: int | None = None,
                 label: str | None = None, pyapp: str | None = None, tls: tuple[Path, Path] | None = None):
        global _seq
        _seq += 1
        self.kind, self.app, self.nworkers, self.extra = kind, app, workers, list(extra)
        # (certificate, key) PEM files: serve https (forkhorn and nginx only), else None
        self.tls = tls
        self.nginx_conf: str | None = None  # another nginx.conf template than the kind's (the TLS phase's check)
        # module:app from scripts/python_bench/ (the Python phase), else None
        self.pyapp = pyapp
        # forkhorn's embedded interpreter finds Flask in the benchmark's venv, as an activated venv would
        self.env = {"VIRTUAL_ENV": str(VENV)} if kind == "forkhorn" and pyapp else {}
        self.label = label or f"{kind}-{app}-w{workers}"
        self.port = port
        self.proc: subprocess.Popen | None = None
        self.pid = None
        self.dir = TMP / f"{_seq:03d}-{self.label}"
        self.dir.mkdir(parents=True)
        os.chmod(self.dir, 0o755)
        self.log_path = LOGDIR / f"{_seq:03d}-{self.label}.log"

    def argv(self) -> list[str]:
        if self.kind == "forkhorn" and self.pyapp:
            port = 0 if self.port is None else self.port
            return [str(BIN), "-b", f"{HOST}:{port}", "-w", str(self.nworkers), "--chdir", str(PYBENCH),
                    *self.extra, self.pyapp]
        if self.kind == "forkhorn" and self.tls:
            port = 0 if self.port is None else self.port
            return [str(BIN), "-b", f"https://{HOST}:{port}", "--certfile", str(self.tls[0]), "--keyfile",
                    str(self.tls[1]), "-w", str(self.nworkers), *self.extra, self.app]
        if self.kind == "forkhorn":
            port = 0 if self.port is None else self.port
            return [str(BIN), "-b", f"{HOST}:{port}", "-w", str(self.nworkers), *self.extra, self.app]
        if self.port is None:
            self.port = free_port()
        if self.kind == "gunicorn" and self.pyapp:
            return [str(GUNICORN), "-w", str(self.nworkers), "-k", "sync", "-b", f"{HOST}:{self.port}",
                    "--worker-tmp-dir", "/dev/shm", "--chdir", str(PYBENCH), *self.extra, self.pyapp]
        if self.kind == "granian":
            return [str(GRANIAN), "--interface", "wsgi", "--workers", str(self.nworkers), "--host", HOST,
                    "--port", str(self.port), "--working-dir", str(PYBENCH), *self.extra, self.pyapp]
        if self.kind == "gunicorn":
            return [str(GUNICORN), "-w", str(self.nworkers), "-k", "sync", "-b", f"{HOST}:{self.port}",
                    "--worker-tmp-dir", "/dev/shm", "--chdir", str(SCRIPTS), *self.extra, f"bench_wsgi:{self.app}"]
        conf = self.dir / "nginx.conf"
        cert, key = self.tls or (None, None)
        conf.write_text((self.nginx_conf or (NGINX_CONF_TLS if self.tls else NGINX_CONF)).format(
            workers=self.nworkers, dir=self.dir, host=HOST, port=self.port, cert=cert, key=key))
        return [NGINX, "-p", str(self.dir), "-c", str(conf), "-e", str(self.dir / "error.log")]

    def cmd_template(self, argv) -> str:
        s = " ".join(f"{k}={v}" for k, v in self.env.items()) + " " * bool(self.env) + quote(argv)
        s = s.replace(str(ROOT) + "/", "").replace(str(self.dir), "$DIR").replace(str(CERT_DIR), "$CERTDIR")
        s = re.sub(r"--port \d+", "--port $PORT", s)
        return re.sub(rf"{HOST}:\d+", f"{HOST}:$PORT" if self.kind != "forkhorn" or self.port else f"{HOST}:0", s)

    def start(self, wait: bool = True) -> "Server":
        argv = self.argv()
        COMMANDS.setdefault(f"{self.label}", self.cmd_template(argv))
        self.logf = open(self.log_path, "wb")
        self.t_start = time.perf_counter()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self.logf, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.dir, env={**os.environ, **self.env})
        self.pid = self.proc.pid
        LIVE.append(self)
        if self.kind == "forkhorn" and self.port is None:
            self.port = self._port_from_log()
        if wait:
            self.wait_ready()
        return self

    def _port_from_log(self, timeout: float = 15.0) -> int:
        pat = re.compile(rb"Listening at: https?://127\.0\.0\.1:(\d+) \((\d+)\)")
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            m = pat.search(self.log_path.read_bytes())
            if m:
                if int(m.group(2)) != self.pid:
                    anomaly(f"{self.label}: logged master pid {m.group(2)} != spawned pid {self.pid}")
                return int(m.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.005)
        raise RuntimeError(f"{self.label}: no 'Listening at' line; log tail:\n{self.log_tail()}")

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def workers(self) -> list[int]:
        return [p for p in children(self.pid) if alive(p)]

    def wait_ready(self, timeout: float = 20.0, n: int | None = None) -> None:
        n = self.nworkers if n is None else n
        path = "/pid" if self.app == "chaos" else "/"
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited ({self.proc.returncode}); log tail:\n{self.log_tail()}")
            if len(self.workers()) >= n:
                try:
                    if http_get(self.port, path, 1.0, tls=bool(self.tls))[0] == 200:
                        return
                except OSError:
                    pass
            time.sleep(0.01)
        raise RuntimeError(f"{self.label}: not ready after {timeout}s ({len(self.workers())} workers); "
                           f"log tail:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self._reap_group()
            return
        sig = signal.SIGQUIT if self.kind == "nginx" else signal.SIGTERM  # graceful stop for each
        try:
            os.kill(self.pid, sig)
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            anomaly(f"{self.label}: master {self.pid} still running 10 s after {sig.name}; SIGKILL")
        except ProcessLookupError:
            pass
        self._reap_group()

    def _reap_group(self) -> None:
        if self.proc is None:
            return
        left = [p for p in pgroup_members(self.pid)]
        if left and self.proc.poll() is not None:
            anomaly(f"{self.label}: processes {left} outlived the master (pid {self.pid})")
        if left:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None if self.proc.poll() is not None else self.proc
        self.logf.close()
        if self in LIVE:
            LIVE.remove(self)

    def log_count(self, pattern: str) -> int:
        try:
            return len(re.findall(pattern, self.log_path.read_text(errors="replace")))
        except OSError:
            return 0


def stop_all() -> None:
    for s in list(reversed(LIVE)):
        try:
            s.stop()
        except Exception as e:  # keep stopping the others
            log(f"stopping {s.label}: {e}")
            try:
                os.killpg(s.pid, signal.SIGKILL)
            except OSError:
                pass


# ---------------------------------------------------------------- wrk

LUA_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCHJSON {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"connect":%.0f,"read":%.0f,' ..
    '"write":%.0f,"status":%.0f,"timeout":%.0f,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"mean_us":%.2f,"max_us":%.0f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""
LUA_POST = f"""
wrk.method = "POST"
wrk.body = string.rep("x", {POST_BYTES})
wrk.headers["Content-Type"] = "application/octet-stream"
"""
LUA_LIMIT = """
local served = 0
response = function(status, headers, body)
  served = served + 1
  if served == {per_thread} then
    -- wrk keeps sleeping for -d after its threads stop: tell the harness, which sends SIGINT.
    local f = io.open("{mark}", "a")
    f:write("done\\n")
    f:close()
    wrk.thread:stop()
  end
end
"""


def lua_script(post: bool = False, limit_per_thread: int | None = None) -> Path:
    name = f"wrk{'-post' if post else ''}{f'-limit{limit_per_thread}' if limit_per_thread else ''}.lua"
    path = TMP / name
    if not path.exists():
        text = (LUA_POST if post else "") + (LUA_LIMIT.format(per_thread=limit_per_thread, mark=TMP / "wrk.mark")
                                             if limit_per_thread else "")
        path.write_text(text + LUA_DONE)
        shutil.copy(path, LOGDIR / name)
    return path


def tcp_passive_opens() -> int | None:
    """TCP connections accepted so far by this network namespace (/proc/net/snmp Tcp PassiveOpens)."""
    try:
        with open("/proc/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Tcp:")]
        return int(rows[1][rows[0].index("PassiveOpens")])
    except (OSError, ValueError, IndexError):
        return None


def wrk(port: int, path: str = "/", conns: int = 16, duration: float = 10, close: bool = False,
        post: bool = False, limit: int | None = None, threads: int = 2, label: str = "",
        server: "Server | None" = None, tls: bool = False) -> dict:
    """One wrk run. With tls: https://TLS_HOST:port, and wrk never resumes a TLS session (the
    LD_PRELOAD shim built by the TLS phase, when it could be built)."""
    script = lua_script(post, (limit + threads - 1) // threads if limit else None)
    argv = [WRK, f"-t{threads}", f"-c{conns}", f"-d{duration:g}s", "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    url = f"https://{TLS_HOST}:{{}}{path}" if tls else f"http://{HOST}:{{}}{path}"
    argv += ["-s", str(script), url.format(port)]
    env = None
    if tls and NO_RESUME["so"]:
        env = {**os.environ, "LD_PRELOAD": str(NO_RESUME["so"])}
    if label:
        COMMANDS.setdefault(f"wrk {label}", ("LD_PRELOAD=$TMP/wrk_no_resume.so " if env else "") + quote(
            [a if a != str(script) else f"scripts/.logs/{script.name}" for a in argv[:-1]] + [url.format("$PORT")]))
    if not limit:
        settle()
    meter = CpuMeter([server])
    opens0 = tcp_passive_opens()
    if limit:
        mark = TMP / "wrk.mark"
        mark.unlink(missing_ok=True)
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as p:
            deadline = time.perf_counter() + duration
            while p.poll() is None and time.perf_counter() < deadline:
                if mark.exists() and mark.read_text().count("done") >= threads:
                    break
                time.sleep(0.01)
            if p.poll() is None:
                p.send_signal(signal.SIGINT)  # wrk prints its summary on SIGINT
            out, err = p.communicate(timeout=30)
        rc = p.returncode
    else:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 120, env=env)
        out, err, rc = p.stdout, p.stderr, p.returncode
    m = re.search(r"BENCHJSON (\{.*\})", out)
    if not m:
        raise RuntimeError(f"wrk failed ({rc}): {out[-500:]} {err[-500:]}")
    r = json.loads(m.group(1))
    r["foreign_cpu_pct"] = meter.foreign_pct()
    opens1 = tcp_passive_opens()
    # Connections accepted during the run, machine-wide on loopback (so an upper bound for this server's):
    # with `Connection: close` over TLS it should be about one per request, each a full handshake.
    r["new_conns"] = opens1 - opens0 if opens0 is not None and opens1 is not None else None
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0.0
    # The server's own CPU per request: the direct measure of what a feature
    # costs, steadier than req/s when wrk and the server share two cores.
    r["cpu_us_per_req"] = meter.server_cpu_s() * 1e6 / r["requests"] if server and r["requests"] else None
    r["sock_errors"] = r["connect"] + r["read"] + r["write"] + r["timeout"]
    r["failed"] = r["sock_errors"] + r["status"]
    for k in ("p50", "p90", "p99", "mean", "max"):
        r[f"{k}_ms"] = r[f"{k}_us"] / 1000.0
    return r


def summarize(runs: list[dict]) -> dict:
    """Median of each metric over runs, plus the raw runs."""
    out = {k: med([r[k] for r in runs]) for k in ("rps", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "max_ms")}
    out["foreign_cpu_pct_max"] = max(r["foreign_cpu_pct"] for r in runs)
    out["foreign_cpu_pct"] = med([r["foreign_cpu_pct"] for r in runs])
    out["failed"] = sum(r["failed"] for r in runs)
    out["sock_errors"] = sum(r["sock_errors"] for r in runs)
    out["non2xx"] = sum(r["status"] for r in runs)
    cpu = [r["cpu_us_per_req"] for r in runs if r.get("cpu_us_per_req") is not None]
    out["cpu_us_per_req"] = med(cpu) if cpu else None
    out["runs"] = [{k: r.get(k) for k in ("rps", "p50_ms", "p99_ms", "failed", "requests", "foreign_cpu_pct",
                                          "cpu_us_per_req", "new_conns")}
                   for r in runs]
    return out


# ---------------------------------------------------------------- phases


class Bench:
    def __init__(self, quick: bool):
        self.quick = quick
        self.runs = 1 if quick else 3
        # The two headline figures (hello keep-alive and Connection: close,
        # c16) get more runs: their targets are ratios, and a median of five
        # moves less with this shared machine's run-to-run swing.
        self.headline_runs = 1 if quick else 5
        self.dur = 3 if quick else 10  # figure 1 (hello), heartbeat, recycling
        self.dur_short = 2 if quick else 5  # echo, scaling points
        self.scale_workers = [1, 2, 4] if quick else [1, 2, 4, 8]
        self.scale_conns = [16, 256, 1024]
        self.reqs_after = 30_000 if quick else 100_000
        self.idle_conns = 1000
        self.reps = 2 if quick else 3  # recovery / timeout / reload / cold start repetitions
        self.hups = 5 if quick else 10
        # The Python phase's targets are ratios between peers, so even --quick
        # takes a median of three alternating runs, only shorter ones.
        self.py_runs = 3 if quick else 5
        self.py_dur = 2 if quick else 5
        self.py_mem_reqs = 5_000 if quick else 20_000
        # The TLS phase's two figures are ratios to nginx: a median of five short runs in a full
        # run; --quick keeps one run of each, as for the plain headline figures.
        self.tls_runs = 1 if quick else 5
        self.tls_dur = 2 if quick else 4
        self.R: dict = {"mode": "quick" if quick else "full", "errors": {}}

    def rotate(self, items, r):
        k = r % len(items)
        return items[k:] + items[:k]

    # -- figures 1 + 2b: throughput, latency, connection scaling --
    def phase_throughput(self):
        srv = {
            ("forkhorn", "hello"): Server("forkhorn", "hello"),
            ("gunicorn", "hello"): Server("gunicorn", "hello"),
            ("nginx", "hello"): Server("nginx", "hello"),
            ("forkhorn", "echo"): Server("forkhorn", "echo"),
            ("gunicorn", "echo"): Server("gunicorn", "echo"),
        }
        for s in srv.values():
            s.start()
        # (scenario, app, close, conns, duration, post)
        scen = [
            ("hello keep-alive c16", "hello", False, 16, self.dur, False),
            ("hello close c16", "hello", True, 16, self.dur, False),
            ("echo 4KiB POST keep-alive c16", "echo", False, 16, self.dur_short, True),
            ("echo 4KiB POST close c16", "echo", True, 16, self.dur_short, True),
        ] + [(f"hello keep-alive c{c}", "hello", False, c, self.dur_short, False) for c in self.scale_conns if c != 16]
        headline = ("hello keep-alive c16", "hello close c16")
        raw: dict = {}
        rounds = max(self.runs, self.headline_runs)
        for r in range(rounds):
            for name, app, close, conns, dur, post in scen:
                if r >= self.runs and name not in headline:
                    continue
                kinds = [k for k in KINDS if (k, app) in srv]
                for kind in self.rotate(kinds, r):
                    s = srv[(kind, app)]
                    res = measure(s.port, s, "/", conns, dur, close=close, post=post, label=name)
                    raw.setdefault(name, {}).setdefault(kind, []).append(res)
                    FOREIGN.append(res["foreign_cpu_pct"])
                    log(f"run {r + 1}/{rounds if name in headline else self.runs} {name:32s} {kind:8s} {res['rps']:9.0f} req/s "
                        f"p50 {res['p50_ms']:.2f} ms p99 {res['p99_ms']:.2f} ms failed {res['failed']} (other load {res['foreign_cpu_pct']:.0f}%)")
        for s in srv.values():
            s.stop()
        self.R["throughput"] = {name: {k: summarize(v) for k, v in d.items()} for name, d in raw.items()}
        conn_curve = {}
        for c in self.scale_conns:
            name = f"hello keep-alive c{c}"
            conn_curve[c] = {k: v["rps"] for k, v in self.R["throughput"][name].items()}
        self.R["scale_conns"] = conn_curve

    # -- figure 2a: worker scaling --
    def phase_scale_workers(self):
        out = {}
        for w in self.scale_workers:
            if w == 2 and "throughput" in self.R:
                out[w] = {k: v["rps"] for k, v in self.R["throughput"]["hello keep-alive c16"].items()}
                continue
            group = {k: Server(k, "hello", workers=w) for k in KINDS}
            for s in group.values():
                s.start()
            runs: dict = {}
            for r in range(self.runs):
                for kind in self.rotate(list(KINDS), r):
                    res = measure(group[kind].port, group[kind], "/", 16, self.dur_short,
                                  label="hello keep-alive c16 (scaling)")
                    FOREIGN.append(res["foreign_cpu_pct"])
                    runs.setdefault(kind, []).append(res["rps"])
                    log(f"run {r + 1}/{self.runs} workers={w} {kind:8s} {res['rps']:9.0f} req/s "
                        f"(other load {res['foreign_cpu_pct']:.0f}%)")
            for s in group.values():
                s.stop()
            out[w] = {k: med(v) for k, v in runs.items()}
        self.R["scale_workers"] = out

    # -- figures 7 + 8: heartbeat cost, recycling cost --
    def phase_overheads(self):
        base_name, off_name = "-t 30 (default)", "-t 0"
        recycle_name = "-t 30 --max-requests 1000 --max-requests-jitter 100"
        cfg = {
            base_name: ["-t", "30"],
            off_name: ["-t", "0"],
            recycle_name: ["-t", "30", "--max-requests", "1000", "--max-requests-jitter", "100"],
        }
        srv = {name: Server("forkhorn", "hello", extra=a, label=f"forkhorn-{i}") for i, (name, a) in
               enumerate(cfg.items())}
        for s in srv.values():
            s.start()
        runs: dict = {}
        label = "hello keep-alive c16 (overheads)"

        def run(name, dur, r):
            res = measure(srv[name].port, srv[name], "/", 16, dur, label=label)
            runs.setdefault(name, []).append(res)
            FOREIGN.append(res["foreign_cpu_pct"])
            cpu = res["cpu_us_per_req"]
            log(f"run {r + 1} forkhorn {name:52s} {res['rps']:9.0f} req/s "
                f"{cpu if cpu is None else round(cpu, 3)} us CPU/req failed {res['failed']} "
                f"(other load {res['foreign_cpu_pct']:.0f}%)")
            return res

        # Heartbeat cost is a difference of a few percent at most, well under
        # this machine's run-to-run swing, so the two settings run back to back
        # in many short pairs (order alternating) and each pair gives a ratio.
        pairs = 2 if self.quick else 6
        pair_rps, pair_cpu = [], []
        for r in range(pairs):
            got = {name: run(name, self.dur_short, r) for name in self.rotate([base_name, off_name], r)}
            b, o = got[base_name], got[off_name]
            if o["rps"]:
                pair_rps.append(b["rps"] / o["rps"])
            if b["cpu_us_per_req"] and o["cpu_us_per_req"]:
                pair_cpu.append(b["cpu_us_per_req"] / o["cpu_us_per_req"])
        for r in range(self.runs):
            run(recycle_name, self.dur, r)
        # The recycling figure compares with the default's own runs.
        recycled = srv[recycle_name].log_count(r"recycled after")
        for s in srv.values():
            s.stop()
        out = {name: summarize(v) for name, v in runs.items()}
        self.R["overheads"] = {
            "configs": out,
            "pairs": pairs,
            # req/s with heartbeats over req/s without (>= 0.98 is within 2%)
            "heartbeat_ratio": med(pair_rps),
            # server CPU per request with heartbeats over without (<= 1.02 is within 2%)
            "heartbeat_cpu_ratio": med(pair_cpu),
            "recycle_ratio": out[recycle_name]["rps"] / out[base_name]["rps"],
            "recycled_workers": recycled,
        }
        mr = out[recycle_name]
        if mr["failed"]:
            anomaly(f"forkhorn --max-requests 1000: {mr['failed']} failed requests (wrk socket errors "
                    f"{mr['sock_errors']}, non-2xx {mr['non2xx']}) over {self.runs} run(s) with {recycled} "
                    f"recycles; a recycling worker should end keep-alive connections cleanly")

    # -- figure 3: memory --
    def phase_memory(self):
        out = {}
        for kind in KINDS:
            extra = ["--keep-alive", "60"] if kind == "forkhorn" else []
            s = Server(kind, "hello", extra=extra, label=f"{kind}-memory").start()
            time.sleep(1.0)
            idle = self.snapshot(s)
            res = wrk(s.port, "/", 16, 600, limit=self.reqs_after, label=f"{self.reqs_after // 1000}k requests (memory)",
                      server=s)
            time.sleep(0.5)
            after = self.snapshot(s)
            entry = {"idle": idle, "after": after, "requests": res["requests"], "failed": res["failed"]}
            log(f"memory {kind:8s} worker VmRSS idle {[w['VmRSS'] for w in idle['workers']]} kB, after "
                f"{res['requests']} requests {[w['VmRSS'] for w in after['workers']]} kB")
            if kind != "gunicorn":  # gunicorn's sync worker closes every connection: no idle keep-alive
                entry["idle_conns"] = asyncio.run(self.idle_conns_test(s))
                ic = entry["idle_conns"]
                log(f"memory {kind:8s} {ic['open']} idle conns ({ic['still_open']} still open): "
                    f"+{ic['delta_VmRSS_per_1000']:.0f} kB VmRSS / +{ic['delta_RssAnon_per_1000']:.0f} kB RssAnon "
                    f"per 1000, sockets per worker {ic['sockets_per_worker']}")
            s.stop()
            out[kind] = entry
        self.R["memory"] = out
        fh, ng = out["forkhorn"].get("idle_conns"), out["nginx"].get("idle_conns")
        if fh and ng and fh["delta_VmRSS_per_1000"] > 4 * max(ng["delta_VmRSS_per_1000"], 1):
            anomaly(f"forkhorn workers grow {fh['delta_VmRSS_per_1000']:,.0f} kB RSS per 1000 idle keep-alive "
                    f"connections ({fh['delta_VmRSS_per_1000'] / 1000:.1f} kB each) vs nginx "
                    f"{ng['delta_VmRSS_per_1000']:,.0f} kB; an idle connection seems to keep its read buffer "
                    f"(src/worker/conn.rs grows `buf` by READ_CHUNK = 16 KiB per read and never shrinks it)")

    # -- figure 9: Python (WSGI) apps: forkhorn's embedded CPython vs Granian vs gunicorn sync --
    def phase_python(self):
        out: dict = {"unavailable": {}, "runs": self.py_runs, "dur": self.py_dur}
        self.R["python"] = out
        srv: dict = {}
        for name, (pyapp, _post) in PY_APPS.items():
            for kind in PY_PEERS:
                if kind in out["unavailable"]:
                    continue
                s = Server(kind, pyapp=pyapp, label=f"{kind}-py-{pyapp.split(':')[0]}")
                try:
                    s.start()
                except (RuntimeError, OSError) as e:
                    # forkhorn without the Python host (or a broken peer) must not sink the others' figures
                    s.stop()
                    out["unavailable"][kind] = str(e)[:600]
                    anomaly(f"Python phase: {kind} could not serve {pyapp}; its figures are n/a. {str(e)[:300]}")
                    continue
                srv[(kind, name)] = s
        # One unrecorded second for each: Flask's first requests, Granian's thread pool and
        # CPython's specializing interpreter all warm up, and no peer's first run pays for it.
        for (kind, name), s in srv.items():
            wrk(s.port, "/", 16, 1, post=PY_APPS[name][1])
        raw: dict = {}
        for r in range(self.py_runs):
            for name, (pyapp, post) in PY_APPS.items():
                kinds = [k for k in PY_PEERS if (k, name) in srv]
                for kind in self.rotate(kinds, r):
                    s = srv[(kind, name)]
                    res = measure(s.port, s, "/", 16, self.py_dur, post=post, label=f"{name} (Python)")
                    raw.setdefault(name, {}).setdefault(kind, []).append(res)
                    FOREIGN.append(res["foreign_cpu_pct"])
                    log(f"run {r + 1}/{self.py_runs} {name:32s} {kind:8s} {res['rps']:9.0f} req/s "
                        f"p50 {res['p50_ms']:.2f} ms p99 {res['p99_ms']:.2f} ms failed {res['failed']} "
                        f"(other load {res['foreign_cpu_pct']:.0f}%)")
        for s in srv.values():
            s.stop()
        out["throughput"] = {name: {k: summarize(v) for k, v in d.items()} for name, d in raw.items()}
        out["memory"] = self.python_memory(out["unavailable"])

    def python_memory(self, unavailable: dict) -> dict:
        """Per-worker private memory (smaps_rollup Private_Clean + Private_Dirty) after the same
        Flask requests, for each server's way of loading the app."""
        pyapp = PY_APPS[PY_FLASK][0]
        configs = {  # row -> (kind, extra args)
            "forkhorn --preload": ("forkhorn", ["--preload"]),
            "forkhorn": ("forkhorn", []),
            "gunicorn": ("gunicorn", []),
            "gunicorn --preload": ("gunicorn", ["--preload"]),
            "granian": ("granian", []),
        }
        out = {}
        for row, (kind, extra) in configs.items():
            if kind in unavailable:
                continue
            s = Server(kind, pyapp=pyapp, extra=extra, label=f"{kind}-py-memory{'-preload' if extra else ''}")
            try:
                s.start()
            except (RuntimeError, OSError) as e:
                s.stop()
                anomaly(f"Python memory: `{row}` could not serve {pyapp}; n/a. {str(e)[:300]}")
                continue
            time.sleep(0.5)
            idle = self.py_mem_snapshot(s)
            res = wrk(s.port, "/", 16, 120, limit=self.py_mem_reqs,
                      label=f"{self.py_mem_reqs // 1000}k Flask requests (Python memory)", server=s)
            time.sleep(0.5)
            after = self.py_mem_snapshot(s)
            s.stop()
            priv = [w.get("Private") for w in after["workers"] if w.get("Private") is not None]
            out[row] = {"idle": idle, "after": after, "requests": res["requests"], "failed": res["failed"],
                        "worker_private_kb": statistics.mean(priv) if priv else None}
            log(f"python memory {row:20s} worker Private (kB) idle {[w.get('Private') for w in idle['workers']]}, "
                f"after {res['requests']} requests {[w.get('Private') for w in after['workers']]}; "
                f"master {after['master'].get('Private')}")
        return out

    def py_mem_snapshot(self, s: Server) -> dict:
        return {"master": smaps_rollup(s.pid), "workers": [dict(pid=p, **smaps_rollup(p)) for p in s.workers()]}

    def snapshot(self, s: Server) -> dict:
        return {"master": proc_status(s.pid),
                "workers": [dict(pid=p, **proc_status(p)) for p in s.workers()]}

    async def idle_conns_test(self, s: Server) -> dict:
        n = self.idle_conns
        before = self.snapshot(s)
        socks_before = {p: socket_fds(p) for p in s.workers()}
        sem = asyncio.Semaphore(100)
        conns = []

        async def one():
            async with sem:
                r, w = await asyncio.open_connection(HOST, s.port)
                w.write(f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
                await w.drain()
                head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 10)
                m = re.search(rb"(?i)content-length:\s*(\d+)", head)
                await r.readexactly(int(m.group(1)) if m else 0)
                conns.append((r, w))

        t0 = time.perf_counter()
        res = await asyncio.gather(*[one() for _ in range(n)], return_exceptions=True)
        errs = [repr(e) for e in res if isinstance(e, BaseException)]
        await asyncio.sleep(1.0)
        after = self.snapshot(s)
        socks = {p: socket_fds(p) - socks_before.get(p, 0) for p in s.workers()}
        still = sum(1 for r, _ in conns if not r.at_eof())
        for _, w in conns:
            w.close()
        await asyncio.sleep(0.2)

        def tot(snap, k):
            return sum(w.get(k, 0) for w in snap["workers"])

        opened = len(conns)
        scale = 1000.0 / opened if opened else 0.0
        out = {"open": opened, "still_open": still, "errors": errs[:3], "n_errors": len(errs),
               "open_s": time.perf_counter() - t0,
               "delta_VmRSS_per_1000": (tot(after, "VmRSS") - tot(before, "VmRSS")) * scale,
               "delta_RssAnon_per_1000": (tot(after, "RssAnon") - tot(before, "RssAnon")) * scale,
               "sockets_per_worker": list(socks.values())}
        if still < opened:
            anomaly(f"{s.label}: {opened - still} of {opened} idle keep-alive connections closed by the "
                    f"server within ~1 s")
        return out

    # -- TLS: forkhorn vs nginx with the same certificate and settings --
    def phase_tls(self):
        out: dict = {"unavailable": {}, "runs": self.tls_runs, "dur": self.tls_dur, "workers": 2}
        self.R["tls"] = out
        cert, key = make_cert(CERT_DIR)
        NO_RESUME["so"], why = build_no_resume()
        if not NO_RESUME["so"]:
            anomaly(f"TLS phase: the shim that keeps wrk from resuming TLS sessions could not be built ({why[:200]}); "
                    f"wrk resumes sessions where a server issues tickets, so that server's handshake figure counts "
                    f"resumptions")
        try:
            self._phase_tls(out, cert, key)
        finally:
            NO_RESUME["so"] = None

    def _phase_tls(self, out: dict, cert: Path, key: Path):
        out["client_check"] = self.tls_client_check(cert, key)
        cc = out["client_check"]
        log(f"tls wrk client check (nginx with tickets on): {cc}")
        if cc.get("resumed") or not cc.get("connections"):
            anomaly(f"TLS phase: wrk{' with the no-resume shim' if cc.get('shim') else ''} resumed {cc.get('resumed')} "
                    f"of {cc.get('connections')} `Connection: close` connections to an nginx that issues tickets: "
                    f"against a server that issues tickets its handshake figure counts resumptions")
        out["certificate"] = sh(f"{OPENSSL} x509 -in {cert} -noout -subject -ext subjectAltName 2>&1 | tr -s '\\n ' ' '; "
                                f"{OPENSSL} pkey -in {key} -noout -text 2>&1 | grep -E 'ASN1 OID|NIST CURVE' | tr -s '\\n ' ' '")
        srv: dict = {}
        for kind in TLS_PEERS:
            s = Server(kind, "hello", tls=(cert, key), label=f"{kind}-tls")
            try:
                s.start()
            except (RuntimeError, OSError) as e:
                # forkhorn without TLS (or a broken peer) must not sink the other's figures
                s.stop()
                out["unavailable"][kind] = str(e)[:600]
                last = [x for x in str(e).splitlines() if x.strip()][-1:] or [str(e)]
                anomaly(f"TLS phase: {kind} could not serve https; its TLS figures are n/a. `{last[0][:300]}`")
                continue
            srv[kind] = s
        out["negotiated"] = {k: tls_probe(s.port) for k, s in srv.items()}
        for k, n in out["negotiated"].items():
            log(f"tls {k:8s} negotiated {n}")
            if n.get("resumed"):
                full = NO_RESUME["so"] and not out["client_check"].get("resumed")
                anomaly(f"TLS phase: {k} resumes TLS sessions (second connections offering the first one's session, "
                        f"from Python's client: TLS 1.3 {n['TLSv1.3']['resumed']}, TLS 1.2 {n['TLSv1.2']['resumed']} "
                        f"resumed): its session tickets or session cache are on"
                        + (" (forkhorn has no option to turn them off)" if k == "forkhorn" else "") + ". "
                        + ("wrk never offers a session here (no-resume shim, checked), so its handshakes with "
                           f"{k} are still full ones, each also issuing tickets" if full else
                           f"wrk offers its last session on each reconnect, so {k}'s handshake figure counts "
                           f"resumptions and is not comparable"))
        if len({(n.get("version"), n.get("cipher")) for n in out["negotiated"].values()}) > 1:
            anomaly(f"TLS phase: the servers negotiated different protocols or ciphers with the same client: "
                    f"{ {k: (n.get('version'), n.get('cipher')) for k, n in out['negotiated'].items()} }")
        time.sleep(0.5)
        idle = {k: self.tls_mem_snapshot(s) for k, s in srv.items()}
        log_start = {k: s.log_path.stat().st_size for k, s in srv.items()}  # what forkhorn logs under load, below
        # One unrecorded second each, so that neither server's first run pays for its warm-up.
        for s in srv.values():
            wrk(s.port, "/", 16, 1, tls=True)
        raw: dict = {}
        for r in range(self.tls_runs):
            for name, close in ((TLS_KA, False), (TLS_CLOSE, True)):
                for kind in self.rotate([k for k in TLS_PEERS if k in srv], r):
                    s = srv[kind]
                    res = measure(s.port, s, "/", 16, self.tls_dur, close=close, tls=True, label=name)
                    raw.setdefault(name, {}).setdefault(kind, []).append(res)
                    FOREIGN.append(res["foreign_cpu_pct"])
                    cpu = res["cpu_us_per_req"]
                    log(f"run {r + 1}/{self.tls_runs} {name:44s} {kind:8s} {res['rps']:9.0f} req/s "
                        f"p99 {res['p99_ms']:.2f} ms {cpu if cpu is None else round(cpu, 1)} us CPU/req "
                        f"conns/req {_per(res.get('new_conns'), res['requests'])} failed {res['failed']} "
                        f"(other load {res['foreign_cpu_pct']:.0f}%)")
        time.sleep(0.5)
        after = {k: self.tls_mem_snapshot(s) for k, s in srv.items()}
        for k, s in srv.items():
            log(f"tls memory {k:8s} worker VmRSS/Private (kB) idle "
                f"{[(w.get('VmRSS'), w.get('Private')) for w in idle[k]['workers']]}, after the load "
                f"{[(w.get('VmRSS'), w.get('Private')) for w in after[k]['workers']]}")
        fh = srv.get("forkhorn")
        if fh is not None:
            with open(fh.log_path, "rb") as f:
                f.seek(log_start["forkhorn"])
                text = f.read().decode(errors="replace")
            bad = re.findall(r"(?m)^.*\[(?:WARNING|ERROR|CRITICAL)\].*$", text)
            out["forkhorn_log_problems"] = {"count": len(bad), "first": bad[:5]}
            if bad:
                anomaly(f"TLS phase: forkhorn logged {len(bad)} warning/error lines under TLS load, e.g. "
                        f"`{bad[0].strip()[:250]}`")
        for s in srv.values():
            s.stop()
        out["throughput"] = {name: {k: summarize(v) for k, v in d.items()} for name, d in raw.items()}
        # Connections accepted per request: ~1 in the `Connection: close` runs when each request is a handshake;
        # in the keep-alive runs, how often a connection was renewed (nginx: keepalive_requests 1000).
        out["conns_per_request"] = {
            name: {k: med([_per(r.get("new_conns"), r["requests"], raw_value=True) for r in runs])
                   for k, runs in d.items()} for name, d in raw.items()}
        for k, x in out["conns_per_request"].get(TLS_CLOSE, {}).items():
            if x is not None and x < 0.95:
                anomaly(f"TLS phase: {k} accepted only {x:.2f} connections per request with `Connection: close`; "
                        f"its handshake figure counts requests that reused a connection")
        out["memory"] = {k: {"idle": idle[k], "after": after[k]} for k in srv}
        for name, d in out["throughput"].items():
            for k, v in d.items():
                if v["failed"]:
                    anomaly(f"TLS phase: {k} {name}: {v['failed']} failed requests (socket errors "
                            f"{v['sock_errors']}, non-2xx {v['non2xx']}) over {self.tls_runs} run(s)")

    def tls_client_check(self, cert: Path, key: Path) -> dict:
        """The load generator's own behaviour, checked on an nginx that does issue session tickets and logs
        $ssl_session_reused: how many of wrk's `Connection: close` connections resumed a session (must be 0)."""
        s = Server("nginx", "hello", tls=(cert, key), label="nginx-tls-client-check")
        s.nginx_conf = NGINX_CONF_TLS.replace("ssl_session_tickets off;", "ssl_session_tickets on;").replace(
            "    access_log off;\n", "    log_format reused '$ssl_session_reused';\n"
                                    "    access_log {dir}/reused.log reused;\n")
        try:
            s.start()
            res = wrk(s.port, "/", 16, 1, close=True, tls=True)
        except (RuntimeError, OSError) as e:
            return {"error": str(e)[:300], "shim": bool(NO_RESUME["so"])}
        finally:
            s.stop()
        try:
            marks = (s.dir / "reused.log").read_text().split()
        except OSError:
            marks = []
        return {"connections": len(marks), "resumed": marks.count("r"), "requests": res["requests"],
                "shim": bool(NO_RESUME["so"])}

    def tls_mem_snapshot(self, s: Server) -> dict:
        """/proc/PID/status (VmRSS, RssAnon) and smaps_rollup (Rss, Pss, Private) of the master and each worker."""
        def one(pid):
            return dict(pid=pid, **proc_status(pid), **smaps_rollup(pid))
        return {"master": one(s.pid), "workers": [one(p) for p in s.workers()]}

    # -- figure 4: cold start --
    def phase_cold_start(self):
        times: dict = {k: [] for k in KINDS}
        for r in range(self.reps):
            for kind in self.rotate(list(KINDS), r):
                s = Server(kind, "hello", port=free_port(), label=f"{kind}-cold")
                t0 = time.perf_counter()
                s.start(wait=False)
                t = None
                while time.perf_counter() - t0 < 20:
                    try:
                        if http_get(s.port, "/", 0.5)[0] == 200:
                            t = time.perf_counter() - t0
                            break
                    except OSError:
                        time.sleep(0.001)
                s.stop()
                times[kind].append(t)
                log(f"cold start {kind:8s} {t * 1000 if t else float('nan'):.1f} ms")
        self.R["cold_start_ms"] = {k: {"median": med(v) * 1000 if med(v) else None,
                                       "runs": [x * 1000 if x else None for x in v]} for k, v in times.items()}

    # -- figure 5a: recovery after kill -9 --
    def phase_recovery(self):
        out = {}
        for kind in KINDS:
            s = Server(kind, "chaos" if kind != "nginx" else "hello", label=f"{kind}-recovery").start()
            reps = []
            for i in range(self.reps):
                time.sleep(1.5)  # every worker older than forkhorn's 1 s "failed boot" window
                s.wait_ready()
                reps.append(self.one_recovery(s))
                log(f"recovery {kind:8s} {reps[-1]}")
            s.stop()
            out[kind] = {"fork_ms": med([r["fork_ms"] for r in reps]),
                         "serve_ms": med([r["serve_ms"] for r in reps]), "runs": reps}
        self.R["recovery"] = out

    def one_recovery(self, s: Server) -> dict:
        before = set(s.workers())
        mode, busy_thread, victim = "poll", None, None
        if s.kind != "nginx":
            # Pin the other worker on a 1 s request, so the replacement is the only one accepting.
            busy_thread = threading.Thread(target=_swallow, args=(http_get, s.port, "/sleep?s=1", 5), daemon=True)
            busy_thread.start()
            deadline = time.perf_counter() + 0.5
            while time.perf_counter() < deadline:
                busy = [p for p in before if "nanosleep" in wchan(p)]
                if busy:
                    idle = sorted(before - set(busy))
                    if idle:
                        victim, mode = idle[0], "busy-peer"
                    break
                time.sleep(0.001)
        if victim is None:
            victim = sorted(before)[0]
        seen = {}

        def watch():
            while time.perf_counter() - t0 < 5:
                new = set(children(s.pid)) - before
                if new:
                    seen["fork"] = time.perf_counter()
                    return

        t0 = time.perf_counter()
        os.kill(victim, signal.SIGKILL)
        w = threading.Thread(target=watch, daemon=True)
        w.start()
        t_serve, pid = None, None
        while time.perf_counter() - t0 < 5:
            pid = get_pid(s.port, 3.0)
            if pid is not None and pid not in before:
                t_serve = time.perf_counter()
                break
        w.join()
        if busy_thread:
            busy_thread.join()
        return {"mode": mode, "fork_ms": (seen["fork"] - t0) * 1000 if "fork" in seen else None,
                "serve_ms": (t_serve - t0) * 1000 if t_serve else None}

    # -- figure 5b: timeout precision --
    def phase_timeout(self):
        out = {}
        for kind in ("forkhorn", "gunicorn"):
            flag = ["-t", "2"] if kind == "forkhorn" else ["--timeout", "2"]
            s = Server(kind, "chaos", extra=flag, label=f"{kind}-timeout").start()
            reps = []
            for i in range(self.reps):
                time.sleep(1.2)
                s.wait_ready()
                reps.append(self.one_timeout(s, 2.0))
                log(f"timeout {kind:8s} {reps[-1]}")
                late = reps[-1]["late_death_ms"]
                if kind == "forkhorn" and (late is None or late > 200):
                    lines = re.findall(r".*WORKER TIMEOUT.*", s.log_path.read_text(errors="replace"))
                    anomaly(f"forkhorn -t 2: rep {i + 1} killed the worker {fmt(late, 0)} ms after the deadline "
                            f"(client saw {reps[-1]['status']} at {fmt(reps[-1]['late_response_ms'], 0)} ms); master "
                            f"log: `{lines[-1].strip() if lines else 'no WORKER TIMEOUT line'}`")
            s.stop()
            out[kind] = {"late_death_ms": med([r["late_death_ms"] for r in reps]),
                         "late_response_ms": med([r["late_response_ms"] for r in reps]),
                         "max_late_death_ms": max((r["late_death_ms"] for r in reps
                                                   if r["late_death_ms"] is not None), default=None),
                         "runs": reps}
        self.R["timeout"] = out

    def one_timeout(self, s: Server, timeout: float) -> dict:
        before = set(s.workers())
        sock = socket.create_connection((HOST, s.port), timeout=40)
        t_send = time.perf_counter()
        sock.sendall(f"GET /sleep?s=30 HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        victim = None
        while time.perf_counter() - t_send < 1.0 and victim is None:
            busy = [p for p in before if "nanosleep" in wchan(p)]
            victim = busy[0] if busy else None
            time.sleep(0.0005)
        seen = {}

        def watch():
            while victim is not None and time.perf_counter() - t_send < 35:
                if not alive(victim):
                    seen["death"] = time.perf_counter()
                    return
                time.sleep(0.0005)

        w = threading.Thread(target=watch, daemon=True)
        w.start()
        data = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError:
            pass
        t_resp = time.perf_counter()
        sock.close()
        w.join()
        deadline = t_send + timeout
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
        return {"status": status,
                "late_response_ms": (t_resp - deadline) * 1000,
                "late_death_ms": (seen["death"] - deadline) * 1000 if "death" in seen else None}

    # -- figure 6: reload --
    def phase_reload(self):
        dur = {}
        for kind in ("forkhorn", "gunicorn"):
            s = Server(kind, "chaos", label=f"{kind}-reload").start()
            reps = []
            for i in range(self.reps):
                time.sleep(1.5)
                s.wait_ready()
                reps.append(self.one_hup(s))
                log(f"reload {kind:8s} {reps[-1]}")
            s.stop()
            dur[kind] = {"all_new_serving_ms": med([r["all_new_serving_ms"] for r in reps]),
                         "first_new_ms": med([r["first_new_ms"] for r in reps]),
                         "old_gone_ms": med([r["old_gone_ms"] for r in reps]), "runs": reps}
        under = {}
        for kind in KINDS:
            s = Server(kind, "hello", label=f"{kind}-hup-load").start()
            sent = []

            def hupper():
                time.sleep(1.0)
                for _ in range(self.hups):
                    os.kill(s.pid, signal.SIGHUP)
                    sent.append(time.perf_counter())
                    time.sleep(1.0)

            th = threading.Thread(target=hupper, daemon=True)
            th.start()
            res = wrk(s.port, "/", 16, self.hups + 3, label=f"{self.hups} HUPs under load", server=s)
            th.join()
            time.sleep(0.5)
            ok = True
            try:
                s.wait_ready(timeout=10)
            except RuntimeError:
                ok = False
                anomaly(f"{s.label}: not serving with {s.nworkers} workers after {self.hups} HUPs")
            under[kind] = {"failed": res["failed"], "sock_errors": res["sock_errors"], "non2xx": res["status"],
                           "connect": res["connect"], "read": res["read"], "write": res["write"],
                           "timeout": res["timeout"], "requests": res["requests"], "rps": res["rps"],
                           "hups": len(sent), "healthy_after": ok}
            log(f"reload under load {kind:8s} {under[kind]}")
            s.stop()
        self.R["reload"] = {"duration": dur, "under_load": under}
        if under["forkhorn"]["failed"]:
            u = under["forkhorn"]
            anomaly(f"forkhorn: {u['failed']} failed requests during {u['hups']} HUPs under wrk load "
                    f"(connect {u['connect']}, read {u['read']}, write {u['write']}, timeout {u['timeout']}, "
                    f"non-2xx {u['non2xx']})")

    def one_hup(self, s: Server) -> dict:
        before = set(s.workers())
        n = s.nworkers
        t0 = time.perf_counter()
        os.kill(s.pid, signal.SIGHUP)
        answered, t_first, t_all, t_gone = set(), None, None, None
        while time.perf_counter() - t0 < 15:
            kids = set(children(s.pid))
            now = time.perf_counter()
            if t_gone is None and not (kids & before) and len(kids - before) >= n:
                t_gone = now
            pid = get_pid(s.port, 1.0)
            now = time.perf_counter()
            if pid is not None and pid not in before:
                answered.add(pid)
                t_first = t_first or now
                if len(answered) >= n and t_all is None:
                    t_all = now
            if t_all and t_gone:
                break

        def ms(t):
            return (t - t0) * 1000 if t else None

        return {"first_new_ms": ms(t_first), "all_new_serving_ms": ms(t_all), "old_gone_ms": ms(t_gone)}


def _per(n, d, raw_value: bool = False):
    """n / d, or None; as text with two decimals unless raw_value."""
    x = n / d if n is not None and d else None
    return x if raw_value else ("n/a" if x is None else f"{x:.2f}")


def make_cert(d: Path) -> tuple[Path, Path]:
    """An ECDSA P-256 key and a self-signed certificate for localhost and 127.0.0.1, made with openssl."""
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o755)
    key, cert = d / "key.pem", d / "cert.pem"
    for label, argv in (
            ("TLS key (ECDSA P-256)", [OPENSSL, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
                                       "-out", key]),
            ("TLS certificate (self-signed)", [OPENSSL, "req", "-new", "-x509", "-key", key, "-out", cert, "-days",
                                               "7", "-subj", "/CN=localhost", "-addext",
                                               "subjectAltName=DNS:localhost,IP:127.0.0.1"])):
        p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=60)
        if p.returncode:
            raise RuntimeError(f"{quote(argv)} failed ({p.returncode}): {p.stderr[-400:]}")
        COMMANDS.setdefault(label, quote(argv).replace(str(d), "$CERTDIR"))
    return cert, key


def build_no_resume() -> tuple[Path | None, str]:
    """Build the LD_PRELOAD shim that keeps wrk from resuming TLS sessions: (path, "") or (None, why)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return None, "no C compiler (cc)"
    so = TMP / "wrk_no_resume.so"
    argv = [cc, "-O2", "-shared", "-fPIC", "-o", so, NO_RESUME_SRC, "-ldl"]
    try:
        p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, str(e)
    if p.returncode:
        return None, p.stderr.strip()
    COMMANDS.setdefault("wrk no-resume shim (LD_PRELOAD, built once)", quote(["cc", *argv[1:]]).replace(str(TMP), "$TMP")
                        .replace(str(ROOT) + "/", ""))
    return so, ""


def tls_probe(port: int, tries: int = 8) -> dict:
    """What this server negotiates with Python's client (any version, then TLS 1.3 and 1.2 alone), and for
    each version how many of `tries` second connections offering the first one's session resumed it (none
    should: no tickets, no session cache). Several tries, since a per-worker cache resumes only on the
    worker that made the session."""
    out: dict = {}
    try:
        first: dict = {}
        out["status"] = http_get(port, "/", 5.0, tls=True, info=first)[0]
        out.update(version=first.get("version"), cipher=first.get("cipher"))
        resumed = 0
        for version in ("TLSv1.3", "TLSv1.2"):
            n = 0
            for _ in range(tries):
                a: dict = {}
                b: dict = {}
                http_get(port, "/", 5.0, tls=version, info=a)
                http_get(port, "/", 5.0, tls=version, session=a.get("session"), info=b)
                n += bool(b.get("resumed"))
            out[version] = {"cipher": a.get("cipher"), "resumed": f"{n}/{tries}"}
            resumed += n
        out["resumed"] = resumed > 0
    except (OSError, ValueError) as e:
        out["error"] = repr(e)[:300]
    return out


def _swallow(fn, *a):
    try:
        return fn(*a)
    except Exception:
        return None


# ---------------------------------------------------------------- report


def sh(cmd: str) -> str:
    try:
        p = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30)
        return (p.stdout + p.stderr).strip()
    except Exception as e:
        return f"({e})"


def machine() -> dict:
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
    return {
        "cpu": cpu or platform.processor(),
        "cpuinfo_cores": sh("grep -c ^processor /proc/cpuinfo"),
        "nproc": sh("nproc"),
        "free": sh("free -m"),
        "kernel": sh("uname -sr"),
        "os": sh(". /etc/os-release && echo $PRETTY_NAME"),
        "wrk": sh(f"{WRK} -v 2>&1 | head -1").split(" Copyright")[0],
        "nginx": sh(f"{NGINX} -v 2>&1"),
        "gunicorn": sh(f"{GUNICORN} --version"),
        "granian": sh(f"{GRANIAN} --version") if GRANIAN.exists() else "not installed",
        "flask": sh(f"{VENV / 'bin' / 'python'} -c 'import flask, importlib.metadata as m; print(m.version(\"flask\"))'"),
        "venv_python": sh(f"{VENV / 'bin' / 'python'} -c 'import sys; print(sys.version.split()[0], sys.base_prefix)'"),
        "python": sys.version.split()[0],
        "rustc": sh("rustc --version"),
        "forkhorn": sh(f"cd {ROOT} && git rev-parse --short HEAD") + (
            " (+ uncommitted changes in src/)" if sh(f"cd {ROOT} && git status --porcelain -- src Cargo.toml") else ""),
        "ulimit_n": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }


def fmt(v, nd=0, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, float) and nd == 0 and abs(v) >= 1000:
        return f"{v:,.0f}{unit}"
    return f"{v:,.{nd}f}{unit}"


def ratio(a, b, nd=2):
    if a is None or b is None or b == 0:
        return None
    return a / b


def rfmt(x, nd=2):
    """A ratio with `nd` decimals, or more when it is small: at least two
    significant digits, so 4 ms / 885 ms reads 0.0045x, never 0.00x."""
    if x is None:
        return "n/a"
    if x == 0:
        return "0x"
    decimals = max(nd, 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}x"


class Sections:
    """Numbers the report's figure headings in the order they are written,
    so no heading carries two numbers and a skipped phase leaves no gap."""

    def __init__(self):
        self.n = 0

    def __call__(self, title: str) -> str:
        self.n += 1
        return f"## {self.n}. {title}\n"


def targets(R: dict) -> list[dict]:
    """Each target: name, measured text, ratio/value, goal text, met."""
    T = []
    tp = R.get("throughput", {})

    def rps(scn, k):
        return tp.get(scn, {}).get(k, {}).get("rps")

    def p99(scn, k):
        return tp.get(scn, {}).get(k, {}).get("p99_ms")

    ka, cl = "hello keep-alive c16", "hello close c16"
    x = ratio(rps(ka, "forkhorn"), rps(ka, "nginx"))
    T.append(dict(name="keep-alive req/s vs nginx", goal=">= 0.8x", value=x, met=x is not None and x >= 0.8,
                  detail=f"{fmt(rps(ka, 'forkhorn'))} vs {fmt(rps(ka, 'nginx'))} req/s"))
    x = ratio(rps(cl, "forkhorn"), rps(cl, "gunicorn"))
    T.append(dict(name="Connection: close req/s vs gunicorn sync", goal=">= 3x", value=x, met=x is not None and x >= 3,
                  detail=f"{fmt(rps(cl, 'forkhorn'))} vs {fmt(rps(cl, 'gunicorn'))} req/s"))
    x = ratio(rps(cl, "forkhorn"), rps(cl, "nginx"))
    T.append(dict(name="Connection: close req/s vs nginx", goal=">= 0.8x", value=x, met=x is not None and x >= 0.8,
                  detail=f"{fmt(rps(cl, 'forkhorn'))} vs {fmt(rps(cl, 'nginx'))} req/s"))
    x = ratio(p99(ka, "forkhorn"), p99(ka, "nginx"))
    T.append(dict(name="keep-alive p99 latency vs nginx", goal="<= 1.5x", value=x, met=x is not None and x <= 1.5,
                  detail=f"{fmt(p99(ka, 'forkhorn'), 2)} vs {fmt(p99(ka, 'nginx'), 2)} ms"))
    mem = R.get("memory", {})

    def wrss(k, key="VmRSS"):
        ws = mem.get(k, {}).get("idle", {}).get("workers", [])
        return statistics.mean(w.get(key, 0) for w in ws) if ws else None

    x = ratio(wrss("forkhorn"), wrss("gunicorn"))
    T.append(dict(name="idle worker RSS vs gunicorn sync worker", goal="<= 0.2x", value=x,
                  met=x is not None and x <= 0.2,
                  detail=f"{fmt(wrss('forkhorn'))} vs {fmt(wrss('gunicorn'))} kB VmRSS"))
    rec = R.get("recovery", {}).get("forkhorn", {}).get("serve_ms")
    T.append(dict(name="replacement serving after kill -9", goal="<= 20 ms", value=rec, unit="ms",
                  met=rec is not None and rec <= 20, detail=f"{fmt(rec, 1)} ms"))
    to = R.get("timeout", {}).get("forkhorn", {})
    late = to.get("late_death_ms")
    T.append(dict(name="timeout kill after the deadline", goal="<= 200 ms", value=late, unit="ms",
                  met=late is not None and late <= 200,
                  detail=f"{fmt(late, 0)} ms median (worst {fmt(to.get('max_late_death_ms'), 0)} ms), "
                         f"504 at {fmt(to.get('late_response_ms'), 0)} ms"))
    u = R.get("reload", {}).get("under_load", {}).get("forkhorn")
    f = u["failed"] if u else None
    T.append(dict(name=f"failed requests over {u['hups'] if u else 10} HUPs under load", goal="0", value=f, unit="",
                  met=f == 0, detail="n/a" if u is None else
                  f"{f} (socket errors {u['sock_errors']}, non-2xx {u['non2xx']}) of {u['requests']:,}"))
    ov = R.get("overheads", {})
    hb, hc = ov.get("heartbeat_ratio"), ov.get("heartbeat_cpu_ratio")
    T.append(dict(name="heartbeat cost: server CPU per request, -t 30 vs -t 0", goal="<= 1.02x", value=hc,
                  met=hc is not None and hc <= 1.02,
                  detail=f"req/s ratio {fmt(hb, 3)} (median of {ov.get('pairs', '?')} back-to-back pairs)"))
    if "python" in R:
        T += python_targets(R["python"])
    if "tls" in R:
        T += tls_targets(R["tls"])
    return T


def tls_targets(S: dict) -> list[dict]:
    """The TLS phase's targets: forkhorn against nginx with the same certificate and settings."""
    T = []
    tp = S.get("throughput", {})
    for scn, name in ((TLS_KA, "TLS keep-alive req/s vs nginx"),
                      (TLS_CLOSE, "TLS new handshakes/s (Connection: close) vs nginx")):
        f, n = (tp.get(scn, {}).get(k, {}).get("rps") for k in TLS_PEERS)
        x = ratio(f, n)
        T.append(dict(name=name, goal=">= 0.9x", value=x, met=x is not None and x >= 0.9,
                      detail=f"{fmt(f)} vs {fmt(n)} req/s"))
    return T


def tls_worker_mem(S: dict, kind: str, key: str, state: str = "after"):
    """Mean over a TLS server's workers of one memory figure (kB), or None."""
    ws = S.get("memory", {}).get(kind, {}).get(state, {}).get("workers", [])
    vals = [w.get(key) for w in ws if w.get(key) is not None]
    return statistics.mean(vals) if vals else None


def python_targets(P: dict) -> list[dict]:
    """The Python (WSGI) phase's targets: forkhorn's embedded CPython against Granian and gunicorn sync."""
    T = []
    tp = P.get("throughput", {})

    def get(scn, k, key):
        return tp.get(scn, {}).get(k, {}).get(key)

    def rps_target(scn, peer, goal, what):
        f, o = get(scn, "forkhorn", "rps"), get(scn, peer, "rps")
        x = ratio(f, o)
        peer_name = "gunicorn sync" if peer == "gunicorn" else "Granian"
        T.append(dict(name=f"Python: {what} keep-alive req/s vs {peer_name}", goal=f">= {goal:g}x", value=x,
                      met=x is not None and x >= goal, detail=f"{fmt(f)} vs {fmt(o)} req/s"))

    rps_target(PY_PLAIN, "granian", 1.2, "plain WSGI")
    rps_target(PY_PLAIN, "gunicorn", 5.0, "plain WSGI")
    rps_target(PY_FLASK, "granian", 1.0, "Flask hello")
    # p99 in every Python scenario; the measured value is the worst ratio of the three.
    per = {scn: ratio(get(scn, "forkhorn", "p99_ms"), get(scn, "granian", "p99_ms")) for scn in PY_APPS}
    have = [x for x in per.values() if x is not None]
    worst = max(have) if len(have) == len(PY_APPS) else None
    T.append(dict(name="Python: p99 latency vs Granian (worst of the 3 apps)", goal="<= 1.0x", value=worst,
                  met=worst is not None and worst <= 1.0,
                  detail="; ".join(f"{scn.split(' keep-alive')[0]} {fmt(get(scn, 'forkhorn', 'p99_ms'), 2)} vs "
                                   f"{fmt(get(scn, 'granian', 'p99_ms'), 2)} ms" for scn in PY_APPS)))
    mem = P.get("memory", {})
    f, g = (mem.get(k, {}).get("worker_private_kb") for k in ("forkhorn --preload", "gunicorn"))
    x = ratio(f, g)
    T.append(dict(name="Python: forkhorn --preload worker private memory vs gunicorn worker", goal="<= 0.5x",
                  value=x, met=x is not None and x <= 0.5,
                  detail=f"{fmt(f)} vs {fmt(g)} kB Private_Clean+Private_Dirty (Flask, after "
                         f"{mem.get('gunicorn', {}).get('requests', 0):,} requests)"))
    return T


def target_value(t: dict) -> str:
    v = t["value"]
    if v is None:
        return "n/a"
    if "unit" not in t:
        return rfmt(v)
    return f"{v:,}" if isinstance(v, int) else f"{v:,.1f} {t['unit']}"


def same_setup_note(R: dict, value, what: str, why: str) -> str:
    """A sentence for a figure measured in the same setup as the headline
    (forkhorn hello keep-alive c16, 2 workers): it is the headline, or it
    differs from it and says why."""
    head = R.get("throughput", {}).get("hello keep-alive c16", {}).get("forkhorn", {}).get("rps")
    if value is None or head is None:
        return ""
    if abs(value - head) <= 0.005 * head:
        return (f"{what} is the same setup as the headline (forkhorn hello keep-alive c16, 2 workers) and shows "
                f"the headline's own figure ({fmt(head)} req/s, section 1).\n")
    return (f"{what} is the same setup as the headline (forkhorn hello keep-alive c16, 2 workers) but reads "
            f"{fmt(value)} req/s against the headline's {fmt(head)} ({(value / head - 1) * 100:+.0f}%): "
            f"it is {why}, while the headline is the median of {R.get('headline_runs', R['runs'])} "
            f"runs of {R['dur']} s in the throughput phase. ")


def write_report(R: dict, argv: list[str], elapsed: float) -> None:
    DOCS.mkdir(exist_ok=True)
    M = R["machine"]
    L = []
    a = L.append
    section = Sections()
    mode = R["mode"]
    a("# forkhorn benchmarks\n")
    a(f"Generated by `{quote(['scripts/bench.sh', *argv])}` on {R['date']} ({mode} mode, "
      f"{elapsed / 60:.1f} min). Every figure is measured in this one run, on this machine, with forkhorn, "
      f"gunicorn and nginx run alternately (the order rotates run by run); throughput and latency are "
      f"medians of {R['runs']} run(s), {R.get('headline_runs', R['runs'])} for the hello keep-alive and "
      f"`Connection: close` c16 figures that the targets use. Ratios are forkhorn / peer.\n")
    a("Caveat: wrk runs on the same 2 cores as the servers, so every server shares the CPU with its load "
      "generator; all servers suffer equally, but absolute numbers are lower than on a dedicated client. "
      "gunicorn's sync worker never keeps a connection alive, so its \"keep-alive\" figures are really "
      "one connection per request. nginx runs with its defaults (`keepalive_requests 1000`).\n")
    fc = R.get("foreign_cpu_pct", {})
    if fc.get("runs"):
        a(f"Background load: other processes on the machine (not the servers, wrk or this harness; computed from "
          f"/proc/stat minus their CPU time) used a median {fc['median']:.0f}% and at most {fc['max']:.0f}% of the "
          f"{NCPU} cores during the {fc['runs']} throughput runs (load average {R.get('load_start')} at the start, "
          f"{R.get('load_end')} at the end). Before each run the harness waits up to 2 s for that share to drop "
          f"below 15%, and a run during which it exceeded {NOISY_PCT:.0f}% is redone once, keeping the quieter "
          f"of the two ({R.get('reruns', 0)} reruns; {R.get('settle_wait_s', 0):.0f} s spent on waits and reruns, "
          f"out of a {R.get('noise_budget_s', 0):.0f} s budget). "
          f"Runs with more than ~10% are noisier than the others; per-run values are in benchmarks.json.\n")
    a("## Machine\n")
    a("| item | value |\n|---|---|")
    for k in ("cpu", "cpuinfo_cores", "nproc", "kernel", "os", "wrk", "nginx", "gunicorn", "granian", "flask",
              "venv_python", "python", "rustc", "forkhorn", "ulimit_n"):
        if k not in M:  # reports saved before the Python phase existed
            continue
        a(f"| {k} | {str(M.get(k, '')).replace('|', '/')} |")
    a("\n```\n$ free -m\n" + M["free"] + "\n```\n")

    a("## Targets\n")
    a("| target | goal | measured | detail | status |\n|---|---|---|---|---|")
    for t in R["targets"]:
        vs = target_value(t)
        a(f"| {t['name']} | {t['goal']} | {vs} | {t['detail']} | {'met' if t['met'] else '**missed**'} |")
    a("")

    tp = R.get("throughput")
    if tp:
        a(section("Throughput and latency (`wrk -t2 -c16 --latency`, 2 workers each)"))
        a("| scenario | metric | forkhorn | gunicorn | nginx | forkhorn/gunicorn | forkhorn/nginx |")
        a("|---|---|---|---|---|---|---|")
        for name, d in tp.items():
            fh = d.get("forkhorn", {})
            for key, label, nd in (("rps", "req/s", 0), ("p50_ms", "p50 ms", 2), ("p99_ms", "p99 ms", 2),
                                   ("failed", "failed", 0), ("foreign_cpu_pct", "other load %", 0)):
                vals = {k: d.get(k, {}).get(key) for k in KINDS}
                plain = key in ("failed", "foreign_cpu_pct")
                rg = rfmt(ratio(vals["forkhorn"], vals["gunicorn"])) if not plain else ""
                rn = rfmt(ratio(vals["forkhorn"], vals["nginx"])) if not plain else ""
                a(f"| {name if key == 'rps' else ''} | {label} | {fmt(vals['forkhorn'], nd)} | "
                  f"{fmt(vals['gunicorn'], nd) if 'gunicorn' in d else '-'} | "
                  f"{fmt(vals['nginx'], nd) if 'nginx' in d else '-'} | {rg if 'gunicorn' in d else '-'} | "
                  f"{rn if 'nginx' in d else '-'} |")
            _ = fh
        a("\nThe echo rows POST a 4 KiB body (wrk Lua script) to forkhorn `echo` and to an equivalent WSGI echo "
          "app under gunicorn (nginx has no echo). The c256/c1024 rows are the connection-scaling points "
          f"({R['dur_short']} s each); `failed` = wrk socket errors (connect/read/write/timeout) + non-2xx, "
          "summed over runs; `other load %` = median share of the CPU that other processes on the machine took "
          "during the runs (see Background load).\n")

    sw = R.get("scale_workers")
    sc = R.get("scale_conns")
    if sw or sc:
        a(section("Scaling (hello, keep-alive)"))
    if sw:
        a("Requests/s by worker processes (`-c16`):\n")
        a("| workers | forkhorn | gunicorn | nginx | forkhorn/gunicorn | forkhorn/nginx |\n|---|---|---|---|---|---|")
        for w, d in sw.items():
            a(f"| {w} | {fmt(d.get('forkhorn'))} | {fmt(d.get('gunicorn'))} | {fmt(d.get('nginx'))} | "
              f"{rfmt(ratio(d.get('forkhorn'), d.get('gunicorn')))} | {rfmt(ratio(d.get('forkhorn'), d.get('nginx')))} |")
        a("")
        a(same_setup_note(R, sw.get(2, {}).get("forkhorn"), "The 2-worker row", f"the median of {R['runs']} runs of {R['dur_short']} s "
                          "in the scaling phase"))
    if sc:
        a("Requests/s by concurrent connections (2 workers):\n")
        a("| connections | forkhorn | gunicorn | nginx | forkhorn/gunicorn | forkhorn/nginx |\n|---|---|---|---|---|---|")
        for c, d in sc.items():
            a(f"| {c} | {fmt(d.get('forkhorn'))} | {fmt(d.get('gunicorn'))} | {fmt(d.get('nginx'))} | "
              f"{rfmt(ratio(d.get('forkhorn'), d.get('gunicorn')))} | {rfmt(ratio(d.get('forkhorn'), d.get('nginx')))} |")
        a("")

    mem = R.get("memory")
    if mem:
        a(section("Memory (kB, from /proc/PID/status)"))
        a("| process | state | forkhorn VmRSS | gunicorn VmRSS | nginx VmRSS | forkhorn RssAnon | gunicorn RssAnon | "
          "nginx RssAnon | VmRSS forkhorn/gunicorn | VmRSS forkhorn/nginx |")
        a("|---|---|---|---|---|---|---|---|---|---|")
        for state in ("idle", "after"):
            for proc in ("master", "worker (mean)", "workers (each)"):
                def get(k, key, proc=proc, state=state):
                    snap = mem.get(k, {}).get(state)
                    if not snap:
                        return None
                    if proc == "master":
                        return snap["master"].get(key)
                    ws = [w.get(key, 0) for w in snap["workers"]]
                    if proc == "worker (mean)":
                        return statistics.mean(ws) if ws else None
                    return "/".join(str(x) for x in ws)
                st = "idle" if state == "idle" else f"after {R.get('reqs_after', 100000) // 1000}k requests"
                if proc == "workers (each)":
                    a(f"| {proc} | {st} | " + " | ".join(str(get(k, 'VmRSS')) for k in KINDS) + " | "
                      + " | ".join(str(get(k, 'RssAnon')) for k in KINDS) + " | | |")
                else:
                    v = {k: get(k, "VmRSS") for k in KINDS}
                    an = {k: get(k, "RssAnon") for k in KINDS}
                    a(f"| {proc} | {st} | " + " | ".join(fmt(v[k]) for k in KINDS) + " | "
                      + " | ".join(fmt(an[k]) for k in KINDS) + f" | {rfmt(ratio(v['forkhorn'], v['gunicorn']))} | "
                      f"{rfmt(ratio(v['forkhorn'], v['nginx']))} |")
        a("")
        a(f"Idle keep-alive connections: {R.get('idle_conns', 1000)} connections opened by an asyncio client, "
          "each after one request, held open 1 s; RSS delta of all workers scaled to 1000 connections "
          "(kernel socket buffers are not in RSS). gunicorn's sync worker closes every connection, so it has no "
          "figure.\n")
        a("| server | connections held | VmRSS delta / 1000 conns | RssAnon delta / 1000 conns | "
          "new sockets per worker |\n|---|---|---|---|---|")
        for k in KINDS:
            ic = mem.get(k, {}).get("idle_conns")
            if ic:
                a(f"| {k} | {ic['still_open']}/{ic['open']} | {ic['delta_VmRSS_per_1000']:,.0f} kB | "
                  f"{ic['delta_RssAnon_per_1000']:,.0f} kB | {ic['sockets_per_worker']} |")
            else:
                a(f"| {k} | n/a | n/a | n/a | n/a |")
        a("")

    cs = R.get("cold_start_ms")
    if cs:
        a(section("Cold start (process start to first 200, 1 ms polling with fresh connections)"))
        a("| forkhorn | gunicorn | nginx | forkhorn/gunicorn | forkhorn/nginx |\n|---|---|---|---|---|")
        v = {k: cs[k]["median"] for k in KINDS}
        a(f"| {fmt(v['forkhorn'], 1)} ms | {fmt(v['gunicorn'], 1)} ms | {fmt(v['nginx'], 1)} ms | "
          f"{rfmt(ratio(v['forkhorn'], v['gunicorn']))} | {rfmt(ratio(v['forkhorn'], v['nginx']))} |\n")

    rec = R.get("recovery")
    if rec:
        a(section("Recovery and timeout precision"))
        a("Recovery: one worker is sent `kill -9`; *new child* is when the replacement appears in "
          "`/proc/MASTER/task/*/children`, *serving* is when a `/pid` request is answered by the new pid. For forkhorn "
          "and gunicorn the other worker is first pinned on a 1 s `/sleep` (found via `/proc/PID/wchan`), so the "
          "replacement is the only one accepting and the request waits in the listen backlog; nginx (`return 200 "
          "\"$pid\"`) is polled with fresh connections until the new pid answers.\n")
        a("| | forkhorn | gunicorn | nginx | forkhorn/gunicorn | forkhorn/nginx |\n|---|---|---|---|---|---|")
        for key, label in (("fork_ms", "kill -9 to new child (ms)"), ("serve_ms", "kill -9 to replacement serving (ms)")):
            v = {k: rec.get(k, {}).get(key) for k in KINDS}
            a(f"| {label} | {fmt(v['forkhorn'], 2)} | {fmt(v['gunicorn'], 2)} | {fmt(v['nginx'], 2)} | "
              f"{rfmt(ratio(v['forkhorn'], v['gunicorn']))} | {rfmt(ratio(v['forkhorn'], v['nginx']))} |")
        a("")
    to = R.get("timeout")
    if to:
        a("Timeout precision (`-t 2` / `--timeout 2`, request `/sleep?s=30`): the deadline is approximated by "
          "request start + 2 s (both servers stamp their heartbeat just before reading the request). Lateness "
          "after that deadline, median (worst):\n")
        a("| | forkhorn | gunicorn | forkhorn/gunicorn |\n|---|---|---|---|")
        f, g = to.get("forkhorn", {}), to.get("gunicorn", {})
        a(f"| worker dead (ms) | {fmt(f.get('late_death_ms'), 0)} ({fmt(f.get('max_late_death_ms'), 0)}) | "
          f"{fmt(g.get('late_death_ms'), 0)} ({fmt(g.get('max_late_death_ms'), 0)}) | "
          f"{rfmt(ratio(f.get('late_death_ms'), g.get('late_death_ms')))} |")
        a(f"| client gets the answer / EOF (ms) | {fmt(f.get('late_response_ms'), 0)} | "
          f"{fmt(g.get('late_response_ms'), 0)} | {rfmt(ratio(f.get('late_response_ms'), g.get('late_response_ms')))} |")
        st = {k: sorted({str(r['status']) for r in to.get(k, {}).get('runs', [])}) for k in ("forkhorn", "gunicorn")}
        a(f"| status the client saw | {', '.join(st['forkhorn'])} | {', '.join(st['gunicorn'])} "
          "(None = connection closed without a response) | |\n")

    rl = R.get("reload")
    if rl:
        a(section("Reload (HUP)"))
        a("Duration of one HUP (chaos app, 2 workers, `/pid` polled with fresh connections), median of "
          f"{R['reps']}:\n")
        a("| | forkhorn | gunicorn | forkhorn/gunicorn |\n|---|---|---|---|")
        d = rl["duration"]
        for key, label in (("first_new_ms", "first answer from a new worker (ms)"),
                           ("all_new_serving_ms", "all new workers serving (ms)"),
                           ("old_gone_ms", "all old workers gone (ms)")):
            f, g = d.get("forkhorn", {}).get(key), d.get("gunicorn", {}).get(key)
            a(f"| {label} | {fmt(f, 1)} | {fmt(g, 1)} | {rfmt(ratio(f, g))} |")
        a("")
        u = rl["under_load"]
        a(f"{u['forkhorn']['hups']} HUPs, one per second, under `wrk -t2 -c16` keep-alive load (hello):\n")
        a("| | forkhorn | gunicorn | nginx |\n|---|---|---|---|")
        for key, label in (("requests", "requests"), ("failed", "failed (socket errors + non-2xx)"),
                           ("connect", "connect errors"), ("read", "read errors"), ("write", "write errors"),
                           ("timeout", "timeouts"), ("non2xx", "non-2xx"), ("healthy_after", "serving afterwards")):
            a(f"| {label} | " + " | ".join(str(u.get(k, {}).get(key, 'n/a')) for k in KINDS) + " |")
        a("")

    ov = R.get("overheads")
    if ov:
        a(section("Heartbeat and recycling cost (forkhorn hello, keep-alive c16)"))
        a("| configuration | req/s | server CPU µs/request | p99 ms | failed | req/s ratio to default |\n"
          "|---|---|---|---|---|---|")
        base = ov["configs"]["-t 30 (default)"]["rps"]
        for name, s in ov["configs"].items():
            a(f"| `{name}` | {fmt(s['rps'])} | {fmt(s.get('cpu_us_per_req'), 2)} | {fmt(s['p99_ms'], 2)} | "
              f"{s['failed']} | {rfmt(ratio(s['rps'], base), 3)} |")
        a(f"\nHeartbeat cost (goal: within 2%), from {ov.get('pairs', '?')} back-to-back pairs of short runs: "
          f"server CPU per request `-t 30` / `-t 0` = {rfmt(ov.get('heartbeat_cpu_ratio'), 3)}, "
          f"req/s `-t 30` / `-t 0` = {rfmt(ov['heartbeat_ratio'], 3)}. CPU per request is the direct measure of "
          f"the cost; req/s on two cores shared with wrk swings by more than the effect being measured. "
          f"Recycling: {rfmt(ov['recycle_ratio'], 3)} of the default's throughput, "
          f"{ov['recycled_workers']} workers recycled during the runs.\n")
        pairs = ov.get("pairs", "?")
        a(same_setup_note(R, base, "The `-t 30 (default)` row",
                          f"the median of {pairs} runs of {R['dur_short']} s taken in back-to-back pairs with "
                          "`-t 0` in a later phase, with three forkhorn servers up at once (two of them idle), "
                          "and moves with the machine's run-to-run swing")
          + "Compare the rows of this table with each other, not with section 1.\n")

    if R.get("python"):
        write_python_section(R, a, section)
    if R.get("tls"):
        write_tls_section(R, a, section)

    if R["errors"]:
        a("## Phases that failed\n")
        for k, v in R["errors"].items():
            a(f"- {k}: `{v}`")
        a("")
    if ANOMALIES:
        a("## Observations\n")
        for x in ANOMALIES:
            a(f"- {x}")
        a("")
    a("## Commands\n")
    a("Servers (`$PORT` is a free port picked by binding port 0; forkhorn binds port 0 itself and the port is read "
      "from its `Listening at:` line; `$DIR` is a per-server temp directory):\n")
    a("```")
    for k, v in COMMANDS.items():
        if not k.startswith("wrk"):
            a(f"# {k}\n{v}")
    a("```\n\nLoad (wrk; the Lua scripts only set the POST body, stop after N responses, and print the summary "
      "as JSON in `done()`; copies are in `scripts/.logs/` after a run):\n")
    a("```")
    for k, v in COMMANDS.items():
        if k.startswith("wrk"):
            a(f"# {k[4:]}\n{v}")
    a("```\n\nnginx.conf (per server):\n")
    a("```nginx\n" + NGINX_CONF.replace("{{", "{").replace("}}", "}") + "```\n")
    if R.get("tls"):
        a("The TLS phase's nginx.conf is the same with this listener (`$CERTDIR`: the phase's temp directory "
          "holding the key and certificate that forkhorn gets too):\n")
        a("```nginx\n" + NGINX_TLS_LISTEN.format(host=HOST, port="$PORT", cert="$CERTDIR/cert.pem",
                                                   key="$CERTDIR/key.pem") + "```\n")
    a("Raw data: `docs/benchmarks.json`; server logs: `scripts/.logs/` (not committed). Rerun with "
      "`scripts/bench.sh` (full, < 22 min; writes this file) or `scripts/bench.sh --quick` (< 5 min; writes its "
      "report to `scripts/.logs/quick/` and leaves docs/ and README.md alone); `scripts/bench.sh --render-only` "
      "re-renders this file, the chart and README's section from `docs/benchmarks.json` without running anything.\n")
    (DOCS / "benchmarks.md").write_text("\n".join(L))


def write_python_section(R: dict, a, section) -> None:
    P = R["python"]
    M = R["machine"]
    a(section("Python WSGI apps: forkhorn's embedded CPython vs Granian vs gunicorn (sync)"))
    a(f"Each peer runs the same app from `scripts/python_bench/` with 2 worker processes: gunicorn "
      f"{M.get('gunicorn', '').split()[-1].rstrip(')')} `-k sync`, {M.get('granian', 'Granian')} "
      f"`--interface wsgi` (its defaults otherwise), and forkhorn with `VIRTUAL_ENV=scripts/.venv` so its "
      f"embedded interpreter finds Flask {M.get('flask', '')} in the benchmark's virtualenv (Python "
      f"{M.get('venv_python', '?')}). Load: `wrk -t2 -c16 --latency`, keep-alive, {P['dur']} s per run after an "
      f"unrecorded 1 s warm-up of each server; figures are medians of {P['runs']} runs with the peers' order "
      "rotated run by run. Ratios are forkhorn / peer. "
      "gunicorn's sync worker closes the connection after every response, so its keep-alive figures are one "
      "connection per request.\n")
    if P.get("unavailable"):
        for k, why in P["unavailable"].items():
            last = [x for x in why.splitlines() if x.strip()][-1:] or [why]
            a(f"- **{k} did not serve the apps** (its figures are n/a): `{last[0][:200]}`")
        a("")
    a("| app | metric | forkhorn | Granian | gunicorn | forkhorn/Granian | forkhorn/gunicorn |")
    a("|---|---|---|---|---|---|---|")
    for name, d in P.get("throughput", {}).items():
        for key, label, nd in (("rps", "req/s", 0), ("p50_ms", "p50 ms", 2), ("p99_ms", "p99 ms", 2),
                               ("cpu_us_per_req", "server CPU µs/req", 1), ("failed", "failed", 0),
                               ("foreign_cpu_pct", "other load %", 0)):
            v = {k: d.get(k, {}).get(key) for k in PY_PEERS}
            plain = key in ("failed", "foreign_cpu_pct")
            a(f"| {name if key == 'rps' else ''} | {label} | {fmt(v['forkhorn'], nd)} | {fmt(v['granian'], nd)} | "
              f"{fmt(v['gunicorn'], nd)} | {'' if plain else rfmt(ratio(v['forkhorn'], v['granian']))} | "
              f"{'' if plain else rfmt(ratio(v['forkhorn'], v['gunicorn']))} |")
    a("\nThe echo app returns the POSTed body (wrk's Lua script sends 4 KiB of `x`), so it measures reading "
      "`wsgi.input` and a 4 KiB response. `server CPU µs/req` is the CPU time of the server's whole process "
      "group per request.\n")
    mem = P.get("memory", {})
    if mem:
        reqs = next((m["requests"] for m in mem.values()), 0)
        a(f"Memory per worker (kB, from `/proc/PID/smaps_rollup`), Flask hello, after the same {reqs:,} "
          "keep-alive requests to each server. *Private* = Private_Clean + Private_Dirty: what the worker holds "
          "alone, and so what each extra worker costs; pages still shared with the master after fork are in "
          "Pss/Rss only. gunicorn without `--preload` is how it is usually run (each worker imports the app "
          "itself); with `--preload` the master imports it before forking, as forkhorn `--preload` does.\n")
        a("| server | worker Private (mean) | workers' Private (each) | worker Pss (mean) | worker Rss (mean) | "
          "master Private | Private vs gunicorn | failed |")
        a("|---|---|---|---|---|---|---|---|")
        base = mem.get("gunicorn", {}).get("worker_private_kb")
        for row, m in mem.items():
            ws = m["after"]["workers"]

            def mean(key, ws=ws):
                vals = [w.get(key) for w in ws if w.get(key) is not None]
                return statistics.mean(vals) if vals else None

            a(f"| `{row}` | {fmt(m['worker_private_kb'])} | {'/'.join(str(w.get('Private')) for w in ws)} | "
              f"{fmt(mean('Pss'))} | {fmt(mean('Rss'))} | {fmt(m['after']['master'].get('Private'))} | "
              f"{rfmt(ratio(m['worker_private_kb'], base))} | {m['failed']} |")
        a("")


def write_tls_section(R: dict, a, section) -> None:
    S = R["tls"]
    M = R["machine"]
    a(section("TLS: forkhorn vs nginx, same certificate"))
    neg = S.get("negotiated", {})
    a(f"Both servers serve hello over https on 127.0.0.1 with {S.get('workers', 2)} worker processes and access "
      "logs off, with one certificate made at the start of the phase (`openssl`, an ECDSA P-256 key, self-signed "
      f"for localhost and 127.0.0.1: {S.get('certificate', '?').strip()}) and the same TLS settings: TLS 1.2 and "
      "1.3, each server's default ciphers, "
      + ("no session tickets and no session cache (nginx: `ssl_session_tickets off; ssl_session_cache off;`)"
         if not neg.get("forkhorn", {}).get("resumed") else
         "and on nginx no session tickets and no session cache (`ssl_session_tickets off; ssl_session_cache off;`); "
         "forkhorn issues session tickets and has no option to turn them off (see the resumption check below), "
         "and the client is kept from resuming instead")
      + f", so every new connection is a full handshake. forkhorn uses rustls; {M.get('nginx', 'nginx').replace('nginx version: ', '')} uses the "
      "system's OpenSSL. Load: `wrk -t2 -c16 --latency https://localhost:$PORT/` (wrk verifies no certificate; "
      "`localhost` is 127.0.0.1 here, and a host name so that wrk's SNI is a name, as real clients send, rather "
      "than the IP address that RFC 6066 forbids there), keep-alive, and with `-H \"Connection: close\"`, where "
      "the server closes after each response and wrk reconnects, so each request is a new TCP connection and a "
      f"full TLS handshake; {S['runs']} run(s) of {S['dur']} s each, servers' order rotated run by run, after an "
      "unrecorded 1 s warm-up of each; medians. Ratios are forkhorn / nginx.\n")
    cc = S.get("client_check", {})
    a("A full handshake on every new connection also needs the client not to offer a session: wrk keeps each "
      "connection's last session across its reconnects and offers it, so against a server that issues session "
      "tickets most of its `Connection: close` connections would be resumptions. wrk therefore runs with a small "
      "`LD_PRELOAD` shim (`scripts/wrk_no_resume.c`) that drops the session before each reconnect"
      + (f". Check at the start of the phase, `Connection: close` for 1 s against an nginx with session tickets "
         f"on that logs `$ssl_session_reused`: {cc.get('resumed')} of {cc.get('connections')} connections resumed"
         if "connections" in cc else f" (check failed: {cc.get('error', 'not run')})")
      + ("" if cc.get("shim") else " (**the shim could not be built: wrk ran as is**)") + ".\n")
    if neg:
        a("Negotiated with Python's client (any version; then each version alone, with how many second "
          "connections offering the first one's session resumed it, which must be none with tickets and the "
          "session cache off): " + "; ".join(
              f"{k}: {n.get('version')} {n.get('cipher')}"
              + "".join(f", {v} {n[v]['cipher']} resumed {n[v]['resumed']}" for v in ("TLSv1.3", "TLSv1.2")
                        if v in n)
              + (f", error {n['error']}" if "error" in n else "") for k, n in neg.items()) + ".\n")
    for k, why in S.get("unavailable", {}).items():
        last = [x for x in why.splitlines() if x.strip()][-1:] or [why]
        a(f"- **{k} did not serve https** (its figures are n/a): `{last[0][:200]}`")
    if S.get("unavailable"):
        a("")
    a("| scenario | metric | forkhorn | nginx | forkhorn/nginx |\n|---|---|---|---|---|")
    cpr = S.get("conns_per_request", {})
    for name, d in S.get("throughput", {}).items():
        for key, label, nd in (("rps", "req/s", 0), ("p50_ms", "p50 ms", 2), ("p99_ms", "p99 ms", 2),
                               ("cpu_us_per_req", "server CPU µs/req", 1), ("failed", "failed", 0),
                               ("foreign_cpu_pct", "other load %", 0)):
            v = {k: d.get(k, {}).get(key) for k in TLS_PEERS}
            plain = key in ("failed", "foreign_cpu_pct")
            a(f"| {name if key == 'rps' else ''} | {label} | {fmt(v['forkhorn'], nd)} | {fmt(v['nginx'], nd)} | "
              f"{'' if plain else rfmt(ratio(v['forkhorn'], v['nginx']))} |")
        c = cpr.get(name, {})
        a(f"| | connections accepted / request | {fmt(c.get('forkhorn'), 4)} | {fmt(c.get('nginx'), 4)} | |")
    a("\nIn the `Connection: close` rows req/s is new handshakes per second. *connections accepted / request* "
      "is the loopback's TCP PassiveOpens count (/proc/net/snmp) over the run divided by the requests served: about "
      "1 when every request had its own connection and handshake; in the keep-alive rows, how often wrk had to "
      "reconnect (nginx ends a connection after its default `keepalive_requests 1000`); machine-wide, so other "
      "processes' loopback connections can only raise it. `server CPU µs/req` is the CPU time of the server's "
      "whole process group per request, so per handshake in the `Connection: close` rows.\n")
    lp = S.get("forkhorn_log_problems")
    if lp is not None:
        a(f"forkhorn's log during the load (warm-up and runs): {lp['count']} warning/error lines"
          + (f", e.g. `{lp['first'][0].strip()[:200]}`" if lp["first"] else "") + ".\n")
    mem = S.get("memory", {})
    if mem:
        a("Memory per worker (kB; VmRSS and RssAnon from /proc/PID/status, Rss, Pss and Private = "
          "Private_Clean + Private_Dirty from /proc/PID/smaps_rollup), idle after start and after the phase's "
          "load:\n")
        a("| server | state | worker VmRSS (mean) | worker RssAnon (mean) | worker Private (mean) | worker Pss (mean) | "
          "workers' VmRSS / Private (each) | master VmRSS | master Private |")
        a("|---|---|---|---|---|---|---|---|---|")
        for k in TLS_PEERS:
            for state in ("idle", "after"):
                snap = mem.get(k, {}).get(state)
                if not snap:
                    continue
                each = ", ".join(f"{w.get('VmRSS')} / {w.get('Private')}" for w in snap["workers"])
                a(f"| {k} | {'idle' if state == 'idle' else 'after the load'} | "
                  f"{fmt(tls_worker_mem(S, k, 'VmRSS', state))} | {fmt(tls_worker_mem(S, k, 'RssAnon', state))} | "
                  f"{fmt(tls_worker_mem(S, k, 'Private', state))} | {fmt(tls_worker_mem(S, k, 'Pss', state))} | "
                  f"{each} | {fmt(snap['master'].get('VmRSS'))} | {fmt(snap['master'].get('Private'))} |")
        f, n = tls_worker_mem(S, "forkhorn", "VmRSS"), tls_worker_mem(S, "nginx", "VmRSS")
        fp, np_ = tls_worker_mem(S, "forkhorn", "Private"), tls_worker_mem(S, "nginx", "Private")
        a(f"\nAfter the load, forkhorn / nginx worker: VmRSS {rfmt(ratio(f, n))}, Private {rfmt(ratio(fp, np_))}.\n")


def write_chart(R: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"forkhorn": "#d9480f", "gunicorn": "#2b8a3e", "nginx": "#1c7ed6", "granian": "#7048e8"}
    nrows = 3 if R.get("python") else 2
    fig, axes = plt.subplots(nrows, 3, figsize=(19, 5.5 * nrows))
    fig.suptitle(f"forkhorn vs gunicorn (sync) vs nginx" + ("; Python apps: vs Granian and gunicorn" if R.get("python")
                 else "") + ("; TLS: vs nginx" if R.get("tls") else "") + f" — 2 workers, loopback, {R['date']} ({R['mode']} run)", fontsize=14)
    tp = R.get("throughput", {})

    # (a) absolute throughput
    ax = axes[0][0]
    scn = [s for s in ("hello keep-alive c16", "hello close c16", "echo 4KiB POST keep-alive c16",
                       "echo 4KiB POST close c16") if s in tp]
    width = 0.27
    for i, k in enumerate(KINDS):
        vals = [tp[s].get(k, {}).get("rps") or 0 for s in scn]
        bars = ax.bar([x + (i - 1) * width for x in range(len(scn))], vals, width, label=k, color=colors[k])
        for b, v in zip(bars, vals):
            if v:
                ax.text(b.get_x() + b.get_width() / 2, v, f"{v / 1000:.1f}k", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(scn)))
    ax.set_xticklabels([s.replace(" c16", "").replace(" POST", "\nPOST").replace("hello ", "hello\n") for s in scn],
                       fontsize=8)
    ax.set_ylabel("requests/s (median)")
    ax.set_title("throughput, wrk -t2 -c16")
    if scn:
        ax.legend()

    # (b) ratios, higher is better
    ax = axes[0][1]
    T = {t["name"]: t for t in R.get("targets", [])}
    items = []

    def add(label, v, goal, higher=True):
        if v is not None:
            items.append((label, v, goal, higher))

    def rps(s, k):
        return tp.get(s, {}).get(k, {}).get("rps")

    for s, short in (("hello keep-alive c16", "keep-alive"), ("hello close c16", "close")):
        add(f"{short}\nvs nginx", ratio(rps(s, "forkhorn"), rps(s, "nginx")), 0.8)
        add(f"{short}\nvs gunicorn", ratio(rps(s, "forkhorn"), rps(s, "gunicorn")), 3.0 if short == "close" else None)
    add("echo k-a\nvs gunicorn", ratio(rps("echo 4KiB POST keep-alive c16", "forkhorn"),
                                       rps("echo 4KiB POST keep-alive c16", "gunicorn")), None)
    add("c1024\nvs nginx", ratio(rps("hello keep-alive c1024", "forkhorn"), rps("hello keep-alive c1024", "nginx")), None)
    ttp = R.get("tls", {}).get("throughput", {})
    for s, short in ((TLS_KA, "TLS\nkeep-alive"), (TLS_CLOSE, "TLS\nhandshakes")):
        add(f"{short}\nvs nginx", ratio(*(ttp.get(s, {}).get(k, {}).get("rps") for k in TLS_PEERS)), 0.9)
    _bar_ratios(ax, items, "throughput ratio forkhorn / peer (higher is better, log scale)")

    # (c) ratios, lower is better
    ax = axes[0][2]
    items = []

    def p99(s, k):
        return tp.get(s, {}).get(k, {}).get("p99_ms")

    add("p99\nkeep-alive\nvs nginx", ratio(p99("hello keep-alive c16", "forkhorn"), p99("hello keep-alive c16", "nginx")), 1.5)
    mem = R.get("memory", {})

    def wrss(k, key):
        ws = mem.get(k, {}).get("idle", {}).get("workers", [])
        return statistics.mean(w.get(key, 0) for w in ws) if ws else None

    add("worker\nRSS vs\ngunicorn", ratio(wrss("forkhorn", "VmRSS"), wrss("gunicorn", "VmRSS")), 0.2)
    add("worker\nRssAnon vs\ngunicorn", ratio(wrss("forkhorn", "RssAnon"), wrss("gunicorn", "RssAnon")), None)
    add("worker\nRSS vs\nnginx", ratio(wrss("forkhorn", "VmRSS"), wrss("nginx", "VmRSS")), None)
    if R.get("tls"):
        add("TLS worker\nPrivate vs\nnginx", ratio(*(tls_worker_mem(R["tls"], k, "Private") for k in TLS_PEERS)), None)
    cs = R.get("cold_start_ms", {})
    add("cold\nstart vs\ngunicorn", ratio(cs.get("forkhorn", {}).get("median"), cs.get("gunicorn", {}).get("median")), None)
    rec = R.get("recovery", {})
    add("kill -9\nrecovery vs\ngunicorn", ratio(rec.get("forkhorn", {}).get("serve_ms"), rec.get("gunicorn", {}).get("serve_ms")), None)
    rd = R.get("reload", {}).get("duration", {})
    add("HUP\nreload vs\ngunicorn", ratio(rd.get("forkhorn", {}).get("all_new_serving_ms"),
                                  rd.get("gunicorn", {}).get("all_new_serving_ms")), None)
    _bar_ratios(ax, items, "cost ratio forkhorn / peer (lower is better, log scale)", higher_better=False)

    # (d) worker scaling
    ax = axes[1][0]
    sw = R.get("scale_workers", {})
    if sw:
        ws = sorted(sw)
        for k in KINDS:
            ax.plot(ws, [sw[w].get(k) for w in ws], "o-", label=k, color=colors[k])
        ax.set_xscale("log", base=2)
        ax.set_xticks(ws)
        ax.set_xticklabels([str(w) for w in ws])
    ax.set_xlabel("worker processes (2 CPU cores)")
    ax.set_ylabel("requests/s")
    ax.set_title("scaling: workers (hello, keep-alive, c16)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if sw:
        ax.legend()

    # (e) connection scaling
    ax = axes[1][1]
    sc = R.get("scale_conns", {})
    if sc:
        cs_ = sorted(sc)
        for k in KINDS:
            ax.plot(cs_, [sc[c].get(k) for c in cs_], "o-", label=k, color=colors[k])
        ax.set_xscale("log", base=2)
        ax.set_xticks(cs_)
        ax.set_xticklabels([str(c) for c in cs_])
    ax.set_xlabel("concurrent connections (2 workers)")
    ax.set_ylabel("requests/s")
    ax.set_title("scaling: connections (hello, keep-alive)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if sc:
        ax.legend()

    # (f) targets
    ax = axes[1][2]
    ax.axis("off")
    # Long names wrap onto a second line, and the table is laid out inside
    # this panel (bbox), so no row or column runs off the picture.
    rows = [[textwrap.fill(t["name"], 40), t["goal"], target_value(t), "met" if t["met"] else "MISSED"]
            for t in R.get("targets", [])]
    table = None
    if rows:
        table = ax.table(cellText=rows, colLabels=["target", "goal", "measured", ""], bbox=(0, 0, 1, 1),
                         colWidths=[0.54, 0.16, 0.17, 0.13], cellLoc="left")
        table.auto_set_font_size(False)
        table.set_fontsize(8.5)
        for i, r in enumerate(rows, start=1):
            table[i, 3].set_facecolor("#d3f9d8" if r[3] == "met" else "#ffe3e3")
    ax.set_title("targets (forkhorn)")
    if table is not None and len(rows) > 10:
        table.set_fontsize(7)
    if R.get("python"):
        _python_chart(axes[2], R["python"], colors)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(DOCS / "benchmarks.png", dpi=100)
    plt.close(fig)


def _python_chart(axes, P: dict, colors: dict) -> None:
    """Bottom row: the Python (WSGI) phase: req/s, p99 and worker private memory by peer."""
    tp = P.get("throughput", {})
    scn = [s for s in PY_APPS if s in tp]
    short = [s.replace(" keep-alive c16", "").replace(" hello", "\nhello").replace(" echo", "\necho") for s in scn]
    width = 0.27
    for ax, key, title, unit in ((axes[0], "rps", "Python apps: throughput (keep-alive, c16)", "requests/s (median)"),
                                 (axes[1], "p99_ms", "Python apps: p99 latency (lower is better)", "p99 ms (median)")):
        for i, k in enumerate(PY_PEERS):
            vals = [tp[s].get(k, {}).get(key) or 0 for s in scn]
            bars = ax.bar([x + (i - 1) * width for x in range(len(scn))], vals, width, label=k, color=colors[k])
            for b, v in zip(bars, vals):
                if v:
                    ax.text(b.get_x() + b.get_width() / 2, v, f"{v / 1000:.1f}k" if key == "rps" else f"{v:.1f}",
                            ha="center", va="bottom", fontsize=7)
        ax.set_xticks(range(len(scn)))
        ax.set_xticklabels(short, fontsize=8)
        ax.set_ylabel(unit)
        ax.set_title(title)
        if scn:
            ax.legend()
    ax = axes[2]
    mem = P.get("memory", {})
    rows = list(mem)
    vals = [(mem[r].get("worker_private_kb") or 0) / 1024 for r in rows]
    bars = ax.bar(range(len(rows)), vals, color=[colors[r.split()[0]] for r in rows])
    for b, v in zip(bars, vals):
        ax.text(b.get_x() + b.get_width() / 2, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r.replace(" ", "\n") for r in rows], fontsize=8)
    ax.set_ylabel("MiB per worker (Private_Clean + Private_Dirty)")
    ax.set_title("Python apps: worker private memory (Flask, after the same requests)")


def _bar_ratios(ax, items, title, higher_better=True):
    if not items:
        ax.set_title(title)
        return
    labels = [i[0] for i in items]
    vals = [i[1] for i in items]
    cols = []
    for _, v, goal, _h in items:
        if goal is None:
            cols.append("#868e96")
        else:
            ok = v >= goal if higher_better else v <= goal
            cols.append("#2f9e44" if ok else "#e03131")
    bars = ax.bar(range(len(items)), vals, color=cols)
    ax.set_yscale("log")
    ax.axhline(1.0, color="black", lw=0.8)
    for i, (_, v, goal, _h) in enumerate(items):
        if goal is not None:
            ax.plot([i - 0.4, i + 0.4], [goal, goal], "k--", lw=1)
        ax.text(i, v * 1.12, rfmt(v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(items)))
    ax.set_xticklabels(labels, fontsize=7.5)
    lo, hi = min(vals + [1.0]), max(vals + [1.0])
    ax.set_ylim(lo / 2.5, hi * 2.5)
    ax.set_title(title + "\n(dashed = target; green met, red missed, grey no target)", fontsize=10)
    _ = bars


def update_readme(R: dict) -> None:
    T = {t["name"]: t for t in R["targets"]}
    tp = R.get("throughput", {})

    def rps(s, k):
        return tp.get(s, {}).get(k, {}).get("rps")

    def p99(s, k):
        return tp.get(s, {}).get(k, {}).get("p99_ms")

    ka, cl = "hello keep-alive c16", "hello close c16"
    mem = R.get("memory", {})

    def wrss(k):
        ws = mem.get(k, {}).get("idle", {}).get("workers", [])
        return statistics.mean(w.get("VmRSS", 0) for w in ws) if ws else None

    def mark(name):
        t = T.get(name)
        return "" if t is None else (" (met)" if t["met"] else " (**missed**)")

    rec = R.get("recovery", {})
    u = R.get("reload", {}).get("under_load", {})
    lines = [
        "## Benchmarks",
        "",
        f"forkhorn against gunicorn {R['machine']['gunicorn'].split()[-1].rstrip(')')} (sync worker) and "
        f"nginx {R['machine']['nginx'].split('/')[-1]}, 2 workers each on loopback, access logs off, "
        f"`wrk -t2 -c16` on the same 2-core machine ({R['date'][:10]}, {R['mode']} run; full report with "
        "machine, commands and every figure in [docs/benchmarks.md](docs/benchmarks.md)). "
        "Ratios are forkhorn / peer.",
        "",
        "| figure | forkhorn | gunicorn | nginx | vs gunicorn | vs nginx |",
        "|---|---|---|---|---|---|",
        f"| keep-alive req/s | {fmt(rps(ka, 'forkhorn'))} | {fmt(rps(ka, 'gunicorn'))} | {fmt(rps(ka, 'nginx'))} | "
        f"{rfmt(ratio(rps(ka, 'forkhorn'), rps(ka, 'gunicorn')))} | "
        f"{rfmt(ratio(rps(ka, 'forkhorn'), rps(ka, 'nginx')))}{mark('keep-alive req/s vs nginx')} |",
        f"| `Connection: close` req/s | {fmt(rps(cl, 'forkhorn'))} | {fmt(rps(cl, 'gunicorn'))} | "
        f"{fmt(rps(cl, 'nginx'))} | {rfmt(ratio(rps(cl, 'forkhorn'), rps(cl, 'gunicorn')))}"
        f"{mark('Connection: close req/s vs gunicorn sync')} | {rfmt(ratio(rps(cl, 'forkhorn'), rps(cl, 'nginx')))}"
        f"{mark('Connection: close req/s vs nginx')} |",
        f"| keep-alive p99 latency | {fmt(p99(ka, 'forkhorn'), 2)} ms | {fmt(p99(ka, 'gunicorn'), 2)} ms | "
        f"{fmt(p99(ka, 'nginx'), 2)} ms | {rfmt(ratio(p99(ka, 'forkhorn'), p99(ka, 'gunicorn')))} | "
        f"{rfmt(ratio(p99(ka, 'forkhorn'), p99(ka, 'nginx')))}{mark('keep-alive p99 latency vs nginx')} |",
        f"| idle worker RSS | {fmt(wrss('forkhorn'))} kB | {fmt(wrss('gunicorn'))} kB | {fmt(wrss('nginx'))} kB | "
        f"{rfmt(ratio(wrss('forkhorn'), wrss('gunicorn')))}{mark('idle worker RSS vs gunicorn sync worker')} | "
        f"{rfmt(ratio(wrss('forkhorn'), wrss('nginx')))} |",
        f"| kill -9 to replacement serving | {fmt(rec.get('forkhorn', {}).get('serve_ms'), 1)} ms"
        f"{mark('replacement serving after kill -9')} | {fmt(rec.get('gunicorn', {}).get('serve_ms'), 1)} ms | "
        f"{fmt(rec.get('nginx', {}).get('serve_ms'), 1)} ms | "
        f"{rfmt(ratio(rec.get('forkhorn', {}).get('serve_ms'), rec.get('gunicorn', {}).get('serve_ms')))} | "
        f"{rfmt(ratio(rec.get('forkhorn', {}).get('serve_ms'), rec.get('nginx', {}).get('serve_ms')))} |",
        f"| failed requests, {u.get('forkhorn', {}).get('hups', 10)} HUPs under load | "
        f"{u.get('forkhorn', {}).get('failed', 'n/a')}{mark(next((n for n in T if n.startswith('failed requests')), ''))} | "
        f"{u.get('gunicorn', {}).get('failed', 'n/a')} | {u.get('nginx', {}).get('failed', 'n/a')} | | |",
        "",
        *readme_python_lines(R, mark),
        *readme_tls_lines(R, mark),
        "![benchmarks](docs/benchmarks.png)",
        "",
        "Rerun (installs wrk, nginx, openssl, and gunicorn + Granian + Flask + matplotlib into `scripts/.venv` if missing; "
        "builds the release "
        "binary; rewrites `docs/benchmarks.md`, `docs/benchmarks.png` and this section):",
        "",
        "```sh",
        "scripts/bench.sh           # full run, under 22 minutes",
        "scripts/bench.sh --quick   # 1 short run of each figure, under 5 minutes; report in scripts/.logs/quick/",
        "scripts/bench.sh --render-only   # no benchmark: re-render the report, chart and this section from docs/benchmarks.json",
        "```",
        "",
    ]
    section = "\n".join(lines)
    text = README.read_text()
    m = re.search(r"(?m)^## Benchmarks[ \t]*$", text)
    if m:
        nxt = re.search(r"(?m)^## ", text[m.end():])
        end = m.end() + nxt.start() if nxt else len(text)
        text = text[:m.start()] + section + ("\n" + text[end:] if nxt else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    README.write_text(text)


def readme_python_lines(R: dict, mark) -> list[str]:
    """README rows for the Python (WSGI) phase, when it ran."""
    P = R.get("python")
    if not P:
        return []
    tp = P.get("throughput", {})

    def get(scn, k, key="rps"):
        return tp.get(scn, {}).get(k, {}).get(key)

    mem = P.get("memory", {})

    def priv(row):
        return mem.get(row, {}).get("worker_private_kb")

    lines = [
        f"Python WSGI apps (`scripts/python_bench/`), forkhorn's embedded CPython against {R['machine'].get('granian', 'Granian')} "
        "(`--interface wsgi`) and gunicorn `-k sync`, 2 workers each, keep-alive `wrk -t2 -c16` "
        f"(median of {P['runs']} runs of {P['dur']} s):",
        "",
        "| figure | forkhorn | Granian | gunicorn | vs Granian | vs gunicorn |",
        "|---|---|---|---|---|---|",
    ]
    for scn, short in ((PY_PLAIN, "plain WSGI hello"), (PY_FLASK, "Flask hello"),
                       ("4 KiB POST echo keep-alive c16", "4 KiB POST echo")):
        f, g, u = get(scn, "forkhorn"), get(scn, "granian"), get(scn, "gunicorn")
        mg = mark("Python: plain WSGI keep-alive req/s vs Granian") if scn == PY_PLAIN else (
            mark("Python: Flask hello keep-alive req/s vs Granian") if scn == PY_FLASK else "")
        mu = mark("Python: plain WSGI keep-alive req/s vs gunicorn sync") if scn == PY_PLAIN else ""
        lines.append(f"| {short} req/s | {fmt(f)} | {fmt(g)} | {fmt(u)} | {rfmt(ratio(f, g))}{mg} | "
                     f"{rfmt(ratio(f, u))}{mu} |")
        f, g, u = get(scn, "forkhorn", "p99_ms"), get(scn, "granian", "p99_ms"), get(scn, "gunicorn", "p99_ms")
        lines.append(f"| {short} p99 | {fmt(f, 2)} ms | {fmt(g, 2)} ms | {fmt(u, 2)} ms | {rfmt(ratio(f, g))} | "
                     f"{rfmt(ratio(f, u))} |")
    f, g, gp, gr = priv("forkhorn --preload"), priv("gunicorn"), priv("gunicorn --preload"), priv("granian")
    lines += [
        f"| Flask worker private memory (forkhorn `--preload`; gunicorn without, as usually run) | {fmt(f)} kB | "
        f"{fmt(gr)} kB | {fmt(g)} kB (`--preload`: {fmt(gp)} kB) | {rfmt(ratio(f, gr))} | {rfmt(ratio(f, g))}"
        f"{mark('Python: forkhorn --preload worker private memory vs gunicorn worker')} |",
        "",
        f"p99 vs Granian, worst of the three apps: {rfmt(next((t['value'] for t in R['targets'] if t['name'].startswith('Python: p99')), None))}"
        f"{mark('Python: p99 latency vs Granian (worst of the 3 apps)')}.",
        "",
    ]
    return lines


def readme_tls_lines(R: dict, mark) -> list[str]:
    """README rows for the TLS phase, when it ran."""
    S = R.get("tls")
    if not S:
        return []
    tp = S.get("throughput", {})

    def get(scn, k, key="rps"):
        return tp.get(scn, {}).get(k, {}).get(key)

    neg = S.get("negotiated", {}).get("nginx") or S.get("negotiated", {}).get("forkhorn") or {}
    tickets = ("no session tickets or cache on either" if not S.get("negotiated", {}).get("forkhorn", {}).get("resumed")
               else "no session tickets or cache on nginx; forkhorn issues tickets, which wrk is kept from using")
    lines = [
        f"TLS, forkhorn (rustls) against nginx {R['machine']['nginx'].split('/')[-1]} (OpenSSL) with one ECDSA P-256 "
        f"self-signed certificate, TLS 1.2 and 1.3, {tickets} (every new connection "
        f"is a full handshake{', ' + neg['version'] + ' ' + neg['cipher'] if neg.get('version') else ''}), "
        f"2 workers each, `wrk -t2 -c16 https://...` (median of {S['runs']} runs of {S['dur']} s):",
        "",
        "| figure | forkhorn | nginx | vs nginx |",
        "|---|---|---|---|",
    ]
    for scn, short, tname in ((TLS_KA, "TLS keep-alive req/s", "TLS keep-alive req/s vs nginx"),
                              (TLS_CLOSE, "new TLS handshakes/s (`Connection: close`)",
                               "TLS new handshakes/s (Connection: close) vs nginx")):
        f, n = get(scn, "forkhorn"), get(scn, "nginx")
        lines.append(f"| {short} | {fmt(f)} | {fmt(n)} | {rfmt(ratio(f, n))}{mark(tname)} |")
    for key, short in (("VmRSS", "worker RSS after the TLS load"), ("Private", "worker private memory after the TLS load")):
        f, n = tls_worker_mem(S, "forkhorn", key), tls_worker_mem(S, "nginx", key)
        lines.append(f"| {short} | {fmt(f)} kB | {fmt(n)} kB | {rfmt(ratio(f, n))} |")
    lines.append("")
    return lines


# ---------------------------------------------------------------- main


def _on_signal(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 short run of each figure (< 5 min)")
    ap.add_argument("--phases",
                    default="throughput,scale_workers,overheads,memory,cold_start,recovery,timeout,reload,python,tls",
                    help="comma-separated subset (for debugging)")
    ap.add_argument("--no-readme", action="store_true", help="do not touch README.md")
    ap.add_argument("--out", help="where benchmarks.{md,png,json} go (default: docs/ for a full run; "
                                  "scripts/.logs/quick/ for --quick, which then leaves docs/ and README.md alone)")
    ap.add_argument("--render", metavar="JSON", help="only re-render md/png (and README) from a saved benchmarks.json")
    args = ap.parse_args()
    global DOCS
    if args.out:
        DOCS = Path(args.out).resolve()
    elif args.quick:
        DOCS = LOGDIR / "quick"
    if DOCS != ROOT / "docs":
        args.no_readme = True
    argv = sys.argv[1:]
    if args.render:
        R = json.loads(Path(args.render).read_text())
        for k in ("scale_workers", "scale_conns"):
            if k in R:
                R[k] = {int(x): v for x, v in R[k].items()}
        COMMANDS.update(R.get("commands", {}))
        ANOMALIES.extend(R.get("anomalies", []))
        R["targets"] = targets(R)
        shutil.rmtree(TMP, ignore_errors=True)
        write_report(R, R.get("argv", []), R.get("elapsed_s", 0.0))
        write_chart(R)
        if not args.no_readme:
            update_readme(R)
        return 0
    # INT too: a shell's background job inherits SIGINT ignored, and Ctrl-C must still clean up.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    except (ValueError, OSError):
        pass
    LOGDIR.mkdir(exist_ok=True)
    for p in LOGDIR.iterdir():
        if p.is_file():
            p.unlink()
    needed = [(BIN, "forkhorn (cargo build --release)"), (GUNICORN, "gunicorn"), (WRK, "wrk"), (NGINX, "nginx")]
    if "python" in args.phases:
        needed.append((GRANIAN, "granian"))
    if "tls" in args.phases:
        needed.append((OPENSSL, "openssl"))
    for path, what in needed:
        if not os.access(path, os.X_OK):
            print(f"missing {what}: {path}; run scripts/bench.sh", file=sys.stderr)
            return 2

    b = Bench(args.quick)
    R = b.R
    R.update(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
             runs=b.runs, headline_runs=b.headline_runs, reps=b.reps, dur=b.dur, dur_short=b.dur_short, reqs_after=b.reqs_after,
             idle_conns=b.idle_conns, machine=machine())
    log(f"forkhorn bench ({R['mode']}): {R['machine']['cpu']}, nproc {R['machine']['nproc']}, logs in {LOGDIR}")
    # Noise budget (waits for quiet + reruns of noisy runs), per phase, so the run stays bounded.
    shares = {"throughput": 50.0, "scale_workers": 20.0, "overheads": 30.0, "python": 60.0, "tls": 30.0}
    scale = 0.1 if args.quick else 1.0
    total_budget = sum(shares.values()) * scale
    R["load_start"] = machine_load()
    pct = wait_quiet(5 if args.quick else 20)
    R["foreign_start_pct"] = pct
    log(f"load average {R['load_start']}; other processes use {pct:.0f}% of the CPU"
        + (" (still busy after waiting; figures will be noisier)" if pct >= 10 else ""))
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    interrupted = False
    try:
        for ph in phases:
            log(f"== phase {ph}")
            SETTLE["budget"] = SETTLE["waited"] + shares.get(ph, 0.0) * scale
            try:
                getattr(b, f"phase_{ph}")()
            except KeyboardInterrupt:
                raise
            except Exception as e:
                R["errors"][ph] = f"{type(e).__name__}: {str(e)[:400]}"
                log(f"phase {ph} failed:\n{traceback.format_exc()}")
                stop_all()
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted; stopping servers")
    finally:
        stop_all()
        shutil.rmtree(TMP, ignore_errors=True)
    if interrupted:
        return 130
    elapsed = time.perf_counter() - T_START
    R["elapsed_s"] = elapsed
    R["argv"] = argv
    R["load_end"] = machine_load()
    R["settle_wait_s"] = SETTLE["waited"]
    R["reruns"] = SETTLE["reruns"]
    R["noise_budget_s"] = total_budget
    R["foreign_cpu_pct"] = {"median": med(FOREIGN), "max": max(FOREIGN) if FOREIGN else None, "runs": len(FOREIGN)}
    R["targets"] = targets(R)
    R["anomalies"] = ANOMALIES
    R["commands"] = COMMANDS
    DOCS.mkdir(parents=True, exist_ok=True)
    (DOCS / "benchmarks.json").write_text(json.dumps(R, indent=1, default=str))
    write_report(R, argv, elapsed)
    write_chart(R)
    if not args.no_readme:
        update_readme(R)
    log(f"wrote {DOCS}/benchmarks.md, .png, .json{'' if args.no_readme else ' and README.md'} in {elapsed:.0f} s")
    for t in R["targets"]:
        v = t["value"]
        log(f"  {'MET   ' if t['met'] else 'MISSED'} {t['name']}: {t['detail'] or v} (goal {t['goal']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
