//! The checks more than one kind makes, written once.

use super::PortForward;
use ipnet::Ipv4Net;

/// A link MTU the kernel takes: 68 (IPv4's minimum) to 65535.
pub(super) fn mtu(mtu: u32) -> Result<(), String> {
    if (68..=65535).contains(&mtu) {
        Ok(())
    } else {
        Err(format!("mtu {mtu} is out of range (68..=65535)"))
    }
}

/// An IPv6 address a network can route for its guests: unicast, not link-local, loopback or
/// unspecified (global or unique-local).
pub(super) fn routable6(a: std::net::Ipv6Addr) -> bool {
    !(a.is_multicast() || a.is_unspecified() || a.is_loopback() || dhcp::frame6::is_link_local(a))
}

/// A link the config names for the daemon to make (a bridge network's bridge, a routed
/// network's device): a valid name, and not of a generated TAP's shape, which reconcile
/// deletes as an orphan. `what` names the key.
pub(super) fn own_link(name: String, what: &str, prefix: &str) -> Result<protocol::IfName, String> {
    let link = protocol::IfName::try_from(name).map_err(|e| format!("{what}: {e}"))?;
    if crate::names::is_generated(link.as_str(), prefix) {
        return Err(format!(
            "{what} name {link} has the shape of a generated TAP name ({prefix} + 10 hex digits)"
        ));
    }
    Ok(link)
}

/// A gateway of guests: a host address of a subnet of at least /30.
pub(super) fn gateway(gw: Ipv4Net) -> Result<(), String> {
    if gw.prefix_len() > 30 {
        return Err(format!("gateway {gw}: the subnet must be /30 or larger"));
    }
    if gw.addr() == gw.network() || gw.addr() == gw.broadcast() {
        return Err(format!(
            "gateway {gw}: the gateway must be a host address, not the network or broadcast address"
        ));
    }
    Ok(())
}

/// `nat` and `uplink` of a network whose own link is `own`: `Some(None)` out of any link,
/// `Some(Some(u))` out of `u` only, `None` without NAT (where an uplink means nothing).
pub(super) fn nat(
    nat: bool,
    uplink: Option<String>,
    own: &protocol::IfName,
    without: &str,
) -> Result<Option<Option<protocol::IfName>>, String> {
    let uplink = uplink
        .map(|u| protocol::IfName::try_from(u).map_err(|e| format!("uplink: {e}")))
        .transpose()?;
    if uplink.as_ref() == Some(own) {
        return Err(format!("uplink {own} is the network's own link"));
    }
    match (nat, uplink) {
        (true, uplink) => Ok(Some(uplink)),
        (false, None) => Ok(None),
        (false, Some(u)) => Err(format!(
            "uplink {u} is only used with nat = true ({without})"
        )),
    }
}

/// A DHCP lease of at least a minute (clients renew at half of it).
pub(super) fn lease_secs(secs: u32) -> Result<(), String> {
    if secs < 60 {
        Err(format!("lease_secs {secs} is below 60"))
    } else {
        Ok(())
    }
}

/// `ports = ["tcp:8080:80", ...]`, each outside port forwarded once; `outside` names it (a
/// masquerade network's are the host's ports, a pod's the pod's).
pub(super) fn forwards(specs: &[String], outside: &str) -> Result<Vec<PortForward>, String> {
    let mut ports: Vec<PortForward> = Vec::new();
    for spec in specs {
        let f: PortForward = spec.parse()?;
        if ports.iter().any(|o| o.proto == f.proto && o.host == f.host) {
            return Err(format!(
                "{outside} {}:{} is forwarded twice",
                f.proto.as_str(),
                f.host
            ));
        }
        ports.push(f);
    }
    Ok(ports)
}

/// A masquerade guest's subnet: room for the gateway and the guest, no host bits.
pub(super) fn nat_cidr(cidr: Ipv4Net) -> Result<(), String> {
    if cidr.prefix_len() > 30 || cidr != cidr.trunc() {
        return Err(format!(
            "cidr {cidr}: must be a subnet of at least /30 without host bits"
        ));
    }
    Ok(())
}

/// A guest's IPv6 subnet behind NAT (`cidr6`, KubeVirt's `fd10:0:2::/64` by default): unicast,
/// not link-local, /126 or larger, host bits clear.
pub(super) fn nat_cidr6(c: Option<ipnet::Ipv6Net>) -> Result<ipnet::Ipv6Net, String> {
    let c = c.unwrap_or_else(|| "fd10:0:2::/64".parse().expect("valid"));
    let a = c.network();
    if c != c.trunc() || c.prefix_len() > 126 || a.is_multicast() || dhcp::frame6::is_link_local(a)
    {
        return Err(format!(
            "cidr6 {c}: a unicast subnet of /126 or larger with its host bits clear"
        ));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_shared_check_says_what_is_wrong() {
        assert!(mtu(1500).is_ok() && mtu(68).is_ok() && mtu(65535).is_ok());
        assert_eq!(mtu(67).unwrap_err(), "mtu 67 is out of range (68..=65535)");
        assert!(lease_secs(60).is_ok());
        assert_eq!(lease_secs(59).unwrap_err(), "lease_secs 59 is below 60");
        let two = forwards(&["tcp:8080:80".into(), "udp:8080:53".into()], "host port").unwrap();
        assert_eq!((two[1].host, two[1].guest), (8080, 53));
        let twice = ["tcp:1:2".into(), "tcp:1:3".into()];
        assert_eq!(
            forwards(&twice, "host port").unwrap_err(),
            "host port tcp:1 is forwarded twice"
        );
        assert_eq!(
            forwards(&twice, "port").unwrap_err(),
            "port tcp:1 is forwarded twice"
        );
        assert!(nat_cidr("10.0.2.0/30".parse().unwrap()).is_ok());
        assert!(nat_cidr("10.0.2.0/31".parse().unwrap()).is_err());
        assert!(nat_cidr("10.0.2.1/30".parse().unwrap()).is_err());
    }
}
