#!/usr/bin/env bash
# N worker deaths in a row (default 1000): /crash (abort), /exit?code=1,
# /exit?code=7 (not 3 or 4: those halt the master), kill -9, and two
# timeouts (-t 2), with --min-worker-lifetime 0 --max-boot-failures 0 so the
# crash-loop backoff stays out of it. Then the master's open fds must equal
# and its RSS be within 5% + 256 KiB of what they were after a 40-death
# warm-up, the worker tmp dir must hold only forkhorn.ctl, no zombies, exit 0
# on TERM. The quick version is tests/faults.rs
# (a_thousand_worker_deaths_leak_no_descriptors_memory_or_tmp_files).
#
#   scripts/chaos/worker_deaths.sh [N]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet
exec python3 scripts/chaos/chaos.py deaths "${1:-1000}"
