# Boots C of the real-guest tier: no DHCP client runs; cloud-init (Debian 12's, 22.4) reads
# the NoCloud seed vmwrapper --cloud-init wrote (a vvfat drive labeled cidata) and configures
# the NICs from it with the renderer it selects. The guest must come up with the seed's
# addresses, gateway, routes, MTU, DNS, search domains and host name, and `cloud-init status`
# must say done.
#
# Inputs (/tm/env): VM; RENDERER (the one cloud-init must have selected); BR_MAC, BR_IP,
# BR_PREFIX, BR_GW, BR_DNS, BR_SEARCH, BR_MTU (a bridge NIC); CNI_IP, CNI_PREFIX, CNI_GW,
# CNI_ROUTE_DST, CNI_ROUTE_VIA (a CNI NIC, the other one, with a route besides the default).
cd /
step "start"
# cloud-init's last stage may still run when the agent starts.
st=$(timeout 120 cloud-init status --wait --long 2>&1)
info status "$st"
if grep -q '^status: done' <<<"$st"; then pass ci-status "done"; else fail ci-status "$(grep '^status' <<<"$st") $(grep -A3 '^detail' <<<"$st" | tr '\n' '|')"; fi
step "cloud-init finished"
sel=$(grep -o "Selected renderer '[a-z]*'[^|]*" /var/log/cloud-init.log | head -n1)
info renderer "$sel"
if grep -q "Selected renderer '$RENDERER'" <<<"$sel"; then pass ci-renderer "$RENDERER"; else fail ci-renderer "want $RENDERER: ${sel:-none selected}"; fi
info seed-network-config "$(cat /var/lib/cloud/seed/nocloud/network-config 2>/dev/null || find /var/lib/cloud/instance -maxdepth 1 -name 'network-config*' -exec cat {} \;)"
info rendered "$(cat /etc/network/interfaces.d/50-cloud-init 2>/dev/null; for f in /etc/systemd/network/10-cloud-init-*.network; do [ -f "$f" ] && { echo "== $f"; cat "$f"; }; done)"
info networking "$(journalctl -b -u networking --no-pager -o cat 2>&1 | tail -n 15)"
info warnings "$(grep -cE 'WARNING|Traceback' /var/log/cloud-init.log) WARNING/Traceback lines in cloud-init.log: $(grep -E 'WARNING|Traceback' /var/log/cloud-init.log | head -n 5)"

BR=$(iface_of "$BR_MAC") || { fail ci-br-address "no NIC with MAC $BR_MAC: $(ip -br link | tr '\n' '|')"; exit 1; }
CNI=$(iface_except "$BR_MAC") || { fail ci-cni-address "not one NIC besides $BR_MAC: $(ip -br link | tr '\n' '|')"; exit 1; }
info links "$(ip -br addr)"
info routes "$(ip -4 route)"
# The interfaces come up after cloud-init's local stage wrote their config.
wait_until 20 has_addr "$BR" "$BR_IP/$BR_PREFIX"
wait_until 10 has_addr "$CNI" "$CNI_IP/$CNI_PREFIX"
if has_addr "$BR" "$BR_IP/$BR_PREFIX"; then pass ci-br-address "$BR $BR_IP/$BR_PREFIX"; else fail ci-br-address "$BR: $(addrs_of "$BR")"; fi
if has_addr "$CNI" "$CNI_IP/$CNI_PREFIX"; then pass ci-cni-address "$CNI $CNI_IP/$CNI_PREFIX"; else fail ci-cni-address "$CNI: $(addrs_of "$CNI")"; fi
if default_via "$BR" "$BR_GW"; then pass ci-br-gateway "default via $BR_GW dev $BR"; else fail ci-br-gateway "no default via $BR_GW on $BR: $(ip -4 route | tr '\n' '|')"; fi
if ip -4 route show "$CNI_ROUTE_DST" | grep -q "via $CNI_ROUTE_VIA dev $CNI"; then pass ci-cni-route "$CNI_ROUTE_DST via $CNI_ROUTE_VIA dev $CNI"; else fail ci-cni-route "no $CNI_ROUTE_DST via $CNI_ROUTE_VIA: $(ip -4 route | tr '\n' '|')"; fi
if default_via "$CNI" "$CNI_GW"; then pass ci-cni-gateway "default via $CNI_GW dev $CNI"; else fail ci-cni-gateway "no default via $CNI_GW on $CNI: $(ip -4 route | tr '\n' '|')"; fi
expect ci-br-mtu "$BR_MTU" "$(cat "/sys/class/net/$BR/mtu")"
# DNS: per link in resolved (networkd; resolvconf) or in resolv.conf (ifupdown's
# dns-nameservers, which only resolvconf's hook applies).
rd=$(resolvectl dns "$BR" 2>&1)
rs=$(resolvectl domain "$BR" 2>&1)
rc=$(cat /etc/resolv.conf 2>/dev/null)
info dns "resolvectl: $rd; $rs; resolv.conf: $(grep -E '^(nameserver|search)' <<<"$rc")"
ok=0
for d in $BR_DNS; do
    grep -q " $d\( \|$\)" <<<"$rd" || grep -q "^nameserver $d$" <<<"$rc" || ok=1
done
if [ $ok = 0 ]; then pass ci-dns "$BR_DNS"; else fail ci-dns "want $BR_DNS: resolvectl [$rd] resolv.conf [$(grep '^nameserver' <<<"$rc" | tr '\n' ' ')]"; fi
ok=0
for d in $BR_SEARCH; do
    grep -q " $d\( \|$\)" <<<"$rs" || grep -q "^search.* $d\( \|$\)" <<<"$rc" || ok=1
done
if [ $ok = 0 ]; then pass ci-search "$BR_SEARCH"; else fail ci-search "want $BR_SEARCH: resolvectl [$rs] resolv.conf [$(grep '^search' <<<"$rc")]"; fi
expect ci-hostname "$VM" "$(hostname)"
check_ping ci-ping-gateway "$BR" "$BR_GW"
check_ping ci-cni-ping-gateway "$CNI" "$CNI_GW"
# DHCP stayed off: no client ran, nothing configured by DHCP.
clients=$(pgrep -a -x 'dhclient|dhcpcd' ; ip -4 -o addr | grep -w dynamic)
if [ -z "$clients" ] && ! grep -qsE '^DHCP=(yes|ipv4|true)' /etc/systemd/network/*.network; then pass ci-no-dhcp; else fail ci-no-dhcp "$clients"; fi
step "done"
