//! The journal: one JSON file per attachment under `<state_dir>/attachments/`, written before
//! the caller gets its fds, removed only after teardown has finished. It is the daemon's only
//! persisted state (IPAM reads the addresses in use from it), so a daemon killed at any point
//! finds on restart everything it may have to adopt or undo.
//!
//! Writes are atomic: write a temporary file, fsync it, rename it over the old one, fsync the
//! directory. The state directory is locked (`flock`) by the one daemon that uses it.

use protocol::{Attachment, IfName, Interface, VmId};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot create state directory {}", .0.display())]
    CreateDir(PathBuf, #[source] io::Error),
    #[error("another tapmanager already uses state directory {}", .0.display())]
    Locked(PathBuf),
    #[error("cannot lock state directory {}", .0.display())]
    Lock(PathBuf, #[source] io::Error),
    #[error("cannot write journal entry {}", .0.display())]
    Write(PathBuf, #[source] io::Error),
    #[error("cannot remove journal entry {}", .0.display())]
    Remove(PathBuf, #[source] io::Error),
    #[error("cannot read journal {}", .0.display())]
    Read(PathBuf, #[source] io::Error),
    #[error("state directory {}: {why}; fix it (chown root, chmod 0755) or choose another state_dir", .path.display())]
    Unsafe { path: PathBuf, why: String },
}

/// The state directory's subdirectories: journal, namespace pins, saved pod interfaces and
/// the CNI cache. Each is 0700 whatever the umask, so no one else can reach a pin (a pinned
/// namespace stays alive while anyone holds it open) or read a journal entry.
pub const PRIVATE_SUBDIRS: [&str; 5] = ["attachments", "netns", "pods", "cni", "bridges"];

/// The mark that the daemon made bridge `name` (and `tapmanager down` may delete it).
pub fn made_bridge(state_dir: &Path, name: &IfName) -> PathBuf {
    state_dir.join("bridges").join(name.as_str())
}

/// Creates `dir` (and missing parents) and makes it 0700, also when it was there already
/// with a looser mode (a daemon of an older version, or run by hand with umask 022).
pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Refuses a state directory someone other than the daemon's user owns or may write: they
/// could plant journal entries or pins.
fn check_owner_and_mode(state_dir: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(state_dir)
        .map_err(|e| StateError::CreateDir(state_dir.to_owned(), e))?;
    let euid = nix::unistd::geteuid().as_raw();
    let why = if !meta.is_dir() {
        Some("not a directory (a symlink?)".to_owned())
    } else if meta.uid() != euid {
        Some(format!(
            "owned by uid {}, not the daemon's {euid}",
            meta.uid()
        ))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "writable by group or others (mode {:o})",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match why {
        Some(why) => Err(StateError::Unsafe {
            path: state_dir.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// One attachment as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub vm: VmId,
    pub uid: u32,
    pub pid: i32,
    /// The caller's start time (`/proc/<pid>/stat` field 22), so a reused pid is not mistaken
    /// for the caller after a restart.
    pub pid_start: u64,
    pub created: u64,
    pub interfaces: Vec<Interface>,
    /// Masquerade NICs: the namespace side of the host-to-namespace /30, by host link name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transit: Vec<(protocol::IfName, std::net::Ipv4Addr)>,
    /// Pod NICs: the interface of the caller's namespace each took over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taken: Vec<Taken>,
    /// Isolated and masquerade NICs: the binding each was built with (`None`: routed), so a
    /// guest adopted after the network's `binding` changed keeps the rules it was built for.
    /// Absent in journals written before it was kept: the config's binding then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bindings: Vec<(protocol::IfName, Option<crate::config::VethBinding>)>,
}

/// One interface of a caller's namespace that a NIC took over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Taken {
    /// The NIC.
    pub ifname: protocol::IfName,
    /// The namespace: (device, inode) of its nsfs file.
    pub netns: (u64, u64),
    /// The pod's interface.
    pub name: protocol::IfName,
}

impl Record {
    /// The binding an isolated NIC was built with, if the journal says.
    pub fn binding_of(
        &self,
        ifname: &protocol::IfName,
    ) -> Option<Option<crate::config::VethBinding>> {
        self.bindings
            .iter()
            .find(|(n, _)| n == ifname)
            .map(|(_, b)| *b)
    }

    /// The transit address of a masquerade NIC.
    pub fn transit_of(&self, ifname: &protocol::IfName) -> Option<std::net::Ipv4Addr> {
        self.transit
            .iter()
            .find(|(n, _)| n == ifname)
            .map(|(_, a)| *a)
    }

    /// The pod interface a NIC took over.
    pub fn taken_of(&self, ifname: &protocol::IfName) -> Option<&protocol::IfName> {
        self.taken
            .iter()
            .find(|t| t.ifname == *ifname)
            .map(|t| &t.name)
    }

    pub fn attachment(&self) -> Attachment {
        Attachment {
            vm: self.vm.clone(),
            uid: self.uid,
            pid: self.pid,
            created: self.created,
            interfaces: self.interfaces.clone(),
        }
    }
}

/// Writes `value` as JSON to `path` atomically: a hidden temporary file (0600) beside it,
/// fsync, rename over, fsync the directory (created if missing). The journal, the CNI cache
/// and the saved pod interfaces all write this way, so a crash leaves the old or the new file.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("no parent directory"))?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp"));
    let data = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&data)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Reads a JSON file written by [`write_json`]; an absent one is `None`.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(io::Error::other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes a file; an absent one is already removed.
pub fn remove_file(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The journal directory, held locked for the daemon's lifetime.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    _lock: nix::fcntl::Flock<File>,
}

impl Journal {
    /// Creates the state directory (0700) if needed, checks that no one else owns or may
    /// write it, makes its subdirectories private ([`PRIVATE_SUBDIRS`]) and takes its lock.
    pub fn open(state_dir: &Path) -> Result<Journal, StateError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|e| StateError::CreateDir(state_dir.to_owned(), e))?;
        check_owner_and_mode(state_dir)?;
        for sub in PRIVATE_SUBDIRS {
            let d = state_dir.join(sub);
            private_dir(&d).map_err(|e| StateError::CreateDir(d, e))?;
        }
        let dir = state_dir.join("attachments");
        let lock_path = state_dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| StateError::Lock(lock_path.clone(), e))?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| match errno {
                nix::errno::Errno::EWOULDBLOCK => StateError::Locked(state_dir.to_owned()),
                e => StateError::Lock(lock_path.clone(), e.into()),
            })?;
        Ok(Journal { dir, _lock: lock })
    }

    fn path(&self, uid: u32, vm: &VmId) -> PathBuf {
        self.dir.join(format!("{uid}-{vm}.json"))
    }

    /// Atomically writes (or replaces) one record.
    pub fn write(&self, r: &Record) -> Result<(), StateError> {
        let path = self.path(r.uid, &r.vm);
        write_json(&path, r).map_err(|e| StateError::Write(path.clone(), e))
    }

    /// Removes one record; an absent record is already removed.
    pub fn remove(&self, uid: u32, vm: &VmId) -> Result<(), StateError> {
        let path = self.path(uid, vm);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StateError::Remove(path, e)),
        }
    }

    /// Every record. Unreadable or corrupt entries (a torn temp file cannot be one: temp files
    /// are skipped) are reported and skipped, so one bad file does not stop the daemon.
    pub fn load(&self) -> Result<Vec<Record>, StateError> {
        let mut out = Vec::new();
        let entries = fs::read_dir(&self.dir).map_err(|e| StateError::Read(self.dir.clone(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| StateError::Read(self.dir.clone(), e))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                // An interrupted write; the rename never happened, so nothing refers to it.
                let _ = fs::remove_file(&path); // best effort: a leftover temp file is harmless
                continue;
            }
            match fs::read(&path).map(|d| serde_json::from_slice::<Record>(&d)) {
                Ok(Ok(r)) => out.push(r),
                Ok(Err(e)) => {
                    tracing::error!(path = %path.display(), error = %e, "corrupt journal entry skipped")
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "unreadable journal entry skipped")
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(vm: &str) -> Record {
        Record {
            vm: vm.parse().unwrap(),
            uid: 1000,
            pid: 42,
            pid_start: 7,
            created: 1,
            interfaces: vec![Interface {
                network: "default".parse().unwrap(),
                ifname: "tm0123456789".parse().unwrap(),
                mac: "02:00:00:00:00:01".parse().unwrap(),
                address: Some(("10.0.0.2".parse().unwrap(), 24)),
                gateway: Some("10.0.0.1".parse().unwrap()),
                mtu: 1500,
                queues: 1,
                vnet_hdr: true,
                by_name: false,
                dns: Vec::new(),
                search: Vec::new(),
                routes: Vec::new(),
            }],
            transit: Vec::new(),
            taken: Vec::new(),
            bindings: Vec::new(),
        }
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "tm-state-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d); // a leftover from an earlier run of this test
        d
    }

    #[test]
    fn write_load_remove() {
        let dir = tempdir();
        let j = Journal::open(&dir).unwrap();
        j.write(&record("a")).unwrap();
        j.write(&record("b")).unwrap();
        let mut got = j.load().unwrap();
        got.sort_by(|x, y| x.vm.cmp(&y.vm));
        assert_eq!(got, vec![record("a"), record("b")]);
        j.remove(1000, &"a".parse().unwrap()).unwrap();
        j.remove(1000, &"a".parse().unwrap()).unwrap();
        assert_eq!(j.load().unwrap(), vec![record("b")]);
        drop(j);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn second_daemon_is_locked_out_and_corrupt_entries_are_skipped() {
        let dir = tempdir();
        let j = Journal::open(&dir).unwrap();
        assert!(matches!(Journal::open(&dir), Err(StateError::Locked(_))));
        fs::write(dir.join("attachments/0-x.json"), b"{not json").unwrap();
        fs::write(dir.join("attachments/.0-y.tmp"), b"partial").unwrap();
        j.write(&record("ok")).unwrap();
        assert_eq!(j.load().unwrap(), vec![record("ok")]);
        assert!(!dir.join("attachments/.0-y.tmp").exists());
        drop(j);
        fs::remove_dir_all(&dir).unwrap();
    }
}
