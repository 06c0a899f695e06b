//! Meshed pods: is each one's proxy ready, and does it hold a workload
//! certificate? The second question goes through the API server's pod proxy
//! to the proxy's admin `/metrics`, which exports the current certificate's
//! expiry (`weft_identity_certificate_expiry_timestamp_seconds`, 0 until the
//! first certificate): the admin listener has no endpoint that describes the
//! certificate itself, and `/ready` alone would also be 503 for other reasons
//! (draining, no inbound policy yet).

use futures_util::{stream, StreamExt};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

use super::Check;
use crate::names;

const GROUP: &str = "data-plane";
/// The admin metric mesh-proxy exports its certificate's expiry as.
pub(crate) const EXPIRY_METRIC: &str = "weft_identity_certificate_expiry_timestamp_seconds";
/// Pods whose metrics are read at once through the API server.
const CONCURRENCY: usize = 8;
/// Pods named in one failure line before "and N more".
const NAMED: usize = 5;

/// Pods the injector meshed: the injected annotation, or a proxy container (injected by `weft inject`).
pub fn is_meshed(pod: &Pod) -> bool {
    let annotated = pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(names::INJECTED_ANNOTATION));
    let spec = pod.spec.as_ref();
    let has_proxy = spec.is_some_and(|s| {
        s.containers.iter().chain(s.init_containers.iter().flatten()).any(|c| c.name == names::PROXY_CONTAINER)
    });
    let finished = pod.status.as_ref().and_then(|s| s.phase.as_deref()).is_some_and(|p| p == "Succeeded" || p == "Failed");
    (annotated || has_proxy) && !finished
}

/// The proxy's status: a regular container, or a native sidecar (an init container that keeps running).
fn proxy_status(pod: &Pod) -> Option<&ContainerStatus> {
    let status = pod.status.as_ref()?;
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .find(|c| c.name == names::PROXY_CONTAINER)
}

/// `kubectl -n NS VERB NAME [-c weft-proxy]` for a pod a hint names.
fn kubectl(pod: &Pod, verb: &str, container: bool) -> String {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("?");
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let c = if container { format!(" -c {}", names::PROXY_CONTAINER) } else { String::new() };
    format!("kubectl -n {ns} {verb} {name}{c}")
}

fn pod_name(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or("?"), pod.metadata.name.as_deref().unwrap_or("?"))
}

/// Why a pod's proxy is not ready, or `None` when it is.
fn not_ready(pod: &Pod) -> Option<String> {
    let Some(status) = proxy_status(pod) else {
        return Some("no status for the proxy container yet".to_owned());
    };
    if status.ready {
        return None;
    }
    let state = status.state.as_ref();
    let why = if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
        format!("waiting: {}", w.reason.as_deref().unwrap_or("?"))
    } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
        format!("terminated: {} (exit {})", t.reason.as_deref().unwrap_or("?"), t.exit_code)
    } else {
        "running, readiness probe failing".to_owned()
    };
    Some(format!("{why}, {} restarts", status.restart_count))
}

/// Whether the pod's proxy container runs (has an admin listener to ask).
pub fn is_running(pod: &Pod) -> bool {
    proxy_status(pod).is_some_and(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()))
}

/// The certificate's expiry from the admin's metrics text (0: none yet).
pub(crate) fn certificate_expiry(metrics: &str) -> Option<i64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(EXPIRY_METRIC)?.strip_prefix(' ')?;
        // A gauge may be printed as a float.
        value.split_whitespace().next()?.parse::<f64>().ok().map(|v| v as i64)
    })
}

/// The first few pods' problems, and how many more there are.
fn named(list: &[(&Pod, String)]) -> String {
    let mut s = list.iter().take(NAMED).map(|(_, why)| why.as_str()).collect::<Vec<_>>().join("; ");
    if list.len() > NAMED {
        s.push_str(&format!("; and {} more", list.len() - NAMED));
    }
    s
}

const READY: &str = "meshed pods' proxies ready";
const CERTIFIED: &str = "meshed pods' proxies certified";

/// Every pod of the cluster; when they cannot be listed, the failed data-plane check instead.
pub(crate) async fn all_pods(client: &kube::Client) -> Result<Vec<Pod>, Check> {
    match kube::Api::<Pod>::all(client.clone()).list(&Default::default()).await {
        Ok(list) => Ok(list.items),
        Err(e) => Err(Check::api_error(GROUP, READY, "pods in all namespaces", &e)),
    }
}

pub(crate) const ANCHORS: &str = "meshed pods' proxies carry the current trust anchor";

/// The trust anchor a pod's proxy was injected with: the PEM in its
/// environment, or why it cannot be read from the pod spec.
fn injected_anchor(pod: &Pod) -> Result<&str, &'static str> {
    let spec = pod.spec.as_ref().ok_or("no spec")?;
    let proxy = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == names::PROXY_CONTAINER)
        .ok_or("no proxy container")?;
    let env = proxy.env.iter().flatten();
    if let Some(var) = env.clone().find(|e| e.name == names::PROXY_TRUST_ANCHOR_ENV) {
        return var.value.as_deref().ok_or("its trust anchor comes from a reference, not the pod spec");
    }
    if env.clone().any(|e| e.name == "WEFT_PROXY_TRUST_ANCHOR") {
        return Err("injected by an older Weft: mounts the trust anchor from a ConfigMap of its own namespace");
    }
    Err("no trust anchor in the proxy's environment")
}

/// How to re-create a pod so the injector writes the current anchor into it:
/// its workload's rollout restart, or deleting a bare pod.
fn restart(pod: &Pod) -> String {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("?");
    let owner = pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true));
    match owner.map(|o| (o.kind.as_str(), o.name.as_str())) {
        // A Deployment's ReplicaSet is named <deployment>-<pod-template-hash>.
        Some(("ReplicaSet", rs)) => match rs.rsplit_once('-') {
            Some((deployment, _)) => format!("kubectl -n {ns} rollout restart deployment/{deployment}"),
            None => kubectl(pod, "delete pod", false),
        },
        Some((kind @ ("StatefulSet" | "DaemonSet"), name)) => {
            format!("kubectl -n {ns} rollout restart {}/{name}", kind.to_ascii_lowercase())
        }
        _ => kubectl(pod, "delete pod", false),
    }
}

/// Every meshed pod's proxy was injected with the control plane's current
/// trust anchor (the injector writes it into the pod spec, as Linkerd does:
/// after a rotation, pods created before it still trust only the old one
/// until they are re-created). `anchor`: the control plane's, `None` when it
/// could not be read (that check fails on its own).
pub(crate) fn anchors(pods: &[Pod], control_ns: &str, anchor: Option<&str>) -> Check {
    const GROUP: &str = "identity";
    let meshed: Vec<&Pod> = pods.iter().filter(|p| is_meshed(p)).collect();
    if meshed.is_empty() {
        return Check::pass(GROUP, ANCHORS, "no meshed pods yet");
    }
    let Some(anchor) = anchor else {
        return Check::fail(
            GROUP,
            ANCHORS,
            format!("cannot compare: the control plane's trust anchor {control_ns}/{} is unreadable", names::TRUST_ANCHOR_CONFIGMAP),
            "fix the trust anchor check above first",
        );
    };
    let stale: Vec<(&Pod, String)> = meshed
        .iter()
        .filter_map(|pod| {
            let why = match injected_anchor(pod) {
                Ok(pem) if pem.trim() == anchor.trim() => return None,
                Ok(_) => format!("{}: carries another trust anchor than {control_ns}/{}", pod_name(pod), names::TRUST_ANCHOR_CONFIGMAP),
                Err(why) => format!("{}: {why}", pod_name(pod)),
            };
            Some((*pod, why))
        })
        .collect();
    if stale.is_empty() {
        return Check::pass(GROUP, ANCHORS, format!("{} of {} pods", meshed.len(), meshed.len()));
    }
    let mut restarts: Vec<String> = stale.iter().map(|(pod, _)| restart(pod)).collect();
    restarts.dedup();
    Check::fail(
        GROUP,
        ANCHORS,
        format!("{} of {} not on the current anchor: {}", stale.len(), meshed.len(), named(&stale)),
        format!(
            "the injector writes the trust anchor into the pod spec when a pod is created (after a rotation, older pods \
             trust only the old one): re-create them so they are injected again: {}",
            restarts.into_iter().take(NAMED).collect::<Vec<_>>().join("; ")
        ),
    )
}

/// The two data-plane checks over every meshed pod of `pods` (all the cluster's).
pub(crate) async fn run(client: &kube::Client, pods: &[Pod], control_ns: &str, now: i64) -> Vec<Check> {
    let meshed: Vec<&Pod> = pods.iter().filter(|p| is_meshed(p)).collect();
    if meshed.is_empty() {
        let detail = format!(
            "no meshed pods yet (annotate a namespace or pod with {}=enabled, then restart its workloads)",
            names::INJECT_ANNOTATION
        );
        return vec![Check::pass(GROUP, READY, detail.clone()), Check::pass(GROUP, CERTIFIED, detail)];
    }

    let unready: Vec<(&Pod, String)> =
        meshed.iter().filter_map(|p| not_ready(p).map(|why| (*p, format!("{}: {why}", pod_name(p))))).collect();
    let ready_check = if unready.is_empty() {
        Check::pass(GROUP, READY, format!("{} of {} pods", meshed.len(), meshed.len()))
    } else {
        Check::fail(
            GROUP,
            READY,
            format!("{} of {} not ready: {}", unready.len(), meshed.len(), named(&unready)),
            format!("{}; {}", kubectl(unready[0].0, "logs", true), kubectl(unready[0].0, "describe pod", false)),
        )
    };

    // A proxy container that is not running has no admin listener to ask.
    let running: Vec<&Pod> = meshed.iter().copied().filter(|p| is_running(p)).collect();
    let answers: Vec<(&Pod, Result<i64, String>)> = stream::iter(running)
        .map(|pod| async move { (pod, expiry(client, pod).await) })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut uncertified: Vec<(&Pod, String)> = answers
        .iter()
        .filter_map(|(pod, answer)| match answer {
            Ok(expiry) if *expiry > now => None,
            Ok(0) => Some((*pod, format!("{}: no workload certificate yet", pod_name(pod)))),
            Ok(expiry) => Some((*pod, format!("{}: certificate expired {} s ago", pod_name(pod), now - expiry))),
            Err(e) => Some((*pod, format!("{}: {e}", pod_name(pod)))),
        })
        .collect();
    uncertified.sort_by(|a, b| a.1.cmp(&b.1));
    let skipped = meshed.len() - answers.len();
    let skipped_note = if skipped > 0 { format!(" ({skipped} with the proxy not running, see above)") } else { String::new() };
    let certified_check = if uncertified.is_empty() {
        Check::pass(GROUP, CERTIFIED, format!("{} of {} running proxies hold a valid certificate{skipped_note}", answers.len(), answers.len()))
    } else {
        Check::fail(
            GROUP,
            CERTIFIED,
            format!(
                "{} of {} running proxies without a valid certificate: {}{skipped_note}",
                uncertified.len(),
                answers.len(),
                named(&uncertified)
            ),
            format!(
                "the proxy asks {control}.{control_ns}:{} for its certificate: read `{}` and `kubectl -n {control_ns} logs \
                 deploy/{control}`",
                names::CONTROL_GRPC_PORT,
                kubectl(uncertified[0].0, "logs", true),
                control = names::CONTROL,
            ),
        )
    };
    vec![ready_check, certified_check]
}

/// The pod's proxy's certificate expiry, through the API server's pod proxy.
async fn expiry(client: &kube::Client, pod: &Pod) -> Result<i64, String> {
    let (Some(ns), Some(name)) = (pod.metadata.namespace.as_deref(), pod.metadata.name.as_deref()) else {
        return Err("pod without namespace or name".to_owned());
    };
    let path = format!("/api/v1/namespaces/{ns}/pods/{name}:{}/proxy/metrics", names::PROXY_ADMIN_PORT);
    let request = http::Request::get(&path).body(Vec::new()).map_err(|e| e.to_string())?;
    let text = client.request_text(request).await.map_err(|e| format!("GET {path}: {e}"))?;
    certificate_expiry(&text).ok_or_else(|| format!("GET {path}: no {EXPIRY_METRIC} in the proxy's metrics"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_from_metrics() {
        let text = "# TYPE weft_identity_certificate_expiry_timestamp_seconds gauge\n\
                    weft_identity_certificates_total 3\n\
                    weft_identity_certificate_expiry_timestamp_seconds 1796601600\n# EOF\n";
        assert_eq!(certificate_expiry(text), Some(1_796_601_600));
        assert_eq!(certificate_expiry(&format!("{EXPIRY_METRIC} 0.0\n")), Some(0));
        assert_eq!(certificate_expiry(&format!("{EXPIRY_METRIC}_other 5\n")), None);
        assert_eq!(certificate_expiry("weft_identity_certificates_total 3\n"), None);
    }

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn meshed_and_ready() {
        let plain = pod(serde_json::json!({"metadata": {"name": "a", "namespace": "x"}, "spec": {"containers": [{"name": "app"}]}}));
        assert!(!is_meshed(&plain));
        let sidecar = pod(serde_json::json!({
            "metadata": {"name": "b", "namespace": "x"},
            "spec": {"containers": [{"name": "app"}, {"name": names::PROXY_CONTAINER}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": names::PROXY_CONTAINER, "ready": false, "restartCount": 2, "image": "i", "imageID": "",
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]}
        }));
        assert!(is_meshed(&sidecar));
        assert_eq!(not_ready(&sidecar).unwrap(), "waiting: CrashLoopBackOff, 2 restarts");
        assert!(!is_running(&sidecar));
        let native = pod(serde_json::json!({
            "metadata": {"name": "c", "namespace": "x", "annotations": {names::INJECTED_ANNOTATION: "img"}},
            "spec": {"containers": [{"name": "app"}], "initContainers": [{"name": names::PROXY_CONTAINER}]},
            "status": {"phase": "Running", "initContainerStatuses": [
                {"name": names::PROXY_CONTAINER, "ready": true, "restartCount": 0, "image": "i", "imageID": "",
                 "state": {"running": {}}}
            ]}
        }));
        assert!(is_meshed(&native) && is_running(&native));
        assert_eq!(not_ready(&native), None);
        let done = pod(serde_json::json!({
            "metadata": {"name": "d", "namespace": "x", "annotations": {names::INJECTED_ANNOTATION: "img"}},
            "status": {"phase": "Succeeded"}
        }));
        assert!(!is_meshed(&done));
    }
}
