//! `bench-attach`: attach latency of the bridge kind (or, with `--kind isolated`, of the
//! isolated kind), tapmanager against the usual way.
//!
//! Not a test and not in CI; run it as root on an otherwise quiet machine:
//!
//!     cargo build --release --workspace --bins && sudo target/release/bench-attach
//!
//! (`scripts/bench.sh` does both.) Everything happens in network namespaces made here; the
//! machine's own network is never touched, and the namespaces, the daemon and its directory are
//! removed on exit, on a panic, and on Ctrl-C (which is turned into an orderly stop).
//!
//! # What is measured
//!
//! - **tapmanager**: the release `tapmanager` binary next to this one, in the [`Sandbox`]
//!   fixture with its state dir on tmpfs (`/dev/shm` by default), as `/run/tapmanager` is in
//!   production, and logging at `info`, its production default. One attach is one
//!   `protocol::Client::attach` of one NIC on the `default` network: from the request being
//!   written to the reply and its TAP fd being received. The daemon then checks the caller,
//!   picks name, MAC and address, adds the port's guards (one line to its `nft -i`), creates
//!   the TAP (`TUNSETIFF`, owner, group), sets MTU, MAC, master and up (one netlink message),
//!   binds the port's DHCP socket and journals the attachment (write, fsync, rename, fsync).
//!   Measured twice: over one connection kept open, and with a new connection per attach
//!   (connect + handshake + attach, and the attach alone). Each attachment is released right
//!   after, over the same connection; releases are timed too, but not part of the ratio.
//! - **the usual way**: what an admin script does for the same port, in a namespace of its
//!   own with a bridge like the daemon's, one process per step, timed from the first
//!   process's start to the last one's exit: `ip tuntap add` (owner, group, vnet_hdr), the
//!   same guards as `ebtables` rules (the nft-backed ebtables of this machine), one process
//!   per rule, then one `ip link set X master BR mtu M address A up` (the combined form; four
//!   separate `ip link set` would only add processes). The guards are tapmanager's
//!   `firewall::port_script` rule for rule; where ebtables cannot say it in one rule it takes
//!   the rules an admin would write (see [`usual_guard_rules`]). Two layouts, both measured:
//!   a chain per port (`-N`, rules, jumps from FORWARD and INPUT: what the issue names, the
//!   ratio's reference) and flat rules in FORWARD and INPUT (more processes, but the cheapest
//!   ones here: the conservative comparison). Cleanup (`ip link del`, one `ebtables-restore
//!   --noflush`) runs after each sample, untimed, so every sample starts from the same rule
//!   set. The usual way does less than tapmanager: no DHCP server, no journal, no fd handed
//!   over.
//!
//! The daemon's own view, `micros` of its `attached` log line (guards, TAP, link, DHCP socket
//! and journal; not the request's parsing, checks or reply), is printed too, so the time in
//! the socket exchange and the daemon's dispatch can be told apart from the kernel work.
//!
//! `--held K` keeps K other ports attached (with their guards, on both sides) while measuring:
//! the cost of an attach on a host that already has many VMs.
//!
//! # `--kind isolated`
//!
//! The isolated kind (a network namespace, a veth, a TAP, routes and host rules per guest),
//! with the same daemon setup: the [`Sandbox`] on tmpfs, and an isolated network whose uplink
//! is a veth to a LAN namespace ([`lan`]; the daemon is restarted once the uplink exists, as
//! in `tests/tests/isolated.rs`). Everything runs one NIC, one queue, over one connection:
//!
//! 1. **attach and release**: warm-up, then N attaches, each released right after; the attach
//!    (request written to fds received) and the Release (request to reply) are timed apart.
//!    Release may leave its cleanup to the background: it is not waited for here.
//! 2. **background cleanup**: a few more attach + Release, each followed by polling (every
//!    0.25 ms, from a thread in the daemon's namespace) until its host veth, its namespace pin
//!    and its journal entry are all gone: the time from Release's reply to a finished cleanup.
//! 3. **teardown loop**: a second thread, over its own connection, attaches and releases
//!    guests in a loop while the measured client does warm-up + N attaches (each released,
//!    untimed): attach latency while other guests are being torn down. The loop closes each
//!    TAP fd after its Release, as an exiting hypervisor does: the kernel then removes the TAP,
//!    which takes ~30 ms here and paces the loop (timed, and shown as a row).
//!
//! After every phase the benchmark waits (up to 20 s) until nothing of the released guests is
//! left: no journal entry, no attachment listed, no host veth, no namespace pin or mount under
//! the state dir, no element in `inet tapmanager_routed`; it prints how long that took.
//!
//! **The usual way** for the same guest, in namespaces of its own, one process per step, timed
//! from the first process's start to the last one's exit (printed by the run, and see
//! [`usual_iso_commands`]): the host rules as `nft add element` processes, one per element of
//! `firewall::routed_port_script` (3 today), into the same tables the daemon uses (made once with
//! `firewall::rebuild_script`, untimed); then `ip netns add`, `ip link add .. type veth peer
//! name veth0 netns X`, `ip -n X tuntap add`, `ip -n X link set tap0 up`, `ip -n X addr add`,
//! `ip -n X link set veth0 up`, `ip -n X route add default`, `ip link set vH up`, `ip route add
//! N/30`: 12 processes. It does less than tapmanager: no IPv4 forwarding in the guest's
//! namespace, no static neighbour entries, no MTU or MAC set, no DHCP server, no journal, no fd
//! handed over. Cleanup, untimed, after each sample:
//! `ip link del`, `ip netns del`, one `nft -f -` deleting the 3 elements.

use protocol::{AttachRequest, Client, NetworkRequest, VmId};
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tapmanager_tests::sandbox::{
    bin, lan, Netns, Sandbox, SandboxOptions, BRIDGE, GATEWAY, UPLINK,
};

/// The group the sandbox daemon serves; the benchmark runs as root, so it is never used.
use tapmanager_tests::ids::bench_attach::GROUP;
/// The usual way's bridge and its MTU (the same MTU as the sandbox's `default` network).
const USUAL_BRIDGE: &str = "ubr0";
const MTU: u32 = 1400;
/// A Linux bridge takes at most 1024 ports (DESIGN.md §6); keep one free for the measured one.
const MAX_HELD: usize = 1000;

/// The sandbox's `default` network as the tests have it, but a /16, so that `--held` ports fit.
fn bench_networks() -> String {
    format!(
        r#"
[networks.default]
kind = "bridge"
bridge = "{BRIDGE}"
gateway = "{GATEWAY}/16"
dns = ["{GATEWAY}"]
mtu = {MTU}
"#
    )
}

/// Set by SIGINT; the loops check it and stop with a panic, so every `Drop` runs.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn check_interrupted() {
    assert!(
        !INTERRUPTED.load(Ordering::Relaxed),
        "interrupted; cleaning up"
    );
}

/// The network kind measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bridge,
    Isolated,
    Cni,
    Exit,
}

#[derive(Debug)]
struct Args {
    kind: Kind,
    attaches: usize,
    warmup: usize,
    held: usize,
    base_dir: PathBuf,
    log_filter: String,
    /// The isolated network's binding: routed, bridge or tc-redirect.
    binding: String,
}

const USAGE: &str =
    "usage: bench-attach [--kind bridge|isolated|cni (bridge)] [--attaches N (200)] \
[--warmup N (10)] [--held K (0)] [--binding routed|bridge|tc-redirect (routed)] \
[--state-base DIR (/dev/shm)] [--log FILTER (info)]

--kind: the network kind measured; isolated: a namespace, veth, TAP, routes and rules per guest;
cni: Debian's bridge + host-local plugins, and what the daemon adds on top of their ADD;
exit: from a guest's exit to its teardown being complete, on a bridge and an isolated network.
--held K: K other ports stay attached (with their guards) while both methods are measured
(bridge kind only).
--binding: the isolated network's binding (isolated kind only; the usual way stays routed).";

fn parse_args() -> Args {
    let mut args = Args {
        kind: Kind::Bridge,
        attaches: 200,
        warmup: 10,
        held: 0,
        base_dir: PathBuf::from("/dev/shm"),
        log_filter: "info".to_owned(),
        binding: "routed".to_owned(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let Some(value) = it.next() else {
            eprintln!("bench-attach: {flag} needs a value\n{USAGE}");
            std::process::exit(2);
        };
        let number = || {
            value.parse::<usize>().unwrap_or_else(|_| {
                eprintln!("bench-attach: {flag} takes a number, not {value:?}");
                std::process::exit(2)
            })
        };
        match flag.as_str() {
            "--attaches" => args.attaches = number().max(1),
            "--warmup" => args.warmup = number(),
            "--held" => args.held = number().min(MAX_HELD),
            "--state-base" => args.base_dir = PathBuf::from(&value),
            "--log" => args.log_filter = value,
            "--binding" => {
                if !["routed", "bridge", "tc-redirect"].contains(&value.as_str()) {
                    eprintln!("bench-attach: --binding is routed, bridge or tc-redirect");
                    std::process::exit(2);
                }
                args.binding = value;
            }
            "--kind" => {
                args.kind = match value.as_str() {
                    "bridge" => Kind::Bridge,
                    "isolated" => Kind::Isolated,
                    "cni" => Kind::Cni,
                    "exit" => Kind::Exit,
                    _ => {
                        eprintln!(
                            "bench-attach: --kind is bridge, isolated, cni or exit, not {value:?}"
                        );
                        std::process::exit(2);
                    }
                }
            }
            _ => {
                eprintln!("bench-attach: unknown argument {flag:?}\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    if args.kind == Kind::Isolated && args.held > 0 {
        eprintln!("bench-attach: --held is for the bridge kind only");
        std::process::exit(2);
    }
    args
}

/// Latency samples of one method, in microseconds.
#[derive(Debug)]
struct Samples {
    label: String,
    micros: Vec<f64>,
}

impl Samples {
    fn new(label: impl Into<String>) -> Samples {
        Samples {
            label: label.into(),
            micros: Vec::new(),
        }
    }

    fn push(&mut self, d: Duration) {
        self.micros.push(d.as_secs_f64() * 1e6);
    }

    /// Nearest-rank percentile, in milliseconds.
    fn percentile(&self, p: f64) -> f64 {
        let mut v = self.micros.clone();
        v.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1] / 1000.0
    }

    fn mean(&self) -> f64 {
        self.micros.iter().sum::<f64>() / self.micros.len() as f64 / 1000.0
    }
}

fn print_table(rows: &[&Samples]) {
    println!(
        "{:<44} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "method (ms)", "n", "p50", "p90", "p99", "mean", "max"
    );
    for s in rows {
        if s.micros.is_empty() {
            println!("{:<44} {:>5}", s.label, 0);
            continue;
        }
        println!(
            "{:<44} {:>5} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
            s.label,
            s.micros.len(),
            s.percentile(50.0),
            s.percentile(90.0),
            s.percentile(99.0),
            s.mean(),
            s.percentile(100.0)
        );
    }
}

fn one_nic(vm: &VmId) -> AttachRequest {
    one_nic_on(vm, "default")
}

fn one_nic_on(vm: &VmId, network: &str) -> AttachRequest {
    AttachRequest {
        vm: vm.clone(),
        networks: vec![NetworkRequest::new(network.parse().expect("network name"))],
    }
}

/// Attaches `vm` on `client`, returning the time from request to fds.
fn timed_attach(client: &mut Client, vm: &VmId) -> (Duration, Vec<OwnedFd>) {
    let t = Instant::now();
    let (_attachment, fds) = client.attach(one_nic(vm)).expect("attach");
    let took = t.elapsed();
    assert_eq!(fds.len(), 1, "one NIC, one queue: one fd");
    (took, fds)
}

/// [`timed_attach`] on `network`, also returning the NIC's host-side link name.
fn timed_attach_on(
    client: &mut Client,
    vm: &VmId,
    network: &str,
) -> (Duration, String, Vec<OwnedFd>) {
    let t = Instant::now();
    let (attachment, fds) = client.attach(one_nic_on(vm, network)).expect("attach");
    let took = t.elapsed();
    assert_eq!(fds.len(), 1, "one NIC, one queue: one fd");
    let ifname = attachment.interfaces[0].ifname.to_string();
    (took, ifname, fds)
}

/// Releases `vm` while its fds are still held (as a hypervisor would), then closes them.
fn timed_release(client: &mut Client, vm: &VmId, fds: Vec<OwnedFd>) -> Duration {
    let t = Instant::now();
    client.release(vm).expect("release");
    let took = t.elapsed();
    drop(fds);
    took
}

fn vm_id(prefix: &str, i: usize) -> VmId {
    format!("{prefix}-{i}").parse().expect("vm id")
}

/// Attaches `n` VMs that stay for the whole run: ports the measured attaches live beside.
fn hold_ports(sb: &Sandbox, n: usize) -> Vec<(VmId, Vec<OwnedFd>)> {
    let mut client = sb.client();
    (0..n)
        .map(|i| {
            check_interrupted();
            let vm = vm_id("held", i);
            let (_, fds) = timed_attach(&mut client, &vm);
            (vm, fds)
        })
        .collect()
}

/// tapmanager over one connection kept open: (attach, release) samples.
fn bench_one_connection(sb: &Sandbox, args: &Args) -> (Samples, Samples) {
    let mut attach = Samples::new("tapmanager attach, one connection");
    let mut release = Samples::new("  tapmanager release (not in the ratio)");
    let mut client = sb.client();
    for i in 0..args.warmup + args.attaches {
        check_interrupted();
        let vm = vm_id("one", i);
        let (a, fds) = timed_attach(&mut client, &vm);
        let r = timed_release(&mut client, &vm, fds);
        if i >= args.warmup {
            attach.push(a);
            release.push(r);
        }
    }
    (attach, release)
}

/// tapmanager with a new connection per attach: (connect + attach, attach alone) samples.
fn bench_new_connection(sb: &Sandbox, args: &Args) -> (Samples, Samples) {
    let mut total = Samples::new("tapmanager connect + attach, new connection");
    let mut attach = Samples::new("  of which the attach request");
    for i in 0..args.warmup + args.attaches {
        check_interrupted();
        let vm = vm_id("new", i);
        let t = Instant::now();
        let mut client = Client::connect(&sb.socket).expect("connect");
        let (a, fds) = timed_attach(&mut client, &vm);
        let whole = t.elapsed();
        timed_release(&mut client, &vm, fds);
        if i >= args.warmup {
            total.push(whole);
            attach.push(a);
        }
    }
    (total, attach)
}

/// The daemon's own timing of the attaches of the first run (one connection): `micros=N` of
/// its `attached` log lines, held ports and warm-up skipped.
fn daemon_side(log: &str, args: &Args) -> Samples {
    let mut s = Samples::new("  daemon side: build + journal (its log)");
    s.micros = log
        .lines()
        .map(strip_ansi)
        .filter(|l| l.contains(" attached"))
        .filter_map(|l| {
            let rest = l.split("micros=").nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .skip(args.held + args.warmup)
        .take(args.attaches)
        .collect();
    s
}

/// A log line without its colour codes (`ESC [ ... m`): the daemon's log is a file, but
/// tracing-subscriber colours it anyway.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for e in chars.by_ref() {
                if e.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// One port of the usual way: its names and addresses.
#[derive(Debug)]
struct UsualPort {
    tap: String,
    chain: String,
    guest_mac: String,
    host_mac: String,
    ip: String,
}

impl UsualPort {
    fn new(i: usize) -> UsualPort {
        let (hi, lo) = ((i >> 8) & 0xff, i & 0xff);
        UsualPort {
            tap: format!("utap{i}"),
            chain: format!("port_utap{i}"),
            guest_mac: format!("52:54:00:{hi:02x}:{lo:02x}:01"),
            host_mac: format!("fe:54:00:{hi:02x}:{lo:02x}:01"),
            ip: format!("10.89.{hi}.{}", lo.max(2)),
        }
    }
}

/// How the usual way lays out a port's ebtables guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// A chain per port, jumped to from FORWARD and INPUT (what the issue describes, and how
    /// tapmanager and libvirt's nwfilter do it). Here every rule appended to a user chain costs
    /// ~16 ms: that `ebtables` process's netlink socket close waits ~10 ms (DESIGN.md §5).
    Chain,
    /// Every guard straight into FORWARD and INPUT with `-i TAP`: twice the rules, but each
    /// append to a base chain costs ~2.5 ms here. The fastest usual way we know of, so the
    /// conservative comparison.
    Flat,
}

impl Layout {
    fn label(self) -> &'static str {
        match self {
            Layout::Chain => "chain per port",
            Layout::Flat => "flat rules",
        }
    }
}

/// The guards of `firewall::port_script` as an admin writes them with ebtables, one command a
/// line, in `layout`. ebtables has no "not in this set": the ARP source-IP guard with its
/// 0.0.0.0 exception (ARP probes) is a RETURN (ACCEPT when flat) then a DROP, and "nothing but
/// IPv4, ARP and IPv6" is a RETURN (ACCEPT) per allowed type and then a DROP: the chain's
/// policy, or a last rule when flat. Like tapmanager's, the guards apply in FORWARD (towards
/// other ports) and INPUT (towards the host).
fn usual_guard_rules(p: &UsualPort, layout: Layout) -> Vec<Vec<String>> {
    let (mac, ip, tap) = (&p.guest_mac, &p.ip, &p.tap);
    let pass = match layout {
        Layout::Chain => "RETURN",
        Layout::Flat => "ACCEPT",
    };
    let guards = [
        format!("-s ! {mac} -j DROP"),
        format!("-p ARP --arp-mac-src ! {mac} -j DROP"),
        format!("-p ARP --arp-ip-src 0.0.0.0 -j {pass}"),
        format!("-p ARP --arp-ip-src ! {ip} -j DROP"),
        "-p IPv4 --ip-proto udp --ip-dport 67 -j DROP".to_owned(),
        "-p IPv4 --ip-proto udp --ip-sport 67 -j DROP".to_owned(),
        format!("-p IPv4 --ip-src ! {ip} -j DROP"),
        "-p IPv6 --ip6-proto ipv6-icmp --ip6-icmp-type router-advertisement -j DROP".to_owned(),
        "-p IPv6 --ip6-proto udp --ip6-sport 547 -j DROP".to_owned(),
        format!("-p IPv4 -j {pass}"),
        format!("-p ARP -j {pass}"),
        format!("-p IPv6 -j {pass}"),
    ];
    let c = &p.chain;
    let lines: Vec<String> = match layout {
        Layout::Chain => std::iter::once(format!("-N {c} -P DROP"))
            .chain(guards.iter().map(|g| format!("-A {c} {g}")))
            .chain(["FORWARD", "INPUT"].map(|h| format!("-A {h} -i {tap} -j {c}")))
            .collect(),
        Layout::Flat => ["FORWARD", "INPUT"]
            .iter()
            .flat_map(|h| {
                guards
                    .iter()
                    .map(move |g| format!("-A {h} -i {tap} {g}"))
                    .chain(std::iter::once(format!("-A {h} -i {tap} -j DROP")))
            })
            .collect(),
    };
    lines
        .iter()
        .map(|l| l.split(' ').map(str::to_owned).collect())
        .collect()
}

/// Every process of one usual-way attach, in order.
fn usual_attach_commands(p: &UsualPort, layout: Layout, uid: u32, gid: u32) -> Vec<Command> {
    let mut cmds = Vec::new();
    let mut tuntap = Command::new("ip");
    tuntap.args(["tuntap", "add", "dev", &p.tap, "mode", "tap"]);
    tuntap.args(["user", &uid.to_string(), "group", &gid.to_string()]);
    tuntap.arg("vnet_hdr");
    cmds.push(tuntap);
    // Guards before the port is up and enslaved, so no frame passes unguarded (as tapmanager).
    for rule in usual_guard_rules(p, layout) {
        let mut c = Command::new("ebtables");
        c.args(rule);
        cmds.push(c);
    }
    let mut link = Command::new("ip");
    link.args(["link", "set", "dev", &p.tap, "master", USUAL_BRIDGE]);
    link.args(["mtu", &MTU.to_string(), "address", &p.host_mac, "up"]);
    cmds.push(link);
    cmds
}

/// Removes one usual-way port again (not timed): `ip link del`, then every guard in one
/// `ebtables-restore --noflush` (a cleanup has no need to be done the slow way).
fn usual_cleanup(p: &UsualPort, layout: Layout) {
    must(Command::new("ip").args(["link", "del", "dev", &p.tap]));
    let mut script = String::from("*filter\n");
    match layout {
        Layout::Chain => {
            for hook in ["FORWARD", "INPUT"] {
                script += &format!("-D {hook} -i {} -j {}\n", p.tap, p.chain);
            }
            script += &format!("-F {0}\n-X {0}\n", p.chain);
        }
        Layout::Flat => {
            for rule in usual_guard_rules(p, layout) {
                script += &format!("-D {}\n", rule[1..].join(" "));
            }
        }
    }
    script += "COMMIT\n";
    feed(Command::new("ebtables-restore").arg("--noflush"), &script);
}

/// Runs a command to completion; a failure stops the benchmark with its stderr.
fn must(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Index of the first held usual-way port: far from the measured ones, so names, MACs and
/// addresses never meet.
const HELD_BASE: usize = 20_000;

/// Held ports for the usual way, set up in two processes (`ip -batch`, `ebtables-restore
/// --noflush`): the same TAPs and guards as [`usual_attach_commands`] makes, only faster.
fn hold_usual_ports(n: usize, layout: Layout, uid: u32, gid: u32) {
    if n == 0 {
        return;
    }
    let mut links = String::new();
    let mut chains = String::from("*filter\n");
    let mut rules = String::new();
    for p in (0..n).map(|i| UsualPort::new(HELD_BASE + i)) {
        links += &format!(
            "tuntap add dev {} mode tap user {uid} group {gid} vnet_hdr\n\
             link set dev {} master {USUAL_BRIDGE} mtu {MTU} address {} up\n",
            p.tap, p.tap, p.host_mac
        );
        for rule in usual_guard_rules(&p, layout) {
            match rule.as_slice() {
                [new, chain, _, policy] if new == "-N" => {
                    chains += &format!(":{chain} {policy}\n");
                }
                _ => rules += &format!("{}\n", rule.join(" ")),
            }
        }
    }
    feed(Command::new("ip").args(["-batch", "-"]), &links);
    feed(
        Command::new("ebtables-restore").arg("--noflush"),
        &format!("{chains}{rules}COMMIT\n"),
    );
}

/// Runs `cmd` with `input` on its stdin; a failure stops the benchmark with its stderr.
fn feed(cmd: &mut Command, input: &str) {
    use std::io::Write as _;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(input.as_bytes()).expect("write stdin");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The usual way in `layout`, in a namespace of its own with a bridge like the daemon's.
fn bench_usual(args: &Args, layout: Layout) -> Samples {
    let ns = Netns::new("bench-usual");
    ns.ip(&["link", "add", USUAL_BRIDGE, "type", "bridge"]);
    ns.ip(&["link", "set", USUAL_BRIDGE, "mtu", &MTU.to_string(), "up"]);
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let (warmup, attaches, held) = (args.warmup, args.attaches, args.held);
    // Every process is started from a thread inside the namespace, so it needs no `-n`,
    // `nsenter` or `ip netns exec` of its own (each would add a process or a mount namespace).
    let (mut samples, processes) = ns.run_in(move || {
        hold_usual_ports(held, layout, uid, gid);
        let mut samples = Samples::new("");
        let mut processes = 0;
        for i in 0..warmup + attaches {
            check_interrupted();
            let port = UsualPort::new(i);
            let mut cmds = usual_attach_commands(&port, layout, uid, gid);
            processes = cmds.len();
            let t = Instant::now();
            for c in &mut cmds {
                must(c);
            }
            let took = t.elapsed();
            usual_cleanup(&port, layout);
            if i >= warmup {
                samples.push(took);
            }
        }
        (samples, processes)
    });
    samples.label = format!("usual way, {} ({processes} processes)", layout.label());
    samples
}

fn filesystem_of(dir: &Path) -> &'static str {
    match nix::sys::statfs::statfs(dir) {
        Ok(s) if s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC => "tmpfs",
        Ok(s) if s.filesystem_type() == nix::sys::statfs::EXT4_SUPER_MAGIC => "ext4",
        Ok(_) => "not tmpfs",
        Err(_) => "unknown",
    }
}

/// The 1-, 5- and 15-minute load averages: a concurrent build shows here, and skews both sides.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn context(args: &Args) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let uts = nix::sys::utsname::uname().expect("uname");
    println!(
        "machine: {cpus} CPUs, {} {} {}, load average {}",
        uts.sysname().to_string_lossy(),
        uts.release().to_string_lossy(),
        uts.machine().to_string_lossy(),
        loadavg()
    );
    println!(
        "daemon: {} (RUST_LOG={}), state dir under {} ({})",
        bin("tapmanager").display(),
        args.log_filter,
        args.base_dir.display(),
        filesystem_of(&args.base_dir)
    );
    if args.kind == Kind::Bridge {
        println!(
            "samples: {} per method after {} warm-up, {} other ports held; one NIC, one queue, \
             network `default` ({BRIDGE}, {GATEWAY}/16, mtu {MTU})",
            args.attaches, args.warmup, args.held
        );
    }
}

fn main() {
    let args = parse_args();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bench-attach: needs root (network namespaces, TAP devices)");
        std::process::exit(1);
    }
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGINT,
            nix::sys::signal::SigHandler::Handler(on_sigint),
        )
    }
    .expect("SIGINT handler");
    match args.kind {
        Kind::Bridge => bench_bridge(&args),
        Kind::Isolated => bench_isolated(&args),
        Kind::Cni => bench_cni(&args),
        Kind::Exit => bench_exit(&args),
    }
}

/// The bridge kind: tapmanager (one connection, new connections) beside the usual way's two
/// layouts.
fn bench_bridge(args: &Args) {
    context(args);
    let started = Instant::now();

    let opts = SandboxOptions {
        base_dir: args.base_dir.clone(),
        log_filter: args.log_filter.clone(),
    };
    let sb = Sandbox::with_options("bench", GROUP, &bench_networks(), opts);
    let held = hold_ports(&sb, args.held);
    let (one, release) = bench_one_connection(&sb, args);
    let (fresh, fresh_attach) = bench_new_connection(&sb, args);
    let daemon = daemon_side(&sb.log(), args);
    drop(held);
    drop(sb);
    let usual = bench_usual(args, Layout::Chain);
    let flat = bench_usual(args, Layout::Flat);

    println!();
    print_table(&[
        &one,
        &daemon,
        &release,
        &fresh,
        &fresh_attach,
        &usual,
        &flat,
    ]);
    println!();
    let ours = one.percentile(50.0);
    let (theirs, theirs_flat) = (usual.percentile(50.0), flat.percentile(50.0));
    let ratio = theirs / ours;
    println!(
        "p50: tapmanager {ours:.3} ms (target <= 4 ms: {}); usual way {theirs:.3} ms \
         (chain per port), {theirs_flat:.3} ms (flat rules)",
        if ours <= 4.0 { "met" } else { "MISSED" }
    );
    println!(
        "ratio of p50s, usual way (chain per port) / tapmanager (one connection): {ratio:.1}x \
         (target >= 3x: {})",
        if ratio >= 3.0 { "met" } else { "MISSED" }
    );
    println!(
        "other ratios of p50s: flat rules / one connection {:.1}x, \
         chain per port / new connection {:.1}x, flat rules / new connection {:.1}x",
        theirs_flat / ours,
        theirs / fresh.percentile(50.0),
        theirs_flat / fresh.percentile(50.0)
    );
    println!(
        "total run time: {:.1} s; load average at the end {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
}

// The isolated kind (`--kind isolated`).

/// The isolated network: its name and its range, a /16, so that guests whose cleanup is still
/// running in the background never exhaust it.
const ISO_NET: &str = "iso";
const ISO_BASE: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 0);
const ISO_PREFIX: u8 = 16;
/// The fixed next hops across a guest's veth, as tapmanager uses them (host side, then the
/// namespace side): the usual way routes the same way.
const HOST_HOP: &str = "169.254.0.1";
const NS_HOP: &str = "169.254.0.2";
/// How long the benchmark waits for released guests to be gone entirely.
const CLEANUP_DEADLINE: Duration = Duration::from_secs(20);
/// Samples of the background-cleanup phase (each one waits for a whole cleanup).
const CLEANUP_SAMPLES: usize = 50;
/// How often that phase looks whether a guest is gone.
const CLEANUP_POLL: Duration = Duration::from_micros(250);

/// One isolated network with an uplink to the LAN namespace ([`lan`]), as the tests have it.
fn isolated_networks(binding: &str) -> String {
    format!(
        r#"
[networks.{ISO_NET}]
kind = "isolated"
binding = "{binding}"
range = "{ISO_BASE}/{ISO_PREFIX}"
uplink = "{UPLINK}"
drop = ["192.168.78.0/24"]
dns = ["192.168.77.2"]
"#
    )
}

/// The `i`th /30 of the range: network, gateway, guest.
fn slash30(i: usize) -> (Ipv4Addr, Ipv4Addr, Ipv4Addr) {
    assert!(
        i < 1 << (30 - ISO_PREFIX),
        "the range holds no /30 number {i}"
    );
    let n = u32::from(ISO_BASE) + 4 * i as u32;
    (n.into(), (n + 1).into(), (n + 2).into())
}

/// Phase 1: attach, then Release, over one connection kept open; both timed, apart. Release is
/// not waited for beyond its reply: whatever it leaves to the background overlaps the next
/// attach, as it would on a busy host.
fn iso_attach_release(sb: &Sandbox, args: &Args) -> (Samples, Samples) {
    let mut attach = Samples::new("tapmanager attach, one connection");
    let mut release = Samples::new("  tapmanager release (its reply)");
    let mut client = sb.client();
    for i in 0..args.warmup + args.attaches {
        check_interrupted();
        let vm = vm_id("iso", i);
        let (a, _ifname, fds) = timed_attach_on(&mut client, &vm, ISO_NET);
        let r = timed_release(&mut client, &vm, fds);
        if i >= args.warmup {
            attach.push(a);
            release.push(r);
        }
    }
    (attach, release)
}

/// Phase 2: from Release's reply to the guest being gone (host veth, namespace pin, journal
/// entry), polled from a thread in the daemon's namespace; one guest at a time, so "no journal
/// entry at all" is this guest's. Returns the samples and how many did not finish in time.
fn iso_cleanup_times(sb: &Sandbox, args: &Args) -> (Samples, usize) {
    let n = CLEANUP_SAMPLES.min(args.attaches);
    let socket = sb.socket.clone();
    let state = sb.dir.join("state");
    sb.ns.run_in(move || {
        let mut s = Samples::new("  release reply -> cleanup finished (polled)");
        let mut unfinished = 0;
        let mut client = Client::connect(&socket).expect("connect");
        let left = |ifname: &str| {
            state.join("netns").join(ifname).exists()
                || nix::net::if_::if_nametoindex(ifname).is_ok()
                || std::fs::read_dir(state.join("attachments"))
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false)
        };
        for i in 0..n {
            check_interrupted();
            let vm = vm_id("clean", i);
            let (_, ifname, fds) = timed_attach_on(&mut client, &vm, ISO_NET);
            client.release(&vm).expect("release");
            let t = Instant::now();
            drop(fds);
            loop {
                if !left(&ifname) {
                    s.push(t.elapsed());
                    break;
                }
                if t.elapsed() > CLEANUP_DEADLINE {
                    unfinished += 1;
                    break;
                }
                std::thread::sleep(CLEANUP_POLL);
            }
        }
        (s, unfinished)
    })
}

/// Sets the flag when dropped: stops the teardown loop also when the measured side panics.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What the teardown loop did: its attaches, its releases, closing its TAP fds (the kernel
/// removes a TAP whose last fd closes, as when a hypervisor exits), and for how long it ran.
#[derive(Debug)]
struct TeardownLoop {
    attach: Samples,
    release: Samples,
    close: Samples,
    ran: Duration,
}

/// Phase 3: a second thread attaches and releases guests in a loop over its own connection
/// while the measured client does warm-up + N attaches, each released untimed.
fn iso_under_teardown(sb: &Sandbox, args: &Args) -> (Samples, TeardownLoop) {
    let stop = AtomicBool::new(false);
    let mut measured = Samples::new("tapmanager attach, during the teardown loop");
    let churn = std::thread::scope(|scope| {
        let churn = scope.spawn(|| {
            let mut client = sb.client();
            let mut l = TeardownLoop {
                attach: Samples::new("  teardown loop: its attaches"),
                release: Samples::new("  teardown loop: its releases (reply)"),
                close: Samples::new("  teardown loop: closing its TAP fds"),
                ran: Duration::ZERO,
            };
            let t = Instant::now();
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) && !INTERRUPTED.load(Ordering::Relaxed) {
                let vm = vm_id("loop", k);
                k += 1;
                let (a, _, fds) = timed_attach_on(&mut client, &vm, ISO_NET);
                l.attach.push(a);
                let t = Instant::now();
                client.release(&vm).expect("release");
                l.release.push(t.elapsed());
                let t = Instant::now();
                drop(fds);
                l.close.push(t.elapsed());
            }
            l.ran = t.elapsed();
            l
        });
        let stopper = StopOnDrop(&stop);
        let mut client = sb.client();
        // Let the loop have a few guests in teardown before the first sample.
        std::thread::sleep(Duration::from_millis(100));
        for i in 0..args.warmup + args.attaches {
            check_interrupted();
            let vm = vm_id("busy", i);
            let (a, _, fds) = timed_attach_on(&mut client, &vm, ISO_NET);
            client.release(&vm).expect("release");
            drop(fds);
            if i >= args.warmup {
                measured.push(a);
            }
        }
        drop(stopper);
        churn.join().expect("teardown loop")
    });
    (measured, churn)
}

/// `"tm` + 10 hex digits + `"` in nft's listing: a generated host-side link name.
fn generated_names_in(listing: &str) -> usize {
    listing
        .split("\"tm")
        .skip(1)
        .filter(|rest| {
            rest.len() > 10
                && rest.as_bytes()[..10].iter().all(u8::is_ascii_hexdigit)
                && rest.as_bytes()[10] == b'"'
        })
        .count()
}

/// What is left of released guests: journal entries, listed attachments, host veths, namespace
/// pins and mounts under the state dir, elements in the routed rules. Empty when all is gone.
fn iso_leftovers(sb: &Sandbox) -> Vec<String> {
    let mut left = Vec::new();
    let mut note = |n: usize, what: &str| {
        if n > 0 {
            left.push(format!("{n} {what}"));
        }
    };
    note(sb.journal_entries().len(), "journal entries");
    note(
        sb.client().list().expect("list").len(),
        "attachments listed",
    );
    note(sb.taps().len(), "host veths");
    let pins = sb.dir.join("state/netns");
    note(
        std::fs::read_dir(&pins).map_or(0, |d| d.count()),
        "namespace pins",
    );
    let pins = pins.to_string_lossy().into_owned();
    note(
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&pins))
            .count(),
        "mounts under the state dir",
    );
    let (_, rules) = sb
        .ns
        .exec(&["nft", "list", "table", "inet", "tapmanager_routed"]);
    note(generated_names_in(&rules), "names in the routed rules");
    left
}

/// Waits until nothing of the released guests is left: how long that took, or what was left at
/// the deadline.
fn iso_wait_all_gone(sb: &Sandbox) -> Result<Duration, String> {
    let t = Instant::now();
    loop {
        let left = iso_leftovers(sb);
        if left.is_empty() {
            return Ok(t.elapsed());
        }
        if t.elapsed() > CLEANUP_DEADLINE {
            return Err(left.join(", "));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The routed network as the daemon sees it, read from its config by the daemon's own parser.
fn routed_net_of(config: &Path) -> tapmanager::net::firewall::RoutedNet {
    let c = tapmanager::config::Config::load(config).expect("sandbox config");
    let net = c
        .network(&ISO_NET.parse().expect("network name"))
        .expect("the isolated network");
    let tapmanager::config::NetworkKind::Isolated(i) = &net.kind else {
        panic!("network {ISO_NET} is not isolated");
    };
    tapmanager::net::firewall::RoutedNet {
        index: 0,
        range: i.range,
        uplink: i.uplink.clone(),
        drop: i.drop.clone(),
        allow: i.allow.clone(),
        forwards: false,
    }
}

/// One guest of the usual way: its namespace, its host-side veth and its /30. Dropped while
/// still set up (a failure, Ctrl-C), it removes its links and namespace, best effort.
#[derive(Debug)]
struct UsualGuest {
    ns: String,
    veth: String,
    net: Ipv4Addr,
    gateway: Ipv4Addr,
    guest: Ipv4Addr,
    made: bool,
}

impl UsualGuest {
    fn new(i: usize) -> UsualGuest {
        let (net, gateway, guest) = slash30(i);
        UsualGuest {
            ns: format!("tmt-uiso-{}-{i}", std::process::id()),
            veth: format!("uv{i}"),
            net,
            gateway,
            guest,
            made: false,
        }
    }

    /// tapmanager's host rules for this guest: `firewall::routed_port_script`'s elements.
    fn rules(&self) -> Vec<String> {
        let port = tapmanager::net::firewall::RoutedPort {
            ifname: self.veth.clone().try_into().expect("interface name"),
            net: 0,
            mac: protocol::MacAddr([0xf6, 0, 0, 0, 0, 1]),
            ip: self.guest,
            gateway: None,
            forwards: Vec::new(),
        };
        tapmanager::net::firewall::routed_port_script(&port)
            .split("; ")
            .map(str::to_owned)
            .collect()
    }

    /// Removes the guest again (untimed): `ip link del` (both ends of the veth and the route),
    /// `ip netns del` (the TAP), and the rules' elements in one `nft -f -`.
    fn cleanup(&mut self) {
        must(Command::new("ip").args(["link", "del", "dev", &self.veth]));
        must(Command::new("ip").args(["netns", "del", &self.ns]));
        let script: String = self
            .rules()
            .iter()
            .map(|r| format!("{}\n", r.replacen("add ", "delete ", 1)))
            .collect();
        feed(Command::new("nft").args(["-f", "-"]), &script);
        self.made = false;
    }
}

impl Drop for UsualGuest {
    fn drop(&mut self) {
        if self.made {
            for args in [
                ["link", "del", "dev", self.veth.as_str()].as_slice(),
                ["netns", "del", self.ns.as_str()].as_slice(),
            ] {
                let _ = Command::new("ip") // best effort: the host namespace goes next anyway
                    .args(args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// Every process of one usual-way isolated attach, in order: the host rules first (as the
/// daemon adds them, so they hold from the first packet), then namespace, veth (its peer made
/// in the namespace), TAP, addresses, links up and routes, as the issue lists them. A guest
/// that can actually talk needs more (IPv4 forwarding in its namespace, neighbour entries or
/// addresses on the veth: three or four more processes); they are left out, in the usual way's
/// favour.
fn usual_iso_commands(g: &UsualGuest, uid: u32, gid: u32) -> Vec<Command> {
    let mut cmds: Vec<Command> = g
        .rules()
        .into_iter()
        .map(|r| {
            let mut c = Command::new("nft");
            c.arg(r);
            c
        })
        .collect();
    let ip = |args: &[&str]| {
        let mut c = Command::new("ip");
        c.args(args);
        c
    };
    let (ns, veth) = (g.ns.as_str(), g.veth.as_str());
    let (uid, gid) = (uid.to_string(), gid.to_string());
    let gateway = format!("{}/30", g.gateway);
    let block = format!("{}/30", g.net);
    cmds.extend([
        ip(&["netns", "add", ns]),
        ip(&[
            "link", "add", veth, "type", "veth", "peer", "name", "veth0", "netns", ns,
        ]),
        ip(&[
            "-n", ns, "tuntap", "add", "dev", "tap0", "mode", "tap", "user", &uid, "group", &gid,
            "vnet_hdr",
        ]),
        ip(&["-n", ns, "link", "set", "tap0", "up"]),
        ip(&["-n", ns, "addr", "add", &gateway, "dev", "tap0"]),
        ip(&["-n", ns, "link", "set", "veth0", "up"]),
        ip(&[
            "-n", ns, "route", "add", "default", "via", HOST_HOP, "dev", "veth0", "onlink",
        ]),
        ip(&["link", "set", veth, "up"]),
        ip(&["route", "add", &block, "via", NS_HOP, "dev", veth, "onlink"]),
    ]);
    cmds
}

/// A command as a shell would take it.
fn shell_form(c: &Command) -> String {
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|a| {
            let a = a.to_string_lossy();
            if a.contains([' ', '"', '{', '}']) {
                format!("'{a}'")
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The usual way for isolated guests, in a host namespace of its own with the daemon's routed
/// tables: (samples, the first sample's commands).
fn bench_usual_isolated(
    args: &Args,
    routed: tapmanager::net::firewall::RoutedNet,
) -> (Samples, Vec<String>) {
    let host = Netns::new("bench-usual-iso");
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let (warmup, attaches) = (args.warmup, args.attaches);
    // Processes start from a thread inside the host namespace: its `ip` and `nft` need no `-n`.
    let (mut samples, shown) = host.run_in(move || {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").expect("IPv4 forwarding");
        feed(
            Command::new("nft").args(["-f", "-"]),
            &tapmanager::net::firewall::rebuild_script(&[], &[routed], &[], &[]),
        );
        let mut samples = Samples::new("");
        let mut shown = Vec::new();
        for i in 0..warmup + attaches {
            check_interrupted();
            let mut guest = UsualGuest::new(i);
            let mut cmds = usual_iso_commands(&guest, uid, gid);
            if i == 0 {
                shown = cmds.iter().map(shell_form).collect();
            }
            guest.made = true;
            let t = Instant::now();
            for c in &mut cmds {
                must(c);
            }
            let took = t.elapsed();
            guest.cleanup();
            if i >= warmup {
                samples.push(took);
            }
        }
        (samples, shown)
    });
    samples.label = format!("usual way, ip + nft ({} processes)", shown.len());
    (samples, shown)
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn gone_note(r: &Result<Duration, String>) -> String {
    match r {
        Ok(d) => format!("all gone {:.0} ms after the phase", d.as_secs_f64() * 1e3),
        Err(left) => format!("LEFT after {CLEANUP_DEADLINE:?}: {left}"),
    }
}

/// The isolated kind: three tapmanager phases, then the usual way.
fn bench_isolated(args: &Args) {
    context(args);
    println!(
        "samples: {} per method after {} warm-up; one NIC, one queue, network `{ISO_NET}` \
         (isolated, binding {}, {ISO_BASE}/{ISO_PREFIX}, uplink {UPLINK}: a veth to a LAN \
         namespace)",
        args.attaches, args.warmup, args.binding
    );
    let started = Instant::now();

    let opts = SandboxOptions {
        base_dir: args.base_dir.clone(),
        log_filter: args.log_filter.clone(),
    };
    let mut sb = Sandbox::with_options("bench", GROUP, &isolated_networks(&args.binding), opts);
    // The uplink must exist when the daemon starts: make the LAN, then start it again.
    let lan = lan(&sb);
    sb.kill();
    sb.start();
    let routed = routed_net_of(&sb.config);

    let (attach, release) = iso_attach_release(&sb, args);
    let daemon = daemon_side(&sb.log(), args);
    let gone1 = iso_wait_all_gone(&sb);
    let (cleanup, unfinished) = iso_cleanup_times(&sb, args);
    let gone2 = iso_wait_all_gone(&sb);
    let (busy, churn) = iso_under_teardown(&sb, args);
    // Released guests whose teardown was still running when the loop stopped.
    let backlog = sb.journal_entries().len();
    let gone3 = iso_wait_all_gone(&sb);
    drop(lan);
    drop(sb);
    let (usual, shown) = bench_usual_isolated(args, routed);

    println!();
    println!("the usual way, one process each (the first sample's):");
    for c in &shown {
        println!("  {c}");
    }
    println!();
    print_table(&[
        &attach,
        &daemon,
        &release,
        &cleanup,
        &busy,
        &churn.attach,
        &churn.release,
        &churn.close,
        &usual,
    ]);
    println!();
    let ours = attach.percentile(50.0);
    let theirs = usual.percentile(50.0);
    let ratio = theirs / ours;
    println!(
        "p50: tapmanager {ours:.3} ms (target <= 8 ms: {}); usual way {theirs:.3} ms",
        met(ours <= 8.0)
    );
    println!(
        "ratio of p50s, usual way / tapmanager: {ratio:.1}x (target >= 5x: {})",
        met(ratio >= 5.0)
    );
    let (r99, rmax) = (release.percentile(99.0), release.percentile(100.0));
    println!(
        "release returns: p99 {r99:.3} ms, max {rmax:.3} ms (target: within 1 ms; p99 {}, \
         every release {})",
        met(r99 <= 1.0),
        met(rmax <= 1.0)
    );
    let complete = gone1.is_ok() && gone2.is_ok() && gone3.is_ok() && unfinished == 0;
    let cleanup_line = if cleanup.micros.is_empty() {
        "no sample finished".to_owned()
    } else {
        format!(
            "p50 {:.3} ms, max {:.3} ms after release's reply",
            cleanup.percentile(50.0),
            cleanup.percentile(100.0)
        )
    };
    println!(
        "cleanup complete: {} (a guest alone: {cleanup_line}, {unfinished} unfinished after \
         {CLEANUP_DEADLINE:?}; phase 1: {}; phase 2: {}; teardown loop: {backlog} guests \
         still journaled when it stopped, {})",
        met(complete),
        gone_note(&gone1),
        gone_note(&gone2),
        gone_note(&gone3)
    );
    let b99 = busy.percentile(99.0);
    println!(
        "attach during the teardown loop: p99 {b99:.3} ms (target <= 10 ms: {}); the loop \
         attached and released {} guests in {:.1} s",
        met(b99 <= 10.0),
        churn.attach.micros.len(),
        churn.ran.as_secs_f64()
    );
    println!(
        "total run time: {:.1} s; load average at the end {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
}

// The CNI kind (`--kind cni`).

/// `name=N` of the daemon's log lines containing `marker`, warm-up skipped.
fn log_field(log: &str, marker: &str, name: &str, args: &Args, label: &str) -> Samples {
    let mut s = Samples::new(label);
    let key = format!("{name}=");
    s.micros = log
        .lines()
        .map(strip_ansi)
        .filter(|l| l.contains(marker))
        .filter_map(|l| {
            let rest = l.split(key.as_str()).nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .skip(args.warmup)
        .take(args.attaches)
        .collect();
    s
}

/// Attach on a CNI network (Debian's bridge + host-local), one connection, each guest
/// released and its teardown (DEL included) waited for, untimed, before the next: the
/// plugins' own ADD time is taken from the daemon's log, and what the daemon adds is the
/// client-side attach time minus it, sample by sample.
fn bench_cni(args: &Args) {
    use tapmanager_tests::cnidir::{bridge_list, CniDir};
    context(args);
    println!(
        "samples: {} after {} warm-up; one NIC, one queue; CNI list: bridge + host-local \
         (Debian's containernetworking-plugins), binding tc-redirect",
        args.attaches, args.warmup
    );
    let started = Instant::now();
    let d = CniDir::new("bench");
    d.write(
        "tmbench",
        bridge_list(&d, "tmbench", "1.0.0", "tmcnib", "10.80.0.0/16", &[]),
    );
    let opts = SandboxOptions {
        base_dir: args.base_dir.clone(),
        log_filter: args.log_filter.clone(),
    };
    let sb = Sandbox::with_options("bench", GROUP, &d.network("pod", "tmbench", ""), opts);
    let mut client = sb.client();
    let mut attach = Samples::new("tapmanager attach (client side)");
    let held = |sb: &Sandbox| {
        std::fs::read_dir(sb.dir.join("state/netns"))
            .map(|r| r.count())
            .unwrap_or(0)
            + sb.journal_entries().len()
    };
    for i in 0..args.warmup + args.attaches {
        check_interrupted();
        let vm = vm_id("cni", i);
        let (took, _, fds) = timed_attach_on(&mut client, &vm, "pod");
        if i >= args.warmup {
            attach.push(took);
        }
        client.release(&vm).expect("release");
        drop(fds);
        assert!(
            sb.wait_for(20, || held(&sb) == 0),
            "guest {i} was not torn down within 20 s"
        );
    }
    let log = sb.log();
    let daemon = log_field(
        &log,
        " attached",
        "micros",
        args,
        "  daemon side: whole attach (its log)",
    );
    let plugins = log_field(
        &log,
        "CNI ADD done",
        "plugins_micros",
        args,
        "  the plugins' ADD (its log)",
    );
    assert_eq!(
        plugins.micros.len(),
        attach.micros.len(),
        "one ADD per attach in the log"
    );
    let mut overhead = Samples::new("tapmanager's own part (attach - plugins)");
    overhead.micros = attach
        .micros
        .iter()
        .zip(&plugins.micros)
        .map(|(a, p)| a - p)
        .collect();
    let leaked = d.allocated("tmbench").len();
    drop(sb);
    println!();
    print_table(&[&attach, &daemon, &plugins, &overhead]);
    println!();
    let p50 = overhead.percentile(50.0);
    println!(
        "what the daemon adds on top of the plugins' ADD: p50 {p50:.3} ms (target <= 5 ms: {}); \
         host-local addresses left after the run: {leaked}",
        met(p50 <= 5.0)
    );
    println!(
        "total run time: {:.1} s; load average at the end {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
}

// From a guest's exit to its teardown (`--kind exit`).

/// A vmwrapper holds one NIC on `net` until its stdin closes; the clock runs from the moment
/// its exit is reaped (the daemon's pidfd fires at that moment too) until its journal entry,
/// its links and its namespace pin are all gone, polled every 250 µs.
fn bench_exit(args: &Args) {
    context(args);
    println!(
        "samples: {} per network after {} warm-up; one NIC each, held by vmwrapper until it exits",
        args.attaches, args.warmup
    );
    let started = Instant::now();
    let opts = SandboxOptions {
        base_dir: args.base_dir.clone(),
        log_filter: args.log_filter.clone(),
    };
    let networks = format!("{}{}", bench_networks(), isolated_networks("routed"));
    let mut sb = Sandbox::with_options("benchexit", GROUP, &networks, opts);
    let lan = tapmanager_tests::sandbox::lan(&sb);
    sb.kill();
    sb.start();
    let pins = sb.dir.join("state/netns");
    let gone = |sb: &Sandbox| {
        sb.journal_entries().is_empty()
            && sb.taps().is_empty()
            && std::fs::read_dir(&pins).map_or(true, |mut d| d.next().is_none())
    };
    let mut rows = Vec::new();
    for net in ["default", ISO_NET] {
        let mut s = Samples::new(format!("exit -> teardown complete, {net}"));
        for i in 0..args.warmup + args.attaches {
            check_interrupted();
            let mut child = Command::new(bin("vmwrapper"))
                .arg("--socket")
                .arg(&sb.socket)
                .args([
                    "--id",
                    &format!("exit-{i}"),
                    "--net",
                    net,
                    "--hypervisor",
                    "qemu",
                ])
                .args(["--", "sh", "-c", "read x || true"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("vmwrapper");
            assert!(
                sb.wait_for(10, || sb.journal_entries().len() == 1),
                "guest {i} on {net} never attached"
            );
            drop(child.stdin.take());
            child.wait().expect("vmwrapper exit");
            let t = Instant::now();
            while !gone(&sb) {
                assert!(
                    t.elapsed() < CLEANUP_DEADLINE,
                    "teardown of guest {i} on {net} never finished"
                );
                std::thread::sleep(CLEANUP_POLL);
            }
            if i >= args.warmup {
                s.push(t.elapsed());
            }
        }
        rows.push(s);
    }
    drop(lan);
    drop(sb);
    println!();
    print_table(&rows.iter().collect::<Vec<_>>());
    println!();
    for s in &rows {
        let p99 = s.percentile(99.0);
        println!(
            "{}: p50 {:.3} ms, p99 {p99:.3} ms (target p99 < 100 ms: {})",
            s.label,
            s.percentile(50.0),
            met(p99 < 100.0)
        );
    }
    println!(
        "total run time: {:.1} s; load average at the end {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
}
