//! A bridge network's settings (the kind: `kinds/bridge.rs`).

use super::checks;
use super::raw::RawBridge;
use ipnet::{Ipv4Net, Ipv6Net};
use protocol::IfName;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeNet {
    pub bridge: IfName,
    /// The gateway address with the guests' prefix length.
    pub gateway: Ipv4Net,
    /// IPv6: the router's address with the guests' prefix; each guest's address is its IPv4
    /// address's host part in this prefix ([`BridgeNet::address6`]).
    pub gateway6: Option<Ipv6Net>,
    /// IPv6 DNS servers told to guests.
    pub dns6: Vec<Ipv6Addr>,
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

impl BridgeNet {
    /// The IPv6 address of the guest that has IPv4 address `ip`: the same host part in the
    /// `gateway6` prefix. One allocator for both families, and the guards know both at once.
    pub fn address6(&self, ip: Ipv4Addr) -> Option<Ipv6Addr> {
        let g6 = self.gateway6?;
        let host = u32::from(ip) - u32::from(self.gateway.network());
        Some(Ipv6Addr::from(u128::from(g6.network()) + u128::from(host)))
    }

    /// The IPv6 DNS servers its guests are told of: the configured ones, else the gateway's
    /// IPv6 address when it forwards DNS (the forwarder answers there too).
    pub fn dns6_servers(&self) -> Vec<Ipv6Addr> {
        match self.gateway6 {
            Some(g6) if self.dns6.is_empty() && self.dns_forward.is_some() => vec![g6.addr()],
            _ => self.dns6.clone(),
        }
    }
}

/// `gateway6`: a global or unique-local unicast address, in a prefix that holds as many
/// addresses as the IPv4 subnet, with the IPv4 gateway's host part (guests take their IPv4
/// host part, so the router's must be the one no guest gets).
fn validate_gateway6(g6: Ipv6Net, gw: Ipv4Net) -> Result<(), String> {
    let a = g6.addr();
    if !checks::routable6(a) {
        return Err(format!(
            "gateway6 {g6}: the router needs a global or unique-local unicast address (fd00::/8 for a private network)"
        ));
    }
    if u32::from(g6.prefix_len()) + 32 - u32::from(gw.prefix_len()) > 128 || g6.prefix_len() > 126 {
        return Err(format!(
            "gateway6 {g6}: the prefix must hold as many addresses as the IPv4 subnet {} (at most /{})",
            gw.trunc(),
            96 + u32::from(gw.prefix_len()).min(30)
        ));
    }
    let host4 = u32::from(gw.addr()) - u32::from(gw.network());
    let host6 = u128::from(a) - u128::from(g6.network());
    if host6 != u128::from(host4) {
        let want = Ipv6Addr::from(u128::from(g6.network()) + u128::from(host4));
        return Err(format!(
            "gateway6 {g6}: each guest's IPv6 address is its IPv4 host part in this prefix, so the \
             router must have the IPv4 gateway's ({}): use gateway6 = \"{want}/{}\"",
            gw.addr(),
            g6.prefix_len()
        ));
    }
    Ok(())
}

pub(super) fn validate(b: RawBridge, prefix: &str) -> Result<BridgeNet, String> {
    let bridge = checks::own_link(b.bridge, "bridge", prefix)?;
    let gw = b.gateway;
    checks::gateway(gw)?;
    checks::mtu(b.mtu)?;
    checks::lease_secs(b.lease_secs)?;
    if let Some(g6) = b.gateway6 {
        validate_gateway6(g6, gw)?;
        if b.mtu < 1280 {
            return Err(format!(
                "mtu {} is below IPv6's minimum of 1280 (gateway6 is set)",
                b.mtu
            ));
        }
    } else if !b.dns6.is_empty() {
        return Err("dns6 is only used with gateway6".into());
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
    let nat = checks::nat(b.nat, b.uplink, &bridge, "a plain bridge is not routed")?;
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
        gateway6: b.gateway6,
        dns6: b.dns6,
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
