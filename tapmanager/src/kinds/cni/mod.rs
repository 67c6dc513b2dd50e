//! The CNI kind: plugins run as the CNI spec says ([`exec`]), their configuration found as
//! libcni finds it ([`conf`]), their results read whatever spec version wrote them
//! ([`result`]), what DEL needs kept on disk before ADD runs ([`cache`]), and the guest's side
//! rewired onto the plugin's interface ([`port`]).

pub mod cache;
pub mod conf;
pub mod exec;
pub mod port;
pub mod result;

pub use exec::CniError;
