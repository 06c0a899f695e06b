//! Weft's result records and everything that reads them: comparisons, gates,
//! and rendering (Markdown, HTML, SVG/PNG charts).

pub mod record;

pub use record::{Env, Percentiles, Report, Resource, Run, Skipped, SCHEMA_VERSION};
