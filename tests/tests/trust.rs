//! Whom ftget trusts, end to end: a pinned key, a server met before and
//! recorded, a certificate from a CA made here; and what it refuses (a
//! wrong pin, a changed key, an unknown server under --strict, an
//! interceptor), each with exit 6 and nothing written. And the server's
//! side of its identity: the key file's mode, a stable fingerprint, the
//! fingerprint of a given certificate.

#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ft_tests::{make_ca, spki_fingerprint, ClientHome, Interceptor, TestEnv, TlsServer};

/// What the test files hold.
const CONTENT: &[u8] = b"the file the tests download\n";

/// A test's folders with `a.txt` in the served root.
fn env_with_file() -> TestEnv {
    let env = TestEnv::new();
    fs::write(env.root.join("a.txt"), CONTENT).expect("write a.txt");
    env
}

/// A state folder of the test's own: a server identity no other test has.
fn own_state() -> tempfile::TempDir {
    tempfile::tempdir().expect("state tempdir")
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// A fingerprint no server of these tests has.
fn stranger() -> String {
    spki_fingerprint(b"no server has this key")
}

/// The fingerprint of the key in a state folder's key.pem, computed here.
fn key_file_fingerprint(state: &Path) -> String {
    let pem = fs::read_to_string(state.join("key.pem")).expect("key.pem");
    let key = rcgen::KeyPair::from_pem(&pem).expect("a key");
    spki_fingerprint(&rcgen::PublicKeyData::subject_public_key_info(&key))
}

/// Asserts the run was refused for the server's identity: exit 6 and
/// nothing in the work folder, not even a `.part`.
fn assert_identity_refused(env: &TestEnv, run: &ft_tests::Run) {
    assert_eq!(run.code, Some(6), "{run:?}");
    assert!(
        env.work_listing().is_empty(),
        "nothing is written: {:?}",
        env.work_listing()
    );
}

#[test]
fn the_right_pin_downloads() {
    let env = env_with_file();
    let server = TlsServer::start(&env.root, "127.0.0.1:0", &[], &[]);
    let home = ClientHome::new();
    let run = home.ftget(
        &env.work,
        &["--pin", &server.fingerprint, &server.target(), "a.txt"],
        &[],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(fs::read(env.work.join("a.txt")).expect("a.txt"), CONTENT);
}

#[test]
fn a_wrong_pin_is_refused_and_nothing_is_written_or_recorded() {
    let env = env_with_file();
    let server = TlsServer::start(&env.root, "127.0.0.1:0", &[], &[]);
    let home = ClientHome::new();
    let pin = stranger();
    let run = home.ftget(&env.work, &["--pin", &pin, &server.target(), "a.txt"], &[]);
    assert_identity_refused(&env, &run);
    assert!(
        run.stderr.contains(&pin) && run.stderr.contains(&server.fingerprint),
        "names the pin and the key shown: {}",
        run.stderr
    );
    assert!(
        !home.known_servers().exists(),
        "a refused server is not recorded: {:?}",
        home.known_text()
    );
}

#[test]
fn ftget_pin_in_the_environment_works_like_the_flag() {
    let env = env_with_file();
    let server = TlsServer::start(&env.root, "127.0.0.1:0", &[], &[]);
    let home = ClientHome::new();
    let pin = stranger();
    let wrong = home.ftget(
        &env.work,
        &[&server.target(), "a.txt"],
        &[("FTGET_PIN", &pin)],
    );
    assert_identity_refused(&env, &wrong);
    assert!(wrong.stderr.contains(&pin), "{}", wrong.stderr);
    let right = home.ftget(
        &env.work,
        &[&server.target(), "a.txt"],
        &[("FTGET_PIN", &server.fingerprint)],
    );
    assert_eq!(right.code, Some(0), "{right:?}");
    assert_eq!(fs::read(env.work.join("a.txt")).expect("a.txt"), CONTENT);
}

#[test]
fn first_contact_is_recorded_once_and_announced_once() {
    let env = env_with_file();
    // A folder of many files, fetched over several connections: the first
    // contact is still one line and one message.
    for i in 0..24 {
        fs::create_dir_all(env.root.join("many")).expect("mkdir");
        fs::write(env.root.join(format!("many/{i}.txt")), CONTENT).expect("write");
    }
    let server = TlsServer::start(&env.root, "127.0.0.1:0", &[], &[]);
    let home = ClientHome::new();
    let first = home.ftget(
        &env.work,
        &["-r", "--connections", "8", &server.target(), "many"],
        &[],
    );
    assert_eq!(first.code, Some(0), "{first:?}");
    let line = format!("{} {}\n", server.target(), server.fingerprint);
    assert_eq!(home.known_text().as_deref(), Some(line.as_str()));
    let announcement = format!(
        "ftget: first contact with {}: recorded its key {} in {}",
        server.target(),
        server.fingerprint,
        home.known_servers().display()
    );
    assert_eq!(
        first.stderr.matches("first contact").count(),
        1,
        "{}",
        first.stderr
    );
    assert!(first.stderr.contains(&announcement), "{}", first.stderr);

    let second = home.ftget(&env.work, &[&server.target(), "a.txt"], &[]);
    assert_eq!(second.code, Some(0), "{second:?}");
    assert!(
        !second.stderr.contains("first contact"),
        "a known server is met in silence: {}",
        second.stderr
    );
    assert_eq!(home.known_text().as_deref(), Some(line.as_str()));
}

#[test]
fn a_changed_key_is_refused_with_both_keys_and_the_line() {
    let env = env_with_file();
    let (state_a, state_b) = (own_state(), own_state());
    let mut first = TlsServer::start(
        &env.root,
        "127.0.0.1:0",
        &[],
        &[("FTSERVE_STATE_DIR", utf8(state_a.path()))],
    );
    let port = first.port();
    let home = ClientHome::new();
    // Another server known before, so the line number is not simply 1.
    home.write_known(&format!("example.invalid:7878 {}\n", stranger()));
    let met = home.ftget(&env.work, &[&first.target(), "a.txt", "-o", "met.txt"], &[]);
    assert_eq!(met.code, Some(0), "{met:?}");
    fs::remove_file(env.work.join("met.txt")).expect("rm");
    let known = home.known_text().expect("known_servers");
    assert!(
        known.ends_with(&format!("127.0.0.1:{port} {}\n", first.fingerprint)),
        "{known}"
    );
    let old = first.fingerprint.clone();
    assert!(first.stop().is_some(), "the first server stops");

    let second = TlsServer::start(
        &env.root,
        &format!("127.0.0.1:{port}"),
        &[],
        &[("FTSERVE_STATE_DIR", utf8(state_b.path()))],
    );
    assert_eq!(second.port(), port);
    assert_ne!(second.fingerprint, old, "another state folder, another key");
    let run = home.ftget(&env.work, &[&second.target(), "a.txt"], &[]);
    assert_identity_refused(&env, &run);
    let file = home.known_servers().display().to_string();
    for needed in [old.as_str(), &second.fingerprint, &file, "line 2"] {
        assert!(
            run.stderr.contains(needed),
            "names {needed}: {}",
            run.stderr
        );
    }
    assert_eq!(
        home.known_text().as_deref(),
        Some(known.as_str()),
        "the known servers are left as they were"
    );
}

#[test]
fn strict_refuses_an_unknown_server_and_records_nothing() {
    let env = env_with_file();
    let server = TlsServer::start(&env.root, "127.0.0.1:0", &[], &[]);
    let home = ClientHome::new();
    let run = home.ftget(&env.work, &["--strict", &server.target(), "a.txt"], &[]);
    assert_identity_refused(&env, &run);
    assert!(
        run.stderr.contains("--strict") && run.stderr.contains(&server.fingerprint),
        "says why, and which key to pin: {}",
        run.stderr
    );
    assert!(!home.known_servers().exists(), "{:?}", home.known_text());
    // The same from the environment (`true`/`false`, as FTGET_NO_RESUME).
    let run = home.ftget(
        &env.work,
        &[&server.target(), "a.txt"],
        &[("FTGET_STRICT", "true")],
    );
    assert_identity_refused(&env, &run);
    assert!(!home.known_servers().exists(), "{:?}", home.known_text());
}

#[test]
fn strict_accepts_a_known_server() {
    let env = env_with_file();
    let server = TlsServer::start(&env.root, "127.0.0.1:0", &[], &[]);
    let home = ClientHome::new();
    home.write_known(&format!("{} {}\n", server.target(), server.fingerprint));
    let run = home.ftget(&env.work, &["--strict", &server.target(), "a.txt"], &[]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(fs::read(env.work.join("a.txt")).expect("a.txt"), CONTENT);
    assert!(!run.stderr.contains("first contact"), "{}", run.stderr);
}

#[test]
fn a_certificate_from_a_trusted_ca_is_accepted_under_strict_and_not_recorded() {
    let env = env_with_file();
    let pki = tempfile::tempdir().expect("tempdir");
    let ca = make_ca(pki.path(), &["localhost", "127.0.0.1"]);
    let server = TlsServer::start(
        &env.root,
        "127.0.0.1:0",
        &["--tls-cert", utf8(&ca.chain), "--tls-key", utf8(&ca.key)],
        &[],
    );
    assert_eq!(
        server.fingerprint, ca.fingerprint,
        "the banner gives the SHA-256 of the certificate's key"
    );
    let home = ClientHome::new();
    let refused = home.ftget(&env.work, &["--strict", &server.target(), "a.txt"], &[]);
    assert_identity_refused(&env, &refused);

    let run = home.ftget(
        &env.work,
        &["--ca", utf8(&ca.ca), "--strict", &server.target(), "a.txt"],
        &[],
    );
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(fs::read(env.work.join("a.txt")).expect("a.txt"), CONTENT);
    // By the name the certificate gives, and with the CA from the environment.
    let by_name = home.ftget(
        &env.work,
        &[
            "--strict",
            &format!("localhost:{}", server.port()),
            "a.txt",
            "-o",
            "b.txt",
        ],
        &[("FTGET_CA", utf8(&ca.ca))],
    );
    assert_eq!(by_name.code, Some(0), "{by_name:?}");
    assert!(
        !home.known_servers().exists(),
        "a certified server needs no record: {:?}",
        home.known_text()
    );
    assert!(!run.stderr.contains("first contact"), "{}", run.stderr);
}

#[test]
fn a_ca_certificate_for_another_name_is_not_trusted() {
    let env = env_with_file();
    let pki = tempfile::tempdir().expect("tempdir");
    let ca = make_ca(pki.path(), &["other.example"]);
    let server = TlsServer::start(
        &env.root,
        "127.0.0.1:0",
        &["--tls-cert", utf8(&ca.chain), "--tls-key", utf8(&ca.key)],
        &[],
    );
    let home = ClientHome::new();
    let run = home.ftget(
        &env.work,
        &["--ca", utf8(&ca.ca), "--strict", &server.target(), "a.txt"],
        &[],
    );
    assert_identity_refused(&env, &run);
    assert!(
        run.stderr.contains("certificate is not trusted"),
        "says why the certificate is not enough: {}",
        run.stderr
    );
    assert!(!home.known_servers().exists(), "{:?}", home.known_text());
}

#[test]
fn a_key_file_others_can_read_stops_the_server() {
    let root = TestEnv::new();
    let pki = tempfile::tempdir().expect("tempdir");
    let ca = make_ca(pki.path(), &["localhost"]);
    fs::set_permissions(&ca.key, fs::Permissions::from_mode(0o644)).expect("chmod");
    let root_dir = utf8(&root.root);
    let out = ft_tests::ftserve_output(
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            utf8(&ca.chain),
            "--tls-key",
            utf8(&ca.key),
            root_dir,
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains(utf8(&ca.key)) && stderr.contains("chmod 600"),
        "names the file and the fix: {stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening on"),
        "{out:?}"
    );

    // The same for the state folder's key.
    let state = own_state();
    let mut made = TlsServer::start(
        &root.root,
        "127.0.0.1:0",
        &[],
        &[("FTSERVE_STATE_DIR", utf8(state.path()))],
    );
    assert!(made.stop().is_some());
    let key = state.path().join("key.pem");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = ft_tests::ftserve_output(
        &["--listen", "127.0.0.1:0", root_dir],
        &[("FTSERVE_STATE_DIR", utf8(state.path()))],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains(utf8(&key)) && stderr.contains("chmod 600"),
        "names the file and the fix: {stderr}"
    );
}

#[test]
fn the_state_folder_key_is_private_and_the_fingerprint_stable() {
    let env = env_with_file();
    let parent = own_state();
    // A folder that does not exist yet: the first start makes it.
    let state = parent.path().join("ftserve");
    let state_env = [("FTSERVE_STATE_DIR", utf8(&state))];
    let mut first = TlsServer::start(&env.root, "127.0.0.1:0", &[], &state_env);
    let mode = |path: &Path| fs::metadata(path).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&state.join("key.pem")), 0o600, "key.pem");
    assert_eq!(mode(&state), 0o700, "the state folder");
    assert_eq!(
        first.fingerprint,
        key_file_fingerprint(&state),
        "the banner gives the SHA-256 of the key's SubjectPublicKeyInfo"
    );
    assert!(
        first.banner().contains(&format!(
            "ftget --pin {} {} PATH",
            first.fingerprint,
            first.target()
        )),
        "{}",
        first.banner()
    );
    let fingerprint = first.fingerprint.clone();
    assert!(first.stop().is_some());
    let again = TlsServer::start(&env.root, "127.0.0.1:0", &[], &state_env);
    assert_eq!(
        again.fingerprint, fingerprint,
        "the same key after a restart"
    );
    assert_eq!(mode(&state.join("key.pem")), 0o600);
}

#[test]
fn an_interceptor_is_refused_once_the_server_is_known() {
    let env = env_with_file();
    let tokens = tempfile::tempdir().expect("tempdir");
    let token_file = tokens.path().join("tokens");
    let token = ft_tests::add_token(&token_file, "alice", None);
    let server = TlsServer::start(
        &env.root,
        "127.0.0.1:0",
        &["--token-file", utf8(&token_file)],
        &[],
    );
    let proxy = Interceptor::start(server.addr, &server.fingerprint);
    assert_ne!(proxy.fingerprint, server.fingerprint);
    let with_token = [("FTGET_TOKEN", token.as_str())];

    // An earlier, honest contact recorded the real server under the
    // address the client uses, which now leads to the interceptor.
    let home = ClientHome::new();
    let line = format!("{} {}\n", proxy.target(), server.fingerprint);
    home.write_known(&line);
    let run = home.ftget(&env.work, &[&proxy.target(), "a.txt"], &with_token);
    assert_identity_refused(&env, &run);
    assert!(
        run.stderr.contains(&server.fingerprint) && run.stderr.contains(&proxy.fingerprint),
        "names the known key and the one shown: {}",
        run.stderr
    );
    assert_eq!(home.known_text().as_deref(), Some(line.as_str()));
    // Pinned, or strict with nothing known: refused the same way.
    let pinned = ClientHome::new().ftget(
        &env.work,
        &["--pin", &server.fingerprint, &proxy.target(), "a.txt"],
        &with_token,
    );
    assert_identity_refused(&env, &pinned);
    let strict = ClientHome::new().ftget(
        &env.work,
        &["--strict", &proxy.target(), "a.txt"],
        &with_token,
    );
    assert_identity_refused(&env, &strict);

    let (completed, broken_off) = proxy.handshakes();
    assert_eq!(
        completed, 0,
        "no client finished its handshake with the interceptor"
    );
    assert!(
        broken_off >= 3,
        "each client broke its handshake off: {broken_off}"
    );
    assert!(
        proxy.plaintext().is_empty(),
        "the interceptor got no byte of ft, so neither a hello nor the token"
    );

    // The interceptor is a working one: a client that knows nothing of the
    // server, and is not strict, meets it as a first contact, and then it
    // reads everything, the token too. The refusals above are the known
    // key's doing, and the pin's, and --strict's.
    let naive = ClientHome::new();
    let fooled = naive.ftget(&env.work, &[&proxy.target(), "a.txt"], &with_token);
    assert_eq!(fooled.code, Some(0), "{fooled:?}");
    assert_eq!(fs::read(env.work.join("a.txt")).expect("a.txt"), CONTENT);
    assert_eq!(proxy.handshakes().0, 1);
    assert!(
        ft_tests::contains_bytes(&proxy.plaintext(), token.as_bytes()),
        "an accepted interceptor sees the token"
    );
}
