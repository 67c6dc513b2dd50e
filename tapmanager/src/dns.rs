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
//! nothing and the daemon a bounded number of sockets. An upstream that does not answer within [`UPSTREAM_TIMEOUT`]
//! is skipped for the next; when none answers the guest gets SERVFAIL.

use crate::config::DnsForward;
use ipnet::Ipv4Net;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

/// Queries of one network waiting for an upstream at once.
pub const IN_FLIGHT: usize = 256;
/// Queries of one guest address (UDP and TCP together) waiting for an upstream at once.
pub const PER_GUEST: usize = 32;
/// How long one upstream has to answer.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a guest's TCP connection may stay idle.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Dropped queries are counted and logged at most this often (a flood must not flood the log).
const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("cannot listen for DNS on {addr} (does another DNS server hold port 53 on every address?)")]
pub struct BindError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// The sockets of one network's forwarder, bound before the daemon answers anyone.
#[derive(Debug)]
pub struct Forwarder {
    udp: UdpSocket,
    tcp: TcpListener,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    subnet: Ipv4Net,
    upstreams: Upstreams,
    in_flight: Arc<Semaphore>,
    per_guest: Mutex<std::collections::HashMap<IpAddr, usize>>,
    /// Queries dropped since the last log line, and when that was.
    dropped: Mutex<(u64, Option<std::time::Instant>)>,
}

/// One query's place among those in flight: given back when dropped.
struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    shared: Arc<Shared>,
    guest: IpAddr,
}

impl Shared {
    /// A slot for a query of `guest`, if neither its share nor the network's is used up;
    /// otherwise the query is dropped, counted, and logged once per [`DROP_LOG_EVERY`].
    fn slot(self: &Arc<Self>, guest: IpAddr) -> Option<Slot> {
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
}

impl Shared {
    fn dropped(&self, guest: IpAddr) {
        let now = std::time::Instant::now();
        let mut d = self.dropped.lock().unwrap_or_else(|e| e.into_inner());
        d.0 += 1;
        if d.1.is_none_or(|t| now.duration_since(t) >= DROP_LOG_EVERY) {
            tracing::warn!(%guest, dropped = d.0, subnet = %self.subnet,
                "DNS forwarder: too many queries in flight, queries dropped (logged once per 10 s)");
            *d = (0, Some(now));
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per = self
            .shared
            .per_guest
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = per.get_mut(&self.guest) {
            *n -= 1;
            if *n == 0 {
                per.remove(&self.guest);
            }
        }
    }
}

impl Forwarder {
    /// Binds UDP and TCP port 53 on `gateway` (needs CAP_NET_BIND_SERVICE). Must run on a
    /// thread in the daemon's network namespace, inside the runtime.
    pub fn bind(gateway: Ipv4Net, cfg: &DnsForward) -> Result<Forwarder, BindError> {
        let addr = SocketAddr::new(IpAddr::V4(gateway.addr()), 53);
        let err = |source| BindError { addr, source };
        let udp = std::net::UdpSocket::bind(addr).map_err(err)?;
        udp.set_nonblocking(true).map_err(err)?;
        let tcp = std::net::TcpListener::bind(addr).map_err(err)?;
        tcp.set_nonblocking(true).map_err(err)?;
        Ok(Forwarder {
            udp: UdpSocket::from_std(udp).map_err(err)?,
            tcp: TcpListener::from_std(tcp).map_err(err)?,
            shared: Arc::new(Shared {
                subnet: gateway.trunc(),
                upstreams: Upstreams::new(cfg, gateway.addr()),
                in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
                per_guest: Mutex::new(std::collections::HashMap::new()),
                dropped: Mutex::new((0, None)),
            }),
        })
    }

    /// Serves until the daemon exits.
    pub fn spawn(self) {
        let Forwarder { udp, tcp, shared } = self;
        let udp = Arc::new(udp);
        let s = shared.clone();
        tokio::spawn(async move { serve_udp(udp, s).await });
        tokio::spawn(async move { serve_tcp(tcp, shared).await });
    }
}

fn from_guest(subnet: &Ipv4Net, peer: SocketAddr) -> bool {
    matches!(peer.ip(), IpAddr::V4(ip) if subnet.contains(&ip))
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
        if !from_guest(&shared.subnet, peer) || !is_query(query) {
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
        if !from_guest(&shared.subnet, peer) {
            continue;
        }
        let Some(slot) = shared.slot(peer.ip()) else {
            continue; // dropping the stream closes it
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = serve_tcp_client(stream, &shared).await; // a guest's broken connection
            drop(slot);
        });
    }
}

/// Length-prefixed queries on one connection, answered in order, until it idles or closes.
async fn serve_tcp_client(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    loop {
        let Ok(query) = tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await else {
            return Ok(());
        };
        let query = query?;
        if !is_query(&query) {
            return Ok(());
        }
        let answer = match relay_tcp(&shared.upstreams.current(), &query).await {
            Some(a) => a,
            None => servfail(&query),
        };
        write_framed(&mut stream, &answer).await?;
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
