//! Capabilities: the daemon keeps only what it uses once it is serving.
//!
//! - CAP_NET_ADMIN: TAP creation (`TUNSETIFF`), rtnetlink changes, nftables (the `nft -i`
//!   child inherits it through the bounding and ambient sets).
//! - CAP_NET_RAW: the DHCP servers' `AF_PACKET` sockets.
//! - CAP_SYS_ADMIN, only with namespaced (isolated, masquerade, CNI, pod) or macvtap
//!   networks: creating, entering and pinning the guests' network namespaces; the private
//!   mount namespace and sysfs that find a macvtap's device number.
//! - CAP_MKNOD, only with macvtap networks: the node the macvtap's device is opened through.
//! - CAP_NET_BIND_SERVICE, only with a bridge network that forwards DNS: port 53 on its
//!   gateway address.
//!
//! Everything else (CAP_CHOWN for the socket, CAP_SYS_ADMIN, CAP_DAC_OVERRIDE, ...) is dropped
//! from every set, including the bounding set, so not even an exec'd child gets it back.
//! Capabilities are per thread: this must run before the tokio runtime starts its threads.
//!
//! Children: the daemon sets `SECBIT_NOROOT` (locked), so a program it runs as root does not
//! get every capability of the bounding set for being root; it gets its ambient set, which
//! is the kept set unless the child's pre-exec hook narrows it ([`only_in_child`]): `nft`
//! runs with CAP_NET_ADMIN alone; CNI plugins with [`CNI_PLUGIN_CAPS`] (they create links,
//! enter namespaces, and some send raw frames), never CAP_MKNOD or CAP_NET_BIND_SERVICE.

use caps::{CapSet, Capability, CapsHashSet};

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("cannot change capability set {0:?}")]
    Set(CapSet, #[source] caps::errors::CapsError),
    #[error("cannot drop {0} from the bounding set")]
    Bounding(Capability, #[source] caps::errors::CapsError),
    #[error("cannot set SECBIT_NOROOT (children would get every kept capability)")]
    SecureBits(#[source] std::io::Error),
}

/// Makes `cmd`'s program get only `caps` (through [`only_in_child`] between fork and exec):
/// how `nft` and the CNI plugins are started.
pub fn confine(cmd: &mut std::process::Command, caps: &'static [Capability]) {
    // SAFETY: the hook runs between fork and exec and makes only raw prctl calls
    // (async-signal-safe), touching no memory of the parent.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, || only_in_child(caps));
    }
}

/// For a child's pre-exec hook: leaves `caps` as the only capabilities the program about to
/// be exec'd gets (its ambient set; see the module docs). Only raw `prctl` calls, so it is
/// safe between fork and exec. A daemon not run as root has no ambient set to narrow; the
/// child then runs with what it had, which is nothing.
pub fn only_in_child(caps: &[Capability]) -> std::io::Result<()> {
    // SAFETY: PR_CAP_AMBIENT takes integers by value; no memory is shared.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    for cap in caps {
        // SAFETY: as above.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE,
                libc::c_ulong::from(cap.index()),
                0,
                0,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// What a CNI plugin gets: links and rules (`CAP_NET_ADMIN`), entering the namespace it was
/// given (`CAP_SYS_ADMIN`) and raw frames (the bridge plugin's gratuitous ARP, `CAP_NET_RAW`).
pub const CNI_PLUGIN_CAPS: [Capability; 3] = [
    Capability::CAP_NET_ADMIN,
    Capability::CAP_SYS_ADMIN,
    Capability::CAP_NET_RAW,
];

/// What the configured networks need beyond CAP_NET_ADMIN and CAP_NET_RAW.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Makes, enters and pins network namespaces (isolated, masquerade, CNI, pod).
    pub namespaces: bool,
    /// Makes device nodes (macvtap).
    pub device_nodes: bool,
    /// Binds a port below 1024 (a bridge network's DNS forwarder).
    pub low_ports: bool,
    /// Mounts namespace pins in another mount namespace ([`crate::net::netns::PinPlace`]): entering
    /// it takes CAP_SYS_CHROOT.
    pub foreign_pins: bool,
}

impl Needs {
    pub fn of(config: &crate::config::Config) -> Needs {
        crate::kinds::needs(config)
    }
}

/// The capabilities the serving daemon keeps; CAP_SYS_ADMIN only when it makes namespaces
/// (unshare, setns and the bind mount that pins them).
pub fn kept(needs: Needs) -> CapsHashSet {
    let mut keep: CapsHashSet = [Capability::CAP_NET_ADMIN, Capability::CAP_NET_RAW]
        .into_iter()
        .collect();
    if needs.namespaces || needs.device_nodes {
        keep.insert(Capability::CAP_SYS_ADMIN);
    }
    if needs.device_nodes {
        keep.insert(Capability::CAP_MKNOD);
    }
    if needs.low_ports {
        keep.insert(Capability::CAP_NET_BIND_SERVICE);
    }
    if needs.foreign_pins {
        keep.insert(Capability::CAP_SYS_CHROOT);
    }
    keep
}

/// Drops every capability but [`kept`] from the calling thread (bounding, inheritable,
/// ambient, effective, permitted), so that children (`nft`) get exactly these.
pub fn reduce(needs: Needs) -> Result<(), PrivilegeError> {
    let keep = kept(needs);
    // While CAP_SETPCAP is still here: children get capabilities by their ambient set only.
    const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
    const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
    // SAFETY: PR_SET_SECUREBITS takes its flags by value; no memory is shared.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECUREBITS,
            SECBIT_NOROOT | SECBIT_NOROOT_LOCKED,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        return Err(PrivilegeError::SecureBits(std::io::Error::last_os_error()));
    }
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
