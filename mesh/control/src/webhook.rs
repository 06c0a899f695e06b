//! The injector's admission webhook over HTTPS: the API server POSTs an
//! AdmissionReview to `names::WEBHOOK_PATH`; [`mesh_kube::webhook::review`]
//! answers it with the same injection `weft inject` does. The serving
//! certificate and key come from files (the Secret `weft install` renders),
//! read at start and again whenever they change.
//!
//! Bounded so a slow or hostile client cannot hold it: connections at once,
//! TLS handshake time, request head and body time, body size. A body that is
//! not an AdmissionReview v1 gets 400; the API server then applies the
//! webhook's failurePolicy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_index::Index;
use mesh_kube::inject::Config;
use mesh_kube::names;
use mesh_kube::webhook::{review, Verdict};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Pods are at most ~1.5 MiB in etcd; an AdmissionReview carries one (plus
/// the envelope). Larger bodies get 413.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// The API server waits 10 s for a webhook by default (timeoutSeconds).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The API server keeps a few connections per webhook; more is a client
/// that is not the API server.
const MAX_CONNECTIONS: usize = 256;

/// Why the webhook cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("--webhook-cert {}: {reason}", .path.display())]
    Cert { path: PathBuf, reason: String },
    #[error("--webhook-key {}: {reason}", .path.display())]
    Key { path: PathBuf, reason: String },
    #[error("--webhook-cert/--webhook-key: {0}")]
    Tls(rustls::Error),
    #[error("--webhook-listen {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

/// How often the certificate files are looked at for a change.
pub const CERT_RELOAD_CHECK: Duration = Duration::from_secs(1);

/// The serving certificate chain and key, PEM, as rustls takes them; every
/// problem names the flag and the file.
fn load_certified(cert: &Path, key: &Path) -> Result<CertifiedKey, WebhookError> {
    let cert_err = |reason: String| WebhookError::Cert { path: cert.to_owned(), reason };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE in it (expected PEM, e.g. the tls.crt of a kubernetes.io/tls Secret)".into()));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| WebhookError::Key { path: key.to_owned(), reason: e.to_string() })?;
    CertifiedKey::from_der(chain, key_der, &rustls::crypto::aws_lc_rs::default_provider()).map_err(WebhookError::Tls)
}

/// What the files looked like when last loaded: a change of either reloads.
type Stamp = Option<(std::time::SystemTime, u64, std::time::SystemTime, u64)>;

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let (c, k) = (std::fs::metadata(cert).ok()?, std::fs::metadata(key).ok()?);
    Some((c.modified().ok()?, c.len(), k.modified().ok()?, k.len()))
}

/// The serving certificate, re-read when its files change, so a renewed
/// Secret (the kubelet swaps the mounted files) is served without a
/// restart. A new pair that does not load is logged and the old one kept.
#[derive(Debug)]
struct Reloading {
    cert: PathBuf,
    key: PathBuf,
    state: std::sync::Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    stamp: Stamp,
    checked: std::time::Instant,
    current: Arc<CertifiedKey>,
}

impl Reloading {
    fn current(&self) -> Arc<CertifiedKey> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.checked.elapsed() >= CERT_RELOAD_CHECK {
            state.checked = std::time::Instant::now();
            let now = stamp(&self.cert, &self.key);
            if now != state.stamp {
                match load_certified(&self.cert, &self.key) {
                    Ok(loaded) => {
                        tracing::info!(cert = %self.cert.display(), "webhook serving certificate reloaded");
                        state.current = Arc::new(loaded);
                        state.stamp = now;
                    }
                    // Half-written (key updated before the certificate):
                    // keep serving the old pair, try again next time.
                    Err(e) => tracing::warn!("webhook certificate not reloaded, the previous one is kept: {e}"),
                }
            }
        }
        Arc::clone(&state.current)
    }
}

impl rustls::server::ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// The TLS 1.2/1.3 server config offering h2 and HTTP/1.1 (the API server
/// uses either), serving `cert` and `key` (PEM) and their later versions.
/// Fails now if they do not load.
pub fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, WebhookError> {
    let stamp = stamp(cert, key);
    let current = Arc::new(load_certified(cert, key)?);
    let resolver = Reloading {
        cert: cert.to_owned(),
        key: key.to_owned(),
        state: std::sync::Mutex::new(Loaded { stamp, checked: std::time::Instant::now(), current }),
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(WebhookError::Tls)?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The webhook, bound and ready to serve.
pub struct Webhook {
    listener: TcpListener,
    tls: TlsAcceptor,
    config: Arc<Config>,
    index: Index,
}

impl Webhook {
    /// Binds `addr`, serving with `tls` (from [`tls_config`]).
    pub async fn bind(addr: SocketAddr, tls: rustls::ServerConfig, config: Config, index: Index) -> Result<Self, WebhookError> {
        let tls = TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind(addr).await.map_err(|source| WebhookError::Bind { addr, source })?;
        Ok(Self { listener, tls, config: Arc::new(config), index })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until the task is aborted.
    pub async fn serve(self) {
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(permit) = Arc::clone(&slots).acquire_owned().await else { return };
            let (tcp, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!("webhook accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (tls, config, index) = (self.tls.clone(), Arc::clone(&self.config), self.index.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => return tracing::debug!(%peer, "webhook TLS handshake: {e}"),
                    Err(_) => return tracing::debug!(%peer, "webhook TLS handshake timed out"),
                };
                let service = hyper::service::service_fn(move |req| handle(req, Arc::clone(&config), index.clone()));
                let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(REQUEST_TIMEOUT);
                builder.http2().timer(hyper_util::rt::TokioTimer::new()).max_concurrent_streams(32);
                if let Err(e) = builder.serve_connection(TokioIo::new(stream), service).await {
                    tracing::debug!(%peer, "webhook connection: {e}");
                }
            });
        }
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    response
}

async fn handle(req: Request<Incoming>, config: Arc<Config>, index: Index) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let text = "text/plain; charset=utf-8";
    if req.uri().path() != names::WEBHOOK_PATH {
        return Ok(reply(StatusCode::NOT_FOUND, text, format!("the injector is at {}\n", names::WEBHOOK_PATH)));
    }
    if req.method() != Method::POST {
        return Ok(reply(StatusCode::METHOD_NOT_ALLOWED, text, "POST an AdmissionReview\n"));
    }
    let body = match tokio::time::timeout(REQUEST_TIMEOUT, Limited::new(req.into_body(), MAX_BODY_BYTES).collect()).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Ok(reply(StatusCode::PAYLOAD_TOO_LARGE, text, format!("body over {MAX_BODY_BYTES} bytes\n")))
        }
        Ok(Err(e)) => return Ok(reply(StatusCode::BAD_REQUEST, text, format!("reading the body: {e}\n"))),
        Err(_) => return Ok(reply(StatusCode::REQUEST_TIMEOUT, text, "the body took too long\n")),
    };
    // Pure CPU on a few hundred KiB at most; not worth a blocking thread.
    match review(&body, &config, |ns| index.namespace_inject(ns)) {
        Ok(reviewed) => {
            match &reviewed.verdict {
                Verdict::Injected => tracing::info!(pod = %reviewed.pod, "injected"),
                Verdict::Skipped(why) => tracing::debug!(pod = %reviewed.pod, "not injected: {why}"),
                Verdict::Denied(why) => tracing::warn!(pod = %reviewed.pod, "denied: {why}"),
                Verdict::Ignored => tracing::debug!(pod = %reviewed.pod, "not a pod creation"),
            }
            Ok(reply(StatusCode::OK, "application/json", reviewed.body))
        }
        Err(e) => {
            tracing::warn!("webhook: {e}");
            Ok(reply(StatusCode::BAD_REQUEST, text, format!("{e}\n")))
        }
    }
}
