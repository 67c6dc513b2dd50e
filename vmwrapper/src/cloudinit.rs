//! cloud-init network config for guests that do not run a DHCP client: network-config
//! version 1 or 2, and a NoCloud seed directory, made from the same lease the daemon's DHCP
//! server hands out (the attach response's address, gateway, MTU, DNS, search and routes).
//!
//! Each NIC is matched by its MAC and named `eth0`, `eth1`, ... in request order. A NIC
//! without a lease of ours (macvtap: the LAN's DHCP answers) is configured for DHCP.
//! Routes with an on-link next hop (0.0.0.0) are left out: neither format can say "on-link"
//! in a way Debian's cloud-init 22.4 renders. A NIC with an IPv6 lease gets its address too,
//! with the router as `gateway6` (v2) or a `static6` subnet's `gateway` (v1): 22.4 refuses
//! `to: default` and renders a route to `::/0` as `::/64`.
//!
//! Strings are written as JSON strings, which YAML reads as double-quoted scalars; MACs are
//! always quoted (YAML 1.1 would read `52:54:00:12:34:56` as a base-60 number).
//!
//! The files go into a NoCloud seed directory through [`crate::seed`].

use protocol::Interface;
use std::fmt::Write as _;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn list<T: ToString>(items: &[T]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| q(&i.to_string())).collect();
    format!("[{}]", quoted.join(", "))
}

fn netmask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

/// The routes to write: those with a next hop, not the default (written as the gateway).
fn routes(iface: &Interface) -> impl Iterator<Item = &(Ipv4Addr, u8, Ipv4Addr)> {
    let default = |dst: &Ipv4Addr, len: u8| dst.is_unspecified() && len == 0;
    iface
        .routes
        .iter()
        .filter(move |(dst, len, via)| !via.is_unspecified() && !default(dst, *len))
}

/// meta-data: the instance id and host name, both the VM id.
pub fn meta_data(vm: &protocol::VmId) -> String {
    format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        q(vm.as_str()),
        q(vm.as_str())
    )
}

/// network-config in `version`.
pub fn network_config(interfaces: &[Interface], version: Version) -> String {
    match version {
        Version::V1 => v1(interfaces),
        Version::V2 => v2(interfaces),
    }
}

fn v2(interfaces: &[Interface]) -> String {
    let mut s = String::from("version: 2\nethernets:\n");
    for (i, iface) in interfaces.iter().enumerate() {
        let _ = write!(
            s,
            "  nic{i}:\n    match:\n      macaddress: {}\n    set-name: {}\n    mtu: {}\n",
            q(&iface.mac.to_string()),
            q(&format!("eth{i}")),
            iface.mtu
        );
        let Some((ip, prefix)) = iface.address else {
            s.push_str("    dhcp4: true\n");
            continue;
        };
        let mut addresses = vec![format!("{ip}/{prefix}")];
        if let Some(l) = &iface.ipv6 {
            addresses.push(format!("{}/{}", l.address.0, l.address.1));
        }
        let _ = writeln!(s, "    dhcp4: false\n    addresses: {}", list(&addresses));
        if let Some(l) = &iface.ipv6 {
            let _ = writeln!(
                s,
                "    dhcp6: false\n    gateway6: {}",
                q(&l.gateway.to_string())
            );
        }
        let mut rs: Vec<(String, Ipv4Addr)> = Vec::new();
        if let Some(gw) = iface.gateway {
            rs.push(("0.0.0.0/0".into(), gw));
        }
        rs.extend(routes(iface).map(|(d, l, via)| (format!("{d}/{l}"), *via)));
        if !rs.is_empty() {
            s.push_str("    routes:\n");
            for (to, via) in rs {
                let _ = writeln!(
                    s,
                    "      - to: {}\n        via: {}",
                    q(&to),
                    q(&via.to_string())
                );
            }
        }
        let mut dns: Vec<String> = iface.dns.iter().map(ToString::to_string).collect();
        dns.extend(
            iface
                .ipv6
                .iter()
                .flat_map(|l| l.dns.iter().map(ToString::to_string)),
        );
        if !dns.is_empty() || !iface.search.is_empty() {
            s.push_str("    nameservers:\n");
            if !dns.is_empty() {
                let _ = writeln!(s, "      addresses: {}", list(&dns));
            }
            if !iface.search.is_empty() {
                let _ = writeln!(s, "      search: {}", list(&iface.search));
            }
        }
    }
    s
}

fn v1(interfaces: &[Interface]) -> String {
    let mut s = String::from("version: 1\nconfig:\n");
    for (i, iface) in interfaces.iter().enumerate() {
        let _ = write!(
            s,
            "  - type: physical\n    name: {}\n    mac_address: {}\n    mtu: {}\n    subnets:\n",
            q(&format!("eth{i}")),
            q(&iface.mac.to_string()),
            iface.mtu
        );
        let Some((ip, prefix)) = iface.address else {
            s.push_str("      - type: dhcp\n");
            continue;
        };
        let _ = writeln!(
            s,
            "      - type: static\n        address: {}",
            q(&format!("{ip}/{prefix}"))
        );
        if let Some(gw) = iface.gateway {
            let _ = writeln!(s, "        gateway: {}", q(&gw.to_string()));
        }
        if !iface.dns.is_empty() {
            let _ = writeln!(s, "        dns_nameservers: {}", list(&iface.dns));
        }
        if !iface.search.is_empty() {
            let _ = writeln!(s, "        dns_search: {}", list(&iface.search));
        }
        let extra: Vec<_> = routes(iface).collect();
        if !extra.is_empty() {
            s.push_str("        routes:\n");
            for (dst, len, via) in extra {
                let _ = writeln!(
                    s,
                    "          - network: {}\n            netmask: {}\n            gateway: {}",
                    q(&dst.to_string()),
                    q(&netmask(*len).to_string()),
                    q(&via.to_string())
                );
            }
        }
        if let Some(l) = &iface.ipv6 {
            let _ = writeln!(
                s,
                "      - type: static6\n        address: {}\n        gateway: {}",
                q(&format!("{}/{}", l.address.0, l.address.1)),
                q(&l.gateway.to_string())
            );
            if !l.dns.is_empty() {
                let _ = writeln!(s, "        dns_nameservers: {}", list(&l.dns));
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leased() -> Interface {
        Interface {
            network: "default".parse().unwrap(),
            ifname: "tm0123456789".parse().unwrap(),
            mac: "52:54:00:12:34:56".parse().unwrap(),
            address: Some(("10.88.0.10".parse().unwrap(), 24)),
            gateway: Some("10.88.0.1".parse().unwrap()),
            mtu: 1400,
            queues: 1,
            vnet_hdr: true,
            by_name: false,
            dns: vec!["10.88.0.1".parse().unwrap()],
            search: vec!["example.test".into()],
            routes: vec![
                ("0.0.0.0".parse().unwrap(), 0, "10.88.0.1".parse().unwrap()),
                (
                    "192.168.5.0".parse().unwrap(),
                    24,
                    "10.88.0.254".parse().unwrap(),
                ),
                ("169.254.1.1".parse().unwrap(), 32, Ipv4Addr::UNSPECIFIED),
            ],
            ipv6: None,
        }
    }

    #[test]
    fn version_2_matches_by_mac_and_has_the_whole_lease() {
        let mut dhcp = leased();
        dhcp.address = None;
        dhcp.mac = "02:00:00:00:00:02".parse().unwrap();
        assert_eq!(
            network_config(&[leased(), dhcp], Version::V2),
            r#"version: 2
ethernets:
  nic0:
    match:
      macaddress: "52:54:00:12:34:56"
    set-name: "eth0"
    mtu: 1400
    dhcp4: false
    addresses: ["10.88.0.10/24"]
    routes:
      - to: "0.0.0.0/0"
        via: "10.88.0.1"
      - to: "192.168.5.0/24"
        via: "10.88.0.254"
    nameservers:
      addresses: ["10.88.0.1"]
      search: ["example.test"]
  nic1:
    match:
      macaddress: "02:00:00:00:00:02"
    set-name: "eth1"
    mtu: 1400
    dhcp4: true
"#
        );
    }

    #[test]
    fn version_1_has_the_same_lease() {
        assert_eq!(
            network_config(&[leased()], Version::V1),
            r#"version: 1
config:
  - type: physical
    name: "eth0"
    mac_address: "52:54:00:12:34:56"
    mtu: 1400
    subnets:
      - type: static
        address: "10.88.0.10/24"
        gateway: "10.88.0.1"
        dns_nameservers: ["10.88.0.1"]
        dns_search: ["example.test"]
        routes:
          - network: "192.168.5.0"
            netmask: "255.255.255.0"
            gateway: "10.88.0.254"
"#
        );
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(netmask(32), Ipv4Addr::BROADCAST);
    }

    fn dual() -> Interface {
        Interface {
            routes: Vec::new(),
            ipv6: Some(protocol::Lease6 {
                address: ("fd88::a".parse().unwrap(), 64),
                gateway: "fd88::1".parse().unwrap(),
                router: "fe80::1".parse().unwrap(),
                dns: vec!["fd88::53".parse().unwrap()],
            }),
            ..leased()
        }
    }

    #[test]
    fn an_ipv6_lease_is_an_address_and_gateway6_in_version_2() {
        let v2 = network_config(&[dual()], Version::V2);
        for want in [
            r#"    addresses: ["10.88.0.10/24", "fd88::a/64"]"#,
            "    dhcp6: false\n    gateway6: \"fd88::1\"\n",
            r#"      addresses: ["10.88.0.1", "fd88::53"]"#,
        ] {
            assert!(v2.contains(want), "{want} missing from:\n{v2}");
        }
        assert!(!v2.contains("::/0") && !v2.contains("default"), "{v2}");
    }

    #[test]
    fn an_ipv6_lease_is_a_static6_subnet_in_version_1() {
        let v1 = network_config(&[dual()], Version::V1);
        assert!(
            v1.ends_with(
                "      - type: static6\n        address: \"fd88::a/64\"\n        gateway: \"fd88::1\"\n        dns_nameservers: [\"fd88::53\"]\n"
            ),
            "{v1}"
        );
    }
}
