//! The admin HTTP listener (`--admin-listen`): `GET /live` answers 200 while
//! the process runs; `GET /ready` answers 200 once the identity CA is
//! loaded, the discovery backend has its first full snapshot and the gRPC
//! listener is bound, and 503 naming what it still waits for before. The
//! Kubernetes Deployment `weft install` renders probes these, so a replica
//! that has not listed every kind yet gets no proxy traffic. `GET /metrics`
//! is the Prometheus text exposition of [`ControlMetrics`].

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::metrics::ControlMetrics;

/// What mesh-control still waits for before it is ready; shared by the
/// parts that finish starting and the listener that reports it.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<Mutex<BTreeSet<String>>>);

impl Readiness {
    /// Ready once every one of `parts` is [`Self::done`].
    pub fn waiting_for<S: Into<String>>(parts: impl IntoIterator<Item = S>) -> Self {
        Self(Arc::new(Mutex::new(parts.into_iter().map(Into::into).collect())))
    }

    /// Adds a part to wait for (before it can be done).
    pub fn wait_for(&self, part: impl Into<String>) {
        self.lock().insert(part.into());
    }

    /// `part` has finished starting (again is harmless).
    pub fn done(&self, part: &str) {
        if self.lock().remove(part) && self.lock().is_empty() {
            tracing::info!("ready");
        }
    }

    /// What is not done yet, sorted; empty when ready.
    pub fn pending(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // A panic elsewhere while holding the set leaves it consistent (one insert or remove).
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Serves `/live`, `/ready` and `/metrics` on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, readiness: Readiness, metrics: ControlMetrics) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends: the next accept may succeed; do not spin.
                tracing::warn!("admin accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (readiness, metrics) = (readiness.clone(), metrics.clone());
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| std::future::ready(answer(&req, &readiness, &metrics)));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
        // Reap finished connections so the set does not grow with every probe.
        while connections.try_join_next().is_some() {}
    }
}

fn answer<B>(req: &Request<B>, readiness: &Readiness, metrics: &ControlMetrics) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let response = Response::builder()
                .header("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")
                .body(Full::new(Bytes::from(metrics.encode())));
            return Ok(response.unwrap_or_default());
        }
        (&Method::GET | &Method::HEAD, "/live") => (StatusCode::OK, "live\n".to_owned()),
        (&Method::GET | &Method::HEAD, "/ready") => match readiness.pending() {
            pending if pending.is_empty() => (StatusCode::OK, "ready\n".to_owned()),
            pending => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready, waiting for: {}\n", pending.join(", "))),
        },
        (_, "/live" | "/ready" | "/metrics") => (StatusCode::METHOD_NOT_ALLOWED, "GET only\n".to_owned()),
        (_, path) => (StatusCode::NOT_FOUND, format!("{path}: not found (try /live, /ready or /metrics)\n")),
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(readiness: &Readiness, method: Method, path: &str) -> StatusCode {
        let req = Request::builder().method(method).uri(path).body(()).unwrap();
        answer(&req, readiness, &ControlMetrics::default()).unwrap().status()
    }

    #[test]
    fn ready_only_when_every_part_is_done() {
        let readiness = Readiness::waiting_for(["identity CA", "gRPC listener"]);
        readiness.wait_for("first list of Service");
        assert_eq!(status(&readiness, Method::GET, "/live"), StatusCode::OK);
        assert_eq!(status(&readiness, Method::GET, "/ready"), StatusCode::SERVICE_UNAVAILABLE);
        readiness.done("identity CA");
        readiness.done("gRPC listener");
        assert_eq!(readiness.pending(), ["first list of Service"]);
        assert_eq!(status(&readiness, Method::GET, "/ready"), StatusCode::SERVICE_UNAVAILABLE);
        readiness.done("first list of Service");
        readiness.done("first list of Service");
        assert_eq!(status(&readiness, Method::GET, "/ready"), StatusCode::OK);
        assert_eq!(status(&readiness, Method::POST, "/ready"), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(status(&readiness, Method::GET, "/metrics"), StatusCode::OK);
        assert_eq!(status(&readiness, Method::GET, "/nope"), StatusCode::NOT_FOUND);
    }
}
