//! The certifier task: asks mesh-control for a certificate, publishes it on
//! a watch channel, re-certifies at 70 % of its lifetime, and on failure
//! keeps the current certificate and retries with capped, jittered
//! exponential backoff.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_api::identity::v1::identity_client::IdentityClient;
use mesh_api::identity::v1::CertifyRequest;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::tls::CredentialsWatch;
use crate::{ControlEndpoint, Credentials, CredentialsError, KeyError, SpiffeId, TlsError, WorkloadKey};

/// How to reach mesh-control and prove who we are.
#[derive(Clone)]
pub struct CertifierConfig {
    /// mesh-control: its address, the anchors it and what it issues must
    /// chain to, and its SPIFFE ID.
    pub control: ControlEndpoint,
    /// The identity to be certified as.
    pub identity: SpiffeId,
    /// Proof of identity (bootstrap token or ServiceAccount token).
    pub token: Vec<u8>,
    /// Where the token came from, re-read before every Certify: the kubelet
    /// rewrites a projected ServiceAccount token before it expires (an hour
    /// by default), so the token read at start is refused at the renewals
    /// after that. A file that cannot be read or is empty keeps the last
    /// token. `None`: `token` is used as given.
    pub token_file: Option<PathBuf>,
    /// Bound on establishing the TCP connection to mesh-control.
    pub connect_timeout: Duration,
    /// Bound on one Certify call.
    pub request_timeout: Duration,
    /// Fraction of the lifetime after which to re-certify.
    pub refresh_fraction: f64,
    /// First retry delay after a failure; doubles per failure.
    pub backoff_min: Duration,
    /// Retry delay cap.
    pub backoff_max: Duration,
}

impl CertifierConfig {
    /// Defaults: connect timeout 3 s, request timeout 10 s, refresh at 70 %,
    /// backoff 100 ms doubling up to 10 s.
    pub fn new(control: ControlEndpoint, identity: SpiffeId, token: impl Into<Vec<u8>>) -> Self {
        Self {
            control,
            identity,
            token: token.into(),
            token_file: None,
            connect_timeout: Duration::from_secs(3),
            request_timeout: Duration::from_secs(10),
            refresh_fraction: 0.7,
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for CertifierConfig {
    // The token is a secret: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifierConfig")
            .field("control", &self.control)
            .field("identity", &self.identity)
            .field("token_file", &self.token_file)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("refresh_fraction", &self.refresh_fraction)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .finish_non_exhaustive()
    }
}

/// The certifier cannot start.
#[derive(Debug, thiserror::Error)]
pub enum CertifierError {
    #[error("TLS to the control plane: {0}")]
    Tls(#[from] TlsError),
    #[error("refresh fraction {0} must be in (0, 1)")]
    RefreshFraction(f64),
    #[error("backoff min {min:?} must be non-zero and at most max {max:?}")]
    Backoff { min: Duration, max: Duration },
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// One failed certification attempt (logged, then retried).
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error("mesh-control refused: {code:?}: {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("mesh-control unreachable: {0}")]
    Unreachable(String),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// A running certifier; dropping it stops the task (the last published
/// credentials stay readable through receivers already handed out).
#[derive(Debug)]
pub struct Certifier {
    rx: CredentialsWatch,
    task: JoinHandle<()>,
}

impl Certifier {
    /// Generates the workload key and starts the certifier task on the
    /// current tokio runtime. Returns at once; see [`Certifier::ready`].
    pub fn spawn(config: CertifierConfig) -> Result<Self, CertifierError> {
        if !(config.refresh_fraction > 0.0 && config.refresh_fraction < 1.0) {
            return Err(CertifierError::RefreshFraction(config.refresh_fraction));
        }
        if config.backoff_min.is_zero() || config.backoff_min > config.backoff_max {
            return Err(CertifierError::Backoff { min: config.backoff_min, max: config.backoff_max });
        }
        // Lazy: the first Certify connects, and the channel reconnects by
        // itself after mesh-control restarts. The token only ever travels
        // inside TLS to the verified control-plane identity.
        let endpoint =
            config.control.endpoint().connect_timeout(config.connect_timeout).timeout(config.request_timeout);
        let channel = config.control.channel(endpoint)?;
        let key = WorkloadKey::generate()?;
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(run(config, key, IdentityClient::new(channel), tx));
        Ok(Self { rx, task })
    }

    /// A receiver of the current credentials, for [`crate::server_config`]
    /// and [`crate::client_config`].
    pub fn watch(&self) -> CredentialsWatch {
        self.rx.clone()
    }

    /// True once the first certificate was issued (and forever after: a
    /// failed renewal keeps the current one).
    pub fn is_ready(&self) -> bool {
        self.rx.borrow().is_some()
    }

    /// The current credentials, if any.
    pub fn current(&self) -> Option<Arc<Credentials>> {
        self.rx.borrow().clone()
    }

    /// Waits for the first certificate.
    pub async fn ready(&self) -> Arc<Credentials> {
        let mut rx = self.rx.clone();
        let creds = rx.wait_for(Option::is_some).await;
        match creds {
            Ok(creds) => creds.clone().expect("wait_for returned a value matching is_some"),
            // The sender lives in the task, which only ends when aborted by
            // our own Drop; we cannot be here while `self` is alive.
            Err(_) => unreachable!("certifier task ended while its handle is alive"),
        }
    }
}

impl Drop for Certifier {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    config: CertifierConfig,
    key: WorkloadKey,
    mut client: IdentityClient<Channel>,
    tx: watch::Sender<Option<Arc<Credentials>>>,
) {
    let mut failures: u32 = 0;
    let mut token = config.token.clone();
    loop {
        if let Some(path) = &config.token_file {
            refresh_token(path, &mut token).await;
        }
        let wait = match certify(&config, &token, &key, &mut client).await {
            Ok(creds) => {
                failures = 0;
                let wait = refresh_delay(creds.not_after(), SystemTime::now(), config.refresh_fraction);
                tracing::info!(
                    identity = %config.identity,
                    serial = %hex(creds.serial()),
                    refresh_in = ?wait,
                    "certified"
                );
                tx.send_replace(Some(Arc::new(creds)));
                // An already-expired or about-to-expire certificate (clock skew,
                // issuer near its end) would spin; wait at least backoff_min.
                wait.max(config.backoff_min)
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                let wait = backoff(config.backoff_min, config.backoff_max, failures);
                let keeping = tx.borrow().as_ref().map(|c| hex(c.serial()));
                tracing::warn!(
                    identity = %config.identity,
                    error = %err,
                    retry_in = ?wait,
                    keeping_serial = ?keeping,
                    "certification failed"
                );
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// The token file's current contents into `token`, unless it cannot be
/// read or is empty (a rewrite in progress, a lost mount): then the last
/// token is tried, and mesh-control's answer says whether it still holds.
async fn refresh_token(path: &std::path::Path, token: &mut Vec<u8>) {
    match tokio::fs::read(path).await {
        Ok(bytes) if !bytes.trim_ascii().is_empty() => {
            let fresh = bytes.trim_ascii();
            if fresh != token.as_slice() {
                tracing::debug!(file = %path.display(), "token file changed; certifying with the new token");
                *token = fresh.to_vec();
            }
        }
        Ok(_) => tracing::warn!(file = %path.display(), "token file is empty; certifying with the last token"),
        Err(e) => tracing::warn!(file = %path.display(), error = %e, "token file unreadable; certifying with the last token"),
    }
}

async fn certify(
    config: &CertifierConfig,
    token: &[u8],
    key: &WorkloadKey,
    client: &mut IdentityClient<Channel>,
) -> Result<Credentials, CertifyError> {
    let request = CertifyRequest {
        identity: config.identity.to_string(),
        token: token.to_vec(),
        csr_der: key.csr_der(&config.identity)?,
    };
    let response = client.certify(request).await.map_err(|status| match status.code() {
        // Transport failures surface as Unavailable/Unknown/Cancelled/DeadlineExceeded statuses
        // generated on our side; anything else is mesh-control's answer.
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
            CertifyError::Unreachable(error_chain(&status))
        }
        code => CertifyError::Refused { code, message: status.message().to_owned() },
    })?;
    let response = response.into_inner();
    let creds = Credentials::new(key, response.leaf_der, response.chain_der, Some(&config.identity))?;
    // Never publish what does not chain to our anchors (a control plane
    // issuing from another root): the current certificate stays in use.
    creds.verify_chain(config.control.anchors(), SystemTime::now())?;
    Ok(creds)
}

/// A status and its causes: a refused TLS handshake (unknown issuer, wrong
/// control-plane identity) is only named deep in the chain.
fn error_chain(status: &tonic::Status) -> String {
    let mut text = status.to_string();
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let e_text = e.to_string();
        if !text.contains(&e_text) {
            text.push_str(": ");
            text.push_str(&e_text);
        }
        source = e.source();
    }
    text
}

/// How long from `now` until `fraction` of the remaining lifetime has passed.
fn refresh_delay(not_after: SystemTime, now: SystemTime, fraction: f64) -> Duration {
    not_after.duration_since(now).unwrap_or_default().mul_f64(fraction)
}

/// `min * 2^(failures-1)`, capped at `max`, with the upper half jittered so
/// a fleet of proxies does not retry in lockstep after a control-plane outage.
fn backoff(min: Duration, max: Duration, failures: u32) -> Duration {
    let exp = min.saturating_mul(1u32 << failures.saturating_sub(1).min(20)).min(max);
    let half = exp / 2;
    half + half.mul_f64(jitter_unit())
}

/// A uniform value in [0, 1) from the aws-lc-rs CSPRNG (already linked; no
/// extra RNG dependency for one number per retry).
fn jitter_unit() -> f64 {
    let mut buf = [0u8; 8];
    match rustls::crypto::aws_lc_rs::default_provider().secure_random.fill(&mut buf) {
        Ok(()) => (u64::from_le_bytes(buf) >> 11) as f64 / (1u64 << 53) as f64,
        // No randomness: fall back to no jitter rather than failing a retry.
        Err(_) => 0.5,
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for failures in 1..40 {
            let nominal = min.saturating_mul(1u32 << (failures - 1).min(20)).min(max);
            let d = backoff(min, max, failures);
            assert!(d >= nominal / 2 && d <= nominal, "failures={failures}: {d:?} not in [{:?}, {nominal:?}]", nominal / 2);
        }
        let samples: std::collections::HashSet<_> = (0..20).map(|_| backoff(min, max, 10)).collect();
        assert!(samples.len() > 1, "backoff is not jittered");
    }

    #[test]
    fn refresh_at_seventy_percent_of_remaining_lifetime() {
        let now = SystemTime::now();
        let d = refresh_delay(now + Duration::from_secs(100), now, 0.7);
        assert_eq!(d, Duration::from_secs(70));
        assert_eq!(refresh_delay(now - Duration::from_secs(1), now, 0.7), Duration::ZERO);
    }
}
