//! Reading and writing `report.json`.
//!
//! Reads give `path:line:col: what is wrong`, so a hand-edited or truncated
//! record points at its own fault; writes go to a temporary file that is then
//! renamed, so a crash never leaves half a record where a gate would read it.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::record::{Report, SCHEMA_VERSION};

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: cannot read: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    #[error(
        "{}:{line}:{column}: schema version {found} is not supported: this build reads schema {}; \
         re-run the benchmark or use a build of the matching version",
        path.display(), SCHEMA_VERSION
    )]
    Schema { path: PathBuf, line: usize, column: usize, found: String },
}

/// Just enough of a record to check its version before trusting the rest of
/// its layout: a schema-2 record may have fields that would otherwise fail
/// with a confusing type error instead of a version error.
#[derive(Deserialize)]
struct Probe {
    schema: Option<serde_json::Value>,
}

/// Read and validate a `report.json`.
pub fn read_report(path: &Path) -> Result<Report, ReadError> {
    let text = fs::read_to_string(path).map_err(|source| ReadError::Io { path: path.to_owned(), source })?;
    parse_report(&text, path)
}

/// Parse a record from text; `path` is only used in messages.
pub fn parse_report(text: &str, path: &Path) -> Result<Report, ReadError> {
    let parse_err = |e: serde_json::Error| ReadError::Parse {
        path: path.to_owned(),
        line: e.line().max(1),
        column: e.column().max(1),
        message: strip_position(&e.to_string()),
    };
    let probe: Probe = serde_json::from_str(text).map_err(parse_err)?;
    let (line, column) = key_position(text, "\"schema\"").unwrap_or((1, 1));
    match &probe.schema {
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(u64::from(SCHEMA_VERSION)) => {}
        Some(other) => {
            return Err(ReadError::Schema { path: path.to_owned(), line, column, found: other.to_string() });
        }
        None => {
            return Err(ReadError::Parse {
                path: path.to_owned(),
                line: 1,
                column: 1,
                message: "missing field `schema`: not a Weft report record".to_owned(),
            });
        }
    }
    serde_json::from_str(text).map_err(parse_err)
}

/// serde_json appends " at line L column C" to its messages; we print the
/// position up front instead, so drop the duplicate.
fn strip_position(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// 1-based line and column of the first occurrence of `needle`.
fn key_position(text: &str, needle: &str) -> Option<(usize, usize)> {
    let at = text.find(needle)?;
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(at, |nl| at - nl - 1) + 1;
    Some((line, column))
}

/// Write a record as pretty JSON, atomically (temporary file + rename).
pub fn write_report_json(report: &Report, path: &Path) -> io::Result<()> {
    let mut json = serde_json::to_vec_pretty(report).map_err(io::Error::other)?;
    json.push(b'\n');
    write_atomic(path, &json)
}

/// Write `bytes` to `path` through a temporary file in the same directory, so
/// readers see either the old file or the whole new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // Best effort: the error that matters is the one being returned.
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".to_owned());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_position_counts_lines_and_columns() {
        assert_eq!(key_position("{\n  \"schema\": 2\n}", "\"schema\""), Some((2, 3)));
        assert_eq!(key_position("{\"schema\":2}", "\"schema\""), Some((1, 2)));
    }

    #[test]
    fn strip_position_drops_serde_suffix() {
        assert_eq!(strip_position("expected value at line 3 column 7"), "expected value");
    }
}
