//! Weft's result records and everything that reads them: comparisons, gates,
//! and rendering (Markdown, HTML, SVG/PNG charts).
//!
//! ```text
//!   report.json ──io::read_report──> Report ──compare::cells──> Vec<Cell>
//!                                      │                          │
//!                                      │            ┌─────────────┼──────────────┐
//!                                      │            ▼             ▼              ▼
//!                                      │     render::markdown  render::html   gate::evaluate
//!                                      │            (tables)   (+ SVG charts)  (ci/gates.toml)
//!                                      └──hist::decode──> HDR histograms ──> latency spectrum
//! ```
//!
//! Nothing here measures anything: every function reads a [`Report`], so a
//! report or a gate can be re-run on old results without re-running load.
#![forbid(unsafe_code)]

pub mod compare;
pub mod gate;
pub mod hist;
pub mod io;
pub mod record;
pub mod render;

pub use record::{Env, Percentiles, Report, Resource, Run, Skipped, SCHEMA_VERSION};
