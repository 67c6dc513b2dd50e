//! The `nft` processes: the long-lived `nft -i` session a table is driven through, and the
//! one-shot `nft -f -` for a namespace's own tables.

use super::*;

#[derive(Debug)]
pub(super) struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    /// Non-blocking, read directly (not through tokio): see [`Session::run`].
    stderr: OwnedFd,
}

/// Where `nft` may be: system directories only, never `$PATH` (the daemon's environment is
/// not a config file).
pub(super) const NFT_PATHS: [&str; 4] = ["/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft", "/bin/nft"];

/// `nft` by absolute path, with an empty environment and CAP_NET_ADMIN as its only capability
/// (privileges.rs): it needs nothing else of the daemon's.
pub(super) fn nft_command() -> std::io::Result<std::process::Command> {
    let path = NFT_PATHS
        .iter()
        .find(|p| std::path::Path::new(p).is_file())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "nft is not in {}: install the nftables package",
                    NFT_PATHS.join(", ")
                ),
            )
        })?;
    let mut cmd = std::process::Command::new(path);
    cmd.env_clear();
    crate::privileges::confine(&mut cmd, &[caps::Capability::CAP_NET_ADMIN]);
    Ok(cmd)
}

impl Session {
    /// Ends a session in an unknown state (it is also killed when dropped).
    pub(super) fn kill(&mut self) {
        let _ = self.child.start_kill(); // already dying or dead is fine
    }

    pub(super) async fn spawn() -> Result<Session, FirewallError> {
        let mut child = Command::from(nft_command().map_err(FirewallError::Spawn)?)
            .arg("-i")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(FirewallError::Spawn)?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(FirewallError::Exited);
        };
        let stderr = stderr.into_owned_fd().map_err(FirewallError::Io)?;
        let flags = nix::fcntl::fcntl(&stderr, nix::fcntl::FcntlArg::F_GETFL)
            .map_err(|e| FirewallError::Io(e.into()))?;
        let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&stderr, nix::fcntl::FcntlArg::F_SETFL(flags))
            .map_err(|e| FirewallError::Io(e.into()))?;
        let mut s = Session {
            child,
            stdin,
            stdout,
            stderr,
        };
        s.run(&format!("add table bridge {SYNC_TABLE}")).await?;
        Ok(s)
    }

    /// Sends one line (one transaction) and waits until nft has processed it.
    pub(super) async fn run(&mut self, script: &str) -> Result<(), FirewallError> {
        debug_assert!(!script.contains('\n'));
        let line = format!("{script}\nlist table bridge {SYNC_TABLE}\n");
        self.stdin
            .write_all(line.as_bytes())
            .await
            .map_err(FirewallError::Io)?;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        // The sync table's listing ends with a closing brace in column 0.
        while !(out.ends_with(b"\n}\n")
            && out
                .windows(SYNC_TABLE.len())
                .any(|w| w == SYNC_TABLE.as_bytes()))
        {
            let n = self
                .stdout
                .read(&mut buf)
                .await
                .map_err(FirewallError::Io)?;
            if n == 0 {
                return Err(FirewallError::Exited);
            }
            out.extend_from_slice(&buf[..n]);
        }
        // nft writes a line's errors before it reads the next line, so they are there now.
        // A plain non-blocking read: it sees exactly what is in the pipe now.
        let mut err = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = nix::unistd::read(&self.stderr, &mut chunk) {
            err.extend_from_slice(&chunk[..n]);
        }
        if err.is_empty() {
            Ok(())
        } else {
            Err(FirewallError::Refused {
                script: script.to_owned(),
                stderr: String::from_utf8_lossy(&err).trim().to_owned(),
            })
        }
    }
}

/// Deletes every table of the daemon's (`tapmanager down`; the daemon's `nft -i` must be done
/// with them). One transaction: `add` then `delete` removes a table whether or not it was
/// there (nft 1.0.6 has no `destroy`).
pub fn remove_all_tables() -> std::io::Result<()> {
    let sync = format!("bridge {SYNC_TABLE}");
    let script: String = [
        GUARDS_TABLE,
        OLD_BRIDGE_TABLE,
        ROUTED,
        NAT,
        NAT6,
        MACVTAP,
        BRIDGE_NAT,
        BRIDGE_NAT6,
        HAIRPIN,
        L3_TABLES[0],
        L3_TABLES[1],
        &sync,
    ]
    .iter()
    .map(|t| format!("add table {t}\ndelete table {t}\n"))
    .collect();
    run_nft_once(&script, "the daemon's tables")
}

/// One `nft -f -` run in the calling thread's namespace (a guest's, entered on a thread of its
/// own): a persistent `nft -i` per guest namespace would be a process per VM.
pub fn run_nft_once(script: &str, what: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut child = nft_command()?
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no stdin"))?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "nft refused {what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
