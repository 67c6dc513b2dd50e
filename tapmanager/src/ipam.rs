//! Address management for a network: which guest address to hand out next.
//!
//! Pure: the pool comes from the config, the addresses in use from the journal (the journal is
//! the persisted state, so IPAM has no file of its own and cannot disagree with it).

use ipnet::Ipv4Net;
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// The addresses a network may hand out.
#[derive(Debug, Clone)]
pub enum Pool<'a> {
    /// Every host address of the gateway's subnet except the gateway itself.
    Subnet(Ipv4Net),
    /// Exactly these.
    List(&'a [Ipv4Addr]),
}

/// The addresses in use on one network, as a plan sees them.
pub trait Used {
    fn contains(&self, a: Ipv4Addr) -> bool;
    /// An address below which every one of a subnet pool is known to be in use (`None`: no
    /// such knowledge), so a search for the lowest free one need not go through them again.
    fn low(&self) -> Option<Ipv4Addr> {
        None
    }
    /// Learns that every address of a subnet pool below `a` is in use.
    fn set_low(&self, _a: Ipv4Addr) {}
}

impl Used for HashSet<Ipv4Addr> {
    fn contains(&self, a: Ipv4Addr) -> bool {
        HashSet::contains(self, &a)
    }
}

impl Pool<'_> {
    /// The lowest free address, or `None` when the pool is exhausted. A subnet is searched
    /// from `used.low()` on (and from its start, should nothing be free above it), and
    /// `used` is told where the search ended: filling a network is not a scan of every
    /// address already given.
    pub fn allocate(&self, used: &dyn Used) -> Option<Ipv4Addr> {
        match self {
            Pool::Subnet(gw) => {
                let first = u32::from(gw.network()).saturating_add(1);
                let last = u32::from(gw.broadcast()).saturating_sub(1);
                let free = |a: &u32| {
                    let ip = Ipv4Addr::from(*a);
                    ip != gw.addr() && !used.contains(ip)
                };
                let from = used
                    .low()
                    .map_or(first, |l| u32::from(l).clamp(first, last));
                let found = (from..=last)
                    .find(free)
                    .or_else(|| (first..from).find(free))
                    .map(Ipv4Addr::from);
                if let Some(a) = found {
                    used.set_low(a);
                }
                found
            }
            Pool::List(list) => list.iter().copied().find(|a| !used.contains(*a)),
        }
    }
}

/// The lowest /30 of `range` none of whose addresses is in `used` (the isolated kind: one /30
/// per guest, so guests never share a subnet).
pub fn free_slash30(range: Ipv4Net, used: &dyn Used) -> Option<Ipv4Net> {
    range
        .subnets(30)
        .ok()?
        .find(|block| slash30_parts(*block).iter().all(|a| !used.contains(*a)))
}

/// A /30's network, gateway, guest and broadcast addresses.
pub fn slash30_parts(block: Ipv4Net) -> [Ipv4Addr; 4] {
    let n = u32::from(block.network());
    [n, n + 1, n + 2, n + 3].map(Ipv4Addr::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_never_gives_network_gateway_or_broadcast() {
        let pool = Pool::Subnet("10.0.0.1/30".parse().unwrap());
        let mut used = HashSet::new();
        let a = pool.allocate(&used).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 0, 0, 2));
        used.insert(a);
        assert_eq!(pool.allocate(&used), None);
    }

    #[test]
    fn gateway_in_the_middle_is_skipped() {
        let pool = Pool::Subnet("10.0.0.2/29".parse().unwrap());
        let used: HashSet<_> = [Ipv4Addr::new(10, 0, 0, 1)].into();
        assert_eq!(pool.allocate(&used), Some(Ipv4Addr::new(10, 0, 0, 3)));
    }

    #[test]
    fn slash30s_never_collide_and_exhaust() {
        let range: Ipv4Net = "169.254.100.0/29".parse().unwrap();
        let mut used = HashSet::new();
        let a = free_slash30(range, &used).unwrap();
        assert_eq!(slash30_parts(a)[2], Ipv4Addr::new(169, 254, 100, 2));
        used.insert(slash30_parts(a)[2]);
        let b = free_slash30(range, &used).unwrap();
        assert_eq!(
            slash30_parts(b),
            [4, 5, 6, 7].map(|x| Ipv4Addr::new(169, 254, 100, x))
        );
        used.insert(slash30_parts(b)[2]);
        assert_eq!(free_slash30(range, &used), None);
    }

    #[test]
    fn list_is_used_in_order_and_exhausts() {
        let list = [Ipv4Addr::new(10, 0, 0, 10), Ipv4Addr::new(10, 0, 0, 11)];
        let pool = Pool::List(&list);
        let mut used = HashSet::new();
        for want in [10, 11] {
            let a = pool.allocate(&used).unwrap();
            assert_eq!(a, Ipv4Addr::new(10, 0, 0, want));
            used.insert(a);
        }
        assert_eq!(pool.allocate(&used), None);
        used.remove(&Ipv4Addr::new(10, 0, 0, 10));
        assert_eq!(pool.allocate(&used), Some(Ipv4Addr::new(10, 0, 0, 10)));
    }

    /// A [`Used`] that remembers its low mark, as the registry's index does.
    struct Marked(HashSet<Ipv4Addr>, std::cell::Cell<Option<Ipv4Addr>>);

    impl Used for Marked {
        fn contains(&self, a: Ipv4Addr) -> bool {
            self.0.contains(&a)
        }
        fn low(&self) -> Option<Ipv4Addr> {
            self.1.get()
        }
        fn set_low(&self, a: Ipv4Addr) {
            self.1.set(Some(a));
        }
    }

    #[test]
    fn the_low_mark_skips_the_taken_prefix_and_never_hides_a_free_address() {
        let pool = Pool::Subnet("10.0.0.1/24".parse().unwrap());
        let mut m = Marked(HashSet::new(), Default::default());
        for want in 2..=254 {
            let a = pool.allocate(&m).unwrap();
            assert_eq!(a, Ipv4Addr::new(10, 0, 0, want));
            assert_eq!(m.low(), Some(a));
            m.0.insert(a);
        }
        assert_eq!(pool.allocate(&m), None);
        // A mark above a free address (the index lowers it when an address below it is
        // given back; should it ever not): the search comes round from the start.
        m.0.remove(&Ipv4Addr::new(10, 0, 0, 7));
        assert_eq!(pool.allocate(&m), Some(Ipv4Addr::new(10, 0, 0, 7)));
    }
}
