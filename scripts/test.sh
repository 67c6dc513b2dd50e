#!/usr/bin/env bash
# The README's test command: installs what the tests need (as root, removing nothing), then
# runs formatting, lints and every test tier. Root tests skip themselves when not root.
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
cargo build --workspace --bins
cargo test --workspace -- --test-threads=2
