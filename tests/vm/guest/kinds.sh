# Boot B of the real-guest tier: systemd-networkd leases on one NIC of each kind besides the
# bridge (isolated with each binding, masquerade, pod) and pings its gateway, and from the
# isolated and masquerade NICs a host of the test's LAN, through the host's NAT.
#
# Inputs (/tm/env): VM; NICS, the NICs' keys in guest order; per key K: K_MAC (empty: the NIC
# whose MAC the host did not choose, e.g. the pod's, which keeps the pod interface's MAC),
# K_IP, K_PREFIX, K_GW, K_PING (more addresses to ping from it, space-separated); with IPv6
# also K_IP6 (the address DHCPv6 leases), K_GW6 and K_PING6 (see check6 in lib.sh).
cd /
step "start"
declare -A IF
chosen=()
for k in $NICS; do
    m=${k^^}_MAC
    [ -n "${!m}" ] && chosen+=("${!m}")
done
for k in $NICS; do
    m=${k^^}_MAC
    if [ -n "${!m}" ]; then
        IF[$k]=$(iface_of "${!m}") || { fail "$k-lease" "no NIC with MAC ${!m}: $(ip -br link | tr '\n' '|')"; continue; }
    else
        IF[$k]=$(iface_except "${chosen[@]}") || { fail "$k-lease" "not one NIC besides ${chosen[*]}: $(ip -br link | tr '\n' '|')"; continue; }
    fi
    ip6=${k^^}_IP6
    if [ -n "${!ip6:-}" ]; then
        networkd_dual_for "$k" "$(cat "/sys/class/net/${IF[$k]}/address")"
    else
        networkd_for "$k" "$(cat "/sys/class/net/${IF[$k]}/address")"
    fi
done
info nics "$(for k in $NICS; do printf '%s=%s ' "$k" "${IF[$k]:-none}"; done)"
start_networkd
for k in $NICS; do
    [ -n "${IF[$k]:-}" ] || continue
    i=${IF[$k]} ip_=${k^^}_IP prefix=${k^^}_PREFIX gw=${k^^}_GW extra=${k^^}_PING
    if wait_until 40 has_addr "$i" "${!ip_}/${!prefix}"; then
        pass "$k-lease" "$i ${!ip_}/${!prefix}"
    else
        fail "$k-lease" "$i: $(addrs_of "$i"); $(networkctl status --no-pager "$i" 2>&1 | grep -E 'State|Address' | tr '\n' '|')"
        continue
    fi
    wait_until 10 default_via "$i" "${!gw}"
    if default_via "$i" "${!gw}"; then pass "$k-gateway" "via ${!gw}"; else fail "$k-gateway" "$(ip -4 route show dev "$i" | tr '\n' '|')"; fi
    check_ping "$k-ping-gateway" "$i" "${!gw}"
    for dst in ${!extra}; do
        check_ping "$k-ping-$dst" "$i" "$dst"
    done
    ip6=${k^^}_IP6
    [ -z "${!ip6:-}" ] || check6 "$k" "$i"
done
info networkctl "$(networkctl list --no-pager 2>&1)"
step "done"
