//! A stand-in DNS server for the DNS forwarder's tests: it answers `A` queries for one name,
//! NXDOMAIN for any other, on UDP and TCP port 53 of one address inside a test namespace, and
//! counts what it was asked. Also the few bytes of DNS a test needs to ask and to read.

use crate::sandbox::Netns;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct FakeDns {
    stop: Arc<AtomicBool>,
    asked: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeDns {
    /// Serves `name` -> `answer` on `addr`:53 in `ns` until dropped.
    pub fn start(ns: &Netns, addr: Ipv4Addr, name: &str, answer: Ipv4Addr) -> FakeDns {
        FakeDns::start_with(ns, addr, name, answer, false)
    }

    /// [`FakeDns::start`]; with `silent`, queries for other names get no answer at all (an
    /// upstream that times out), and are counted all the same.
    pub fn start_with(
        ns: &Netns,
        addr: Ipv4Addr,
        name: &str,
        answer: Ipv4Addr,
        silent: bool,
    ) -> FakeDns {
        let (udp, tcp) = ns.run_in(move || {
            let udp = UdpSocket::bind((addr, 53)).expect("bind UDP 53");
            let tcp = TcpListener::bind((addr, 53)).expect("bind TCP 53");
            (udp, tcp)
        });
        udp.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        tcp.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(AtomicUsize::new(0));
        let (s, a, name) = (stop.clone(), asked.clone(), name.to_owned());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = udp.recv_from(&mut buf) {
                    a.fetch_add(1, Ordering::Relaxed);
                    let known = question(&buf[..n]).is_some_and(|(q, _)| q == name);
                    if known || !silent {
                        let _ = udp.send_to(&respond(&buf[..n], &name, answer), peer);
                    }
                }
                if let Ok((mut c, _)) = tcp.accept() {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut len = [0u8; 2];
                    if c.read_exact(&mut len).is_ok() {
                        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                        if c.read_exact(&mut q).is_ok() {
                            a.fetch_add(1, Ordering::Relaxed);
                            let r = respond(&q, &name, answer);
                            let mut out = (r.len() as u16).to_be_bytes().to_vec();
                            out.extend_from_slice(&r);
                            let _ = c.write_all(&out);
                        }
                    }
                }
            }
        });
        FakeDns {
            stop,
            asked,
            thread: Some(thread),
        }
    }

    /// Queries received so far.
    pub fn asked(&self) -> usize {
        self.asked.load(Ordering::Relaxed)
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join(); // a panicked server thread has nothing left to clean
        }
    }
}

/// A recursive `A` query for `name` with `id`.
pub fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The name asked in `q`'s question, and where the question ends.
fn question(q: &[u8]) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let len = usize::from(*q.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(q.get(i..i + len)?).into_owned());
        i += len;
    }
    Some((labels.join("."), i + 4))
}

fn respond(q: &[u8], name: &str, answer: Ipv4Addr) -> Vec<u8> {
    let Some((asked, end)) = question(q) else {
        return Vec::new();
    };
    let found = asked.eq_ignore_ascii_case(name);
    let mut r = q[..2].to_vec();
    r.extend_from_slice(&[0x81, if found { 0x80 } else { 0x83 }, 0, 1, 0]);
    r.push(u8::from(found));
    r.extend_from_slice(&[0, 0, 0, 0]);
    r.extend_from_slice(&q[12..end]);
    if found {
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&answer.octets());
    }
    r
}

/// An answer's id, RCODE and first `A` record.
pub fn read_answer(r: &[u8]) -> Option<(u16, u8, Option<Ipv4Addr>)> {
    let id = u16::from_be_bytes([*r.first()?, *r.get(1)?]);
    let rcode = r.get(3)? & 0x0f;
    let ancount = u16::from_be_bytes([*r.get(6)?, *r.get(7)?]);
    let (_, mut i) = question(r)?;
    for _ in 0..ancount {
        // The owner name: a pointer, or labels.
        loop {
            let b = *r.get(i)?;
            if b & 0xc0 == 0xc0 {
                i += 2;
                break;
            }
            i += 1 + usize::from(b);
            if b == 0 {
                break;
            }
        }
        let rtype = u16::from_be_bytes([*r.get(i)?, *r.get(i + 1)?]);
        let rdlen = usize::from(u16::from_be_bytes([*r.get(i + 8)?, *r.get(i + 9)?]));
        let data = r.get(i + 10..i + 10 + rdlen)?;
        if rtype == 1 && rdlen == 4 {
            return Some((
                id,
                rcode,
                Some(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
            ));
        }
        i += 10 + rdlen;
    }
    Some((id, rcode, None))
}
