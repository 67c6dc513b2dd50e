//! Test helpers for the CNI kind: a per-test directory of CNI configs and data.

use crate::sandbox::{Netns, Sandbox};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

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
        self.held(cni_network)
    }

    /// The IPv6 addresses host-local holds for network `cni_network`.
    pub fn allocated6(&self, cni_network: &str) -> Vec<std::net::Ipv6Addr> {
        self.held(cni_network)
    }

    fn held<T: std::str::FromStr>(&self, cni_network: &str) -> Vec<T> {
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

/// bridge + host-local with an IPv4 and an IPv6 range (spec 1.0.0): the bridge holds both
/// gateways, and the routes of both families go through them.
pub fn dual_stack_list(
    d: &CniDir,
    name: &str,
    bridge: &str,
    v4: &str,
    v6: &str,
) -> serde_json::Value {
    serde_json::json!({"cniVersion": "1.0.0", "name": name, "plugins": [{
        "type": "bridge",
        "bridge": bridge,
        "isGateway": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": v4}], [{"subnet": v6}]],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
            "dataDir": d.ipam(),
        }
    }]})
}

/// The pod's side as `ip` shows it: eth0's link line and IPv4 addresses, the routes, and
/// every link name.
pub fn pod_state(pod: &Netns) -> String {
    let link = pod.ip(&["-o", "link", "show", "dev", "eth0"]);
    // The link line without its counters-ish parts: name, flags, MTU, MAC.
    let link: String = link
        .split_whitespace()
        .filter(|w| w.contains(':') || w.starts_with('<') || w.parse::<u32>().is_ok())
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "{link}\n{}{}{}",
        pod.ip(&["-4", "-o", "addr", "show", "dev", "eth0"]),
        pod.ip(&["-4", "route", "show"]),
        pod.ip(&["-o", "link", "show"])
            .lines()
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned() + "\n")
            .collect::<String>()
    )
}

/// Address `k` ("address", "gateway") of a CNI result's second IP (the IPv6 one of a
/// dual-stack result), without its prefix length.
pub fn result_ip6(result: &serde_json::Value, k: &str) -> String {
    result["ips"][1][k]
        .as_str()
        .unwrap_or_else(|| panic!("no IPv6 {k} in {result}"))
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

/// Waits (up to 5 s) until no IPv6 address of `link` in `ns` is tentative (duplicate address
/// detection over): whether it got there.
pub fn ipv6_settled(ns: &Netns, link: &str) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if !ns
            .ip(&["-6", "addr", "show", "dev", link])
            .contains("tentative")
        {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The pod's IPv6 as `ip` shows it: eth0's global addresses and the IPv6 routes.
pub fn pod_state6(pod: &Netns) -> String {
    format!(
        "{}{}",
        pod.ip(&["-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"]),
        pod.ip(&["-6", "route", "show"])
    )
}

/// Debian's bridge plugin (with host-local, 10.88.50.0/24) run by the test into `pod`, with its host side in the sandbox's
/// namespace, as a kubelet's CNI would.
pub fn pod_cni(sb: &Sandbox, d: &CniDir, pod: &Netns, command: &str) -> String {
    pod_cni_with(sb, d, pod, command, false)
}

/// [`pod_cni`], dual stack with `dual` (an IPv6 range fd50::/64 and its default route too).
pub fn pod_cni_with(sb: &Sandbox, d: &CniDir, pod: &Netns, command: &str, dual: bool) -> String {
    let mut conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "tmpod", "type": "bridge", "bridge": "tmpodbr",
        "isGateway": true,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.50.0/24"}]],
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": d.ipam()}
    });
    if dual {
        conf["ipam"]["ranges"] =
            serde_json::json!([[{"subnet": "10.88.50.0/24"}], [{"subnet": "fd50::/64"}]]);
        conf["ipam"]["routes"] = serde_json::json!([{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]);
    }
    let mut child = Command::new("ip")
        .args(["netns", "exec", &sb.ns.name, "env", "-i"])
        .arg(format!("CNI_COMMAND={command}"))
        .arg(format!("CNI_CONTAINERID={}", pod.name))
        .arg(format!("CNI_NETNS=/run/netns/{}", pod.name))
        .arg("CNI_IFNAME=eth0")
        .arg(format!("CNI_PATH={DEBIAN_PLUGINS}"))
        .arg(format!("{DEBIAN_PLUGINS}/bridge"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(conf.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "CNI {command}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
