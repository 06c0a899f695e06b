//! Weft on Kubernetes: the typed objects `weft install` renders, the one
//! injection function both `weft inject` and mesh-control's admission webhook
//! call, and the checks `weft check` runs against a cluster.
//!
//! Everything here is built from k8s-openapi and kube types, never from YAML
//! text, so what Weft renders is what the API server's schemas accept.
#![forbid(unsafe_code)]

pub mod check;
pub mod crds;
pub mod inject;
pub mod install;
pub mod lists;
pub mod names;
pub mod webhook;
pub mod yaml;
