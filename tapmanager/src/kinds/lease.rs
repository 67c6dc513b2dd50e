//! What each guest's DHCP server hands out: address, gateway, the routes of option 121, DNS,
//! MTU, lease time. Pure, from the journaled NIC and its network's settings, so the guest is
//! told the same after a restart. The routes are the NIC's own: a CNI NIC's from its
//! plugins' result (`cni/port.rs` writes them into the NIC at build), a pod NIC's from what
//! its pod's interface had (`pod.rs`); a bridge or isolated NIC has none beyond the default
//! route. `dhcp/src/reply.rs::classless_routes` encodes them.

use super::{bridge, cni, isolated, pod, routed, Bridges, NicState};
use crate::config::{Config, NetworkKind};
use crate::state::{Nic, Record};
use std::net::Ipv4Addr;

/// What the DHCP server of one NIC hands out; `None` for a NIC that has none (macvtap: the
/// LAN's own serves it). Pure: from the journaled NIC and the config, the same at attach and
/// after a restart.
pub(crate) fn binding(
    config: &Config,
    bridges: &Bridges,
    record: &Record,
    nic: &Nic,
) -> Option<dhcp::Binding> {
    let iface = &nic.iface;
    let net = config.network(&iface.network)?;
    let lease = match (&nic.built, &net.kind) {
        (NicState::Bridge, NetworkKind::Bridge(b)) => bridge::lease(bridges, iface, b)?,
        (NicState::Routed, NetworkKind::Routed(r)) => routed::lease(iface, r),
        (NicState::Isolated { .. } | NicState::Masquerade { .. }, NetworkKind::Isolated(i)) => {
            isolated::lease(iface, i)
        }
        (NicState::Pod { masquerade, .. }, NetworkKind::Pod(p)) => {
            pod::lease(iface, p, *masquerade)
        }
        (NicState::Cni { domain, .. }, NetworkKind::Cni(c)) => {
            cni::port::lease_of(iface, c, domain)
        }
        _ => return None,
    };
    // An isolated guest owns its whole /64 (SLAAC in it is its own business); a bridge guest
    // shares a prefix, where the guards hold it to its one leased address.
    // (A /127 has no room for SLAAC; tc-redirect's filters pass the leased address only.)
    let autonomous = matches!(
        nic.built,
        NicState::Isolated {
            binding: None | Some(crate::config::VethBinding::Bridge),
            ..
        }
    ) && iface.ipv6.as_ref().is_some_and(|l| l.address.1 == 64);
    let (ip, prefix_len) = iface.address?;
    let gateway = iface.gateway?;
    Some(dhcp::Binding {
        mac: iface.mac.0,
        ip,
        prefix_len,
        gateway: Some(gateway),
        server_id: gateway,
        server_mac: lease.server_mac.0,
        routes: iface
            .routes
            .iter()
            .filter_map(|(dst, len, via)| Some((ipnet::Ipv4Net::new(*dst, *len).ok()?, *via)))
            .collect(),
        dns: lease.dns,
        search: lease.search,
        hostname: hostname(&record.vm),
        domain: lease.domain,
        mtu: u16::try_from(lease.mtu).ok(),
        lease_secs: lease.lease_secs,
        v6: iface.ipv6.as_ref().map(|l| dhcp::Binding6 {
            ip: Some(l.address.0),
            prefix: ipnet::Ipv6Net::new(l.address.0, l.address.1)
                .map_or_else(|_| ipnet::Ipv6Net::default(), |n| n.trunc()),
            autonomous,
            router: l.router,
            dns: l.dns.clone(),
            // Where the router is someone else's, or the host side of a joined veth (whose
            // MAC is not the server's), the guest resolves it.
            router_on_server_mac: !matches!(
                nic.built,
                NicState::Cni { .. }
                    | NicState::Pod {
                        masquerade: false,
                        ..
                    }
                    | NicState::Isolated {
                        binding: Some(_),
                        ..
                    }
            ),
        }),
    })
}

/// A kind's part of a DHCP binding: who answers and what besides address, gateway and routes
/// (which the NIC itself carries).
pub(crate) struct Lease {
    pub server_mac: protocol::MacAddr,
    pub dns: Vec<std::net::Ipv4Addr>,
    pub search: Vec<String>,
    pub domain: Option<String>,
    pub mtu: u32,
    pub lease_secs: u32,
}

fn hostname(vm: &protocol::VmId) -> Option<String> {
    let s = vm.as_str();
    let ok = s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    ok.then(|| s.to_owned())
}

/// Option 121 routes as a NIC carries them.
pub(crate) fn routes(r: &[(ipnet::Ipv4Net, Ipv4Addr)]) -> Vec<(Ipv4Addr, u8, Ipv4Addr)> {
    r.iter()
        .map(|(dst, via)| (dst.addr(), dst.prefix_len(), *via))
        .collect()
}
