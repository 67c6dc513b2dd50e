//! The daemon as systemd runs it (root): socket activation and readiness the way systemd
//! does them (`systemd-socket-activate`, a `NOTIFY_SOCKET`), and its logs going to journald
//! natively when stderr is the journal's stream, to stderr otherwise.

#[test]
fn socket_activation_and_readiness_as_systemd_does_them() {
    tapmanager_tests::require_root!();
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;
    use tapmanager_tests::sandbox::{bin, Netns};
    // A config whose own socket path is elsewhere: the daemon must use the passed one.
    let ns = Netns::new("sdact");
    let dir = tapmanager_tests::sandbox::TestDir::new("sdact");
    let config = dir.join("tapmanager.toml");
    std::fs::write(
        &config,
        format!(
            "socket = \"{}\"\nstate_dir = \"{}\"\ngroup = \"0\"\n",
            dir.join("not-this.sock").display(),
            dir.join("state").display()
        ),
    )
    .unwrap();
    let activated = dir.join("activated.sock");
    let notify = UnixDatagram::bind(dir.join("notify")).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // systemd's own helper: it holds the socket and starts the daemon, as a .socket unit does.
    let child = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "systemd-socket-activate", "-l"])
        .arg(&activated)
        .arg(format!(
            "--setenv=NOTIFY_SOCKET={}",
            dir.join("notify").display()
        ))
        .arg(bin("tapmanager"))
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // By pid: systemd-socket-activate exec'd the daemon.
    let child = tapmanager_tests::sandbox::Running(Some(child));
    // The first connection starts the daemon on the passed socket; it then says it is ready.
    let mut connected = None;
    for _ in 0..200 {
        if let Ok(c) = protocol::Client::connect(&activated) {
            connected = Some(c);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut client = connected.expect("no daemon behind the activated socket");
    let mut buf = [0u8; 64];
    let n = notify.recv(&mut buf).expect("no READY=1 from the daemon");
    assert_eq!(&buf[..n], b"READY=1");
    assert!(client.list().unwrap().is_empty());
    assert!(
        !dir.join("not-this.sock").exists(),
        "it bound its own socket too"
    );
    drop(child);
}

/// One journal entry as journald's native protocol carries it.
type Entry = std::collections::BTreeMap<String, String>;

/// Parses a native-protocol datagram: `KEY=value\n`, or `KEY\n` + 64-bit LE length + value +
/// `\n` for values that may hold newlines.
fn parse_native(mut b: &[u8]) -> Entry {
    let mut e = Entry::new();
    while !b.is_empty() {
        let end = b
            .iter()
            .position(|&c| c == b'=' || c == b'\n')
            .expect("key");
        let key = String::from_utf8_lossy(&b[..end]).into_owned();
        let (value, rest) = if b[end] == b'=' {
            let nl = b[end..].iter().position(|&c| c == b'\n').expect("newline") + end;
            (&b[end + 1..nl], &b[nl + 1..])
        } else {
            let len = u64::from_le_bytes(b[end + 1..end + 9].try_into().unwrap()) as usize;
            let start = end + 9;
            assert_eq!(b[start + len], b'\n', "value not ended by a newline");
            (&b[start..start + len], &b[start + len + 1..])
        };
        e.insert(key, String::from_utf8_lossy(value).into_owned());
        b = rest;
    }
    e
}

/// Runs `tapmanager serve --config CONFIG` in `ns` with a private /run/systemd whose
/// `journal/` is `journal_dir` (the test's own socket stands in for journald), with stderr to
/// `stderr` and `JOURNAL_STREAM` set to stderr's device and inode when `stream` is true, to
/// another value otherwise.
fn serve_with_journal(
    ns: &tapmanager_tests::sandbox::Netns,
    config: &std::path::Path,
    journal_dir: &std::path::Path,
    stderr: std::fs::File,
    stream: bool,
) -> std::process::Child {
    use tapmanager_tests::sandbox::bin;
    let value = if stream {
        "$(stat -L -c %d:%i /proc/self/fd/2)"
    } else {
        "0:1"
    };
    let script = format!(
        "mount -t tmpfs tmpfs /run/systemd && mkdir /run/systemd/journal && \
         mount --bind '{}' /run/systemd/journal && export JOURNAL_STREAM={value} && \
         exec '{}' serve --config '{}'",
        journal_dir.display(),
        bin("tapmanager").display(),
        config.display()
    );
    // `ip netns exec` gives the shell a mount namespace of its own (a slave of the host's):
    // the tmpfs and the bind stay in it.
    std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap()
}

#[test]
fn logs_go_to_journald_when_stderr_is_the_journal_and_to_stderr_otherwise() {
    tapmanager_tests::require_root!();
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;
    use tapmanager_tests::sandbox::Netns;
    let ns = Netns::new("journal");
    let dir = tapmanager_tests::sandbox::TestDir::new("journal");
    std::fs::create_dir_all(dir.join("journal")).unwrap();
    let socket = dir.join("tapmanager.sock");
    let config = dir.join("tapmanager.toml");
    std::fs::write(
        &config,
        format!(
            "socket = \"{}\"\nstate_dir = \"{}\"\ngroup = \"0\"\n\
             [networks.default]\nkind = \"bridge\"\nbridge = \"tmjbr0\"\ngateway = \"10.88.0.1/24\"\n",
            socket.display(),
            dir.join("state").display()
        ),
    )
    .unwrap();
    let journald = UnixDatagram::bind(dir.join("journal/socket")).unwrap();
    journald
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let connect = || {
        for _ in 0..400 {
            if let Ok(c) = protocol::Client::connect(&socket) {
                return c;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the daemon did not come up");
    };
    // The shell exec's the daemon: stopping the child by pid stops the daemon.
    use tapmanager_tests::sandbox::Running;
    let mut entries: Vec<Entry> = Vec::new();
    let drain = |entries: &mut Vec<Entry>| {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = journald.recv(&mut buf) {
            entries.push(parse_native(&buf[..n]));
        }
    };

    // stderr is the journal's stream: every event arrives natively, its fields as fields.
    let stderr_path = dir.join("stderr-1");
    let child = serve_with_journal(
        &ns,
        &config,
        &dir.join("journal"),
        std::fs::File::create(&stderr_path).unwrap(),
        true,
    );
    let child = Running(Some(child));
    let (_a, fds) = connect()
        .attach(protocol::AttachRequest {
            vm: "jvm".parse().unwrap(),
            networks: vec![protocol::NetworkRequest::new("default".parse().unwrap())],
        })
        .expect("attach");
    drop(fds);
    drain(&mut entries);
    drop(child);
    drain(&mut entries);
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    let field = |e: &Entry, k: &str| e.get(k).cloned().unwrap_or_default();
    let serving = entries
        .iter()
        .find(|e| field(e, "MESSAGE") == "serving")
        .unwrap_or_else(|| panic!("no `serving` entry in {entries:#?}\nstderr: {stderr}"));
    assert_eq!(field(serving, "SYSLOG_IDENTIFIER"), "tapmanager");
    assert_eq!(field(serving, "PRIORITY"), "5", "info is notice");
    assert_eq!(
        field(serving, "SOCKET"),
        socket.display().to_string(),
        "the event's own field"
    );
    let attached = entries
        .iter()
        .find(|e| field(e, "VM") == "jvm")
        .unwrap_or_else(|| panic!("no entry with VM=jvm in {entries:#?}"));
    assert_eq!(field(attached, "MESSAGE"), "attached");
    assert_eq!(field(attached, "UID"), "0");
    assert!(
        !stderr.contains("serving"),
        "logged to stderr as well: {stderr}"
    );

    // JOURNAL_STREAM names something else (a child of a service writing to a terminal, say):
    // stderr, and nothing to the journal.
    entries.clear();
    let stderr_path = dir.join("stderr-2");
    let child = serve_with_journal(
        &ns,
        &config,
        &dir.join("journal"),
        std::fs::File::create(&stderr_path).unwrap(),
        false,
    );
    let child = Running(Some(child));
    drop(connect());
    drop(child);
    drain(&mut entries);
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(stderr.contains("serving"), "stderr: {stderr}");
    assert!(entries.is_empty(), "journal got {entries:#?}");
}
