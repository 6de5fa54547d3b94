#!/usr/bin/env bash
# Benchmark forkhorn against gunicorn (sync) and nginx on this machine,
# forkhorn's embedded CPython against gunicorn (sync) and Granian on the same
# WSGI apps (scripts/python_bench/), and forkhorn against nginx over TLS.
#
#   scripts/bench.sh            full run (< 22 min)
#   scripts/bench.sh --quick    1 short run of each figure (< 5 min)
#   scripts/bench.sh --quick --phases python
#                               only the Python (WSGI) comparison
#   scripts/bench.sh --phases tls
#                               only TLS, forkhorn vs nginx with one certificate
#                               (made with openssl); add --quick for one short run
#   scripts/bench.sh --render-only
#                               no benchmark: re-render docs/benchmarks.md, .png
#                               and README's section from docs/benchmarks.json
#
# Installs what is missing (wrk, nginx and openssl with apt-get; gunicorn, Granian, Flask
# and matplotlib from PyPI into scripts/.venv), builds target/release/forkhorn, raises
# `ulimit -n`, then runs scripts/bench.py, which writes docs/benchmarks.md,
# docs/benchmarks.png, docs/benchmarks.json and the "## Benchmarks" section of
# README.md. All traffic stays on 127.0.0.1. Every server it starts is stopped
# on exit, error or Ctrl-C (bench.py's finally + signal handlers).
set -euo pipefail
cd "$(dirname "$0")/.."

installed=()
say() { printf '[bench.sh] %s\n' "$*" >&2; }

# --- re-render only: needs matplotlib, nothing else ---------------------------
if [ "${1:-}" = --render-only ]; then
    shift
    VENV=scripts/.venv
    [ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
    if ! "$VENV/bin/python" -c "import matplotlib" >/dev/null 2>&1; then
        say "installing matplotlib from PyPI into $VENV"
        "$VENV/bin/pip" install -q matplotlib
    fi
    exec "$VENV/bin/python" scripts/bench.py --render docs/benchmarks.json "$@"
fi

# --- system packages: wrk, nginx, openssl ----------------------------------
need_apt=()
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)  # the TLS phase's certificate
if [ ${#need_apt[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    say "installing with apt-get: ${need_apt[*]}"
    $SUDO apt-get update -qq
    for pkg in "${need_apt[@]}"; do
        if [ "$pkg" = nginx ]; then
            # nginx-light is enough (we only need `return`); fall back to nginx.
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx-light >/dev/null 2>&1 \
                && installed+=("nginx-light (apt)") \
                || { DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx >/dev/null \
                     && installed+=("nginx (apt)"); }
            # The packaged service is not used; we run our own instances.
            $SUDO systemctl stop nginx >/dev/null 2>&1 || $SUDO service nginx stop >/dev/null 2>&1 || true
        else
            DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$pkg" >/dev/null
            installed+=("$pkg (apt)")
        fi
    done
fi

# --- Python venv: gunicorn, granian, flask (latest), matplotlib -------------
# forkhorn runs the Python apps with VIRTUAL_ENV=scripts/.venv, so this venv's
# interpreter should be the one forkhorn embeds: the same `python3` (PYTHON=).
PY=${PYTHON:-python3}
VENV=scripts/.venv
if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtualenv $VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
    installed+=("virtualenv $VENV")
fi
for pkg in gunicorn granian flask matplotlib; do
    if ! "$VENV/bin/python" -c "import $pkg" >/dev/null 2>&1; then
        say "installing $pkg from PyPI into $VENV"
        "$VENV/bin/pip" install -q --upgrade "$pkg"
        installed+=("$pkg $("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('$pkg'))") (PyPI)")
    fi
done

if [ ${#installed[@]} -gt 0 ]; then
    say "installed: ${installed[*]}"
else
    say "installed: nothing (wrk, nginx, openssl, gunicorn, granian, flask, matplotlib already present)"
fi
say "versions: $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2); $( (nginx -v || /usr/sbin/nginx -v) 2>&1);" \
    "gunicorn $("$VENV/bin/gunicorn" --version 2>&1 | awk '{print $NF}' | tr -d ")");" \
    "$("$VENV/bin/granian" --version 2>&1); $(rustc --version)"

# --- forkhorn release binary (src/ may be mid-edit: retry) ------------------
for attempt in 1 2 3 4 5; do
    if cargo build --release --quiet 2>"$VENV/build.log"; then
        break
    fi
    if [ "$attempt" -eq 5 ]; then
        cat "$VENV/build.log" >&2
        say "cargo build --release failed 5 times; giving up"
        exit 1
    fi
    say "cargo build --release failed (attempt $attempt); retrying in 60 s"
    tail -5 "$VENV/build.log" >&2
    sleep 60
done

# --- file descriptors for 1024 connections + 1000 idle ones -----------------
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
say "ulimit -n $(ulimit -n)"

exec "$VENV/bin/python" scripts/bench.py "$@"
