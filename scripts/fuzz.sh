#!/usr/bin/env bash
# The fuzz targets of tests/fuzz: the protocol decoder, the DHCP server's per-frame path, CNI
# results and conf files, the config parser. Installs cargo-fuzz (crates.io) if missing and
# runs on the stable toolchain without a sanitizer (`-s none`).
#
#   scripts/fuzz.sh                 30 s each
#   scripts/fuzz.sh --seconds 15    15 s each (what CI runs)
#   scripts/fuzz.sh --runs 10000000 that many runs each
#
# Prints one line a target: "fuzz: TARGET: Done N runs in S second(s)"; exits 1 on a crash,
# leaving the input under tests/fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
limit=(-max_total_time=30)
case "${1:-}" in
  --seconds) limit=(-max_total_time="$2") ;;
  --runs) limit=(-runs="$2") ;;
  "") ;;
  *) echo "usage: scripts/fuzz.sh [--seconds S | --runs N]" >&2; exit 2 ;;
esac
if ! command -v cargo-fuzz >/dev/null; then
  cargo install --locked cargo-fuzz@0.13.2
fi
cargo fuzz build --fuzz-dir tests/fuzz -s none
for t in protocol_frame dhcp_reply cni_result config_parse; do
  corpus=tests/fuzz/corpus/$t
  mkdir -p "$corpus"
  dirs=("$corpus")
  [ -d "tests/fuzz/seeds/$t" ] && dirs+=("tests/fuzz/seeds/$t")
  if ! out=$(cargo fuzz run --fuzz-dir tests/fuzz -s none "$t" "${dirs[@]}" -- "${limit[@]}" 2>&1); then
    echo "$out" | tail -40
    echo "fuzz: $t: CRASHED (input under tests/fuzz/artifacts/$t/)"
    exit 1
  fi
  echo "fuzz: $t: $(echo "$out" | grep -E '^Done [0-9]+ runs' | tail -1)"
done
