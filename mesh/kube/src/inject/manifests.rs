//! `weft inject`: every workload of a multi-document YAML stream (and of
//! every `List` in it) injected, everything else passed through.
//!
//! A document that is not changed is written back as it was read (its
//! comments and layout kept); a changed one is written from its typed
//! k8s-openapi object ([`crate::yaml::to_yaml`]).

use std::fmt;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{inject, Config, InjectError, Outcome, Trigger};
use crate::yaml;

/// What happened to one object of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// 1-based, counting non-empty documents.
    pub document: usize,
    /// Within a `List`: the item's index.
    pub item: Option<usize>,
    /// `Deployment shop/web`.
    pub object: String,
    /// `None`: not a workload, passed through.
    pub outcome: Option<Outcome>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "document {}", self.document)?;
        if let Some(i) = self.item {
            write!(f, " item {i}")?;
        }
        write!(f, ": {}: ", self.object)?;
        match &self.outcome {
            Some(Outcome::Injected) => f.write_str("injected"),
            Some(Outcome::Skipped(why)) => write!(f, "not injected: {why}"),
            None => f.write_str("not a workload, passed through"),
        }
    }
}

/// One document that cannot be injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    pub document: usize,
    /// The line of the stream where the problem is (or the document starts).
    pub line: u64,
    pub message: String,
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: document {}: {}", self.line, self.document, self.message)
    }
}

/// Every document that cannot be injected; nothing is written then.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct StreamError(pub Vec<DocumentError>);

/// The injected stream and what happened to each object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    pub yaml: String,
    pub reports: Vec<Report>,
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
}

/// Injects every workload in `text` (weft inject's [`Trigger::Manual`]).
pub fn inject_stream(text: &str, config: &Config) -> Result<Injected, StreamError> {
    let mut out = Vec::new();
    let mut reports = Vec::new();
    let mut errors = Vec::new();
    for (i, (start, doc)) in yaml::documents(text).into_iter().enumerate() {
        let document = i + 1;
        let error = |line: u64, message: String| DocumentError { document, line, message };
        let first = doc.lines().position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).unwrap_or(0);
        let line = start + first as u64;
        let value: Value = match serde_saphyr::from_str(&doc) {
            Ok(v) => v,
            Err(e) => {
                let (line, message) = yaml::error_at(&e, start);
                errors.push(error(line, format!("invalid YAML: {message}")));
                continue;
            }
        };
        let head: Head = serde_json::from_value(value.clone()).unwrap_or(Head { api_version: None, kind: None });
        let (Some(api_version), Some(kind)) = (head.api_version, head.kind) else {
            errors.push(error(line, "not a Kubernetes object: apiVersion and kind are required".to_owned()));
            continue;
        };
        // `List`, `PodList`, ...; a custom kind that only ends in "List"
        // (an `IPAllowList`) has no items array and passes through.
        if kind.ends_with("List") && value.get("items").is_some_and(Value::is_array) {
            match list(value, document, config, &mut reports) {
                Ok(Some(changed)) => out.push(changed),
                Ok(None) => out.push(doc),
                Err(message) => errors.push(error(line, message)),
            }
            continue;
        }
        match object(&api_version, &kind, value, config) {
            Ok((object, outcome, changed)) => {
                reports.push(Report { document, item: None, object, outcome: outcome.clone() });
                match (outcome, changed) {
                    (Some(Outcome::Injected), Some(changed)) => match yaml::to_yaml(&changed) {
                        Ok(text) => out.push(text),
                        Err(e) => errors.push(error(line, format!("writing the injected object: {e}"))),
                    },
                    _ => out.push(doc),
                }
            }
            Err(message) => errors.push(error(line, message)),
        }
    }
    if errors.is_empty() {
        Ok(Injected { yaml: out.join("---\n"), reports })
    } else {
        Err(StreamError(errors))
    }
}

/// A `List`'s items, each injected; `Some` with the list's new YAML when one changed.
fn list(mut value: Value, document: usize, config: &Config, reports: &mut Vec<Report>) -> Result<Option<String>, String> {
    let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) else {
        return Ok(None);
    };
    let mut changed_any = false;
    let mut problems = Vec::new();
    for (i, item) in items.iter_mut().enumerate() {
        let head: Head = serde_json::from_value(item.clone()).unwrap_or(Head { api_version: None, kind: None });
        let (Some(api_version), Some(kind)) = (head.api_version, head.kind) else {
            problems.push(format!("item {i}: not a Kubernetes object: apiVersion and kind are required"));
            continue;
        };
        match object(&api_version, &kind, item.clone(), config) {
            Ok((object, outcome, changed)) => {
                if let (Some(Outcome::Injected), Some(changed)) = (&outcome, changed) {
                    *item = changed;
                    changed_any = true;
                }
                reports.push(Report { document, item: Some(i), object, outcome });
            }
            Err(message) => problems.push(format!("item {i}: {message}")),
        }
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    if !changed_any {
        return Ok(None);
    }
    yaml::to_yaml(&value).map(Some).map_err(|e| format!("writing the injected List: {e}"))
}

type Handled = (String, Option<Outcome>, Option<Value>);

/// One object: its name for the report, what was done, and its new value
/// when it is a workload (`None` otherwise).
fn object(api_version: &str, kind: &str, value: Value, config: &Config) -> Result<Handled, String> {
    let name = object_name(kind, &value);
    let result = match (api_version, kind) {
        ("v1", "Pod") => workload::<Pod>(value, config, |p| Some((&mut p.metadata, p.spec.as_mut()?))),
        ("apps/v1", "Deployment") => workload::<Deployment>(value, config, |d| template(d.spec.as_mut().map(|s| &mut s.template))),
        ("apps/v1", "StatefulSet") => workload::<StatefulSet>(value, config, |d| template(d.spec.as_mut().map(|s| &mut s.template))),
        ("apps/v1", "DaemonSet") => workload::<DaemonSet>(value, config, |d| template(d.spec.as_mut().map(|s| &mut s.template))),
        ("apps/v1", "ReplicaSet") => {
            workload::<ReplicaSet>(value, config, |d| template(d.spec.as_mut().and_then(|s| s.template.as_mut())))
        }
        ("batch/v1", "Job") => workload::<Job>(value, config, |d| template(d.spec.as_mut().map(|s| &mut s.template))),
        ("batch/v1", "CronJob") => workload::<CronJob>(value, config, |d| {
            template(d.spec.as_mut().and_then(|s| s.job_template.spec.as_mut()).map(|s| &mut s.template))
        }),
        _ => return Ok((name, None, None)),
    };
    match result {
        Ok((outcome, value)) => Ok((name, Some(outcome), Some(value))),
        Err(message) => Err(format!("{name}: {message}")),
    }
}

fn object_name(kind: &str, value: &Value) -> String {
    let meta = value.get("metadata");
    let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(Value::as_str);
    let name = field("name").or(field("generateName")).unwrap_or("(no name)");
    match field("namespace") {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

type Parts<'a> = (&'a mut ObjectMeta, &'a mut PodSpec);

fn template(t: Option<&mut PodTemplateSpec>) -> Option<Parts<'_>> {
    let PodTemplateSpec { metadata, spec } = t?;
    Some((metadata.get_or_insert_with(ObjectMeta::default), spec.as_mut()?))
}

fn workload<T: DeserializeOwned + Serialize>(
    value: Value,
    config: &Config,
    parts: impl FnOnce(&mut T) -> Option<Parts<'_>>,
) -> Result<(Outcome, Value), String> {
    let mut typed: T = serde_json::from_value(value).map_err(|e| format!("not a valid object of its kind: {e}"))?;
    let Some((meta, spec)) = parts(&mut typed) else {
        return Err("has no pod template spec to inject".to_owned());
    };
    let outcome = inject(meta, spec, Trigger::Manual, config).map_err(|InjectError { problems }| problems.join("; "))?;
    let value = serde_json::to_value(&typed).map_err(|e| format!("writing the injected object: {e}"))?;
    Ok((outcome, value))
}
