//! The per-interface DHCP server: an AF_PACKET socket on one VM interface around [`reply`].
//!
//! Why AF_PACKET: the guest has no address while it asks for one, replies must reach exactly
//! this guest, and the socket must work on a TAP that is a bridge port (where ebtables keeps
//! DHCP off the bridge). A packet socket bound to the TAP sees the guest's frames before the
//! bridge does, and what it sends goes straight to the guest (DESIGN.md section 4).
//!
//! The loop is deliberately thin: frame -> `frame::parse_ipv4_udp_frame` -> `decode_request`
//! -> `reply` -> `frame::build_ipv4_udp_frame` -> send. Everything the guest sends is
//! untrusted: malformed input is counted and logged at debug only, never an error, so a guest
//! can neither stop the server nor flood the journal. Only a failure of the socket itself ends
//! `run` with an error.
//!
//! `bind` opens the socket in the calling thread's network namespace and starts queueing
//! frames at once, so the daemon can bind before it hands out the TAP fds and start `run`
//! later without losing the guest's first DISCOVER.

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use dhcproto::v4::{Message, MessageType};
use dhcproto::{Decodable, Decoder, Encodable};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::binding::{Binding, BindingError};
use crate::frame::{build_ipv4_udp_frame, parse_ipv4_udp_frame};
use crate::packet;
use crate::reply::reply;

/// DHCP server port (the server listens here).
pub const SERVER_PORT: u16 = 67;
/// DHCP client port (replies go here).
pub const CLIENT_PORT: u16 = 68;
/// BOOTP messages are at least this long (RFC 951 / RFC 1542); some clients drop shorter ones.
const MIN_BOOTP_LEN: usize = 300;
/// Fixed BOOTP header (236 bytes) plus the magic cookie.
const OPTIONS_OFFSET: usize = 240;
const MAGIC_COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Receive buffer: the largest IPv4 packet plus an Ethernet header. Longer frames are truncated
/// by the kernel and then rejected as malformed. One per runtime thread, not one per server
/// (see [`RECV_BUF`]).
const RECV_BUF_LEN: usize = 65536 + 14;

thread_local! {
    /// The receive buffer every server on this thread shares: a frame is received, answered and
    /// its reply sent without an `.await` in between, so no two servers hold it at once. A
    /// buffer per server was 64 KiB per guest, nearly all of the daemon's memory per guest.
    static RECV_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}
/// The shared socket's receive queue, in bytes (the kernel counts each frame's whole buffer).
const RCVBUF: libc::c_int = 4 << 20;
/// Frames handled per wake-up before yielding, so a flooding guest cannot starve cancellation.
const FRAMES_PER_WAKE: usize = 64;
/// Frames a server takes at most: a burst, then a steady rate. A guest's DHCP client sends a
/// handful of packets a minute; beyond this is a flood, dropped before it is parsed.
const BURST: f64 = 20.0;
const PER_SEC: f64 = 10.0;
/// A flood is logged once per this long, with what was dropped meanwhile.
const FLOOD_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// A token bucket over [`BURST`] and [`PER_SEC`].
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: std::time::Instant,
}

impl Bucket {
    fn new() -> Bucket {
        Bucket {
            tokens: BURST,
            last: std::time::Instant::now(),
        }
    }

    fn take(&mut self, now: std::time::Instant) -> bool {
        let refill = now.duration_since(self.last).as_secs_f64() * PER_SEC;
        self.tokens = (self.tokens + refill).min(BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The binding fails [`Binding::validate`].
    #[error("the binding cannot be served")]
    InvalidBinding(#[source] BindingError),
    /// The interface index is 0 (which would mean every interface) or out of range.
    #[error("{0} is not a usable interface index")]
    Ifindex(u32),
    /// The calling thread's network namespace could not be told (`/proc/thread-self/ns/net`).
    #[error("reading the calling thread's network namespace")]
    Namespace(#[source] io::Error),
    /// socket(AF_PACKET) failed; EPERM means CAP_NET_RAW is missing.
    #[error("creating the AF_PACKET socket")]
    Socket(#[source] io::Error),
    /// SO_ATTACH_FILTER failed.
    #[error("attaching the DHCP BPF filter")]
    AttachFilter(#[source] io::Error),
    /// bind(2) failed.
    #[error("binding the socket to the namespace's interfaces")]
    Bind(#[source] io::Error),
}

/// What the server has seen, for tests and for the daemon's status output.
/// Shared with the running server; read it with `load(Ordering::Relaxed)`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Frames received (after the kernel filter, own transmissions excluded).
    pub received: AtomicU64,
    /// Frames that were not a well-formed IPv4/UDP/DHCP request.
    pub malformed: AtomicU64,
    /// Well-formed requests `reply` chose not to answer.
    pub ignored: AtomicU64,
    /// Replies handed to the kernel.
    pub replied: AtomicU64,
    /// Replies the kernel refused to send (queue full, interface down).
    pub send_failed: AtomicU64,
    /// Frames dropped unread because the guest sent more than [`BURST`] + [`PER_SEC`] allow.
    pub rate_limited: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A network namespace, as `(st_dev, st_ino)` of its nsfs file.
type NetnsId = (u64, u64);

/// The hubs of the namespaces that have servers. Weak: a hub lives as long as a server of it
/// (or its pump) does.
static HUBS: LazyLock<Mutex<Hubs>> = LazyLock::new(Mutex::default);

/// [`HUBS`]: the map, and its size after its last sweep of dead entries.
#[derive(Debug, Default)]
struct Hubs {
    map: HashMap<NetnsId, Weak<Hub>>,
    swept: usize,
}

/// The one packet socket of a network namespace, bound to all of its interfaces, and the
/// servers behind it by interface index. One socket per guest link was a descriptor per guest
/// and made every link event in the namespace walk every socket (the kernel's
/// `packet_notifier`), so an attach cost more the more guests there were.
#[derive(Debug)]
struct Hub {
    netns: NetnsId,
    socket: Option<OwnedFd>,
    /// The servers by interface index: the last bound of an index serves it (a re-bind of
    /// the same link), and an earlier one serves again if the later one leaves first.
    ports: Mutex<HashMap<u32, Vec<Arc<Port>>>>,
    /// Woken when a server leaves, so the pump ends with the last one.
    left: tokio::sync::Notify,
    /// Whether a pump was started (by the first `run`).
    pumping: AtomicBool,
}

/// One server's side of its hub: what it hands out, what it saw, how much more it takes.
#[derive(Debug)]
struct Port {
    binding: Binding,
    counters: Arc<Counters>,
    limit: Mutex<Limit>,
}

/// A port's flood control: its token bucket, and when a flood was last logged.
#[derive(Debug)]
struct Limit {
    bucket: Bucket,
    flood_logged: Option<std::time::Instant>,
    dropped_since: u64,
}

impl Hub {
    /// Opens the calling thread's namespace's socket: filter first, then bound, so no
    /// unfiltered frame is ever queued.
    fn open(netns: NetnsId) -> Result<Hub, Error> {
        // Protocol 0: nothing is received until bind() below names ETH_P_ALL.
        let socket = packet::open().map_err(Error::Socket)?;
        packet::attach_filter(socket.as_fd()).map_err(Error::AttachFilter)?;
        // Best effort: recv drops PACKET_OUTGOING frames anyway (kernels before 4.20 lack it).
        // It also keeps the namespace's transmissions from being copied to this socket.
        if let Err(e) = packet::ignore_outgoing(socket.as_fd()) {
            debug!(error = %e, "PACKET_IGNORE_OUTGOING unavailable");
        }
        // Every guest of the namespace queues here: room for a flooding guest's burst beside
        // its neighbours' requests (the default is about 200 KiB). Best effort.
        if let Err(e) = packet::force_rcvbuf(socket.as_fd(), RCVBUF) {
            debug!(error = %e, "SO_RCVBUFFORCE refused; the default receive queue stays");
        }
        packet::bind_all(socket.as_fd()).map_err(Error::Bind)?;
        Ok(Hub {
            netns,
            socket: Some(socket),
            ports: Mutex::default(),
            left: tokio::sync::Notify::new(),
            pumping: AtomicBool::new(false),
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.socket
            .as_ref()
            .expect("the socket lives as long as the hub")
            .as_fd()
    }

    fn port(&self, ifindex: u32) -> Option<Arc<Port>> {
        self.ports
            .lock()
            .unwrap()
            .get(&ifindex)
            .and_then(|v| v.last())
            .cloned()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        // Closing a packet socket waits for an RCU grace period (synchronize_net, 10-15 ms
        // here): off the runtime when there is one, so other attaches do not stall.
        if let Some(socket) = self.socket.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || drop(socket))),
                Err(_) => drop(socket),
            }
        }
    }
}

/// The namespace of the calling thread.
fn current_netns() -> io::Result<NetnsId> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata("/proc/thread-self/ns/net")?;
    Ok((m.dev(), m.ino()))
}

/// A DHCP server for one VM interface: its binding, behind its namespace's shared socket.
#[derive(Debug)]
pub struct Server {
    hub: Arc<Hub>,
    ifindex: u32,
    port: Arc<Port>,
}

impl Server {
    /// Serves `ifindex` of the CALLING THREAD's network namespace (the daemon calls this from
    /// a thread that did setns). The namespace's socket (an AF_PACKET socket bound to all its
    /// interfaces, with a classic BPF filter that admits DHCP requests, router solicitations
    /// and DHCPv6 only, ignoring PACKET_OUTGOING frames) is opened by its first server and
    /// closed after its last. Frames are queued from the moment this returns, and answered
    /// once a server of the namespace runs.
    ///
    /// Needs CAP_NET_RAW in that namespace. Synchronous; does not need a tokio runtime.
    pub fn bind(ifindex: u32, binding: Binding) -> Result<Server, Error> {
        binding.validate().map_err(Error::InvalidBinding)?;
        if ifindex == 0 || i32::try_from(ifindex).is_err() {
            return Err(Error::Ifindex(ifindex));
        }
        let netns = current_netns().map_err(Error::Namespace)?;
        let port = Arc::new(Port {
            binding,
            counters: Arc::default(),
            limit: Mutex::new(Limit {
                bucket: Bucket::new(),
                flood_logged: None,
                dropped_since: 0,
            }),
        });
        let mut hubs = HUBS.lock().unwrap();
        let hub = match hubs.map.get(&netns).and_then(Weak::upgrade) {
            Some(hub) => hub,
            None => {
                let hub = Arc::new(Hub::open(netns)?);
                // Dead entries (a hub whose pump never ran, or one whose pump failed): swept
                // when the map has doubled since the last sweep, so each bind pays O(1).
                if hubs.map.len() >= 2 * hubs.swept.max(64) {
                    hubs.map.retain(|_, h| h.strong_count() > 0);
                    hubs.swept = hubs.map.len();
                }
                hubs.map.insert(netns, Arc::downgrade(&hub));
                hub
            }
        };
        // Under the hubs' lock, so a pump ending with its last server cannot miss this one.
        hub.ports
            .lock()
            .unwrap()
            .entry(ifindex)
            .or_default()
            .push(Arc::clone(&port));
        drop(hubs);
        Ok(Server { hub, ifindex, port })
    }

    /// The binding this server hands out.
    pub fn binding(&self) -> &Binding {
        &self.port.binding
    }

    /// The interface index it serves.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Live counters of what the server saw; keeps working after `run` consumed the server.
    pub fn counters(&self) -> Arc<Counters> {
        Arc::clone(&self.port.counters)
    }

    /// Runs until `cancel` fires: the namespace's pump (started by the first server that
    /// runs) receives frames, parses Ethernet/IPv4/UDP, decodes DHCP, calls [`reply`], builds
    /// the reply frame and sends it straight to the guest on its interface. Broadcast
    /// (ff:ff:ff:ff:ff:ff / 255.255.255.255) when the request has the broadcast flag, ciaddr
    /// is 0, or the reply is a DHCPNAK; otherwise unicast to the guest's MAC and ciaddr. With
    /// IPv6, this server also sends the unsolicited router advertisements.
    ///
    /// Malformed packets are counted and logged at debug only. Must be called inside a tokio
    /// runtime. Always `Ok`: a failing socket is the pump's, which logs it.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), Error> {
        if !self.hub.pumping.swap(true, Ordering::SeqCst) {
            tokio::spawn(pump(Arc::clone(&self.hub)));
        }
        let (ifindex, counters) = (self.ifindex, &self.port.counters);
        let advert = crate::router::advertisement(&self.port.binding);
        debug!(ifindex, ip = %self.port.binding.ip, ipv6 = advert.is_some(), "DHCP server running");
        match &advert {
            None => cancel.cancelled().await,
            Some(frame) => {
                // Unsolicited router advertisements: the first at once, then every interval.
                let mut adverts = tokio::time::interval(crate::router::ADVERT_INTERVAL);
                adverts.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => break,
                        _ = adverts.tick() => deliver(
                            self.hub.fd(),
                            ifindex,
                            Outcome::Reply(frame.clone()),
                            counters,
                        ),
                    }
                }
            }
        }
        debug!(
            ifindex,
            received = counters.received.load(Ordering::Relaxed),
            malformed = counters.malformed.load(Ordering::Relaxed),
            replied = counters.replied.load(Ordering::Relaxed),
            rate_limited = counters.rate_limited.load(Ordering::Relaxed),
            "DHCP server stopped"
        );
        Ok(())
    }
}

impl Drop for Server {
    /// Leaves the hub: its frames are dropped unread from here on.
    fn drop(&mut self) {
        let empty = {
            let mut ports = self.hub.ports.lock().unwrap();
            if let Some(v) = ports.get_mut(&self.ifindex) {
                v.retain(|p| !Arc::ptr_eq(p, &self.port));
                if v.is_empty() {
                    ports.remove(&self.ifindex);
                }
            }
            ports.is_empty()
        };
        if empty {
            self.hub.left.notify_one();
        }
    }
}

/// A namespace's receive loop: every frame the filter admits goes to the server of the
/// interface it came in on (none: dropped). Ends once the hub has no server left; a socket
/// that fails ends it with an error in the log, and the next server of the namespace opens a
/// new one.
async fn pump(hub: Arc<Hub>) {
    // SAFETY: a `Pumped` holds a share of the hub, whose socket closes only when the hub is
    // dropped, after every share.
    let fd = match unsafe { packet::register(Pumped(Arc::clone(&hub))) } {
        Ok(fd) => fd,
        Err(e) => {
            tracing::error!(error = %e, "cannot register the DHCP socket with the reactor; DHCP is not served in this namespace");
            forget(&hub);
            return;
        }
    };
    loop {
        let mut guard = tokio::select! {
            () = hub.left.notified() => {
                let mut hubs = HUBS.lock().unwrap();
                if hub.ports.lock().unwrap().is_empty() {
                    // No server can join it any more: a new one opens a socket of its own.
                    if hubs.map.get(&hub.netns).is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&hub))) {
                        hubs.map.remove(&hub.netns);
                    }
                    break;
                }
                continue;
            }
            ready = fd.readable() => match ready {
                Ok(guard) => guard,
                Err(e) => {
                    tracing::error!(error = %e, "waiting for DHCP frames failed; DHCP is not served in this namespace until its next server");
                    forget(&hub);
                    break;
                }
            },
        };
        let failed = RECV_BUF.with_borrow_mut(|buf| {
            if buf.len() < RECV_BUF_LEN {
                buf.resize(RECV_BUF_LEN, 0);
            }
            for _ in 0..FRAMES_PER_WAKE {
                let received = match guard.try_io(|inner| packet::recv(inner.get_ref().0.fd(), buf))
                {
                    Err(_would_block) => break,
                    Ok(Ok(received)) => received,
                    Ok(Err(e)) if is_transient(&e) => {
                        debug!(error = %e, "transient receive error");
                        continue;
                    }
                    Ok(Err(e)) => return Some(e),
                };
                if received.outgoing {
                    continue;
                }
                let Some(port) = hub.port(received.ifindex) else {
                    continue;
                };
                // A truncated frame (MSG_TRUNC) is longer than the buffer: malformed below.
                let frame = buf.get(..received.len);
                let counters = &port.counters;
                Counters::bump(&counters.received);
                if !port.take(received.ifindex) {
                    continue;
                }
                // IPv6 on a link without it: counted and rated as the guest's, then ignored.
                let is_v6 = frame.and_then(|f| f.get(12..14))
                    == Some(&crate::frame6::ETHERTYPE_IPV6.to_be_bytes()[..]);
                if is_v6 && port.binding.v6.is_none() {
                    Counters::bump(&counters.ignored);
                    continue;
                }
                let outcome = frame.map_or(Outcome::Malformed("frame truncated"), |f| {
                    answer(f, &port.binding)
                });
                deliver(hub.fd(), received.ifindex, outcome, counters);
            }
            None
        });
        if let Some(e) = failed {
            tracing::error!(error = %e, "receiving DHCP frames failed; DHCP is not served in this namespace until its next server");
            forget(&hub);
            break;
        }
    }
}

/// The hub as its pump registers it: the registration holds a share of the hub, and with it
/// the socket open.
struct Pumped(Arc<Hub>);

impl AsRawFd for Pumped {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0.fd().as_raw_fd()
    }
}

/// Takes a failed hub out of the map, so the namespace's next server opens a new socket.
fn forget(hub: &Arc<Hub>) {
    let mut hubs = HUBS.lock().unwrap();
    if hubs
        .map
        .get(&hub.netns)
        .is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(hub)))
    {
        hubs.map.remove(&hub.netns);
    }
}

impl Port {
    /// Whether the guest's frame is within its rate; a flood is logged once per
    /// [`FLOOD_LOG_EVERY`] with what was dropped meanwhile.
    fn take(&self, ifindex: u32) -> bool {
        let now = std::time::Instant::now();
        let mut l = self.limit.lock().unwrap();
        if l.bucket.take(now) {
            return true;
        }
        Counters::bump(&self.counters.rate_limited);
        l.dropped_since += 1;
        if l.flood_logged
            .is_none_or(|t| now.duration_since(t) >= FLOOD_LOG_EVERY)
        {
            tracing::warn!(ifindex, ip = %self.binding.ip, dropped = l.dropped_since,
                "DHCP flood from the guest: frames dropped unread (logged once per 10 s)");
            l.flood_logged = Some(now);
            l.dropped_since = 0;
        }
        false
    }
}

/// Sends a reply on `ifindex`, or counts and logs why there is none.
fn deliver(fd: BorrowedFd<'_>, ifindex: u32, outcome: Outcome, counters: &Counters) {
    match outcome {
        Outcome::Malformed(why) => {
            Counters::bump(&counters.malformed);
            debug!(ifindex, why, "dropping malformed frame");
        }
        Outcome::Ignored => Counters::bump(&counters.ignored),
        Outcome::Reply(frame) => match packet::send_to(fd, ifindex, &frame) {
            Ok(()) => Counters::bump(&counters.replied),
            Err(e) => {
                // The guest retransmits; a full queue or a downed link is not fatal.
                Counters::bump(&counters.send_failed);
                debug!(ifindex, error = %e, "sending reply failed");
            }
        },
    }
}

/// Errors after which the socket keeps working: interrupted, or the link went down (the
/// kernel reports ENETDOWN once and re-arms the socket when the link comes back up).
fn is_transient(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted || e.raw_os_error() == Some(libc::ENETDOWN)
}

/// What to do with one received frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send this frame back.
    Reply(Vec<u8>),
    /// A well-formed request that gets no answer.
    Ignored,
    /// Not a well-formed IPv4/UDP/DHCP request; the reason is for debug logs.
    Malformed(&'static str),
}

/// The whole per-frame path, without the socket: parse, decode, decide, build; IPv6 frames
/// go to [`router::answer6`](crate::router::answer6). Public for the fuzz target
/// (`tests/fuzz`), which feeds it what a hostile guest could send.
pub fn answer(frame: &[u8], b: &Binding) -> Outcome {
    if frame.get(12..14) == Some(&crate::frame6::ETHERTYPE_IPV6.to_be_bytes()[..]) {
        return crate::router::answer6(frame, b);
    }
    let Some(udp) = parse_ipv4_udp_frame(frame) else {
        return Outcome::Malformed("not an IPv4/UDP frame");
    };
    if udp.dst_port != SERVER_PORT {
        return Outcome::Malformed("not for the DHCP server port");
    }
    let req = match decode_request(udp.payload) {
        Ok(req) => req,
        Err(why) => return Outcome::Malformed(why),
    };
    let Some(resp) = reply(&req, b) else {
        return Outcome::Ignored;
    };
    let Ok(mut payload) = resp.to_vec() else {
        return Outcome::Malformed("reply could not be encoded");
    };
    if payload.len() < MIN_BOOTP_LEN {
        // Zeros after the End option are Pad options.
        payload.resize(MIN_BOOTP_LEN, 0);
    }
    let (dst_mac, dst_ip) = destination(&req, &resp, b);
    Outcome::Reply(build_ipv4_udp_frame(
        b.server_mac,
        dst_mac,
        b.server_id,
        dst_ip,
        SERVER_PORT,
        CLIENT_PORT,
        &payload,
    ))
}

/// Where a reply goes. RFC 2131 section 4.1, for a server on the client's own link: a NAK is
/// always broadcast; a client without an address yet (ciaddr 0) or asking for broadcast gets
/// a broadcast; a client that has its address (renewing, INFORM) gets unicast to it.
fn destination(req: &Message, resp: &Message, b: &Binding) -> ([u8; 6], Ipv4Addr) {
    let nak = resp.opts().has_msg_type(MessageType::Nak);
    if nak || req.flags().broadcast() || req.ciaddr().is_unspecified() {
        ([0xff; 6], Ipv4Addr::BROADCAST)
    } else {
        (b.mac, req.ciaddr())
    }
}

/// DHCP options the server reads, with their required lengths (`None`: any non-zero length).
/// Everything else is dropped before decoding.
const READ_OPTIONS: [(u8, Option<usize>); 5] = [
    (53, Some(1)), // message type
    (50, Some(4)), // requested IP address
    (54, Some(4)), // server identifier
    (55, None),    // parameter request list
    (57, Some(2)), // maximum message size
];

/// Decodes a BOOTP/DHCP request from untrusted bytes.
///
/// dhcproto's decoder is written for well-formed input: some options of the wrong length trip
/// `debug_assert!`s in it (a panic in debug builds), and a `hlen` above 16 makes `chaddr()` panic.
/// So the fixed header is checked here, and the options are rebuilt to contain only those
/// this server reads, each with a checked length, before dhcproto sees them.
fn decode_request(payload: &[u8]) -> Result<Message, &'static str> {
    let header = payload
        .get(..OPTIONS_OFFSET)
        .ok_or("shorter than a BOOTP header")?;
    if header[236..240] != MAGIC_COOKIE {
        return Err("no DHCP magic cookie");
    }
    if header[2] > 16 {
        return Err("hardware address length above 16");
    }

    let mut clean = header.to_vec();
    let mut seen = [false; 256];
    let mut rest = &payload[OPTIONS_OFFSET..];
    while let Some((&code, tail)) = rest.split_first() {
        match code {
            0 => {
                rest = tail;
                continue;
            }
            255 => break,
            _ => {}
        }
        let (&len, tail) = tail.split_first().ok_or("option without length")?;
        let len = usize::from(len);
        let value = tail.get(..len).ok_or("option runs past the packet")?;
        rest = &tail[len..];

        let Some((_, want)) = READ_OPTIONS.iter().find(|(c, _)| *c == code) else {
            continue;
        };
        if want.is_some_and(|w| w != len) || len == 0 {
            return Err("option with a wrong length");
        }
        // Keep the first copy only; RFC 3396 concatenation is not needed for these options.
        if !std::mem::replace(&mut seen[usize::from(code)], true) {
            clean.push(code);
            clean.push(len as u8);
            clean.extend_from_slice(value);
        }
    }
    clean.push(255);

    Message::decode(&mut Decoder::new(&clean)).map_err(|_| "DHCP message does not decode")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::tests::full;
    use dhcproto::v4::{DhcpOption, Flags, OptionCode};

    const GUEST: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    fn discover() -> Message {
        let u = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new_with_id(7, u, u, u, u, &GUEST);
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Discover));
        m.opts_mut().insert(DhcpOption::ParameterRequestList(vec![
            OptionCode::SubnetMask,
            OptionCode::Router,
        ]));
        m
    }

    fn frame_of(payload: &[u8], src_ip: Ipv4Addr, dst_ip: Ipv4Addr) -> Vec<u8> {
        build_ipv4_udp_frame(GUEST, [0xff; 6], src_ip, dst_ip, 68, 67, payload)
    }

    fn broadcast_frame(payload: &[u8]) -> Vec<u8> {
        frame_of(payload, Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST)
    }

    fn reply_of(outcome: Outcome) -> Vec<u8> {
        match outcome {
            Outcome::Reply(bytes) => bytes,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn discover_frame_gets_broadcast_offer_frame() {
        let bytes = reply_of(answer(
            &broadcast_frame(&discover().to_vec().unwrap()),
            &full(),
        ));
        let f = parse_ipv4_udp_frame(&bytes).unwrap();
        assert_eq!(f.src_mac, full().server_mac);
        assert_eq!(f.dst_mac, [0xff; 6]);
        assert_eq!(f.src_ip, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(f.dst_ip, Ipv4Addr::BROADCAST);
        assert_eq!((f.src_port, f.dst_port), (67, 68));
        assert!(f.payload.len() >= 300);
        let offer = Message::decode(&mut Decoder::new(f.payload)).unwrap();
        assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(offer.yiaddr(), Ipv4Addr::new(10, 0, 0, 5));
    }

    #[test]
    fn renewal_is_unicast_to_ciaddr() {
        let mut req = discover();
        req.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Request));
        req.set_ciaddr(Ipv4Addr::new(10, 0, 0, 5));
        let frame = frame_of(
            &req.to_vec().unwrap(),
            Ipv4Addr::new(10, 0, 0, 5),
            Ipv4Addr::new(10, 0, 0, 1),
        );
        let bytes = reply_of(answer(&frame, &full()));
        let f = parse_ipv4_udp_frame(&bytes).unwrap();
        assert_eq!(f.dst_mac, GUEST);
        assert_eq!(f.dst_ip, Ipv4Addr::new(10, 0, 0, 5));
    }

    #[test]
    fn broadcast_flag_wins_over_ciaddr() {
        let mut req = discover();
        req.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Request));
        req.set_ciaddr(Ipv4Addr::new(10, 0, 0, 5))
            .set_flags(Flags::default().set_broadcast());
        let bytes = reply_of(answer(&broadcast_frame(&req.to_vec().unwrap()), &full()));
        assert_eq!(
            parse_ipv4_udp_frame(&bytes).unwrap().dst_ip,
            Ipv4Addr::BROADCAST
        );
    }

    #[test]
    fn nak_is_broadcast_even_when_renewing() {
        let mut req = discover();
        req.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Request));
        req.set_ciaddr(Ipv4Addr::new(10, 0, 0, 99));
        let bytes = reply_of(answer(&broadcast_frame(&req.to_vec().unwrap()), &full()));
        let f = parse_ipv4_udp_frame(&bytes).unwrap();
        assert_eq!((f.dst_mac, f.dst_ip), ([0xff; 6], Ipv4Addr::BROADCAST));
    }

    #[test]
    fn other_client_is_ignored() {
        let mut req = discover();
        req.set_chaddr(&[2, 0, 0, 0, 0, 9]);
        assert_eq!(
            answer(&broadcast_frame(&req.to_vec().unwrap()), &full()),
            Outcome::Ignored
        );
    }

    #[test]
    fn non_udp_frame_is_malformed() {
        let mut frame = broadcast_frame(&discover().to_vec().unwrap());
        frame[12] = 0x86; // ethertype 0x86dd
        frame[13] = 0xdd;
        assert!(matches!(answer(&frame, &full()), Outcome::Malformed(_)));
    }

    #[test]
    fn wrong_port_is_malformed() {
        let payload = discover().to_vec().unwrap();
        let frame = build_ipv4_udp_frame(
            GUEST,
            [0xff; 6],
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            68,
            53,
            &payload,
        );
        assert!(matches!(answer(&frame, &full()), Outcome::Malformed(_)));
    }

    #[test]
    fn short_bootp_is_malformed() {
        let payload = discover().to_vec().unwrap();
        assert_eq!(
            answer(&broadcast_frame(&payload[..200]), &full()),
            Outcome::Malformed("shorter than a BOOTP header")
        );
    }

    #[test]
    fn missing_magic_cookie_is_malformed() {
        let mut payload = discover().to_vec().unwrap();
        payload[236] = 0;
        assert_eq!(
            answer(&broadcast_frame(&payload), &full()),
            Outcome::Malformed("no DHCP magic cookie")
        );
    }

    #[test]
    fn huge_hlen_is_malformed_not_a_panic() {
        let mut payload = discover().to_vec().unwrap();
        payload[2] = 255;
        assert_eq!(
            answer(&broadcast_frame(&payload), &full()),
            Outcome::Malformed("hardware address length above 16")
        );
    }

    #[test]
    fn option_running_past_the_packet_is_malformed() {
        let mut payload = discover().to_vec().unwrap()[..240].to_vec();
        payload.extend([53, 1, 1, 12, 40, b'x']);
        assert_eq!(
            answer(&broadcast_frame(&payload), &full()),
            Outcome::Malformed("option runs past the packet")
        );
    }

    #[test]
    fn message_type_of_wrong_length_is_malformed() {
        let mut payload = discover().to_vec().unwrap()[..240].to_vec();
        payload.extend([53, 2, 1, 1, 255]);
        assert_eq!(
            answer(&broadcast_frame(&payload), &full()),
            Outcome::Malformed("option with a wrong length")
        );
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_steady_rate() {
        let mut b = Bucket::new();
        let t0 = b.last;
        let burst = (0..100).filter(|_| b.take(t0)).count();
        assert_eq!(burst, BURST as usize);
        // One second later: PER_SEC more, no more.
        let t1 = t0 + std::time::Duration::from_secs(1);
        assert_eq!((0..100).filter(|_| b.take(t1)).count(), PER_SEC as usize);
        // Never more than the burst, however long it was quiet.
        let t2 = t1 + std::time::Duration::from_secs(3600);
        assert_eq!((0..100).filter(|_| b.take(t2)).count(), BURST as usize);
    }

    #[test]
    fn options_that_trip_dhcproto_are_dropped_not_decoded() {
        // In a debug build dhcproto panics on 81 (client FQDN) with length 1
        // (`debug_assert!(len >= 3)`) and on 80 (rapid commit) with length 2
        // (`debug_assert!(len == 0)`); checked by hand against dhcproto 0.15.0. Neither
        // reaches its decoder.
        let mut payload = discover().to_vec().unwrap()[..240].to_vec();
        payload.extend([81, 1, 0, 80, 2, 0, 0, 53, 1, 1, 255]);
        let bytes = reply_of(answer(&broadcast_frame(&payload), &full()));
        assert!(parse_ipv4_udp_frame(&bytes).is_some());
    }

    #[test]
    fn missing_end_option_is_accepted() {
        let mut payload = discover().to_vec().unwrap()[..240].to_vec();
        payload.extend([53, 1, 1]);
        assert!(matches!(
            answer(&broadcast_frame(&payload), &full()),
            Outcome::Reply(_)
        ));
    }

    #[test]
    fn garbage_never_panics() {
        // A tiny xorshift generator: deterministic, no dependency.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid = discover().to_vec().unwrap();
        for _ in 0..20_000 {
            let mut payload = valid.clone();
            let flips = next() % 8 + 1;
            for _ in 0..flips {
                let i = (next() as usize) % payload.len();
                payload[i] = next() as u8;
            }
            let cut = (next() as usize) % (payload.len() + 1);
            payload.truncate(cut.max(200));
            // Any outcome is fine; panicking is not.
            let _outcome = answer(&broadcast_frame(&payload), &full());
        }
    }

    #[test]
    fn invalid_binding_is_refused_before_any_syscall() {
        let b = Binding {
            prefix_len: 40,
            ..full()
        };
        assert!(matches!(Server::bind(1, b), Err(Error::InvalidBinding(_))));
    }

    #[test]
    fn ifindex_zero_is_refused() {
        assert!(matches!(Server::bind(0, full()), Err(Error::Ifindex(0))));
    }
}
