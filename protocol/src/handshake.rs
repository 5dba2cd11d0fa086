//! The handshake, both sides: the client's `Hello`, and what each side makes
//! of the other's first message. Plain values in, plain values out.

use crate::message::{ErrorCode, RemoteError, Request, Response, Token};
use crate::{MAGIC, MAX_TOKEN_BYTES, VERSION};

/// The client's side: it opens with [`ClientHandshake::hello`] and reads the
/// server's answer with [`ClientHandshake::receive`].
#[derive(Debug, Clone, Default)]
pub struct ClientHandshake {
    /// The token the hello presents, if any.
    pub token: Option<Token>,
}

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
            token: self.token.clone(),
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
/// request into the token it presents, or into the error to send before
/// closing. Whether the token will do is the server's to judge; then
/// [`ServerHandshake::welcome`] is the answer.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerHandshake;

impl ServerHandshake {
    /// The token a well-formed hello of this version presents (`None` for
    /// no token). `Err` carries the refusal to send, after which the server
    /// closes.
    pub fn receive(&self, first: Request) -> Result<Option<Token>, RemoteError> {
        match first {
            Request::Hello {
                magic,
                version,
                token,
            } if magic == MAGIC => {
                if version == VERSION {
                    return match token {
                        Some(token) if token.expose().len() > MAX_TOKEN_BYTES => {
                            Err(RemoteError::new(
                                ErrorCode::Unauthorized,
                                "authentication failed: malformed token",
                            ))
                        }
                        token => Ok(token),
                    };
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

    /// The answer to a hello the server accepts.
    pub fn welcome(&self) -> Response {
        Response::Welcome { version: VERSION }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_agree_on_the_current_version() {
        let client = ClientHandshake {
            token: Some(Token::new("t")),
        };
        let token = ServerHandshake.receive(client.hello()).expect("accepted");
        assert_eq!(token, Some(Token::new("t")));
        assert_eq!(client.receive(ServerHandshake.welcome()), Ok(VERSION));
        let anonymous = ServerHandshake.receive(ClientHandshake::default().hello());
        assert_eq!(anonymous, Ok(None));
    }

    #[test]
    fn the_server_refuses_what_is_not_a_hello_of_its_version() {
        let code = |request: Request| ServerHandshake.receive(request).map_err(|err| err.code);
        assert_eq!(
            code(Request::Hello {
                magic: MAGIC,
                version: VERSION + 1,
                token: None,
            }),
            Err(ErrorCode::UnsupportedVersion)
        );
        assert_eq!(
            code(Request::Hello {
                magic: *b"HTTP",
                version: VERSION,
                token: None,
            }),
            Err(ErrorCode::BadRequest)
        );
        assert_eq!(
            code(Request::Hello {
                magic: MAGIC,
                version: VERSION,
                token: Some(Token::new("x".repeat(MAX_TOKEN_BYTES + 1))),
            }),
            Err(ErrorCode::Unauthorized)
        );
        assert_eq!(
            code(Request::Stat { path: "a".into() }),
            Err(ErrorCode::BadRequest)
        );
        let refusal = ServerHandshake
            .receive(Request::Hello {
                magic: MAGIC,
                version: 99,
                token: None,
            })
            .expect_err("refused");
        assert!(refusal.message.contains("99") && refusal.message.contains("version 2"));
    }

    #[test]
    fn the_client_refuses_another_version_and_stray_frames() {
        let client = ClientHandshake::default();
        assert_eq!(
            client.receive(Response::Welcome { version: 3 }),
            Err(HandshakeError::Version { server: 3 })
        );
        let busy = RemoteError::new(ErrorCode::Busy, "busy");
        assert_eq!(
            client.receive(Response::Error(busy.clone())),
            Err(HandshakeError::Refused(busy))
        );
        assert_eq!(
            client.receive(Response::KeepAlive),
            Err(HandshakeError::Unexpected { kind: "KeepAlive" })
        );
        assert_eq!(
            HandshakeError::Version { server: 3 }.to_string(),
            "server speaks protocol version 3; this client speaks 2"
        );
    }
}
