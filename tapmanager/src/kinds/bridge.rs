//! The bridge kind (libvirt's default network, Slicer's bridge mode): one bridge per network,
//! made (or adopted) at start with a fixed MAC and the gateway address; per guest a TAP
//! enslaved to it, guarded on its own ingress hook, and a DHCP server on it. NAT out of the
//! uplink and the DNS forwarder on the gateway address are the network's, set up at start
//! ([`crate::net::firewall`], [`crate::dns`]).
//!
//! ```text
//!  guest ── tm… (TAP, guards on ingress) ── bridge (gateway) ── NAT ── uplink
//! ```
//!
//! # Past one bridge's port limit: shards
//!
//! A Linux bridge takes at most 1,023 ports, and every port added or removed costs in
//! proportion to the ports it already has (the kernel walks them all: STP port states,
//! features, MTU, promiscuity). So a bridge network puts at most [`GUESTS_PER_BRIDGE`] guests
//! on one bridge. A guest's bridge follows from its address ([`shard_of`]): its position in
//! the subnet (or the address list) divided by [`GUESTS_PER_BRIDGE`]. Shard 0 is the network's
//! own bridge; shard k ≥ 1 is a bridge of its own (`names::shard_links`), made when its first
//! guest comes, joined to the network's bridge by a veth pair:
//!
//! ```text
//!  positions 0..127 ── tmbr0 (gateway, NAT, DNS) ──┬── veth ── shard 1 ── positions 128..255
//!                                                   └── veth ── shard 2 ── positions 256..383 …
//! ```
//!
//! One L2 segment still: guests on different shards reach each other and the gateway as on
//! one bridge; a guest's guards are on its own TAP's ingress, whichever bridge it is on; the
//! shard bridges and their veths carry no address and no IPv6, and are sealed
//! (`firewall::ShardSeal`). The network's bridge holds its own 128 positions (126 guests: the
//! network address and the gateway take two) and up to [`MAX_SHARDS`] shard links: 114,688
//! positions, 114,685 guests in all (the broadcast address is the last). A shard stays when its
//! last guest goes (three links, a seal), until `tapmanager down`.

use super::{KindError, Kit, Lease};
use crate::config::{BridgeNet, Config, NetworkKind};
use crate::hostfail::Step;
use crate::names;
use crate::net::firewall::PortGuard;
use crate::net::link::{self, Links};
use crate::net::tap;
use crate::state::{Nic, Record};
use protocol::{Interface, MacAddr, NetworkName};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use tokio_util::sync::CancellationToken;

/// Guests on one bridge (the module's docs: shards).
pub const GUESTS_PER_BRIDGE: u32 = 128;
/// Shard bridges of one network at most: the network's bridge takes 1,023 ports, its own
/// guests and one veth per shard.
pub const MAX_SHARDS: u32 = 1023 - GUESTS_PER_BRIDGE;

/// A bridge the daemon made sure of at start-up.
#[derive(Debug, Clone)]
pub struct BridgeState {
    pub index: u32,
    pub mac: MacAddr,
    /// Its shard bridges known to be there, by number: their index. A lock per network, held
    /// only while a missing shard is made.
    pub shards: std::sync::Arc<tokio::sync::Mutex<HashMap<u32, u32>>>,
}

pub type Bridges = HashMap<NetworkName, BridgeState>;

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error(transparent)]
    Link(#[from] crate::net::link::LinkError),
    #[error("cannot mark bridge {} as the daemon's", .0.display())]
    Mark(std::path::PathBuf, #[source] std::io::Error),
    #[error("cannot keep bridge {0} from configuring itself from guests' IPv6 frames")]
    Sysctl(String, #[source] std::io::Error),
}

/// Creates (or adopts) every configured bridge, with its fixed MAC and the gateway address.
/// One it creates is marked in the state dir's `bridges/`, so that `tapmanager down` removes
/// it and leaves an admin's own bridge alone.
pub async fn ensure_bridges(config: &Config, links: &Links) -> Result<Bridges, BridgeError> {
    bridges(config, links, true).await
}

/// The configured bridges that exist, as they are (for `tapmanager down`, which makes none).
pub async fn existing_bridges(config: &Config, links: &Links) -> Result<Bridges, BridgeError> {
    bridges(config, links, false).await
}

async fn bridges(config: &Config, links: &Links, make: bool) -> Result<Bridges, BridgeError> {
    let mut out = HashMap::new();
    for (name, net) in &config.networks {
        let NetworkKind::Bridge(b) = &net.kind else {
            continue;
        };
        let mac = names::bridge_mac(b.bridge.as_str());
        let index = if make {
            let (info, created) = links
                .ensure_bridge(&b.bridge, mac, b.mtu, b.gateway)
                .await?;
            // The bridge is the guests' router: it learns nothing from their frames.
            link::harden_router_link(b.bridge.as_str(), b.gateway6.is_some())
                .map_err(|e| BridgeError::Sysctl(b.bridge.to_string(), e))?;
            if let Some(g6) = b.gateway6 {
                links
                    .add_address6(info.index, b.bridge.as_str(), g6)
                    .await?;
                let router = ipnet::Ipv6Net::new(dhcp::router::router_address(mac.0), 64)
                    .expect("64 is a prefix length");
                links
                    .add_address6(info.index, b.bridge.as_str(), router)
                    .await?;
            }
            if created {
                // Its index: `down` deletes the bridge only if it is still this one.
                let mark = crate::state::made_bridge(&config.state_dir, &b.bridge);
                std::fs::write(&mark, info.index.to_string())
                    .map_err(|e| BridgeError::Mark(mark.clone(), e))?;
            }
            info.index
        } else {
            match links.get(b.bridge.as_str()).await? {
                Some(info) => info.index,
                None => continue,
            }
        };
        out.insert(
            name.clone(),
            BridgeState {
                index,
                mac,
                shards: Default::default(),
            },
        );
    }
    Ok(out)
}

/// A bridge NIC's address: the next free one of the network's list or subnet.
pub(crate) fn plan(
    b: &BridgeNet,
    p: &super::PlanNic<'_>,
) -> Result<super::Addressing, protocol::Error> {
    let pool = match &b.addresses {
        Some(list) => crate::ipam::Pool::List(list),
        None => crate::ipam::Pool::Subnet(b.gateway),
    };
    let ip = pool
        .allocate(p.used)
        .ok_or_else(|| super::exhausted(p.network))?;
    if shard_of(b, ip) > MAX_SHARDS {
        return Err(protocol::Error::new(
            protocol::ErrorCode::CapacityExceeded,
            format!(
                "network {}: its bridges are full: {} takes 1,023 ports, {GUESTS_PER_BRIDGE} \
                 guests and {MAX_SHARDS} bridges of {GUESTS_PER_BRIDGE} guests each ({} \
                 guests); the next free address, {ip}, is past them. Use a smaller subnet, or \
                 put further guests on another network",
                p.network,
                b.bridge,
                (MAX_SHARDS + 1) * GUESTS_PER_BRIDGE
            ),
        ));
    }
    let ipv6 = b
        .gateway6
        .zip(b.address6(ip))
        .map(|(g6, a6)| protocol::Lease6 {
            address: (a6, g6.prefix_len()),
            gateway: g6.addr(),
            router: dhcp::router::router_address(names::bridge_mac(b.bridge.as_str()).0),
            dns: b.dns6_servers(),
        });
    Ok(super::Addressing {
        address: Some((ip, b.gateway.prefix_len())),
        gateway: Some(b.gateway.addr()),
        ipv6,
        mtu: b.mtu,
        built: crate::state::NicState::Bridge,
    })
}

/// The NAT of every bridge network of `config` with `nat = true`: what the daemon starts its
/// firewall with.
pub fn nat_bridges(config: &Config) -> Vec<crate::net::firewall::NatBridge> {
    config
        .networks
        .values()
        .filter_map(|n| match &n.kind {
            NetworkKind::Bridge(b) => {
                b.nat
                    .as_ref()
                    .map(|uplink| crate::net::firewall::NatBridge {
                        bridge: b.bridge.clone(),
                        subnet: b.gateway.trunc(),
                        subnet6: b.gateway6.map(|g| g.trunc()),
                        uplink: uplink.clone(),
                    })
            }
            _ => None,
        })
        .collect()
}

/// Every bridge network as its guests' router (what the daemon's hairpin table drops).
pub fn hairpins(config: &Config) -> Vec<crate::net::firewall::Hairpin> {
    config
        .networks
        .values()
        .filter_map(|n| match &n.kind {
            NetworkKind::Bridge(b) => Some(crate::net::firewall::Hairpin {
                bridge: b.bridge.clone(),
                mac: names::bridge_mac(b.bridge.as_str()),
                subnet: b.gateway.trunc(),
                subnet6: b.gateway6.map(|g| g.trunc()),
            }),
            _ => None,
        })
        .collect()
}

/// The guards of a bridge NIC: only its MAC, and only its addresses once it has them (its
/// IPv6 link-local is the one the kernel's default address generation gives its MAC).
pub(crate) fn guard(iface: &Interface) -> Option<PortGuard> {
    iface.address.map(|(ip, _)| PortGuard {
        ifname: iface.ifname.clone(),
        mac: iface.mac,
        ip,
        ip6: iface
            .ipv6
            .iter()
            .flat_map(|l| [l.address.0, dhcp::frame6::link_local(iface.mac.0)])
            .collect(),
        bridged: true,
    })
}

/// One NIC on a bridge: guards, TAP, enslaved and up, DHCP.
pub(crate) async fn build_port(
    kit: &Kit<'_>,
    record: &Record,
    nic: &Nic,
    gid: u32,
    cancel: &CancellationToken,
) -> Result<Vec<OwnedFd>, KindError> {
    let iface = &nic.iface;
    // The TAP with its final flags (vnet_hdr, multi-queue), owned by the caller, down, with
    // no IPv6 and strict rp_filter (tap.rs). No frame can pass it yet: it is down, and no fd
    // of it has left the daemon.
    let tap = tap::create(&iface.ifname, iface.queues, record.uid, gid)?;
    // It outlives its fds, opened by name or not: teardown deletes it, in batches (the
    // reaper). A non-persistent TAP goes as its last fd closes, which the kernel does one TAP
    // at a time with RTNL held (~25 ms each here): a thousand guests dying together took 25 s
    // before the daemon even heard of it. Meanwhile only its owner may open it (tap.rs).
    tap::persist(&tap.fds[0]).step(|| format!("make TAP {} persistent", iface.ifname))?;
    crate::failpoint::hit("attach:bridge:tap");
    // Guards on its ingress hook before it is up: they hold from its very first frame.
    if let Some(g) = guard(iface) {
        kit.firewall.add_port(&g)?;
    }
    crate::failpoint::hit("attach:bridge:guards");
    let index = enslave(kit, iface).await?;
    crate::failpoint::hit("attach:bridge:enslaved");
    // DHCP listens before any fd leaves the daemon, so the guest's first DISCOVER is answered.
    super::serve_dhcp(kit, record, nic, index, cancel)?;
    if iface.by_name {
        // Ours closes here: a TAP without IFF_MULTI_QUEUE takes one attached fd at a time.
        return Ok(Vec::new());
    }
    Ok(tap.fds)
}

/// Which of the network's bridges a guest of address `ip` is on: its position in the subnet
/// (or in the address list), by [`GUESTS_PER_BRIDGE`]. 0 is the network's own bridge.
pub(crate) fn shard_of(b: &BridgeNet, ip: std::net::Ipv4Addr) -> u32 {
    let position = match &b.addresses {
        Some(list) => list.iter().position(|a| *a == ip).unwrap_or(0) as u32,
        None => u32::from(ip).saturating_sub(u32::from(b.gateway.network())),
    };
    position / GUESTS_PER_BRIDGE
}

/// The index of the bridge a NIC's TAP belongs on: the network's, or the shard its address
/// falls in, made (and joined to the network's bridge) if it is not there.
async fn bridge_for(kit: &Kit<'_>, iface: &Interface) -> Result<u32, KindError> {
    let gone = || KindError::Gone(format!("the bridge of network {}", iface.network));
    let bridge = kit.bridges.get(&iface.network).ok_or_else(gone)?;
    let Some(NetworkKind::Bridge(b)) = kit.config.network(&iface.network).map(|n| &n.kind) else {
        return Err(gone());
    };
    let k = iface.address.map_or(0, |(ip, _)| shard_of(b, ip));
    if k == 0 {
        return Ok(bridge.index);
    }
    let mut known = bridge.shards.lock().await;
    let [shard, up, down] = names::shard_links(&kit.config.interface_prefix, b.bridge.as_str(), k);
    // Known, and its bridge and its veth end on the network's bridge still there (deleted
    // by hand, they are made again below).
    if let Some(&index) = known.get(&k) {
        if link::index_of(&shard) == Some(index) && link::index_of(&up).is_some() {
            return Ok(index);
        }
    }
    // No address, no IPv6 and strict rp_filter on all three before any is up: they carry
    // guests' frames and nothing else (the rules of a guest's own link, link.rs).
    let mac = |n: &protocol::IfName| names::bridge_mac(n.as_str());
    let index = kit
        .links
        .ensure_plain_bridge(shard.as_str(), mac(&shard), b.mtu)
        .await?;
    kit.links
        .ensure_veth_pair((up.as_str(), mac(&up)), (down.as_str(), mac(&down)), b.mtu)
        .await?;
    // Sealed before any of its links is up: no guest may address them, the shard bridge's
    // own stack takes nothing (ShardSeal says why). After the bridge exists: kernels before
    // 6.16 refuse a hook on a device that is not there.
    kit.firewall
        .seal_shard(&seal(&kit.config.interface_prefix, b.bridge.as_str(), k))
        .await?;
    for name in [&shard, &up, &down] {
        link::harden_guest_link(name.as_str()).step(|| {
            format!(
                "turn IPv6 off on {name}, a link of network {}",
                iface.network
            )
        })?;
    }
    kit.links.join(down.as_str(), b.mtu, Some(index)).await?;
    kit.links
        .join(up.as_str(), b.mtu, Some(bridge.index))
        .await?;
    kit.links.join(shard.as_str(), b.mtu, None).await?;
    tracing::info!(network = %iface.network, shard = %shard, k, "shard bridge ready");
    known.insert(k, index);
    Ok(index)
}

/// Shard `k`'s seal: its bridge and its three links' MACs (each link's fixed MAC is
/// `names::bridge_mac` of its name).
fn seal(prefix: &str, bridge: &str, k: u32) -> crate::net::firewall::ShardSeal {
    let links = names::shard_links(prefix, bridge, k);
    crate::net::firewall::ShardSeal {
        bridge: links[0].clone(),
        macs: links
            .iter()
            .map(|l| names::bridge_mac(l.as_str()))
            .collect(),
    }
}

/// The seals of every shard bridge there is of the config's bridge networks (start-up
/// reconcile rebuilds them with the guards, in the same transaction).
pub async fn existing_seals(
    config: &Config,
    links: &Links,
) -> Result<Vec<crate::net::firewall::ShardSeal>, crate::net::link::LinkError> {
    let prefix = &config.interface_prefix;
    let names = links.list_names().await?;
    let mut out = Vec::new();
    for net in config.networks.values() {
        let NetworkKind::Bridge(b) = &net.kind else {
            continue;
        };
        let stem = format!("{}s", names::shard_stem(prefix, b.bridge.as_str()));
        out.extend(
            names
                .iter()
                .filter(|n| names::is_shard_link(n, prefix, b.bridge.as_str()))
                .filter_map(|n| u32::from_str_radix(n.strip_prefix(&stem)?, 16).ok())
                .map(|k| seal(prefix, b.bridge.as_str(), k)),
        );
    }
    Ok(out)
}

/// Deletes the shard bridges of the bridges named (`tapmanager down`): each shard bridge and
/// the veth end on the network's bridge (its peer goes with it).
pub async fn remove_shards(
    links: &Links,
    prefix: &str,
    bridges: &[String],
) -> Result<(), crate::net::link::LinkError> {
    for name in links.list_names().await? {
        if bridges
            .iter()
            .any(|b| names::is_shard_link(&name, prefix, b))
        {
            links.delete_if_exists(&name).await?;
        }
    }
    Ok(())
}

/// MTU, host-side MAC, master and up, in one netlink message; returns the TAP's index.
/// Convergent: at start it puts an adopted TAP back on a bridge recreated meanwhile.
async fn enslave(kit: &Kit<'_>, iface: &Interface) -> Result<u32, KindError> {
    let master = bridge_for(kit, iface).await?;
    let index = link::index_of(&iface.ifname)
        .ok_or_else(|| KindError::Gone(format!("TAP {}", iface.ifname)))?;
    kit.links
        .finish_tap(
            index,
            &iface.ifname,
            iface.mtu,
            names::host_side_mac(iface.mac),
            master,
        )
        .await?;
    Ok(index)
}

/// Adoption: the TAP back on its bridge, up, with its MTU and MAC (its guards are rebuilt
/// with every other at start).
pub(crate) async fn converge(kit: &Kit<'_>, iface: &Interface) -> Result<(), KindError> {
    enslave(kit, iface).await.map(drop)
}

/// The bridge's part of the lease: the bridge answers, with the network's DNS and MTU.
pub(crate) fn lease(bridges: &super::Bridges, iface: &Interface, b: &BridgeNet) -> Option<Lease> {
    Some(Lease {
        server_mac: bridges.get(&iface.network)?.mac,
        dns: b.dns_servers(),
        search: b.search.clone(),
        domain: b.domain.clone(),
        mtu: b.mtu,
        lease_secs: b.lease_secs,
    })
}

/// Undoes a bridge NIC whose TAP is gone: its guards.
pub(crate) fn teardown_port(kit: &Kit<'_>, iface: &Interface) -> bool {
    let Some(g) = guard(iface) else {
        return true;
    };
    match kit.firewall.remove_port(&g) {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(ifname = %iface.ifname, error = %crate::error_chain(&e), "cannot remove guards");
            false
        }
    }
}
