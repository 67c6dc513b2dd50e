#!/usr/bin/env bash
# Render a cloud-init network-config file (version 1 or 2) with Debian's own cloud-init renderer,
# so tests can check the network-config files tapmanager writes the way a guest would read them.
#
#   scripts/cloud-init-render.sh NETWORK_CONFIG_FILE OUTPUT_KIND OUTDIR
#   scripts/cloud-init-render.sh --version        # print the cloud-init version in use
#
# OUTPUT_KIND is one of net-convert's output kinds: networkd, eni, netplan (also sysconfig,
# network-manager). OUTDIR is created if missing and must be empty: the renderer writes its files
# below it as if it were the guest's root (e.g. OUTDIR/etc/systemd/network/10-cloud-init-eth0.network),
# and on success the script prints their paths relative to OUTDIR, one a line, and nothing else.
#
# Why the package is extracted rather than installed: the cloud-init .deb brings boot-time services
# (cloud-init-local/-network/-config/-final, generators) that must not land on a development or CI
# machine. So `apt-get download cloud-init` fetches the .deb into target/cloud-init/ (git-ignored),
# `dpkg-deb -x` unpacks it there, and only its Python library dependencies are installed with apt-get
# (plain python3-* libraries, no services). Debian's /usr/bin/python3 then runs the extracted
# cloudinit package -- not the python3 on PATH, which may be a pyenv build without Debian's
# dist-packages.
#
# The renderer is cloud-init's `devel net-convert` (cloudinit.cmd.devel.net_convert), run from a
# small inline Python wrapper that changes four things:
#   * strict parsing: a v1/v2 entry cloud-init would skip at boot ("Skipping invalid command", logged
#     as a warning, exit 0) is an error here, and so is any other warning the renderer logs;
#   * for netplan output of a v2 config, which cloud-init copies through without parsing it, the
#     config is also run through cloud-init's v2 parser, so malformed v2 fails for every kind;
#   * the networkd renderer's chown of its files to systemd-network is skipped (the files stay owned
#     by the caller; it works unprivileged and on hosts without that user);
#   * net-convert's "Read input format ... Wrote output format ..." chatter on stderr is dropped.
# Everything is rendered below OUTDIR: nothing is written to /etc, /run or elsewhere (checked with
# strace), and netplan's postcmds (netplan generate, udevadm) are off as net-convert sets them.
#
# Setup is idempotent and serialized with a lock (tests may run this in parallel): the extracted copy
# is reused when present; missing Python dependencies are installed (after `apt-get update`) only
# when missing, which needs root.
#
# Environment:
#   TM_CLOUD_INIT_DIR     cache directory (default: <repo>/target/cloud-init)
#   TM_CLOUD_INIT_DISTRO  net-convert --distro (default: debian)
#
# cloud-init 22.4 has no schema for network-config: unknown or misspelt keys are ignored without a
# word, and an IPv4 address without a prefix silently becomes /24 (IPv6: /64). Check the rendered
# files' contents, not just the exit code.
#
# Exit codes: 0 rendered; 1 renderer failed (input rejected, exception, warning, or no file
# rendered); 2 usage; 3 setup failed (download, extraction, apt-get).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
export APT_LISTCHANGES_FRONTEND=none

prog=cloud-init-render
die() { printf '%s: error: %s\n' "$prog" "$1" >&2; exit "${2:-1}"; }
usage() { printf 'usage: %s NETWORK_CONFIG_FILE OUTPUT_KIND OUTDIR\n       %s --version\n' "$0" "$0" >&2; exit 2; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${TM_CLOUD_INIT_DIR:-$repo/target/cloud-init}
distro=${TM_CLOUD_INIT_DISTRO:-debian}
python=/usr/bin/python3
root=$cache/root
pkgdir=$root/usr/lib/python3/dist-packages

# cloud-init's python3-* Depends (`apt-cache depends cloud-init`, Debian 12). Its other Depends
# (isc-dhcp-client, fdisk, gdisk, locales, ...) are only used at boot, not by the renderer.
py_deps=(python3-configobj python3-jinja2 python3-jsonpatch python3-jsonschema python3-netifaces
         python3-oauthlib python3-requests python3-serial python3-yaml)

version_only=0
if [ "$#" = 1 ] && [ "$1" = --version ]; then
  version_only=1
elif [ "$#" != 3 ]; then
  usage
fi

# Runs a command quietly; on failure prints its output and dies with exit code 3.
quiet() {
  local out rc=0
  out=$("$@" 2>&1) || rc=$?
  [ "$rc" = 0 ] || { printf '%s\n' "$out" >&2; die "'$*' failed (exit $rc)" 3; }
}

setup() {
  [ -x "$python" ] || die "$python not found (Debian's python3 package is needed)" 3
  local missing=() p
  for p in "${py_deps[@]}"; do
    if [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" != installed ]; then
      missing+=("$p")
    fi
  done
  local have_copy=0
  [ -f "$pkgdir/cloudinit/__init__.py" ] && [ -f "$cache/VERSION" ] && have_copy=1
  [ "${#missing[@]}" = 0 ] && [ "$have_copy" = 1 ] && return 0

  if [ "$(id -u)" != 0 ]; then
    [ "$have_copy" = 1 ] || missing+=("(cloud-init extracted into $cache)")
    die "not root, so cannot set up: ${missing[*]}; run this once as root" 3
  fi
  quiet apt-get update -qq
  if [ "${#missing[@]}" != 0 ]; then
    quiet apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  if [ "$have_copy" = 0 ]; then
    local tmp
    tmp=$(mktemp -d "$cache/tmp.XXXXXX")
    # apt-get download runs as root here: _apt cannot write to this directory; that warning is
    # harmless and captured by quiet().
    (cd "$tmp" && quiet apt-get download cloud-init)
    local deb
    deb=$(ls "$tmp"/cloud-init_*.deb)
    quiet dpkg-deb -x "$deb" "$tmp/root"
    # Byte-compile now, so rendering later writes nothing at all outside OUTDIR.
    quiet "$python" -m compileall -q "$tmp/root/usr/lib/python3/dist-packages/cloudinit"
    rm -rf "$root"
    mv "$tmp/root" "$root"
    mv "$deb" "$cache/"
    dpkg-deb -f "$cache/$(basename "$deb")" Version >"$cache/VERSION"
    rm -rf "$tmp"
  fi
}

# Serialize setup: parallel test runs must not extract or apt-get at the same time.
mkdir -p "$cache" 2>/dev/null || die "cannot create $cache; run this once as root" 3
# (Read-only when the lock file is not ours: an unprivileged run of a ready cache still works.)
{ exec 9>>"$cache/.lock"; } 2>/dev/null || exec 9<"$cache/.lock"
flock 9
setup
flock -u 9
exec 9>&-

if [ "$version_only" = 1 ]; then
  cat "$cache/VERSION"
  exit 0
fi

input=$1 kind=$2 outdir=$3
[ -f "$input" ] && [ -r "$input" ] || die "cannot read network config file: $input" 2
case "$kind" in
  networkd | eni | netplan | sysconfig | network-manager) ;;
  *) die "unknown OUTPUT_KIND '$kind' (networkd, eni, netplan, sysconfig, network-manager)" 2 ;;
esac
mkdir -p "$outdir"
[ -z "$(ls -A "$outdir")" ] || die "OUTDIR is not empty: $outdir" 2

errlog=$(mktemp)
trap 'rm -f "$errlog"' EXIT
rc=0
# -I: ignore PYTHON* variables and the user site; sys.path gets the extracted package first.
PYTHONDONTWRITEBYTECODE=1 "$python" -I -c '
import sys
sys.path.insert(0, sys.argv.pop(1))
import copy, logging
from cloudinit import util
from cloudinit.cmd.devel import net_convert
from cloudinit.net import netplan, network_state

class Fail(logging.Handler):
    """Counts warnings and errors the renderer logs."""
    count = 0
    def emit(self, record):
        Fail.count += 1

util.chownbyname = lambda *a, **k: None
parse = network_state.parse_net_config_data
def strict_parse(net_config, skip_broken=True, renderer=None):
    if isinstance(renderer, netplan.Renderer) and net_config.get("version") == 2:
        # The netplan renderer passes v2 through unparsed: parse it anyway, as eni/networkd do.
        parse(copy.deepcopy(net_config), skip_broken=False)
    return parse(net_config, skip_broken=False, renderer=renderer)
network_state.parse_net_config_data = strict_parse
args = net_convert.get_parser().parse_args(sys.argv[1:])
logging.getLogger().addHandler(Fail(level=logging.WARNING))
net_convert.handle_args(net_convert.NAME, args)
if Fail.count:
    sys.exit(f"cloud-init logged {Fail.count} warning(s) while rendering")
' "$pkgdir" --network-data "$input" --kind yaml --distro "$distro" \
  --output-kind "$kind" --directory "$outdir" 2>"$errlog" || rc=$?

# Drop net-convert's own two status lines (and the blank line after them); keep anything else.
grep -v -e "^Read input format '" -e "^Wrote output format '" -e '^$' "$errlog" >&2 || true
[ "$rc" = 0 ] || die "cloud-init $(cat "$cache/VERSION") failed to render $input as $kind (exit $rc)" 1
if [ -z "$(find "$outdir" -type f -print -quit)" ]; then
  die "cloud-init rendered no $kind files from $input (no interfaces in it?)" 1
fi
(cd "$outdir" && find . -type f | sed 's|^\./||' | LC_ALL=C sort)
