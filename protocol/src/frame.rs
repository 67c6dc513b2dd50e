//! The frame codec: a `u32` little-endian length, then a bincode 2 body that says how many fds
//! travel with it. Pure functions over bytes; the socket I/O is in [`crate::fdpass`].
//!
//! The body is `(fd_count: u16, message)`. The fds themselves ride as `SCM_RIGHTS` on the first
//! `sendmsg` of the frame; the receiver checks that it got exactly `fd_count` of them.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io;

/// Largest body a peer may send (DESIGN.md §3).
pub const MAX_FRAME: usize = 64 * 1024;
/// Most fds one frame may carry: 8 NICs of 8 queues.
pub const MAX_FDS: usize = 64;
/// Length of the frame header.
pub const HEADER_LEN: usize = 4;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME>()
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("frame carries {0} fds, more than the limit of {MAX_FDS}")]
    TooManyFds(usize),
    #[error("cannot encode frame")]
    Encode(#[source] bincode::error::EncodeError),
    #[error("cannot decode frame")]
    Decode(#[source] bincode::error::DecodeError),
    #[error("frame has {0} trailing bytes")]
    TrailingBytes(usize),
    #[error("frame announced {expected} fds but {received} arrived")]
    FdCountMismatch { expected: usize, received: usize },
    #[error("connection closed in the middle of a frame ({got} of {expected} bytes)")]
    Truncated { expected: usize, got: usize },
    #[error("connection closed by peer")]
    Closed,
    #[error("timed out waiting for the peer")]
    Timeout,
    #[error("socket I/O failed")]
    Io(#[source] io::Error),
}

/// Encodes a whole frame (header and body) announcing `fds` descriptors.
pub fn encode<T: Serialize>(msg: &T, fds: usize) -> Result<Vec<u8>, FrameError> {
    if fds > MAX_FDS {
        return Err(FrameError::TooManyFds(fds));
    }
    let mut out = vec![0u8; HEADER_LEN];
    let body =
        bincode::serde::encode_to_vec((fds as u16, msg), config()).map_err(FrameError::Encode)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    out[..HEADER_LEN].copy_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Reads the body length from a header, refusing oversized frames before any allocation.
pub fn body_len(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(header) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// Decodes a body into the message and the number of fds it announced.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<(T, usize), FrameError> {
    let ((fds, msg), used): ((u16, T), usize) =
        bincode::serde::decode_from_slice(body, config()).map_err(FrameError::Decode)?;
    if used != body.len() {
        return Err(FrameError::TrailingBytes(body.len() - used));
    }
    if fds as usize > MAX_FDS {
        return Err(FrameError::TooManyFds(fds as usize));
    }
    Ok((msg, fds as usize))
}

/// Collects one frame from a stream, whichever way the bytes are read (blocking or async).
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    header: [u8; HEADER_LEN],
    body: Vec<u8>,
    got: usize,
    in_body: bool,
}

impl Assembler {
    /// The buffer the next read should fill.
    pub(crate) fn want(&mut self) -> &mut [u8] {
        if self.in_body {
            &mut self.body[self.got..]
        } else {
            &mut self.header[self.got..]
        }
    }

    /// Records `n` bytes read into [`Self::want`]. Returns the body once complete.
    pub(crate) fn advance(&mut self, n: usize) -> Result<Option<Vec<u8>>, FrameError> {
        if n == 0 {
            return Err(match (self.in_body, self.got) {
                (false, 0) => FrameError::Closed,
                (false, got) => FrameError::Truncated {
                    expected: HEADER_LEN,
                    got,
                },
                (true, got) => FrameError::Truncated {
                    expected: HEADER_LEN + self.body.len(),
                    got: HEADER_LEN + got,
                },
            });
        }
        self.got += n;
        if !self.in_body && self.got == HEADER_LEN {
            let len = body_len(self.header)?;
            self.body = vec![0; len];
            self.in_body = true;
            self.got = 0;
        }
        if self.in_body && self.got == self.body.len() {
            return Ok(Some(std::mem::take(&mut self.body)));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::*;

    fn attach() -> Request {
        Request {
            id: 7,
            body: RequestBody::Attach(AttachRequest {
                vm: "vm1".parse().unwrap(),
                networks: vec![NetworkRequest {
                    network: "default".parse().unwrap(),
                    mac: Some("02:00:00:00:00:01".parse().unwrap()),
                    queues: 2,
                    take_over: None,
                    by_name: false,
                }],
            }),
        }
    }

    fn body_of(frame: &[u8]) -> &[u8] {
        &frame[HEADER_LEN..]
    }

    #[test]
    fn round_trip_request_and_response() {
        let req = attach();
        let frame = encode(&req, 0).unwrap();
        assert_eq!(
            body_len(frame[..4].try_into().unwrap()).unwrap(),
            frame.len() - 4
        );
        let (back, fds): (Request, usize) = decode(body_of(&frame)).unwrap();
        assert_eq!((back, fds), (req, 0));

        let resp = Response {
            id: 7,
            body: Err(Error::new(ErrorCode::UnknownNetwork, "no such network: x")),
        };
        let frame = encode(&resp, 3).unwrap();
        let (back, fds): (Response, usize) = decode(body_of(&frame)).unwrap();
        assert_eq!((back, fds), (resp, 3));
    }

    #[test]
    fn truncated_body_is_refused() {
        let frame = encode(&attach(), 0).unwrap();
        let body = body_of(&frame);
        let r: Result<(Request, usize), _> = decode(&body[..body.len() - 1]);
        assert!(matches!(r, Err(FrameError::Decode(_))));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let frame = encode(&attach(), 0).unwrap();
        let mut body = body_of(&frame).to_vec();
        body.push(0);
        let r: Result<(Request, usize), _> = decode(&body);
        assert!(matches!(r, Err(FrameError::TrailingBytes(1))));
    }

    #[test]
    fn oversized_header_is_refused_before_allocating() {
        let header = ((MAX_FRAME + 1) as u32).to_le_bytes();
        assert!(matches!(body_len(header), Err(FrameError::TooLarge(_))));
        assert!(matches!(
            body_len(u32::MAX.to_le_bytes()),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn oversized_message_is_refused_on_encode() {
        let big = Error::new(ErrorCode::Internal, "x".repeat(MAX_FRAME + 10));
        assert!(encode(&big, 0).is_err());
    }

    #[test]
    fn garbage_is_refused() {
        let garbage: Vec<u8> = (0..200u32).map(|i| (i * 37 % 251) as u8).collect();
        let r: Result<(Request, usize), _> = decode(&garbage);
        assert!(r.is_err());
        // An invalid VM id inside an otherwise well-formed frame fails to decode too.
        let bad = (0u16, 1u64, 0u32, "../etc".to_string());
        let body = bincode::serde::encode_to_vec(bad, config()).unwrap();
        let r: Result<(Request, usize), _> = decode(&body);
        assert!(r.is_err());
    }

    #[test]
    fn too_many_fds_is_refused() {
        assert!(matches!(
            encode(&attach(), MAX_FDS + 1),
            Err(FrameError::TooManyFds(_))
        ));
        let body = bincode::serde::encode_to_vec((u16::MAX, attach()), config()).unwrap();
        let r: Result<(Request, usize), _> = decode(&body);
        assert!(matches!(r, Err(FrameError::TooManyFds(_))));
    }

    #[test]
    fn assembler_reports_clean_close_and_truncation() {
        let mut a = Assembler::default();
        assert!(matches!(a.advance(0), Err(FrameError::Closed)));
        let mut a = Assembler::default();
        a.want()[..2].copy_from_slice(&[1, 0]);
        assert!(a.advance(2).unwrap().is_none());
        assert!(matches!(a.advance(0), Err(FrameError::Truncated { .. })));
    }

    #[test]
    fn assembler_collects_a_frame_byte_by_byte() {
        let frame = encode(&attach(), 0).unwrap();
        let mut a = Assembler::default();
        let mut out = None;
        for b in &frame {
            a.want()[0] = *b;
            out = a.advance(1).unwrap();
        }
        let (req, _): (Request, usize) = decode(&out.unwrap()).unwrap();
        assert_eq!(req, attach());
    }
}
