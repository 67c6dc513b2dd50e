#!/bin/bash
# Boot the e2e guest against busybox udhcpd, all inside a throwaway network namespace.
# Checks the guest tooling (kernel, initramfs, QEMU) without tapmanager and without touching
# the host's network.
#
#   sudo tests/guest/run-smoke.sh [tap|fd] [GUESTDIR]
#
#   tap  QEMU opens the TAP itself: -netdev tap,ifname=tg0,script=no,downscript=no (default)
#   fd   tapfd-exec.py opens /dev/net/tun (TUNSETIFF IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) and
#        execs QEMU with it at fd 3: -netdev tap,fd=3 (how vmwrapper passes TAPs)
#   GUESTDIR  where build-initramfs.sh puts/caches the guest (default /tmp/tm-guest)
#   TM_SMOKE_P2P=1       hand out a /32 with the gateway reached via option 121 routes
#   TM_QEMU_USER=nobody  run QEMU unprivileged (setpriv, no capabilities); in tap mode the TAP
#                        is then created with that owner
#
# Exit 0 when the console shows the expected TM-LEASE, TM-PING-OK and TM-DONE lines.
set -euo pipefail

MODE=${1:-tap}
GUEST=${2:-/tmp/tm-guest}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[ "$(id -u)" -eq 0 ] || { echo "run-smoke: needs root (skipped)"; exit 77; }
case "$MODE" in tap|fd) ;; *) echo "usage: $0 [tap|fd] [GUESTDIR]" >&2; exit 2 ;; esac
command -v qemu-system-x86_64 >/dev/null || { echo "run-smoke: qemu-system-x86_64 missing; run scripts/install-test-deps.sh" >&2; exit 1; }

"$HERE/build-initramfs.sh" "$GUEST"

NS=tmguest-$$
TAP=tg0
WORK=$(mktemp -d /tmp/tmguest-run.XXXXXX)
QEMU_PID=""
cleanup() {
    set +e
    if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then kill "$QEMU_PID"; fi
    if [ -s "$WORK/udhcpd.pid" ]; then
        p=$(cat "$WORK/udhcpd.pid")
        # only kill it if it still is our udhcpd
        if [ -r "/proc/$p/cmdline" ] && tr '\0' ' ' <"/proc/$p/cmdline" | grep -q "$WORK/udhcpd.conf"; then
            kill "$p"
        fi
    fi
    ip netns del "$NS" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/udhcpd.conf" <<EOF
start 10.77.0.10
end 10.77.0.10
max_leases 1
interface $TAP
lease_file $WORK/udhcpd.leases
pidfile $WORK/udhcpd.pid
option router 10.77.0.1
option dns 10.77.0.1
option mtu 1400
option lease 3600
EOF
if [ "${TM_SMOKE_P2P:-0}" = 1 ]; then
    # CNI-style /32 lease: the gateway is outside the guest's subnet, reached through an
    # on-link classless route (option 121) sent first.
    echo "option subnet 255.255.255.255" >>"$WORK/udhcpd.conf"
    echo "option staticroutes 10.77.0.1/32 0.0.0.0, 0.0.0.0/0 10.77.0.1" >>"$WORK/udhcpd.conf"
    EXPECT_MASK=32
else
    echo "option subnet 255.255.255.0" >>"$WORK/udhcpd.conf"
    EXPECT_MASK=24
fi
: >"$WORK/udhcpd.leases"
# Configure the TAP and start udhcpd (it daemonizes and writes its pidfile). -a 100: udhcpd
# ARP-probes an address before offering it (2 s by default), which costs the guest a retry.
SETUP="ip addr add 10.77.0.1/24 dev $TAP && ip link set $TAP up && busybox udhcpd -a 100 $WORK/udhcpd.conf"

ip netns add "$NS"
ip netns exec "$NS" ip link set lo up

QUSER=${TM_QEMU_USER:-}
ASUSER=()
if [ -n "$QUSER" ]; then
    ASUSER=(setpriv --reuid="$(id -u "$QUSER")" --regid="$(id -g "$QUSER")" --clear-groups
            --inh-caps=-all --bounding-set=-all --no-new-privs)
fi
QEMU=("${ASUSER[@]}" qemu-system-x86_64 -accel tcg -m 256 -nographic -no-reboot
      -kernel "$GUEST/vmlinuz" -initrd "$GUEST/initramfs.cpio.gz"
      -append "console=ttyS0 quiet panic=-1")
if [ "$MODE" = tap ]; then
    ip netns exec "$NS" ip tuntap add mode tap name "$TAP" vnet_hdr ${QUSER:+user "$QUSER"}
    ip netns exec "$NS" sh -c "$SETUP"
    CMD=(ip netns exec "$NS" "${QEMU[@]}"
         -netdev "tap,id=n0,ifname=$TAP,script=no,downscript=no"
         -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,romfile=)
else
    CMD=(ip netns exec "$NS" python3 "$HERE/tapfd-exec.py" "$TAP" 3 --pre "$SETUP" --
         "${QEMU[@]}"
         -netdev tap,id=n0,fd=3
         -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56,romfile=)
fi

echo "run-smoke: mode=$MODE user=${QUSER:-root} netns=$NS: ${CMD[*]}"
T0=$EPOCHREALTIME
"${CMD[@]}" </dev/null >"$WORK/serial.out" 2>&1 &
QEMU_PID=$!   # ip netns exec execs, so this is QEMU's pid (python and setpriv exec too)

# Wait (max 90 s) for TM-DONE or QEMU's exit; timestamp the interesting lines.
T_LEASE="" T_DONE=""
for _ in $(seq 1 900); do
    if [ -z "$T_LEASE" ] && grep -q '^TM-LEASE ' "$WORK/serial.out"; then T_LEASE=$EPOCHREALTIME; fi
    if grep -q '^TM-DONE' "$WORK/serial.out"; then T_DONE=$EPOCHREALTIME; fi
    kill -0 "$QEMU_PID" 2>/dev/null || break
    [ -n "$T_DONE" ] && break
    sleep 0.1
done
# Let QEMU power off by itself (poweroff -f), then give up on it.
for _ in $(seq 1 50); do kill -0 "$QEMU_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$QEMU_PID" 2>/dev/null; then echo "run-smoke: QEMU still running, killing $QEMU_PID"; kill "$QEMU_PID"; fi
wait "$QEMU_PID" 2>/dev/null && RC=0 || RC=$?
QEMU_PID=""
tr -d '\r' <"$WORK/serial.out" >"$WORK/console.log"
cp "$WORK/console.log" "$GUEST/console-$MODE.log"
echo "---- console (TM lines) ----"
grep -a '^TM-' "$WORK/console.log" || true
echo "----------------------------"
echo "qemu exit status: $RC"

ok=1
grep -aqx "TM-LEASE ip=10.77.0.10 mask=$EXPECT_MASK router=10.77.0.1 dns=10.77.0.1 mtu=1400 serverid=10.77.0.1" "$WORK/console.log" || { echo "FAIL: TM-LEASE line missing/wrong"; ok=0; }
grep -aqx 'TM-PING-OK 10.77.0.1' "$WORK/console.log" || { echo "FAIL: TM-PING-OK missing"; ok=0; }
grep -aqx 'TM-DONE' "$WORK/console.log" || { echo "FAIL: TM-DONE missing"; ok=0; }
if [ -n "$T_LEASE" ]; then
    awk -v a="$T0" -v b="$T_LEASE" 'BEGIN { printf "qemu start -> TM-LEASE seen on host: %.2f s (polled every 0.1 s)\n", b-a }'
fi
if [ -n "$T_DONE" ]; then
    awk -v a="$T0" -v b="$T_DONE" 'BEGIN { printf "qemu start -> TM-DONE: %.2f s\n", b-a }'
fi
if [ $ok -ne 1 ]; then
    echo "---- full console ----"; cat -v "$WORK/console.log" | tail -n 60
    exit 1
fi
echo "run-smoke: PASS ($MODE)"
