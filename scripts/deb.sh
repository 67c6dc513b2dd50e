#!/usr/bin/env bash
# Builds the Debian package (target/debian/tapmanager_*.deb) with cargo-deb, installing
# cargo-deb from crates.io if it is missing. Prints the package's path.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-deb >/dev/null; then
  cargo install --locked cargo-deb@3.8.0
fi
# Only the two packages: the test crate's features (crash points) stay out of this build.
cargo build --release -p tapmanager -p vmwrapper
cargo deb -p tapmanager --no-build --strip --output target/debian/ 2>&1 | tail -n 1
