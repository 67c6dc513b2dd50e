//! NAT: a bridge network's masquerade out of its uplink, and the one builder of a guest
//! namespace's NAT (the masquerade kind's namespace and a pod's masquerade binding).

use super::*;

/// A bridge network with `nat = true`: libvirt's default network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatBridge {
    pub bridge: IfName,
    pub subnet: Ipv4Net,
    /// Its IPv6 prefix, masqueraded the same way (NAT66) in table `ip6 tapmanager_bridge_nat6`.
    pub subnet6: Option<ipnet::Ipv6Net>,
    /// Out of this interface only; `None`: out of any but the bridge (where routes lead).
    pub uplink: Option<IfName>,
}

/// Tables `ip tapmanager_bridge_nat` and `ip6 tapmanager_bridge_nat6`, always replaced whole
/// (they depend on the config only): the guests' subnet (and IPv6 prefix) is masqueraded when
/// it leaves the host, answers come back, and nothing else is forwarded to the bridge
/// (nothing may open a connection to a guest from outside).
pub(super) fn bridge_nat_script(nets: &[NatBridge]) -> String {
    let v4: Vec<(&NatBridge, String)> = nets.iter().map(|n| (n, n.subnet.to_string())).collect();
    let v6: Vec<(&NatBridge, String)> = nets
        .iter()
        .filter_map(|n| Some((n, n.subnet6?.to_string())))
        .collect();
    let mut s = family_nat(BRIDGE_NAT, "ip", "224.0.0.0/4, 255.255.255.255", &v4);
    s.push_str("; ");
    s.push_str(&family_nat(BRIDGE_NAT6, "ip6", "ff00::/8, fe80::/10", &v6));
    s
}

/// One family's table of [`bridge_nat_script`]: `ip` matches `ip saddr`, `ip6` `ip6 saddr`;
/// `not_out` are the destinations never masqueraded (multicast, broadcast, link-local).
fn family_nat(t: &str, ip: &str, not_out: &str, nets: &[(&NatBridge, String)]) -> String {
    let mut s = format!("add table {t}; delete table {t}");
    if nets.is_empty() {
        return s;
    }
    write!(
        s,
        "; add table {t}\
         ; add chain {t} forward {{ type filter hook forward priority 0; policy accept; }}\
         ; add chain {t} postrouting {{ type nat hook postrouting priority 100; policy accept; }}"
    )
    .unwrap();
    for (n, subnet) in nets {
        let br = &n.bridge;
        // Bridged frames between two guests (seen here with br_netfilter) stay allowed.
        write!(
            s,
            "; add rule {t} forward iifname \"{br}\" oifname \"{br}\" accept\
             ; add rule {t} forward oifname \"{br}\" ct state established,related accept\
             ; add rule {t} forward oifname \"{br}\" counter drop\
             ; add rule {t} forward iifname \"{br}\" {ip} saddr != {subnet} counter drop"
        )
        .unwrap();
        let out = match &n.uplink {
            Some(u) => {
                write!(
                    s,
                    "; add rule {t} forward iifname \"{br}\" oifname != \"{u}\" counter drop"
                )
                .unwrap();
                format!("oifname \"{u}\"")
            }
            None => format!("oifname != \"{br}\""),
        };
        write!(
            s,
            "; add rule {t} postrouting {ip} saddr {subnet} {ip} daddr != {subnet} \
             {ip} daddr != {{ {not_out} }} {out} counter masquerade"
        )
        .unwrap();
    }
    s
}

/// A bridge network as its guests' router: its bridge, the bridge's fixed MAC (the MAC a
/// guest addresses a routed packet to) and its subnets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hairpin {
    pub bridge: IfName,
    pub mac: MacAddr,
    pub subnet: Ipv4Net,
    pub subnet6: Option<ipnet::Ipv6Net>,
}

/// Table `inet tapmanager_hairpin`, replaced whole: a packet a guest sends to its router for
/// an address of its own network (which it reaches directly, on the link) is dropped before
/// the host routes it back onto the bridge. Routed, an address nobody holds would cost the
/// host a neighbour entry each (the kernel's neighbour tables are the whole host's, a few
/// thousand entries); the guards hold guests' sources, but not the destinations they ask
/// their router for. `ether daddr` tells these from frames between two guests that
/// `br_netfilter` shows this hook with the same bridge in and out: those are not to the
/// bridge's MAC.
pub(super) fn hairpin_script(nets: &[Hairpin]) -> String {
    let t = HAIRPIN;
    let mut s = format!("add table {t}; delete table {t}");
    if nets.is_empty() {
        return s;
    }
    write!(
        s,
        "; add table {t}; add chain {t} forward {{ type filter hook forward priority -10; policy accept; }}"
    )
    .unwrap();
    for n in nets {
        let (br, mac) = (&n.bridge, n.mac);
        let to_router = format!("iifname \"{br}\" oifname \"{br}\" ether daddr {mac}");
        write!(
            s,
            "; add rule {t} forward {to_router} ip daddr {} counter drop",
            n.subnet
        )
        .unwrap();
        if let Some(s6) = n.subnet6 {
            write!(
                s,
                "; add rule {t} forward {to_router} ip6 daddr {s6} counter drop"
            )
            .unwrap();
        }
    }
    s
}

/// The NAT of one guest behind a namespace of its own (the masquerade kind's, or a pod's
/// masquerade binding): the guest's traffic leaves by `out` masqueraded (only from `guest` when
/// `source_only`), and each forward `(proto, port on out, port of the guest)` arrives at the
/// guest. With `confine` (the guest's TAP), a forward chain also lets the guest send only
/// from its address and only out by `out`, and lets in only forwarded or answering traffic.
/// One `nft -f` script, run in that namespace.
#[derive(Debug)]
pub struct GuestNat<'a> {
    pub table: &'a str,
    pub out: &'a str,
    pub guest: std::net::Ipv4Addr,
    /// The guest's IPv6 address: the same NAT again in a table of family `ip6`.
    pub guest6: Option<std::net::Ipv6Addr>,
    pub source_only: bool,
    pub forwards: Vec<(&'static str, u16, u16)>,
    pub confine: Option<&'a str>,
}

pub fn guest_nat_script(n: &GuestNat<'_>) -> String {
    let mut s = family_guest_nat(n, "ip", &n.guest.to_string(), &n.guest.to_string());
    if let Some(g6) = n.guest6 {
        s.push_str(&family_guest_nat(
            n,
            "ip6",
            &g6.to_string(),
            &format!("[{g6}]"),
        ));
    }
    s
}

/// One family's table of [`guest_nat_script`]: `guest` as a match, `target` as a DNAT target.
fn family_guest_nat(n: &GuestNat<'_>, ip: &str, guest: &str, target: &str) -> String {
    let (t, out) = (n.table, n.out);
    let from = if n.source_only {
        format!("{ip} saddr {guest} ")
    } else {
        String::new()
    };
    let mut s = format!(
        "table {ip} {t} {{\n  chain postrouting {{ type nat hook postrouting priority 100; policy accept;\n    \
         {from}oifname \"{out}\" masquerade\n  }}\n  \
         chain prerouting {{ type nat hook prerouting priority -100; policy accept;\n"
    );
    for (proto, outside, inside) in &n.forwards {
        s.push_str(&format!(
            "    iifname \"{out}\" {proto} dport {outside} dnat to {target}:{inside}\n"
        ));
    }
    s.push_str("  }\n");
    if let Some(tap) = n.confine {
        s.push_str(&format!(
            "  chain forward {{ type filter hook forward priority 0; policy accept;\n    \
             iifname \"{tap}\" {ip} saddr != {guest} counter drop\n    \
             iifname \"{tap}\" oifname != \"{out}\" counter drop\n    \
             oifname \"{tap}\" ct status dnat counter accept\n    \
             oifname \"{tap}\" ct state != {{ established, related }} counter drop\n  }}\n"
        ));
    }
    s.push_str("}\n");
    s
}
