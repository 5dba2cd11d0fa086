//! The handshake, both sides: the client's `Hello`, and what each side makes
//! of the other's first message. Plain values in, plain values out.

use crate::message::{ErrorCode, RemoteError, Request, Response};
use crate::{MAGIC, VERSION};

/// The client's side: it opens with [`ClientHandshake::hello`] and reads the
/// server's answer with [`ClientHandshake::receive`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientHandshake;

/// Why a server's answer to `Hello` ends the conversation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The server refused, with a reason (busy, another version, …).
    #[error(transparent)]
    Refused(RemoteError),
    /// The server welcomed the client in a version it does not speak.
    #[error("server speaks protocol version {server}; this client speaks {VERSION}")]
    Version {
        /// The version the server named.
        server: u32,
    },
    /// The server answered with something other than `Welcome` or `Error`.
    #[error("unexpected reply to the handshake")]
    Unexpected {
        /// The frame it sent.
        kind: &'static str,
    },
}

impl ClientHandshake {
    /// The first request on every connection.
    pub fn hello(&self) -> Request {
        Request::Hello {
            magic: MAGIC,
            version: VERSION,
        }
    }

    /// The server's first frame: the agreed version, or why there is none.
    pub fn receive(&self, reply: Response) -> Result<u32, HandshakeError> {
        match reply {
            Response::Welcome { version } if version == VERSION => Ok(version),
            Response::Welcome { version } => Err(HandshakeError::Version { server: version }),
            Response::Error(err) => Err(HandshakeError::Refused(err)),
            other => Err(HandshakeError::Unexpected { kind: other.kind() }),
        }
    }
}

/// The server's side: [`ServerHandshake::receive`] turns the client's first
/// request into `Welcome`, or into the error to send before closing.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerHandshake;

impl ServerHandshake {
    /// The answer to the first request of a connection. `Err` carries the
    /// refusal to send, after which the server closes.
    pub fn receive(&self, first: &Request) -> Result<Response, RemoteError> {
        match first {
            Request::Hello { magic, version } if *magic == MAGIC => {
                if *version == VERSION {
                    return Ok(Response::Welcome { version: VERSION });
                }
                Err(RemoteError::new(
                    ErrorCode::UnsupportedVersion,
                    format!(
                        "unsupported protocol version {version}: this server speaks version {VERSION}"
                    ),
                ))
            }
            Request::Hello { .. } => Err(RemoteError::new(
                ErrorCode::BadRequest,
                "wrong magic: not an ft client",
            )),
            _ => Err(RemoteError::new(
                ErrorCode::BadRequest,
                "expected a hello first",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_agree_on_the_current_version() {
        let hello = ClientHandshake.hello();
        let welcome = ServerHandshake.receive(&hello).expect("accepted");
        assert_eq!(ClientHandshake.receive(welcome), Ok(VERSION));
    }

    #[test]
    fn the_server_refuses_what_is_not_a_hello_of_its_version() {
        let code = |request: Request| ServerHandshake.receive(&request).map_err(|err| err.code);
        assert_eq!(
            code(Request::Hello {
                magic: MAGIC,
                version: VERSION + 1
            }),
            Err(ErrorCode::UnsupportedVersion)
        );
        assert_eq!(
            code(Request::Hello {
                magic: *b"HTTP",
                version: VERSION
            }),
            Err(ErrorCode::BadRequest)
        );
        assert_eq!(
            code(Request::Stat { path: "a".into() }),
            Err(ErrorCode::BadRequest)
        );
        let refusal = ServerHandshake
            .receive(&Request::Hello {
                magic: MAGIC,
                version: 99,
            })
            .expect_err("refused");
        assert!(refusal.message.contains("99") && refusal.message.contains("version 1"));
    }

    #[test]
    fn the_client_refuses_another_version_and_stray_frames() {
        assert_eq!(
            ClientHandshake.receive(Response::Welcome { version: 2 }),
            Err(HandshakeError::Version { server: 2 })
        );
        let busy = RemoteError::new(ErrorCode::Busy, "busy");
        assert_eq!(
            ClientHandshake.receive(Response::Error(busy.clone())),
            Err(HandshakeError::Refused(busy))
        );
        assert_eq!(
            ClientHandshake.receive(Response::KeepAlive),
            Err(HandshakeError::Unexpected { kind: "KeepAlive" })
        );
        assert_eq!(
            HandshakeError::Version { server: 2 }.to_string(),
            "server speaks protocol version 2; this client speaks 1"
        );
    }
}
