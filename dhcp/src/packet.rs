//! The AF_PACKET socket under the DHCP server: the only `unsafe` code in this crate.
//!
//! Each function is one system call wrapped in `std::io::Result`, so opening a namespace's
//! socket reads as the script of steps it is. The socket is opened with protocol 0, which receives nothing,
//! and only `bind` (after the filter is attached) names ETH_P_ALL: so no frame that the filter
//! would have refused can be queued in between.
//!
//! All of it needs CAP_NET_RAW in the network namespace the socket is created in (the calling
//! thread's).

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Classic BPF over the Ethernet frame: accept untagged IPv4, UDP, not a fragment (so the UDP
/// header is there), destination port 67 (`tcpdump -dd 'ip and udp dst port 67 and ip[6:2] &
/// 0x1fff = 0'`); and untagged IPv6 whose next header is ICMPv6 type 133 (router
/// solicitation) or UDP to port 547 (DHCPv6; no extension headers, which userspace refuses
/// too); none longer than [`MAX_FRAME`]. Everything else is dropped. Userspace checks the same
/// again, so this is about not waking up for foreign traffic, and not letting a guest fill the
/// queue its neighbours share with a few large frames, not about safety. The comments number
/// the instructions after the length check (jumps are relative, so they count the same).
const FILTER: [libc::sock_filter; 21] = [
    op(0x80, 0, 0, 0),                 // ld #len              frame length
    op(0x25, 18, 0, MAX_FRAME as u32), // jgt #MAX_FRAME ? drop : next
    op(0x28, 0, 0, 12),                // 0: ldh [12]            ethertype
    op(0x15, 0, 7, 0x0800),            // 1: jeq #IPv4 ? 2 : 9
    op(0x30, 0, 0, 23),                // 2: ldb [23]            IP protocol
    op(0x15, 0, 14, 17),               // 3: jeq #UDP ? 4 : drop
    op(0x28, 0, 0, 20),                // 4: ldh [20]            flags + fragment offset
    op(0x45, 12, 0, 0x1fff),           // 5: jset #0x1fff ? drop : 6
    op(0xb1, 0, 0, 14),                // 6: ldxb 4*([14]&0xf)   IP header length
    op(0x48, 0, 0, 16),                // 7: ldh [x+16]          UDP destination port
    op(0x15, 8, 9, 67),                // 8: jeq #67 ? accept : drop
    op(0x15, 0, 8, 0x86dd),            // 9: jeq #IPv6 ? 10 : drop
    op(0x30, 0, 0, 20),                // 10: ldb [20]           next header
    op(0x15, 0, 2, 58),                // 11: jeq #ICMPv6 ? 12 : 14
    op(0x30, 0, 0, 54),                // 12: ldb [54]           ICMPv6 type
    op(0x15, 3, 4, 133),               // 13: jeq #RS ? accept : drop
    op(0x15, 0, 3, 17),                // 14: jeq #UDP ? 15 : drop
    op(0x28, 0, 0, 56),                // 15: ldh [56]           UDP destination port
    op(0x15, 0, 1, 547),               // 16: jeq #547 ? accept : drop
    op(0x06, 0, 0, 0x0004_0000),       // 17: accept (whole frame, up to 256 KiB)
    op(0x06, 0, 0, 0),                 // 18: drop
];

/// The longest request taken: far above any DHCP, DHCPv6 or solicitation a client sends (they
/// fit the IPv4 and IPv6 minimum MTUs), far below a GSO frame a TAP with vnet headers takes.
pub(crate) const MAX_FRAME: usize = 2048;

const fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// One received frame: its length, the interface it came in on, and whether the kernel says
/// we sent it ourselves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Received {
    /// Bytes in the frame; may be larger than the buffer (then the frame was truncated).
    pub(crate) len: usize,
    /// The interface it was received on.
    pub(crate) ifindex: u32,
    /// `PACKET_OUTGOING`: a frame leaving the interface, e.g. our own reply.
    pub(crate) outgoing: bool,
}

/// `socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)`: receives nothing until
/// `bind`. Needs CAP_NET_RAW.
pub(crate) fn open() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; no memory is passed.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2), is valid and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attaches [`FILTER`] (SO_ATTACH_FILTER).
pub(crate) fn attach_filter(fd: BorrowedFd<'_>) -> io::Result<()> {
    let mut filter = FILTER;
    let prog = libc::sock_fprog {
        len: filter.len() as libc::c_ushort,
        filter: filter.as_mut_ptr(),
    };
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
}

/// Makes the receive queue `bytes` long (SO_RCVBUFFORCE, past `rmem_max`; needs
/// CAP_NET_ADMIN).
pub(crate) fn force_rcvbuf(fd: BorrowedFd<'_>, bytes: libc::c_int) -> io::Result<()> {
    setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &bytes)
}

/// Asks the kernel not to loop our own transmitted frames back (PACKET_IGNORE_OUTGOING,
/// Linux 4.20+). The receive path also drops `PACKET_OUTGOING` frames, so failure is harmless.
pub(crate) fn ignore_outgoing(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one: libc::c_int = 1;
    setsockopt(fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one)
}

/// Binds to `ifindex` (the prober's socket). `ifindex` must not be 0 (that means "every
/// interface").
pub(crate) fn bind(fd: BorrowedFd<'_>, ifindex: u32) -> io::Result<()> {
    let ifindex = i32::try_from(ifindex)
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    bind_to(fd, ifindex)
}

/// Binds to every interface of the socket's namespace (index 0). One socket serves every
/// guest link of the namespace: a socket per link made every link event walk all of them
/// (packet_notifier) and cost a descriptor per guest. From here on frames are queued.
pub(crate) fn bind_all(fd: BorrowedFd<'_>) -> io::Result<()> {
    bind_to(fd, 0)
}

/// The address of interface `ifindex` for frames of EtherType `protocol`.
fn link_addr(ifindex: i32, protocol: u16) -> libc::sockaddr_ll {
    libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as libc::c_ushort,
        sll_protocol: protocol.to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    }
}

fn bind_to(fd: BorrowedFd<'_>, ifindex: i32) -> io::Result<()> {
    // ETH_P_ALL, not ETH_P_IP: on a bridge port the bridge's rx handler consumes every frame
    // before protocol-specific taps run, and the guards on the port's ingress hook drop DHCP
    // there; only ETH_P_ALL taps see the guest's frames first. The BPF filter admits nothing
    // but the requests the servers answer.
    let addr = link_addr(ifindex, libc::ETH_P_ALL as u16);
    // SAFETY: `addr` is a fully initialised sockaddr_ll that outlives the call, and the length
    // passed is its size.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast::<libc::sockaddr>(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Receives one frame into `buf` without blocking (the socket is non-blocking).
pub(crate) fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<Received> {
    let mut addr = libc::sockaddr_ll {
        sll_family: 0,
        sll_protocol: 0,
        sll_ifindex: 0,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    let mut addr_len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `buf` is valid for `buf.len()` writable bytes; `addr`/`addr_len` describe a
    // writable sockaddr_ll of the given size. MSG_TRUNC only changes the returned length.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_TRUNC,
            (&raw mut addr).cast::<libc::sockaddr>(),
            &mut addr_len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Received {
        // n >= 0 was checked above.
        len: n as usize,
        ifindex: u32::try_from(addr.sll_ifindex).unwrap_or(0),
        outgoing: addr.sll_pkttype == libc::PACKET_OUTGOING,
    })
}

/// Transmits one complete Ethernet frame on the bound interface without blocking.
pub(crate) fn send(fd: BorrowedFd<'_>, frame: &[u8]) -> io::Result<()> {
    // SAFETY: `frame` is valid for `frame.len()` readable bytes for the duration of the call.
    // No address is passed: a bound packet socket sends on its bound interface.
    let n = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Transmits one complete Ethernet frame on interface `ifindex` without blocking.
pub(crate) fn send_to(fd: BorrowedFd<'_>, ifindex: u32, frame: &[u8]) -> io::Result<()> {
    let ifindex = i32::try_from(ifindex)
        .ok()
        .filter(|i| *i > 0)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    // The frame's own EtherType, as the kernel would read it from the header.
    let ethertype = frame
        .get(12..14)
        .map_or(0, |t| u16::from_be_bytes([t[0], t[1]]));
    let addr = link_addr(ifindex, ethertype);
    // SAFETY: `frame` is valid for `frame.len()` readable bytes and `addr` is a fully
    // initialised sockaddr_ll of the size passed, both for the duration of the call.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&raw const addr).cast::<libc::sockaddr>(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Registers a descriptor's owner with the current tokio runtime's reactor, for readability
/// only. Must be called inside a tokio runtime.
///
/// # Safety
///
/// `owner` must keep its descriptor open, with the same number, for as long as it lives.
pub(crate) unsafe fn register<T: AsRawFd>(owner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: the caller's `T` keeps the descriptor open as required above; the AsyncFd owns
    // the `T`, and deregisters before dropping it, so the registration never outlives it.
    let registered = unsafe { AsyncFd::register_with_interest(owner, Interest::READABLE) };
    registered.map_err(io::Error::from)
}

fn setsockopt<T>(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live, initialised T for the duration of the call and the
    // length passed is its size; the kernel copies what it needs before returning.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
