//! The daemon's configuration: a TOML file parsed into raw structs, then converted into
//! validated ones (`TryFrom`), so the rest of the daemon never sees a config that is wrong.
//!
//! ```toml
//! socket = "/run/tapmanager/tapmanager.sock"
//! state_dir = "/run/tapmanager"
//! group = "tapmanager"
//!
//! [networks.default]
//! kind = "bridge"
//! bridge = "tmbr0"
//! gateway = "10.88.0.1/24"
//! dns = ["10.88.0.1"]
//! ```

use ipnet::Ipv4Net;
use protocol::{IfName, MacAddr, NetworkName};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}", .0.display())]
    Read(PathBuf, #[source] std::io::Error),
    #[error("config file {}", .0.display())]
    Parse(PathBuf, #[source] Box<toml::de::Error>),
    #[error("group {0:?} does not exist (give a name from /etc/group or a numeric gid)")]
    UnknownGroup(String),
    #[error("user {0:?} does not exist (give a name from /etc/passwd or a numeric uid)")]
    UnknownUser(String),
    #[error("network {network}: {problem}")]
    Network { network: String, problem: String },
    #[error("invalid name")]
    Name(#[source] protocol::InvalidValue),
    #[error("interface prefix {0:?} must be 1 to 4 lowercase letters")]
    Prefix(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_socket")]
    socket: PathBuf,
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    #[serde(default = "default_group")]
    group: String,
    /// Prefix of every interface the daemon creates; reconcile removes unknown links carrying it.
    #[serde(default = "default_prefix")]
    interface_prefix: String,
    #[serde(default)]
    networks: BTreeMap<String, RawNetwork>,
    #[serde(default)]
    policy: RawPolicy,
}

/// `[policy]`: how much each uid may hold. Root is not counted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(default = "default_max_attachments")]
    max_attachments: u32,
    #[serde(default = "default_max_queues")]
    max_queues: u32,
    /// `[[policy.quota]]`: other limits for some users and groups; the first that names the
    /// caller applies.
    #[serde(default)]
    quota: Vec<RawQuota>,
}

impl Default for RawPolicy {
    fn default() -> RawPolicy {
        RawPolicy {
            max_attachments: default_max_attachments(),
            max_queues: default_max_queues(),
            quota: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuota {
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
    max_attachments: u32,
    max_queues: u32,
}

fn default_max_attachments() -> u32 {
    32
}
fn default_max_queues() -> u32 {
    128
}

fn default_socket() -> PathBuf {
    protocol::DEFAULT_SOCKET.into()
}
fn default_state_dir() -> PathBuf {
    "/run/tapmanager".into()
}
fn default_group() -> String {
    "tapmanager".into()
}
fn default_prefix() -> String {
    "tm".into()
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
enum RawNetwork {
    Bridge(RawBridge),
    Isolated(RawIsolated),
    Masquerade(RawMasquerade),
    Macvtap(RawMacvtap),
    Cni(RawCni),
    Pod(RawPod),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPod {
    /// `tc-redirect` (default), `bridge` or `masquerade`.
    binding: Option<String>,
    /// Masquerade only: the guest's subnet inside the pod (gateway = network + 1, guest = + 2).
    cidr: Option<Ipv4Net>,
    /// Masquerade only: `PROTO:POD_PORT:GUEST_PORT`, explicit forwards from the pod's address.
    #[serde(default)]
    ports: Vec<String>,
    /// Handed to the guest by DHCP (the pod's resolv.conf is not the daemon's to read).
    #[serde(default)]
    dns: Vec<Ipv4Addr>,
    #[serde(default)]
    search: Vec<String>,
    #[serde(default = "default_lease")]
    lease_secs: u32,
    /// These users and groups may pass a namespace they do not own (a shim running as a
    /// service user for the kubelet's pods, say). Root always may.
    #[serde(default)]
    adopt_any_users: Vec<String>,
    #[serde(default)]
    adopt_any_groups: Vec<String>,
    #[serde(default)]
    allow_users: Vec<String>,
    #[serde(default)]
    allow_groups: Vec<String>,
    #[serde(default)]
    private: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCni {
    /// The `name` of a network configuration (list) in `cni_conf_dir`.
    cni_network: String,
    #[serde(default = "default_cni_conf_dir")]
    cni_conf_dir: PathBuf,
    /// One directory or several.
    #[serde(default = "default_cni_bin_dir")]
    cni_bin_dir: OneOrMany,
    /// `tc-redirect` (default) or `bridge`.
    binding: Option<String>,
    #[serde(default = "default_lease")]
    lease_secs: u32,
    /// Run CNI GC (spec 1.1) at start, naming only this daemon's attachments as valid.
    #[serde(default)]
    gc: bool,
    #[serde(default)]
    allow_users: Vec<String>,
    #[serde(default)]
    allow_groups: Vec<String>,
    #[serde(default)]
    private: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

fn default_cni_conf_dir() -> PathBuf {
    "/etc/cni/net.d".into()
}
fn default_cni_bin_dir() -> OneOrMany {
    OneOrMany::One("/opt/cni/bin".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMacvtap {
    /// The host device the macvtaps sit on.
    lower: String,
    #[serde(default = "default_macvtap_mode")]
    mode: String,
    #[serde(default = "default_mtu")]
    mtu: u32,
    /// MACs a caller may ask for, by prefix ("52:54:00"); `["any"]` for any. Default: none,
    /// only the MAC the daemon derives from the caller and VM id.
    #[serde(default)]
    allowed_macs: Vec<String>,
    #[serde(default)]
    allow_users: Vec<String>,
    #[serde(default)]
    allow_groups: Vec<String>,
    #[serde(default)]
    private: bool,
}

fn default_macvtap_mode() -> String {
    "bridge".into()
}

// The raw network tables repeat their common keys (allow_users, ...) rather than share a
// `#[serde(flatten)]` struct: serde ignores `deny_unknown_fields` across a flatten, and a
// misspelt key must be an error.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMasquerade {
    uplink: String,
    /// The guest's subnet inside its own namespace: gateway = network + 1, guest = network + 2.
    #[serde(default = "default_masquerade_cidr")]
    cidr: Ipv4Net,
    /// Explicit forwards only, `PROTO:HOST_PORT:GUEST_PORT`.
    #[serde(default)]
    ports: Vec<String>,
    /// One /30 per guest between the host and the guest's namespace.
    #[serde(default = "default_transit")]
    transit: Ipv4Net,
    /// Only `routed`: accepted so that a wrong value gets an explanation, not "unknown field".
    binding: Option<String>,
    #[serde(default)]
    drop: Vec<Ipv4Net>,
    allow: Option<Vec<Ipv4Net>>,
    #[serde(default)]
    dns: Vec<Ipv4Addr>,
    #[serde(default = "default_mtu")]
    mtu: u32,
    #[serde(default = "default_lease")]
    lease_secs: u32,
    #[serde(default)]
    allow_users: Vec<String>,
    #[serde(default)]
    allow_groups: Vec<String>,
    #[serde(default)]
    private: bool,
}

fn default_masquerade_cidr() -> Ipv4Net {
    "10.0.2.0/30".parse().expect("valid")
}
fn default_transit() -> Ipv4Net {
    "169.254.128.0/17".parse().expect("valid")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIsolated {
    /// Carved into one /30 per guest: network, gateway, guest, broadcast.
    range: Ipv4Net,
    /// The host interface NATed traffic leaves by.
    uplink: String,
    /// `routed` (default), `bridge` or `tc-redirect`: see [`VethBinding`].
    binding: Option<String>,
    #[serde(default)]
    drop: Vec<Ipv4Net>,
    allow: Option<Vec<Ipv4Net>>,
    #[serde(default)]
    dns: Vec<Ipv4Addr>,
    #[serde(default = "default_mtu")]
    mtu: u32,
    #[serde(default = "default_lease")]
    lease_secs: u32,
    #[serde(default)]
    allow_users: Vec<String>,
    #[serde(default)]
    allow_groups: Vec<String>,
    #[serde(default)]
    private: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBridge {
    bridge: String,
    gateway: Ipv4Net,
    #[serde(default)]
    dns: Vec<Ipv4Addr>,
    #[serde(default)]
    search: Vec<String>,
    domain: Option<String>,
    addresses: Option<Vec<Ipv4Net>>,
    #[serde(default = "default_mtu")]
    mtu: u32,
    #[serde(default = "default_lease")]
    lease_secs: u32,
    /// Masquerade the subnet out of the host (by `uplink` only, when given).
    #[serde(default)]
    nat: bool,
    uplink: Option<String>,
    /// Answer DNS on the gateway address, relaying to the host's resolvers.
    #[serde(default)]
    dns_forward: bool,
    #[serde(default)]
    dns_upstream: Vec<Ipv4Addr>,
    resolv_conf: Option<PathBuf>,
    /// Extra users and groups allowed on this network besides the daemon's group.
    #[serde(default)]
    allow_users: Vec<String>,
    #[serde(default)]
    allow_groups: Vec<String>,
    /// When true, only root and `allow_users`/`allow_groups` may use the network.
    #[serde(default)]
    private: bool,
}

fn default_mtu() -> u32 {
    1500
}
fn default_lease() -> u32 {
    3600
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub group: u32,
    pub interface_prefix: String,
    pub networks: BTreeMap<NetworkName, Network>,
    pub policy: Policy,
}

/// How much each uid may hold at once: attachments, and queues summed over their NICs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub max_attachments: u32,
    pub max_queues: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub default: Quota,
    /// (who, their quota): the first whose users or groups name the caller applies.
    pub overrides: Vec<(Access, Quota)>,
}

impl Policy {
    /// The quota of a caller with `uid` for whom `in_group` says which groups it is in.
    pub fn quota_of(&self, uid: u32, in_group: impl Fn(u32) -> bool) -> Quota {
        self.overrides
            .iter()
            .find(|(who, _)| who.users.contains(&uid) || who.groups.iter().any(|g| in_group(*g)))
            .map_or(self.default, |(_, q)| *q)
    }
}

#[derive(Debug, Clone)]
pub struct Network {
    pub name: NetworkName,
    pub access: Access,
    pub kind: NetworkKind,
}

/// How a pod NIC meets the pod's interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodBinding {
    /// The guest takes the interface over at layer 2: its address, MAC and routes.
    Join(VethBinding),
    /// KubeVirt's and Virtink's masquerade: the interface keeps its address; the guest sits
    /// behind NAT in the pod at `cidr`'s network + 2, inbound only through `ports`.
    Masquerade(Masquerade),
}

/// Who may attach to a network, besides root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Members of the daemon's group may use it (false for a `private` network).
    pub daemon_group: bool,
    pub users: BTreeSet<u32>,
    pub groups: BTreeSet<u32>,
}

#[derive(Debug, Clone)]
pub enum NetworkKind {
    Bridge(BridgeNet),
    Isolated(IsolatedNet),
    Macvtap(MacvtapNet),
    Cni(CniNet),
    Pod(PodNet),
}

/// The shim path (Virtlet, Virtink's pod network, Kata): the caller passes its pod's network
/// namespace as an fd and names the interface the guest takes over; its address, gateway and
/// MAC go to the guest, and come back when the attachment ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNet {
    pub binding: PodBinding,
    pub dns: Vec<Ipv4Addr>,
    pub search: Vec<String>,
    pub lease_secs: u32,
    /// Who may pass a namespace they do not own.
    pub adopt_any: Access,
}

impl NetworkKind {
    /// The `kind` as the config names it.
    pub fn name(&self) -> &'static str {
        match self {
            NetworkKind::Bridge(_) => "bridge",
            NetworkKind::Isolated(i) if i.masquerade.is_some() => "masquerade",
            NetworkKind::Isolated(_) => "isolated",
            NetworkKind::Macvtap(_) => "macvtap",
            NetworkKind::Cni(_) => "cni",
            NetworkKind::Pod(_) => "pod",
        }
    }
}

/// Virtlet's way: per guest a namespace the CNI plugins of `cni_network` set up; the address
/// they give the namespace's interface is handed to the guest by DHCP, with its MAC, and the
/// interface is joined to the guest's TAP by `binding`. The list is read at each attach, so a
/// conf dir written after the daemon started (by a cluster's network agent) is picked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniNet {
    pub cni_network: String,
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    pub binding: VethBinding,
    pub lease_secs: u32,
    /// Whether start-up runs CNI GC with this daemon's attachments as the valid ones: safe
    /// only when nothing else (a kubelet, a container runtime) ADDs into this network.
    pub gc: bool,
}

/// Slicer's macvtap mode: the guest sits directly on `lower`'s LAN and takes its address from
/// the LAN's own DHCP; the fd handed out is the macvtap's character device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacvtapNet {
    pub lower: IfName,
    pub mode: MacvtapMode,
    pub mtu: u32,
    /// Which MACs a caller may ask for: a macvtap guest's MAC is on the LAN itself, so one
    /// that took a LAN host's (its router's) would have the switch send it that host's
    /// traffic.
    pub allowed_macs: MacPolicy,
}

/// The MACs a caller may ask for on a macvtap network, beside the derived one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MacPolicy {
    /// None: only the MAC derived from the caller's uid, VM id and NIC (locally administered,
    /// so never a real device's).
    DerivedOnly,
    /// Those starting with one of these byte prefixes (1 to 6 bytes each).
    Prefixes(Vec<Vec<u8>>),
    /// Any unicast MAC (`allowed_macs = ["any"]`).
    Any,
}

impl MacPolicy {
    /// Whether a caller may ask for `mac`.
    pub fn allows(&self, mac: MacAddr) -> bool {
        match self {
            MacPolicy::DerivedOnly => false,
            MacPolicy::Prefixes(p) => p.iter().any(|p| mac.0.starts_with(p)),
            MacPolicy::Any => true,
        }
    }

    fn parse(list: &[String]) -> Result<MacPolicy, String> {
        if list.is_empty() {
            return Ok(MacPolicy::DerivedOnly);
        }
        if list.iter().any(|x| x == "any") {
            return match list.len() {
                1 => Ok(MacPolicy::Any),
                _ => Err("allowed_macs: \"any\" stands alone".to_owned()),
            };
        }
        list.iter()
            .map(|x| {
                let bytes: Result<Vec<u8>, _> =
                    x.split(':').map(|b| u8::from_str_radix(b, 16)).collect();
                match bytes {
                    Ok(b) if (1..=6).contains(&b.len()) && x.split(':').all(|p| p.len() == 2) => {
                        Ok(b)
                    }
                    _ => Err(format!(
                        "allowed_macs: {x:?} is not a MAC prefix like \"52:54:00\" (1 to 6 \
                         bytes in hex, colon-separated) or \"any\""
                    )),
                }
            })
            .collect::<Result<_, _>>()
            .map(MacPolicy::Prefixes)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacvtapMode {
    Bridge,
    Vepa,
    Private,
    Passthru,
}

/// Slicer's isolated mode: a namespace and a /30 per guest, routed and NATed out of `uplink`.
///
/// Destinations: with only `drop`, everything but `drop` is reachable; with only `allow`,
/// nothing but `allow`; with both, a destination must be in `allow` and not in `drop` (drop
/// wins, so `allow = ["10.0.0.0/8"]`, `drop = ["10.1.0.0/16"]` carves a hole). Other guests
/// and the host's own addresses are never reachable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolatedNet {
    pub range: Ipv4Net,
    pub uplink: IfName,
    pub drop: Vec<Ipv4Net>,
    pub allow: Option<Vec<Ipv4Net>>,
    pub dns: Vec<Ipv4Addr>,
    pub mtu: u32,
    pub lease_secs: u32,
    /// `None`: routed (the TAP holds the gateway inside the guest's namespace). `Some`: the
    /// TAP is joined to the veth, and the host side of the veth holds the gateway.
    pub binding: Option<VethBinding>,
    /// `Some` for the masquerade kind: the guest sits behind NAT in its namespace.
    pub masquerade: Option<Masquerade>,
}

/// How a veth meets a TAP inside a namespace, at layer 2 (DESIGN.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VethBinding {
    /// A bridge holding both, learning off on its ports (no FDB to age, so no Slicer-style
    /// delay when a guest's MAC moves).
    Bridge,
    /// An ingress mirred redirect each way (Kata, tc-redirect-tap): no bridge at all.
    TcRedirect,
}

impl VethBinding {
    /// Parses a config value; `routed` is `None`.
    fn parse(s: Option<&str>) -> Result<Option<VethBinding>, String> {
        match s {
            None | Some("routed") => Ok(None),
            Some("bridge") => Ok(Some(VethBinding::Bridge)),
            Some("tc-redirect") => Ok(Some(VethBinding::TcRedirect)),
            Some(other) => Err(format!(
                "binding {other:?} is not one of routed, bridge, tc-redirect"
            )),
        }
    }
}

/// Virtink/KubeVirt's masquerade binding on top of the isolated plumbing: the guest always
/// has the same internal address (`cidr`'s network + 2) and is NATed in its own namespace to
/// that namespace's transit address, which the host NATs again out of the uplink. Inbound
/// only through `ports`, whose host ports belong to one guest of the network at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Masquerade {
    pub cidr: Ipv4Net,
    pub ports: Vec<PortForward>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// `PROTO:HOST_PORT:GUEST_PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortForward {
    pub proto: Proto,
    pub host: u16,
    pub guest: u16,
}

impl std::str::FromStr for PortForward {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("port forward {s:?}: expected tcp:HOST_PORT:GUEST_PORT or udp:...");
        let mut it = s.split(':');
        let proto = match it.next() {
            Some("tcp") => Proto::Tcp,
            Some("udp") => Proto::Udp,
            _ => return Err(bad()),
        };
        let port = |p: Option<&str>| p.and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0);
        let (host, guest) = (
            port(it.next()).ok_or_else(bad)?,
            port(it.next()).ok_or_else(bad)?,
        );
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(PortForward { proto, host, guest })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeNet {
    pub bridge: IfName,
    /// The gateway address with the guests' prefix length.
    pub gateway: Ipv4Net,
    pub dns: Vec<Ipv4Addr>,
    pub search: Vec<String>,
    pub domain: Option<String>,
    /// A static list of guest addresses, or `None` for the whole subnet.
    pub addresses: Option<Vec<Ipv4Addr>>,
    pub mtu: u32,
    pub lease_secs: u32,
    /// Masquerade out of the host, libvirt's default network: `Some(None)` out of any
    /// interface but the bridge (wherever the default route leads), `Some(Some(if))` out of
    /// that interface only.
    pub nat: Option<Option<IfName>>,
    /// A DNS forwarder on the gateway address.
    pub dns_forward: Option<DnsForward>,
}

/// Where the DNS forwarder of a bridge network sends queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsForward {
    /// Fixed upstream servers; when empty, the nameservers of `resolv_conf`, read again when
    /// it changes (systemd-resolved's stub 127.0.0.53 included: the daemon reaches it).
    pub upstream: Vec<Ipv4Addr>,
    pub resolv_conf: PathBuf,
}

impl BridgeNet {
    /// The DNS servers its guests are told of: the configured ones, else the gateway when it
    /// forwards DNS.
    pub fn dns_servers(&self) -> Vec<Ipv4Addr> {
        if self.dns.is_empty() && self.dns_forward.is_some() {
            vec![self.gateway.addr()]
        } else {
            self.dns.clone()
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_owned(), e))?;
        Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse(_, inner) => ConfigError::Parse(path.to_owned(), inner),
            other => other,
        })
    }

    /// The 1-based line of `text` an error is about, where it can be told: a syntax error's
    /// own position, a network's table header, the line naming an unknown user or group.
    pub fn error_line(text: &str, e: &ConfigError) -> Option<usize> {
        let line_of = |offset: usize| {
            let upto = &text.as_bytes()[..offset.min(text.len())];
            upto.iter().filter(|b| **b == b'\n').count() + 1
        };
        let find = |needle: &str| text.find(needle).map(line_of);
        match e {
            ConfigError::Parse(_, inner) => inner.span().map(|r| line_of(r.start)),
            ConfigError::Network { network, .. } => find(&format!("[networks.{network}]"))
                .or_else(|| find(&format!("[networks.\"{network}\"]"))),
            ConfigError::UnknownGroup(g) | ConfigError::UnknownUser(g) => find(&format!("\"{g}\"")),
            ConfigError::Prefix(_) => find("interface_prefix"),
            _ => None,
        }
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(PathBuf::new(), Box::new(e)))?;
        Config::try_from(raw)
    }

    pub fn network(&self, name: &NetworkName) -> Option<&Network> {
        self.networks.get(name)
    }
}

pub fn resolve_group(g: &str) -> Result<u32, ConfigError> {
    if let Ok(gid) = g.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(g) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        _ => Err(ConfigError::UnknownGroup(g.to_owned())),
    }
}

fn resolve_user(u: &str) -> Result<u32, ConfigError> {
    if let Ok(uid) = u.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(u) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        _ => Err(ConfigError::UnknownUser(u.to_owned())),
    }
}

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Config, ConfigError> {
        let p = &raw.interface_prefix;
        if p.is_empty() || p.len() > 4 || !p.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(ConfigError::Prefix(p.clone()));
        }
        let mut networks = BTreeMap::new();
        let mut bridges: BTreeMap<IfName, String> = BTreeMap::new();
        for (name, net) in raw.networks {
            let name_v = NetworkName::try_from(name.clone()).map_err(ConfigError::Name)?;
            let problem = |problem: String| ConfigError::Network {
                network: name.clone(),
                problem,
            };
            let (kind, access) = match net {
                RawNetwork::Isolated(_) | RawNetwork::Masquerade(_) => {
                    let (access, iso) = match net {
                        RawNetwork::Isolated(i) => (
                            access(i.private, &i.allow_users, &i.allow_groups)?,
                            validate_isolated(i).map_err(problem)?,
                        ),
                        RawNetwork::Masquerade(m) => (
                            access(m.private, &m.allow_users, &m.allow_groups)?,
                            validate_masquerade(m).map_err(problem)?,
                        ),
                        RawNetwork::Bridge(_)
                        | RawNetwork::Macvtap(_)
                        | RawNetwork::Cni(_)
                        | RawNetwork::Pod(_) => {
                            unreachable!("matched above")
                        }
                    };
                    for (other, net) in &networks {
                        let o: &Network = net;
                        if let NetworkKind::Isolated(x) = &o.kind {
                            if overlaps(x.range, iso.range) {
                                return Err(ConfigError::Network {
                                    network: name,
                                    problem: format!(
                                        "range {} overlaps network {other}'s range {} \
                                         (a masquerade network's transit range counts)",
                                        iso.range, x.range
                                    ),
                                });
                            }
                        }
                    }
                    (NetworkKind::Isolated(iso), access)
                }
                RawNetwork::Macvtap(m) => {
                    let access = access(m.private, &m.allow_users, &m.allow_groups)?;
                    let mode = match m.mode.as_str() {
                        "bridge" => MacvtapMode::Bridge,
                        "vepa" => MacvtapMode::Vepa,
                        "private" => MacvtapMode::Private,
                        "passthru" => MacvtapMode::Passthru,
                        other => {
                            return Err(problem(format!(
                                "mode {other:?}: expected bridge, vepa, private or passthru"
                            )))
                        }
                    };
                    if !(68..=65535).contains(&m.mtu) {
                        return Err(problem(format!(
                            "mtu {} is out of range (68..=65535)",
                            m.mtu
                        )));
                    }
                    let lower = IfName::try_from(m.lower).map_err(|e| problem(e.to_string()))?;
                    let allowed_macs = MacPolicy::parse(&m.allowed_macs).map_err(problem)?;
                    (
                        NetworkKind::Macvtap(MacvtapNet {
                            lower,
                            mode,
                            mtu: m.mtu,
                            allowed_macs,
                        }),
                        access,
                    )
                }
                RawNetwork::Pod(pd) => {
                    let access = access(pd.private, &pd.allow_users, &pd.allow_groups)?;
                    let mut adopt_any =
                        self::access(true, &pd.adopt_any_users, &pd.adopt_any_groups)?;
                    adopt_any.daemon_group = false;
                    let binding = match pd.binding.as_deref() {
                        Some("masquerade") => {
                            let cidr = pd.cidr.unwrap_or_else(default_masquerade_cidr);
                            if cidr.prefix_len() > 30 || cidr != cidr.trunc() {
                                return Err(problem(format!(
                                    "cidr {cidr}: must be a subnet of at least /30 without host bits"
                                )));
                            }
                            let mut ports: Vec<PortForward> = Vec::new();
                            for spec in &pd.ports {
                                let f: PortForward = spec.parse().map_err(problem)?;
                                if ports.iter().any(|o| o.proto == f.proto && o.host == f.host) {
                                    return Err(problem(format!(
                                        "port {}:{} is forwarded twice",
                                        f.proto.as_str(),
                                        f.host
                                    )));
                                }
                                ports.push(f);
                            }
                            PodBinding::Masquerade(Masquerade { cidr, ports })
                        }
                        _ if pd.cidr.is_some() || !pd.ports.is_empty() => {
                            return Err(problem(
                                "cidr and ports belong to binding = \"masquerade\"".into(),
                            ))
                        }
                        None => PodBinding::Join(VethBinding::TcRedirect),
                        Some("routed") => {
                            return Err(problem("binding \"routed\" does not apply to a pod network: the pod's address is the guest's (tc-redirect or bridge), or the guest is NATed behind it (masquerade)".into()))
                        }
                        other => PodBinding::Join(
                            VethBinding::parse(other)
                                .map_err(|e| problem(format!("{e}, masquerade")))?
                                .expect("routed handled above"),
                        ),
                    };
                    if pd.lease_secs < 60 {
                        return Err(problem(format!("lease_secs {} is below 60", pd.lease_secs)));
                    }
                    (
                        NetworkKind::Pod(PodNet {
                            binding,
                            dns: pd.dns,
                            search: pd.search,
                            lease_secs: pd.lease_secs,
                            adopt_any,
                        }),
                        access,
                    )
                }
                RawNetwork::Cni(c) => {
                    let access = access(c.private, &c.allow_users, &c.allow_groups)?;
                    (NetworkKind::Cni(validate_cni(c).map_err(problem)?), access)
                }
                RawNetwork::Bridge(b) => {
                    let access = access(b.private, &b.allow_users, &b.allow_groups)?;
                    let bridge = validate_bridge(b, p).map_err(problem)?;
                    if let Some(other) = bridges.insert(bridge.bridge.clone(), name.clone()) {
                        return Err(ConfigError::Network {
                            network: name,
                            problem: format!(
                                "bridge {} is already used by network {other}",
                                bridge.bridge
                            ),
                        });
                    }
                    (NetworkKind::Bridge(bridge), access)
                }
            };
            networks.insert(
                name_v.clone(),
                Network {
                    name: name_v,
                    access,
                    kind,
                },
            );
        }
        let mut overrides = Vec::new();
        for q in &raw.policy.quota {
            let mut who = access(true, &q.users, &q.groups)?;
            who.daemon_group = false;
            overrides.push((
                who,
                Quota {
                    max_attachments: q.max_attachments,
                    max_queues: q.max_queues,
                },
            ));
        }
        Ok(Config {
            socket: raw.socket,
            state_dir: raw.state_dir,
            group: resolve_group(&raw.group)?,
            interface_prefix: raw.interface_prefix,
            networks,
            policy: Policy {
                default: Quota {
                    max_attachments: raw.policy.max_attachments,
                    max_queues: raw.policy.max_queues,
                },
                overrides,
            },
        })
    }
}

fn access(private: bool, users: &[String], groups: &[String]) -> Result<Access, ConfigError> {
    Ok(Access {
        daemon_group: !private,
        users: users
            .iter()
            .map(|u| resolve_user(u))
            .collect::<Result<_, _>>()?,
        groups: groups
            .iter()
            .map(|g| resolve_group(g))
            .collect::<Result<_, _>>()?,
    })
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn validate_masquerade(m: RawMasquerade) -> Result<IsolatedNet, String> {
    if VethBinding::parse(m.binding.as_deref())?.is_some() {
        return Err(
            "binding: a masquerade guest is NATed inside its namespace, behind a TAP \
                    that holds its gateway; only \"routed\" applies (use the isolated kind \
                    for a bridge or tc-redirect binding)"
                .into(),
        );
    }
    if m.cidr.prefix_len() > 30 || m.cidr != m.cidr.trunc() {
        return Err(format!(
            "cidr {}: must be a subnet of at least /30 without host bits",
            m.cidr
        ));
    }
    let mut ports: Vec<PortForward> = Vec::new();
    for p in &m.ports {
        let f: PortForward = p.parse()?;
        if ports.iter().any(|o| o.proto == f.proto && o.host == f.host) {
            return Err(format!(
                "host port {}:{} is forwarded twice",
                f.proto.as_str(),
                f.host
            ));
        }
        ports.push(f);
    }
    let mut iso = validate_isolated(RawIsolated {
        range: m.transit,
        uplink: m.uplink,
        binding: None,
        drop: m.drop,
        allow: m.allow,
        dns: m.dns,
        mtu: m.mtu,
        lease_secs: m.lease_secs,
        allow_users: Vec::new(),
        allow_groups: Vec::new(),
        private: false,
    })?;
    iso.masquerade = Some(Masquerade {
        cidr: m.cidr,
        ports,
    });
    Ok(iso)
}

fn validate_cni(c: RawCni) -> Result<CniNet, String> {
    if c.cni_network.is_empty() {
        return Err("cni_network is empty".into());
    }
    let binding = match c.binding.as_deref() {
        None => VethBinding::TcRedirect,
        Some("routed") => {
            return Err(
                "binding \"routed\" does not apply to a CNI network: the plugin's \
                        address is the guest's, so the veth is joined to the TAP \
                        (tc-redirect or bridge)"
                    .into(),
            )
        }
        other => VethBinding::parse(other)?.expect("routed handled above"),
    };
    if c.lease_secs < 60 {
        return Err(format!("lease_secs {} is below 60", c.lease_secs));
    }
    let bin_dirs = match c.cni_bin_dir {
        OneOrMany::One(d) => vec![d],
        OneOrMany::Many(v) if !v.is_empty() => v,
        OneOrMany::Many(_) => return Err("cni_bin_dir is an empty list".into()),
    };
    for d in bin_dirs.iter().chain([&c.cni_conf_dir]) {
        if !d.is_absolute() {
            return Err(format!("{} is not an absolute path", d.display()));
        }
    }
    Ok(CniNet {
        cni_network: c.cni_network,
        conf_dir: c.cni_conf_dir,
        bin_dirs,
        binding,
        lease_secs: c.lease_secs,
        gc: c.gc,
    })
}

fn validate_isolated(i: RawIsolated) -> Result<IsolatedNet, String> {
    let uplink = IfName::try_from(i.uplink).map_err(|e| e.to_string())?;
    if i.range.prefix_len() > 30 {
        return Err(format!("range {}: must hold at least one /30", i.range));
    }
    if i.range != i.range.trunc() {
        return Err(format!(
            "range {}: host bits are set (did you mean {}?)",
            i.range,
            i.range.trunc()
        ));
    }
    if !(68..=65535).contains(&i.mtu) {
        return Err(format!("mtu {} is out of range (68..=65535)", i.mtu));
    }
    if i.lease_secs < 60 {
        return Err(format!("lease_secs {} is below 60", i.lease_secs));
    }
    let binding = VethBinding::parse(i.binding.as_deref())?;
    Ok(IsolatedNet {
        range: i.range,
        uplink,
        binding,
        drop: i.drop.iter().map(|n| n.trunc()).collect(),
        allow: i.allow.map(|a| a.iter().map(|n| n.trunc()).collect()),
        dns: i.dns,
        mtu: i.mtu,
        lease_secs: i.lease_secs,
        masquerade: None,
    })
}

fn validate_bridge(b: RawBridge, prefix: &str) -> Result<BridgeNet, String> {
    let bridge = IfName::try_from(b.bridge).map_err(|e| e.to_string())?;
    if crate::names::is_generated(bridge.as_str(), prefix) {
        // Reconcile deletes unknown links of that shape; a configured bridge must not be one.
        return Err(format!(
            "bridge name {bridge} has the shape of a generated TAP name ({prefix} + 10 hex digits)"
        ));
    }
    let gw = b.gateway;
    if gw.prefix_len() > 30 {
        return Err(format!("gateway {gw}: the subnet must be /30 or larger"));
    }
    if gw.addr() == gw.network() || gw.addr() == gw.broadcast() {
        return Err(format!(
            "gateway {gw}: the gateway must be a host address, not the network or broadcast address"
        ));
    }
    if !(68..=65535).contains(&b.mtu) {
        return Err(format!("mtu {} is out of range (68..=65535)", b.mtu));
    }
    if b.lease_secs < 60 {
        return Err(format!("lease_secs {} is below 60", b.lease_secs));
    }
    let addresses = match b.addresses {
        None => None,
        Some(list) => {
            let mut out = Vec::new();
            for a in list {
                if a.prefix_len() != gw.prefix_len() || !gw.contains(&a.addr()) {
                    return Err(format!(
                        "address {a} is not in the gateway's subnet {}",
                        gw.trunc()
                    ));
                }
                if [gw.addr(), gw.network(), gw.broadcast()].contains(&a.addr()) {
                    return Err(format!(
                        "address {a} is the network, gateway or broadcast address"
                    ));
                }
                if out.contains(&a.addr()) {
                    return Err(format!("address {a} is listed twice"));
                }
                out.push(a.addr());
            }
            if out.is_empty() {
                return Err("addresses is empty".to_owned());
            }
            Some(out)
        }
    };
    let uplink = b
        .uplink
        .map(|u| IfName::try_from(u).map_err(|e| format!("uplink: {e}")))
        .transpose()?;
    if uplink.as_ref() == Some(&bridge) {
        return Err(format!("uplink {bridge} is the network's own bridge"));
    }
    let nat = match (b.nat, uplink) {
        (true, uplink) => Some(uplink),
        (false, None) => None,
        (false, Some(u)) => {
            return Err(format!(
                "uplink {u} is only used with nat = true (a plain bridge is not routed)"
            ))
        }
    };
    let dns_forward = match (b.dns_forward, b.dns_upstream, b.resolv_conf) {
        (true, upstream, resolv_conf) => {
            if let Some(a) = upstream.iter().find(|a| **a == gw.addr()) {
                return Err(format!(
                    "dns_upstream {a} is the gateway itself: queries would loop"
                ));
            }
            Some(DnsForward {
                upstream,
                resolv_conf: resolv_conf.unwrap_or_else(|| PathBuf::from("/etc/resolv.conf")),
            })
        }
        (false, upstream, resolv_conf) if !upstream.is_empty() || resolv_conf.is_some() => {
            return Err("dns_upstream and resolv_conf are only used with dns_forward = true".into())
        }
        (false, _, _) => None,
    };
    Ok(BridgeNet {
        bridge,
        gateway: gw,
        dns: b.dns,
        search: b.search,
        domain: b.domain,
        addresses,
        mtu: b.mtu,
        lease_secs: b.lease_secs,
        nat,
        dns_forward,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
socket = "/run/tapmanager/tapmanager.sock"
state_dir = "/run/tapmanager"
group = "0"

[networks.default]
kind = "bridge"
bridge = "tmbr0x"
gateway = "10.88.0.1/24"
dns = ["10.88.0.1"]
"#;

    #[test]
    fn the_documented_config_parses() {
        let text = EXAMPLE
            .replace("tmbr0x", "tmbr0")
            .replace("\"0\"", "\"root\"");
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.group, 0);
        assert!(Config::parse(&EXAMPLE.replace("tmbr0x", "tm0123456789")).is_err());
        let net = c.network(&"default".parse().unwrap()).unwrap();
        let NetworkKind::Bridge(b) = &net.kind else {
            panic!("a bridge network")
        };
        assert_eq!(b.gateway.to_string(), "10.88.0.1/24");
        assert_eq!(b.mtu, 1500);
        assert!(net.access.daemon_group);
    }

    #[test]
    fn the_packaged_config_parses() {
        // The group may not exist on the build machine; everything else is as shipped.
        let text = include_str!("../../packaging/tapmanager.toml")
            .replace("group = \"tapmanager\"", "group = \"0\"");
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.socket, PathBuf::from("/run/tapmanager/tapmanager.sock"));
        assert_eq!(c.networks.len(), 1);
    }

    #[test]
    fn isolated_networks_parse_and_must_not_overlap() {
        let base = EXAMPLE.replace("tmbr0x", "br0");
        let iso = |name: &str, range: &str| {
            format!("\n[networks.{name}]\nkind = \"isolated\"\nrange = \"{range}\"\nuplink = \"eth0\"\ndrop = [\"192.168.1.0/24\"]\n")
        };
        let c = Config::parse(&format!("{base}{}", iso("iso", "169.254.100.0/22"))).unwrap();
        let NetworkKind::Isolated(i) = &c.network(&"iso".parse().unwrap()).unwrap().kind else {
            panic!("an isolated network")
        };
        assert_eq!(i.range.to_string(), "169.254.100.0/22");
        assert_eq!(i.drop.len(), 1);
        assert!(i.allow.is_none());
        let two = format!(
            "{base}{}{}",
            iso("a", "169.254.100.0/22"),
            iso("b", "169.254.102.0/24")
        );
        assert!(matches!(
            Config::parse(&two),
            Err(ConfigError::Network { .. })
        ));
        let apart = format!(
            "{base}{}{}",
            iso("a", "169.254.100.0/22"),
            iso("b", "169.254.104.0/22")
        );
        assert!(Config::parse(&apart).is_ok());
        assert!(Config::parse(&format!("{base}{}", iso("x", "169.254.100.1/22"))).is_err());
        assert!(Config::parse(&format!("{base}{}", iso("x", "169.254.100.0/31"))).is_err());
    }

    #[test]
    fn an_isolated_networks_binding_is_routed_unless_it_says_bridge_or_tc_redirect() {
        let base = EXAMPLE.replace("tmbr0x", "br0");
        let parse = |kind: &str, binding: &str| {
            let key = if kind == "isolated" {
                "range = \"169.254.100.0/22\"\n"
            } else {
                ""
            };
            Config::parse(&format!(
                "{base}\n[networks.x]\nkind = \"{kind}\"\n{key}uplink = \"eth0\"\n{binding}"
            ))
        };
        let binding_of = |c: Config| match &c.network(&"x".parse().unwrap()).unwrap().kind {
            NetworkKind::Isolated(i) => i.binding,
            _ => panic!("an isolated network"),
        };
        assert_eq!(binding_of(parse("isolated", "").unwrap()), None);
        assert_eq!(
            binding_of(parse("isolated", "binding = \"routed\"\n").unwrap()),
            None
        );
        assert_eq!(
            binding_of(parse("isolated", "binding = \"bridge\"\n").unwrap()),
            Some(VethBinding::Bridge)
        );
        assert_eq!(
            binding_of(parse("isolated", "binding = \"tc-redirect\"\n").unwrap()),
            Some(VethBinding::TcRedirect)
        );
        let bad = parse("isolated", "binding = \"macvlan\"\n").unwrap_err();
        assert!(format!("{bad}").contains("not one of routed, bridge, tc-redirect"));
        assert!(parse("masquerade", "binding = \"routed\"\n").is_ok());
        let bad = parse("masquerade", "binding = \"tc-redirect\"\n").unwrap_err();
        assert!(
            format!("{bad}").contains("only \"routed\" applies"),
            "{bad}"
        );
    }

    #[test]
    fn cni_networks_parse_with_defaults_and_several_bin_dirs() {
        let base = EXAMPLE.replace("tmbr0x", "br0");
        let parse = |extra: &str| {
            Config::parse(&format!(
                "{base}\n[networks.pod]\nkind = \"cni\"\ncni_network = \"mynet\"\n{extra}"
            ))
        };
        let cni = |c: Config| match &c.network(&"pod".parse().unwrap()).unwrap().kind {
            NetworkKind::Cni(n) => n.clone(),
            _ => panic!("a CNI network"),
        };
        let n = cni(parse("").unwrap());
        assert_eq!(n.cni_network, "mynet");
        assert_eq!(n.conf_dir, PathBuf::from("/etc/cni/net.d"));
        assert_eq!(n.bin_dirs, vec![PathBuf::from("/opt/cni/bin")]);
        assert_eq!(n.binding, VethBinding::TcRedirect);
        let n = cni(parse(
            "cni_bin_dir = [\"/usr/lib/cni\", \"/opt/cni/bin\"]\nbinding = \"bridge\"\n",
        )
        .unwrap());
        assert_eq!(n.bin_dirs.len(), 2);
        assert_eq!(n.binding, VethBinding::Bridge);
        assert!(parse("binding = \"routed\"\n")
            .unwrap_err()
            .to_string()
            .contains("does not apply"));
        assert!(parse("cni_bin_dir = \"opt/cni\"\n").is_err());
        assert!(parse("cni_bin_dir = []\n").is_err());
        assert!(
            parse("cni_conf = \"/x\"\n").is_err(),
            "a misspelt key is an error"
        );
    }

    #[test]
    fn errors_name_the_line_they_are_about() {
        let line = |text: &str| Config::error_line(text, &Config::parse(text).unwrap_err());
        // A syntax error: its own line. A wrong value inside a network table: serde reads
        // the kind-tagged table whole, so toml points at the table.
        assert_eq!(line("group = \"0\"\nsocket = = 1\n"), Some(2));
        assert_eq!(
            line("group = \"0\"\n\n[networks.x]\nkind = \"bridge\"\nbridge = 5\n"),
            Some(3)
        );
        let bad_net = "group = \"0\"\n[networks.ok]\nkind = \"macvtap\"\nlower = \"eth0\"\n\
                       [networks.bad]\nkind = \"macvtap\"\nlower = \"eth0\"\nmode = \"odd\"\n";
        assert_eq!(line(bad_net), Some(5));
        assert_eq!(line("group = \"no-such-group-here\"\n"), Some(1));
    }

    #[test]
    fn the_policy_has_a_default_quota_and_overrides_by_user_or_group() {
        let c = Config::parse(EXAMPLE).unwrap();
        assert_eq!(
            c.policy.quota_of(1000, |_| false),
            Quota {
                max_attachments: 32,
                max_queues: 128
            }
        );
        let c = Config::parse(&format!(
            "{EXAMPLE}\n[policy]\nmax_attachments = 2\nmax_queues = 3\n\
             [[policy.quota]]\nusers = [\"0\"]\nmax_attachments = 100\nmax_queues = 100\n\
             [[policy.quota]]\ngroups = [\"7\"]\nmax_attachments = 5\nmax_queues = 9\n"
        ))
        .unwrap();
        let q = |uid, gid| c.policy.quota_of(uid, |g| g == gid).max_attachments;
        assert_eq!(q(1000, 1), 2);
        assert_eq!(q(0, 7), 100, "the first that names the caller applies");
        assert_eq!(q(1000, 7), 5);
        assert!(Config::parse(&format!("{EXAMPLE}\n[policy]\nmax_attachment = 2\n")).is_err());
    }

    #[test]
    fn pod_networks_join_by_default_or_masquerade_with_explicit_forwards() {
        let base = EXAMPLE.replace("tmbr0x", "br0");
        let parse = |extra: &str| {
            Config::parse(&format!("{base}\n[networks.pods]\nkind = \"pod\"\n{extra}"))
        };
        let pod = |c: Config| match &c.network(&"pods".parse().unwrap()).unwrap().kind {
            NetworkKind::Pod(p) => p.clone(),
            _ => panic!("a pod network"),
        };
        let p = pod(parse("").unwrap());
        assert_eq!(p.binding, PodBinding::Join(VethBinding::TcRedirect));
        assert!(p.adopt_any.users.is_empty() && !p.adopt_any.daemon_group);
        let p = pod(parse("binding = \"masquerade\"\nports = [\"tcp:8080:80\"]\n").unwrap());
        let PodBinding::Masquerade(m) = p.binding else {
            panic!("masquerade")
        };
        assert_eq!(m.cidr.to_string(), "10.0.2.0/30");
        assert_eq!((m.ports[0].host, m.ports[0].guest), (8080, 80));
        let e = parse("ports = [\"tcp:1:2\"]\n").unwrap_err().to_string();
        assert!(e.contains("belong to binding = \"masquerade\""), "{e}");
        let e = parse("binding = \"routed\"\n").unwrap_err().to_string();
        assert!(e.contains("does not apply to a pod network"), "{e}");
        assert!(parse("binding = \"masquerade\"\ncidr = \"10.0.2.1/30\"\n").is_err());
        assert!(parse("adopt_any_users = [\"0\"]\n").is_ok());
    }

    #[test]
    fn masquerade_networks_parse_with_their_forwards() {
        let base = EXAMPLE.replace("tmbr0x", "br0");
        let text = format!(
            "{base}\n[networks.nat]\nkind = \"masquerade\"\nuplink = \"eth0\"\nports = [\"tcp:8080:80\", \"udp:5353:53\"]\n"
        );
        let c = Config::parse(&text).unwrap();
        let NetworkKind::Isolated(i) = &c.network(&"nat".parse().unwrap()).unwrap().kind else {
            panic!("masquerade is built on the isolated plumbing")
        };
        let m = i.masquerade.as_ref().unwrap();
        assert_eq!(m.cidr.to_string(), "10.0.2.0/30");
        assert_eq!(i.range.to_string(), "169.254.128.0/17");
        assert_eq!(
            m.ports,
            vec![
                PortForward {
                    proto: Proto::Tcp,
                    host: 8080,
                    guest: 80
                },
                PortForward {
                    proto: Proto::Udp,
                    host: 5353,
                    guest: 53
                },
            ]
        );
        for bad in [
            "tcp:8080",
            "icmp:1:1",
            "tcp:0:80",
            "tcp:8080:80:1",
            "tcp:x:80",
        ] {
            let text = format!(
                "{base}\n[networks.nat]\nkind = \"masquerade\"\nuplink = \"eth0\"\nports = [\"{bad}\"]\n"
            );
            assert!(Config::parse(&text).is_err(), "{bad}");
        }
        let twice = format!(
            "{base}\n[networks.nat]\nkind = \"masquerade\"\nuplink = \"eth0\"\nports = [\"tcp:1:2\", \"tcp:1:3\"]\n"
        );
        assert!(Config::parse(&twice).is_err());
    }

    #[test]
    fn macvtap_networks_parse() {
        let base = EXAMPLE.replace("tmbr0x", "br0");
        let mv = |mode: &str| {
            format!(
                "{base}\n[networks.mv]\nkind = \"macvtap\"\nlower = \"eth0\"\nmode = \"{mode}\"\n"
            )
        };
        let c = Config::parse(&mv("vepa")).unwrap();
        let NetworkKind::Macvtap(m) = &c.network(&"mv".parse().unwrap()).unwrap().kind else {
            panic!("a macvtap network")
        };
        assert_eq!((m.lower.as_str(), m.mode), ("eth0", MacvtapMode::Vepa));
        assert!(Config::parse(&mv("promiscuous")).is_err());
    }

    #[test]
    fn a_macvtap_network_allows_only_derived_macs_unless_it_names_prefixes_or_any() {
        let base = format!(
            "{}\n[networks.mv]\nkind = \"macvtap\"\nlower = \"eth0\"\n",
            EXAMPLE.replace("tmbr0x", "br0")
        );
        let policy = |extra: &str| -> Result<MacPolicy, String> {
            let c = Config::parse(&format!("{base}{extra}")).map_err(|e| e.to_string())?;
            match &c.network(&"mv".parse().unwrap()).unwrap().kind {
                NetworkKind::Macvtap(m) => Ok(m.allowed_macs.clone()),
                _ => panic!("a macvtap network"),
            }
        };
        let router: MacAddr = "00:11:22:33:44:55".parse().unwrap();
        let qemu: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        assert_eq!(policy(""), Ok(MacPolicy::DerivedOnly));
        assert!(!MacPolicy::DerivedOnly.allows(router));
        let p = policy("allowed_macs = [\"52:54:00\"]").unwrap();
        assert!(p.allows(qemu) && !p.allows(router));
        assert_eq!(policy("allowed_macs = [\"any\"]"), Ok(MacPolicy::Any));
        for bad in [
            "[\"52:54:0\"]",
            "[\"zz\"]",
            "[\"any\", \"52:54:00\"]",
            "[\"\"]",
        ] {
            let e = policy(&format!("allowed_macs = {bad}")).unwrap_err();
            assert!(e.contains("allowed_macs"), "{bad}: {e}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = format!("{EXAMPLE}\nmtuu = 1400\n").replace("tmbr0x", "br0");
        assert!(matches!(Config::parse(&text), Err(ConfigError::Parse(..))));
    }

    #[test]
    fn static_addresses_must_be_host_addresses_in_the_subnet() {
        let base = EXAMPLE.replace("tmbr0x", "br0");
        let ok = format!("{base}addresses = [\"10.88.0.10/24\", \"10.88.0.11/24\"]\n");
        assert!(Config::parse(&ok).is_ok());
        for bad in [
            "10.88.1.10/24",
            "10.88.0.1/24",
            "10.88.0.255/24",
            "10.88.0.0/24",
            "10.88.0.10/16",
        ] {
            let text = format!("{base}addresses = [\"{bad}\"]\n");
            assert!(Config::parse(&text).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_gateway_and_names_are_refused() {
        let base = EXAMPLE.replace("tmbr0x", "br0");
        assert!(Config::parse(&base.replace("10.88.0.1/24", "10.88.0.0/24")).is_err());
        assert!(Config::parse(&base.replace("10.88.0.1/24", "10.88.0.1/31")).is_err());
        assert!(Config::parse(&base.replace("br0", "a-very-long-bridge-name")).is_err());
        assert!(
            Config::parse(&base.replace("group = \"0\"", "group = \"no-such-group-xyz\"")).is_err()
        );
    }

    #[test]
    fn one_bridge_per_network() {
        let base = EXAMPLE.replace("tmbr0x", "br0");
        let text = format!(
            "{base}\n[networks.other]\nkind = \"bridge\"\nbridge = \"br0\"\ngateway = \"10.89.0.1/24\"\n"
        );
        assert!(Config::parse(&text).is_err());
    }
}
