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

//!
//! One file per kind's settings (`bridge.rs`, `isolated.rs` with masquerade, `macvtap.rs`,
//! `pod.rs`, `cni.rs`), the checks they share once (`checks.rs`), the file as TOML gives it
//! (`raw.rs`).

mod bridge;
mod checks;
mod cni;
mod isolated;
mod macvtap;
mod pod;
mod raw;
mod routed;

pub use bridge::{BridgeNet, DnsForward};
pub use cni::CniNet;
pub use isolated::{IsolatedMode, IsolatedNet, Masquerade, PortForward, Proto, VethBinding};
pub use macvtap::{MacPolicy, MacvtapMode, MacvtapNet};
pub use pod::{PodBinding, PodNet};
use raw::*;
pub use routed::RoutedNetwork;

use protocol::{IfName, NetworkName};
use std::collections::{BTreeMap, BTreeSet};
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

// The raw network tables repeat their common keys (allow_users, ...) rather than share a
// `#[serde(flatten)]` struct: serde ignores `deny_unknown_fields` across a flatten, and a
// misspelt key must be an error.

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
    Routed(RoutedNetwork),
    Isolated(IsolatedNet),
    Macvtap(MacvtapNet),
    Cni(CniNet),
    Pod(PodNet),
}

impl NetworkKind {
    /// The `kind` as the config names it.
    pub fn name(&self) -> &'static str {
        match self {
            NetworkKind::Bridge(_) => "bridge",
            NetworkKind::Routed(_) => "routed",
            NetworkKind::Isolated(i) if i.masquerade().is_some() => "masquerade",
            NetworkKind::Isolated(_) => "isolated",
            NetworkKind::Macvtap(_) => "macvtap",
            NetworkKind::Cni(_) => "cni",
            NetworkKind::Pod(_) => "pod",
        }
    }
}

/// A routed network's subnet overlaps no other network's IPv4 addresses: the host routes
/// each of its guests' /32s and blackholes the rest of it, which would cut off the other's.
fn routed_overlaps(networks: &BTreeMap<NetworkName, Network>) -> Result<(), ConfigError> {
    let subnets: Vec<(&NetworkName, ipnet::Ipv4Net, bool)> = networks
        .iter()
        .filter_map(|(name, n)| match &n.kind {
            NetworkKind::Routed(r) => Some((name, r.gateway.trunc(), true)),
            NetworkKind::Bridge(b) => Some((name, b.gateway.trunc(), false)),
            NetworkKind::Isolated(i) => Some((name, i.range, false)),
            _ => None,
        })
        .collect();
    for (name, p, routed) in &subnets {
        let clash = subnets.iter().find(|(other, q, _)| {
            other != name && (q.contains(&p.network()) || p.contains(&q.network()))
        });
        if let (true, Some((other, q, _))) = (routed, clash) {
            return Err(ConfigError::Network {
                network: name.to_string(),
                problem: format!("subnet {p} overlaps network {other}'s {q}"),
            });
        }
    }
    Ok(())
}

/// No two networks' IPv6 prefixes overlap: a guest's address would be routed to both.
fn ipv6_overlaps(networks: &BTreeMap<NetworkName, Network>) -> Result<(), ConfigError> {
    let prefixes: Vec<(&NetworkName, ipnet::Ipv6Net)> = networks
        .iter()
        .filter_map(|(name, n)| match &n.kind {
            NetworkKind::Bridge(b) => Some((name, b.gateway6?.trunc())),
            NetworkKind::Isolated(i) => Some((name, i.v6.as_ref()?.range)),
            _ => None,
        })
        .collect();
    for (i, (name, p)) in prefixes.iter().enumerate() {
        if let Some((other, q)) = prefixes[..i]
            .iter()
            .find(|(_, q)| q.contains(&p.network()) || p.contains(&q.network()))
        {
            return Err(ConfigError::Network {
                network: name.to_string(),
                problem: format!("IPv6 prefix {p} overlaps network {other}'s {q}"),
            });
        }
    }
    Ok(())
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
                            isolated::validate_isolated(i).map_err(problem)?,
                        ),
                        RawNetwork::Masquerade(m) => (
                            access(m.private, &m.allow_users, &m.allow_groups)?,
                            isolated::validate_masquerade(m).map_err(problem)?,
                        ),
                        RawNetwork::Bridge(_)
                        | RawNetwork::Routed(_)
                        | RawNetwork::Macvtap(_)
                        | RawNetwork::Cni(_)
                        | RawNetwork::Pod(_) => {
                            unreachable!("matched above")
                        }
                    };
                    for (other, net) in &networks {
                        let o: &Network = net;
                        if let NetworkKind::Isolated(x) = &o.kind {
                            if isolated::overlaps(x.range, iso.range) {
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
                    (
                        NetworkKind::Macvtap(macvtap::validate(m).map_err(problem)?),
                        access,
                    )
                }
                RawNetwork::Pod(pd) => {
                    let access = access(pd.private, &pd.allow_users, &pd.allow_groups)?;
                    let mut adopt_any =
                        self::access(true, &pd.adopt_any_users, &pd.adopt_any_groups)?;
                    adopt_any.daemon_group = false;
                    (
                        NetworkKind::Pod(pod::validate(pd, adopt_any).map_err(problem)?),
                        access,
                    )
                }
                RawNetwork::Cni(c) => {
                    let access = access(c.private, &c.allow_users, &c.allow_groups)?;
                    (NetworkKind::Cni(cni::validate(c).map_err(problem)?), access)
                }
                RawNetwork::Bridge(b) => {
                    let access = access(b.private, &b.allow_users, &b.allow_groups)?;
                    let bridge = bridge::validate(b, p).map_err(problem)?;
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
                RawNetwork::Routed(r) => {
                    let access = access(r.private, &r.allow_users, &r.allow_groups)?;
                    let routed = routed::validate(r, p).map_err(problem)?;
                    // Its device and a bridge share one namespace of link names.
                    if let Some(other) = bridges.insert(routed.device.clone(), name.clone()) {
                        return Err(ConfigError::Network {
                            network: name,
                            problem: format!(
                                "device {} is already used by network {other}",
                                routed.device
                            ),
                        });
                    }
                    (NetworkKind::Routed(routed), access)
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
        ipv6_overlaps(&networks)?;
        routed_overlaps(&networks)?;
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
        let text = include_str!("../../../packaging/tapmanager.toml")
            .replace("group = \"tapmanager\"", "group = \"0\"");
        let c = Config::parse(&text).unwrap();
        assert_eq!(c.socket, PathBuf::from("/run/tapmanager/tapmanager.sock"));
        assert_eq!(c.networks.len(), 1);
    }

    #[test]
    fn gateway6_is_checked_and_guests_take_their_ipv4_host_part() {
        let base = EXAMPLE.replace("tmbr0x", "br0");
        let net = |name: &str, br: &str, gw: &str, extra: &str| {
            format!("\n[networks.{name}]\nkind = \"bridge\"\nbridge = \"{br}\"\ngateway = \"{gw}\"\n{extra}\n")
        };
        let parse = |extra: &str| {
            Config::parse(&format!(
                "{base}{}",
                net("six", "br6", "10.66.0.1/24", extra)
            ))
        };
        let c = parse("gateway6 = \"fd66::1/64\"\ndns6 = [\"fd66::53\"]").unwrap();
        let NetworkKind::Bridge(b) = &c.network(&"six".parse().unwrap()).unwrap().kind else {
            panic!("a bridge network")
        };
        assert_eq!(
            b.address6("10.66.0.7".parse().unwrap()),
            Some("fd66::7".parse().unwrap())
        );
        assert_eq!(
            b.dns6_servers(),
            ["fd66::53".parse::<std::net::Ipv6Addr>().unwrap()]
        );
        let refused = |extra: &str, needle: &str| match parse(extra) {
            Err(e) => {
                let msg = crate::error_chain(&e);
                assert!(msg.contains(needle), "{extra}: {msg}");
            }
            Ok(_) => panic!("{extra} was accepted"),
        };
        refused("gateway6 = \"fd66::5/64\"", "use gateway6 = \"fd66::1/64\"");
        refused("gateway6 = \"fe80::1/64\"", "global or unique-local");
        refused("gateway6 = \"fd66::1/124\"", "as many addresses");
        refused("dns6 = [\"fd66::53\"]", "only used with gateway6");
        refused("gateway6 = \"fd66::1/64\"\nmtu = 1200", "1280");
        let two = format!(
            "{base}{}{}",
            net("a", "bra", "10.66.0.1/24", "gateway6 = \"fd66::1/64\""),
            net(
                "b",
                "brb",
                "10.67.0.1/24",
                "gateway6 = \"fd66:0:0:0:1::1/80\""
            )
        );
        match Config::parse(&two) {
            Err(e) => assert!(crate::error_chain(&e).contains("overlaps network a"), "{e}"),
            Ok(_) => panic!("overlapping IPv6 prefixes were accepted"),
        }
    }

    #[test]
    fn range6_is_checked_and_each_guest_gets_the_64_at_its_30s_position() {
        let base = EXAMPLE.replace("tmbr0x", "br0");
        let parse = |extra: &str| {
            Config::parse(&format!(
                "{base}\n[networks.iso]\nkind = \"isolated\"\nrange = \"169.254.100.0/22\"\nuplink = \"eth0\"\n{extra}\n"
            ))
        };
        let c = parse("range6 = \"fd99::/48\"").unwrap();
        let NetworkKind::Isolated(i) = &c.network(&"iso".parse().unwrap()).unwrap().kind else {
            panic!("an isolated network")
        };
        assert_eq!(
            i.block6("169.254.100.4".parse().unwrap()),
            Some("fd99:0:0:1::/64".parse().unwrap())
        );
        let refused = |extra: &str, needle: &str| match parse(extra) {
            Err(e) => {
                let msg = crate::error_chain(&e);
                assert!(msg.contains(needle), "{extra}: {msg}");
            }
            Ok(_) => panic!("{extra} was accepted"),
        };
        refused("range6 = \"fd99::/60\"", "a /56 or larger");
        refused("range6 = \"fd99::1/48\"", "host bits");
        refused("range6 = \"fe80::/48\"", "unique-local");
        refused("drop6 = [\"fd00::/8\"]", "only used with range6");
        // Every binding takes it: the joined ones with the gateway on the host side.
        for binding in ["bridge", "tc-redirect"] {
            assert!(parse(&format!("range6 = \"fd99::/48\"\nbinding = \"{binding}\"")).is_ok());
        }
        refused(
            "range6 = \"fd99::/48\"\ndrop = [\"192.168.0.0/16\"]",
            "drop6 and/or allow6",
        );
        assert!(parse("range6 = \"fd99::/48\"\ndrop = [\"192.168.0.0/16\"]\nallow6 = []").is_ok());
        // A /127 per guest: a range of 256 /127s is enough for the /22's 256 /30s.
        let c = parse("range6 = \"fd99::/119\"\nguest_prefix6 = 127").unwrap();
        let NetworkKind::Isolated(i) = &c.network(&"iso".parse().unwrap()).unwrap().kind else {
            panic!("an isolated network")
        };
        assert_eq!(
            i.block6("169.254.100.8".parse().unwrap()),
            Some("fd99::4/127".parse().unwrap())
        );
        refused(
            "range6 = \"fd99::/120\"\nguest_prefix6 = 127",
            "a /119 or larger",
        );
        refused("range6 = \"fd99::/48\"\nguest_prefix6 = 96", "a /64");
        refused("guest_prefix6 = 127", "only used with range6");
    }

    #[test]
    fn a_masquerade_network_takes_transit6_and_defaults_cidr6_to_kubevirts() {
        let base = EXAMPLE.replace("tmbr0x", "br0");
        let parse = |extra: &str| {
            Config::parse(&format!(
                "{base}\n[networks.nat]\nkind = \"masquerade\"\nuplink = \"eth0\"\n{extra}\n"
            ))
        };
        let c = parse("transit6 = \"fd98::/48\"").unwrap();
        let NetworkKind::Isolated(i) = &c.network(&"nat".parse().unwrap()).unwrap().kind else {
            panic!("a masquerade network")
        };
        assert_eq!(
            i.masquerade().unwrap().cidr6,
            Some("fd10:0:2::/64".parse().unwrap())
        );
        assert_eq!(i.v6.as_ref().unwrap().range, "fd98::/48".parse().unwrap());
        assert!(
            parse("cidr6 = \"fd10:0:2::/64\"").is_err(),
            "cidr6 without transit6"
        );
        assert!(parse("transit6 = \"fd98::/48\"\ncidr6 = \"fd10:0:2::/127\"").is_err());
    }

    #[test]
    fn routed_networks_parse_and_must_not_overlap_or_share_a_device() {
        let base = "group = \"root\"\n";
        let ok = format!(
            "{base}[networks.fleet]\nkind = \"routed\"\ndevice = \"tmrt0\"\n\
             gateway = \"10.90.0.1/16\"\nnat = true\nuplink = \"eth0\"\ndrop = [\"10.90.9.9/24\"]\n"
        );
        let c = Config::parse(&ok).unwrap();
        let NetworkKind::Routed(r) = &c.network(&"fleet".parse().unwrap()).unwrap().kind else {
            panic!("not routed");
        };
        assert_eq!(r.nat, Some(Some("eth0".parse().unwrap())));
        assert_eq!(
            r.drop,
            vec!["10.90.9.0/24".parse::<ipnet::Ipv4Net>().unwrap()]
        );
        for (bad, why) in [
            (
                "[networks.r]\nkind = \"routed\"\ndevice = \"tmrt0\"\ngateway = \"10.90.0.1/16\"\nuplink = \"eth0\"\n",
                "only used with nat = true",
            ),
            (
                "[networks.r]\nkind = \"routed\"\ndevice = \"tmrt0\"\ngateway = \"10.90.0.0/16\"\n",
                "must be a host address",
            ),
            (
                "[networks.r]\nkind = \"routed\"\ndevice = \"tmbr0\"\ngateway = \"10.90.0.1/16\"\n\
                 [networks.b]\nkind = \"bridge\"\nbridge = \"tmbr0\"\ngateway = \"10.88.0.1/24\"\n",
                "already used by network",
            ),
            (
                "[networks.r]\nkind = \"routed\"\ndevice = \"tmrt0\"\ngateway = \"10.88.0.1/16\"\n\
                 [networks.b]\nkind = \"bridge\"\nbridge = \"tmbr0\"\ngateway = \"10.88.0.1/24\"\n",
                "overlaps network b",
            ),
        ] {
            match Config::parse(&format!("{base}{bad}")) {
                Err(e) => assert!(crate::error_chain(&e).contains(why), "{e}"),
                Ok(_) => panic!("accepted: {bad}"),
            }
        }
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
            NetworkKind::Isolated(i) => i.binding(),
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
        let m = i.masquerade().unwrap();
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
        let router: protocol::MacAddr = "00:11:22:33:44:55".parse().unwrap();
        let qemu: protocol::MacAddr = "52:54:00:12:34:56".parse().unwrap();
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
