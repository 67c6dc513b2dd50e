//! `--kind dual`: the cost of IPv6 on a bridge attach. One daemon serves two bridge networks
//! that differ only in `gateway6` (the dual-stack one also gets its guests' IPv6 addresses in
//! the guards and a router side on the DHCP socket); attaches alternate between them over one
//! connection, so both see the same machine at the same moments. The bound: a
//! dual-stack attach costs at most 20% more than an IPv4-only one (ratio of p50s).

use super::*;

/// The two networks: `default` as `--kind bridge` has it, and `dual` with IPv6.
fn networks() -> String {
    format!(
        "{}\n[networks.dual]\nkind = \"bridge\"\nbridge = \"tmbr6\"\ngateway = \"10.90.0.1/16\"\n\
         gateway6 = \"fd90::1/64\"\ndns = [\"10.90.0.1\"]\ndns6 = [\"fd90::1\"]\nmtu = {MTU}\n",
        bench_networks()
    )
}

pub(crate) fn bench_dual(args: &Args) {
    context(args);
    let started = Instant::now();
    let opts = SandboxOptions {
        base_dir: args.base_dir.clone(),
        log_filter: args.log_filter.clone(),
    };
    let sb = Sandbox::with_options("benchdual", GROUP, &networks(), opts);
    let mut v4 = Samples::new("attach, IPv4 only (network default)");
    let mut v6 = Samples::new("attach, dual stack (network dual)");
    let mut client = sb.client();
    for i in 0..args.warmup + args.attaches {
        check_interrupted();
        // Alternate which goes first, so neither always follows the other's release.
        let order = if i % 2 == 0 {
            ["default", "dual"]
        } else {
            ["dual", "default"]
        };
        for network in order {
            let vm = vm_id(network, i);
            let (took, _ifname, fds) = timed_attach_on(&mut client, &vm, network);
            timed_release(&mut client, &vm, fds);
            if i >= args.warmup {
                if network == "dual" { &mut v6 } else { &mut v4 }.push(took);
            }
        }
    }
    drop(sb);
    println!();
    print_table(&[&v4, &v6]);
    println!();
    let ratio = v6.percentile(50.0) / v4.percentile(50.0);
    println!(
        "p50: IPv4 only {:.3} ms, dual stack {:.3} ms; dual / IPv4 only {ratio:.3} \
         (target <= 1.20: {})",
        v4.percentile(50.0),
        v6.percentile(50.0),
        met(ratio <= 1.20)
    );
    println!(
        "total run time: {:.1} s; load average at the end {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
}
