//! The per-port guards of bridge TAPs (table `netdev tapmanager`: the sets, the shared
//! `guard` chain, a base chain per TAP's ingress hook) and a macvtap's source-MAC guard.

use super::*;

/// A macvtap's source-MAC guard: a base chain on the device's egress hook (the guest's frames
/// leave through the macvtap device). Kernels before 6.16 drop the chain with the device;
/// 6.18 keeps it, hooked to nothing: teardown deletes it either way.
pub(super) fn macvtap_guard_script(ifname: &IfName, mac: MacAddr) -> String {
    format!(
        "add table {MACVTAP}; add chain {MACVTAP} out_{ifname} {{ type filter hook egress device \"{ifname}\" priority 0; policy accept; }}; \
         add rule {MACVTAP} out_{ifname} ether saddr != {mac} counter drop"
    )
}

/// What one port may send: its guest's MAC and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortGuard {
    pub ifname: IfName,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
}

/// The guards of DESIGN.md §5, for every port at once: source MAC and ARP sender MAC from the
/// port's `macs` entry, source IPv4 and ARP sender IP from its `ips` entry (ARP probes from
/// 0.0.0.0 pass), DHCP kept on the port (our server answers it there), no DHCP server in the
/// guest (from port 67 or to port 68), no IPv6 (so no router advertisements, DHCPv6 or
/// neighbour spoofing), nothing but IPv4 and ARP. `ether type` is the outer type also for a
/// tagged frame whose tag the kernel took off before the hook, so 802.1Q and 802.1ad frames
/// end in the last rule.
pub(super) const GUARDS: [&str; 9] = [
    "iifname . ether saddr != @macs counter drop",
    "ether type arp iifname . arp saddr ether != @macs counter drop",
    "ether type arp arp saddr ip != 0.0.0.0 iifname . arp saddr ip != @ips counter drop",
    "ether type ip udp dport 67 counter drop",
    "ether type ip udp sport 67 counter drop",
    "ether type ip udp dport 68 counter drop",
    "ether type ip iifname . ip saddr != @ips counter drop",
    // No network hands out IPv6 yet, and an IPv6 source cannot be checked against a lease:
    // neighbour advertisements and redirects could poison other guests' caches.
    "ether type ip6 counter drop",
    "ether type != { ip, arp } counter drop",
];

/// The table, its sets and the guard chain. `add` of an existing object is a no-op in nft,
/// and the chain is flushed before its rules are added, so this converges.
pub(super) fn base_script() -> String {
    let t = GUARDS_TABLE;
    let mut s = format!(
        "add table {t}; \
         add set {t} macs {{ type ifname . ether_addr; }}; \
         add set {t} ips {{ type ifname . ipv4_addr; }}; \
         add chain {t} guard; flush chain {t} guard"
    );
    for rule in GUARDS {
        write!(s, "; add rule {t} guard {rule}").unwrap();
    }
    s
}

/// The base chain that sends every frame of one TAP through `guard`, at the earliest
/// priority among nftables ingress chains.
pub(super) fn port_chain(ifname: &IfName) -> String {
    format!(
        "add chain {GUARDS_TABLE} in_{ifname} {{ type filter hook ingress device \"{ifname}\" priority -500; policy accept; }}; \
         add rule {GUARDS_TABLE} in_{ifname} jump guard"
    )
}

/// The elements that guard one port: its MAC and its address.
pub(super) fn elements(p: &PortGuard) -> [(&'static str, String); 2] {
    let (mac, ip, ifname) = (p.mac, p.ip, &p.ifname);
    [
        ("macs", format!("\"{ifname}\" . {mac}")),
        ("ips", format!("\"{ifname}\" . {ip}")),
    ]
}

/// The commands that guard one port: what it may send, then the hook that checks it. Used
/// by the start-up rebuild; an attach sends the same over netlink (nfnetlink.rs).
pub fn port_script(p: &PortGuard) -> String {
    let mut s = elements(p)
        .iter()
        .map(|(set, e)| format!("add element {GUARDS_TABLE} {set} {{ {e} }}"))
        .collect::<Vec<_>>()
        .join("; ");
    write!(s, "; {}", port_chain(&p.ifname)).unwrap();
    s
}
