//! Frames with file descriptors over a Unix stream socket, blocking and async. The only file
//! that touches `SCM_RIGHTS`.
//!
//! Sending: the fds ride on the first `sendmsg` of the frame (`sendfd`), the rest of the bytes
//! follow without any. Receiving: every read is a `recvmsg` with room for [`MAX_FDS`] and
//! `MSG_CMSG_CLOEXEC`, so no received fd leaks into a child by accident; fds arrive as
//! [`OwnedFd`]s, so anything dropped on an error path is closed. A frame whose fd count does
//! not match what arrived is an error, and the stray fds are closed at once.

use crate::frame::{self, Assembler, FrameError, MAX_FDS};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
use sendfd::SendWithFd;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io::{self, IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// One `recvmsg`: fills `buf` as far as the kernel gives, appends any received fds to `fds`.
fn recv_some(sock: BorrowedFd<'_>, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<usize> {
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw) = c {
            for fd in raw {
                // SAFETY: the kernel just installed `fd` in our table for us; nobody else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(io::Error::other("control message truncated: too many fds"));
    }
    if fds.len() > MAX_FDS {
        return Err(io::Error::other("too many fds on one frame"));
    }
    Ok(msg.bytes)
}

fn finish<T: DeserializeOwned>(
    body: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<(T, Vec<OwnedFd>), FrameError> {
    let (msg, expected) = frame::decode(body)?;
    if expected != fds.len() {
        return Err(FrameError::FdCountMismatch {
            expected,
            received: fds.len(),
        });
    }
    Ok((msg, fds))
}

fn io_err(e: io::Error) -> FrameError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => FrameError::Timeout,
        _ => FrameError::Io(e),
    }
}

/// Reads one frame, blocking (up to the socket's read timeout).
pub fn read_frame<T: DeserializeOwned>(sock: &UnixStream) -> Result<(T, Vec<OwnedFd>), FrameError> {
    let mut asm = Assembler::default();
    let mut fds = Vec::new();
    loop {
        let n = match recv_some(sock.as_fd(), asm.want(), &mut fds) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        };
        if let Some(body) = asm.advance(n)? {
            return finish(&body, fds);
        }
    }
}

fn raw_fds(fds: &[BorrowedFd<'_>]) -> Vec<RawFd> {
    fds.iter().map(|f| f.as_raw_fd()).collect()
}

/// Writes one frame with `fds` attached, blocking.
pub fn write_frame<T: Serialize>(
    mut sock: &UnixStream,
    msg: &T,
    fds: &[BorrowedFd<'_>],
) -> Result<(), FrameError> {
    let bytes = frame::encode(msg, fds.len())?;
    let mut sent = 0;
    if !fds.is_empty() {
        sent = loop {
            match sock.send_with_fd(&bytes, &raw_fds(fds)) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(e)),
            }
        };
    }
    sock.write_all(&bytes[sent..]).map_err(io_err)
}

#[cfg(feature = "tokio")]
mod async_io {
    use super::*;
    use tokio::io::Interest;
    use tokio::net::UnixStream;

    /// Reads one frame from a tokio stream. No timeout here: wrap it in `tokio::time::timeout`.
    pub async fn read_frame_async<T: DeserializeOwned>(
        sock: &UnixStream,
    ) -> Result<(T, Vec<OwnedFd>), FrameError> {
        let mut asm = Assembler::default();
        let mut fds = Vec::new();
        loop {
            sock.readable().await.map_err(FrameError::Io)?;
            let r = sock.try_io(Interest::READABLE, || {
                recv_some(sock.as_fd(), asm.want(), &mut fds)
            });
            let n = match r {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue
                }
                Err(e) => return Err(FrameError::Io(e)),
            };
            if let Some(body) = asm.advance(n)? {
                return finish(&body, fds);
            }
        }
    }

    /// Writes one frame with `fds` attached to a tokio stream.
    pub async fn write_frame_async<T: Serialize>(
        sock: &UnixStream,
        msg: &T,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), FrameError> {
        let bytes = frame::encode(msg, fds.len())?;
        let raw = raw_fds(fds);
        let mut sent = 0;
        while sent < bytes.len() {
            sock.writable().await.map_err(FrameError::Io)?;
            // The fds go with the first bytes only.
            let r = if sent == 0 && !raw.is_empty() {
                sock.send_with_fd(&bytes, &raw)
            } else {
                sock.try_write(&bytes[sent..])
            };
            match r {
                Ok(n) => sent += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
        Ok(())
    }
}

#[cfg(feature = "tokio")]
pub use async_io::{read_frame_async, write_frame_async};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::Hello;
    use std::io::{Read, Seek};

    fn memfd_with(text: &[u8]) -> OwnedFd {
        let fd = nix::sys::memfd::memfd_create("t", nix::sys::memfd::MFdFlags::empty()).unwrap();
        let mut f = std::fs::File::from(fd);
        f.write_all(text).unwrap();
        f.into()
    }

    fn read_back(fd: OwnedFd) -> Vec<u8> {
        let mut f = std::fs::File::from(fd);
        f.rewind().unwrap();
        let mut v = Vec::new();
        f.read_to_end(&mut v).unwrap();
        v
    }

    fn is_cloexec(fd: &OwnedFd) -> bool {
        let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        flags & libc::FD_CLOEXEC != 0
    }

    #[test]
    fn fds_travel_with_their_frame_and_arrive_cloexec() {
        let (a, b) = UnixStream::pair().unwrap();
        let one = memfd_with(b"one");
        let two = memfd_with(b"two");
        write_frame(&a, &Hello { version: 1 }, &[one.as_fd(), two.as_fd()]).unwrap();
        write_frame(&a, &Hello { version: 2 }, &[]).unwrap();
        let (h, fds): (Hello, _) = read_frame(&b).unwrap();
        assert_eq!(h.version, 1);
        assert_eq!(fds.len(), 2);
        assert!(fds.iter().all(is_cloexec));
        let mut fds = fds.into_iter();
        assert_eq!(read_back(fds.next().unwrap()), b"one");
        assert_eq!(read_back(fds.next().unwrap()), b"two");
        let (h, fds): (Hello, _) = read_frame(&b).unwrap();
        assert_eq!((h.version, fds.len()), (2, 0));
    }

    #[test]
    fn unannounced_fds_are_an_error_and_are_closed() {
        let (a, b) = UnixStream::pair().unwrap();
        let bytes = frame::encode(&Hello { version: 1 }, 0).unwrap();
        let stray = memfd_with(b"x");
        a.send_with_fd(&bytes, &[stray.as_raw_fd()]).unwrap();
        let r: Result<(Hello, _), _> = read_frame(&b);
        assert!(matches!(
            r,
            Err(FrameError::FdCountMismatch {
                expected: 0,
                received: 1
            })
        ));
    }

    #[test]
    fn truncated_frame_then_close() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let bytes = frame::encode(&Hello { version: 1 }, 0).unwrap();
        a.write_all(&bytes[..bytes.len() - 1]).unwrap();
        drop(a);
        let r: Result<(Hello, _), _> = read_frame(&b);
        assert!(matches!(r, Err(FrameError::Truncated { .. })));
    }

    #[test]
    fn oversized_header_on_the_wire() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&u32::MAX.to_le_bytes()).unwrap();
        let r: Result<(Hello, _), _> = read_frame(&b);
        assert!(matches!(r, Err(FrameError::TooLarge(_))));
    }

    #[test]
    fn read_timeout_is_reported() {
        let (_a, b) = UnixStream::pair().unwrap();
        b.set_read_timeout(Some(std::time::Duration::from_millis(20)))
            .unwrap();
        let r: Result<(Hello, _), _> = read_frame(&b);
        assert!(matches!(r, Err(FrameError::Timeout)));
    }

    #[tokio::test]
    async fn async_round_trip_with_fds() {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let one = memfd_with(b"async");
        write_frame_async(&a, &Hello { version: 9 }, &[one.as_fd()])
            .await
            .unwrap();
        let (h, fds): (Hello, _) = read_frame_async(&b).await.unwrap();
        assert_eq!(h.version, 9);
        assert!(is_cloexec(&fds[0]));
        assert_eq!(read_back(fds.into_iter().next().unwrap()), b"async");
    }
}
