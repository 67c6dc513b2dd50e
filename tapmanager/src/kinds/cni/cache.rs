//! What DEL needs, written before ADD runs: the network configuration list as ADD used it,
//! the runtime parameters, and (once ADD succeeded) its result. One file per CNI NIC under
//! `<state_dir>/cni/`, named by the NIC, replaced atomically (tmp, fsync, rename). A crash anywhere between the
//! first plugin and the reply leaves this file, and start-up runs DEL from it (libcni's
//! result cache, made a duty).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// The NIC (its generated name): the file's name.
    pub nic: String,
    pub network: String,
    pub container_id: String,
    pub netns: PathBuf,
    pub ifname: String,
    /// The guest's TAP in the namespace.
    pub tap: String,
    /// The list as ADD ran it: `name`, `cniVersion`, `plugins` (DEL must use the same).
    pub conflist: Value,
    pub bin_dirs: Vec<PathBuf>,
    /// ADD's result, once there is one.
    pub result: Option<Value>,
}

pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("cni")
}

fn path(state_dir: &Path, nic: &str) -> PathBuf {
    dir(state_dir).join(format!("{nic}.json"))
}

pub fn write(state_dir: &Path, e: &Entry) -> std::io::Result<()> {
    crate::state::write_json(&path(state_dir, &e.nic), e)
}

pub fn read(state_dir: &Path, nic: &str) -> std::io::Result<Option<Entry>> {
    crate::state::read_json(&path(state_dir, nic))
}

pub fn remove(state_dir: &Path, nic: &str) -> std::io::Result<()> {
    crate::state::remove_file(&path(state_dir, nic))
}

/// Every entry on disk (unreadable ones are logged and skipped; their file stays).
pub fn all(state_dir: &Path) -> Vec<Entry> {
    let Ok(rd) = std::fs::read_dir(dir(state_dir)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for f in rd.flatten() {
        let p = f.path();
        if p.extension().is_none_or(|e| e != "json") {
            continue;
        }
        match std::fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(e) => out.push(e),
            Err(err) => {
                tracing::error!(file = %p.display(), error = %err, "unreadable CNI cache entry")
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_list() {
        let state = std::env::temp_dir().join(format!("tm-cnicache-{}", std::process::id()));
        let e = Entry {
            nic: "tm0123456789".into(),
            network: "pod".into(),
            container_id: "tm0123456789".into(),
            netns: "/run/tapmanager/netns/tm0123456789".into(),
            ifname: "eth0".into(),
            tap: "tap0".into(),
            conflist: serde_json::json!({"name": "pods", "cniVersion": "1.0.0", "plugins": []}),
            bin_dirs: vec!["/usr/lib/cni".into()],
            result: None,
        };
        write(&state, &e).unwrap();
        assert_eq!(read(&state, "tm0123456789").unwrap(), Some(e.clone()));
        let mut e2 = e.clone();
        e2.result = Some(serde_json::json!({"cniVersion": "1.0.0"}));
        write(&state, &e2).unwrap();
        assert_eq!(all(&state), vec![e2]);
        remove(&state, "tm0123456789").unwrap();
        remove(&state, "tm0123456789").unwrap();
        assert!(all(&state).is_empty());
        std::fs::remove_dir_all(&state).unwrap();
    }
}
