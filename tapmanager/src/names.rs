//! Names and addresses derived from ids: TAP names and guest MACs.
//!
//! Interface names are generated, never taken from user strings, so IFNAMSIZ never bites and
//! nothing a caller sends reaches a link name. A generated name is the configured prefix plus
//! ten hex digits; reconcile treats every link of exactly that shape as the daemon's own.

use protocol::{IfName, MacAddr, VmId};

/// FNV-1a, 64 bit: stable across runs and versions (unlike `DefaultHasher`).
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The TAP name for NIC `index` of `vm` owned by `uid`; `salt` > 0 picks another on collision.
pub fn tap_name(prefix: &str, uid: u32, vm: &VmId, index: usize, salt: u32) -> IfName {
    let h = fnv1a(&[
        b"tap",
        &uid.to_le_bytes(),
        vm.as_str().as_bytes(),
        &(index as u64).to_le_bytes(),
        &salt.to_le_bytes(),
    ]);
    IfName::try_from(format!("{prefix}{:010x}", h >> 24)).expect("prefix is 1 to 4 letters")
}

/// Whether `name` has the shape of a name [`tap_name`] makes.
pub fn is_generated(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|rest| {
        rest.len() == 10
            && rest
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The guest MAC for NIC `index` of `vm` owned by `uid`: locally administered unicast, the same
/// every time for the same uid, id and position.
pub fn guest_mac(uid: u32, vm: &VmId, index: usize) -> MacAddr {
    let h = fnv1a(&[
        b"mac",
        &uid.to_le_bytes(),
        vm.as_str().as_bytes(),
        &(index as u64).to_le_bytes(),
    ])
    .to_be_bytes();
    // First byte 0x02: locally administered unicast, and never one of the first bytes the
    // daemon reserves for its own side of a link (0xfe, 0xfa, 0xf6).
    MacAddr([0x02, h[0], h[1], h[2], h[3], h[4]])
}

/// The host side of a TAP carries the guest's MAC with the first byte 0xfe (as libvirt does):
/// unicast, locally administered, never equal to the guest's, and high enough that it never
/// becomes the bridge's address.
pub fn host_side_mac(guest: MacAddr) -> MacAddr {
    let mut b = guest.0;
    b[0] = 0xfe;
    MacAddr(b)
}

/// The links that carry bridge `bridge` past one bridge's port limit, for its shard `k` (1 and
/// up): the shard's own bridge, the veth end on `bridge` and the veth end on the shard. Each is
/// the prefix, six hex digits of the bridge's name, a letter past `f` (`s`, `p`, `q`) and `k`
/// in hex, so never of [`tap_name`]'s shape: reconcile never takes one for a guest's link.
pub fn shard_links(prefix: &str, bridge: &str, k: u32) -> [IfName; 3] {
    let stem = shard_stem(prefix, bridge);
    ["s", "p", "q"].map(|letter| {
        IfName::try_from(format!("{stem}{letter}{k:x}"))
            .expect("a 1-4 letter prefix, 6 digits, a letter and at most 3 digits fit 15 bytes")
    })
}

/// What every shard link of `bridge` starts with ([`shard_links`]).
pub fn shard_stem(prefix: &str, bridge: &str) -> String {
    let h = fnv1a(&[b"shard", bridge.as_bytes()]);
    format!("{prefix}{:06x}", h >> 40)
}

/// Whether `name` is one of `bridge`'s shard bridges or the veth end on `bridge` (deleting
/// those two removes every shard link: a veth goes with either end).
pub fn is_shard_link(name: &str, prefix: &str, bridge: &str) -> bool {
    name.strip_prefix(&shard_stem(prefix, bridge))
        .and_then(|rest| rest.strip_prefix('s').or_else(|| rest.strip_prefix('p')))
        .is_some_and(|k| !k.is_empty() && k.len() <= 3 && k.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The bridge's own MAC, fixed so it does not change as ports come and go.
pub fn bridge_mac(bridge: &str) -> MacAddr {
    let h = fnv1a(&[b"bridge", bridge.as_bytes()]).to_be_bytes();
    MacAddr::local_unicast([h[0], h[1], h[2], h[3], h[4], h[5]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_links_fit_never_look_like_a_guests_and_are_recognised() {
        let [s, p, q] = shard_links("tmxx", "tmbr0", 0x37f);
        assert!(
            s.as_str().len() <= 15 && s.as_str().ends_with("s37f"),
            "{s}"
        );
        for l in [&s, &p, &q] {
            assert!(!is_generated(l.as_str(), "tmxx"), "{l}");
        }
        assert!(is_shard_link(s.as_str(), "tmxx", "tmbr0"));
        assert!(is_shard_link(p.as_str(), "tmxx", "tmbr0"));
        assert!(!is_shard_link(q.as_str(), "tmxx", "tmbr0"));
        assert!(!is_shard_link(s.as_str(), "tmxx", "tmbr1"));
        let tap = tap_name("tmxx", 1000, &"vm".parse().unwrap(), 0, 0);
        assert!(!is_shard_link(tap.as_str(), "tmxx", "tmbr0"));
    }

    fn vm(s: &str) -> VmId {
        s.parse().unwrap()
    }

    #[test]
    fn tap_names_are_short_stable_and_recognised() {
        let a = tap_name("tm", 1000, &vm("web-1"), 0, 0);
        assert_eq!(a.as_str().len(), 12);
        assert_eq!(a, tap_name("tm", 1000, &vm("web-1"), 0, 0));
        assert_ne!(a, tap_name("tm", 1000, &vm("web-1"), 1, 0));
        assert_ne!(a, tap_name("tm", 1001, &vm("web-1"), 0, 0));
        assert_ne!(a, tap_name("tm", 1000, &vm("web-1"), 0, 1));
        assert!(is_generated(a.as_str(), "tm"));
        assert!(!is_generated("tmbr0", "tm"));
        assert!(!is_generated("eth0", "tm"));
        assert!(!is_generated("tm0123456789A", "tm"));
    }

    #[test]
    fn guest_macs_are_stable_local_unicast() {
        let m = guest_mac(1000, &vm("web-1"), 0);
        assert_eq!(m, guest_mac(1000, &vm("web-1"), 0));
        assert_ne!(m, guest_mac(1000, &vm("web-2"), 0));
        assert_ne!(m, guest_mac(1000, &vm("web-1"), 1));
        assert!(!m.is_multicast());
        assert_eq!(m.0[0] & 2, 2);
        let host = host_side_mac(m);
        assert_eq!(host.0[0], 0xfe);
        assert_eq!(host.0[1..], m.0[1..]);
    }
}
