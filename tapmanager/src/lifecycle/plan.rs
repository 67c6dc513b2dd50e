//! [`plan`]: an attach's names, MACs and addresses, chosen under the registry lock against
//! what is attached and what the config says. Pure: no syscall (whether a link name is taken
//! on the host is asked through [`PlanContext::link_exists`], answered from what the caller
//! asked the host about [`candidate_names`] before taking the lock), so it is tested without
//! root and runs no syscall under the lock.

use super::Taken;
use crate::config::Config;
use crate::names;
use crate::peer::Peer;
use crate::state::{Nic, Record};
use protocol::{AttachRequest, Error, ErrorCode, IfName, Interface, MacAddr};

/// What a plan is made against, besides what is attached.
pub(crate) struct PlanContext<'a> {
    pub config: &'a Config,
    /// The bridges' own MACs, which no guest may take.
    pub bridge_macs: Vec<MacAddr>,
    /// Whether a link of that name exists on the host (a name the daemon must not pick).
    pub link_exists: &'a dyn Fn(&IfName) -> bool,
}

/// How many names per NIC are asked of the host before the registry lock is taken: the
/// daemon's own names differ by a hash, so a name taken on the host by something else is rare,
/// and sixteen in a row never happen (a name past them is tried unasked: TUNSETIFF refuses one
/// that exists, and the caller is told).
pub(crate) const NAMES_ASKED: u32 = 16;

/// The names [`plan`] may pick for `req`'s NICs, first choices first: those to ask the host
/// about (one syscall each) before the registry lock, so none runs under it.
pub(crate) fn candidate_names<'a>(
    prefix: &'a str,
    uid: u32,
    req: &'a AttachRequest,
) -> impl Iterator<Item = IfName> + 'a {
    (0..req.networks.len()).flat_map(move |i| {
        (0..NAMES_ASKED).map(move |salt| names::tap_name(prefix, uid, &req.vm, i, salt))
    })
}

fn invalid(msg: String) -> Error {
    Error::new(ErrorCode::InvalidRequest, msg)
}

/// Chooses every NIC's TAP name, MAC and address. Pure bookkeeping: called under the registry
/// lock with everything already attached (`taken`, and `attached` for the kinds that look at
/// other attachments' state, collected only for them), so concurrent attaches never pick the
/// same values. `pod_netns` is the identity of the namespace a shim passed (its NICs with
/// `take_over`).
pub(crate) fn plan(
    cx: &PlanContext<'_>,
    taken: &Taken,
    attached: &crate::kinds::EachRecord<'_>,
    peer: &Peer,
    req: &AttachRequest,
    pod_netns: Option<(u64, u64)>,
) -> Result<Record, Error> {
    // The caller's quota (root is not counted): what it holds, being built or being released
    // included, plus this request.
    if !peer.is_root() {
        let q = cx.config.policy.quota_of(peer.uid, |g| peer.in_group(g));
        let held = taken.holding(peer.uid);
        let asked: u32 = req.networks.iter().map(|n| u32::from(n.queues)).sum();
        if held.attachments + 1 > q.max_attachments {
            return Err(Error::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "uid {} holds {} attachments, its limit ([policy] max_attachments)",
                    peer.uid, held.attachments
                ),
            ));
        }
        if held.queues + asked > q.max_queues {
            return Err(Error::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "uid {} holds {} queues and asks for {asked}; its limit is {} \
                     ([policy] max_queues)",
                    peer.uid, held.queues, q.max_queues
                ),
            ));
        }
    }
    let mut planned: Vec<Nic> = Vec::new();
    for (i, n) in req.networks.iter().enumerate() {
        let net = cx
            .config
            .network(&n.network)
            .expect("authorized networks exist");
        crate::kinds::admit(&net.kind, &n.network, n)?;
        if n.by_name && n.queues != 1 {
            return Err(invalid(
                "a TAP opened by name has one queue (Firecracker opens one)".to_owned(),
            ));
        }
        let mac = n
            .mac
            .unwrap_or_else(|| names::guest_mac(peer.uid, &req.vm, i))
            .validate_unicast()
            .map_err(|e| invalid(e.to_string()))?;
        // The daemon's own MACs derive from the guest's by the first byte (0xfe TAP host side,
        // 0xfa/0xf6 veth sides): a guest MAC of that shape would collide with one of them.
        if [0xfe, 0xfa, 0xf6].contains(&mac.0[0]) || cx.bridge_macs.contains(&mac) {
            return Err(invalid(format!(
                "MAC {mac} is reserved (first byte fe, fa or f6, or a bridge's own MAC)"
            )));
        }
        let planned_here = || planned.iter().map(|p| &p.iface);
        if taken.has_mac(&n.network, mac)
            || planned_here().any(|x| x.network == n.network && x.mac == mac)
        {
            return Err(invalid(format!(
                "MAC {mac} is already in use on network {}",
                n.network
            )));
        }
        // Its TAP's host side is the MAC with the first byte 0xfe, on any network: two
        // guests whose MACs differ only there would share it, and a bridge guest's puts it in
        // the guards' `tapmacs`, which no guest may send to (a routed guest sends everything
        // to its own TAP's).
        let host_side = names::host_side_mac(mac);
        if taken.has_host_side(host_side)
            || planned_here().any(|x| names::host_side_mac(x.mac) == host_side)
        {
            return Err(invalid(format!(
                "MAC {mac} differs from another guest's only in its first byte (the daemon's \
                 side of their TAPs would share {host_side}): pick another"
            )));
        }
        let ifname = (0u32..)
            .map(|salt| names::tap_name(&cx.config.interface_prefix, peer.uid, &req.vm, i, salt))
            .find(|name| {
                !taken.has_ifname(name)
                    && !planned_here().any(|x| x.ifname == *name)
                    && !(cx.link_exists)(name)
            })
            .expect("an unused name exists");
        let used = taken.used_on(
            &n.network,
            planned_here()
                .filter(|x| x.network == n.network)
                .filter_map(|x| x.address.map(|(a, _)| a))
                .collect(),
        );
        let kind = crate::kinds::plan(
            &net.kind,
            &crate::kinds::PlanNic {
                network: &n.network,
                request: n,
                derived_mac: names::guest_mac(peer.uid, &req.vm, i),
                used: &used,
                attached,
                planned: &planned,
                pod_netns,
            },
        )?;
        let iface = Interface {
            network: n.network.clone(),
            ifname,
            mac,
            address: kind.address,
            gateway: kind.gateway,
            mtu: kind.mtu,
            queues: n.queues,
            vnet_hdr: !n.by_name,
            by_name: n.by_name,
            dns: Vec::new(),
            search: Vec::new(),
            routes: Vec::new(),
            ipv6: kind.ipv6,
        };
        planned.push(Nic {
            iface,
            built: kind.built,
        });
    }
    Ok(Record {
        vm: req.vm.clone(),
        uid: peer.uid,
        pid: peer.pid,
        pid_start: peer.start_time,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        nics: planned,
        releasing: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::NicState;
    use protocol::NetworkRequest;

    const CONFIG: &str = r#"
group = "0"
[networks.lan]
kind = "bridge"
bridge = "tmbr0"
gateway = "10.88.0.1/24"

[networks.two]
kind = "bridge"
bridge = "tmbr1"
gateway = "10.89.0.1/24"
addresses = ["10.89.0.10/24"]

[networks.iso]
kind = "isolated"
range = "169.254.100.0/22"
uplink = "eth0"

[networks.nat]
kind = "masquerade"
uplink = "eth0"
ports = ["tcp:8080:80"]

[networks.mv]
kind = "macvtap"
lower = "eth0"
allowed_macs = ["52:54:00"]

[policy]
max_attachments = 2
max_queues = 3
"#;

    fn peer(uid: u32) -> Peer {
        Peer {
            uid,
            gid: uid,
            pid: 4242,
            groups: Vec::new(),
            pidfd: std::fs::File::open("/dev/null").unwrap().into(),
            start_time: 1,
        }
    }

    fn req(vm: &str, nets: &[&str]) -> AttachRequest {
        AttachRequest {
            vm: vm.parse().unwrap(),
            networks: nets
                .iter()
                .map(|n| NetworkRequest::new(n.parse().unwrap()))
                .collect(),
        }
    }

    /// Plans `r` for `uid` against `attached`, with no link on the host but `taken_names`.
    fn plan_with(
        attached: &[&Record],
        uid: u32,
        r: &AttachRequest,
        taken_names: &[IfName],
    ) -> Result<Record, Error> {
        let config = Config::parse(CONFIG).unwrap();
        let exists = |n: &IfName| taken_names.contains(n);
        let cx = PlanContext {
            config: &config,
            bridge_macs: vec![names::bridge_mac("tmbr0")],
            link_exists: &exists,
        };
        let taken = Taken::of(attached.iter().copied());
        let all = |f: &mut dyn FnMut(&Record)| attached.iter().for_each(|r| f(r));
        plan(&cx, &taken, &all, &peer(uid), r, None)
    }

    fn code(r: Result<Record, Error>) -> ErrorCode {
        r.expect_err("planned").code
    }

    #[test]
    fn bridge_guests_get_the_next_free_address_and_the_gateway() {
        let a = plan_with(&[], 1000, &req("a", &["lan"]), &[]).unwrap();
        assert_eq!(
            a.nics[0].iface.address,
            Some(("10.88.0.2".parse().unwrap(), 24))
        );
        assert_eq!(a.nics[0].iface.gateway, Some("10.88.0.1".parse().unwrap()));
        assert_eq!(a.nics[0].iface.mac, names::guest_mac(1000, &a.vm, 0));
        let b = plan_with(&[&a], 1001, &req("b", &["lan"]), &[]).unwrap();
        assert_eq!(
            b.nics[0].iface.address,
            Some(("10.88.0.3".parse().unwrap(), 24))
        );
        // A network with a one-address list is then exhausted.
        let c = plan_with(&[], 1000, &req("c", &["two"]), &[]).unwrap();
        let d = plan_with(&[&c], 1001, &req("d", &["two"]), &[]);
        assert_eq!(code(d), ErrorCode::AddressesExhausted);
    }

    #[test]
    fn a_name_taken_on_the_host_is_skipped() {
        let vm: protocol::VmId = "a".parse().unwrap();
        let first = names::tap_name("tm", 1000, &vm, 0, 0);
        let a = plan_with(&[], 1000, &req("a", &["lan"]), std::slice::from_ref(&first)).unwrap();
        assert_ne!(a.nics[0].iface.ifname, first);
        assert_eq!(
            a.nics[0].iface.ifname,
            names::tap_name("tm", 1000, &vm, 0, 1)
        );
    }

    #[test]
    fn the_names_asked_before_the_lock_are_the_ones_the_plan_picks_from() {
        let r = req("a", &["lan", "two"]);
        let asked: Vec<IfName> = candidate_names("tm", 1000, &r).collect();
        assert_eq!(asked.len(), 2 * NAMES_ASKED as usize);
        // With every first choice taken on the host, each NIC gets its second: still asked.
        let firsts: Vec<IfName> = (0..2)
            .map(|i| names::tap_name("tm", 1000, &r.vm, i, 0))
            .collect();
        let planned = plan_with(&[], 1000, &r, &firsts).unwrap();
        for nic in &planned.nics {
            assert!(
                asked.contains(&nic.iface.ifname),
                "{} was not asked",
                nic.iface.ifname
            );
            assert!(!firsts.contains(&nic.iface.ifname));
        }
    }

    #[test]
    fn quotas_count_attachments_and_queues_but_not_roots() {
        let a = plan_with(&[], 1000, &req("a", &["lan"]), &[]).unwrap();
        let b = plan_with(&[&a], 1000, &req("b", &["lan"]), &[]).unwrap();
        let third = plan_with(&[&a, &b], 1000, &req("c", &["lan"]), &[]);
        assert_eq!(code(third), ErrorCode::QuotaExceeded);
        assert!(plan_with(&[&a, &b], 0, &req("c", &["lan"]), &[]).is_ok());
        let mut wide = req("w", &["lan"]);
        wide.networks[0].queues = 3;
        assert_eq!(
            code(plan_with(&[&a], 1000, &wide, &[])),
            ErrorCode::QuotaExceeded
        );
    }

    #[test]
    fn reserved_and_duplicate_macs_are_refused() {
        for mac in [
            "fe:00:00:00:00:01",
            "fa:00:00:00:00:01",
            "f6:00:00:00:00:01",
        ] {
            let mut r = req("a", &["lan"]);
            r.networks[0].mac = Some(mac.parse().unwrap());
            assert_eq!(
                code(plan_with(&[], 1000, &r, &[])),
                ErrorCode::InvalidRequest
            );
        }
        let mut r = req("a", &["lan"]);
        r.networks[0].mac = Some(names::bridge_mac("tmbr0"));
        assert_eq!(
            code(plan_with(&[], 1000, &r, &[])),
            ErrorCode::InvalidRequest
        );
        let a = plan_with(&[], 1000, &req("a", &["lan"]), &[]).unwrap();
        let mut r = req("b", &["lan"]);
        r.networks[0].mac = Some(a.nics[0].iface.mac);
        assert_eq!(
            code(plan_with(&[&a], 1001, &r, &[])),
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn a_tap_by_name_is_for_bridge_networks_and_one_queue() {
        let mut r = req("a", &["iso"]);
        r.networks[0].by_name = true;
        assert_eq!(
            code(plan_with(&[], 1000, &r, &[])),
            ErrorCode::InvalidRequest
        );
        let mut r = req("a", &["lan"]);
        r.networks[0].by_name = true;
        r.networks[0].queues = 2;
        assert_eq!(
            code(plan_with(&[], 1000, &r, &[])),
            ErrorCode::InvalidRequest
        );
        r.networks[0].queues = 1;
        let a = plan_with(&[], 1000, &r, &[]).unwrap();
        assert!(a.nics[0].iface.by_name && !a.nics[0].iface.vnet_hdr);
    }

    #[test]
    fn isolated_guests_get_slash30s_and_masquerade_guests_one_address_and_their_own_transit() {
        let a = plan_with(&[], 1000, &req("a", &["iso"]), &[]).unwrap();
        assert_eq!(
            a.nics[0].iface.address,
            Some(("169.254.100.2".parse().unwrap(), 30))
        );
        assert_eq!(a.nics[0].built, NicState::Isolated { binding: None });
        let b = plan_with(&[&a], 1000, &req("b", &["iso"]), &[]).unwrap();
        assert_eq!(
            b.nics[0].iface.address,
            Some(("169.254.100.6".parse().unwrap(), 30))
        );
        let m = plan_with(&[], 1000, &req("m", &["nat"]), &[]).unwrap();
        // The guest's address is the fixed one; its transit /30 is its own.
        assert_eq!(
            m.nics[0].built,
            NicState::Masquerade {
                binding: None,
                transit: "169.254.128.2".parse().unwrap()
            }
        );
        // Its host ports belong to one guest at a time.
        let n = plan_with(&[&m], 1001, &req("n", &["nat"]), &[]);
        assert_eq!(code(n), ErrorCode::QuotaExceeded);
    }

    #[test]
    fn a_macvtap_guest_keeps_its_derived_mac_unless_the_config_allows_another() {
        let mut r = req("a", &["mv"]);
        r.networks[0].mac = Some("02:11:22:33:44:55".parse().unwrap());
        assert_eq!(
            code(plan_with(&[], 1000, &r, &[])),
            ErrorCode::PermissionDenied
        );
        r.networks[0].mac = Some("52:54:00:12:34:56".parse().unwrap());
        let a = plan_with(&[], 1000, &r, &[]).unwrap();
        assert_eq!(a.nics[0].iface.address, None, "the LAN addresses it");
    }

    #[test]
    fn take_over_only_on_pod_networks() {
        let mut r = req("a", &["lan"]);
        r.networks[0].take_over = Some("eth0".parse().unwrap());
        assert_eq!(
            code(plan_with(&[], 1000, &r, &[])),
            ErrorCode::InvalidRequest
        );
    }
}
