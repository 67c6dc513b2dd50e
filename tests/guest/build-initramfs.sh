#!/bin/bash
# Build the end-to-end test guest: OUTDIR/vmlinuz + OUTDIR/initramfs.cpio.gz
#
#   tests/guest/build-initramfs.sh OUTDIR
#
# The guest is a Debian kernel (copied from /boot) and a busybox initramfs whose /init
# insmods the virtio NIC modules, runs `udhcpc` on eth0, pings the router and powers off,
# printing machine-readable lines on the console (see tests/guest/README.md).
#
# Needs (scripts/install-test-deps.sh installs them): a linux-image-*-amd64 package,
# busybox-static, cpio, gzip (+ xz / zstd only if the kernel's modules are compressed).
# Does not need root. Deterministic (same inputs -> byte-identical outputs) and cached: if
# OUTDIR already holds outputs built from the same inputs, nothing is rebuilt.
#
# Environment:
#   TM_KERNEL_VERSION  kernel to use (default: newest /boot/vmlinuz-* with /lib/modules/<ver>)
#   TM_BUSYBOX         static busybox binary (default /bin/busybox)
#   SOURCE_DATE_EPOCH  mtime stored in the archive (default 0)
set -euo pipefail

die() { printf 'build-initramfs: ERROR: %s\n' "$*" >&2; exit 1; }
[ $# -eq 1 ] || die "usage: $0 OUTDIR"
OUT=$1
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SELF=$(readlink -f "${BASH_SOURCE[0]}")
EPOCH=${SOURCE_DATE_EPOCH:-0}
export LC_ALL=C

# The NIC modules, in insmod order (DESIGN.md section 9). Dependencies found in
# modules.dep that are missing here are inserted before their users automatically.
WANT=(virtio_pci_legacy_dev virtio_pci_modern_dev virtio_ring virtio virtio_pci
      failover net_failover virtio_net)

# ---- kernel -----------------------------------------------------------------------------
KVER=${TM_KERNEL_VERSION:-}
if [ -z "$KVER" ]; then
    for v in $(ls /boot/vmlinuz-* 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V -r); do
        if [ -d "/lib/modules/$v" ]; then KVER=$v; break; fi
    done
fi
[ -n "$KVER" ] || die "no /boot/vmlinuz-* with matching /lib/modules/<ver>; run scripts/install-test-deps.sh"
VMLINUZ=/boot/vmlinuz-$KVER
MODDIR=/lib/modules/$KVER
[ -r "$VMLINUZ" ] || die "$VMLINUZ not readable (run as root, or chmod it)"
[ -r "$MODDIR/modules.dep" ] || die "$MODDIR/modules.dep missing"

# ---- busybox ----------------------------------------------------------------------------
BB=${TM_BUSYBOX:-/bin/busybox}
[ -x "$BB" ] || die "$BB not found; install busybox-static"
if ! { LC_ALL=C ldd "$BB" 2>&1 || true; } | grep -q 'not a dynamic executable'; then
    die "$BB is dynamically linked; install busybox-static (or set TM_BUSYBOX)"
fi
for applet in sh mount insmod ip udhcpc ping poweroff nslookup; do
    grep -qx "$applet" <<<"$("$BB" --list)" || die "$BB lacks the '$applet' applet"
done

# ---- modules: resolve order and files ------------------------------------------------
# mod_path NAME -> relative path from modules.dep, or "" (built-in / absent)
mod_path() {
    awk -F: -v n="$1" '{ p=$1; b=p; sub(/.*\//,"",b); sub(/\.ko(\.(xz|zst|gz))?$/,"",b);
                          gsub(/-/,"_",b); if (b==n) { print p; exit } }' "$MODDIR/modules.dep"
}
is_builtin() {
    [ -r "$MODDIR/modules.builtin" ] &&
        sed 's|.*/||; s|\.ko$||; s|-|_|g' "$MODDIR/modules.builtin" | grep -qx "$1"
}
ORDER=()      # relative module paths in insmod order
BUILTIN=()
declare -A SEEN=()
add_mod() {   # add_mod NAME: its deps first (depth first), then itself
    local name=$1 path deps d
    [ -n "${SEEN[$name]:-}" ] && return 0
    SEEN[$name]=1
    path=$(mod_path "$name")
    if [ -z "$path" ]; then
        if is_builtin "$name"; then BUILTIN+=("$name"); return 0; fi
        die "module $name is neither a module nor built-in in $KVER"
    fi
    deps=$(awk -F: -v p="$path" '$1==p { print $2; exit }' "$MODDIR/modules.dep")
    # modules.dep lists deps nearest-first; load the farthest first.
    for d in $(printf '%s\n' $deps | tac); do
        d=${d##*/}; d=${d%%.ko*}; d=${d//-/_}
        add_mod "$d"
    done
    ORDER+=("$path")
}
for m in "${WANT[@]}"; do add_mod "$m"; done

# ---- cache key ------------------------------------------------------------------------
key=$( {
    echo "kver=$KVER epoch=$EPOCH"
    sha256sum "$SELF" "$VMLINUZ" "$BB" | awk '{print $1}'
    for p in "${ORDER[@]}"; do echo "$p $(sha256sum "$MODDIR/$p" | awk '{print $1}')"; done
} | sha256sum | awk '{print $1}')
if [ -f "$OUT/.tm-guest-key" ] && [ "$(cat "$OUT/.tm-guest-key")" = "$key" ] &&
   [ -f "$OUT/vmlinuz" ] && [ -f "$OUT/initramfs.cpio.gz" ]; then
    echo "build-initramfs: up to date ($OUT, kernel $KVER)"
    exit 0
fi

# ---- staging tree ---------------------------------------------------------------------
STAGE=$(mktemp -d "$OUT/.stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
R=$STAGE/root
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc,lib/tm-modules}
cp "$BB" "$R/bin/busybox"
ln -s busybox "$R/bin/sh"

: >"$R/lib/tm-modules/order"
for p in "${ORDER[@]}"; do
    base=${p##*/}; name=${base%%.ko*}
    case "$base" in
    *.ko)     cp "$MODDIR/$p" "$R/lib/tm-modules/$name.ko" ;;
    *.ko.xz)  xz -dc "$MODDIR/$p" >"$R/lib/tm-modules/$name.ko" ;;
    *.ko.zst) zstd -q -dc "$MODDIR/$p" >"$R/lib/tm-modules/$name.ko" ;;
    *.ko.gz)  gzip -dc "$MODDIR/$p" >"$R/lib/tm-modules/$name.ko" ;;
    *) die "unknown module file type: $p" ;;
    esac
    echo "$name" >>"$R/lib/tm-modules/order"
done
echo "$KVER" >"$R/etc/tm-kernel"

cat >"$R/init" <<'EOF'
#!/bin/sh
# tapmanager e2e guest init (generated by tests/guest/build-initramfs.sh)
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1

done_() { echo "TM-DONE"; sync; poweroff -f; sleep 5; echo o >/proc/sysrq-trigger; }
up() { cut -d' ' -f1 /proc/uptime; }

# (an empty line first: the console may start with terminal escape sequences)
echo
echo "TM-INIT kernel=$(uname -r) up=$(up)"

# Optional extra udhcpc options from the kernel command line: tm.dhcpopt=search,staticroutes
# and extra addresses to ping after the router: tm.ping=192.168.1.2,10.0.0.1
# and a name to look up through the leased DNS server, then ping: tm.resolve=www.example.test
extra=""
targets=""
resolve=""
for arg in $(cat /proc/cmdline); do
    case "$arg" in
    tm.dhcpopt=*) for o in $(echo "${arg#tm.dhcpopt=}" | tr ',' ' '); do extra="$extra -O $o"; done ;;
    tm.ping=*) targets=$(echo "${arg#tm.ping=}" | tr ',' ' ') ;;
    tm.resolve=*) resolve=${arg#tm.resolve=} ;;
    esac
done

while read -r m; do
    insmod "/lib/tm-modules/$m.ko" || echo "TM-INSMOD-FAIL $m"
done </lib/tm-modules/order

ip link set lo up
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done
if [ ! -e /sys/class/net/eth0 ]; then
    echo "TM-NO-ETH0"
    done_
fi
ip link set eth0 up
n=0
while [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" != 1 ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done
echo "TM-LINK eth0 carrier=$(cat /sys/class/net/eth0/carrier 2>/dev/null) up=$(up)"

rm -f /tmp/lease
# shellcheck disable=SC2086
udhcpc -i eth0 -O mtu $extra -n -q -t 10 -T 1 -s /udhcpc.script
if [ ! -s /tmp/lease ]; then
    echo "TM-LEASE-FAIL"
    done_
fi
router=$(cat /tmp/lease)
if [ -n "$resolve" ]; then
    # busybox nslookup prints the server's lines, then "Name:" and the answer's "Address:".
    addr=$(nslookup "$resolve" "$(cat /tmp/dns)" 2>/dev/null |
        awk '/^Name:/ { n = 1 } n && /^Address/ { sub(/^Address( 1)?:[ \t]*/, ""); print; exit }')
    if [ -n "$addr" ]; then
        echo "TM-RESOLVE $resolve $addr"
        targets="$targets $addr"
    else
        echo "TM-RESOLVE-FAIL $resolve"
    fi
fi
for t in $router $targets; do
    if ping -c 3 -W 2 "$t" >/dev/null 2>&1; then
        echo "TM-PING-OK $t"
    else
        echo "TM-PING-FAIL $t"
    fi
done
done_
EOF

cat >"$R/udhcpc.script" <<'EOF'
#!/bin/sh
# udhcpc event script: configure eth0 and print one TM-LEASE line on "bound"/"renew".
first() { set -- $1; echo "${1:-none}"; }
csv() { set -- $1; [ $# -gt 0 ] && echo "$*" | tr ' ' ',' || echo none; }
# dotted mask -> prefix length (busybox usually also sets $mask)
prefix() {
    local n=0 o
    for o in $(echo "$1" | tr '.' ' '); do
        case $o in 255) n=$((n+8));; 254) n=$((n+7));; 252) n=$((n+6));; 248) n=$((n+5));;
                   240) n=$((n+4));; 224) n=$((n+3));; 192) n=$((n+2));; 128) n=$((n+1));; esac
    done
    echo $n
}
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
bound|renew)
    [ -n "$mask" ] || mask=$(prefix "${subnet:-255.255.255.255}")
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" ${broadcast:+broadcast $broadcast} dev "$interface"
    [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
    r=$(first "$router")
    if [ -n "$staticroutes" ]; then
        # option 121 (RFC 3442: when present, the router option is ignored for routing);
        # pairs "dest/len gateway", gateway 0.0.0.0 = on-link, in the server's order
        set -- $staticroutes
        while [ $# -ge 2 ]; do
            if [ "$2" = 0.0.0.0 ]; then ip route replace "$1" dev "$interface"
            else ip route replace "$1" via "$2" dev "$interface"; fi
            shift 2
        done
    elif [ "$r" != none ]; then
        # a gateway outside the subnet (e.g. a /32 lease) needs an on-link route first
        ip route replace default via "$r" dev "$interface" 2>/dev/null || {
            ip route replace "$r" dev "$interface"
            ip route replace default via "$r" dev "$interface"
        }
    fi
    echo "TM-LEASE ip=$ip mask=$mask router=$r dns=$(first "$dns") mtu=${mtu:-none} serverid=${serverid:-none}"
    echo "TM-LEASE-EXTRA up=$(cut -d' ' -f1 /proc/uptime) lease=${lease:-none} routers=$(csv "$router") dnslist=$(csv "$dns") hostname=${hostname:-none} domain=${domain:-none} search=$(csv "$search") staticroutes=$(echo "${staticroutes:-none}" | tr ' ' ',')"
    first "$dns" >/tmp/dns
    echo "$r" >/tmp/lease
    ;;
leasefail|nak)
    echo "TM-DHCP-EVENT $1 ${message:-}"
    ;;
esac
exit 0
EOF
chmod 0755 "$R/init" "$R/udhcpc.script" "$R/bin/busybox"
chmod 0644 "$R"/lib/tm-modules/* "$R/etc/tm-kernel"

# ---- archive (reproducible) -----------------------------------------------------------
find "$R" -exec touch -h -d "@$EPOCH" {} +
(cd "$R" && find . -mindepth 1 | sort | cpio --quiet -o -H newc -R 0:0 --reproducible) \
    | gzip -9 -n >"$STAGE/initramfs.cpio.gz"
cp "$VMLINUZ" "$STAGE/vmlinuz"
chmod 0644 "$STAGE/vmlinuz" "$STAGE/initramfs.cpio.gz"
mv -f "$STAGE/vmlinuz" "$OUT/vmlinuz"
mv -f "$STAGE/initramfs.cpio.gz" "$OUT/initramfs.cpio.gz"
echo "$key" >"$OUT/.tm-guest-key"
{
    echo "kernel=$KVER"
    echo "modules=$(sed 's|.*/||; s|\.ko.*||' <<<"$(printf '%s\n' "${ORDER[@]}")" | tr '\n' ' ')"
    echo "builtin=${BUILTIN[*]:-}"
} >"$OUT/guest-info.txt"
echo "build-initramfs: built $OUT/vmlinuz and $OUT/initramfs.cpio.gz (kernel $KVER; modules: $(tr '\n' ' ' <"$R/lib/tm-modules/order"))"
