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
