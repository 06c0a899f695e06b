//! The objects the kind/kube substrate applies, built from k8s-openapi types
//! and rendered to YAML for `kubectl apply -f -` and for the dry run.
//!
//! ```text
//!  namespace weft-bench-<run>    (label weft.dev/run=<run>; the mesh's injection mark per variant)
//!    Deployment server[-slow]    loadgen serve :8080, nodeSelector role=server, readiness GET /healthz
//!    Service    server           :8080 -> the server pods
//!    Job        load-<cell>      loadgen run --json - against server.<ns>.svc, nodeSelector role=client
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, HTTPGetAction, Namespace, PodSpec, PodTemplateSpec, Probe,
    Service, ServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mesh_kube::names;
use serde::Serialize;

use crate::suite::{LoadShape, Protocol, Scenario};

/// The target server's port, in the pod and on its Service.
pub const SERVER_PORT: u16 = 8080;
/// The target server's Deployment (and the prefix of its pods' names) and Service.
pub const SERVER: &str = "server";
/// The Deployment of the one slower replica (`slow_replica_delay`).
pub const SERVER_SLOW: &str = "server-slow";
/// The app containers: the sampler tells them from the sidecars by name.
pub const SERVER_CONTAINER: &str = "server";
pub const LOAD_CONTAINER: &str = "loadgen";
/// Labels on the server pods (the Service selects them) and on the load pods.
const APP_LABEL: &str = "app.kubernetes.io/name";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "weft-bench");

/// A node selector given as `KEY=VALUE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    pub key: String,
    pub value: String,
}

impl Selector {
    pub fn role(value: &str) -> Selector {
        Selector {
            key: names::NODE_ROLE_LABEL.into(),
            value: value.into(),
        }
    }

    /// `KEY=VALUE`, for the `--client-selector` / `--server-selector` flags.
    pub fn parse(s: &str) -> Result<Selector, String> {
        match s.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok(Selector {
                key: k.into(),
                value: v.into(),
            }),
            _ => Err(format!(
                "{s:?} is not a node label selector KEY=VALUE (e.g. {}=client)",
                names::NODE_ROLE_LABEL
            )),
        }
    }

    fn map(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(self.key.clone(), self.value.clone())])
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// One object to apply, typed until it is rendered.
#[derive(Clone, Debug)]
pub enum Manifest {
    Namespace(Namespace),
    Deployment(Deployment),
    Service(Service),
    Job(Job),
}

impl Manifest {
    /// `Kind/name`, for progress lines and errors.
    pub fn id(&self) -> String {
        let (kind, meta) = match self {
            Manifest::Namespace(o) => ("Namespace", &o.metadata),
            Manifest::Deployment(o) => ("Deployment", &o.metadata),
            Manifest::Service(o) => ("Service", &o.metadata),
            Manifest::Job(o) => ("Job", &o.metadata),
        };
        format!("{kind}/{}", meta.name.as_deref().unwrap_or("?"))
    }

    fn yaml(&self) -> String {
        fn to<T: Serialize>(o: &T) -> String {
            serde_saphyr::to_string(o).expect("k8s-openapi objects serialize to YAML")
        }
        match self {
            Manifest::Namespace(o) => to(o),
            Manifest::Deployment(o) => to(o),
            Manifest::Service(o) => to(o),
            Manifest::Job(o) => to(o),
        }
    }
}

/// Several objects as one multi-document YAML stream.
pub fn render(objects: &[Manifest]) -> String {
    objects
        .iter()
        .map(|o| {
            let y = o.yaml();
            let y = y.strip_prefix("---\n").unwrap_or(&y).to_string();
            if y.ends_with('\n') {
                y
            } else {
                y + "\n"
            }
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn meta(name: &str, ns: Option<&str>, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: ns.map(str::to_string),
        labels: Some(labels),
        ..ObjectMeta::default()
    }
}

fn labels(run: &str, app: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (APP_LABEL.to_string(), app.to_string()),
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (names::BENCH_RUN_LABEL.to_string(), run.to_string()),
    ])
}

/// The run's namespace: everything bench deploys lives in it, and deleting
/// it (by its run label) removes all of it.
pub fn namespace(name: &str, run: &str, owner: &str) -> Manifest {
    let mut l = labels(run, "weft-bench");
    l.remove(APP_LABEL);
    let mut m = meta(name, None, l);
    m.annotations = Some(BTreeMap::from([(
        names::BENCH_OWNER_ANNOTATION.to_string(),
        owner.to_string(),
    )]));
    Manifest::Namespace(Namespace {
        metadata: m,
        ..Namespace::default()
    })
}

/// What the images are called where the cluster pulls them from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Images {
    pub loadgen: String,
}

/// Per-pod annotations (e.g. `weft.io/inject: disabled` for the unmeshed
/// side of `weft-client-only`).
pub type Annotations = BTreeMap<String, String>;

/// The target server for a scenario: `replicas` pods (the last one slower
/// when the scenario says so, as a Deployment of its own behind the same
/// Service), pinned to the server node.
pub fn server(
    ns: &str,
    run: &str,
    s: &Scenario,
    images: &Images,
    place: &Selector,
    pod_annotations: &Annotations,
) -> Vec<Manifest> {
    let mut out = Vec::new();
    let (fast, slow) = match s.slow_replica_delay {
        Some(d) => (s.replicas - 1, Some(d)),
        None => (s.replicas, None),
    };
    let mut deploy = |name: &str, replicas: usize, delay: Duration| {
        let args = vec![
            "serve".to_string(),
            "--listen".into(),
            format!("0.0.0.0:{SERVER_PORT}"),
            "--delay".into(),
            humantime::format_duration(delay).to_string(),
            "--body-size".into(),
            s.body_size.to_string(),
            "--threads".into(),
            s.server_threads.to_string(),
        ];
        let pod_labels = labels(run, SERVER);
        out.push(Manifest::Deployment(Deployment {
            metadata: meta(name, Some(ns), labels(run, name)),
            spec: Some(DeploymentSpec {
                replicas: Some(replicas as i32),
                selector: LabelSelector {
                    match_labels: Some(BTreeMap::from([
                        (APP_LABEL.to_string(), SERVER.to_string()),
                        ("weft.dev/deployment".to_string(), name.to_string()),
                    ])),
                    ..LabelSelector::default()
                },
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some({
                            let mut l = pod_labels;
                            l.insert("weft.dev/deployment".into(), name.into());
                            l
                        }),
                        annotations: (!pod_annotations.is_empty()).then(|| pod_annotations.clone()),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(PodSpec {
                        node_selector: Some(place.map()),
                        containers: vec![Container {
                            name: SERVER_CONTAINER.into(),
                            image: Some(images.loadgen.clone()),
                            args: Some(args),
                            ports: Some(vec![ContainerPort {
                                name: Some("http".into()),
                                container_port: SERVER_PORT as i32,
                                ..ContainerPort::default()
                            }]),
                            readiness_probe: Some(Probe {
                                http_get: Some(HTTPGetAction {
                                    path: Some("/healthz".into()),
                                    port: IntOrString::Int(SERVER_PORT as i32),
                                    ..HTTPGetAction::default()
                                }),
                                period_seconds: Some(1),
                                ..Probe::default()
                            }),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                },
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }));
    };
    deploy(SERVER, fast, s.server_delay);
    if let Some(d) = slow {
        deploy(SERVER_SLOW, 1, d);
    }
    out.push(Manifest::Service(Service {
        metadata: meta(SERVER, Some(ns), labels(run, SERVER)),
        spec: Some(ServiceSpec {
            selector: Some(BTreeMap::from([(APP_LABEL.to_string(), SERVER.to_string())])),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SERVER_PORT as i32,
                target_port: Some(IntOrString::Int(SERVER_PORT as i32)),
                // Meshes pick the protocol from it (Istio reads nothing else for h2c).
                app_protocol: Some(match s.protocol.http() {
                    // The other protocols are refused before any manifest
                    // (`meshes::scenario_unsupported`).
                    Protocol::Http2 => "kubernetes.io/h2c".into(),
                    _ => "http".into(),
                }),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }));
    out
}

/// The URL the load generator sends to: the Service's cluster DNS name.
pub fn target_url(ns: &str) -> String {
    format!("http://{SERVER}.{ns}.svc.cluster.local:{SERVER_PORT}/")
}

/// `loadgen run` arguments for one cell: the same load the local substrate
/// runs in-process (rate or concurrency, duration, warm-up, connections,
/// protocol, body, timeout), its record printed as one line on stdout.
pub fn load_args(s: &Scenario, rate: Option<f64>, ns: &str) -> Vec<String> {
    let mut a = vec!["run".to_string(), "--target".into(), target_url(ns)];
    match (rate, &s.load) {
        (Some(r), _) => a.extend(["--rate".into(), r.to_string()]),
        (None, LoadShape::Closed { concurrency }) => {
            a.extend(["--concurrency".into(), concurrency.to_string()])
        }
        (None, _) => unreachable!("plan gives every open-loop cell a rate"),
    }
    a.extend([
        "--duration".into(),
        humantime::format_duration(s.duration).to_string(),
        "--warmup".into(),
        humantime::format_duration(s.warmup).to_string(),
        "--connections".into(),
        s.connections.to_string(),
        "--body-size".into(),
        s.body_size.to_string(),
        "--timeout".into(),
        humantime::format_duration(s.timeout).to_string(),
        "--threads".into(),
        "2".into(),
        "--json".into(),
        "-".into(),
    ]);
    if s.protocol == Protocol::Http2 {
        a.push("--http2".into());
    }
    a
}

/// How long a cell's Job may run before the cluster kills it: its load and
/// warm-up, plus scheduling, image pull and sidecar start-up.
pub fn job_deadline(s: &Scenario) -> Duration {
    s.warmup + s.duration + Duration::from_secs(180)
}

/// The load generator for one cell, pinned to the client node; never retried
/// (a second attempt would measure something else).
pub fn job(
    name: &str,
    ns: &str,
    run: &str,
    args: Vec<String>,
    deadline: Duration,
    images: &Images,
    place: &Selector,
    pod_annotations: &Annotations,
) -> Manifest {
    let mut l = labels(run, "load");
    l.insert("weft.dev/job".into(), name.into());
    Manifest::Job(Job {
        metadata: meta(name, Some(ns), l.clone()),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline.as_secs() as i64),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(l),
                    annotations: (!pod_annotations.is_empty()).then(|| pod_annotations.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    node_selector: Some(place.map()),
                    containers: vec![Container {
                        name: LOAD_CONTAINER.into(),
                        image: Some(images.loadgen.clone()),
                        args: Some(args),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick_scenario() -> Scenario {
        crate::suite::resolve("quick").unwrap().scenarios[0].clone()
    }

    #[test]
    fn rendered_objects_parse_back_into_their_types() {
        let s = quick_scenario();
        let images = Images {
            loadgen: "ghcr.io/weft/loadgen:abc".into(),
        };
        let mut objs = vec![namespace("weft-bench-r1", "r1", "host:1")];
        objs.extend(server("weft-bench-r1", "r1", &s, &images, &Selector::role("server"), &Annotations::new()));
        let args = load_args(&s, Some(500.0), "weft-bench-r1");
        let ann = Annotations::from([(names::INJECT_ANNOTATION.to_string(), "disabled".to_string())]);
        objs.push(job("load-1", "weft-bench-r1", "r1", args, job_deadline(&s), &images, &Selector::role("client"), &ann));
        let yaml = render(&objs);
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&yaml).unwrap();
        assert_eq!(docs.len(), 4, "{yaml}");
        let ns: Namespace = serde_json::from_value(docs[0].clone()).unwrap();
        assert_eq!(ns.metadata.labels.unwrap()[names::BENCH_RUN_LABEL], "r1");
        let d: Deployment = serde_json::from_value(docs[1].clone()).unwrap();
        let pod = d.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.node_selector.unwrap()[names::NODE_ROLE_LABEL], "server");
        let svc: Service = serde_json::from_value(docs[2].clone()).unwrap();
        assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 8080);
        let j: Job = serde_json::from_value(docs[3].clone()).unwrap();
        let t = j.spec.unwrap().template;
        assert_eq!(t.metadata.unwrap().annotations.unwrap()[names::INJECT_ANNOTATION], "disabled");
        let c = &t.spec.unwrap().containers[0];
        let a = c.args.as_ref().unwrap().join(" ");
        // The quick suite's own window, whatever it is now.
        let want = format!(
            "run --target http://server.weft-bench-r1.svc.cluster.local:8080/ --rate 500 --duration {}s --warmup 1s --connections 8",
            s.duration.as_secs()
        );
        assert!(a.starts_with(&want), "{a}");
        assert!(a.ends_with("--json -"), "{a}");
    }

    #[test]
    fn a_slow_replica_is_its_own_deployment_behind_the_same_service() {
        let mut s = quick_scenario();
        s.replicas = 3;
        s.slow_replica_delay = Some(Duration::from_millis(50));
        let images = Images { loadgen: "l".into() };
        let objs = server("ns", "r", &s, &images, &Selector::role("server"), &Annotations::new());
        let ids: Vec<String> = objs.iter().map(Manifest::id).collect();
        assert_eq!(ids, ["Deployment/server", "Deployment/server-slow", "Service/server"]);
        let Manifest::Deployment(slow) = &objs[1] else { unreachable!() };
        let spec = slow.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(1));
        let args = spec.template.spec.as_ref().unwrap().containers[0].args.clone().unwrap();
        assert!(args.windows(2).any(|w| w == ["--delay", "50ms"]), "{args:?}");
    }

    #[test]
    fn selectors_parse_key_value() {
        assert_eq!(Selector::parse("kubernetes.io/hostname=n1").unwrap().to_string(), "kubernetes.io/hostname=n1");
        assert!(Selector::parse("client").unwrap_err().contains("KEY=VALUE"));
    }
}
