//! `bench-attach`: attach latency of the bridge kind, tapmanager against the usual way.
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

use protocol::{AttachRequest, Client, NetworkRequest, VmId};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tapmanager_tests::sandbox::{bin, Netns, Sandbox, SandboxOptions, BRIDGE, GATEWAY};

/// The group the sandbox daemon serves; the benchmark runs as root, so it is never used.
const GROUP: u32 = 47_101;
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

#[derive(Debug)]
struct Args {
    attaches: usize,
    warmup: usize,
    held: usize,
    base_dir: PathBuf,
    log_filter: String,
}

const USAGE: &str = "usage: bench-attach [--attaches N (200)] [--warmup N (10)] [--held K (0)] \
[--state-base DIR (/dev/shm)] [--log FILTER (info)]

--held K: K other ports stay attached (with their guards) while both methods are measured.";

fn parse_args() -> Args {
    let mut args = Args {
        attaches: 200,
        warmup: 10,
        held: 0,
        base_dir: PathBuf::from("/dev/shm"),
        log_filter: "info".to_owned(),
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
            _ => {
                eprintln!("bench-attach: unknown argument {flag:?}\n{USAGE}");
                std::process::exit(2);
            }
        }
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
    AttachRequest {
        vm: vm.clone(),
        networks: vec![NetworkRequest::new(
            "default".parse().expect("network name"),
        )],
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
    println!(
        "samples: {} per method after {} warm-up, {} other ports held; one NIC, one queue, \
         network `default` ({BRIDGE}, {GATEWAY}/16, mtu {MTU})",
        args.attaches, args.warmup, args.held
    );
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
    context(&args);
    let started = Instant::now();

    let opts = SandboxOptions {
        base_dir: args.base_dir.clone(),
        log_filter: args.log_filter.clone(),
    };
    let sb = Sandbox::with_options("bench", GROUP, &bench_networks(), opts);
    let held = hold_ports(&sb, args.held);
    let (one, release) = bench_one_connection(&sb, &args);
    let (fresh, fresh_attach) = bench_new_connection(&sb, &args);
    let daemon = daemon_side(&sb.log(), &args);
    drop(held);
    drop(sb);
    let usual = bench_usual(&args, Layout::Chain);
    let flat = bench_usual(&args, Layout::Flat);

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
