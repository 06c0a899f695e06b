//! Backend 1: a directory of Kubernetes YAML manifests (`*.yaml`, `*.yml`,
//! recursively, multi-document with `---`), polled for changes.
//!
//! Why a poll and not inotify: it is a handful of `stat` calls every 250 ms,
//! works on every filesystem (bind mounts, ConfigMap symlink swaps, network
//! filesystems) and cannot miss an event. A file is re-read when its mtime,
//! size or inode changes (editors that write-and-rename change the inode).
//!
//! Each scan is applied atomically: watchers never see half a directory. A
//! file that does not parse is reported as `path:line: what is wrong` (a log
//! line and the `parse_errors` counter) and the last good version of that
//! file stays in force; the other files are unaffected. Unknown kinds are
//! ignored with a debug log.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1 as discovery;
use mesh_index::model::{Change, Kind, ObjectKey, Resource};
use mesh_index::Index;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{authz, convert, gateway};

/// One problem in one manifest file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {message}", .path.display())]
pub struct ManifestError {
    pub path: PathBuf,
    /// 1-based.
    pub line: u64,
    pub message: String,
}

/// Counters of the manifests backend (exported as metrics).
#[derive(Debug, Default)]
pub struct ManifestsMetrics {
    /// Problems reported (each `path:line` once per version of a file).
    pub parse_errors: AtomicU64,
    /// Scans that changed the index.
    pub reloads: AtomicU64,
    /// Manifest files currently known.
    pub files: AtomicU64,
}

/// What one scan did.
#[derive(Debug, Default)]
pub struct ScanReport {
    pub files: usize,
    /// Index writes that changed something.
    pub changes: usize,
    /// Problems found in files read during this scan.
    pub errors: Vec<ManifestError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    mtime_ns: i128,
    len: u64,
    ino: u64,
}

struct FileState {
    stamp: Stamp,
    /// The last good parse (empty if the file never parsed).
    resources: Vec<Resource>,
}

/// The directory backend. [`Manifests::scan`] once, or [`Manifests::run`] to follow.
pub struct Manifests {
    dir: PathBuf,
    index: Index,
    files: BTreeMap<PathBuf, FileState>,
    applied: HashMap<(Kind, ObjectKey), Resource>,
    metrics: Arc<ManifestsMetrics>,
}

impl Manifests {
    pub fn new(dir: impl Into<PathBuf>, index: Index) -> Self {
        Self { dir: dir.into(), index, files: BTreeMap::new(), applied: HashMap::new(), metrics: Arc::default() }
    }

    pub fn metrics(&self) -> Arc<ManifestsMetrics> {
        self.metrics.clone()
    }

    /// Reads what changed since the last scan and applies it to the index in
    /// one step. Errors only when the directory itself cannot be listed.
    pub fn scan(&mut self) -> std::io::Result<ScanReport> {
        let mut paths = Vec::new();
        list(&self.dir, &mut paths)?;
        let mut report = ScanReport { files: paths.len(), ..ScanReport::default() };
        let mut seen = BTreeMap::new();
        for path in paths {
            let Ok(meta) = std::fs::metadata(&path) else { continue }; // removed meanwhile
            let stamp = Stamp {
                mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
                len: meta.len(),
                ino: meta.ino(),
            };
            let previous = self.files.remove(&path);
            let state = match previous {
                Some(state) if state.stamp == stamp => state,
                previous => {
                    let parsed = std::fs::read_to_string(&path)
                        .map_err(|e| {
                            vec![ManifestError { path: path.clone(), line: 1, message: format!("reading: {e}") }]
                        })
                        .and_then(|text| parse_file(&path, &text));
                    match parsed {
                        Ok(resources) => FileState { stamp, resources },
                        Err(errors) => {
                            for e in &errors {
                                tracing::warn!("{e} (keeping this file's previous state)");
                            }
                            self.metrics.parse_errors.fetch_add(errors.len() as u64, Ordering::Relaxed);
                            report.errors.extend(errors);
                            FileState { stamp, resources: previous.map(|s| s.resources).unwrap_or_default() }
                        }
                    }
                }
            };
            seen.insert(path, state);
        }
        // Files not seen this time were removed: their objects go with them.
        self.files = seen;
        self.metrics.files.store(self.files.len() as u64, Ordering::Relaxed);

        let mut merged: HashMap<(Kind, ObjectKey), Resource> = HashMap::new();
        let mut origin: HashMap<(Kind, ObjectKey), &Path> = HashMap::new();
        for (path, state) in &self.files {
            for r in &state.resources {
                let id = (r.kind(), r.key().clone());
                if let Some(first) = origin.insert(id.clone(), path) {
                    tracing::warn!(
                        "{}: {} {} is also defined in {}; the later file wins",
                        path.display(),
                        id.0.as_str(),
                        id.1,
                        first.display()
                    );
                }
                merged.insert(id, r.clone());
            }
        }
        let mut changes: Vec<Change> = self
            .applied
            .keys()
            .filter(|id| !merged.contains_key(*id))
            .map(|(kind, key)| Change::Delete(*kind, key.clone()))
            .collect();
        changes.extend(
            merged.iter().filter(|(id, r)| self.applied.get(*id) != Some(*r)).map(|(_, r)| Change::Upsert(r.clone())),
        );
        if !changes.is_empty() {
            report.changes = self.index.apply(changes);
            self.metrics.reloads.fetch_add(1, Ordering::Relaxed);
            tracing::info!(files = report.files, changes = report.changes, "manifests applied");
        }
        self.applied = merged;
        Ok(report)
    }

    /// Scans every `interval` until `shutdown` completes.
    pub async fn run(mut self, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticks.tick() => {}
            }
            // Parsing is blocking work; keep it off the gRPC threads.
            let scanned = tokio::task::spawn_blocking(move || {
                let result = self.scan();
                (self, result)
            })
            .await;
            match scanned {
                Ok((me, result)) => {
                    self = me;
                    if let Err(e) = result {
                        tracing::warn!("listing {}: {e} (keeping the current state)", self.dir.display());
                    }
                }
                Err(e) => {
                    tracing::error!("manifest scan panicked: {e}; stopping the manifests backend");
                    return;
                }
            }
        }
    }
}

/// Every `*.yaml` / `*.yml` under `dir`, skipping hidden entries (editor
/// swap files, Kubernetes ConfigMap `..data` internals), sorted.
fn list(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // Follows symlinks, as ConfigMap mounts need.
        let Ok(meta) = std::fs::metadata(&path) else { continue };
        if meta.is_dir() {
            // An unreadable subdirectory should not hide the rest.
            if let Err(e) = list(&path, out) {
                tracing::warn!("listing {}: {e}", path.display());
            }
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
            out.push(path);
        }
    }
    Ok(())
}

#[derive(Deserialize)]
struct Head {
    #[serde(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
}

/// Parses one manifest file into index objects, or every problem in it.
pub fn parse_file(path: &Path, text: &str) -> Result<Vec<Resource>, Vec<ManifestError>> {
    let mut resources = Vec::new();
    let mut errors = Vec::new();
    for (start, doc) in mesh_kube::yaml::documents(text) {
        // Report semantic problems at the document's first meaningful line.
        let first = doc.lines().position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).unwrap_or(0);
        let at = |line: u64, message: String| ManifestError { path: path.to_owned(), line, message };
        let head: Head = match serde_saphyr::from_str(&doc) {
            Ok(h) => h,
            Err(e) => {
                errors.push(yaml_error(&e, start, path, "invalid YAML"));
                continue;
            }
        };
        let line = start + first as u64;
        let (Some(api_version), Some(kind)) = (head.api_version, head.kind) else {
            errors.push(at(line, "not a Kubernetes object: apiVersion and kind are required".to_owned()));
            continue;
        };
        let converted = match (api_version.as_str(), kind.as_str()) {
            ("v1", "Namespace") => typed::<core::Namespace>(&doc, start, path, &kind).map(|o| convert::namespace(&o)),
            ("v1", "Service") => typed::<core::Service>(&doc, start, path, &kind).map(|o| convert::service(&o)),
            ("v1", "Pod") => typed::<core::Pod>(&doc, start, path, &kind).map(|o| convert::pod(&o)),
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                typed::<discovery::EndpointSlice>(&doc, start, path, &kind).map(|o| convert::endpoint_slice(&o))
            }
            ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1beta1", "HTTPRoute") => {
                typed::<gateway::HTTPRoute>(&doc, start, path, &kind).map(|o| gateway::http_route(&o))
            }
            ("gateway.networking.k8s.io/v1" | "gateway.networking.k8s.io/v1alpha2", "GRPCRoute") => {
                typed::<gateway::GRPCRoute>(&doc, start, path, &kind).map(|o| gateway::grpc_route(&o))
            }
            ("policy.weft.io/v1alpha1", "AuthorizationPolicy") => {
                typed::<authz::AuthorizationPolicy>(&doc, start, path, &kind).map(|o| authz::authorization_policy(&o))
            }
            _ => {
                tracing::debug!("{}:{line}: ignoring {api_version} {kind}", path.display());
                continue;
            }
        };
        match converted {
            Ok(Ok(resource)) => resources.push(resource),
            Ok(Err(e)) => errors.push(at(line, e.to_string())),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(resources)
    } else {
        Err(errors)
    }
}

fn typed<T: DeserializeOwned>(doc: &str, start: u64, path: &Path, kind: &str) -> Result<T, ManifestError> {
    serde_saphyr::from_str(doc).map_err(|e| yaml_error(&e, start, path, &format!("invalid {kind}")))
}

/// A serde-saphyr error at its file line, without the library's own
/// position suffix and snippet (the line is already in front).
fn yaml_error(e: &serde_saphyr::Error, start: u64, path: &Path, what: &str) -> ManifestError {
    let (line, text) = mesh_kube::yaml::error_at(e, start);
    ManifestError { path: path.to_owned(), line, message: format!("{what}: {text}") }
}
