//! What runs when a VM attaches, when it goes away, and when the daemon starts: one straight
//! script each, one step a line, each saying why it happens there. What each step does for
//! a NIC is its kind's ([`crate::kinds`]); this file orders the steps.
//!
//! - [`plan()`]: pure bookkeeping under the registry lock (names, MACs, addresses, each NIC's
//!   [`NicState`]); nothing in the kernel yet, so a refusal leaves nothing behind.
//! - [`build`]: the kernel work for each NIC. On any failure the caller runs [`teardown`] on the
//!   same record: teardown is idempotent, so it undoes exactly the steps that had finished.
//! - [`teardown`]: link, then what the kind built, then the journal entry, continuing past
//!   errors; the entry stays when something could not be removed, so a restart tries again.
//! - [`reconcile`]: start-up. Creation and recovery share the kinds' functions: adopting an
//!   attachment runs [`kinds::converge`], the build's own steps again.

use crate::daemon::{Daemon, DaemonError};
use crate::kinds;
use crate::names;
use crate::net::firewall::PortGuard;
use crate::net::link;
use crate::peer;
use crate::state::{NicState, Record, Stored};
use protocol::IfName;
use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use crate::BoxError;

mod plan;
pub(crate) use plan::{plan, PlanContext};

/// The fds of a built attachment, interface by interface, queue by queue.
#[derive(Debug)]
pub struct Built {
    pub fds: Vec<OwnedFd>,
}

/// Builds every NIC of a planned record. Needs CAP_NET_ADMIN and CAP_NET_RAW.
/// A CNI or pod NIC's MAC, address, gateway and MTU come from its plugins or its pod: they
/// are written into `record` as each NIC is built.
pub(crate) async fn build(
    d: &Daemon,
    record: &mut Record,
    pod_netns: Option<std::os::fd::BorrowedFd<'_>>,
    gid: u32,
    cancel: &CancellationToken,
) -> Result<Built, BoxError> {
    let kit = d.kit();
    let mut fds = Vec::new();
    for i in 0..record.nics.len() {
        fds.extend(kinds::build(&kit, record, i, pod_netns, gid, cancel).await?);
    }
    Ok(Built { fds })
}

/// Writes into each NIC of `record` what its DHCP server hands out besides address and
/// gateway (DNS, search, routes), so a client can configure a guest without DHCP.
pub(crate) fn fill_leases(d: &Daemon, record: &mut Record) {
    let kit = d.kit();
    let leases: Vec<_> = record
        .nics
        .iter()
        .map(|n| kinds::binding(&kit, record, n))
        .collect();
    for (nic, lease) in record.nics.iter_mut().zip(leases) {
        if let Some(b) = lease {
            nic.iface.dns = b.dns;
            nic.iface.search = b.search;
            nic.iface.routes = b
                .routes
                .iter()
                .map(|(net, via)| (net.addr(), net.prefix_len(), *via))
                .collect();
        }
    }
}

/// Removes everything of a record: each link (so no frame passes unguarded), its guards, and
/// last the journal entry. Idempotent; continues past errors. Returns whether it all went.
pub(crate) async fn teardown(d: &Daemon, record: &Record) -> bool {
    let kit = d.kit();
    let mut complete = true;
    for nic in record.nics.iter().rev() {
        let iface = &nic.iface;
        if let Err(e) = d.reaper.delete(iface.ifname.as_str()).await {
            tracing::error!(ifname = %iface.ifname, error = %e, "cannot delete link");
            // The port may still carry frames: it keeps its guards and namespace; the entry
            // stays in the journal, so a restart tries again.
            complete = false;
            continue;
        }
        crate::failpoint::hit("teardown:link");
        // What was built, by what the journal says was built.
        complete &= kinds::teardown(&kit, nic).await;
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
    let kit = d.kit();
    let mut adopt: Vec<(Record, OwnedFd)> = Vec::new();
    let mut reap: Vec<Record> = Vec::new();
    for stored in d.journal.load()? {
        let r = match stored {
            Stored::Current(r) => r,
            // The previous release's form: migrated, and written back before anything else
            // acts on it, so teardown and adoption read the same whether or not we crash.
            Stored::V1(old) => {
                let r = kinds::migrate(&kit, old);
                d.journal.write(&r)?;
                tracing::info!(vm = %r.vm, uid = r.uid, "journal entry migrated to the current form");
                r
            }
        };
        // Adopt only if everything built for every NIC is still there (a TAP nobody holds
        // disappears by itself) and the caller is the same live process.
        let intact = r.nics.iter().all(|n| kinds::intact(&kit, n));
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
        .flat_map(|r| r.interfaces().map(|i| i.ifname.as_str()))
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
        .chain(
            reap.iter()
                .filter(|r| r.interfaces().any(|i| link::index_of(&i.ifname).is_some())),
        )
        .collect();
    // A chain names its device: only links that exist (kernels before 6.16 refuse others).
    let live = |n: &&crate::state::Nic| link::index_of(&n.iface.ifname).is_some();
    let nics = || guarded.iter().flat_map(|r| r.nics.iter());
    let guards: Vec<PortGuard> = nics()
        .filter(|n| matches!(n.built, NicState::Bridge) && d.bridges.contains_key(&n.iface.network))
        .filter(live)
        .filter_map(|n| kinds::bridge::guard(&n.iface))
        .collect();
    let routed: Vec<_> = nics()
        .filter_map(|n| kinds::isolated::routed_port(&kit, n))
        .collect();
    let macvtaps: Vec<_> = nics()
        .filter(|n| matches!(n.built, NicState::Macvtap))
        .filter(live)
        .map(|n| (n.iface.ifname.clone(), n.iface.mac))
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
        for nic in &r.nics {
            known.insert(nic.iface.ifname.clone());
            // The build's own steps again: what was removed by hand while the daemon was
            // down comes back, and the DHCP server listens where it did.
            kinds::converge(&kit, &r, nic, &cancel).await;
        }
        tracing::info!(vm = %r.vm, uid = r.uid, pid = r.pid, "adopted attachment of a live caller");
        d.adopt(r, pidfd, cancel);
    }
    kinds::sweep(&kit, &known).await;
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
