//! The macvtap kind (Slicer's macvtap mode): a macvtap on the network's lower device, whose
//! character device is the fd handed out; the guest takes its address from the LAN's own DHCP,
//! so tapmanager serves none. Its source MAC is guarded on the device's egress hook.
//!
//! Opening the device: `/dev/tap<ifindex>` names a device by an ifindex that is only unique
//! per network namespace (two namespaces' macvtaps can share it, and devtmpfs has one node), so
//! it is never used (DESIGN.md §6). Instead a thread enters a private mount namespace, mounts a
//! sysfs there (which shows the daemon's network namespace), reads the device's major:minor,
//! makes a node for it on a tmpfs of that namespace, and opens it once per queue; the node and
//! its tmpfs go with the thread. Not under the state dir: that is `/run/tapmanager`, and
//! systemd mounts `/run` `nodev`, where opening a device node is EACCES (the systemd tier,
//! tests/tests/vm_systemd.rs, found it). Needs CAP_NET_ADMIN, CAP_SYS_ADMIN (mount namespace,
//! sysfs, tmpfs) and CAP_MKNOD.

use super::{KindError, Kit};
use crate::config::{MacvtapMode, MacvtapNet};
use crate::net::link;
use crate::net::tap;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use protocol::{IfName, Interface};
use std::fs::OpenOptions;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::hostfail::Step;

/// Builds one macvtap NIC; returns its queue fds.
pub(crate) async fn build_port(
    kit: &Kit<'_>,
    mv: &MacvtapNet,
    iface: &Interface,
) -> Result<Vec<OwnedFd>, KindError> {
    let lower = link::index_of(&mv.lower)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::ENODEV))
        .step(|| format!("find the macvtap network's lower device {}", mv.lower))?;
    // The macvtap, down, carrying the guest's MAC (a macvtap's MAC is its guest's).
    kit.links
        .add_macvtap(&iface.ifname, lower, mode(mv.mode), iface.mac, mv.mtu)
        .await?;
    crate::failpoint::hit("attach:macvtap:link");
    // Not part of the host's IP configuration: no IPv6 from the LAN's advertisements.
    link::harden_guest_link(iface.ifname.as_str()).step(|| {
        format!(
            "keep macvtap {} out of the host's IP configuration",
            iface.ifname
        )
    })?;
    // Its MAC guard before it can carry a frame (the hook needs the device to exist).
    kit.firewall.add_macvtap_guard(&guard(iface, mv)).await?;
    crate::failpoint::hit("attach:macvtap:guard");
    let index = link::index_of(&iface.ifname)
        .ok_or_else(|| KindError::Gone(format!("macvtap {}", iface.ifname)))?;
    let (name, queues) = (iface.ifname.clone(), iface.queues);
    let fds = tokio::task::spawn_blocking(move || open_queues(&name, index, queues))
        .await?
        .step(|| format!("open macvtap {}'s character device", iface.ifname))?;
    crate::failpoint::hit("attach:macvtap:opened");
    kit.links
        .up(index, iface.ifname.as_str(), mv.mtu, None)
        .await?;
    Ok(fds)
}

/// A macvtap NIC's guard, by its network's `ipv6_sources`.
pub(crate) fn guard(
    iface: &Interface,
    mv: &crate::config::MacvtapNet,
) -> crate::net::firewall::MacvtapGuard {
    crate::net::firewall::MacvtapGuard {
        ifname: iface.ifname.clone(),
        mac: iface.mac,
        eui64_only: mv.ipv6_eui64_only,
    }
}

/// Adoption: the macvtap up with its MTU (its guard is rebuilt with every other at start).
pub(crate) async fn converge(kit: &Kit<'_>, iface: &Interface) -> Result<(), KindError> {
    let index = link::index_of(&iface.ifname)
        .ok_or_else(|| KindError::Gone(format!("macvtap {}", iface.ifname)))?;
    kit.links
        .up(index, iface.ifname.as_str(), iface.mtu, None)
        .await?;
    Ok(())
}

/// Undoes a macvtap NIC whose link is gone: its guard.
pub(crate) async fn teardown_port(kit: &Kit<'_>, iface: &Interface) -> bool {
    match kit.firewall.remove_macvtap_guard(&iface.ifname).await {
        Ok(()) => true,
        Err(e) => {
            tracing::error!(ifname = %iface.ifname, error = %crate::error_chain(&e), "cannot remove macvtap guard");
            false
        }
    }
}

/// A macvtap NIC: no address (the LAN's own DHCP gives one), and the MAC derived for the guest
/// unless the config allows the one asked for: a macvtap guest's MAC is on the LAN itself,
/// where another host's would draw its traffic.
pub(crate) fn plan(
    mv: &MacvtapNet,
    p: &super::PlanNic<'_>,
) -> Result<super::Addressing, protocol::Error> {
    if let Some(asked) = p.request.mac {
        let derived = p.derived_mac;
        if asked != derived && !mv.allowed_macs.allows(asked) {
            return Err(protocol::Error::new(
                protocol::ErrorCode::PermissionDenied,
                format!(
                    "network {} is a macvtap network, on the LAN itself: its guests use the MAC \
                     derived for them ({derived}, leave the MAC out) unless the config allows \
                     others (allowed_macs = [\"52:54:00\"] for a prefix, or [\"any\"])",
                    p.network
                ),
            ));
        }
    }
    Ok(super::Addressing {
        ipv6: None,
        address: None,
        gateway: None,
        mtu: mv.mtu,
        built: crate::state::NicState::Macvtap,
    })
}

fn mode(m: MacvtapMode) -> netlink_packet_route::link::MacVtapMode {
    use netlink_packet_route::link::MacVtapMode as M;
    match m {
        MacvtapMode::Bridge => M::Bridge,
        MacvtapMode::Vepa => M::Vepa,
        MacvtapMode::Private => M::Private,
        MacvtapMode::Passthru => M::Passthrough,
    }
}

/// Opens the macvtap's character device `queues` times, with vnet_hdr (see the module docs),
/// on a short-lived thread in a mount namespace of its own: there a sysfs shows the daemon's
/// network namespace, whatever /sys shows (a daemon entered into its namespace by `setns`
/// still sees the host's in `/sys`), and a tmpfs that allows device nodes holds the node.
fn open_queues(name: &IfName, index: u32, queues: u16) -> io::Result<Vec<OwnedFd>> {
    let path = format!("/sys/class/net/{name}/macvtap/tap{index}/dev");
    let name = name.clone();
    std::thread::Builder::new()
        .name("tm-sysfs".to_owned())
        .spawn(move || -> io::Result<Vec<OwnedFd>> {
            unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_FS)?;
            // Nothing mounted here may propagate back to the host's mount namespace.
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )?;
            // A tmpfs first: where `/sys` already is this namespace's sysfs (a daemon started
            // by `ip netns exec`, or in the host's namespace), mounting that same sysfs on it
            // again is refused (EBUSY: the same superblock on its own root); on the tmpfs it
            // is not. Then the sysfs as its superblock already is elsewhere, read-write on
            // every ordinary host (a read-only mount of a superblock mounted read-write is
            // EBUSY too, DESIGN.md §6), read-only where the host's is. Both are private to
            // this thread's mount namespace and gone with it.
            let hidden = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            mount(
                Some("tmpfs"),
                "/sys",
                Some("tmpfs"),
                hidden,
                Some("size=4k"),
            )
            .io_step(|| format!("mount a private tmpfs on /sys to read {path}"))?;
            match mount(Some("sysfs"), "/sys", Some("sysfs"), hidden, None::<&str>) {
                Err(nix::errno::Errno::EBUSY) => mount(
                    Some("sysfs"),
                    "/sys",
                    Some("sysfs"),
                    hidden | MsFlags::MS_RDONLY,
                    None::<&str>,
                ),
                r => r,
            }
            .io_step(|| format!("mount a private sysfs to read {path}"))?;
            let text = std::fs::read_to_string(&path).io_step(|| format!("read {path}"))?;
            let (ma, mi) = text
                .trim()
                .split_once(':')
                .ok_or_else(|| io::Error::other(format!("{path}: not major:minor")))?;
            let num = |s: &str| s.parse::<u64>().map_err(io::Error::other);
            let (major, minor) = (num(ma)?, num(mi)?);
            // The node, on a tmpfs of this namespace mounted without nodev (over the sysfs,
            // which is read): the host's filesystems may all be nodev (systemd's /run is).
            mount(
                Some("tmpfs"),
                "/sys",
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
                Some("size=4k,mode=0700"),
            )
            .io_step(|| format!("mount a private tmpfs for the device node of {name}"))?;
            let node = Path::new("/sys/macvtap");
            mknod(
                node,
                SFlag::S_IFCHR,
                Mode::S_IRUSR | Mode::S_IWUSR,
                makedev(major, minor),
            )
            .io_step(|| format!("make the device node {major}:{minor} of {name}"))?;
            (0..queues)
                .map(|_| {
                    let f = OpenOptions::new()
                        .read(true)
                        .write(true)
                        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
                        .open(node)?;
                    let fd: OwnedFd = f.into();
                    tap::set_macvtap_flags(&fd)?;
                    Ok(fd)
                })
                .collect()
        })?
        .join()
        .map_err(|_| io::Error::other("sysfs thread panicked"))?
}

/// Start-up: device nodes that daemons before this one, which made them under the state dir,
/// left there by crashing between `mknod` and their removal.
pub(crate) fn sweep(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with(".dev-") {
            let _ = std::fs::remove_file(e.path()); // best effort: it grants nothing to anyone
        }
    }
}
