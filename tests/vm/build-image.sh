#!/usr/bin/env bash
# Builds the Debian 12 VM image of the systemd tier and the real-guest tier (DESIGN.md §9,
# tests/vm/README.md): OUTDIR/rootfs.raw (ext4, label tmroot), OUTDIR/vmlinuz,
# OUTDIR/initrd.img. Root; mmdebstrap from the machine's configured Debian mirror.
#
#   tests/vm/build-image.sh OUTDIR        (tests use target/vm/debian12)
#
# Cached: OUTDIR/.recipe-key is a hash of this script and of what it copies in (image/);
# the same recipe reuses the image, a changed one rebuilds it. The build goes to a temporary
# sibling directory that is renamed to OUTDIR only when complete, so a killed build never
# leaves a half image that looks valid. Concurrent callers wait on OUTDIR.lock.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
self="$here/$(basename "$0")"

# --customize ROOT: run by mmdebstrap as its customize hook (its /proc, /sys, /dev mounted).
if [ "${1:-}" = --customize ]; then
    root=$2
    echo tmvm >"$root/etc/hostname"
    printf '127.0.0.1\tlocalhost\n127.0.1.1\ttmvm\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
    echo 'LABEL=tmroot / ext4 defaults,errors=remount-ro 0 0' >"$root/etc/fstab"
    # No login on the serial console: agetty hangs the tty up when it starts, and the agent's
    # writes to it would fail (EIO). The console is the tests'.
    # The network managers are installed for the tests to enable, off by default.
    chroot "$root" systemctl disable systemd-networkd.service systemd-networkd.socket \
        NetworkManager.service NetworkManager-dispatcher.service 2>/dev/null || true
    # Units that wait for what never comes in this VM, or do housekeeping a test run does not
    # need: masked, so a boot under TCG is short.
    chroot "$root" systemctl mask systemd-networkd-wait-online.service \
        NetworkManager-wait-online.service ifupdown-wait-online.service \
        apt-daily.timer apt-daily-upgrade.timer apt-daily.service apt-daily-upgrade.service \
        e2scrub_all.timer e2scrub_reap.service fstrim.timer man-db.timer dpkg-db-backup.timer \
        systemd-tmpfiles-clean.timer getty@tty1.service serial-getty@ttyS0.service \
        systemd-timesyncd.service >/dev/null
    # cloud-init only with a NoCloud seed (a disk labeled cidata, or ds=nocloud;s=... on the
    # kernel command line); without one, ds-identify turns it off at boot. With a seed, the
    # list ds-identify writes for cloud-init is [ NoCloud, None ]. It is not written so here:
    # ds-identify takes a list of one source plus None as found without looking, and would
    # run cloud-init with the None source (users, locales: 10 s of a TCG boot) on every boot.
    # ConfigDrive (a disk labeled config-2) only makes it look.
    mkdir -p "$root/etc/cloud/cloud.cfg.d"
    echo 'datasource_list: [ NoCloud, ConfigDrive, None ]' >"$root/etc/cloud/cloud.cfg.d/90-tapmanager-tests.cfg"
    # The journal in memory: a test boot reads it and throws it away.
    mkdir -p "$root/etc/systemd/journald.conf.d"
    printf '[Journal]\nStorage=volatile\n' >"$root/etc/systemd/journald.conf.d/90-volatile.conf"
    # The test agent.
    install -m 0755 "$here/image/tm-agent" "$root/usr/local/sbin/tm-agent"
    install -m 0644 "$here/image/tm-agent.service" "$root/etc/systemd/system/tm-agent.service"
    chroot "$root" systemctl enable tm-agent.service >/dev/null
    # An initrd that finds the root disk by label on virtio-blk; gzip needs no extra package.
    printf 'COMPRESS=gzip\n' >"$root/etc/initramfs-tools/conf.d/90-tapmanager-tests.conf"
    printf 'virtio_pci\nvirtio_blk\next4\n' >>"$root/etc/initramfs-tools/modules"
    chroot "$root" update-initramfs -u -k all
    exit 0
fi

out=${1:?usage: build-image.sh OUTDIR}
[ "$(id -u)" = 0 ] || { echo "build-image.sh: must run as root (mmdebstrap, chroot)" >&2; exit 77; }
command -v mmdebstrap >/dev/null || { echo "build-image.sh: mmdebstrap missing: run scripts/install-test-deps.sh" >&2; exit 2; }

mkdir -p "$(dirname "$out")"
out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")
key=$(cat "$self" "$here"/image/* | sha256sum | cut -d' ' -f1)

exec 9>"$out.lock"
flock 9
if [ -f "$out/.recipe-key" ] && [ "$(cat "$out/.recipe-key")" = "$key" ] &&
    [ -f "$out/rootfs.raw" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ]; then
    echo "build-image: cached: $out (recipe $key)"
    exit 0
fi

# Leftovers of a killed build (we hold the lock, so nobody else is building).
rm -rf "$out".tmp.*
tmp="$out.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/root"
start=$(date +%s)

# The machine's configured Debian mirror(s): the URI of each enabled deb source for the
# suites this image takes (bookworm, bookworm-updates, bookworm-security), component main.
mirrors=$(for f in /etc/apt/sources.list.d/*.sources; do [ -f "$f" ] && cat "$f" && echo; done |
    awk 'BEGIN { RS=""; FS="\n" }
        { uri=""; en=1; deb=0; n=0
          for (i=1;i<=NF;i++) { line=$i; sub(/#.*/,"",line)
            key=tolower(substr(line,1,index(line,":")-1)); val=substr(line,index(line,":")+1)
            gsub(/^[ \t]+|[ \t]+$/,"",val)
            if (key=="uris") { split(val,u,/[ \t]+/); uri=u[1] }
            if (key=="enabled" && tolower(val)=="no") en=0
            if (key=="types") { m=split(val,t,/[ \t]+/); for(j=1;j<=m;j++) if (t[j]=="deb") deb=1 }
            if (key=="suites") n=split(val,s,/[ \t]+/) }
          if (en && deb && uri!="") for (j=1;j<=n;j++)
            if (s[j]=="bookworm" || s[j]=="bookworm-updates" || s[j]=="bookworm-security")
              print "deb " uri " " s[j] " main" }')
if [ -f /etc/apt/sources.list ]; then
    mirrors+=$'\n'$(sed -nE 's/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]]+(bookworm(-updates|-security)?)([[:space:]].*)?$/deb \2 \3 main/p' /etc/apt/sources.list)
fi
mirrors=$(grep -v '^$' <<<"$mirrors" | sort -u)
grep -q ' bookworm main$' <<<"$mirrors" || { echo "build-image.sh: no bookworm source in /etc/apt" >&2; exit 2; }
echo "build-image: mirrors:"; sed 's/^/  /' <<<"$mirrors"

# systemd as pid 1 with udev and dbus; the guest kernel and its initrd; the network stack
# tapmanager drives (iproute2, nftables, CNI plugins) and the network managers and DHCP
# clients a real guest runs. Recommends off (mmdebstrap's default).
packages=systemd,systemd-sysv,udev,dbus,systemd-resolved,linux-image-cloud-amd64,initramfs-tools
packages+=,iproute2,nftables,containernetworking-plugins,network-manager,isc-dhcp-client,dhcpcd-base
packages+=,cloud-init,ifupdown,sudo,adduser,procps,e2fsprogs,util-linux,kmod,iputils-ping,python3-yaml
packages+=,libc6,libgcc-s1,ca-certificates

mapfile -t mirror_args <<<"$mirrors"
mmdebstrap --variant=apt --components=main --include="$packages" \
    --customize-hook="bash '$self' --customize \"\$1\"" \
    bookworm "$tmp/root" "${mirror_args[@]}"

kver=$(ls "$tmp/root/lib/modules" | sort -V | tail -n1)
cp "$tmp/root/boot/vmlinuz-$kver" "$tmp/vmlinuz"
cp "$tmp/root/boot/initrd.img-$kver" "$tmp/initrd.img"
# A sparse ext4 of a few GB filled from the tree, no mount needed.
mkfs.ext4 -q -L tmroot -d "$tmp/root" "$tmp/rootfs.raw" 3G
rm -rf "$tmp/root"
chmod 0644 "$tmp/vmlinuz" "$tmp/initrd.img" "$tmp/rootfs.raw"
chmod 0755 "$tmp"
echo "$kver" >"$tmp/kernel-version"
echo "$key" >"$tmp/.recipe-key"
rm -rf "$out.old"
[ -e "$out" ] && mv "$out" "$out.old"
mv "$tmp" "$out"
trap - EXIT
rm -rf "$out.old"
echo "build-image: built $out (kernel $kver, recipe $key) in $(($(date +%s) - start)) s"
