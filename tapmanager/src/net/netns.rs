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

/// The empty file a namespace is bind-mounted on: 0600, so that while it is still a plain
/// file no one else opens it.
fn placeholder(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map(drop)
}

impl NetNs {
    /// Creates a fresh namespace and pins it at `path` (a new file).
    pub fn create(path: &Path) -> io::Result<NetNs> {
        placeholder(path)?;
        // The thread ends right after: its namespace lives on through the fd, then the pin.
        let made = on_thread(|| {
            unshare(CloneFlags::CLONE_NEWNET)?;
            File::open("/proc/thread-self/ns/net")
        });
        pinned_or_undone(path, made.and_then(|ns| pin_file(&ns, path)))
    }

    /// Pins a namespace someone else made (a caller's, passed as an fd) at `path`, so the
    /// daemon can reach it again after a restart. Unpinning ([`NetNs::delete`]) does not end
    /// it while its own processes hold it.
    pub fn pin(fd: std::os::fd::BorrowedFd<'_>, path: &Path) -> io::Result<NetNs> {
        placeholder(path)?;
        pinned_or_undone(path, pin_fd(fd, path))
    }

    /// Opens a namespace pinned earlier. A pin made by an earlier daemon in the keeping mount
    /// namespace ([`PinPlace`]) that did not propagate here is opened there, and mounted here
    /// too, so that the daemon's children (CNI plugins) find it at its path.
    pub fn open(path: &Path) -> io::Result<NetNs> {
        let file = File::open(path)?;
        if is_nsfs(&file)? {
            return Ok(NetNs {
                path: path.to_owned(),
                file,
            });
        }
        let Some(keeper) = keeping_namespace() else {
            return Err(not_pinned(path));
        };
        let target = path.to_owned();
        let file = in_mount_namespace(keeper, move || File::open(&target))?;
        if !is_nsfs(&file)? {
            return Err(not_pinned(path));
        }
        bind(&file, path)?;
        Ok(NetNs {
            path: path.to_owned(),
            file,
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
        if let Some(keeper) = keeping_namespace() {
            let target = path.to_owned();
            in_mount_namespace(keeper, move || unmount(&target))?;
        }
        unmount(path)?;
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The pin at `path` once `pinned` succeeded; otherwise (or if it does not open) every
/// mount of it, in either mount namespace, and its placeholder are removed.
fn pinned_or_undone(path: &Path, pinned: io::Result<()>) -> io::Result<NetNs> {
    match pinned.and_then(|()| NetNs::open(path)) {
        Ok(ns) => Ok(ns),
        Err(e) => {
            let _ = NetNs::delete(path); // best effort: the error to report is `e`
            Err(e)
        }
    }
}

fn not_pinned(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!(
            "{} is not a pinned namespace (its mount is gone)",
            path.display()
        ),
    )
}

/// `NSFS_MAGIC` of `<linux/magic.h>`: the filesystem of namespace files.
const NSFS_MAGIC: i64 = 0x6e73_6673;

fn is_nsfs(file: &File) -> io::Result<bool> {
    let fs = nix::sys::statfs::fstatfs(file)?;
    Ok(fs.filesystem_type().0 as i64 == NSFS_MAGIC)
}

fn bind(ns: &File, path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let source = format!("/proc/self/fd/{}", ns.as_raw_fd());
    mount(
        Some(source.as_str()),
        path,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(Into::into)
}

fn unmount(path: &Path) -> io::Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn pin_fd(fd: std::os::fd::BorrowedFd<'_>, path: &Path) -> io::Result<()> {
    pin_file(&File::from(fd.try_clone_to_owned()?), path)
}

/// Mounts `ns` on `path` where it outlives this daemon (the keeping mount namespace, when the
/// daemon has a mount namespace of its own), and here, unless that mount propagated here.
fn pin_file(ns: &File, path: &Path) -> io::Result<()> {
    if let Some(keeper) = keeping_namespace() {
        let (ns, target) = (ns.try_clone()?, path.to_owned());
        in_mount_namespace(keeper, move || bind(&ns, &target))?;
        if is_nsfs(&File::open(path)?)? {
            return Ok(()); // propagated: the keeper's mount is seen here
        }
    }
    bind(ns, path)
}

/// Where the daemon's namespace pins are mounted so that they outlive it. A daemon started by
/// systemd or from a shell shares the host's mount namespace, and its pins stay when it stops.
/// One started by `ip netns exec` (or `unshare -m`) has a mount namespace of its own, which
/// dies with it: a pin mounted only there would end every isolated, masquerade and CNI guest's
/// namespace at a restart. Such a daemon mounts its pins in the mount namespace of pid 1 (or,
/// where that cannot be opened, of the process that started it), which must see the same
/// state directory.
#[derive(Debug)]
pub enum PinPlace {
    /// The daemon's own mount namespace is the host's.
    Here,
    /// The daemon's mount namespace is its own; pins go to this one's too.
    Keeper {
        ns: File,
        /// Whose it is: "pid 1" or "the parent process".
        whose: &'static str,
    },
    /// The daemon's mount namespace is its own, and no namespace that outlives it could be
    /// used: pins die with it (said once at start).
    Lost(String),
}

static PIN_PLACE: std::sync::OnceLock<PinPlace> = std::sync::OnceLock::new();

fn keeping_namespace() -> Option<&'static File> {
    match PIN_PLACE.get() {
        Some(PinPlace::Keeper { ns, .. }) => Some(ns),
        _ => None,
    }
}

/// Runs `f` on a fresh thread that has entered mount namespace `ns` (a thread of its own
/// file-system context: `setns` refuses a mount namespace to a thread that shares it).
fn in_mount_namespace<T: Send + 'static>(
    ns: &File,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let ns = ns.try_clone()?;
    on_thread(move || {
        unshare(CloneFlags::CLONE_FS)?;
        setns(ns.as_fd(), CloneFlags::CLONE_NEWNS)?;
        f()
    })
}

/// The parent's mount namespace, sure to be the parent's: a pidfd taken first and checked
/// alive after the open, so a parent that exited and whose pid was reused (by anyone's
/// `unshare -m`) cannot hand over another namespace.
fn parent_mount_namespace() -> io::Result<File> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let ppid = nix::unistd::getppid();
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new fd or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, ppid.as_raw(), 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    if nix::unistd::getppid() != ppid {
        return Err(io::Error::other("the parent exited"));
    }
    let ns = File::open(format!("/proc/{ppid}/ns/mnt"))?;
    use std::os::fd::AsRawFd;
    // SAFETY: signal 0 only checks that the pidfd's process still exists; no memory is passed.
    let alive = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            0,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if alive != 0 {
        return Err(io::Error::other("the parent exited"));
    }
    Ok(ns)
}

impl PinPlace {
    /// Finds where pins outlive the daemon: here, when this mount namespace is pid 1's (or
    /// the parent's, where pid 1's cannot be read); else that namespace, if it sees `dir`
    /// (the state directory, which must exist) as the same directory. Call before capabilities
    /// are dropped (it opens pid 1's namespace and enters another), then [`PinPlace::install`].
    pub fn learn(dir: &Path) -> PinPlace {
        let own = match File::open("/proc/self/ns/mnt").and_then(|f| identity(f.as_fd())) {
            Ok(id) => id,
            Err(e) => return PinPlace::Lost(format!("cannot read its own mount namespace: {e}")),
        };
        let here = match std::fs::metadata(dir) {
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            }
            Err(e) => return PinPlace::Lost(format!("{}: {e}", dir.display())),
        };
        let mut why = Vec::new();
        type Opener = fn() -> io::Result<File>;
        let candidates: [(&str, Opener); 2] = [
            ("pid 1", || File::open("/proc/1/ns/mnt")),
            ("the parent process", parent_mount_namespace),
        ];
        for (whose, open) in candidates {
            let ns = match open() {
                Ok(f) => f,
                Err(e) => {
                    why.push(format!("{whose}'s cannot be opened ({e})"));
                    continue;
                }
            };
            match identity(ns.as_fd()) {
                Ok(id) if id == own => return PinPlace::Here,
                Ok(_) => {}
                Err(e) => {
                    why.push(format!("{whose}'s: {e}"));
                    continue;
                }
            }
            let target = dir.to_owned();
            let seen = in_mount_namespace(&ns, move || {
                use std::os::unix::fs::MetadataExt;
                std::fs::metadata(&target).map(|m| (m.dev(), m.ino()))
            });
            match seen {
                Ok(id) if id == here => return PinPlace::Keeper { ns, whose },
                Ok(_) => why.push(format!("{whose}'s has another {}", dir.display())),
                Err(e) => why.push(format!("{whose}'s cannot be entered ({e})")),
            }
        }
        PinPlace::Lost(why.join("; "))
    }

    /// Whether pins need CAP_SYS_CHROOT (entering another mount namespace) while serving.
    pub fn needs_chroot(&self) -> bool {
        matches!(self, PinPlace::Keeper { .. })
    }

    /// Makes this the place of every pin from now on, and says where that is.
    pub fn install(self) {
        match &self {
            PinPlace::Here => {}
            PinPlace::Keeper { whose, .. } => tracing::info!(
                "running in a mount namespace of its own: namespace pins are mounted in {whose}'s too, so guests keep their namespaces across restarts"
            ),
            PinPlace::Lost(why) => tracing::warn!(
                why = %why,
                "running in a mount namespace of its own that no other shares: isolated, masquerade and CNI guests lose their namespaces when the daemon stops; start it in the host's mount namespace (nsenter --net, not ip netns exec) or give it CAP_SYS_CHROOT and CAP_SYS_PTRACE"
            ),
        }
        let _ = PIN_PLACE.set(self); // set once, at start
    }
}

/// The calling thread's network namespace as `dev:inode`, the form the state dir records.
pub fn own_identity() -> io::Result<String> {
    let ns = File::open("/proc/thread-self/ns/net")?;
    let (dev, ino) = identity(ns.as_fd())?;
    Ok(format!("{dev}:{ino}"))
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

/// The inode the kernel gives the initial network namespace since Linux 6.18
/// (`NET_NS_INIT_INO` in `<linux/nsfs.h>`); dynamically numbered namespaces start at
/// 0xF0000000, so no other namespace can have it.
const NET_NS_INIT_INO: u64 = 0xEFFF_FFF9;
/// The initial user namespace's fixed inode (`USER_NS_INIT_INO`): seeing it on our own user
/// namespace tells that this kernel numbers its initial namespaces this way.
const USER_NS_INIT_INO: u64 = 0xEFFF_FFFD;

/// What the daemon knows of the host's network namespace (pid 1's), learned at start-up
/// while it still has every capability: once CAP_SYS_PTRACE is gone, `/proc/1/ns/net` no
/// longer opens, and on some hosts (a Firecracker init as pid 1) not even full root opens it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostNetns {
    /// (device, inode) of pid 1's namespace, when it could be opened.
    pid1: Option<(u64, u64)>,
    /// Whether this kernel gives the initial namespace its fixed inode.
    fixed_init_inode: bool,
}

impl HostNetns {
    /// Reads pid 1's namespace and whether the kernel numbers initial namespaces. Call before
    /// dropping capabilities.
    pub fn learn() -> HostNetns {
        let pid1 = File::open("/proc/1/ns/net")
            .and_then(|f| identity(f.as_fd()))
            .ok();
        let fixed_init_inode = std::fs::metadata("/proc/self/ns/user")
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == USER_NS_INIT_INO);
        HostNetns {
            pid1,
            fixed_init_inode,
        }
    }

    /// Whether namespace `id` is the host's: `Some(true)` or `Some(false)`, or `None` when
    /// the host's cannot be told (pid 1's unreadable on a kernel without fixed inodes).
    pub fn is_host(&self, id: (u64, u64)) -> Option<bool> {
        if self.pid1 == Some(id) || (self.fixed_init_inode && id.1 == NET_NS_INIT_INO) {
            return Some(true);
        }
        (self.pid1.is_some() || self.fixed_init_inode).then_some(false)
    }
}

/// The one-daemon-per-namespace lock: an exclusive `flock` on
/// `<dir>/net-<dev>-<inode>.lock`, named by the daemon's network namespace, in a directory
/// only root may write. (An abstract Unix socket, which is per namespace, was the lock before;
/// any local user could bind its name first and keep every daemon from starting.)
#[derive(Debug)]
pub struct NetnsLock {
    path: PathBuf,
    _lock: nix::fcntl::Flock<File>,
}

/// Where the namespace locks live: `/run` is root's, so no one else can make this first.
pub const LOCK_DIR: &str = "/run/tapmanager-netns";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another tapmanager already runs in this network namespace (its nft tables and links would collide)")]
    Taken,
    #[error("lock directory {}: {why}; remove it and start again", .path.display())]
    UnsafeDir { path: PathBuf, why: String },
    #[error("cannot lock {}", .0.display())]
    Io(PathBuf, #[source] io::Error),
}

impl NetnsLock {
    /// Takes the lock of the calling thread's network namespace, under `dir` (made 0700).
    pub fn take(dir: &Path) -> Result<NetnsLock, LockError> {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
        let io_err = |p: &Path| {
            let p = p.to_owned();
            move |e: io::Error| LockError::Io(p, e)
        };
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(io_err(dir)(e)),
            _ => {}
        }
        let meta = std::fs::symlink_metadata(dir).map_err(io_err(dir))?;
        let euid = nix::unistd::geteuid().as_raw();
        let why = if !meta.is_dir() {
            Some("not a directory".to_owned())
        } else if meta.uid() != euid {
            Some(format!("owned by uid {}, not {euid}", meta.uid()))
        } else if meta.mode() & 0o022 != 0 {
            Some(format!(
                "writable by others (mode {:o})",
                meta.mode() & 0o7777
            ))
        } else {
            None
        };
        if let Some(why) = why {
            return Err(LockError::UnsafeDir {
                path: dir.to_owned(),
                why,
            });
        }
        let ns = File::open("/proc/thread-self/ns/net").map_err(io_err(dir))?;
        let (dev, ino) = identity(ns.as_fd()).map_err(io_err(dir))?;
        let path = dir.join(format!("net-{dev}-{ino}.lock"));
        loop {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(io_err(&path))?;
            let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
                .map_err(|(_, errno)| match errno {
                nix::errno::Errno::EWOULDBLOCK => LockError::Taken,
                e => LockError::Io(path.clone(), e.into()),
            })?;
            // A daemon stopping unlinks its file while it holds the lock: if ours was unlinked
            // between our open and our lock, lock the new one instead.
            let held = lock.metadata().map_err(io_err(&path))?;
            match std::fs::symlink_metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok(NetnsLock { path, _lock: lock });
                }
                _ => continue,
            }
        }
    }
}

impl Drop for NetnsLock {
    fn drop(&mut self) {
        // Unlinked while still locked, so no other daemon can hold a lock on this file.
        let _ = std::fs::remove_file(&self.path); // gone already is fine
    }
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    #[test]
    fn a_second_lock_of_the_same_namespace_is_refused_and_freed_on_drop() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (the lock directory must be root's)");
            return;
        }
        let dir = std::env::temp_dir().join(format!("tm-lock-test-{}", std::process::id()));
        let first = NetnsLock::take(&dir).unwrap();
        assert!(matches!(NetnsLock::take(&dir), Err(LockError::Taken)));
        drop(first);
        let again = NetnsLock::take(&dir).unwrap();
        drop(again);
        std::fs::remove_dir(&dir).unwrap();
    }

    #[test]
    fn a_lock_directory_others_can_write_is_refused() {
        let dir = std::env::temp_dir().join(format!("tm-lock-open-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        let r = NetnsLock::take(&dir);
        std::fs::remove_dir(&dir).unwrap();
        assert!(
            matches!(&r, Err(LockError::UnsafeDir { why, .. }) if why.contains("writable")),
            "{r:?}"
        );
    }

    #[test]
    fn the_host_namespace_is_told_by_pid_1_or_by_the_fixed_inode() {
        let by_pid1 = HostNetns {
            pid1: Some((4, 100)),
            fixed_init_inode: false,
        };
        assert_eq!(by_pid1.is_host((4, 100)), Some(true));
        assert_eq!(by_pid1.is_host((4, 101)), Some(false));
        let by_inode = HostNetns {
            pid1: None,
            fixed_init_inode: true,
        };
        assert_eq!(by_inode.is_host((4, NET_NS_INIT_INO)), Some(true));
        assert_eq!(by_inode.is_host((4, 0xF000_0010)), Some(false));
        let unknown = HostNetns {
            pid1: None,
            fixed_init_inode: false,
        };
        assert_eq!(unknown.is_host((4, 0xF000_0010)), None);
    }
}
