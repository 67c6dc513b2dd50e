#!/usr/bin/env bash
# The README's test command: installs what the tests need (as root, removing nothing), then
# runs formatting, lints, every test tier and a short run of each fuzz target. Root tests skip themselves (printing why) when
# not root. Ends with one line: "tests: N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/as-root.sh
# As a user with sudo: again through sudo. Without sudo: unprivileged, root tests skipping.
as_root scripts/test.sh "$@" || true
if [ "$(id -u)" = 0 ]; then
  bash scripts/install-test-deps.sh
else
  echo "test.sh: not root and no sudo: not installing packages; root-only tests will skip" >&2
fi
start=$(date +%s)
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# The integration tests run the daemon and vmwrapper binaries: build them first.
cargo build --workspace --bins --examples
# The developers' docs (private items too): a link to nothing fails the run.
RUSTDOCFLAGS="-D rustdoc::broken_intra_doc_links -A rustdoc::private_intra_doc_links" \
  cargo doc --workspace --no-deps --document-private-items --quiet
# The Debian package, which tests/tests/packaging.rs inspects.
bash scripts/deb.sh
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
times=("$(printf '%-28s %4d s' "fmt, clippy, build, doc, .deb" $(($(date +%s) - start)))")
# tier NAME CMD...: runs one tier with its output in the log, and notes its wall time.
tier() {
  local name=$1 start rc=0
  shift
  start=$(date +%s)
  "$@" 2>&1 | tee -a "$log" || rc=$?
  times+=("$(printf '%-28s %4d s%s' "$name" $(($(date +%s) - start)) "$([ $rc = 0 ] || echo '  FAILED')")")
  [ $rc = 0 ] || status=1
}
# (The two VM tiers run on their own below, for their times.)
tier "unit + root (setns)" cargo test --workspace -- --test-threads=2 \
  --skip the_package_under_systemd_in_a_debian_vm --skip real_guest_
# Every kind's root tests again with the daemon started by `ip netns exec`, as operators do:
# a mount namespace of its own, that network namespace's sysfs mounted read-write.
tier "root kinds (ip netns exec)" env TM_LAUNCH=ip-netns-exec cargo test -p tapmanager-tests \
  --test bridge --test routed --test isolated --test masquerade --test macvtap --test cni --test pod \
  --test desktop --test crash --test journal --test ipv6 -- --test-threads=2
# The package under a real systemd: a Debian 12 VM (tests/vm/build-image.sh, cached under
# target/vm) installs target/debian's .deb and checks it with systemd's tools (README.md,
# "The package under systemd"). Its checks and the image, boot and tier times are printed.
tier "systemd VM (Debian 12)" cargo test -p tapmanager-tests --test vm_systemd -- --nocapture
# A real distribution guest (tests/tests/vm_guest.rs, tests/vm/guest/README.md): the same
# Debian 12 image booted through vmwrapper as the guest; networkd, dhclient and dhcpcd lease
# from the daemon, cloud-init applies vmwrapper's seed. Boot times and every check printed.
tier "real guest VM (Debian 12)" cargo test -p tapmanager-tests --test vm_guest -- --nocapture --test-threads=2
# A short run of each fuzz target (scripts/fuzz.sh): a crash fails the run.
fuzz() {
  bash scripts/fuzz.sh --seconds 15 || {
    echo "test result: FAILED. 0 passed; 1 failed (a fuzz target crashed)"
    return 1
  }
}
tier "fuzz" fuzz
printf 'tier times:\n'
printf '  %s\n' "${times[@]}"
# One closing line for all of cargo's per-binary "test result:" lines.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
