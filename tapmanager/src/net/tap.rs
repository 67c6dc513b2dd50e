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
//! predicted name joined most attaches (the outside audit, issue 11). So a multi-queue TAP is
//! born under a random 48-bit name (`tmq` + 12 hex digits) and gets its owner and group in
//! the next two ioctls. Someone who learned the birth name from a link notification can still
//! win that race of a few microseconds, and while their fd is tied to the TAP (attached, or
//! detached with `TUNSETQUEUE`, which the kernel lets them attach again owner or not) they may
//! change its owner and most of its settings. So once our queues are open the owner and group
//! are set again, and one netlink reading must show exactly our queues attached, none
//! detached, and our owner and group: from that instant no other fd is tied to it and no one
//! else may tie one. Anything else deletes it (every fd is untied) and starts over under
//! another name. Then every per-device setting an fd could change is put back
//! ([`reset_device`]), and only then is it renamed to its final name.
//!
//! A bridge or routed network's TAP (in the daemon's namespace) is then made persistent
//! ([`persist`]): it stays when its fds close, and teardown deletes it, in kernel batches
//! (kinds/bridge.rs says why). If the daemon is down when its VM exits, it stays, guarded,
//! until the next start reaps it; meanwhile only its owner may open it again. Other kinds'
//! TAPs live in a guest namespace of their own, which goes in one batch with everything in it;
//! they stay non-persistent. Teardown deletes every TAP explicitly either way, since a
//! hypervisor holding an fd may have made it persistent.
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
    #[error("new TAP {name} was found with someone else's queue or owner ({found}), {tries} times in a row: someone on this host is racing TAP creation")]
    Joined {
        name: String,
        found: String,
        tries: u32,
    },
    #[error("cannot reset new TAP {0}")]
    Reset(String, #[source] io::Error),
    #[error("cannot keep new TAP {0} out of the host's IP configuration")]
    Harden(String, #[source] io::Error),
    #[error("cannot read random bytes for a new TAP's birth name")]
    Random(#[source] io::Error),
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
/// [`crate::net::link`] finishes it. See the module docs for why it is born under another name.
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
    let ours = TunState {
        queues: u32::from(queues),
        disabled: 0,
        owner: Some(uid),
        group: Some(gid),
    };
    for attempt in 1..=BIRTH_TRIES {
        let birth = birth_name()?;
        let fds = open_owned(&birth, flags, queues, uid, gid)?;
        let index = nix::net::if_::if_nametoindex(birth.as_str())
            .map_err(|e| TapError::Count(birth.to_string(), e.into()))?;
        // Again: whoever joined before our first TUNSETOWNER may have set their own since.
        set_owner(&fds[0], &birth, uid, gid)?;
        let found = rtnl
            .tun_state(index)
            .map_err(|e| TapError::Count(birth.to_string(), e))?;
        if found != ours {
            // Someone else's queue is attached, or detached but still tied to it (a disabled
            // queue can be attached again, owner or not), or they changed the owner after us.
            // Deleting the TAP unties every fd; ours close on return.
            rtnl.delete(index)
                .map_err(|e| TapError::Delete(birth.to_string(), e))?;
            if attempt == BIRTH_TRIES {
                return Err(TapError::Joined {
                    name: name.to_string(),
                    found: format!("{found:?}"),
                    tries: attempt,
                });
            }
            continue;
        }
        // From the moment of that reading, no fd but ours is tied to it and only `uid` (in
        // `gid`) may tie one: what someone changed while they held a queue is undone now.
        if let Err(e) = reset_device(&fds[0]) {
            let _ = rtnl.delete(index); // ours alone; it also goes when our fds close
            return Err(TapError::Reset(birth.to_string(), e));
        }
        if let Err(e) = rtnl.rename(index, name) {
            let _ = rtnl.delete(index); // ours alone; it also goes when our fds close
            return Err(TapError::Rename(birth.to_string(), name.to_string(), e));
        }
        return Ok(Tap { fds });
    }
    unreachable!("the last attempt returns")
}

/// What the kernel says of a multi-queue TAP (`IFLA_INFO_DATA`): queues attached, queues
/// detached but still tied to it, owner and group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TunState {
    queues: u32,
    disabled: u32,
    owner: Option<u32>,
    group: Option<u32>,
}

/// Sets the TAP's owner and group (`TUNSETOWNER`, `TUNSETGROUP`).
fn set_owner(fd: &OwnedFd, name: &IfName, uid: u32, gid: u32) -> Result<(), TapError> {
    // SAFETY: TUNSETOWNER takes the uid by value; no memory is shared with the kernel.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETOWNER, uid as libc::c_ulong) };
    if rc < 0 {
        return Err(TapError::SetOwner(
            name.to_string(),
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: TUNSETGROUP takes the gid by value; no memory is shared with the kernel.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETGROUP, gid as libc::c_ulong) };
    if rc < 0 {
        return Err(TapError::SetGroup(
            name.to_string(),
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Puts back every per-device setting an fd tied to the TAP can change without a capability
/// (Linux 6.18's `__tun_chr_ioctl`), to what `TUNSETIFF` made: not persistent, Ethernet, no
/// offloads, no MAC filter, no socket or eBPF filter, no steering program, the default send
/// buffer and vnet header, native byte order, carrier on, a fresh MAC. Owner and group are
/// [`set_owner`]'s.
fn reset_device(fd: &OwnedFd) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    let check = |rc: libc::c_int, what: &str| {
        if rc < 0 {
            let e = io::Error::last_os_error();
            Err(io::Error::new(e.kind(), format!("{what}: {e}")))
        } else {
            Ok(())
        }
    };
    let by_value = |req: libc::Ioctl, v: libc::c_ulong, what: &str| {
        // SAFETY: these requests take their argument by value; no memory is shared.
        check(unsafe { libc::ioctl(raw, req, v) }, what)
    };
    let by_int = |req: libc::Ioctl, v: libc::c_int, what: &str| {
        // SAFETY: these requests read one `int` through the pointer, which outlives the call.
        check(
            unsafe { libc::ioctl(raw, req, std::ptr::from_ref(&v)) },
            what,
        )
    };
    by_value(libc::TUNSETPERSIST, 0, "TUNSETPERSIST")?;
    by_value(
        libc::TUNSETLINK,
        libc::ARPHRD_ETHER as libc::c_ulong,
        "TUNSETLINK",
    )?;
    by_value(libc::TUNSETOFFLOAD, 0, "TUNSETOFFLOAD")?;
    by_value(libc::TUNDETACHFILTER, 0, "TUNDETACHFILTER")?;
    // struct tun_filter { __u16 flags; __u16 count; }: a count of 0 turns the filter off.
    let no_filter = [0u16; 2];
    // SAFETY: TUNSETTXFILTER reads one `struct tun_filter` (4 bytes with no addresses).
    let rc = unsafe { libc::ioctl(raw, libc::TUNSETTXFILTER, no_filter.as_ptr()) };
    check(rc, "TUNSETTXFILTER")?;
    by_int(libc::TUNSETSNDBUF, libc::c_int::MAX, "TUNSETSNDBUF")?;
    // sizeof(struct virtio_net_hdr): what TUNSETIFF starts with.
    by_int(libc::TUNSETVNETHDRSZ, 10, "TUNSETVNETHDRSZ")?;
    by_int(libc::TUNSETVNETLE, 0, "TUNSETVNETLE")?;
    match by_int(libc::TUNSETVNETBE, 0, "TUNSETVNETBE") {
        // A kernel without CONFIG_TUN_VNET_CROSS_LE has no big-endian mode to turn off.
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {}
        r => r?,
    }
    by_int(libc::TUNSETSTEERINGEBPF, -1, "TUNSETSTEERINGEBPF")?;
    by_int(libc::TUNSETFILTEREBPF, -1, "TUNSETFILTEREBPF")?;
    by_int(libc::TUNSETCARRIER, 1, "TUNSETCARRIER")?;
    // A fresh locally administered unicast MAC (kinds that care set their own later).
    let mut mac = [0u8; 6];
    // SAFETY: getrandom writes at most 6 bytes into `mac`, which outlives the call.
    let n = unsafe { libc::getrandom(mac.as_mut_ptr().cast(), 6, 0) };
    check(if n == 6 { 0 } else { -1 }, "getrandom")?;
    mac[0] = (mac[0] & 0xfc) | 0x02;
    // SAFETY: ifreq is plain old data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // SAFETY: writing the hwaddr member of the union, which SIOCSIFHWADDR reads.
    unsafe {
        req.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
        for (d, b) in req.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
            *d = b as libc::c_char;
        }
    }
    // SAFETY: SIOCSIFHWADDR on a TAP fd reads one `struct ifreq`, which outlives the call.
    check(
        unsafe { libc::ioctl(raw, libc::SIOCSIFHWADDR, &mut req) },
        "SIOCSIFHWADDR",
    )
}

/// `tmq` and 12 random hex digits: a name no one can predict. A daemon that dies before the
/// rename leaves nothing behind: the TAP is not persistent yet and goes with its fds.
fn birth_name() -> Result<IfName, TapError> {
    let mut bytes = [0u8; 6];
    loop {
        // SAFETY: getrandom writes at most `bytes.len()` bytes into the buffer, which
        // outlives the call.
        let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
        match n {
            6 => break,
            // Interrupted while the pool was not ready yet (early boot): ask again.
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
            _ => return Err(TapError::Random(io::Error::last_os_error())),
        }
    }
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(IfName::try_from(format!("tmq{hex}")).expect("15 bytes of [a-z0-9]"))
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
    set_owner(&first, name, uid, gid)?;
    // Owned first (the ioctls above come straight after the one that made it); then, before
    // it is up and before any fd leaves: no IPv6, strict rp_filter (link.rs).
    crate::net::link::harden_guest_link(name.as_str())
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

/// A tun device's `IFLA_INFO_DATA` (`<linux/if_link.h>`): owner and group (absent when
/// unset), queues attached right now, and queues detached but still tied to it.
const IFLA_TUN_OWNER: u16 = 1;
const IFLA_TUN_GROUP: u16 = 2;
const IFLA_TUN_NUM_QUEUES: u16 = 8;
const IFLA_TUN_NUM_DISABLED_QUEUES: u16 = 9;

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

    /// A multi-queue TAP's queues, detached queues, owner and group.
    fn tun_state(&self, index: u32) -> io::Result<TunState> {
        use netlink_packet_route::link::{InfoData, LinkAttribute, LinkInfo, LinkMessage};
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        let replies = self.request(netlink_packet_route::RouteNetlinkMessage::GetLink(msg))?;
        let mut state = TunState {
            queues: u32::MAX,
            disabled: u32::MAX,
            owner: None,
            group: None,
        };
        let tun = replies
            .into_iter()
            .filter_map(|r| match r {
                netlink_packet_route::RouteNetlinkMessage::NewLink(l) => Some(l.attributes),
                _ => None,
            })
            .flatten()
            .filter_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => Some(infos),
                _ => None,
            })
            .flatten()
            .filter_map(|i| match i {
                LinkInfo::Data(InfoData::Tun(t)) => Some(t),
                _ => None,
            })
            .flatten();
        for nla in tun {
            use netlink_packet_core::Nla;
            if nla.value_len() != 4 {
                continue;
            }
            let mut v = [0u8; 4];
            nla.emit_value(&mut v);
            let v = u32::from_ne_bytes(v);
            match nla.kind() {
                IFLA_TUN_OWNER => state.owner = Some(v),
                IFLA_TUN_GROUP => state.group = Some(v),
                IFLA_TUN_NUM_QUEUES => state.queues = v,
                IFLA_TUN_NUM_DISABLED_QUEUES => state.disabled = v,
                _ => {}
            }
        }
        if state.queues == u32::MAX || state.disabled == u32::MAX {
            return Err(io::Error::other(
                "the kernel did not report the TAP's queues (IFLA_TUN_NUM_QUEUES)",
            ));
        }
        Ok(state)
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
    fn the_reading_sees_a_queue_someone_else_attached_or_detached() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (TAP devices in a namespace of its own)");
            return;
        }
        let states = in_fresh_netns(|| {
            let name: IfName = "tmcount0".parse().unwrap();
            let tap = create(&name, 2, 4242, 4243).unwrap();
            let index = nix::net::if_::if_nametoindex("tmcount0").unwrap();
            let rtnl = Rtnl::open().unwrap();
            let before = rtnl.tun_state(index).unwrap();
            let flags =
                libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_MULTI_QUEUE;
            let joined = open_queue(&name, flags).unwrap();
            let attached = rtnl.tun_state(index).unwrap();
            // The audit reviewer's trick: detach, stay tied, attach again later.
            let mut req = ifreq(&name, libc::IFF_DETACH_QUEUE);
            // SAFETY: TUNSETQUEUE reads one `struct ifreq`, which outlives the call.
            let rc = unsafe { libc::ioctl(joined.as_raw_fd(), libc::TUNSETQUEUE, &mut req) };
            assert_eq!(rc, 0);
            let detached = rtnl.tun_state(index).unwrap();
            drop((tap, joined));
            [before, attached, detached]
        });
        let s = |queues, disabled| TunState {
            queues,
            disabled,
            owner: Some(4242),
            group: Some(4243),
        };
        assert_eq!(states, [s(2, 0), s(3, 0), s(2, 1)]);
    }

    #[test]
    fn a_reset_puts_back_what_a_queue_holder_changed() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (TAP devices in a namespace of its own)");
            return;
        }
        let (persist_before, persist_after, sndbuf) = in_fresh_netns(|| {
            let tap = create(&"tmreset0".parse().unwrap(), 2, 0, 0).unwrap();
            let fd = &tap.fds[1];
            // SAFETY: TUNSETPERSIST takes its flag by value.
            let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST, 1) };
            assert_eq!(rc, 0);
            let small: libc::c_int = 4096;
            // SAFETY: TUNSETSNDBUF reads one int, which outlives the call.
            let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETSNDBUF, &small) };
            assert_eq!(rc, 0);
            let persist_before = flags(fd).unwrap().1 & libc::IFF_PERSIST;
            reset_device(&tap.fds[0]).unwrap();
            let persist_after = flags(fd).unwrap().1 & libc::IFF_PERSIST;
            let mut sndbuf: libc::c_int = 0;
            // SAFETY: TUNGETSNDBUF writes one int, which outlives the call.
            let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETSNDBUF, &mut sndbuf) };
            assert_eq!(rc, 0);
            (persist_before, persist_after, sndbuf)
        });
        assert_ne!(persist_before, 0);
        assert_eq!((persist_after, sndbuf), (0, libc::c_int::MAX));
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
