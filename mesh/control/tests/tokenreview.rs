//! Kubernetes proof of identity without a cluster: a fake API server on
//! 127.0.0.1:0 answers TokenReview POSTs as the real one does (audience
//! intersection, `system:serviceaccount:<ns>:<sa>` usernames, RBAC refusals),
//! and a kube `Client` pointed at it drives `TokenReviewVerifier`, first
//! through the `Authority`, then through the real `mesh-control` binary with
//! a KUBECONFIG and a tonic client.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewStatus, UserInfo};
use mesh_api::identity::v1::identity_client::IdentityClient;
use mesh_api::identity::v1::CertifyRequest;
use mesh_control::authority::{Authority, Refusal, RefusalKind};
use mesh_control::ca::Ca;
use mesh_control::token::TokenError;
use mesh_control::tokenreview::{TokenReviewConfig, TokenReviewVerifier};
use mesh_identity::{SpiffeId, WorkloadKey};
use support::{patience, ControlPlane, Fixture, TD};
use tokio::net::TcpListener;
use x509_parser::prelude::{FromDer, X509Certificate};

const REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

/// What the fake API server does with a token.
#[derive(Clone)]
enum Token {
    /// A ServiceAccount (or user) token valid for these audiences.
    Valid { username: &'static str, audiences: &'static [&'static str] },
    /// Answer the POST itself with this HTTP status (RBAC, overload).
    Http(StatusCode),
}

/// One TokenReview POST as received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
    token: Option<String>,
    audiences: Vec<String>,
}

/// A fake Kubernetes API server that only knows TokenReviews. Dropping it
/// (or `stop`) closes the listener and every open connection.
struct FakeApi {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Off: every list is 404 (as for a missing CRD); on: empty lists and
    /// watches that stay open, as a cluster with nothing in it.
    lists: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeApi {
    async fn start(tokens: &[(&'static str, Token)]) -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), tokens, false)
    }

    /// Accepts connections but never answers: a hung API server.
    async fn stalled() -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), &[], true)
    }

    fn start_on(listener: TcpListener, tokens: &[(&'static str, Token)], stall: bool) -> Self {
        let addr = listener.local_addr().unwrap();
        let tokens: Arc<HashMap<&'static str, Token>> = Arc::new(tokens.iter().cloned().collect());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let lists = Arc::new(AtomicBool::new(false));
        let listing = lists.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set, so aborting the task closes them too.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (tokens, seen, lists) = (tokens.clone(), recorded.clone(), listing.clone());
                connections.spawn(async move {
                    if stall {
                        // Hold the connection open, read nothing, answer nothing.
                        let _held = stream;
                        return std::future::pending::<()>().await;
                    }
                    let service = hyper::service::service_fn(move |req| {
                        let lists = lists.load(Ordering::SeqCst);
                        answer(req, tokens.clone(), seen.clone(), lists)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen, lists, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url().parse().unwrap());
        kube::Client::try_from(config).unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn json(code: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn api_status(code: StatusCode, reason: &str, message: &str) -> Response<Full<Bytes>> {
    json(
        code,
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "code": code.as_u16(), "reason": reason, "message": message}),
    )
}

/// Answers like kube-apiserver: the token authenticates only if it is valid
/// for one of the requested audiences, and `status.audiences` is the
/// intersection.
async fn answer(
    req: Request<hyper::body::Incoming>,
    tokens: Arc<HashMap<&'static str, Token>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    lists: bool,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    if lists && req.method() == hyper::Method::GET {
        if req.uri().query().unwrap_or_default().contains("watch=true") {
            // Nothing ever changes: hold the watch open.
            return std::future::pending().await;
        }
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []});
        return Ok(json(StatusCode::OK, list));
    }
    if req.method() != hyper::Method::POST || path != REVIEWS {
        return Ok(api_status(StatusCode::NOT_FOUND, "NotFound", &format!("{} {path}: not found", req.method())));
    }
    let authorization = req.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let Ok(mut review) = serde_json::from_slice::<TokenReview>(&body) else {
        return Ok(api_status(StatusCode::BAD_REQUEST, "BadRequest", "not a TokenReview"));
    };
    let requested = review.spec.audiences.clone().unwrap_or_default();
    seen.lock().unwrap().push(Seen {
        path,
        authorization,
        token: review.spec.token.clone(),
        audiences: requested.clone(),
    });
    let token = review.spec.token.clone().unwrap_or_default();
    review.status = Some(match tokens.get(token.as_str()) {
        Some(Token::Http(code)) => {
            return Ok(api_status(
                *code,
                "Forbidden",
                "tokenreviews.authentication.k8s.io is forbidden: User \"system:serviceaccount:weft:control\" cannot create resource \"tokenreviews\"",
            ))
        }
        None => TokenReviewStatus {
            authenticated: Some(false),
            error: Some("[invalid bearer token, square/go-jose: error in cryptographic primitive]".to_owned()),
            ..TokenReviewStatus::default()
        },
        Some(Token::Valid { username, audiences }) => {
            let both: Vec<String> = requested.iter().filter(|a| audiences.contains(&a.as_str())).cloned().collect();
            if both.is_empty() {
                TokenReviewStatus {
                    authenticated: Some(false),
                    error: Some(format!(
                        "[invalid bearer token, token audiences {audiences:?} is invalid for the target audiences {requested:?}]"
                    )),
                    ..TokenReviewStatus::default()
                }
            } else {
                TokenReviewStatus {
                    authenticated: Some(true),
                    audiences: Some(both),
                    user: Some(UserInfo { username: Some((*username).to_owned()), ..UserInfo::default() }),
                    ..TokenReviewStatus::default()
                }
            }
        }
    });
    Ok(json(StatusCode::CREATED, serde_json::to_value(&review).unwrap()))
}

const TOKENS: &[(&str, Token)] = &[
    ("h.tok-web.s", Token::Valid { username: "system:serviceaccount:shop:web", audiences: &["weft"] }),
    ("h.tok-api.s", Token::Valid { username: "system:serviceaccount:shop:api", audiences: &["weft"] }),
    // The pod's ordinary API token: genuine, but for the API server only.
    (
        "h.tok-web-api-audience.s",
        Token::Valid { username: "system:serviceaccount:shop:web", audiences: &["https://kubernetes.default.svc"] },
    ),
    ("h.tok-mesh-audience.s", Token::Valid { username: "system:serviceaccount:shop:web", audiences: &["mesh"] }),
    ("h.tok-alice.s", Token::Valid { username: "alice", audiences: &["weft"] }),
    ("h.tok-forbidden.s", Token::Http(StatusCode::FORBIDDEN)),
];

fn shop(sa: &str) -> SpiffeId {
    SpiffeId::workload(TD, "shop", sa).unwrap()
}

fn authority(fx: &Fixture, client: kube::Client, config: TokenReviewConfig) -> Authority<TokenReviewVerifier> {
    let ca = Ca::load_or_generate(&fx.data_dir(), TD).unwrap();
    Authority::new(ca, TokenReviewVerifier::new(client, config), TD.to_owned(), Duration::from_secs(3600))
}

fn config() -> TokenReviewConfig {
    TokenReviewConfig { trust_domain: TD.to_owned(), timeout: Duration::from_secs(2), ..TokenReviewConfig::default() }
}

async fn certify(authority: &Authority<TokenReviewVerifier>, id: &SpiffeId, token: &str) -> Result<(), Refusal> {
    let key = WorkloadKey::generate().unwrap();
    let issued = authority.certify(id.as_str(), token.as_bytes(), &key.csr_der(id).unwrap()).await?;
    let leaf = X509Certificate::from_der(&issued.leaf_der).unwrap().1;
    assert_eq!(SpiffeId::from_cert_der(&issued.leaf_der).unwrap(), *id);
    assert_eq!(leaf.public_key().raw, key.public_key_der().as_slice());
    Ok(())
}

#[tokio::test]
async fn the_right_service_account_is_certified_and_the_review_carries_token_and_audience() {
    let api = FakeApi::start(TOKENS).await;
    let fx = Fixture::new();
    let authority = authority(&fx, api.client(), config());
    certify(&authority, &shop("web"), "h.tok-web.s").await.unwrap();
    let seen = api.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].path, REVIEWS);
    assert_eq!(seen[0].token.as_deref(), Some("h.tok-web.s"));
    assert_eq!(seen[0].audiences, ["weft"]);

    // Another configured audience is what is asked for, and what must match.
    let mesh = authority_with_audience(&fx, &api, "mesh");
    certify(&mesh, &shop("web"), "h.tok-mesh-audience.s").await.unwrap();
    assert_eq!(api.seen().last().unwrap().audiences, ["mesh"]);
    let refused = certify(&mesh, &shop("web"), "h.tok-web.s").await.unwrap_err();
    assert!(matches!(refused, Refusal::Token(TokenError::AudienceMismatch { .. })), "{refused}");
}

fn authority_with_audience(fx: &Fixture, api: &FakeApi, audience: &str) -> Authority<TokenReviewVerifier> {
    authority(fx, api.client(), TokenReviewConfig { audience: audience.to_owned(), ..config() })
}

#[tokio::test]
async fn wrong_tokens_are_refused_with_permission_denied() {
    let api = FakeApi::start(TOKENS).await;
    let fx = Fixture::new();
    let authority = authority(&fx, api.client(), config());
    let web = shop("web");
    // (what, identity, token, the refusal expected)
    type Case = (&'static str, SpiffeId, &'static str, fn(&TokenError) -> bool);
    let cases: Vec<Case> = vec![
        (
            "another ServiceAccount's token",
            web.clone(),
            "h.tok-api.s",
            |e| matches!(e, TokenError::IdentityMismatch { proven } if proven == "spiffe://cluster.local/ns/shop/sa/api"),
        ),
        ("same SA name, other namespace", SpiffeId::workload(TD, "front", "web").unwrap(), "h.tok-web.s", |e| {
            matches!(e, TokenError::IdentityMismatch { .. })
        }),
        (
            "a user's token",
            web.clone(),
            "h.tok-alice.s",
            |e| matches!(e, TokenError::IdentityMismatch { proven } if proven.contains("\"alice\"")),
        ),
        (
            "unauthenticated",
            web.clone(),
            "h.tok-forged.s",
            |e| matches!(e, TokenError::NotAuthenticated(why) if why.contains("invalid bearer token")),
        ),
        (
            "the pod's API-server token",
            web.clone(),
            "h.tok-web-api-audience.s",
            |e| matches!(e, TokenError::AudienceMismatch { audience, detail } if audience == "weft" && detail.contains("kubernetes.default.svc")),
        ),
        ("not a JWT", web.clone(), "two words", |e| matches!(e, TokenError::NotAuthenticated(_))),
    ];
    for (what, id, token, expected) in &cases {
        let refusal = certify(&authority, id, token).await.expect_err(what);
        assert_eq!(refusal.kind(), RefusalKind::PermissionDenied, "{what}: {refusal}");
        let Refusal::Token(e) = &refusal else { panic!("{what}: {refusal}") };
        assert!(expected(e), "{what}: {e:?}");
    }
    // Everything but the malformed token went to the API server.
    assert_eq!(api.seen().len(), cases.len() - 1);
}

#[tokio::test]
async fn an_unreachable_hung_or_forbidding_api_is_unavailable() {
    let fx = Fixture::new();
    let web = shop("web");

    // Nothing listens on the port any more.
    let api = FakeApi::start(TOKENS).await;
    let client = api.client();
    drop(api);
    let refusal = certify(&authority(&fx, client, config()), &web, "h.tok-web.s").await.unwrap_err();
    assert_eq!(refusal.kind(), RefusalKind::Unavailable, "{refusal}");
    assert!(refusal.to_string().contains("cannot reach the Kubernetes API"), "{refusal}");

    // Accepts, never answers: the verifier's own timeout decides.
    let hung = FakeApi::stalled().await;
    let quick = TokenReviewConfig { timeout: Duration::from_millis(300), ..config() };
    let refusal = certify(&authority(&fx, hung.client(), quick), &web, "h.tok-web.s").await.unwrap_err();
    assert_eq!(refusal.kind(), RefusalKind::Unavailable, "{refusal}");
    assert!(refusal.to_string().contains("did not answer the TokenReview within 300ms"), "{refusal}");

    // mesh-control's own ServiceAccount lacks RBAC: say how to fix it.
    let api = FakeApi::start(TOKENS).await;
    let refusal = certify(&authority(&fx, api.client(), config()), &web, "h.tok-forbidden.s").await.unwrap_err();
    assert_eq!(refusal.kind(), RefusalKind::Unavailable, "{refusal}");
    assert!(refusal.to_string().contains("system:auth-delegator"), "{refusal}");
}

fn kubeconfig(fx: &Fixture, api: &FakeApi) -> std::path::PathBuf {
    let path = fx.dir.path().join("kubeconfig");
    let text = format!(
        "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster: {{server: \"{}\"}}
users:
- name: control
  user: {{token: control-plane-credential}}
contexts:
- name: fake
  context: {{cluster: fake, user: control}}
current-context: fake
",
        api.url()
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn grpc_certify(cp: &ControlPlane, id: &SpiffeId, token: &str) -> Result<(), tonic::Status> {
    let channel = cp.channel();
    let key = WorkloadKey::generate().unwrap();
    let request = CertifyRequest {
        identity: id.to_string(),
        token: token.as_bytes().to_vec(),
        csr_der: key.csr_der(id).unwrap(),
    };
    let resp = IdentityClient::new(channel).certify(request).await?.into_inner();
    assert_eq!(SpiffeId::from_cert_der(&resp.leaf_der).unwrap(), *id);
    Ok(())
}

/// The real mesh-control with `--data-dir` and `args`, its KUBECONFIG pointing at `api`.
async fn start_against(fx: &Fixture, api: &FakeApi, args: &[&str]) -> ControlPlane {
    let kubeconfig = kubeconfig(fx, api);
    let data = fx.data_dir();
    let mut all = vec!["--data-dir", data.to_str().unwrap()];
    all.extend_from_slice(args);
    ControlPlane::start_with_env(&fx.logs(), "127.0.0.1:0", &all, &[("KUBECONFIG", &kubeconfig)]).await
}

#[tokio::test]
async fn the_binary_certifies_service_accounts_through_kubeconfig() {
    let api = FakeApi::start(TOKENS).await;
    let fx = Fixture::new();
    let cp = start_against(&fx, &api, &["--trust-domain", TD, "--identity-verifier", "kubernetes", "--admin-listen", "127.0.0.1:0"]).await;
    let web = shop("web");
    grpc_certify(&cp, &web, "h.tok-web.s").await.unwrap();
    let seen = api.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].token.as_deref(), Some("h.tok-web.s"));
    assert_eq!(seen[0].audiences, ["weft"], "default audience");
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer control-plane-credential"), "kubeconfig credential used");
    // A retry with the same token is answered from the cache of recent reviews.
    grpc_certify(&cp, &web, "h.tok-web.s").await.unwrap();
    assert_eq!(api.seen().len(), 1, "a recently reviewed token is not reviewed again");
    // What cannot be a ServiceAccount token costs no TokenReview.
    for junk in ["not-a-jwt", "a.b", "x y.z.w", &format!("h.{}.s", "p".repeat(9000))] {
        let status = grpc_certify(&cp, &web, junk).await.expect_err(junk);
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    }
    assert_eq!(api.seen().len(), 1, "malformed tokens reached the API server");

    let cases = [
        ("h.tok-api.s", tonic::Code::PermissionDenied, "proves spiffe://cluster.local/ns/shop/sa/api"),
        ("h.tok-forged.s", tonic::Code::PermissionDenied, "did not authenticate"),
        ("h.tok-web-api-audience.s", tonic::Code::PermissionDenied, "not for audience \"weft\""),
        ("h.tok-forbidden.s", tonic::Code::Unavailable, "system:auth-delegator"),
    ];
    for (token, code, reason) in cases {
        let status = grpc_certify(&cp, &web, token).await.expect_err(token);
        assert_eq!(status.code(), code, "{token}: {status:?}");
        if code == tonic::Code::PermissionDenied {
            // The reason is in mesh-control's log (checked below), never in
            // the answer: one text for every unproven caller.
            assert_eq!(status.message(), "the token does not prove this identity", "{token}: {status:?}");
        } else {
            assert!(status.message().contains(reason) && status.message().contains(web.as_str()), "{token}: {status:?}");
        }
    }
    // Every review the API server saw is timed, by result: the right token
    // once (its retry came from the cache), three refusals, one error.
    let (_, metrics) = cp.admin_get("/metrics").await;
    for (result, want) in [("proven", 1), ("refused", 3), ("error", 1)] {
        let series = format!("weft_control_tokenreview_duration_seconds_count{{result=\"{result}\"}} {want}");
        assert!(metrics.lines().any(|l| l == series), "no {series} in\n{metrics}");
    }
    assert_eq!(api.seen().len(), 5, "five reviews reached the API server");
    assert!(metrics.lines().any(|l| l == "weft_control_certificates_issued_total 2"), "{metrics}");

    // The API server goes away: proxies are told to retry.
    api.stop();
    let status = support::eventually("Certify answers UNAVAILABLE with the API down", || async {
        // Not the cached token: this one must be reviewed.
        match grpc_certify(&cp, &web, "h.tok-not-cached.s").await {
            Err(s) if s.code() == tonic::Code::Unavailable => Some(s),
            _ => None,
        }
    })
    .await;
    assert!(status.message().contains("cannot reach the Kubernetes API"), "{status:?}");

    let log = cp.stderr();
    assert!(log.contains("verifying ServiceAccount tokens with Kubernetes TokenReview"), "{log}");
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("refused certification")).collect();
    for (_, _, reason) in cases {
        assert!(
            refusals.iter().any(|l| l.contains(web.as_str()) && l.contains(reason)),
            "no log line with {reason:?}:\n{log}"
        );
    }
    // The right token, twice (the second from the review cache).
    assert_eq!(log.matches("issued certificate").count(), 2, "only the right token was certified:\n{log}");
    assert!(tokio::time::timeout(patience(), cp.stop()).await.unwrap().success());
}

#[tokio::test]
async fn the_admin_listener_is_ready_once_every_kind_is_listed() {
    let api = FakeApi::start(&[]).await;
    let fx = Fixture::new();
    let cp = start_against(&fx, &api, &["--backend", "kubernetes", "--admin-listen", "127.0.0.1:0"]).await;
    // Every list is 404 so far (as when the CRDs are missing): live, not ready.
    assert_eq!(cp.admin_get("/live").await.0, 200);
    let (status, body) = cp.admin_get("/ready").await;
    assert_eq!(status, 503, "{body}");
    for kind in ["Namespace", "Service", "EndpointSlice", "Pod", "HTTPRoute", "GRPCRoute", "AuthorizationPolicy"] {
        assert!(body.contains(&format!("first list of {kind}")), "{kind} not named in {body:?}");
    }
    assert!(!body.contains("gRPC"), "the gRPC listener is bound: {body:?}");
    // /metrics answers before readiness too (a scraper sees why it waits).
    assert_eq!(cp.admin_get("/metrics").await.0, 200);
    assert_eq!(cp.admin_get("/nope").await.0, 404);

    api.lists.store(true, Ordering::SeqCst);
    let body = support::eventually("ready once the watchers' retries list every kind", || async {
        match cp.admin_get("/ready").await {
            (200, body) => Some(body),
            _ => None,
        }
    })
    .await;
    assert_eq!(body, "ready\n");
    assert_eq!(cp.admin_get("/live").await.0, 200);
    assert!(tokio::time::timeout(patience(), cp.stop()).await.unwrap().success());
}

#[tokio::test]
async fn verifier_flags_are_validated_together() {
    let fx = Fixture::new();
    let bin = env!("CARGO_BIN_EXE_mesh-control");
    let data = fx.data_dir();
    std::fs::write(fx.tokens_path(), "").unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--data-dir", data.to_str().unwrap()])
            .args(args)
            .env("KUBECONFIG", "/nonexistent/kubeconfig")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, err) = run(&[
        "--identity-verifier",
        "kubernetes",
        "--bootstrap-tokens",
        fx.tokens_path().to_str().unwrap(),
        "--token-audience",
        "a b",
    ]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--bootstrap-tokens") && err.contains("only with --identity-verifier bootstrap"), "{err}");
    assert!(err.contains("--token-audience \"a b\""), "both problems reported: {err}");
    let (code, err) = run(&["--token-audience", "weft"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--token-audience \"weft\": only with --identity-verifier kubernetes"), "{err}");
    let (code, err) = run(&["--identity-verifier", "spiffe"]);
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("spiffe"), "{err}");
}
