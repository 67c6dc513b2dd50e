//! CNI results of spec versions 0.3.0 to 1.1.0, parsed into one type.
//!
//! The versions share one shape (`interfaces`, `ips`, `routes`, `dns`); 0.3.x adds a
//! `version` field to each IP ("4" or "6"), which 0.4.0 dropped and which is derived from the
//! address here. Results of 0.1.0/0.2.0 (`ip4`/`ip6`) are refused: no plugin in use still
//! writes them. The raw JSON is kept as well: it is what the next plugin of a chain gets as
//! `prevResult`, and what DEL and CHECK get later.

use ipnet::IpNet;
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The spec versions whose results this parser reads.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default)]
    pub mac: Option<String>,
    /// The namespace path for interfaces inside the sandbox; absent for host-side ones.
    #[serde(default)]
    pub sandbox: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IpConfig {
    pub address: IpNet,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default)]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default)]
    pub gw: Option<IpAddr>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Dns {
    #[serde(default)]
    pub nameservers: Vec<IpAddr>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub search: Vec<String>,
}

/// A CNI result, whatever spec version wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniResult {
    pub cni_version: String,
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    /// The result as the plugin wrote it.
    pub raw: serde_json::Value,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    cni_version: String,
    #[serde(default)]
    interfaces: Vec<Interface>,
    #[serde(default)]
    ips: Vec<WireIp>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    dns: Dns,
}

#[derive(Debug, Deserialize)]
struct WireIp {
    /// 0.3.x only.
    #[serde(default)]
    version: Option<String>,
    address: IpNet,
    #[serde(default)]
    gateway: Option<IpAddr>,
    #[serde(default)]
    interface: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum ResultError {
    #[error("the plugin's result is not valid JSON of the CNI result shape")]
    Json(#[source] serde_json::Error),
    #[error("result of CNI spec version {0:?}: tapmanager reads 0.3.0 to 1.1.0")]
    Version(String),
    #[error("IP {address} says version {said:?}, but it is IPv{is}")]
    IpVersion {
        address: IpNet,
        said: String,
        is: u8,
    },
    #[error("IP {0} names interface {1}, but the result lists {2} interfaces")]
    InterfaceIndex(IpNet, usize, usize),
}

impl CniResult {
    pub fn parse(raw: serde_json::Value) -> Result<CniResult, ResultError> {
        let w: Wire = serde_json::from_value(raw.clone()).map_err(ResultError::Json)?;
        if !SUPPORTED_VERSIONS.contains(&w.cni_version.as_str()) {
            return Err(ResultError::Version(w.cni_version));
        }
        let mut ips = Vec::with_capacity(w.ips.len());
        for ip in w.ips {
            let is = match ip.address {
                IpNet::V4(_) => 4,
                IpNet::V6(_) => 6,
            };
            if let Some(said) = &ip.version {
                if said != &is.to_string() {
                    return Err(ResultError::IpVersion {
                        address: ip.address,
                        said: said.clone(),
                        is,
                    });
                }
            }
            if let Some(i) = ip.interface {
                if i >= w.interfaces.len() {
                    return Err(ResultError::InterfaceIndex(
                        ip.address,
                        i,
                        w.interfaces.len(),
                    ));
                }
            }
            ips.push(IpConfig {
                address: ip.address,
                gateway: ip.gateway,
                interface: ip.interface,
            });
        }
        Ok(CniResult {
            cni_version: w.cni_version,
            interfaces: w.interfaces,
            ips,
            routes: w.routes,
            dns: w.dns,
            raw,
        })
    }

    /// The IPs on the sandbox interface `ifname` (or on no named interface), in order.
    fn ips_on<'a>(&'a self, ifname: &'a str) -> impl Iterator<Item = &'a IpConfig> + 'a {
        self.ips.iter().filter(move |ip| match ip.interface {
            None => true,
            Some(i) => {
                let iface = &self.interfaces[i];
                iface.name == ifname && iface.sandbox.is_some()
            }
        })
    }

    /// The first IPv4 address on the sandbox interface `ifname` (or on no named interface),
    /// with its gateway: what the guest is handed.
    pub fn ipv4_on(&self, ifname: &str) -> Option<(ipnet::Ipv4Net, Option<Ipv4Addr>)> {
        self.ips_on(ifname)
            .find_map(|ip| match (ip.address, ip.gateway) {
                (IpNet::V4(a), Some(IpAddr::V4(g))) => Some((a, Some(g))),
                (IpNet::V4(a), _) => Some((a, None)),
                _ => None,
            })
    }

    /// The first IPv6 address on the sandbox interface `ifname`, with its gateway.
    pub fn ipv6_on(&self, ifname: &str) -> Option<(ipnet::Ipv6Net, Option<Ipv6Addr>)> {
        self.ips_on(ifname)
            .find_map(|ip| match (ip.address, ip.gateway) {
                (IpNet::V6(a), Some(IpAddr::V6(g))) => Some((a, Some(g))),
                (IpNet::V6(a), _) => Some((a, None)),
                _ => None,
            })
    }

    /// IPv4 routes: (destination, next hop or 0.0.0.0 for on-link/unspecified).
    pub fn ipv4_routes(&self) -> Vec<(ipnet::Ipv4Net, Option<Ipv4Addr>)> {
        self.routes
            .iter()
            .filter_map(|r| match (r.dst, r.gw) {
                (IpNet::V4(d), Some(IpAddr::V4(g))) => Some((d, Some(g))),
                (IpNet::V4(d), None) => Some((d, None)),
                _ => None,
            })
            .collect()
    }

    /// IPv6 routes: (destination, next hop if the route names one).
    pub fn ipv6_routes(&self) -> Vec<(ipnet::Ipv6Net, Option<Ipv6Addr>)> {
        self.routes
            .iter()
            .filter_map(|r| match (r.dst, r.gw) {
                (IpNet::V6(d), Some(IpAddr::V6(g))) => Some((d, Some(g))),
                (IpNet::V6(d), None) => Some((d, None)),
                _ => None,
            })
            .collect()
    }

    pub fn ipv4_nameservers(&self) -> Vec<Ipv4Addr> {
        self.dns
            .nameservers
            .iter()
            .filter_map(|a| match a {
                IpAddr::V4(v) => Some(*v),
                IpAddr::V6(_) => None,
            })
            .collect()
    }

    pub fn ipv6_nameservers(&self) -> Vec<Ipv6Addr> {
        self.dns
            .nameservers
            .iter()
            .filter_map(|a| match a {
                IpAddr::V6(v) => Some(*v),
                IpAddr::V4(_) => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(version: &str, ip_version: Option<&str>) -> serde_json::Value {
        let mut ip = serde_json::json!({
            "address": "10.22.0.5/16", "gateway": "10.22.0.1", "interface": 1
        });
        if let Some(v) = ip_version {
            ip["version"] = v.into();
        }
        serde_json::json!({
            "cniVersion": version,
            "interfaces": [
                {"name": "cni0", "mac": "aa:bb:cc:00:00:01"},
                {"name": "eth0", "mac": "0a:58:0a:16:00:05", "sandbox": "/run/netns/x"}
            ],
            "ips": [ip, {"address": "fd00::5/64", "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "10.96.0.0/12", "gw": "10.22.0.254"}],
            "dns": {"nameservers": ["10.96.0.10", "fd00::a"], "search": ["svc.cluster.local"]}
        })
    }

    #[test]
    fn every_supported_version_parses_into_one_shape() {
        for (v, ipv) in [
            ("0.3.0", Some("4")),
            ("0.3.1", Some("4")),
            ("0.4.0", None),
            ("1.0.0", None),
            ("1.1.0", None),
        ] {
            let r = CniResult::parse(result(v, ipv)).unwrap();
            assert_eq!(r.cni_version, v);
            let (addr, gw) = r.ipv4_on("eth0").unwrap();
            assert_eq!(addr.to_string(), "10.22.0.5/16", "{v}");
            assert_eq!(gw, Some(Ipv4Addr::new(10, 22, 0, 1)), "{v}");
            assert_eq!(
                r.ipv4_routes(),
                vec![
                    ("0.0.0.0/0".parse().unwrap(), None),
                    (
                        "10.96.0.0/12".parse().unwrap(),
                        Some(Ipv4Addr::new(10, 22, 0, 254))
                    )
                ],
                "{v}"
            );
            assert_eq!(r.ipv4_nameservers(), vec![Ipv4Addr::new(10, 96, 0, 10)]);
            let (addr6, gw6) = r.ipv6_on("eth0").unwrap();
            assert_eq!((addr6.to_string(), gw6), ("fd00::5/64".into(), None), "{v}");
            assert_eq!(
                r.ipv6_nameservers(),
                vec!["fd00::a".parse::<Ipv6Addr>().unwrap()]
            );
            assert!(r.ipv6_routes().is_empty());
            assert_eq!(r.dns.search, vec!["svc.cluster.local".to_owned()]);
            assert_eq!(r.raw, result(v, ipv));
        }
    }

    #[test]
    fn wrong_versions_and_indices_are_refused() {
        assert!(matches!(
            CniResult::parse(result("0.2.0", None)),
            Err(ResultError::Version(_))
        ));
        assert!(matches!(
            CniResult::parse(result("0.3.1", Some("6"))),
            Err(ResultError::IpVersion { .. })
        ));
        let mut r = result("1.0.0", None);
        r["ips"][0]["interface"] = 7.into();
        assert!(matches!(
            CniResult::parse(r),
            Err(ResultError::InterfaceIndex(_, 7, 2))
        ));
        assert!(matches!(
            CniResult::parse(serde_json::json!({"cniVersion": "1.0.0", "ips": "x"})),
            Err(ResultError::Json(_))
        ));
    }

    #[test]
    fn an_address_on_the_host_side_interface_is_not_the_guests() {
        let r = CniResult::parse(serde_json::json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.1.0.1/24", "interface": 0},
                    {"address": "10.1.0.7/32", "gateway": "169.254.1.1", "interface": 1}]
        }))
        .unwrap();
        let (a, gw) = r.ipv4_on("eth0").unwrap();
        assert_eq!(a.to_string(), "10.1.0.7/32");
        assert_eq!(gw, Some(Ipv4Addr::new(169, 254, 1, 1)));
    }
}
