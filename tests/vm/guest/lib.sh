# Shared helpers of both VM tiers' scripts: the real-guest tier's (tests/tests/vm_guest.rs),
# sourced by the run.sh the test writes onto the tmio disk after /tm/env (the test's inputs:
# MACs, what the daemon hands out), and the systemd tier's (tests/vm/systemd-tier.sh). Runs as
# root under systemd in the Debian image (tests/vm/build-image.sh).
#
# Console protocol: one line per check, which the test requires by name (a missing one
# fails it), and facts for the test's log:
#   TM-CHECK <name> ok [detail] | TM-CHECK <name> FAIL <detail>
#   TM-INFO <what> <text>
#   TM-STEP <text> (at <s> s)
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
T0=$SECONDS

pass() { echo "TM-CHECK $1 ok${2:+ $2}"; }
fail() { echo "TM-CHECK $1 FAIL ${*:2}"; }
info() { echo "TM-INFO $1 $(tr '\n' '|' <<<"${*:2}")"; }
step() { echo "TM-STEP $* (at $((SECONDS - T0)) s, up $(cut -d' ' -f1 /proc/uptime))"; }
# expect NAME WANT GOT: ok if equal.
expect() {
    if [ "$2" = "$3" ]; then pass "$1" "$3"; else fail "$1" "want [$2] got [$3]"; fi
}
# wait_until SECS CMD...: polls CMD until it succeeds; 1 if SECS pass first.
wait_until() {
    local end=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -ge "$end" ] && return 1
        sleep 0.5
    done
}
# The interface with MAC $1.
iface_of() {
    local f
    for f in /sys/class/net/*; do
        [ "$(cat "$f/address" 2>/dev/null)" = "$1" ] && { basename "$f"; return 0; }
    done
    return 1
}
# has_addr IFACE IP/PREFIX
has_addr() { ip -4 -o addr show dev "$1" | grep -q " inet $2 "; }
# The IPv4 addresses of IFACE, as "ip/prefix ..." in one line.
addrs_of() { ip -4 -o addr show dev "$1" | awk '{print $4}' | tr '\n' ' ' | sed 's/ $//'; }
# default_via IFACE GW: a default route via GW out of IFACE.
default_via() { ip -4 route show default dev "$1" | grep -q "via $2 "; }
# ping_from IFACE DST: three tries of one echo each.
ping_from() {
    local i
    for i in 1 2 3; do
        ping -n -c 1 -W 2 -I "$1" "$2" >/dev/null 2>&1 && return 0
    done
    return 1
}
# check_ping NAME IFACE DST
check_ping() {
    if ping_from "$2" "$3"; then pass "$1" "$3 from $2"; else fail "$1" "no answer from $3 on $2: $(ip -4 route | tr '\n' '|')"; fi
}
# The address's remaining valid lifetime in seconds ("forever" as 999999).
valid_lft() {
    ip -4 -o addr show dev "$1" | awk -v a="$2" '$4 == a { for (i = 1; i <= NF; i++) if ($i == "valid_lft") { v = $(i + 1); sub(/sec$/, "", v); if (v == "forever") v = 999999; print v } }'
}
# Network managers of the image, started by a test only for the interfaces it names.
networkd_for() {
    # networkd_for NAME MAC [extra [DHCPv4] lines]: DHCP on the interface with MAC only.
    mkdir -p /etc/systemd/network
    cat >"/etc/systemd/network/10-$1.network" <<NET
[Match]
MACAddress=$2

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no

[DHCPv4]
UseDNS=yes
UseDomains=yes
UseHostname=yes
UseMTU=yes
UseRoutes=yes
${3:-}
NET
}
# networkd_dual_for NAME MAC: as networkd_for, and IPv6 by router advertisements and DHCPv6.
networkd_dual_for() {
    networkd_for "$1" "$2"
    sed -i 's/^DHCP=ipv4$/DHCP=yes/; s/^LinkLocalAddressing=no$/LinkLocalAddressing=ipv6/; s/^IPv6AcceptRA=no$/IPv6AcceptRA=yes/' \
        "/etc/systemd/network/10-$1.network"
}
# --- IPv6 -------------------------------------------------------------------------------
has_addr6() { ip -6 -o addr show dev "$1" | grep -q " inet6 $2/"; }
# The address is usable: duplicate address detection is over (no longer tentative).
addr6_ready() { ip -6 -o addr show dev "$1" | grep " inet6 $2/" | grep -qv tentative; }
addrs6_of() { ip -6 -o addr show dev "$1" | awk '{print $4}' | tr '\n' ' '; }
# A default route out of IFACE via a link-local router; with several interfaces' routers
# the kernel makes one multipath route ("nexthop via fe80::... dev IFACE"), which
# `ip route show default dev IFACE` does not list.
default6_via_ll() { ip -6 route show default | grep -Eq "via fe80::[0-9a-f:]+ dev $1( |\$)"; }
ll_ready() { ip -6 -o addr show dev "$1" scope link | grep -v tentative | grep -q inet6; }
ping6_from() {
    local i
    for i in 1 2 3; do
        ping -6 -n -c 1 -W 2 -I "$1" "$2" >/dev/null 2>&1 && return 0
    done
    return 1
}
# check6 KEY IFACE: the address K_IP6, a default route via a link-local router, K_GW6
# answering ping, and each of K_PING6 (space-separated) too.
check6() {
    local k=$1 i=$2 ip6 gw6 extra dst
    ip6=${k^^}_IP6 gw6=${k^^}_GW6 extra=${k^^}_PING6
    if wait_until 60 addr6_ready "$i" "${!ip6}"; then
        pass "$k-ipv6-address" "$i $(addrs6_of "$i")"
    else
        fail "$k-ipv6-address" "$i: $(ip -6 -o addr show dev "$i" | tr '\n' '|') $(journalctl -u systemd-networkd --no-pager 2>&1 | grep -i "$i" | tail -n 15 | tr '\n' '|')"
    fi
    wait_until 20 default6_via_ll "$i"
    if default6_via_ll "$i"; then
        pass "$k-ipv6-default-route" "$(ip -6 route show default | tr '\n' '|')"
    else
        fail "$k-ipv6-default-route" "$(ip -6 route | tr '\n' '|')"
    fi
    if ping6_from "$i" "${!gw6}"; then
        pass "$k-ipv6-ping-gateway" "${!gw6} from $i"
    else
        fail "$k-ipv6-ping-gateway" "no answer from ${!gw6}: $(ip -6 route | tr '\n' '|'); $(ip -6 neigh | tr '\n' '|')"
    fi
    # Several interfaces' routers make one multipath default route, whose next hop for an
    # address past them is a hash's choice, not the interface asked for: a host route
    # through this interface's router makes the path the one under test.
    local ll
    ll=$(ip -6 route show default | grep -Eo "via fe80::[0-9a-f:]+ dev $i( |\$)" | awk '{print $2}' | head -n1)
    for dst in ${!extra:-}; do
        [ -z "$ll" ] || ip -6 route replace "$dst/128" via "$ll" dev "$i"
        if ping6_from "$i" "$dst"; then
            pass "$k-ipv6-ping-$dst" "$dst from $i via $ll"
        else
            fail "$k-ipv6-ping-$dst" "no answer from $dst via $ll: $(ip -6 route get "$dst" oif "$i" 2>&1) $(ip -6 -o addr show dev "$i" | tr '\n' '|') $(ip -6 neigh show dev "$i" | tr '\n' '|') $(ip -6 route | tr '\n' '|')"
        fi
        [ -z "$ll" ] || ip -6 route del "$dst/128" via "$ll" dev "$i"
    done
}
start_networkd() {
    # Debug log: the journal then shows each DHCP exchange (renewals too).
    mkdir -p /run/systemd/system/systemd-networkd.service.d
    printf '[Service]\nEnvironment=SYSTEMD_LOG_LEVEL=debug\n' >/run/systemd/system/systemd-networkd.service.d/90-debug.conf
    systemctl daemon-reload
    systemctl start systemd-networkd.service
}
# networkd's lease file of IFACE: its KEY=VALUE lines.
networkd_lease() { cat "/run/systemd/netif/leases/$(cat "/sys/class/net/$1/ifindex")" 2>/dev/null; }
lease_key() { sed -n "s/^$2=//p" <<<"$1" | head -n1; }
# The one NIC (not lo) whose MAC is none of $@: a NIC whose MAC the host did not choose (a CNI
# NIC takes the plugins' MAC).
iface_except() {
    local f mac found=
    for f in /sys/class/net/*; do
        [ -e "$f/device" ] || continue
        mac=$(cat "$f/address")
        case " $* " in *" $mac "*) continue ;; esac
        [ -n "$found" ] && return 1
        found=$(basename "$f")
    done
    [ -n "$found" ] && echo "$found"
}
