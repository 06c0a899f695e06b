//! Shared test harness: the real `mesh-control` binary on 127.0.0.1:0, a
//! bootstrap token file, and an `eventually` poll with patience from
//! `WEFT_TEST_PATIENCE_SECS`.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use mesh_identity::{control_identity, Certifier, CertifierConfig, ControlEndpoint, SpiffeId, TrustAnchors};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const TD: &str = "cluster.local";

#[allow(unused_imports)] // each test binary uses a different subset
pub use weft_testkit::{eventually_async as eventually, patience};

pub fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

pub fn workload(sa: &str) -> SpiffeId {
    SpiffeId::workload(TD, "default", sa).unwrap()
}

/// A running mesh-control; killed on drop if still running.
pub struct ControlPlane {
    child: Child,
    pub addr: SocketAddr,
    /// The admin listener's address (`--admin-listen`).
    pub admin: Option<SocketAddr>,
    stderr_path: PathBuf,
    /// Its trust anchor file (`--trust-anchor`, else `<--data-dir>/trust-anchor.pem`).
    anchor_path: Option<PathBuf>,
}

impl ControlPlane {
    /// Starts `mesh-control --listen <listen> <args>`, waiting for its
    /// `listening grpc` line. `log_dir` receives `stderr.<n>`.
    pub async fn start(log_dir: &Path, listen: &str, args: &[&str]) -> Self {
        Self::start_with_env(log_dir, listen, args, &[]).await
    }

    /// [`Self::start`] with extra environment variables (e.g. KUBECONFIG).
    pub async fn start_with_env(log_dir: &Path, listen: &str, args: &[&str], env: &[(&str, &Path)]) -> Self {
        let n = std::fs::read_dir(log_dir).map(|d| d.count()).unwrap_or(0);
        let stderr_path = log_dir.join(format!("stderr.{n}"));
        let stderr = std::fs::File::create(&stderr_path).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_mesh-control"))
            .arg("--listen")
            .arg(listen)
            .args(args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mesh-control");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // `listening admin <addr>` comes first when --admin-listen is given.
        let mut admin = None;
        let addr = loop {
            let line = tokio::time::timeout(patience(), lines.next_line())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "mesh-control did not print its address; stderr:\n{}",
                        std::fs::read_to_string(&stderr_path).unwrap_or_default()
                    )
                })
                .unwrap()
                .unwrap_or_else(|| {
                    panic!("mesh-control exited; stderr:\n{}", std::fs::read_to_string(&stderr_path).unwrap_or_default())
                });
            if let Some(addr) = line.strip_prefix("listening admin ") {
                admin = Some(addr.parse().unwrap());
                continue;
            }
            break line
                .strip_prefix("listening grpc ")
                .unwrap_or_else(|| panic!("unexpected stdout line {line:?}"))
                .parse()
                .unwrap();
        };
        let flag = |name: &str| args.iter().position(|a| *a == name).and_then(|i| args.get(i + 1)).map(PathBuf::from);
        let anchor_path = flag("--trust-anchor").or_else(|| flag("--data-dir").map(|d| d.join("trust-anchor.pem")));
        Self { child, addr, admin, stderr_path, anchor_path }
    }

    /// Its trust anchors.
    pub fn anchors(&self) -> TrustAnchors {
        let path = self.anchor_path.as_ref().expect("mesh-control started with --data-dir or --trust-anchor");
        TrustAnchors::from_pem(TD, &std::fs::read(path).unwrap()).unwrap()
    }

    /// Where proxies find it: this address, these anchors, the default identity.
    pub fn endpoint(&self) -> ControlEndpoint {
        control_endpoint(self.addr, self.anchors())
    }

    /// A TLS channel to it (lazily connected), verified like a proxy's.
    pub fn channel(&self) -> tonic::transport::Channel {
        let endpoint = self.endpoint();
        endpoint.channel(endpoint.endpoint().timeout(Duration::from_secs(5))).unwrap()
    }

    /// `GET <path>` on the admin listener: status code and body.
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.admin.expect("started with --admin-listen");
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{response:?}"));
        let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap()
    }

    /// SIGTERM, then the exit status.
    pub async fn stop(mut self) -> ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id().expect("still running") as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        tokio::time::timeout(patience(), self.child.wait())
            .await
            .expect("mesh-control did not exit on SIGTERM")
            .unwrap()
    }
}

/// A data dir, a token file and a log dir in one temp dir.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("logs")).unwrap();
        Self { dir }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.path().join("logs")
    }

    pub fn tokens_path(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }

    /// Writes the token file: one `<id> token-<sa>` line per identity.
    pub fn write_tokens(&self, ids: &[&SpiffeId]) {
        let mut text = String::from("# written by the test\n");
        for id in ids {
            text.push_str(&format!("{id} {}\n", token_for(id)));
        }
        std::fs::write(self.tokens_path(), text).unwrap();
    }

    /// mesh-control with this fixture's data dir and tokens.
    pub async fn start(&self, listen: &str, lifetime: &str) -> ControlPlane {
        let data = self.data_dir();
        let tokens = self.tokens_path();
        ControlPlane::start(
            &self.logs(),
            listen,
            &[
                "--data-dir",
                data.to_str().unwrap(),
                "--bootstrap-tokens",
                tokens.to_str().unwrap(),
                "--trust-domain",
                TD,
                "--cert-lifetime",
                lifetime,
            ],
        )
        .await
    }

    pub fn anchors(&self) -> TrustAnchors {
        let pem = std::fs::read(self.data_dir().join("trust-anchor.pem")).unwrap();
        TrustAnchors::from_pem(TD, &pem).unwrap()
    }
}

pub fn token_for(id: &SpiffeId) -> String {
    format!("token-{}", id.path().replace('/', "-"))
}

/// mesh-control at `addr` with the default identity, trusted through `anchors`.
pub fn control_endpoint(addr: SocketAddr, anchors: TrustAnchors) -> ControlEndpoint {
    ControlEndpoint::new(&addr.to_string(), anchors, control_identity(TD).unwrap()).unwrap()
}

/// A certifier for `id` against `control`, with short test backoffs.
pub fn certifier(control: ControlEndpoint, id: &SpiffeId) -> Certifier {
    let mut config = CertifierConfig::new(control, id.clone(), token_for(id));
    config.connect_timeout = Duration::from_secs(1);
    config.request_timeout = Duration::from_secs(3);
    config.backoff_min = Duration::from_millis(50);
    config.backoff_max = Duration::from_millis(500);
    Certifier::spawn(config).unwrap()
}
