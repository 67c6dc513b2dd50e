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

mod args;
mod bridge;
mod client;
mod cni;
mod dual;
mod exit;
mod helper;
mod isolated;
mod scale;
mod stats;

use args::*;
use bridge::*;
use client::*;
use cni::*;
use dual::*;
use exit::*;
use helper::*;
use isolated::*;
use scale::*;
use stats::*;

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

/// Runs a command to completion; a failure stops the benchmark with its stderr.
fn must(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
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
    if let Some(socket) = &args.holder {
        return hold(socket, &args);
    }
    match args.kind {
        Kind::Scale => bench_scale(&args),
        Kind::Bridge => bench_bridge(&args),
        Kind::Isolated => bench_isolated(&args),
        Kind::Cni => bench_cni(&args),
        Kind::Exit => bench_exit(&args),
        Kind::Dual => bench_dual(&args),
    }
}

// The isolated kind (`--kind isolated`).

// The CNI kind (`--kind cni`).

// From a guest's exit to its teardown (`--kind exit`).
