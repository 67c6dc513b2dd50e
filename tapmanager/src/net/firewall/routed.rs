//! The host's rules for isolated and masquerade networks (table `inet tapmanager_routed`, and
//! their NAT): per network a chain set, per guest its elements.

use super::*;
use std::net::Ipv6Addr;

/// A routed network (the isolated kind): its guests' traffic is filtered and NATed by the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedNet {
    /// Position among the routed networks; names its sets (`ports_N`, `drop_N`, `allow_N`).
    pub index: usize,
    pub range: Ipv4Net,
    pub uplink: IfName,
    pub drop: Vec<Ipv4Net>,
    pub allow: Option<Vec<Ipv4Net>>,
    /// Masquerade networks' port forwards: maps `fwd_tcp_N`/`fwd_udp_N` from host port to
    /// (guest namespace's transit address, port), consulted for packets from the uplink.
    pub forwards: bool,
    /// IPv6 (`range6`): its range, NATed out of the uplink, and its own drop/allow lists.
    pub v6: Option<RoutedNet6>,
}

/// The IPv6 side of a [`RoutedNet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedNet6 {
    pub range: ipnet::Ipv6Net,
    pub drop: Vec<ipnet::Ipv6Net>,
    pub allow: Option<Vec<ipnet::Ipv6Net>>,
}

/// One guest's host-side link on a routed network, and the only source it may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedPort {
    pub ifname: IfName,
    pub net: usize,
    /// The source MAC the host sees on the link: the guest's own when the TAP is joined to
    /// the veth, the namespace side's when the namespace routes.
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    /// The guest's gateway when it is a host address (a joined binding): the one host address
    /// the guest may ping, as it can ping a routed namespace's TAP.
    pub gateway: Option<Ipv4Addr>,
    /// (proto, host port, guest port): forwarded from the uplink to `ip`.
    pub forwards: Vec<(&'static str, u16, u16)>,
    /// The guest's /64, its only IPv6 sources (any address in it: SLAAC is its own business).
    pub ip6: Option<ipnet::Ipv6Net>,
    /// A joined binding with IPv6: the host side's IPv6 gateway and router link-local (the
    /// addresses the guest may ping there), and the guest's own addresses its neighbour
    /// discovery with them may come from (`nd_sources`).
    pub host6: Option<(Vec<Ipv6Addr>, Vec<Ipv6Addr>)>,
}

pub(super) fn cidrs<N: std::fmt::Display>(list: &[N]) -> String {
    list.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Tables `inet tapmanager_routed` (filter), `ip tapmanager_nat` and `ip6 tapmanager_nat6`:
/// guests' source addresses checked (IPv6 only from a guest's own /64, and none from a guest
/// without one), no guest-to-guest, nothing initiated towards a guest, nothing to the host's
/// own addresses, each network's drop/allow lists for each family, and masquerade out of its
/// uplink.
pub(super) fn routed_base_script(nets: &[RoutedNet]) -> String {
    let r = ROUTED;
    let mut s = format!(
        "add table {r}; add set {r} iso_ports {{ type ifname; }}; \
         add set {r} iso_src {{ type ifname . ether_addr . ipv4_addr; }}; \
         add set {r} iso_gw {{ type ifname . ipv4_addr; }}; \
         add set {r} iso_src6 {{ type ifname . ether_addr . ipv6_addr; flags interval; }}; \
         add set {r} iso_gw6 {{ type ifname . ipv6_addr; }}; \
         add set {r} iso_nd6 {{ type ifname . ether_addr . ipv6_addr; }}; \
         add set {r} iso_nd6_others {{ type ifname; size 65535; flags dynamic,timeout; timeout 2m; }}"
    );
    let mut nat6 = String::new();
    let mut per_net = String::new();
    let mut nat = String::new();
    for n in nets {
        let i = n.index;
        write!(s, "; add set {r} ports_{i} {{ type ifname; }}").unwrap();
        // Out by the uplink only: not onto a bridge network, another VM network or a VLAN.
        write!(
            per_net,
            "; add rule {r} forward iifname @ports_{i} oifname != \"{}\" counter drop",
            n.uplink
        )
        .unwrap();
        V4.lists(&mut s, &mut per_net, i, &n.drop, n.allow.as_deref());
        if n.forwards {
            V4.forward_maps(&mut nat, i, &n.uplink);
        }
        if let Some(v6) = &n.v6 {
            V6.lists(&mut s, &mut per_net, i, &v6.drop, v6.allow.as_deref());
            write!(
                nat6,
                "; add rule {NAT6} postrouting ip6 saddr {} oifname \"{}\" counter masquerade",
                v6.range, n.uplink
            )
            .unwrap();
            if n.forwards {
                V6.forward_maps(&mut nat6, i, &n.uplink);
            }
        }
    }
    // A joined guest's neighbour discovery from other addresses of its /64 than its own
    // (privacy addresses): bounded per port, as a routed guest's is in its namespace.
    let others = super::guards::ND_OTHERS;
    write!(
        s,
        "; add chain {r} forward {{ type filter hook forward priority 0; policy accept; }}; flush chain {r} forward\
         ; add rule {r} forward iifname @iso_ports meta nfproto ipv6 iifname . ether saddr . ip6 saddr != @iso_src6 counter drop\
         ; add rule {r} forward iifname @iso_ports iifname . ether saddr . ip saddr != @iso_src counter drop\
         ; add rule {r} forward iifname @iso_ports oifname @iso_ports counter drop\
         ; add rule {r} forward oifname @iso_ports ct status dnat counter accept\
         ; add rule {r} forward oifname @iso_ports ct state != {{ established, related }} counter drop\
         {per_net}\
         ; add chain {r} input {{ type filter hook input priority 0; policy accept; }}; flush chain {r} input\
         ; add rule {r} input iifname . ip daddr @iso_gw icmp type echo-request counter accept\
         ; add rule {r} input iifname . ether saddr . ip6 saddr @iso_nd6 icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} ip6 hoplimit 255 counter accept\
         ; add rule {r} input iifname . ether saddr . ip6 saddr @iso_src6 icmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert }} ip6 hoplimit 255 update @iso_nd6_others {{ iifname limit rate {others}/minute burst {others} packets }} counter accept\
         ; add rule {r} input iifname . ip6 daddr @iso_gw6 iifname . ether saddr . ip6 saddr @iso_src6 icmpv6 type echo-request counter accept\
         ; add rule {r} input iifname @iso_ports counter drop\
         ; add table {NAT}; add chain {NAT} postrouting {{ type nat hook postrouting priority 100; policy accept; }}\
         ; flush chain {NAT} postrouting\
         ; add chain {NAT} prerouting {{ type nat hook prerouting priority -100; policy accept; }}\
         ; flush chain {NAT} prerouting{nat}"
    )
    .unwrap();
    for n in nets {
        write!(
            s,
            "; add rule {NAT} postrouting ip saddr {} oifname \"{}\" counter masquerade",
            n.range, n.uplink
        )
        .unwrap();
    }
    write!(
        s,
        "; add table {NAT6}; add chain {NAT6} postrouting {{ type nat hook postrouting priority 100; policy accept; }}\
         ; flush chain {NAT6} postrouting\
         ; add chain {NAT6} prerouting {{ type nat hook prerouting priority -100; policy accept; }}\
         ; flush chain {NAT6} prerouting{nat6}"
    )
    .unwrap();
    s
}

/// What the routed rules write per address family: the match keyword, the set type, the NAT
/// table, and the suffix of its sets' and maps' names (`drop_0`, `drop6_0`, `fwd6_tcp_0`).
struct Family {
    ip: &'static str,
    addr: &'static str,
    nat: &'static str,
    suffix: &'static str,
}

const V4: Family = Family {
    ip: "ip",
    addr: "ipv4_addr",
    nat: NAT,
    suffix: "",
};

const V6: Family = Family {
    ip: "ip6",
    addr: "ipv6_addr",
    nat: NAT6,
    suffix: "6",
};

impl Family {
    /// Network `i`'s destination lists: `drop` (and `allow` when given) as interval sets, and
    /// the forward rules that check them.
    fn lists<N: std::fmt::Display>(
        &self,
        s: &mut String,
        per_net: &mut String,
        i: usize,
        drop: &[N],
        allow: Option<&[N]>,
    ) {
        let (r, sfx, ip, addr) = (ROUTED, self.suffix, self.ip, self.addr);
        let mut list = |name: &str, cidrs_of: &[N], rule: &str| {
            write!(s, "; add set {r} {name}{sfx}_{i} {{ type {addr}; flags interval; auto-merge; }}; flush set {r} {name}{sfx}_{i}").unwrap();
            if !cidrs_of.is_empty() {
                write!(
                    s,
                    "; add element {r} {name}{sfx}_{i} {{ {} }}",
                    cidrs(cidrs_of)
                )
                .unwrap();
            }
            write!(per_net, "; add rule {r} forward iifname @ports_{i} {ip} daddr {rule} @{name}{sfx}_{i} counter drop").unwrap();
        };
        list("drop", drop, "");
        if let Some(allow) = allow {
            list("allow", allow, "!=");
        }
    }

    /// Network `i`'s port forward maps, consulted for packets from its uplink.
    fn forward_maps(&self, nat: &mut String, i: usize, uplink: &IfName) {
        let (t, sfx, ip, addr) = (self.nat, self.suffix, self.ip, self.addr);
        for proto in ["tcp", "udp"] {
            write!(
                nat,
                "; add map {t} fwd{sfx}_{proto}_{i} {{ type inet_service : {addr} . inet_service; }}\
                 ; add rule {t} prerouting iifname \"{uplink}\" dnat {ip} to {proto} dport map @fwd{sfx}_{proto}_{i}"
            )
            .unwrap();
        }
    }
}

/// (table, set, element) for one routed port: the port itself last, so it is never half-set.
pub(super) fn routed_elements(p: &RoutedPort) -> Vec<(&'static str, String, String)> {
    let (ifname, mac, ip) = (&p.ifname, p.mac, p.ip);
    let mut v = vec![(
        ROUTED,
        "iso_src".to_owned(),
        format!("\"{ifname}\" . {mac} . {ip}"),
    )];
    if let Some(gw) = p.gateway {
        v.push((ROUTED, "iso_gw".to_owned(), format!("\"{ifname}\" . {gw}")));
    }
    if let Some(net6) = p.ip6 {
        v.push((
            ROUTED,
            "iso_src6".to_owned(),
            format!("\"{ifname}\" . {mac} . {net6}"),
        ));
        if let Some((gateways, sources)) = &p.host6 {
            for a in sources {
                v.push((
                    ROUTED,
                    "iso_nd6".to_owned(),
                    format!("\"{ifname}\" . {mac} . {a}"),
                ));
                // The link-local too is a source of its own (for neighbour discovery).
                if dhcp::frame6::is_link_local(*a) {
                    v.push((
                        ROUTED,
                        "iso_src6".to_owned(),
                        format!("\"{ifname}\" . {mac} . {a}"),
                    ));
                }
            }
            for gw in gateways {
                v.push((ROUTED, "iso_gw6".to_owned(), format!("\"{ifname}\" . {gw}")));
            }
        }
        // A masquerade guest's forwards over IPv6 reach its namespace's side of the transit
        // /64 (::2), which forwards them on to the guest.
        let ns_side = std::net::Ipv6Addr::from(u128::from(net6.network()) + 2);
        for (proto, host, guest) in &p.forwards {
            v.push((
                NAT6,
                format!("fwd6_{proto}_{}", p.net),
                format!("{host} : {ns_side} . {guest}"),
            ));
        }
    }
    for (proto, host, guest) in &p.forwards {
        v.push((
            NAT,
            format!("fwd_{proto}_{}", p.net),
            format!("{host} : {ip} . {guest}"),
        ));
    }
    v.push((ROUTED, format!("ports_{}", p.net), format!("\"{ifname}\"")));
    v.push((ROUTED, "iso_ports".to_owned(), format!("\"{ifname}\"")));
    v
}

/// The commands that put one guest's link under its network's rules.
pub fn routed_port_script(p: &RoutedPort) -> String {
    routed_elements(p)
        .iter()
        .map(|(t, set, e)| format!("add element {t} {set} {{ {e} }}"))
        .collect::<Vec<_>>()
        .join("; ")
}

pub(super) fn routed_remove_commands(p: &RoutedPort) -> Vec<String> {
    routed_elements(p)
        .iter()
        .rev()
        .map(|(t, set, e)| format!("delete element {t} {set} {{ {e} }}"))
        .collect()
}
