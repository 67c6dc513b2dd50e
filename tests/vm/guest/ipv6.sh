# The IPv6 boot of the real-guest tier (issue 14): two dual-stack bridge networks. On one NIC
# systemd-networkd runs DHCPv4 and IPv6 (it reads the router advertisement, whose M flag
# starts its DHCPv6 client); on the other the kernel takes the advertisement and ISC
# `dhclient -6` leases by DHCPv6. Each must get the address the daemon leases, a default
# route via the router's link-local address, the DNS server, and ping the router's global
# address.
#
# Inputs (/tm/env): for ND (networkd) and DC (dhclient): <P>_MAC <P>_IP6 <P>_GW6 <P>_DNS6.
cd /
step "start"
ND=$(iface_of "$ND_MAC") || { fail nd-ipv6-address "no NIC with MAC $ND_MAC: $(ip -br link | tr '\n' '|')"; exit 1; }
DC=$(iface_of "$DC_MAC") || { fail dc-ipv6-address "no NIC with MAC $DC_MAC: $(ip -br link | tr '\n' '|')"; exit 1; }
info nics "networkd=$ND dhclient=$DC"

# --- systemd-networkd: DHCPv4, router advertisements, DHCPv6 ------------------------------
mkdir -p /etc/systemd/network
cat >/etc/systemd/network/10-nd.network <<NET
[Match]
MACAddress=$ND_MAC

[Network]
DHCP=yes
LinkLocalAddressing=ipv6
IPv6AcceptRA=yes

[DHCPv6]
UseDNS=yes
NET
start_networkd
check6 nd "$ND"
wait_until 10 sh -c "resolvectl dns '$ND' | grep -q '$ND_DNS6'"
got=$(resolvectl dns "$ND" 2>&1)
case "$got" in *"$ND_DNS6"*) pass nd-ipv6-dns "$got" ;; *) fail nd-ipv6-dns "resolvectl: $got" ;; esac
info nd-networkctl "$(networkctl status --no-pager "$ND" 2>&1)"
step "networkd done"

# --- the kernel (advertisements) and dhclient -6 (DHCPv6) ---------------------------------
ip link set "$DC" up
if ! wait_until 20 ll_ready "$DC"; then
    fail dc-ipv6-address "no usable link-local address on $DC: $(addrs6_of "$DC")"
fi
dhclient -6 -v -1 -lf /run/dc6.leases -pf /run/dc6.pid "$DC" >/run/dc6.log 2>&1
info dc-log "$(cat /run/dc6.log)"
check6 dc "$DC"
if grep -q "option dhcp6.name-servers $DC_DNS6;" /run/dc6.leases; then
    pass dc-ipv6-dns "$(grep name-servers /run/dc6.leases | head -n1)"
else
    fail dc-ipv6-dns "$(tr '\n' '|' </run/dc6.leases)"
fi
step "done"
