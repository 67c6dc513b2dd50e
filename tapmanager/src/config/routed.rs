//! A routed network's settings (the kind: `kinds/routed.rs`).

use super::checks;
use super::raw::RawRouted;
use ipnet::Ipv4Net;
use protocol::IfName;
use std::net::Ipv4Addr;

/// A routed network: no bridge; each guest's TAP a point-to-point link, each guest an address
/// of `gateway`'s subnet as a /32, routed by the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedNetwork {
    /// The link that holds the gateway address (a bridge with no ports, which the daemon
    /// makes as it makes a bridge network's bridge).
    pub device: IfName,
    /// The gateway address with the subnet the guests' addresses come from.
    pub gateway: Ipv4Net,
    pub dns: Vec<Ipv4Addr>,
    pub search: Vec<String>,
    pub domain: Option<String>,
    pub mtu: u32,
    pub lease_secs: u32,
    /// Masquerade out of the host: `Some(None)` out of any link but the network's, `Some(Some(if))`
    /// out of that one only. `None`: guests reach each other and the host, nothing beyond.
    pub nat: Option<Option<IfName>>,
    /// Destinations the guests may not reach (their own subnet included: guest to guest).
    pub drop: Vec<Ipv4Net>,
    /// If given, the only destinations they may reach.
    pub allow: Option<Vec<Ipv4Net>>,
}

pub(super) fn validate(r: RawRouted, prefix: &str) -> Result<RoutedNetwork, String> {
    let device = checks::own_link(r.device, "device", prefix)?;
    let gw = r.gateway;
    checks::gateway(gw)?;
    checks::mtu(r.mtu)?;
    checks::lease_secs(r.lease_secs)?;
    let nat = checks::nat(
        r.nat,
        r.uplink,
        &device,
        "without it, nothing leaves the network",
    )?;
    // An address of the subnet is a guest's: a DNS server there would be whichever guest
    // leased it (the gateway is the host's).
    if let Some(d) = r.dns.iter().find(|d| gw.contains(*d) && **d != gw.addr()) {
        return Err(format!(
            "dns {d} is in the guests' subnet {}, where addresses are the guests' (the gateway \
             {} is the host's)",
            gw.trunc(),
            gw.addr()
        ));
    }
    Ok(RoutedNetwork {
        device,
        gateway: gw,
        dns: r.dns,
        search: r.search,
        domain: r.domain,
        mtu: r.mtu,
        lease_secs: r.lease_secs,
        nat,
        drop: r.drop.iter().map(|n| n.trunc()).collect(),
        allow: r.allow.map(|a| a.iter().map(|n| n.trunc()).collect()),
    })
}
