//! `tapmanager doctor`: what usually goes wrong on a host, each finding with how to fix it.
//! Read-only: it looks, it never changes anything.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub what: String,
    /// How to fix it (empty when ok).
    pub fix: String,
}

fn ok(what: impl Into<String>) -> Finding {
    Finding {
        level: Level::Ok,
        what: what.into(),
        fix: String::new(),
    }
}

fn bad(level: Level, what: impl Into<String>, fix: impl Into<String>) -> Finding {
    Finding {
        level,
        what: what.into(),
        fix: fix.into(),
    }
}

fn read_trim(p: &str) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned())
}

/// The device TAPs are made from.
pub fn tun() -> Finding {
    match std::fs::metadata("/dev/net/tun") {
        Ok(m) if m.file_type().is_char_device() => ok("/dev/net/tun is there"),
        Ok(_) => bad(
            Level::Fail,
            "/dev/net/tun is not a character device",
            "remove it and load the tun module: `modprobe tun` (it recreates the node)",
        ),
        Err(_) => bad(
            Level::Fail,
            "/dev/net/tun is missing",
            "`modprobe tun`; in a container, pass the device in (`--device /dev/net/tun`)",
        ),
    }
}

/// IPv4 forwarding: routed kinds need it; the daemon turns it on itself when it serves one.
pub fn forwarding(routed: bool) -> Finding {
    match (
        read_trim("/proc/sys/net/ipv4/ip_forward").as_deref(),
        routed,
    ) {
        (Some("1"), _) => ok("IPv4 forwarding is on"),
        (_, false) => ok("IPv4 forwarding is off (no network here routes or NATs: none needs it)"),
        _ => bad(
            Level::Warn,
            "IPv4 forwarding is off",
            "the daemon turns it on when it starts with a routed network; to keep it on: \
             `sysctl -w net.ipv4.ip_forward=1` and a file in /etc/sysctl.d",
        ),
    }
}

/// br_netfilter sends bridged frames through iptables (Docker turns it on), where a FORWARD
/// policy of DROP silently eats guests' traffic.
pub fn bridge_netfilter() -> Finding {
    match read_trim("/proc/sys/net/bridge/bridge-nf-call-iptables").as_deref() {
        Some("1") => bad(
            Level::Warn,
            "bridge-nf-call-iptables is 1: bridged guest traffic also passes iptables' FORWARD \
             chain (a DROP policy there, as Docker sets, cuts guests off)",
            "`sysctl -w net.bridge.bridge-nf-call-iptables=0`, or accept the bridges in \
             FORWARD: `iptables -I FORWARD -i tmbr+ -o tmbr+ -j ACCEPT`",
        ),
        Some(_) => ok("bridge netfilter does not touch bridged frames"),
        None => ok("bridge netfilter (br_netfilter) is not loaded"),
    }
}

/// The caller may reach the socket: root, or a member of the daemon's group.
pub fn membership(uid: u32, groups: &[u32], group: u32, group_name: &str) -> Finding {
    if uid == 0 || groups.contains(&group) {
        ok(format!(
            "uid {uid} may connect (root or in group {group_name})"
        ))
    } else {
        bad(
            Level::Fail,
            format!("uid {uid} is not in group {group_name} (gid {group}): it cannot connect"),
            format!("`sudo usermod -aG {group_name} $USER`, then log in again"),
        )
    }
}

/// Another network manager that would take over the daemon's links (`prefix*` and bridges).
pub fn managers(root: &Path, prefix: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let glob = format!("{prefix}*");
    let mentions = |dir: &Path, needle: &str, also: &str| {
        std::fs::read_dir(dir).is_ok_and(|rd| {
            rd.flatten().any(|e| {
                std::fs::read_to_string(e.path())
                    .is_ok_and(|t| t.contains(needle) && t.contains(also))
            })
        })
    };
    if root.join("run/NetworkManager").exists() {
        let conf = root.join("etc/NetworkManager/conf.d");
        if mentions(
            &conf,
            "unmanaged-devices",
            &format!("interface-name:{glob}"),
        ) {
            out.push(ok(format!("NetworkManager leaves {glob} alone")));
        } else {
            out.push(bad(
                Level::Warn,
                format!("NetworkManager runs and may manage {glob} links"),
                format!(
                    "add /etc/NetworkManager/conf.d/tapmanager.conf with `[keyfile]` and \
                     `unmanaged-devices=interface-name:{glob}`, then `nmcli general reload`"
                ),
            ));
        }
    }
    if root.join("run/systemd/netif").exists() {
        let dir = root.join("etc/systemd/network");
        if mentions(&dir, &format!("Name={glob}"), "Unmanaged=yes") {
            out.push(ok(format!("systemd-networkd leaves {glob} alone")));
        } else {
            out.push(bad(
                Level::Warn,
                format!("systemd-networkd runs and may manage {glob} links"),
                format!(
                    "add /etc/systemd/network/10-tapmanager.network with `[Match]` \
                     `Name={glob}` and `[Link]` `Unmanaged=yes`, then `networkctl reload`"
                ),
            ));
        }
    }
    if out.is_empty() {
        out.push(ok(
            "no other network manager (NetworkManager, systemd-networkd) runs",
        ));
    }
    out
}

/// The tools the daemon runs.
pub fn tools() -> Vec<Finding> {
    ["nft"]
        .iter()
        .map(|t| {
            let found = std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()));
            if found {
                ok(format!("{t} is installed"))
            } else {
                bad(
                    Level::Fail,
                    format!("{t} is not on PATH: the daemon cannot set up its guards"),
                    "`apt-get install nftables`",
                )
            }
        })
        .collect()
}

pub fn render(findings: &[Finding]) -> String {
    let mut s = String::new();
    for f in findings {
        let tag = match f.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        s.push_str(&format!("{tag}  {}\n", f.what));
        if !f.fix.is_empty() {
            s.push_str(&format!("      fix: {}\n", f.fix));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn membership_says_how_to_join() {
        assert_eq!(membership(0, &[], 5, "tapmanager").level, Level::Ok);
        assert_eq!(membership(1000, &[5], 5, "tapmanager").level, Level::Ok);
        let f = membership(1000, &[1000], 5, "tapmanager");
        assert_eq!(f.level, Level::Fail);
        assert!(f.fix.contains("usermod -aG tapmanager"));
    }

    #[test]
    fn other_managers_are_found_and_their_opt_out_recognized() {
        let root = std::env::temp_dir().join(format!("tm-doctor-{}", std::process::id()));
        std::fs::create_dir_all(root.join("run/NetworkManager")).unwrap();
        std::fs::create_dir_all(root.join("run/systemd/netif")).unwrap();
        let found = managers(&root, "tm");
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|f| f.level == Level::Warn), "{found:?}");
        // The snippets packaging/ ships are what the check recognizes.
        std::fs::create_dir_all(root.join("etc/NetworkManager/conf.d")).unwrap();
        std::fs::write(
            root.join("etc/NetworkManager/conf.d/tapmanager.conf"),
            include_str!("../../packaging/NetworkManager/tapmanager.conf"),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("etc/systemd/network")).unwrap();
        std::fs::write(
            root.join("etc/systemd/network/10-tapmanager.network"),
            include_str!("../../packaging/networkd/10-tapmanager.network"),
        )
        .unwrap();
        let found = managers(&root, "tm");
        assert!(found.iter().all(|f| f.level == Level::Ok), "{found:?}");
        std::fs::remove_dir_all(&root).unwrap();
        let none = managers(Path::new("/nonexistent-root"), "tm");
        assert_eq!(none[0].level, Level::Ok);
    }
}
