//! [`Taken`]: what the attachments hold (names, MACs, addresses, each caller's share), kept
//! beside the registry as attachments come and go, so a plan asks instead of going through
//! every attachment. With thousands of guests, those scans were a growing part of each
//! attach.

use crate::ipam::Used;
use crate::state::Record;
use protocol::{IfName, MacAddr, NetworkName};
use std::cell::Cell;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::Ipv4Addr;

/// How many attached NICs hold each value (a count: masquerade guests share their address,
/// and a record may be replaced by a fuller one of the same NIC).
#[derive(Debug)]
struct Counts<K>(HashMap<K, u32>);

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Counts(HashMap::new())
    }
}

impl<K: Hash + Eq> Counts<K> {
    fn add(&mut self, k: K) {
        *self.0.entry(k).or_default() += 1;
    }

    fn remove(&mut self, k: &K) {
        if let Some(n) = self.0.get_mut(k) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(k);
            }
        }
    }

    fn contains(&self, k: &K) -> bool {
        self.0.contains_key(k)
    }

    fn shrink_to_fit(&mut self) {
        self.0.shrink_to_fit();
    }
}

/// One network's addresses in use, and the mark below which all of its subnet is (see
/// [`Used::low`]): lowered when an address below it is given back.
#[derive(Debug, Default)]
pub(crate) struct Addresses {
    held: Counts<Ipv4Addr>,
    low: Cell<Option<Ipv4Addr>>,
}

/// What one caller holds, for its quota.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holding {
    pub attachments: u32,
    pub queues: u32,
}

/// The index of everything attached (being built and being released included).
#[derive(Debug, Default)]
pub(crate) struct Taken {
    ifnames: Counts<IfName>,
    /// The MACs of every TAP's host side (the guest MAC with its first byte `fe`).
    host_sides: Counts<MacAddr>,
    macs: Counts<(NetworkName, MacAddr)>,
    addresses: HashMap<NetworkName, Addresses>,
    holdings: HashMap<u32, Holding>,
}

impl Taken {
    /// The index of `records`.
    #[cfg(test)]
    pub(crate) fn of<'a>(records: impl IntoIterator<Item = &'a Record>) -> Taken {
        let mut t = Taken::default();
        for r in records {
            t.add(r);
        }
        t
    }

    pub(crate) fn add(&mut self, r: &Record) {
        let h = self.holdings.entry(r.uid).or_default();
        h.attachments += 1;
        for i in r.interfaces() {
            h.queues += u32::from(i.queues);
            self.ifnames.add(i.ifname.clone());
            self.host_sides.add(crate::names::host_side_mac(i.mac));
            self.macs.add((i.network.clone(), i.mac));
            if let Some((a, _)) = i.address {
                self.addresses
                    .entry(i.network.clone())
                    .or_default()
                    .held
                    .add(a);
            }
        }
    }

    pub(crate) fn remove(&mut self, r: &Record) {
        if let Some(h) = self.holdings.get_mut(&r.uid) {
            h.attachments = h.attachments.saturating_sub(1);
            for i in r.interfaces() {
                h.queues = h.queues.saturating_sub(u32::from(i.queues));
            }
            if h.attachments == 0 {
                self.holdings.remove(&r.uid);
            }
        }
        for i in r.interfaces() {
            self.ifnames.remove(&i.ifname);
            self.host_sides.remove(&crate::names::host_side_mac(i.mac));
            self.macs.remove(&(i.network.clone(), i.mac));
            if let Some((a, _)) = i.address {
                if let Some(net) = self.addresses.get_mut(&i.network) {
                    net.held.remove(&a);
                    if net.low.get().is_some_and(|low| a < low) {
                        net.low.set(Some(a));
                    }
                }
            }
        }
    }

    /// Gives back the room of a peak (the registry calls it when attachments have halved).
    pub(crate) fn shrink_to_fit(&mut self) {
        self.ifnames.shrink_to_fit();
        self.host_sides.shrink_to_fit();
        self.macs.shrink_to_fit();
        self.holdings.shrink_to_fit();
        self.addresses
            .retain(|_, a| !a.held.0.is_empty() || a.low.get().is_some());
        for a in self.addresses.values_mut() {
            a.held.shrink_to_fit();
        }
        self.addresses.shrink_to_fit();
    }

    pub(crate) fn holding(&self, uid: u32) -> Holding {
        self.holdings.get(&uid).copied().unwrap_or_default()
    }

    pub(crate) fn has_ifname(&self, name: &IfName) -> bool {
        self.ifnames.contains(name)
    }

    pub(crate) fn has_host_side(&self, mac: MacAddr) -> bool {
        self.host_sides.contains(&mac)
    }

    pub(crate) fn has_mac(&self, network: &NetworkName, mac: MacAddr) -> bool {
        self.macs.contains(&(network.clone(), mac))
    }

    /// The addresses in use on `network`: the attached ones, and `planned` (this request's).
    pub(crate) fn used_on<'a>(
        &'a self,
        network: &NetworkName,
        planned: Vec<Ipv4Addr>,
    ) -> UsedOn<'a> {
        UsedOn {
            attached: self.addresses.get(network),
            planned,
        }
    }
}

/// [`Taken::used_on`].
pub(crate) struct UsedOn<'a> {
    attached: Option<&'a Addresses>,
    planned: Vec<Ipv4Addr>,
}

impl Used for UsedOn<'_> {
    fn contains(&self, a: Ipv4Addr) -> bool {
        self.attached.is_some_and(|n| n.held.contains(&a)) || self.planned.contains(&a)
    }

    fn low(&self) -> Option<Ipv4Addr> {
        self.attached.and_then(|n| n.low.get())
    }

    fn set_low(&self, a: Ipv4Addr) {
        // Only what is attached counts: this request's addresses go again if it fails.
        if self.planned.is_empty() {
            if let Some(n) = self.attached {
                n.low.set(Some(a));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{fixture, NicState};

    fn record(vm: &str, ifname: &str, ip: &str) -> Record {
        let mut nic = fixture::nic("default", ifname, NicState::Bridge);
        nic.iface.address = Some((ip.parse().unwrap(), 24));
        nic.iface.mac = MacAddr([0x02, 0, 0, 0, 0, ip.len() as u8 + ifname.len() as u8]);
        fixture::record(vm, vec![nic])
    }

    #[test]
    fn what_is_added_is_found_and_what_is_removed_is_gone() {
        let a = record("a", "tm0000000001", "10.0.0.2");
        let b = record("b", "tm0000000002", "10.0.0.3");
        let mut t = Taken::of([&a, &b]);
        let net: NetworkName = "default".parse().unwrap();
        assert!(t.has_ifname(&a.nics[0].iface.ifname));
        assert!(t.has_mac(&net, a.nics[0].iface.mac));
        assert!(t.has_host_side(crate::names::host_side_mac(a.nics[0].iface.mac)));
        assert_eq!(
            t.holding(1000),
            Holding {
                attachments: 2,
                queues: 2
            }
        );
        let used = t.used_on(&net, Vec::new());
        assert!(used.contains("10.0.0.2".parse().unwrap()));
        used.set_low("10.0.0.4".parse().unwrap());
        drop(used);
        t.remove(&a);
        assert!(!t.has_ifname(&a.nics[0].iface.ifname));
        assert!(t.has_ifname(&b.nics[0].iface.ifname));
        assert_eq!(t.holding(1000).attachments, 1);
        let used = t.used_on(&net, Vec::new());
        assert!(!used.contains("10.0.0.2".parse().unwrap()));
        // Its address was below the mark: the mark comes down to it.
        assert_eq!(used.low(), Some("10.0.0.2".parse().unwrap()));
        drop(used);
        t.remove(&b);
        assert_eq!(t.holding(1000), Holding::default());
        assert!(t.holdings.is_empty() && t.ifnames.0.is_empty() && t.macs.0.is_empty());
    }
}
