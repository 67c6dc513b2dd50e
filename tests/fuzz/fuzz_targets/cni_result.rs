//! What a CNI plugin prints and what a conf dir holds: results of any spec version through
//! the parser and the lease the guest would get, and network configuration files. Nothing may
//! panic (plugins are programs of someone else's).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tapmanager::kinds::cni::{conf, port, result::CniResult};

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(r) = CniResult::parse(v) {
            let _ = r.ipv4_on("eth0");
            let _ = r.ipv4_routes();
            let _ = r.ipv4_nameservers();
            let _ = port::lease(&r, "eth1");
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = conf::parse(std::path::Path::new("x.conflist"), s);
        let _ = conf::parse(std::path::Path::new("x.conf"), s);
    }
});
