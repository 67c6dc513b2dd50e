//! Address management for a network: which guest address to hand out next.
//!
//! Pure: the pool comes from the config, the addresses in use from the journal (the journal is
//! the persisted state, so IPAM has no file of its own and cannot disagree with it).

use ipnet::Ipv4Net;
use std::collections::HashSet;
use std::net::Ipv4Addr;

/// The addresses a network may hand out.
#[derive(Debug, Clone)]
pub enum Pool {
    /// Every host address of the gateway's subnet except the gateway itself.
    Subnet(Ipv4Net),
    /// Exactly these.
    List(Vec<Ipv4Addr>),
}

impl Pool {
    /// The lowest free address, or `None` when the pool is exhausted.
    pub fn allocate(&self, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
        match self {
            Pool::Subnet(gw) => gw
                .hosts()
                .filter(|a| *a != gw.addr() && *a != gw.network() && *a != gw.broadcast())
                .find(|a| !used.contains(a)),
            Pool::List(list) => list.iter().copied().find(|a| !used.contains(a)),
        }
    }
}

/// The lowest /30 of `range` none of whose addresses is in `used` (the isolated kind: one /30
/// per guest, so guests never share a subnet).
pub fn free_slash30(range: Ipv4Net, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Net> {
    range
        .subnets(30)
        .ok()?
        .find(|block| slash30_parts(*block).iter().all(|a| !used.contains(a)))
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
        let pool = Pool::List(vec![
            Ipv4Addr::new(10, 0, 0, 10),
            Ipv4Addr::new(10, 0, 0, 11),
        ]);
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
}
