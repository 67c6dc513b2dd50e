//! `--kind cni`: attaches on a list of Debian's bridge + host-local plugins, and what the
//! daemon adds on top of their ADD (from its log).

use super::*;

/// Attach on a CNI network (Debian's bridge + host-local), one connection, each guest
/// released and its teardown (DEL included) waited for, untimed, before the next: the
/// plugins' own ADD time is taken from the daemon's log, and what the daemon adds is the
/// client-side attach time minus it, sample by sample.
pub(crate) fn bench_cni(args: &Args) {
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
