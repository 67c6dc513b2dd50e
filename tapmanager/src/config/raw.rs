//! The config file as TOML gives it, before any check: `mod.rs` and each kind's file turn these
//! into the validated types.

use ipnet::Ipv4Net;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default = "default_socket")]
    pub(super) socket: PathBuf,
    #[serde(default = "default_state_dir")]
    pub(super) state_dir: PathBuf,
    #[serde(default = "default_group")]
    pub(super) group: String,
    /// Prefix of every interface the daemon creates; reconcile removes unknown links carrying it.
    #[serde(default = "default_prefix")]
    pub(super) interface_prefix: String,
    #[serde(default)]
    pub(super) networks: BTreeMap<String, RawNetwork>,
    #[serde(default)]
    pub(super) policy: RawPolicy,
}

/// `[policy]`: how much each uid may hold. Root is not counted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    #[serde(default = "default_max_attachments")]
    pub(super) max_attachments: u32,
    #[serde(default = "default_max_queues")]
    pub(super) max_queues: u32,
    /// `[[policy.quota]]`: other limits for some users and groups; the first that names the
    /// caller applies.
    #[serde(default)]
    pub(super) quota: Vec<RawQuota>,
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
pub(super) struct RawQuota {
    #[serde(default)]
    pub(super) users: Vec<String>,
    #[serde(default)]
    pub(super) groups: Vec<String>,
    pub(super) max_attachments: u32,
    pub(super) max_queues: u32,
}

pub(super) fn default_max_attachments() -> u32 {
    32
}

pub(super) fn default_max_queues() -> u32 {
    128
}

pub(super) fn default_socket() -> PathBuf {
    protocol::DEFAULT_SOCKET.into()
}

pub(super) fn default_state_dir() -> PathBuf {
    "/run/tapmanager".into()
}

pub(super) fn default_group() -> String {
    "tapmanager".into()
}

pub(super) fn default_prefix() -> String {
    "tm".into()
}

#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub(super) enum RawNetwork {
    Bridge(RawBridge),
    Routed(RawRouted),
    Isolated(RawIsolated),
    Masquerade(RawMasquerade),
    Macvtap(RawMacvtap),
    Cni(RawCni),
    Pod(RawPod),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPod {
    /// `tc-redirect` (default), `bridge` or `masquerade`.
    pub(super) binding: Option<String>,
    /// Masquerade only: the guest's subnet inside the pod (gateway = network + 1, guest = + 2).
    pub(super) cidr: Option<Ipv4Net>,
    /// Masquerade only: the same for IPv6, used when the pod's interface has IPv6 (default
    /// `fd10:0:2::/64`, KubeVirt's).
    pub(super) cidr6: Option<ipnet::Ipv6Net>,
    /// Masquerade only: `PROTO:POD_PORT:GUEST_PORT`, explicit forwards from the pod's address.
    #[serde(default)]
    pub(super) ports: Vec<String>,
    /// Handed to the guest by DHCP (the pod's resolv.conf is not the daemon's to read).
    #[serde(default)]
    pub(super) dns: Vec<Ipv4Addr>,
    /// Handed to a guest that takes over an interface with IPv6, by RA and DHCPv6.
    #[serde(default)]
    pub(super) dns6: Vec<std::net::Ipv6Addr>,
    #[serde(default)]
    pub(super) search: Vec<String>,
    #[serde(default = "default_lease")]
    pub(super) lease_secs: u32,
    /// These users and groups may pass a namespace they do not own (a shim running as a
    /// service user for the kubelet's pods, say). Root always may.
    #[serde(default)]
    pub(super) adopt_any_users: Vec<String>,
    #[serde(default)]
    pub(super) adopt_any_groups: Vec<String>,
    #[serde(default)]
    pub(super) allow_users: Vec<String>,
    #[serde(default)]
    pub(super) allow_groups: Vec<String>,
    #[serde(default)]
    pub(super) private: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCni {
    /// The `name` of a network configuration (list) in `cni_conf_dir`.
    pub(super) cni_network: String,
    #[serde(default = "default_cni_conf_dir")]
    pub(super) cni_conf_dir: PathBuf,
    /// One directory or several.
    #[serde(default = "default_cni_bin_dir")]
    pub(super) cni_bin_dir: OneOrMany,
    /// `tc-redirect` (default) or `bridge`.
    pub(super) binding: Option<String>,
    #[serde(default = "default_lease")]
    pub(super) lease_secs: u32,
    /// Run CNI GC (spec 1.1) at start, naming only this daemon's attachments as valid.
    #[serde(default)]
    pub(super) gc: bool,
    #[serde(default)]
    pub(super) allow_users: Vec<String>,
    #[serde(default)]
    pub(super) allow_groups: Vec<String>,
    #[serde(default)]
    pub(super) private: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

pub(super) fn default_cni_conf_dir() -> PathBuf {
    "/etc/cni/net.d".into()
}

pub(super) fn default_cni_bin_dir() -> OneOrMany {
    OneOrMany::One("/opt/cni/bin".into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMacvtap {
    /// The host device the macvtaps sit on.
    pub(super) lower: String,
    #[serde(default = "default_macvtap_mode")]
    pub(super) mode: String,
    #[serde(default = "default_mtu")]
    pub(super) mtu: u32,
    /// MACs a caller may ask for, by prefix ("52:54:00"); `["any"]` for any. Default: none,
    /// only the MAC the daemon derives from the caller and VM id.
    #[serde(default)]
    pub(super) allowed_macs: Vec<String>,
    /// `eui64` (default): the guest's IPv6 only from the identifier its MAC gives; `any`.
    pub(super) ipv6_sources: Option<String>,
    #[serde(default)]
    pub(super) allow_users: Vec<String>,
    #[serde(default)]
    pub(super) allow_groups: Vec<String>,
    #[serde(default)]
    pub(super) private: bool,
}

pub(super) fn default_macvtap_mode() -> String {
    "bridge".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMasquerade {
    pub(super) uplink: String,
    /// The guest's subnet inside its own namespace: gateway = network + 1, guest = network + 2.
    #[serde(default = "default_masquerade_cidr")]
    pub(super) cidr: Ipv4Net,
    /// Explicit forwards only, `PROTO:HOST_PORT:GUEST_PORT`.
    #[serde(default)]
    pub(super) ports: Vec<String>,
    /// One /30 per guest between the host and the guest's namespace.
    #[serde(default = "default_transit")]
    pub(super) transit: Ipv4Net,
    /// Only `routed`: accepted so that a wrong value gets an explanation, not "unknown field".
    pub(super) binding: Option<String>,
    #[serde(default)]
    pub(super) drop: Vec<Ipv4Net>,
    pub(super) allow: Option<Vec<Ipv4Net>>,
    #[serde(default)]
    pub(super) dns: Vec<Ipv4Addr>,
    /// IPv6 on: one transit /64 of this range per guest.
    pub(super) transit6: Option<ipnet::Ipv6Net>,
    /// The guest's IPv6 subnet in its namespace (default `fd10:0:2::/64`, KubeVirt's).
    pub(super) cidr6: Option<ipnet::Ipv6Net>,
    #[serde(default)]
    pub(super) drop6: Vec<ipnet::Ipv6Net>,
    pub(super) allow6: Option<Vec<ipnet::Ipv6Net>>,
    #[serde(default)]
    pub(super) dns6: Vec<std::net::Ipv6Addr>,
    #[serde(default = "default_mtu")]
    pub(super) mtu: u32,
    #[serde(default = "default_lease")]
    pub(super) lease_secs: u32,
    #[serde(default)]
    pub(super) allow_users: Vec<String>,
    #[serde(default)]
    pub(super) allow_groups: Vec<String>,
    #[serde(default)]
    pub(super) private: bool,
}

pub(super) fn default_masquerade_cidr() -> Ipv4Net {
    "10.0.2.0/30".parse().expect("valid")
}

pub(super) fn default_transit() -> Ipv4Net {
    "169.254.128.0/17".parse().expect("valid")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIsolated {
    /// Carved into one /30 per guest: network, gateway, guest, broadcast.
    pub(super) range: Ipv4Net,
    /// The host interface NATed traffic leaves by.
    pub(super) uplink: String,
    /// `routed` (default), `bridge` or `tc-redirect`: see [`VethBinding`](super::VethBinding).
    pub(super) binding: Option<String>,
    #[serde(default)]
    pub(super) drop: Vec<Ipv4Net>,
    pub(super) allow: Option<Vec<Ipv4Net>>,
    #[serde(default)]
    pub(super) dns: Vec<Ipv4Addr>,
    /// IPv6 on: one /64 of this range per guest, beside its /30.
    pub(super) range6: Option<ipnet::Ipv6Net>,
    /// Each guest's IPv6 prefix: 64 (default; SLAAC allowed in it) or 127 (RFC 6164: the
    /// gateway and the guest, nothing else).
    pub(super) guest_prefix6: Option<u8>,
    #[serde(default)]
    pub(super) drop6: Vec<ipnet::Ipv6Net>,
    pub(super) allow6: Option<Vec<ipnet::Ipv6Net>>,
    #[serde(default)]
    pub(super) dns6: Vec<std::net::Ipv6Addr>,
    #[serde(default = "default_mtu")]
    pub(super) mtu: u32,
    #[serde(default = "default_lease")]
    pub(super) lease_secs: u32,
    #[serde(default)]
    pub(super) allow_users: Vec<String>,
    #[serde(default)]
    pub(super) allow_groups: Vec<String>,
    #[serde(default)]
    pub(super) private: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBridge {
    pub(super) bridge: String,
    pub(super) gateway: Ipv4Net,
    /// The router's IPv6 address with the guests' prefix (`"fd77::1/64"`): IPv6 on.
    pub(super) gateway6: Option<ipnet::Ipv6Net>,
    /// IPv6 DNS servers (router advertisements' RDNSS and DHCPv6).
    #[serde(default)]
    pub(super) dns6: Vec<std::net::Ipv6Addr>,
    #[serde(default)]
    pub(super) dns: Vec<Ipv4Addr>,
    #[serde(default)]
    pub(super) search: Vec<String>,
    pub(super) domain: Option<String>,
    pub(super) addresses: Option<Vec<Ipv4Net>>,
    #[serde(default = "default_mtu")]
    pub(super) mtu: u32,
    #[serde(default = "default_lease")]
    pub(super) lease_secs: u32,
    /// Masquerade the subnet out of the host (by `uplink` only, when given).
    #[serde(default)]
    pub(super) nat: bool,
    pub(super) uplink: Option<String>,
    /// Answer DNS on the gateway address, relaying to the host's resolvers.
    #[serde(default)]
    pub(super) dns_forward: bool,
    #[serde(default)]
    pub(super) dns_upstream: Vec<Ipv4Addr>,
    pub(super) resolv_conf: Option<PathBuf>,
    /// Extra users and groups allowed on this network besides the daemon's group.
    #[serde(default)]
    pub(super) allow_users: Vec<String>,
    #[serde(default)]
    pub(super) allow_groups: Vec<String>,
    /// When true, only root and `allow_users`/`allow_groups` may use the network.
    #[serde(default)]
    pub(super) private: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRouted {
    pub(super) device: String,
    pub(super) gateway: Ipv4Net,
    #[serde(default)]
    pub(super) dns: Vec<Ipv4Addr>,
    #[serde(default)]
    pub(super) search: Vec<String>,
    pub(super) domain: Option<String>,
    #[serde(default = "default_mtu")]
    pub(super) mtu: u32,
    #[serde(default = "default_lease")]
    pub(super) lease_secs: u32,
    #[serde(default)]
    pub(super) nat: bool,
    pub(super) uplink: Option<String>,
    #[serde(default)]
    pub(super) drop: Vec<Ipv4Net>,
    pub(super) allow: Option<Vec<Ipv4Net>>,
    #[serde(default)]
    pub(super) allow_users: Vec<String>,
    #[serde(default)]
    pub(super) allow_groups: Vec<String>,
    #[serde(default)]
    pub(super) private: bool,
}

pub(super) fn default_mtu() -> u32 {
    1500
}

pub(super) fn default_lease() -> u32 {
    3600
}
