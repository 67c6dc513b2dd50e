//! The masquerade kind (KubeVirt's masquerade binding, on a host): an isolated guest
//! ([`super::isolated`] builds it, routed or joined alike) whose address is the same fixed one
//! in every guest (`cidr`'s second address, the gateway its first), hidden behind NAT in its
//! own namespace. The host routes a transit /30 per guest to the namespace, whose side of it
//! the guest's traffic leaves as; the network's port forwards reach one guest at a time.
//!
//! ```text
//!  guest (fixed 10.0.2.2) ── tap0 [guest netns: NAT to transit] veth0 ══ vethH [host] ── NAT ── uplink
//! ```

use super::{Addressing, PlanNic};
use crate::config::{IsolatedNet, Masquerade};
use crate::state::{Nic, NicState};
use protocol::{Error, ErrorCode};
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// A masquerade NIC: the fixed address in every guest, and a transit /30 of the network's
/// range no other masquerade NIC has. A network that forwards host ports takes one guest.
pub(crate) fn plan(
    iso: &IsolatedNet,
    m: &Masquerade,
    p: &PlanNic<'_>,
) -> Result<Addressing, Error> {
    if !m.ports.is_empty() {
        let mut holder = None;
        (p.attached)(&mut |r| {
            if holder.is_none() && r.interfaces().any(|x| x.network == *p.network) {
                holder = Some((r.vm.clone(), r.uid));
            }
        });
        if let Some((vm, uid)) = holder {
            return Err(Error::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "network {} forwards host ports, and VM {} (uid {}) holds them",
                    p.network, vm, uid
                ),
            ));
        }
    }
    // The guest's address is the same in every namespace; the transit /30 between host and
    // namespace is what must be unique.
    let transit = |nic: &Nic| match nic.built {
        NicState::Masquerade { transit, .. } => Some(transit),
        _ => None,
    };
    let mut used: HashSet<Ipv4Addr> = p.planned.iter().filter_map(transit).collect();
    (p.attached)(&mut |r| used.extend(r.nics.iter().filter_map(transit)));
    let block =
        crate::ipam::free_slash30(iso.range, &used).ok_or_else(|| super::exhausted(p.network))?;
    let (guest, gw) = guest_and_gateway(m.cidr);
    // IPv6: the fixed guest address of cidr6, and a transit /64 at the transit /30's position.
    let mac = p.request.mac.unwrap_or(p.derived_mac);
    let ipv6 = m
        .cidr6
        .filter(|_| iso.block6(block.network()).is_some())
        .map(|c| {
            let base = u128::from(c.network());
            protocol::Lease6 {
                address: (std::net::Ipv6Addr::from(base + 2), c.prefix_len()),
                gateway: std::net::Ipv6Addr::from(base + 1),
                router: dhcp::router::router_address(crate::names::host_side_mac(mac).0),
                dns: iso.v6.as_ref().map(|v| v.dns.clone()).unwrap_or_default(),
            }
        });
    Ok(Addressing {
        ipv6,
        address: Some((guest, m.cidr.prefix_len())),
        gateway: Some(gw),
        mtu: iso.mtu,
        built: NicState::Masquerade {
            binding: iso.binding(),
            transit: crate::ipam::slash30_parts(block)[2],
        },
    })
}

/// The namespace's NAT: the guest's traffic leaves as the transit address, and the
/// network's forwards arrive at the guest's fixed address (the host already turned each host
/// port into the guest's). For one `nft -f` from the namespace's thread (a persistent `nft -i`
/// per guest would be a process per VM). `again`: the table may be there (adoption), and is
/// replaced in the same transaction.
pub(crate) fn namespace_nat(
    m: &Masquerade,
    guest: Ipv4Addr,
    guest6: Option<std::net::Ipv6Addr>,
    again: bool,
) -> String {
    const TABLE: &str = "tapmanager_guest";
    let script = crate::net::firewall::guest_nat_script(&crate::net::firewall::GuestNat {
        table: TABLE,
        out: super::isolated::NS_VETH,
        guest,
        guest6,
        source_only: false,
        forwards: m
            .ports
            .iter()
            .map(|f| (f.proto.as_str(), f.guest, f.guest))
            .collect(),
        confine: None,
    });
    match again {
        false => script,
        true => format!(
            "add table ip {TABLE}\ndelete table ip {TABLE}\nadd table ip6 {TABLE}\ndelete table ip6 {TABLE}\n{script}"
        ),
    }
}

/// The host's forwards to a masquerade guest: (protocol, host port, guest port).
pub(crate) fn host_forwards(m: &Masquerade) -> Vec<(&'static str, u16, u16)> {
    m.ports
        .iter()
        .map(|f| (f.proto.as_str(), f.host, f.guest))
        .collect()
}

/// The guest's fixed address and its gateway in `cidr`.
pub(crate) fn guest_and_gateway(cidr: ipnet::Ipv4Net) -> (Ipv4Addr, Ipv4Addr) {
    let net = u32::from(cidr.network());
    (Ipv4Addr::from(net + 2), Ipv4Addr::from(net + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masquerade() -> Masquerade {
        let config = crate::config::Config::parse(
            "group = \"0\"\n[networks.nat]\nkind = \"masquerade\"\nuplink = \"eth0\"\n\
             ports = [\"tcp:8080:80\"]\n",
        )
        .unwrap();
        match &config.network(&"nat".parse().unwrap()).unwrap().kind {
            crate::config::NetworkKind::Isolated(i) => i.masquerade().cloned().unwrap(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn adoption_replaces_the_namespace_table_in_one_transaction() {
        let m = masquerade();
        let guest = "10.0.2.2".parse().unwrap();
        let first = namespace_nat(&m, guest, None, false);
        assert!(first.starts_with("table ip tapmanager_guest {"), "{first}");
        assert!(
            first.contains("iifname \"veth0\" tcp dport 80 dnat to 10.0.2.2:80"),
            "{first}"
        );
        let again = namespace_nat(&m, guest, None, true);
        assert_eq!(
            again,
            format!("add table ip tapmanager_guest\ndelete table ip tapmanager_guest\nadd table ip6 tapmanager_guest\ndelete table ip6 tapmanager_guest\n{first}")
        );
        let dual = namespace_nat(&m, guest, Some("fd10:0:2::2".parse().unwrap()), false);
        assert!(dual.contains("table ip6 tapmanager_guest {"), "{dual}");
        assert!(
            dual.contains("iifname \"veth0\" tcp dport 80 dnat to [fd10:0:2::2]:80"),
            "{dual}"
        );
        assert_eq!(host_forwards(&m), vec![("tcp", 8080, 80)]);
    }

    #[test]
    fn the_guest_is_the_second_address_and_the_gateway_the_first() {
        let (guest, gw) = guest_and_gateway("10.0.2.0/24".parse().unwrap());
        assert_eq!(
            (guest, gw),
            ("10.0.2.2".parse().unwrap(), "10.0.2.1".parse().unwrap())
        );
    }
}
