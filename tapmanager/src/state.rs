//! The journal: one JSON file per attachment under `<state_dir>/attachments/`, written before
//! the caller gets its fds, removed only after teardown has finished. It is the daemon's only
//! persisted state (IPAM reads the addresses in use from it), so a daemon killed at any point
//! finds on restart everything it may have to adopt or undo.
//!
//! Writes are atomic: write a temporary file, fsync it, rename it over the old one, fsync the
//! directory. The state directory is locked (`flock`) by the one daemon that uses it.

use crate::config::VethBinding;
pub use crate::kinds::NicState;
use protocol::{Attachment, IfName, Interface, VmId};
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
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

/// One attachment as journaled. Written with the previous release's view beside it (see
/// [`Record`]'s `Serialize`), so a daemon downgraded to that release still reads the entry and
/// keeps its guest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Record {
    pub vm: VmId,
    pub uid: u32,
    pub pid: i32,
    /// The caller's start time (`/proc/<pid>/stat` field 22), so a reused pid is not mistaken
    /// for the caller after a restart.
    pub pid_start: u64,
    pub created: u64,
    /// Each NIC, in the caller's order, with what was built for it.
    pub nics: Vec<Nic>,
    /// A Release was answered: written before the answer, so a restart after a crash
    /// mid-teardown finishes it instead of adopting the attachment of a caller still alive.
    #[serde(default)]
    pub releasing: bool,
}

/// One NIC of an attachment: what the caller is told, and what the daemon built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub iface: Interface,
    pub built: NicState,
}

impl Record {
    /// The NICs as the caller sees them.
    pub fn interfaces(&self) -> impl Iterator<Item = &Interface> {
        self.nics.iter().map(|n| &n.iface)
    }

    pub fn attachment(&self) -> Attachment {
        Attachment {
            vm: self.vm.clone(),
            uid: self.uid,
            pid: self.pid,
            created: self.created,
            interfaces: self.interfaces().cloned().collect(),
        }
    }
}

impl Serialize for Record {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        /// The entry on disk: the current form, and the previous release's side tables (which
        /// it reads, ignoring `nics`; this release reads `nics` and ignores them).
        #[derive(Serialize)]
        struct OnDisk<'a> {
            vm: &'a VmId,
            uid: u32,
            pid: i32,
            pid_start: u64,
            created: u64,
            nics: &'a [Nic],
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            releasing: bool,
            interfaces: Vec<&'a Interface>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            transit: Vec<(&'a IfName, Ipv4Addr)>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            taken: Vec<TakenV1>,
            #[serde(skip_serializing_if = "Vec::is_empty")]
            bindings: Vec<(&'a IfName, Option<VethBinding>)>,
        }
        let (mut transit, mut taken, mut bindings) = (Vec::new(), Vec::new(), Vec::new());
        for nic in &self.nics {
            let name = &nic.iface.ifname;
            match &nic.built {
                NicState::Isolated { binding } => bindings.push((name, *binding)),
                NicState::Masquerade {
                    binding,
                    transit: t,
                } => {
                    bindings.push((name, *binding));
                    transit.push((name, *t));
                }
                NicState::Pod {
                    netns,
                    taken: interface,
                    ..
                } => taken.push(TakenV1 {
                    ifname: name.clone(),
                    netns: *netns,
                    name: interface.clone(),
                }),
                _ => {}
            }
        }
        OnDisk {
            vm: &self.vm,
            uid: self.uid,
            pid: self.pid,
            pid_start: self.pid_start,
            created: self.created,
            nics: &self.nics,
            releasing: self.releasing,
            interfaces: self.interfaces().collect(),
            transit,
            taken,
            bindings,
        }
        .serialize(s)
    }
}

/// A journal entry as read: in the current form, or in the form of the release before the
/// NICs said what was built for them (side tables per kind), which start-up migrates
/// (`kinds::migrate`) and writes back in the current form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Current(Record),
    V1(RecordV1),
}

impl Stored {
    /// An entry's JSON: the current form if it has `nics`, else the previous release's.
    pub fn parse(data: &[u8]) -> serde_json::Result<Stored> {
        let value: serde_json::Value = serde_json::from_slice(data)?;
        if value.get("nics").is_some() {
            serde_json::from_value(value).map(Stored::Current)
        } else {
            serde_json::from_value(value).map(Stored::V1)
        }
    }
}

/// The journal entry of the release before this form (0.1.0 up to commit c9ff4ac):
/// interfaces, and beside them what some kinds built, by interface name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordV1 {
    pub vm: VmId,
    pub uid: u32,
    pub pid: i32,
    pub pid_start: u64,
    pub created: u64,
    pub interfaces: Vec<Interface>,
    /// Masquerade NICs: the namespace side of the host-to-namespace /30.
    #[serde(default)]
    pub transit: Vec<(IfName, Ipv4Addr)>,
    /// Pod NICs: the interface of the caller's namespace each took over.
    #[serde(default)]
    pub taken: Vec<TakenV1>,
    /// Isolated and masquerade NICs: the binding each was built with (absent in the oldest
    /// journals: the config's then).
    #[serde(default)]
    pub bindings: Vec<(IfName, Option<VethBinding>)>,
}

/// A pod NIC's taken interface in a [`RecordV1`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakenV1 {
    pub ifname: IfName,
    pub netns: (u64, u64),
    pub name: IfName,
}

impl RecordV1 {
    /// The current form, each NIC's state told by `state_of` (which knows the config).
    pub fn migrate(self, state_of: impl Fn(&RecordV1, &Interface) -> NicState) -> Record {
        let nics = self
            .interfaces
            .iter()
            .map(|i| Nic {
                iface: i.clone(),
                built: state_of(&self, i),
            })
            .collect();
        Record {
            vm: self.vm,
            uid: self.uid,
            pid: self.pid,
            pid_start: self.pid_start,
            created: self.created,
            nics,
            releasing: false,
        }
    }

    /// The binding an isolated NIC was built with, if the journal says.
    pub fn binding_of(&self, ifname: &IfName) -> Option<Option<VethBinding>> {
        self.bindings
            .iter()
            .find(|(n, _)| n == ifname)
            .map(|(_, b)| *b)
    }

    /// The transit address of a masquerade NIC.
    pub fn transit_of(&self, ifname: &IfName) -> Option<Ipv4Addr> {
        self.transit
            .iter()
            .find(|(n, _)| n == ifname)
            .map(|(_, a)| *a)
    }

    /// The pod interface a NIC took over.
    pub fn taken_of(&self, ifname: &IfName) -> Option<&TakenV1> {
        self.taken.iter().find(|t| t.ifname == *ifname)
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
    pub fn load(&self) -> Result<Vec<Stored>, StateError> {
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
            match fs::read(&path).map(|d| Stored::parse(&d)) {
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

/// A NIC and a record for unit tests: one queue, MTU 1500, no address; tests set the rest.
#[cfg(test)]
pub(crate) mod fixture {
    use super::*;

    pub(crate) fn nic(network: &str, ifname: &str, built: NicState) -> Nic {
        Nic {
            iface: Interface {
                network: network.parse().unwrap(),
                ifname: ifname.parse().unwrap(),
                mac: protocol::MacAddr([0x02, 0, 0, 0, 0, 9]),
                address: None,
                gateway: None,
                mtu: 1500,
                queues: 1,
                vnet_hdr: true,
                by_name: false,
                dns: Vec::new(),
                search: Vec::new(),
                routes: Vec::new(),
                ipv6: None,
            },
            built,
        }
    }

    pub(crate) fn record(vm: &str, nics: Vec<Nic>) -> Record {
        Record {
            vm: vm.parse().unwrap(),
            uid: 1000,
            pid: 42,
            pid_start: 7,
            created: 1,
            nics,
            releasing: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(vm: &str) -> Record {
        let mut nic = fixture::nic("default", "tm0123456789", NicState::Bridge);
        nic.iface.address = Some(("10.0.0.2".parse().unwrap(), 24));
        nic.iface.gateway = Some("10.0.0.1".parse().unwrap());
        fixture::record(vm, vec![nic])
    }

    fn current(s: Vec<Stored>) -> Vec<Record> {
        s.into_iter()
            .map(|s| match s {
                Stored::Current(r) => r,
                Stored::V1(r) => panic!("read back as the old form: {r:?}"),
            })
            .collect()
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
        let released = Record {
            releasing: true,
            ..record("b")
        };
        j.write(&released).unwrap();
        let mut got = current(j.load().unwrap());
        got.sort_by(|x, y| x.vm.cmp(&y.vm));
        assert_eq!(got, vec![record("a"), released]);
        j.write(&record("b")).unwrap();
        // An entry that is not being released says nothing of it, as before the field.
        let text = fs::read_to_string(dir.join("attachments/1000-b.json")).unwrap();
        assert!(!text.contains("releasing"), "{text}");
        j.remove(1000, &"a".parse().unwrap()).unwrap();
        j.remove(1000, &"a".parse().unwrap()).unwrap();
        assert_eq!(current(j.load().unwrap()), vec![record("b")]);
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
        assert_eq!(current(j.load().unwrap()), vec![record("ok")]);
        assert!(!dir.join("attachments/.0-y.tmp").exists());
        drop(j);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// An entry as the previous release wrote it (captured from its daemon: a bridge, an
    /// isolated tc-redirect and a masquerade NIC of one guest), read as the old form and
    /// migrated with what each side table said; a pod NIC's side table in the form that
    /// release wrote it (`Taken`: ifname, netns, name).
    #[test]
    fn a_journal_entry_of_the_previous_release_is_read_and_migrated() {
        let mut old: serde_json::Value =
            serde_json::from_str(include_str!("testdata/journal-v1.json")).unwrap();
        let mut pod = old["interfaces"][0].clone();
        pod["network"] = "pods".into();
        pod["ifname"] = "tm00000000bb".into();
        pod["routes"] = serde_json::json!([["10.96.0.0", 12, "10.244.0.1"]]);
        old["interfaces"].as_array_mut().unwrap().push(pod);
        old["taken"] = serde_json::json!([
            {"ifname": "tm00000000bb", "netns": [4, 4026532999u64], "name": "eth0"}
        ]);
        let Stored::V1(v1) = Stored::parse(&serde_json::to_vec(&old).unwrap()).unwrap() else {
            panic!("an old entry read as the current form");
        };
        let v1_again = v1.clone();
        let migrated = v1.migrate(|r, i| match i.network.as_str() {
            "iso" => NicState::Isolated {
                binding: r.binding_of(&i.ifname).unwrap(),
            },
            "nat" => NicState::Masquerade {
                binding: r.binding_of(&i.ifname).unwrap(),
                transit: r.transit_of(&i.ifname).unwrap(),
            },
            "pods" => {
                let t = r.taken_of(&i.ifname).unwrap();
                NicState::Pod {
                    netns: t.netns,
                    taken: t.name.clone(),
                    masquerade: false,
                }
            }
            _ => NicState::Bridge,
        });
        assert_eq!(migrated.vm.as_str(), "vm-2679ccaab955");
        assert_eq!((migrated.pid, migrated.pid_start), (17397, 3325402));
        let states: Vec<_> = migrated.nics.iter().map(|n| n.built.clone()).collect();
        assert_eq!(
            states,
            vec![
                NicState::Bridge,
                NicState::Isolated {
                    binding: Some(VethBinding::TcRedirect),
                },
                NicState::Masquerade {
                    binding: None,
                    transit: "169.254.128.2".parse().unwrap(),
                },
                NicState::Pod {
                    netns: (4, 4026532999),
                    taken: "eth0".parse().unwrap(),
                    masquerade: false,
                },
            ]
        );
        assert_eq!(migrated.nics[0].iface.ifname.as_str(), "tme55a64e9e6");
        assert_eq!(
            migrated.nics[2].iface.address,
            Some(("10.0.2.2".parse().unwrap(), 30))
        );
        assert_eq!(migrated.nics[3].iface.routes.len(), 1);
        // Written back, it reads as the current form, the same; and as the previous release
        // reads it (its own fields), the same as it was.
        let text = serde_json::to_vec(&migrated).unwrap();
        assert_eq!(
            Stored::parse(&text).unwrap(),
            Stored::Current(migrated.clone())
        );
        let mut back: serde_json::Value = serde_json::from_slice(&text).unwrap();
        back.as_object_mut().unwrap().remove("nics");
        let Stored::V1(as_old) = Stored::parse(&serde_json::to_vec(&back).unwrap()).unwrap() else {
            panic!("without nics it is the old form");
        };
        assert_eq!(as_old, v1_again);
    }
}
