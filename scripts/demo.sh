#!/usr/bin/env bash
# The demo: installs what it needs, builds, starts tapmanager inside a network namespace of its
# own (the machine's network is untouched) with the shipped desktop `default` network (NAT out,
# DNS forwarded to the host's resolver), beside a second namespace that stands in for the
# internet (a server at 192.0.2.80 and a resolver that knows www.example.test), boots a tiny
# VM through vmwrapper as the unprivileged user `nobody`, and shows its lease, the name it
# resolved through its gateway and its ping of that server. Everything is removed at the end.
#
#   scripts/demo.sh          (as root, or as a user with sudo: it asks sudo itself)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/as-root.sh
as_root scripts/demo.sh "$@" || { echo "demo.sh: run as root: it starts the daemon (and sudo is not installed)" >&2; exit 1; }

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
NET=tmdemo-net-$$
DIR=$(mktemp -d /tmp/tmdemo.XXXXXX)
chmod 755 "$DIR"
GID=47900                      # the demo's "tapmanager" group, by number
DAEMON=""
DNS=""
cleanup() {
    set +e
    [ -n "$DAEMON" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
    [ -n "$DNS" ] && kill "$DNS" 2>/dev/null && wait "$DNS" 2>/dev/null
    ip netns del "$NS" 2>/dev/null
    ip netns del "$NET" 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT

# The shipped default network, with the "host's" resolv.conf naming the stand-in resolver.
sed -e "s|^socket = .*|socket = \"$DIR/tapmanager.sock\"|" \
    -e "s|^state_dir = .*|state_dir = \"$DIR/state\"|" \
    -e "s|^group = .*|group = \"$GID\"|" packaging/tapmanager.toml >"$DIR/tapmanager.toml"
echo "resolv_conf = \"$DIR/resolv.conf\"" >>"$DIR/tapmanager.toml"
echo "nameserver 192.0.2.53" >"$DIR/resolv.conf"

say "making the demo's host ($NS) and its internet ($NET: 192.0.2.80, a resolver at 192.0.2.53)"
ip netns add "$NS"
ip netns add "$NET"
ip -n "$NS" link set lo up
ip -n "$NET" link set lo up
ip -n "$NS" link add tmdemo0 type veth peer name wan0 netns "$NET"
ip -n "$NS" addr add 192.0.2.1/24 dev tmdemo0
ip -n "$NS" link set tmdemo0 up
ip -n "$NS" route add default via 192.0.2.254
ip -n "$NET" addr add 192.0.2.254/24 dev wan0
ip -n "$NET" addr add 192.0.2.53/24 dev wan0
ip -n "$NET" addr add 192.0.2.80/24 dev wan0
ip -n "$NET" link set wan0 up
ip netns exec "$NET" python3 tests/guest/fake-dns.py 192.0.2.53 www.example.test 192.0.2.80 &
DNS=$!

say "starting tapmanager in $NS with the shipped default network"
grep -E '^(kind|bridge|gateway|nat|dns_forward|resolv_conf)' "$DIR/tapmanager.toml"
nsenter --net="/run/netns/$NS" target/debug/tapmanager serve --config "$DIR/tapmanager.toml" 2>"$DIR/daemon.log" &
DAEMON=$!
for _ in $(seq 100); do [ -S "$DIR/tapmanager.sock" ] && break; sleep 0.05; done
[ -S "$DIR/tapmanager.sock" ] || { cat "$DIR/daemon.log"; exit 1; }

say "booting a VM as user nobody (group $GID): vmwrapper --net default -- qemu-system-x86_64 ..."
setpriv --reuid=nobody --regid=nogroup --groups="$GID" \
    target/debug/vmwrapper --socket "$DIR/tapmanager.sock" --id demo --net default -- \
    qemu-system-x86_64 -accel tcg -m 256 -nographic -no-reboot -nodefaults -serial stdio \
    -kernel "$GUEST/vmlinuz" -initrd "$GUEST/initramfs.cpio.gz" \
    -append "console=ttyS0 quiet panic=-1 tm.resolve=www.example.test" </dev/null >"$DIR/console.log" &
VM=$!
sleep 1
say "tapmanager list (as root, while the VM runs)"
target/debug/tapmanager list --socket "$DIR/tapmanager.sock" || true
wait "$VM" || true

say "what the guest printed"
tr -d '\r' <"$DIR/console.log" | grep -E '^TM-(LEASE|RESOLVE|PING|DONE)' || true
say "the default network's masquerade rule, with its counter"
ip netns exec "$NS" nft list table ip tapmanager_bridge_nat | grep masquerade || true
say "after QEMU exited: TAPs left in $NS"
ip -n "$NS" -br link show type tun || true
if tr -d '\r' <"$DIR/console.log" | grep -q '^TM-PING-OK 192.0.2.80'; then
    say "demo OK: the guest leased its address, resolved www.example.test through its gateway and reached it through NAT"
else
    say "demo FAILED; daemon log:"; cat "$DIR/daemon.log"; exit 1
fi
