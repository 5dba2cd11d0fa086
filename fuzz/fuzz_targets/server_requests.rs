//! The server's request handling: a real ftserve library instance on
//! loopback, serving a small tree with links that lead out of it, gets a
//! valid hello and then the fuzzer's bytes. Any panic anywhere aborts (so
//! the fuzzer sees it); no reply may carry the secret kept beside the root;
//! and the server must still greet the next client.
#![no_main]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"OUTSIDE-THE-ROOT-SECRET";

fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        std::panic::set_hook(Box::new(|info| {
            eprintln!("{info}");
            std::process::abort();
        }));
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let root = dir.join("root");
        std::fs::create_dir_all(root.join("sub/deeper")).expect("mkdir");
        std::fs::write(dir.join("secret.txt"), SECRET).expect("secret");
        std::fs::write(root.join("a.txt"), b"hello").expect("file");
        std::fs::write(root.join("sub/b.bin"), vec![7u8; 5 << 20]).expect("file");
        std::os::unix::fs::symlink("../secret.txt", root.join("out")).expect("link");
        std::os::unix::fs::symlink("../..", root.join("sub/up")).expect("link");
        std::os::unix::fs::symlink(dir.join("secret.txt"), root.join("abs")).expect("link");
        let config = ft_server::Config {
            root,
            limits: ft_server::Limits {
                max_connections: 64,
                idle_timeout: Duration::from_secs(2),
                shutdown_grace: Duration::from_secs(1),
                ..ft_server::Limits::default()
            },
        };
        let server = ft_server::Server::open(config).expect("root opens");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                tx.send(listener.local_addr().expect("addr")).expect("send");
                server.run(listener, std::future::pending()).await;
            });
        });
        rx.recv().expect("address")
    })
}

fn hello() -> Vec<u8> {
    ft_protocol::codec::encode(&ft_protocol::ClientHandshake.hello()).expect("encodes")
}

fuzz_target!(|data: &[u8]| {
    let addr = server();
    let mut stream = TcpStream::connect(addr).expect("the server accepts");
    stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut input = hello();
    input.extend_from_slice(data);
    if stream.write_all(&input).is_ok() {
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut replies = Vec::new();
        let _ = stream.take(64 << 20).read_to_end(&mut replies);
        assert!(
            !replies.windows(SECRET.len()).any(|w| w == SECRET),
            "a reply carried the secret from outside the root"
        );
    }
    // Still serving.
    let mut next = TcpStream::connect(addr).expect("the server still accepts");
    next.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    next.write_all(&hello()).expect("hello");
    let mut welcome = [0u8; 12];
    next.read_exact(&mut welcome).expect("the server still greets");
});
