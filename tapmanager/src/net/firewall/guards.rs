//! The per-port guards of bridge TAPs (table `netdev tapmanager`: the sets, the shared
//! `guard` chain, a base chain per TAP's ingress hook) and a macvtap's source-MAC guard.

use super::*;

/// One macvtap guest's guard: its MAC, and whether its IPv6 sources are held to the
/// interface identifier its MAC gives (the LAN's router hands out the prefix, so the daemon
/// knows no address, only the identifier a guest with the kernel's default forms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacvtapGuard {
    pub ifname: IfName,
    pub mac: MacAddr,
    /// `ipv6_sources = "eui64"` (the default): IPv6 sources, neighbour advertisement and
    /// duplicate address detection targets only with the MAC's modified EUI-64 identifier.
    pub eui64_only: bool,
}

/// A macvtap's guard: a base chain on the device's egress hook (the guest's frames leave
/// through the macvtap device). Kernels before 6.16 drop the chain with the device; 6.18
/// keeps it, hooked to nothing: teardown deletes it either way. Only the guest's MAC; no
/// 802.1Q or 802.1ad tag (behind which the IPv6 rules below would see no IPv6); no router
/// advertisement, redirect or renumbering and no DHCPv6 server onto the LAN (from port 547
/// or to port 546; the LAN's router serves it); no fragmented IPv6 to link-local or multicast destinations (where
/// neighbour discovery and DHCPv6 live, and where a fragment would hide them); and with
/// `eui64_only`, IPv6 from and neighbour advertisements for its own identifier only.
pub(super) fn macvtap_guard_script(g: &MacvtapGuard) -> String {
    let (ifname, mac) = (&g.ifname, g.mac);
    let chain = format!("{MACVTAP} out_{ifname}");
    let mut s = format!(
        "add table {MACVTAP}; add chain {chain} {{ type filter hook egress device \"{ifname}\" priority 0; policy accept; }}; \
         add rule {chain} ether saddr != {mac} counter drop; \
         add rule {chain} ether type {{ vlan, 8021ad }} counter drop; \
         add rule {chain} ether type ip6 icmpv6 type {{ nd-router-advert, nd-redirect, router-renumbering }} counter drop; \
         add rule {chain} ether type ip6 udp sport 547 counter drop; \
         add rule {chain} ether type ip6 udp dport 546 counter drop; \
         add rule {chain} ether type ip6 exthdr frag exists ip6 daddr {{ fe80::/10, ff00::/8 }} counter drop"
    );
    if g.eui64_only {
        let iid = u128::from(dhcp::frame6::link_local(mac.0)) as u64;
        let iid6 = std::net::Ipv6Addr::from(u128::from(iid));
        write!(
            s,
            "; add rule {chain} ether type ip6 ip6 saddr != :: ip6 saddr & ::ffff:ffff:ffff:ffff != {iid6} counter drop\
             ; add rule {chain} ether type ip6 ip6 saddr :: icmpv6 type != nd-neighbor-solicit counter drop\
             ; add rule {chain} ether type ip6 ip6 saddr :: @th,128,64 != 0x{iid:016x} counter drop\
             ; add rule {chain} ether type ip6 icmpv6 type nd-neighbor-advert @th,128,64 != 0x{iid:016x} counter drop"
        )
        .unwrap();
    }
    s
}

/// The addresses a guest may send neighbour discovery from to a router of ours: its leased
/// address, its link-local and (in a /64) the address SLAAC forms from its MAC, all from its
/// MAC's modified EUI-64 identifier but the leased one. A router learns a neighbour entry
/// from every solicitation with a link-layer option, and the kernel's neighbour table is the
/// whole host's: from any address of a /64 a guest could fill it.
pub fn nd_sources(l: &protocol::Lease6, mac: MacAddr) -> Vec<Ipv6Addr> {
    let ll = dhcp::frame6::link_local(mac.0);
    let mut v = vec![l.address.0, ll];
    if l.address.1 == 64 {
        let iid = u128::from(ll) & u128::from(u64::MAX);
        let slaac = Ipv6Addr::from(u128::from(l.address.0) & !u128::from(u64::MAX) | iid);
        if slaac != l.address.0 {
            v.push(slaac);
        }
    }
    v
}

/// How many other addresses of its prefix (privacy addresses, say) a guest may do neighbour
/// discovery from per [`ND_OTHERS_WINDOW`]: its router learns at most that many entries
/// beyond its own addresses, whatever it sends.
pub const ND_OTHERS: u32 = 16;
pub const ND_OTHERS_WINDOW: &str = "1m";

/// A routed guest namespace's guard on its TAP (table `netdev NAME`): router and neighbour
/// solicitations and neighbour advertisements from `sources` (and `::`, which teaches
/// nothing) pass; from at most [`ND_OTHERS`] other addresses per minute (a dynamic set, full
/// at that size) too; the rest is dropped. Replaces what is there.
pub fn nd_guard_script(name: &str, tap: &str, sources: &[Ipv6Addr]) -> String {
    let t = format!("netdev {name}");
    let list = std::iter::once("::".to_owned())
        .chain(sources.iter().map(Ipv6Addr::to_string))
        .collect::<Vec<_>>()
        .join(", ");
    let nd =
        "ether type ip6 icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert }";
    format!(
        "add table {t}\ndelete table {t}\ntable {t} {{\n  \
         set others {{ type ipv6_addr; size {ND_OTHERS}; flags dynamic,timeout; timeout {ND_OTHERS_WINDOW}; }}\n  \
         chain in {{ type filter hook ingress device \"{tap}\" priority -500; policy accept;\n    \
         {nd} ip6 saddr {{ {list} }} accept\n    \
         {nd} update @others {{ ip6 saddr }} accept\n    \
         {nd} counter drop\n  }}\n}}\n"
    )
}

/// What one port may send: its guest's MAC and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortGuard {
    pub ifname: IfName,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    /// Its IPv6 addresses (the leased one and its link-local); empty on a network without
    /// IPv6, where every IPv6 frame is dropped.
    pub ip6: Vec<Ipv6Addr>,
    /// A bridge's port: its TAP's host-side MAC joins `tapmacs`, which no guest may address.
    /// Not on a routed network, whose guest sends everything to that MAC (its router).
    pub bridged: bool,
}

/// A shard of a bridge network (kinds/bridge.rs): the shard bridge, and the MACs of its three
/// links (the shard bridge and both ends of its veth). Sealed, no guest frame addressed to one
/// of those MACs passes a guard (they join `tapmacs`: such a frame would go up that link's
/// own stack, or the network bridge's past its hairpin rule), and the shard bridge's own stack
/// takes no frame at all (a drop-all chain on its ingress hook, which on a bridge sees only
/// what the bridge passes up to itself, never what it forwards).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSeal {
    pub bridge: IfName,
    pub macs: Vec<MacAddr>,
}

/// One shard's seal, as one line (add only: converges on a seal already there).
pub(super) fn seal_script(s: &ShardSeal) -> String {
    let t = GUARDS_TABLE;
    let macs: Vec<String> = s.macs.iter().map(MacAddr::to_string).collect();
    format!(
        "add element {t} tapmacs {{ {} }}; \
         add chain {t} seal_{b} {{ type filter hook ingress device \"{b}\" priority -500; \
         policy drop; }}",
        macs.join(", "),
        b = s.bridge
    )
}

/// The guards of DESIGN.md §5, for every port at once: source MAC and ARP sender MAC from the
/// port's `macs` entry, source IPv4 and ARP sender IP from its `ips` entry (ARP probes from
/// 0.0.0.0 pass), DHCP kept on the port (our server answers it there), no DHCP server in the
/// guest (from port 67 or to port 68).
///
/// IPv6 the same way, written so that a field nft cannot read (a fragment without the ICMPv6
/// or UDP header, a transport header too short) never lets a frame through a check:
/// - a port not in `v6ports` (a network without IPv6) has all of its IPv6 dropped;
/// - the source must be one of the port's `ip6s` entries (its leased address and link-local);
/// - fragments to link-local or multicast destinations, or to another guest's address
///   (`peers6`), are dropped: neighbour discovery, advertisements and DHCPv6 live there;
/// - `::` only for duplicate address detection of its own addresses: an unfragmented
///   neighbour solicitation whose target (the 16 bytes after the ICMPv6 header's 8,
///   `@th,64,128`, since nft 1.0.6 has no `icmpv6 taddr`) is in `nd6s` is accepted there,
///   every other frame from `::` dropped;
/// - router solicitations and DHCPv6 stay on the port (its server answers them there); no
///   router advertisements, redirects or router renumbering, no DHCPv6 server;
/// - a neighbour advertisement may claim only the port's own addresses (target in `nd6s`);
/// - a neighbour solicitation or advertisement with options must carry its link-layer address
///   option first (the one Linux keeps of duplicates), and that option must name the port's
///   MAC (`lla6`: the same bytes as `macs`, typed for the raw `@th,208,48`);
/// - no multicast listener queries (a guest is no multicast router).
///
/// Multicast listener reports pass (from the guest's own source). Nothing to a TAP's host
/// side (`tapmacs`: the MACs the daemon gives them): the bridge takes a frame to a port's
/// own MAC as its own and routes it, past the hairpin table, which knows the bridge's MAC
/// only. Nothing but IPv4, ARP and IPv6. `ether type` is the outer type also for a tagged frame whose tag the kernel took off
/// before the hook, so 802.1Q and 802.1ad frames end in the last rule.
pub(super) const GUARDS: [&str; 22] = [
    "iifname . ether saddr != @macs counter drop",
    "ether daddr @tapmacs counter drop",
    "ether type arp iifname . arp saddr ether != @macs counter drop",
    "ether type arp arp saddr ip != 0.0.0.0 iifname . arp saddr ip != @ips counter drop",
    "ether type ip udp dport 67 counter drop",
    "ether type ip udp sport 67 counter drop",
    "ether type ip udp dport 68 counter drop",
    "ether type ip iifname . ip saddr != @ips counter drop",
    "ether type ip6 iifname != @v6ports counter drop",
    "ether type ip6 ip6 saddr != :: iifname . ip6 saddr != @ip6s counter drop",
    "ether type ip6 exthdr frag exists ip6 daddr { fe80::/10, ff00::/8 } counter drop",
    "ether type ip6 exthdr frag exists ip6 daddr @peers6 counter drop",
    "ether type ip6 ip6 saddr :: ip6 nexthdr ipv6-icmp icmpv6 type nd-neighbor-solicit iifname . @th,64,128 @nd6s accept",
    "ether type ip6 ip6 saddr :: counter drop",
    "ether type ip6 icmpv6 type { nd-router-solicit, nd-router-advert, nd-redirect, router-renumbering, mld-listener-query } counter drop",
    "ether type ip6 icmpv6 type nd-neighbor-advert iifname . @th,64,128 != @nd6s counter drop",
    "ether type ip6 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } @th,192,8 != { 1, 2 } counter drop",
    "ether type ip6 icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } iifname . @th,208,48 != @lla6 counter drop",
    "ether type ip6 udp dport 547 counter drop",
    "ether type ip6 udp sport 547 counter drop",
    "ether type ip6 udp dport 546 counter drop",
    "ether type != { ip, arp, ip6 } counter drop",
];

/// The table, its sets and the guard chain. `add` of an existing object is a no-op in nft,
/// and the chain is flushed before its rules are added, so this converges (also from the
/// IPv4-only chain of earlier releases: the IPv6 sets are added beside the others).
pub(super) fn base_script() -> String {
    base_script_in(GUARDS_TABLE)
}

/// [`base_script`] in table `t` (`netdev NAME`).
fn base_script_in(t: &str) -> String {
    let mut s = format!(
        "add table {t}; \
         add set {t} macs {{ type ifname . ether_addr; }}; \
         add set {t} ips {{ type ifname . ipv4_addr; }}; \
         add set {t} ip6s {{ type ifname . ipv6_addr; }}; \
         add set {t} nd6s {{ typeof iifname . @th,64,128; }}; \
         add set {t} v6ports {{ type ifname; }}; \
         add set {t} peers6 {{ type ipv6_addr; }}; \
         add set {t} lla6 {{ typeof iifname . @th,208,48; }}; \
         add set {t} tapmacs {{ type ether_addr; }}; \
         add chain {t} guard; flush chain {t} guard"
    );
    for rule in GUARDS {
        write!(s, "; add rule {t} guard {rule}").unwrap();
    }
    s
}

/// The base chain that sends every frame of one TAP through `guard`, at the earliest
/// priority among nftables ingress chains.
fn port_chain_in(t: &str, ifname: &str) -> String {
    format!(
        "add chain {t} in_{ifname} {{ type filter hook ingress device \"{ifname}\" priority -500; policy accept; }}; \
         add rule {t} in_{ifname} jump guard"
    )
}

/// The elements that guard one port: its MAC and its addresses (and with IPv6: the port in
/// `v6ports`, its global addresses in `peers6`).
pub(super) fn elements(p: &PortGuard) -> Vec<(&'static str, String)> {
    let (mac, ip, ifname) = (p.mac, p.ip, &p.ifname);
    let mut v = vec![
        ("macs", format!("\"{ifname}\" . {mac}")),
        ("ips", format!("\"{ifname}\" . {ip}")),
    ];
    if p.bridged {
        v.push(("tapmacs", crate::names::host_side_mac(mac).to_string()));
    }
    for a in &p.ip6 {
        v.push(("ip6s", format!("\"{ifname}\" . {a}")));
        v.push(("nd6s", format!("\"{ifname}\" . 0x{:032x}", u128::from(*a))));
    }
    for a in p.ip6.iter().filter(|a| !dhcp::frame6::is_link_local(**a)) {
        v.push(("peers6", a.to_string()));
    }
    if !p.ip6.is_empty() {
        v.push(("v6ports", format!("\"{ifname}\"")));
        let hex: String = mac.0.iter().map(|b| format!("{b:02x}")).collect();
        v.push(("lla6", format!("\"{ifname}\" . 0x{hex}")));
    }
    v
}

/// The commands that guard one port: what it may send, then the hook that checks it. Used
/// by the start-up rebuild; an attach sends the same over netlink (nfnetlink.rs).
pub fn port_script(p: &PortGuard) -> String {
    port_script_in(GUARDS_TABLE, p)
}

fn port_script_in(t: &str, p: &PortGuard) -> String {
    let mut s = elements(p)
        .iter()
        .map(|(set, e)| format!("add element {t} {set} {{ {e} }}"))
        .collect::<Vec<_>>()
        .join("; ");
    write!(s, "; {}", port_chain_in(t, p.ifname.as_str())).unwrap();
    s
}

/// One port's guard in a table of its own, `netdev NAME` (a CNI or pod guest's namespace,
/// where its TAP is the only port): the same sets, rules and hook as the bridge kind's.
pub fn own_table_script(name: &str, p: &PortGuard) -> String {
    let t = format!("netdev {name}");
    format!("{}; {}", base_script_in(&t), port_script_in(&t, p))
}
