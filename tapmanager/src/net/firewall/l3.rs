//! The host's rules for routed networks (the routed kind: `kinds/routed.rs`), table
//! `inet tapmanager_l3` and its NAT `ip tapmanager_l3_nat`: per network a set of its guests'
//! TAPs, its drop/allow lists, and where its guests' packets may go. A guest's own source
//! MAC and address are its TAP's guards' (guards.rs), on the TAP's ingress hook, as on a
//! bridge network.
//!
//! From a guest: the network's drop list, then its allow list (guest to guest included),
//! then to another guest of the network: accepted; out of the network only with NAT (and by
//! its uplink when it names one). To a guest from outside its network: only answers. To the
//! host itself: only its gateway address (DHCP renewals, ping, the services an admin runs
//! there), not the host's other addresses.

use super::*;

const L3: &str = "inet tapmanager_l3";
const L3_NAT: &str = "ip tapmanager_l3_nat";

/// A routed network, by position among them (names its sets: `ports_N`, `drop_N`, `allow_N`).
/// Positions change when the config does; the tables are only ever rebuilt whole, with their
/// ports, in one transaction ([`l3_base_script`] and the ports' elements at start-up), so a
/// set never holds another network's ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L3Net {
    pub index: usize,
    pub subnet: Ipv4Net,
    /// The gateway: the one host address its guests may reach.
    pub gateway: Ipv4Addr,
    /// `Some(None)`: NAT out of any link but the network's; `Some(Some(u))`: out of `u` only.
    pub nat: Option<Option<IfName>>,
    pub drop: Vec<Ipv4Net>,
    pub allow: Option<Vec<Ipv4Net>>,
}

/// One guest's TAP on routed network `net`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L3Port {
    pub ifname: IfName,
    pub net: usize,
}

/// Both tables with `nets`' sets, lists and rules and no port: made if missing, else every
/// rule and element flushed first (flushed, not deleted: a table that stays keeps its place in
/// the ruleset's listing). Only ever run inside the start-up rebuild, whose same transaction
/// puts the adopted ports back: a routed guest is never without its rules (the tables of the
/// previous run hold until then). With no routed network, both tables go.
pub(super) fn l3_base_script(nets: &[L3Net]) -> String {
    if nets.is_empty() {
        return format!(
            "add table {L3}; delete table {L3}; add table {L3_NAT}; delete table {L3_NAT}"
        );
    }
    let mut s = format!(
        "add table {L3}; flush table {L3}; add table {L3_NAT}; flush table {L3_NAT}; \
         add chain {L3} forward {{ type filter hook forward priority 0; policy accept; }}; \
         add chain {L3} input {{ type filter hook input priority 0; policy accept; }}; \
         add chain {L3_NAT} postrouting {{ type nat hook postrouting priority 100; policy accept; }}"
    );
    for n in nets {
        let i = n.index;
        write!(
            s,
            "; add set {L3} ports_{i} {{ type ifname; }}; flush set {L3} ports_{i}"
        )
        .unwrap();
        let mut list = |name: &str, cidrs_of: &[Ipv4Net], op: &str| {
            write!(
                s,
                "; add set {L3} {name}_{i} {{ type ipv4_addr; flags interval; auto-merge; }}; \
                 flush set {L3} {name}_{i}"
            )
            .unwrap();
            if !cidrs_of.is_empty() {
                write!(s, "; add element {L3} {name}_{i} {{ {} }}", cidrs(cidrs_of)).unwrap();
            }
            write!(
                s,
                "; add rule {L3} forward iifname @ports_{i} ip daddr {op} @{name}_{i} counter drop"
            )
            .unwrap();
        };
        list("drop", &n.drop, "");
        if let Some(allow) = &n.allow {
            list("allow", allow, "!=");
        }
        write!(
            s,
            "; add rule {L3} forward iifname @ports_{i} oifname @ports_{i} counter accept"
        )
        .unwrap();
        match &n.nat {
            None => write!(s, "; add rule {L3} forward iifname @ports_{i} counter drop").unwrap(),
            Some(Some(uplink)) => {
                write!(
                    s,
                    "; add rule {L3} forward iifname @ports_{i} oifname != \"{uplink}\" counter drop"
                )
                .unwrap();
                write!(
                    s,
                    "; add rule {L3_NAT} postrouting ip saddr {0} ip daddr != {0} oifname \"{uplink}\" counter masquerade",
                    n.subnet
                )
                .unwrap();
            }
            Some(None) => write!(
                s,
                "; add rule {L3_NAT} postrouting ip saddr {0} ip daddr != {0} counter masquerade",
                n.subnet
            )
            .unwrap(),
        }
        write!(
            s,
            "; add rule {L3} forward oifname @ports_{i} ct state {{ established, related }} counter accept\
             ; add rule {L3} forward oifname @ports_{i} counter drop\
             ; add rule {L3} input iifname @ports_{i} ip daddr != {} counter drop",
            n.gateway
        )
        .unwrap();
    }
    s
}

/// One guest's TAP into its network's rules, as text (start-up's rebuild; at attach and
/// teardown the same element goes over netlink, nfnetlink.rs).
pub(super) fn l3_port_script(p: &L3Port) -> String {
    format!("add element {L3} ports_{} {{ \"{}\" }}", p.net, p.ifname)
}

/// The names `tapmanager down` removes.
pub(super) const L3_TABLES: [&str; 2] = [L3, L3_NAT];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_routed_network_without_nat_keeps_its_guests_in_and_lists_apply_between_them() {
        let s = l3_base_script(&[L3Net {
            index: 0,
            subnet: "10.90.0.0/16".parse().unwrap(),
            gateway: "10.90.0.1".parse().unwrap(),
            nat: None,
            drop: vec!["10.90.9.0/24".parse().unwrap()],
            allow: None,
        }]);
        let drop = s
            .find("iifname @ports_0 ip daddr  @drop_0 counter drop")
            .unwrap();
        let peers = s
            .find("iifname @ports_0 oifname @ports_0 counter accept")
            .unwrap();
        let out = s.find("forward iifname @ports_0 counter drop").unwrap();
        assert!(drop < peers && peers < out, "{s}");
        assert!(!s.contains("masquerade"), "{s}");
        assert!(s.contains("oifname @ports_0 ct state { established, related } counter accept"));
        assert!(
            s.contains("input iifname @ports_0 ip daddr != 10.90.0.1 counter drop"),
            "{s}"
        );
    }

    #[test]
    fn without_routed_networks_the_tables_go() {
        let s = l3_base_script(&[]);
        assert_eq!(
            s,
            "add table inet tapmanager_l3; delete table inet tapmanager_l3; \
             add table ip tapmanager_l3_nat; delete table ip tapmanager_l3_nat"
        );
    }

    #[test]
    fn nat_by_an_uplink_masquerades_there_only() {
        let s = l3_base_script(&[L3Net {
            index: 1,
            subnet: "10.91.0.0/24".parse().unwrap(),
            gateway: "10.91.0.1".parse().unwrap(),
            nat: Some(Some("eth0".parse().unwrap())),
            drop: vec![],
            allow: Some(vec![]),
        }]);
        assert!(
            s.contains("iifname @ports_1 ip daddr != @allow_1 counter drop"),
            "{s}"
        );
        assert!(
            s.contains("iifname @ports_1 oifname != \"eth0\" counter drop"),
            "{s}"
        );
        assert!(
            s.contains("ip saddr 10.91.0.0/24 ip daddr != 10.91.0.0/24 oifname \"eth0\" counter masquerade"),
            "{s}"
        );
    }
}
