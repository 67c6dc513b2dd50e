//! Start: the kernel converged on the journal.

use super::{teardown, Cx};
use crate::kinds;
use crate::names;
use crate::net::firewall::PortGuard;
use crate::net::link;
use crate::peer;
use crate::state::{NicState, Record, Stored};
use protocol::IfName;
use std::collections::HashSet;
use std::os::fd::OwnedFd;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("journal")]
    State(#[from] crate::state::StateError),
    #[error("netlink")]
    Link(#[from] crate::net::link::LinkError),
    #[error("firewall")]
    Firewall(#[from] crate::net::firewall::FirewallError),
}

/// An attachment of a live caller, converged: for the daemon to register and watch.
#[derive(Debug)]
pub(crate) struct Adopted {
    pub record: Record,
    /// The caller's pidfd, pinned to its start time.
    pub pidfd: OwnedFd,
    /// Owns the NICs' DHCP servers.
    pub cancel: CancellationToken,
}

/// Start-up: converge the kernel on the journal. Live callers' attachments are adopted (guards
/// rebuilt, what they were built with put back, DHCP restarted) and returned, for the daemon
/// to watch their callers again; dead callers' are torn down; links of our name shape that
/// nothing claims are deleted.
pub(crate) async fn reconcile(cx: &Cx<'_>) -> Result<Vec<Adopted>, ReconcileError> {
    let kit = cx.kit;
    let config = kit.config;
    let mut adopt: Vec<(Record, OwnedFd)> = Vec::new();
    let mut reap: Vec<Record> = Vec::new();
    for stored in cx.journal.load()? {
        let r = match stored {
            Stored::Current(r) => r,
            // The previous release's form: migrated, and written back before anything else
            // acts on it.
            Stored::V1(old) => {
                let r = kinds::migrate(config, old);
                match cx.journal.write(&r) {
                    Ok(()) => {
                        tracing::info!(vm = %r.vm, uid = r.uid, "journal entry migrated to the current form")
                    }
                    // The old entry stays, and says the same: the next start migrates it again.
                    Err(e) => {
                        tracing::error!(vm = %r.vm, uid = r.uid, error = %crate::error_chain(&e), "cannot write a migrated journal entry back")
                    }
                }
                r
            }
        };
        // Adopt only if everything built for every NIC is still there and the caller is the
        // same live process, and did not release it: a teardown a crash cut short is finished.
        let intact = !r.releasing && r.nics.iter().all(|n| kinds::intact(&kit, n));
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
    for name in kit.links.list_names().await? {
        if names::is_generated(&name, &config.interface_prefix) && !recorded.contains(name.as_str())
        {
            match kit.links.delete_if_exists(&name).await {
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
        .filter(live)
        .filter_map(|n| match n.built {
            NicState::Bridge if kit.bridges.contains_key(&n.iface.network) => {
                kinds::bridge::guard(&n.iface)
            }
            // A routed NIC's TAP is guarded whatever its network became: its route to the
            // guest is there until teardown deletes the TAP.
            NicState::Routed => kinds::routed::guard(&n.iface),
            _ => None,
        })
        .collect();
    let l3_ports: Vec<_> = nics()
        .filter(|n| matches!(n.built, NicState::Routed))
        .filter(live)
        .filter_map(|n| kinds::routed::l3_port(kit.config, &n.iface))
        .collect();
    let routed: Vec<_> = nics()
        .filter_map(|n| kinds::isolated::routed_port(&kit, n))
        .collect();
    let macvtaps: Vec<_> = nics()
        .filter(|n| matches!(n.built, NicState::Macvtap))
        .filter(live)
        .map(
            |n| match kit.config.network(&n.iface.network).map(|x| &x.kind) {
                Some(crate::config::NetworkKind::Macvtap(mv)) => {
                    kinds::macvtap::guard(&n.iface, mv)
                }
                // Its network is gone from the config: the strictest guard until its teardown.
                _ => crate::net::firewall::MacvtapGuard {
                    ifname: n.iface.ifname.clone(),
                    mac: n.iface.mac,
                    eui64_only: true,
                },
            },
        )
        .collect();
    let seals = kinds::bridge::existing_seals(kit.config, kit.links).await?;
    kit.firewall
        .rebuild(&guards, &routed, &macvtaps, &seals, &l3_ports)
        .await?;
    crate::failpoint::hit("start:reconcile:rebuilt");
    for r in &reap {
        let done = teardown(cx, r).await;
        let why = if r.releasing {
            "released before a crash"
        } else {
            "its caller is gone or a part of it is"
        };
        tracing::info!(vm = %r.vm, uid = r.uid, complete = done, why, "reaped attachment");
    }
    let mut known: HashSet<IfName> = HashSet::new();
    let mut adopted = Vec::new();
    for (r, pidfd) in adopt {
        let cancel = CancellationToken::new();
        for nic in &r.nics {
            known.insert(nic.iface.ifname.clone());
            // The build's own steps again: what was removed by hand while the daemon was
            // down comes back, and the DHCP server listens where it did.
            kinds::converge(&kit, &r, nic, &cancel).await;
        }
        tracing::info!(vm = %r.vm, uid = r.uid, pid = r.pid, "adopted attachment of a live caller");
        adopted.push(Adopted {
            record: r,
            pidfd,
            cancel,
        });
    }
    kinds::sweep(&kit, &known).await;
    for name in kit.links.list_names().await? {
        if names::is_generated(&name, &config.interface_prefix)
            && !known.iter().any(|k| k.as_str() == name)
        {
            match kit.links.delete_if_exists(&name).await {
                Ok(()) => tracing::info!(ifname = %name, "removed orphan link"),
                Err(e) => {
                    tracing::error!(ifname = %name, error = %crate::error_chain(&e), "cannot remove orphan link")
                }
            }
        }
    }
    Ok(adopted)
}
