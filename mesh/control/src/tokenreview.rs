//! Kubernetes proof of identity: the proxy presents its pod's ServiceAccount
//! token and the API server vouches for it through a `TokenReview`
//! (`authentication.k8s.io/v1`).
//!
//! The injector mounts a *projected* ServiceAccount token whose audience is
//! [`TokenReviewConfig::audience`] (default [`DEFAULT_AUDIENCE`]); the review
//! asks for exactly that audience, so the pod's ordinary API token (audience
//! the API server) and tokens minted for other services are refused: a token
//! stolen from some other system cannot be replayed here, and a token we
//! see cannot be replayed against the API server.
//!
//! A token proves `spiffe://<trust-domain>/ns/<ns>/sa/<sa>` exactly when the
//! review says `authenticated: true`, lists our audience, and names the user
//! `system:serviceaccount:<ns>:<sa>`. An API server that cannot be reached,
//! refuses mesh-control itself (RBAC: mesh-control's ServiceAccount needs
//! `create` on `tokenreviews`, e.g. the `system:auth-delegator` ClusterRole)
//! or does not answer in time is [`TokenError::Unavailable`], so proxies
//! retry rather than give up.
//!
//! Cheap checks come first, so an unauthenticated caller cannot make every
//! Certify cost a TokenReview: the claimed identity's shape and trust
//! domain (in `authority`, before any verifier), then the token's size and
//! JWT shape here. Successful reviews are cached for
//! [`TokenReviewConfig::cache_ttl`] (30 s by default), keyed by a SHA-256 of
//! identity and token: a proxy retrying Certify (a lost answer, a restart)
//! does not ask the API again, and a revoked token (deleted pod) works for
//! at most that much longer. Refusals are never cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};
use mesh_identity::SpiffeId;

use crate::metrics::ControlMetrics;
use crate::token::{TokenError, TokenVerifier};

/// Audience of the projected ServiceAccount token the injector mounts.
pub const DEFAULT_AUDIENCE: &str = "weft";

/// Prefix of a ServiceAccount's username in Kubernetes authentication.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// How [`TokenReviewVerifier`] judges tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenReviewConfig {
    /// The audience tokens must have been issued for.
    pub audience: String,
    /// Trust domain of the SPIFFE IDs a ServiceAccount maps to.
    pub trust_domain: String,
    /// How long to wait for the API server's answer before reporting
    /// `Unavailable` (the proxy retries with backoff).
    pub timeout: Duration,
    /// How long a successful review is remembered (zero: never).
    pub cache_ttl: Duration,
}

impl Default for TokenReviewConfig {
    fn default() -> Self {
        Self {
            audience: DEFAULT_AUDIENCE.to_owned(),
            trust_domain: "cluster.local".to_owned(),
            timeout: Duration::from_secs(5),
            cache_ttl: Duration::from_secs(30),
        }
    }
}

/// Longest token sent for review; projected ServiceAccount tokens are ~1 KiB.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Reviews remembered at once (a fleet's worth of proxies per TTL).
const CACHE_ENTRIES: usize = 4096;

/// Verifies ServiceAccount tokens with the Kubernetes TokenReview API.
#[derive(Clone)]
pub struct TokenReviewVerifier {
    api: Api<TokenReview>,
    config: TokenReviewConfig,
    proven: Arc<Mutex<HashMap<Vec<u8>, Instant>>>,
    metrics: ControlMetrics,
}

impl std::fmt::Debug for TokenReviewVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenReviewVerifier").field("config", &self.config).finish_non_exhaustive()
    }
}

impl TokenReviewVerifier {
    /// Reviews through `client` (in-cluster config or KUBECONFIG in the binary).
    pub fn new(client: kube::Client, config: TokenReviewConfig) -> Self {
        Self { api: Api::all(client), config, proven: Arc::default(), metrics: ControlMetrics::default() }
    }

    /// Review round trips are timed into `metrics`
    /// (`weft_control_tokenreview_duration_seconds{result}`).
    pub fn with_metrics(mut self, metrics: ControlMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn config(&self) -> &TokenReviewConfig {
        &self.config
    }

    async fn review(&self, token: &str) -> Result<TokenReviewStatus, TokenError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![self.config.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let answer = tokio::time::timeout(self.config.timeout, self.api.create(&PostParams::default(), &review))
            .await
            .map_err(|_| {
                TokenError::Unavailable(format!(
                    "the Kubernetes API did not answer the TokenReview within {}",
                    humantime::format_duration(self.config.timeout)
                ))
            })?
            .map_err(api_error)?;
        answer.status.ok_or_else(|| {
            TokenError::Unavailable("the Kubernetes API answered a TokenReview without a status".to_owned())
        })
    }
}

impl TokenVerifier for TokenReviewVerifier {
    async fn verify(&self, identity: &SpiffeId, token: &[u8]) -> Result<(), TokenError> {
        // A ServiceAccount token is a JWT of bounded size. Anything else
        // cannot authenticate, so spare the API server the round trip.
        let token = jwt_shaped(token).ok_or_else(|| {
            TokenError::NotAuthenticated("the token is empty or not a ServiceAccount token (JWT)".to_owned())
        })?;
        let key = cache_key(identity, token);
        if self.recently_proven(&key) {
            return Ok(());
        }
        let started = Instant::now();
        let judged = self.review(token).await.and_then(|status| judge(&status, identity, &self.config));
        let result = match &judged {
            Ok(()) => "proven",
            Err(TokenError::Unavailable(_)) => "error",
            Err(_) => "refused",
        };
        self.metrics.tokenreview(result, started.elapsed());
        judged?;
        self.remember(key);
        Ok(())
    }
}

impl TokenReviewVerifier {
    fn recently_proven(&self, key: &[u8]) -> bool {
        let proven = self.proven.lock().unwrap_or_else(|e| e.into_inner());
        proven.get(key).is_some_and(|until| *until > Instant::now())
    }

    fn remember(&self, key: Vec<u8>) {
        if self.config.cache_ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut proven = self.proven.lock().unwrap_or_else(|e| e.into_inner());
        if proven.len() >= CACHE_ENTRIES {
            proven.retain(|_, until| *until > now);
            if proven.len() >= CACHE_ENTRIES {
                proven.clear();
            }
        }
        proven.insert(key, now + self.config.cache_ttl);
    }
}

/// `token` as text when it can be a JWT: at most [`MAX_TOKEN_BYTES`], three
/// non-empty base64url parts separated by dots.
pub fn jwt_shaped(token: &[u8]) -> Option<&str> {
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let text = std::str::from_utf8(token).ok()?;
    let base64url = |part: &str| {
        !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'=')
    };
    let parts: Vec<&str> = text.split('.').collect();
    (parts.len() == 3 && parts.iter().all(|p| base64url(p))).then_some(text)
}

/// SHA-256 of identity and token (the cache holds no token).
fn cache_key(identity: &SpiffeId, token: &str) -> Vec<u8> {
    let hash = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .expect("a TLS 1.3 suite")
        .common
        .hash_provider;
    let mut ctx = hash.start();
    ctx.update(identity.as_str().as_bytes());
    ctx.update(&[0]);
    ctx.update(token.as_bytes());
    ctx.finish().as_ref().to_vec()
}

/// Decides from the review's status whether it proves `identity`.
pub fn judge(status: &TokenReviewStatus, identity: &SpiffeId, config: &TokenReviewConfig) -> Result<(), TokenError> {
    if status.authenticated != Some(true) {
        let error = status.error.clone().filter(|e| !e.is_empty()).unwrap_or_else(|| "no reason given".to_owned());
        // The API server explains an audience mismatch only in prose; name it
        // so an operator sees the injector/control plane disagreement at once.
        if error.to_ascii_lowercase().contains("audience") {
            return Err(TokenError::AudienceMismatch { audience: config.audience.clone(), detail: error });
        }
        return Err(TokenError::NotAuthenticated(error));
    }
    // An audience-aware API server returns the audiences the token is valid
    // for among those asked; one that ignores our request returns none, and
    // the token may then be meant for someone else.
    let audiences = status.audiences.as_deref().unwrap_or_default();
    if !audiences.contains(&config.audience) {
        return Err(TokenError::AudienceMismatch {
            audience: config.audience.clone(),
            detail: format!("the API server authenticated the token for audiences {audiences:?}"),
        });
    }
    let username = status.user.as_ref().and_then(|u| u.username.as_deref()).unwrap_or_default();
    let proven = service_account_identity(username, &config.trust_domain)
        .map_err(|proven| TokenError::IdentityMismatch { proven })?;
    if proven == *identity {
        Ok(())
    } else {
        Err(TokenError::IdentityMismatch { proven: proven.to_string() })
    }
}

/// `system:serviceaccount:<ns>:<sa>` -> `spiffe://<td>/ns/<ns>/sa/<sa>`;
/// the error says what the username is instead.
fn service_account_identity(username: &str, trust_domain: &str) -> Result<SpiffeId, String> {
    let not_sa = || format!("Kubernetes user {username:?}, not a ServiceAccount");
    let rest = username.strip_prefix(SERVICE_ACCOUNT_PREFIX).ok_or_else(not_sa)?;
    let (ns, sa) = rest.split_once(':').ok_or_else(not_sa)?;
    if ns.is_empty() || sa.is_empty() || sa.contains(':') {
        return Err(not_sa());
    }
    SpiffeId::workload(trust_domain, ns, sa)
        .map_err(|e| format!("ServiceAccount {ns}/{sa}, which is no SPIFFE ID: {e}"))
}

fn api_error(e: kube::Error) -> TokenError {
    TokenError::Unavailable(match e {
        kube::Error::Api(status) if status.code == 401 => {
            format!("the Kubernetes API did not accept mesh-control's own credentials: {status}")
        }
        kube::Error::Api(status) if status.code == 403 => format!(
            "mesh-control may not create tokenreviews.authentication.k8s.io \
             (bind its ServiceAccount to the ClusterRole system:auth-delegator): {status}"
        ),
        kube::Error::Api(status) => format!("the Kubernetes API refused the TokenReview: {status}"),
        other => format!("cannot reach the Kubernetes API: {other}"),
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    fn status(authenticated: bool, username: &str, audiences: &[&str], error: Option<&str>) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
            error: error.map(str::to_owned),
            user: Some(UserInfo { username: Some(username.to_owned()), ..UserInfo::default() }),
        }
    }

    #[test]
    fn only_jwt_shaped_tokens_of_bounded_size_are_reviewed() {
        assert!(jwt_shaped(b"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln-_").is_some());
        for bad in [&b""[..], b"not a token", b"a.b", b"a..c", b"a.b.c.d", b"a.b.c\n", "a.b.\u{e9}".as_bytes()] {
            assert!(jwt_shaped(bad).is_none(), "{bad:?}");
        }
        let big = format!("a.{}.c", "b".repeat(MAX_TOKEN_BYTES));
        assert!(jwt_shaped(big.as_bytes()).is_none());
    }

    #[test]
    fn the_service_account_of_the_identity_is_accepted() {
        let config = TokenReviewConfig::default();
        let web = id("spiffe://cluster.local/ns/shop/sa/web");
        assert_eq!(judge(&status(true, "system:serviceaccount:shop:web", &["weft"], None), &web, &config), Ok(()));
    }

    #[test]
    fn another_service_account_or_a_user_is_an_identity_mismatch() {
        let config = TokenReviewConfig::default();
        let web = id("spiffe://cluster.local/ns/shop/sa/web");
        let other = judge(&status(true, "system:serviceaccount:shop:api", &["weft"], None), &web, &config);
        assert_eq!(
            other,
            Err(TokenError::IdentityMismatch { proven: "spiffe://cluster.local/ns/shop/sa/api".to_owned() })
        );
        let ns = judge(&status(true, "system:serviceaccount:front:web", &["weft"], None), &web, &config);
        assert!(matches!(ns, Err(TokenError::IdentityMismatch { .. })), "{ns:?}");
        for user in
            ["alice", "system:serviceaccount:shop", "system:serviceaccount::web", "system:serviceaccount:a:b:c", ""]
        {
            let r = judge(&status(true, user, &["weft"], None), &web, &config);
            let Err(TokenError::IdentityMismatch { proven }) = r else { panic!("{user:?}: {r:?}") };
            assert!(proven.contains("not a ServiceAccount"), "{proven}");
        }
        // Same ns/sa in another trust domain is another identity.
        let foreign = TokenReviewConfig { trust_domain: "example.org".to_owned(), ..TokenReviewConfig::default() };
        let r = judge(&status(true, "system:serviceaccount:shop:web", &["weft"], None), &web, &foreign);
        assert!(matches!(r, Err(TokenError::IdentityMismatch { .. })), "{r:?}");
    }

    #[test]
    fn unauthenticated_and_audience_problems_are_named() {
        let config = TokenReviewConfig::default();
        let web = id("spiffe://cluster.local/ns/shop/sa/web");
        let r = judge(&status(false, "", &[], Some("invalid bearer token")), &web, &config);
        assert_eq!(r, Err(TokenError::NotAuthenticated("invalid bearer token".to_owned())));
        let r = judge(&TokenReviewStatus::default(), &web, &config);
        assert_eq!(r, Err(TokenError::NotAuthenticated("no reason given".to_owned())));
        let prose = "[invalid bearer token, token audiences [\"https://kubernetes.default.svc\"] is invalid for the target audiences [\"weft\"]]";
        let r = judge(&status(false, "", &[], Some(prose)), &web, &config);
        assert!(matches!(r, Err(TokenError::AudienceMismatch { ref audience, .. }) if audience == "weft"), "{r:?}");
        // Authenticated, but not for our audience (an API server that ignored it).
        let r = judge(&status(true, "system:serviceaccount:shop:web", &[], None), &web, &config);
        assert!(matches!(r, Err(TokenError::AudienceMismatch { .. })), "{r:?}");
        let r = judge(&status(true, "system:serviceaccount:shop:web", &["other"], None), &web, &config);
        assert!(matches!(r, Err(TokenError::AudienceMismatch { .. })), "{r:?}");
    }
}
