//! The command line, by clap.

use super::*;

/// The network kind measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// TAPs on a bridge, beside the usual way's `ip` and `ebtables`.
    Bridge,
    /// A namespace, veth, TAP, routes and rules per guest, beside the usual way's `ip` and
    /// `nft`.
    Isolated,
    /// Debian's bridge + host-local plugins, and what the daemon adds on top of their ADD.
    Cni,
    /// From a guest's exit to its teardown being complete, on a bridge and an isolated
    /// network.
    Exit,
    /// A bridge attach with IPv6 against one without, alternating in one daemon.
    Dual,
    /// Many guests on one network (`--guests`, `--network`): attach cost, memory and fds per
    /// thousand, a restart with all of them journaled, their mass exit, 16 clients at once.
    Scale,
}

/// The network `--kind scale` fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ScaleNetwork {
    /// A bridge network, a /16.
    Bridge,
    /// An isolated network (routed binding), a /16 of /30s.
    Isolated,
    /// A routed network (the routed kind), a /16.
    Routed,
}

/// Attach latency of tapmanager against the usual way (root; namespaces of its own only).
#[derive(Debug, clap::Parser)]
#[command(name = "bench-attach")]
pub(crate) struct Args {
    /// The network kind measured.
    #[arg(long, value_enum, default_value_t = Kind::Bridge)]
    pub(crate) kind: Kind,
    /// Samples per method.
    #[arg(long, default_value_t = 200, value_parser = at_least_one)]
    pub(crate) attaches: usize,
    /// Attaches before the samples.
    #[arg(long, default_value_t = 10)]
    pub(crate) warmup: usize,
    /// Other ports that stay attached (with their guards) while both methods are measured
    /// (bridge kind only; at most 1000: a Linux bridge takes 1024 ports).
    #[arg(long, default_value_t = 0, value_parser = held_ports)]
    pub(crate) held: usize,
    /// Guests held at once (`--kind scale`).
    #[arg(long, default_value_t = 10_000)]
    pub(crate) guests: usize,
    /// The network `--kind scale` fills.
    #[arg(long, value_enum, default_value_t = ScaleNetwork::Bridge)]
    pub(crate) network: ScaleNetwork,
    /// Internal: this process is `--kind scale`'s guest holder, on this socket.
    #[arg(long, hide = true)]
    pub(crate) holder: Option<PathBuf>,
    /// The isolated network's binding (isolated kind only; the usual way stays routed).
    #[arg(long, default_value = "routed", value_parser = ["routed", "bridge", "tc-redirect"])]
    pub(crate) binding: String,
    /// Where the sandbox's state dir goes (tmpfs, as /run is in production).
    #[arg(long = "state-base", default_value = "/dev/shm")]
    pub(crate) base_dir: PathBuf,
    /// The daemon's RUST_LOG.
    #[arg(long = "log", default_value = "info")]
    pub(crate) log_filter: String,
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn held_ports(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > MAX_HELD => Err(format!(
            "at most {MAX_HELD}: a Linux bridge takes 1024 ports, and one is measured"
        )),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The command line, or the usage and exit 2.
pub(crate) fn parse_args() -> Args {
    let args = <Args as clap::Parser>::parse();
    if args.kind != Kind::Bridge && args.held > 0 {
        <Args as clap::CommandFactory>::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--held is for the bridge kind only",
            )
            .exit();
    }
    args
}
