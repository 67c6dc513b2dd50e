//! The daemon's decoder of what a caller sends: a frame header, then a body decoded as a
//! `Hello` or a `Request`. Nothing may panic; what decodes must encode to a frame that decodes
//! to the same message (no value the daemon accepts is one it cannot say back).
#![no_main]
use libfuzzer_sys::fuzz_target;
use protocol::frame::{body_len, decode, encode, HEADER_LEN};
use protocol::{Hello, Request};

fuzz_target!(|data: &[u8]| {
    if let Some(h) = data.get(..HEADER_LEN) {
        let _ = body_len(h.try_into().expect("4 bytes"));
    }
    let _ = decode::<Hello>(data);
    if let Ok((req, fds)) = decode::<Request>(data) {
        let frame = encode(&req, fds).expect("a decoded request encodes");
        let (again, n) = decode::<Request>(&frame[HEADER_LEN..]).expect("and decodes again");
        assert_eq!(again, req);
        assert_eq!(n, fds);
    }
});
