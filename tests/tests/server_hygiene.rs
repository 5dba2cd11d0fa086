//! The small things an attacker can use against the server: log lines
//! forged through a client's path or a file's name, in both log formats;
//! and special files in the root, which the server must never open: a FIFO
//! (whose writers an open would wake) and a terminal (which an open would
//! make the server's controlling one, for a `^C` to stop it).

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use ft_protocol::{ErrorCode, Request, Response};
use ft_tests::{wait_until, within, OutputWithin, Raw, Server, TestEnv, IO_TIMEOUT, RUN_TIMEOUT};

/// A whole log line, stamped with a time no real line of this run has.
const FORGED: &str =
    "1999-12-31T23:59:59.000000Z  INFO ft_server::ops::shared: ok client=10.9.9.9 op=\"get\" \
     path=\"payroll.xlsx\" offset=0 bytes=1048576";

/// Whether `ch` may not appear raw in a log: the server's rule, restated.
fn unsafe_in_a_log(ch: char) -> bool {
    ch.is_control()
        || matches!(ch, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The paths a client asks for: each repeats in the error message that
/// its request logs.
fn forged_paths() -> [String; 3] {
    [
        format!("nothere\n{FORGED}"),
        format!("nothere\r{FORGED}"),
        "evil\u{1b}]0;owned\u{7}\u{1b}[2J\u{9b}\u{7f}\u{202e}txt.exe".to_owned(),
    ]
}

/// A root whose listing leaves out three entries, each logged by a name
/// that tries to forge a line: a FIFO, a name that is not UTF-8, a link
/// to a folder.
fn root_with_forging_names(env: &TestEnv) {
    fs::write(env.root.join("a.txt"), b"a").unwrap();
    mkfifo(&env.root.join(format!("fifo\n{FORGED}")));
    let mut raw = b"bad\xff\r".to_vec();
    raw.extend_from_slice(FORGED.as_bytes());
    fs::write(env.root.join(OsStr::from_bytes(&raw)), b"").unwrap();
    fs::create_dir(env.root.join("sub")).unwrap();
    symlink("sub", env.root.join("dir\u{1b}[2J\u{202e}")).unwrap();
}

fn mkfifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .output_within(RUN_TIMEOUT)
        .unwrap();
    assert!(made.status.success(), "{made:?}");
}

/// Asks for each forged path by `Stat` and `Get`, lists the root
/// recursively, then asks for `a.txt` and waits for its line: every line
/// before it is then in.
fn forge_lines(server: &Server) {
    let mut raw = Raw::greeted(server.addr);
    for path in forged_paths() {
        raw.send(&Request::Stat { path: path.clone() });
        assert_eq!(raw.error_code(), ErrorCode::NotFound);
        raw.send(&Request::Get { path, offset: 0 });
        assert_eq!(raw.error_code(), ErrorCode::NotFound);
    }
    raw.send(&Request::List {
        path: String::new(),
        recursive: true,
        digests: false,
    });
    let skipped = raw.recv_until("list", |response| match response {
        Response::ListEnd { skipped } => Some(skipped),
        Response::Entries(_) => None,
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(skipped, 3, "the FIFO, the non-UTF-8 name, the link");
    raw.send(&Request::Stat {
        path: "a.txt".into(),
    });
    assert!(matches!(raw.recv(), Some(Response::Meta(_))));
    let logged = wait_until(IO_TIMEOUT, || server.logs().contains("\"a.txt\""));
    assert!(logged, "no line for a.txt in:\n{}", server.logs());
}

/// Lines the server logs in `forge_lines`: one at start (its congestion
/// control), one per request (6 refused, 1 list, 1 stat), one per entry
/// left out (3).
const LINES: usize = 1 + 6 + 1 + 1 + 3;

/// What holds in both formats: the number of lines, and no raw control
/// or bidi character but the newline that ends each.
fn assert_no_forged_line(logs: &str) {
    let raw: Vec<char> = logs
        .chars()
        .filter(|&ch| ch != '\n' && unsafe_in_a_log(ch))
        .collect();
    assert!(
        raw.is_empty(),
        "raw characters {raw:?} in the logs:\n{logs}"
    );
    let lines: Vec<&str> = logs.lines().collect();
    assert_eq!(lines.len(), LINES, "{logs}");
    for line in &lines {
        assert!(!line.starts_with("1999-"), "a forged line: {line}");
    }
}

#[test]
fn human_logs_escape_what_peers_and_file_names_carry() {
    let env = TestEnv::new();
    root_with_forging_names(&env);
    let server = Server::start(&env.root, &[]);
    forge_lines(&server);
    let logs = server.logs();
    assert_no_forged_line(&logs);
    // Escape sequences may be spelt `\x1b` (tracing-subscriber's own
    // sanitising, inside ours) or `\u{1b}`: these parts hold either way.
    for escaped in [
        "no such file: nothere\\n1999-12-31T23:59:59",
        "no such file: nothere\\r1999-12-31T23:59:59",
        "no such file: evil\\",
        "\\u{202e}txt.exe client=",
        "left out ./fifo\\n1999-12-31T23:59:59",
        "left out ./bad\u{fffd}\\r1999-12-31T23:59:59",
        "left out ./dir\\",
        "\\u{202e}: a link to something other than a file",
    ] {
        assert!(logs.contains(escaped), "{escaped:?} not in:\n{logs}");
    }
}

#[test]
fn json_logs_escape_what_peers_and_file_names_carry_and_stay_json() {
    let env = TestEnv::new();
    root_with_forging_names(&env);
    let server = Server::start(&env.root, &["--log-format", "json"]);
    forge_lines(&server);
    let logs = server.logs();
    assert_no_forged_line(&logs);
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line}")))
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .filter_map(|line| line["fields"]["message"].as_str())
        .collect();
    // Escaped on the line, the strings decode to exactly what was logged.
    for path in forged_paths() {
        let refused = format!("no such file: {path}");
        let count = messages.iter().filter(|m| **m == refused).count();
        assert_eq!(count, 2, "{refused:?}, by Stat and Get, in {messages:?}");
    }
    for name in [format!("fifo\n{FORGED}"), "dir\u{1b}[2J\u{202e}".to_owned()] {
        assert!(
            messages.iter().any(|m| m.contains(&name)),
            "{name:?} not in {messages:?}"
        );
    }
}

/// A thread blocked in `open(fifo, O_WRONLY)`: the open returns as soon as
/// anyone opens the FIFO for reading, however briefly.
struct BlockedWriter {
    fifo: PathBuf,
    opened: mpsc::Receiver<std::io::Result<fs::File>>,
}

impl BlockedWriter {
    /// Starts the thread and waits until it sleeps inside that `openat`:
    /// only then would a reader's open show.
    fn start(fifo: &Path) -> Self {
        let (tid_tx, tid_rx) = mpsc::channel();
        let (opened_tx, opened) = mpsc::channel();
        let path = fifo.to_path_buf();
        thread::spawn(move || {
            tid_tx.send(nix::unistd::gettid()).unwrap();
            let _ = opened_tx.send(fs::OpenOptions::new().write(true).open(path));
        });
        let tid = tid_rx.recv_timeout(IO_TIMEOUT).unwrap();
        let in_open = wait_until(IO_TIMEOUT, || {
            fs::read_to_string(format!("/proc/self/task/{tid}/syscall")).is_ok_and(|call| {
                call.split(' ').next() == Some(&nix::libc::SYS_openat.to_string())
            })
        });
        assert!(in_open, "the writer never blocked in openat");
        Self {
            fifo: fifo.to_path_buf(),
            opened,
        }
    }

    /// Whether the writer's open returned within `limit`.
    fn woke_within(&self, limit: Duration) -> bool {
        self.opened.recv_timeout(limit).is_ok()
    }

    /// Opens the FIFO for reading here, which must wake the writer: the
    /// check that it would have seen a reader.
    fn release(self) {
        let _reader = nonblocking(&self.fifo, false).unwrap();
        assert!(self.woke_within(IO_TIMEOUT), "a reader wakes the writer");
    }
}

/// Opens `path` for reading or for writing without waiting for the other
/// end of a FIFO: a writer fails with ENXIO when no one reads.
fn nonblocking(path: &Path, write: bool) -> std::io::Result<fs::File> {
    fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
}

#[test]
fn a_fifo_is_refused_without_ever_being_opened() {
    let env = TestEnv::new();
    let fifo = env.root.join("fifo");
    mkfifo(&fifo);
    let server = Server::start(&env.root, &[]);
    let mut raw = Raw::greeted(server.addr);
    let path = || "fifo".to_owned();
    let requests = [
        (Request::Stat { path: path() }, ErrorCode::NotAFile),
        (
            Request::Get {
                path: path(),
                offset: 0,
            },
            ErrorCode::NotAFile,
        ),
        (
            Request::Checkpoints {
                path: path(),
                first: 1,
                count: 1,
            },
            ErrorCode::NotAFile,
        ),
        (
            Request::List {
                path: path(),
                recursive: false,
                digests: false,
            },
            ErrorCode::NotADirectory,
        ),
    ];
    for (request, code) in requests {
        let writer = BlockedWriter::start(&fifo);
        let asked = Instant::now();
        raw.send(&request);
        assert_eq!(raw.error_code(), code, "{request:?}");
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "{request:?}: refused promptly"
        );
        assert!(
            !writer.woke_within(Duration::from_millis(500)),
            "{request:?} opened the FIFO for reading"
        );
        writer.release();
        // And no reader is left holding it.
        let err = nonblocking(&fifo, true).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::ENXIO), "{request:?}");
    }
    still_serves(&env, &server);
}

/// The server still answers: a `Stat` of a regular file on a new
/// connection.
fn still_serves(env: &TestEnv, server: &Server) {
    fs::write(env.root.join("a.txt"), b"served").unwrap();
    let mut raw = Raw::greeted(server.addr);
    raw.send(&Request::Stat {
        path: "a.txt".into(),
    });
    match raw.recv() {
        Some(Response::Meta(meta)) => assert_eq!(meta.size, 6),
        other => panic!("a.txt: {other:?}"),
    }
}

/// The `tty_nr` of `/proc/PID/stat`: the controlling terminal's device
/// number, 0 for none.
fn controlling_tty(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name in parentheses: state, ppid, pgrp,
    // session, tty_nr.
    let after_name = stat.rsplit_once(')').unwrap().1;
    after_name
        .split_whitespace()
        .nth(4)
        .unwrap()
        .parse()
        .unwrap()
}

/// A new pseudo-terminal with ISIG (^C sends SIGINT to its foreground
/// process group) and ECHOCTL (^C echoes as `^C`) on, and the path of its
/// slave in devpts.
fn terminal() -> (nix::pty::OpenptyResult, String) {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut termios = tcgetattr(&pty.slave).unwrap();
    termios.local_flags |= LocalFlags::ISIG | LocalFlags::ECHO | LocalFlags::ECHOCTL;
    tcsetattr(&pty.slave, SetArg::TCSANOW, &termios).unwrap();
    let slave = fs::read_link(format!("/proc/self/fd/{}", pty.slave.as_raw_fd())).unwrap();
    (pty, slave.to_str().unwrap().to_owned())
}

/// ftserve serving `root`, where the terminal `slave` appears as `tty`,
/// with no controlling terminal of its own.
///
/// mknod will not do: the kernel opens a pty's slave only through its
/// devpts entry (`devpts_get_priv`), so that entry is bind-mounted over
/// `root/tty`, in a mount namespace of the server's own that ends with it
/// (and, when the tests do not run as root, in a user namespace that lets
/// them mount). `setsid` leaves ftserve a session leader without a
/// controlling terminal: the first terminal it opened without O_NOCTTY
/// would become its own.
fn serve_with_a_terminal_inside(root: &Path, slave: &str) -> Server {
    let tty = root.join("tty");
    fs::write(&tty, b"").unwrap();
    let mut wrapper = vec!["unshare"];
    if !nix::unistd::geteuid().is_root() {
        wrapper.extend(["--user", "--map-root-user"]);
    }
    wrapper.extend([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        r#"mount --bind -- "$1" "$2" && shift 2 && exec "$@""#,
        "sh",
        slave,
        tty.to_str().unwrap(),
        "setsid",
    ]);
    let server = Server::start_wrapped(&wrapper, root, &[]);
    let pid = server.pid();
    assert_eq!(
        fs::read_to_string(format!("/proc/{pid}/comm")).unwrap(),
        "ftserve\n",
        "the wrappers exec'd in place"
    );
    server
}

/// Types ^C on the terminal and waits until the line discipline has taken
/// it: it echoes `^C` after it has signalled the foreground process group.
fn type_ctrl_c(master: std::os::fd::OwnedFd) {
    let mut master = fs::File::from(master);
    master.write_all(&[0x03]).unwrap();
    let echoed = within(IO_TIMEOUT, move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 64];
        while !seen.windows(2).any(|w| w == b"^C") {
            match master.read(&mut buf) {
                Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        seen
    });
    let echoed = echoed.unwrap_or_default();
    assert!(
        echoed.windows(2).any(|w| w == b"^C"),
        "no ^C echoed: {echoed:?}"
    );
}

#[test]
fn a_terminal_in_the_root_never_becomes_the_servers() {
    let env = TestEnv::new();
    let (pty, slave) = terminal();
    let mut server = serve_with_a_terminal_inside(&env.root, &slave);
    let pid = server.pid();
    assert_eq!(
        controlling_tty(pid),
        0,
        "starts with no controlling terminal"
    );

    let mut raw = Raw::greeted(server.addr);
    let tty = || "tty".to_owned();
    raw.send(&Request::Stat { path: tty() });
    assert_eq!(
        raw.error_code(),
        ErrorCode::NotAFile,
        "the server sees the terminal"
    );
    raw.send(&Request::Get {
        path: tty(),
        offset: 0,
    });
    assert_eq!(raw.error_code(), ErrorCode::NotAFile);
    raw.send(&Request::Checkpoints {
        path: tty(),
        first: 1,
        count: 1,
    });
    assert_eq!(raw.error_code(), ErrorCode::NotAFile);
    // Seen through the bind mount, the terminal may even be listed as a
    // file (the folder's entry is the file beneath the mount).
    raw.send(&Request::List {
        path: String::new(),
        recursive: true,
        digests: false,
    });
    raw.recv_until("list", |response| match response {
        Response::ListEnd { .. } => Some(()),
        _ => None,
    });
    assert_eq!(controlling_tty(pid), 0, "no request gave it a terminal");

    // Had the server taken the terminal, SIGINT would now stop it.
    type_ctrl_c(pty.master);
    assert!(
        !wait_until(Duration::from_secs(2), || !server.is_running()),
        "^C on a terminal in the root stopped the server:\n{}",
        server.logs()
    );
    still_serves(&env, &server);
}
