//! What the commands do: `serve`, `down` and `check-config` (`serve.rs`), `doctor` (its
//! checks), `init` (a config from a few flags) and the list output (`cli.rs`). `main.rs`
//! only parses and dispatches.

pub mod cli;
pub mod doctor;
pub mod init;
pub mod serve;

use std::path::PathBuf;

/// Why `serve`, `down` or `check-config` stopped.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("config")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot prepare socket {}", .0.display())]
    Socket(PathBuf, #[source] std::io::Error),
    #[error("another tapmanager is already listening on {}", .0.display())]
    SocketInUse(PathBuf),
    #[error("cannot reduce capabilities")]
    Privileges(#[from] crate::privileges::PrivilegeError),
    #[error("cannot start the runtime")]
    Runtime(#[source] std::io::Error),
    #[error("daemon")]
    Daemon(#[from] crate::daemon::DaemonError),
    #[error("{0}")]
    Invalid(String),
    #[error("down")]
    Down(#[source] crate::daemon::DownError),
}
