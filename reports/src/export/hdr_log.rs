//! HdrHistogram interval logs: one file per load cell, one interval per
//! repetition, the format of HdrHistogram's `HistogramLogWriter` that its
//! `HistogramLogProcessor`, the Python `hdrh` package's `HistogramLogReader`
//! and the Rust crate's `IntervalLogIterator` read.
//!
//! Values are the record's own histograms, unchanged: the corrected latency
//! in **microseconds** (lowest 1, highest 60,000,000, 3 significant digits),
//! V2 deflate ("HISTF...") encoded. The interval lines' max column is in
//! milliseconds (MaxValueDivisor 1000); HistogramLogProcessor prints
//! milliseconds with `-outputValueUnitRatio 1000`.

use std::time::Duration;

use hdrhistogram::serialization::interval_log::{IntervalLogIterator, IntervalLogWriterBuilder, LogEntry};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;

use super::ExportError;
use crate::compare::{load_label, Cell, Comparison};

/// The interval log of one cell: its repetitions in run order, laid end to
/// end from 0 s (each interval as long as its measured window). The record
/// keeps no wall-clock start per repetition, so the offsets are not times of
/// day; `StartTime`/`BaseTime` are the record's `started_at`.
pub fn cell_log(cmp: &Comparison<'_>, cell: &Cell) -> Result<Vec<u8>, ExportError> {
    let report = cmp.report;
    let mut builder = IntervalLogWriterBuilder::new();
    builder
        .add_comment("[Histogram log format version 1.3]")
        .add_comment(&format!(
            "[Weft bench record: suite {}, cell {} {} ({}, {} loop, {})]",
            report.suite,
            cell.substrate,
            cell.subject(),
            cell.protocol,
            cell.mode,
            load_label(cell.rate, cell.concurrency)
        ))
        .add_comment(
            "[Values in microseconds: corrected latency, scheduled send to end of response; interval max column in ms]",
        )
        .add_comment(&format!(
            "[One interval per repetition (0..{}), in run order; the measured windows laid end to end, not times of day]",
            cell.repetitions
        ))
        .with_max_value_divisor(1000.0);
    if let Ok(start) = humantime::parse_rfc3339_weak(&report.started_at) {
        builder.with_start_time(start).with_base_time(start);
    }
    let mut out = Vec::new();
    let mut serializer = V2DeflateSerializer::new();
    let mut writer = builder.begin_log_with(&mut out, &mut serializer).map_err(|e| ExportError::Hdr(e.to_string()))?;
    let mut offset = 0.0f64;
    for run in cmp.runs_of(cell) {
        let h = run.load.latency_histogram().map_err(|e| ExportError::Histogram {
            subject: format!("{} repetition {}", cell.subject(), run.repetition),
            detail: e.to_string(),
        })?;
        let length = run.load.duration_s.max(0.0);
        writer
            .write_histogram(&h, secs(offset), secs(length), None)
            .map_err(|e| ExportError::Hdr(e.to_string()))?;
        offset += length;
    }
    Ok(out)
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() { s } else { 0.0 })
}

/// The histograms of an interval log, in order (what a reader of the file
/// gets back); for tests and `bench export`'s own check.
pub fn read_log(bytes: &[u8]) -> Result<Vec<Histogram<u64>>, ExportError> {
    let mut out = Vec::new();
    for entry in IntervalLogIterator::new(bytes) {
        match entry.map_err(|e| ExportError::Hdr(format!("{e:?}")))? {
            LogEntry::Interval(i) => out.push(
                record::hist::decode(i.encoded_histogram()).map_err(|e| ExportError::Hdr(e.to_string()))?,
            ),
            LogEntry::StartTime(_) | LogEntry::BaseTime(_) => {}
        }
    }
    Ok(out)
}
