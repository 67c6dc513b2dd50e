//! Who is calling: the peer's credentials from the socket, and its process pinned by a pidfd.
//!
//! `SO_PEERCRED` gives the uid, gid and pid the caller had at `connect()`; `SO_PEERGROUPS`
//! its supplementary groups at that moment (no `/proc` race); `SO_PEERPIDFD` (Linux 6.5+) a
//! pidfd for exactly the process that connected, so a pid reused later can never be mistaken
//! for it. Older kernels fall back to `pidfd_open(pid)` followed by a liveness check.
//! The start time from `/proc/<pid>/stat` goes into the journal, so that after a daemon
//! restart a pid is trusted again only if it still names the same process.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const SO_PEERGROUPS: libc::c_int = 59;
const SO_PEERPIDFD: libc::c_int = 77;

/// The caller, identified.
#[derive(Debug)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    pub groups: Vec<u32>,
    pub pidfd: OwnedFd,
    pub start_time: u64,
}

impl Peer {
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

fn getsockopt_raw(sock: BorrowedFd<'_>, opt: libc::c_int, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` is valid for `len` bytes for the duration of the call, and the kernel
    // writes at most `len` bytes and updates `len`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(len as usize)
    }
}

fn peer_groups(sock: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut buf = vec![0u8; 4 * 64];
    loop {
        match getsockopt_raw(sock, SO_PEERGROUPS, &mut buf) {
            Ok(n) => {
                return Ok(buf[..n]
                    .chunks_exact(4)
                    .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                    .collect())
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < 4 * 65536 => {
                let len = buf.len() * 4;
                buf.resize(len, 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// `pidfd_open(2)`.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Whether the process behind a pidfd is still running (its pidfd is not yet readable).
pub fn alive(pidfd: BorrowedFd<'_>) -> bool {
    let mut fds = [nix::poll::PollFd::new(pidfd, nix::poll::PollFlags::POLLIN)];
    matches!(
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::ZERO),
        Ok(0)
    )
}

/// Field 22 of `/proc/<pid>/stat`: the process's start time in clock ticks since boot.
pub fn start_time(pid: i32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may contain spaces: skip past it.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| io::Error::other("malformed /proc/<pid>/stat"))?;
    rest.split_whitespace()
        .nth(19)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::other("malformed /proc/<pid>/stat"))
}

/// Pins a process recorded earlier: a pidfd for `pid`, if it is still the process that
/// started at `start`. `None` when that process is gone.
pub fn pin(pid: i32, start: u64) -> Option<OwnedFd> {
    let fd = pidfd_open(pid).ok()?;
    // The pidfd holds the pid: if the process is alive after we read its start time, the
    // start time we read is its own.
    let same = start_time(pid).ok()? == start;
    (same && alive(fd.as_fd())).then_some(fd)
}

/// Identifies the peer of a connected Unix socket.
pub fn identify(sock: BorrowedFd<'_>) -> io::Result<Peer> {
    let cred = nix::sys::socket::getsockopt(&sock, nix::sys::socket::sockopt::PeerCredentials)?;
    let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
    let groups = peer_groups(sock)?;
    let mut buf = [0u8; 4];
    let pidfd = match getsockopt_raw(sock, SO_PEERPIDFD, &mut buf) {
        Ok(4) => {
            // SAFETY: SO_PEERPIDFD installed a new fd in our table for us.
            unsafe { OwnedFd::from_raw_fd(i32::from_ne_bytes(buf)) }
        }
        // Only a kernel without SO_PEERPIDFD (before 6.5) falls back to the pid; any other
        // error means the caller is gone, and its pid may already name someone else.
        Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => pidfd_open(pid)?,
        Ok(_) => return Err(io::Error::other("short SO_PEERPIDFD answer")),
        Err(e) => return Err(e),
    };
    let start_time = start_time(pid)?;
    if !alive(pidfd.as_fd()) {
        return Err(io::Error::other("caller exited while connecting"));
    }
    Ok(Peer {
        uid,
        gid,
        pid,
        groups,
        pidfd,
        start_time,
    })
}

/// A caller's pidfd registered with the runtime, to wait for its exit.
#[derive(Debug)]
pub struct ExitWatch(tokio::io::unix::AsyncFd<OwnedFd>);

impl ExitWatch {
    /// Registers `pidfd` (which it keeps open). Must run inside the tokio runtime.
    pub fn new(pidfd: OwnedFd) -> io::Result<ExitWatch> {
        // SAFETY: the OwnedFd moved into the AsyncFd keeps the pidfd open, and refers to the
        // same description, for the AsyncFd's whole lifetime.
        Ok(ExitWatch(unsafe {
            tokio::io::unix::AsyncFd::register(pidfd)
        }?))
    }

    /// Waits until the process behind the pidfd exits (a pidfd becomes readable then).
    pub async fn exited(&self) -> io::Result<()> {
        let _ready = self.0.readable().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifies_itself_over_a_socketpair() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let p = identify(a.as_fd()).unwrap();
        assert_eq!(p.pid, std::process::id() as i32);
        assert_eq!(p.uid, nix::unistd::getuid().as_raw());
        assert!(alive(p.pidfd.as_fd()));
        assert_eq!(start_time(p.pid).unwrap(), p.start_time);
        assert!(pin(p.pid, p.start_time).is_some());
        assert!(pin(p.pid, p.start_time + 1).is_none());
    }

    #[test]
    fn a_dead_process_is_not_pinned() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let start = start_time(pid).unwrap();
        child.wait().unwrap();
        assert!(pin(pid, start).is_none());
    }
}
