//! Inbound authorization, per request: the port's policy judges the
//! connection's client (its verified SPIFFE ID, or none for plaintext); a
//! refusal is a 403 naming the reason, counted in
//! `weft_inbound_authz_denied_total` and logged once per connection.
//! Judged per request, so a policy change applies to open connections.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use http::{Request, Response};
use mesh_identity::SpiffeId;

use super::{Layer, Service};
use crate::{
    discovery::{
        authz::{Authz, Traffic},
        policy::Verdict,
    },
    http::{body::ResponseBody, error::ProxyError},
};

/// One connection's client, judged by its port's policy (or, until that
/// is known, by the proxy's default inbound policy).
#[derive(Debug, Clone)]
pub struct AuthorizeLayer {
    authz: Arc<Authz>,
    client: Option<SpiffeId>,
    peer: SocketAddr,
}

impl AuthorizeLayer {
    /// Requests from `client` (connected from `peer`), judged by `authz`.
    pub fn new(authz: Arc<Authz>, client: Option<SpiffeId>, peer: SocketAddr) -> Self {
        Self { authz, client, peer }
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Authorize<S> {
        Authorize { inner, layer: self.clone(), logged: AtomicBool::new(false) }
    }
}

/// See [`AuthorizeLayer`].
#[derive(Debug)]
pub struct Authorize<S> {
    inner: S,
    layer: AuthorizeLayer,
    /// One log line per connection, not per request.
    logged: AtomicBool,
}

impl<S, B> Service<Request<B>> for Authorize<S>
where
    S: Service<Request<B>, Response = Result<Response<ResponseBody>, ProxyError>>,
    B: Send,
{
    type Response = Result<Response<ResponseBody>, ProxyError>;

    fn call(&self, req: Request<B>) -> impl Future<Output = Self::Response> + Send {
        async move {
            let (authz, client) = (&self.layer.authz, self.layer.client.as_ref());
            let v = authz.verdict(client);
            if v != Verdict::Allow {
                let first = !self.logged.swap(true, Ordering::Relaxed);
                authz.refused(Traffic::Http, v, client, self.layer.peer, first);
                return Ok(authz.forbidden(v, client));
            }
            self.inner.call(req).await
        }
    }
}
