//! Weft's benchmark harness: scenario suites, substrates that deploy the mesh
//! and its peers, and the runner behind the `bench` binary.
//!
//! ```text
//!  suite file ──suite::parse──> Suite ──plan::cells──> [Cell] (scenario x point x rep x variant)
//!                                                        │
//!            substrate::Local::deploy(variant) ──> Deployment { target, host, components }
//!                                                        │
//!            loadgen::run (in-process)  +  sampler (/proc, 250 ms)
//!                                                        │
//!                 reports::Report ──> report.json, report.md, report.html, latency.png
//! ```
// Not `forbid`: substrate::proc_guard must allow unsafe for its pre_exec hook.
#![deny(unsafe_code)]

#[cfg(feature = "bench")]
pub mod bins;
#[cfg(feature = "bench")]
pub mod commands;
#[cfg(feature = "bench")]
pub mod conformance;
#[cfg(feature = "bench")]
pub mod env;
#[cfg(feature = "bench")]
pub mod hardening;
#[cfg(feature = "bench")]
pub mod hostile;
#[cfg(feature = "bench")]
pub mod plan;
#[cfg(feature = "bench")]
pub mod propagation;
#[cfg(feature = "bench")]
pub mod runner;
#[cfg(feature = "bench")]
pub mod sampler;
#[cfg(feature = "bench")]
pub mod substrate;
pub mod suite;

#[cfg(feature = "bench")]
pub use runner::{run, RunError, RunOptions, RunOutcome, SubstrateKind};
