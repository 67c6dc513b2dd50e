#!/usr/bin/env bash
# The attach-latency benchmark (not a test, not in CI): builds the release binaries, then runs
# tests/src/bin/bench-attach/ (one module per kind) as root. Arguments go to bench-attach (`--help` lists them).
# Run it on a quiet machine: it compares latencies, and a concurrent build skews both sides.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins
if [ "$(id -u)" = 0 ]; then
  exec target/release/bench-attach "$@"
else
  exec sudo target/release/bench-attach "$@"
fi
