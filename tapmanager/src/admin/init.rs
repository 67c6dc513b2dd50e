//! `tapmanager init`: a config written from a few flags (as Slicer's `slicer new` does), with
//! one network of the asked kind, checked by the same parser the daemon uses.

use crate::config::Config;

/// What `init` is asked for.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// bridge | isolated | masquerade | macvtap | cni
    pub kind: String,
    pub name: String,
    pub group: String,
    /// bridge: the gateway with its prefix; isolated: the range of /30s.
    pub subnet: Option<String>,
    /// bridge: NAT out of the host and a DNS forwarder on the gateway.
    pub nat: bool,
    /// isolated, masquerade: the host interface traffic leaves by; macvtap: the lower device.
    pub uplink: Option<String>,
    /// cni: the network configuration's name.
    pub cni_network: Option<String>,
    /// DNS servers the guests are handed (bridge: the gateway when empty).
    pub dns: Vec<String>,
    /// bridge with NAT: the 40-bit global ID of a unique local IPv6 prefix (RFC 4193), random
    /// per config; the network gets `fdXX:XXXX:XXXX::/64` with NAT66.
    pub ula: Option<[u8; 5]>,
}

/// A random ULA global ID, from the kernel's random source.
pub fn random_ula() -> std::io::Result<[u8; 5]> {
    use std::io::Read as _;
    let mut id = [0u8; 5];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut id)?;
    Ok(id)
}

/// `gateway6` for a bridge whose IPv4 gateway is `gw`: the ULA /64 of `id` with the IPv4
/// gateway's host part (as the daemon requires).
fn ula_gateway(gw: &str, id: [u8; 5]) -> Option<String> {
    let net: ipnet::Ipv4Net = gw.parse().ok()?;
    let host = u32::from(net.addr()) - u32::from(net.network());
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[1..6].copy_from_slice(&id);
    a[12..].copy_from_slice(&host.to_be_bytes());
    Some(format!("{}/64", std::net::Ipv6Addr::from(a)))
}

fn need<'a>(v: &'a Option<String>, flag: &str, kind: &str) -> Result<&'a str, String> {
    v.as_deref()
        .ok_or_else(|| format!("--kind {kind} needs {flag}"))
}

/// The config text. Its syntax and values are checked (the group as a number stands in for
/// the group's name, which need not exist yet on this machine).
pub fn render(o: &InitOptions) -> Result<String, String> {
    let quote = |s: &str| format!("{s:?}");
    let list = |v: &[String]| v.iter().map(|x| quote(x)).collect::<Vec<_>>().join(", ");
    let mut net = format!("[networks.{}]\nkind = {}\n", o.name, quote(&o.kind));
    match o.kind.as_str() {
        "bridge" => {
            let gw = o.subnet.as_deref().unwrap_or("10.77.0.1/24");
            net.push_str(&format!("bridge = \"tmbr0\"\ngateway = {}\n", quote(gw)));
            if o.nat {
                net.push_str("nat = true\n");
                // The desktop default network is dual stack: a ULA prefix, NAT66 out.
                if let Some(g6) = o.ula.and_then(|id| ula_gateway(gw, id)) {
                    net.push_str(&format!("gateway6 = {}\n", quote(&g6)));
                }
                if let Some(u) = &o.uplink {
                    net.push_str(&format!("uplink = {}\n", quote(u)));
                }
            } else if o.uplink.is_some() {
                return Err("--uplink on a bridge network needs --nat".into());
            }
            if o.dns.is_empty() && o.nat {
                // The gateway answers DNS, relaying to the host's resolvers.
                net.push_str("dns_forward = true\n");
            } else {
                let dns = if o.dns.is_empty() {
                    vec![gw.split('/').next().unwrap_or(gw).to_owned()]
                } else {
                    o.dns.clone()
                };
                net.push_str(&format!("dns = [{}]\n", list(&dns)));
            }
        }
        "isolated" => {
            let range = o.subnet.as_deref().unwrap_or("169.254.100.0/22");
            net.push_str(&format!(
                "range = {}\nuplink = {}\n# drop = [\"192.168.0.0/16\"]\n",
                quote(range),
                quote(need(&o.uplink, "--uplink", "isolated")?)
            ));
            if !o.dns.is_empty() {
                net.push_str(&format!("dns = [{}]\n", list(&o.dns)));
            }
        }
        "masquerade" => {
            net.push_str(&format!(
                "uplink = {}\n# ports = [\"tcp:8080:80\"]\n",
                quote(need(&o.uplink, "--uplink", "masquerade")?)
            ));
            if !o.dns.is_empty() {
                net.push_str(&format!("dns = [{}]\n", list(&o.dns)));
            }
        }
        "macvtap" => {
            net.push_str(&format!(
                "lower = {}\n",
                quote(need(&o.uplink, "--uplink (the lower device)", "macvtap")?)
            ));
        }
        "cni" => {
            net.push_str(&format!(
                "cni_network = {}\n# cni_conf_dir = \"/etc/cni/net.d\"\n# cni_bin_dir = [\"/opt/cni/bin\", \"/usr/lib/cni\"]\n",
                quote(need(&o.cni_network, "--cni-network", "cni")?)
            ));
        }
        other => {
            return Err(format!(
                "--kind {other:?} is not one of bridge, isolated, masquerade, macvtap, cni"
            ))
        }
    }
    let head = format!(
        "# Written by `tapmanager init`; the README's configuration section has every key.\n\
         socket = \"/run/tapmanager/tapmanager.sock\"\n\
         state_dir = \"/run/tapmanager\"\n\
         group = {}\n\n",
        quote(&o.group)
    );
    let text = format!("{head}{net}");
    let checked = text.replacen(&format!("group = {}", quote(&o.group)), "group = \"0\"", 1);
    Config::parse(&checked).map_err(|e| crate::error_chain(&e))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kind: &str) -> InitOptions {
        InitOptions {
            kind: kind.into(),
            name: "default".into(),
            group: "tapmanager".into(),
            ..Default::default()
        }
    }

    #[test]
    fn every_kind_renders_a_config_the_daemon_accepts() {
        let mut o = opts("bridge");
        let t = render(&o).unwrap();
        assert!(t.contains("gateway = \"10.77.0.1/24\"") && t.contains("dns = [\"10.77.0.1\"]"));
        assert!(!t.contains("nat"));
        o.subnet = Some("10.99.0.1/24".into());
        assert!(render(&o).unwrap().contains("gateway = \"10.99.0.1/24\""));
        // The desktop default network: NAT, and DNS on the gateway unless servers are named.
        o.nat = true;
        let t = render(&o).unwrap();
        assert!(
            t.contains("nat = true\ndns_forward = true\n") && !t.contains("dns = "),
            "{t}"
        );
        assert!(!t.contains("gateway6"), "no ULA asked for: {t}");
        o.ula = Some([0x12, 0x34, 0x56, 0x78, 0x9a]);
        let t = render(&o).unwrap();
        assert!(t.contains("gateway6 = \"fd12:3456:789a::1/64\"\n"), "{t}");
        o.uplink = Some("wlan0".into());
        o.dns = vec!["192.0.2.53".into()];
        let t = render(&o).unwrap();
        assert!(
            t.contains("uplink = \"wlan0\"\ndns = [\"192.0.2.53\"]"),
            "{t}"
        );
        o.nat = false;
        assert!(render(&o).unwrap_err().contains("needs --nat"));
        for kind in ["isolated", "masquerade", "macvtap"] {
            let mut o = opts(kind);
            assert!(render(&o).unwrap_err().contains("--uplink"), "{kind}");
            o.uplink = Some("eth0".into());
            render(&o).unwrap();
        }
        let mut o = opts("cni");
        assert!(render(&o).is_err());
        o.cni_network = Some("mynet".into());
        assert!(render(&o).unwrap().contains("cni_network = \"mynet\""));
    }

    #[test]
    fn bad_values_are_refused_with_the_parsers_words() {
        let mut o = opts("bridge");
        o.subnet = Some("10.88.0.0/24".into());
        let e = render(&o).unwrap_err();
        assert!(e.contains("network default"), "{e}");
        assert!(render(&opts("vxlan")).unwrap_err().contains("not one of"));
    }
}
