//! Client library: connect, handshake, and one method per request. [`Client`] is blocking (for
//! vmwrapper and simple tools); [`AsyncClient`] runs on tokio (for container runtime shims).

use crate::fdpass::{read_frame, write_frame};
use crate::frame::FrameError;
use crate::messages::*;
use crate::types::VmId;
use crate::{PROTOCOL_VERSION, REQUEST_TIMEOUT};
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to tapmanager at {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("exchange with tapmanager failed")]
    Frame(#[from] FrameError),
    #[error("tapmanager refused: {0} ({code})", code = .0.code)]
    Server(#[from] Error),
    #[error("tapmanager sent an unexpected reply to request {0}")]
    Unexpected(u64),
}

impl ClientError {
    /// The daemon's error code, when the daemon refused.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Server(e) => Some(e.code),
            _ => None,
        }
    }

    /// A hint for a person, when the cause is a common one.
    pub fn hint(&self) -> Option<String> {
        match self {
            ClientError::Connect { path, source } => match source.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => Some(format!(
                    "is the daemon running? (`tapmanager serve` listens on {}; pass --socket if it uses another path)",
                    path.display()
                )),
                io::ErrorKind::PermissionDenied => Some(
                    "only root and members of the daemon's group (usually `tapmanager`) may connect: `sudo usermod -aG tapmanager $USER`, then log in again".to_owned(),
                ),
                _ => None,
            },
            _ => None,
        }
    }
}

fn check_hello(reply: HelloReply) -> Result<(), ClientError> {
    match reply {
        HelloReply::Accepted(_) => Ok(()),
        HelloReply::Rejected(e) => Err(ClientError::Server(e)),
    }
}

fn check_id(resp: &Response, id: u64) -> Result<(), ClientError> {
    if resp.id == id {
        Ok(())
    } else {
        Err(ClientError::Unexpected(id))
    }
}

/// A blocking connection to the daemon. Every request times out after [`REQUEST_TIMEOUT`].
#[derive(Debug)]
pub struct Client {
    sock: UnixStream,
    next_id: u64,
}

impl Client {
    /// Connects and does the version handshake.
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let path = path.as_ref();
        let connect_err = |source| ClientError::Connect {
            path: path.to_owned(),
            source,
        };
        let sock = UnixStream::connect(path).map_err(connect_err)?;
        sock.set_read_timeout(Some(REQUEST_TIMEOUT))
            .map_err(connect_err)?;
        sock.set_write_timeout(Some(REQUEST_TIMEOUT))
            .map_err(connect_err)?;
        write_frame(
            &sock,
            &Hello {
                version: PROTOCOL_VERSION,
            },
            &[],
        )?;
        let (reply, _fds): (HelloReply, _) = read_frame(&sock)?;
        check_hello(reply)?;
        Ok(Client { sock, next_id: 1 })
    }

    fn call(&mut self, body: RequestBody) -> Result<(ResponseBody, Vec<OwnedFd>), ClientError> {
        self.call_with(body, &[])
    }

    fn call_with(
        &mut self,
        body: RequestBody,
        send: &[BorrowedFd<'_>],
    ) -> Result<(ResponseBody, Vec<OwnedFd>), ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        write_frame(&self.sock, &Request { id, body }, send)?;
        let (resp, fds): (Response, _) = read_frame(&self.sock)?;
        check_id(&resp, id)?;
        Ok((resp.body?, fds))
    }

    /// Attaches a VM. The fds come interface by interface, `queues` of them each (none for a
    /// `by_name` interface).
    pub fn attach(
        &mut self,
        req: AttachRequest,
    ) -> Result<(Attachment, Vec<OwnedFd>), ClientError> {
        let id = self.next_id;
        match self.call(RequestBody::Attach(req))? {
            (ResponseBody::Attached(a), fds) => Ok((a, fds)),
            _ => Err(ClientError::Unexpected(id)),
        }
    }

    /// The shim path: attaches a VM whose NICs with `take_over` set take over those
    /// interfaces of the network namespace `netns` (an fd of `/proc/PID/ns/net`, or of a
    /// bind mount of one). The daemon accepts it only if the caller owns that namespace or
    /// its policy lets the caller adopt any. Releasing gives the interfaces back as they were.
    pub fn attach_pod(
        &mut self,
        req: AttachRequest,
        netns: BorrowedFd<'_>,
    ) -> Result<(Attachment, Vec<OwnedFd>), ClientError> {
        let id = self.next_id;
        match self.call_with(RequestBody::Attach(req), &[netns])? {
            (ResponseBody::Attached(a), fds) => Ok((a, fds)),
            _ => Err(ClientError::Unexpected(id)),
        }
    }

    pub fn release(&mut self, vm: &VmId) -> Result<(), ClientError> {
        let id = self.next_id;
        match self.call(RequestBody::Release { vm: vm.clone() })? {
            (ResponseBody::Released, _) => Ok(()),
            _ => Err(ClientError::Unexpected(id)),
        }
    }

    pub fn list(&mut self) -> Result<Vec<Attachment>, ClientError> {
        let id = self.next_id;
        match self.call(RequestBody::List)? {
            (ResponseBody::List(v), _) => Ok(v),
            _ => Err(ClientError::Unexpected(id)),
        }
    }

    pub fn info(&mut self, vm: &VmId) -> Result<Attachment, ClientError> {
        let id = self.next_id;
        match self.call(RequestBody::Info { vm: vm.clone() })? {
            (ResponseBody::Info(a), _) => Ok(a),
            _ => Err(ClientError::Unexpected(id)),
        }
    }

    /// Checks that `vm`'s network is still as built (CNI CHECK); an error says what is not.
    pub fn check(&mut self, vm: &VmId) -> Result<(), ClientError> {
        let id = self.next_id;
        match self.call(RequestBody::Check { vm: vm.clone() })? {
            (ResponseBody::Checked, _) => Ok(()),
            _ => Err(ClientError::Unexpected(id)),
        }
    }

    /// Every network's readiness.
    pub fn status(&mut self) -> Result<Vec<crate::NetworkStatus>, ClientError> {
        let id = self.next_id;
        match self.call(RequestBody::Status)? {
            (ResponseBody::Status(v), _) => Ok(v),
            _ => Err(ClientError::Unexpected(id)),
        }
    }
}

#[cfg(feature = "tokio")]
pub use async_client::AsyncClient;

#[cfg(feature = "tokio")]
mod async_client {
    use super::*;
    use crate::fdpass::{read_frame_async, write_frame_async};
    use tokio::net::UnixStream;
    use tokio::time::timeout;

    /// An async connection to the daemon, for shims running on tokio. Each request (write and
    /// reply) times out after [`REQUEST_TIMEOUT`].
    #[derive(Debug)]
    pub struct AsyncClient {
        sock: UnixStream,
        next_id: u64,
    }

    impl AsyncClient {
        pub async fn connect(path: impl AsRef<Path>) -> Result<AsyncClient, ClientError> {
            let path = path.as_ref();
            let sock = UnixStream::connect(path)
                .await
                .map_err(|source| ClientError::Connect {
                    path: path.to_owned(),
                    source,
                })?;
            let hello = Hello {
                version: PROTOCOL_VERSION,
            };
            let reply: HelloReply = timeout(REQUEST_TIMEOUT, async {
                write_frame_async(&sock, &hello, &[]).await?;
                read_frame_async(&sock).await.map(|(r, _)| r)
            })
            .await
            .map_err(|_| FrameError::Timeout)??;
            check_hello(reply)?;
            Ok(AsyncClient { sock, next_id: 1 })
        }

        async fn call(
            &mut self,
            body: RequestBody,
        ) -> Result<(ResponseBody, Vec<OwnedFd>), ClientError> {
            self.call_with(body, &[]).await
        }

        async fn call_with(
            &mut self,
            body: RequestBody,
            send: &[BorrowedFd<'_>],
        ) -> Result<(ResponseBody, Vec<OwnedFd>), ClientError> {
            let id = self.next_id;
            self.next_id += 1;
            let sock = &self.sock;
            let (resp, fds): (Response, _) = timeout(REQUEST_TIMEOUT, async {
                write_frame_async(sock, &Request { id, body }, send).await?;
                read_frame_async(sock).await
            })
            .await
            .map_err(|_| FrameError::Timeout)??;
            check_id(&resp, id)?;
            Ok((resp.body?, fds))
        }

        pub async fn attach(
            &mut self,
            req: AttachRequest,
        ) -> Result<(Attachment, Vec<OwnedFd>), ClientError> {
            let id = self.next_id;
            match self.call(RequestBody::Attach(req)).await? {
                (ResponseBody::Attached(a), fds) => Ok((a, fds)),
                _ => Err(ClientError::Unexpected(id)),
            }
        }

        /// [`crate::Client::attach_pod`], async.
        pub async fn attach_pod(
            &mut self,
            req: AttachRequest,
            netns: BorrowedFd<'_>,
        ) -> Result<(Attachment, Vec<OwnedFd>), ClientError> {
            let id = self.next_id;
            match self.call_with(RequestBody::Attach(req), &[netns]).await? {
                (ResponseBody::Attached(a), fds) => Ok((a, fds)),
                _ => Err(ClientError::Unexpected(id)),
            }
        }

        pub async fn release(&mut self, vm: &VmId) -> Result<(), ClientError> {
            let id = self.next_id;
            match self.call(RequestBody::Release { vm: vm.clone() }).await? {
                (ResponseBody::Released, _) => Ok(()),
                _ => Err(ClientError::Unexpected(id)),
            }
        }

        pub async fn list(&mut self) -> Result<Vec<Attachment>, ClientError> {
            let id = self.next_id;
            match self.call(RequestBody::List).await? {
                (ResponseBody::List(v), _) => Ok(v),
                _ => Err(ClientError::Unexpected(id)),
            }
        }

        pub async fn info(&mut self, vm: &VmId) -> Result<Attachment, ClientError> {
            let id = self.next_id;
            match self.call(RequestBody::Info { vm: vm.clone() }).await? {
                (ResponseBody::Info(a), _) => Ok(a),
                _ => Err(ClientError::Unexpected(id)),
            }
        }
    }
}
