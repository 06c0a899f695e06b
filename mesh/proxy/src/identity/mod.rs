//! The proxy's workload identity: certification by mesh-control (via
//! mesh-identity's certifier), and the TLS acceptor and connectors built on
//! the resulting credentials.
//!
//! ```text
//!  MeshConfig ─> Certifier (in-memory P-256 key, CSR, renew at 70 %, backoff)
//!                   │ watch<Option<Credentials>>
//!                   ├─> acceptor   (inbound; ALPN weft/1 = HTTP/2, weft-tcp/1 = opaque TCP)
//!                   ├─> connector  per (peer SPIFFE ID, ALPN), built once at startup
//!                   └─> watcher    log line + metrics per certificate, /ready after the first
//! ```
//!
//! The key never leaves memory. Rotation needs nothing here: the rustls
//! resolvers read the watch on every handshake, so new connections get the
//! new certificate and established ones keep theirs.

pub mod refusal;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use mesh_identity::{
    client_config, server_config, Certifier, CertifierConfig, CertifierError, ControlAddressError, ControlEndpoint, Credentials, CredentialsWatch,
    SpiffeId, TlsError, TrustAnchors, ALPN_WEFT,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tracing::info;

use prometheus_client::metrics::{counter::Counter, gauge::Gauge};

use crate::config::MeshConfig;

/// The workload certificate, as the proxy's own metrics report it
/// (registered by [`crate::metrics::Metrics`]).
#[derive(Debug, Clone, Default)]
pub struct IdentityMetrics {
    /// Certificates installed since start (first one and every rotation).
    pub certificates: Counter,
    /// Unix time at which the current certificate expires (0: none yet).
    pub expiry: Gauge,
}

/// ALPN of Weft's opaque TCP transport: the TLS stream carries the app's raw
/// bytes. A second protocol id (rather than a preamble inside the stream)
/// lets the inbound proxy pick the handler during the handshake, costs no
/// extra round trip, and a peer that speaks neither fails the handshake.
pub const ALPN_WEFT_TCP: &[u8] = b"weft-tcp/1";

/// The mesh identity could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The certifier could not start (key generation, TLS to mesh-control).
    #[error("identity: {0}")]
    Certifier(#[from] CertifierError),
    /// `--control` is not a usable address.
    #[error("--control: {0}")]
    Control(#[from] ControlAddressError),
    /// The TLS configuration could not be built.
    #[error("mTLS configuration (trust anchors {path}): {source}")]
    Tls {
        /// Where the trust anchors came from (`--trust-anchor FILE` or `--trust-anchor-pem`).
        path: String,
        /// What went wrong.
        source: TlsError,
    },
    /// A route or forward names a peer identity, but this proxy has none.
    #[error("{route}: expects {identity}, but this proxy has no identity of its own (--identity ...)")]
    NotMeshed {
        /// The route or forward, as configured.
        route: String,
        /// The expected peer identity.
        identity: String,
    },
}

/// A certified (or certifying) workload and its TLS configurations.
pub struct MeshTls {
    identity: SpiffeId,
    anchors: TrustAnchors,
    anchors_path: String,
    certifier: Certifier,
    acceptor: TlsAcceptor,
    connectors: Mutex<HashMap<(SpiffeId, &'static [u8]), TlsConnector>>,
}

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshTls")
            .field("identity", &self.identity)
            .field("anchors", &self.anchors)
            .field("certified", &self.certifier.is_ready())
            .finish_non_exhaustive()
    }
}

impl MeshTls {
    /// Generates the key, starts certifying, and starts the task that
    /// reports each certificate (log line, metrics) and calls `certified`
    /// after each (readiness, for the admin endpoint). Must run inside the
    /// tokio runtime.
    pub fn start(
        config: &MeshConfig,
        metrics: IdentityMetrics,
        certified: impl Fn() + Send + 'static,
    ) -> Result<Arc<Self>, MeshError> {
        let anchors_path = config.trust_anchor_source.clone();
        let tls_err = |source| MeshError::Tls { path: anchors_path.clone(), source };
        let anchors =
            TrustAnchors::from_pem(config.identity.trust_domain(), &config.trust_anchor_pem).map_err(tls_err)?;
        let control = ControlEndpoint::new(&config.control, anchors.clone(), config.control_identity.clone())?;
        let certifier = Certifier::spawn(CertifierConfig {
            token_file: Some(config.token_file.clone()),
            ..CertifierConfig::new(control, config.identity.clone(), config.token.0.clone())
        })?;
        let mut server = server_config(&anchors, certifier.watch()).map_err(tls_err)?;
        server.alpn_protocols = vec![ALPN_WEFT.to_vec(), ALPN_WEFT_TCP.to_vec()];
        tokio::spawn(watch_credentials(config.identity.clone(), certifier.watch(), metrics, certified));
        Ok(Arc::new(Self {
            identity: config.identity.clone(),
            anchors,
            anchors_path,
            acceptor: TlsAcceptor::from(Arc::new(server)),
            certifier,
            connectors: Mutex::new(HashMap::new()),
        }))
    }

    /// This workload's SPIFFE ID.
    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// Whether a certificate has been issued yet.
    pub fn is_certified(&self) -> bool {
        self.certifier.is_ready()
    }

    /// The current credentials' channel.
    pub fn credentials(&self) -> CredentialsWatch {
        self.certifier.watch()
    }

    /// The inbound TLS acceptor (client certificates required, any SPIFFE ID
    /// of our trust domain).
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// A connector that accepts exactly `peer` and offers `alpn`. Built once
    /// per (peer, ALPN) and shared, so the configuration is not rebuilt per
    /// connection.
    pub fn connector(&self, peer: &SpiffeId, alpn: &'static [u8]) -> Result<TlsConnector, MeshError> {
        let mut connectors = self.connectors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = connectors.get(&(peer.clone(), alpn)) {
            return Ok(c.clone());
        }
        let mut config = client_config(&self.anchors, self.certifier.watch(), peer.clone())
            .map_err(|source| MeshError::Tls { path: self.anchors_path.clone(), source })?;
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = TlsConnector::from(Arc::new(config));
        connectors.insert((peer.clone(), alpn), connector.clone());
        Ok(connector)
    }
}

/// One line and the metrics per installed certificate; readiness after the first.
async fn watch_credentials(
    identity: SpiffeId,
    mut rx: CredentialsWatch,
    metrics: IdentityMetrics,
    certified: impl Fn() + Send,
) {
    loop {
        let current: Option<Arc<Credentials>> = rx.borrow_and_update().clone();
        if let Some(creds) = current {
            let not_after = creds.not_after();
            metrics.certificates.inc();
            metrics
                .expiry
                .set(not_after.duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)));
            certified();
            info!(
                "certified {identity} serial={} valid until {} ({} from now)",
                hex(creds.serial()),
                humantime::format_rfc3339_seconds(not_after),
                humantime::format_duration(round_secs(not_after.duration_since(SystemTime::now()).unwrap_or_default())),
            );
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn round_secs(d: std::time::Duration) -> std::time::Duration {
    std::time::Duration::from_secs(d.as_secs())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
