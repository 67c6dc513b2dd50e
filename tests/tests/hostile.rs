//! Kernel tier (root): hostile callers. Each attack gets a typed error (or, for what is not a
//! request at all, a closed connection), changes nothing, and while it runs an honest client
//! keeps attaching and releasing on its own connection: its latency during each attack is
//! printed (`hostile: ...` lines, at least 50 attaches each; figures, not assertions: timing
//! is noisy here), and it must never fail. One test per attack, each on a sandbox of its own
//! ([`under_attack`]), so one failure does not hide the rest; after each, nothing is left.

use protocol::fdpass::{read_frame, write_frame};
use protocol::frame::{encode, HEADER_LEN, MAX_FRAME};
use protocol::{
    AttachRequest, Client, ErrorCode, Hello, HelloReply, MacAddr, NetworkRequest, Request,
    RequestBody, Response, ResponseBody, PROTOCOL_VERSION,
};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tapmanager_tests::sandbox::Sandbox;

use tapmanager_tests::ids::hostile::GROUP;
use tapmanager_tests::ids::hostile::OTHER;
use tapmanager_tests::ids::hostile::STRANGER;
use tapmanager_tests::ids::hostile::USER;

/// `tapmanager ARGS --socket S` as `uid` in the group.
fn tapmanager_as(sb: &Sandbox, uid: u32, args: &[&str]) -> std::process::Output {
    tapmanager_tests::sandbox::as_user(
        uid,
        &GROUP.to_string(),
        &tapmanager_tests::sandbox::bin("tapmanager"),
    )
    .args(args)
    .arg("--socket")
    .arg(&sb.socket)
    .output()
    .unwrap()
}

/// A vmwrapper as `uid` holding `vm` on `default` until its stdin closes, once attached.
fn member_holding(sb: &Sandbox, uid: u32, vm: &str) -> std::process::Child {
    let child = sb
        .vmwrapper_as(uid, &GROUP.to_string())
        .args(["--id", vm, "--net", "default", "--hypervisor", "qemu", "--"])
        .args(["sh", "-c", "read x || true"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(sb.wait_for(10, || held_by(sb, uid) == 1));
    child
}

/// How many attachments `uid` holds (the honest client's come and go meanwhile).
fn held_by(sb: &Sandbox, uid: u32) -> usize {
    sb.client()
        .list()
        .unwrap()
        .iter()
        .filter(|a| a.uid == uid)
        .count()
}

/// An honest client attaching and releasing in a loop until told to stop.
struct Honest {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<Duration>>,
}

impl Honest {
    fn start(sb: &Sandbox, tag: &str) -> Honest {
        let stop = Arc::new(AtomicBool::new(false));
        let socket = sb.socket.clone();
        let (flag, tag) = (stop.clone(), tag.to_owned());
        let handle = std::thread::spawn(move || {
            let mut c = Client::connect(&socket).expect("honest connect");
            let mut took = Vec::new();
            let mut i = 0;
            while !flag.load(Ordering::Relaxed) || took.len() < 50 {
                let vm: protocol::VmId = format!("honest-{tag}-{i}").parse().unwrap();
                let t = Instant::now();
                let (_, fds) = c
                    .attach(AttachRequest {
                        vm: vm.clone(),
                        networks: vec![NetworkRequest::new("default".parse().unwrap())],
                    })
                    .expect("the honest client's attach failed during an attack");
                took.push(t.elapsed());
                c.release(&vm).expect("honest release");
                drop(fds);
                i += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            took
        });
        Honest { stop, handle }
    }

    /// Stops the loop and prints its figures for `case`.
    fn report(self, case: &str) {
        self.stop.store(true, Ordering::Relaxed);
        let mut took = self.handle.join().expect("honest client");
        took.sort();
        let pct = |p: f64| {
            let rank = ((p / 100.0) * took.len() as f64).ceil() as usize;
            took[rank.clamp(1, took.len()) - 1].as_secs_f64() * 1e3
        };
        eprintln!(
            "hostile: {case}: honest attaches {}, p50 {:.2} ms, p99 {:.2} ms",
            took.len(),
            pct(50.0),
            pct(99.0)
        );
    }
}

/// A connection past the handshake.
fn connected(sb: &Sandbox) -> UnixStream {
    let s = UnixStream::connect(&sb.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write_frame(
        &s,
        &Hello {
            version: PROTOCOL_VERSION,
        },
        &[],
    )
    .unwrap();
    let (reply, _): (HelloReply, _) = read_frame(&s).unwrap();
    assert!(matches!(reply, HelloReply::Accepted(_)));
    s
}

/// The daemon's answer to what was sent, if any, and whether it then closed the connection.
fn answer_then_closed(s: &UnixStream) -> (Option<Response>, bool) {
    let first = read_frame::<Response>(s).ok().map(|(r, _)| r);
    let mut buf = [0u8; 16];
    let closed = matches!((&*s).read(&mut buf), Ok(0));
    (first, closed)
}

fn assert_invalid(r: Option<Response>, what: &str) {
    match r.map(|r| r.body) {
        Some(Err(e)) if e.code == ErrorCode::InvalidRequest => {}
        other => panic!("{what}: expected InvalidRequest, got {other:?}"),
    }
}

/// The request layout with plain strings, to send names the real types would refuse to
/// hold; it encodes exactly as `Request { id, Attach(..) }` does.
mod raw {
    #[derive(serde::Serialize)]
    pub struct Request {
        pub id: u64,
        pub body: Body,
    }
    #[derive(serde::Serialize)]
    pub enum Body {
        Attach(Attach),
    }
    #[derive(serde::Serialize)]
    pub struct Attach {
        pub vm: String,
        pub networks: Vec<Net>,
    }
    #[derive(serde::Serialize)]
    pub struct Net {
        pub network: String,
        pub mac: Option<[u8; 6]>,
        pub queues: u16,
        pub take_over: Option<String>,
    }
}

fn raw_attach(vm: &str, network: &str) -> Vec<u8> {
    encode(
        &raw::Request {
            id: 7,
            body: raw::Body::Attach(raw::Attach {
                vm: vm.to_owned(),
                networks: vec![raw::Net {
                    network: network.to_owned(),
                    mac: None,
                    queues: 1,
                    take_over: None,
                }],
            }),
        },
        0,
    )
    .unwrap()
}

fn attach_with(
    sb: &Sandbox,
    vm: &str,
    f: impl FnOnce(&mut NetworkRequest),
) -> protocol::ClientError {
    let mut n = NetworkRequest::new("default".parse().unwrap());
    f(&mut n);
    sb.client()
        .attach(AttachRequest {
            vm: vm.parse().unwrap(),
            networks: vec![n],
        })
        .unwrap_err()
}

/// The daemon's open fds that point at `path`.
fn daemon_fds_on(sb: &Sandbox, path: &std::path::Path) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", sb.daemon_pid()))
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == path))
        .count()
}

/// The sandbox every attack runs against: the default network, a pod network, a quota of 3.
fn hostile_sandbox(tag: &str) -> Sandbox {
    let config = format!(
        "{}\n[networks.pods]\nkind = \"pod\"\n[policy]\nmax_attachments = 3\n",
        tapmanager_tests::sandbox::default_networks()
    );
    Sandbox::new(tag, GROUP, &config)
}

/// Runs one attack on a sandbox of its own while an honest client keeps attaching (its
/// figures printed for `case`); then nothing of either may be left.
fn under_attack(tag: &str, case: &str, attack: impl FnOnce(&Sandbox)) {
    let sb = hostile_sandbox(&format!("hostile{tag}"));
    let h = Honest::start(&sb, tag);
    attack(&sb);
    h.report(case);
    assert!(
        sb.all_gone(10),
        "{:?} {:?}",
        sb.taps(),
        sb.journal_entries()
    );
}

#[test]
fn a_whole_frame_of_garbage_gets_a_typed_error_and_a_closed_connection() {
    tapmanager_tests::require_root!();
    under_attack("garbage", "garbage frame", |sb| {
        // Garbage that is a whole frame: a typed error, then the connection closes.
        let s = connected(sb);
        let mut frame = (64u32).to_le_bytes().to_vec();
        frame.extend([0xab; 64]);
        (&s).write_all(&frame).unwrap();
        let (r, closed) = answer_then_closed(&s);
        assert_invalid(r, "garbage");
        assert!(closed, "garbage: connection left open");
    });
}

#[test]
fn a_frame_cut_short_is_dropped_when_its_connection_closes() {
    tapmanager_tests::require_root!();
    under_attack("truncated", "truncated frame", |sb| {
        // A frame cut short: nothing to answer; the daemon gives up on it when it closes.
        let s = connected(sb);
        let mut frame = (1000u32).to_le_bytes().to_vec();
        frame.extend([0u8; 10]);
        (&s).write_all(&frame).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let (r, closed) = answer_then_closed(&s);
        assert!(r.is_none() && closed, "truncated: {r:?}");
    });
}

#[test]
fn a_header_announcing_too_much_is_refused_before_its_body() {
    tapmanager_tests::require_root!();
    under_attack("oversized", "oversized frame", |sb| {
        // A header announcing more than a frame may hold: refused before the body is read.
        let s = connected(sb);
        (&s).write_all(&((MAX_FRAME as u32) + 1).to_le_bytes())
            .unwrap();
        let (r, closed) = answer_then_closed(&s);
        assert_invalid(r, "oversized");
        assert!(closed);
    });
}

#[test]
fn fds_nobody_asked_for_are_closed_at_once() {
    tapmanager_tests::require_root!();
    under_attack("fds", "unasked fds", |sb| {
        // fds nobody asked for, with a List: answered, and the fds closed at once.
        let marker = std::env::temp_dir().join(format!("tmt-unasked-{}", std::process::id()));
        let f = std::fs::File::create(&marker).unwrap();
        let s = connected(sb);
        let fds = [f.as_fd(), f.as_fd(), f.as_fd()];
        write_frame(
            &s,
            &Request {
                id: 9,
                body: RequestBody::List,
            },
            &fds,
        )
        .unwrap();
        let (resp, _): (Response, _) = read_frame(&s).unwrap();
        assert!(matches!(resp.body, Ok(ResponseBody::List(_))), "{resp:?}");
        assert_eq!(
            daemon_fds_on(sb, &marker),
            0,
            "the daemon kept fds it never asked for"
        );
        drop(f);
        std::fs::remove_file(&marker).unwrap();
    });
}

#[test]
fn names_the_types_refuse_get_typed_errors() {
    tapmanager_tests::require_root!();
    under_attack("names", "bad names", |sb| {
        // Names the types refuse: too long, empty, odd bytes, a path.
        for (vm, net) in [
            ("x".repeat(300).as_str(), "default"),
            ("", "default"),
            ("a\u{0}b", "default"),
            ("vm", "../default"),
            ("vm", "a network with spaces"),
        ] {
            let s = connected(sb);
            (&s).write_all(&raw_attach(vm, net)).unwrap();
            let (r, closed) = answer_then_closed(&s);
            assert_invalid(r, &format!("name {vm:?}/{net:?}"));
            assert!(closed);
        }
    });
}

#[test]
fn queues_out_of_range_and_macs_not_of_one_host_are_refused() {
    tapmanager_tests::require_root!();
    under_attack("limits", "bad queues and MACs", |sb| {
        // Queues out of range, MACs that are not one host's.
        for q in [0u16, 10_000] {
            let e = attach_with(sb, "q", |n| n.queues = q);
            assert_eq!(e.code(), Some(ErrorCode::InvalidRequest), "queues {q}: {e}");
        }
        for mac in [[0x01, 0, 0x5e, 0, 0, 1], [0xff; 6], [0; 6]] {
            let e = attach_with(sb, "m", |n| n.mac = Some(MacAddr(mac)));
            assert_eq!(
                e.code(),
                Some(ErrorCode::InvalidRequest),
                "mac {mac:02x?}: {e}"
            );
        }
        // Both spellings of a good MAC are the same MAC.
        let dash: MacAddr = "AA-BB-CC-DD-EE-02".parse().unwrap();
        let colon: MacAddr = "aa:bb:cc:dd:ee:02".parse().unwrap();
        assert_eq!(dash, colon);
    });
}

#[test]
fn a_client_sending_a_byte_a_second_is_cut_off() {
    tapmanager_tests::require_root!();
    under_attack("slow", "slow client", |sb| {
        // One byte a second: cut off when the hello's time is up, never holding anyone up.
        let s = UnixStream::connect(&sb.socket).unwrap();
        let hello = encode(
            &Hello {
                version: PROTOCOL_VERSION,
            },
            0,
        )
        .unwrap();
        let t = Instant::now();
        let mut cut = false;
        for b in hello.iter().chain([0u8; 64].iter()) {
            if (&s).write_all(&[*b]).is_err() {
                cut = true;
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
            if t.elapsed() > Duration::from_secs(15) {
                break;
            }
        }
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut buf = [0u8; 8];
        cut |= matches!((&s).read(&mut buf), Ok(0) | Err(_));
        assert!(cut, "a client sending a byte a second was not cut off");
        eprintln!("hostile: slow client cut off after {:?}", t.elapsed());
        assert!(t.elapsed() <= Duration::from_secs(16));
    });
}

#[test]
fn a_uid_holds_at_most_64_idle_connections_and_others_still_get_in() {
    tapmanager_tests::require_root!();
    under_attack("idle", "2000 idle connections from one uid", |sb| {
        // Thousands of idle connections from one member: at most 64 are let in.
        let hello = encode(
            &Hello {
                version: PROTOCOL_VERSION,
            },
            0,
        )
        .unwrap();
        let hello_hex: String = hello.iter().map(|b| format!("{b:02x}")).collect();
        let script = format!(
            r#"
import resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
hello = bytes.fromhex("{hello_hex}")
held = []
for i in range(2000):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("{socket}")
    s.settimeout(10)
    s.sendall(hello)
    n = int.from_bytes(s.recv(4, socket.MSG_WAITALL), "little")
    body = s.recv(n, socket.MSG_WAITALL)
    print((len(body).to_bytes(4, "little") + body).hex(), flush=True)
    held.append(s)
print("held", flush=True)
sys.stdin.read()
"#,
            socket = sb.socket.display()
        );
        let mut py = tapmanager_tests::sandbox::as_user(
            USER,
            &GROUP.to_string(),
            std::path::Path::new("/usr/bin/python3"),
        )
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
        let mut out = String::new();
        let mut reader = std::io::BufReader::new(py.stdout.take().unwrap());
        let (mut accepted, mut refused) = (0, 0);
        loop {
            out.clear();
            if std::io::BufRead::read_line(&mut reader, &mut out).unwrap() == 0
                || out.trim() == "held"
            {
                break;
            }
            let bytes: Vec<u8> = (0..out.trim().len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&out.trim()[i..i + 2], 16).unwrap())
                .collect();
            match protocol::frame::decode::<HelloReply>(&bytes[HEADER_LEN..])
                .unwrap()
                .0
            {
                HelloReply::Accepted(_) => accepted += 1,
                HelloReply::Rejected(e) => {
                    assert_eq!(e.code, ErrorCode::QuotaExceeded, "{e:?}");
                    refused += 1
                }
            }
        }
        assert_eq!((accepted, refused), (64, 1936));
        // While they are held, another member still gets in (the limit is per uid).
        let other = Command::new("setpriv")
            .args([
                &format!("--reuid={OTHER}"),
                &format!("--regid={OTHER}"),
                &format!("--groups={GROUP}"),
            ])
            .arg(tapmanager_tests::sandbox::bin("tapmanager"))
            .args(["list", "--socket"])
            .arg(&sb.socket)
            .output()
            .unwrap();
        assert!(
            other.status.success(),
            "{}",
            String::from_utf8_lossy(&other.stderr)
        );
        drop(py.stdin.take());
        py.wait().unwrap();
    });
}

#[test]
fn a_uid_outside_the_group_is_refused() {
    tapmanager_tests::require_root!();
    under_attack("stranger", "a stranger outside the group", |sb| {
        // A uid outside the group.
        let out = sb
            .vmwrapper_as(STRANGER, "")
            .args([
                "--id",
                "s",
                "--net",
                "default",
                "--hypervisor",
                "qemu",
                "--",
                "true",
            ])
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        // The socket (0660 root:group) is the first gate; the daemon's check the second.
        assert!(
            !out.status.success()
                && (e.contains("Permission denied") || e.contains("PermissionDenied")),
            "{e}"
        );
    });
}

#[test]
fn a_member_cannot_see_or_release_anothers_attachment() {
    tapmanager_tests::require_root!();
    under_attack(
        "others",
        "a member showing, releasing, listing another's attachment",
        |sb| {
            // A member acting on another member's attachment: it does not exist for them.
            let mut held = member_holding(sb, USER, "theirs");
            for args in [&["show", "theirs"][..], &["release", "theirs"][..]] {
                let out = tapmanager_as(sb, OTHER, args);
                let e = String::from_utf8_lossy(&out.stderr);
                assert!(
                    !out.status.success() && e.contains("NotFound"),
                    "{args:?}: {e}"
                );
            }
            let out = tapmanager_as(sb, OTHER, &["list", "--json"]);
            assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
            assert_eq!(held_by(sb, USER), 1, "another uid changed it");
            drop(held.stdin.take());
            held.wait().unwrap();
        },
    );
}

#[test]
fn a_namespace_the_caller_does_not_own_is_refused() {
    tapmanager_tests::require_root!();
    under_attack("netns", "a namespace the caller does not own", |sb| {
        // A namespace the member does not own, opened from /run/netns (world-readable).
        let pod = tapmanager_tests::sandbox::Netns::new("hostilepod");
        pod.ip(&["link", "add", "eth0", "type", "veth", "peer", "name", "gw0"]);
        let out = sb
            .vmwrapper_as(USER, &GROUP.to_string())
            .arg("--netns")
            .arg(format!("/run/netns/{}", pod.name))
            .args([
                "--id",
                "adopt",
                "--net",
                "pods,take=eth0",
                "--hypervisor",
                "qemu",
                "--",
                "true",
            ])
            .output()
            .unwrap();
        let e = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && e.contains("PermissionDenied"),
            "{e}"
        );
        assert!(pod
            .ip(&["-o", "link", "show", "dev", "eth0"])
            .contains("eth0"));
    });
}

#[test]
fn an_attach_flood_stops_at_the_quota() {
    tapmanager_tests::require_root!();
    under_attack("flood", "an attach flood past the quota", |sb| {
        let mut held = member_holding(sb, USER, "theirs");
        // An attach flood past the quota (3 a uid; one is held already).
        let (mut ok, mut refused) = (vec![], 0);
        for i in 0..20 {
            let mut c = sb.vmwrapper_as(USER, &GROUP.to_string());
            c.args([
                "--id",
                &format!("flood-{i}"),
                "--net",
                "default",
                "--hypervisor",
                "qemu",
                "--",
            ])
            .args(["sh", "-c", "read x || true"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
            let mut child = c.spawn().unwrap();
            let name = format!("flood-{i}");
            // Either it is refused (it exits) or it holds an attachment (the journal grows).
            let t = Instant::now();
            let exited = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                let listed = sb.client().list().unwrap();
                if listed.iter().any(|a| a.vm.as_str() == name) {
                    break None;
                }
                assert!(t.elapsed() < Duration::from_secs(10), "flood {i}: neither");
                std::thread::sleep(Duration::from_millis(5));
            };
            match exited {
                Some(status) => {
                    assert!(!status.success());
                    let mut e = String::new();
                    child.stderr.take().unwrap().read_to_string(&mut e).unwrap();
                    assert!(e.contains("QuotaExceeded"), "{e}");
                    refused += 1;
                }
                None => ok.push(child),
            }
        }
        assert_eq!(
            (ok.len(), refused),
            (2, 18),
            "the quota let in {} of 20",
            ok.len()
        );
        assert_eq!(held_by(sb, USER), 3);
        for mut c in ok {
            drop(c.stdin.take());
            c.wait().unwrap();
        }
        drop(held.stdin.take());
        held.wait().unwrap();
    });
}
