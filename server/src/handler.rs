//! One client connection, once TLS is up: the handshake (with the token
//! check), then requests one after another until the client leaves, goes
//! silent, breaks the protocol, or the server shuts down between two
//! requests. What each request does is in `ops`.

use std::net::SocketAddr;
use std::sync::Arc;

use ft_protocol::{
    Connection, ConnectionError, ErrorCode, RemoteError, Request, Response, ServerHandshake, Token,
    Transport,
};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backend::Backend;
use crate::limits::Limits;
use crate::ops::{self, Client, Context, Next};
use crate::tokens::{Gate, Scope, Verdict};

/// Serves one connection; the permit is its slot, given back when it ends.
pub(crate) async fn serve<S: Transport, B: Backend>(
    mut conn: Connection<S>,
    peer: SocketAddr,
    context: Arc<Context<B>>,
    shutdown: CancellationToken,
    _permit: Option<OwnedSemaphorePermit>,
) {
    // A connection that never says hello holds a slot: not for long.
    let limit = context
        .limits
        .handshake_timeout
        .min(context.limits.idle_timeout);
    let client = match tokio::time::timeout(limit, handshake(&mut conn, peer, &context.gate)).await
    {
        Ok(Ok(client)) => client,
        Ok(Err(err)) => {
            info!(client = %peer, "handshake failed: {err}");
            if let HandshakeError::Refused(_) = err {
                linger(&mut conn, limit).await;
            }
            return;
        }
        Err(_) => {
            info!(client = %peer, "no hello within {} s; closing", limit.as_secs());
            return;
        }
    };
    let client = &client;
    // A request read while gathering a run of `Get`s that was not one.
    let mut held = None;
    // The upload the last `Put` opened, which `Chunk` and `Commit` act on.
    let mut upload = ops::put::Current::default();
    loop {
        let request = match held.take() {
            Some(request) => request,
            None => tokio::select! {
                request = conn.read_request() => request,
                () = shutdown.cancelled() => break,
            },
        };
        let request = match request {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(ConnectionError::Timeout(after)) => {
                info!(client = %peer, "closing idle connection after {} s", after.as_secs());
                break;
            }
            Err(err) => {
                match unreadable(&err) {
                    Some(reply) => {
                        warn!(client = %peer, "bad request: {err}");
                        let _ = conn.send(&Response::Error(reply)).await;
                    }
                    None => info!(client = %peer, "connection lost: {err}"),
                }
                break;
            }
        };
        let outcome = match request {
            // Pipelined `Get`s already here are answered together.
            Request::Get { path, offset } => {
                let mut gets = vec![(path, offset)];
                while gets.len() < context.limits.get_batch {
                    match conn.buffered_request() {
                        Some(Ok(Request::Get { path, offset })) => gets.push((path, offset)),
                        Some(other) => {
                            held = Some(other.map(Some));
                            break;
                        }
                        None => break,
                    }
                }
                ops::get::batch(&mut conn, client, &context, gets).await
            }
            request => ops::answer(&mut conn, client, &context, &mut upload, request).await,
        };
        match outcome {
            Ok(Next::Open) => {}
            Ok(Next::Close) => break,
            Err(err) => {
                info!(client = %peer, "connection lost: {err}");
                break;
            }
        }
    }
    let _ = conn.shutdown().await;
}

/// The reply owed to a client whose frame could not be read as a request:
/// `BadRequest` for a malformed or oversized frame; none when the connection
/// itself failed.
fn unreadable(err: &ConnectionError) -> Option<RemoteError> {
    matches!(
        err,
        ConnectionError::Codec(_) | ConnectionError::FrameTooLarge { .. }
    )
    .then(|| RemoteError::new(ErrorCode::BadRequest, err.to_string()))
}

/// Tells a client over the connection limit that the server is busy: the
/// reply goes out at once, then what the client sent is read (for at most
/// the limit's `busy_hello_timeout`) so that closing does not reset the
/// connection under the reply.
pub(crate) async fn refuse_busy<S: Transport>(
    mut conn: Connection<S>,
    peer: SocketAddr,
    limits: &Limits,
) {
    let reply = RemoteError::new(
        ErrorCode::Busy,
        format!(
            "server busy: all {} connections in use, try again later",
            limits.max_connections
        ),
    );
    let _ = conn.send(&Response::Error(reply)).await;
    linger(&mut conn, limits.busy_hello_timeout).await;
    info!(client = %peer, "refused: busy");
}

/// Closes the sending side after a refusal, then reads and drops the
/// requests a client may have sent behind its hello until it closes too (at
/// most `limit`, and a few frames): closing a socket with bytes unread
/// resets the connection, and the reset can overtake the refusal on its way.
async fn linger<S: Transport>(conn: &mut Connection<S>, limit: std::time::Duration) {
    const MOST: usize = 64;
    let _ = conn.shutdown().await;
    let _ = tokio::time::timeout(limit, async {
        for _ in 0..MOST {
            if !matches!(conn.read_request().await, Ok(Some(_))) {
                break;
            }
        }
    })
    .await;
}

#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error("client closed before the hello")]
    Closed,
    #[error("{}", .0.message)]
    Refused(RemoteError),
}

/// Reads the hello, judges its token, and answers: `Welcome` and who the
/// client is, or the refusal, sent before the error is returned.
async fn handshake<S: Transport>(
    conn: &mut Connection<S>,
    peer: SocketAddr,
    gate: &Option<Gate>,
) -> Result<Client, HandshakeError> {
    let answer = match conn.read_request().await {
        Ok(Some(first)) => ServerHandshake.receive(first),
        Ok(None) => return Err(HandshakeError::Closed),
        Err(err) => match unreadable(&err) {
            Some(refusal) => Err(refusal),
            None => return Err(err.into()),
        },
    };
    let admitted = answer.and_then(|token| admit(peer, gate, token.as_ref()));
    match admitted {
        Ok(client) => {
            conn.send(&ServerHandshake.welcome()).await?;
            if let Some(name) = &client.token {
                info!(client = %peer, token = name.as_str(), "authenticated");
            }
            Ok(client)
        }
        Err(refusal) => {
            conn.send(&Response::Error(refusal.clone())).await?;
            Err(HandshakeError::Refused(refusal))
        }
    }
}

/// Who the client is, by its token: anyone when the server has no token
/// file; otherwise only the holder of a token in it.
fn admit(
    peer: SocketAddr,
    gate: &Option<Gate>,
    token: Option<&Token>,
) -> Result<Client, RemoteError> {
    let Some(gate) = gate else {
        return Ok(Client {
            peer,
            token: None,
            scope: Scope::everything(),
        });
    };
    match gate.check(peer.ip(), token) {
        Verdict::Allowed { name, scope } => Ok(Client {
            peer,
            token: Some(name),
            scope,
        }),
        Verdict::Refused if token.is_none() => Err(RemoteError::new(
            ErrorCode::Unauthorized,
            "authentication required: this server wants a token (FTGET_TOKEN, FTPUT_TOKEN or --token-file)",
        )),
        Verdict::Refused => Err(RemoteError::new(
            ErrorCode::Unauthorized,
            "authentication failed: the server does not know this token",
        )),
        Verdict::Throttled => Err(RemoteError::new(
            ErrorCode::Unauthorized,
            format!(
                "authentication failed: too many failed attempts from {}; try again in a minute",
                peer.ip()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::LocalFiles;
    use crate::store::Store;
    use ft_protocol::{ChainHasher, ClientHandshake, FileMeta, CHUNK_SIZE};
    use std::time::Duration;
    use tokio::io::DuplexStream;

    const PEER: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        1,
    ));

    /// A handler serving `root` over an in-memory pipe, and the client's end.
    fn serve_dir(root: &std::path::Path) -> Connection<DuplexStream> {
        let limits = Limits {
            keepalive: Duration::from_millis(5),
            ..Limits::default()
        };
        let files = LocalFiles::open_root(root).expect("root opens");
        let context = Arc::new(Context {
            store: Store::new(files, &limits),
            limits,
            gate: None,
            uploads: None,
        });
        let (client, server) = tokio::io::duplex(4 << 20);
        let server = Connection::new(server, Duration::from_secs(5));
        tokio::spawn(serve(server, PEER, context, CancellationToken::new(), None));
        Connection::new(client, Duration::from_secs(5))
    }

    async fn greeted(root: &std::path::Path) -> Connection<DuplexStream> {
        let mut client = serve_dir(root);
        client
            .send(&ClientHandshake::default().hello())
            .await
            .expect("hello");
        let welcome = client.read_response().await.expect("welcome");
        assert_eq!(
            ClientHandshake::default().receive(welcome),
            Ok(ft_protocol::VERSION)
        );
        client
    }

    fn sha256(data: &[u8]) -> ft_protocol::Digest {
        let mut hasher = ChainHasher::new();
        hasher.update(data);
        hasher.finalize()
    }

    #[tokio::test]
    async fn a_wrong_first_frame_is_refused_and_closed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut client = serve_dir(dir.path());
        client
            .send(&Request::Stat { path: "a".into() })
            .await
            .expect("send");
        match client.read_response().await {
            Ok(Response::Error(err)) => assert_eq!(err.code, ErrorCode::BadRequest),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            client.read_response().await,
            Err(ConnectionError::Closed)
        ));
    }

    #[tokio::test]
    async fn pipelined_gets_are_answered_in_order_and_a_second_hello_closes() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, body) in [("a", &b"alpha"[..]), ("b", b""), ("c", b"gamma!")] {
            std::fs::write(dir.path().join(name), body).expect("write");
        }
        let mut client = greeted(dir.path()).await;
        let requests: Vec<Request> = ["a", "missing", "b", "c"]
            .iter()
            .map(|path| Request::Get {
                path: (*path).into(),
                offset: 0,
            })
            .collect();
        client.send_all(&requests).await.expect("send");
        let mut replies = Vec::new();
        for _ in 0..9 {
            replies.push(client.read_response().await.expect("reply"));
        }
        let kinds: Vec<&str> = replies.iter().map(Response::kind).collect();
        assert_eq!(
            kinds,
            ["Meta", "Data", "End", "Error", "Meta", "End", "Meta", "Data", "End"]
        );
        assert_eq!(
            replies[2],
            Response::End {
                sha256: sha256(b"alpha")
            }
        );
        assert_eq!(
            replies[5],
            Response::End {
                sha256: sha256(b"")
            }
        );

        client
            .send(&ClientHandshake::default().hello())
            .await
            .expect("send");
        match client.read_response().await {
            Ok(Response::Error(err)) => assert_eq!(err.code, ErrorCode::BadRequest),
            other => panic!("{other:?}"),
        }
        assert!(
            client.read_response().await.is_err(),
            "closed after BadRequest"
        );
    }

    #[tokio::test]
    async fn an_empty_file_has_no_checkpoint_states() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("empty"), b"").expect("write");
        let mut client = greeted(dir.path()).await;
        // A cold Get first (it hashes the file), then its checkpoints.
        client
            .send_all(&[
                Request::Get {
                    path: "empty".into(),
                    offset: 0,
                },
                Request::Checkpoints {
                    path: "empty".into(),
                    first: 1,
                    count: 10,
                },
            ])
            .await
            .expect("send");
        for _ in 0..2 {
            client.read_response().await.expect("meta, end");
        }
        match client.read_response().await.expect("reply") {
            Response::Checkpoints { states, meta, .. } => {
                assert!(states.is_empty(), "{states:?}");
                assert_eq!(meta.sha256, Some(sha256(b"")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_large_file_streams_cold_then_warm_over_a_pipe() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data: Vec<u8> = (0..2 * CHUNK_SIZE + 5).map(|i| (i % 239) as u8).collect();
        std::fs::write(dir.path().join("f"), &data).expect("write");
        let mut client = greeted(dir.path()).await;
        for (round, offset) in [(0, 0), (1, 0), (2, CHUNK_SIZE)] {
            client
                .send(&Request::Get {
                    path: "f".into(),
                    offset,
                })
                .await
                .expect("send");
            let mut reply = ft_protocol::GetReply::new(offset);
            let mut bytes = Vec::new();
            let mut meta: Option<FileMeta> = None;
            while !reply.is_done() {
                let frame = client.read_response().await.expect("frame");
                match reply.feed(frame).expect("in order") {
                    ft_protocol::GetEvent::Meta(m) => meta = Some(m),
                    ft_protocol::GetEvent::Data(d) => bytes.extend_from_slice(&d),
                    ft_protocol::GetEvent::End { sha256: end } => {
                        assert_eq!(end, sha256(&data), "round {round}")
                    }
                    ft_protocol::GetEvent::Checkpoint { .. } => {}
                    ft_protocol::GetEvent::Failed(err) => panic!("round {round}: {err}"),
                }
            }
            assert_eq!(bytes, &data[offset as usize..], "round {round}");
            let warm = meta.and_then(|m| m.sha256).is_some();
            assert_eq!(
                warm,
                round > 0,
                "round {round}: digest known after one pass"
            );
        }
    }

    #[tokio::test]
    async fn pipelined_gets_past_the_batch_budget_are_streamed_whole_and_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files: Vec<Vec<u8>> = (0..5u8)
            .map(|k| (0..100 * 1024).map(|i| (i % 251) as u8 ^ k).collect())
            .collect();
        for (k, data) in files.iter().enumerate() {
            std::fs::write(dir.path().join(k.to_string()), data).expect("write");
        }
        let mut client = greeted(dir.path()).await;
        let requests: Vec<Request> = (0..files.len())
            .map(|k| Request::Get {
                path: k.to_string(),
                offset: 0,
            })
            .collect();
        // 500 KiB asked at once, over the 128 KiB read whole for a run.
        client.send_all(&requests).await.expect("send");
        for (k, data) in files.iter().enumerate() {
            let mut reply = ft_protocol::GetReply::new(0);
            let mut bytes = Vec::new();
            while !reply.is_done() {
                let frame = client.read_response().await.expect("frame");
                match reply.feed(frame).expect("in order") {
                    ft_protocol::GetEvent::Data(d) => bytes.extend_from_slice(&d),
                    ft_protocol::GetEvent::End { sha256: end } => {
                        assert_eq!(end, sha256(data), "file {k}")
                    }
                    ft_protocol::GetEvent::Failed(err) => panic!("file {k}: {err}"),
                    _ => {}
                }
            }
            assert_eq!(&bytes, data, "file {k}");
        }
    }

    #[tokio::test]
    async fn listings_give_digests_when_asked_and_once_known() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("f"), b"abc").expect("write");
        let mut client = greeted(dir.path()).await;
        let mut digests = Vec::new();
        for compute in [false, true, false] {
            client
                .send(&Request::List {
                    path: String::new(),
                    recursive: false,
                    digests: compute,
                })
                .await
                .expect("send");
            let mut reply = ft_protocol::ListReply::new();
            while !reply.is_done() {
                let frame = client.read_response().await.expect("frame");
                if let ft_protocol::ListEvent::Entries(entries) =
                    reply.feed(frame).expect("in order")
                {
                    digests.extend(entries.into_iter().map(|e| e.sha256));
                }
            }
        }
        let abc = Some(sha256(b"abc"));
        assert_eq!(digests, [None, abc, abc], "kept once computed");
    }
}
