//! Test helpers for the CNI kind: a per-test directory of CNI configs and data.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Where Debian's `containernetworking-plugins` puts the plugins.
pub const DEBIAN_PLUGINS: &str = "/usr/lib/cni";

/// A test's CNI files: `net.d/`, `ipam/` (host-local's data dir), `log`; removed when dropped.
#[derive(Debug)]
pub struct CniDir {
    root: PathBuf,
}

impl CniDir {
    pub fn new(tag: &str) -> CniDir {
        let root = std::env::temp_dir().join(format!("tmt-cni-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root); // a leftover of an earlier run
        std::fs::create_dir_all(root.join("net.d")).unwrap();
        std::fs::create_dir_all(root.join("ipam")).unwrap();
        CniDir { root }
    }

    pub fn conf_dir(&self) -> PathBuf {
        self.root.join("net.d")
    }

    pub fn ipam(&self) -> PathBuf {
        self.root.join("ipam")
    }

    pub fn log(&self) -> PathBuf {
        self.root.join("log")
    }

    /// Writes `<name>.conflist`.
    pub fn write(&self, name: &str, list: serde_json::Value) {
        std::fs::write(
            self.conf_dir().join(format!("{name}.conflist")),
            serde_json::to_vec_pretty(&list).unwrap(),
        )
        .unwrap();
    }

    /// A `[networks.NAME]` table for CNI network `cni_network` of this dir.
    pub fn network(&self, name: &str, cni_network: &str, extra: &str) -> String {
        format!(
            "[networks.{name}]\nkind = \"cni\"\ncni_network = \"{cni_network}\"\ncni_conf_dir = \"{}\"\n\
             cni_bin_dir = [\"{DEBIAN_PLUGINS}\", \"{}\"]\n{extra}\n",
            self.conf_dir().display(),
            fixture_dir().display()
        )
    }

    /// The addresses host-local holds for network `cni_network` (its files named by address).
    pub fn allocated(&self, cni_network: &str) -> Vec<Ipv4Addr> {
        let Ok(rd) = std::fs::read_dir(self.ipam().join(cni_network)) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()
    }

    /// The fixture's invocations, as it logged them.
    pub fn calls(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for CniDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root); // best effort
    }
}

pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cni")
}

/// bridge + host-local (+ more plugins after them), spec `version`.
pub fn bridge_list(
    d: &CniDir,
    name: &str,
    version: &str,
    bridge: &str,
    subnet: &str,
    more: &[serde_json::Value],
) -> serde_json::Value {
    let mut plugins = vec![serde_json::json!({
        "type": "bridge",
        "bridge": bridge,
        "isGateway": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": subnet}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": d.ipam(),
        }
    })];
    plugins.extend(more.iter().cloned());
    serde_json::json!({"cniVersion": version, "name": name, "plugins": plugins})
}
