#!/usr/bin/env bash
# The demo: installs what it needs, builds, starts tapmanager inside a network namespace of its
# own (the machine's network is untouched), boots a tiny VM through vmwrapper as the
# unprivileged user `nobody`, and shows the lease and the ping. Everything is removed at the end.
#
#   sudo scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (sudo scripts/demo.sh): it starts the daemon" >&2; exit 1; }

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "installing packages (QEMU, kernel, busybox, nftables; nothing is removed)"
bash scripts/install-test-deps.sh
say "building"
cargo build --workspace --bins
say "building the guest (Debian kernel + busybox initramfs)"
GUEST=/tmp/tapmanager-e2e-guest
bash tests/guest/build-initramfs.sh "$GUEST" >/dev/null
chmod -R a+rX "$GUEST"

NS=tmdemo-$$
DIR=$(mktemp -d /tmp/tmdemo.XXXXXX)
chmod 755 "$DIR"
GID=47900                      # the demo's "tapmanager" group, by number
DAEMON=""
cleanup() {
    set +e
    [ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
    ip netns del "$NS" 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT

cat >"$DIR/tapmanager.toml" <<CONF
socket = "$DIR/tapmanager.sock"
state_dir = "$DIR/state"
group = "$GID"

[networks.default]
kind = "bridge"
bridge = "tmbr0"
gateway = "10.88.0.1/24"
dns = ["10.88.0.1"]
CONF

say "starting tapmanager in network namespace $NS"
ip netns add "$NS"
ip -n "$NS" link set lo up
nsenter --net="/run/netns/$NS" target/debug/tapmanager serve --config "$DIR/tapmanager.toml" 2>"$DIR/daemon.log" &
DAEMON=$!
for _ in $(seq 100); do [ -S "$DIR/tapmanager.sock" ] && break; sleep 0.05; done
[ -S "$DIR/tapmanager.sock" ] || { cat "$DIR/daemon.log"; exit 1; }

say "booting a VM as user nobody (group $GID): vmwrapper --net default -- qemu-system-x86_64 ..."
setpriv --reuid=nobody --regid=nogroup --groups="$GID" \
    target/debug/vmwrapper --socket "$DIR/tapmanager.sock" --id demo --net default -- \
    qemu-system-x86_64 -accel tcg -m 256 -nographic -no-reboot -nodefaults -serial stdio \
    -kernel "$GUEST/vmlinuz" -initrd "$GUEST/initramfs.cpio.gz" \
    -append "console=ttyS0 quiet panic=-1" </dev/null >"$DIR/console.log" &
VM=$!
sleep 1
say "tapmanager list (as root, while the VM runs)"
target/debug/tapmanager list --socket "$DIR/tapmanager.sock" || true
wait "$VM" || true

say "what the guest printed"
tr -d '\r' <"$DIR/console.log" | grep -E '^TM-(LEASE|PING|DONE)' || true
say "after QEMU exited: TAPs left in $NS"
ip -n "$NS" -br link show type tun || true
if tr -d '\r' <"$DIR/console.log" | grep -q '^TM-PING-OK'; then
    say "demo OK: the guest leased its address from tapmanager and pinged its gateway"
else
    say "demo FAILED; daemon log:"; cat "$DIR/daemon.log"; exit 1
fi
