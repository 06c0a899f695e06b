//! Weft's control plane: the identity CA, which certifies workloads that
//! prove who they are (a bootstrap token in local modes, a ServiceAccount
//! token checked by Kubernetes TokenReview in a cluster) with short-lived
//! SPIFFE certificates; and destination + policy discovery
//! over the `mesh-index` index, fed by a manifests directory or Kubernetes.
//!
//! ```text
//!  CertifyRequest ─> grpc::IdentityService ─> authority::Authority<V: TokenVerifier>
//!                        (tonic, statuses)        │ identity + trust domain
//!                                                 │ token::TokenVerifier (BootstrapTokens | DenyAll
//!                                                 │   | tokenreview::TokenReviewVerifier)
//!                                                 │ csr::check (parse, signature, SAN)
//!                                                 └ ca::Ca::issue (rcgen, aws-lc-rs)
//!
//!  tls::OwnCertificate (spiffe://<td>/ns/weft/sa/mesh-control, from the same Ca, renewed)
//!       └─> TLS listener (mesh_identity::control_incoming) ─> tonic, bounded (streams, resets,
//!           keepalive, connections); Certify behind ratelimit::CertifyLimiter
//!
//!  discovery::manifests (dir, inotify) ─┐                ┌─ grpc::destination::DestinationService<D: DiscoverDestination>
//!  discovery::kubernetes (watchers)  ──┴─> mesh_index::Index ─┴─ grpc::policy::PolicyService<P: DiscoverPolicy>
//!       (discovery::{convert, gateway, authz}: k8s objects -> index model)
//! ```
#![forbid(unsafe_code)]

pub mod admin;
pub mod authority;
pub mod ca;
pub mod csr;
pub mod discovery;
pub mod grpc;
pub mod metrics;
pub mod propagation;
pub mod ratelimit;
pub mod tls;
pub mod token;
pub mod tokenreview;
pub mod webhook;

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mesh_identity::SpiffeId;
use mesh_identity::{control_identity, control_incoming, ListenerLimits};
use tokio::net::TcpListener;
use tonic::transport::Server;

use mesh_index::{DefaultPolicy, Index};

use crate::authority::Authority;
use crate::ca::Ca;
use crate::discovery::manifests::{Follow, Manifests};
use crate::grpc::destination::DestinationService;
use crate::grpc::policy::PolicyService;
use crate::grpc::streams::OpenStreams;
use crate::grpc::IdentityService;
use crate::metrics::grpc_layer::GrpcMetricsLayer;
use crate::metrics::ControlMetrics;
use crate::ratelimit::{CertifyLimiter, CertifyLimits, Rate};
use crate::tls::OwnCertificate;
use crate::token::{BootstrapTokens, DenyAll, TokenVerifier};
use crate::tokenreview::{TokenReviewConfig, TokenReviewVerifier, DEFAULT_AUDIENCE};

/// Streams one connection may make us reset (protocol errors) before it
/// is closed with GOAWAY (hyper's default is 1024; we are stricter).
const LOCAL_ERROR_RESETS: usize = 100;
/// Streams a client may open and reset before we accept them (rapid reset).
const PENDING_ACCEPT_RESETS: usize = 20;
/// gRPC metadata is small; refuse header blocks past this.
const MAX_HEADER_LIST: u32 = 16 * 1024;
const CONCURRENCY_PER_CONNECTION: usize = 256;
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// What `/ready` waits for until the gRPC listener is bound.
const GRPC_BOUND: &str = "gRPC listener";
/// How often closed streams' lookups are forgotten and the watch counts logged (on change).
const WATCH_REPORT_EVERY: Duration = Duration::from_secs(1);

/// Command line of `mesh-control`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "mesh-control",
    version,
    args_conflicts_with_subcommands = true,
    about = "Weft control plane: identity CA and destination/policy discovery (gRPC weft.identity.v1, weft.destination.v1, weft.policy.v1)"
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Address of the gRPC server (port 0 picks one; the bound address is printed).
    #[arg(long, env = "WEFT_CONTROL_LISTEN", default_value = "127.0.0.1:8086")]
    pub listen: SocketAddr,
    /// Directory holding the generated trust anchor and issuer (created on
    /// first start, reused after). Not needed with --trust-anchor/--issuer-*.
    #[arg(long, env = "WEFT_CONTROL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Trust domain of every identity issued: spiffe://<trust-domain>/ns/<ns>/sa/<sa>.
    #[arg(long, env = "WEFT_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// mesh-control's own SPIFFE ID: the gRPC server is TLS only, with a
    /// certificate for this identity issued from its own CA (renewed like
    /// the workloads'); proxies check it (their --control-identity).
    /// [default: spiffe://<trust-domain>/ns/weft/sa/mesh-control]
    #[arg(long, env = "WEFT_CONTROL_IDENTITY", value_name = "SPIFFE_ID")]
    pub identity: Option<String>,
    /// Connections served at once (more wait in the listen backlog).
    #[arg(long, env = "WEFT_CONTROL_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// HTTP/2 streams one connection may hold open (SETTINGS_MAX_CONCURRENT_STREAMS;
    /// further ones are refused with REFUSED_STREAM). Each proxy holds two
    /// watches per authority it talks to on one connection.
    #[arg(long, env = "WEFT_CONTROL_MAX_CONCURRENT_STREAMS", default_value_t = 1_000)]
    pub max_concurrent_streams: u32,
    /// Certify requests per second for all callers together (token bucket refill).
    #[arg(long, env = "WEFT_CERTIFY_RATE", default_value_t = 100.0)]
    pub certify_rate: f64,
    /// Largest burst of Certify requests for all callers together.
    #[arg(long, env = "WEFT_CERTIFY_BURST", default_value_t = 200)]
    pub certify_burst: u32,
    /// Certify requests per second from one client IP address.
    #[arg(long, env = "WEFT_CERTIFY_PEER_RATE", default_value_t = 10.0)]
    pub certify_peer_rate: f64,
    /// Largest burst of Certify requests from one client IP address.
    #[arg(long, env = "WEFT_CERTIFY_PEER_BURST", default_value_t = 50)]
    pub certify_peer_burst: u32,
    /// Operator's trust anchor (root) certificate, PEM. Requires --issuer-cert and --issuer-key.
    #[arg(long, requires_all = ["issuer_cert", "issuer_key"])]
    pub trust_anchor: Option<PathBuf>,
    /// Operator's issuer (intermediate) certificate, PEM, signed by the trust anchor.
    #[arg(long, requires_all = ["trust_anchor", "issuer_key"])]
    pub issuer_cert: Option<PathBuf>,
    /// Private key of the issuer certificate, PEM (PKCS#8).
    #[arg(long, requires_all = ["trust_anchor", "issuer_cert"])]
    pub issuer_key: Option<PathBuf>,
    /// Lifetime of issued workload certificates (humantime: 24h, 90m, 5s; at least 1s).
    #[arg(long, env = "WEFT_CERT_LIFETIME", default_value = "24h", value_parser = humantime::parse_duration)]
    pub cert_lifetime: Duration,
    /// How Certify callers prove their identity: `bootstrap` (a token from
    /// --bootstrap-tokens; local and netns substrates) or `kubernetes` (the
    /// pod's ServiceAccount token, checked with a TokenReview).
    #[arg(long, env = "WEFT_IDENTITY_VERIFIER", value_enum, default_value_t = IdentityVerifier::Bootstrap)]
    pub identity_verifier: IdentityVerifier,
    /// Bootstrap token file, `<spiffe-id> <token>` per line ('#' comments); without it every request is refused.
    /// Only with --identity-verifier bootstrap.
    #[arg(long, env = "WEFT_BOOTSTRAP_TOKENS")]
    pub bootstrap_tokens: Option<PathBuf>,
    /// Audience ServiceAccount tokens must be issued for (the injector mounts a
    /// projected token with it). Only with --identity-verifier kubernetes. [default: weft]
    #[arg(long, env = "WEFT_TOKEN_AUDIENCE", value_name = "AUDIENCE")]
    pub token_audience: Option<String>,
    /// Where Services, endpoints, routes and policies come from.
    #[arg(long, env = "WEFT_CONTROL_BACKEND", value_enum, default_value_t = Backend::Manifests)]
    pub backend: Backend,
    /// Directory of Kubernetes YAML manifests (*.yaml, *.yml, recursive),
    /// hot-reloaded; for --backend manifests. Without it discovery knows
    /// nothing and proxies forward as if unmeshed.
    #[arg(long, env = "WEFT_CONTROL_MANIFESTS")]
    pub manifests: Option<PathBuf>,
    /// Follow the manifests directory through filesystem notifications
    /// (inotify), with a full rescan every 10s (or --manifests-poll if
    /// longer) in case one is lost; false, or where notifications are
    /// unavailable: poll every --manifests-poll.
    #[arg(long, env = "WEFT_CONTROL_MANIFESTS_NOTIFY", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub manifests_notify: bool,
    /// How often the manifests directory is checked for changes without
    /// notifications (at least 10ms).
    #[arg(long, env = "WEFT_CONTROL_MANIFESTS_POLL", default_value = "250ms", value_parser = humantime::parse_duration)]
    pub manifests_poll: Duration,
    /// DNS domain of Services: <svc>.<ns>.svc.<cluster-domain>.
    #[arg(long, env = "WEFT_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Admin HTTP listener: GET /live (200 while running) and GET /ready (200
    /// once the CA is loaded, discovery has its first full snapshot and gRPC
    /// is bound; 503 naming what is missing before). Off unless given, so
    /// local runs and tests never fight over a fixed port; the Kubernetes
    /// Deployment sets 0.0.0.0:9990. Port 0 picks one (printed as `listening admin <addr>`).
    #[arg(long, env = "WEFT_CONTROL_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Inbound default for namespaces without the weft.io/default-inbound-policy
    /// annotation: allow (= all-unauthenticated), all-authenticated or deny.
    #[arg(long, env = "WEFT_DEFAULT_INBOUND_POLICY", default_value = "all-unauthenticated")]
    pub default_inbound_policy: DefaultPolicy,
    /// HTTPS address of the injector's admission webhook (AdmissionReview v1
    /// on /inject); off unless given. Needs --webhook-cert and --webhook-key.
    #[arg(long, env = "WEFT_CONTROL_WEBHOOK_LISTEN", value_name = "ADDR", requires_all = ["webhook_cert", "webhook_key"])]
    pub webhook_listen: Option<SocketAddr>,
    /// The webhook's serving certificate chain, PEM (read at start).
    #[arg(long, env = "WEFT_CONTROL_WEBHOOK_CERT", value_name = "FILE", requires = "webhook_listen")]
    pub webhook_cert: Option<PathBuf>,
    /// The webhook's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "WEFT_CONTROL_WEBHOOK_KEY", value_name = "FILE", requires = "webhook_listen")]
    pub webhook_key: Option<PathBuf>,
    /// The proxy image the webhook injects.
    #[arg(long, env = "WEFT_CONTROL_PROXY_IMAGE", value_name = "IMAGE", default_value_t = mesh_kube::inject::default_image(mesh_kube::names::PROXY_IMAGE))]
    pub proxy_image: String,
    /// The init container image (`weft init`) the webhook injects.
    #[arg(long, env = "WEFT_CONTROL_INIT_IMAGE", value_name = "IMAGE", default_value_t = mesh_kube::inject::default_image(mesh_kube::names::INIT_IMAGE))]
    pub init_image: String,
    /// The namespace mesh-control runs in: injected proxies reach it at
    /// weft-control.<this>.svc.<cluster domain>:8086.
    #[arg(long, env = "WEFT_CONTROL_NAMESPACE", value_name = "NAMESPACE", default_value = mesh_kube::names::NAMESPACE)]
    pub namespace: String,
}

/// Subcommands (the default, no subcommand, runs the control plane).
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Print Weft's CustomResourceDefinitions (AuthorizationPolicy; YAML) for `kubectl apply -f -`.
    Crd,
}

/// Discovery backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// A directory of manifests (--manifests); the default for local and netns substrates.
    Manifests,
    /// The Kubernetes API (in-cluster config or KUBECONFIG).
    Kubernetes,
}

/// Proof-of-identity source for Certify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum IdentityVerifier {
    /// Per-workload tokens from --bootstrap-tokens, written by the substrate.
    Bootstrap,
    /// ServiceAccount tokens checked by Kubernetes TokenReview (in-cluster config or KUBECONFIG).
    Kubernetes,
}

/// The verifier `run` serves with, chosen by the flags.
enum Verifier {
    Bootstrap(BootstrapTokens),
    Kubernetes { audience: String },
    None,
}

/// Why mesh-control stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad configuration; every problem is listed. The binary exits 64.
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Config(Vec<String>),
    #[error("binding {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("{0}")]
    OwnCertificate(#[from] tls::OwnCertError),
    #[error("installing signal handlers: {0}")]
    Signals(std::io::Error),
    #[error("Kubernetes client (in-cluster config or KUBECONFIG): {0}")]
    Kube(#[from] kube::Error),
    #[error("printing the CRD: {0}")]
    Crd(String),
    #[error("{0}")]
    Webhook(#[from] webhook::WebhookError),
}

impl Error {
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Config(_))
    }
}

/// Validates `args`, loads or generates the CA, starts the discovery backend,
/// binds, prints `listening grpc <addr>` on stdout, and serves until SIGTERM
/// or SIGINT. `crd` prints the CRD instead.
pub async fn run(args: Args) -> Result<(), Error> {
    if let Some(Command::Crd) = args.command {
        let yaml = mesh_kube::crds::yaml().map_err(|e| Error::Crd(e.to_string()))?;
        let mut stdout = std::io::stdout().lock();
        return writeln!(stdout, "{yaml}").map_err(|e| Error::Crd(e.to_string()));
    }
    let (ca, verifier, options) = load(&args)?;
    // The CA is loaded (load() failed otherwise); the rest comes below.
    let readiness = admin::Readiness::waiting_for([GRPC_BOUND]);
    let index = Index::new(mesh_index::Config {
        cluster_domain: args.cluster_domain.clone(),
        trust_domain: args.trust_domain.clone(),
        default_inbound_policy: args.default_inbound_policy,
    });
    let options = ServeOptions { metrics: ControlMetrics::new(Some(index.clone())), ..options };
    let admin = match args.admin_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
            let bound = listener.local_addr().map_err(|source| Error::Bind { addr, source })?;
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "listening admin {bound}").and_then(|()| stdout.flush());
            drop(stdout);
            tracing::info!(addr = %bound, "serving /live, /ready and /metrics");
            Some(tokio::spawn(admin::serve(listener, readiness.clone(), options.metrics.clone())))
        }
        None => None,
    };
    // One client (one connection pool, one credential refresher) for every
    // user of the API, made before anything is started so a missing
    // kubeconfig fails early.
    let mut client = None;
    if matches!(verifier, Verifier::Kubernetes { .. }) {
        kube_client(&mut client).await?;
    }
    // Certificate problems are configuration errors, found before anything starts.
    let webhook_tls = match (&args.webhook_cert, &args.webhook_key) {
        (Some(cert), Some(key)) => Some(webhook::tls_config(cert, key).map_err(|e| Error::Config(vec![e.to_string()]))?),
        _ => None,
    };
    let backend = start_backend(&args, &index, &readiness, &mut client).await?;
    let webhook = match (args.webhook_listen, webhook_tls) {
        (Some(addr), Some(tls)) => Some(start_webhook(&args, addr, tls, &options, &index, trust_anchor_pem(&args)?).await?),
        _ => None,
    };
    let listener = TcpListener::bind(args.listen).await.map_err(|source| Error::Bind { addr: args.listen, source })?;
    readiness.done(GRPC_BOUND);
    let shutdown = shutdown_signal().map_err(Error::Signals)?;
    let (trust_domain, lifetime) = (args.trust_domain, args.cert_lifetime);
    let served = match verifier {
        Verifier::Bootstrap(tokens) => {
            serve(listener, Authority::new(ca, tokens, trust_domain, lifetime), index, options, shutdown).await
        }
        Verifier::Kubernetes { audience } => {
            // Made above, before anything started: this only clones it.
            let client = kube_client(&mut client).await?;
            let config =
                TokenReviewConfig { audience, trust_domain: trust_domain.clone(), ..TokenReviewConfig::default() };
            tracing::info!(audience = %config.audience, "verifying ServiceAccount tokens with Kubernetes TokenReview");
            let reviews = TokenReviewVerifier::new(client, config).with_metrics(options.metrics.clone());
            serve(listener, Authority::new(ca, reviews, trust_domain, lifetime), index, options, shutdown).await
        }
        Verifier::None => {
            tracing::warn!("no --bootstrap-tokens: every certification request will be refused");
            serve(listener, Authority::new(ca, DenyAll, trust_domain, lifetime), index, options, shutdown).await
        }
    };
    for task in [backend, webhook, admin].into_iter().flatten() {
        task.abort();
    }
    served
}

/// The trust anchor this control plane serves with, PEM: the file the CA
/// was loaded from (`--trust-anchor`, else the data directory's).
fn trust_anchor_pem(args: &Args) -> Result<String, Error> {
    let path = match (&args.trust_anchor, &args.data_dir) {
        (Some(path), _) => path.clone(),
        (None, Some(dir)) => dir.join(ca::ANCHOR_FILE),
        // load() refused this already.
        (None, None) => return Err(Error::Config(vec!["no --trust-anchor and no --data-dir".to_owned()])),
    };
    std::fs::read_to_string(&path)
        .map_err(|e| Error::Config(vec![format!("reading the trust anchor {} for the injector: {e}", path.display())]))
}

/// Binds the injector's webhook, prints `listening webhook <addr>` and
/// spawns it; it injects with this control plane's own names and writes
/// its trust anchor into every proxy it adds.
async fn start_webhook(
    args: &Args,
    addr: SocketAddr,
    tls: rustls::ServerConfig,
    options: &ServeOptions,
    index: &Index,
    trust_anchor_pem: String,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let config = mesh_kube::inject::Config {
        proxy_image: args.proxy_image.clone(),
        init_image: args.init_image.clone(),
        trust_domain: args.trust_domain.clone(),
        cluster_domain: args.cluster_domain.clone(),
        control_namespace: args.namespace.clone(),
        control_identity: options.identity.to_string(),
        trust_anchor_pem,
        ..mesh_kube::inject::Config::default()
    };
    let hook = webhook::Webhook::bind(addr, tls, config, index.clone()).await?;
    let bound = hook.local_addr().map_err(|source| Error::Bind { addr, source })?;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "listening webhook {bound}").and_then(|()| stdout.flush());
    drop(stdout);
    tracing::info!(addr = %bound, path = mesh_kube::names::WEBHOOK_PATH, "serving the injector's admission webhook over HTTPS");
    Ok(tokio::spawn(hook.serve()))
}

/// Loads the backend's initial state into `index` (so the first answers are
/// complete) and spawns the task that follows changes.
async fn start_backend(
    args: &Args,
    index: &Index,
    readiness: &admin::Readiness,
    client: &mut Option<kube::Client>,
) -> Result<Option<tokio::task::JoinHandle<()>>, Error> {
    match (args.backend, &args.manifests) {
        (Backend::Manifests, None) => {
            tracing::info!("no --manifests: discovery answers \"unknown\" for every authority");
            Ok(None)
        }
        (Backend::Manifests, Some(dir)) => {
            let mut manifests = Manifests::new(dir, index.clone());
            let report = manifests
                .scan()
                .map_err(|e| Error::Config(vec![format!("--manifests {}: {e}", dir.display())]))?;
            tracing::info!(
                dir = %dir.display(),
                files = report.files,
                objects = report.changes,
                problems = report.errors.len(),
                "manifests loaded"
            );
            let follow = Follow { notify: args.manifests_notify, poll: args.manifests_poll };
            Ok(Some(tokio::spawn(manifests.run(follow, std::future::pending()))))
        }
        (Backend::Kubernetes, _) => {
            let client = kube_client(client).await?;
            tracing::info!("following the Kubernetes API");
            let follow = discovery::kubernetes::run(client, index.clone(), readiness, std::future::pending());
            Ok(Some(tokio::spawn(follow)))
        }
    }
}

/// The shared Kubernetes client, created (in-cluster config or KUBECONFIG)
/// on first use.
async fn kube_client(client: &mut Option<kube::Client>) -> Result<kube::Client, Error> {
    if let Some(client) = client {
        return Ok(client.clone());
    }
    let created = kube::Client::try_default().await?;
    *client = Some(created.clone());
    Ok(created)
}

/// How the gRPC server presents itself and what it bounds.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// mesh-control's own SPIFFE ID (its TLS certificate's URI SAN).
    pub identity: SpiffeId,
    pub listener: ListenerLimits,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    pub certify: CertifyLimits,
    /// Where calls, streams, certificates and propagation are counted.
    pub metrics: ControlMetrics,
}

impl ServeOptions {
    /// The defaults of the command line for `trust_domain`.
    pub fn new(trust_domain: &str) -> Result<Self, mesh_identity::SpiffeIdError> {
        Ok(Self {
            identity: control_identity(trust_domain)?,
            listener: ListenerLimits::default(),
            max_concurrent_streams: 1_000,
            certify: CertifyLimits::default(),
            metrics: ControlMetrics::default(),
        })
    }
}

/// Serves identity (`authority`) and discovery (`index`) over TLS on
/// `listener` until `shutdown` completes, then drains.
pub async fn serve<V: TokenVerifier>(
    listener: TcpListener,
    authority: Authority<V>,
    index: Index,
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let own = OwnCertificate::start(Arc::clone(authority.ca()), options.identity.clone(), authority.lifetime())?;
    let tls = own.server_config()?;
    let addr = listener.local_addr().map_err(|source| Error::Bind { addr: SocketAddr::from(([0, 0, 0, 0], 0)), source })?;
    // Tools start us on port 0 and read this line for the real address.
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "listening grpc {addr}").and_then(|()| stdout.flush());
    drop(stdout);
    tracing::info!(
        %addr,
        identity = %options.identity,
        "serving weft.identity.v1.Identity, weft.destination.v1.Destination, weft.policy.v1.Policy over TLS"
    );
    // Watch streams never finish on their own; end them when shutdown starts
    // so the drain completes (proxies reconnect and resume from a full set).
    let (close, closing) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        let _ = close.send(true);
    };
    let limiter = Arc::new(CertifyLimiter::new(options.certify));
    let streams = OpenStreams::new(options.metrics.clone());
    let reporter = tokio::spawn(crate::grpc::streams::report(index.clone(), streams.clone(), WATCH_REPORT_EVERY));
    let served = Server::builder()
        .max_concurrent_streams(options.max_concurrent_streams)
        // A client that keeps making us reset streams (malformed requests,
        // rapid reset) loses its connection instead of costing us forever.
        .http2_max_local_error_reset_streams(Some(LOCAL_ERROR_RESETS))
        .http2_max_pending_accept_reset_streams(Some(PENDING_ACCEPT_RESETS))
        .http2_max_header_list_size(MAX_HEADER_LIST)
        // Calls in progress per connection (watch streams count until their
        // first answer); more wait, they are not dropped.
        .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION)
        // A proxy that vanished without a FIN is noticed and its watches freed.
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .layer(GrpcMetricsLayer::new(options.metrics.clone()))
        .add_service(IdentityService::new(Arc::new(authority), limiter, options.metrics.clone()))
        .add_service(DestinationService::new(index.clone(), closing.clone(), streams.clone()))
        .add_service(PolicyService::new(index, closing, streams))
        .serve_with_incoming_shutdown(control_incoming(listener, tls, options.listener), shutdown)
        .await;
    reporter.abort();
    served?;
    drop(own);
    tracing::info!("shut down");
    Ok(())
}

/// Every configuration check, reported together.
fn load(args: &Args) -> Result<(Ca, Verifier, ServeOptions), Error> {
    let mut problems = Vec::new();
    let identity = match &args.identity {
        Some(id) => match SpiffeId::parse(id) {
            Ok(id) if id.trust_domain() == args.trust_domain => Some(id),
            Ok(id) => {
                problems.push(format!(
                    "--identity {id}: must be in --trust-domain {} (the proxies trust only that domain's anchors)",
                    args.trust_domain
                ));
                None
            }
            Err(e) => {
                problems.push(format!("--identity: {e}"));
                None
            }
        },
        None => control_identity(&args.trust_domain).ok(),
    };
    for (flag, rate) in [("--certify-rate", args.certify_rate), ("--certify-peer-rate", args.certify_peer_rate)] {
        if !(rate.is_finite() && rate > 0.0) {
            problems.push(format!("{flag} {rate}: must be a positive number of requests per second"));
        }
    }
    for (flag, n) in [
        ("--certify-burst", args.certify_burst as usize),
        ("--certify-peer-burst", args.certify_peer_burst as usize),
        ("--max-connections", args.max_connections),
        ("--max-concurrent-streams", args.max_concurrent_streams as usize),
    ] {
        if n == 0 {
            problems.push(format!("{flag} 0: must be at least 1"));
        }
    }
    if SpiffeId::parse(&format!("spiffe://{}/x", args.trust_domain)).is_err() {
        problems.push(format!(
            "--trust-domain {:?}: must be 1-255 characters of a-z, 0-9, '.', '-', '_'",
            args.trust_domain
        ));
    }
    if args.cert_lifetime < Duration::from_secs(1) {
        problems.push(format!(
            "--cert-lifetime {}: must be at least 1s",
            humantime::format_duration(args.cert_lifetime)
        ));
    }
    let byo = match (&args.trust_anchor, &args.issuer_cert, &args.issuer_key) {
        (Some(a), Some(c), Some(k)) => Some((a, c, k)),
        (None, None, None) => None,
        _ => {
            problems.push("--trust-anchor, --issuer-cert and --issuer-key go together".to_owned());
            None
        }
    };
    if args.cluster_domain.is_empty()
        || !args.cluster_domain.trim_end_matches('.').split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    {
        problems.push(format!("--cluster-domain {:?}: must be a DNS name like cluster.local", args.cluster_domain));
    }
    if args.manifests_poll < Duration::from_millis(10) {
        problems.push(format!(
            "--manifests-poll {}: must be at least 10ms",
            humantime::format_duration(args.manifests_poll)
        ));
    }
    match (&args.backend, &args.manifests) {
        (Backend::Kubernetes, Some(dir)) => problems.push(format!(
            "--manifests {}: only with --backend manifests (the Kubernetes backend reads the API)",
            dir.display()
        )),
        (Backend::Manifests, Some(dir)) if !dir.is_dir() => {
            problems.push(format!("--manifests {}: not a directory", dir.display()))
        }
        _ => {}
    }
    if byo.is_none() && args.data_dir.is_none() {
        problems.push("--data-dir is required unless --trust-anchor, --issuer-cert and --issuer-key are given".to_owned());
    }
    let verifier = match (args.identity_verifier, &args.bootstrap_tokens, &args.token_audience) {
        (IdentityVerifier::Bootstrap, tokens, audience) => {
            if let Some(audience) = audience {
                problems.push(format!(
                    "--token-audience {audience:?}: only with --identity-verifier kubernetes (bootstrap tokens have no audience)"
                ));
            }
            match tokens.as_deref().map(|path| (path, BootstrapTokens::load(path))) {
                Some((_, Ok(tokens))) => Verifier::Bootstrap(tokens),
                Some((path, Err(e))) => {
                    problems.push(format!(
                        "--bootstrap-tokens {}:\n    {}",
                        path.display(),
                        e.to_string().replace('\n', "\n    ")
                    ));
                    Verifier::None
                }
                None => Verifier::None,
            }
        }
        (IdentityVerifier::Kubernetes, tokens, audience) => {
            if let Some(path) = tokens {
                problems.push(format!(
                    "--bootstrap-tokens {}: only with --identity-verifier bootstrap (kubernetes checks ServiceAccount tokens with TokenReview)",
                    path.display()
                ));
            }
            let audience = audience.clone().unwrap_or_else(|| DEFAULT_AUDIENCE.to_owned());
            if audience.is_empty() || audience.chars().any(|c| c.is_whitespace() || c.is_control()) {
                problems.push(format!("--token-audience {audience:?}: must be a non-empty audience without whitespace, e.g. weft"));
            }
            Verifier::Kubernetes { audience }
        }
    };
    let ca = match (byo, &args.data_dir) {
        _ if !problems.is_empty() => None,
        (Some((anchor, cert, key)), _) => Ca::load(anchor, cert, key)
            .map_err(|e| problems.push(format!("--trust-anchor/--issuer-cert/--issuer-key: {e}")))
            .ok(),
        (None, Some(dir)) => Ca::load_or_generate(dir, &args.trust_domain)
            .map_err(|e| problems.push(format!("--data-dir {}: {e}", dir.display())))
            .ok(),
        (None, None) => None,
    };
    match (ca, identity) {
        (Some(ca), Some(identity)) if problems.is_empty() => {
            let options = ServeOptions {
                identity,
                listener: ListenerLimits { max_connections: args.max_connections, ..ListenerLimits::default() },
                max_concurrent_streams: args.max_concurrent_streams,
                certify: CertifyLimits {
                    global: Rate { per_second: args.certify_rate, burst: args.certify_burst },
                    per_peer: Rate { per_second: args.certify_peer_rate, burst: args.certify_peer_burst },
                    ..CertifyLimits::default()
                },
                metrics: ControlMetrics::default(),
            };
            Ok((ca, verifier, options))
        }
        _ => Err(Error::Config(problems)),
    }
}

/// Completes on the first SIGTERM or SIGINT.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// The Deployment `weft install` renders starts mesh-control with flags
    /// this mesh-control accepts, meaning what the install means.
    #[test]
    fn weft_install_runs_mesh_control_with_flags_it_accepts() {
        #[derive(clap::Parser)]
        struct Install {
            #[command(flatten)]
            args: mesh_kube::install::InstallArgs,
        }
        let options = Install::parse_from(["weft-install", "--cert-lifetime", "90m"])
            .args
            .options(time::OffsetDateTime::now_utc())
            .unwrap();
        let objects = mesh_kube::install::objects(&options).unwrap();
        let deployment = objects.iter().find(|o| o["kind"] == "Deployment").expect("a Deployment");
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<String> = serde_json::from_value(container["args"].clone()).unwrap();
        let parsed = Args::try_parse_from(std::iter::once("mesh-control".to_owned()).chain(args.iter().cloned()))
            .unwrap_or_else(|e| panic!("mesh-control refuses the rendered {args:?}:\n{e}"));
        assert_eq!(parsed.backend, Backend::Kubernetes);
        assert_eq!(parsed.identity_verifier, IdentityVerifier::Kubernetes);
        assert_eq!(parsed.token_audience.as_deref(), Some(mesh_kube::names::TOKEN_AUDIENCE));
        assert_eq!(parsed.cert_lifetime, Duration::from_secs(90 * 60));
        assert_eq!(parsed.listen.port(), mesh_kube::names::CONTROL_GRPC_PORT);
        assert_eq!(parsed.admin_listen.map(|a| a.port()), Some(mesh_kube::names::CONTROL_ADMIN_PORT));
        assert_eq!(parsed.webhook_listen.map(|a| a.port()), Some(mesh_kube::names::WEBHOOK_PORT));
        assert_eq!(parsed.namespace, options.namespace);
        assert_eq!((&parsed.proxy_image, &parsed.init_image), (&options.proxy_image, &options.init_image));
        // The mounted files are where the flags point.
        let mounts: Vec<String> = container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap().to_owned())
            .collect();
        let files = [parsed.trust_anchor, parsed.issuer_cert, parsed.issuer_key, parsed.webhook_cert, parsed.webhook_key];
        for file in files.map(Option::unwrap) {
            assert!(mounts.iter().any(|m| file.starts_with(m)), "{} is in no mount of {mounts:?}", file.display());
        }
    }
}
