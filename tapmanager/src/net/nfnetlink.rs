//! One port's guards, added and removed by talking to nf_tables over netlink directly.
//!
//! Why not through the `nft -i` session like everything else in firewall.rs: a port's guards
//! are a base chain of its own (on its TAP's ingress hook, the one place no frame can pass
//! around), and `nft` 1.0.6 re-reads every chain of the table before each command, so one
//! port's line cost 0.44 ms with no other port and 1.4 ms with 300 (measured here). Three
//! netlink messages in one batch cost the same with any number of ports, and no process.
//!
//! What is sent is what `nft` would send for (firewall.rs has the text form, used at start-up):
//!
//! ```text
//! add element netdev tapmanager macs { "PORT" . MAC }
//! add element netdev tapmanager ips { "PORT" . IPV4 }
//! add chain netdev tapmanager in_PORT { type filter hook ingress device "PORT" priority -500; policy accept; }
//! add rule netdev tapmanager in_PORT jump guard
//! ```
//!
//! in one batch (one transaction: all or nothing), and for removal the chain first, then the
//! elements. The message layouts are the kernel's `include/uapi/linux/netfilter/nf_tables.h`;
//! numbers are big-endian as nf_tables wants. A set key of a concatenation is its fields each
//! padded to 4 bytes: `ifname . ether_addr` is 16 + 8 bytes, `ifname . ipv4_addr` 16 + 4.
//!
//! Needs CAP_NET_ADMIN in the namespace the socket was opened in.

use crate::net::firewall::PortGuard;
use std::io;
use std::sync::Mutex;
use std::time::Duration;

const NETLINK_NETFILTER: isize = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFPROTO_NETDEV: u8 = 5;
const NFPROTO_INET: u8 = 1;

const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;

const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_APPEND: u16 = 0x800;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;

const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_HOOK_DEV: u16 = 3;
const NF_NETDEV_INGRESS: u32 = 0;
const NF_ACCEPT: u32 = 1;

const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFT_REG_VERDICT: u32 = 0;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NFT_JUMP: i32 = -3;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;

/// The guard table's name (family netdev), its sets and its shared chain (firewall.rs).
const TABLE: &str = "tapmanager";
/// Where a port's hook sits: before any other nftables ingress chain (tc's ingress filters,
/// the tc-redirect binding's, run before every netfilter ingress hook).
const PRIORITY: i32 = -500;
/// How long to wait for the kernel's answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A netlink attribute writer: type-length-value, each padded to 4 bytes.
#[derive(Debug, Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn put(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = 4 + value.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
        self
    }

    fn str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.put(kind, &v)
    }

    fn be32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.put(kind, &v.to_be_bytes())
    }

    fn nest(&mut self, kind: u16, inner: impl FnOnce(&mut Attrs)) -> &mut Self {
        let mut a = Attrs::default();
        inner(&mut a);
        self.put(kind | NLA_F_NESTED, &a.0)
    }
}

/// The 16-byte `ifname` datatype: the name, zero-padded.
fn ifname_key(name: &str) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..name.len()].copy_from_slice(name.as_bytes());
    k
}

/// The set keys of one port: (`macs`, its `ifname . ether_addr`), (`ips`, `ifname . ipv4_addr`),
/// and per IPv6 address (`ip6s`, `ifname . ipv6_addr`) and (`nd6s`, the same bytes: that
/// set's key is `iifname . @th,64,128`, the ND target as a 128-bit big-endian integer), its
/// global addresses in `peers6` and the port in `v6ports` (guards.rs says why).
fn keys(p: &PortGuard) -> Vec<(&'static str, Vec<u8>)> {
    let name = ifname_key(p.ifname.as_str());
    let with = |tail: &[u8]| {
        let mut k = name.to_vec();
        k.extend_from_slice(tail);
        k
    };
    let mut v = vec![
        ("macs", with(&[&p.mac.0[..], &[0, 0]].concat())),
        ("ips", with(&p.ip.octets())),
    ];
    if p.bridged {
        // `tapmacs` (type ether_addr, 6 bytes): the port's TAP's host side.
        v.push(("tapmacs", crate::names::host_side_mac(p.mac).0.to_vec()));
    }
    for a in &p.ip6 {
        v.push(("ip6s", with(&a.octets())));
        v.push(("nd6s", with(&a.octets())));
    }
    // `peers6` (type ipv6_addr): the port's global addresses; `v6ports` (type ifname).
    for a in p.ip6.iter().filter(|a| !dhcp::frame6::is_link_local(**a)) {
        v.push(("peers6", a.octets().to_vec()));
    }
    if !p.ip6.is_empty() {
        v.push(("v6ports", name.to_vec()));
        // `lla6` (typeof iifname . @th,208,48): the 48-bit MAC padded to 8 bytes, as `macs`.
        v.push(("lla6", with(&[&p.mac.0[..], &[0, 0]].concat())));
    }
    v
}

fn elements(set: &str, key: &[u8]) -> Attrs {
    elements_in(TABLE, set, key)
}

fn elements_in(table: &str, set: &str, key: &[u8]) -> Attrs {
    let mut a = Attrs::default();
    a.str(NFTA_SET_ELEM_LIST_TABLE, table)
        .str(NFTA_SET_ELEM_LIST_SET, set)
        .nest(NFTA_SET_ELEM_LIST_ELEMENTS, |l| {
            l.nest(NFTA_LIST_ELEM, |e| {
                e.nest(NFTA_SET_ELEM_KEY, |k| {
                    k.put(NFTA_DATA_VALUE, key);
                });
            });
        });
    a
}

fn chain_name(p: &PortGuard) -> String {
    format!("in_{}", p.ifname)
}

/// The messages that guard one port: (type, flags, attributes).
fn add_messages(p: &PortGuard) -> Vec<(u16, u16, Attrs)> {
    let mut v: Vec<(u16, u16, Attrs)> = keys(p)
        .iter()
        .map(|(set, key)| (NFT_MSG_NEWSETELEM, NLM_F_CREATE, elements(set, key)))
        .collect();
    let chain = chain_name(p);
    let mut c = Attrs::default();
    c.str(NFTA_CHAIN_TABLE, TABLE)
        .str(NFTA_CHAIN_NAME, &chain)
        .nest(NFTA_CHAIN_HOOK, |h| {
            h.be32(NFTA_HOOK_HOOKNUM, NF_NETDEV_INGRESS)
                .be32(NFTA_HOOK_PRIORITY, PRIORITY as u32)
                .str(NFTA_HOOK_DEV, p.ifname.as_str());
        })
        .be32(NFTA_CHAIN_POLICY, NF_ACCEPT)
        .str(NFTA_CHAIN_TYPE, "filter");
    v.push((NFT_MSG_NEWCHAIN, NLM_F_CREATE, c));
    let mut r = Attrs::default();
    r.str(NFTA_RULE_TABLE, TABLE)
        .str(NFTA_RULE_CHAIN, &chain)
        .nest(NFTA_RULE_EXPRESSIONS, |l| {
            l.nest(NFTA_LIST_ELEM, |e| {
                e.str(NFTA_EXPR_NAME, "immediate")
                    .nest(NFTA_EXPR_DATA, |d| {
                        d.be32(NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT).nest(
                            NFTA_IMMEDIATE_DATA,
                            |x| {
                                x.nest(NFTA_DATA_VERDICT, |v| {
                                    v.be32(NFTA_VERDICT_CODE, NFT_JUMP as u32)
                                        .str(NFTA_VERDICT_CHAIN, "guard");
                                });
                            },
                        );
                    });
            });
        });
    v.push((NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, r));
    v
}

/// The messages that remove one port's guards: its hook first, so it is never half-guarded.
fn remove_messages(p: &PortGuard) -> Vec<(u16, u16, Attrs)> {
    let mut c = Attrs::default();
    c.str(NFTA_CHAIN_TABLE, TABLE)
        .str(NFTA_CHAIN_NAME, &chain_name(p));
    let mut v = vec![(NFT_MSG_DELCHAIN, 0, c)];
    v.extend(
        keys(p)
            .iter()
            .map(|(set, key)| (NFT_MSG_DELSETELEM, 0, elements(set, key))),
    );
    v
}

/// A netlink socket to nf_tables in the namespace it was opened in.
#[derive(Debug)]
pub struct GuardPorts {
    sock: Mutex<(netlink_sys::Socket, u32)>,
}

impl GuardPorts {
    /// Opens the socket in the calling thread's network namespace.
    pub fn open() -> io::Result<GuardPorts> {
        let mut s = netlink_sys::Socket::new(NETLINK_NETFILTER)?;
        s.bind_auto()?;
        s.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        // SAFETY: SO_RCVTIMEO reads one `struct timeval`, which `tv` is and outlives the call.
        let tv = libc::timeval {
            tv_sec: TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: as above; the fd is the socket's own.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                std::ptr::from_ref(&tv).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(GuardPorts {
            sock: Mutex::new((s, 1)),
        })
    }

    /// Guards one port, atomically.
    pub fn add(&self, p: &PortGuard) -> io::Result<()> {
        self.batch(add_messages(p), NFPROTO_NETDEV)
    }

    /// A routed network's TAP into its set (`inet tapmanager_l3`, set `set`): the same as
    /// `add element inet tapmanager_l3 SET { "PORT" }`, without an `nft` that re-reads every
    /// chain of the ruleset first (firewall/l3.rs).
    pub fn add_l3(&self, set: &str, ifname: &str) -> io::Result<()> {
        let e = elements_in("tapmanager_l3", set, &ifname_key(ifname));
        self.batch(vec![(NFT_MSG_NEWSETELEM, NLM_F_CREATE, e)], NFPROTO_INET)
    }

    /// The TAP out of its set; already gone is done.
    pub fn remove_l3(&self, set: &str, ifname: &str) -> io::Result<()> {
        let e = elements_in("tapmanager_l3", set, &ifname_key(ifname));
        match self.batch(vec![(NFT_MSG_DELSETELEM, 0, e)], NFPROTO_INET) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            r => r,
        }
    }

    /// Removes one port's guards; what is already gone is done (then one message at a time).
    pub fn remove(&self, p: &PortGuard) -> io::Result<()> {
        match self.batch(remove_messages(p), NFPROTO_NETDEV) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                for m in remove_messages(p) {
                    match self.batch(vec![m], NFPROTO_NETDEV) {
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                        r => r?,
                    }
                }
                Ok(())
            }
            r => r,
        }
    }

    /// Sends `msgs` as one nf_tables transaction and waits for every answer.
    fn batch(&self, msgs: Vec<(u16, u16, Attrs)>, family: u8) -> io::Result<()> {
        let mut guard = self.sock.lock().unwrap_or_else(|e| e.into_inner());
        let (sock, next) = &mut *guard;
        let first = *next;
        let mut buf = Vec::new();
        let mut push =
            |buf: &mut Vec<u8>, kind: u16, flags: u16, family: u8, res_id: u16, a: &[u8]| {
                let seq = *next;
                *next = next.wrapping_add(1);
                let len = 16 + 4 + a.len();
                buf.extend_from_slice(&(len as u32).to_ne_bytes());
                buf.extend_from_slice(&kind.to_ne_bytes());
                buf.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
                buf.extend_from_slice(&seq.to_ne_bytes());
                buf.extend_from_slice(&0u32.to_ne_bytes());
                buf.extend_from_slice(&[family, 0]);
                buf.extend_from_slice(&res_id.to_be_bytes());
                buf.extend_from_slice(a);
            };
        push(
            &mut buf,
            NFNL_MSG_BATCH_BEGIN,
            0,
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        let count = msgs.len() as u32;
        for (kind, flags, a) in &msgs {
            push(
                &mut buf,
                (NFNL_SUBSYS_NFTABLES << 8) | kind,
                flags | NLM_F_ACK,
                family,
                0,
                &a.0,
            );
        }
        push(
            &mut buf,
            NFNL_MSG_BATCH_END,
            0,
            0,
            NFNL_SUBSYS_NFTABLES,
            &[],
        );
        sock.send(&buf, 0)?;
        // One ACK per message (sequence numbers first+1 ..= first+count), or an error. A
        // failed commit is reported against the batch's first message (BATCH_BEGIN, sequence
        // `first`), before the ACKs of the messages it had accepted: any error from `first`
        // to the end of the batch fails it.
        let wanted = (first.wrapping_add(1), count);
        let batch = (first, count + 2);
        let mut acked = 0;
        while acked < count {
            let (data, _) = sock.recv_from_full()?;
            let mut rest = &data[..];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes"));
                let seq = u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes"));
                let in_batch = seq.wrapping_sub(batch.0) < batch.1;
                let a_message = seq.wrapping_sub(wanted.0) < wanted.1;
                if kind == NLMSG_ERROR && in_batch && rest.len() >= 20 {
                    let code = i32::from_ne_bytes(rest[16..20].try_into().expect("4 bytes"));
                    if code != 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                    acked += u32::from(a_message);
                }
                if len < 16 {
                    break;
                }
                rest = rest.get(len.next_multiple_of(4)..).unwrap_or_default();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port() -> PortGuard {
        PortGuard {
            ifname: "tm0123456789".parse().unwrap(),
            mac: "02:11:22:33:44:55".parse().unwrap(),
            ip: std::net::Ipv4Addr::new(10, 88, 0, 2),
            ip6: Vec::new(),
            bridged: true,
        }
    }

    #[test]
    fn set_keys_are_register_padded_concatenations() {
        let k = keys(&port());
        let [(macs, mac), (ips, ip)] = [k[0].clone(), k[1].clone()];
        assert_eq!((macs, ips, k.len()), ("macs", "ips", 3));
        assert_eq!(k[2], ("tapmacs", vec![0xfe, 0x11, 0x22, 0x33, 0x44, 0x55]));
        assert_eq!(mac.len(), 24);
        assert_eq!(&mac[..12], b"tm0123456789");
        assert_eq!(&mac[16..], &[2, 0x11, 0x22, 0x33, 0x44, 0x55, 0, 0]);
        assert_eq!(ip.len(), 20);
        assert_eq!(&ip[16..], &[10, 88, 0, 2]);
        let dual = PortGuard {
            ip6: vec!["fd77::2".parse().unwrap()],
            ..port()
        };
        let k = keys(&dual);
        assert_eq!(
            k.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            ["macs", "ips", "tapmacs", "ip6s", "nd6s", "peers6", "v6ports", "lla6"]
        );
        assert_eq!(k[7].1, k[0].1, "lla6 holds the bytes of macs");
        assert_eq!(
            k[5].1,
            "fd77::2".parse::<std::net::Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(&k[6].1[..12], b"tm0123456789");
        assert_eq!(k[3].1, k[4].1);
        assert_eq!(k[3].1.len(), 32);
        assert_eq!(&k[3].1[16..18], &[0xfd, 0x77]);
    }

    #[test]
    fn a_port_is_three_elements_a_chain_and_its_jump_and_goes_chain_first() {
        let add: Vec<u16> = add_messages(&port()).iter().map(|m| m.0).collect();
        assert_eq!(
            add,
            [
                NFT_MSG_NEWSETELEM,
                NFT_MSG_NEWSETELEM,
                NFT_MSG_NEWSETELEM,
                NFT_MSG_NEWCHAIN,
                NFT_MSG_NEWRULE
            ]
        );
        let rm: Vec<u16> = remove_messages(&port()).iter().map(|m| m.0).collect();
        assert_eq!(
            rm,
            [
                NFT_MSG_DELCHAIN,
                NFT_MSG_DELSETELEM,
                NFT_MSG_DELSETELEM,
                NFT_MSG_DELSETELEM
            ]
        );
    }
}
