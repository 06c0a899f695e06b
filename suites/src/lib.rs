//! Weft's benchmark harness: scenario suites, substrates that deploy the mesh
//! and its peers, and the runner behind the `bench` binary.
//!
//! ```text
//!  suite file ──suite::parse──> Suite ──plan::cells──> [Cell] (scenario x point x rep x variant)
//!                                                        │
//!    substrate::SubstrateKind::open ──> Substrate::deploy(variant) ──> Deployment { target, host, components }
//!                                                        │
//!   loadgen::run (in-process)  +  sampler (/proc, 250 ms)  +  crosscheck (proxies' /metrics)
//!                                                        │
//!                 reports::Report ──> report.json, report.md, report.html, latency.png
//! ```
//!
//! Unsafe code: denied here, forbidden on every module declared below but
//! `substrate`, which forbids it on every module but `proc_guard` (the one
//! that must allow it, for `pre_exec`; it says why). This file and
//! `substrate/mod.rs` only declare modules (`substrate::unsafe_audit` checks it).
#![deny(unsafe_code)]

#[cfg(feature = "bench")]
#[forbid(unsafe_code)]
pub mod bins;
#[cfg(feature = "bench")]
#[forbid(unsafe_code)]
pub mod capacity;
#[cfg(feature = "bench")]
#[forbid(unsafe_code)]
pub mod commands;
#[cfg(feature = "bench")]
#[forbid(unsafe_code)]
pub mod conformance;
#[cfg(feature = "bench")]
#[forbid(unsafe_code)]
pub mod cpu_limit;
#[cfg(feature = "bench")]
#[forbid(unsafe_code)]
pub mod crosscheck;
#[cfg(feature = "bench")]
#[forbid(unsafe_code)]
pub mod env;
#[cfg(feature = "bench")]
#[forbid(unsafe_code)]
pub mod gate;
#[cfg(feature = "bench")]
#[forbid(unsafe_code)]
pub mod hardening;
#[cfg(feature = "bench")]
#[forbid(unsafe_code)]
pub mod hostile;
#[cfg(feature = "bench")]
#[forbid(unsafe_code)]
pub mod plan;
#[cfg(feature = "bench")]
#[forbid(unsafe_code)]
pub mod propagation;
#[cfg(feature = "bench")]
#[forbid(unsafe_code)]
pub mod runner;
#[cfg(feature = "bench")]
#[forbid(unsafe_code)]
pub mod sampler;
#[cfg(feature = "bench")]
pub mod substrate;
#[cfg(feature = "bench")]
#[forbid(unsafe_code)]
pub mod sweep;
#[forbid(unsafe_code)]
pub mod suite;

#[cfg(feature = "bench")]
pub use runner::{run, RunError, RunOptions, RunOutcome};
#[cfg(feature = "bench")]
pub use substrate::SubstrateKind;
