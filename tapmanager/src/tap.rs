//! TAP devices: the only ioctl code in the daemon.
//!
//! rtnetlink cannot create a TAP with its queues, so this opens `/dev/net/tun` and uses
//! `TUNSETIFF` with the final flags: `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, plus
//! `IFF_MULTI_QUEUE` with one open per queue when more than one queue is asked for. The owner
//! is set so that only the caller's uid could ever re-attach to it (DESIGN.md §6). The TAP is
//! not persistent: it disappears when the last fd closes, and teardown deletes it explicitly
//! anyway, since a hypervisor holding an fd may have made it persistent. The exception is a
//! TAP asked for by name (Firecracker opens TAPs by name only): [`persist`].
//!
//! Needs CAP_NET_ADMIN in the calling thread's network namespace.

use protocol::IfName;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("cannot open /dev/net/tun")]
    OpenTun(#[source] io::Error),
    #[error("TUNSETIFF {0} failed")]
    SetIff(String, #[source] io::Error),
    #[error("TUNSETOWNER {0} failed")]
    SetOwner(String, #[source] io::Error),
    #[error("TUNSETGROUP {0} failed")]
    SetGroup(String, #[source] io::Error),
}

/// A freshly created TAP: its queue fds, in order.
#[derive(Debug)]
pub struct Tap {
    pub fds: Vec<OwnedFd>,
}

fn ifreq(name: &IfName, flags: libc::c_int) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (a char array and a union of integers); all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_str().bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    req
}

fn open_queue(name: &IfName, flags: libc::c_int) -> Result<OwnedFd, TapError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open("/dev/net/tun")
        .map_err(TapError::OpenTun)?;
    let mut req = ifreq(name, flags);
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req` is and outlives the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(TapError::SetIff(
            name.to_string(),
            io::Error::last_os_error(),
        ));
    }
    Ok(file.into())
}

/// Creates TAP `name` with `queues` queues, owned by `uid`/`gid`, and returns one fd per queue.
///
/// The fds are non-blocking, as hypervisors expect. The device is down and has no master yet:
/// [`crate::link`] finishes it.
pub fn create(name: &IfName, queues: u16, uid: u32, gid: u32) -> Result<Tap, TapError> {
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
    if queues > 1 {
        flags |= libc::IFF_MULTI_QUEUE;
    }
    let first = open_queue(name, flags)?;
    // SAFETY: TUNSETOWNER takes the uid by value; no memory is shared with the kernel.
    let rc = unsafe { libc::ioctl(first.as_raw_fd(), libc::TUNSETOWNER, uid as libc::c_ulong) };
    if rc < 0 {
        return Err(TapError::SetOwner(
            name.to_string(),
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: TUNSETGROUP takes the gid by value; no memory is shared with the kernel.
    let rc = unsafe { libc::ioctl(first.as_raw_fd(), libc::TUNSETGROUP, gid as libc::c_ulong) };
    if rc < 0 {
        return Err(TapError::SetGroup(
            name.to_string(),
            io::Error::last_os_error(),
        ));
    }
    let mut fds = vec![first];
    for _ in 1..queues {
        fds.push(open_queue(name, flags)?);
    }
    Ok(Tap { fds })
}

/// Makes the TAP outlive its fds (`TUNSETPERSIST`), for a hypervisor that opens it by name:
/// only its owner (uid and group, [`create`]) may attach to it then.
pub fn persist(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: TUNSETPERSIST takes its flag by value; no memory is shared with the kernel.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Turns on vnet_hdr for a freshly opened macvtap queue (a macvtap's `TUNSETIFF` takes flags
/// only: `IFF_TAP | IFF_NO_PI` plus the features; each open is one queue).
pub fn set_macvtap_flags(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req` is and outlives the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads back a TAP fd's flags (`TUNGETIFF`): lets tests check what a caller received.
pub fn flags(fd: &OwnedFd) -> io::Result<(String, libc::c_int)> {
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // SAFETY: TUNGETIFF writes one `struct ifreq` into `req`, which outlives the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let name: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    // SAFETY: TUNGETIFF filled `ifru_flags`.
    let flags = unsafe { req.ifr_ifru.ifru_flags } as libc::c_int;
    Ok((String::from_utf8_lossy(&name).into_owned(), flags))
}
