//! The DNS forwarder of a bridge network with `dns_forward = true`: UDP and TCP on port 53 of
//! the gateway address, relaying each query to the host's resolvers and the answer back.
//!
//! Why a forwarder and not just the host's nameservers in DHCP: a desktop resolves through
//! systemd-resolved's stub at 127.0.0.53, which a guest cannot reach. The daemon can, and it
//! follows the host's `resolv.conf` as it changes (a laptop moving between networks), so the
//! guest keeps one DNS server, the gateway, and gets the host's answers (split DNS, VPNs).
//!
//! Only the guests' subnet is served (not an open resolver). Each query goes out on a fresh
//! socket connected to the upstream, so only the upstream's answer is taken. At most
//! [`PER_GUEST`] queries of one guest address and [`IN_FLIGHT`] of the whole network wait for
//! an answer at once: past that, queries are dropped, so a flooding guest costs the others
//! nothing and the daemon a bounded number of sockets. An upstream that does not answer within
//! [`UPSTREAM_TIMEOUT`] is skipped for the next; when none answers the guest gets SERVFAIL.
//!
//! A TCP connection takes one of those places only while one of its queries waits upstream:
//! a connection that sits idle must not hold what UDP queries of other guests need (security
//! audit, finding 5: one member's idle connections took all 256). Connections are capped on
//! their own: [`TCP_PER_GUEST`] of one guest address and [`TCP_PER_UID`] of all the guests one
//! uid attached ([`GuestOwners`], kept by the daemon), and one that asks nothing within
//! [`TCP_FIRST_QUERY`] is closed. A refused connection is closed at once, counted, and logged
//! once per 10 s, as dropped queries are.

use crate::config::DnsForward;
use ipnet::Ipv4Net;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

/// Queries of one network waiting for an upstream at once.
pub const IN_FLIGHT: usize = 256;
/// Queries of one guest address (UDP and TCP together) waiting for an upstream at once.
pub const PER_GUEST: usize = 32;
/// How long one upstream has to answer.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Open TCP connections of one guest address at once.
pub const TCP_PER_GUEST: usize = 8;
/// Open TCP connections of all the guests one uid attached, at once.
pub const TCP_PER_UID: usize = 32;
/// How long a new TCP connection may wait before its first query.
pub const TCP_FIRST_QUERY: Duration = Duration::from_secs(2);
/// How long a guest's TCP connection may stay idle between queries, or take to read an answer.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Dropped queries and refused connections are counted and logged at most this often (a
/// flood must not flood the log).
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for DNS on {addr} (does another DNS server hold port 53 on every address?)")]
pub struct BindError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// The sockets of one network's forwarder (on the IPv4 gateway, and on the IPv6 one when the
/// network has IPv6), bound before the daemon answers anyone.
#[derive(Debug)]
pub struct Forwarder {
    sockets: Vec<(UdpSocket, TcpListener)>,
    shared: Arc<Shared>,
}

/// Which uid attached each guest address of one network: the daemon fills it in on attach
/// and adoption and empties it on release; the forwarder reads it to count a uid's TCP
/// connections. A clone shares the map.
#[derive(Debug, Clone, Default)]
pub struct GuestOwners(Arc<Mutex<HashMap<IpAddr, (u32, IpAddr)>>>);

impl GuestOwners {
    /// `guest` is attached by `uid`.
    pub fn insert(&self, guest: impl Into<IpAddr>, uid: u32) {
        let guest = guest.into();
        self.lock().insert(guest, (uid, guest));
    }

    /// `alias` is another address of `guest` (a dual-stack guest's IPv6 one), attached by
    /// `uid`: its queries and connections count against `guest`'s share, not a second one.
    pub fn insert_alias(&self, alias: impl Into<IpAddr>, guest: impl Into<IpAddr>, uid: u32) {
        self.lock().insert(alias.into(), (uid, guest.into()));
    }

    /// `guest` is no longer attached by `uid` (an entry of another uid stays).
    pub fn remove(&self, guest: impl Into<IpAddr>, uid: u32) {
        let guest = guest.into();
        let mut map = self.lock();
        if map.get(&guest).map(|(u, _)| *u) == Some(uid) {
            map.remove(&guest);
        }
    }

    fn owner(&self, guest: IpAddr) -> Option<u32> {
        self.lock().get(&guest).map(|(uid, _)| *uid)
    }

    /// The address whose share `peer` uses: its guest's first address, or itself.
    fn canonical(&self, peer: IpAddr) -> IpAddr {
        self.lock().get(&peer).map_or(peer, |(_, c)| *c)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, (u32, IpAddr)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug)]
struct Shared {
    subnet: Ipv4Net,
    /// The network's IPv6 prefix, when it has one (the forwarder answers there too).
    subnet6: Option<ipnet::Ipv6Net>,
    upstreams: Upstreams,
    in_flight: Arc<Semaphore>,
    per_guest: Mutex<HashMap<IpAddr, usize>>,
    owners: GuestOwners,
    connections: Mutex<Connections>,
    dropped: RateLog,
    refused: RateLog,
}

/// One query's place among those in flight: given back when dropped.
struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    shared: Arc<Shared>,
    guest: IpAddr,
}

/// One open TCP connection's place in [`Connections`]: given back when dropped.
struct Connection {
    shared: Arc<Shared>,
    guest: IpAddr,
    uid: Option<u32>,
}

/// The open TCP connections, counted per guest address and per owning uid.
#[derive(Debug, Default)]
struct Connections {
    per_guest: HashMap<IpAddr, usize>,
    per_uid: HashMap<u32, usize>,
}

impl Connections {
    /// Counts one more connection of `guest` (attached by `uid`, when known) if neither its
    /// share nor its uid's is used up. A guest nobody is known to have attached has its own
    /// share only.
    fn admit(&mut self, guest: IpAddr, uid: Option<u32>) -> bool {
        let of_guest = self.per_guest.get(&guest).copied().unwrap_or(0);
        let of_uid = uid.map_or(0, |u| self.per_uid.get(&u).copied().unwrap_or(0));
        if of_guest >= TCP_PER_GUEST || of_uid >= TCP_PER_UID {
            return false;
        }
        *self.per_guest.entry(guest).or_insert(0) += 1;
        if let Some(u) = uid {
            *self.per_uid.entry(u).or_insert(0) += 1;
        }
        true
    }

    /// Forgets one connection [`Connections::admit`] counted.
    fn close(&mut self, guest: IpAddr, uid: Option<u32>) {
        decrement(&mut self.per_guest, &guest);
        if let Some(u) = uid {
            decrement(&mut self.per_uid, &u);
        }
    }
}

/// One less of `key`; a count of 0 is removed, so the maps hold only what is open.
fn decrement<K: std::hash::Hash + Eq>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

/// Events counted between log lines, so that one line at most every [`LOG_EVERY`] says how
/// many there were.
#[derive(Debug, Default)]
struct RateLog(Mutex<(u64, Option<Instant>)>);

impl RateLog {
    /// Counts one event at `now`; returns the count to log (and starts again from 0) when no
    /// line was logged in the last [`LOG_EVERY`].
    fn count(&self, now: Instant) -> Option<u64> {
        let mut d = self.0.lock().unwrap_or_else(|e| e.into_inner());
        d.0 += 1;
        if d.1.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            return None;
        }
        let n = d.0;
        *d = (0, Some(now));
        Some(n)
    }
}

impl Shared {
    fn new(gateway: Ipv4Net, cfg: &DnsForward, owners: GuestOwners) -> Shared {
        Shared {
            subnet: gateway.trunc(),
            subnet6: None,
            upstreams: Upstreams::new(cfg, gateway.addr()),
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
            per_guest: Mutex::new(HashMap::new()),
            owners,
            connections: Mutex::new(Connections::default()),
            dropped: RateLog::default(),
            refused: RateLog::default(),
        }
    }

    /// A slot for a query of `guest`, if neither its share nor the network's is used up;
    /// otherwise the query is dropped, counted, and logged once per [`LOG_EVERY`].
    fn slot(self: &Arc<Self>, guest: IpAddr) -> Option<Slot> {
        let guest = self.owners.canonical(guest);
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            self.dropped(guest);
            return None;
        };
        let mut per = self.per_guest.lock().unwrap_or_else(|e| e.into_inner());
        let n = per.entry(guest).or_insert(0);
        if *n >= PER_GUEST {
            drop(per);
            self.dropped(guest);
            return None;
        }
        *n += 1;
        Some(Slot {
            _permit: permit,
            shared: self.clone(),
            guest,
        })
    }

    fn dropped(&self, guest: IpAddr) {
        if let Some(dropped) = self.dropped.count(Instant::now()) {
            tracing::warn!(%guest, dropped, subnet = %self.subnet,
                "DNS forwarder: too many queries in flight, queries dropped (logged once per 10 s)");
        }
    }

    /// A place for a new TCP connection of `guest`, if neither its share nor that of the uid
    /// that attached it is used up; otherwise the connection is refused, counted, and logged
    /// once per [`LOG_EVERY`].
    fn connection(self: &Arc<Self>, guest: IpAddr) -> Option<Connection> {
        let guest = self.owners.canonical(guest);
        let uid = self.owners.owner(guest);
        let admitted = self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(guest, uid);
        if !admitted {
            if let Some(refused) = self.refused.count(Instant::now()) {
                tracing::warn!(%guest, uid, refused, subnet = %self.subnet,
                    "DNS forwarder: too many TCP connections, connections refused (logged once per 10 s)");
            }
            return None;
        }
        Some(Connection {
            shared: self.clone(),
            guest,
            uid,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per = self
            .shared
            .per_guest
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        decrement(&mut per, &self.guest);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .close(self.guest, self.uid);
    }
}

impl Forwarder {
    /// Binds UDP and TCP port 53 on `gateway` and on `gateway6` (needs
    /// CAP_NET_BIND_SERVICE). Must run on a thread in the daemon's network namespace, inside
    /// the runtime. `owners` says which uid attached each guest, for the per-uid cap of TCP
    /// connections.
    pub fn bind(
        gateway: Ipv4Net,
        gateway6: Option<ipnet::Ipv6Net>,
        cfg: &DnsForward,
        owners: GuestOwners,
    ) -> Result<Forwarder, BindError> {
        let addrs = std::iter::once(IpAddr::V4(gateway.addr()))
            .chain(gateway6.map(|g| IpAddr::V6(g.addr())));
        let mut sockets = Vec::new();
        for ip in addrs {
            let addr = SocketAddr::new(ip, 53);
            let err = |source| BindError { addr, source };
            let udp = std::net::UdpSocket::bind(addr).map_err(err)?;
            udp.set_nonblocking(true).map_err(err)?;
            let tcp = std::net::TcpListener::bind(addr).map_err(err)?;
            tcp.set_nonblocking(true).map_err(err)?;
            sockets.push((
                UdpSocket::from_std(udp).map_err(err)?,
                TcpListener::from_std(tcp).map_err(err)?,
            ));
        }
        let mut shared = Shared::new(gateway, cfg, owners);
        shared.subnet6 = gateway6.map(|g| g.trunc());
        Ok(Forwarder {
            sockets,
            shared: Arc::new(shared),
        })
    }

    /// Serves until the daemon exits.
    pub fn spawn(self) {
        let Forwarder { sockets, shared } = self;
        for (udp, tcp) in sockets {
            let udp = Arc::new(udp);
            let (s, t) = (shared.clone(), shared.clone());
            tokio::spawn(async move { serve_udp(udp, s).await });
            tokio::spawn(async move { serve_tcp(tcp, t).await });
        }
    }
}

/// Whether `peer` is one of the network's guests (its IPv4 subnet or IPv6 prefix).
fn from_guest(shared: &Shared, peer: SocketAddr) -> bool {
    match peer.ip() {
        IpAddr::V4(ip) => shared.subnet.contains(&ip),
        IpAddr::V6(ip) => shared.subnet6.is_some_and(|p| p.contains(&ip)),
    }
}

async fn serve_udp(sock: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "DNS forwarder: receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let query = &buf[..n];
        if !from_guest(&shared, peer) || !is_query(query) {
            continue;
        }
        // The slot travels with the task: freed when the answer (or SERVFAIL) is sent.
        let Some(slot) = shared.slot(peer.ip()) else {
            continue;
        };
        let query = query.to_vec();
        let (sock, shared) = (sock.clone(), shared.clone());
        tokio::spawn(async move {
            let answer = match relay_udp(&shared.upstreams.current(), &query).await {
                Some(a) => a,
                None => servfail(&query),
            };
            let _ = sock.send_to(&answer, peer).await; // the guest may be gone
            drop(slot);
        });
    }
}

async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "DNS forwarder: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !from_guest(&shared, peer) {
            continue;
        }
        // The connection's place travels with the task; a refused one is closed here, as
        // the stream is dropped.
        let Some(connection) = shared.connection(peer.ip()) else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = serve_tcp_client(stream, peer.ip(), &shared).await; // a guest's broken connection
            drop(connection);
        });
    }
}

/// Length-prefixed queries on one connection, answered in order, until it idles or closes.
/// Each query holds a slot only while it waits upstream: the slot is taken once the query is
/// read, and given back when its answer (or SERVFAIL) is in hand, before it is written, so a
/// guest that does not read its answers holds no slot either. No slot: the connection is
/// closed, the query dropped as a UDP one would be.
async fn serve_tcp_client(
    mut stream: TcpStream,
    guest: IpAddr,
    shared: &Arc<Shared>,
) -> std::io::Result<()> {
    let mut idle = TCP_FIRST_QUERY;
    loop {
        let Ok(query) = tokio::time::timeout(idle, read_framed(&mut stream)).await else {
            return Ok(());
        };
        let query = query?;
        if !is_query(&query) {
            return Ok(());
        }
        let Some(slot) = shared.slot(guest) else {
            return Ok(());
        };
        let answer = match relay_tcp(&shared.upstreams.current(), &query).await {
            Some(a) => a,
            None => servfail(&query),
        };
        drop(slot);
        tokio::time::timeout(TCP_IDLE, write_framed(&mut stream, &answer))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        idle = TCP_IDLE;
    }
}

async fn read_framed(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = s.read_u16().await?;
    let mut msg = vec![0u8; usize::from(len)];
    s.read_exact(&mut msg).await?;
    Ok(msg)
}

async fn write_framed(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| std::io::Error::other("answer too long"))?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    s.write_all(&out).await
}

/// Asks each upstream in turn; the first answer with the query's id wins.
async fn relay_udp(upstreams: &[SocketAddr], query: &[u8]) -> Option<Vec<u8>> {
    for up in upstreams {
        let local: SocketAddr = match up {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let attempt = async {
            let sock = UdpSocket::bind(local).await.ok()?;
            sock.connect(up).await.ok()?;
            sock.send(query).await.ok()?;
            let mut buf = vec![0u8; 65535];
            loop {
                let n = sock.recv(&mut buf).await.ok()?;
                if n >= 12 && buf[..2] == query[..2] {
                    return Some(buf[..n].to_vec());
                }
            }
        };
        match tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
            Ok(Some(answer)) => return Some(answer),
            _ => tracing::debug!(upstream = %up, "DNS forwarder: no answer over UDP"),
        }
    }
    None
}

async fn relay_tcp(upstreams: &[SocketAddr], query: &[u8]) -> Option<Vec<u8>> {
    for up in upstreams {
        let attempt = async {
            let mut s = TcpStream::connect(up).await.ok()?;
            write_framed(&mut s, query).await.ok()?;
            read_framed(&mut s).await.ok()
        };
        match tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
            Ok(Some(answer)) if answer.len() >= 12 && answer[..2] == query[..2] => {
                return Some(answer)
            }
            _ => tracing::debug!(upstream = %up, "DNS forwarder: no answer over TCP"),
        }
    }
    None
}

/// A DNS message with a header, QR clear (a query), and one question at most.
fn is_query(msg: &[u8]) -> bool {
    msg.len() >= 12 && msg[2] & 0x80 == 0 && u16::from_be_bytes([msg[4], msg[5]]) <= 1
}

/// SERVFAIL for `query`: its header and question, QR and RA set, no records.
pub fn servfail(query: &[u8]) -> Vec<u8> {
    let end = question_end(query).unwrap_or(12);
    let mut a = query[..end.min(query.len())].to_vec();
    a[2] = (a[2] & 0x79) | 0x80; // QR, keep opcode and RD
    a[3] = 0x80 | 2; // RA, RCODE 2
    if end == 12 {
        a[4..6].copy_from_slice(&[0, 0]); // the question could not be read: none
    }
    a[6..12].copy_from_slice(&[0; 6]);
    a
}

/// Where the (single) question of `msg` ends, if it has one that parses.
fn question_end(msg: &[u8]) -> Option<usize> {
    if u16::from_be_bytes([*msg.get(4)?, *msg.get(5)?]) != 1 {
        return None;
    }
    let mut i = 12;
    loop {
        let len = usize::from(*msg.get(i)?);
        if len == 0 {
            i += 1;
            break;
        }
        if len & 0xc0 != 0 {
            return None; // no compression in a question of a query
        }
        i += 1 + len;
    }
    (i + 4 <= msg.len()).then_some(i + 4)
}

/// The upstream servers: fixed, or `resolv.conf`'s nameservers, read again when it changes.
#[derive(Debug)]
struct Upstreams {
    fixed: Vec<SocketAddr>,
    resolv_conf: PathBuf,
    /// Our own address: never an upstream (a loop).
    own: Ipv4Addr,
    cache: Mutex<(Option<SystemTime>, Vec<SocketAddr>)>,
}

impl Upstreams {
    fn new(cfg: &DnsForward, own: Ipv4Addr) -> Upstreams {
        Upstreams {
            fixed: cfg
                .upstream
                .iter()
                .map(|a| SocketAddr::new(IpAddr::V4(*a), 53))
                .collect(),
            resolv_conf: cfg.resolv_conf.clone(),
            own,
            cache: Mutex::new((None, Vec::new())),
        }
    }

    fn current(&self) -> Vec<SocketAddr> {
        if !self.fixed.is_empty() {
            return self.fixed.clone();
        }
        let mtime = std::fs::metadata(&self.resolv_conf)
            .and_then(|m| m.modified())
            .ok();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if mtime.is_none() || cache.0 != mtime {
            let text = std::fs::read_to_string(&self.resolv_conf).unwrap_or_default();
            let servers = nameservers(&text, self.own);
            if servers.is_empty() {
                tracing::warn!(file = %self.resolv_conf.display(), "DNS forwarder: no nameserver to forward to");
            }
            *cache = (mtime, servers);
        }
        cache.1.clone()
    }
}

/// The `nameserver` lines of a resolv.conf, but `own`.
pub fn nameservers(text: &str, own: Ipv4Addr) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        // A link-local IPv6 server with a zone (`fe80::1%eth0`) cannot be parsed as IpAddr.
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .filter(|a| *a != IpAddr::V4(own))
        .map(|a| SocketAddr::new(a, 53))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `example.test A` with id 0x1234 and an EDNS OPT record after the question.
    fn query() -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
        q.extend_from_slice(b"\x07example\x04test\x00\x00\x01\x00\x01");
        q.extend_from_slice(&[0, 0, 41, 0x10, 0, 0, 0, 0, 0, 0, 0]);
        q
    }

    #[test]
    fn servfail_keeps_the_id_and_question_and_drops_the_rest() {
        let q = query();
        let a = servfail(&q);
        assert_eq!(&a[..2], &[0x12, 0x34]);
        assert_eq!(a[2], 0x81, "QR and RD");
        assert_eq!(a[3], 0x82, "RA, SERVFAIL");
        assert_eq!(&a[4..12], &[0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&a[12..], b"\x07example\x04test\x00\x00\x01\x00\x01");
        // A question that does not parse: the header alone, with no question.
        let a = servfail(&q[..20]);
        assert_eq!(a.len(), 12);
        assert_eq!(&a[4..6], &[0, 0]);
    }

    #[test]
    fn only_queries_are_relayed() {
        let q = query();
        assert!(is_query(&q));
        let mut answer = q.clone();
        answer[2] |= 0x80;
        assert!(!is_query(&answer));
        assert!(!is_query(&q[..11]));
    }

    fn shared(owners: GuestOwners) -> Arc<Shared> {
        let cfg = DnsForward {
            upstream: vec!["192.0.2.53".parse().unwrap()],
            resolv_conf: PathBuf::from("/nonexistent"),
        };
        Arc::new(Shared::new("10.88.0.1/24".parse().unwrap(), &cfg, owners))
    }

    fn guest(i: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 88, 0, 10 + i))
    }

    #[test]
    fn queries_hold_a_share_of_one_guest_and_of_the_network() {
        let s = shared(GuestOwners::default());
        // Eight guests take their whole share each: the network's 256.
        let held: Vec<Vec<Slot>> = (0..8)
            .map(|g| (0..PER_GUEST).map_while(|_| s.slot(guest(g))).collect())
            .collect();
        assert_eq!(held.iter().map(Vec::len).sum::<usize>(), IN_FLIGHT);
        assert!(s.slot(guest(9)).is_none(), "past the network's total");
        let mut held = held;
        held[0].pop();
        assert!(s.slot(guest(1)).is_none(), "past guest 1's share");
        assert!(
            s.slot(guest(9)).is_some(),
            "a slot given back is free again"
        );
    }

    #[test]
    fn tcp_connections_are_capped_per_guest_and_per_owning_uid() {
        let owners = GuestOwners::default();
        let s = shared(owners.clone());
        for g in 0..5 {
            owners.insert(Ipv4Addr::new(10, 88, 0, 10 + g), 1000);
        }
        owners.insert(Ipv4Addr::new(10, 88, 0, 20), 1001);
        let open = |g: u8, n: usize| -> Vec<Connection> {
            (0..n).map_while(|_| s.connection(guest(g))).collect()
        };
        let first = open(0, TCP_PER_GUEST + 1);
        assert_eq!(first.len(), TCP_PER_GUEST, "one guest's share");
        // Four guests of uid 1000 use up its share: its fifth guest gets none, another uid's
        // guest and a guest nobody is known to have attached get theirs.
        let rest: Vec<_> = (1..4).map(|g| open(g, TCP_PER_GUEST)).collect();
        assert_eq!(
            rest.iter().map(Vec::len).sum::<usize>(),
            TCP_PER_UID - TCP_PER_GUEST
        );
        assert_eq!(open(4, 1).len(), 0, "past uid 1000's share");
        assert_eq!(open(10, TCP_PER_GUEST).len(), TCP_PER_GUEST, "uid 1001");
        assert_eq!(
            open(30, TCP_PER_GUEST + 1).len(),
            TCP_PER_GUEST,
            "no known owner"
        );
        // A closed connection gives its place back to its guest and its uid.
        drop(first);
        assert_eq!(open(4, TCP_PER_GUEST).len(), TCP_PER_GUEST);
        // None of them holds a query's slot.
        assert_eq!(s.in_flight.available_permits(), IN_FLIGHT);
    }

    #[test]
    fn a_dual_stack_guests_two_addresses_share_one_share() {
        let owners = GuestOwners::default();
        let s = shared(owners.clone());
        let v6: std::net::Ipv6Addr = "fd88::a".parse().unwrap();
        owners.insert(Ipv4Addr::new(10, 88, 0, 10), 1000);
        owners.insert_alias(v6, Ipv4Addr::new(10, 88, 0, 10), 1000);
        let held: Vec<Slot> = (0..PER_GUEST).map_while(|_| s.slot(guest(0))).collect();
        assert_eq!(held.len(), PER_GUEST);
        assert!(
            s.slot(IpAddr::V6(v6)).is_none(),
            "its IPv6 address has no share of its own"
        );
        drop(held);
        assert!(s.slot(IpAddr::V6(v6)).is_some());
    }

    #[test]
    fn a_released_address_no_longer_counts_for_its_uid() {
        let owners = GuestOwners::default();
        let ip = Ipv4Addr::new(10, 88, 0, 10);
        owners.insert(ip, 1000);
        owners.remove(ip, 1001);
        assert_eq!(
            owners.owner(IpAddr::V4(ip)),
            Some(1000),
            "another uid's entry stays"
        );
        owners.remove(ip, 1000);
        assert_eq!(owners.owner(IpAddr::V4(ip)), None);
    }

    #[test]
    fn refusals_are_logged_once_per_10_s_with_their_count() {
        let log = RateLog::default();
        let t = Instant::now();
        let got: Vec<_> = [0, 1, 9, 10, 11, 25]
            .map(|s| log.count(t + Duration::from_secs(s)))
            .into();
        assert_eq!(got, vec![Some(1), None, None, Some(3), None, Some(2)]);
    }

    /// An upstream on loopback that reads one query over TCP, says so, and answers it (an
    /// empty NOERROR answer with its id) only when told to.
    async fn held_upstream() -> (
        SocketAddr,
        tokio::sync::oneshot::Receiver<()>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let up = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = up.local_addr().unwrap();
        let (asked_tx, asked) = tokio::sync::oneshot::channel();
        let (answer, answer_rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut c, _) = up.accept().await.unwrap();
            let q = read_framed(&mut c).await.unwrap();
            asked_tx.send(()).unwrap();
            answer_rx.await.unwrap();
            let mut a = q[..12].to_vec();
            a[2] |= 0x80;
            write_framed(&mut c, &a).await.unwrap();
        });
        (addr, asked, answer)
    }

    /// Whether the peer has closed `c` (its end is readable, with nothing to read).
    async fn closed(c: &mut TcpStream) -> bool {
        let mut b = [0u8; 1];
        matches!(
            tokio::time::timeout(Duration::from_millis(20), c.read(&mut b)).await,
            Ok(Ok(0) | Err(_))
        )
    }

    #[tokio::test]
    async fn a_tcp_query_holds_a_slot_only_while_it_waits_upstream() {
        let (upstream, asked, answer) = held_upstream().await;
        let mut s = Shared::new(
            "127.0.0.1/8".parse().unwrap(),
            &DnsForward {
                upstream: Vec::new(),
                resolv_conf: PathBuf::from("/nonexistent"),
            },
            GuestOwners::default(),
        );
        s.upstreams.fixed = vec![upstream];
        let s = Arc::new(s);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_tcp(listener, s.clone()));

        // Idle connections up to the guest's share are kept, and hold no slot; past it they
        // are closed at once (accepted in the order they were made). All of this well within
        // the 2 s a connection has for its first query.
        let mut idle = Vec::new();
        for _ in 0..TCP_PER_GUEST + 2 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut closed_now = Vec::new();
        for c in &mut idle {
            closed_now.push(closed(c).await);
        }
        assert_eq!(
            closed_now,
            [vec![false; TCP_PER_GUEST], vec![true; 2]].concat()
        );
        assert_eq!(s.in_flight.available_permits(), IN_FLIGHT);

        // A query takes a slot while the upstream holds it, and gives it back when answered.
        let c = &mut idle[0];
        write_framed(c, &query()).await.unwrap();
        asked.await.unwrap();
        assert_eq!(s.in_flight.available_permits(), IN_FLIGHT - 1);
        answer.send(()).unwrap();
        let a = read_framed(c).await.unwrap();
        assert_eq!(&a[..3], &[0x12, 0x34, 0x81]);
        assert_eq!(s.in_flight.available_permits(), IN_FLIGHT);
    }

    #[test]
    fn nameservers_are_read_as_resolv_conf_has_them() {
        let text = "# generated\nnameserver 127.0.0.53\noptions edns0 trust-ad\n\
                    search example.test\nnameserver  10.88.0.1\nnameserver 2001:db8::53\n\
                    nameserver fe80::1%eth0\n";
        let own: Ipv4Addr = "10.88.0.1".parse().unwrap();
        let got = nameservers(text, own);
        assert_eq!(
            got,
            vec![
                "127.0.0.53:53".parse::<SocketAddr>().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
    }
}
