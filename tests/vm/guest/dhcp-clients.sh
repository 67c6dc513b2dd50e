# Boot A of the real-guest tier: three real DHCP clients of Debian 12, one NIC each, on three
# bridge networks of one daemon (so each client's DNS, search, domain and MTU differ and what
# each applied can be told apart), and networkd on a CNI network (option 121). Every option
# the daemon hands out must reach the client's lease record and, where the client applies it,
# the system; then each renews at T1 across a daemon restart the host does when it sees
# TM-LEASED, keeping its address.
#
# Inputs (/tm/env): VM, LEASE_SECS; for ND (networkd), DC (dhclient), DP (dhcpcd) and CNI:
# <P>_MAC (not CNI: that NIC has the plugins' MAC, it is the fourth one) <P>_IP <P>_PREFIX <P>_GW; for ND, DC, DP: <P>_DNS, <P>_SEARCH (space-separated),
# <P>_DOMAIN, <P>_MTU, <P>_BRD (broadcast address, option 28); CNI_ROUTE_DST, CNI_ROUTE_VIA (a route the plugins gave, option 121);
# CNI_IP6, CNI_GW6 (optional: the plugins' IPv6 address and gateway).

# The clients set the host name only when the machine has none of its own (networkd through
# hostnamed, which ignores DHCP while a static name exists; dhclient and dhcpcd when the name
# is localhost), as on a cloud image.
rm -f /etc/hostname
hostname localhost
# The clients run on after this script: not from /tm, which the agent unmounts.
cd /
step "start"

# contains_all HAYSTACK WORDS...: every word appears in HAYSTACK as a word.
contains_all() {
    local hay=" $(tr '\n\t' '  ' <<<"$1") " w
    shift
    for w in "$@"; do
        case "$hay" in *" $w "*) ;; *) return 1 ;; esac
    done
}
# check_opt NAME RECEIVED APPLIED DETAIL: RECEIVED and APPLIED are 0/1 results.
check_opt() {
    if [ "$2" = 0 ] && [ "$3" = 0 ]; then pass "$1" "$4"; else fail "$1" "received=$([ "$2" = 0 ] && echo yes || echo no) applied=$([ "$3" = 0 ] && echo yes || echo no): $4"; fi
}
resolv() { cat /etc/resolv.conf 2>/dev/null; }

# --- systemd-networkd: the ND NIC (a bridge network) and the CNI NIC ---------------------
ND=$(iface_of "$ND_MAC") || { fail nd-lease "no NIC with MAC $ND_MAC: $(ip -br link | tr '\n' '|')"; exit 1; }
CNI=$(iface_except "$ND_MAC" "$DC_MAC" "$DP_MAC") || { fail cni-lease "not one NIC besides $ND_MAC $DC_MAC $DP_MAC: $(ip -br link | tr '\n' '|')"; exit 1; }
CNI_MAC=$(cat "/sys/class/net/$CNI/address")
DC=$(iface_of "$DC_MAC") || { fail dc-lease "no NIC with MAC $DC_MAC"; exit 1; }
DP=$(iface_of "$DP_MAC") || { fail dp-lease "no NIC with MAC $DP_MAC"; exit 1; }
info nics "networkd=$ND dhclient=$DC dhcpcd=$DP cni=$CNI"
networkd_for nd "$ND_MAC"
if [ -n "${CNI_IP6:-}" ]; then networkd_dual_for cni "$CNI_MAC"; else networkd_for cni "$CNI_MAC"; fi
start_networkd
if wait_until 40 has_addr "$ND" "$ND_IP/$ND_PREFIX" && wait_until 20 has_addr "$CNI" "$CNI_IP/$CNI_PREFIX"; then
    pass nd-lease "$ND $ND_IP/$ND_PREFIX"
    pass cni-lease "$CNI $CNI_IP/$CNI_PREFIX"
else
    fail nd-lease "$ND: $(addrs_of "$ND"); $CNI: $(addrs_of "$CNI"); $(networkctl --no-pager 2>&1 | tr '\n' '|')"
    fail cni-lease "see nd-lease"
fi
T_ND=$SECONDS
step "networkd leased"
# networkd hands the host name to hostnamed, DNS and domains to resolved: both asynchronous.
wait_until 10 sh -c "[ \"\$(hostname)\" = '$VM' ]"
wait_until 10 sh -c "resolvectl dns '$ND' | grep -q '$(cut -d' ' -f1 <<<"$ND_DNS")'"
L=$(networkd_lease "$ND")
info nd-leasefile "$L"
info nd-networkctl "$(networkctl status --no-pager "$ND" 2>&1)"
has_addr "$ND" "$ND_IP/$ND_PREFIX"; a=$?
[ "$(lease_key "$L" ADDRESS)" = "$ND_IP" ]; r=$?
check_opt nd-address $r $a "$(addrs_of "$ND")"
[ "$(lease_key "$L" ROUTER)" = "$ND_GW" ]; r=$?
default_via "$ND" "$ND_GW"; a=$?
check_opt nd-gateway $r $a "lease ROUTER=$(lease_key "$L" ROUTER); $(ip -4 route show default dev "$ND" | tr '\n' '|')"
[ "$(lease_key "$L" DNS)" = "$ND_DNS" ]; r=$?
got=$(resolvectl dns "$ND" 2>&1)
contains_all "$got" $ND_DNS; a=$?
check_opt nd-dns $r $a "lease DNS=$(lease_key "$L" DNS); resolvectl: $got"
contains_all "$(lease_key "$L" DOMAIN_SEARCH_LIST)" $ND_SEARCH; r=$?
got=$(resolvectl domain "$ND" 2>&1)
contains_all "$got" $ND_SEARCH; a=$?
check_opt nd-search $r $a "lease DOMAIN_SEARCH_LIST=$(lease_key "$L" DOMAIN_SEARCH_LIST); resolvectl: $got"
[ "$(lease_key "$L" DOMAINNAME)" = "$ND_DOMAIN" ]; r=$?
contains_all "$got" "$ND_DOMAIN"; a=$?
check_opt nd-domain $r $a "lease DOMAINNAME=$(lease_key "$L" DOMAINNAME); resolvectl: $got"
[ "$(lease_key "$L" MTU)" = "$ND_MTU" ]; r=$?
[ "$(cat "/sys/class/net/$ND/mtu")" = "$ND_MTU" ]; a=$?
check_opt nd-mtu $r $a "lease MTU=$(lease_key "$L" MTU); link mtu $(cat "/sys/class/net/$ND/mtu")"
[ "$(lease_key "$L" HOSTNAME)" = "$VM" ]; r=$?
[ "$(hostname)" = "$VM" ]; a=$?
check_opt nd-hostname $r $a "lease HOSTNAME=$(lease_key "$L" HOSTNAME); hostname $(hostname)"
check_ping nd-ping-gateway "$ND" "$ND_GW"
# Options 51, 58, 59 (T1 half the lease, T2 seven eighths) and 28.
T1=$((LEASE_SECS / 2)) T2=$((LEASE_SECS * 7 / 8))
got="LIFETIME=$(lease_key "$L" LIFETIME) T1=$(lease_key "$L" T1) T2=$(lease_key "$L" T2)"
expect nd-lease-times "LIFETIME=$LEASE_SECS T1=$T1 T2=$T2" "$got"
[ "$(lease_key "$L" BROADCAST)" = "$ND_BRD" ]; r=$?
ip -4 -o addr show dev "$ND" | grep -q " brd $ND_BRD "; a=$?
check_opt nd-broadcast $r $a "lease BROADCAST=$(lease_key "$L" BROADCAST); $(ip -4 -o addr show dev "$ND" | sed 's/^[0-9]*: *//; s/ *\\ */ /g')"

# The CNI NIC: the plugins' address, gateway and routes, the routes as option 121.
L=$(networkd_lease "$CNI")
info cni-leasefile "$L"
info cni-routes "$(ip -4 route show dev "$CNI")"
has_addr "$CNI" "$CNI_IP/$CNI_PREFIX"; a=$?
[ "$(lease_key "$L" ADDRESS)" = "$CNI_IP" ]; r=$?
check_opt cni-address $r $a "$(addrs_of "$CNI")"
if ip -4 route show "$CNI_ROUTE_DST" | grep -q "via $CNI_ROUTE_VIA dev $CNI "; then
    pass cni-option121-route "$CNI_ROUTE_DST via $CNI_ROUTE_VIA dev $CNI"
else
    fail cni-option121-route "no $CNI_ROUTE_DST via $CNI_ROUTE_VIA: $(ip -4 route | tr '\n' '|') lease CLASSLESS_ROUTES=$(lease_key "$L" CLASSLESS_ROUTES)"
fi
if default_via "$CNI" "$CNI_GW"; then pass cni-option121-default "via $CNI_GW"; else fail cni-option121-default "$(ip -4 route | tr '\n' '|')"; fi
check_ping cni-ping-gateway "$CNI" "$CNI_GW"
# With IPv6 (CNI_IP6, CNI_GW6): the plugins' address by DHCPv6, the default route via the
# router the daemon found for the plugins' gateway, which answers.
[ -z "${CNI_IP6:-}" ] || check6 cni "$CNI"

# --- ISC dhclient ----------------------------------------------------------------------------
hostname localhost
# dhclient-script writes /etc/resolv.conf itself (no resolvconf hook for it here): on a
# machine where dhclient owns it, it is a file, not resolved's stub, which resolved rewrites
# whenever a link's DNS changes (networkd's do, at any time).
rm -f /etc/resolv.conf
: >/etc/resolv.conf
step "dhclient"
dhclient -4 -d -v -pf /run/dc.pid -lf /run/dc.leases "$DC" >/run/dc.log 2>&1 &
if wait_until 40 grep -q "^bound to $DC_IP" /run/dc.log; then pass dc-lease "$DC $DC_IP"; else fail dc-lease "$(tail -n 8 /run/dc.log | tr '\n' '|')"; fi
T_DC=$SECONDS
L=$(cat /run/dc.leases)
info dc-leasefile "$L"
info dc-resolv.conf "$(resolv)"
has_addr "$DC" "$DC_IP/$DC_PREFIX"; a=$?
grep -q "fixed-address $DC_IP;" <<<"$L"; r=$?
check_opt dc-address $r $a "$(addrs_of "$DC")"
grep -q "option routers $DC_GW;" <<<"$L"; r=$?
default_via "$DC" "$DC_GW"; a=$?
check_opt dc-gateway $r $a "$(ip -4 route show default dev "$DC" | tr '\n' '|')"
grep -q "option domain-name-servers $(sed 's/ /,/g' <<<"$DC_DNS");" <<<"$L"; r=$?
[ "$(resolv | awk '/^nameserver/ {print $2}' | tr '\n' ' ' | sed 's/ $//')" = "$DC_DNS" ]; a=$?
check_opt dc-dns $r $a "resolv.conf nameservers: $(resolv | awk '/^nameserver/ {print $2}' | tr '\n' ' ')"
# dhclient prints the names of option 119 as absolute ones, with the root's dot.
grep -q "option domain-search \"$(sed 's/ /.", "/g' <<<"$DC_SEARCH")\.\";" <<<"$L"; r=$?
contains_all "$(resolv | grep '^search' | sed 's/\. / /g; s/\.$//')" $DC_SEARCH; a=$?
check_opt dc-search $r $a "resolv.conf: $(resolv | grep '^search')"
# dhclient-script writes the search list to resolv.conf, the domain only without one: the
# domain is checked as received.
grep -q "option domain-name \"$DC_DOMAIN\";" <<<"$L"; r=$?
check_opt dc-domain $r 0 "$(grep 'domain-name ' <<<"$L" | head -n1)"
grep -q "option interface-mtu $DC_MTU;" <<<"$L"; r=$?
[ "$(cat "/sys/class/net/$DC/mtu")" = "$DC_MTU" ]; a=$?
check_opt dc-mtu $r $a "link mtu $(cat "/sys/class/net/$DC/mtu")"
grep -q "option host-name \"$VM\";" <<<"$L"; r=$?
[ "$(hostname)" = "$VM" ]; a=$?
check_opt dc-hostname $r $a "hostname $(hostname)"
check_ping dc-ping-gateway "$DC" "$DC_GW"
if grep -q "option dhcp-lease-time $LEASE_SECS;" <<<"$L" && grep -q "option dhcp-renewal-time $T1;" <<<"$L" && grep -q "option dhcp-rebinding-time $T2;" <<<"$L"; then
    pass dc-lease-times "$LEASE_SECS/$T1/$T2"
else
    fail dc-lease-times "$(grep -E 'lease-time|renewal-time|rebinding-time' <<<"$L" | tr '\n' '|')"
fi
grep -q "option broadcast-address $DC_BRD;" <<<"$L"; r=$?
ip -4 -o addr show dev "$DC" | grep -q " brd $DC_BRD "; a=$?
check_opt dc-broadcast $r $a "$(ip -4 -o addr show dev "$DC" | sed 's/^[0-9]*: *//; s/ *\\ */ /g')"

# --- dhcpcd ----------------------------------------------------------------------------------
hostname localhost
step "dhcpcd"
dhcpcd -4 -B -d --logfile /run/dp.log "$DP" >/run/dp.out 2>&1 &
if wait_until 40 grep -q "$DP: leased $DP_IP" /run/dp.log && wait_until 10 sh -c "resolvectl dns '$DP' | grep -q '$(cut -d' ' -f1 <<<"$DP_DNS")'"; then pass dp-lease "$DP $DP_IP"; else fail dp-lease "$(tail -n 8 /run/dp.log | tr '\n' '|')"; fi
T_DP=$SECONDS
wait_until 5 sh -c "[ \"\$(hostname)\" = '$VM.$DP_DOMAIN' ]"
L=$(dhcpcd -4 -U "$DP" 2>&1)
info dp-lease "$L"
info dp-resolv.conf "$(resolv)"
info dp-routes "$(ip -4 route show dev "$DP")"
has_addr "$DP" "$DP_IP/$DP_PREFIX"; a=$?
grep -q "^ip_address='\?$DP_IP'\?$" <<<"$L"; r=$?
check_opt dp-address $r $a "$(addrs_of "$DP")"
grep -q "^routers='\?$DP_GW'\?$" <<<"$L"; r=$?
default_via "$DP" "$DP_GW"; a=$?
check_opt dp-gateway $r $a "$(ip -4 route show default dev "$DP" | tr '\n' '|')"
# dhcpcd's 20-resolv.conf hook hands DNS and domains to resolvconf, which on Debian 12 with
# systemd-resolved is resolvectl's: they land on the link in resolved.
grep -q "^domain_name_servers='\?$DP_DNS'\?$" <<<"$L"; r=$?
got=$(resolvectl dns "$DP" 2>&1)
contains_all "$got" $DP_DNS; a=$?
check_opt dp-dns $r $a "resolvectl: $got"
grep -q "^domain_search='\?$DP_SEARCH'\?$" <<<"$L"; r=$?
got=$(resolvectl domain "$DP" 2>&1)
contains_all "$got" $DP_SEARCH; a=$?
check_opt dp-search $r $a "resolvectl: $got"
grep -q "^domain_name='\?$DP_DOMAIN'\?$" <<<"$L"; r=$?
contains_all "$got" "$DP_DOMAIN"; a=$?
check_opt dp-domain $r $a "resolvectl: $got"
grep -q "^interface_mtu='\?$DP_MTU'\?$" <<<"$L"; r=$?
# dhcpcd applies option 26 to the link, or to its routes' MTU.
{ [ "$(cat "/sys/class/net/$DP/mtu")" = "$DP_MTU" ] || ip -4 route show default dev "$DP" | grep -q " mtu $DP_MTU"; }; a=$?
check_opt dp-mtu $r $a "link mtu $(cat "/sys/class/net/$DP/mtu"); $(ip -4 route show default dev "$DP")"
# dhcpcd's 30-hostname hook (hostname_fqdn=true by default) names the machine host name
# (option 12) dot domain (option 15).
grep -q "^host_name='\?$VM'\?$" <<<"$L"; r=$?
[ "$(hostname)" = "$VM.$DP_DOMAIN" ]; a=$?
check_opt dp-hostname $r $a "hostname $(hostname)"
check_ping dp-ping-gateway "$DP" "$DP_GW"
if grep -q "^dhcp_lease_time='\?$LEASE_SECS'\?$" <<<"$L" && grep -q "^dhcp_renewal_time='\?$T1'\?$" <<<"$L" && grep -q "^dhcp_rebinding_time='\?$T2'\?$" <<<"$L"; then
    pass dp-lease-times "$LEASE_SECS/$T1/$T2"
else
    fail dp-lease-times "$(grep -E 'lease_time|renewal_time|rebinding_time' <<<"$L" | tr '\n' '|')"
fi
grep -q "^broadcast_address='\?$DP_BRD'\?$" <<<"$L"; r=$?
ip -4 -o addr show dev "$DP" | grep -q " brd $DP_BRD "; a=$?
check_opt dp-broadcast $r $a "$(ip -4 -o addr show dev "$DP" | sed 's/^[0-9]*: *//; s/ *\\ */ /g')"

# --- T1 across a daemon restart ----------------------------------------------------------------
# The host restarts the daemon when it sees this line; every client's T1 comes after that:
# t1_in says how soon the first one is.
first=$T_ND
[ "$T_DC" -lt "$first" ] && first=$T_DC
[ "$T_DP" -lt "$first" ] && first=$T_DP
echo "TM-LEASED t1_in=$((first + LEASE_SECS / 2 - SECONDS))"
step "leased; waiting past T1 ($((LEASE_SECS / 2)) s after each lease)"
last=$T_ND
[ "$T_DC" -gt "$last" ] && last=$T_DC
[ "$T_DP" -gt "$last" ] && last=$T_DP
until [ "$SECONDS" -ge $((last + LEASE_SECS / 2 + 12)) ]; do sleep 1; done
step "past T1"

# networkd: the address's valid lifetime restarts at each ACK; without a renewal it would be
# LEASE_SECS minus the time since the lease.
e=$((SECONDS - T_ND))
v=$(valid_lft "$ND" "$ND_IP/$ND_PREFIX")
info nd-journal "$(journalctl -b -u systemd-networkd --no-pager -o cat | grep -iE "$ND.*(DHCP|lease)|DHCP CLIENT" | tail -n 25)"
acks=$(journalctl -b -u systemd-networkd --no-pager -o cat | grep -cE "DHCPv4 client: ACK|DHCP CLIENT .*: ACK")
renewing=$(journalctl -b -u systemd-networkd --no-pager -o cat | grep -c "^$ND: DHCPv4 client: REQUEST (renewing)")
if [ -n "$v" ] && [ "$v" -gt $((LEASE_SECS - e + 10)) ] && [ "$renewing" -ge 1 ]; then
    pass nd-renew "$ND_IP kept, valid_lft ${v}s ${e}s after the lease; $renewing renewing REQUESTs, $acks ACKs in the journal"
else
    fail nd-renew "address $(addrs_of "$ND") valid_lft ${v:-none} ${e}s after the lease (no renewal: $((LEASE_SECS - e))); $renewing renewing REQUESTs, $acks ACKs in the journal"
fi
info dc-log "$(cat /run/dc.log)"
n=$(grep -c "^DHCPACK of $DC_IP" /run/dc.log)
if [ "$n" -ge 2 ] && has_addr "$DC" "$DC_IP/$DC_PREFIX" && ! grep -q DHCPNAK /run/dc.log; then
    pass dc-renew "$DC_IP kept; $n DHCPACKs"
else
    fail dc-renew "$n DHCPACKs of $DC_IP; $(addrs_of "$DC"); $(grep -c DHCPNAK /run/dc.log) NAKs"
fi
info dp-log "$(cat /run/dp.log)"
n=$(grep -c "$DP: leased $DP_IP" /run/dp.log)
if grep -q "$DP: renewing lease of $DP_IP" /run/dp.log && [ "$n" -ge 2 ] && has_addr "$DP" "$DP_IP/$DP_PREFIX" && ! grep -qi "NAK" /run/dp.log; then
    pass dp-renew "$DP_IP kept; leased $n times"
else
    fail dp-renew "leased $n times; $(grep -c 'renewing lease' /run/dp.log) renewals; $(addrs_of "$DP")"
fi
step "done"
