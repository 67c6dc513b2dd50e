//! Putting the received fds at fixed numbers for the hypervisor, and nothing else open.
//!
//! The fds arrive close-on-exec at whatever numbers the kernel chose. They are first moved
//! above every target number (so no target overwrites a source), then `dup2`'d to 3, 4, ...
//! in order (`dup2` leaves the new fd without close-on-exec: exactly those are inherited), and
//! every other fd above them is closed, so the hypervisor inherits stdio and its TAPs only.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// The first fd number handed to the hypervisor.
pub const FIRST_FD: RawFd = 3;

/// Places `fds` at `FIRST_FD..` and closes every other fd above 2. Returns the numbers used.
/// Call right before exec: afterwards the process holds nothing else.
pub fn place(fds: Vec<OwnedFd>) -> io::Result<Vec<RawFd>> {
    let n = fds.len() as RawFd;
    let floor = FIRST_FD + n;
    // Step 1: move every fd at or above `floor`, close-on-exec, so targets are free.
    let high: Vec<OwnedFd> = fds
        .iter()
        .map(|f| {
            let r = nix::fcntl::fcntl(f, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(floor))?;
            // SAFETY: F_DUPFD_CLOEXEC returned a new fd that we now own.
            Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(r) })
        })
        .collect::<Result<_, nix::Error>>()?;
    drop(fds);
    // Step 2: the targets, inheritable.
    let mut out = Vec::new();
    for (i, f) in high.iter().enumerate() {
        let target = FIRST_FD + i as RawFd;
        // SAFETY: dup2 onto a number no Rust object owns (every fd below `floor` except stdio
        // was closed or moved above it in step 1 and the close below); the new fd is
        // deliberately left unowned, for the hypervisor.
        if unsafe { libc::dup2(f.as_raw_fd(), target) } < 0 {
            return Err(io::Error::last_os_error());
        }
        out.push(target);
    }
    drop(high);
    // Step 3: nothing else crosses the exec.
    // SAFETY: close_range closes fds by number; the process is about to exec and no Rust
    // object we still use owns an fd at or above `floor`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            floor as libc::c_uint,
            libc::c_uint::MAX,
            0,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(out)
}
