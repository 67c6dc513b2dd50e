#!/bin/bash
# Install what tapmanager's root / end-to-end test tiers need on a Debian 12 (bookworm) host.
#
#   sudo scripts/install-test-deps.sh
#
# Idempotent and non-interactive. It:
#   1. runs `apt-get update`;
#   2. adds the <codename>-backports suite (as a deb822 file
#      /etc/apt/sources.list.d/tapmanager-backports.sources) if no apt source has it yet, using
#      the mirror URI of the machine's existing Debian source (fallback http://deb.debian.org/debian);
#   3. installs qemu-system-x86 + ipxe-qemu from <codename>-backports (the same family as the
#      qemu-utils 10.x the machine already has from backports; Debian 12's own qemu-system-x86
#      7.2 would remove it), and from the normal suites: a Debian kernel image
#      (linux-image-cloud-amd64 by default, see tests/guest/README.md), busybox-static,
#      util-linux (setpriv, nsenter), python3 (the LAN side of the masquerade test), nftables, ebtables, iproute2, cpio, gzip, zstd, xz-utils;
#      and mmdebstrap + e2fsprogs for the Debian VM image (tests/vm/build-image.sh).
#
# Every install is simulated first (`apt-get install -s`); if apt would remove any package
# ("Remv" line) or downgrade one, the script stops with exit code 3 and changes nothing more.
# The real install also passes --no-remove.
#
# Environment overrides:
#   TM_KERNEL_PKG   kernel package to install (default linux-image-cloud-amd64)
#   TM_MIRROR       mirror URI for the backports entry (default: derived from apt sources)
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export APT_LISTCHANGES_FRONTEND=none

log() { printf '[install-test-deps] %s\n' "$*"; }
die() { printf '[install-test-deps] ERROR: %s\n' "$1" >&2; exit "${2:-1}"; }

[ "$(id -u)" -eq 0 ] || die "must run as root"
command -v apt-get >/dev/null || die "apt-get not found (Debian/Ubuntu only)"

# shellcheck disable=SC1091
. /etc/os-release
CODENAME="${VERSION_CODENAME:-}"
[ -n "$CODENAME" ] || die "cannot determine the Debian codename from /etc/os-release"
[ "${ID:-}" = debian ] || log "warning: ID=${ID:-?} is not debian; continuing anyway"
BPO="${CODENAME}-backports"
KERNEL_PKG="${TM_KERNEL_PKG:-linux-image-cloud-amd64}"
BPO_FILE=/etc/apt/sources.list.d/tapmanager-backports.sources
APT_OPTS=(-y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold
          -o APT::Get::Always-Include-Phased-Updates=true --no-install-recommends)

# Files apt actually reads (disabled / renamed files are ignored, like apt does).
apt_source_files() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && printf '%s\n' "$f"
    done
    return 0
}

# Is <codename>-backports already configured (enabled, uncommented) anywhere?
has_backports() {
    local f
    while read -r f; do
        case "$f" in
        *.sources)
            # deb822: a "Suites:" line listing the suite, in a stanza not marked Enabled: no.
            awk -v s="$BPO" '
                BEGIN { RS=""; FS="\n"; found=0 }
                {
                    en=1; hit=0
                    for (i=1;i<=NF;i++) {
                        line=$i; sub(/#.*/,"",line)
                        if (tolower(line) ~ /^enabled:[ \t]*no/) en=0
                        if (tolower(line) ~ /^suites:/) {
                            n=split(substr(line, index(line,":")+1), a, /[ \t]+/)
                            for (j=1;j<=n;j++) if (a[j]==s) hit=1
                        }
                    }
                    if (en && hit) found=1
                }
                END { exit(found?0:1) }' "$f" && return 0 ;;
        *)
            grep -Eq "^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]+[[:space:]]+${BPO}([[:space:]]|$)" "$f" && return 0 ;;
        esac
    done < <(apt_source_files)
    return 1
}

# Mirror URI (and Signed-By, if any) of the source that carries the plain <codename> suite.
derive_mirror() {
    local f out
    while read -r f; do
        case "$f" in
        *.sources)
            out=$(awk -v s="$CODENAME" '
                BEGIN { RS=""; FS="\n" }
                {
                    uri=""; sb=""; hit=0; deb=0; en=1
                    for (i=1;i<=NF;i++) {
                        line=$i; sub(/#.*/,"",line)
                        key=tolower(substr(line,1,index(line,":")-1)); val=substr(line,index(line,":")+1)
                        gsub(/^[ \t]+|[ \t]+$/,"",val)
                        if (key=="uris") { split(val,u,/[ \t]+/); uri=u[1] }
                        if (key=="signed-by") sb=val
                        if (key=="enabled" && tolower(val)=="no") en=0
                        if (key=="types") { n=split(val,t,/[ \t]+/); for(j=1;j<=n;j++) if (t[j]=="deb") deb=1 }
                        if (key=="suites") { n=split(val,a,/[ \t]+/); for(j=1;j<=n;j++) if (a[j]==s) hit=1 }
                    }
                    if (en && deb && hit && uri!="") { print uri "\t" sb; exit }
                }' "$f")
            [ -n "$out" ] && { printf '%s\n' "$out"; return 0; } ;;
        *)
            out=$(sed -nE "s/^[[:space:]]*deb[[:space:]]+(\[[^]]*\][[:space:]]+)?([^[:space:]]+)[[:space:]]+${CODENAME}([[:space:]].*)?$/\2/p" "$f" | head -n1)
            [ -n "$out" ] && { printf '%s\t\n' "$out"; return 0; } ;;
        esac
    done < <(apt_source_files)
    return 1
}

# Simulate "apt-get install ARGS...", refuse on any removal or downgrade, then do it.
safe_install() {
    local sim
    log "simulating: apt-get install ${*}"
    if ! sim=$(apt-get install -s "${APT_OPTS[@]}" "$@" 2>&1); then
        printf '%s\n' "$sim" >&2
        die "apt-get simulation failed for: $*" 2
    fi
    if grep -q '^Remv ' <<<"$sim"; then
        grep '^Remv ' <<<"$sim" >&2
        die "apt would REMOVE the packages above; refusing (this step installed nothing)" 3
    fi
    # "Inst pkg [installed-ver] (new-ver ...)" with new < installed is a downgrade.
    local line pkg cur new
    while read -r line; do
        pkg=$(awk '{print $2}' <<<"$line")
        cur=$(sed -nE 's/^Inst [^ ]+ \[([^]]+)\].*/\1/p' <<<"$line")
        new=$(sed -nE 's/^Inst [^ ]+ (\[[^]]+\] )?\(([^ ]+) .*/\2/p' <<<"$line")
        if [ -n "$cur" ] && [ -n "$new" ] && dpkg --compare-versions "$new" lt "$cur"; then
            die "apt would DOWNGRADE $pkg from $cur to $new; refusing" 3
        fi
    done < <(grep '^Inst ' <<<"$sim" || true)
    local n
    n=$(grep -c '^Inst ' <<<"$sim" || true)
    if [ "$n" -eq 0 ]; then
        log "already installed: ${*}"
        return 0
    fi
    log "installing $n package(s): $(grep '^Inst ' <<<"$sim" | awk '{print $2}' | tr '\n' ' ')"
    apt-get install "${APT_OPTS[@]}" --no-remove "$@"
}

log "apt-get update"
apt-get update -q

if has_backports; then
    log "$BPO already present in apt sources"
else
    MIRROR="${TM_MIRROR:-}"
    SIGNED_BY=""
    if [ -z "$MIRROR" ]; then
        if m=$(derive_mirror); then
            MIRROR=${m%%$'\t'*}
            SIGNED_BY=${m#*$'\t'}
            log "derived mirror $MIRROR from the existing '$CODENAME' apt source"
        else
            MIRROR=http://deb.debian.org/debian
            log "no '$CODENAME' apt source found; using $MIRROR"
        fi
    fi
    [ -n "$SIGNED_BY" ] || { [ -f /usr/share/keyrings/debian-archive-keyring.gpg ] && SIGNED_BY=/usr/share/keyrings/debian-archive-keyring.gpg; }
    log "adding $BPO_FILE ($MIRROR $BPO main)"
    tmp=$(mktemp /etc/apt/.tapmanager-backports.XXXXXX)
    {
        echo "# Added by tapmanager scripts/install-test-deps.sh"
        echo "Types: deb"
        echo "URIs: $MIRROR"
        echo "Suites: $BPO"
        echo "Components: main"
        [ -n "$SIGNED_BY" ] && echo "Signed-By: $SIGNED_BY"
    } >"$tmp"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$BPO_FILE"
    log "apt-get update (with $BPO)"
    apt-get update -q
fi

# QEMU from backports (same family as the installed qemu-utils 10.x), with ipxe-qemu so
# virtio-net-pci finds efi-virtio.rom (tests also pass romfile= so they work without it).
safe_install -t "$BPO" qemu-system-x86 ipxe-qemu

# Everything else from the normal suites.
safe_install "$KERNEL_PKG" busybox-static nftables ebtables iproute2 cpio gzip zstd xz-utils kmod util-linux python3 \
    containernetworking-plugins iptables python3-yaml

# The Debian VM image of the systemd tier (tests/vm/build-image.sh): mmdebstrap builds it from
# the configured mirror, mkfs.ext4 -d and debugfs (e2fsprogs) fill and read its disks.
safe_install mmdebstrap e2fsprogs

log "qemu: $(qemu-system-x86_64 --version | head -n1)"
log "kernels: $(ls /boot/vmlinuz-* 2>/dev/null | tr '\n' ' ')"
log "done"
