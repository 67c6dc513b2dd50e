//! The kernel-facing layer: links, TAPs, namespaces, the firewall. Nothing here knows the
//! daemon, its lifecycle or its kinds (a test checks that no file here names them); the
//! layers above use these as `ip`, `nft` and the tun driver would be used.

pub mod firewall;
pub mod join;
pub mod link;
pub mod netns;
pub mod nfnetlink;
pub mod reaper;
pub mod tap;

#[cfg(test)]
mod tests {
    /// The layering rule of this directory: it imports nothing from above.
    #[test]
    fn no_file_here_names_the_daemon_or_its_lifecycle() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/net");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for above in [
                "crate::daemon",
                "crate::lifecycle",
                "Daemon",
                "crate::kinds",
            ] {
                if path.ends_with("mod.rs") {
                    continue;
                }
                assert!(
                    !text.contains(above),
                    "{} names {above}: net/ sits below it",
                    path.display()
                );
            }
        }
    }
}
