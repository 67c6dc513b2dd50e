//! TAP devices: the only ioctl code in the daemon.
//!
//! rtnetlink cannot create a TAP with its queues, so this opens `/dev/net/tun` and uses
//! `TUNSETIFF` with the final flags: `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, plus
//! `IFF_MULTI_QUEUE` with one open per queue when more than one queue is asked for. The owner
//! is set so that only the caller's uid could ever re-attach to it (DESIGN.md §6).
//!
//! # Birth under a name no one knows
//!
//! `TUNSETIFF` makes the device at once with no owner and no group, and until `TUNSETOWNER`
//! any uid may attach a queue to a multi-queue TAP of that name (a single-queue TAP is safe:
//! it is born with our queue attached and takes no second one). Final names are a public
//! function of uid, VM id and NIC: a stranger spinning `TUNSETIFF(IFF_MULTI_QUEUE)` on a
//! predicted name joined most attaches (the outside audit, issue 11). So a multi-queue TAP is born under
//! a random 48-bit name (`tmq` + 12 hex digits), gets its owner and group in the next two
//! ioctls, has its queues opened, and is then counted over netlink (`IFLA_TUN_NUM_QUEUES`):
//! anything but exactly our queues (someone who learned the birth name from a link
//! notification and won the race of a few microseconds) deletes it and starts over under
//! another name. Only then is it renamed to its final name, which from the start names a
//! device only its owner may join.
//!
//! The TAP is
//! not persistent: it disappears when the last fd closes, and teardown deletes it explicitly
//! anyway, since a hypervisor holding an fd may have made it persistent. The exception is a
//! TAP asked for by name (Firecracker opens TAPs by name only): [`persist`].
//!
//! Needs CAP_NET_ADMIN in the calling thread's network namespace.

use protocol::IfName;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("cannot open /dev/net/tun")]
    OpenTun(#[source] io::Error),
    #[error("TUNSETIFF {0} failed")]
    SetIff(String, #[source] io::Error),
    #[error("TUNSETOWNER {0} failed")]
    SetOwner(String, #[source] io::Error),
    #[error("TUNSETGROUP {0} failed")]
    SetGroup(String, #[source] io::Error),
    #[error("cannot count the queues of new TAP {0}")]
    Count(String, #[source] io::Error),
    #[error("new TAP {name} had {found} queues attached, not our {ours}, {tries} times in a row: someone on this host is racing TAP creation")]
    Joined {
        name: String,
        found: u32,
        ours: u16,
        tries: u32,
    },
    #[error("cannot keep new TAP {0} out of the host's IP configuration")]
    Harden(String, #[source] io::Error),
    #[error("cannot rename new TAP {0} to {1}")]
    Rename(String, String, #[source] io::Error),
    #[error("cannot delete new TAP {0} after someone else joined it")]
    Delete(String, #[source] io::Error),
}

/// How often a TAP that someone else joined is made anew before giving up.
const BIRTH_TRIES: u32 = 8;

/// A freshly created TAP: its queue fds, in order.
#[derive(Debug)]
pub struct Tap {
    pub fds: Vec<OwnedFd>,
}

fn ifreq(name: &IfName, flags: libc::c_int) -> libc::ifreq {
    // SAFETY: ifreq is plain old data (a char array and a union of integers); all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_str().bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = flags as libc::c_short;
    req
}

fn open_queue(name: &IfName, flags: libc::c_int) -> Result<OwnedFd, TapError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open("/dev/net/tun")
        .map_err(TapError::OpenTun)?;
    let mut req = ifreq(name, flags);
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req` is and outlives the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(TapError::SetIff(
            name.to_string(),
            io::Error::last_os_error(),
        ));
    }
    Ok(file.into())
}

/// Creates TAP `name` with `queues` queues, owned by `uid`/`gid`, and returns one fd per queue.
///
/// The fds are non-blocking, as hypervisors expect. The device is down and has no master yet:
/// [`crate::link`] finishes it. See the module docs for why it is born under another name.
pub fn create(name: &IfName, queues: u16, uid: u32, gid: u32) -> Result<Tap, TapError> {
    let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
    if queues > 1 {
        flags |= libc::IFF_MULTI_QUEUE;
    }
    if queues == 1 {
        // A single-queue TAP is born with our queue attached (in the same ioctl), and takes
        // no second one (EBUSY; EINVAL for a multi-queue open): no one can join it, whatever
        // its name.
        return open_owned(name, flags, 1, uid, gid).map(|fds| Tap { fds });
    }
    let rtnl = Rtnl::open().map_err(|e| TapError::Count(name.to_string(), e))?;
    for attempt in 1..=BIRTH_TRIES {
        let birth = birth_name();
        let fds = open_owned(&birth, flags, queues, uid, gid)?;
        let index = nix::net::if_::if_nametoindex(birth.as_str())
            .map_err(|e| TapError::Count(birth.to_string(), e.into()))?;
        let found = rtnl
            .tun_queues(index)
            .map_err(|e| TapError::Count(birth.to_string(), e))?;
        if found != u32::from(queues) {
            // Deleting it detaches every queue, the stranger's too; ours close on return.
            rtnl.delete(index)
                .map_err(|e| TapError::Delete(birth.to_string(), e))?;
            if attempt == BIRTH_TRIES {
                return Err(TapError::Joined {
                    name: name.to_string(),
                    found,
                    ours: queues,
                    tries: attempt,
                });
            }
            continue;
        }
        if let Err(e) = rtnl.rename(index, name) {
            let _ = rtnl.delete(index); // ours alone; it also goes when our fds close
            return Err(TapError::Rename(birth.to_string(), name.to_string(), e));
        }
        return Ok(Tap { fds });
    }
    unreachable!("the last attempt returns")
}

/// `tmq` and 12 random hex digits: a name no one can predict. A daemon that dies before the
/// rename leaves nothing behind: the TAP is not persistent yet and goes with its fds.
fn birth_name() -> IfName {
    let mut bytes = [0u8; 6];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer, which outlives it.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    assert_eq!(n, 6, "getrandom failed"); // never short for 6 bytes without GRND_NONBLOCK
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    IfName::try_from(format!("tmq{hex}")).expect("15 bytes of [a-z0-9]")
}

/// Opens the first queue (creating the TAP), sets its owner and group, opens the others.
fn open_owned(
    name: &IfName,
    flags: libc::c_int,
    queues: u16,
    uid: u32,
    gid: u32,
) -> Result<Vec<OwnedFd>, TapError> {
    let first = open_queue(name, flags)?;
    // SAFETY: TUNSETOWNER takes the uid by value; no memory is shared with the kernel.
    let rc = unsafe { libc::ioctl(first.as_raw_fd(), libc::TUNSETOWNER, uid as libc::c_ulong) };
    if rc < 0 {
        return Err(TapError::SetOwner(
            name.to_string(),
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: TUNSETGROUP takes the gid by value; no memory is shared with the kernel.
    let rc = unsafe { libc::ioctl(first.as_raw_fd(), libc::TUNSETGROUP, gid as libc::c_ulong) };
    if rc < 0 {
        return Err(TapError::SetGroup(
            name.to_string(),
            io::Error::last_os_error(),
        ));
    }
    // Owned first (the ioctls above come straight after the one that made it); then, before
    // it is up and before any fd leaves: no IPv6, strict rp_filter (link.rs).
    crate::link::harden_guest_link(name.as_str())
        .map_err(|e| TapError::Harden(name.to_string(), e))?;
    let mut fds = vec![first];
    for _ in 1..queues {
        fds.push(open_queue(name, flags)?);
    }
    Ok(fds)
}

/// A blocking rtnetlink socket of the calling thread's namespace, for the two questions a
/// new TAP needs answered on whatever thread made it (often one inside a guest's namespace).
struct Rtnl(netlink_sys::Socket);

/// `IFLA_TUN_NUM_QUEUES` in a tun device's `IFLA_INFO_DATA`: queues attached right now.
const IFLA_TUN_NUM_QUEUES: u16 = 8;

impl Rtnl {
    fn open() -> io::Result<Rtnl> {
        let mut s = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE)?;
        s.bind_auto()?;
        s.connect(&netlink_sys::SocketAddr::new(0, 0))?;
        Ok(Rtnl(s))
    }

    /// Sends one request with an ACK asked for; returns the messages before the ACK.
    fn request(
        &self,
        msg: netlink_packet_route::RouteNetlinkMessage,
    ) -> io::Result<Vec<netlink_packet_route::RouteNetlinkMessage>> {
        use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
        let mut header = NetlinkHeader::default();
        header.flags = netlink_packet_core::NLM_F_REQUEST | netlink_packet_core::NLM_F_ACK;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        req.finalize();
        let mut buf = vec![0; req.buffer_len()];
        req.serialize(&mut buf);
        self.0.send(&buf, 0)?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.0.recv_from_full()?;
            let mut rest = &data[..];
            while !rest.is_empty() {
                let m =
                    NetlinkMessage::<netlink_packet_route::RouteNetlinkMessage>::deserialize(rest)
                        .map_err(io::Error::other)?;
                let len = (m.header.length as usize).next_multiple_of(4);
                match m.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(_) => Err(e.to_io()),
                        }
                    }
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    _ => {}
                }
                rest = rest.get(len..).unwrap_or_default();
            }
        }
    }

    /// How many queues TAP `index` has attached.
    fn tun_queues(&self, index: u32) -> io::Result<u32> {
        use netlink_packet_route::link::{InfoData, LinkAttribute, LinkInfo, LinkMessage};
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        let replies = self.request(netlink_packet_route::RouteNetlinkMessage::GetLink(msg))?;
        for reply in replies {
            let netlink_packet_route::RouteNetlinkMessage::NewLink(link) = reply else {
                continue;
            };
            for attr in link.attributes {
                let LinkAttribute::LinkInfo(infos) = attr else {
                    continue;
                };
                for info in infos {
                    let LinkInfo::Data(InfoData::Tun(tun)) = info else {
                        continue;
                    };
                    for nla in tun {
                        use netlink_packet_core::Nla;
                        if nla.kind() == IFLA_TUN_NUM_QUEUES && nla.value_len() == 4 {
                            let mut v = [0u8; 4];
                            nla.emit_value(&mut v);
                            return Ok(u32::from_ne_bytes(v));
                        }
                    }
                }
            }
        }
        Err(io::Error::other(
            "the kernel did not report IFLA_TUN_NUM_QUEUES",
        ))
    }

    fn rename(&self, index: u32, name: &IfName) -> io::Result<()> {
        use netlink_packet_route::link::{LinkAttribute, LinkMessage};
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.request(netlink_packet_route::RouteNetlinkMessage::SetLink(msg))
            .map(drop)
    }

    fn delete(&self, index: u32) -> io::Result<()> {
        let mut msg = netlink_packet_route::link::LinkMessage::default();
        msg.header.index = index;
        match self.request(netlink_packet_route::RouteNetlinkMessage::DelLink(msg)) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            r => r.map(drop),
        }
    }
}

/// Makes the TAP outlive its fds (`TUNSETPERSIST`), for a hypervisor that opens it by name:
/// only its owner (uid and group, [`create`]) may attach to it then.
pub fn persist(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: TUNSETPERSIST takes its flag by value; no memory is shared with the kernel.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, 1 as libc::c_ulong) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Turns on vnet_hdr for a freshly opened macvtap queue (a macvtap's `TUNSETIFF` takes flags
/// only: `IFF_TAP | IFF_NO_PI` plus the features; each open is one queue).
pub fn set_macvtap_flags(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_ifru.ifru_flags =
        (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req` is and outlives the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Reads back a TAP fd's flags (`TUNGETIFF`): lets tests check what a caller received.
pub fn flags(fd: &OwnedFd) -> io::Result<(String, libc::c_int)> {
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // SAFETY: TUNGETIFF writes one `struct ifreq` into `req`, which outlives the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let name: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect();
    // SAFETY: TUNGETIFF filled `ifru_flags`.
    let flags = unsafe { req.ifr_ifru.ifru_flags } as libc::c_int;
    Ok((String::from_utf8_lossy(&name).into_owned(), flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `f` on a thread of its own in a fresh network namespace (gone when it ends).
    fn in_fresh_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
            f()
        })
        .join()
        .expect("netns thread")
    }

    #[test]
    fn the_queue_count_sees_a_queue_someone_else_attached() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (TAP devices in a namespace of its own)");
            return;
        }
        let (before, after) = in_fresh_netns(|| {
            let name: IfName = "tmcount0".parse().unwrap();
            let tap = create(&name, 2, 0, 0).unwrap();
            let index = nix::net::if_::if_nametoindex("tmcount0").unwrap();
            let rtnl = Rtnl::open().unwrap();
            let before = rtnl.tun_queues(index).unwrap();
            let flags =
                libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_MULTI_QUEUE;
            let joined = open_queue(&name, flags).unwrap();
            let after = rtnl.tun_queues(index).unwrap();
            drop((tap, joined));
            (before, after)
        });
        assert_eq!((before, after), (2, 3));
    }

    #[test]
    fn a_tap_is_created_under_its_final_name_owned_and_with_its_queues() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (TAP devices in a namespace of its own)");
            return;
        }
        let (names, flags) = in_fresh_netns(|| {
            let tap = create(&"tmfinal0".parse().unwrap(), 3, 4242, 4243).unwrap();
            let names: Vec<String> = tap.fds.iter().map(|f| flags(f).unwrap().0).collect();
            let f = flags(&tap.fds[0]).unwrap().1;
            (names, f)
        });
        assert_eq!(names, ["tmfinal0", "tmfinal0", "tmfinal0"]);
        assert_ne!(flags & libc::IFF_MULTI_QUEUE, 0);
    }
}
