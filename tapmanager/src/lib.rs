//! tapmanager: the root daemon that wires virtual machines into networks and hands their TAP
//! file descriptors to unprivileged callers. The binary (`main.rs`) only wires this library.
//! `docs/architecture.md` in the repository is the one-page map.
//!
//! Where things are, from the top (each layer imports only those below it): [`daemon`]
//! (accept, authorize, the registry), [`config`] (the TOML file),
//! [`lifecycle`] (what runs on attach, on exit, on start-up; [`lifecycle::plan()`] chooses
//! names and addresses), [`kinds`] (one module per network kind, and the contract the
//! lifecycle drives them by), and below them [`net`]: [`net::tap`]
//! (where a TAP is opened), [`net::link`] (rtnetlink), [`net::firewall`] and
//! [`net::nfnetlink`] (per-port guards), [`net::netns`], [`net::join`] (veth to TAP),
//! [`net::reaper`]. Also [`ipam`], [`names`], [`state`] (the journal), [`peer`] (who is
//! calling), [`privileges`] (capabilities), [`hostfail`] (what a caller is told when the
//! kernel refuses a step), [`admin`] (`doctor`, `init`, list output).

pub mod admin;
pub mod config;
pub mod daemon;
pub mod dns;
pub mod failpoint;
pub mod heap;
pub mod hostfail;
pub mod ipam;
pub mod kinds;
pub mod lifecycle;
pub mod names;
pub mod net;
pub mod peer;
pub mod privileges;
pub mod state;
pub mod systemd;

pub use protocol::error_chain;

#[cfg(test)]
mod layering {
    //! The layers import only those below them (`daemon → lifecycle → kinds → net`), and
    //! `unsafe` lives only in the files that face the system calls it is for.

    use std::path::{Path, PathBuf};

    /// Every `.rs` file under `src/<dir>` (or `src` itself with `""`), with its text.
    fn files(dir: &str) -> Vec<(PathBuf, String)> {
        let mut out = Vec::new();
        let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(dir)];
        while let Some(d) = dirs.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    out.push((path, text));
                }
            }
        }
        assert!(!out.is_empty(), "no files under src/{dir}");
        out
    }

    fn check(dir: &str, above: &[&str]) {
        for (path, text) in files(dir) {
            for name in above {
                assert!(
                    !text.contains(name),
                    "{} names {name}: src/{dir} sits below it",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn each_layer_names_nothing_above_it() {
        check(
            "net",
            &[
                "crate::daemon",
                "Daemon",
                "crate::lifecycle",
                "crate::kinds",
            ],
        );
        check("kinds", &["crate::daemon", "Daemon", "crate::lifecycle"]);
        check("lifecycle", &["crate::daemon", "Daemon"]);
    }

    #[test]
    fn unsafe_is_only_where_the_system_calls_are() {
        const SYS: [&str; 7] = [
            "heap.rs",
            "net/tap.rs",
            "net/netns.rs",
            "net/nfnetlink.rs",
            "peer.rs",
            "systemd.rs",
            "privileges.rs",
        ];
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        for (path, text) in files("") {
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            // This file names the word in its tests.
            if rel == "lib.rs" || SYS.contains(&rel.as_str()) {
                continue;
            }
            assert!(
                !text.contains("unsafe"),
                "{rel} has unsafe code: keep it in {SYS:?}"
            );
        }
    }
}
