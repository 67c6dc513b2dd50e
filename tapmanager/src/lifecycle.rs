//! What runs when a VM attaches, when it goes away, and when the daemon starts: one straight
//! script each, one step a line, each saying why it happens there.
//!
//! - [`plan()`]: pure bookkeeping under the registry lock (names, MACs, addresses); nothing in
//!   the kernel yet, so a refusal leaves nothing behind.
//! - [`build`]: the kernel work for each NIC. On any failure the caller runs [`teardown`] on the
//!   same record: teardown is idempotent, so it undoes exactly the steps that had finished.
//! - [`teardown`]: link, then guards, then the journal entry, continuing past errors; the entry
//!   stays when something could not be removed, so a restart tries again.
//! - [`reconcile`]: start-up. Creation and recovery share these functions: adopting an
//!   attachment restarts its DHCP servers with [`spawn_dhcp`] exactly as [`build`] does.

use crate::config::{Config, NetworkKind};
use crate::daemon::{Daemon, DaemonError};
use crate::names;
use crate::net::firewall::PortGuard;
use crate::net::link::{self, Links};
use crate::net::tap;
use crate::peer;
use crate::state::Record;
use protocol::{IfName, Interface, MacAddr, NetworkName};
use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use crate::BoxError;

mod plan;
pub(crate) use plan::{plan, PlanContext};

/// A bridge the daemon made sure of at start-up.
#[derive(Debug, Clone)]
pub struct BridgeState {
    pub index: u32,
    pub mac: MacAddr,
}

pub type Bridges = HashMap<NetworkName, BridgeState>;

/// Creates (or adopts) every configured bridge, with its fixed MAC and the gateway address.
/// One it creates is marked in the state dir's `bridges/`, so that `tapmanager down` removes
/// it and leaves an admin's own bridge alone.
pub async fn ensure_bridges(
    config: &Config,
    links: &Links,
) -> Result<Bridges, crate::daemon::DaemonError> {
    bridges(config, links, true).await
}

/// The configured bridges that exist, as they are (for `tapmanager down`, which makes none).
pub async fn existing_bridges(
    config: &Config,
    links: &Links,
) -> Result<Bridges, crate::daemon::DaemonError> {
    bridges(config, links, false).await
}

async fn bridges(
    config: &Config,
    links: &Links,
    make: bool,
) -> Result<Bridges, crate::daemon::DaemonError> {
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
            if created {
                // Its index: `down` deletes the bridge only if it is still this one.
                let mark = crate::state::made_bridge(&config.state_dir, &b.bridge);
                std::fs::write(&mark, info.index.to_string())
                    .map_err(|e| crate::state::StateError::CreateDir(mark.clone(), e))?;
            }
            info.index
        } else {
            match links.get(b.bridge.as_str()).await? {
                Some(info) => info.index,
                None => continue,
            }
        };
        out.insert(name.clone(), BridgeState { index, mac });
    }
    Ok(out)
}

/// The fds of a built attachment, interface by interface, queue by queue.
#[derive(Debug)]
pub struct Built {
    pub fds: Vec<OwnedFd>,
}

/// The bridge guards of a NIC (routed NICs have [`crate::isolated::routed_port`] instead).
fn guard(iface: &Interface) -> Option<PortGuard> {
    iface.address.map(|(ip, _)| PortGuard {
        ifname: iface.ifname.clone(),
        mac: iface.mac,
        ip,
    })
}

/// Builds every NIC of a planned record. Needs CAP_NET_ADMIN and CAP_NET_RAW.
/// A CNI NIC's MAC, address, gateway and MTU come from its plugins: they are written into
/// `record` as each NIC is built.
pub(crate) async fn build(
    d: &Daemon,
    record: &mut Record,
    pod_netns: Option<std::os::fd::BorrowedFd<'_>>,
    gid: u32,
    cancel: &CancellationToken,
) -> Result<Built, BoxError> {
    let mut fds = Vec::new();
    for i in 0..record.interfaces.len() {
        let iface = &record.interfaces[i];
        let kind = &d
            .config
            .network(&iface.network)
            .ok_or("network vanished")?
            .kind;
        if let NetworkKind::Pod(p) = kind {
            let mut built = iface.clone();
            let name = record
                .taken_of(&iface.ifname)
                .ok_or("no interface to take over")?
                .clone();
            let netns = pod_netns.ok_or("no pod namespace")?;
            let port =
                crate::pod::build_port(d, p, record, &mut built, &name, netns, gid, cancel).await;
            record.interfaces[i] = built;
            fds.extend(port?);
            continue;
        }
        if let NetworkKind::Cni(c) = kind {
            let mut built = iface.clone();
            let port = crate::cni::port::build_port(d, c, record, &mut built, gid, cancel).await;
            record.interfaces[i] = built;
            fds.extend(port?);
            continue;
        }
        let port = match kind {
            NetworkKind::Bridge(_) => build_bridge_port(d, record, iface, gid, cancel).await?,
            NetworkKind::Isolated(iso) => {
                crate::isolated::build_port(d, iso, record, iface, gid, cancel).await?
            }
            NetworkKind::Macvtap(mv) => crate::macvtap::build_port(d, mv, iface).await?,
            NetworkKind::Cni(_) | NetworkKind::Pod(_) => unreachable!("built above"),
        };
        fds.extend(port);
    }
    Ok(Built { fds })
}

/// One NIC on a bridge: guards, TAP, enslaved and up, DHCP.
async fn build_bridge_port(
    d: &Daemon,
    record: &Record,
    iface: &Interface,
    gid: u32,
    cancel: &CancellationToken,
) -> Result<Vec<OwnedFd>, BoxError> {
    let bridge = &d.bridges[&iface.network];
    // The TAP with its final flags (vnet_hdr, multi-queue), owned by the caller, down, with
    // no IPv6 and strict rp_filter (tap.rs). No frame can pass it yet: it is down, and no fd
    // of it has left the daemon.
    let tap = tap::create(&iface.ifname, iface.queues, record.uid, gid)?;
    if iface.by_name {
        // It outlives our fd, for the caller to open by name; teardown deletes it.
        tap::persist(&tap.fds[0])?;
    }
    crate::failpoint::hit("attach:bridge:tap");
    // Guards on its ingress hook before it is up: they hold from its very first frame.
    if let Some(g) = guard(iface) {
        d.firewall.add_port(&g)?;
    }
    crate::failpoint::hit("attach:bridge:guards");
    let index = link::index_of(&iface.ifname).ok_or("TAP vanished right after creation")?;
    // MTU, host-side MAC, master and up in one netlink message.
    d.links
        .finish_tap(
            index,
            &iface.ifname,
            iface.mtu,
            names::host_side_mac(iface.mac),
            bridge.index,
        )
        .await?;
    crate::failpoint::hit("attach:bridge:enslaved");
    // DHCP listens before any fd leaves the daemon, so the guest's first DISCOVER is answered.
    let server = dhcp::Server::bind(index, binding(d, record, iface).ok_or("no binding")?)?;
    spawn_dhcp(server, iface, cancel);
    if iface.by_name {
        // Ours closes here: a TAP without IFF_MULTI_QUEUE takes one attached fd at a time.
        return Ok(Vec::new());
    }
    Ok(tap.fds)
}

fn hostname(vm: &protocol::VmId) -> Option<String> {
    let s = vm.as_str();
    let ok = s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    ok.then(|| s.to_owned())
}

/// What the DHCP server of one NIC hands out.
pub(crate) fn binding(d: &Daemon, record: &Record, iface: &Interface) -> Option<dhcp::Binding> {
    let net = d.config.network(&iface.network)?;
    let (ip, prefix_len) = iface.address?;
    let gateway = iface.gateway?;
    let mut routes = Vec::new();
    let (server_mac, dns, search, domain, mtu, lease_secs) = match &net.kind {
        NetworkKind::Macvtap(_) => return None,
        // What the pod's interface had, as saved (the same after a restart), by the binding
        // it was built with (saved too: the config's may have changed since).
        NetworkKind::Pod(p) => {
            let saved = crate::pod::saved(d, iface)?;
            let server_mac = if saved.binding == "masquerade" {
                // The gateway is the TAP in the pod.
                names::host_side_mac(iface.mac)
            } else {
                let (_, _, r) = crate::pod::lease(&saved)?;
                routes = r;
                crate::cni::port::veth_mac(&iface.ifname)
            };
            (
                server_mac,
                p.dns.clone(),
                p.search.clone(),
                None,
                iface.mtu,
                p.lease_secs,
            )
        }
        // What the plugins said, from the cache entry (the same after a restart).
        NetworkKind::Cni(c) => {
            let lease = crate::cni::port::cached_lease(d, iface)?;
            routes = lease.routes;
            (
                crate::cni::port::veth_mac(&iface.ifname),
                lease.dns,
                lease.search,
                lease.domain,
                iface.mtu,
                c.lease_secs,
            )
        }
        NetworkKind::Bridge(b) => (
            d.bridges.get(&iface.network)?.mac,
            b.dns_servers(),
            b.search.clone(),
            b.domain.clone(),
            b.mtu,
            b.lease_secs,
        ),
        // The gateway is the TAP's own address inside the guest's namespace.
        NetworkKind::Isolated(i) => (
            names::host_side_mac(iface.mac),
            i.dns.clone(),
            Vec::new(),
            None,
            i.mtu,
            i.lease_secs,
        ),
    };
    Some(dhcp::Binding {
        mac: iface.mac.0,
        ip,
        prefix_len,
        gateway: Some(gateway),
        server_id: gateway,
        server_mac: server_mac.0,
        routes,
        dns,
        search,
        hostname: hostname(&record.vm),
        domain,
        mtu: u16::try_from(mtu).ok(),
        lease_secs,
    })
}

/// Writes into each NIC of `record` what its DHCP server hands out besides address and
/// gateway (DNS, search, routes), so a client can configure a guest without DHCP.
pub(crate) fn fill_leases(d: &Daemon, record: &mut Record) {
    let leases: Vec<_> = record
        .interfaces
        .iter()
        .map(|i| binding(d, record, i))
        .collect();
    for (iface, lease) in record.interfaces.iter_mut().zip(leases) {
        if let Some(b) = lease {
            iface.dns = b.dns;
            iface.search = b.search;
            iface.routes = b
                .routes
                .iter()
                .map(|(net, via)| (net.addr(), net.prefix_len(), *via))
                .collect();
        }
    }
}

/// Runs a bound DHCP server as a task owned by `cancel`; its death is logged.
pub(crate) fn spawn_dhcp(server: dhcp::Server, iface: &Interface, cancel: &CancellationToken) {
    let token = cancel.child_token();
    let ifname = iface.ifname.clone();
    tokio::spawn(async move {
        if let Err(e) = server.run(token.clone()).await {
            if !token.is_cancelled() {
                tracing::error!(%ifname, error = %crate::error_chain(&e), "DHCP server stopped");
            }
        }
    });
}

/// Binds a DHCP server on `tap` inside `ns`, from a thread that entered it (the socket keeps
/// the namespace; the server then runs on the runtime like any other).
pub(crate) fn bind_dhcp_in(
    ns: &crate::net::netns::NetNs,
    tap: &str,
    b: dhcp::Binding,
) -> Result<dhcp::Server, BoxError> {
    let tap = tap.to_owned();
    Ok(ns.run_in(move || {
        let index = nix::net::if_::if_nametoindex(tap.as_str())?;
        dhcp::Server::bind(index, b).map_err(std::io::Error::other)
    })?)
}

/// Binds the DHCP server of an existing NIC again (start-up adoption), where it was first.
fn rebind_dhcp(d: &Daemon, record: &Record, iface: &Interface) -> Result<dhcp::Server, BoxError> {
    let b = binding(d, record, iface).ok_or("no binding")?;
    match d.config.network(&iface.network).map(|n| &n.kind) {
        Some(NetworkKind::Isolated(_)) => crate::isolated::bind_dhcp(d, iface, b),
        Some(NetworkKind::Cni(_)) => crate::cni::port::bind_dhcp(d, iface, b),
        Some(NetworkKind::Pod(_)) => crate::pod::bind_dhcp(d, iface, b),
        _ => {
            let index = link::index_of(&iface.ifname).ok_or("TAP vanished")?;
            Ok(dhcp::Server::bind(index, b)?)
        }
    }
}

/// Removes everything of a record: each link (so no frame passes unguarded), its guards, and
/// last the journal entry. Idempotent; continues past errors. Returns whether it all went.
pub(crate) async fn teardown(d: &Daemon, record: &Record) -> bool {
    let mut complete = true;
    for iface in record.interfaces.iter().rev() {
        if let Err(e) = d.reaper.delete(iface.ifname.as_str()).await {
            tracing::error!(ifname = %iface.ifname, error = %e, "cannot delete link");
            // The port may still carry frames: it keeps its guards and namespace; the entry
            // stays in the journal, so a restart tries again.
            complete = false;
            continue;
        }
        crate::failpoint::hit("teardown:link");
        // A network gone from the config leaves its kind unknown: undo what either kind does.
        let kind = d.config.network(&iface.network).map(|n| &n.kind);
        if matches!(kind, Some(NetworkKind::Bridge(_)) | None) {
            if let Some(g) = guard(iface) {
                if let Err(e) = d.firewall.remove_port(&g) {
                    tracing::error!(ifname = %iface.ifname, error = %crate::error_chain(&e), "cannot remove guards");
                    complete = false;
                }
            }
        }
        if matches!(kind, Some(NetworkKind::Isolated(_)) | None) {
            complete &= crate::isolated::teardown_port(d, record, iface).await;
        }
        if matches!(kind, Some(NetworkKind::Cni(_)) | None) {
            complete &= crate::cni::port::teardown_port(d, iface).await;
        }
        if matches!(kind, Some(NetworkKind::Pod(_)) | None) {
            complete &= crate::pod::teardown_port(d, iface).await;
        }
        if matches!(kind, Some(NetworkKind::Macvtap(_)) | None) {
            if let Err(e) = d.firewall.remove_macvtap_guard(&iface.ifname).await {
                tracing::error!(ifname = %iface.ifname, error = %crate::error_chain(&e), "cannot remove macvtap guard");
                complete = false;
            }
        }
    }
    crate::failpoint::hit("teardown:port");
    if complete {
        crate::failpoint::hit("teardown:done");
        if let Err(e) = d.journal.remove(record.uid, &record.vm) {
            tracing::error!(vm = %record.vm, error = %crate::error_chain(&e), "cannot remove journal entry");
            complete = false;
        }
    }
    complete
}

/// Start-up: converge the kernel on the journal. Live callers' attachments are adopted (guards
/// rebuilt, DHCP restarted, exit watch re-armed); dead callers' are torn down; links of our
/// name shape that nothing claims are deleted.
pub(crate) async fn reconcile(d: &Arc<Daemon>) -> Result<(), DaemonError> {
    let mut adopt: Vec<(Record, OwnedFd)> = Vec::new();
    let mut reap: Vec<Record> = Vec::new();
    for r in d.journal.load()? {
        // Adopt only if every network still exists, every TAP is still there (a TAP nobody
        // holds disappears by itself) and the caller is the same live process.
        let intact = r.interfaces.iter().all(|i| {
            let kind = d.config.network(&i.network).map(|n| &n.kind);
            match kind {
                Some(NetworkKind::Bridge(_)) => {
                    link::index_of(&i.ifname).is_some() && d.bridges.contains_key(&i.network)
                }
                Some(NetworkKind::Isolated(_)) => {
                    link::index_of(&i.ifname).is_some()
                        && crate::isolated::netns_path(d, i).exists()
                }
                Some(NetworkKind::Macvtap(_)) => link::index_of(&i.ifname).is_some(),
                // No host link of that name: the plugins' host side is theirs.
                Some(NetworkKind::Cni(_)) => crate::cni::port::intact(d, i),
                Some(NetworkKind::Pod(_)) => crate::pod::intact(d, i),
                None => false,
            }
        });
        match intact.then(|| peer::pin(r.pid, r.pid_start)).flatten() {
            Some(pidfd) => adopt.push((r, pidfd)),
            None => reap.push(r),
        }
    }
    // Links of the daemon's shape that no record names (a crash before the journal entry, so
    // no fd of theirs left the daemon): gone before the rules are rebuilt, so that none is
    // up and unguarded meanwhile.
    let recorded: HashSet<&str> = adopt
        .iter()
        .map(|(r, _)| r)
        .chain(&reap)
        .flat_map(|r| r.interfaces.iter().map(|i| i.ifname.as_str()))
        .collect();
    for name in d.links.list_names().await? {
        if names::is_generated(&name, &d.config.interface_prefix)
            && !recorded.contains(name.as_str())
        {
            match d.links.delete_if_exists(&name).await {
                Ok(()) => tracing::info!(ifname = %name, "removed orphan link"),
                Err(e) => {
                    tracing::error!(ifname = %name, error = %crate::error_chain(&e), "cannot remove orphan link")
                }
            }
        }
    }
    // The adopted ports' guards, and those of dead callers' ports that are still there (a
    // TAP another process still holds carries frames until its teardown deletes it, and
    // teardown removes the guards only after the link), in one transaction: stale chains
    // vanish with it.
    let guarded: Vec<&Record> = adopt
        .iter()
        .map(|(r, _)| r)
        .chain(reap.iter().filter(|r| {
            r.interfaces
                .iter()
                .any(|i| link::index_of(&i.ifname).is_some())
        }))
        .collect();
    // A chain names its device: only links that exist (kernels before 6.16 refuse others).
    let guards: Vec<PortGuard> = guarded
        .iter()
        .flat_map(|r| r.interfaces.iter())
        .filter(|i| d.bridges.contains_key(&i.network) && link::index_of(&i.ifname).is_some())
        .filter_map(guard)
        .collect();
    let routed: Vec<_> = guarded
        .iter()
        .flat_map(|r| {
            r.interfaces
                .iter()
                .filter_map(|i| crate::isolated::routed_port(d, r, i))
        })
        .collect();
    let macvtaps: Vec<_> = guarded
        .iter()
        .flat_map(|r| r.interfaces.iter())
        .filter(|i| {
            matches!(
                d.config.network(&i.network).map(|n| &n.kind),
                Some(NetworkKind::Macvtap(_))
            ) && link::index_of(&i.ifname).is_some()
        })
        .map(|i| (i.ifname.clone(), i.mac))
        .collect();
    d.firewall.rebuild(&guards, &routed, &macvtaps).await?;
    crate::failpoint::hit("start:reconcile:rebuilt");
    for r in &reap {
        let done = teardown(d, r).await;
        tracing::info!(vm = %r.vm, uid = r.uid, complete = done, "reaped attachment of a dead caller");
    }
    let mut known: HashSet<IfName> = HashSet::new();
    for (r, pidfd) in adopt {
        let cancel = CancellationToken::new();
        for iface in &r.interfaces {
            known.insert(iface.ifname.clone());
            // The same convergent step as at attach: a bridge recreated while the daemon was
            // down gets its ports back.
            if let (Some(bridge), Some(index)) =
                (d.bridges.get(&iface.network), link::index_of(&iface.ifname))
            {
                let host_mac = names::host_side_mac(iface.mac);
                if let Err(e) = d
                    .links
                    .finish_tap(index, &iface.ifname, iface.mtu, host_mac, bridge.index)
                    .await
                {
                    tracing::error!(ifname = %iface.ifname, error = %crate::error_chain(&e), "cannot re-enslave adopted TAP");
                }
            }
            if binding(d, &r, iface).is_none() {
                continue; // no DHCP server for this kind (macvtap: the LAN's own)
            }
            match rebind_dhcp(d, &r, iface) {
                Ok(server) => spawn_dhcp(server, iface, &cancel),
                Err(e) => {
                    tracing::error!(ifname = %iface.ifname, error = %e, "cannot restart DHCP server")
                }
            }
        }
        tracing::info!(vm = %r.vm, uid = r.uid, pid = r.pid, "adopted attachment of a live caller");
        d.adopt(r, pidfd, cancel);
    }
    // DEL before the orphan namespaces go: plugins clean up inside them.
    crate::cni::port::reconcile(d, &known).await;
    crate::pod::reconcile(d, &known).await;
    crate::isolated::remove_orphan_namespaces(d, &known);
    crate::macvtap::remove_stale_nodes(&d.config.state_dir);
    for name in d.links.list_names().await? {
        if names::is_generated(&name, &d.config.interface_prefix)
            && !known.iter().any(|k| k.as_str() == name)
        {
            match d.links.delete_if_exists(&name).await {
                Ok(()) => tracing::info!(ifname = %name, "removed orphan link"),
                Err(e) => {
                    tracing::error!(ifname = %name, error = %crate::error_chain(&e), "cannot remove orphan link")
                }
            }
        }
    }
    Ok(())
}
