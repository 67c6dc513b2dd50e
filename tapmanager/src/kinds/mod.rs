//! The network kinds, one file each, and the contract the lifecycle drives them by.
//!
//! A kind is what a network's `kind =` names. For each NIC the lifecycle asks its kind, by the
//! functions of this file (one `match` each, as `vmwrapper/src/hypervisor.rs` does for
//! hypervisors):
//!
//! | step | function | runs |
//! |---|---|---|
//! | [`build`] | the kernel work: TAP, links, guards, DHCP listening | on attach |
//! | [`binding`] | the DHCP lease, pure, from the journaled NIC and the config | on attach and adoption |
//! | [`intact`] | whether what was built is still there to adopt | at start |
//! | [`converge`] | puts back what was removed by hand, with the steps [`build`] used, and rebinds DHCP | at start, for an adopted NIC |
//! | [`teardown`] | undoes what [`build`] did (any prefix of it), by what was built | on release, exit, a failed attach, at start for the dead |
//! | [`sweep`] | removes what no journaled NIC owns (a crash before the journal) | at start, after adoption |
//! | [`needs`] | the capabilities the kind's networks need the daemon to keep | at start |
//!
//! Dispatch is on what the journal says was built ([`NicState`]) wherever it can be: a guest
//! keeps the setup it was built with after the config changes.
//!
//! Kinds receive a [`Kit`], never the daemon, and never call into the lifecycle (a test
//! checks that no file here names either). Below them is only [`crate::net`].
//!
//! The kinds: [`bridge`] (a TAP on a shared bridge, with NAT and the DNS forwarder),
//! [`isolated`] (a namespace per guest, routed or joined), [`masquerade`] (isolated behind NAT),
//! [`macvtap`], [`pod`] (a shim's pod interface taken over), [`cni`] (the CNI plugins).

pub mod bridge;
pub mod cni;
pub mod isolated;
pub mod macvtap;
pub mod masquerade;
pub mod pod;

use crate::config::{Config, NetworkKind};
use crate::net::firewall::Firewall;
use crate::net::link::{self, Links};
use crate::net::netns::NetNs;
use crate::state::{Nic, NicState, Record, RecordV1};
use crate::BoxError;
use protocol::{IfName, Interface};
use std::collections::HashSet;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use tokio_util::sync::CancellationToken;

pub use bridge::{BridgeState, Bridges};

/// What a kind works with: the daemon's parts below the lifecycle.
#[derive(Debug, Clone, Copy)]
pub struct Kit<'a> {
    pub config: &'a Config,
    pub links: &'a Links,
    pub firewall: &'a Firewall,
    pub bridges: &'a Bridges,
}

impl Kit<'_> {
    pub fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }

    /// Where a NIC's own namespace (isolated, masquerade, CNI) or a pod's is pinned.
    pub fn pin(&self, ifname: &IfName) -> std::path::PathBuf {
        self.state_dir().join("netns").join(ifname.as_str())
    }
}

/// Builds NIC `i` of a planned record; returns its fds. Pod and CNI NICs learn their MAC,
/// address, gateway, MTU and routes here, and write them into the record. On failure the
/// caller runs [`teardown`] on the same record, which undoes whatever prefix was done.
pub(crate) async fn build(
    kit: &Kit<'_>,
    record: &mut Record,
    i: usize,
    pod_netns: Option<BorrowedFd<'_>>,
    gid: u32,
    cancel: &CancellationToken,
) -> Result<Vec<OwnedFd>, BoxError> {
    let network = record.nics[i].iface.network.clone();
    let kind = &kit.config.network(&network).ok_or("network vanished")?.kind;
    match kind {
        NetworkKind::Bridge(_) => {
            bridge::build_port(kit, record, &record.nics[i], gid, cancel).await
        }
        NetworkKind::Isolated(iso) => {
            isolated::build_port(kit, iso, record, &record.nics[i], gid, cancel).await
        }
        NetworkKind::Macvtap(mv) => macvtap::build_port(kit, mv, &record.nics[i].iface).await,
        NetworkKind::Pod(p) => {
            let netns = pod_netns.ok_or("no pod namespace")?;
            let mut nic = record.nics[i].clone();
            let fds = pod::build_port(kit, p, record, &mut nic, netns, gid, cancel).await;
            record.nics[i] = nic;
            fds
        }
        NetworkKind::Cni(c) => {
            let mut nic = record.nics[i].clone();
            let fds = cni::port::build_port(kit, c, record, &mut nic, gid, cancel).await;
            record.nics[i] = nic;
            fds
        }
    }
}

/// What the DHCP server of one NIC hands out; `None` for a NIC that has none (macvtap: the
/// LAN's own serves it). Pure: from the journaled NIC and the config, the same at attach and
/// after a restart.
pub(crate) fn binding(kit: &Kit<'_>, record: &Record, nic: &Nic) -> Option<dhcp::Binding> {
    let iface = &nic.iface;
    let net = kit.config.network(&iface.network)?;
    let lease = match (&nic.built, &net.kind) {
        (NicState::Bridge, NetworkKind::Bridge(b)) => bridge::lease(kit.bridges, iface, b)?,
        (NicState::Isolated { .. } | NicState::Masquerade { .. }, NetworkKind::Isolated(i)) => {
            isolated::lease(iface, i)
        }
        (NicState::Pod { masquerade, .. }, NetworkKind::Pod(p)) => {
            pod::lease(iface, p, *masquerade)
        }
        (NicState::Cni { domain }, NetworkKind::Cni(c)) => cni::port::lease_of(iface, c, domain),
        _ => return None,
    };
    let (ip, prefix_len) = iface.address?;
    let gateway = iface.gateway?;
    Some(dhcp::Binding {
        mac: iface.mac.0,
        ip,
        prefix_len,
        gateway: Some(gateway),
        server_id: gateway,
        server_mac: lease.server_mac.0,
        routes: iface
            .routes
            .iter()
            .filter_map(|(dst, len, via)| Some((ipnet::Ipv4Net::new(*dst, *len).ok()?, *via)))
            .collect(),
        dns: lease.dns,
        search: lease.search,
        hostname: hostname(&record.vm),
        domain: lease.domain,
        mtu: u16::try_from(lease.mtu).ok(),
        lease_secs: lease.lease_secs,
    })
}

/// A kind's part of a DHCP binding: who answers and what besides address, gateway and routes
/// (which the NIC itself carries).
pub(crate) struct Lease {
    pub server_mac: protocol::MacAddr,
    pub dns: Vec<std::net::Ipv4Addr>,
    pub search: Vec<String>,
    pub domain: Option<String>,
    pub mtu: u32,
    pub lease_secs: u32,
}

fn hostname(vm: &protocol::VmId) -> Option<String> {
    let s = vm.as_str();
    let ok = s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    ok.then(|| s.to_owned())
}

/// Whether what was built for a NIC is all still there, so its guest can be adopted.
pub(crate) fn intact(kit: &Kit<'_>, nic: &Nic) -> bool {
    let iface = &nic.iface;
    let link = || link::index_of(&iface.ifname).is_some();
    match &nic.built {
        NicState::Bridge => link() && kit.bridges.contains_key(&iface.network),
        NicState::Isolated { .. } | NicState::Masquerade { .. } => {
            link() && kit.pin(&iface.ifname).exists() && isolated::net_of(kit, iface).is_some()
        }
        NicState::Macvtap => link(),
        // No host link of that name: the plugins' host side is theirs.
        NicState::Cni { .. } => cni::port::intact(kit, iface),
        NicState::Pod { .. } => pod::intact(kit, iface),
        NicState::Unknown => false,
    }
}

/// Adoption at start: the steps [`build`] took that leave no fd behind are taken again, so
/// what was removed by hand while the daemon was down comes back; then the DHCP server is
/// bound again where it was. Errors are logged: the guest is adopted with what there is.
pub(crate) async fn converge(
    kit: &Kit<'_>,
    record: &Record,
    nic: &Nic,
    cancel: &CancellationToken,
) {
    let iface = &nic.iface;
    let outcome: Result<(), BoxError> = async {
        match &nic.built {
            NicState::Bridge => bridge::converge(kit, iface).await?,
            NicState::Isolated { .. } | NicState::Masquerade { .. } => {
                isolated::converge(kit, nic).await?
            }
            NicState::Macvtap => macvtap::converge(kit, iface).await?,
            NicState::Pod { .. } | NicState::Cni { .. } | NicState::Unknown => {}
        }
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        tracing::error!(ifname = %iface.ifname, error = %crate::error_chain(&*e), "cannot put an adopted NIC back as it was built");
    }
    let Some(b) = binding(kit, record, nic) else {
        return; // no DHCP server for this kind (macvtap: the LAN's own)
    };
    let server = match &nic.built {
        NicState::Isolated { .. } | NicState::Masquerade { .. } => {
            NetNs::open(&kit.pin(&iface.ifname))
                .map_err(BoxError::from)
                .and_then(|ns| bind_dhcp_in(&ns, isolated::NS_TAP, b))
        }
        NicState::Cni { .. } => cni::port::bind_dhcp(kit, iface, b),
        NicState::Pod { .. } => NetNs::open(&kit.pin(&iface.ifname))
            .map_err(BoxError::from)
            .and_then(|ns| bind_dhcp_in(&ns, iface.ifname.as_str(), b)),
        NicState::Bridge | NicState::Macvtap | NicState::Unknown => {
            match link::index_of(&iface.ifname) {
                Some(index) => dhcp::Server::bind(index, b).map_err(BoxError::from),
                None => Err("TAP vanished".into()),
            }
        }
    };
    match server {
        Ok(server) => spawn_dhcp(server, iface, cancel),
        Err(e) => tracing::error!(ifname = %iface.ifname, error = %e, "cannot restart DHCP server"),
    }
}

/// Undoes what was built for a NIC whose link the caller has deleted (so no frame passes it
/// unguarded any more): guards, rules, namespaces, the plugins' DEL, the pod's interface
/// given back. Idempotent; continues past errors; says whether everything went.
pub(crate) async fn teardown(kit: &Kit<'_>, nic: &Nic) -> bool {
    let iface = &nic.iface;
    let mut complete = true;
    let bridge = || async { bridge::teardown_port(kit, iface) };
    let isolated = || isolated::teardown_port(kit, nic);
    let cni = || cni::port::teardown_port(kit, iface);
    let pod = || pod::teardown_port(kit, iface);
    let macvtap = || macvtap::teardown_port(kit, iface);
    match &nic.built {
        NicState::Bridge => complete &= bridge().await,
        NicState::Isolated { .. } | NicState::Masquerade { .. } => complete &= isolated().await,
        NicState::Cni { .. } => complete &= cni().await,
        NicState::Pod { .. } => complete &= pod().await,
        NicState::Macvtap => complete &= macvtap().await,
        // A NIC of an old journal whose network is gone: undo what any kind does.
        NicState::Unknown => {
            complete &= bridge().await;
            complete &= isolated().await;
            complete &= cni().await;
            complete &= pod().await;
            complete &= macvtap().await;
        }
    }
    complete
}

/// Start-up, after adoption and reaping: what no journaled NIC owns (`known`) goes. DEL runs
/// before the orphan namespaces go: plugins clean up inside them.
pub(crate) async fn sweep(kit: &Kit<'_>, known: &HashSet<IfName>) {
    cni::port::sweep(kit, known).await;
    pod::sweep(kit, known).await;
    isolated::sweep(kit, known);
    macvtap::sweep(kit.state_dir());
}

/// The current form of a journal entry of the previous release: each NIC's state from the
/// side tables it kept, the config, and (for pod and CNI NICs) what they saved on disk.
pub(crate) fn migrate(kit: &Kit<'_>, old: RecordV1) -> Record {
    old.migrate(|r, iface| {
        let kind = kit.config.network(&iface.network).map(|n| &n.kind);
        match kind {
            Some(NetworkKind::Bridge(_)) => NicState::Bridge,
            Some(NetworkKind::Macvtap(_)) => NicState::Macvtap,
            Some(NetworkKind::Isolated(i)) => {
                let binding = r.binding_of(&iface.ifname).unwrap_or(i.binding);
                match (&i.masquerade, r.transit_of(&iface.ifname)) {
                    (None, _) => NicState::Isolated { binding },
                    (Some(_), Some(transit)) => NicState::Masquerade { binding, transit },
                    (Some(_), None) => NicState::Unknown,
                }
            }
            Some(NetworkKind::Pod(_)) => {
                match (r.taken_of(&iface.ifname), pod::saved(kit, iface)) {
                    (Some(t), saved) => NicState::Pod {
                        netns: t.netns,
                        taken: t.name.clone(),
                        masquerade: saved.is_some_and(|s| s.binding == pod::Binding::Masquerade),
                    },
                    (None, _) => NicState::Unknown,
                }
            }
            Some(NetworkKind::Cni(_)) => NicState::Cni {
                domain: cni::port::cached_domain(kit, iface),
            },
            None => NicState::Unknown,
        }
    })
}

/// The capabilities the configured kinds need kept.
pub fn needs(config: &Config) -> crate::privileges::Needs {
    let mut needs = crate::privileges::Needs::default();
    for n in config.networks.values() {
        match &n.kind {
            NetworkKind::Isolated(_) | NetworkKind::Cni(_) | NetworkKind::Pod(_) => {
                needs.namespaces = true
            }
            NetworkKind::Macvtap(_) => needs.device_nodes = true,
            NetworkKind::Bridge(b) => needs.low_ports |= b.dns_forward.is_some(),
        }
    }
    needs
}

/// Runs a bound DHCP server as a task owned by `cancel`; its death is logged.
pub(crate) fn spawn_dhcp(server: dhcp::Server, iface: &Interface, cancel: &CancellationToken) {
    let token = cancel.child_token();
    let ifname = iface.ifname.clone();
    tokio::spawn(async move {
        if let Err(e) = server.run(token.clone()).await {
            if !token.is_cancelled() {
                tracing::error!(%ifname, error = %crate::error_chain(&e), "DHCP server stopped");
            }
        }
    });
}

/// Binds a DHCP server on `tap` inside `ns`, from a thread that entered it (the socket keeps
/// the namespace; the server then runs on the runtime like any other).
pub(crate) fn bind_dhcp_in(
    ns: &NetNs,
    tap: &str,
    b: dhcp::Binding,
) -> Result<dhcp::Server, BoxError> {
    let tap = tap.to_owned();
    Ok(ns.run_in(move || {
        let index = nix::net::if_::if_nametoindex(tap.as_str())?;
        dhcp::Server::bind(index, b).map_err(std::io::Error::other)
    })?)
}

#[cfg(test)]
mod tests {
    /// The layering rule of this directory: a kind never names the daemon or the lifecycle.
    #[test]
    fn no_kind_names_the_daemon_or_the_lifecycle() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kinds");
        let mut files = 0;
        let mut dirs = vec![root];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                // This test names them.
                let text = match text.find("#[cfg(test)]\nmod tests {\n    /// The layering rule") {
                    Some(at) => &text[..at],
                    None => &text[..],
                };
                for above in ["crate::daemon", "crate::lifecycle", "Daemon"] {
                    assert!(
                        !text.contains(above),
                        "{} names {above}: kinds/ sits below it",
                        path.display()
                    );
                }
                files += 1;
            }
        }
        assert!(files >= 11, "found only {files} files under kinds/");
    }
}
