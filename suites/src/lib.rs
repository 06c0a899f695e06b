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

pub mod bins;
pub mod commands;
pub mod conformance;
pub mod env;
pub mod hardening;
pub mod hostile;
pub mod plan;
pub mod propagation;
pub mod runner;
pub mod sampler;
pub mod substrate;
pub mod suite;

pub use runner::{run, RunError, RunOptions, RunOutcome, SubstrateKind};
