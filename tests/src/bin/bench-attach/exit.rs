//! `--kind exit`: from a guest's exit (its launcher gone) to its teardown being complete.

use super::*;

/// A vmwrapper holds one NIC on `net` until its stdin closes; the clock runs from the moment
/// its exit is reaped (the daemon's pidfd fires at that moment too) until its journal entry,
/// its links and its namespace pin are all gone, polled every 250 µs.
pub(crate) fn bench_exit(args: &Args) {
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
