//! Where a workload's `/metrics` comes from, and one scrape of it: plain
//! HTTP to an admin listener (optionally from inside a network namespace,
//! for the netns substrate's pods), or the Kubernetes API server's pod
//! proxy (`/api/v1/namespaces/NS/pods/NAME:4191/proxy/metrics`).

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

use crate::expo::{self, Exposition};

/// How long one scrape may take.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of one answer read (a proxy's exposition is capped well below).
const MAX_BODY: usize = 16 << 20;

/// One workload to scrape.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub source: Source,
}

#[derive(Clone)]
pub enum Source {
    /// `GET <admin>/metrics`, from `netns` when given.
    Http { admin: http::Uri, netns: Option<PathBuf> },
    /// Through the API server's pod proxy.
    Kube { client: kube::Client, namespace: String, pod: String, port: u16 },
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Http { admin, netns } => f.debug_struct("Http").field("admin", admin).field("netns", netns).finish(),
            Source::Kube { namespace, pod, port, .. } => {
                f.debug_struct("Kube").field("namespace", namespace).field("pod", pod).field("port", port).finish()
            }
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Http { admin, netns: None } => write!(f, "{admin}"),
            Source::Http { admin, netns: Some(ns) } => write!(f, "{admin} (in {})", ns.display()),
            Source::Kube { namespace, pod, port, .. } => {
                write!(f, "/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/metrics")
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("GET {url}: {detail}")]
    Http { url: String, detail: String },
    #[error("GET {url}: answered {status}")]
    Status { url: String, status: http::StatusCode },
    #[error("GET {url}: no answer within {}", humantime::format_duration(*timeout))]
    Timeout { url: String, timeout: Duration },
    #[error("entering network namespace {path}: {detail}")]
    Netns { path: PathBuf, detail: String },
    #[error("{url}: {source}")]
    Kube { url: String, source: Box<kube::Error> },
    #[error("{url}: not a Prometheus exposition: {source}")]
    Parse { url: String, source: expo::ParseError },
}

/// Scrapes and parses `target`'s metrics.
pub async fn scrape(target: &Target) -> Result<Exposition, ScrapeError> {
    let text = fetch(target).await?;
    expo::parse(&text).map_err(|source| ScrapeError::Parse { url: target.source.to_string(), source })
}

/// `target`'s `/metrics` as text, unparsed (bench's cross-check reads the
/// text format itself).
pub async fn fetch(target: &Target) -> Result<String, ScrapeError> {
    let url = target.source.to_string();
    match &target.source {
        Source::Http { admin, netns: None } => get(metrics_uri(admin)).await,
        Source::Http { admin, netns: Some(path) } => in_netns(path.clone(), metrics_uri(admin)).await,
        Source::Kube { client, namespace, pod, port } => {
            let path = format!("/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/metrics");
            let request = http::Request::get(&path).body(Vec::new()).map_err(|e| ScrapeError::Http { url: url.clone(), detail: e.to_string() })?;
            tokio::time::timeout(SCRAPE_TIMEOUT, client.request_text(request))
                .await
                .map_err(|_| ScrapeError::Timeout { url: url.clone(), timeout: SCRAPE_TIMEOUT })?
                .map_err(|source| ScrapeError::Kube { url, source: Box::new(source) })
        }
    }
}

fn metrics_uri(admin: &http::Uri) -> http::Uri {
    let mut parts = admin.clone().into_parts();
    parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/metrics"));
    http::Uri::from_parts(parts).unwrap_or_else(|_| admin.clone())
}

/// `GET uri` over plain HTTP/1.
async fn get(uri: http::Uri) -> Result<String, ScrapeError> {
    let url = uri.to_string();
    let fail = |detail: String| ScrapeError::Http { url: url.clone(), detail };
    let work = async {
        let authority = uri.authority().ok_or_else(|| fail("no host:port".to_owned()))?.clone();
        let port = authority.port_u16().unwrap_or(80);
        let stream = tokio::net::TcpStream::connect((authority.host(), port)).await.map_err(|e| fail(e.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| fail(e.to_string()))?;
        tokio::spawn(connection);
        let request = http::Request::get(uri.clone())
            .header(http::header::HOST, authority.as_str())
            .body(Empty::<Bytes>::new())
            .map_err(|e| fail(e.to_string()))?;
        let response = sender.send_request(request).await.map_err(|e| fail(e.to_string()))?;
        if response.status() != http::StatusCode::OK {
            return Err(ScrapeError::Status { url: url.clone(), status: response.status() });
        }
        let body = http_body_util::Limited::new(response.into_body(), MAX_BODY);
        let bytes = body.collect().await.map_err(|e| fail(e.to_string()))?.to_bytes();
        String::from_utf8(bytes.to_vec()).map_err(|_| fail("the answer is not UTF-8".to_owned()))
    };
    tokio::time::timeout(SCRAPE_TIMEOUT, work).await.map_err(|_| ScrapeError::Timeout { url: url.clone(), timeout: SCRAPE_TIMEOUT })?
}

/// [`get`] from inside the network namespace at `path`: on a thread of its
/// own (a namespace is per thread) with its own runtime, so the caller's
/// threads stay where they are.
async fn in_netns(path: PathBuf, uri: http::Uri) -> Result<String, ScrapeError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread_path = path.clone();
    std::thread::spawn(move || {
        let result = (|| {
            let netns_err = |detail: String| ScrapeError::Netns { path: thread_path.clone(), detail };
            let ns = std::fs::File::open(&thread_path).map_err(|e| netns_err(e.to_string()))?;
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| netns_err(format!("{e} (needs root)")))?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| netns_err(e.to_string()))?;
            runtime.block_on(get(uri))
        })();
        let _ = tx.send(result);
    });
    rx.await.map_err(|_| ScrapeError::Netns { path, detail: "the scraping thread died".to_owned() })?
}
