//! Everything that reads Weft's result record: comparisons, the conformance
//! matrix, gates, and rendering (Markdown, HTML, SVG/PNG charts). The record
//! itself is the `record` crate, re-exported here.
//!
//! To publish a record (e.g. from `bench conformance`): fill a
//! [`Report`] (`Report::new`, then `runs`, `propagation` or `conformance`),
//! write it with [`io::write_report_json`], render it with
//! [`render::write_all`], and check it with [`gate::evaluate`] over a
//! [`compare::Comparison`].
//!
//! ```text
//!   report.json ──io::read_report──> Report ──Comparison::of──> Comparison (computed once)
//!   (schema 1 migrated)                                              │
//!                                  ┌─────────────────┬───────────────┼───────────────┐
//!                                  ▼                 ▼               ▼               ▼
//!                           render::markdown   render::html   render::latency_png  gate::evaluate
//!                                                (+ SVG charts)                     (ci/gates.toml)
//! ```
//!
//! Beside those: [`export`] writes a record's cells as Service Mesh
//! Performance JSON and HdrHistogram interval logs, and [`diff`] compares two
//! records cell by cell with [`noise`]'s verdict (`bench compare`).
//!
//! Nothing here measures anything: every function reads a [`Report`], so a
//! report or a gate can be re-run on old results without re-running load.
#![forbid(unsafe_code)]

pub mod compare;
pub mod conformance;
pub mod diff;
pub mod export;
pub mod gate;
pub mod io;
pub mod noise;
#[cfg(feature = "render")]
pub mod render;

/// The record types, as `reports::record::...` for callers that name the module.
pub use ::record;
pub use record::hist;
pub use record::{Env, HostCpu, Load, Percentiles, Propagation, Report, Resource, Run, Skipped, Status, TestResult, SCHEMA_VERSION};
