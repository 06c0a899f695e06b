//! Harness for the mTLS tests: the real `mesh-control` binary (built next
//! to `mesh-proxy` on first use), a CA data dir and bootstrap tokens in a
//! temp dir, meshed proxies, and a byte-recording TCP relay.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, OnceLock,
    },
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
};

use crate::common::*;

pub const TD: &str = "cluster.local";

pub fn sa(name: &str) -> String {
    format!("spiffe://{TD}/ns/default/sa/{name}")
}

/// `mesh-control`, next to the `mesh-proxy` under test.
fn control_bin() -> &'static Path {
    static BIN_PATH: OnceLock<PathBuf> = OnceLock::new();
    BIN_PATH.get_or_init(|| sibling_bin("mesh-control", "mesh-control"))
}

/// `weft` (mesh-init's `weft init`), next to the `mesh-proxy` under test.
pub fn weft_bin() -> &'static Path {
    static BIN_PATH: OnceLock<PathBuf> = OnceLock::new();
    BIN_PATH.get_or_init(|| sibling_bin("mesh-init", "weft"))
}

/// Another workspace package's binary, next to the `mesh-proxy` under test.
/// cargo only builds a package's own binaries for its tests, so it is built
/// here once per run (a no-op when up to date), with the same profile.
fn sibling_bin(package: &str, bin: &str) -> PathBuf {
    let dir = Path::new(BIN).parent().expect("binary dir");
    let path = dir.join(bin);
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-q", "-p", package, "--bin", bin])
            .arg("--manifest-path")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml"));
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().unwrap_or_else(|e| panic!("run cargo to build {bin}: {e}"));
        assert!(status.success(), "building {bin} failed: {status}");
    }
    assert!(path.is_file(), "{} missing: run `cargo build -p {package} --bin {bin}`", path.display());
    path
}

/// A CA data dir, bootstrap tokens and logs in one temp dir.
pub struct MeshDir {
    pub dir: tempfile::TempDir,
}

impl MeshDir {
    /// Tokens for every `ids` (SPIFFE IDs).
    pub fn new(ids: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut tokens = String::new();
        for id in ids {
            tokens.push_str(&format!("{id} {}\n", token_for(id)));
            std::fs::write(dir.path().join(token_name(id)), token_for(id)).unwrap();
        }
        std::fs::write(dir.path().join("tokens"), tokens).unwrap();
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn anchor(&self) -> PathBuf {
        self.path("data/trust-anchor.pem")
    }

    /// mesh-control on `listen` with this dir's CA and tokens.
    pub async fn control(&self, listen: &str, lifetime: &str) -> Control {
        self.control_with(listen, lifetime, &[]).await
    }

    /// [`MeshDir::control`] with more arguments (e.g. `--manifests DIR`).
    pub async fn control_with(&self, listen: &str, lifetime: &str, extra: &[String]) -> Control {
        self.control_in(&[], listen, lifetime, extra).await
    }

    /// [`MeshDir::control_with`] run through `wrapper` (e.g. `ip netns exec NS`).
    pub async fn control_in(&self, wrapper: &[String], listen: &str, lifetime: &str, extra: &[String]) -> Control {
        let n = std::fs::read_dir(self.dir.path()).unwrap().count();
        let log = self.path(&format!("control.{n}.log"));
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(control_bin());
                cmd
            }
            None => Command::new(control_bin()),
        };
        let mut child = cmd
            .args(["--listen", listen, "--trust-domain", TD, "--cert-lifetime", lifetime])
            .arg("--data-dir")
            .arg(self.path("data"))
            .arg("--bootstrap-tokens")
            .arg(self.path("tokens"))
            .args(extra)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mesh-control");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = within("mesh-control announces its address", lines.next_line())
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("mesh-control exited: {}", std::fs::read_to_string(&log).unwrap_or_default()));
        let addr = line.strip_prefix("listening grpc ").expect("listening line").parse().unwrap();
        Control { child, addr, log }
    }

    /// Arguments making a proxy the workload `id`, certified by `control`.
    pub fn identity_args(&self, id: &str, control: SocketAddr) -> Vec<String> {
        args(&[
            "--identity",
            id,
            "--control",
            &control.to_string(),
            "--token-file",
            self.path(&token_name(id)).to_str().unwrap(),
            "--trust-anchor",
            self.anchor().to_str().unwrap(),
        ])
    }

    /// A meshed proxy logging to `<name>.log` in this dir.
    pub async fn proxy(&self, name: &str, id: &str, control: SocketAddr, extra: &[String]) -> Proxy {
        let mut a = self.identity_args(id, control);
        a.extend_from_slice(extra);
        start_proxy_logged(&a, &self.path(&format!("{name}.log"))).await
    }
}

fn token_for(id: &str) -> String {
    format!("token-{}", id.rsplit('/').next().unwrap())
}

/// The file name of `id`'s token in a [`MeshDir`] (its `--token-file`).
pub fn token_name(id: &str) -> String {
    format!("token.{}", id.rsplit('/').next().unwrap())
}

/// A running mesh-control.
pub struct Control {
    child: Child,
    pub addr: SocketAddr,
    /// Its stderr (`RUST_LOG=info`).
    pub log: PathBuf,
}

impl Control {
    /// SIGTERM and wait.
    pub async fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().expect("running") as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        within("mesh-control exits", self.child.wait()).await.unwrap();
    }
}

/// A meshed server proxy in front of `app` (plus `server_extra`), a
/// recording [`Relay`] to its inbound listener, and a meshed client proxy
/// routing `web.test` through the relay (plus what `client_extra` makes of
/// the relay's address); both ready. Identities `client` and `server`.
pub async fn server_relay_client(
    m: &MeshDir,
    control: SocketAddr,
    app: SocketAddr,
    server_extra: &[String],
    client_extra: impl FnOnce(SocketAddr) -> Vec<String>,
) -> (Proxy, Relay, Proxy) {
    let (client_id, server_id) = (sa("client"), sa("server"));
    let mut extra = args(&["--app", &app.to_string()]);
    extra.extend_from_slice(server_extra);
    let server = m.proxy("server", &server_id, control, &extra).await;
    let relay = Relay::start(server.inbound.unwrap()).await;
    let mut extra = args(&["--route", &format!("web.test={}@{server_id}", relay.addr)]);
    extra.extend(client_extra(relay.addr));
    let client = m.proxy("client", &client_id, control, &extra).await;
    ready(&server).await;
    ready(&client).await;
    (server, relay, client)
}

/// Waits for the proxy's /ready to answer 200.
pub async fn ready(p: &Proxy) {
    eventually("proxy ready (certified)", || async {
        let (status, _) = p.admin_get("/ready").await;
        (status == http::StatusCode::OK).then_some(())
    })
    .await;
}

/// The serials of every certificate the proxy logged, in order.
pub fn serials(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("certified spiffe://"))
        .filter_map(|l| l.split("serial=").nth(1)?.split_whitespace().next().map(str::to_owned))
        .collect()
}

/// A TCP relay recording every byte in both directions, and counting connections.
pub struct Relay {
    pub addr: SocketAddr,
    pub bytes: Arc<Mutex<Vec<u8>>>,
    pub connections: Arc<AtomicUsize>,
    /// Connections accepted before the last [`Relay::black_hole`] forward nothing more.
    generation: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let generation = Arc::new(AtomicUsize::new(0));
        let (b, c, g) = (bytes.clone(), connections.clone(), generation.clone());
        let task = tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let b = b.clone();
                let gen = Gen { now: g.clone(), mine: g.load(Ordering::SeqCst) };
                tokio::spawn(async move {
                    let Ok(up) = TcpStream::connect(target).await else { return };
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    tokio::join!(pump(dr, uw, b.clone(), gen.clone()), pump(ur, dw, b, gen));
                });
            }
        });
        Self { addr, bytes, connections, generation, task }
    }

    /// The connections open now forward nothing more, either way, and are
    /// never closed (a peer frozen or partitioned away); new ones work.
    pub fn black_hole(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Whether `needle` ever crossed the relay in the clear.
    pub fn saw(&self, needle: &[u8]) -> bool {
        self.bytes.lock().unwrap().windows(needle.len()).any(|w| w == needle)
    }

    pub fn total(&self) -> usize {
        self.bytes.lock().unwrap().len()
    }
}

/// Which black-hole generation a relayed connection belongs to.
#[derive(Clone)]
struct Gen {
    now: Arc<AtomicUsize>,
    mine: usize,
}

async fn pump(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, log: Arc<Mutex<Vec<u8>>>, gen: Gen) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) if gen.now.load(Ordering::SeqCst) != gen.mine => {
                // Black-holed: swallow everything, close nothing.
                let _held = (&from, &to);
                std::future::pending::<()>().await;
            }
            Ok(n) => {
                log.lock().unwrap().extend_from_slice(&buf[..n]);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// One raw HTTP/1.1 request over a TCP stream (e.g. through a TCP forward,
/// which relays to the server's HTTP app); the whole response text.
pub async fn raw_http(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    within("raw response", s.read_to_end(&mut out)).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}
