//! Attach, once planned: the kernel work of the record, NIC by NIC, each by its kind; then
//! the journal entry. On any failure everything done so far is undone before the caller is
//! told which step of which NIC failed.

use super::{teardown, Cx};
use crate::kinds;
use crate::state::Record;
use protocol::{Error, ErrorCode};
use std::os::fd::{BorrowedFd, OwnedFd};
use tokio_util::sync::CancellationToken;

/// A NIC whose build failed, and the step that did.
#[derive(Debug, thiserror::Error)]
#[error("NIC {index} ({ifname} on network {network})")]
pub struct NicError {
    pub index: usize,
    pub ifname: protocol::IfName,
    pub network: protocol::NetworkName,
    #[source]
    pub source: kinds::KindError,
}

/// Builds every NIC of a planned record and journals it; returns the fds, interface by
/// interface, queue by queue. A CNI or pod NIC's MAC, address, gateway and MTU come from its
/// plugins or its pod: they are written into `record` as each NIC is built. On failure the
/// record is torn down (its DHCP servers stopped through `cancel`) and the caller gets the
/// failed step of that NIC, with the fix where the kernel refused it. Needs CAP_NET_ADMIN and
/// CAP_NET_RAW.
pub(crate) async fn attach(
    cx: &Cx<'_>,
    record: &mut Record,
    pod_netns: Option<BorrowedFd<'_>>,
    gid: u32,
    cancel: &CancellationToken,
) -> Result<Vec<OwnedFd>, Error> {
    let mut fds = Vec::new();
    for i in 0..record.nics.len() {
        match kinds::build(&cx.kit, record, i, pod_netns, gid, cancel).await {
            Ok(more) => fds.extend(more),
            Err(source) => {
                let iface = &record.nics[i].iface;
                let e = NicError {
                    index: i,
                    ifname: iface.ifname.clone(),
                    network: iface.network.clone(),
                    source,
                };
                undo(cx, record, cancel).await;
                tracing::warn!(vm = %record.vm, uid = record.uid, error = %crate::error_chain(&e), "attach failed");
                return Err(refusal(&e));
            }
        }
    }
    crate::failpoint::hit("attach:built");
    fill_leases(&cx.kit, record);
    if let Err(e) = cx.journal.write(record) {
        undo(cx, record, cancel).await;
        let (code, message) = crate::hostfail::explain(&e);
        return Err(Error::new(code, message));
    }
    crate::failpoint::hit("attach:journaled");
    Ok(fds)
}

/// What the caller is told: a plugin's own error code as a code, not only as text; a pod
/// interface the caller named that cannot be taken over as its mistake; a step the kernel
/// refused as that step, its reason and the fix.
fn refusal(e: &NicError) -> Error {
    match &e.source {
        kinds::KindError::Cni(c) => {
            if let Some(code) = c.code() {
                return Error::new(ErrorCode::CniPlugin(code), crate::error_chain(e));
            }
        }
        // The caller named an interface of its pod that cannot be taken over.
        kinds::KindError::Pod { .. } => {
            return Error::new(ErrorCode::InvalidRequest, crate::error_chain(e))
        }
        // The network's router is not there (yet): nothing the caller can change.
        kinds::KindError::Router6 { .. } => {
            return Error::new(ErrorCode::Unavailable, crate::error_chain(e))
        }
        _ => {}
    }
    let (code, message) = crate::hostfail::explain(e);
    match code {
        // A limit is the network's to name first: "network X: ...".
        ErrorCode::CapacityExceeded => {
            Error::new(code, format!("network {}: {message}", e.network))
        }
        _ => Error::new(code, message),
    }
}

/// A failed attach: its DHCP servers stop and whatever was built goes.
async fn undo(cx: &Cx<'_>, record: &Record, cancel: &CancellationToken) {
    cancel.cancel();
    teardown(cx, record).await;
}

/// Writes into each NIC of `record` what its DHCP server hands out besides address and
/// gateway (DNS, search, routes), so a client can configure a guest without DHCP.
fn fill_leases(kit: &kinds::Kit<'_>, record: &mut Record) {
    let leases: Vec<_> = record
        .nics
        .iter()
        .map(|n| kinds::binding(kit.config, kit.bridges, record, n))
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
