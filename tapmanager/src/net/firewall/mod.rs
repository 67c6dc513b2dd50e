//! The per-port firewall, in nftables' netdev family, driven through one long-lived `nft -i`
//! process per network namespace.
//!
//! Why not one `ebtables`/`nft` process per attach: each such process costs 8–16 ms here, most
//! of it waiting for an RCU grace period when its netlink socket closes (DESIGN.md §5, §10).
//! A persistent `nft -i` keeps its socket open; one attach's batch then costs under 1 ms.
//!
//! Where the guards sit: on the **ingress hook of each guest's TAP**, which sees every frame
//! the guest writes before anything else does (the bridge, the TAP's own IP stack). They used
//! to sit on the bridge family's `forward` and `input` hooks, and an outside audit (issue 11)
//! walked around them: a bridge hands frames addressed to a link-local group MAC
//! (`01:80:c2:00:00:0X`) to the receiving port's own stack without either hook, so a router
//! advertisement sent to the LLDP MAC gave the host a default route via the guest, and a
//! spoofed IPv4 source reached host sockets. (DHCP servers' packet sockets still see the
//! guest's frames first: packet taps run before the ingress hook.)
//!
//! Layout: table `netdev tapmanager` has two sets, `macs` (port . MAC) and `ips`
//! (port . IPv4), one regular chain `guard` whose rules look the port's MAC and address up in
//! them, and per port a base chain `in_<port>` on that TAP's ingress hook whose only rule
//! jumps to `guard`. A port is guarded by adding its chain and its two elements in one
//! transaction, and released by deleting them the same way (the chain first); both go over
//! netlink directly (nfnetlink.rs), since `nft` re-reads every chain before each command.
//! Start-up rebuilds the whole table in one `nft` transaction. The chain is added once the TAP exists (kernels before
//! 6.16 refuse a hook on an absent device) and before it is up or any fd of it leaves.
//!
//! By table: `guards.rs` (bridge ports, macvtaps), `routed.rs` (isolated and masquerade
//! networks), `nat.rs` (bridge NAT, a guest namespace's NAT); `session.rs` runs `nft`.
//!
//! Each line sent is followed by `list table bridge tapmanager_sync` (an empty table): when its
//! listing arrives on stdout, the line before it has been committed, and anything on stderr
//! by then is that line's error.

mod guards;
mod l3;
mod nat;
mod routed;
mod session;

use guards::*;
pub use guards::{
    nd_guard_script, nd_sources, own_table_script, port_script, MacvtapGuard, PortGuard, ShardSeal,
};
use l3::*;
pub use l3::{L3Net, L3Port};
use nat::*;
pub use nat::{guest_nat_script, GuestNat, Hairpin, NatBridge};
use routed::*;
pub use routed::{routed_port_script, RoutedNet, RoutedNet6, RoutedPort};
use session::*;
pub use session::{remove_all_tables, run_nft_once};

use ipnet::Ipv4Net;
use protocol::{IfName, MacAddr};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

/// The guards' table: `netdev tapmanager`.
const GUARDS_TABLE: &str = "netdev tapmanager";
/// Where the guards were before the netdev family: removed at start-up.
const OLD_BRIDGE_TABLE: &str = "bridge tapmanager";
const ROUTED: &str = "inet tapmanager_routed";
const NAT: &str = "ip tapmanager_nat";
const NAT6: &str = "ip6 tapmanager_nat6";
const MACVTAP: &str = "netdev tapmanager_macvtap";
const BRIDGE_NAT: &str = "ip tapmanager_bridge_nat";
const BRIDGE_NAT6: &str = "ip6 tapmanager_bridge_nat6";
const HAIRPIN: &str = "inet tapmanager_hairpin";

const SYNC_TABLE: &str = "tapmanager_sync";
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error("cannot start `nft -i` (is the nftables package installed?)")]
    Spawn(#[source] std::io::Error),
    #[error("talking to `nft -i` failed")]
    Io(#[source] std::io::Error),
    #[error("`nft -i` exited unexpectedly")]
    Exited,
    #[error("`nft` did not answer within {TIMEOUT:?}")]
    Timeout,
    #[error("nft refused `{script}`: {stderr}")]
    Refused { script: String, stderr: String },
    #[error("cannot open a netlink socket to nf_tables")]
    Netlink(#[source] std::io::Error),
    #[error("nf_tables refused to {what} the guards of port {port}")]
    Port {
        what: &'static str,
        port: String,
        #[source]
        source: std::io::Error,
    },
}

/// Every table, rebuilt in one transaction with exactly these ports.
pub fn rebuild_script(
    ports: &[PortGuard],
    routed: &[RoutedNet],
    routed_ports: &[RoutedPort],
    macvtaps: &[MacvtapGuard],
) -> String {
    let mut s = format!(
        "add table {OLD_BRIDGE_TABLE}; delete table {OLD_BRIDGE_TABLE}; \
         add table {GUARDS_TABLE}; delete table {GUARDS_TABLE}; {}",
        base_script()
    );
    for p in ports {
        write!(s, "; {}", port_script(p)).unwrap();
    }
    if !routed.is_empty() {
        write!(
            s,
            "; add table {ROUTED}; delete table {ROUTED}; add table {NAT}; delete table {NAT}; \
             add table {NAT6}; delete table {NAT6}; {}",
            routed_base_script(routed)
        )
        .unwrap();
        for p in routed_ports {
            write!(s, "; {}", routed_port_script(p)).unwrap();
        }
    }
    write!(s, "; add table {MACVTAP}; delete table {MACVTAP}").unwrap();
    for g in macvtaps {
        write!(s, "; {}", macvtap_guard_script(g)).unwrap();
    }
    s
}

/// The firewall of one network namespace: a serialized `nft -i` session, restarted if it dies.
#[derive(Debug)]
pub struct Firewall {
    session: Mutex<Option<Session>>,
    /// A second `nft -i` for teardown's deletes, so an attach never queues behind them.
    teardown: Mutex<Option<Session>>,
    /// Ports' guards, over netlink (nfnetlink.rs): constant cost per port.
    ports: crate::net::nfnetlink::GuardPorts,
    routed: Vec<RoutedNet>,
    /// The routed kind's networks (l3.rs).
    l3: Vec<L3Net>,
}

impl Firewall {
    /// Starts `nft -i` in the calling thread's network namespace and makes sure the table exists.
    /// `routed` are the routed networks' filters and NAT, set up here and in every rebuild;
    /// `nat_bridges` the bridge networks that masquerade, set up here once.
    /// `l3` the routed kind's networks: their tables are made in every rebuild (start-up's).
    pub async fn start(
        routed: Vec<RoutedNet>,
        l3: Vec<L3Net>,
        nat_bridges: &[NatBridge],
        hairpins: &[Hairpin],
    ) -> Result<Firewall, FirewallError> {
        let fw = Firewall {
            session: Mutex::new(Some(Session::spawn().await?)),
            teardown: Mutex::new(None),
            ports: crate::net::nfnetlink::GuardPorts::open().map_err(FirewallError::Netlink)?,
            routed,
            l3,
        };
        fw.run(&base_script()).await?;
        fw.run(&bridge_nat_script(nat_bridges)).await?;
        fw.run(&hairpin_script(hairpins)).await?;
        // The routed kind's tables are made in the start-up rebuild only, with their ports in
        // the same transaction (l3.rs says why).
        if !fw.routed.is_empty() {
            fw.run(&routed_base_script(&fw.routed)).await?;
        }
        Ok(fw)
    }

    async fn run(&self, script: &str) -> Result<(), FirewallError> {
        Self::run_on(&self.session, script).await
    }

    /// Runs `script` on one of the sessions, starting it if needed.
    async fn run_on(slot: &Mutex<Option<Session>>, script: &str) -> Result<(), FirewallError> {
        let mut guard = slot.lock().await;
        if guard.is_none() {
            *guard = Some(Session::spawn().await?);
        }
        let session = guard.as_mut().expect("set above");
        let r = tokio::time::timeout(TIMEOUT, session.run(script))
            .await
            .unwrap_or(Err(FirewallError::Timeout));
        if matches!(
            r,
            Err(FirewallError::Io(_) | FirewallError::Exited | FirewallError::Timeout)
        ) {
            // The session is in an unknown state: drop it (kill_on_drop) and start anew next time.
            if let Some(mut s) = guard.take() {
                s.kill();
            }
        }
        r
    }

    /// Hooks in one port's guards, atomically (the same as [`port_script`], over netlink).
    pub fn add_port(&self, p: &PortGuard) -> Result<(), FirewallError> {
        self.ports.add(p).map_err(|source| FirewallError::Port {
            what: "add",
            port: p.ifname.to_string(),
            source,
        })
    }

    /// Removes one port's guards. Idempotent: a port that has none is done.
    pub fn remove_port(&self, p: &PortGuard) -> Result<(), FirewallError> {
        self.ports.remove(p).map_err(|source| FirewallError::Port {
            what: "remove",
            port: p.ifname.to_string(),
            source,
        })
    }

    /// Puts a routed guest's link under its network's rules, atomically.
    pub async fn add_routed_port(&self, p: &RoutedPort) -> Result<(), FirewallError> {
        self.run(&routed_port_script(p)).await
    }

    /// Guards a macvtap (its MAC, its IPv6), atomically.
    pub async fn add_macvtap_guard(&self, g: &MacvtapGuard) -> Result<(), FirewallError> {
        self.run(&macvtap_guard_script(g)).await
    }

    /// Removes a macvtap's guard (already gone with its device is fine).
    pub async fn remove_macvtap_guard(&self, ifname: &IfName) -> Result<(), FirewallError> {
        self.remove_all(vec![format!("delete chain {MACVTAP} out_{ifname}")])
            .await
    }

    /// Takes a routed guest's link out of the rules. Idempotent.
    pub async fn remove_routed_port(&self, p: &RoutedPort) -> Result<(), FirewallError> {
        self.remove_all(routed_remove_commands(p)).await
    }

    /// Deletes elements in one transaction, or one by one past those already gone.
    async fn remove_all(&self, all: Vec<String>) -> Result<(), FirewallError> {
        match Self::run_on(&self.teardown, &all.join("; ")).await {
            Err(FirewallError::Refused { stderr, .. }) if stderr.contains("No such file") => {
                // Some are already gone; remove what is left, one at a time.
                for one in all {
                    match Self::run_on(&self.teardown, &one).await {
                        Ok(()) => {}
                        Err(FirewallError::Refused { stderr, .. })
                            if stderr.contains("No such file") => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            r => r,
        }
    }

    /// Replaces every table with exactly these ports and shard seals, in one transaction
    /// (start-up reconcile).
    pub async fn rebuild(
        &self,
        ports: &[PortGuard],
        routed_ports: &[RoutedPort],
        macvtaps: &[MacvtapGuard],
        seals: &[ShardSeal],
        l3_ports: &[L3Port],
    ) -> Result<(), FirewallError> {
        let mut s = rebuild_script(ports, &self.routed, routed_ports, macvtaps);
        for seal in seals {
            write!(s, "; {}", seal_script(seal)).unwrap();
        }
        write!(s, "; {}", l3_base_script(&self.l3)).unwrap();
        for p in l3_ports {
            write!(s, "; {}", l3_port_script(p)).unwrap();
        }
        self.run(&s).await
    }

    /// Puts a routed network's guest TAP under its network's rules (one element, over
    /// netlink: constant cost with any number of guests, as a port's guards).
    pub fn add_l3_port(&self, p: &L3Port) -> Result<(), FirewallError> {
        self.ports
            .add_l3(&format!("ports_{}", p.net), p.ifname.as_str())
            .map_err(|source| FirewallError::Port {
                what: "add to its network's set",
                port: p.ifname.to_string(),
                source,
            })
    }

    /// Takes a routed network's guest TAP out of its rules. Idempotent.
    pub fn remove_l3_port(&self, p: &L3Port) -> Result<(), FirewallError> {
        self.ports
            .remove_l3(&format!("ports_{}", p.net), p.ifname.as_str())
            .map_err(|source| FirewallError::Port {
                what: "remove from its network's set",
                port: p.ifname.to_string(),
                source,
            })
    }

    /// Seals a new shard of a bridge network ([`ShardSeal`]), atomically.
    pub async fn seal_shard(&self, seal: &ShardSeal) -> Result<(), FirewallError> {
        self.run(&seal_script(seal)).await
    }
}

#[cfg(test)]
mod tests {

    /// The two NATs that were two scripts (the masquerade kind's, a pod's masquerade
    /// binding): the same text as each wrote before they became one builder.
    #[test]
    fn guest_nat_for_a_masquerade_namespace_and_for_a_pod() {
        let guest: std::net::Ipv4Addr = "10.0.2.2".parse().unwrap();
        let kind = guest_nat_script(&GuestNat {
            table: "tapmanager_guest",
            out: "veth0",
            guest,
            guest6: None,
            source_only: false,
            forwards: vec![("tcp", 80, 80)],
            confine: None,
        });
        assert_eq!(
            kind,
            "table ip tapmanager_guest {\n  chain postrouting { type nat hook postrouting priority 100; policy accept;\n    oifname \"veth0\" masquerade\n  }\n  chain prerouting { type nat hook prerouting priority -100; policy accept;\n    iifname \"veth0\" tcp dport 80 dnat to 10.0.2.2:80\n  }\n}\n"
        );
        let pod = guest_nat_script(&GuestNat {
            table: "tapmanager_tm0",
            out: "eth0",
            guest,
            guest6: None,
            source_only: true,
            forwards: vec![("udp", 5353, 53)],
            confine: Some("tm0"),
        });
        assert_eq!(
            pod,
            "table ip tapmanager_tm0 {\n  chain postrouting { type nat hook postrouting priority 100; policy accept;\n    ip saddr 10.0.2.2 oifname \"eth0\" masquerade\n  }\n  chain prerouting { type nat hook prerouting priority -100; policy accept;\n    iifname \"eth0\" udp dport 5353 dnat to 10.0.2.2:53\n  }\n  chain forward { type filter hook forward priority 0; policy accept;\n    iifname \"tm0\" ip saddr != 10.0.2.2 counter drop\n    iifname \"tm0\" oifname != \"eth0\" counter drop\n    oifname \"tm0\" ct status dnat counter accept\n    oifname \"tm0\" ct state != { established, related } counter drop\n  }\n}\n"
        );
    }

    use super::*;

    fn guard() -> PortGuard {
        PortGuard {
            ifname: "tm0123456789".parse().unwrap(),
            mac: "02:11:22:33:44:55".parse().unwrap(),
            ip: Ipv4Addr::new(10, 88, 0, 2),
            ip6: Vec::new(),
            bridged: true,
        }
    }

    #[test]
    fn a_port_is_its_elements_and_an_ingress_chain_in_one_line() {
        let s = port_script(&guard());
        assert_eq!(
            s,
            "add element netdev tapmanager macs { \"tm0123456789\" . 02:11:22:33:44:55 }; \
             add element netdev tapmanager ips { \"tm0123456789\" . 10.88.0.2 }; \
             add element netdev tapmanager tapmacs { fe:11:22:33:44:55 }; \
             add chain netdev tapmanager in_tm0123456789 { type filter hook ingress device \"tm0123456789\" priority -500; policy accept; }; \
             add rule netdev tapmanager in_tm0123456789 jump guard"
        );
    }

    #[test]
    fn the_guard_chain_has_every_guard_of_design_5_and_no_bridge_hook() {
        let s = base_script();
        for want in [
            "guard iifname . ether saddr != @macs counter drop",
            "arp saddr ether != @macs counter drop",
            "arp saddr ip != 0.0.0.0 iifname . arp saddr ip != @ips counter drop",
            "udp dport 67 counter drop",
            "udp sport 67 counter drop",
            "iifname . ip saddr != @ips counter drop",
            "udp dport 68 counter drop",
            "ip6 saddr != :: iifname . ip6 saddr != @ip6s counter drop",
            "nd-neighbor-advert iifname . @th,64,128 != @nd6s counter drop",
            "nd-router-advert, nd-redirect",
            "ether type ip6 udp sport 547 counter drop",
            "ether type != { ip, arp, ip6 } counter drop",
        ] {
            assert!(s.contains(want), "missing {want}");
        }
        // A bridge's hooks are skipped by link-local group MACs: none is used.
        assert!(
            !s.contains("hook forward") && !s.contains("hook input"),
            "{s}"
        );
        assert!(!s.contains('\n'));
    }

    #[test]
    fn routed_rules_say_what_isolated_networks_mean() {
        let net = RoutedNet {
            index: 0,
            range: "169.254.100.0/22".parse().unwrap(),
            uplink: "up0".parse().unwrap(),
            drop: vec!["192.168.1.0/24".parse().unwrap()],
            allow: Some(vec!["192.168.0.0/16".parse().unwrap()]),
            forwards: true,
            v6: Some(RoutedNet6 {
                range: "fd99::/48".parse().unwrap(),
                drop: vec!["fd00:1::/32".parse().unwrap()],
                allow: None,
            }),
        };
        let s = routed_base_script(std::slice::from_ref(&net));
        for want in [
            "iifname @iso_ports iifname . ether saddr . ip saddr != @iso_src counter drop",
            "iifname @iso_ports oifname @iso_ports counter drop",
            "oifname @iso_ports ct state != { established, related } counter drop",
            "add element inet tapmanager_routed drop_0 { 192.168.1.0/24 }",
            "iifname @ports_0 ip daddr  @drop_0 counter drop",
            "iifname @ports_0 oifname != \"up0\" counter drop",
            "iifname @ports_0 ip daddr != @allow_0 counter drop",
            "add rule inet tapmanager_routed input iifname @iso_ports counter drop",
            "ip saddr 169.254.100.0/22 oifname \"up0\" counter masquerade",
            "oifname @iso_ports ct status dnat counter accept",
            "prerouting iifname \"up0\" dnat ip to tcp dport map @fwd_tcp_0",
            "iifname @iso_ports meta nfproto ipv6 iifname . ether saddr . ip6 saddr != @iso_src6 counter drop",
            "add element inet tapmanager_routed drop6_0 { fd00:1::/32 }",
            "iifname @ports_0 ip6 daddr  @drop6_0 counter drop",
            "add rule ip6 tapmanager_nat6 postrouting ip6 saddr fd99::/48 oifname \"up0\" counter masquerade",
        ] {
            assert!(s.contains(want), "missing {want}\n{s}");
        }
        let port = RoutedPort {
            ifname: "tm0123456789".parse().unwrap(),
            net: 0,
            mac: "f6:00:00:00:00:01".parse().unwrap(),
            ip: Ipv4Addr::new(169, 254, 100, 2),
            gateway: None,
            forwards: vec![("tcp", 8080, 80)],
            ip6: None,
            host6: None,
        };
        assert_eq!(
            routed_port_script(&port),
            "add element inet tapmanager_routed iso_src { \"tm0123456789\" . f6:00:00:00:00:01 . 169.254.100.2 }; \
             add element ip tapmanager_nat fwd_tcp_0 { 8080 : 169.254.100.2 . 80 }; \
             add element inet tapmanager_routed ports_0 { \"tm0123456789\" }; \
             add element inet tapmanager_routed iso_ports { \"tm0123456789\" }"
        );
        let all = rebuild_script(&[], &[net], &[port], &[]);
        assert!(all.contains("delete table inet tapmanager_routed; add table ip tapmanager_nat; delete table ip tapmanager_nat"));
        assert!(!all.contains('\n'));
    }

    #[test]
    fn a_nat_bridge_is_masqueraded_out_and_closed_in() {
        let any = NatBridge {
            bridge: "tmbr0".parse().unwrap(),
            subnet: "10.88.0.0/24".parse().unwrap(),
            subnet6: None,
            uplink: None,
        };
        let s = bridge_nat_script(std::slice::from_ref(&any));
        assert!(s.starts_with(
            "add table ip tapmanager_bridge_nat; delete table ip tapmanager_bridge_nat; add table"
        ));
        assert!(s.contains("forward oifname \"tmbr0\" ct state established,related accept; add rule ip tapmanager_bridge_nat forward oifname \"tmbr0\" counter drop"));
        assert!(s.contains("ip saddr 10.88.0.0/24 ip daddr != 10.88.0.0/24 ip daddr != { 224.0.0.0/4, 255.255.255.255 } oifname != \"tmbr0\" counter masquerade"));
        assert!(!s.contains("oifname != \"up0\""));
        let one = NatBridge {
            uplink: Some("up0".parse().unwrap()),
            ..any.clone()
        };
        let s = bridge_nat_script(&[one]);
        assert!(s.contains("forward iifname \"tmbr0\" oifname != \"up0\" counter drop"));
        assert!(s.contains("oifname \"up0\" counter masquerade"));
        // Without IPv6 the ip6 table is only removed.
        assert!(s.ends_with(
            "; add table ip6 tapmanager_bridge_nat6; delete table ip6 tapmanager_bridge_nat6"
        ));
        let dual = NatBridge {
            subnet6: Some("fd88::/64".parse().unwrap()),
            ..any.clone()
        };
        let s = bridge_nat_script(&[dual]);
        assert!(s.contains(
            "add rule ip6 tapmanager_bridge_nat6 forward oifname \"tmbr0\" counter drop"
        ));
        assert!(s.contains("ip6 saddr fd88::/64 ip6 daddr != fd88::/64 ip6 daddr != { ff00::/8, fe80::/10 } oifname != \"tmbr0\" counter masquerade"));
        assert!(s.contains("ip saddr 10.88.0.0/24 ip daddr != 10.88.0.0/24"));
        // None configured: the tables go, nothing else is made.
        assert_eq!(
            bridge_nat_script(&[]),
            "add table ip tapmanager_bridge_nat; delete table ip tapmanager_bridge_nat; \
             add table ip6 tapmanager_bridge_nat6; delete table ip6 tapmanager_bridge_nat6"
        );
    }

    #[test]
    fn rebuild_starts_from_an_empty_table() {
        let mac = guard().mac;
        let mv = MacvtapGuard {
            ifname: guard().ifname,
            mac,
            eui64_only: true,
        };
        let s = rebuild_script(&[guard()], &[], &[], &[mv]);
        // The macvtap guest's identifier: 02:11:22:33:44:55 gives 0011:22ff:fe33:4455.
        assert!(
            s.contains("ip6 saddr & ::ffff:ffff:ffff:ffff != ::11:22ff:fe33:4455 counter drop"),
            "{s}"
        );
        assert!(
            s.contains("nd-neighbor-advert @th,128,64 != 0x001122fffe334455 counter drop"),
            "{s}"
        );
        assert!(s.starts_with(
            "add table bridge tapmanager; delete table bridge tapmanager; \
             add table netdev tapmanager; delete table netdev tapmanager; add table"
        ));
        assert!(s.contains(&port_script(&guard())));
        assert!(s.contains(
            "add table netdev tapmanager_macvtap; delete table netdev tapmanager_macvtap; \
             add table netdev tapmanager_macvtap; add chain netdev tapmanager_macvtap out_tm0123456789 \
             { type filter hook egress device \"tm0123456789\" priority 0; policy accept; }; \
             add rule netdev tapmanager_macvtap out_tm0123456789 ether saddr != 02:11:22:33:44:55 counter drop"
        ));
        assert!(!s.contains('\n'));
    }
}
