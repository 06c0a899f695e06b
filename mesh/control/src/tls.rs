//! mesh-control's own identity and its TLS listener. The control plane
//! certifies itself from the CA it issues from (so proxies need no other
//! trust anchor), as `spiffe://<td>/ns/weft/sa/mesh-control` by default, and
//! renews that certificate at 70 % of its lifetime like any proxy.
//!
//! ```text
//!  Ca ─issue(own key)─> watch<Option<Arc<Credentials>>> ─> control_server_config (rustls)
//!        └ renew at 70 % (a fresh key each time)
//!  TcpListener ─mesh_identity::control_incoming─> tonic serve_with_incoming
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_identity::{control_server_config, Credentials, CredentialsWatch, SpiffeId, TlsError, TrustAnchors, WorkloadKey};
use rcgen::SubjectPublicKeyInfo;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::ca::Ca;

/// mesh-control could not certify itself.
#[derive(Debug, thiserror::Error)]
pub enum OwnCertError {
    #[error("generating mesh-control's key: {0}")]
    Key(#[from] mesh_identity::KeyError),
    #[error("issuing mesh-control's own certificate ({identity}): {reason}")]
    Issue { identity: SpiffeId, reason: String },
    #[error("mesh-control's TLS configuration: {0}")]
    Tls(#[from] TlsError),
}

/// mesh-control's current certificate, renewed in the background; dropping
/// it stops the renewals.
#[derive(Debug)]
pub struct OwnCertificate {
    rx: CredentialsWatch,
    task: JoinHandle<()>,
}

impl OwnCertificate {
    /// Issues the first certificate now (an error here is a startup error)
    /// and spawns the renewals. `lifetime` is the workloads' certificate
    /// lifetime: the control plane rotates as often as its proxies.
    pub fn start(ca: Arc<Ca>, identity: SpiffeId, lifetime: Duration) -> Result<Self, OwnCertError> {
        let first = issue_own(&ca, &identity, lifetime)?;
        tracing::info!(%identity, not_after = %humantime::format_rfc3339_seconds(first.not_after()), "certified mesh-control");
        let (tx, rx) = watch::channel(Some(Arc::new(first)));
        let task = tokio::spawn(renew(ca, identity, lifetime, tx));
        Ok(Self { rx, task })
    }

    pub fn watch(&self) -> CredentialsWatch {
        self.rx.clone()
    }

    /// The rustls server configuration presenting the current certificate.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, OwnCertError> {
        Ok(Arc::new(control_server_config(self.watch())?))
    }
}

impl Drop for OwnCertificate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn issue_own(ca: &Ca, identity: &SpiffeId, lifetime: Duration) -> Result<Credentials, OwnCertError> {
    let fail = |reason: String| OwnCertError::Issue { identity: identity.clone(), reason };
    let key = WorkloadKey::generate()?;
    let spki = SubjectPublicKeyInfo::from_der(&key.public_key_der()).map_err(|e| fail(e.to_string()))?;
    let issued = ca.issue(identity, &spki, lifetime, OffsetDateTime::now_utc()).map_err(|e| fail(e.to_string()))?;
    let creds =
        Credentials::new(&key, issued.leaf_der, issued.chain_der, Some(identity)).map_err(|e| fail(e.to_string()))?;
    // What proxies will check: a chain to the anchor they were given.
    let anchors = TrustAnchors::from_der(identity.trust_domain(), vec![ca.trust_anchor_der().clone()])?;
    creds.verify_chain(&anchors, SystemTime::now()).map_err(|e| fail(e.to_string()))?;
    Ok(creds)
}

async fn renew(ca: Arc<Ca>, identity: SpiffeId, lifetime: Duration, tx: watch::Sender<Option<Arc<Credentials>>>) {
    let mut failures = 0u32;
    loop {
        let not_after = tx.borrow().as_ref().map_or_else(SystemTime::now, |c| c.not_after());
        let wait = if failures == 0 {
            not_after.duration_since(SystemTime::now()).unwrap_or_default().mul_f64(0.7)
        } else {
            Duration::from_millis(100u64 << failures.min(7))
        };
        tokio::time::sleep(wait.max(Duration::from_millis(100))).await;
        match issue_own(&ca, &identity, lifetime) {
            Ok(creds) => {
                failures = 0;
                tracing::info!(%identity, not_after = %humantime::format_rfc3339_seconds(creds.not_after()), "renewed mesh-control's certificate");
                tx.send_replace(Some(Arc::new(creds)));
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                tracing::warn!(error = %e, "renewing mesh-control's certificate failed; keeping the current one");
            }
        }
    }
}
