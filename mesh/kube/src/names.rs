//! The names Weft's Kubernetes objects and annotations use. `weft install`
//! creates them, the injector reads them, `weft check` looks for them and
//! the kind substrate waits on them: one list, so they cannot drift apart.

/// The control plane's namespace (`weft install --namespace` overrides it).
pub const NAMESPACE: &str = "weft";
/// mesh-control's Deployment, Service, ServiceAccount, ClusterRole and ClusterRoleBinding.
pub const CONTROL: &str = "weft-control";
/// The ClusterRoleBinding to `system:auth-delegator` (TokenReview).
pub const AUTH_DELEGATOR_BINDING: &str = "weft-control-auth-delegator";
/// The MutatingWebhookConfiguration (and its one webhook, `<this>.weft.io`).
pub const INJECTOR: &str = "weft-injector";
/// Secret with the identity issuer's certificate and key (tls.crt, tls.key).
pub const ISSUER_SECRET: &str = "weft-identity-issuer";
/// ConfigMap with the trust anchor (ca.crt) in the control plane's namespace:
/// public; where mesh-control loads it from and `weft check` reads it.
pub const TRUST_ANCHOR_CONFIGMAP: &str = "weft-trust-anchor";
/// Secret with the webhook's serving certificate and key (tls.crt, tls.key).
pub const WEBHOOK_SECRET: &str = "weft-webhook-tls";

/// mesh-control's gRPC port (Identity, Destination, Policy) on its Service.
pub const CONTROL_GRPC_PORT: u16 = 8086;
/// mesh-control's admin port (GET /live, /ready) in the Deployment (`--admin-listen 0.0.0.0:<this>`).
pub const CONTROL_ADMIN_PORT: u16 = 9990;
/// The webhook's container port; the Service exposes it as 443.
pub const WEBHOOK_PORT: u16 = 8443;
/// The path the API server posts AdmissionReviews to.
pub const WEBHOOK_PATH: &str = "/inject";

/// Images: `<IMAGE_REGISTRY>/<name>:<tag>`, the one naming scheme of
/// `weft install --registry --tag`, images/build (`--registry`, `--tag`) and
/// the kind/kube substrate, so the same registry and tag name the same images.
pub const CONTROL_IMAGE: &str = "mesh-control";
pub const PROXY_IMAGE: &str = "mesh-proxy";
/// The init container's image: the `weft` binary (`weft init`).
pub const INIT_IMAGE: &str = "weft";
/// The load generator's image (`loadgen run`, `loadgen serve`): the benchmarks' only.
pub const LOADGEN_IMAGE: &str = "loadgen";

/// The injected containers.
pub const PROXY_CONTAINER: &str = "weft-proxy";
pub const INIT_CONTAINER: &str = "weft-init";
/// The uid the proxy runs as; `weft init --proxy-uid` exempts it (mesh-init's default).
pub const PROXY_UID: i64 = 2102;
/// The audience of the proxy's projected ServiceAccount token (mesh-control `--token-audience`).
pub const TOKEN_AUDIENCE: &str = "weft";

/// Label on every object `weft install` renders, and on what the kind substrate creates.
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";
pub const PART_OF: &str = "weft";

/// Annotations: `enabled` on a namespace or pod opts in, `disabled` on a pod opts out.
pub const INJECT_ANNOTATION: &str = "weft.io/inject";
/// Set by the injector on what it injected (value: the proxy image), so it never injects twice.
pub const INJECTED_ANNOTATION: &str = "weft.io/injected";
/// Per-pod overrides the injector honours.
pub const PROXY_CPU_REQUEST_ANNOTATION: &str = "weft.io/proxy-cpu-request";
pub const PROXY_MEMORY_REQUEST_ANNOTATION: &str = "weft.io/proxy-memory-request";
pub const PROXY_CPU_LIMIT_ANNOTATION: &str = "weft.io/proxy-cpu-limit";
pub const PROXY_MEMORY_LIMIT_ANNOTATION: &str = "weft.io/proxy-memory-limit";
pub const SKIP_INBOUND_PORTS_ANNOTATION: &str = "weft.io/skip-inbound-ports";
pub const SKIP_OUTBOUND_PORTS_ANNOTATION: &str = "weft.io/skip-outbound-ports";
pub const SKIP_OUTBOUND_CIDRS_ANNOTATION: &str = "weft.io/skip-outbound-cidrs";
/// Ports carrying opaque TCP (`3306,5000-5010`): on a pod, mesh-control tells
/// clients its ports are opaque and the injector adds them to the pod's own
/// proxy's `--opaque-ports`; on a Service, its ports (mesh-control).
pub const OPAQUE_PORTS_ANNOTATION: &str = "config.weft.io/opaque-ports";
/// mesh-proxy's default `--opaque-ports` (`OpaquePorts::DEFAULT`; a
/// mesh-proxy test checks they agree): the injector keeps them when a pod adds its own.
pub const PROXY_DEFAULT_OPAQUE_PORTS: &str = "25,587,3306,4444,5432,6379,9300,11211";

/// The kind/kube substrate of `bench`: the label with the run's id on its
/// namespace, so `bench clean --substrate kind` finds what a killed run left.
pub const BENCH_RUN_LABEL: &str = "weft.dev/run";
/// The node label that pins the load generator (`client`) and the target
/// server (`server`) to different nodes (kind-configs/default.yaml).
pub const NODE_ROLE_LABEL: &str = "weft.dev/role";
/// On a bench run's namespace, `<prefix><mesh>: "true"` for each mesh the
/// run installed: `bench clean` uninstalls only those.
pub const BENCH_INSTALLED_ANNOTATION_PREFIX: &str = "weft.dev/installed-";
/// On a bench run's namespace: `<host>:<pid>` of the bench that made it, so
/// `bench clean` leaves a live run's namespace alone.
pub const BENCH_OWNER_ANNOTATION: &str = "weft.dev/owner";

/// The proxy's admin port (`/metrics`, `/ready`, `/live`), mesh-proxy's default.
pub const PROXY_ADMIN_PORT: u16 = 4191;
/// The annotations Prometheus' stock `kubernetes-pods` scrape job reads:
/// scrape the pod, on this port, at this path. The injector sets them to
/// the proxy's admin port; `weft install` to mesh-control's.
pub const PROMETHEUS_SCRAPE_ANNOTATION: &str = "prometheus.io/scrape";
pub const PROMETHEUS_PORT_ANNOTATION: &str = "prometheus.io/port";
pub const PROMETHEUS_PATH_ANNOTATION: &str = "prometheus.io/path";
/// Where the proxy and mesh-control serve Prometheus metrics on their admin port.
pub const METRICS_PATH: &str = "/metrics";

/// The three Prometheus scrape annotations for a pod serving `/metrics` on `port`.
pub fn scrape_annotations(port: u16) -> [(&'static str, String); 3] {
    [
        (PROMETHEUS_SCRAPE_ANNOTATION, "true".to_owned()),
        (PROMETHEUS_PORT_ANNOTATION, port.to_string()),
        (PROMETHEUS_PATH_ANNOTATION, METRICS_PATH.to_owned()),
    ]
}
/// The trust anchor ConfigMap's key holding the PEM certificate.
pub const TRUST_ANCHOR_KEY: &str = "ca.crt";
/// The injected proxy's environment variable carrying the trust anchor PEM
/// (mesh-proxy `--trust-anchor-pem`): written into the pod spec, so a pod
/// needs nothing from the control plane's namespace.
pub const PROXY_TRUST_ANCHOR_ENV: &str = "WEFT_PROXY_TRUST_ANCHOR_PEM";

/// The proxy's listeners in a pod: `weft init` redirects to these (its defaults).
pub const PROXY_INBOUND_PORT: u16 = 4143;
pub const PROXY_OUTBOUND_PORT: u16 = 4140;
/// mesh-control's own ServiceAccount name in its SPIFFE ID
/// (`spiffe://<td>/ns/weft/sa/mesh-control`, mesh-identity's `control_identity`).
pub const CONTROL_IDENTITY_SERVICE_ACCOUNT: &str = "mesh-control";
/// Set by the injector (when absent) to the app's first container, so
/// `kubectl logs` and `exec` keep going to the app, not the proxy.
pub const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";
/// Where Weft's images come from unless overridden (`<registry>/mesh-proxy:<version>`,
/// `<registry>/weft:<version>` for the init container).
pub const IMAGE_REGISTRY: &str = "ghcr.io/weft";
/// The Gateway API CRDs Weft reads routes from: a prerequisite, not installed by Weft.
pub const GATEWAY_API_CRDS: &[&str] = &["httproutes.gateway.networking.k8s.io", "grpcroutes.gateway.networking.k8s.io"];

/// The oldest Kubernetes Weft supports is 1.`MIN_KUBERNETES_MINOR` (`weft check --pre`).
pub const MIN_KUBERNETES_MINOR: u32 = 29;
