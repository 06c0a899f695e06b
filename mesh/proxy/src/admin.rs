//! Admin listener: `/metrics`, `/ready`, `/live`.
//!
//! Plain HTTP/1, off the request path. It keeps serving while the proxy
//! drains so orchestrators see `/ready` turn 503.

use std::{
    borrow::Cow,
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::watch};
use tracing::debug;

use crate::{discovery::authz::Authz, http::body::ResponseBody, metrics::Metrics, http::server::Phase};

/// Readiness as the admin endpoint reports it: listeners bound, not
/// draining, (meshed proxies) a workload certificate issued, and every
/// watched inbound port's first authorization policy received (a proxy
/// taking traffic before that would judge it by the default alone).
#[derive(Debug, Clone)]
pub struct Health {
    ready: Arc<AtomicBool>,
    certified: Arc<AtomicBool>,
    policies: Arc<Mutex<Vec<Arc<Authz>>>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new(false)
    }
}

impl Health {
    /// Not ready; with `needs_certificate`, also not until
    /// [`Health::set_certified`]. Once certified a proxy stays so: a failed
    /// renewal keeps the current certificate.
    pub fn new(needs_certificate: bool) -> Self {
        Self {
            ready: Arc::new(AtomicBool::new(false)),
            certified: Arc::new(AtomicBool::new(!needs_certificate)),
            policies: Arc::default(),
        }
    }

    /// Not ready until `authz`'s first policy arrives (a port without a
    /// policy source never holds readiness back). Once it has, a lost
    /// control plane does not make the proxy unready: the policy stays.
    pub fn wait_for_policy(&self, authz: Arc<Authz>) {
        self.policies.lock().unwrap_or_else(|e| e.into_inner()).push(authz);
    }

    /// The first watched port still without its policy.
    fn port_awaiting_policy(&self) -> Option<u16> {
        let policies = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        policies.iter().find(|a| a.awaiting_policy()).map(|a| a.port())
    }

    /// Records that the first workload certificate arrived.
    pub fn set_certified(&self, certified: bool) {
        self.certified.store(certified, Ordering::Release);
    }

    /// Marks the proxy ready (listeners bound) or not (draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether `/ready` answers 200.
    pub fn is_ready(&self) -> bool {
        self.not_ready().is_none()
    }

    /// Why `/ready` is 503, or `None` when it is 200.
    fn not_ready(&self) -> Option<Cow<'static, str>> {
        if !self.certified.load(Ordering::Acquire) {
            return Some("not ready: no workload certificate yet\n".into());
        }
        if let Some(port) = self.port_awaiting_policy() {
            return Some(format!("not ready: no inbound policy yet for port {port}\n").into());
        }
        (!self.ready.load(Ordering::Acquire)).then_some("not ready\n".into())
    }
}

/// Admin connections held at once (the oldest is closed to make room).
const ADMIN_MAX_CONNECTIONS: usize = 64;

/// Serves the admin listener until the phase reaches `Exiting`.
pub async fn serve_admin(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Health,
    mut phase: watch::Receiver<Phase>,
) {
    // Scrapers and probes need a handful; a flood must not grow memory.
    let limit = crate::http::admit::ConnLimit::new(ADMIN_MAX_CONNECTIONS, "admin", None);
    loop {
        let Some((stream, peer)) =
            crate::http::server::accept_until(&listener, &mut phase, |p| *p == Phase::Exiting, None).await
        else {
            break;
        };
        // Admin answers are immediate: every admitted connection counts as
        // idle between requests and the oldest makes room.
        let Some(admitted) = limit.admit() else { continue };
        let metrics = Arc::clone(&metrics);
        let health = health.clone();
        tokio::spawn(async move {
            let _admitted = &admitted;
            let service = service_fn(move |req| {
                let resp = respond(&req, &metrics, &health);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                ended = conn => if let Err(e) = ended {
                    debug!(%peer, error = %e, "admin connection ended with error");
                },
                () = admitted.evicted() => debug!(%peer, "admin connection closed to make room"),
            }
        });
    }
}

fn respond(req: &Request<Incoming>, metrics: &Metrics, health: &Health) -> Response<ResponseBody> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match req.uri().path() {
        "/metrics" => {
            let mut resp = Response::new(ResponseBody::full(Bytes::from(metrics.encode())));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            resp
        }
        "/ready" => match health.not_ready() {
            None => text(StatusCode::OK, "ready\n"),
            Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
        },
        "/live" => text(StatusCode::OK, "live\n"),
        _ => text(StatusCode::NOT_FOUND, "try /metrics, /ready or /live\n"),
    }
}

fn text(status: StatusCode, body: impl Into<Cow<'static, str>>) -> Response<ResponseBody> {
    let body = match body.into() {
        Cow::Borrowed(s) => Bytes::from_static(s.as_bytes()),
        Cow::Owned(s) => Bytes::from(s),
    };
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}
