//! One CNI NIC, the Virtlet way done in one pass:
//!
//! 1. the attachment's namespace: the CNI NICs of one guest share one (Multus's way), pinned at
//!    `<state_dir>/netns/<first CNI NIC's name>`, whose name is also the container id; NIC k
//!    (k-th CNI NIC of the guest) is `eth<k>` there, with the TAP `tap<k>`;
//! 2. the cache entry DEL needs, on disk before any plugin runs;
//! 3. ADD with the network's list into that namespace, interface `eth<k>`;
//! 4. inside: the plugin's IPv4 addresses come off `eth<k>` (its routes go with them), it
//!    gets a MAC of ours and the guest gets the one the plugin gave it (the network has
//!    learnt it), the TAP is created for the caller and joined to `eth0` by the binding;
//! 5. the DHCP server on the TAP hands the guest the plugin's address, gateway, routes and DNS.
//!
//! Teardown runs DEL from the cache entry (never skipped: a failed DEL keeps the entry, and
//! every start-up tries again); the first NIC's, torn down last, removes the namespace.

use super::cache::{self, Entry};
use super::conf::{self, ConfList};
use super::exec::{self, Runtime};
use super::result::CniResult;
use crate::config::{CniNet, VethBinding};
use crate::kinds::Kit;
use crate::net::link::Links;
use crate::net::netns::NetNs;
use crate::net::tap;
use crate::state::{Nic, NicState, Record};
use ipnet::Ipv4Net;
use protocol::{IfName, Interface, MacAddr};
use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

use crate::hostfail::Step;
use crate::kinds::{KindError, Lack};

/// The MAC `eth<k>` takes once the guest has the plugin's: derived from the NIC's name, first
/// byte 0xf2 (locally administered, unicast, and never a guest MAC the daemon derives).
pub(crate) fn veth_mac(ifname: &IfName) -> MacAddr {
    let h = crate::names::bridge_mac(ifname.as_str());
    MacAddr([0xf2, h.0[1], h.0[2], h.0[3], h.0[4], h.0[5]])
}

/// Where a CNI NIC sits in its attachment.
struct Place {
    /// The attachment's first CNI NIC: names the namespace and is the container id.
    owner: IfName,
    netns: PathBuf,
    eth: String,
    tap: String,
}

/// A guest's CNI NICs, in its order.
fn cni_nics(record: &Record) -> Vec<&Interface> {
    record
        .nics
        .iter()
        .filter(|n| matches!(n.built, NicState::Cni { .. }))
        .map(|n| &n.iface)
        .collect()
}

impl Place {
    fn of(kit: &Kit<'_>, record: &Record, iface: &Interface) -> Place {
        let (k, owner) = Place::index(&cni_nics(record), iface);
        Place {
            netns: kit.pin(&owner),
            owner,
            eth: format!("eth{k}"),
            tap: format!("tap{k}"),
        }
    }

    /// What joins this NIC's interface to its TAP (the same at build and adoption).
    #[allow(clippy::too_many_arguments)]
    fn rejoin<'a>(
        &'a self,
        ns: &'a NetNs,
        links: &'a Links,
        (eth, tap): (u32, u32),
        binding: VethBinding,
        guest: (MacAddr, Ipv4Addr),
        guest6: Vec<Ipv6Addr>,
        mtu: u32,
        nic: &IfName,
    ) -> crate::kinds::Rejoin<'a> {
        Place::join_of(
            ns,
            links,
            (&self.eth, eth),
            (&self.tap, tap),
            binding,
            (guest, guest6),
            mtu,
            nic,
        )
    }

    /// The join of interface `eth` and TAP `tap<k>` (`tap`'s number names the bridge).
    #[allow(clippy::too_many_arguments)]
    fn join_of<'a>(
        ns: &'a NetNs,
        links: &'a Links,
        eth: (&'a str, u32),
        tap: (&'a str, u32),
        binding: VethBinding,
        (guest, guest6): ((MacAddr, Ipv4Addr), Vec<Ipv6Addr>),
        mtu: u32,
        nic: &IfName,
    ) -> crate::kinds::Rejoin<'a> {
        crate::kinds::Rejoin {
            ns,
            links,
            eth,
            tap,
            binding,
            guest,
            guest6,
            mtu,
            ours: veth_mac(nic),
            bridge: format!("br{}", tap.0.trim_start_matches("tap")),
            table: format!("tapmanager_{}", tap.0),
        }
    }

    /// Among a guest's CNI NICs, `iface`'s position and the first one's name (which names
    /// the namespace they share).
    fn index(cni: &[&Interface], iface: &Interface) -> (usize, IfName) {
        let k = cni
            .iter()
            .position(|i| i.ifname == iface.ifname)
            .unwrap_or(0);
        let owner = cni
            .first()
            .map_or(iface.ifname.clone(), |i| i.ifname.clone());
        (k, owner)
    }
}

fn runtime(e: &Entry) -> Runtime {
    Runtime {
        container_id: e.container_id.clone(),
        netns: e.netns.clone(),
        ifname: e.ifname.clone(),
    }
}

/// The list as it was cached: exactly what ADD ran.
fn cached_list(e: &Entry) -> Result<ConfList, KindError> {
    let text = serde_json::to_string(&e.conflist)?;
    Ok(conf::parse(std::path::Path::new("cache.conflist"), &text)?)
}

fn list_json(list: &ConfList) -> serde_json::Value {
    serde_json::json!({
        "cniVersion": list.cni_version,
        "name": list.name,
        "plugins": list.plugins,
        "disableCheck": list.disable_check,
        "disableGC": list.disable_gc,
    })
}

/// What the guest is handed, from a result: (address, gateway, other routes, DNS).
#[derive(Debug, Clone)]
pub struct Lease {
    pub address: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
    pub dns: Vec<Ipv4Addr>,
    pub search: Vec<String>,
    pub domain: Option<String>,
    /// The result's IPv6 side, if it has one with a gateway.
    pub ipv6: Option<crate::kinds::Lease6>,
}

/// Reads the guest's lease out of a CNI result for the namespace's interface `eth`.
pub fn lease(r: &CniResult, eth: &str) -> Result<Lease, KindError> {
    let lacks = |lack| KindError::CniResult {
        eth: eth.to_owned(),
        lack,
    };
    let (address, gw) = r.ipv4_on(eth).ok_or_else(|| lacks(Lack::Address))?;
    let routes = r.ipv4_routes();
    let default = routes
        .iter()
        .find(|(d, _)| d.prefix_len() == 0)
        .and_then(|(_, g)| *g);
    let gateway = gw.or(default).ok_or_else(|| lacks(Lack::Gateway))?;
    Ok(Lease {
        address,
        gateway,
        routes: routes
            .into_iter()
            .filter(|(d, _)| d.prefix_len() != 0)
            .map(|(d, g)| (d, g.unwrap_or(gateway)))
            .collect(),
        dns: r.ipv4_nameservers(),
        search: r.dns.search.clone(),
        domain: r.dns.domain.clone(),
        ipv6: lease6(r, eth),
    })
}

/// The IPv6 side of a result: its first IPv6 address on `eth` and the gateway on it or on
/// the default route. An address without any gateway is not handed on (logged): the guest
/// keeps IPv4 only, as before IPv6 was served.
fn lease6(r: &CniResult, eth: &str) -> Option<crate::kinds::Lease6> {
    let (address, gw) = r.ipv6_on(eth)?;
    let default = r
        .ipv6_routes()
        .into_iter()
        .find(|(d, _)| d.prefix_len() == 0)
        .and_then(|(_, g)| g);
    let Some(gateway) = gw.or(default) else {
        tracing::warn!(%eth, %address, "the CNI result's IPv6 address has no gateway; the guest gets IPv4 only");
        return None;
    };
    Some(crate::kinds::Lease6 {
        address,
        gateway,
        dns: r.ipv6_nameservers(),
    })
}

/// A CNI NIC: the plugins decide its address, gateway, MTU and MAC at build, so none may be
/// asked for.
pub(crate) fn plan(
    net: &CniNet,
    p: &crate::kinds::PlanNic<'_>,
) -> Result<crate::kinds::Addressing, protocol::Error> {
    if p.request.mac.is_some() {
        return Err(protocol::Error::new(
            protocol::ErrorCode::InvalidRequest,
            format!(
                "network {} is a CNI network: the guest takes the MAC the plugins gave its \
                 interface, so none may be asked for",
                p.network
            ),
        ));
    }
    Ok(crate::kinds::Addressing {
        ipv6: None,
        address: None,
        gateway: None,
        mtu: 1500,
        built: NicState::Cni {
            domain: None,
            binding: Some(net.binding),
        },
    })
}

/// Builds one CNI NIC; fills in the interface's MAC, address, gateway and MTU from the plugin,
/// and returns the TAP fds. [`teardown_port`] undoes any prefix of it.
pub(crate) async fn build_port(
    kit: &Kit<'_>,
    net: &CniNet,
    record: &Record,
    nic: &mut Nic,
    gid: u32,
    cancel: &CancellationToken,
) -> Result<Vec<OwnedFd>, KindError> {
    let list = conf::load(&net.conf_dir, &net.cni_network)?;
    let iface = &mut nic.iface;
    let place = Place::of(kit, record, iface);
    // The first CNI NIC makes the namespace; the others join it.
    let ns = if place.owner == iface.ifname {
        let pins = place
            .netns
            .parent()
            .ok_or(KindError::Bug("a pin path with no directory"))?;
        crate::state::private_dir(pins).step(|| format!("create {}", pins.display()))?;
        NetNs::create(&place.netns)
            .step(|| format!("create the guest's namespace at {}", place.netns.display()))?
    } else {
        NetNs::open(&place.netns)
            .step(|| format!("open the guest's namespace at {}", place.netns.display()))?
    };
    let mut entry = Entry {
        nic: iface.ifname.to_string(),
        network: iface.network.to_string(),
        container_id: place.owner.to_string(),
        netns: place.netns.clone(),
        ifname: place.eth.clone(),
        tap: place.tap.clone(),
        conflist: list_json(&list),
        bin_dirs: net.bin_dirs.clone(),
        result: None,
    };
    let rt = runtime(&entry);
    let cache = |e: &Entry| {
        cache::write(kit.state_dir(), e).step(|| format!("write the CNI cache entry of {}", e.nic))
    };
    cache(&entry)?;
    crate::failpoint::hit("attach:cni:cached");
    let started = std::time::Instant::now();
    let result = exec::add(&list, &net.bin_dirs, &rt).await?;
    // What the plugins took, apart from what the daemon adds (the CNI benchmark reads it).
    tracing::info!(container = %rt.container_id, network = %list.name,
        plugins_micros = started.elapsed().as_micros() as u64, "CNI ADD done");
    crate::failpoint::hit("attach:cni:added");
    entry.result = Some(result.raw.clone());
    cache(&entry)?;
    let lease = lease(&result, &place.eth)?;

    // Inside: the TAP for the caller, a netlink connection.
    let (uid, queues, binding) = (record.uid, iface.queues, net.binding);
    let guard_ip = lease.address.addr();
    let handle = tokio::runtime::Handle::current();
    let tap_name = IfName::try_from(place.tap.clone())
        .map_err(|_| KindError::Bug("a TAP name of the CNI namespace"))?;
    let (tap, inner, tap_index) = ns
        .run_in(move || {
            let tap = tap::create(&tap_name, queues, uid, gid).map_err(std::io::Error::other)?;
            let tap_index = nix::net::if_::if_nametoindex(tap_name.as_str())?;
            let _entered = handle.enter();
            let inner = Links::connect().map_err(std::io::Error::other)?;
            Ok((tap, inner, tap_index))
        })
        .step(|| format!("set up {} in the guest's namespace", place.tap))?;
    let eth_name = place.eth.as_str();
    let missing = |lack| KindError::CniInterface {
        eth: eth_name.to_owned(),
        lack,
    };
    let eth = inner
        .get(eth_name)
        .await?
        .ok_or_else(|| missing(Lack::Missing))?;
    let guest_mac = eth.mac.ok_or_else(|| missing(Lack::Mac))?;
    let mtu = eth.mtu.unwrap_or(1500);
    // Asked while the interface still has the plugin's MAC and addresses, as the guest will.
    let ipv6 = match &lease.ipv6 {
        Some(l) => {
            Some(crate::kinds::router6(&place.netns, (&place.eth, eth.index), guest_mac, l).await?)
        }
        None => None,
    };
    let guest6 = ipv6
        .as_ref()
        .map(|l| crate::kinds::own6(l, guest_mac))
        .unwrap_or_default();
    crate::kinds::rejoin(
        place.rejoin(
            &ns,
            &inner,
            (eth.index, tap_index),
            binding,
            (guest_mac, guard_ip),
            guest6,
            mtu,
            &iface.ifname,
        ),
        false,
    )
    .await?;
    crate::failpoint::hit("attach:cni:rewired");
    iface.mac = guest_mac;
    iface.address = Some((lease.address.addr(), lease.address.prefix_len()));
    iface.gateway = Some(lease.gateway);
    iface.mtu = mtu;
    iface.routes = crate::kinds::routes(&lease.routes);
    iface.dns = lease.dns;
    iface.search = lease.search;
    iface.ipv6 = ipv6;
    nic.built = NicState::Cni {
        domain: lease.domain,
        binding: Some(binding),
    };
    // The DHCP server listens before any fd leaves the daemon.
    let b = crate::kinds::binding(kit.config, kit.bridges, record, nic)
        .ok_or(KindError::Bug("a CNI NIC without a DHCP binding"))?;
    let server = crate::kinds::bind_dhcp_in(&ns, &place.tap, b)?;
    crate::kinds::spawn_dhcp(server, &nic.iface, cancel);
    Ok(tap.fds)
}

/// Adoption: the interface's side joined to the TAP again, by the binding it was built with
/// (the config's for an entry of the previous release, which did not say).
pub(crate) async fn converge(
    kit: &Kit<'_>,
    iface: &Interface,
    built: Option<VethBinding>,
) -> Result<(), KindError> {
    let e = cached(kit, iface)?;
    let binding = match (built, kit.config.network(&iface.network).map(|n| &n.kind)) {
        (Some(b), _) => b,
        (None, Some(crate::config::NetworkKind::Cni(c))) => c.binding,
        (None, _) => return Err(KindError::Bug("adopted off its network")),
    };
    let (ip, _) = iface
        .address
        .ok_or(KindError::Bug("a CNI NIC without its address"))?;
    let ns = NetNs::open(&e.netns)
        .step(|| format!("open the guest's namespace at {}", e.netns.display()))?;
    let (links, [eth, tap]) = crate::kinds::inside(&ns, [&e.ifname, &e.tap])?;
    let guest6 = iface
        .ipv6
        .as_ref()
        .map(|l| crate::kinds::own6(l, iface.mac))
        .unwrap_or_default();
    let join = Place::join_of(
        &ns,
        &links,
        (&e.ifname, eth),
        (&e.tap, tap),
        binding,
        ((iface.mac, ip), guest6),
        iface.mtu,
        &iface.ifname,
    );
    crate::kinds::rejoin(join, true).await
}

/// Binds the DHCP server of an existing CNI NIC again (start-up adoption).
pub(crate) fn bind_dhcp(
    kit: &Kit<'_>,
    iface: &Interface,
    b: dhcp::Binding,
) -> Result<dhcp::Server, KindError> {
    let e = cached(kit, iface)?;
    let ns = NetNs::open(&e.netns)
        .step(|| format!("open the guest's namespace at {}", e.netns.display()))?;
    crate::kinds::bind_dhcp_in(&ns, &e.tap, b)
}

/// A NIC's cache entry, which must be there.
fn cached(kit: &Kit<'_>, iface: &Interface) -> Result<Entry, KindError> {
    cache::read(kit.state_dir(), iface.ifname.as_str())
        .step(|| format!("read the CNI cache entry of {}", iface.ifname))?
        .ok_or_else(|| KindError::Gone(format!("the CNI cache entry of {}", iface.ifname)))
}

/// The CNI kind's part of the lease: what the plugins said (the NIC carries their address,
/// gateway, routes and DNS servers), answered by our MAC on the plugin's interface.
pub(crate) fn lease_of(
    iface: &Interface,
    c: &CniNet,
    domain: &Option<String>,
) -> super::super::Lease {
    super::super::Lease {
        server_mac: veth_mac(&iface.ifname),
        dns: iface.dns.clone(),
        search: iface.search.clone(),
        domain: domain.clone(),
        mtu: iface.mtu,
        lease_secs: c.lease_secs,
    }
}

/// The lease of a NIC's cached result (migrating a journal that did not keep all of it).
pub(crate) fn cached_lease(state_dir: &std::path::Path, iface: &Interface) -> Option<Lease> {
    let e = cache::read(state_dir, iface.ifname.as_str()).ok()??;
    let r = CniResult::parse(e.result?).ok()?;
    lease(&r, &e.ifname).ok()
}

/// Whether the NIC's namespace and cache entry are still there (start-up adoption).
pub(crate) fn intact(kit: &Kit<'_>, iface: &Interface) -> bool {
    matches!(
        cache::read(kit.state_dir(), iface.ifname.as_str()),
        Ok(Some(e)) if e.netns.exists()
    )
}

/// DEL from a cache entry, then the entry goes, and the namespace with the attachment's first
/// CNI NIC (the others are torn down before it). A failed DEL keeps both, so the next
/// start-up runs it again.
async fn del_entry(kit: &Kit<'_>, e: &Entry) -> bool {
    let rt = runtime(e);
    let outcome = match cached_list(e) {
        Ok(list) => exec::del(&list, &e.bin_dirs, &rt, e.result.as_ref())
            .await
            .map_err(|err| crate::error_chain(&err)),
        Err(err) => Err(crate::error_chain(&err)),
    };
    if let Err(err) = outcome {
        tracing::error!(container = %e.container_id, network = %e.network, error = %err, "CNI DEL failed; kept for the next start");
        return false;
    }
    let mut complete = true;
    if let Err(err) = cache::remove(kit.state_dir(), &e.nic) {
        tracing::error!(container = %e.container_id, error = %err, "cannot remove CNI cache entry");
        complete = false;
    }
    if e.nic != e.container_id {
        return complete;
    }
    if let Err(err) = NetNs::delete(&e.netns) {
        tracing::error!(container = %e.container_id, error = %err, "cannot delete the NIC's namespace");
        complete = false;
    }
    complete
}

/// Undoes a CNI NIC: DEL with the cached result, then its namespace. Idempotent.
pub(crate) async fn teardown_port(kit: &Kit<'_>, iface: &Interface) -> bool {
    match cache::read(kit.state_dir(), iface.ifname.as_str()) {
        Ok(Some(e)) => del_entry(kit, &e).await,
        // ADD never began: only the namespace may be there, if this NIC made it.
        Ok(None) => match NetNs::delete(&kit.pin(&iface.ifname)) {
            Ok(()) => true,
            Err(err) => {
                tracing::error!(ifname = %iface.ifname, error = %err, "cannot delete the NIC's namespace");
                false
            }
        },
        Err(err) => {
            tracing::error!(ifname = %iface.ifname, error = %err, "unreadable CNI cache entry");
            false
        }
    }
}

/// Start-up, after adoption and reaping: DEL for every cache entry no adopted NIC owns (a
/// crash between ADD and the journal), then GC (spec 1.1) for each CNI network with `gc =
/// true`, with the NICs that are still valid. GC is opt-in: the valid list names only this
/// daemon's attachments, so on a network others also ADD into (a cluster's pod network) it
/// would let plugins free what is theirs.
pub(crate) async fn sweep(kit: &Kit<'_>, known: &HashSet<IfName>) {
    let mut orphans: Vec<Entry> = cache::all(kit.state_dir())
        .into_iter()
        .filter(|e| !known.iter().any(|k| k.as_str() == e.nic))
        .collect();
    // The NICs that share a namespace first, its owner last: DEL runs inside it.
    orphans.sort_by_key(|e| e.nic == e.container_id);
    for e in orphans {
        let done = del_entry(kit, &e).await;
        tracing::info!(container = %e.container_id, network = %e.network, complete = done, "ran CNI DEL for an attachment nobody holds");
    }
    for (name, n) in &kit.config.networks {
        let crate::config::NetworkKind::Cni(c) = &n.kind else {
            continue;
        };
        if !c.gc {
            continue;
        }
        let Ok(list) = conf::load(&c.conf_dir, &c.cni_network) else {
            continue; // not there yet: nothing of it can need collecting
        };
        let valid: Vec<(String, String)> = known
            .iter()
            .filter_map(|k| cache::read(kit.state_dir(), k.as_str()).ok().flatten())
            .filter(|e| e.network == name.as_str())
            .map(|e| (e.container_id, e.ifname))
            .collect();
        match exec::gc(&list, &c.bin_dirs, &valid).await {
            Ok(true) => tracing::info!(network = %name, valid = valid.len(), "CNI GC done"),
            Ok(false) => {}
            Err(e) => {
                tracing::error!(network = %name, error = %crate::error_chain(&e), "CNI GC failed")
            }
        }
    }
}

/// The cached result as the namespace holds it after the rewire, for CHECK: the sandbox
/// interface has our MAC and none of the addresses or routes (they are the guest's now), so
/// a plugin that compares the container side with `prevResult` checks what is really there.
fn as_rewired(result: &serde_json::Value, eth: &str, mac: MacAddr) -> serde_json::Value {
    let mut r = result.clone();
    if let Some(ifaces) = r.get_mut("interfaces").and_then(|v| v.as_array_mut()) {
        for i in ifaces {
            if i["name"] == eth && i.get("sandbox").is_some_and(|s| !s.is_null()) {
                i["mac"] = mac.to_string().into();
            }
        }
    }
    r["ips"] = serde_json::json!([]);
    r["routes"] = serde_json::json!([]);
    r
}

/// `tapmanager check`: the NIC's own side (namespace, `eth0`, the TAP), then CHECK with the
/// cached result as rewired.
pub(crate) async fn check(kit: &Kit<'_>, iface: &Interface) -> Result<(), KindError> {
    let e = cached(kit, iface)?;
    let list = cached_list(&e)?;
    let result = e
        .result
        .as_ref()
        .ok_or(KindError::Bug("ADD never finished for this NIC"))?;
    let ns = NetNs::open(&e.netns)
        .step(|| format!("open the guest's namespace at {}", e.netns.display()))?;
    let names = [e.ifname.clone(), e.tap.clone()];
    ns.run_in(move || {
        for name in &names {
            nix::net::if_::if_nametoindex(name.as_str()).map_err(|err| {
                std::io::Error::other(format!("{name} is gone from the namespace ({err})"))
            })?;
        }
        Ok(())
    })
    .step(|| "look for the NIC's links in the guest's namespace".into())?;
    let rewired = as_rewired(result, &e.ifname, veth_mac(&iface.ifname));
    exec::check(&list, &e.bin_dirs, &runtime(&e), &rewired).await?;
    Ok(())
}

/// A CNI network's readiness: its list must be found, and (spec 1.1) its plugins' STATUS pass.
pub(crate) async fn status(net: &CniNet) -> (bool, String) {
    let list = match conf::load(&net.conf_dir, &net.cni_network) {
        Ok(l) => l,
        Err(e) => return (false, e.to_string()),
    };
    match exec::status(&list, &net.bin_dirs).await {
        Ok(()) => (true, format!("{} (STATUS passed)", list.source.display())),
        Err(exec::CniError::Version { .. }) => (
            true,
            format!(
                "{} (spec {}: no STATUS before 1.1.0)",
                list.source.display(),
                list.cni_version
            ),
        ),
        Err(e) => (false, crate::error_chain(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What bridge + host-local return for `eth1` of a guest's second CNI NIC.
    fn result() -> serde_json::Value {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:00:00:01"},
                {"name": "eth1", "mac": "0a:58:0a:16:00:05", "sandbox": "/run/netns/x"}
            ],
            "ips": [{"address": "10.22.0.5/16", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.22.0.1"}, {"dst": "10.96.0.0/12"}],
            "dns": {"nameservers": ["10.96.0.10", "fd00::a"], "search": ["svc.cluster.local"],
                    "domain": "cluster.local"}
        })
    }

    #[test]
    fn the_guest_leases_the_plugins_address_with_the_default_routes_gateway() {
        let r = CniResult::parse(result()).unwrap();
        let l = lease(&r, "eth1").unwrap();
        assert_eq!(l.address, "10.22.0.5/16".parse::<Ipv4Net>().unwrap());
        // No gateway on the address: the default route's.
        assert_eq!(l.gateway, "10.22.0.1".parse::<Ipv4Addr>().unwrap());
        // A route without a gateway goes by the guest's.
        assert_eq!(
            l.routes,
            vec![(
                "10.96.0.0/12".parse().unwrap(),
                "10.22.0.1".parse().unwrap()
            )]
        );
        assert_eq!(l.dns, vec!["10.96.0.10".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(l.search, vec!["svc.cluster.local".to_owned()]);
        assert_eq!(l.domain.as_deref(), Some("cluster.local"));
        // Another interface of the namespace has no address of the result.
        assert!(lease(&r, "eth0").is_err());
    }

    #[test]
    fn a_result_without_any_gateway_is_refused_with_the_reason() {
        let mut raw = result();
        raw["routes"] = serde_json::json!([{"dst": "10.96.0.0/12"}]);
        let e = lease(&CniResult::parse(raw).unwrap(), "eth1").unwrap_err();
        assert!(
            matches!(
                e,
                KindError::CniResult {
                    lack: Lack::Gateway,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("names no IPv4 gateway"), "{e}");
    }

    #[test]
    fn check_sees_the_sandbox_side_as_rewired() {
        let mac = MacAddr([0xf2, 1, 2, 3, 4, 5]);
        let r = as_rewired(&result(), "eth1", mac);
        // Our MAC on the sandbox interface, the host side's untouched, no addresses or routes.
        assert_eq!(r["interfaces"][1]["mac"], mac.to_string());
        assert_eq!(r["interfaces"][0]["mac"], "aa:bb:cc:00:00:01");
        assert_eq!(r["ips"], serde_json::json!([]));
        assert_eq!(r["routes"], serde_json::json!([]));
        assert_eq!(r["dns"], result()["dns"]);
    }

    #[test]
    fn a_guests_cni_nics_share_the_first_ones_namespace() {
        use crate::state::fixture;
        let cni = || NicState::Cni {
            domain: None,
            binding: None,
        };
        let record = fixture::record(
            "v",
            vec![
                fixture::nic("n", "tm000000000a", NicState::Bridge),
                fixture::nic("n", "tm000000000b", cni()),
                fixture::nic("n", "tm000000000c", cni()),
            ],
        );
        let place = |i: usize| Place::index(&cni_nics(&record), &record.nics[i].iface);
        assert_eq!(place(1), (0, "tm000000000b".parse().unwrap()));
        assert_eq!(place(2), (1, "tm000000000b".parse().unwrap()));
    }
}
