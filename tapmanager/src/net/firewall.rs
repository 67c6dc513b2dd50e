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
//! Each line sent is followed by `list table bridge tapmanager_sync` (an empty table): when its
//! listing arrives on stdout, the line before it has been committed, and anything on stderr
//! by then is that line's error.

use ipnet::Ipv4Net;
use protocol::{IfName, MacAddr};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
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
const MACVTAP: &str = "netdev tapmanager_macvtap";
const BRIDGE_NAT: &str = "ip tapmanager_bridge_nat";

/// A macvtap's source-MAC guard: a base chain on the device's egress hook (the guest's frames
/// leave through the macvtap device). Kernels before 6.16 drop the chain with the device;
/// 6.18 keeps it, hooked to nothing: teardown deletes it either way.
fn macvtap_guard_script(ifname: &IfName, mac: MacAddr) -> String {
    format!(
        "add table {MACVTAP}; add chain {MACVTAP} out_{ifname} {{ type filter hook egress device \"{ifname}\" priority 0; policy accept; }}; \
         add rule {MACVTAP} out_{ifname} ether saddr != {mac} counter drop"
    )
}
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

/// What one port may send: its guest's MAC and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortGuard {
    pub ifname: IfName,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
}

/// The guards of DESIGN.md §5, for every port at once: source MAC and ARP sender MAC from the
/// port's `macs` entry, source IPv4 and ARP sender IP from its `ips` entry (ARP probes from
/// 0.0.0.0 pass), DHCP kept on the port (our server answers it there), no DHCP server in the
/// guest (from port 67 or to port 68), no IPv6 (so no router advertisements, DHCPv6 or
/// neighbour spoofing), nothing but IPv4 and ARP. `ether type` is the outer type also for a
/// tagged frame whose tag the kernel took off before the hook, so 802.1Q and 802.1ad frames
/// end in the last rule.
const GUARDS: [&str; 9] = [
    "iifname . ether saddr != @macs counter drop",
    "ether type arp iifname . arp saddr ether != @macs counter drop",
    "ether type arp arp saddr ip != 0.0.0.0 iifname . arp saddr ip != @ips counter drop",
    "ether type ip udp dport 67 counter drop",
    "ether type ip udp sport 67 counter drop",
    "ether type ip udp dport 68 counter drop",
    "ether type ip iifname . ip saddr != @ips counter drop",
    // No network hands out IPv6 yet, and an IPv6 source cannot be checked against a lease:
    // neighbour advertisements and redirects could poison other guests' caches.
    "ether type ip6 counter drop",
    "ether type != { ip, arp } counter drop",
];

/// The table, its sets and the guard chain. `add` of an existing object is a no-op in nft,
/// and the chain is flushed before its rules are added, so this converges.
fn base_script() -> String {
    let t = GUARDS_TABLE;
    let mut s = format!(
        "add table {t}; \
         add set {t} macs {{ type ifname . ether_addr; }}; \
         add set {t} ips {{ type ifname . ipv4_addr; }}; \
         add chain {t} guard; flush chain {t} guard"
    );
    for rule in GUARDS {
        write!(s, "; add rule {t} guard {rule}").unwrap();
    }
    s
}

/// The base chain that sends every frame of one TAP through `guard`, at the earliest
/// priority among nftables ingress chains.
fn port_chain(ifname: &IfName) -> String {
    format!(
        "add chain {GUARDS_TABLE} in_{ifname} {{ type filter hook ingress device \"{ifname}\" priority -500; policy accept; }}; \
         add rule {GUARDS_TABLE} in_{ifname} jump guard"
    )
}

/// The elements that guard one port: its MAC and its address.
fn elements(p: &PortGuard) -> [(&'static str, String); 2] {
    let (mac, ip, ifname) = (p.mac, p.ip, &p.ifname);
    [
        ("macs", format!("\"{ifname}\" . {mac}")),
        ("ips", format!("\"{ifname}\" . {ip}")),
    ]
}

/// The commands that guard one port: what it may send, then the hook that checks it. Used
/// by the start-up rebuild; an attach sends the same over netlink (nfnetlink.rs).
pub fn port_script(p: &PortGuard) -> String {
    let mut s = elements(p)
        .iter()
        .map(|(set, e)| format!("add element {GUARDS_TABLE} {set} {{ {e} }}"))
        .collect::<Vec<_>>()
        .join("; ");
    write!(s, "; {}", port_chain(&p.ifname)).unwrap();
    s
}

/// A routed network (the isolated kind): its guests' traffic is filtered and NATed by the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedNet {
    /// Position among the routed networks; names its sets (`ports_N`, `drop_N`, `allow_N`).
    pub index: usize,
    pub range: Ipv4Net,
    pub uplink: IfName,
    pub drop: Vec<Ipv4Net>,
    pub allow: Option<Vec<Ipv4Net>>,
    /// Masquerade networks' port forwards: maps `fwd_tcp_N`/`fwd_udp_N` from host port to
    /// (guest namespace's transit address, port), consulted for packets from the uplink.
    pub forwards: bool,
}

/// One guest's host-side link on a routed network, and the only source it may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedPort {
    pub ifname: IfName,
    pub net: usize,
    /// The source MAC the host sees on the link: the guest's own when the TAP is joined to
    /// the veth, the namespace side's when the namespace routes.
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    /// The guest's gateway when it is a host address (a joined binding): the one host address
    /// the guest may ping, as it can ping a routed namespace's TAP.
    pub gateway: Option<Ipv4Addr>,
    /// (proto, host port, guest port): forwarded from the uplink to `ip`.
    pub forwards: Vec<(&'static str, u16, u16)>,
}

fn cidrs(list: &[Ipv4Net]) -> String {
    list.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Tables `inet tapmanager_routed` (filter) and `ip tapmanager_nat`: guests' source addresses
/// checked, no IPv6 routed, no guest-to-guest, nothing initiated towards a guest, nothing to
/// the host's own addresses, each network's drop/allow lists, and masquerade out of its uplink.
fn routed_base_script(nets: &[RoutedNet]) -> String {
    let r = ROUTED;
    let mut s = format!(
        "add table {r}; add set {r} iso_ports {{ type ifname; }}; \
         add set {r} iso_src {{ type ifname . ether_addr . ipv4_addr; }}; \
         add set {r} iso_gw {{ type ifname . ipv4_addr; }}"
    );
    let mut per_net = String::new();
    let mut nat = String::new();
    for n in nets {
        let i = n.index;
        write!(s, "; add set {r} ports_{i} {{ type ifname; }}").unwrap();
        // Out by the uplink only: not onto a bridge network, another VM network or a VLAN.
        write!(
            per_net,
            "; add rule {r} forward iifname @ports_{i} oifname != \"{}\" counter drop",
            n.uplink
        )
        .unwrap();
        let mut list = |name: &str, cidrs_of: &[Ipv4Net], rule: &str| {
            write!(s, "; add set {r} {name}_{i} {{ type ipv4_addr; flags interval; auto-merge; }}; flush set {r} {name}_{i}").unwrap();
            if !cidrs_of.is_empty() {
                write!(s, "; add element {r} {name}_{i} {{ {} }}", cidrs(cidrs_of)).unwrap();
            }
            write!(per_net, "; add rule {r} forward iifname @ports_{i} ip daddr {rule} @{name}_{i} counter drop").unwrap();
        };
        list("drop", &n.drop, "");
        if let Some(allow) = &n.allow {
            list("allow", allow, "!=");
        }
        if n.forwards {
            for proto in ["tcp", "udp"] {
                write!(
                    nat,
                    "; add map {NAT} fwd_{proto}_{i} {{ type inet_service : ipv4_addr . inet_service; }}\
                     ; add rule {NAT} prerouting iifname \"{}\" dnat ip to {proto} dport map @fwd_{proto}_{i}",
                    n.uplink
                )
                .unwrap();
            }
        }
    }
    write!(
        s,
        "; add chain {r} forward {{ type filter hook forward priority 0; policy accept; }}; flush chain {r} forward\
         ; add rule {r} forward iifname @iso_ports meta nfproto ipv6 counter drop\
         ; add rule {r} forward iifname @iso_ports iifname . ether saddr . ip saddr != @iso_src counter drop\
         ; add rule {r} forward iifname @iso_ports oifname @iso_ports counter drop\
         ; add rule {r} forward oifname @iso_ports ct status dnat counter accept\
         ; add rule {r} forward oifname @iso_ports ct state != {{ established, related }} counter drop\
         {per_net}\
         ; add chain {r} input {{ type filter hook input priority 0; policy accept; }}; flush chain {r} input\
         ; add rule {r} input iifname . ip daddr @iso_gw icmp type echo-request counter accept\
         ; add rule {r} input iifname @iso_ports counter drop\
         ; add table {NAT}; add chain {NAT} postrouting {{ type nat hook postrouting priority 100; policy accept; }}\
         ; flush chain {NAT} postrouting\
         ; add chain {NAT} prerouting {{ type nat hook prerouting priority -100; policy accept; }}\
         ; flush chain {NAT} prerouting{nat}"
    )
    .unwrap();
    for n in nets {
        write!(
            s,
            "; add rule {NAT} postrouting ip saddr {} oifname \"{}\" counter masquerade",
            n.range, n.uplink
        )
        .unwrap();
    }
    s
}

/// A bridge network with `nat = true`: libvirt's default network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatBridge {
    pub bridge: IfName,
    pub subnet: Ipv4Net,
    /// Out of this interface only; `None`: out of any but the bridge (where routes lead).
    pub uplink: Option<IfName>,
}

/// Table `ip tapmanager_bridge_nat`, always replaced whole (it depends on the config only):
/// the guests' subnet is masqueraded when it leaves the host, answers come back, and nothing
/// else is forwarded to the bridge (nothing may open a connection to a guest from outside).
fn bridge_nat_script(nets: &[NatBridge]) -> String {
    let t = BRIDGE_NAT;
    let mut s = format!("add table {t}; delete table {t}");
    if nets.is_empty() {
        return s;
    }
    write!(
        s,
        "; add table {t}\
         ; add chain {t} forward {{ type filter hook forward priority 0; policy accept; }}\
         ; add chain {t} postrouting {{ type nat hook postrouting priority 100; policy accept; }}"
    )
    .unwrap();
    for n in nets {
        let (br, subnet) = (&n.bridge, n.subnet);
        // Bridged frames between two guests (seen here with br_netfilter) stay allowed.
        write!(
            s,
            "; add rule {t} forward iifname \"{br}\" oifname \"{br}\" accept\
             ; add rule {t} forward oifname \"{br}\" ct state established,related accept\
             ; add rule {t} forward oifname \"{br}\" counter drop\
             ; add rule {t} forward iifname \"{br}\" ip saddr != {subnet} counter drop"
        )
        .unwrap();
        let out = match &n.uplink {
            Some(u) => {
                write!(
                    s,
                    "; add rule {t} forward iifname \"{br}\" oifname != \"{u}\" counter drop"
                )
                .unwrap();
                format!("oifname \"{u}\"")
            }
            None => format!("oifname != \"{br}\""),
        };
        write!(
            s,
            "; add rule {t} postrouting ip saddr {subnet} ip daddr != {subnet} \
             ip daddr != {{ 224.0.0.0/4, 255.255.255.255 }} {out} counter masquerade"
        )
        .unwrap();
    }
    s
}

/// (table, set, element) for one routed port: the port itself last, so it is never half-set.
fn routed_elements(p: &RoutedPort) -> Vec<(&'static str, String, String)> {
    let (ifname, mac, ip) = (&p.ifname, p.mac, p.ip);
    let mut v = vec![(
        ROUTED,
        "iso_src".to_owned(),
        format!("\"{ifname}\" . {mac} . {ip}"),
    )];
    if let Some(gw) = p.gateway {
        v.push((ROUTED, "iso_gw".to_owned(), format!("\"{ifname}\" . {gw}")));
    }
    for (proto, host, guest) in &p.forwards {
        v.push((
            NAT,
            format!("fwd_{proto}_{}", p.net),
            format!("{host} : {ip} . {guest}"),
        ));
    }
    v.push((ROUTED, format!("ports_{}", p.net), format!("\"{ifname}\"")));
    v.push((ROUTED, "iso_ports".to_owned(), format!("\"{ifname}\"")));
    v
}

/// The commands that put one guest's link under its network's rules.
pub fn routed_port_script(p: &RoutedPort) -> String {
    routed_elements(p)
        .iter()
        .map(|(t, set, e)| format!("add element {t} {set} {{ {e} }}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn routed_remove_commands(p: &RoutedPort) -> Vec<String> {
    routed_elements(p)
        .iter()
        .rev()
        .map(|(t, set, e)| format!("delete element {t} {set} {{ {e} }}"))
        .collect()
}

/// Every table, rebuilt in one transaction with exactly these ports.
pub fn rebuild_script(
    ports: &[PortGuard],
    routed: &[RoutedNet],
    routed_ports: &[RoutedPort],
    macvtaps: &[(IfName, MacAddr)],
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
            "; add table {ROUTED}; delete table {ROUTED}; add table {NAT}; delete table {NAT}; {}",
            routed_base_script(routed)
        )
        .unwrap();
        for p in routed_ports {
            write!(s, "; {}", routed_port_script(p)).unwrap();
        }
    }
    write!(s, "; add table {MACVTAP}; delete table {MACVTAP}").unwrap();
    for (ifname, mac) in macvtaps {
        write!(s, "; {}", macvtap_guard_script(ifname, *mac)).unwrap();
    }
    s
}

#[derive(Debug)]
struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// Non-blocking, read directly (not through tokio): see [`Session::run`].
    stderr: OwnedFd,
}

/// Where `nft` may be: system directories only, never `$PATH` (the daemon's environment is
/// not a config file).
const NFT_PATHS: [&str; 4] = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft", "/bin/nft"];

/// `nft` by absolute path, with an empty environment and CAP_NET_ADMIN as its only capability
/// (privileges.rs): it needs nothing else of the daemon's.
fn nft_command() -> std::io::Result<std::process::Command> {
    let path = NFT_PATHS
        .iter()
        .find(|p| std::path::Path::new(p).is_file())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "nft is not in {}: install the nftables package",
                    NFT_PATHS.join(", ")
                ),
            )
        })?;
    let mut cmd = std::process::Command::new(path);
    cmd.env_clear();
    crate::privileges::confine(&mut cmd, &[caps::Capability::CAP_NET_ADMIN]);
    Ok(cmd)
}

impl Session {
    async fn spawn() -> Result<Session, FirewallError> {
        let mut child = Command::from(nft_command().map_err(FirewallError::Spawn)?)
            .arg("-i")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(FirewallError::Spawn)?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(FirewallError::Exited);
        };
        let stderr = stderr.into_owned_fd().map_err(FirewallError::Io)?;
        let flags = nix::fcntl::fcntl(&stderr, nix::fcntl::FcntlArg::F_GETFL)
            .map_err(|e| FirewallError::Io(e.into()))?;
        let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&stderr, nix::fcntl::FcntlArg::F_SETFL(flags))
            .map_err(|e| FirewallError::Io(e.into()))?;
        let mut s = Session {
            child,
            stdin,
            stdout,
            stderr,
        };
        s.run(&format!("add table bridge {SYNC_TABLE}")).await?;
        Ok(s)
    }

    /// Sends one line (one transaction) and waits until nft has processed it.
    async fn run(&mut self, script: &str) -> Result<(), FirewallError> {
        debug_assert!(!script.contains('\n'));
        let line = format!("{script}\nlist table bridge {SYNC_TABLE}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(FirewallError::Io)?;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // The sync table's listing ends with a closing brace in column 0.
        while !(out.ends_with(b"\n}\n")
            && out
                .windows(SYNC_TABLE.len())
                .any(|w| w == SYNC_TABLE.as_bytes()))
        {
            let n = self
                .stdout
                .read(&mut buf)
                .await
                .map_err(FirewallError::Io)?;
            if n == 0 {
                return Err(FirewallError::Exited);
            }
            out.extend_from_slice(&buf[..n]);
        }
        // nft writes a line's errors before it reads the next line, so they are there now.
        // A plain non-blocking read: it sees exactly what is in the pipe now.
        let mut err = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = nix::unistd::read(&self.stderr, &mut chunk) {
            err.extend_from_slice(&chunk[..n]);
        }
        if err.is_empty() {
            Ok(())
        } else {
            Err(FirewallError::Refused {
                script: script.to_owned(),
                stderr: String::from_utf8_lossy(&err).trim().to_owned(),
            })
        }
    }
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
}

impl Firewall {
    /// Starts `nft -i` in the calling thread's network namespace and makes sure the table exists.
    /// `routed` are the routed networks' filters and NAT, set up here and in every rebuild;
    /// `nat_bridges` the bridge networks that masquerade, set up here once.
    pub async fn start(
        routed: Vec<RoutedNet>,
        nat_bridges: &[NatBridge],
    ) -> Result<Firewall, FirewallError> {
        let fw = Firewall {
            session: Mutex::new(Some(Session::spawn().await?)),
            teardown: Mutex::new(None),
            ports: crate::net::nfnetlink::GuardPorts::open().map_err(FirewallError::Netlink)?,
            routed,
        };
        fw.run(&base_script()).await?;
        fw.run(&bridge_nat_script(nat_bridges)).await?;
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
                let _ = s.child.start_kill(); // already dying or dead is fine
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

    /// Guards a macvtap's source MAC, atomically.
    pub async fn add_macvtap_guard(
        &self,
        ifname: &IfName,
        mac: MacAddr,
    ) -> Result<(), FirewallError> {
        self.run(&macvtap_guard_script(ifname, mac)).await
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

    /// Replaces every table with exactly these ports, in one transaction (start-up reconcile).
    pub async fn rebuild(
        &self,
        ports: &[PortGuard],
        routed_ports: &[RoutedPort],
        macvtaps: &[(IfName, MacAddr)],
    ) -> Result<(), FirewallError> {
        self.run(&rebuild_script(ports, &self.routed, routed_ports, macvtaps))
            .await
    }
}

/// The NAT of one guest behind a namespace of its own (the masquerade kind's, or a pod's
/// masquerade binding): the guest's traffic leaves by `out` masqueraded (only from `guest` when
/// `source_only`), and each forward `(proto, port on out, port of the guest)` arrives at the
/// guest. With `confine` (the guest's TAP), a forward chain also lets the guest send only
/// from its address and only out by `out`, and lets in only forwarded or answering traffic.
/// One `nft -f` script, run in that namespace.
#[derive(Debug)]
pub struct GuestNat<'a> {
    pub table: &'a str,
    pub out: &'a str,
    pub guest: std::net::Ipv4Addr,
    pub source_only: bool,
    pub forwards: Vec<(&'static str, u16, u16)>,
    pub confine: Option<&'a str>,
}

pub fn guest_nat_script(n: &GuestNat<'_>) -> String {
    let (t, out, guest) = (n.table, n.out, n.guest);
    let from = if n.source_only {
        format!("ip saddr {guest} ")
    } else {
        String::new()
    };
    let mut s = format!(
        "table ip {t} {{\n  chain postrouting {{ type nat hook postrouting priority 100; policy accept;\n    \
         {from}oifname \"{out}\" masquerade\n  }}\n  \
         chain prerouting {{ type nat hook prerouting priority -100; policy accept;\n"
    );
    for (proto, outside, inside) in &n.forwards {
        s.push_str(&format!(
            "    iifname \"{out}\" {proto} dport {outside} dnat to {guest}:{inside}\n"
        ));
    }
    s.push_str("  }\n");
    if let Some(tap) = n.confine {
        s.push_str(&format!(
            "  chain forward {{ type filter hook forward priority 0; policy accept;\n    \
             iifname \"{tap}\" ip saddr != {guest} counter drop\n    \
             iifname \"{tap}\" oifname != \"{out}\" counter drop\n    \
             oifname \"{tap}\" ct status dnat counter accept\n    \
             oifname \"{tap}\" ct state != {{ established, related }} counter drop\n  }}\n"
        ));
    }
    s.push_str("}\n");
    s
}

/// Deletes every table of the daemon's (`tapmanager down`; the daemon's `nft -i` must be done
/// with them). One transaction: `add` then `delete` removes a table whether or not it was
/// there (nft 1.0.6 has no `destroy`).
pub fn remove_all_tables() -> std::io::Result<()> {
    let sync = format!("bridge {SYNC_TABLE}");
    let script: String = [
        GUARDS_TABLE,
        OLD_BRIDGE_TABLE,
        ROUTED,
        NAT,
        MACVTAP,
        BRIDGE_NAT,
        &sync,
    ]
    .iter()
    .map(|t| format!("add table {t}\ndelete table {t}\n"))
    .collect();
    run_nft_once(&script, "the daemon's tables")
}

/// One `nft -f -` run in the calling thread's namespace (a guest's, entered on a thread of its
/// own): a persistent `nft -i` per guest namespace would be a process per VM.
pub fn run_nft_once(script: &str, what: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut child = nft_command()?
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no stdin"))?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "nft refused {what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
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
        }
    }

    #[test]
    fn a_port_is_its_elements_and_an_ingress_chain_in_one_line() {
        let s = port_script(&guard());
        assert_eq!(
            s,
            "add element netdev tapmanager macs { \"tm0123456789\" . 02:11:22:33:44:55 }; \
             add element netdev tapmanager ips { \"tm0123456789\" . 10.88.0.2 }; \
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
            "ether type ip6 counter drop",
            "ether type != { ip, arp } counter drop",
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
            ..any
        };
        let s = bridge_nat_script(&[one]);
        assert!(s.contains("forward iifname \"tmbr0\" oifname != \"up0\" counter drop"));
        assert!(s.contains("oifname \"up0\" counter masquerade"));
        // None configured: the table goes, nothing else is made.
        assert_eq!(
            bridge_nat_script(&[]),
            "add table ip tapmanager_bridge_nat; delete table ip tapmanager_bridge_nat"
        );
    }

    #[test]
    fn rebuild_starts_from_an_empty_table() {
        let mac = guard().mac;
        let s = rebuild_script(&[guard()], &[], &[], &[(guard().ifname, mac)]);
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
