//! The routed kind: no bridge and no L2 between guests. Each guest's TAP is a point-to-point
//! link; the guest gets one address of the network's subnet as a /32, with its gateway on-link
//! through DHCP option 121; the host routes that /32 to the TAP (with a permanent neighbour
//! entry for the guest's MAC), so guest to guest crosses the host's forwarding, where the
//! network's drop/allow lists apply (`net/firewall/l3.rs`). NAT out is optional, as for a
//! bridge network.
//!
//! ```text
//!  guest A (10.90.0.2/32) ── tmA (TAP, guards) ─┐   host: 10.90.0.2/32 dev tmA, 10.90.0.3/32 dev tmB,
//!  guest B (10.90.0.3/32) ── tmB (TAP, guards) ─┴─  blackhole 10.90.0.0/16; the gateway 10.90.0.1
//!                                                   on the network's device; NAT out, if any
//! ```
//!
//! Why a /32 with the gateway on-link rather than the subnet's prefix with proxy ARP: a guest
//! that believes its peers are on-link ARPs for each of them, and the host answers every one
//! (proxy ARP answers for anything it routes elsewhere) and keeps a neighbour entry per peer a
//! guest asks about. With a /32 the guest's only neighbour is its gateway, the host's only
//! neighbours are its guests (permanent entries, made at attach, never learned from a guest's
//! frame), and every DHCP client tested here takes option 121's on-link route (CNI's /32s
//! rely on the same). The gateway answers ARP on every TAP because its address is local to the
//! host (on the network's device, a bridge with no ports); the rest of the subnet is a
//! blackhole route, so a guest sending to an address no guest holds costs nothing.
//!
//! Per guest it costs no bridge port, so no bridge walk, and no L2 flooding: a broadcast stays
//! on its TAP.

use super::{KindError, Kit, Lease};
use crate::config::{Config, NetworkKind, RoutedNetwork};
use crate::hostfail::Step;
use crate::names;
use crate::net::firewall::{L3Net, L3Port, PortGuard};
use crate::net::link::{self, Links};
use crate::net::tap;
use crate::state::{Nic, Record};
use protocol::Interface;
use std::os::fd::OwnedFd;
use tokio_util::sync::CancellationToken;

/// The routed networks of `config`, in their firewall's order (names their sets).
pub fn l3_nets(config: &Config) -> Vec<L3Net> {
    networks(config)
        .enumerate()
        .map(|(index, r)| L3Net {
            index,
            subnet: r.gateway.trunc(),
            gateway: r.gateway.addr(),
            nat: r.nat.clone(),
            drop: r.drop.clone(),
            allow: r.allow.clone(),
        })
        .collect()
}

fn networks(config: &Config) -> impl Iterator<Item = &RoutedNetwork> {
    config.networks.values().filter_map(|n| match &n.kind {
        NetworkKind::Routed(r) => Some(r),
        _ => None,
    })
}

/// A NIC's TAP as its network's firewall knows it; `None` when its network is not a routed
/// network of the config (any more).
pub(crate) fn l3_port(config: &Config, iface: &Interface) -> Option<L3Port> {
    let NetworkKind::Routed(mine) = &config.network(&iface.network)?.kind else {
        return None;
    };
    let net = networks(config).position(|r| std::ptr::eq(r, mine))?;
    Some(L3Port {
        ifname: iface.ifname.clone(),
        net,
    })
}

/// Makes (or adopts) every routed network's device, up, with the gateway address, and the
/// blackhole route for the rest of the subnet. A device it creates is marked in the state
/// dir's `bridges/`, as a bridge is, so that `tapmanager down` removes it. Also for
/// reconcile, so idempotent.
pub async fn ensure_devices(config: &Config, links: &Links) -> Result<(), KindError> {
    for r in networks(config) {
        let (index, created) = links
            .ensure_gateway_link(
                r.device.as_str(),
                names::bridge_mac(r.device.as_str()),
                r.mtu,
            )
            .await?;
        link::harden_guest_link(r.device.as_str())
            .step(|| format!("turn IPv6 off on {}, a routed network's device", r.device))?;
        let gw = ipnet::Ipv4Net::new(r.gateway.addr(), 32)?;
        links.add_address(index, r.device.as_str(), gw).await?;
        links.add_blackhole_route(r.gateway.trunc()).await?;
        if created {
            let mark = crate::state::made_bridge(&config.state_dir, &r.device);
            std::fs::write(&mark, index.to_string())
                .step(|| format!("mark {} as the daemon's", mark.display()))?;
        }
    }
    Ok(())
}

/// Deletes what [`ensure_devices`] made that its device does not take with it: each routed
/// network's blackhole route (`tapmanager down`). Gone already is fine.
pub async fn remove_routes(config: &Config, links: &Links) {
    for r in networks(config) {
        if let Err(e) = links.delete_blackhole_route(r.gateway.trunc()).await {
            tracing::warn!(network = %r.device, error = %crate::error_chain(&e), "cannot delete the blackhole route");
        }
    }
}

/// A routed NIC's address: the next free one of the subnet, told to the guest as a /32.
pub(crate) fn plan(
    r: &RoutedNetwork,
    p: &super::PlanNic<'_>,
) -> Result<super::Addressing, protocol::Error> {
    let ip = crate::ipam::Pool::Subnet(r.gateway)
        .allocate(p.used)
        .ok_or_else(|| super::exhausted(p.network))?;
    Ok(super::Addressing {
        address: Some((ip, 32)),
        gateway: Some(r.gateway.addr()),
        ipv6: None,
        mtu: r.mtu,
        built: crate::state::NicState::Routed,
    })
}

/// The guards of a routed NIC: a bridge port's, but its TAP's own MAC is where the guest
/// sends everything.
pub(crate) fn guard(iface: &Interface) -> Option<PortGuard> {
    iface.address.map(|(ip, _)| PortGuard {
        ifname: iface.ifname.clone(),
        mac: iface.mac,
        ip,
        ip6: Vec::new(),
        bridged: false,
    })
}

/// One routed NIC: TAP, guards, rules, up, its route and neighbour, DHCP.
pub(crate) async fn build_port(
    kit: &Kit<'_>,
    record: &Record,
    nic: &Nic,
    gid: u32,
    cancel: &CancellationToken,
) -> Result<Vec<OwnedFd>, KindError> {
    let iface = &nic.iface;
    // Final flags, owned by the caller, down, no IPv6, strict rp_filter (tap.rs).
    let tap = tap::create(&iface.ifname, iface.queues, record.uid, gid)?;
    // As a bridge network's: teardown deletes it in batches (bridge.rs says why).
    tap::persist(&tap.fds[0]).step(|| format!("make TAP {} persistent", iface.ifname))?;
    crate::failpoint::hit("attach:routed:tap");
    // Guards and rules before it is up: they hold from its very first frame.
    if let Some(g) = guard(iface) {
        kit.firewall.add_port(&g)?;
    }
    let port = l3_port(kit.config, iface).ok_or(KindError::Bug("a routed NIC off its network"))?;
    kit.firewall.add_l3_port(&port)?;
    crate::failpoint::hit("attach:routed:guards");
    let index = bring_up(kit, iface).await?;
    // DHCP listens before any fd leaves the daemon.
    super::serve_dhcp(kit, record, nic, index, cancel)?;
    if iface.by_name {
        return Ok(Vec::new());
    }
    Ok(tap.fds)
}

/// MTU, host-side MAC and up; then the guest's /32 routed to it (answered from the gateway)
/// and its MAC as a permanent neighbour. Convergent: adoption runs it again.
async fn bring_up(kit: &Kit<'_>, iface: &Interface) -> Result<u32, KindError> {
    let index = link::index_of(&iface.ifname)
        .ok_or_else(|| KindError::Gone(format!("TAP {}", iface.ifname)))?;
    let (Some((ip, _)), Some(gateway)) = (iface.address, iface.gateway) else {
        return Err(KindError::Bug("a routed NIC without its address"));
    };
    kit.links
        .up(
            index,
            iface.ifname.as_str(),
            iface.mtu,
            Some(names::host_side_mac(iface.mac)),
        )
        .await?;
    kit.links.add_host_route(ip, index, gateway).await?;
    kit.links.add_neighbour(index, ip, iface.mac).await?;
    Ok(index)
}

/// Adoption: the TAP up with its route and neighbour (its guards and rules are rebuilt with
/// every other at start).
pub(crate) async fn converge(kit: &Kit<'_>, iface: &Interface) -> Result<(), KindError> {
    bring_up(kit, iface).await.map(drop)
}

/// The network's part of the lease: the TAP's host side answers, as the gateway.
pub(crate) fn lease(iface: &Interface, r: &RoutedNetwork) -> Lease {
    Lease {
        server_mac: names::host_side_mac(iface.mac),
        dns: r.dns.clone(),
        search: r.search.clone(),
        domain: r.domain.clone(),
        mtu: r.mtu,
        lease_secs: r.lease_secs,
    }
}

/// Undoes a routed NIC whose TAP is gone (its route and neighbour went with it): its guards
/// and its place in the rules.
pub(crate) async fn teardown_port(kit: &Kit<'_>, iface: &Interface) -> bool {
    let mut complete = true;
    if let Some(g) = guard(iface) {
        if let Err(e) = kit.firewall.remove_port(&g) {
            tracing::error!(ifname = %iface.ifname, error = %crate::error_chain(&e), "cannot remove guards");
            complete = false;
        }
    }
    if let Some(p) = l3_port(kit.config, iface) {
        if let Err(e) = kit.firewall.remove_l3_port(&p) {
            tracing::error!(ifname = %iface.ifname, error = %crate::error_chain(&e), "cannot remove from the routed rules");
            complete = false;
        }
    }
    complete
}
