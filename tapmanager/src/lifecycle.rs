//! What runs when a VM attaches, when it goes away, and when the daemon starts: one straight
//! script each, one step a line, each saying why it happens there.
//!
//! - [`plan`]: pure bookkeeping under the registry lock (names, MACs, addresses); nothing in
//!   the kernel yet, so a refusal leaves nothing behind.
//! - [`build`]: the kernel work for each NIC. On any failure the caller runs [`teardown`] on the
//!   same record: teardown is idempotent, so it undoes exactly the steps that had finished.
//! - [`teardown`]: link, then guards, then the journal entry, continuing past errors; the entry
//!   stays when something could not be removed, so a restart tries again.
//! - [`reconcile`]: start-up. Creation and recovery share these functions: adopting an
//!   attachment restarts its DHCP servers with [`start_dhcp`] exactly as [`build`] does.

use crate::config::{Config, NetworkKind};
use crate::daemon::{Daemon, DaemonError, Registry};
use crate::firewall::PortGuard;
use crate::ipam::Pool;
use crate::link::{self, Links};
use crate::names;
use crate::peer::{self, Peer};
use crate::state::Record;
use crate::tap;
use protocol::{AttachRequest, Error, ErrorCode, IfName, Interface, MacAddr, NetworkName};
use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A bridge the daemon made sure of at start-up.
#[derive(Debug, Clone)]
pub struct BridgeState {
    pub index: u32,
    pub mac: MacAddr,
}

pub type Bridges = HashMap<NetworkName, BridgeState>;

/// Creates (or adopts) every configured bridge, with its fixed MAC and the gateway address.
pub async fn ensure_bridges(config: &Config, links: &Links) -> Result<Bridges, link::LinkError> {
    let mut out = HashMap::new();
    for (name, net) in &config.networks {
        let NetworkKind::Bridge(b) = &net.kind;
        let mac = names::bridge_mac(b.bridge.as_str());
        let info = links
            .ensure_bridge(&b.bridge, mac, b.mtu, b.gateway)
            .await?;
        out.insert(
            name.clone(),
            BridgeState {
                index: info.index,
                mac,
            },
        );
    }
    Ok(out)
}

fn invalid(msg: String) -> Error {
    Error::new(ErrorCode::InvalidRequest, msg)
}

/// Chooses every NIC's TAP name, MAC and address. Pure bookkeeping: called under the registry
/// lock with everything already attached, so concurrent attaches never pick the same values.
pub(crate) fn plan(
    d: &Daemon,
    reg: &Registry,
    peer: &Peer,
    req: &AttachRequest,
) -> Result<Record, Error> {
    let taken: Vec<&Interface> = reg.records().flat_map(|r| r.interfaces.iter()).collect();
    let mut planned: Vec<Interface> = Vec::new();
    for (i, n) in req.networks.iter().enumerate() {
        let net = d
            .config
            .network(&n.network)
            .expect("authorized networks exist");
        let NetworkKind::Bridge(b) = &net.kind;
        // Everything already on this network, attached or planned in this request.
        let on_net: Vec<&Interface> = taken
            .iter()
            .copied()
            .chain(planned.iter())
            .filter(|x| x.network == n.network)
            .collect();
        let mac = n
            .mac
            .unwrap_or_else(|| names::guest_mac(peer.uid, &req.vm, i))
            .validate_unicast()
            .map_err(|e| invalid(e.to_string()))?;
        if on_net.iter().any(|x| x.mac == mac) {
            return Err(invalid(format!(
                "MAC {mac} is already in use on network {}",
                n.network
            )));
        }
        let ifname = (0u32..)
            .map(|salt| names::tap_name(&d.config.interface_prefix, peer.uid, &req.vm, i, salt))
            .find(|name| {
                !taken
                    .iter()
                    .copied()
                    .chain(planned.iter())
                    .any(|x| x.ifname == *name)
                    && link::index_of(name).is_none()
            })
            .expect("an unused name exists");
        let used: HashSet<_> = on_net
            .iter()
            .filter_map(|x| x.address.map(|(a, _)| a))
            .collect();
        let pool = match &b.addresses {
            Some(list) => Pool::List(list.clone()),
            None => Pool::Subnet(b.gateway),
        };
        let ip = pool.allocate(&used).ok_or_else(|| {
            Error::new(
                ErrorCode::AddressesExhausted,
                format!("network {} has no free address", n.network),
            )
        })?;
        planned.push(Interface {
            network: n.network.clone(),
            ifname,
            mac,
            address: Some((ip, b.gateway.prefix_len())),
            gateway: Some(b.gateway.addr()),
            mtu: b.mtu,
            queues: n.queues,
            vnet_hdr: true,
        });
    }
    Ok(Record {
        vm: req.vm.clone(),
        uid: peer.uid,
        pid: peer.pid,
        pid_start: peer.start_time,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        interfaces: planned,
    })
}

/// The fds of a built attachment, interface by interface, queue by queue.
#[derive(Debug)]
pub struct Built {
    pub fds: Vec<OwnedFd>,
}

fn guard(iface: &Interface) -> Option<PortGuard> {
    iface.address.map(|(ip, _)| PortGuard {
        ifname: iface.ifname.clone(),
        mac: iface.mac,
        ip,
    })
}

/// Builds every NIC of a planned record. Needs CAP_NET_ADMIN and CAP_NET_RAW.
pub(crate) async fn build(
    d: &Daemon,
    record: &Record,
    gid: u32,
    cancel: &CancellationToken,
) -> Result<Built, BoxError> {
    let mut fds = Vec::new();
    for iface in &record.interfaces {
        let bridge = &d.bridges[&iface.network];
        // Guards first: they match the port by name, so they hold from its very first frame.
        if let Some(g) = guard(iface) {
            d.firewall.add_port(&g).await?;
        }
        // The TAP with its final flags (vnet_hdr, multi-queue), owned by the caller.
        let tap = tap::create(&iface.ifname, iface.queues, record.uid, gid)?;
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
        // DHCP listens before any fd leaves the daemon, so the guest's first DISCOVER is answered.
        start_dhcp(d, record, iface, index, cancel)?;
        fds.extend(tap.fds);
    }
    Ok(Built { fds })
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
    let NetworkKind::Bridge(b) = &net.kind;
    let (ip, prefix_len) = iface.address?;
    Some(dhcp::Binding {
        mac: iface.mac.0,
        ip,
        prefix_len,
        gateway: Some(b.gateway.addr()),
        server_id: b.gateway.addr(),
        server_mac: d.bridges.get(&iface.network)?.mac.0,
        routes: Vec::new(),
        dns: b.dns.clone(),
        search: b.search.clone(),
        hostname: hostname(&record.vm),
        domain: b.domain.clone(),
        mtu: u16::try_from(b.mtu).ok(),
        lease_secs: b.lease_secs,
    })
}

/// Starts the DHCP server of one NIC as a task owned by `cancel`; its death is logged.
pub(crate) fn start_dhcp(
    d: &Daemon,
    record: &Record,
    iface: &Interface,
    index: u32,
    cancel: &CancellationToken,
) -> Result<(), BoxError> {
    let Some(b) = binding(d, record, iface) else {
        return Ok(());
    };
    let server = dhcp::Server::bind(index, b)?;
    let token = cancel.child_token();
    let ifname = iface.ifname.clone();
    tokio::spawn(async move {
        if let Err(e) = server.run(token.clone()).await {
            if !token.is_cancelled() {
                tracing::error!(%ifname, error = %crate::error_chain(&e), "DHCP server stopped");
            }
        }
    });
    Ok(())
}

/// Removes everything of a record: each link (so no frame passes unguarded), its guards, and
/// last the journal entry. Idempotent; continues past errors. Returns whether it all went.
pub(crate) async fn teardown(d: &Daemon, record: &Record) -> bool {
    let mut complete = true;
    for iface in record.interfaces.iter().rev() {
        if let Err(e) = d.links.delete_if_exists(iface.ifname.as_str()).await {
            tracing::error!(ifname = %iface.ifname, error = %crate::error_chain(&e), "cannot delete TAP");
            complete = false;
        }
        if let Some(g) = guard(iface) {
            if let Err(e) = d.firewall.remove_port(&g).await {
                tracing::error!(ifname = %iface.ifname, error = %crate::error_chain(&e), "cannot remove guards");
                complete = false;
            }
        }
    }
    if complete {
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
        let intact = r
            .interfaces
            .iter()
            .all(|i| d.bridges.contains_key(&i.network) && link::index_of(&i.ifname).is_some());
        match intact.then(|| peer::pin(r.pid, r.pid_start)).flatten() {
            Some(pidfd) => adopt.push((r, pidfd)),
            None => reap.push(r),
        }
    }
    // Exactly the adopted ports' guards, in one transaction: stale chains vanish with it.
    let guards: Vec<PortGuard> = adopt
        .iter()
        .flat_map(|(r, _)| r.interfaces.iter().filter_map(guard))
        .collect();
    d.firewall.rebuild(&guards).await?;
    for r in &reap {
        let done = teardown(d, r).await;
        tracing::info!(vm = %r.vm, uid = r.uid, complete = done, "reaped attachment of a dead caller");
    }
    let mut known: HashSet<IfName> = HashSet::new();
    for (r, pidfd) in adopt {
        let cancel = CancellationToken::new();
        for iface in &r.interfaces {
            known.insert(iface.ifname.clone());
            let started = link::index_of(&iface.ifname)
                .ok_or_else(|| BoxError::from("TAP vanished"))
                .and_then(|index| start_dhcp(d, &r, iface, index, &cancel));
            if let Err(e) = started {
                tracing::error!(ifname = %iface.ifname, error = %e, "cannot restart DHCP server");
            }
        }
        tracing::info!(vm = %r.vm, uid = r.uid, pid = r.pid, "adopted attachment of a live caller");
        d.adopt(r, pidfd, cancel);
    }
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
