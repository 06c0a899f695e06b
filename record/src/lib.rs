//! Weft's one result record: what loadgen measures, what the propagation
//! harness times and what the conformance suite checks, in one schema that
//! every reader (compare, render, gate, export) takes as is.
//!
//! ```text
//!   loadgen::run ──> Load ──(+ scenario, variant, resources, proxy_counts)──> Run ─┐
//!   propagation harness ──> Propagation ────────────────────────────┼──> Report (schema 2)
//!   bench conformance ──> TestResult ───────────────────────────────┘        │
//!                                                     io::write_report_json  ▼
//!                        compare / render / gate <── io::read_report <── report.json
//!                                                    (schema 1 migrated)
//! ```
//!
//! Histograms travel as HDR V2 deflate + base64 strings ([`hist`]), so a
//! record is plain JSON and still lossless. Every field is documented in
//! `reports/SCHEMA.md`.
#![forbid(unsafe_code)]

pub mod capacity;
pub mod conformance;
pub mod crosscheck;
pub mod faults;
pub mod hist;
pub mod hostile;
pub mod io;
pub mod load;
pub mod propagation;
pub mod report;
pub mod soak;
pub mod summary;
pub mod sweep;

pub use capacity::CapacityRun;
pub use conformance::{Status, TestResult};
pub use crosscheck::{CrossCheck, ProxyWindow, Sent};
pub use faults::{FaultRun, Hardening, OverloadRun};
pub use soak::Soak;
pub use summary::{CellId, CellSummary};
pub use sweep::{SweepPoint, SweepRun};
pub use hist::HistogramError;
pub use hostile::HostileRun;
pub use load::{Load, Percentiles};
pub use propagation::Propagation;
pub use report::{Env, HostCpu, Report, Resource, Run, Skipped, SCHEMA_VERSION};
