//! A network's binding: how a veth meets a TAP inside a guest's namespace at layer 2
//! (DESIGN.md §2). Either a bridge whose two ports learn nothing, or an ingress mirred
//! redirect each way (Kata's and tc-redirect-tap's way), with no bridge at all.
//!
//! The TAP-to-veth direction is guarded on the tc-redirect binding: only IPv4 from the guest's
//! MAC and address, and ARP whose frame and sender fields name them, leave by the veth.
//! Everything else (DHCP from 0.0.0.0, IPv6, spoofed frames) goes on into the TAP's own stack
//! in the guest's namespace, which holds no address and forwards nothing, and ends there; the
//! DHCP server's packet socket sees the guest's frames before tc does, so it still answers.
//! On the bridge binding the guard is [`bridge_guard_script`] where nothing beyond the veth
//! checks (CNI), and the host side's rules where they do (isolated.rs).

use crate::config::VethBinding;
use crate::net::firewall::PortGuard;
use crate::net::link::{u32_keys, LinkError, Links};
use netlink_packet_route::tc::TcU32Key;
use protocol::MacAddr;
use std::net::{Ipv4Addr, Ipv6Addr};

const ETH_P_ALL: u16 = 0x0003;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
/// Offsets in the IPv6 header: next header, source, destination, and its payload.
const V6_NEXT: i32 = 6;
const V6_SRC: i32 = 8;
const V6_DST: i32 = 24;
const V6_PAYLOAD: i32 = 40;
/// Offsets from the network header: the Ethernet source, an IPv4 source, ARP's sender fields.
const ETH_SRC: i32 = -8;
const IP_SRC: i32 = 12;
const ARP_SHA: i32 = 8;
const ARP_SPA: i32 = 14;
/// The bridge of the bridge binding, inside a namespace of the daemon's own.
pub const NS_BRIDGE: &str = "br0";

/// One end of the join: a link's index and name, both in the namespace `links` talks to.
#[derive(Debug, Clone, Copy)]
pub struct End<'a> {
    pub index: u32,
    pub name: &'a str,
}

/// Joins `tap` and `veth` (both up) by `binding`; the bridge binding's bridge is named
/// `bridge`. `guest` is the only source (MAC, IPv4) the guest may use; `guest6` its IPv6
/// addresses, global first, then link-local (none: no IPv6 leaves).
#[allow(clippy::too_many_arguments)]
pub async fn join(
    links: &Links,
    binding: VethBinding,
    tap: End<'_>,
    veth: End<'_>,
    mtu: u32,
    guest: (MacAddr, Ipv4Addr),
    guest6: &[Ipv6Addr],
    bridge: &str,
) -> Result<(), LinkError> {
    match binding {
        VethBinding::Bridge => {
            let br = links.add_bridge(bridge, mtu).await?;
            for end in [veth, tap] {
                links
                    .enslave_without_learning(end.index, end.name, br, bridge)
                    .await?;
            }
        }
        VethBinding::TcRedirect => {
            let (mac, ip) = (guest.0 .0, guest.1.octets());
            for end in [veth, tap] {
                links.add_ingress_qdisc(end.index).await?;
            }
            links
                .redirect_ingress(veth.index, tap.index, 1, ETH_P_ALL, Vec::new())
                .await?;
            let ipv4 = u32_keys(&[(ETH_SRC, &mac), (IP_SRC, &ip)]);
            links
                .redirect_ingress(tap.index, veth.index, 1, ETH_P_IP, ipv4)
                .await?;
            let arp = u32_keys(&[(ETH_SRC, &mac), (ARP_SHA, &mac), (ARP_SPA, &ip)]);
            links
                .redirect_ingress(tap.index, veth.index, 2, ETH_P_ARP, arp)
                .await?;
            for (prio, (leaves, keys)) in (3..).zip(ipv6_filters(guest.0, guest6)) {
                if leaves {
                    links
                        .redirect_ingress(tap.index, veth.index, prio, ETH_P_IPV6, keys)
                        .await?;
                } else {
                    links
                        .keep_ingress(tap.index, prio, ETH_P_IPV6, keys)
                        .await?;
                }
            }
        }
    }
    Ok(())
}

/// The tc-redirect binding's IPv6 from the guest, in order: (whether what matches leaves by
/// the veth, the u32 keys). The first that matches decides; what none matches stays in the
/// TAP's stack, where IPv6 is off. The same guards as the bridge kind's, as far as fixed
/// offsets reach (no extension header is followed, so ND, MLD and transport headers are
/// read only where they sit right after the fixed header):
/// - DHCPv6 in either direction and fragments to link-local or multicast destinations stay;
/// - TCP, UDP, echo, ICMPv6 errors and fragments only from the global address;
/// - a neighbour solicitation from an own address with its source link-layer option first,
///   naming the guest's MAC, or from `::` for an own address (duplicate address detection);
/// - a neighbour advertisement only for an own address, from one, its target link-layer
///   option first and naming the guest's MAC;
/// - multicast listener reports (MLDv1 and v2, behind the router alert hop-by-hop header)
///   from the link-local address.
///
/// Router solicitations and advertisements, redirects, MLD queries and the rest match
/// nothing.
fn ipv6_filters(mac: MacAddr, guest6: &[Ipv6Addr]) -> Vec<(bool, Vec<TcU32Key>)> {
    let Some(global) = guest6.first().map(|a| a.octets().to_vec()) else {
        return Vec::new();
    };
    let own: Vec<Vec<u8>> = guest6.iter().map(|a| a.octets().to_vec()).collect();
    let ll: Vec<Vec<u8>> = guest6
        .iter()
        .filter(|a| dhcp::frame6::is_link_local(**a))
        .map(|a| a.octets().to_vec())
        .collect();
    let m = mac.0;
    let option = |kind: u8| vec![kind, 1, m[0], m[1], m[2], m[3], m[4], m[5]];
    let (stays, leaves) = (false, true);
    let next = |n: u8| (V6_NEXT, vec![n]);
    let src = |a: &[u8]| (V6_SRC, a.to_vec());
    let at = |off: i32, b: &[u8]| (V6_PAYLOAD + off, b.to_vec());
    let mut f: Vec<(bool, Vec<Match>)> = vec![
        (stays, vec![next(17), at(2, &[0x02, 0x23])]),
        (stays, vec![next(17), at(2, &[0x02, 0x22])]),
        (stays, vec![next(17), at(0, &[0x02, 0x23])]),
        (stays, vec![next(44), (V6_DST, vec![0xff])]),
    ];
    for n in [6, 17, 44] {
        f.push((leaves, vec![next(n), src(&global)]));
    }
    for kind in [128, 129] {
        f.push((leaves, vec![next(58), src(&global), at(0, &[kind])]));
    }
    for s in &own {
        f.push((
            leaves,
            vec![next(58), src(s), at(0, &[135]), at(24, &option(1))],
        ));
        for target in &own {
            let na = vec![
                next(58),
                src(s),
                at(0, &[136]),
                at(8, target),
                at(24, &option(2)),
            ];
            f.push((leaves, na));
        }
    }
    for target in &own {
        f.push((
            leaves,
            vec![next(58), src(&[0; 16]), at(0, &[135]), at(8, target)],
        ));
    }
    for s in &ll {
        for kind in [131, 143] {
            f.push((
                leaves,
                vec![next(0), src(s), at(0, &[58, 0]), at(8, &[kind])],
            ));
        }
    }
    // Fragments to link-local destinations (fe80::/10, a mask u32_keys' whole bytes cannot
    // say) stay: first of all.
    let mut link_local = u32_keys(&[(ETH_SRC, &m), (V6_NEXT, &[44])]);
    let mut fe80 = TcU32Key::default();
    (fe80.mask, fe80.val, fe80.off) = (0xffc0_0000, 0xfe80_0000, V6_DST);
    link_local.push(fe80);
    let mut filters: Vec<(bool, Vec<TcU32Key>)> = vec![(stays, link_local)];
    filters.extend(f.into_iter().map(|(leaves, k)| {
        let mut keys: Vec<(i32, &[u8])> = vec![(ETH_SRC, &m)];
        keys.extend(k.iter().map(|(o, b)| (*o, b.as_slice())));
        (leaves, u32_keys(&keys))
    }));
    // ICMPv6 errors (types below 128, the high bit clear) from the global address.
    let mut errors = u32_keys(&[(ETH_SRC, &m), (V6_NEXT, &[58]), (V6_SRC, &global)]);
    let mut high_bit = TcU32Key::default();
    (high_bit.mask, high_bit.val, high_bit.off) = (0x8000_0000, 0, V6_PAYLOAD);
    errors.push(high_bit);
    filters.push((leaves, errors));
    filters
}

/// Bytes to match at an offset from the network header.
type Match = (i32, Vec<u8>);

/// The bridge binding's guard, for one `nft -f` in the namespace: table `netdev {table}`
/// hooks the TAP's ingress, where every frame of the guest passes (a bridge's own hooks are
/// skipped by frames to link-local group MACs, DESIGN.md §6), with the bridge kind's guards
/// for this one port (its MAC, its IPv4 address, its IPv6 addresses `ip6` if it has any: all
/// of its IPv6 is dropped otherwise); table `bridge {table}` keeps DHCP and DHCPv6 from
/// crossing the bridge the other way (the guest's own server answers on the TAP's packet
/// socket, which sees the guest's frames before the ingress hook).
pub fn bridge_guard_script(table: &str, guard: &PortGuard) -> String {
    format!(
        "table bridge {table} {{\n  chain forward {{ type filter hook forward priority 0; policy accept;\n    \
         udp dport {{ 67, 68, 546, 547 }} counter drop\n  }}\n}}\n{};\n",
        crate::net::firewall::own_table_script(table, guard)
    )
}

/// Removes what [`bridge_guard_script`] made (and a table of the bridge family alone, as
/// daemons before the netdev guard made it). Converges: either may be absent.
pub fn bridge_guard_removal(table: &str) -> String {
    format!(
        "add table bridge {table}\ndelete table bridge {table}\n\
         add table netdev {table}\ndelete table netdev {table}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcp::frame6::{build_udp6_frame, icmp6_frame, link_local, neighbor_solicitation};

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0x12, 0x34, 0x56]);

    /// What the kernel's u32 classifier does with these filters (in order, the first whose
    /// keys all match decides): whether `frame` leaves by the veth. Offsets count from the
    /// network header, 14 bytes into the frame.
    fn leaves(filters: &[(bool, Vec<TcU32Key>)], frame: &[u8]) -> bool {
        let word = |off: i32| {
            let at = usize::try_from(14 + off).unwrap();
            frame
                .get(at..at + 4)
                .map_or(0, |b| u32::from_be_bytes(b.try_into().unwrap()))
        };
        filters
            .iter()
            .find(|(_, keys)| keys.iter().all(|k| word(k.off) & k.mask == k.val))
            .is_some_and(|(l, _)| *l)
    }

    fn udp(src: Ipv6Addr, dst: Ipv6Addr, ports: (u16, u16)) -> Vec<u8> {
        build_udp6_frame((MAC.0, [2, 0, 0, 0, 0, 1]), (src, dst), ports, b"x")
    }

    /// The frame with a fragment header after the fixed header (its first fragment).
    fn fragment(mut f: Vec<u8>) -> Vec<u8> {
        let next = f[14 + 6];
        f[14 + 6] = 44;
        f.splice(54..54, [next, 0, 0, 1, 0, 0, 0, 1]);
        f
    }

    #[test]
    fn the_tc_redirect_ipv6_filters_pass_the_guests_own_and_nothing_spoofed_or_rogue() {
        let me: Ipv6Addr = "fd99::2".parse().unwrap();
        let ll = link_local(MAC.0);
        let filters = ipv6_filters(MAC, &[me, ll]);
        let far: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let router: Ipv6Addr = "fe80::1".parse().unwrap();
        assert!(leaves(&filters, &udp(me, far, (4000, 53))));
        assert!(leaves(&filters, &neighbor_solicitation(MAC.0, ll, router)));
        assert!(leaves(&filters, &fragment(udp(me, far, (4000, 53)))));
        let refused = [
            (
                "a spoofed source",
                udp("fd99::3".parse().unwrap(), far, (4000, 53)),
            ),
            ("a DHCPv6 server message", udp(me, far, (547, 546))),
            (
                "a DHCPv6 client message",
                udp(ll, "ff02::1:2".parse().unwrap(), (546, 547)),
            ),
            (
                "a fragment to fe80::/16",
                fragment(udp(me, router, (4000, 53))),
            ),
            (
                "a fragment to fe81::/16",
                fragment(udp(me, "fe81::1".parse().unwrap(), (4000, 53))),
            ),
            (
                "a fragment to febf::/16",
                fragment(udp(me, "febf::1".parse().unwrap(), (4000, 53))),
            ),
            (
                "a fragment to multicast",
                fragment(udp(me, "ff02::1".parse().unwrap(), (4000, 53))),
            ),
            (
                "a router advertisement",
                icmp6_frame(
                    (MAC.0, [0x33, 0x33, 0, 0, 0, 1]),
                    (ll, "ff02::1".parse().unwrap()),
                    134,
                    &[0; 12],
                ),
            ),
            (
                "a solicitation naming another MAC",
                neighbor_solicitation([2, 9, 9, 9, 9, 9], ll, router)
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| {
                        if (6..12).contains(&i) {
                            MAC.0[i - 6]
                        } else {
                            b
                        }
                    })
                    .collect(),
            ),
        ];
        for (what, frame) in refused {
            assert!(!leaves(&filters, &frame), "{what} leaves");
        }
        // Without IPv6 no filter: all of it stays.
        assert!(ipv6_filters(MAC, &[]).is_empty());
    }
}
