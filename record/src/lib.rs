//! Weft's one result record: what loadgen measures, what the propagation
//! harness times and what the conformance suite checks, in one schema that
//! every reader (compare, render, gate, export) takes as is.
//!
//! ```text
//!   loadgen ──> Load ─┐
//!   propagation ──────┼──> Report (schema 2) ──> report.json ──> compare / render / gate
//!   conformance ──────┘
//! ```
#![forbid(unsafe_code)]

pub mod conformance;

pub use conformance::{Status, TestResult};
