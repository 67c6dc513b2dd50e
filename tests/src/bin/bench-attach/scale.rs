//! `--kind scale`: many guests on one network (`--guests`, default 10,000; `--network bridge`,
//! a /16, or `isolated`), held as a host's hypervisors hold them, and what that costs.
//!
//! The guests are held by one child process (this binary again, with the hidden `--holder`):
//! it attaches them one after another over one connection and keeps every TAP fd, as
//! `--held` does, and when it exits they all go at once, as when a host's VMs die together.
//! Printed, for every 1,000 guests:
//!
//! - the attach p50 and p99 of those 1,000 (request written to fds received, in the holder);
//! - the daemon's resident memory (`VmRSS`), its open fds, and both per guest beyond idle;
//! - the kernel's slab memory per guest beyond idle (`Slab:` of `/proc/meminfo`: host-wide,
//!   so a quiet machine matters).
//!
//! Then, with every guest still held:
//!
//! 1. **restart**: the daemon killed (SIGKILL, as a crash) and started again: the time until it
//!    logs `serving` (reconcile done: every guest adopted) and until a new attach is served;
//! 2. **16 clients**: 16 threads, a connection each, attach 100 guests each at once (held, then
//!    released): attaches per second over the whole burst;
//! 3. **mass exit**: the holder's stdin closed, so it exits with every fd: the time until no
//!    journal entry and no guest link is left, and, meanwhile, another client's attach and
//!    release in a loop: the p50/p99 of those attaches;
//! 4. the daemon's memory once they are all gone, beside idle.
//!
//! Figures only: nothing here is asserted against a target.

use super::*;
use std::io::{BufRead, BufReader, Write as _};

/// Figures are printed every this many guests.
const STEP: usize = 1000;
/// Clients of the concurrent burst, and attaches each.
const CLIENTS: usize = 16;
const PER_CLIENT: usize = 100;

fn network_name(n: ScaleNetwork) -> &'static str {
    match n {
        ScaleNetwork::Bridge => "default",
        ScaleNetwork::Isolated => ISO_NET,
        ScaleNetwork::Routed => "fleet",
    }
}

/// A routed /16 (the routed kind), no NAT.
fn routed_networks() -> String {
    "[networks.fleet]\nkind = \"routed\"\ndevice = \"tmrt0\"\ngateway = \"10.90.0.1/16\"\nmtu = 1400\n"
        .to_owned()
}

/// Raises the fd limit to at least the packaged unit's `LimitNOFILE=65536` (root may raise the
/// hard limit): the holder keeps a fd per guest, and the daemon (a child of this process)
/// needs two per guest; a shell's 1,024 (or this machine's hard 20,000) is not a host's.
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let limit = hard.max(65_536);
    if setrlimit(Resource::RLIMIT_NOFILE, limit, limit).is_err() {
        // Without CAP_SYS_RESOURCE (this development VM's root lacks it): the hard limit.
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
}

/// The holder: `--guests` attaches on one connection, a `MARK n p50 p99` line after each
/// [`STEP`] (then it waits for a line on stdin, so the parent reads the daemon at that point),
/// `DONE`, and then it holds every fd until stdin ends, and exits.
pub(crate) fn hold(socket: &Path, args: &Args) {
    raise_nofile();
    let net = network_name(args.network);
    let mut client = Client::connect(socket).expect("connect");
    let mut held = Vec::with_capacity(args.guests);
    let mut step = Samples::new("");
    let mut stdin = std::io::stdin().lock().lines();
    for i in 0..args.guests {
        let vm = vm_id("g", i);
        let t = Instant::now();
        match client.attach(one_nic_on(&vm, net)) {
            Ok((_, fds)) => held.push(fds),
            Err(e) => {
                println!("FAIL guest {i}: {e}");
                std::process::exit(1);
            }
        }
        step.push(t.elapsed());
        if (i + 1) % STEP == 0 || i + 1 == args.guests {
            println!(
                "MARK {} {:.3} {:.3}",
                i + 1,
                step.percentile(50.0),
                step.percentile(99.0)
            );
            step = Samples::new("");
            if stdin.next().is_none() {
                return;
            }
        }
    }
    println!("DONE");
    while stdin.next().is_some() {}
    // Every TAP fd closes with the process, as when the host's hypervisors die together.
    drop(held);
}

/// What the daemon and the kernel hold at one moment.
#[derive(Debug, Clone, Copy)]
struct Usage {
    rss_kib: u64,
    fds: u64,
    slab_kib: u64,
}

impl Usage {
    fn of(sb: &Sandbox) -> Usage {
        let pid = sb.daemon_pid();
        let field = |file: &str, key: &str| -> u64 {
            std::fs::read_to_string(file)
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
                .unwrap_or(0)
        };
        Usage {
            rss_kib: field(&format!("/proc/{pid}/status"), "VmRSS:"),
            fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64),
            slab_kib: field("/proc/meminfo", "Slab:"),
        }
    }
}

/// Guest links (TAPs, host veths) of the daemon's shape in the sandbox's namespace.
fn guest_links(sb: &Sandbox) -> usize {
    sb.taps().len()
}

/// Attach (timed) and release on a connection of its own, until `stop`.
fn churn(sb: &Sandbox, net: &'static str, stop: &AtomicBool) -> Samples {
    let mut s = Samples::new("  attaches meanwhile (another client)");
    let mut client = sb.client();
    let mut i = 0;
    // Ctrl-C stops it too: the measuring thread's panic waits for this one (a scope).
    while !stop.load(Ordering::Relaxed) && !INTERRUPTED.load(Ordering::Relaxed) {
        let vm = vm_id("churn", i);
        let t = Instant::now();
        let (_, fds) = client.attach(one_nic_on(&vm, net)).expect("attach");
        s.push(t.elapsed());
        client.release(&vm).expect("release");
        drop(fds);
        i += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    s
}

/// `CLIENTS` threads attach `PER_CLIENT` guests each at once; returns attaches per second and
/// the refusals (each printed once by its code and message).
fn burst(sb: &Sandbox, net: &'static str) -> (f64, usize) {
    let start = std::sync::Barrier::new(CLIENTS);
    let t = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let start = &start;
                scope.spawn(move || {
                    let mut client = sb.client();
                    start.wait();
                    let t = Instant::now();
                    let mut refused = Vec::new();
                    let held: Vec<_> = (0..PER_CLIENT)
                        .filter_map(|i| {
                            let vm = vm_id(&format!("burst{c}"), i);
                            match client.attach(one_nic_on(&vm, net)) {
                                Ok((_, fds)) => Some((vm, fds)),
                                Err(e) => {
                                    refused.push(e.to_string());
                                    None
                                }
                            }
                        })
                        .collect();
                    let took = t.elapsed();
                    for (vm, fds) in held {
                        client.release(&vm).expect("release");
                        drop(fds);
                    }
                    (took, refused)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .fold((Duration::ZERO, Vec::new()), |(t, mut r), (t2, r2)| {
                r.extend(r2);
                (t.max(t2), r)
            })
    });
    let (took, refused) = t;
    let mut kinds: Vec<&String> = refused.iter().collect();
    kinds.sort();
    kinds.dedup();
    for k in kinds {
        println!("  refused in the burst: {k}");
    }
    (
        (CLIENTS * PER_CLIENT - refused.len()) as f64 / took.as_secs_f64(),
        refused.len(),
    )
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub(crate) fn bench_scale(args: &Args) {
    context(args);
    raise_nofile();
    let net = network_name(args.network);
    let opts = SandboxOptions {
        base_dir: args.base_dir.clone(),
        log_filter: args.log_filter.clone(),
    };
    let (mut sb, _lan) = match args.network {
        ScaleNetwork::Bridge => (
            Sandbox::with_options("scale", GROUP, &bench_networks(), opts),
            None,
        ),
        ScaleNetwork::Routed => (
            Sandbox::with_options("scale", GROUP, &routed_networks(), opts),
            None,
        ),
        ScaleNetwork::Isolated => {
            let mut sb = Sandbox::with_options("scale", GROUP, &isolated_networks("routed"), opts);
            // The uplink must exist when the daemon starts: make the LAN, then start again.
            let lan = lan(&sb);
            sb.kill();
            sb.start();
            (sb, Some(lan))
        }
    };
    println!(
        "scale: {} guests on network `{net}` ({:?}), held by one process; figures every {STEP}",
        args.guests, args.network
    );
    // QEMU's own helper first, up to one bridge's cap, while the daemon idles.
    let helper = match args.network {
        ScaleNetwork::Bridge => bench_helper(args.guests.min(STEP)),
        _ => None,
    };
    let mut first_step = Samples::new("tapmanager, the first 1,000 guests (one process)");
    std::thread::sleep(Duration::from_millis(500));
    let idle = Usage::of(&sb);
    println!(
        "idle daemon: RSS {:.1} MiB, {} fds\n",
        mib(idle.rss_kib),
        idle.fds
    );
    println!(
        "{:>7} {:>9} {:>9} {:>9} {:>6} {:>10} {:>10} {:>12}",
        "guests", "p50 ms", "p99 ms", "RSS MiB", "fds", "KiB/guest", "fds/guest", "slab KiB/g"
    );
    let mut holder = Command::new(std::env::current_exe().expect("own path"))
        .arg("--holder")
        .arg(&sb.socket)
        .args(["--guests", &args.guests.to_string()])
        .args(["--network", &format!("{:?}", args.network).to_lowercase()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the holder");
    let mut to_holder = holder.stdin.take().expect("piped");
    let from_holder = BufReader::new(holder.stdout.take().expect("piped"));
    let started = Instant::now();
    let mut first_p50 = None;
    let mut last_p50 = 0.0;
    let mut lines = from_holder.lines();
    for line in lines.by_ref() {
        let line = line.expect("holder output");
        check_interrupted();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["MARK", n, p50, p99] => {
                let n: u64 = n.parse().expect("count");
                let u = Usage::of(&sb);
                let per = |now: u64, then: u64| now.saturating_sub(then) as f64 / n as f64;
                println!(
                    "{n:>7} {p50:>9} {p99:>9} {:>9.1} {:>6} {:>10.1} {:>10.2} {:>12.1}",
                    mib(u.rss_kib),
                    u.fds,
                    per(u.rss_kib, idle.rss_kib),
                    per(u.fds, idle.fds),
                    per(u.slab_kib, idle.slab_kib)
                );
                let p: f64 = p50.parse().expect("p50");
                if first_p50.is_none() {
                    first_step.label = format!("tapmanager, guests 1 to {n}: p50 {p50} ms");
                }
                first_p50.get_or_insert(p);
                last_p50 = p;
                writeln!(to_holder, "go").expect("to holder");
            }
            ["DONE"] => break,
            _ => panic!("holder: {line}"),
        }
    }
    let filled = started.elapsed();
    let first = first_p50.unwrap_or(0.0);
    println!(
        "\nfilled in {:.1} s; attach p50 of the last {STEP} / of the first {STEP}: {:.2}x",
        filled.as_secs_f64(),
        last_p50 / first
    );
    if let Some(h) = &helper {
        print_table(&[h]);
        println!(
            "qemu-bridge-helper p50 / tapmanager p50 (first {STEP}): {:.2}x ({})",
            h.percentile(50.0) / first,
            first_step.label
        );
    }

    // 1. Restart with every guest journaled and live.
    let servings = |sb: &Sandbox| sb.log().matches("serving").count();
    let before = servings(&sb);
    sb.kill();
    let t = Instant::now();
    sb.spawn();
    let mut serving = None;
    let mut first_attach = None;
    while first_attach.is_none() {
        check_interrupted();
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "no restart in 10 minutes"
        );
        if serving.is_none() && servings(&sb) > before {
            serving = Some(t.elapsed());
        }
        let probe = vm_id("probe", 0);
        if let Ok(mut c) = Client::connect(&sb.socket) {
            if let Ok((_, fds)) = c.attach(one_nic_on(&probe, net)) {
                first_attach = Some(t.elapsed());
                c.release(&probe).expect("release");
                drop(fds);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let serving = serving.unwrap_or_else(|| t.elapsed());
    println!(
        "restart with {} journaled: serving (reconcile done) after {:.2} s, first attach \
         served after {:.2} s",
        args.guests,
        serving.as_secs_f64(),
        first_attach.unwrap_or_default().as_secs_f64()
    );

    // 2. 16 clients at once.
    let (rate, refused) = burst(&sb, net);
    println!(
        "{CLIENTS} clients x {PER_CLIENT} attaches at once: {rate:.0} attaches/s ({refused} refused)"
    );

    // 3. Mass exit, with another client attaching meanwhile.
    let stop = AtomicBool::new(false);
    let (gone, during) = std::thread::scope(|scope| {
        let meanwhile = scope.spawn(|| churn(&sb, net, &stop));
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        drop(to_holder);
        holder.wait().expect("holder exit");
        println!(
            "mass exit: the holder's own exit (the kernel closing its TAP fds) took {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let mut gone = None;
        while t.elapsed() < Duration::from_secs(600) {
            check_interrupted();
            // The holder's guests (vm ids `g-N`): an entry goes only once its link and its
            // guards have. The other client's own attachment comes and goes meanwhile, so
            // neither the whole journal nor the link count can say it.
            if !sb.journal_entries().iter().any(|e| e.starts_with("0-g-")) {
                gone = Some(t.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        stop.store(true, Ordering::Relaxed);
        (gone, meanwhile.join().expect("churn thread"))
    });
    match gone {
        Some(d) => println!(
            "mass exit of {}: all gone after {:.1} s",
            args.guests,
            d.as_secs_f64()
        ),
        None => println!(
            "mass exit of {}: NOT all gone after 600 s ({} journal entries, {} links)",
            args.guests,
            sb.journal_entries().len(),
            guest_links(&sb)
        ),
    }
    // Once the other client stopped: nothing of anyone's is left.
    match sb.wait_for(60, || {
        sb.journal_entries().is_empty() && guest_links(&sb) == 0
    }) {
        true => println!("then no journal entry and no guest link left"),
        false => println!(
            "then still {} journal entries, {} guest links after 60 s",
            sb.journal_entries().len(),
            guest_links(&sb)
        ),
    }
    print_table(&[&during]);

    // 4. Memory once they left.
    std::thread::sleep(Duration::from_secs(2));
    let after = Usage::of(&sb);
    println!(
        "\nafter they left: RSS {:.1} MiB ({:+.1}% of idle, which was measured before the \
         restart), {} fds",
        mib(after.rss_kib),
        (after.rss_kib as f64 / idle.rss_kib as f64 - 1.0) * 100.0,
        after.fds
    );
    println!("load average at the end {}", loadavg());
}
