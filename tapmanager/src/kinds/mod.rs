//! The network kinds, one file each, and the contract the lifecycle drives them by.
//!
//! A kind is what a network's `kind =` names. For each NIC the lifecycle asks its kind, by the
//! functions of this file (one `match` each, as `vmwrapper/src/hypervisor.rs` does for
//! hypervisors):
//!
//! | step | function | runs |
//! |---|---|---|
//! | [`build`] | the kernel work: TAP, links, guards, DHCP listening | on attach |
//! | [`binding`] (`lease.rs`) | the DHCP lease, pure, from the journaled NIC and the config | on attach and adoption |
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
//! [`routed`] (a TAP per guest as a point-to-point link, each guest's /32 routed by the host),
//! [`isolated`] (a namespace per guest, routed or joined), [`masquerade`] (isolated behind NAT),
//! [`macvtap`], [`pod`] (a shim's pod interface taken over), [`cni`] (the CNI plugins).

pub mod bridge;
pub mod cni;
pub mod isolated;
mod lease;
pub mod macvtap;
pub mod masquerade;
pub mod pod;
pub mod routed;

use crate::config::VethBinding;
use crate::config::{Config, NetworkKind};
use crate::hostfail::{Step, StepError};
use crate::net::firewall::Firewall;
use crate::net::link::{self, Links};
use crate::net::netns::NetNs;
use crate::state::{Nic, Record, RecordV1};
use protocol::{IfName, Interface};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use tokio_util::sync::CancellationToken;

pub use bridge::{BridgeState, Bridges};
pub(crate) use lease::{binding, routes, Lease};

/// What was built for one NIC, by kind. Teardown, adoption and the DHCP lease dispatch on
/// this, not on the config's kind, and take from it what the NIC was built with (binding,
/// transit, taken interface); the config supplies only its network's current settings (DNS,
/// lease time, the place of its rules). A NIC whose network is gone or changed kind is not
/// adopted, and is torn down by what was built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum NicState {
    /// A TAP on the network's bridge, guarded on its ingress hook.
    Bridge,
    /// A TAP in the daemon's namespace, the guest's /32 routed to it, guarded on its ingress
    /// hook.
    Routed,
    /// A namespace of its own (pinned by the NIC's name), a veth out of it; `binding` is how
    /// the TAP meets the veth (`None`: routed).
    Isolated { binding: Option<VethBinding> },
    /// As isolated, the guest behind NAT in its namespace; `transit` is the namespace's side
    /// of the host-to-namespace /30.
    Masquerade {
        binding: Option<VethBinding>,
        transit: Ipv4Addr,
    },
    /// A macvtap on the network's lower device, its source MAC guarded.
    Macvtap,
    /// An interface of the caller's namespace taken over (saved under `pods/`, namespace
    /// pinned by the NIC's name); `masquerade`: the guest sits behind NAT in the pod, the
    /// interface untouched.
    Pod {
        netns: (u64, u64),
        taken: IfName,
        masquerade: bool,
    },
    /// The CNI plugins' interface rewired to a TAP (their cache entry under `cni/`, by the
    /// NIC's name); `domain` is the DNS domain their result named.
    Cni {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        domain: Option<String>,
        /// How the plugins' interface meets the TAP (absent in entries migrated from the
        /// previous release: the config's then).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        binding: Option<VethBinding>,
    },
    /// Migrated from a journal that did not say, for a network gone from the config:
    /// teardown undoes what any kind builds, and it is never adopted.
    Unknown,
}

/// Why a kind's step failed. Each names its step; the lifecycle adds which NIC it was, and
/// [`crate::hostfail`] the fix when the kernel refused it.
#[derive(Debug, thiserror::Error)]
pub enum KindError {
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Link(#[from] crate::net::link::LinkError),
    #[error(transparent)]
    Firewall(#[from] crate::net::firewall::FirewallError),
    #[error(transparent)]
    Tap(#[from] crate::net::tap::TapError),
    #[error("cannot start the DHCP server on {0}")]
    Dhcp(String, #[source] dhcp::Error),
    #[error(transparent)]
    Cni(#[from] cni::CniError),
    #[error(transparent)]
    CniConf(#[from] cni::conf::ConfError),
    #[error("the CNI plugins' result for {eth} {lack}")]
    CniResult { eth: String, lack: Lack },
    #[error("the CNI plugins' {eth} in the guest's namespace {lack}")]
    CniInterface { eth: String, lack: Lack },
    #[error(
        "the IPv6 gateway {gateway} did not answer on {eth} in the guest's namespace, so its \
         link-local address (which the guest's default route must name) is unknown: check \
         that the network's router (the CNI plugins' host side, the pod's gateway) has IPv6 \
         on and holds {gateway}"
    )]
    Router6 { eth: String, gateway: Ipv6Addr },
    #[error("the pod's {taken} {lack}")]
    Pod { taken: IfName, lack: Lack },
    #[error("{0} is gone (deleted while it was being set up?)")]
    Gone(String),
    #[error("the cached CNI list")]
    Json(#[from] serde_json::Error),
    #[error("a blocking task of the daemon died")]
    Join(#[from] tokio::task::JoinError),
    /// What only a bug of the daemon explains.
    #[error("the daemon's own bookkeeping: {0}")]
    Bug(&'static str),
}

/// What an interface or result lacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Lack {
    #[error("is not there")]
    Missing,
    #[error("has no MAC")]
    Mac,
    #[error("has no IPv4 address")]
    Address,
    #[error("has no IPv4 address to masquerade behind")]
    MasqueradeAddress,
    #[error("names no IPv4 gateway (neither on the address nor on a default route)")]
    Gateway,
    #[error("has no IPv4 address and default route to hand to the guest")]
    Lease,
}

impl From<ipnet::PrefixLenError> for KindError {
    fn from(_: ipnet::PrefixLenError) -> KindError {
        KindError::Bug("a prefix length over 32")
    }
}

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

/// The request's shape for one NIC on a kind, before anything is chosen: a take-over only on
/// pod networks (and always there), a TAP opened by name only on bridge networks (the only
/// TAPs in the daemon's own namespace, where Firecracker opens them).
pub(crate) fn admit(
    kind: &NetworkKind,
    network: &protocol::NetworkName,
    n: &protocol::NetworkRequest,
) -> Result<(), protocol::Error> {
    let invalid = |m: String| protocol::Error::new(protocol::ErrorCode::InvalidRequest, m);
    match (kind, &n.take_over) {
        (NetworkKind::Pod(_), None) => {
            return Err(invalid(format!(
                "network {network} is a pod network: name the interface to take over"
            )))
        }
        (NetworkKind::Pod(_), Some(_)) | (_, None) => {}
        (_, Some(_)) => {
            return Err(invalid(format!(
                "network {network} is not a pod network: nothing can be taken over on it"
            )))
        }
    }
    if n.by_name && !matches!(kind, NetworkKind::Bridge(_)) {
        return Err(invalid(format!(
            "network {network} is not a bridge network: a TAP opened by name must live in the \
             daemon's network namespace, and only bridge networks' TAPs do"
        )));
    }
    Ok(())
}

/// Calls its argument with every attachment.
pub(crate) type EachRecord<'a> = dyn Fn(&mut dyn FnMut(&Record)) + 'a;

/// What plan() tells a kind about one NIC it is choosing for.
pub(crate) struct PlanNic<'a> {
    pub network: &'a protocol::NetworkName,
    pub request: &'a protocol::NetworkRequest,
    /// The MAC the daemon derives for this NIC (the guest's unless the request asks another).
    pub derived_mac: protocol::MacAddr,
    /// The addresses in use on this NIC's network, attached or planned.
    pub used: &'a dyn crate::ipam::Used,
    /// Calls its argument with every attachment (only kinds that look at other attachments'
    /// state do: the others' plans go by `used` alone); and the NICs of this request planned
    /// before this one.
    pub attached: &'a EachRecord<'a>,
    pub planned: &'a [Nic],
    /// The identity of the namespace a shim passed, for its take-overs.
    pub pod_netns: Option<(u64, u64)>,
}

/// What a kind chose for one NIC: what the guest is told (pod and CNI NICs learn theirs at
/// build) and the state journaled with it.
#[derive(Debug)]
pub(crate) struct Addressing {
    pub address: Option<(Ipv4Addr, u8)>,
    pub gateway: Option<Ipv4Addr>,
    /// The IPv6 lease, on a network with IPv6.
    pub ipv6: Option<protocol::Lease6>,
    pub mtu: u32,
    pub built: NicState,
}

/// Chooses one NIC's addressing on its kind (pure: called under the registry lock).
pub(crate) fn plan(kind: &NetworkKind, p: &PlanNic<'_>) -> Result<Addressing, protocol::Error> {
    match kind {
        NetworkKind::Bridge(b) => bridge::plan(b, p),
        NetworkKind::Routed(r) => routed::plan(r, p),
        NetworkKind::Isolated(iso) => match iso.masquerade() {
            None => isolated::plan(iso, p),
            Some(m) => masquerade::plan(iso, m, p),
        },
        NetworkKind::Macvtap(mv) => macvtap::plan(mv, p),
        NetworkKind::Pod(pod) => pod::plan(pod, p),
        NetworkKind::Cni(c) => cni::port::plan(c, p),
    }
}

/// The refusal of a network with no address left.
fn exhausted(network: &protocol::NetworkName) -> protocol::Error {
    protocol::Error::new(
        protocol::ErrorCode::AddressesExhausted,
        format!("network {network} has no free address"),
    )
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
) -> Result<Vec<OwnedFd>, KindError> {
    let network = record.nics[i].iface.network.clone();
    let kind = &kit
        .config
        .network(&network)
        .ok_or(KindError::Bug("a planned network is not in the config"))?
        .kind;
    match kind {
        NetworkKind::Bridge(_) => {
            bridge::build_port(kit, record, &record.nics[i], gid, cancel).await
        }
        NetworkKind::Routed(_) => {
            routed::build_port(kit, record, &record.nics[i], gid, cancel).await
        }
        NetworkKind::Isolated(iso) => {
            isolated::build_port(kit, iso, record, &record.nics[i], gid, cancel).await
        }
        NetworkKind::Macvtap(mv) => macvtap::build_port(kit, mv, &record.nics[i].iface).await,
        NetworkKind::Pod(p) => {
            let netns =
                pod_netns.ok_or(KindError::Bug("a pod NIC was planned without a namespace"))?;
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

/// Whether the network a NIC was built on is still one of the kind it was built as: only then
/// can the daemon serve it (its DHCP settings, its rules' place are the network's).
fn fits(built: &NicState, kind: &NetworkKind) -> bool {
    match (built, kind) {
        (NicState::Bridge, NetworkKind::Bridge(_))
        | (NicState::Routed, NetworkKind::Routed(_))
        | (NicState::Macvtap, NetworkKind::Macvtap(_))
        | (NicState::Pod { .. }, NetworkKind::Pod(_))
        | (NicState::Cni { .. }, NetworkKind::Cni(_)) => true,
        // Both are isolated networks in the config: masquerade is the one with NAT.
        (NicState::Isolated { .. }, NetworkKind::Isolated(i)) => i.masquerade().is_none(),
        (NicState::Masquerade { .. }, NetworkKind::Isolated(i)) => i.masquerade().is_some(),
        _ => false,
    }
}

/// Whether a NIC's network is still there as the kind it was built as, and what was built
/// for it is all still there, so its guest can be adopted.
pub(crate) fn intact(kit: &Kit<'_>, nic: &Nic) -> bool {
    let iface = &nic.iface;
    let Some(net) = kit.config.network(&iface.network) else {
        return false;
    };
    if !fits(&nic.built, &net.kind) {
        return false;
    }
    let link = || link::index_of(&iface.ifname).is_some();
    match &nic.built {
        NicState::Bridge => link() && kit.bridges.contains_key(&iface.network),
        NicState::Routed => link(),
        NicState::Isolated { .. } | NicState::Masquerade { .. } => {
            link() && kit.pin(&iface.ifname).exists()
        }
        NicState::Macvtap => link(),
        // No host link of that name: the plugins' host side is theirs.
        NicState::Cni { .. } => cni::port::intact(kit, iface),
        NicState::Pod { .. } => pod::intact(kit, iface),
        NicState::Unknown => false,
    }
}

/// Adoption at start: the steps [`build`] took that leave no fd behind are taken again, so
/// what was removed by hand while the daemon was down comes back, for every kind; then the
/// DHCP server is bound again where it was. Errors are logged: the guest is adopted with what
/// there is.
pub(crate) async fn converge(
    kit: &Kit<'_>,
    record: &Record,
    nic: &Nic,
    cancel: &CancellationToken,
) {
    let iface = &nic.iface;
    let outcome: Result<(), KindError> = async {
        match &nic.built {
            NicState::Bridge => bridge::converge(kit, iface).await?,
            NicState::Routed => routed::converge(kit, iface).await?,
            NicState::Isolated { .. } | NicState::Masquerade { .. } => {
                isolated::converge(kit, nic).await?
            }
            NicState::Macvtap => macvtap::converge(kit, iface).await?,
            NicState::Cni { binding, .. } => cni::port::converge(kit, iface, *binding).await?,
            NicState::Pod { .. } => pod::converge(kit, iface).await?,
            NicState::Unknown => {}
        }
        Ok(())
    }
    .await;
    if let Err(e) = outcome {
        tracing::error!(ifname = %iface.ifname, error = %crate::error_chain(&e), "cannot put an adopted NIC back as it was built");
    }
    let Some(b) = binding(kit.config, kit.bridges, record, nic) else {
        return; // no DHCP server for this kind (macvtap: the LAN's own)
    };
    let in_pin = |tap: &str| {
        NetNs::open(&kit.pin(&iface.ifname))
            .step(|| format!("open the namespace pinned for {}", iface.ifname))
            .map_err(KindError::from)
            .and_then(|ns| bind_dhcp_in(&ns, tap, b.clone()))
    };
    let server = match &nic.built {
        NicState::Isolated { .. } | NicState::Masquerade { .. } => in_pin(isolated::NS_TAP),
        NicState::Pod { .. } => in_pin(iface.ifname.as_str()),
        NicState::Cni { .. } => cni::port::bind_dhcp(kit, iface, b.clone()),
        NicState::Bridge | NicState::Routed | NicState::Macvtap | NicState::Unknown => {
            match link::index_of(&iface.ifname) {
                Some(index) => dhcp::Server::bind(index, b.clone())
                    .map_err(|e| KindError::Dhcp(iface.ifname.to_string(), e)),
                None => Err(KindError::Gone(format!("TAP {}", iface.ifname))),
            }
        }
    };
    match server {
        Ok(server) => spawn_dhcp(server, iface, cancel),
        Err(e) => {
            tracing::error!(ifname = %iface.ifname, error = %crate::error_chain(&e), "cannot restart DHCP server")
        }
    }
}

/// Undoes what was built for a NIC whose link the caller has deleted (so no frame passes it
/// unguarded any more): guards, rules, namespaces, the plugins' DEL, the pod's interface
/// given back. Idempotent; continues past errors; says whether everything went.
pub(crate) async fn teardown(kit: &Kit<'_>, nic: &Nic) -> bool {
    let iface = &nic.iface;
    let mut complete = true;
    let bridge = || async { bridge::teardown_port(kit, iface) };
    let routed = || routed::teardown_port(kit, iface);
    let isolated = || isolated::teardown_port(kit, nic);
    let cni = || cni::port::teardown_port(kit, iface);
    let pod = || pod::teardown_port(kit, iface);
    let macvtap = || macvtap::teardown_port(kit, iface);
    match &nic.built {
        NicState::Bridge => complete &= bridge().await,
        NicState::Routed => complete &= routed().await,
        NicState::Isolated { .. } | NicState::Masquerade { .. } => complete &= isolated().await,
        NicState::Cni { .. } => complete &= cni().await,
        NicState::Pod { .. } => complete &= pod().await,
        NicState::Macvtap => complete &= macvtap().await,
        // A NIC of an old journal whose network is gone: undo what any kind does.
        NicState::Unknown => {
            complete &= bridge().await;
            complete &= routed().await;
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
/// side tables it kept and the config's kind; a pod or CNI NIC's lease details (CNI domain,
/// and the routes and DNS servers journals before `fill_leases` lacked) from what they saved
/// under the state dir.
pub(crate) fn migrate(config: &Config, old: RecordV1) -> Record {
    let mut record = old.migrate(|r, iface| {
        match config.network(&iface.network).map(|n| &n.kind) {
            Some(NetworkKind::Bridge(_)) => NicState::Bridge,
            Some(NetworkKind::Routed(_)) => NicState::Routed,
            Some(NetworkKind::Macvtap(_)) => NicState::Macvtap,
            // A transit address is what made a NIC masquerade, whatever the config says now.
            Some(NetworkKind::Isolated(i)) => {
                let binding = r.binding_of(&iface.ifname).unwrap_or(i.binding());
                match r.transit_of(&iface.ifname) {
                    Some(transit) => NicState::Masquerade { binding, transit },
                    None => NicState::Isolated { binding },
                }
            }
            Some(NetworkKind::Pod(_)) => match r.taken_of(&iface.ifname) {
                Some(t) => NicState::Pod {
                    netns: t.netns,
                    taken: t.name.clone(),
                    masquerade: pod::saved(&config.state_dir, iface)
                        .is_some_and(|s| s.binding == pod::Binding::Masquerade),
                },
                None => NicState::Unknown,
            },
            Some(NetworkKind::Cni(_)) => NicState::Cni {
                domain: None,
                binding: None,
            },
            None => NicState::Unknown,
        }
    });
    for nic in &mut record.nics {
        let iface = &mut nic.iface;
        let bare = iface.routes.is_empty() && iface.dns.is_empty();
        match &mut nic.built {
            NicState::Cni { domain, .. } => {
                if let Some(lease) = cni::port::cached_lease(&config.state_dir, iface) {
                    *domain = lease.domain;
                    if bare {
                        iface.routes = routes(&lease.routes);
                        iface.dns = lease.dns;
                        iface.search = lease.search;
                    }
                }
            }
            NicState::Pod {
                masquerade: false, ..
            } if bare => {
                if let Some((_, _, r)) =
                    pod::saved(&config.state_dir, iface).and_then(|s| pod::saved_lease(&s))
                {
                    iface.routes = routes(&r);
                }
            }
            _ => {}
        }
    }
    record
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
            NetworkKind::Routed(_) => {}
        }
    }
    needs
}

/// A veth-like interface (a CNI plugin's, a pod's) joined to a guest's TAP in one namespace.
pub(crate) struct Rejoin<'a> {
    pub ns: &'a NetNs,
    pub links: &'a Links,
    /// The interface and the TAP: names and indices in the namespace.
    pub eth: (&'a str, u32),
    pub tap: (&'a str, u32),
    pub binding: VethBinding,
    /// The guest's MAC and address, the only source it may use.
    pub guest: (protocol::MacAddr, Ipv4Addr),
    /// The guest's IPv6 addresses (global, then link-local); none: its IPv6 stays.
    pub guest6: Vec<Ipv6Addr>,
    pub mtu: u32,
    /// The MAC the interface takes once the guest has its own.
    pub ours: protocol::MacAddr,
    /// The bridge binding's bridge and guard table.
    pub bridge: String,
    pub table: String,
}

/// The interface's side of a CNI or pod NIC: the bridge binding's guard, the interface
/// stripped of its addresses with our MAC, both up, joined by the binding. Each step replaces
/// what is there; `again` (adoption) first clears what would be added twice (the guard
/// table, tc-redirect's filters), so what was removed by hand comes back.
pub(crate) async fn rejoin(r: Rejoin<'_>, again: bool) -> Result<(), KindError> {
    let ((eth, eth_index), (tap, tap_index)) = (r.eth, r.tap);
    if r.binding == VethBinding::Bridge {
        let mut script = String::new();
        if again {
            script.push_str(&crate::net::join::bridge_guard_removal(&r.table));
        }
        script.push_str(&crate::net::join::bridge_guard_script(
            &r.table,
            &crate::net::firewall::PortGuard {
                ifname: tap
                    .parse()
                    .map_err(|_| KindError::Bug("a TAP name of the guest's namespace"))?,
                mac: r.guest.0,
                ip: r.guest.1,
                ip6: r.guest6.clone(),
                bridged: true,
            },
        ));
        r.ns.run_in(move || {
            crate::net::firewall::run_nft_once(&script, "the bridge binding's guard")
        })
        .step(|| "add the bridge binding's guard in the guest's namespace".into())?;
    }
    if !r.guest6.is_empty() {
        // The guest takes the interface's IPv6 addresses: the namespace must not answer
        // for them, nor configure its side of the join from what crosses it.
        ipv6_off_in(r.ns, eth)?;
    }
    r.links.strip(eth_index, eth, r.ours).await?;
    r.links.up(eth_index, eth, r.mtu, None).await?;
    r.links.up(tap_index, tap, r.mtu, None).await?;
    if again && r.binding == VethBinding::TcRedirect {
        for index in [tap_index, eth_index] {
            r.links.del_ingress_qdisc(index).await?;
        }
    }
    let end = |index, name| crate::net::join::End { index, name };
    crate::net::join::join(
        r.links,
        r.binding,
        end(tap_index, tap),
        end(eth_index, eth),
        r.mtu,
        r.guest,
        &r.guest6,
        &r.bridge,
    )
    .await?;
    if !r.guest6.is_empty() && r.binding == VethBinding::Bridge {
        ipv6_off_in(r.ns, &r.bridge)?;
    }
    Ok(())
}

/// The IPv6 a guest of someone else's network (a CNI plugin's, a pod's) is handed: the
/// address and prefix, the gateway (global like the bridge plugin's, or link-local like
/// ptp's and Calico's) and DNS. Routes
/// other than the default one are not handed on: a router advertisement names one router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease6 {
    pub address: ipnet::Ipv6Net,
    pub gateway: Ipv6Addr,
    pub dns: Vec<Ipv6Addr>,
}

/// How long the namespace's IPv6 gateway has to answer: its address may have been added by
/// the plugins a moment ago, and answers once duplicate address detection is over.
const ROUTER_WAIT: std::time::Duration = std::time::Duration::from_secs(4);

/// The guest's IPv6 lease: the plugin's address, its gateway, and the link-local address of
/// the router that holds the gateway (the source of the guest's advertisements, and its
/// default route), asked on `eth` from the guest's MAC on a blocking thread in the namespace.
pub(crate) async fn router6(
    netns: &std::path::Path,
    (eth_name, eth): (&str, u32),
    mac: protocol::MacAddr,
    l: &Lease6,
) -> Result<protocol::Lease6, KindError> {
    let (path, gateway) = (netns.to_owned(), l.gateway);
    let found = tokio::task::spawn_blocking(move || {
        NetNs::open(&path)?.run_in(move || dhcp::probe::router_of(eth, mac.0, gateway, ROUTER_WAIT))
    })
    .await?
    .step(|| format!("ask for the IPv6 gateway {gateway} on {eth_name}"))?;
    let (router, _) = found.ok_or_else(|| KindError::Router6 {
        eth: eth_name.to_owned(),
        gateway,
    })?;
    Ok(protocol::Lease6 {
        address: (l.address.addr(), l.address.prefix_len()),
        gateway,
        router,
        dns: l.dns.clone(),
    })
}

/// A guest's own IPv6 addresses: its lease's, then the link-local of its MAC.
pub(crate) fn own6(l: &protocol::Lease6, mac: protocol::MacAddr) -> Vec<Ipv6Addr> {
    vec![l.address.0, dhcp::frame6::link_local(mac.0)]
}

/// A guest's /64 (or /127) routed to its MAC through a permanent neighbour entry (its
/// EUI-64 link-local), not on-link: an address of it that nobody holds, asked for from
/// outside or by the guest itself through its router, costs the kernel's neighbour table
/// nothing (that table is shared by every namespace of the host).
pub(crate) async fn route_own64(
    links: &Links,
    index: u32,
    mac: protocol::MacAddr,
    l: &protocol::Lease6,
) -> Result<(), KindError> {
    let guest_ll = dhcp::frame6::link_local(mac.0);
    links.add_neighbour(index, guest_ll, mac).await?;
    let own = ipnet::Ipv6Net::new(l.address.0, l.address.1)?.trunc();
    links.add_onlink_route6(own, guest_ll, index).await?;
    Ok(())
}

/// A link of a guest's namespace with its IPv6 off (the guest has its addresses).
pub(crate) fn ipv6_off_in(ns: &NetNs, name: &str) -> Result<(), KindError> {
    let owned = name.to_owned();
    ns.run_in(move || crate::net::link::set_ipv6(&owned, false))
        .step(|| format!("turn IPv6 off on {name} in the guest's namespace"))
        .map_err(KindError::from)
}

/// A netlink connection inside `ns`, and the indices of `names` there.
pub(crate) fn inside(ns: &NetNs, names: [&str; 2]) -> Result<(Links, [u32; 2]), KindError> {
    let handle = tokio::runtime::Handle::current();
    let owned = names.map(str::to_owned);
    ns.run_in(move || {
        let a = nix::net::if_::if_nametoindex(owned[0].as_str())?;
        let b = nix::net::if_::if_nametoindex(owned[1].as_str())?;
        let _entered = handle.enter();
        let links = Links::connect().map_err(std::io::Error::other)?;
        Ok((links, [a, b]))
    })
    .step(|| {
        format!(
            "find {} and {} in the guest's namespace",
            names[0], names[1]
        )
    })
    .map_err(KindError::from)
}

/// Runs a bound DHCP server as a task owned by `cancel`; its death is logged.
/// Starts a NIC's DHCP server on its TAP `index` in the daemon's namespace (the bridge and
/// routed kinds), before any fd of it leaves the daemon.
pub(crate) fn serve_dhcp(
    kit: &Kit<'_>,
    record: &Record,
    nic: &Nic,
    index: u32,
    cancel: &CancellationToken,
) -> Result<(), KindError> {
    let b = binding(kit.config, kit.bridges, record, nic)
        .ok_or(KindError::Bug("a NIC without a DHCP binding"))?;
    let server = dhcp::Server::bind(index, b)
        .map_err(|e| KindError::Dhcp(nic.iface.ifname.to_string(), e))?;
    spawn_dhcp(server, &nic.iface, cancel);
    Ok(())
}

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
) -> Result<dhcp::Server, KindError> {
    let name = tap.to_owned();
    ns.run_in(move || {
        let index = nix::net::if_::if_nametoindex(name.as_str())?;
        Ok(dhcp::Server::bind(index, b))
    })
    .step(|| format!("find {tap} in its namespace"))?
    .map_err(|e| KindError::Dhcp(tap.to_owned(), e))
}

#[cfg(test)]
mod contract {
    //! The pure parts of the contract, per kind, without root: [`admit`], [`plan`] and
    //! [`binding`].
    use super::*;
    use protocol::{ErrorCode, MacAddr, NetworkName, NetworkRequest};

    const CONFIG: &str = r#"
group = "0"
[networks.lan]
kind = "bridge"
bridge = "tmbr0"
gateway = "10.88.0.1/24"
dns = ["10.88.0.53"]
search = ["example.test"]
domain = "example.test"
mtu = 1400
lease_secs = 600

[networks.iso]
kind = "isolated"
range = "169.254.100.0/22"
uplink = "eth0"
dns = ["192.168.77.2"]
mtu = 1450

[networks.nat]
kind = "masquerade"
uplink = "eth0"

[networks.mv]
kind = "macvtap"
lower = "eth0"

[networks.pods]
kind = "pod"
dns = ["10.96.0.10"]
search = ["svc.cluster.local"]

[networks.podnat]
kind = "pod"
binding = "masquerade"

[networks.plugins]
kind = "cni"
cni_network = "mynet"
lease_secs = 120
"#;

    fn config() -> Config {
        Config::parse(CONFIG).unwrap()
    }

    fn name(s: &str) -> NetworkName {
        s.parse().unwrap()
    }

    fn bridges() -> Bridges {
        let mut b = Bridges::new();
        b.insert(
            name("lan"),
            BridgeState {
                index: 7,
                mac: MacAddr([0x02, 0xbb, 0, 0, 0, 1]),
                shards: Default::default(),
            },
        );
        b
    }

    fn nic(network: &str, built: NicState, address: Option<(&str, u8)>, gw: Option<&str>) -> Nic {
        let mut n = crate::state::fixture::nic(network, "tm0123456789", built);
        n.iface.address = address.map(|(a, l)| (a.parse().unwrap(), l));
        n.iface.gateway = gw.map(|g| g.parse().unwrap());
        n
    }

    fn record(nics: Vec<Nic>) -> Record {
        let mut r = crate::state::fixture::record("web-1", nics);
        r.pid = 1;
        r
    }

    fn lease_of(n: Nic) -> Option<dhcp::Binding> {
        let r = record(vec![n]);
        binding(&config(), &bridges(), &r, &r.nics[0])
    }

    #[test]
    fn a_bridge_guest_is_answered_by_the_bridge_with_the_networks_settings() {
        let b = lease_of(nic(
            "lan",
            NicState::Bridge,
            Some(("10.88.0.2", 24)),
            Some("10.88.0.1"),
        ))
        .unwrap();
        assert_eq!(b.server_mac, [0x02, 0xbb, 0, 0, 0, 1]);
        assert_eq!((b.ip, b.prefix_len), ("10.88.0.2".parse().unwrap(), 24));
        assert_eq!(b.server_id, "10.88.0.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(b.dns, vec!["10.88.0.53".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(b.search, vec!["example.test".to_owned()]);
        assert_eq!(b.domain.as_deref(), Some("example.test"));
        assert_eq!((b.mtu, b.lease_secs), (Some(1400), 600));
        assert_eq!(b.hostname.as_deref(), Some("web-1"));
        assert!(b.routes.is_empty());
    }

    #[test]
    fn isolated_and_masquerade_guests_are_answered_from_the_taps_side() {
        let iso = nic(
            "iso",
            NicState::Isolated { binding: None },
            Some(("169.254.100.2", 30)),
            Some("169.254.100.1"),
        );
        let b = lease_of(iso).unwrap();
        assert_eq!(b.server_mac, [0xfe, 0, 0, 0, 0, 9]);
        assert_eq!(b.dns, vec!["192.168.77.2".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(b.mtu, Some(1450));
        let nat = nic(
            "nat",
            NicState::Masquerade {
                binding: None,
                transit: "169.254.128.2".parse().unwrap(),
            },
            Some(("10.0.2.2", 30)),
            Some("10.0.2.1"),
        );
        let b = lease_of(nat).unwrap();
        assert_eq!(
            (b.ip, b.server_id),
            ("10.0.2.2".parse().unwrap(), "10.0.2.1".parse().unwrap())
        );
    }

    #[test]
    fn pod_and_cni_guests_get_the_routes_their_nic_carries() {
        let mut pod = nic(
            "pods",
            NicState::Pod {
                netns: (4, 5),
                taken: "eth0".parse().unwrap(),
                masquerade: false,
            },
            Some(("10.244.0.5", 24)),
            Some("10.244.0.1"),
        );
        pod.iface.mtu = 1450;
        pod.iface.routes = vec![(
            "10.96.0.0".parse().unwrap(),
            12,
            "10.244.0.1".parse().unwrap(),
        )];
        let b = lease_of(pod).unwrap();
        // Our MAC on the pod's interface answers (the guest has the interface's own).
        let ours = super::cni::port::veth_mac(&"tm0123456789".parse().unwrap());
        assert_eq!((b.server_mac, b.server_mac[0]), (ours.0, 0xf2));
        assert_eq!(
            b.routes,
            vec![(
                "10.96.0.0/12".parse().unwrap(),
                "10.244.0.1".parse().unwrap()
            )]
        );
        assert_eq!(b.dns, vec!["10.96.0.10".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(b.search, vec!["svc.cluster.local".to_owned()]);
        assert_eq!(b.mtu, Some(1450));

        let podnat = nic(
            "podnat",
            NicState::Pod {
                netns: (4, 5),
                taken: "eth0".parse().unwrap(),
                masquerade: true,
            },
            Some(("10.0.2.2", 30)),
            Some("10.0.2.1"),
        );
        // Behind NAT the TAP in the pod is the gateway.
        assert_eq!(lease_of(podnat).unwrap().server_mac, [0xfe, 0, 0, 0, 0, 9]);

        let mut cni = nic(
            "plugins",
            NicState::Cni {
                domain: Some("cluster.test".into()),
                binding: Some(VethBinding::TcRedirect),
            },
            Some(("10.22.0.7", 16)),
            Some("10.22.0.1"),
        );
        cni.iface.dns = vec!["10.22.0.53".parse().unwrap()];
        cni.iface.search = vec!["cluster.test".into()];
        cni.iface.routes = vec![(
            "10.23.0.0".parse().unwrap(),
            16,
            "10.22.0.254".parse().unwrap(),
        )];
        let b = lease_of(cni).unwrap();
        assert_eq!(b.domain.as_deref(), Some("cluster.test"));
        assert_eq!(b.dns, vec!["10.22.0.53".parse::<Ipv4Addr>().unwrap()]);
        assert_eq!(
            b.routes,
            vec![(
                "10.23.0.0/16".parse().unwrap(),
                "10.22.0.254".parse().unwrap()
            )]
        );
        assert_eq!(b.lease_secs, 120);
    }

    #[test]
    fn no_binding_for_macvtap_for_a_nic_without_address_or_for_a_kind_the_config_no_longer_has() {
        assert!(lease_of(nic("mv", NicState::Macvtap, None, None)).is_none());
        // A bridge NIC whose network is now an isolated one: built for a bridge, so no guess.
        assert!(lease_of(nic(
            "iso",
            NicState::Bridge,
            Some(("10.88.0.2", 24)),
            Some("10.88.0.1")
        ))
        .is_none());
        assert!(lease_of(nic("lan", NicState::Bridge, None, None)).is_none());
    }

    #[test]
    fn a_nic_fits_only_a_network_still_of_the_kind_it_was_built_as() {
        let c = config();
        let masq = NicState::Masquerade {
            binding: None,
            transit: "169.254.128.2".parse().unwrap(),
        };
        let iso = NicState::Isolated { binding: None };
        assert!(fits(&iso, &kind_of(&c, "iso")));
        assert!(fits(&masq, &kind_of(&c, "nat")));
        // Isolated and masquerade share the config's kind; the NAT tells them apart.
        assert!(!fits(&iso, &kind_of(&c, "nat")));
        assert!(!fits(&masq, &kind_of(&c, "iso")));
        assert!(!fits(&NicState::Bridge, &kind_of(&c, "iso")));
        assert!(!fits(&NicState::Unknown, &kind_of(&c, "lan")));
        assert!(fits(
            &NicState::Cni {
                domain: None,
                binding: None
            },
            &kind_of(&c, "plugins")
        ));
    }

    fn request(network: &str) -> NetworkRequest {
        NetworkRequest::new(name(network))
    }

    fn kind_of(c: &Config, network: &str) -> NetworkKind {
        c.network(&name(network)).unwrap().kind.clone()
    }

    #[test]
    fn admit_keeps_take_overs_to_pod_networks_and_names_to_bridge_ones() {
        let c = config();
        let code = |network: &str, r: NetworkRequest| {
            admit(&kind_of(&c, network), &name(network), &r).map_err(|e| e.code)
        };
        assert_eq!(
            code("pods", request("pods")),
            Err(ErrorCode::InvalidRequest)
        );
        let mut take = request("pods");
        take.take_over = Some("eth0".parse().unwrap());
        assert_eq!(code("pods", take.clone()), Ok(()));
        assert_eq!(code("lan", take), Err(ErrorCode::InvalidRequest));
        let mut by_name = request("iso");
        by_name.by_name = true;
        assert_eq!(code("iso", by_name.clone()), Err(ErrorCode::InvalidRequest));
        assert_eq!(code("lan", by_name), Ok(()));
    }

    fn plan_one(
        network: &str,
        r: &NetworkRequest,
        attached: &[&Record],
        planned: &[Nic],
        pod_netns: Option<(u64, u64)>,
    ) -> Result<Addressing, protocol::Error> {
        let c = config();
        let all = |f: &mut dyn FnMut(&Record)| attached.iter().for_each(|r| f(r));
        plan(
            &kind_of(&c, network),
            &PlanNic {
                network: &name(network),
                request: r,
                derived_mac: MacAddr([0x02, 0, 0, 0, 0, 1]),
                used: &HashSet::new(),
                attached: &all,
                planned,
                pod_netns,
            },
        )
    }

    #[test]
    fn a_pod_interface_is_taken_over_once_and_keeps_its_mac() {
        let mut r = request("pods");
        r.take_over = Some("eth0".parse().unwrap());
        let a = plan_one("pods", &r, &[], &[], Some((4, 5))).unwrap();
        assert_eq!(
            a.built,
            NicState::Pod {
                netns: (4, 5),
                taken: "eth0".parse().unwrap(),
                masquerade: false
            }
        );
        assert_eq!(a.address, None, "the pod's own address, learnt at build");
        let held = record(vec![nic("pods", a.built.clone(), None, None)]);
        let code = |res: Result<Addressing, protocol::Error>| res.map(drop).map_err(|e| e.code);
        assert_eq!(
            code(plan_one("pods", &r, &[&held], &[], Some((4, 5)))),
            Err(ErrorCode::AlreadyAttached)
        );
        assert_eq!(
            code(plan_one("pods", &r, &[], &held.nics, Some((4, 5)))),
            Err(ErrorCode::InvalidRequest)
        );
        // Another namespace's eth0 is another interface.
        assert_eq!(
            code(plan_one("pods", &r, &[&held], &[], Some((4, 6)))),
            Ok(())
        );
        assert_eq!(
            code(plan_one("pods", &r, &[], &[], None)),
            Err(ErrorCode::InvalidRequest)
        );
        let mut with_mac = r.clone();
        with_mac.mac = Some(MacAddr([0x02, 0, 0, 0, 0, 3]));
        assert_eq!(
            code(plan_one("pods", &with_mac, &[], &[], Some((4, 5)))),
            Err(ErrorCode::InvalidRequest)
        );
        // Behind NAT the guest has the fixed address, and may have a MAC of its own.
        with_mac.network = name("podnat");
        let m = plan_one("podnat", &with_mac, &[], &[], Some((4, 5))).unwrap();
        assert_eq!(m.address, Some(("10.0.2.2".parse().unwrap(), 30)));
        assert_eq!(m.gateway, Some("10.0.2.1".parse().unwrap()));
    }

    #[test]
    fn a_cni_guest_takes_the_plugins_mac_and_addresses() {
        let a = plan_one("plugins", &request("plugins"), &[], &[], None).unwrap();
        assert_eq!((a.address, a.gateway), (None, None));
        assert_eq!(
            a.built,
            NicState::Cni {
                domain: None,
                binding: Some(VethBinding::TcRedirect)
            }
        );
        let mut r = request("plugins");
        r.mac = Some(MacAddr([0x02, 0, 0, 0, 0, 3]));
        assert_eq!(
            plan_one("plugins", &r, &[], &[], None).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
    }

    /// The previous release's entry, each NIC as `(network, ifname)` with no lease details.
    fn old_entry(nics: &[(&str, &str)]) -> crate::state::RecordV1 {
        crate::state::RecordV1 {
            vm: "old".parse().unwrap(),
            uid: 1000,
            pid: 1,
            pid_start: 1,
            created: 0,
            interfaces: nics
                .iter()
                .map(|(network, ifname)| {
                    let mut n = nic(
                        network,
                        NicState::Unknown,
                        Some(("10.9.0.2", 24)),
                        Some("10.9.0.1"),
                    );
                    n.iface.ifname = ifname.parse().unwrap();
                    n.iface
                })
                .collect(),
            transit: Vec::new(),
            taken: Vec::new(),
            bindings: Vec::new(),
        }
    }

    #[test]
    fn migration_classifies_by_the_side_tables_and_refills_leases_from_the_state_dir() {
        let dir = std::env::temp_dir().join(format!("tm-migrate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir); // an earlier run's
        let mut config = config();
        config.state_dir = dir.clone();
        let mut old = old_entry(&[
            ("iso", "tm00000000a1"),
            ("nat", "tm00000000a2"),
            ("pods", "tm00000000a3"),
            ("podnat", "tm00000000a4"),
            ("plugins", "tm00000000a5"),
            ("gone", "tm00000000a6"),
            ("pods", "tm00000000a7"),
        ]);
        let n = |s: &str| -> IfName { s.parse().unwrap() };
        // Built as masquerade while "iso" was one: its transit says so.
        old.transit
            .push((n("tm00000000a1"), "169.254.128.6".parse().unwrap()));
        old.bindings
            .push((n("tm00000000a1"), Some(VethBinding::Bridge)));
        let taken = |ifname: &str| crate::state::TakenV1 {
            ifname: n(ifname),
            netns: (4, 5),
            name: n("eth0"),
        };
        old.taken.push(taken("tm00000000a3"));
        old.taken.push(taken("tm00000000a4"));
        // What the pod NIC saved: a route the journal before fill_leases did not carry.
        let saved = |ifname: &str, binding: pod::Binding| pod::Saved {
            ifname: n(ifname),
            taken: n("eth0"),
            mac: MacAddr([2, 0, 0, 0, 0, 7]),
            mtu: 1450,
            addresses: vec![crate::net::link::SavedAddress {
                net: "10.244.0.5/24".parse().unwrap(),
                broadcast: None,
            }],
            routes: vec![
                crate::net::link::SavedRoute {
                    dst: "0.0.0.0/0".parse().unwrap(),
                    gw: Some("10.244.0.1".parse().unwrap()),
                    onlink: false,
                    protocol: 4,
                },
                crate::net::link::SavedRoute {
                    dst: "10.96.0.0/12".parse().unwrap(),
                    gw: Some("10.244.0.254".parse().unwrap()),
                    onlink: false,
                    protocol: 4,
                },
            ],
            ipv6: Default::default(),
            binding,
            ip_forward: None,
            ip6_forward: None,
        };
        pod::write_saved(&dir, &saved("tm00000000a3", pod::Binding::TcRedirect)).unwrap();
        pod::write_saved(&dir, &saved("tm00000000a4", pod::Binding::Masquerade)).unwrap();
        cni::cache::write(
            &dir,
            &cni::cache::Entry {
                nic: "tm00000000a5".into(),
                network: "plugins".into(),
                container_id: "tm00000000a5".into(),
                netns: dir.join("netns/tm00000000a5"),
                ifname: "eth0".into(),
                tap: "tap0".into(),
                conflist: serde_json::json!({}),
                bin_dirs: Vec::new(),
                result: Some(serde_json::json!({
                    "cniVersion": "1.0.0",
                    "interfaces": [{"name": "eth0", "mac": "0a:58:0a:16:00:05", "sandbox": "/x"}],
                    "ips": [{"address": "10.22.0.5/16", "gateway": "10.22.0.1", "interface": 0}],
                    "routes": [{"dst": "10.23.0.0/16"}],
                    "dns": {"nameservers": ["10.22.0.53"], "domain": "cluster.test"}
                })),
            },
        )
        .unwrap();

        let r = migrate(&config, old);
        let states: Vec<&NicState> = r.nics.iter().map(|n| &n.built).collect();
        assert_eq!(
            states,
            vec![
                &NicState::Masquerade {
                    binding: Some(VethBinding::Bridge),
                    transit: "169.254.128.6".parse().unwrap()
                },
                // A masquerade network's NIC without a transit was built as plain isolated.
                &NicState::Isolated { binding: None },
                &NicState::Pod {
                    netns: (4, 5),
                    taken: n("eth0"),
                    masquerade: false
                },
                &NicState::Pod {
                    netns: (4, 5),
                    taken: n("eth0"),
                    masquerade: true
                },
                &NicState::Cni {
                    domain: Some("cluster.test".into()),
                    binding: None
                },
                &NicState::Unknown,
                // A pod NIC the journal has no taken interface for.
                &NicState::Unknown,
            ]
        );
        assert_eq!(
            r.nics[2].iface.routes,
            vec![(
                "10.96.0.0".parse().unwrap(),
                12,
                "10.244.0.254".parse().unwrap()
            )]
        );
        assert!(
            r.nics[3].iface.routes.is_empty(),
            "behind NAT the pod's routes are not the guest's"
        );
        assert_eq!(
            r.nics[4].iface.dns,
            vec!["10.22.0.53".parse::<Ipv4Addr>().unwrap()]
        );
        assert_eq!(
            r.nics[4].iface.routes,
            vec![(
                "10.23.0.0".parse().unwrap(),
                16,
                "10.22.0.1".parse().unwrap()
            )]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn masquerade_transits_are_unique_across_attached_and_planned_nics() {
        let first = plan_one("nat", &request("nat"), &[], &[], None).unwrap();
        let held = record(vec![nic("nat", first.built.clone(), None, None)]);
        let second = plan_one("nat", &request("nat"), &[&held], &[], None).unwrap();
        let third = plan_one("nat", &request("nat"), &[], &held.nics, None).unwrap();
        let transit = |a: &Addressing| match a.built {
            NicState::Masquerade { transit, .. } => transit,
            _ => panic!("not masquerade"),
        };
        assert_ne!(transit(&first), transit(&second));
        assert_eq!(transit(&second), transit(&third));
        // Every guest has the same address.
        assert_eq!(first.address, second.address);
    }
}
