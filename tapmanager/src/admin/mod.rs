//! What the admin commands do besides serving: `tapmanager doctor` (its checks), `init` (a
//! config from a few flags) and the list output. `main.rs` only parses and dispatches.

pub mod cli;
pub mod doctor;
pub mod init;
