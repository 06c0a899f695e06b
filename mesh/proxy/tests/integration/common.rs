//! Test harness: an in-process app server, the real proxy binary, clients.

use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    process::{ExitStatus, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, client::conn, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
};

pub use weft_testkit::{eventually_async as eventually, patience};

/// Bounds any single await by `patience()`.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(patience(), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

// ----- the application behind the proxy -----

/// A small HTTP/1 + h2c server whose behaviour is chosen by path:
/// `/echo` echoes the body, `/status/N` answers N, `/delay/MS` waits first,
/// `/proto` names the HTTP version, `/headers` lists the request headers.
pub struct App {
    pub addr: SocketAddr,
    /// Requests currently being handled.
    pub in_flight: Arc<AtomicUsize>,
    /// Requests received in total.
    pub received: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start_app() -> App {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    let (inf, rec) = (in_flight.clone(), received.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (inf, rec) = (inf.clone(), rec.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let (inf, rec) = (inf.clone(), rec.clone());
                    async move {
                        rec.fetch_add(1, Ordering::SeqCst);
                        inf.fetch_add(1, Ordering::SeqCst);
                        let resp = app_respond(req).await;
                        inf.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    App { addr, in_flight, received, task }
}

async fn app_respond(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let version = format!("{:?}", req.version());
    let headers = req.headers().clone();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return plain(StatusCode::BAD_REQUEST, "body read failed"),
    };
    if path == "/echo" {
        let mut r = Response::new(Full::new(body));
        // Hop-by-hop fields the proxy must not pass back downstream.
        r.headers_mut().insert("connection", "x-app-hop".parse().unwrap());
        r.headers_mut().insert("x-app-hop", "1".parse().unwrap());
        r.headers_mut().insert("keep-alive", "timeout=5".parse().unwrap());
        r.headers_mut().insert("x-app-kept", "1".parse().unwrap());
        return r;
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let status = StatusCode::from_u16(code.parse().unwrap()).unwrap();
        return plain(status, code);
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
        return plain(StatusCode::OK, "delayed");
    }
    match path.as_str() {
        "/proto" => plain(StatusCode::OK, &version),
        "/headers" => plain(StatusCode::OK, &header_lines(&headers)),
        _ => plain(StatusCode::OK, "ok"),
    }
}

fn header_lines(h: &HeaderMap) -> String {
    let mut lines: Vec<String> =
        h.iter().map(|(k, v)| format!("{}: {}", k, v.to_str().unwrap_or("?"))).collect();
    lines.sort();
    lines.join("\n")
}

fn plain(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *r.status_mut() = status;
    r
}

/// An address nothing listens on (bound, then released).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

// ----- the proxy process -----

pub struct Proxy {
    pub child: Child,
    pub outbound: SocketAddr,
    pub inbound: Option<SocketAddr>,
    pub admin: SocketAddr,
    /// `--tcp-forward` listeners, in order.
    pub tcp: Vec<SocketAddr>,
    /// `--tcp-service` listeners, in order.
    pub tcp_service: Vec<SocketAddr>,
    /// Where stderr goes, when captured (see [`start_proxy_logged`]).
    pub log: Option<std::path::PathBuf>,
}

pub const BIN: &str = env!("CARGO_BIN_EXE_mesh-proxy");

/// Starts the binary on ephemeral ports with `extra` args, and reads back the
/// addresses it announces.
pub async fn start_proxy(extra: &[String]) -> Proxy {
    spawn_proxy(extra, None, None, &[]).await
}

/// [`start_proxy`] with the open-files limit (soft and hard) set to
/// `nofile` by the shell that execs it.
pub async fn start_proxy_nofile(nofile: u32, extra: &[String]) -> Proxy {
    spawn_proxy(extra, None, Some(nofile), &[]).await
}

/// [`start_proxy`] with stderr written to `log` at `info` (or
/// `WEFT_TEST_PROXY_LOG`), for tests that assert on log lines.
pub async fn start_proxy_logged(extra: &[String], log: &std::path::Path) -> Proxy {
    spawn_proxy(extra, Some(log), None, &[]).await
}

/// [`start_proxy_logged`] with environment variables (flags in `extra`
/// win over them, as in clap).
pub async fn start_proxy_env(extra: &[String], env: &[(String, String)], log: &std::path::Path) -> Proxy {
    spawn_proxy(extra, Some(log), None, env).await
}

/// A plaintext-only proxy with `--app` and no `--policy` must name its
/// permissive default (the strict one would refuse every client): the
/// tests of plaintext forwarding get `--default-inbound-policy
/// all-unauthenticated` unless they chose a default themselves.
fn plaintext_default(extra: &[String]) -> &'static [&'static str] {
    let has = |flag: &str| extra.iter().any(|a| a == flag);
    match has("--app") && !has("--identity") && !has("--policy") && !has("--default-inbound-policy") && !has("--inbound-plaintext") {
        true => &["--default-inbound-policy", "all-unauthenticated"],
        false => &[],
    }
}

async fn spawn_proxy(extra: &[String], log: Option<&std::path::Path>, nofile: Option<u32>, env: &[(String, String)]) -> Proxy {
    let mut cmd = match nofile {
        Some(n) => {
            let mut sh = Command::new("sh");
            sh.arg("-c").arg(format!("ulimit -n {n} && exec \"$0\" \"$@\"")).arg(BIN);
            sh
        }
        None => Command::new(BIN),
    };
    // A test may choose the inbound address (to route to it), no other.
    let inbound_listen: &[&str] = match extra.iter().any(|a| a == "--inbound-listen") {
        true => &[],
        false => &["--inbound-listen", "127.0.0.1:0"],
    };
    cmd.args(["--outbound-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(inbound_listen)
        .args(extra)
        .args(plaintext_default(extra))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    match log {
        Some(path) => {
            cmd.env("RUST_LOG", std::env::var("WEFT_TEST_PROXY_LOG").unwrap_or_else(|_| "info".into()))
                .stderr(std::fs::File::create(path).expect("create proxy log"));
        }
        None => {
            cmd.env("RUST_LOG", std::env::var("WEFT_TEST_PROXY_LOG").unwrap_or_else(|_| "warn".into()))
                .stderr(Stdio::inherit());
        }
    }
    let mut child = cmd.spawn().expect("spawn mesh-proxy");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut outbound, mut inbound, mut admin) = (None, None, None);
    let mut tcp = Vec::new();
    let mut tcp_service = Vec::new();
    let wants_inbound = extra.iter().any(|a| a == "--app");
    while admin.is_none() || outbound.is_none() || (wants_inbound && inbound.is_none()) {
        let line = within("proxy announces its listeners", lines.next_line())
            .await
            .unwrap()
            .expect("proxy exited before announcing its listeners");
        let mut parts = line.split_whitespace();
        assert_eq!(parts.next(), Some("listening"), "unexpected stdout line {line:?}");
        let name = parts.next().unwrap();
        let addr: SocketAddr = parts.next().unwrap().parse().unwrap();
        match name {
            "outbound" => outbound = Some(addr),
            "inbound" => inbound = Some(addr),
            "admin" => admin = Some(addr),
            "tcp" => tcp.push(addr),
            "tcp-service" => tcp_service.push(addr),
            other => panic!("unknown listener {other}"),
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Proxy {
        child,
        outbound: outbound.unwrap(),
        inbound,
        admin: admin.unwrap(),
        tcp,
        tcp_service,
        log: log.map(Into::into),
    }
}

impl Proxy {
    pub fn sigterm(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().expect("running") as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    }

    pub async fn wait(&mut self) -> ExitStatus {
        within("proxy exits", self.child.wait()).await.unwrap()
    }

    /// GET on the admin listener; (status, body).
    pub async fn admin_get(&self, path: &str) -> (StatusCode, String) {
        let resp = send_h1(self.admin, get(path, "admin")).await.expect("admin reachable");
        (resp.status(), String::from_utf8_lossy(resp.body()).into_owned())
    }

    /// Everything the proxy logged so far (needs [`start_proxy_logged`]).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.as_ref().expect("proxy started with start_proxy_logged")).unwrap_or_default()
    }

    pub async fn metrics(&self) -> String {
        let (status, body) = self.admin_get("/metrics").await;
        assert_eq!(status, StatusCode::OK);
        body
    }
}

pub fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

// ----- clients -----

pub type Req = Request<Full<Bytes>>;

pub fn get(path: &str, host: &str) -> Req {
    Request::get(path).header("host", host).body(Full::new(Bytes::new())).unwrap()
}

pub fn post(path: &str, host: &str, body: impl Into<Bytes>) -> Req {
    Request::post(path).header("host", host).body(Full::new(body.into())).unwrap()
}

/// An HTTP/1.1 keep-alive connection.
pub struct H1 {
    sender: conn::http1::SendRequest<Full<Bytes>>,
}

impl H1 {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        let (sender, conn) = conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Self { sender })
    }

    pub async fn send(&mut self, req: Req) -> Result<Response<Bytes>, hyper::Error> {
        within("h1 connection ready", self.sender.ready()).await?;
        let resp = within("h1 response", self.sender.send_request(req)).await?;
        collect(resp).await
    }
}

/// One request on a fresh HTTP/1.1 connection.
pub async fn send_h1(addr: SocketAddr, req: Req) -> Result<Response<Bytes>, Box<dyn std::error::Error + Send + Sync>> {
    Ok(H1::connect(addr).await?.send(req).await?)
}

/// An h2c (prior knowledge) connection; clone the sender for concurrent streams.
pub async fn h2_connect(addr: SocketAddr) -> conn::http2::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

pub async fn send_h2(
    sender: &mut conn::http2::SendRequest<Full<Bytes>>,
    req: Req,
) -> Result<Response<Bytes>, hyper::Error> {
    let resp = within("h2 response", sender.send_request(req)).await?;
    collect(resp).await
}

/// An HTTP/2 request needs an absolute URI (it becomes :scheme/:authority).
pub fn h2_get(path: &str, authority: &str) -> Req {
    Request::get(format!("http://{authority}{path}")).version(http::Version::HTTP_2).body(Full::new(Bytes::new())).unwrap()
}

pub fn h2_post(path: &str, authority: &str, body: impl Into<Bytes>) -> Req {
    Request::post(format!("http://{authority}{path}"))
        .version(http::Version::HTTP_2)
        .body(Full::new(body.into()))
        .unwrap()
}

async fn collect(resp: Response<Incoming>) -> Result<Response<Bytes>, hyper::Error> {
    let (parts, body) = resp.into_parts();
    let body = within("response body", body.collect()).await?.to_bytes();
    Ok(Response::from_parts(parts, body))
}

/// The value of `weft-proxy-error`, if present.
pub fn proxy_error(resp: &Response<Bytes>) -> Option<String> {
    resp.headers().get("weft-proxy-error").map(|v| v.to_str().unwrap().to_owned())
}

/// Reads a raw HTTP/1 response head (status line) from `stream`.
pub async fn read_status_line(stream: &mut TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = within("raw response", stream.read(&mut chunk)).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(2).any(|w| w == b"\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    text.lines().next().unwrap_or_default().to_owned()
}

/// The value of one sample line in a metrics exposition.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}
