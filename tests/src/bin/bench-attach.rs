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
//! - **the usual way**: what an admin script does for the same port, in another namespace of
//!   its own with a bridge like the daemon's, one process per step, timed from the first
//!   process's start to the last one's exit: `ip tuntap add` (owner, group, vnet_hdr), the
//!   same guards as `ebtables` rules (the nft-backed ebtables of this machine), one process
//!   per rule, then a single `ip link set X master BR mtu M address A up`. The guards are
//!   tapmanager's `firewall::port_script` rule for rule; where ebtables cannot say it in one
//!   rule it takes the rules an admin would write (see [`usual_guard_rules`]). Cleanup
//!   (`ip link del`, `ebtables -D`/`-F`/`-X`) runs after each sample, untimed, so every
//!   sample starts from the same, empty rule set. The usual way does less than tapmanager:
//!   no DHCP server, no journal, no fd handed over.
//!
//! The daemon's own view, `micros` of its `attached` log line (guards, TAP, link, DHCP socket
//! and journal; not the request's parsing, checks or reply), is printed too, so the time in
//! the socket exchange and the daemon's dispatch can be told apart from the kernel work.

use protocol::{AttachRequest, Client, NetworkRequest, VmId};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tapmanager_tests::sandbox::{
    bin, default_networks, Netns, Sandbox, SandboxOptions, BRIDGE, GATEWAY,
};

/// The group the sandbox daemon serves; the benchmark runs as root, so it is never used.
const GROUP: u32 = 47_101;
/// The usual way's bridge and its MTU (the same MTU as the sandbox's `default` network).
const USUAL_BRIDGE: &str = "ubr0";
const MTU: u32 = 1400;

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
    base_dir: PathBuf,
    log_filter: String,
}

const USAGE: &str = "usage: bench-attach [--attaches N (200)] [--warmup N (10)] \
[--state-base DIR (/dev/shm)] [--log FILTER (info)]";

fn parse_args() -> Args {
    let mut args = Args {
        attaches: 200,
        warmup: 10,
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
/// its `attached` log lines, warm-up skipped.
fn daemon_side(log: &str, args: &Args) -> Samples {
    let mut s = Samples::new("  daemon side: build + journal (its log)");
    s.micros = log
        .lines()
        .filter(|l| l.contains(" attached"))
        .filter_map(|l| l.split("micros=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .skip(args.warmup)
        .take(args.attaches)
        .collect();
    s
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

/// The guards of `firewall::port_script` as an admin writes them with ebtables, one command a
/// line. ebtables has no "not in this set": the ARP source-IP guard with its 0.0.0.0
/// exception (ARP probes) is a RETURN then a DROP, and "nothing but IPv4, ARP and IPv6" is a
/// chain whose policy is DROP plus a RETURN per allowed type at the end. Like tapmanager's,
/// the chain is hooked into both FORWARD (other ports) and INPUT (the host).
fn usual_guard_rules(p: &UsualPort) -> Vec<Vec<String>> {
    let (c, mac, ip, tap) = (&p.chain, &p.guest_mac, &p.ip, &p.tap);
    let lines = [
        format!("-N {c} -P DROP"),
        format!("-A {c} -s ! {mac} -j DROP"),
        format!("-A {c} -p ARP --arp-mac-src ! {mac} -j DROP"),
        format!("-A {c} -p ARP --arp-ip-src 0.0.0.0 -j RETURN"),
        format!("-A {c} -p ARP --arp-ip-src ! {ip} -j DROP"),
        format!("-A {c} -p IPv4 --ip-proto udp --ip-dport 67 -j DROP"),
        format!("-A {c} -p IPv4 --ip-proto udp --ip-sport 67 -j DROP"),
        format!("-A {c} -p IPv4 --ip-src ! {ip} -j DROP"),
        format!(
            "-A {c} -p IPv6 --ip6-proto ipv6-icmp --ip6-icmp-type router-advertisement -j DROP"
        ),
        format!("-A {c} -p IPv6 --ip6-proto udp --ip6-sport 547 -j DROP"),
        format!("-A {c} -p IPv4 -j RETURN"),
        format!("-A {c} -p ARP -j RETURN"),
        format!("-A {c} -p IPv6 -j RETURN"),
        format!("-A FORWARD -i {tap} -j {c}"),
        format!("-A INPUT -i {tap} -j {c}"),
    ];
    lines
        .iter()
        .map(|l| l.split(' ').map(str::to_owned).collect())
        .collect()
}

/// Every process of one usual-way attach, in order.
fn usual_attach_commands(p: &UsualPort, uid: u32, gid: u32) -> Vec<Command> {
    let mut cmds = Vec::new();
    let mut tuntap = Command::new("ip");
    tuntap.args(["tuntap", "add", "dev", &p.tap, "mode", "tap"]);
    tuntap.args([
        "user",
        &uid.to_string(),
        "group",
        &gid.to_string(),
        "vnet_hdr",
    ]);
    cmds.push(tuntap);
    // Guards before the port is up and enslaved, so no frame passes unguarded (as tapmanager).
    for rule in usual_guard_rules(p) {
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

fn usual_cleanup_commands(p: &UsualPort) -> Vec<Command> {
    let mut cmds = Vec::new();
    let mut del = Command::new("ip");
    del.args(["link", "del", "dev", &p.tap]);
    cmds.push(del);
    for args in [
        vec!["-D", "FORWARD", "-i", &p.tap, "-j", &p.chain],
        vec!["-D", "INPUT", "-i", &p.tap, "-j", &p.chain],
        vec!["-F", &p.chain],
        vec!["-X", &p.chain],
    ] {
        let mut c = Command::new("ebtables");
        c.args(args);
        cmds.push(c);
    }
    cmds
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

/// The usual way, in a namespace of its own: (attach, processes per attach).
fn bench_usual(args: &Args) -> (Samples, usize) {
    let ns = Netns::new("bench-usual");
    ns.ip(&["link", "add", USUAL_BRIDGE, "type", "bridge"]);
    ns.ip(&["link", "set", USUAL_BRIDGE, "mtu", &MTU.to_string(), "up"]);
    let (uid, gid) = (
        nix::unistd::getuid().as_raw(),
        nix::unistd::getgid().as_raw(),
    );
    let (warmup, attaches) = (args.warmup, args.attaches);
    // Every process is started from a thread inside the namespace, so it needs no `-n`,
    // `nsenter` or `ip netns exec` of its own (each would add a process or a mount namespace).
    let (mut samples, processes) = ns.run_in(move || {
        let mut samples = Samples::new("");
        let mut processes = 0;
        for i in 0..warmup + attaches {
            check_interrupted();
            let port = UsualPort::new(i);
            let mut cmds = usual_attach_commands(&port, uid, gid);
            processes = cmds.len();
            let t = Instant::now();
            for c in &mut cmds {
                must(c);
            }
            let took = t.elapsed();
            for c in &mut usual_cleanup_commands(&port) {
                must(c);
            }
            if i >= warmup {
                samples.push(took);
            }
        }
        (samples, processes)
    });
    samples.label = format!("usual way, {processes} processes (2 ip, rest ebtables)");
    (samples, processes)
}

fn filesystem_of(dir: &Path) -> &'static str {
    match nix::sys::statfs::statfs(dir) {
        Ok(s) if s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC => "tmpfs",
        Ok(s) if s.filesystem_type() == nix::sys::statfs::EXT4_SUPER_MAGIC => "ext4",
        Ok(_) => "not tmpfs",
        Err(_) => "unknown",
    }
}

fn context(args: &Args) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let uts = nix::sys::utsname::uname().expect("uname");
    println!(
        "machine: {cpus} CPUs, {} {} {}",
        uts.sysname().to_string_lossy(),
        uts.release().to_string_lossy(),
        uts.machine().to_string_lossy()
    );
    println!(
        "daemon: {} (RUST_LOG={}), state dir under {} ({})",
        bin("tapmanager").display(),
        args.log_filter,
        args.base_dir.display(),
        filesystem_of(&args.base_dir)
    );
    println!(
        "samples: {} per method after {} warm-up; one NIC, one queue, network `default` \
         ({BRIDGE}, {GATEWAY}/24, mtu {MTU})",
        args.attaches, args.warmup
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
    let sb = Sandbox::with_options("bench", GROUP, &default_networks(), opts);
    let (one, release) = bench_one_connection(&sb, &args);
    let (fresh, fresh_attach) = bench_new_connection(&sb, &args);
    let daemon = daemon_side(&sb.log(), &args);
    drop(sb);
    let (usual, _) = bench_usual(&args);

    println!();
    print_table(&[&one, &daemon, &release, &fresh, &fresh_attach, &usual]);
    println!();
    let (ours, theirs) = (one.percentile(50.0), usual.percentile(50.0));
    let ratio = theirs / ours;
    println!(
        "p50: tapmanager {ours:.3} ms (target <= 4 ms: {}), usual way {theirs:.3} ms",
        if ours <= 4.0 { "met" } else { "MISSED" }
    );
    println!(
        "ratio of p50s, usual way / tapmanager (one connection): {ratio:.1}x (target >= 3x: {})",
        if ratio >= 3.0 { "met" } else { "MISSED" }
    );
    println!(
        "ratio with a new connection per attach: {:.1}x",
        theirs / fresh.percentile(50.0)
    );
    println!("total run time: {:.1} s", started.elapsed().as_secs_f64());
}
