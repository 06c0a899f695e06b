//! Backend 1: a directory of Kubernetes YAML manifests (`*.yaml`, `*.yml`,
//! recursively, multi-document with `---`), followed through filesystem
//! notifications (inotify, by the `notify` crate).
//!
//! A notification only says "look again": the backend then rescans the
//! directory (a `stat` per file) and re-reads a file when its mtime, size or
//! inode changed (editors that write-and-rename change the inode), so a
//! coalesced or misattributed event loses nothing. A burst of events (a
//! writer's create, write, rename) waits [`DEBOUNCE`] of quiet, at most
//! [`DEBOUNCE_MAX`], to become one scan. Notifications can still be lost
//! (queue overflow, the directory itself replaced, a network filesystem
//! changed from another host), so a full rescan runs every [`RESYNC`] as
//! well. Where notifications cannot be set up (no inotify, watch limit
//! reached) or are turned off (`--manifests-notify false`), the directory is
//! polled every `--manifests-poll` instead, as before.
//!
//! Each scan is applied atomically: watchers never see half a directory. A
//! file that does not parse is reported as `path:line: what is wrong` (a log
//! line and the `parse_errors` counter) and the last good version of that
//! file stays in force; the other files are unaffected. Unknown kinds are
//! ignored with a debug log.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Whether filesystem notifications are followed (else: polling).
    pub notifications: AtomicBool,
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
    metrics: Arc<ManifestsMetrics>,
}

impl Manifests {
    pub fn new(dir: impl Into<PathBuf>, index: Index) -> Self {
        Self { dir: dir.into(), index, files: BTreeMap::new(), metrics: Arc::default() }
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
        // Objects of files that are new, changed or gone, before and after.
        let mut touched: HashMap<Kind, HashSet<ObjectKey>> = HashMap::new();
        let mut touch = |rs: &[Resource]| {
            for r in rs {
                touched.entry(r.kind()).or_default().insert(r.key().clone());
            }
        };
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
                    let old = previous.map(|s| s.resources).unwrap_or_default();
                    touch(&old);
                    let parsed = std::fs::read_to_string(&path)
                        .map_err(|e| {
                            vec![ManifestError { path: path.clone(), line: 1, message: format!("reading: {e}") }]
                        })
                        .and_then(|text| parse_file(&path, &text));
                    match parsed {
                        Ok(resources) => {
                            touch(&resources);
                            FileState { stamp, resources }
                        }
                        Err(errors) => {
                            for e in &errors {
                                tracing::warn!("{e} (keeping this file's previous state)");
                            }
                            self.metrics.parse_errors.fetch_add(errors.len() as u64, Ordering::Relaxed);
                            report.errors.extend(errors);
                            FileState { stamp, resources: old }
                        }
                    }
                }
            };
            seen.insert(path, state);
        }
        // Files not seen this time were removed: their objects go with them.
        for gone in self.files.values() {
            touch(&gone.resources);
        }
        self.files = seen;
        self.metrics.files.store(self.files.len() as u64, Ordering::Relaxed);
        if touched.is_empty() {
            return Ok(report);
        }

        // Each touched object as the files now define it (the later file
        // wins), by reference: only what is written to the index is cloned,
        // and the index ignores an upsert of what it already holds.
        let mut now: HashMap<(Kind, &ObjectKey), (&Path, &Resource)> = HashMap::new();
        for (path, state) in &self.files {
            for r in &state.resources {
                let Some(key) = touched.get(&r.kind()).and_then(|keys| keys.get(r.key())) else { continue };
                if let Some((first, _)) = now.insert((r.kind(), key), (path, r)) {
                    tracing::warn!(
                        "{}: {} {key} is also defined in {}; the later file wins",
                        path.display(),
                        r.kind().as_str(),
                        first.display()
                    );
                }
            }
        }
        let ids = touched.iter().flat_map(|(kind, keys)| keys.iter().map(move |key| (*kind, key)));
        let changes: Vec<Change> = ids
            .map(|(kind, key)| match now.get(&(kind, key)) {
                Some((_, r)) => Change::Upsert((*r).clone()),
                None => Change::Delete(kind, key.clone()),
            })
            .collect();
        report.changes = self.index.apply(changes);
        if report.changes > 0 {
            self.metrics.reloads.fetch_add(1, Ordering::Relaxed);
            tracing::info!(files = report.files, changes = report.changes, "manifests applied");
        }
        Ok(report)
    }

    /// Follows the directory until `shutdown` completes: a scan after each
    /// burst of notifications and every [`RESYNC`], or every `follow.poll`
    /// without notifications.
    /// Notifications are set up before this returns: an edit made after it
    /// is seen. Call inside the runtime.
    pub fn run(
        self,
        follow: Follow,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> impl std::future::Future<Output = ()> {
        let wake = Arc::new(tokio::sync::Notify::new());
        let watcher = if follow.notify { self.watch(&wake) } else { None };
        self.metrics.notifications.store(watcher.is_some(), Ordering::Relaxed);
        let every = if watcher.is_some() { RESYNC.max(follow.poll) } else { follow.poll };
        // The caller has scanned once already.
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        async move {
            // Dropping the watcher stops its notifications: it lives as long as this loop.
            let _watcher = watcher;
            self.follow(&wake, ticks, shutdown).await;
        }
    }

    async fn follow(
        mut self,
        wake: &tokio::sync::Notify,
        mut ticks: tokio::time::Interval,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = ticks.tick() => {}
                _ = wake.notified() => debounce(wake).await,
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

    /// Notifications of changes under the directory wake `wake`; None
    /// (logged) when they cannot be had.
    fn watch(&self, wake: &Arc<tokio::sync::Notify>) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher as _;
        let wake = Arc::clone(wake);
        let handler = move |event: notify::Result<notify::Event>| match event {
            // Opens and reads (our own scans among them) change nothing.
            Ok(e) if matches!(e.kind, notify::EventKind::Access(_)) && !e.need_rescan() => {}
            Ok(_) => wake.notify_one(),
            Err(e) => {
                tracing::warn!("manifests notifications: {e} (rescanning)");
                wake.notify_one();
            }
        };
        let watching = notify::recommended_watcher(handler)
            .and_then(|mut w| w.watch(&self.dir, notify::RecursiveMode::Recursive).map(|()| w));
        match watching {
            Ok(w) => {
                tracing::debug!(dir = %self.dir.display(), "following the manifests through notifications");
                Some(w)
            }
            Err(e) => {
                tracing::warn!(
                    "{}: no filesystem notifications ({e}); polling it instead (--manifests-poll)",
                    self.dir.display()
                );
                None
            }
        }
    }
}

/// How [`Manifests::run`] learns of edits.
#[derive(Debug, Clone, Copy)]
pub struct Follow {
    /// Filesystem notifications (falls back to polling when unavailable).
    pub notify: bool,
    /// The poll interval without notifications.
    pub poll: Duration,
}

/// Quiet time after a notification before scanning.
pub const DEBOUNCE: Duration = Duration::from_millis(10);
/// Longest a steady stream of notifications holds a scan back.
pub const DEBOUNCE_MAX: Duration = Duration::from_millis(100);
/// A full rescan this often even with notifications (they can be lost).
pub const RESYNC: Duration = Duration::from_secs(10);

/// Returns after [`DEBOUNCE`] without a notification, or [`DEBOUNCE_MAX`].
async fn debounce(wake: &tokio::sync::Notify) {
    let deadline = tokio::time::Instant::now() + DEBOUNCE_MAX;
    loop {
        let quiet = (tokio::time::Instant::now() + DEBOUNCE).min(deadline);
        if tokio::time::timeout_at(quiet, wake.notified()).await.is_err() || tokio::time::Instant::now() >= deadline {
            return;
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
