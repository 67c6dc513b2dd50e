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

/// IPv6 of the networks with `gateway6`. `nat66`: one of them has NAT, so the daemon turns
/// IPv6 forwarding on; `forwarding` is `net.ipv6.conf.all.forwarding` now. `ra_links` are the
/// links whose IPv6 default route the kernel learned from router advertisements, with their
/// `accept_ra`: with forwarding on, the kernel ignores advertisements unless it is 2, and the
/// route expires. `bridges` are the IPv6 networks' bridges that exist, with their `accept_ra`:
/// the daemon sets 0 so guests' advertisements configure nothing.
pub fn ipv6(
    nat66: bool,
    forwarding: Option<&str>,
    ra_links: &[(String, String)],
    bridges: &[(String, String)],
) -> Vec<Finding> {
    let mut out = Vec::new();
    if nat66 {
        out.push(match forwarding {
            Some("1") => ok("IPv6 forwarding is on (NAT66)"),
            _ => bad(
                Level::Warn,
                "IPv6 forwarding is off",
                "the daemon turns it on when it starts with a NAT network that has gateway6; \
                 to keep it on: `sysctl -w net.ipv6.conf.all.forwarding=1` and a file in /etc/sysctl.d",
            ),
        });
        for (link, accept_ra) in ra_links {
            out.push(if accept_ra == "2" {
                ok(format!("{link} keeps its advertised IPv6 default route with forwarding on (accept_ra=2)"))
            } else {
                bad(
                    Level::Warn,
                    format!(
                        "{link} takes its IPv6 default route from router advertisements with accept_ra={accept_ra}: \
                         with forwarding on (NAT66) the kernel ignores them and the route expires"
                    ),
                    format!(
                        "`sysctl -w net.ipv6.conf.{link}.accept_ra=2` and a file in /etc/sysctl.d \
                         (NetworkManager and systemd-networkd handle advertisements themselves and need nothing)"
                    ),
                )
            });
        }
    }
    for (bridge, accept_ra) in bridges {
        out.push(if accept_ra == "0" {
            ok(format!("{bridge} accepts no router advertisements from guests (accept_ra=0)"))
        } else {
            bad(
                Level::Warn,
                format!("{bridge} has accept_ra={accept_ra}: a guest's advertisement could configure the host"),
                "the daemon sets 0 when it starts; if it runs, something changed it since: restart it",
            )
        });
    }
    out
}

/// [`ipv6`] of this host now: the sysctls, and `ip -6 route show default proto ra`.
fn ipv6_now(c: &crate::config::Config) -> Vec<Finding> {
    let bridges6: Vec<&crate::config::BridgeNet> = c
        .networks
        .values()
        .filter_map(|n| match &n.kind {
            crate::config::NetworkKind::Bridge(b) if b.gateway6.is_some() => Some(b),
            _ => None,
        })
        .collect();
    let nat66 = bridges6.iter().any(|b| b.nat.is_some());
    let conf = |link: &str, key: &str| read_trim(&format!("/proc/sys/net/ipv6/conf/{link}/{key}"));
    let ra_links: Vec<(String, String)> = std::process::Command::new("ip")
        .args(["-6", "route", "show", "default", "proto", "ra"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split(" dev ")
                .nth(1)?
                .split_whitespace()
                .next()
                .map(str::to_owned)
        })
        .filter_map(|link| Some((link.clone(), conf(&link, "accept_ra")?)))
        .collect();
    let bridges: Vec<(String, String)> = bridges6
        .iter()
        .filter_map(|b| Some((b.bridge.to_string(), conf(b.bridge.as_str(), "accept_ra")?)))
        .collect();
    ipv6(
        nat66,
        conf("all", "forwarding").as_deref(),
        &ra_links,
        &bridges,
    )
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

/// A forward chain of another table that drops by default (Docker's `iptables -P FORWARD
/// DROP`, in iptables-nft's `ip filter` table, say) drops routed and NATed guests' traffic
/// too: nftables runs every table's base chains, and any one's drop is final. `ruleset` is
/// `nft list ruleset`; `routed` whether a configured network routes or NATs.
pub fn forward_policy(ruleset: &str, routed: bool) -> Finding {
    let mut table = "";
    let mut chain = "";
    let mut dropping = Vec::new();
    for line in ruleset.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("table ") {
            table = rest.trim_end_matches(" {");
        } else if let Some(rest) = line.strip_prefix("chain ") {
            chain = rest.trim_end_matches(" {");
        } else if line.contains("hook forward")
            && line.contains("policy drop")
            && !table.contains("tapmanager")
        {
            dropping.push(format!("{table} {chain}"));
        }
    }
    match (dropping.is_empty(), routed) {
        (true, _) => ok("no other firewall table drops forwarded traffic by default"),
        (false, false) => ok(format!(
            "forwarded traffic is dropped by default in {} (no network here is routed or NATed)",
            dropping.join(", ")
        )),
        (false, true) => bad(
            Level::Warn,
            format!(
                "forwarded traffic is dropped by default in {} (Docker sets this): routed and \
                 NATed guests' traffic ends there",
                dropping.join(", ")
            ),
            "accept the daemon's links in that chain, e.g. `iptables -I FORWARD -i tmbr0 -j ACCEPT` \
             and `iptables -I FORWARD -o tmbr0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT` \
             (and the same for the isolated networks' tm* links)",
        ),
    }
}

/// Port 53 of a DNS forwarder's gateway, as `/proc/net/udp` and `/proc/net/tcp` show it:
/// another server bound to the wildcard address or to the gateway (dnsmasq without
/// `bind-interfaces`, say) keeps the daemon from starting. `tables` are those files' text;
/// `ours` whether the daemon is running (then the gateway's own binding is its).
pub fn dns_port(tables: &[&str], gateways: &[std::net::Ipv4Addr], ours: bool) -> Vec<Finding> {
    // Local address "0100007F:0035": the address's network-order bytes printed as a native
    // u32 in hex, and the port.
    let bound: Vec<std::net::Ipv4Addr> = tables
        .iter()
        .flat_map(|t| t.lines().skip(1))
        .filter_map(|l| {
            let local = l.split_whitespace().nth(1)?;
            let (addr, port) = local.split_once(':')?;
            (port == "0035").then_some(())?;
            let raw = u32::from_str_radix(addr, 16).ok()?;
            Some(std::net::Ipv4Addr::from(raw.to_ne_bytes()))
        })
        .collect();
    gateways
        .iter()
        .map(|gw| {
            let wildcard = bound.iter().any(|a| a.is_unspecified());
            let exact = bound.contains(gw);
            if wildcard {
                bad(
                    Level::Fail,
                    format!(
                        "port 53 is held on every address: the DNS forwarder cannot listen on {gw}"
                    ),
                    "make that server bind its own addresses only (dnsmasq: `bind-interfaces` or \
                     `bind-dynamic`), or set `dns_forward = false` and `dns = [...]`",
                )
            } else if exact && !ours {
                bad(
                    Level::Fail,
                    format!("another program listens on {gw}:53, the DNS forwarder's address"),
                    "stop it, or set `dns_forward = false` and `dns = [...]`",
                )
            } else {
                ok(format!(
                    "port 53 on {gw} is free for the DNS forwarder (or is its)"
                ))
            }
        })
        .collect()
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

/// How many guests the config's networks can hold at once: each bridge or routed network's
/// addresses and each isolated or masquerade network's /30s (the other kinds take theirs from
/// outside, and are not counted); and how many of them have a namespace of their own (the
/// isolated and masquerade ones: a DHCP socket each, where the others share one).
pub fn capacity(c: &crate::config::Config) -> (u64, u64) {
    use crate::config::NetworkKind;
    let hosts = |prefix: u8| (1u64 << (32 - u32::from(prefix))).saturating_sub(3);
    c.networks
        .values()
        .map(|n| match &n.kind {
            NetworkKind::Bridge(b) => match &b.addresses {
                Some(list) => (list.len() as u64, 0),
                None => (hosts(b.gateway.prefix_len()), 0),
            },
            NetworkKind::Routed(r) => (hosts(r.gateway.prefix_len()), 0),
            NetworkKind::Isolated(i) => {
                let n = 1u64 << (30 - u32::from(i.range.prefix_len().min(30)));
                (n, n)
            }
            _ => (0, 0),
        })
        .fold((0, 0), |(a, b), (x, y)| (a + x, b + y))
}

/// What a host needs for `guests` guests, up to 65,536 (past that, the same values at least):
/// the neighbour tables' `gc_thresh` (IPv4 and IPv6, one table each for the whole host, every
/// namespace included; a bridge guest is one entry the host keeps), the daemon's fd limit
/// (a guest's caller's pidfd, the DHCP socket of each of the `own_netns` guests with a
/// namespace of their own, and 64 more), and inotify instances
/// (each guest's launcher often takes one: a containerd shim watching its cgroup). `gc3` are
/// the two tables' `gc_thresh3` (IPv4, IPv6), `nofile` the running daemon's soft limit (if
/// one runs), `inotify` `fs.inotify.max_user_instances`.
pub fn scale(
    (guests, own_netns): (u64, u64),
    gc3: [Option<u64>; 2],
    nofile: Option<u64>,
    inotify: Option<u64>,
) -> Vec<Finding> {
    let guests = guests.min(65_536);
    let mut out = Vec::new();
    let need = (guests + 1024).next_power_of_two();
    for (family, have) in ["ipv4", "ipv6"].iter().zip(gc3) {
        out.push(match have {
            // Room for the host's own neighbours too (256 is plenty for a host's LANs).
            Some(h) if h >= guests + 256 => ok(format!(
                "net.{family}.neigh.default.gc_thresh3 = {h}: room for {guests} guests"
            )),
            Some(h) => bad(
                Level::Warn,
                format!(
                    "net.{family}.neigh.default.gc_thresh3 = {h}: the networks hold up to {guests} \
                     guests, each an entry of this host-wide table, beside the host's own"
                ),
                format!(
                    "`sysctl -w net.{family}.neigh.default.gc_thresh1={} \
                     net.{family}.neigh.default.gc_thresh2={} \
                     net.{family}.neigh.default.gc_thresh3={need}`, and the same in a file in \
                     /etc/sysctl.d",
                    need / 4,
                    need / 2
                ),
            ),
            None => ok(format!("no {family} neighbour table (IPv6 off?)")),
        });
    }
    let own_netns = own_netns.min(guests);
    let fds = guests + own_netns + 64;
    match nofile {
        Some(n) if n >= fds => out.push(ok(format!(
            "the daemon may open {n} files: enough for {guests} guests"
        ))),
        Some(n) => out.push(bad(
            Level::Warn,
            format!(
                "the daemon may open {n} files; {guests} guests need {fds} (a pidfd each, and a \
                 DHCP socket for each of the {own_netns} in a namespace of their own); past \
                 that, attaches fail with CapacityExceeded"
            ),
            format!(
                "`LimitNOFILE={}` in the unit (`systemctl edit tapmanager`)",
                fds.next_power_of_two()
            ),
        )),
        None => {}
    }
    match inotify {
        // Below a thousand guests the default (128 a user) has not been seen to bite.
        Some(n) if guests <= 1024 || n >= guests + 128 => {
            out.push(ok(format!("fs.inotify.max_user_instances = {n}")))
        }
        Some(n) => out.push(bad(
            Level::Warn,
            format!(
                "fs.inotify.max_user_instances = {n}: launchers that watch their guest (containerd \
                 shims, one per VM) run out past that many guests of one user"
            ),
            format!(
                "`sysctl -w fs.inotify.max_user_instances={}`, and the same in /etc/sysctl.d",
                (guests + 128).next_power_of_two()
            ),
        )),
        None => {}
    }
    out
}

/// The pid of the daemon serving `state_dir`: the holder of its lock, from `/proc/locks`.
fn daemon_pid(state_dir: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(state_dir.join("lock")).ok()?.ino();
    std::fs::read_to_string("/proc/locks")
        .ok()?
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF"
            let dev_ino = f.get(5)?;
            (dev_ino.rsplit(':').next()?.parse::<u64>().ok()? == ino)
                .then(|| f.get(4)?.parse().ok())
                .flatten()
        })
}

/// A process's soft limit on open files (`/proc/PID/limits`).
fn nofile_of(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
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

/// Every check of `tapmanager doctor`, in the order it prints them: the config, the TUN
/// device, forwarding, bridge netfilter, another table's forward policy, port 53 of a DNS
/// forwarder's gateway, the caller's group, other network managers, the tools, the daemon.
pub fn check_host(config: &Path, socket: &Path) -> Vec<Finding> {
    let mut found: Vec<Finding> = Vec::new();
    let loaded = crate::config::Config::load(config);
    let (group, prefix, routed) = match &loaded {
        Ok(c) => (
            c.group,
            c.interface_prefix.clone(),
            c.networks.values().any(|n| match &n.kind {
                crate::config::NetworkKind::Bridge(b) => b.nat.is_some(),
                crate::config::NetworkKind::Macvtap(_) => false,
                _ => true,
            }),
        ),
        Err(_) => (0, "tm".to_owned(), false),
    };
    found.push(match &loaded {
        Ok(c) => Finding {
            level: Level::Ok,
            what: format!(
                "{} is valid: {} network(s)",
                config.display(),
                c.networks.len()
            ),
            fix: String::new(),
        },
        Err(e) => Finding {
            level: Level::Fail,
            what: format!("config: {}", crate::error_chain(e)),
            fix: format!(
                "`tapmanager check-config {}` names the line",
                config.display()
            ),
        },
    });
    found.push(tun());
    found.push(forwarding(routed));
    if let Ok(c) = &loaded {
        found.extend(ipv6_now(c));
    }
    found.push(bridge_netfilter());
    if let Ok(out) = std::process::Command::new("nft")
        .args(["list", "ruleset"])
        .output()
    {
        if out.status.success() {
            found.push(forward_policy(
                &String::from_utf8_lossy(&out.stdout),
                routed,
            ));
        }
    }
    if let Ok(c) = &loaded {
        let gateways: Vec<std::net::Ipv4Addr> = c
            .networks
            .values()
            .filter_map(|n| match &n.kind {
                crate::config::NetworkKind::Bridge(b) if b.dns_forward.is_some() => {
                    Some(b.gateway.addr())
                }
                _ => None,
            })
            .collect();
        let udp = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
        let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let running = protocol::Client::connect(socket).is_ok();
        found.extend(dns_port(&[&udp, &tcp], &gateways, running));
    }
    if loaded.is_ok() {
        let uid = nix::unistd::getuid().as_raw();
        let mut groups: Vec<u32> = nix::unistd::getgroups()
            .unwrap_or_default()
            .iter()
            .map(|g| g.as_raw())
            .collect();
        groups.push(nix::unistd::getgid().as_raw());
        let name = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(group))
            .ok()
            .flatten()
            .map_or(group.to_string(), |g| g.name);
        found.push(membership(uid, &groups, group, &name));
    }
    if let Ok(c) = &loaded {
        let num = |p: &str| read_trim(p).and_then(|v| v.parse().ok());
        found.extend(scale(
            capacity(c),
            [
                num("/proc/sys/net/ipv4/neigh/default/gc_thresh3"),
                num("/proc/sys/net/ipv6/neigh/default/gc_thresh3"),
            ],
            daemon_pid(&c.state_dir).and_then(nofile_of),
            num("/proc/sys/fs/inotify/max_user_instances"),
        ));
    }
    found.extend(managers(Path::new("/"), &prefix));
    found.extend(tools());
    found.push(
        match protocol::Client::connect(socket).and_then(|mut c| c.status()) {
            Ok(nets) => {
                let down: Vec<String> = nets
                    .iter()
                    .filter(|n| !n.ready)
                    .map(|n| format!("{} ({})", n.network, n.message))
                    .collect();
                if down.is_empty() {
                    Finding {
                        level: Level::Ok,
                        what: format!(
                            "the daemon answers at {}; {} network(s) ready",
                            socket.display(),
                            nets.len()
                        ),
                        fix: String::new(),
                    }
                } else {
                    Finding {
                        level: Level::Warn,
                        what: format!("networks not ready: {}", down.join("; ")),
                        fix: "`tapmanager status` says why for each".into(),
                    }
                }
            }
            Err(e) => Finding {
                level: Level::Fail,
                what: format!("the daemon does not answer: {}", crate::error_chain(&e)),
                fix: e
                    .hint()
                    .map(|h| h.to_string())
                    .unwrap_or_else(|| "start it: `systemctl start tapmanager`".into()),
            },
        },
    );
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_findings_name_forwarding_accept_ra_and_the_bridges() {
        let l = |a: &str, b: &str| vec![(a.to_owned(), b.to_owned())];
        let f = ipv6(true, Some("0"), &l("eth0", "1"), &l("tmbr0", "0"));
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].level, Level::Warn);
        assert!(f[1].what.contains("eth0") && f[1].fix.contains("net.ipv6.conf.eth0.accept_ra=2"));
        assert_eq!(f[2].level, Level::Ok);
        let f = ipv6(true, Some("1"), &l("eth0", "2"), &l("tmbr0", "1"));
        assert_eq!(
            f.iter().map(|x| x.level).collect::<Vec<_>>(),
            [Level::Ok, Level::Ok, Level::Warn]
        );
        // Without NAT66, forwarding and the uplink's advertisements are none of IPv6's business.
        assert!(ipv6(false, Some("0"), &l("eth0", "1"), &[]).is_empty());
    }

    #[test]
    fn a_foreign_forward_chain_that_drops_is_named() {
        let docker = "table ip filter {\n\tchain FORWARD {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\n\
                      table ip tapmanager_bridge_nat {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy accept;\n\t}\n}\n";
        let f = forward_policy(docker, true);
        assert_eq!(f.level, Level::Warn);
        assert!(f.what.contains("ip filter FORWARD"), "{}", f.what);
        assert_eq!(forward_policy(docker, false).level, Level::Ok);
        let ours_only = "table inet tapmanager_routed {\n\tchain forward {\n\t\ttype filter hook forward priority filter; policy drop;\n\t}\n}\n";
        assert_eq!(forward_policy(ours_only, true).level, Level::Ok);
    }

    #[test]
    fn port_53_held_elsewhere_is_found() {
        let head = "  sl  local_address rem_address   st\n";
        let gw: std::net::Ipv4Addr = "10.77.0.1".parse().unwrap();
        // 10.77.0.1 is 01004D0A in host (little-endian) order.
        let on_gw = format!("{head}   0: 01004D0A:0035 00000000:0000 07\n");
        let wildcard = format!("{head}   0: 00000000:0035 00000000:0000 07\n");
        let stub = format!("{head}   0: 3500007F:0035 00000000:0000 07\n");
        assert_eq!(dns_port(&[&wildcard], &[gw], false)[0].level, Level::Fail);
        assert_eq!(dns_port(&[&on_gw], &[gw], false)[0].level, Level::Fail);
        assert_eq!(
            dns_port(&[&on_gw], &[gw], true)[0].level,
            Level::Ok,
            "the daemon's own"
        );
        assert_eq!(
            dns_port(&[&stub], &[gw], false)[0].level,
            Level::Ok,
            "resolved's stub"
        );
    }

    #[test]
    fn scale_findings_name_the_values_to_set() {
        // A /16 bridge network: 65,533 guests. The defaults of a host fall short.
        let f = scale((65_533, 0), [Some(1024), Some(1024)], Some(1024), Some(128));
        assert_eq!(f.len(), 4, "{f:?}");
        assert!(f.iter().all(|x| x.level == Level::Warn), "{f:?}");
        assert!(
            f[0].fix
                .contains("net.ipv4.neigh.default.gc_thresh3=131072"),
            "{}",
            f[0].fix
        );
        assert!(
            f[1].fix.contains("net.ipv6.neigh.default.gc_thresh1=32768"),
            "{}",
            f[1].fix
        );
        assert!(f[2].what.contains("65597"), "{}", f[2].what);
        assert!(f[2].fix.contains("LimitNOFILE=131072"), "{}", f[2].fix);
        assert!(
            f[3].fix.contains("max_user_instances=131072"),
            "{}",
            f[3].fix
        );
        // The desktop's /24: the defaults do.
        let f = scale((253, 0), [Some(1024), Some(1024)], Some(65_536), Some(128));
        assert!(f.iter().all(|x| x.level == Level::Ok), "{f:?}");
        // An isolated /16: 16,384 guests, each with a namespace and so a DHCP socket.
        let f = scale(
            (16_384, 16_384),
            [Some(65_536), Some(65_536)],
            Some(20_000),
            None,
        );
        assert!(f[2].what.contains("32832"), "{}", f[2].what);
    }

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
            include_str!("../../../packaging/NetworkManager/tapmanager.conf"),
        )
        .unwrap();
        std::fs::create_dir_all(root.join("etc/systemd/network")).unwrap();
        std::fs::write(
            root.join("etc/systemd/network/10-tapmanager.network"),
            include_str!("../../../packaging/networkd/10-tapmanager.network"),
        )
        .unwrap();
        let found = managers(&root, "tm");
        assert!(found.iter().all(|f| f.level == Level::Ok), "{found:?}");
        std::fs::remove_dir_all(&root).unwrap();
        let none = managers(Path::new("/nonexistent-root"), "tm");
        assert_eq!(none[0].level, Level::Ok);
    }
}
