//! What travels on the wire, end to end: an eavesdropper who records every
//! byte of a download reads neither the file's contents, nor its name, nor
//! the token; and what is not a client of this version (a version-1 ft
//! client, an HTTP request, random bytes, a TLS hello cut short) is turned
//! away, each with one log line, while the server goes on serving. And the
//! last bytes of a reply leave the server even when they met a full socket.

#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ft_protocol::{codec, ErrorCode, Response};
use ft_tests::{
    add_token, contains_bytes, probe, sha256_hex, wait_until, AfterBudget, ClientHome, Probe,
    Recorder, Relay, TestEnv, TlsServer, IO_TIMEOUT,
};

/// The folder and file name the eavesdropper must not learn.
const FOLDER: &str = "folder-quixotic-marmalade";
const NAME: &str = "name-zebra-quokka-manifest.txt";

/// What the file holds, many times over.
const MARKER: &[u8] = b"<<ft-plaintext-marker: if you can read this, it was not encrypted>>\n";

fn utf8(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

#[test]
fn a_recording_relay_sees_neither_contents_nor_names_nor_the_token() {
    let env = TestEnv::new();
    let contents = MARKER.repeat(16 * 1024);
    fs::create_dir(env.root.join(FOLDER)).expect("mkdir");
    fs::write(env.root.join(FOLDER).join(NAME), &contents).expect("write");
    let tokens = tempfile::tempdir().expect("tempdir");
    let token_file = tokens.path().join("tokens");
    let token = add_token(&token_file, "alice", None);
    let server = TlsServer::start(
        &env.root,
        "127.0.0.1:0",
        &["--token-file", utf8(&token_file)],
        &[],
    );
    let recorder = Recorder::start(server.addr);
    let home = ClientHome::new();
    let with_token = [("FTGET_TOKEN", token.as_str())];
    let file = format!("{FOLDER}/{NAME}");
    let runs = [
        home.ftget(&env.work, &[&recorder.target(), &file], &with_token),
        home.ftget(
            &env.work,
            &[&recorder.target(), "--list", FOLDER],
            &with_token,
        ),
        home.ftget(
            &env.work,
            &[&recorder.target(), "-r", FOLDER, "-o", "tree"],
            &with_token,
        ),
    ];
    for run in &runs {
        assert_eq!(run.code, Some(0), "{run:?}");
    }
    assert!(runs[1].stdout.contains(NAME), "{}", runs[1].stdout);
    let got = fs::read(env.work.join(NAME)).expect("downloaded");
    assert_eq!(sha256_hex(&got), sha256_hex(&contents));
    settle(&recorder);

    let (up, down) = recorder.recorded();
    assert!(recorder.connections() >= 3, "every run went through it");
    assert!(
        down.len() >= 2 * contents.len(),
        "it carried the file twice: {} bytes from the server",
        down.len()
    );
    assert_eq!(
        up.first(),
        Some(&0x16),
        "the client opens with a TLS handshake"
    );
    for (what, needle) in [
        ("the contents", &MARKER[..32]),
        ("the file name", NAME.as_bytes()),
        ("the folder name", FOLDER.as_bytes()),
        ("the token", token.as_bytes()),
        ("the token's random part", &token.as_bytes()["ftk_".len()..]),
        ("the ft magic of a hello", b"FTXF"),
    ] {
        for (direction, bytes) in [("client to server", &up), ("server to client", &down)] {
            assert!(
                !contains_bytes(bytes, needle),
                "{what} is readable on the wire, {direction}"
            );
        }
    }
}

/// Waits (bounded) until the recorder has carried nothing new for a
/// moment: a client's last bytes (its TLS close) may still be on their way.
fn settle(recorder: &Recorder) {
    let mut before = recorder.recorded();
    wait_until(Duration::from_secs(2), || {
        std::thread::sleep(Duration::from_millis(50));
        let now = recorder.recorded();
        let same = now == before;
        before = now;
        same
    });
}

/// The server's log lines about the connection from local `port`.
fn lines_about(server: &TlsServer, port: u16) -> Vec<String> {
    let client = format!("client=127.0.0.1:{port}");
    server
        .logs()
        .lines()
        .filter(|line| line.split_whitespace().any(|word| word == client))
        .map(str::to_owned)
        .collect()
}

/// Waits (bounded) until the server has logged about `probe`'s connection
/// and returns those lines.
fn logged(server: &TlsServer, probe: &Probe) -> Vec<String> {
    wait_until(IO_TIMEOUT, || !lines_about(server, probe.port).is_empty());
    // A second line, if there were one, would follow at once.
    std::thread::sleep(Duration::from_millis(100));
    lines_about(server, probe.port)
}

/// A version-1 hello, framed: length 12, then variant 0, the magic and
/// version 1, little-endian as bincode writes them.
fn version_1_hello() -> Vec<u8> {
    let mut frame = 12u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&0u32.to_le_bytes());
    frame.extend_from_slice(b"FTXF");
    frame.extend_from_slice(&1u32.to_le_bytes());
    frame
}

/// The first half of a real TLS 1.3 ClientHello, as ftget would send it.
fn truncated_client_hello(server: &TlsServer) -> Vec<u8> {
    let trust = ft_client::trust::Trust::new("127.0.0.1", server.port(), Default::default())
        .expect("trust");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("a name");
    let mut client = rustls::ClientConnection::new(trust.config(), name).expect("client");
    let mut hello = Vec::new();
    client.write_tls(&mut hello).expect("a ClientHello");
    assert_eq!(hello[0], 0x16, "a handshake record");
    hello.truncate(hello.len() / 2);
    hello
}

#[test]
fn a_version_1_client_hears_which_version_the_server_speaks() {
    let env = TestEnv::new();
    let server = TlsServer::start(&env.root, "127.0.0.1:0", &[], &[]);
    let probe = probe(server.addr, &version_1_hello(), false, IO_TIMEOUT);
    assert!(
        probe.closed,
        "the server closes after its answer: {probe:?}"
    );
    let (prefix, body) = probe.reply.split_at(4);
    let len = u32::from_be_bytes(prefix.try_into().unwrap()) as usize;
    assert_eq!(len, body.len(), "one whole frame, in the clear: {probe:?}");
    let reply = codec::decode_response(bytes::Bytes::copy_from_slice(body)).expect("a response");
    let Response::Error(error) = reply else {
        panic!("an error frame: {reply:?}");
    };
    assert_eq!(error.code, ErrorCode::UnsupportedVersion);
    assert!(error.message.contains("version 2"), "{}", error.message);
    let lines = logged(&server, &probe);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("version-1 client"), "{lines:?}");
}

#[test]
fn garbage_is_closed_and_the_server_goes_on() {
    let env = TestEnv::new();
    fs::write(env.root.join("a.txt"), MARKER).expect("write");
    // A short idle timeout, so that a handshake left half-done ends soon;
    // the listener's debug lines, where a connection closed without a byte
    // (a load balancer's health check) is told.
    let mut server = TlsServer::start(
        &env.root,
        "127.0.0.1:0",
        &["--idle-timeout", "2"],
        &[("RUST_LOG", "info,ft_server::listener=debug")],
    );
    let mut random = vec![0u8; 64 * 1024];
    fastrand::Rng::with_seed(11).fill(&mut random);
    random[0] = b'x';
    let hello = truncated_client_hello(&server);
    let cases: [(&str, Arc<[u8]>, bool, &str); 5] = [
        (
            "HTTP",
            b"GET / HTTP/1.1\r\n\r\n"[..].into(),
            false,
            "not a TLS client",
        ),
        (
            "64 KiB of random bytes",
            random.into(),
            false,
            "not a TLS client",
        ),
        (
            "nothing, then the end",
            Arc::from(&b""[..]),
            true,
            "closed without a byte",
        ),
        (
            "half a ClientHello, then the end",
            hello.clone().into(),
            true,
            "TLS handshake failed",
        ),
        (
            "half a ClientHello, then silence",
            hello.into(),
            false,
            "no TLS handshake within",
        ),
    ];
    for (what, bytes, then_end, reason) in cases {
        let probe = probe(server.addr, &bytes, then_end, IO_TIMEOUT);
        assert!(probe.closed, "{what}: closed by the server: {probe:?}");
        assert!(
            probe.reply.is_empty(),
            "{what}: nothing said back: {:?}",
            String::from_utf8_lossy(&probe.reply)
        );
        let lines = logged(&server, &probe);
        assert_eq!(lines.len(), 1, "{what}: one log line: {lines:?}");
        assert!(lines[0].contains(reason), "{what}: {lines:?}");
        assert!(server.is_running(), "{what}: the server is still up");
    }
    let home = ClientHome::new();
    let run = home.ftget(&env.work, &[&server.target(), "a.txt"], &[]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(fs::read(env.work.join("a.txt")).expect("a.txt"), MARKER);
}

/// Fresh files downloaded through a link that stops for a second: each run
/// meets the server's socket full at a different moment.
const PAUSED_RUNS: usize = 16;

#[test]
fn a_reply_ends_soon_after_a_paused_link_recovers() {
    // Over TLS, a write can return with the end of what it was given still
    // in the TLS layer's buffer (the socket was full); unless the server
    // flushes before it waits for the next request, that end leaves only
    // with its next write, and the client, which waits for it, meets its
    // timeout instead. Whether the last write of a reply meets a full
    // socket depends on timing, so several fresh files (a first download
    // hashes the file as it sends it) are fetched, each through a link that
    // carries 256 KiB and then stops for a second.
    let env = TestEnv::new();
    for i in 0..PAUSED_RUNS {
        env.random_file(&format!("fresh-{i}.bin"), 4 << 20, i as u64);
    }
    let server = TlsServer::start(&env.root, "127.0.0.1:0", &[], &[]);
    let home = ClientHome::new();
    for i in 0..PAUSED_RUNS {
        let relay = Relay::start(
            server.addr,
            256 << 10,
            AfterBudget::Pause(Duration::from_secs(1)),
        );
        let name = format!("fresh-{i}.bin");
        // The pause is a quarter of the timeout: a client that waits it
        // out was never sent the end of the reply.
        let run = home.ftget(
            &env.work,
            &["--timeout", "4", "--retries", "0", &relay.target(), &name],
            &[],
        );
        assert_eq!(
            run.code,
            Some(0),
            "run {i}: the end of the reply did not arrive: {}",
            run.stderr
        );
    }
}

#[test]
fn a_tls_client_that_does_not_speak_ft_2_is_closed() {
    use std::io::{Read, Write};
    let env = TestEnv::new();
    fs::write(env.root.join("a.txt"), MARKER).expect("write");
    let server = TlsServer::start(&env.root, "127.0.0.1:0", &[], &[]);
    let key = server.fingerprint.parse().expect("a fingerprint");
    let settings = ft_client::trust::TrustSettings {
        pin: Some(key),
        ..Default::default()
    };
    let trust = ft_client::trust::Trust::new("127.0.0.1", server.port(), settings).expect("trust");
    // ftget's own TLS, the server pinned, but no ALPN offered.
    let mut config = (*trust.config()).clone();
    config.alpn_protocols.clear();
    let name = rustls::pki_types::ServerName::from(server.addr.ip());
    let session = rustls::ClientConnection::new(Arc::new(config), name).expect("session");
    let socket = std::net::TcpStream::connect_timeout(&server.addr, IO_TIMEOUT).expect("connects");
    socket.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let port = socket.local_addr().expect("local").port();
    let mut tls = rustls::StreamOwned::new(session, socket);
    let hello = codec::encode(&ft_protocol::ClientHandshake::default().hello()).expect("encodes");
    // The handshake may complete; the hello is never answered.
    let _ = tls.write_all(&hello).and_then(|()| tls.flush());
    let mut reply = Vec::new();
    let _ = tls.read_to_end(&mut reply);
    assert!(reply.is_empty(), "no answer: {reply:?}");
    let mut lines = Vec::new();
    wait_until(IO_TIMEOUT, || {
        lines = lines_about(&server, port);
        !lines.is_empty()
    });
    assert!(
        lines
            .iter()
            .any(|line| line.contains("does not speak ft/2")),
        "{lines:?}"
    );
    // The server goes on.
    let home = ClientHome::new();
    let run = home.ftget(&env.work, &[&server.target(), "a.txt"], &[]);
    assert_eq!(run.code, Some(0), "{run:?}");
}
