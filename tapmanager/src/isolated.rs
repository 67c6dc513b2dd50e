//! The isolated kind (Slicer's isolated mode): per guest a network namespace, a veth pair
//! whose peer is created directly inside it, and a /30 carved from the network's range, with
//! the guest's DHCP server on the TAP inside. The network's `binding` says where the /30's
//! gateway is.
//!
//! Routed (the default): the TAP holds the gateway, and the namespace routes to the host.
//!
//! ```text
//!  guest ── tap0 (gw N+1/30) [guest netns] veth0 ══ vethH (tm…) [host] ── routing, NAT ── uplink
//! ```
//!
//! The veth carries no addresses: each side reaches the other through a fixed link-local
//! next hop with a permanent neighbour entry (169.254.0.1 is the host side, 169.254.0.2 the
//! namespace side), so no ARP runs on it.
//!
//! `bridge` or `tc-redirect`: the TAP is joined to the veth at layer 2 ([`crate::net::join`]), and
//! the host side of the veth holds the gateway; the guest's frames reach the host as they
//! left it, one routing step fewer.
//!
//! ```text
//!  guest ── tap0 ─ br0 or mirred ─ veth0 [guest netns] ══ vethH (tm…, gw N+1/30) [host] ── uplink
//! ```
//!
//! Either way the host filters and NATs the guest's traffic ([`crate::net::firewall::RoutedNet`]):
//! source checked, no guest-to-guest, nothing to the host's own addresses (the gateways
//! included), the network's drop/allow lists, masquerade out of the uplink.
//!
//! Names: the host-side veth has the generated name (reconcile knows its shape); inside the
//! namespace the links are always `veth0`, `tap0` (and `br0`); the namespace is pinned at
//! `<state_dir>/netns/<host veth name>`. Needs CAP_SYS_ADMIN and CAP_NET_ADMIN.

use crate::config::{IsolatedNet, Masquerade, NetworkKind, VethBinding};
use crate::daemon::Daemon;
use crate::hostfail::Step;
use crate::names;
use crate::net::firewall::RoutedPort;
use crate::net::link::{self, Links};
use crate::net::netns::NetNs;
use crate::net::tap;
use crate::state::Record;
use ipnet::Ipv4Net;
use protocol::{IfName, Interface, MacAddr};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

use crate::BoxError;

const NS_VETH: &str = "veth0";
const NS_TAP: &str = "tap0";
/// The host side's next hop as the namespace sees it, and the namespace's as the host sees it.
const HOST_HOP: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);
const NS_HOP: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 2);

/// Where the guest's namespace is pinned.
pub fn netns_path(d: &Daemon, iface: &Interface) -> PathBuf {
    d.config.state_dir.join("netns").join(iface.ifname.as_str())
}

/// The index of a routed network among the config's isolated networks.
pub fn routed_index(d: &Daemon, iface: &Interface) -> Option<usize> {
    d.config
        .networks
        .iter()
        .filter(|(_, n)| matches!(n.kind, NetworkKind::Isolated(_)))
        .position(|(name, _)| *name == iface.network)
}

/// The host-side rules' view of a routed NIC: the source the host sees from it (the guest's
/// address, or for masquerade its namespace's transit address) and its port forwards.
pub fn routed_port(d: &Daemon, record: &Record, iface: &Interface) -> Option<RoutedPort> {
    let iso = isolated_net(d, iface)?;
    let (ip, forwards) = match &iso.masquerade {
        None => (iface.address?.0, Vec::new()),
        Some(m) => (
            record.transit_of(&iface.ifname)?,
            m.ports
                .iter()
                .map(|f| (f.proto.as_str(), f.host, f.guest))
                .collect(),
        ),
    };
    // What the host sees arrive on the veth: the guest itself, or the namespace routing it.
    let (mac, gateway) = match built_binding(iso, record, iface) {
        Some(_) => (iface.mac, iface.gateway),
        None => (veth_macs(iface).1, None),
    };
    Some(RoutedPort {
        ifname: iface.ifname.clone(),
        net: routed_index(d, iface)?,
        mac,
        ip,
        gateway,
        forwards,
    })
}

/// The binding `iface` was built with: as journaled, else (an older journal) the config's.
fn built_binding(iso: &IsolatedNet, record: &Record, iface: &Interface) -> Option<VethBinding> {
    record.binding_of(&iface.ifname).unwrap_or(iso.binding)
}

fn isolated_net<'a>(d: &'a Daemon, iface: &Interface) -> Option<&'a IsolatedNet> {
    match &d.config.network(&iface.network)?.kind {
        NetworkKind::Isolated(i) => Some(i),
        _ => None,
    }
}

/// The masquerade NAT inside a guest's namespace: its traffic leaves as the transit address,
/// and the network's forwards arrive at the guest's fixed address (the host already turned
/// each host port into the guest's). Run from the namespace's thread (a persistent `nft -i`
/// per guest would be a process per VM).
fn masquerade_script(m: &Masquerade, guest: Ipv4Addr) -> String {
    crate::net::firewall::guest_nat_script(&crate::net::firewall::GuestNat {
        table: "tapmanager_guest",
        out: NS_VETH,
        guest,
        source_only: false,
        forwards: m
            .ports
            .iter()
            .map(|f| (f.proto.as_str(), f.guest, f.guest))
            .collect(),
        confine: None,
    })
}

/// The veth MACs: fixed per NIC so both sides' static neighbour entries are known up front.
fn veth_macs(iface: &Interface) -> (MacAddr, MacAddr) {
    let mut host = iface.mac.0;
    let mut ns = iface.mac.0;
    host[0] = 0xfa;
    ns[0] = 0xf6;
    (MacAddr(host), MacAddr(ns))
}

/// Builds one isolated NIC; returns its TAP fds. Every step converges, and
/// [`teardown_port`] undoes any prefix of them.
pub(crate) async fn build_port(
    d: &Daemon,
    iso: &IsolatedNet,
    record: &Record,
    iface: &Interface,
    gid: u32,
    cancel: &CancellationToken,
) -> Result<Vec<OwnedFd>, BoxError> {
    let (ip, prefix) = iface.address.ok_or("no address planned")?;
    let gateway = iface.gateway.ok_or("no gateway planned")?;
    // What the host routes to the namespace: the guest's /30, or for masquerade the transit
    // /30 whose namespace side the guest is NATed to.
    let transit = record.transit_of(&iface.ifname);
    let block = Ipv4Net::new(transit.unwrap_or(ip), 30)?.trunc();
    let nat = iso.masquerade.clone().map(|m| masquerade_script(&m, ip));
    let (host_mac, ns_mac) = veth_macs(iface);
    let mtu = iso.mtu;
    // The guest's own namespace, pinned under the state dir.
    let path = netns_path(d, iface);
    crate::state::private_dir(path.parent().ok_or("state dir")?)?;
    let ns = NetNs::create(&path)?;
    crate::failpoint::hit("attach:isolated:netns");
    // Host rules before any link exists: they match by name, so they hold from the first packet.
    let port = routed_port(d, record, iface).ok_or("not a routed network")?;
    d.firewall.add_routed_port(&port).await?;
    crate::failpoint::hit("attach:isolated:rules");
    // The veth, its peer created directly inside the namespace (never moved).
    d.links
        .add_veth_into(&iface.ifname, host_mac, mtu, NS_VETH, ns_mac, ns.fd())
        .await?;
    // The guest's frames reach the host here: no IPv6 on it, strict rp_filter (link.rs).
    link::harden_guest_link(iface.ifname.as_str()).step(|| {
        format!(
            "keep veth {} out of the host's IP configuration",
            iface.ifname
        )
    })?;
    crate::failpoint::hit("attach:isolated:veth");
    // Inside, on one thread that entered the namespace: the TAP with its final flags, owned by
    // the caller; forwarding on; a netlink connection; the DHCP server's socket (it listens
    // before any fd leaves the daemon).
    let (uid, queues) = (record.uid, iface.queues);
    let b = crate::lifecycle::binding(d, record, iface).ok_or("no binding")?;
    let binding = built_binding(iso, record, iface);
    let routed = binding.is_none();
    let rt = tokio::runtime::Handle::current();
    let (tap, inner, tap_index, veth_index, server) = ns.run_in(move || {
        // Nothing in here may take a guest's IPv6 (the veth already, the bridge to come).
        link::disable_ipv6_in_namespace()
            .io_step(|| "turn IPv6 off in the guest's namespace".into())?;
        let name = IfName::try_from(NS_TAP.to_owned()).map_err(std::io::Error::other)?;
        let tap = tap::create(&name, queues, uid, gid).map_err(std::io::Error::other)?;
        if routed {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
                .io_step(|| "turn forwarding on in the guest's namespace".into())?;
        }
        let tap_index = nix::net::if_::if_nametoindex(NS_TAP)?;
        let veth_index = nix::net::if_::if_nametoindex(NS_VETH)?;
        let server = dhcp::Server::bind(tap_index, b).map_err(std::io::Error::other)?;
        if let Some(script) = nat {
            crate::net::firewall::run_nft_once(&script, "the guest namespace's NAT")?;
        }
        let _entered = rt.enter();
        let inner = Links::connect().map_err(std::io::Error::other)?;
        Ok((tap, inner, tap_index, veth_index, server))
    })?;
    crate::failpoint::hit("attach:isolated:inside");
    let host_index = link::index_of(&iface.ifname).ok_or("veth vanished")?;
    let Some(how) = binding else {
        route_port(
            d,
            &inner,
            iface,
            (tap_index, veth_index, host_index),
            transit,
            block,
        )
        .await?;
        crate::lifecycle::spawn_dhcp(server, iface, cancel);
        return Ok(tap.fds);
    };
    // Joined: the guest's frames go through to the host side, which is its gateway and knows
    // its MAC (no ARP needed on the way back).
    inner.up(tap_index, NS_TAP, mtu, None).await?;
    inner.up(veth_index, NS_VETH, mtu, None).await?;
    let end = |index, name| crate::net::join::End { index, name };
    crate::net::join::join(
        &inner,
        how,
        end(tap_index, NS_TAP),
        end(veth_index, NS_VETH),
        mtu,
        (iface.mac, ip),
        crate::net::join::NS_BRIDGE,
    )
    .await?;
    d.links
        .add_address(
            host_index,
            iface.ifname.as_str(),
            Ipv4Net::new(gateway, prefix)?,
        )
        .await?;
    d.links.add_neighbour(host_index, ip, iface.mac).await?;
    crate::lifecycle::spawn_dhcp(server, iface, cancel);
    Ok(tap.fds)
}

/// The routed binding's addresses and routes: the TAP holds the gateway, each side of the
/// veth reaches the other through a fixed next hop with a permanent neighbour entry.
async fn route_port(
    d: &Daemon,
    inner: &Links,
    iface: &Interface,
    (tap_index, veth_index, host_index): (u32, u32, u32),
    transit: Option<Ipv4Addr>,
    block: Ipv4Net,
) -> Result<(), BoxError> {
    let (_, prefix) = iface.address.ok_or("no address planned")?;
    let gateway = iface.gateway.ok_or("no gateway planned")?;
    let (host_mac, ns_mac) = veth_macs(iface);
    let mtu = iface.mtu;
    // The TAP holds the /30's gateway address: the guest's first hop.
    inner
        .up(
            tap_index,
            NS_TAP,
            mtu,
            Some(names::host_side_mac(iface.mac)),
        )
        .await?;
    inner
        .add_address(tap_index, NS_TAP, Ipv4Net::new(gateway, prefix)?)
        .await?;
    // Out of the namespace: default route to the host side, whose MAC is known.
    inner.up(veth_index, NS_VETH, mtu, None).await?;
    if let Some(t) = transit {
        // Masquerade: the address the guest's traffic is NATed to inside the namespace.
        inner
            .add_address(veth_index, NS_VETH, Ipv4Net::new(t, 30)?)
            .await?;
    }
    inner.add_neighbour(veth_index, HOST_HOP, host_mac).await?;
    inner
        .add_onlink_route(
            Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0)?,
            HOST_HOP,
            veth_index,
        )
        .await?;
    // Back in: the host routes the guest's /30 to the namespace side.
    d.links.add_neighbour(host_index, NS_HOP, ns_mac).await?;
    d.links.add_onlink_route(block, NS_HOP, host_index).await?;
    Ok(())
}

/// Binds the DHCP server of an existing isolated NIC again (start-up adoption).
pub(crate) fn bind_dhcp(
    d: &Daemon,
    iface: &Interface,
    b: dhcp::Binding,
) -> Result<dhcp::Server, BoxError> {
    crate::lifecycle::bind_dhcp_in(&NetNs::open(&netns_path(d, iface))?, NS_TAP, b)
}

/// Undoes an isolated NIC: its host rules and its namespace (which takes the TAP and the
/// veth's peer with it; the host side is deleted by the caller). Idempotent.
pub(crate) async fn teardown_port(d: &Daemon, record: &Record, iface: &Interface) -> bool {
    let mut complete = true;
    if let Some(port) = routed_port(d, record, iface) {
        if let Err(e) = d.firewall.remove_routed_port(&port).await {
            tracing::error!(ifname = %iface.ifname, error = %crate::error_chain(&e), "cannot remove routed rules");
            complete = false;
        }
    }
    if let Err(e) = NetNs::delete(&netns_path(d, iface)) {
        tracing::error!(ifname = %iface.ifname, error = %e, "cannot delete the guest's namespace");
        complete = false;
    }
    complete
}

/// Start-up: namespaces under the state dir that no adopted attachment owns are removed.
pub(crate) fn remove_orphan_namespaces(d: &Daemon, known: &HashSet<IfName>) {
    let Ok(entries) = std::fs::read_dir(d.config.state_dir.join("netns")) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !known.iter().any(|k| k.as_str() == name) {
            match NetNs::delete(&e.path()) {
                Ok(()) => tracing::info!(netns = %name, "removed orphan namespace"),
                Err(err) => {
                    tracing::error!(netns = %name, error = %err, "cannot remove orphan namespace")
                }
            }
        }
    }
}

/// Host-wide settings the routed networks (and bridges with NAT) need: IPv4 forwarding in
/// the daemon's namespace.
pub(crate) fn prepare_host(d_config: &crate::config::Config) -> std::io::Result<()> {
    if d_config.networks.values().any(|n| match &n.kind {
        NetworkKind::Isolated(_) => true,
        NetworkKind::Bridge(b) => b.nat.is_some(),
        _ => false,
    }) {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
    }
    Ok(())
}
