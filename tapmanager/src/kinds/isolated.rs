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

use super::{KindError, Kit, Lease};
use crate::config::{IsolatedNet, NetworkKind};
use crate::hostfail::Step;
use crate::names;
use crate::net::firewall::RoutedPort;
use crate::net::link::{self, Links};
use crate::net::netns::NetNs;
use crate::net::tap;
use crate::state::{Nic, NicState, Record};
use ipnet::Ipv4Net;
use protocol::{IfName, Interface, MacAddr};
use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use tokio_util::sync::CancellationToken;

/// The veth's side inside the guest's namespace.
pub(crate) const NS_VETH: &str = "veth0";
/// The guest's TAP inside its namespace.
pub(crate) const NS_TAP: &str = "tap0";
/// The host side's next hop as the namespace sees it, and the namespace's as the host sees it.
const HOST_HOP: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);
const NS_HOP: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 2);
/// The same for IPv6: link-local, with permanent neighbour entries, so no ND runs on the veth.
const HOST_HOP6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
const NS_HOP6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 2);

/// The host's rules for every isolated and masquerade network of `config`, in the order
/// their chains are numbered: what the daemon starts its firewall with (and the benchmark
/// measures against).
pub fn routed_nets(config: &crate::config::Config) -> Vec<crate::net::firewall::RoutedNet> {
    config
        .networks
        .values()
        .filter_map(|n| match &n.kind {
            NetworkKind::Isolated(i) => Some(i),
            _ => None,
        })
        .enumerate()
        .map(|(index, i)| crate::net::firewall::RoutedNet {
            index,
            range: i.range,
            uplink: i.uplink.clone(),
            drop: i.drop.clone(),
            allow: i.allow.clone(),
            forwards: i.masquerade().is_some_and(|m| !m.ports.is_empty()),
            v6: i.v6.as_ref().map(|v6| crate::net::firewall::RoutedNet6 {
                range: v6.range,
                drop: v6.drop.clone(),
                allow: v6.allow.clone(),
            }),
        })
        .collect()
}

/// The index of a routed network among the config's isolated networks.
fn routed_index(kit: &Kit<'_>, iface: &Interface) -> Option<usize> {
    kit.config
        .networks
        .iter()
        .filter(|(_, n)| matches!(n.kind, NetworkKind::Isolated(_)))
        .position(|(name, _)| *name == iface.network)
}

/// The isolated or masquerade network of a NIC, if the config still has it.
pub(crate) fn net_of<'a>(kit: &Kit<'a>, iface: &Interface) -> Option<&'a IsolatedNet> {
    match &kit.config.network(&iface.network)?.kind {
        NetworkKind::Isolated(i) => Some(i),
        _ => None,
    }
}

/// What an isolated or masquerade NIC was built with: its binding (`None`: routed) and, for
/// masquerade, the namespace side of its transit /30. `None` for a NIC of another kind.
fn built(nic: &Nic) -> Option<(Option<crate::config::VethBinding>, Option<Ipv4Addr>)> {
    match nic.built {
        NicState::Isolated { binding } => Some((binding, None)),
        NicState::Masquerade { binding, transit } => Some((binding, Some(transit))),
        _ => None,
    }
}

/// The host-side rules' view of a routed NIC: the source the host sees from it (the guest's
/// address, or for masquerade its namespace's transit address) and its port forwards.
pub(crate) fn routed_port(kit: &Kit<'_>, nic: &Nic) -> Option<RoutedPort> {
    let iface = &nic.iface;
    let iso = net_of(kit, iface)?;
    let (binding, transit) = built(nic)?;
    let (ip, forwards) = match (transit, iso.masquerade()) {
        (Some(t), Some(m)) => (t, super::masquerade::host_forwards(m)),
        (Some(t), None) => (t, Vec::new()),
        (None, _) => (iface.address?.0, Vec::new()),
    };
    // What the host sees arrive on the veth: the guest itself, or the namespace routing it.
    let (mac, gateway) = match binding {
        Some(_) => (iface.mac, iface.gateway),
        None => (veth_macs(iface).1, None),
    };
    Some(RoutedPort {
        ifname: iface.ifname.clone(),
        net: routed_index(kit, iface)?,
        mac,
        ip,
        gateway,
        forwards,
        ip6: routed6(iso, iface, transit),
        host6: match (binding, &iface.ipv6) {
            (Some(_), Some(l)) => Some((
                vec![l.gateway, l.router],
                crate::net::firewall::nd_sources(l, iface.mac),
            )),
            _ => None,
        },
    })
}

/// The /64 (or /127) the host routes to a NIC's namespace: the guest's own, or for
/// masquerade the transit /64 at its transit /30's position (whose `::2` the guest is NATed
/// to).
fn routed6(
    iso: &IsolatedNet,
    iface: &Interface,
    transit: Option<Ipv4Addr>,
) -> Option<ipnet::Ipv6Net> {
    let l = iface.ipv6.as_ref()?;
    match transit {
        Some(t) => iso.block6(Ipv4Addr::from(u32::from(t) & !3)),
        None => ipnet::Ipv6Net::new(l.address.0, l.address.1)
            .ok()
            .map(|n| n.trunc()),
    }
}

/// An isolated NIC's /30: the next free one of the network's range; the guest has its third
/// address, the gateway its second.
pub(crate) fn plan(
    iso: &IsolatedNet,
    p: &super::PlanNic<'_>,
) -> Result<super::Addressing, protocol::Error> {
    let block =
        crate::ipam::free_slash30(iso.range, p.used).ok_or_else(|| super::exhausted(p.network))?;
    let [_, gw, guest, _] = crate::ipam::slash30_parts(block);
    // IPv6: the /64 at the same position in range6, the gateway ::1, the guest ::2; or the
    // /127 there, the gateway ::0, the guest ::1 (RFC 6164).
    let mac = p.request.mac.unwrap_or(p.derived_mac);
    let ipv6 = iso.block6(block.network()).map(|net| {
        let base = u128::from(net.network());
        let gw = base + u128::from(net.prefix_len() == 64);
        protocol::Lease6 {
            address: (Ipv6Addr::from(gw + 1), net.prefix_len()),
            gateway: Ipv6Addr::from(gw),
            router: dhcp::router::router_address(names::host_side_mac(mac).0),
            dns: iso.v6.as_ref().map(|v| v.dns.clone()).unwrap_or_default(),
        }
    });
    Ok(super::Addressing {
        ipv6,
        address: Some((guest, 30)),
        gateway: Some(gw),
        mtu: iso.mtu,
        built: NicState::Isolated {
            binding: iso.binding(),
        },
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

/// Builds one isolated or masquerade NIC; returns its TAP fds. [`teardown_port`] undoes any
/// prefix of it.
pub(crate) async fn build_port(
    kit: &Kit<'_>,
    iso: &IsolatedNet,
    record: &Record,
    nic: &Nic,
    gid: u32,
    cancel: &CancellationToken,
) -> Result<Vec<OwnedFd>, KindError> {
    let iface = &nic.iface;
    let (host_mac, ns_mac) = veth_macs(iface);
    let mtu = iso.mtu;
    // The guest's own namespace, pinned under the state dir.
    let path = kit.pin(&iface.ifname);
    let pins = path
        .parent()
        .ok_or(KindError::Bug("a pin path with no directory"))?;
    crate::state::private_dir(pins).step(|| format!("create {}", pins.display()))?;
    let ns = NetNs::create(&path)
        .step(|| format!("create the guest's namespace pinned at {}", path.display()))?;
    crate::failpoint::hit("attach:isolated:netns");
    // Host rules before any link exists: they match by name, so they hold from the first packet.
    let port =
        routed_port(kit, nic).ok_or(KindError::Bug("an isolated NIC off a routed network"))?;
    kit.firewall.add_routed_port(&port).await?;
    crate::failpoint::hit("attach:isolated:rules");
    // The veth, its peer created directly inside the namespace (never moved).
    kit.links
        .add_veth_into(&iface.ifname, host_mac, mtu, NS_VETH, ns_mac, ns.fd())
        .await?;
    harden(iface)?;
    crate::failpoint::hit("attach:isolated:veth");
    // Inside, on one thread that entered the namespace: the TAP with its final flags, owned by
    // the caller; the DHCP server's socket (it listens before any fd leaves the daemon); what
    // the namespace itself needs.
    let (uid, queues) = (record.uid, iface.queues);
    let b = super::binding(kit.config, kit.bridges, record, nic)
        .ok_or(KindError::Bug("an isolated NIC without a DHCP binding"))?;
    let setup = Setup::of(iso, nic, false)?;
    let rt = tokio::runtime::Handle::current();
    let (tap, server, inside) = ns
        .run_in(move || {
            setup.namespace_ipv6()?;
            let name = IfName::try_from(NS_TAP.to_owned()).map_err(std::io::Error::other)?;
            let tap = tap::create(&name, queues, uid, gid).map_err(std::io::Error::other)?;
            let server = dhcp::Server::bind(nix::net::if_::if_nametoindex(NS_TAP)?, b)
                .map_err(std::io::Error::other)?;
            Ok((tap, server, setup.run(&rt)?))
        })
        .step(|| {
            format!(
                "set up the TAP and DHCP in the namespace of {}",
                iface.ifname
            )
        })?;
    crate::failpoint::hit("attach:isolated:inside");
    wire(kit, nic, inside, false).await?;
    super::spawn_dhcp(server, iface, cancel);
    Ok(tap.fds)
}

/// The host side of the veth kept out of the host's IP configuration: no IPv6, strict
/// rp_filter (link.rs); the guest's frames reach the host there.
fn harden(iface: &Interface) -> Result<(), KindError> {
    let what = || {
        format!(
            "keep veth {} out of the host's IP configuration",
            iface.ifname
        )
    };
    link::harden_guest_link(iface.ifname.as_str()).step(what)?;
    if iface.ipv6.is_some() {
        // Routed IPv6 needs IPv6 on the link, but no address and nothing learned on it.
        link::route_ipv6_on(iface.ifname.as_str()).step(what)?;
    }
    Ok(())
}

/// What the namespace itself needs, done from a thread inside it: forwarding (routed), the
/// masquerade NAT, and a netlink connection there for [`wire`].
struct Setup {
    routed: bool,
    /// One `nft -f` for the namespace: the masquerade NAT and, routed with IPv6, the TAP's
    /// guard on the sources of neighbour discovery (whichever there are).
    nft: Option<String>,
    /// The NIC has IPv6: routed in the namespace instead of switched off there.
    ipv6: bool,
}

/// The namespace's links as [`Setup`] left them.
struct Inside {
    links: Links,
    tap: u32,
    veth: u32,
}

impl Setup {
    fn of(iso: &IsolatedNet, nic: &Nic, again: bool) -> Result<Setup, KindError> {
        let (binding, transit) = built(nic).ok_or(KindError::Bug("not an isolated NIC"))?;
        let (ip, _) = nic
            .iface
            .address
            .ok_or(KindError::Bug("no address planned"))?;
        let nat = match (iso.masquerade(), transit) {
            (Some(m), Some(_)) => Some(super::masquerade::namespace_nat(
                m,
                ip,
                nic.iface.ipv6.as_ref().map(|l| l.address.0),
                again,
            )),
            _ => None,
        };
        let nd_guard = match (&nic.iface.ipv6, binding) {
            (Some(l), None) => Some(crate::net::firewall::nd_guard_script(
                "tapmanager_nd",
                NS_TAP,
                &crate::net::firewall::nd_sources(l, nic.iface.mac),
            )),
            _ => None,
        };
        let scripts: Vec<String> = nat.into_iter().chain(nd_guard).collect();
        Ok(Setup {
            // Joined, the namespace only switches frames: IPv6 stays off there.
            ipv6: nic.iface.ipv6.is_some() && binding.is_none(),
            routed: binding.is_none(),
            nft: (!scripts.is_empty()).then(|| scripts.join("\n")),
        })
    }

    /// Nothing in the namespace may take a guest's IPv6 (the veth already, the TAP and the
    /// bridge to come): with no IPv6 on the NIC it is switched off in the whole namespace;
    /// with IPv6 it is routed there, learning nothing from router advertisements. Before the
    /// TAP is made, so it inherits the defaults. On the thread that entered the namespace.
    fn namespace_ipv6(&self) -> std::io::Result<()> {
        if self.ipv6 {
            link::route_ipv6_in_namespace(NS_VETH)
                .io_step(|| "route IPv6 in the guest's namespace".into())
        } else {
            link::disable_ipv6_in_namespace()
                .io_step(|| "turn IPv6 off in the guest's namespace".into())
        }
    }

    /// Runs on the thread that entered the namespace.
    fn run(self, rt: &tokio::runtime::Handle) -> std::io::Result<Inside> {
        if self.ipv6 {
            // tap.rs made the TAP without IPv6; it is the guest's IPv6 router here.
            link::route_ipv6_on(NS_TAP).io_step(|| "route IPv6 on the guest's TAP".into())?;
        }
        if self.routed {
            std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
                .io_step(|| "turn forwarding on in the guest's namespace".into())?;
        }
        if let Some(script) = self.nft {
            crate::net::firewall::run_nft_once(&script, "the guest namespace's NAT and guard")?;
        }
        let tap = nix::net::if_::if_nametoindex(NS_TAP)?;
        let veth = nix::net::if_::if_nametoindex(NS_VETH)?;
        let _entered = rt.enter();
        let links = Links::connect().map_err(std::io::Error::other)?;
        Ok(Inside { links, tap, veth })
    }
}

/// The links' side of a NIC: addresses, the binding's join, routes and neighbours each way.
/// Each step replaces what is there, so the build runs it once and adoption ([`converge`])
/// again (`again`), putting back what was removed by hand. The one step that would add
/// rather than replace, tc-redirect's u32 filters, starts again from no filter on adoption.
async fn wire(kit: &Kit<'_>, nic: &Nic, inside: Inside, again: bool) -> Result<(), KindError> {
    let iface = &nic.iface;
    let (binding, transit) = built(nic).ok_or(KindError::Bug("not an isolated NIC"))?;
    let (ip, prefix) = iface.address.ok_or(KindError::Bug("no address planned"))?;
    let gateway = iface.gateway.ok_or(KindError::Bug("no gateway planned"))?;
    let Inside {
        links: inner,
        tap: tap_index,
        veth: veth_index,
    } = inside;
    let host_index = link::index_of(&iface.ifname)
        .ok_or_else(|| KindError::Gone(format!("veth {}", iface.ifname)))?;
    // What it was built with (the config's may have changed since).
    let mtu = iface.mtu;
    let Some(how) = binding else {
        // What the host routes to the namespace: the guest's /30, or for masquerade the
        // transit /30 whose namespace side the guest is NATed to.
        let block = Ipv4Net::new(transit.unwrap_or(ip), 30)?.trunc();
        return route_port(
            kit,
            &inner,
            iface,
            (tap_index, veth_index, host_index),
            transit,
            block,
        )
        .await;
    };
    // Joined: the guest's frames go through to the host side, which is its gateway and knows
    // its MAC (no ARP needed on the way back).
    inner.up(tap_index, NS_TAP, mtu, None).await?;
    inner.up(veth_index, NS_VETH, mtu, None).await?;
    if again && how == crate::config::VethBinding::TcRedirect {
        // Until the join below, the guest's frames end in the TAP's own stack (no address,
        // no forwarding in the namespace): dropped, never passed unchecked.
        for index in [tap_index, veth_index] {
            inner.del_ingress_qdisc(index).await?;
        }
    }
    let end = |index, name| crate::net::join::End { index, name };
    crate::net::join::join(
        &inner,
        how,
        end(tap_index, NS_TAP),
        end(veth_index, NS_VETH),
        mtu,
        (iface.mac, ip),
        &iface
            .ipv6
            .as_ref()
            .map(|l| super::own6(l, iface.mac))
            .unwrap_or_default(),
        crate::net::join::NS_BRIDGE,
    )
    .await?;
    kit.links
        .add_address(
            host_index,
            iface.ifname.as_str(),
            Ipv4Net::new(gateway, prefix)?,
        )
        .await?;
    kit.links.add_neighbour(host_index, ip, iface.mac).await?;
    if let Some(l) = &iface.ipv6 {
        // The host side holds the IPv6 gateway and the router's link-local (the guest
        // resolves it: the advertisement names no MAC), and routes the guest's /64 to its
        // MAC, never on-link.
        let name = iface.ifname.as_str();
        kit.links
            .add_address6_alone(
                host_index,
                name,
                ipnet::Ipv6Net::new(l.gateway, l.address.1)?,
            )
            .await?;
        kit.links
            .add_address6(host_index, name, ipnet::Ipv6Net::new(l.router, 64)?)
            .await?;
        super::route_own64(kit.links, host_index, iface.mac, l).await?;
    }
    Ok(())
}

/// The routed binding's addresses and routes: the TAP holds the gateway, each side of the
/// veth reaches the other through a fixed next hop with a permanent neighbour entry.
async fn route_port(
    kit: &Kit<'_>,
    inner: &Links,
    iface: &Interface,
    (tap_index, veth_index, host_index): (u32, u32, u32),
    transit: Option<Ipv4Addr>,
    block: Ipv4Net,
) -> Result<(), KindError> {
    let (_, prefix) = iface.address.ok_or(KindError::Bug("no address planned"))?;
    let gateway = iface.gateway.ok_or(KindError::Bug("no gateway planned"))?;
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
    kit.links.add_neighbour(host_index, NS_HOP, ns_mac).await?;
    kit.links
        .add_onlink_route(block, NS_HOP, host_index)
        .await?;
    if let Some(l) = &iface.ipv6 {
        // The same for IPv6: the TAP holds the guest's gateway and the router's link-local
        // address (the source of its advertisements), and each side of the veth reaches the
        // other through a link-local next hop with a permanent neighbour entry. Masquerade:
        // the namespace's side of the veth holds the transit /64's ::2, the guest's NAT.
        let iso = net_of(kit, iface).ok_or(KindError::Bug("an isolated NIC off its network"))?;
        let net6 = routed6(iso, iface, transit).ok_or(KindError::Bug("no IPv6 block planned"))?;
        inner
            .add_address6_alone(
                tap_index,
                NS_TAP,
                ipnet::Ipv6Net::new(l.gateway, l.address.1)?,
            )
            .await?;
        super::route_own64(inner, tap_index, iface.mac, l).await?;
        if transit.is_some() {
            let ns_side = std::net::Ipv6Addr::from(u128::from(net6.network()) + 2);
            inner
                .add_address6(veth_index, NS_VETH, ipnet::Ipv6Net::new(ns_side, 64)?)
                .await?;
        }
        inner
            .add_address6(tap_index, NS_TAP, ipnet::Ipv6Net::new(l.router, 64)?)
            .await?;
        inner.add_neighbour(veth_index, HOST_HOP6, host_mac).await?;
        inner
            .add_onlink_route6(ipnet::Ipv6Net::default(), HOST_HOP6, veth_index)
            .await?;
        kit.links.add_neighbour(host_index, NS_HOP6, ns_mac).await?;
        kit.links
            .add_onlink_route6(net6, NS_HOP6, host_index)
            .await?;
    }
    Ok(())
}

/// Adoption: the build's steps after the TAP again (the host rules are rebuilt with every
/// other at start).
pub(crate) async fn converge(kit: &Kit<'_>, nic: &Nic) -> Result<(), KindError> {
    let iface = &nic.iface;
    let iso = net_of(kit, iface).ok_or(KindError::Bug("adopted off its network"))?;
    let ns = NetNs::open(&kit.pin(&iface.ifname))
        .step(|| format!("open the namespace pinned for {}", iface.ifname))?;
    harden(&nic.iface)?;
    let setup = Setup::of(iso, nic, true)?;
    let rt = tokio::runtime::Handle::current();
    let inside = ns
        .run_in(move || {
            setup.namespace_ipv6()?;
            setup.run(&rt)
        })
        .step(|| format!("set up the namespace of {} again", iface.ifname))?;
    wire(kit, nic, inside, true).await
}

/// The isolated kind's part of the lease: the gateway answers from the TAP's side.
pub(crate) fn lease(iface: &Interface, i: &IsolatedNet) -> Lease {
    Lease {
        // The gateway is the TAP's own address inside the guest's namespace.
        server_mac: names::host_side_mac(iface.mac),
        dns: i.dns.clone(),
        search: Vec::new(),
        domain: None,
        mtu: i.mtu,
        lease_secs: i.lease_secs,
    }
}

/// Undoes an isolated NIC: its host rules and its namespace (which takes the TAP and the
/// veth's peer with it; the host side is deleted by the caller). Idempotent.
pub(crate) async fn teardown_port(kit: &Kit<'_>, nic: &Nic) -> bool {
    let iface = &nic.iface;
    let mut complete = true;
    if let Some(port) = routed_port(kit, nic) {
        if let Err(e) = kit.firewall.remove_routed_port(&port).await {
            tracing::error!(ifname = %iface.ifname, error = %crate::error_chain(&e), "cannot remove routed rules");
            complete = false;
        }
    }
    if let Err(e) = NetNs::delete(&kit.pin(&iface.ifname)) {
        tracing::error!(ifname = %iface.ifname, error = %e, "cannot delete the guest's namespace");
        complete = false;
    }
    complete
}

/// Start-up: namespaces under the state dir that no adopted attachment owns are removed.
pub(crate) fn sweep(kit: &Kit<'_>, known: &HashSet<IfName>) {
    let Ok(entries) = std::fs::read_dir(kit.state_dir().join("netns")) else {
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
/// the daemon's namespace, and IPv6 forwarding for bridges with NAT and IPv6.
pub(crate) fn prepare_host(d_config: &crate::config::Config) -> std::io::Result<()> {
    if d_config.networks.values().any(|n| match &n.kind {
        NetworkKind::Isolated(_) | NetworkKind::Routed(_) => true,
        NetworkKind::Bridge(b) => b.nat.is_some(),
        _ => false,
    }) {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
    }
    // NAT66 out of a bridge network with IPv6, and isolated networks' routed IPv6. (A host whose kernel takes its own IPv6
    // default route from router advertisements needs `accept_ra = 2` on that interface once
    // forwarding is on; `tapmanager doctor` checks.)
    if d_config.networks.values().any(|n| match &n.kind {
        NetworkKind::Bridge(b) => b.nat.is_some() && b.gateway6.is_some(),
        NetworkKind::Isolated(i) => i.v6.is_some(),
        _ => false,
    }) {
        std::fs::write("/proc/sys/net/ipv6/conf/all/forwarding", "1")?;
    }
    Ok(())
}
