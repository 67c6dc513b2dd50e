//! `--kind isolated`: three tapmanager phases (attach and release, background cleanup, the
//! teardown loop), then the usual way's `ip` and `nft`.

use super::*;

/// The isolated network: its name and its range, a /16, so that guests whose cleanup is still
/// running in the background never exhaust it.
pub(crate) const ISO_NET: &str = "iso";

pub(crate) const ISO_BASE: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 0);

pub(crate) const ISO_PREFIX: u8 = 16;

/// The fixed next hops across a guest's veth, as tapmanager uses them (host side, then the
/// namespace side): the usual way routes the same way.
pub(crate) const HOST_HOP: &str = "169.254.0.1";

pub(crate) const NS_HOP: &str = "169.254.0.2";

/// How long the benchmark waits for released guests to be gone entirely.
pub(crate) const CLEANUP_DEADLINE: Duration = Duration::from_secs(20);

/// Samples of the background-cleanup phase (each one waits for a whole cleanup).
pub(crate) const CLEANUP_SAMPLES: usize = 50;

/// How often that phase looks whether a guest is gone.
pub(crate) const CLEANUP_POLL: Duration = Duration::from_micros(250);

/// One isolated network with an uplink to the LAN namespace ([`lan`]), as the tests have it.
pub(crate) fn isolated_networks(binding: &str) -> String {
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
pub(crate) fn slash30(i: usize) -> (Ipv4Addr, Ipv4Addr, Ipv4Addr) {
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
pub(crate) fn iso_attach_release(sb: &Sandbox, args: &Args) -> (Samples, Samples) {
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
pub(crate) fn iso_cleanup_times(sb: &Sandbox, args: &Args) -> (Samples, usize) {
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
pub(crate) struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What the teardown loop did: its attaches, its releases, closing its TAP fds (the kernel
/// removes a TAP whose last fd closes, as when a hypervisor exits), and for how long it ran.
#[derive(Debug)]
pub(crate) struct TeardownLoop {
    pub(crate) attach: Samples,
    pub(crate) release: Samples,
    pub(crate) close: Samples,
    pub(crate) ran: Duration,
}

/// Phase 3: a second thread attaches and releases guests in a loop over its own connection
/// while the measured client does warm-up + N attaches, each released untimed.
pub(crate) fn iso_under_teardown(sb: &Sandbox, args: &Args) -> (Samples, TeardownLoop) {
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
pub(crate) fn generated_names_in(listing: &str) -> usize {
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
pub(crate) fn iso_leftovers(sb: &Sandbox) -> Vec<String> {
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
pub(crate) fn iso_wait_all_gone(sb: &Sandbox) -> Result<Duration, String> {
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

/// The routed network as the daemon starts its firewall with it: the daemon's own parser and
/// its own construction ([`tapmanager::kinds::isolated::routed_nets`]).
pub(crate) fn routed_net_of(config: &Path) -> tapmanager::net::firewall::RoutedNet {
    let c = tapmanager::config::Config::load(config).expect("sandbox config");
    let mut nets = tapmanager::kinds::isolated::routed_nets(&c);
    assert_eq!(
        nets.len(),
        1,
        "the sandbox has one isolated network, {ISO_NET}"
    );
    nets.remove(0)
}

/// One guest of the usual way: its namespace, its host-side veth and its /30. Dropped while
/// still set up (a failure, Ctrl-C), it removes its links and namespace, best effort.
#[derive(Debug)]
pub(crate) struct UsualGuest {
    pub(crate) ns: String,
    pub(crate) veth: String,
    pub(crate) net: Ipv4Addr,
    pub(crate) gateway: Ipv4Addr,
    pub(crate) guest: Ipv4Addr,
    pub(crate) made: bool,
}

impl UsualGuest {
    pub(crate) fn new(i: usize) -> UsualGuest {
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
    pub(crate) fn rules(&self) -> Vec<String> {
        let port = tapmanager::net::firewall::RoutedPort {
            ifname: self.veth.clone().try_into().expect("interface name"),
            net: 0,
            mac: protocol::MacAddr([0xf6, 0, 0, 0, 0, 1]),
            ip: self.guest,
            gateway: None,
            forwards: Vec::new(),
            ip6: None,
            host6: None,
        };
        tapmanager::net::firewall::routed_port_script(&port)
            .split("; ")
            .map(str::to_owned)
            .collect()
    }

    /// Removes the guest again (untimed): `ip link del` (both ends of the veth and the route),
    /// `ip netns del` (the TAP), and the rules' elements in one `nft -f -`.
    pub(crate) fn cleanup(&mut self) {
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
pub(crate) fn usual_iso_commands(g: &UsualGuest, uid: u32, gid: u32) -> Vec<Command> {
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
pub(crate) fn shell_form(c: &Command) -> String {
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
pub(crate) fn bench_usual_isolated(
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

/// The isolated kind: three tapmanager phases, then the usual way.
pub(crate) fn bench_isolated(args: &Args) {
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
