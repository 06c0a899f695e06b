//! Shared helpers: the real `loadgen` binary as a server or a client, and an `eventually` poll.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use loadgen::Load;

pub const BIN: &str = env!("CARGO_BIN_EXE_loadgen");

/// Load tests measure time: running two at once on a small machine would measure each other.
static LOAD: Mutex<()> = Mutex::new(());

pub fn exclusive() -> MutexGuard<'static, ()> {
    LOAD.lock().unwrap_or_else(|e| e.into_inner())
}

#[allow(unused_imports)] // each test binary uses a different subset
pub use weft_testkit::{eventually, patience};

/// A `loadgen serve` process; killed (after a SIGCONT, in case a test stopped it) on drop.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        let server = Server::spawn(args);
        eventually("/healthz", || server.healthz().then_some(()));
        server
    }

    /// A server that is no HTTP server (`--tcp-echo`): it accepts once it has printed its
    /// address, which is all `spawn` waits for.
    pub fn spawn(args: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn loadgen serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read the first stdout line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("an ip:port");
        Server { child, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// A minimal blocking HTTP/1.0 GET /healthz.
    pub fn healthz(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1))
        else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: t\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `loadgen run ARGS --json FILE`, prints its table and returns the parsed record.
pub fn run_binary(args: &[&str]) -> Load {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("summary.json");
    let out = Command::new(BIN)
        .arg("run")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("spawn loadgen run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("$ loadgen run {}\n{stdout}", args.join(" "));
    assert!(
        out.status.success(),
        "loadgen run failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&std::fs::read(&json).unwrap()).expect("record JSON")
}
