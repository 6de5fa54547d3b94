#!/usr/bin/env bash
# Soak forkhorn under mixed traffic while workers are SIGKILLed and masters
# reloaded (HUP), then check what an operator would: every failed request was
# in flight on a killed worker, the master's descriptors and RSS are flat, no
# zombie children, nothing left in the worker tmp dir, exit 0 on TERM.
#
#   scripts/soak.sh [DURATION_SECONDS]     default 600; CI runs 60
#
# Builds target/release/forkhorn, then runs scripts/chaos/chaos.py soak
# (Python 3, standard library only), which starts
#   forkhorn -w 4 --max-requests 200 --max-requests-jitter 50 -t 5 chaos
#   forkhorn -w 2 --max-requests 200 --max-requests-jitter 50 -t 5 echo
# on 127.0.0.1 with ports picked by the kernel and their own tmp dirs, and
# drives 4 client threads at a moderate rate with this mix:
#   GET /pid on a new connection; GET + sized POST + chunked POST on one
#   keep-alive connection; GET /sleep?s=0.2; GET /stream?chunks=5&interval_ms=50
#   (body checked); malformed requests (must get 400); POST bodies to echo
#   (echoed body checked byte for byte).
# Faults: kill -9 of a random worker every 1-3 s (3 of 4 on chaos), HUP of a
# random master every 5-15 s; max-requests recycles all along.
#
# Judging failures: a client cannot know which worker holds its connection
# until it is answered, so a failed request (reset, early close, wrong
# answer) is excused only if we SIGKILLed a worker *of that server* while
# the request was in flight (start..end, 50 ms slack). Each client has one
# connection at a time, so a kill can break at most one request per client:
# failures must also be <= kills x clients. A failure with no kill in its
# lifetime (e.g. one caused by a HUP or a recycle, which must be graceful) is
# a violation, and so is any request unanswered within 10 s (a hang).
# "Flat" means: master open fds at the end == at the end of the warm-up
# (min(10 s, DURATION/6)); RSS at most 5% + 512 KiB above it.
#
# Prints a one-screen summary; exits non-zero on any violation.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${1:-600}
case $duration in
    '' | *[!0-9]*) echo "usage: scripts/soak.sh [DURATION_SECONDS]" >&2; exit 2 ;;
esac
cargo build --release --quiet
exec python3 scripts/chaos/chaos.py soak "$duration"
