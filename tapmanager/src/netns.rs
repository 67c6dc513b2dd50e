//! Per-VM network namespaces: created on a short-lived thread (`unshare` and `setns` change
//! the calling thread only, DESIGN.md §6), kept alive by a bind mount under the daemon's
//! state directory, entered only from dedicated threads ([`NetNs::run_in`]), never from a
//! tokio worker. Sockets, TAP fds and netlink connections opened inside keep the namespace.
//!
//! Needs CAP_SYS_ADMIN (unshare, setns, mount).

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

/// A named network namespace: a bind-mounted nsfs file.
#[derive(Debug)]
pub struct NetNs {
    path: PathBuf,
    file: File,
}

fn on_thread<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    // Builder, not thread::spawn: running out of threads is an error to report, not a panic.
    std::thread::Builder::new()
        .name("tm-netns".to_owned())
        .spawn(f)?
        .join()
        .map_err(|_| io::Error::other("namespace thread panicked"))?
}

impl NetNs {
    /// Creates a fresh namespace and pins it at `path` (a new file).
    pub fn create(path: &Path) -> io::Result<NetNs> {
        File::create(path)?;
        let target = path.to_owned();
        let made = on_thread(move || {
            // The thread ends right after: its namespace lives on through the bind mount.
            unshare(CloneFlags::CLONE_NEWNET)?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )?;
            Ok(())
        });
        if let Err(e) = made {
            let _ = std::fs::remove_file(path); // the empty placeholder; nothing else exists
            return Err(e);
        }
        NetNs::open(path)
    }

    /// Pins a namespace someone else made (a caller's, passed as an fd) at `path`, so the
    /// daemon can reach it again after a restart. Unpinning ([`NetNs::delete`]) does not end
    /// it while its own processes hold it.
    pub fn pin(fd: std::os::fd::BorrowedFd<'_>, path: &Path) -> io::Result<NetNs> {
        use std::os::fd::AsRawFd;
        File::create(path)?;
        let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
        if let Err(e) = mount(
            Some(source.as_str()),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        ) {
            let _ = std::fs::remove_file(path); // the empty placeholder; nothing else exists
            return Err(e.into());
        }
        NetNs::open(path)
    }

    /// Opens a namespace pinned earlier.
    pub fn open(path: &Path) -> io::Result<NetNs> {
        Ok(NetNs {
            path: path.to_owned(),
            file: File::open(path)?,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The namespace's fd, for `IFLA_NET_NS_FD`.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Runs `f` on a fresh thread inside this namespace and returns what it made.
    pub fn run_in<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let fd = self.file.try_clone()?;
        on_thread(move || {
            setns(fd.as_fd(), CloneFlags::CLONE_NEWNET)?;
            f()
        })
    }

    /// Unpins and removes a namespace; the kernel frees it (and every link in it) once nothing
    /// holds it. An absent one is already deleted.
    pub fn delete(path: &Path) -> io::Result<()> {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(e.into()),
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// A namespace's identity: (device, inode) of its nsfs file.
pub fn identity(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let st = nix::sys::stat::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// What a caller's namespace fd is, from the kernel's side: whether it is a network
/// namespace, and the uid that owns its user namespace.
pub fn owner_of_netns(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<u32> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the fd's namespace.
    let kind = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) };
    if kind < 0 {
        return Err(io::Error::other(format!(
            "not a namespace fd ({})",
            io::Error::last_os_error()
        )));
    }
    if kind != libc::CLONE_NEWNET {
        return Err(io::Error::other("not a network namespace"));
    }
    // SAFETY: NS_GET_USERNS takes no argument and returns a new fd, owned below.
    let userns = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_USERNS) };
    if userns < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    let userns = unsafe { OwnedFd::from_raw_fd(userns) };
    let mut uid: libc::uid_t = 0;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t to the pointer, which is valid and aligned.
    let rc = unsafe { libc::ioctl(userns.as_raw_fd(), NS_GET_OWNER_UID, &mut uid) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(uid)
}
