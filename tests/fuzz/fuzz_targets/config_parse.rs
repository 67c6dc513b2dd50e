//! The config file: any text through the parser, the validation and, for an error, the line
//! `check-config` names. Nothing may panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tapmanager::config::Config;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Err(e) = Config::parse(s) {
            let _ = Config::error_line(s, &e);
        }
    }
});
