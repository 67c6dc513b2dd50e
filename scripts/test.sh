#!/usr/bin/env bash
# The README's test command: installs what the tests need (as root, removing nothing), then
# runs formatting, lints, every test tier and a short run of each fuzz target. Root tests skip themselves (printing why) when
# not root. Ends with one line: "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" = 0 ]; then
  bash scripts/install-test-deps.sh
else
  echo "test.sh: not root: not installing packages; root-only tests will skip" >&2
fi
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The integration tests run the daemon and vmwrapper binaries: build them first.
cargo build --workspace --bins --examples
# The Debian package, which tests/tests/packaging.rs inspects.
bash scripts/deb.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace -- --test-threads=2 2>&1 | tee "$log" || status=$?
# A short run of each fuzz target (scripts/fuzz.sh): a crash fails the run.
if ! bash scripts/fuzz.sh --seconds 15 2>&1 | tee -a "$log"; then
  status=1
  echo "test result: FAILED. 0 passed; 1 failed (a fuzz target crashed)" >>"$log"
fi
# One closing line for all of cargo's per-binary "test result:" lines.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
