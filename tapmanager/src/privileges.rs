//! Capabilities: the daemon keeps only what it uses once it is serving.
//!
//! - CAP_NET_ADMIN: TAP creation (`TUNSETIFF`), rtnetlink changes, nftables (the `nft -i`
//!   child inherits it through the bounding and ambient sets).
//! - CAP_NET_RAW: the DHCP servers' `AF_PACKET` sockets.
//! - CAP_SYS_ADMIN, only with namespaced (isolated, masquerade) or macvtap networks:
//!   creating, entering and pinning the guests' network namespaces; the private mount
//!   namespace and sysfs that find a macvtap's device number.
//! - CAP_MKNOD, only with macvtap networks: the node the macvtap's device is opened through.
//! - CAP_SYS_ADMIN, only with namespaced (isolated, masquerade) or macvtap networks:
//!   creating, entering and pinning the guests' network namespaces; the private mount
//!   namespace and sysfs that find a macvtap's device number.
//! - CAP_MKNOD, only with macvtap networks: the node the macvtap's device is opened through.
//!
//! Everything else (CAP_CHOWN for the socket, CAP_SYS_ADMIN, CAP_DAC_OVERRIDE, ...) is dropped
//! from every set, including the bounding set, so not even an exec'd child gets it back.
//! Capabilities are per thread: this must run before the tokio runtime starts its threads.

use caps::{CapSet, Capability, CapsHashSet};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("cannot change capability set {0:?}")]
    Set(CapSet, #[source] caps::errors::CapsError),
    #[error("cannot drop {0} from the bounding set")]
    Bounding(Capability, #[source] caps::errors::CapsError),
}

/// The capabilities the serving daemon keeps; CAP_SYS_ADMIN only when it makes namespaces
/// (unshare, setns and the bind mount that pins them).
pub fn kept(namespaces: bool, device_nodes: bool) -> CapsHashSet {
    let mut keep: CapsHashSet = [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW]
        .into_iter()
        .collect();
    if namespaces || device_nodes {
        keep.insert(Capability::CAP_SYS_ADMIN);
    }
    if device_nodes {
        keep.insert(Capability::CAP_MKNOD);
    }
    keep
}

/// Drops every capability but [`kept`] from the calling thread (bounding, inheritable,
/// ambient, effective, permitted), so that children (`nft`) get exactly these.
pub fn reduce(namespaces: bool, device_nodes: bool) -> Result<(), PrivilegeError> {
    let keep = kept(namespaces, device_nodes);
    for cap in caps::all() {
        if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| PrivilegeError::Bounding(cap, e))?;
        }
    }
    caps::set(None, CapSet::Inheritable, &keep)
        .map_err(|e| PrivilegeError::Set(CapSet::Inheritable, e))?;
    caps::set(None, CapSet::Effective, &keep)
        .map_err(|e| PrivilegeError::Set(CapSet::Effective, e))?;
    caps::set(None, CapSet::Permitted, &keep)
        .map_err(|e| PrivilegeError::Set(CapSet::Permitted, e))?;
    // Ambient lets a non-root exec keep them; root's exec recomputes from the bounding set.
    for cap in &keep {
        // Best effort: ambient needs the cap in permitted and inheritable, which holds above.
        let _ = caps::raise(None, CapSet::Ambient, *cap);
    }
    Ok(())
}
