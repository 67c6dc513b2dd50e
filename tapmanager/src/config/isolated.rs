//! An isolated or masquerade network's settings (the kinds: `kinds/isolated.rs`,
//! `kinds/masquerade.rs`), and the port forwards and veth bindings other kinds share.

use super::checks;
use super::raw::{RawIsolated, RawMasquerade};
use ipnet::{Ipv4Net, Ipv6Net};
use protocol::IfName;
use serde::Deserialize;
use std::net::{Ipv4Addr, Ipv6Addr};

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
    /// Where the guest's gateway is, and whether it sits behind NAT.
    pub mode: IsolatedMode,
    /// IPv6, when `range6` is set.
    pub v6: Option<Isolated6>,
}

/// An isolated network's IPv6: one /64 of `range` per guest (the one at the same position as
/// its /30 in the IPv4 range), routed and NATed out of the uplink like IPv4, with its own
/// destination lists (the IPv4 ones do not cover IPv6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolated6 {
    pub range: Ipv6Net,
    /// Each guest's prefix length: 64, or 127 (no SLAAC: the gateway `::0` and the guest
    /// `::1` of it, RFC 6164).
    pub guest_len: u8,
    pub drop: Vec<Ipv6Net>,
    pub allow: Option<Vec<Ipv6Net>>,
    pub dns: Vec<Ipv6Addr>,
}

impl IsolatedNet {
    /// The /64 (or /127) of the guest whose /30 starts at `block`.
    pub fn block6(&self, block: Ipv4Addr) -> Option<Ipv6Net> {
        let v6 = self.v6.as_ref()?;
        let k = (u32::from(block) - u32::from(self.range.network())) / 4;
        let net = u128::from(v6.range.network()) + (u128::from(k) << (128 - v6.guest_len));
        Ipv6Net::new(Ipv6Addr::from(net), v6.guest_len).ok()
    }
}

/// How an isolated network's guests meet the host. A masquerade network is always routed:
/// its NAT lives in the guest's namespace, behind the TAP that holds the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsolatedMode {
    /// The TAP holds the gateway inside the guest's namespace, which routes to the host.
    Routed,
    /// The TAP is joined to the veth at layer 2; the host side of the veth holds the gateway.
    Joined(VethBinding),
    /// The masquerade kind: routed, and the guest NATed in its namespace.
    Masquerade(Masquerade),
}

impl IsolatedNet {
    /// How its TAPs meet their veths: `None` when routed (as masquerade always is).
    pub fn binding(&self) -> Option<VethBinding> {
        match self.mode {
            IsolatedMode::Joined(b) => Some(b),
            IsolatedMode::Routed | IsolatedMode::Masquerade(_) => None,
        }
    }

    /// A masquerade network's NAT settings.
    pub fn masquerade(&self) -> Option<&Masquerade> {
        match &self.mode {
            IsolatedMode::Masquerade(m) => Some(m),
            IsolatedMode::Routed | IsolatedMode::Joined(_) => None,
        }
    }
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
    pub(super) fn parse(s: Option<&str>) -> Result<Option<VethBinding>, String> {
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
    /// The guest's IPv6 subnet (guest ::2, gateway ::1), with `transit6`.
    pub cidr6: Option<Ipv6Net>,
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

pub(super) fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

pub(super) fn validate_masquerade(m: RawMasquerade) -> Result<IsolatedNet, String> {
    if VethBinding::parse(m.binding.as_deref())?.is_some() {
        return Err(
            "binding: a masquerade guest is NATed inside its namespace, behind a TAP \
                    that holds its gateway; only \"routed\" applies (use the isolated kind \
                    for a bridge or tc-redirect binding)"
                .into(),
        );
    }
    checks::nat_cidr(m.cidr)?;
    let ports = checks::forwards(&m.ports, "host port")?;
    let cidr6 = match (m.transit6, m.cidr6) {
        (None, None) => None,
        (None, Some(_)) => return Err("cidr6 is only used with transit6".into()),
        (Some(_), c) => Some(checks::nat_cidr6(c)?),
    };
    let mut iso = validate_isolated(RawIsolated {
        range: m.transit,
        uplink: m.uplink,
        binding: None,
        drop: m.drop,
        allow: m.allow,
        dns: m.dns,
        range6: m.transit6,
        guest_prefix6: None,
        drop6: m.drop6,
        allow6: m.allow6,
        dns6: m.dns6,
        mtu: m.mtu,
        lease_secs: m.lease_secs,
        allow_users: Vec::new(),
        allow_groups: Vec::new(),
        private: false,
    })?;
    iso.mode = IsolatedMode::Masquerade(Masquerade {
        cidr: m.cidr,
        ports,
        cidr6,
    });
    Ok(iso)
}

pub(super) fn validate_isolated(i: RawIsolated) -> Result<IsolatedNet, String> {
    let uplink = IfName::try_from(i.uplink.clone()).map_err(|e| e.to_string())?;
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
    checks::mtu(i.mtu)?;
    checks::lease_secs(i.lease_secs)?;
    let mode = match VethBinding::parse(i.binding.as_deref())? {
        None => IsolatedMode::Routed,
        Some(b) => IsolatedMode::Joined(b),
    };
    let v6 = validate6(&i)?;
    Ok(IsolatedNet {
        range: i.range,
        uplink,
        drop: i.drop.iter().map(|n| n.trunc()).collect(),
        allow: i.allow.map(|a| a.iter().map(|n| n.trunc()).collect()),
        dns: i.dns,
        mtu: i.mtu,
        lease_secs: i.lease_secs,
        mode,
        v6,
    })
}

/// `range6` and its lists: a unicast range (not link-local) with as many /64s as the IPv4
/// range has /30s; routed only; and where the IPv4 destinations are limited, the IPv6 ones
/// must be said too (the IPv4 lists do not cover IPv6, and an unlimited IPv6 would open what
/// `drop` closes).
fn validate6(i: &RawIsolated) -> Result<Option<Isolated6>, String> {
    let Some(r) = i.range6 else {
        if !i.drop6.is_empty()
            || i.allow6.is_some()
            || !i.dns6.is_empty()
            || i.guest_prefix6.is_some()
        {
            return Err("drop6, allow6, dns6 and guest_prefix6 are only used with range6".into());
        }
        return Ok(None);
    };
    let guest_len = match i.guest_prefix6.unwrap_or(64) {
        len @ (64 | 127) => len,
        other => {
            return Err(format!(
                "guest_prefix6 = {other}: each guest gets a /64 (SLAAC allowed in it) or a /127 \
                 (the gateway and the guest only)"
            ))
        }
    };
    if r != r.trunc() {
        return Err(format!(
            "range6 {r}: host bits are set (did you mean {}?)",
            r.trunc()
        ));
    }
    let a = r.network();
    if !checks::routable6(a) {
        return Err(format!(
            "range6 {r}: needs global or unique-local unicast addresses (fd00::/8 for a private network)"
        ));
    }
    let slash30s = 30 - u32::from(i.range.prefix_len());
    if u32::from(r.prefix_len()) + slash30s > u32::from(guest_len) {
        return Err(format!(
            "range6 {r}: one /{guest_len} per guest needs a /{} or larger for range {}",
            u32::from(guest_len) - slash30s,
            i.range
        ));
    }
    if (!i.drop.is_empty() || i.allow.is_some()) && i.drop6.is_empty() && i.allow6.is_none() {
        return Err(
            "range6: drop and allow limit IPv4 only; say what IPv6 may reach with drop6 \
             and/or allow6 (allow6 = [] for nothing)"
                .into(),
        );
    }
    if i.mtu < 1280 {
        return Err(format!(
            "mtu {} is below IPv6's minimum of 1280 (range6 is set)",
            i.mtu
        ));
    }
    Ok(Some(Isolated6 {
        range: r,
        guest_len,
        drop: i.drop6.iter().map(|n| n.trunc()).collect(),
        allow: i
            .allow6
            .as_ref()
            .map(|a| a.iter().map(|n| n.trunc()).collect()),
        dns: i.dns6.clone(),
    }))
}
