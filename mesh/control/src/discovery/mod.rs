//! Discovery backends: where the index's objects come from. Each backend only
//! turns its source's objects into [`mesh_index::model::Change`]s; the
//! conversions are shared so both produce the same index.
//!
//! ```text
//!  manifests dir (*.yaml, inotify) ─┐  convert / gateway / authz  ┌─> Index::apply
//!  Kubernetes API (kube watchers)  ─┘  (k8s types -> model)       └─> Index::replace_kind
//! ```

pub mod authz;
pub mod convert;
pub mod gateway;
pub mod kubernetes;
pub mod manifests;
