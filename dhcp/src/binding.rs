//! What one DHCP server hands out: the `Binding` of one VM interface.
//!
//! The daemon decides every value (IPAM, CNI result, config) and gives the finished binding to
//! the server; the server never allocates anything. The binding is plain data so the daemon can
//! journal it and hand the same one to a restarted server after a daemon restart. `validate`
//! is the one place that checks it can be put on the wire, so `reply` can trust it.

use std::net::{Ipv4Addr, Ipv6Addr};

use dhcproto::Name;
use ipnet::{Ipv4Net, Ipv6Net};

/// The lease of one VM interface: the only client its server answers and everything it is told.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Binding {
    /// The guest's MAC: the only client this server answers (matched against `chaddr`).
    pub mac: [u8; 6],
    /// The guest's address (`yiaddr`).
    pub ip: Ipv4Addr,
    /// Prefix length of the guest's subnet; sent as option 1 (subnet mask) and used for
    /// option 28 (broadcast address) and to decide whether the gateway is on-link.
    pub prefix_len: u8,
    /// Option 3 (router). Also the next hop of the default route put into option 121.
    pub gateway: Option<Ipv4Addr>,
    /// Option 54, and the IPv4 source address of replies. Must be an address the guest can
    /// reach (normally the gateway), so unicast renewals arrive.
    pub server_id: Ipv4Addr,
    /// Ethernet source address of replies (the bridge's or the veth's MAC).
    pub server_mac: [u8; 6],
    /// Option 121 classless static routes, `(destination, next hop)`. A next hop of
    /// `0.0.0.0` means "on-link".
    pub routes: Vec<(Ipv4Net, Ipv4Addr)>,
    /// Option 6 (DNS servers).
    pub dns: Vec<Ipv4Addr>,
    /// Option 119 (domain search list, RFC 3397).
    pub search: Vec<String>,
    /// Option 12 (host name).
    pub hostname: Option<String>,
    /// Option 15 (domain name).
    pub domain: Option<String>,
    /// Option 26 (interface MTU).
    pub mtu: Option<u16>,
    /// Option 51 (lease time, seconds); option 58 is half of it, option 59 seven eighths.
    /// Also the valid and preferred lifetime of the IPv6 address and prefix.
    pub lease_secs: u32,
    /// The IPv6 side of the lease, served by router advertisements and DHCPv6 on the same
    /// socket; `None` on a network without IPv6 (the server then ignores every IPv6 frame).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v6: Option<Binding6>,
}

/// What the router side hands one guest over IPv6: the router advertisement's prefix,
/// router and DNS, and the one address its DHCPv6 server leases (IA_NA). The MTU, the search
/// list and the lifetimes are the IPv4 binding's.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Binding6 {
    /// The guest's address, leased by DHCPv6 (IA_NA). `None`: no stateful address, the
    /// guest configures itself from the prefix (SLAAC; `autonomous` must be set).
    pub ip: Option<Ipv6Addr>,
    /// The on-link prefix of the router advertisement's prefix information option (L=1).
    pub prefix: Ipv6Net,
    /// The prefix's A flag: the guest may form its own addresses in it (SLAAC). Off where
    /// the guards hold one known address per guest.
    pub autonomous: bool,
    /// The router's link-local address: the source of advertisements and DHCPv6 replies,
    /// and the guest's default router. The host must own it on the guest's link.
    pub router: Ipv6Addr,
    /// RDNSS (RFC 8106) and DHCPv6 option 23.
    pub dns: Vec<Ipv6Addr>,
    /// Whether `router` lives on `server_mac`, so the advertisement names that MAC as the
    /// router's link-layer address (sparing the guest a resolution). Off where the router is
    /// someone else's (a CNI plugin's bridge, a pod's gateway): the guest resolves it.
    #[serde(default = "yes")]
    pub router_on_server_mac: bool,
}

fn yes() -> bool {
    true
}

/// Why a [`Binding`] cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    /// `prefix_len` is above 32.
    #[error("prefix length {0} is longer than 32")]
    PrefixLen(u8),
    /// The guest address is 0.0.0.0 or a broadcast/multicast address.
    #[error("guest address {0} cannot be leased")]
    GuestAddress(Ipv4Addr),
    /// The server identifier is 0.0.0.0 or a broadcast/multicast address.
    #[error("server identifier {0} is not a unicast address")]
    ServerId(Ipv4Addr),
    /// The guest MAC is all zeros or has the multicast bit set.
    #[error("guest MAC is not a unicast address")]
    GuestMac,
    /// The lease time is zero.
    #[error("lease time is zero")]
    LeaseTime,
    /// The MTU is below the IPv4 minimum of 68.
    #[error("MTU {0} is below 68")]
    Mtu(u16),
    /// The host name or domain name is empty or longer than 255 bytes.
    #[error("{field} must be 1 to 255 bytes")]
    NameLength {
        /// `hostname` or `domain`.
        field: &'static str,
    },
    /// The IPv6 router is not a link-local unicast address.
    #[error("IPv6 router {0} is not a link-local unicast address")]
    Router6(Ipv6Addr),
    /// The IPv6 prefix is longer than 128 or the leased address is outside it or not unicast.
    #[error("IPv6 address {ip:?} cannot be leased in prefix {prefix}")]
    Address6 {
        /// The leased address, if any.
        ip: Option<Ipv6Addr>,
        /// The prefix.
        prefix: Ipv6Net,
    },
    /// A search domain is not a valid DNS name.
    #[error("search domain {name:?} is not a valid DNS name")]
    SearchDomain {
        /// The offending entry.
        name: String,
        /// What the DNS name parser or encoder said.
        #[source]
        source: dhcproto::NameError,
    },
}

impl Binding {
    /// Checks that every value can be put on the wire as its option requires.
    /// `Server::bind` calls this; `reply` assumes it passed.
    pub fn validate(&self) -> Result<(), BindingError> {
        if self.prefix_len > 32 {
            return Err(BindingError::PrefixLen(self.prefix_len));
        }
        if !is_unicast(self.ip) {
            return Err(BindingError::GuestAddress(self.ip));
        }
        if !is_unicast(self.server_id) {
            return Err(BindingError::ServerId(self.server_id));
        }
        if self.mac == [0; 6] || self.mac[0] & 1 == 1 {
            return Err(BindingError::GuestMac);
        }
        if self.lease_secs == 0 {
            return Err(BindingError::LeaseTime);
        }
        if let Some(mtu) = self.mtu.filter(|mtu| *mtu < 68) {
            return Err(BindingError::Mtu(mtu));
        }
        check_name_len("hostname", self.hostname.as_deref())?;
        check_name_len("domain", self.domain.as_deref())?;
        search_names(&self.search)?;
        if let Some(v6) = &self.v6 {
            v6.validate()?;
        }
        Ok(())
    }

    /// The guest's subnet (address and prefix, host bits kept), or `None` if `prefix_len`
    /// is invalid.
    pub fn subnet(&self) -> Option<Ipv4Net> {
        Ipv4Net::new(self.ip, self.prefix_len).ok()
    }
}

impl Binding6 {
    /// Checks the router is link-local and the address, if any, a unicast one inside the
    /// prefix (not its subnet-router anycast address, which a /127 and a /128 do not have,
    /// RFC 6164); a binding without an address must let the guest configure itself.
    pub fn validate(&self) -> Result<(), BindingError> {
        if !crate::frame6::is_link_local(self.router) {
            return Err(BindingError::Router6(self.router));
        }
        let in_prefix = |ip: Ipv6Addr| {
            self.prefix.contains(&ip)
                && !ip.is_multicast()
                && !ip.is_unspecified()
                && (ip != self.prefix.network() || self.prefix.prefix_len() >= 127)
        };
        let ok = match self.ip {
            Some(ip) => in_prefix(ip),
            None => self.autonomous && self.prefix.prefix_len() == 64,
        };
        if !ok {
            return Err(BindingError::Address6 {
                ip: self.ip,
                prefix: self.prefix,
            });
        }
        Ok(())
    }
}

/// The search list as DNS names, in order, for option 119.
pub(crate) fn search_names(search: &[String]) -> Result<Vec<Name>, BindingError> {
    search
        .iter()
        .map(|name| {
            Name::from_ascii(name).map_err(|source| BindingError::SearchDomain {
                name: name.clone(),
                source,
            })
        })
        .collect()
}

fn check_name_len(field: &'static str, value: Option<&str>) -> Result<(), BindingError> {
    match value {
        Some(v) if v.is_empty() || v.len() > 255 => Err(BindingError::NameLength { field }),
        _ => Ok(()),
    }
}

fn is_unicast(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A binding with every option set, on 10.0.0.0/24 with the gateway in the subnet.
    pub(crate) fn full() -> Binding {
        Binding {
            mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            ip: Ipv4Addr::new(10, 0, 0, 5),
            prefix_len: 24,
            gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
            server_id: Ipv4Addr::new(10, 0, 0, 1),
            server_mac: [0x02, 0, 0, 0, 0, 1],
            routes: Vec::new(),
            dns: vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(9, 9, 9, 9)],
            search: vec!["example.com".into(), "lab.example.com".into()],
            hostname: Some("vm1".into()),
            domain: Some("example.com".into()),
            mtu: Some(1400),
            lease_secs: 3600,
            v6: None,
        }
    }

    /// [`full`] with an IPv6 lease: fd77::5 in fd77::/64, router fe80::1.
    pub(crate) fn dual() -> Binding {
        Binding {
            v6: Some(Binding6 {
                ip: Some("fd77::5".parse().unwrap()),
                prefix: "fd77::/64".parse().unwrap(),
                autonomous: false,
                router: "fe80::1".parse().unwrap(),
                dns: vec!["fd77::1".parse().unwrap()],
                router_on_server_mac: true,
            }),
            ..full()
        }
    }

    #[test]
    fn dual_binding_is_valid_and_a_bad_ipv6_side_is_not() {
        assert!(dual().validate().is_ok());
        let with = |f: fn(&mut Binding6)| {
            let mut b = dual();
            f(b.v6.as_mut().unwrap());
            b.validate()
        };
        assert!(matches!(
            with(|v| v.router = "fd77::1".parse().unwrap()),
            Err(BindingError::Router6(_))
        ));
        assert!(matches!(
            with(|v| v.ip = Some("fd78::5".parse().unwrap())),
            Err(BindingError::Address6 { .. })
        ));
        assert!(matches!(
            with(|v| v.ip = None),
            Err(BindingError::Address6 { .. })
        ));
        assert!(with(|v| {
            v.ip = None;
            v.autonomous = true;
        })
        .is_ok());
    }

    #[test]
    fn full_binding_is_valid() {
        assert!(full().validate().is_ok());
    }

    #[test]
    fn prefix_over_32_is_rejected() {
        let b = Binding {
            prefix_len: 33,
            ..full()
        };
        assert!(matches!(b.validate(), Err(BindingError::PrefixLen(33))));
    }

    #[test]
    fn multicast_mac_is_rejected() {
        let b = Binding {
            mac: [0x01, 0, 0x5e, 0, 0, 1],
            ..full()
        };
        assert!(matches!(b.validate(), Err(BindingError::GuestMac)));
    }

    #[test]
    fn bad_search_domain_is_rejected() {
        let b = Binding {
            search: vec!["a..b".into()],
            ..full()
        };
        assert!(matches!(
            b.validate(),
            Err(BindingError::SearchDomain { .. })
        ));
    }

    #[test]
    fn tiny_mtu_is_rejected() {
        let b = Binding {
            mtu: Some(10),
            ..full()
        };
        assert!(matches!(b.validate(), Err(BindingError::Mtu(10))));
    }
}
