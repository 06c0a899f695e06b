//! Substrates: where a variant's processes (or a conformance topology) run.
//!
//! ```text
//!  runner / conformance ──SubstrateKind::open──> AnySubstrate ──(trait Substrate, base.rs)
//!                                                  ├── local   processes on 127.0.0.1, proxies addressed explicitly
//!                                                  ├── netns   pods as network namespaces, transparent interception (root)
//!                                                  └── kube    kind or any cluster: one plan of the suite, executed
//!                                                              through the same trait, each cell's load as a Job
//!
//!  the load step (Substrate::measure)  load.rs for local and netns (loadgen in-process),
//!                                      kube/run.rs for kind and kube (a Job, its log's record)
//!
//!  shared by the implementations     shared.rs (work area, readiness), process.rs (Proc), control.rs
//!                                    (mesh-control), manifests.rs, peers.rs (nginx, HAProxy), peers_mtls.rs
//!                                    (their chains with mTLS), probe.rs,
//!                                    enter.rs (work inside a network namespace), cluster/ (conformance model)
//!  cleanup/                          the registry every substrate registers into + the watchdog
//!  proc_guard.rs                     starting children (the one `unsafe` module of the crate)
//! ```
//!
//! No substrate reaches into another's internals: `local` and `netns` use
//! only the shared modules. Adding a substrate: a module here implementing
//! [`Substrate`], one variant in [`SubstrateKind`] and one in
//! [`AnySubstrate`] (see `select.rs`).
//!
//! Unsafe code: the crate denies it (`lib.rs`); every module below forbids
//! it, except `proc_guard`, which allows it and says why. This file and
//! `lib.rs` hold only declarations, so nothing else can allow it.

#[forbid(unsafe_code)]
mod base;
#[forbid(unsafe_code)]
pub mod cleanup;
#[forbid(unsafe_code)]
pub mod cluster;
#[forbid(unsafe_code)]
pub mod control;
#[forbid(unsafe_code)]
pub mod enter;
#[forbid(unsafe_code)]
pub mod kube;
#[forbid(unsafe_code)]
mod load;
#[forbid(unsafe_code)]
pub mod local;
#[forbid(unsafe_code)]
pub mod manifests;
#[forbid(unsafe_code)]
pub mod netns;
#[forbid(unsafe_code)]
pub mod peers;
#[forbid(unsafe_code)]
pub mod peers_mtls;
#[forbid(unsafe_code)]
pub mod probe;
pub mod proc_guard;
#[forbid(unsafe_code)]
pub mod process;
#[forbid(unsafe_code)]
pub mod run_state;
#[forbid(unsafe_code)]
mod select;
#[forbid(unsafe_code)]
pub mod shared;

pub use base::{
    Component, DeployError, Deployment, FaultStep, LoadCell, MeasureError, ProxyAdmin, Role,
    Scaled, ScenarioTopology, Substrate, Target,
};
pub use local::Local;
pub use netns::Netns;
pub use select::{clean, AnySubstrate, Refusal, SubstrateKind};

#[cfg(test)]
#[forbid(unsafe_code)]
mod unsafe_audit;
