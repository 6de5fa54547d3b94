#!/usr/bin/env bash
# kill -9 a random worker every 200 ms for SECONDS (default 10) while two
# clients send GET /pid on new connections (10 s timeouts); then all 4
# workers must be back, every failed request must have had a kill in flight
# (and failures <= kills x 2), no request may hang, and the master exits 0
# on TERM. The quick version is tests/faults.rs
# (sigkilling_a_random_worker_every_200ms_fails_only_requests_in_flight_on_it).
#
#   scripts/chaos/kill_storm.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet
exec python3 scripts/chaos/chaos.py kill-storm "${1:-10}"
