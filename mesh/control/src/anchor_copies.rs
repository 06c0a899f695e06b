//! Copies the trust anchor into every namespace as the ConfigMap
//! `weft-trust-anchor` (key `ca.crt`), the one injected proxies mount: a pod
//! can only mount ConfigMaps of its own namespace (istiod does the same with
//! `istio-ca-root-cert`). On with `--copy-trust-anchor`, which `weft
//! install` sets (its ClusterRole grants get/create/patch on ConfigMaps).
//!
//! Server-side apply with one field manager: every replica writes the same
//! object, a new namespace gets its copy as soon as the watch sees it, and a
//! relist repairs a copy someone changed or deleted.

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher;
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use mesh_kube::names;

/// The field manager of the copies.
const MANAGER: &str = "weft-control";

/// Namespaces that never get a copy: Kubernetes' own and the control
/// plane's (which `weft install` gives its ConfigMap).
pub fn skipped(control_namespace: &str) -> Vec<String> {
    ["kube-system", "kube-public", "kube-node-lease", control_namespace].map(str::to_owned).to_vec()
}

/// The copy in `namespace`.
pub fn config_map(namespace: &str, anchor_pem: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(names::TRUST_ANCHOR_CONFIGMAP.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some([(names::PART_OF_LABEL.to_owned(), names::PART_OF.to_owned())].into()),
            ..ObjectMeta::default()
        },
        data: Some([(names::TRUST_ANCHOR_KEY.to_owned(), anchor_pem.to_owned())].into()),
        ..ConfigMap::default()
    }
}

/// Follows Namespaces and applies the copy into each one not `skip`ped,
/// until aborted. Failures are logged and retried with the watch's next
/// event or relist.
pub async fn run(client: Client, anchor_pem: String, skip: Vec<String>) {
    let events = watcher::watcher(Api::<Namespace>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .applied_objects();
    futures_util::pin_mut!(events);
    let params = PatchParams::apply(MANAGER).force();
    while let Some(event) = events.next().await {
        let namespace = match event {
            Ok(ns) if ns.metadata.deletion_timestamp.is_none() => ns.metadata.name.unwrap_or_default(),
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!("trust anchor copies: watching namespaces: {e} (retrying)");
                continue;
            }
        };
        if namespace.is_empty() || skip.contains(&namespace) {
            continue;
        }
        let copy = config_map(&namespace, &anchor_pem);
        let api = Api::<ConfigMap>::namespaced(client.clone(), &namespace);
        match api.patch(names::TRUST_ANCHOR_CONFIGMAP, &params, &Patch::Apply(&copy)).await {
            Ok(_) => tracing::debug!(%namespace, "trust anchor copied"),
            Err(e) => tracing::warn!(%namespace, "copying the trust anchor into {namespace}: {e}"),
        }
    }
}
