//! A server busy hashing a file it has not seen says so: `KeepAlive` frames
//! keep a client's silence timeout from firing while a cold pass runs. Here
//! the interval is 1 ms, so even a small file's cold hash spans several.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use ft_protocol::connection::ClientTlsConnection;
use ft_protocol::tls::Fingerprint;
use ft_protocol::{ClientHandshake, Request, Response, CHUNK_SIZE, VERSION};

const SIZE: usize = 24 << 20;

async fn start(
    root: std::path::PathBuf,
    state: &std::path::Path,
) -> (std::net::SocketAddr, Fingerprint) {
    let identity = ft_server::identity::Identity::in_state_dir(state).expect("identity");
    let config = ft_server::Config {
        tls: identity.server_config().expect("tls"),
        token_file: None,
        congestion: None,
        uploads: None,
        root: ft_server::Root::Folder(root),
        limits: ft_server::Limits {
            max_connections: 8,
            idle_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(1),
            keepalive: Duration::from_millis(1),
            ..ft_server::Limits::default()
        },
    };
    let server = ft_server::Server::open(config).await.expect("root opens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(server.run(listener, std::future::pending()));
    (addr, identity.fingerprint)
}

/// A TLS connection to the server pinned to its key, greeted.
async fn connect((addr, key): (std::net::SocketAddr, Fingerprint)) -> ClientTlsConnection {
    let settings = ft_client::trust::TrustSettings {
        pin: Some(key),
        ..Default::default()
    };
    let trust = ft_client::trust::Trust::new("127.0.0.1", addr.port(), settings).expect("trust");
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::from(addr.ip());
    let tls = tokio_rustls::TlsConnector::from(trust.config())
        .connect(name, stream)
        .await
        .expect("TLS");
    let mut conn = ClientTlsConnection::new(tls, Duration::from_secs(10));
    let client = ClientHandshake::default();
    conn.send(&client.hello()).await.expect("hello");
    let welcome = conn.read_response().await.expect("welcome");
    assert_eq!(client.receive(welcome), Ok(VERSION));
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_hashing_is_announced_by_keepalives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    std::fs::create_dir_all(root.join("tree")).expect("mkdir");
    let data: Vec<u8> = (0..SIZE).map(|i| (i % 253) as u8).collect();
    for name in ["a.bin", "b.bin", "tree/c.bin"] {
        std::fs::write(root.join(name), &data).expect("write");
    }
    let addr = start(root, &dir.path().join("state")).await;

    // Checkpoints of a cold file: hashed whole before the reply.
    let mut conn = connect(addr).await;
    conn.send(&Request::Checkpoints {
        path: "a.bin".into(),
        first: 1,
        count: 100,
    })
    .await
    .expect("send");
    match conn.read_response().await.expect("reply") {
        Response::Checkpoints { states, .. } => {
            assert_eq!(states.len() as u64, SIZE as u64 / CHUNK_SIZE)
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(conn.keepalives() > 0, "no keep-alive during a cold hash");

    // A cold Get from an offset: the prefix is hashed before the first byte.
    let mut conn = connect(addr).await;
    conn.send(&Request::Get {
        path: "b.bin".into(),
        offset: 4 * CHUNK_SIZE,
    })
    .await
    .expect("send");
    let mut received = 0;
    loop {
        match conn.read_response().await.expect("frame") {
            Response::Meta(_) | Response::Checkpoint { .. } => {}
            Response::Data(bytes) => received += bytes.len(),
            Response::End { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(received as u64, SIZE as u64 - 4 * CHUNK_SIZE);
    assert!(
        conn.keepalives() > 0,
        "no keep-alive before a resumed cold send"
    );

    // A listing with digests hashes each cold file before its entry.
    let mut conn = connect(addr).await;
    conn.send(&Request::List {
        path: "tree".into(),
        recursive: true,
        digests: true,
    })
    .await
    .expect("send");
    loop {
        match conn.read_response().await.expect("frame") {
            Response::Entries(entries) => {
                assert!(entries.iter().all(|e| e.sha256.is_some()))
            }
            Response::ListEnd { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(conn.keepalives() > 0, "no keep-alive during a hashing walk");
}
