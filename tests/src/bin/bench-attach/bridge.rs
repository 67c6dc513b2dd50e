//! `--kind bridge` (the default): TAPs on a bridge, one connection and new connections, beside
//! the usual way's `ip` and `ebtables` in two layouts.

use super::*;

/// The usual way's bridge and its MTU (the same MTU as the sandbox's `default` network).
pub(crate) const USUAL_BRIDGE: &str = "ubr0";

pub(crate) const MTU: u32 = 1400;

/// A Linux bridge takes at most 1024 ports (DESIGN.md §6); keep one free for the measured one.
pub(crate) const MAX_HELD: usize = 1000;

/// The sandbox's `default` network as the tests have it, but a /16, so that `--held` ports fit
/// (its MTU is the usual way's, [`MTU`]).
pub(crate) fn bench_networks() -> String {
    tapmanager_tests::sandbox::wide_networks()
}

/// tapmanager over one connection kept open: (attach, release) samples.
pub(crate) fn bench_one_connection(sb: &Sandbox, args: &Args) -> (Samples, Samples) {
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
pub(crate) fn bench_new_connection(sb: &Sandbox, args: &Args) -> (Samples, Samples) {
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

/// One port of the usual way: its names and addresses.
#[derive(Debug)]
pub(crate) struct UsualPort {
    pub(crate) tap: String,
    pub(crate) chain: String,
    pub(crate) guest_mac: String,
    pub(crate) host_mac: String,
    pub(crate) ip: String,
}

impl UsualPort {
    pub(crate) fn new(i: usize) -> UsualPort {
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
pub(crate) enum Layout {
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
    pub(crate) fn label(self) -> &'static str {
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
pub(crate) fn usual_guard_rules(p: &UsualPort, layout: Layout) -> Vec<Vec<String>> {
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
pub(crate) fn usual_attach_commands(
    p: &UsualPort,
    layout: Layout,
    uid: u32,
    gid: u32,
) -> Vec<Command> {
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
pub(crate) fn usual_cleanup(p: &UsualPort, layout: Layout) {
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

/// Index of the first held usual-way port: far from the measured ones, so names, MACs and
/// addresses never meet.
pub(crate) const HELD_BASE: usize = 20_000;

/// Held ports for the usual way, set up in two processes (`ip -batch`, `ebtables-restore
/// --noflush`): the same TAPs and guards as [`usual_attach_commands`] makes, only faster.
pub(crate) fn hold_usual_ports(n: usize, layout: Layout, uid: u32, gid: u32) {
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

/// The usual way in `layout`, in a namespace of its own with a bridge like the daemon's.
pub(crate) fn bench_usual(args: &Args, layout: Layout) -> Samples {
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

/// The bridge kind: tapmanager (one connection, new connections) beside the usual way's two
/// layouts.
pub(crate) fn bench_bridge(args: &Args) {
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
