//! The shim path: a caller (a container runtime's shim) passes its pod's network namespace as
//! an fd and names the interface its VM takes over, Virtlet's way:
//!
//! 1. the namespace is pinned at `<state_dir>/netns/<ifname>`, so a restarted daemon can reach
//!    it (unpinning later never ends it while the pod's processes hold it);
//! 2. the interface's MAC, MTU, IPv4 addresses and routes are saved to
//!    `<state_dir>/pods/<ifname>.json` before anything changes;
//! 3. its addresses come off, it gets a MAC of ours, a TAP named like the NIC (`tm…`) is made
//!    for the caller and joined to it by the network's binding, and a DHCP server on the TAP
//!    hands the guest the pod's address, gateway and routes, with the interface's old MAC;
//! 4. teardown gives everything back: TAP, bridge, guard and ingress filters gone, the MAC,
//!    MTU, addresses and routes restored, the pin removed. The pod is as it was.
//!
//! Whether the caller may pass that namespace at all is decided before (daemon.rs):
//! [`crate::net::netns::owner_of_netns`] against the caller's uid and the network's policy.

use super::{KindError, Kit, Lack, Lease};
use crate::config::{Masquerade, PodBinding, PodNet, VethBinding};
use crate::hostfail::Step;
use crate::net::link::{self, Links, SavedAddress, SavedIpv6, SavedRoute};
use crate::net::netns::NetNs;
use crate::net::tap;
use crate::state::{Nic, NicState, Record};
use ipnet::Ipv4Net;
use protocol::{IfName, Interface, MacAddr};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

/// What a taken-over interface was, saved before the daemon touched it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// The NIC (and the TAP inside the pod, and the pin): the daemon's generated name.
    pub ifname: IfName,
    /// The pod's interface.
    pub taken: IfName,
    pub mac: MacAddr,
    pub mtu: u32,
    pub addresses: Vec<SavedAddress>,
    pub routes: Vec<SavedRoute>,
    /// The IPv6 side the guest took (empty when it took none: the pod kept it).
    #[serde(default)]
    pub ipv6: SavedIpv6,
    pub binding: Binding,
    /// Masquerade: the pod's `net.ipv4.ip_forward` before the daemon set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_forward: Option<String>,
    /// Masquerade with IPv6: the pod's `net.ipv6.conf.all.forwarding` before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6_forward: Option<String>,
}

/// The binding a pod NIC was built with, as saved (the config's may change meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Binding {
    Bridge,
    TcRedirect,
    Masquerade,
}

impl Binding {
    fn of(b: &PodBinding) -> Binding {
        match b {
            PodBinding::Join(VethBinding::Bridge) => Binding::Bridge,
            PodBinding::Join(VethBinding::TcRedirect) => Binding::TcRedirect,
            PodBinding::Masquerade(_) => Binding::Masquerade,
        }
    }
}

fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("pods")
}

fn cache_path(state_dir: &Path, ifname: &str) -> PathBuf {
    dir(state_dir).join(format!("{ifname}.json"))
}

pub(super) fn write_saved(state_dir: &Path, s: &Saved) -> std::io::Result<()> {
    crate::state::write_json(&cache_path(state_dir, s.ifname.as_str()), s)
}

fn read_saved(state_dir: &Path, ifname: &str) -> std::io::Result<Option<Saved>> {
    crate::state::read_json(&cache_path(state_dir, ifname))
}

/// The bridge binding's bridge inside the pod: named after the NIC, so two NICs in one pod
/// never share one, and never a name the pod uses.
fn bridge_name(ifname: &IfName) -> String {
    format!("{ifname}b")
}

fn guard_table(ifname: &IfName) -> String {
    format!("tapmanager_{ifname}")
}

/// Option 121 routes: (destination, next hop; 0.0.0.0 for on-link).
type Routes = Vec<(Ipv4Net, Ipv4Addr)>;

/// The guest's lease, from what was saved: the first address, the default route's gateway,
/// the other routes (option 121).
pub(crate) fn saved_lease(s: &Saved) -> Option<(Ipv4Net, Ipv4Addr, Routes)> {
    let address = s.addresses.first()?.net;
    let gateway = s.routes.iter().find(|r| r.dst.prefix_len() == 0)?.gw?;
    let routes = s
        .routes
        .iter()
        .filter(|r| r.dst.prefix_len() != 0)
        .map(|r| (r.dst, r.gw.unwrap_or(Ipv4Addr::UNSPECIFIED)))
        .collect();
    Some((address, gateway, routes))
}

/// The guest's IPv6, from what the pod's interface had: its first global address and the
/// default route's gateway. None without either: the pod keeps its IPv6, the guest has
/// IPv4 only.
fn lease6(v6: &SavedIpv6, dns: &[std::net::Ipv6Addr]) -> Option<super::Lease6> {
    let address = v6.addresses.first()?.net;
    let gateway = v6.routes.iter().find(|r| r.dst.prefix_len() == 0)?.gw?;
    Some(super::Lease6 {
        address,
        gateway,
        dns: dns.to_vec(),
    })
}

pub(crate) fn saved(state_dir: &Path, iface: &Interface) -> Option<Saved> {
    read_saved(state_dir, iface.ifname.as_str()).ok()?
}

/// The pod kind's part of the lease: what the pod's interface had (the NIC carries its
/// address, gateway and routes), answered by the TAP (masquerade) or by our MAC on the pod's
/// interface.
pub(crate) fn lease(iface: &Interface, p: &PodNet, masquerade: bool) -> Lease {
    Lease {
        server_mac: if masquerade {
            // The gateway is the TAP in the pod.
            crate::names::host_side_mac(iface.mac)
        } else {
            super::cni::port::veth_mac(&iface.ifname)
        },
        dns: p.dns.clone(),
        search: p.search.clone(),
        domain: None,
        mtu: iface.mtu,
        lease_secs: p.lease_secs,
    }
}

/// A pod NIC: the interface to take over, unique across every attachment; its address,
/// gateway, MTU and MAC are the pod's, known at build, except behind the masquerade binding,
/// where the guest has the fixed address.
pub(crate) fn plan(
    net: &PodNet,
    p: &super::PlanNic<'_>,
) -> Result<super::Addressing, protocol::Error> {
    let invalid = |m: String| protocol::Error::new(protocol::ErrorCode::InvalidRequest, m);
    let name = p
        .request
        .take_over
        .clone()
        .ok_or_else(|| invalid("a pod network needs the interface to take over".into()))?;
    let netns = p.pod_netns.ok_or_else(|| {
        invalid("a take-over needs the pod's namespace as the request's fd".into())
    })?;
    let masquerade = match &net.binding {
        PodBinding::Masquerade(m) => Some(m.cidr),
        PodBinding::Join(_) => None,
    };
    if p.request.mac.is_some() && masquerade.is_none() {
        return Err(invalid(format!(
            "the guest takes the MAC of {name}, so none may be asked for"
        )));
    }
    let took = |nic: &Nic| match &nic.built {
        NicState::Pod {
            netns: ns, taken, ..
        } => *ns == netns && *taken == name,
        _ => false,
    };
    let mut holder = None;
    (p.attached)(&mut |r| {
        if holder.is_none() && r.nics.iter().any(took) {
            holder = Some(r.vm.clone());
        }
    });
    if let Some(vm) = holder {
        return Err(protocol::Error::new(
            protocol::ErrorCode::AlreadyAttached,
            format!("{name} of that namespace is already taken over by VM {vm}"),
        ));
    }
    if p.planned.iter().any(took) {
        return Err(invalid(format!(
            "{name} is taken over twice in this request"
        )));
    }
    let built = NicState::Pod {
        netns,
        taken: name,
        masquerade: masquerade.is_some(),
    };
    // The guest's fixed address behind NAT (its MTU follows the pod's at build).
    let (address, gateway) = match masquerade {
        Some(cidr) => {
            let (guest, gw) = super::masquerade::guest_and_gateway(cidr);
            (Some((guest, cidr.prefix_len())), Some(gw))
        }
        None => (None, None),
    };
    Ok(super::Addressing {
        ipv6: None,
        address,
        gateway,
        mtu: 1500,
        built,
    })
}

/// Takes over `taken` in the caller's namespace `netns` for one NIC; fills in the interface's
/// MAC, address, gateway and MTU and returns the TAP fds. [`teardown_port`] undoes any prefix.
pub(crate) async fn build_port(
    kit: &Kit<'_>,
    net: &PodNet,
    record: &Record,
    nic: &mut Nic,
    netns: BorrowedFd<'_>,
    gid: u32,
    cancel: &CancellationToken,
) -> Result<Vec<OwnedFd>, KindError> {
    let NicState::Pod { taken, .. } = &nic.built else {
        return Err(KindError::Bug("not a pod NIC"));
    };
    let taken = &taken.clone();
    let lacks = |lack| KindError::Pod {
        taken: taken.clone(),
        lack,
    };
    let save = |saved: &Saved| {
        write_saved(kit.state_dir(), saved).step(|| format!("save what {taken} was"))
    };
    let pin = kit.pin(&nic.iface.ifname);
    let pins = pin
        .parent()
        .ok_or(KindError::Bug("a pin path with no directory"))?;
    crate::state::private_dir(pins).step(|| format!("create {}", pins.display()))?;
    let ns =
        NetNs::pin(netns, &pin).step(|| format!("pin the pod's namespace at {}", pin.display()))?;
    crate::failpoint::hit("attach:pod:pinned");
    let handle = tokio::runtime::Handle::current();
    let inner = ns
        .run_in(move || {
            let _entered = handle.enter();
            Links::connect().map_err(std::io::Error::other)
        })
        .step(|| "open a netlink connection in the pod's namespace".into())?;
    let eth = inner
        .get(taken.as_str())
        .await?
        .ok_or_else(|| lacks(Lack::Missing))?;
    let mac = eth.mac.ok_or_else(|| lacks(Lack::Mac))?;
    let mtu = eth.mtu.unwrap_or(1500);
    let (addresses, routes, v6) = inner.saved_state(eth.index, taken.as_str()).await?;
    let iface = &mut nic.iface;
    let mut saved = Saved {
        ifname: iface.ifname.clone(),
        taken: taken.clone(),
        mac,
        mtu,
        addresses,
        routes,
        ipv6: SavedIpv6::default(),
        binding: Binding::of(&net.binding),
        ip_forward: None,
        ip6_forward: None,
    };
    let (uid, queues, tap_name) = (record.uid, iface.queues, iface.ifname.clone());
    let join = match &net.binding {
        PodBinding::Join(j) => *j,
        PodBinding::Masquerade(m) => {
            if saved.addresses.is_empty() {
                return Err(lacks(Lack::MasqueradeAddress));
            }
            // With an IPv6 address and default route on the pod's interface, the guest has
            // IPv6 behind it too: cidr6's ::2, NAT66 to the pod's address.
            let ipv6 = lease6(&v6, &net.dns6).and_then(|_| masquerade6(m, iface.mac, &net.dns6));
            // Saved before any change: from here on, teardown can give it all back.
            save(&saved)?;
            // One `nft -f`: the NAT and, with IPv6, the TAP's neighbour guard.
            let mut script = masquerade_script(m, &iface.ifname, taken, ipv6.as_ref());
            if let Some(l) = &ipv6 {
                script.push_str(&nd_guard(&iface.ifname, l, iface.mac));
            }
            let v6_on = ipv6.is_some();
            let (tap, tap_index, old, old6) = ns
                .run_in(move || {
                    let tap = tap::create(&tap_name, queues, uid, gid).map_err(|e| {
                        std::io::Error::other(format!("cannot create the TAP in the pod: {e}"))
                    })?;
                    let index = nix::net::if_::if_nametoindex(tap_name.as_str())?;
                    crate::net::firewall::run_nft_once(&script, "the masquerade NAT in the pod")?;
                    let old = std::fs::read_to_string(IP_FORWARD)?;
                    let old6 = match v6_on {
                        true => Some(std::fs::read_to_string(IP6_FORWARD)?),
                        false => None,
                    };
                    if v6_on {
                        // The TAP is the guest's IPv6 router, learning nothing from it.
                        link::route_ipv6_on(tap_name.as_str())?;
                    }
                    Ok((tap, index, old, old6))
                })
                .step(|| "set up the TAP and NAT in the pod's namespace".into())?;
            saved.ip_forward = Some(old.trim().to_owned());
            saved.ip6_forward = old6.map(|v| v.trim().to_owned());
            save(&saved)?;
            ns.run_in(move || {
                std::fs::write(IP_FORWARD, "1")?;
                if v6_on {
                    std::fs::write(IP6_FORWARD, "1")?;
                }
                Ok(())
            })
            .step(|| "turn forwarding on in the pod's namespace".into())?;
            let (guest, gw) = super::masquerade::guest_and_gateway(m.cidr);
            inner
                .up(
                    tap_index,
                    iface.ifname.as_str(),
                    mtu,
                    Some(crate::names::host_side_mac(iface.mac)),
                )
                .await?;
            inner
                .add_address(
                    tap_index,
                    iface.ifname.as_str(),
                    Ipv4Net::new(gw, m.cidr.prefix_len())?,
                )
                .await?;
            if let Some(l) = &ipv6 {
                tap6(&inner, tap_index, iface, l).await?;
            }
            iface.address = Some((guest, m.cidr.prefix_len()));
            iface.gateway = Some(gw);
            iface.mtu = mtu;
            iface.ipv6 = ipv6;
            let b = super::binding(kit.config, kit.bridges, record, nic)
                .ok_or(KindError::Bug("a pod NIC without a DHCP binding"))?;
            let server = super::bind_dhcp_in(&ns, nic.iface.ifname.as_str(), b)?;
            super::spawn_dhcp(server, &nic.iface, cancel);
            return Ok(tap.fds);
        }
    };
    let (address, gateway, routes) = saved_lease(&saved).ok_or_else(|| lacks(Lack::Lease))?;
    // With an IPv6 address and default route the guest takes those too; their router is
    // asked for its link-local address while the interface is still the pod's.
    let ipv6 = match lease6(&v6, &net.dns6) {
        Some(l) => {
            let at = (taken.as_str(), eth.index);
            let found = super::router6(&pin, at, mac, &l).await?;
            saved.ipv6 = v6;
            Some(found)
        }
        None => None,
    };
    let guest6 = ipv6
        .as_ref()
        .map(|l| super::own6(l, mac))
        .unwrap_or_default();
    // Saved before any change: from here on, teardown can give it all back.
    save(&saved)?;
    crate::failpoint::hit("attach:pod:saved");

    let bridge_guard = (join == VethBinding::Bridge).then(|| {
        crate::net::join::bridge_guard_script(
            &guard_table(&iface.ifname),
            &crate::net::firewall::PortGuard {
                ifname: iface.ifname.clone(),
                mac,
                ip: address.addr(),
                ip6: guest6.clone(),
                bridged: true,
            },
        )
    });
    let (tap, tap_index) = ns
        .run_in(move || {
            let tap = tap::create(&tap_name, queues, uid, gid).map_err(|e| {
                std::io::Error::other(format!("cannot create the TAP in the pod: {e}"))
            })?;
            let index = nix::net::if_::if_nametoindex(tap_name.as_str())?;
            if let Some(script) = bridge_guard {
                crate::net::firewall::run_nft_once(&script, "the bridge binding's guard")?;
            }
            Ok((tap, index))
        })
        .step(|| "set up the TAP in the pod's namespace".into())?;
    let ours = super::cni::port::veth_mac(&iface.ifname);
    if !guest6.is_empty() {
        super::ipv6_off_in(&ns, taken.as_str())?;
    }
    inner.strip(eth.index, taken.as_str(), ours).await?;
    crate::failpoint::hit("attach:pod:stripped");
    inner.up(eth.index, taken.as_str(), mtu, None).await?;
    inner
        .up(tap_index, iface.ifname.as_str(), mtu, None)
        .await?;
    let end = |index, name| crate::net::join::End { index, name };
    crate::net::join::join(
        &inner,
        join,
        end(tap_index, iface.ifname.as_str()),
        end(eth.index, taken.as_str()),
        mtu,
        (mac, address.addr()),
        &guest6,
        &bridge_name(&iface.ifname),
    )
    .await?;
    if !guest6.is_empty() && join == VethBinding::Bridge {
        super::ipv6_off_in(&ns, &bridge_name(&iface.ifname))?;
    }
    crate::failpoint::hit("attach:pod:joined");
    iface.mac = mac;
    iface.address = Some((address.addr(), address.prefix_len()));
    iface.gateway = Some(gateway);
    iface.mtu = mtu;
    iface.routes = super::routes(&routes);
    iface.ipv6 = ipv6;
    let b = super::binding(kit.config, kit.bridges, record, nic)
        .ok_or(KindError::Bug("a pod NIC without a DHCP binding"))?;
    let server = super::bind_dhcp_in(&ns, nic.iface.ifname.as_str(), b)?;
    super::spawn_dhcp(server, &nic.iface, cancel);
    Ok(tap.fds)
}

const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";
const IP6_FORWARD: &str = "/proc/sys/net/ipv6/conf/all/forwarding";

/// The guest's IPv6 behind a pod's masquerade binding: `cidr6`'s ::2, its gateway ::1 and the
/// router's link-local on the TAP (whose MAC the server's is).
fn masquerade6(
    m: &Masquerade,
    mac: MacAddr,
    dns: &[std::net::Ipv6Addr],
) -> Option<protocol::Lease6> {
    let c = m.cidr6?;
    let base = u128::from(c.network());
    Some(protocol::Lease6 {
        address: (std::net::Ipv6Addr::from(base + 2), c.prefix_len()),
        gateway: std::net::Ipv6Addr::from(base + 1),
        router: dhcp::router::router_address(crate::names::host_side_mac(mac).0),
        dns: dns.to_vec(),
    })
}

/// The TAP's guard on the sources of the guest's neighbour discovery (table `netdev
/// tapmanager_nd_<NIC>` in the pod).
fn nd_guard(tap: &IfName, l: &protocol::Lease6, mac: MacAddr) -> String {
    crate::net::firewall::nd_guard_script(
        &format!("tapmanager_nd_{tap}"),
        tap.as_str(),
        &crate::net::firewall::nd_sources(l, mac),
    )
}

/// The TAP's IPv6 as the guest's router behind a masquerade binding: the gateway (its
/// /64 routed to the guest's MAC, not on-link) and the router's link-local.
async fn tap6(
    links: &Links,
    tap: u32,
    iface: &Interface,
    l: &protocol::Lease6,
) -> Result<(), KindError> {
    let name = iface.ifname.as_str();
    links
        .add_address6_alone(tap, name, ipnet::Ipv6Net::new(l.gateway, l.address.1)?)
        .await?;
    links
        .add_address6(tap, name, ipnet::Ipv6Net::new(l.router, 64)?)
        .await?;
    super::route_own64(links, tap, iface.mac, l).await
}

/// The masquerade binding's tables in the pod: the guest's traffic leaves NATed to the pod's
/// interface, only by it, only from the guest's address; inbound only through `ports`; with
/// IPv6, the same in an `ip6` table.
fn masquerade_script(
    m: &Masquerade,
    tap: &IfName,
    taken: &IfName,
    ipv6: Option<&protocol::Lease6>,
) -> String {
    crate::net::firewall::guest_nat_script(&crate::net::firewall::GuestNat {
        table: &guard_table(tap),
        out: taken.as_str(),
        guest: Ipv4Addr::from(u32::from(m.cidr.network()) + 2),
        guest6: ipv6.map(|l| l.address.0),
        source_only: true,
        forwards: m
            .ports
            .iter()
            .map(|f| (f.proto.as_str(), f.host, f.guest))
            .collect(),
        confine: Some(tap.as_str()),
    })
}

/// Removes the masquerade binding's tables (either family, and the TAP's neighbour guard);
/// converges: any may be absent.
fn masquerade_removal(tap: &IfName) -> String {
    let table = guard_table(tap);
    format!(
        "add table ip {table}\ndelete table ip {table}\nadd table ip6 {table}\ndelete table ip6 {table}\n\
         add table netdev tapmanager_nd_{tap}\ndelete table netdev tapmanager_nd_{tap}\n"
    )
}

/// Whether an adopted pod NIC's pin and saved state are still there.
pub(crate) fn intact(kit: &Kit<'_>, iface: &Interface) -> bool {
    kit.pin(&iface.ifname).exists() && saved(kit.state_dir(), iface).is_some()
}

/// Adoption: the pod's interface joined to the TAP again by the binding it was built with (as
/// saved), or for masquerade the TAP's gateway address and the pod's NAT put back.
pub(crate) async fn converge(kit: &Kit<'_>, iface: &Interface) -> Result<(), KindError> {
    let s = saved(kit.state_dir(), iface)
        .ok_or_else(|| KindError::Gone(format!("what {} saved", iface.ifname)))?;
    let pin = kit.pin(&iface.ifname);
    let ns = NetNs::open(&pin).step(|| format!("open the pod's namespace at {}", pin.display()))?;
    let (ip, prefix) = iface
        .address
        .ok_or(KindError::Bug("a pod NIC without its address"))?;
    let (links, [eth, tap]) = super::inside(&ns, [s.taken.as_str(), iface.ifname.as_str()])?;
    let join = match s.binding {
        Binding::Bridge => VethBinding::Bridge,
        Binding::TcRedirect => VethBinding::TcRedirect,
        Binding::Masquerade => {
            let Some(PodBinding::Masquerade(m)) =
                kit.config
                    .network(&iface.network)
                    .and_then(|n| match &n.kind {
                        crate::config::NetworkKind::Pod(p) => Some(&p.binding),
                        _ => None,
                    })
            else {
                return Err(KindError::Bug("adopted off its masquerade network"));
            };
            let gateway = iface.gateway.ok_or(KindError::Bug("no gateway planned"))?;
            let mut script = format!(
                "{}{}",
                masquerade_removal(&iface.ifname),
                masquerade_script(m, &iface.ifname, &s.taken, iface.ipv6.as_ref())
            );
            if let Some(l) = &iface.ipv6 {
                script.push_str(&nd_guard(&iface.ifname, l, iface.mac));
            }
            let (tap_name, v6_on) = (iface.ifname.to_string(), iface.ipv6.is_some());
            ns.run_in(move || {
                crate::net::firewall::run_nft_once(&script, "the masquerade NAT in the pod")?;
                std::fs::write(IP_FORWARD, "1")?;
                if v6_on {
                    link::route_ipv6_on(&tap_name)?;
                    std::fs::write(IP6_FORWARD, "1")?;
                }
                Ok(())
            })
            .step(|| "put the masquerade NAT in the pod back".into())?;
            let name = iface.ifname.as_str();
            let host_side = crate::names::host_side_mac(iface.mac);
            links.up(tap, name, iface.mtu, Some(host_side)).await?;
            links
                .add_address(tap, name, Ipv4Net::new(gateway, prefix)?)
                .await?;
            if let Some(l) = &iface.ipv6 {
                tap6(&links, tap, iface, l).await?;
            }
            return Ok(());
        }
    };
    let rejoin = super::Rejoin {
        ns: &ns,
        links: &links,
        eth: (s.taken.as_str(), eth),
        tap: (iface.ifname.as_str(), tap),
        binding: join,
        guest: (iface.mac, ip),
        guest6: iface
            .ipv6
            .as_ref()
            .map(|l| super::own6(l, iface.mac))
            .unwrap_or_default(),
        mtu: iface.mtu,
        ours: super::cni::port::veth_mac(&iface.ifname),
        bridge: bridge_name(&iface.ifname),
        table: guard_table(&iface.ifname),
    };
    super::rejoin(rejoin, true).await
}

/// Gives a pod back what was taken: our links, guard and filters gone, the interface's MAC,
/// MTU, addresses and routes restored; then the saved state and the pin go.
async fn restore(kit: &Kit<'_>, s: &Saved) -> Result<(), KindError> {
    let pin = kit.pin(&s.ifname);
    if pin.exists() {
        let ns =
            NetNs::open(&pin).step(|| format!("open the pod's namespace at {}", pin.display()))?;
        let handle = tokio::runtime::Handle::current();
        let table = guard_table(&s.ifname);
        let removal = match s.binding {
            Binding::Bridge => Some(crate::net::join::bridge_guard_removal(&table)),
            Binding::Masquerade => Some(masquerade_removal(&s.ifname)),
            Binding::TcRedirect => None,
        };
        let (ip_forward, ip6_forward) = (s.ip_forward.clone(), s.ip6_forward.clone());
        let inner = ns
            .run_in(move || {
                if let Some(script) = removal {
                    // Converges: the table may never have been made.
                    crate::net::firewall::run_nft_once(&script, "removing the binding's table")?;
                }
                if let Some(v) = ip_forward {
                    std::fs::write(IP_FORWARD, v)?;
                }
                if let Some(v) = ip6_forward {
                    std::fs::write(IP6_FORWARD, v)?;
                }
                let _entered = handle.enter();
                Links::connect().map_err(std::io::Error::other)
            })
            .step(|| "undo the binding in the pod's namespace".into())?;
        inner.delete_if_exists(s.ifname.as_str()).await?;
        inner.delete_if_exists(&bridge_name(&s.ifname)).await?;
        if s.binding == Binding::Masquerade {
            // The pod's interface was never touched.
        } else if let Some(eth) = inner.get(s.taken.as_str()).await? {
            inner.del_ingress_qdisc(eth.index).await?;
            inner
                .down_with(eth.index, s.taken.as_str(), s.mac, s.mtu)
                .await?;
            if !s.ipv6.addresses.is_empty() {
                // Back on with the pod's MAC: its link-local address is the one it had.
                let name = s.taken.to_string();
                ns.run_in(move || crate::net::link::set_ipv6(&name, true))
                    .step(|| format!("turn IPv6 on {} back on", s.taken))?;
            }
            inner.up(eth.index, s.taken.as_str(), s.mtu, None).await?;
            inner
                .restore_ipv4(eth.index, s.taken.as_str(), &s.addresses, &s.routes)
                .await?;
            inner
                .restore_ipv6(eth.index, s.taken.as_str(), &s.ipv6)
                .await?;
        } else {
            tracing::warn!(ifname = %s.ifname, taken = %s.taken, "the pod's interface is gone; nothing to give back");
        }
    }
    let saved = cache_path(kit.state_dir(), s.ifname.as_str());
    crate::state::remove_file(&saved).step(|| format!("remove {}", saved.display()))?;
    NetNs::delete(&pin).step(|| format!("unpin {}", pin.display()))?;
    Ok(())
}

/// Undoes a pod NIC. Idempotent; a failure keeps the saved state for the next start.
pub(crate) async fn teardown_port(kit: &Kit<'_>, iface: &Interface) -> bool {
    let saved = read_saved(kit.state_dir(), iface.ifname.as_str())
        .step(|| format!("read what {} saved", iface.ifname));
    let outcome = match saved {
        Ok(Some(s)) => restore(kit, &s).await,
        // Nothing was changed yet: only the pin may exist.
        Ok(None) => NetNs::delete(&kit.pin(&iface.ifname))
            .step(|| format!("unpin the namespace of {}", iface.ifname))
            .map_err(KindError::from),
        Err(e) => Err(KindError::from(e)),
    };
    match outcome {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(ifname = %iface.ifname, error = %crate::error_chain(&e), "cannot give the pod its interface back");
            false
        }
    }
}

/// Start-up: pods whose NIC nobody holds (a crash before the journal) get their interfaces
/// back. Runs before the orphan-pin sweep.
pub(crate) async fn sweep(kit: &Kit<'_>, known: &HashSet<IfName>) {
    let Ok(rd) = std::fs::read_dir(dir(kit.state_dir())) else {
        return;
    };
    for f in rd.flatten() {
        let p = f.path();
        if p.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Some(s) = std::fs::read(&p)
            .ok()
            .and_then(|b| serde_json::from_slice::<Saved>(&b).ok())
        else {
            tracing::error!(file = %p.display(), "unreadable saved pod interface");
            continue;
        };
        if known.contains(&s.ifname) {
            continue;
        }
        match restore(kit, &s).await {
            Ok(()) => {
                tracing::info!(ifname = %s.ifname, taken = %s.taken, "gave a pod its interface back")
            }
            Err(e) => {
                tracing::error!(ifname = %s.ifname, error = %crate::error_chain(&e), "cannot give a pod its interface back")
            }
        }
    }
}
