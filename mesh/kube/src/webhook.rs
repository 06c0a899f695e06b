//! The injector's admission review: an AdmissionReview v1 for a pod CREATE
//! in, an AdmissionReview v1 out, with a JSON Patch when the pod is
//! injected. Transport-free: mesh-control's HTTPS server hands the body here.
//!
//! What is answered when:
//! - a body that is not an AdmissionReview v1 with a request: [`ReviewError`]
//!   (the server answers 400; the API server then applies the webhook's
//!   failurePolicy);
//! - not a pod CREATE (another resource, a subresource, UPDATE, ...):
//!   allowed, unchanged;
//! - a pod that is not injected (not opted in, annotated out, hostNetwork,
//!   already injected): allowed, unchanged;
//! - a pod that opted in but cannot be injected (a bad override annotation,
//!   a clashing volume name, a `weft.io/inject` value that is neither
//!   enabled nor disabled): denied with the reason, because running it
//!   without the mesh it asked for would fail later and quietly; a pod that
//!   did not opt in is never denied.

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation, META_API_VERSION_V1};
use kube::core::DynamicObject;
use serde_json::Value;

use crate::inject::{self, patch, Config, Outcome, Trigger};
use crate::names;

/// A request body that is not an AdmissionReview v1 the injector can answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an AdmissionReview {META_API_VERSION_V1} request: {0}")]
pub struct ReviewError(pub String);

/// What the review decided (for logs and tests; the response says it too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not a pod creation: nothing to do.
    Ignored,
    Injected,
    Skipped(inject::Skip),
    Denied(String),
}

/// The answer to one review: the response body (JSON) and what it says.
#[derive(Debug, Clone)]
pub struct Reviewed {
    pub body: Vec<u8>,
    pub verdict: Verdict,
    /// `namespace/name` (or generateName) of the pod, for logs.
    pub pod: String,
}

/// Answers the AdmissionReview in `body`. `namespace_inject` gives a
/// namespace's `weft.io/inject` (`None` when unknown: the pod's own
/// annotation decides).
pub fn review(body: &[u8], config: &Config, namespace_inject: impl Fn(&str) -> Option<bool>) -> Result<Reviewed, ReviewError> {
    let raw: Value = serde_json::from_slice(body).map_err(|e| ReviewError(format!("invalid JSON: {e}")))?;
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_value(raw.clone()).map_err(|e| ReviewError(format!("invalid AdmissionReview: {e}")))?;
    if review.types.api_version != META_API_VERSION_V1 || review.types.kind != "AdmissionReview" {
        return Err(ReviewError(format!(
            "apiVersion {:?} kind {:?} (the webhook must be registered with admissionReviewVersions [v1])",
            review.types.api_version, review.types.kind
        )));
    }
    let request: AdmissionRequest<DynamicObject> =
        review.try_into().map_err(|_| ReviewError("no request in it".to_owned()))?;
    let namespace = request.namespace.clone().unwrap_or_default();
    let mut pod_name = format!("{namespace}/{}", if request.name.is_empty() { "(generated name)" } else { &request.name });
    let response = AdmissionResponse::from(&request);

    let is_pod = request.kind.group.is_empty() && request.kind.version == "v1" && request.kind.kind == "Pod";
    let (verdict, response) = match (&request.operation, request.sub_resource.as_deref(), is_pod, raw.pointer("/request/object")) {
        (Operation::Create, None, true, Some(object)) => {
            let object = object.clone();
            match pod_review(object, &namespace, config, &namespace_inject) {
                Ok((verdict, name, patch)) => {
                    if let Some(name) = name {
                        pod_name = format!("{namespace}/{name}");
                    }
                    match patch {
                        Some(patch) => match response.with_patch(patch) {
                            Ok(r) => (verdict, r),
                            Err(e) => deny(AdmissionResponse::from(&request), format!("writing the patch: {e}")),
                        },
                        None => (verdict, response),
                    }
                }
                Err(reason) => deny(response, reason),
            }
        }
        _ => (Verdict::Ignored, response),
    };
    let body = serde_json::to_vec(&response.into_review()).map_err(|e| ReviewError(format!("writing the response: {e}")))?;
    Ok(Reviewed { body, verdict, pod: pod_name })
}

fn deny(response: AdmissionResponse, reason: String) -> (Verdict, AdmissionResponse) {
    let message = format!("weft injector: {reason}");
    (Verdict::Denied(message.clone()), response.deny(message))
}

type PodReview = (Verdict, Option<String>, Option<json_patch::Patch>);

/// A pod CREATE: the verdict, the pod's name, and the patch when injected.
/// `Err`: deny with this reason (the pod opted in and cannot be injected).
fn pod_review(object: Value, namespace: &str, config: &Config, namespace_inject: &impl Fn(&str) -> Option<bool>) -> Result<PodReview, String> {
    let ns_inject = namespace_inject(namespace);
    let trigger = Trigger::Admission { namespace: ns_inject };
    let opted_in = object.pointer(&format!("/metadata/annotations/{}", names::INJECT_ANNOTATION.replace('/', "~1"))).and_then(Value::as_str)
        == Some("enabled")
        || ns_inject == Some(true);
    let mut pod: Pod = match serde_json::from_value(object) {
        Ok(pod) => pod,
        Err(e) if opted_in => return Err(format!("cannot read the pod ({e}), so it cannot be injected")),
        Err(e) => {
            tracing::warn!("admission review: cannot read the pod ({e}); not opted in, so allowed unchanged");
            return Ok((Verdict::Ignored, None, None));
        }
    };
    let name = pod.metadata.name.clone().or_else(|| pod.metadata.generate_name.as_ref().map(|g| format!("{g}*")));
    let before = serde_json::to_value(&pod).map_err(|e| format!("reading the pod: {e}"))?;
    let Some(spec) = pod.spec.as_mut() else {
        return if opted_in { Err("the pod has no spec".to_owned()) } else { Ok((Verdict::Ignored, name, None)) };
    };
    match inject::inject(&mut pod.metadata, spec, trigger, config) {
        Ok(Outcome::Injected) => {
            let after = serde_json::to_value(&pod).map_err(|e| format!("writing the injected pod: {e}"))?;
            Ok((Verdict::Injected, name, Some(patch::diff(&before, &after))))
        }
        Ok(Outcome::Skipped(why)) => Ok((Verdict::Skipped(why), name, None)),
        Err(e) => Err(format!(
            "pod {} opted in ({}) but cannot be injected: {e}; fix it, or annotate the pod {}: disabled",
            name.as_deref().unwrap_or("(no name)"),
            names::INJECT_ANNOTATION,
            names::INJECT_ANNOTATION
        )),
    }
}
