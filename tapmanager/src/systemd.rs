//! What systemd hands a service and expects back, by hand (two small protocols): the socket of
//! socket activation (`LISTEN_FDS`/`LISTEN_PID`, the fds from 3) and readiness
//! (`sd_notify`: a datagram "READY=1" to `NOTIFY_SOCKET`). Run by hand, neither is set and
//! the daemon binds its own socket.

use std::io;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener};

const SD_LISTEN_FDS_START: RawFd = 3;

/// The listening socket systemd passed, if it passed exactly one and it is for this process.
/// The variables are removed, so no child inherits them.
pub fn listener() -> io::Result<Option<UnixListener>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    // Called before the runtime starts any thread: changing the environment is sound here.
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        std::env::remove_var(var);
    }
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.parse::<u32>().ok() != Some(std::process::id()) {
        return Ok(None); // meant for another process (a parent that did not clear them)
    }
    if fds != "1" {
        return Err(io::Error::other(format!(
            "systemd passed {fds} sockets; the tapmanager.socket unit must have exactly one \
             ListenStream="
        )));
    }
    let fd = SD_LISTEN_FDS_START;
    let is_unix_stream = nix::sys::socket::getsockname::<nix::sys::socket::UnixAddr>(fd).is_ok()
        && nix::sys::socket::getsockopt(
            // SAFETY: fd 3 is open (systemd's contract), borrowed only for this call.
            &unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
            nix::sys::socket::sockopt::SockType,
        )
        .is_ok_and(|t| t == nix::sys::socket::SockType::Stream);
    if !is_unix_stream {
        return Err(io::Error::other(
            "the socket systemd passed is not a Unix stream socket",
        ));
    }
    nix::fcntl::fcntl(
        // SAFETY: as above.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    // SAFETY: fd 3 is the passed socket, owned by nobody else in this process from here on.
    let listener = unsafe { UnixListener::from_raw_fd(fd) };
    // systemd passes it blocking; the runtime needs it not to be.
    listener.set_nonblocking(true)?;
    Ok(Some(listener))
}

/// Tells systemd (a `Type=notify` unit) the daemon's state; nothing when not under systemd.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| -> io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        } else {
            sock.send_to(state.as_bytes(), &path)?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}
