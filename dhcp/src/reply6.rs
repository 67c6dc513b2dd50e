//! The DHCPv6 server's decisions (RFC 8415), pure like `reply`: one request and the binding
//! in, the reply (or silence) out. One client and at most one address per server, so there
//! is no lease table: the guest's IA_NA gets the bound address; RELEASE and DECLINE change
//! nothing (the daemon owns the binding) and are acknowledged; CONFIRM says whether the
//! guest's addresses are still on its link. SOLICIT with rapid commit gets the REPLY at once.
//!
//! [`decode`] rebuilds the request from untrusted bytes before dhcproto sees it, keeping only
//! the options this server reads, each with a checked length, as `server.rs` does for DHCPv4.

use std::net::Ipv6Addr;

use dhcproto::v6::{
    DhcpOption, DhcpOptions, IAAddr, Message, MessageType, OptionCode, Status, StatusCode, IANA,
};
use dhcproto::{Decodable, Decoder, Encodable};

use crate::binding::{search_names, Binding, Binding6};
use crate::frame6::build_udp6_frame;
use crate::router::DHCP6_SERVER_PORT;
use crate::server::Outcome;

/// Options the server reads, with their allowed lengths, and the longest DUID (RFC 8415
/// section 11.1: 128 bytes plus the type).
const CLIENT_ID: u16 = 1;
const SERVER_ID: u16 = 2;
const IA_NA: u16 = 3;
const IA_ADDR: u16 = 5;
const ORO: u16 = 6;
const ELAPSED_TIME: u16 = 8;
const RAPID_COMMIT: u16 = 14;
const MAX_DUID: usize = 130;
/// More IA_NAs than this in one message is not a client we know; the rest are dropped.
const MAX_IAS: usize = 8;
/// IA addresses kept per IA_NA: the reply echoes each (lifetime 0), so without a bound a
/// 64 KiB request would ask for a reply that does not fit a datagram.
const MAX_IA_ADDRS: usize = 8;

/// The server's DUID: DUID-LL (type 3) of its MAC on the guest's link, hardware type
/// Ethernet (RFC 8415 section 11.4). Stable across daemon restarts, as the MAC is.
pub fn server_duid(server_mac: [u8; 6]) -> Vec<u8> {
    let mut d = vec![0, 3, 0, 1];
    d.extend_from_slice(&server_mac);
    d
}

/// The whole DHCPv6 path for one datagram from `from` (the client's link-local address and
/// port): decode, decide, frame the reply back to where it came from.
pub(crate) fn answer(payload: &[u8], b: &Binding, v6: &Binding6, from: (Ipv6Addr, u16)) -> Outcome {
    let req = match decode(payload) {
        Ok(Some(req)) => req,
        Ok(None) => return Outcome::Ignored,
        Err(why) => return Outcome::Malformed(why),
    };
    let Some(resp) = reply6(&req, b, v6) else {
        return Outcome::Ignored;
    };
    let Ok(bytes) = resp.to_vec() else {
        return Outcome::Malformed("reply could not be encoded");
    };
    Outcome::Reply(build_udp6_frame(
        (b.server_mac, b.mac),
        (v6.router, from.0),
        (DHCP6_SERVER_PORT, from.1),
        &bytes,
    ))
}

/// The answer to `req` from the server of binding `b`, or `None` to stay silent.
///
/// Silent for: messages only servers and relays send, a missing client identifier where
/// RFC 8415 section 16 requires one, a server identifier that is not ours where one is
/// required, one where none is allowed, and CONFIRM without addresses.
pub fn reply6(req: &Message, b: &Binding, v6: &Binding6) -> Option<Message> {
    let ours = server_duid(b.server_mac);
    let client = match req.opts().get(OptionCode::ClientId) {
        Some(DhcpOption::ClientId(id)) => Some(id.clone()),
        _ => None,
    };
    let server = match req.opts().get(OptionCode::ServerId) {
        Some(DhcpOption::ServerId(id)) => Some(id.as_slice()),
        _ => None,
    };
    let to_us = server == Some(ours.as_slice());
    use MessageType as T;
    let kind = req.msg_type();
    let (must_have_server, may_have_server) = match kind {
        T::Request | T::Renew | T::Release | T::Decline => (true, true),
        T::Solicit | T::Rebind | T::Confirm => (false, false),
        T::InformationRequest => (false, true),
        _ => return None,
    };
    if (kind != T::InformationRequest && client.is_none())
        || (must_have_server && !to_us)
        || (!may_have_server && server.is_some())
        || (server.is_some() && !to_us)
    {
        return None;
    }
    let rapid = kind == T::Solicit && req.opts().get(OptionCode::RapidCommit).is_some();
    let reply_type = if kind == T::Solicit && !rapid {
        T::Advertise
    } else {
        T::Reply
    };
    let mut resp = Message::new_with_id(reply_type, req.xid());
    let opts = resp.opts_mut();
    opts.insert(DhcpOption::ServerId(ours));
    if let Some(id) = client {
        opts.insert(DhcpOption::ClientId(id));
    }
    match kind {
        T::Solicit | T::Request | T::Renew | T::Rebind => {
            for ia in leases(req, b, v6) {
                opts.insert(DhcpOption::IANA(ia));
            }
            if rapid {
                opts.insert(DhcpOption::RapidCommit);
            }
            if reply_type == T::Advertise {
                // The highest preference: the client need not wait for other servers.
                opts.insert(DhcpOption::Preference(255));
            }
        }
        T::Release | T::Decline => {
            opts.insert(status(
                Status::Success,
                "nothing changes: the daemon owns the lease",
            ));
            return Some(resp);
        }
        T::Confirm => {
            let addrs: Vec<Ipv6Addr> = ias(req).flat_map(addresses).collect();
            if addrs.is_empty() {
                return None;
            }
            let on_link = addrs.iter().all(|a| v6.prefix.contains(a));
            opts.insert(if on_link {
                status(Status::Success, "on link")
            } else {
                status(Status::NotOnLink, "not on this link")
            });
        }
        _ => {}
    }
    if !v6.dns.is_empty() {
        opts.insert(DhcpOption::DomainNameServers(v6.dns.clone()));
    }
    if let Ok(names) = search_names(&b.search) {
        if !names.is_empty() {
            opts.insert(DhcpOption::DomainSearchList(names));
        }
    }
    Some(resp)
}

/// One IA_NA per IA_NA of the request: the first gets the bound address (and any other
/// address the client asked to keep gets lifetime 0, RFC 8415 section 18.3.4), the others
/// `NoAddrsAvail`. A binding without an address answers every IA with `NoAddrsAvail`.
fn leases(req: &Message, b: &Binding, v6: &Binding6) -> Vec<IANA> {
    let (t1, t2) = (b.lease_secs / 2, b.lease_secs / 8 * 7);
    ias(req)
        .enumerate()
        .map(|(n, ia)| {
            let mut opts = DhcpOptions::new();
            match v6.ip.filter(|_| n == 0) {
                Some(ip) => {
                    opts.insert(DhcpOption::IAAddr(IAAddr {
                        addr: ip,
                        preferred_life: b.lease_secs,
                        valid_life: b.lease_secs,
                        opts: DhcpOptions::new(),
                    }));
                    for old in addresses(ia).filter(|a| *a != ip) {
                        opts.insert(DhcpOption::IAAddr(IAAddr {
                            addr: old,
                            preferred_life: 0,
                            valid_life: 0,
                            opts: DhcpOptions::new(),
                        }));
                    }
                    IANA {
                        id: ia.id,
                        t1,
                        t2,
                        opts,
                    }
                }
                None => {
                    opts.insert(status(Status::NoAddrsAvail, "one address per guest"));
                    IANA {
                        id: ia.id,
                        t1: 0,
                        t2: 0,
                        opts,
                    }
                }
            }
        })
        .collect()
}

fn ias(req: &Message) -> impl Iterator<Item = &IANA> {
    req.opts()
        .get_all(OptionCode::IANA)
        .unwrap_or_default()
        .iter()
        .filter_map(|o| match o {
            DhcpOption::IANA(ia) => Some(ia),
            _ => None,
        })
}

fn addresses(ia: &IANA) -> impl Iterator<Item = Ipv6Addr> + '_ {
    ia.opts.iter().filter_map(|o| match o {
        DhcpOption::IAAddr(a) => Some(a.addr),
        _ => None,
    })
}

fn status(status: Status, msg: &str) -> DhcpOption {
    DhcpOption::StatusCode(StatusCode {
        status,
        msg: msg.to_owned(),
    })
}

/// Decodes a client message from untrusted bytes. `Ok(None)`: a well-formed message of a
/// type this server does not answer (a server's or relay's). Options other than those read
/// here are dropped unparsed; the ones kept have their lengths checked, and an IA_NA keeps
/// only its IA addresses, without their options.
pub fn decode(payload: &[u8]) -> Result<Option<Message>, &'static str> {
    let (&kind, rest) = payload.split_first().ok_or("empty DHCPv6 message")?;
    let xid = rest
        .get(..3)
        .ok_or("DHCPv6 message shorter than its header")?;
    // SOLICIT, REQUEST, CONFIRM, RENEW, REBIND, RELEASE, DECLINE, INFORMATION-REQUEST.
    if ![1, 3, 4, 5, 6, 8, 9, 11].contains(&kind) {
        return Ok(None);
    }
    let mut clean = vec![kind];
    clean.extend_from_slice(xid);
    let mut ia_count = 0;
    let mut seen = [false; 15];
    for (code, value) in tlvs(&rest[3..])? {
        let ok = match code {
            CLIENT_ID | SERVER_ID => (1..=MAX_DUID).contains(&value.len()),
            ORO => value.len() % 2 == 0,
            ELAPSED_TIME => value.len() == 2,
            RAPID_COMMIT => value.is_empty(),
            IA_NA => value.len() >= 12,
            _ => continue,
        };
        if !ok {
            return Err("DHCPv6 option with a wrong length");
        }
        if code == IA_NA {
            ia_count += 1;
            if ia_count > MAX_IAS {
                continue;
            }
            let mut ia = value[..12].to_vec();
            let mut addrs = 0;
            for (inner, addr) in tlvs(&value[12..])? {
                if inner == IA_ADDR && addrs < MAX_IA_ADDRS {
                    addrs += 1;
                    let addr = addr.get(..24).ok_or("IA address shorter than 24 bytes")?;
                    push_option(&mut ia, IA_ADDR, addr);
                }
            }
            push_option(&mut clean, IA_NA, &ia);
        } else if !std::mem::replace(&mut seen[usize::from(code)], true) {
            push_option(&mut clean, code, value);
        }
    }
    Message::decode(&mut Decoder::new(&clean))
        .map(Some)
        .map_err(|_| "DHCPv6 message does not decode")
}

/// The (code, value) pairs of a DHCPv6 option area, each checked to lie inside it.
fn tlvs(mut area: &[u8]) -> Result<Vec<(u16, &[u8])>, &'static str> {
    let mut out = Vec::new();
    while !area.is_empty() {
        let head = area.get(..4).ok_or("DHCPv6 option header cut short")?;
        let code = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let value = area
            .get(4..4 + len)
            .ok_or("DHCPv6 option runs past the message")?;
        out.push((code, value));
        area = &area[4 + len..];
    }
    Ok(out)
}

fn push_option(out: &mut Vec<u8>, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binding::tests::dual;
    use dhcproto::v6::ORO;

    const CLIENT: &[u8] = &[0, 3, 0, 1, 0x52, 0x54, 0, 0x12, 0x34, 0x56];

    fn v6() -> Binding6 {
        dual().v6.unwrap()
    }

    fn msg(kind: MessageType, ia_addrs: &[&str]) -> Message {
        let mut m = Message::new_with_id(kind, [1, 2, 3]);
        m.opts_mut().insert(DhcpOption::ClientId(CLIENT.to_vec()));
        let mut ia = IANA {
            id: 7,
            t1: 0,
            t2: 0,
            opts: DhcpOptions::new(),
        };
        for a in ia_addrs {
            ia.opts.insert(DhcpOption::IAAddr(IAAddr {
                addr: a.parse().unwrap(),
                preferred_life: 0,
                valid_life: 0,
                opts: DhcpOptions::new(),
            }));
        }
        m.opts_mut().insert(DhcpOption::IANA(ia));
        m.opts_mut().insert(DhcpOption::ORO(ORO {
            opts: vec![OptionCode::DomainNameServers, OptionCode::DomainSearchList],
        }));
        m
    }

    fn to_server(mut m: Message) -> Message {
        m.opts_mut()
            .insert(DhcpOption::ServerId(server_duid(dual().server_mac)));
        m
    }

    fn leased(m: &Message) -> Vec<(Ipv6Addr, u32)> {
        ias(m)
            .flat_map(|ia| ia.opts.iter())
            .filter_map(|o| match o {
                DhcpOption::IAAddr(a) => Some((a.addr, a.valid_life)),
                _ => None,
            })
            .collect()
    }

    fn status_of(m: &Message) -> Option<Status> {
        match m.opts().get(OptionCode::StatusCode) {
            Some(DhcpOption::StatusCode(s)) => Some(s.status),
            _ => None,
        }
    }

    /// The request as the wire carries it, through `decode`, as the server sees it.
    fn round(m: &Message) -> Message {
        decode(&m.to_vec().unwrap()).unwrap().unwrap()
    }

    #[test]
    fn solicit_request_renew_rebind_all_lease_the_bound_address() {
        let b = dual();
        let adv = reply6(&round(&msg(MessageType::Solicit, &[])), &b, &v6()).unwrap();
        assert_eq!(adv.msg_type(), MessageType::Advertise);
        assert_eq!(adv.xid(), [1, 2, 3]);
        assert_eq!(leased(&adv), [("fd77::5".parse().unwrap(), 3600)]);
        assert!(matches!(
            adv.opts().get(OptionCode::Preference),
            Some(DhcpOption::Preference(255))
        ));
        assert!(matches!(
            adv.opts().get(OptionCode::DomainNameServers),
            Some(DhcpOption::DomainNameServers(d)) if d == &v6().dns
        ));
        for kind in [MessageType::Request, MessageType::Renew] {
            let r = reply6(&round(&to_server(msg(kind, &["fd77::5"]))), &b, &v6()).unwrap();
            assert_eq!(
                (r.msg_type(), leased(&r)),
                (MessageType::Reply, vec![("fd77::5".parse().unwrap(), 3600)])
            );
        }
        let r = reply6(&round(&msg(MessageType::Rebind, &["fd77::99"])), &b, &v6()).unwrap();
        let mut got = leased(&r);
        got.sort_by_key(|(_, life)| std::cmp::Reverse(*life));
        assert_eq!(
            got,
            [
                ("fd77::5".parse().unwrap(), 3600),
                ("fd77::99".parse().unwrap(), 0)
            ],
            "an address that is not the guest's is given lifetime 0"
        );
    }

    #[test]
    fn rapid_commit_replies_at_once() {
        let mut m = msg(MessageType::Solicit, &[]);
        m.opts_mut().insert(DhcpOption::RapidCommit);
        let r = reply6(&round(&m), &dual(), &v6()).unwrap();
        assert_eq!(r.msg_type(), MessageType::Reply);
        assert!(r.opts().get(OptionCode::RapidCommit).is_some());
        assert_eq!(leased(&r).len(), 1);
    }

    #[test]
    fn server_identifier_rules() {
        let b = dual();
        // REQUEST without our id, or with another server's: silence.
        assert!(reply6(&msg(MessageType::Request, &[]), &b, &v6()).is_none());
        let mut other = msg(MessageType::Request, &[]);
        other
            .opts_mut()
            .insert(DhcpOption::ServerId(vec![0, 3, 0, 1, 9, 9, 9, 9, 9, 9]));
        assert!(reply6(&other, &b, &v6()).is_none());
        // SOLICIT must not carry one.
        assert!(reply6(&to_server(msg(MessageType::Solicit, &[])), &b, &v6()).is_none());
        // Without a client id only INFORMATION-REQUEST is answered.
        let mut anon = Message::new_with_id(MessageType::Solicit, [0; 3]);
        assert!(reply6(&anon, &b, &v6()).is_none());
        anon.set_msg_type(MessageType::InformationRequest);
        let info = reply6(&anon, &b, &v6()).unwrap();
        assert!(leased(&info).is_empty());
        assert!(info.opts().get(OptionCode::DomainSearchList).is_some());
        // Messages only servers send get nothing.
        for kind in [
            MessageType::Advertise,
            MessageType::Reply,
            MessageType::Reconfigure,
        ] {
            assert!(reply6(&msg(kind, &[]), &b, &v6()).is_none());
        }
    }

    #[test]
    fn release_decline_and_confirm() {
        let b = dual();
        let r = reply6(
            &to_server(msg(MessageType::Release, &["fd77::5"])),
            &b,
            &v6(),
        )
        .unwrap();
        assert_eq!(
            (r.msg_type(), status_of(&r)),
            (MessageType::Reply, Some(Status::Success))
        );
        let r = reply6(
            &to_server(msg(MessageType::Decline, &["fd77::5"])),
            &b,
            &v6(),
        )
        .unwrap();
        assert_eq!(status_of(&r), Some(Status::Success));
        let r = reply6(&msg(MessageType::Confirm, &["fd77::5"]), &b, &v6()).unwrap();
        assert_eq!(status_of(&r), Some(Status::Success));
        let r = reply6(&msg(MessageType::Confirm, &["fd78::5"]), &b, &v6()).unwrap();
        assert_eq!(status_of(&r), Some(Status::NotOnLink));
        assert!(reply6(&msg(MessageType::Confirm, &[]), &b, &v6()).is_none());
    }

    #[test]
    fn a_second_ia_and_a_binding_without_address_get_no_addrs_avail() {
        let mut m = msg(MessageType::Solicit, &[]);
        m.opts_mut().insert(DhcpOption::IANA(IANA {
            id: 8,
            t1: 0,
            t2: 0,
            opts: DhcpOptions::new(),
        }));
        let r = reply6(&round(&m), &dual(), &v6()).unwrap();
        assert_eq!(leased(&r).len(), 1);
        assert_eq!(ias(&r).count(), 2);
        let slaac = Binding6 {
            ip: None,
            autonomous: true,
            ..v6()
        };
        let r = reply6(&msg(MessageType::Solicit, &[]), &dual(), &slaac).unwrap();
        assert!(leased(&r).is_empty());
    }

    #[test]
    fn decode_checks_lengths_and_drops_what_it_does_not_read() {
        let mut raw = vec![1, 0, 0, 1];
        push_option(&mut raw, CLIENT_ID, CLIENT);
        push_option(&mut raw, 39, &[0xff; 3]); // client FQDN, cut short: not read, dropped
        push_option(&mut raw, 25, &[1]); // IA_PD of length 1: not read, dropped
        let m = decode(&raw).unwrap().unwrap();
        assert_eq!(m.opts().iter().count(), 1);
        let mut bad = raw.clone();
        push_option(&mut bad, ELAPSED_TIME, &[0; 3]);
        assert_eq!(decode(&bad), Err("DHCPv6 option with a wrong length"));
        let mut past = raw.clone();
        past.extend_from_slice(&[0, 1, 0, 40, 1]);
        assert_eq!(decode(&past), Err("DHCPv6 option runs past the message"));
        let mut ia = vec![0; 12];
        push_option(&mut ia, IA_ADDR, &[0; 10]);
        let mut short = raw.clone();
        push_option(&mut short, IA_NA, &ia);
        assert_eq!(decode(&short), Err("IA address shorter than 24 bytes"));
        assert_eq!(
            decode(&[2, 0, 0, 1]),
            Ok(None),
            "ADVERTISE is a server's message"
        );
        assert_eq!(decode(&[12; 40]), Ok(None), "RELAY-FORW is not served");
    }

    #[test]
    fn garbage_never_panics() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut valid = to_server(msg(MessageType::Request, &["fd77::5"]));
        valid.opts_mut().insert(DhcpOption::RapidCommit);
        let valid = valid.to_vec().unwrap();
        for _ in 0..20_000 {
            let mut p = valid.clone();
            for _ in 0..next() % 8 + 1 {
                let i = (next() as usize) % p.len();
                p[i] = next() as u8;
            }
            p.truncate((next() as usize) % (p.len() + 1));
            if let Ok(Some(m)) = decode(&p) {
                let _reply = reply6(&m, &dual(), &v6()).map(|r| r.to_vec());
            }
        }
    }
}
