//! Reading, migrating and writing `report.json`.
//!
//! Reads give `path:line:col: what is wrong`, so a hand-edited or truncated
//! record points at its own fault; records of an older schema are migrated
//! (see `reports/SCHEMA.md`), newer or unknown ones refused by name. Writes go
//! to a temporary file that is then renamed, so a crash never leaves half a
//! record where a gate would read it.

use std::fs;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::load::Load;
use crate::propagation::Propagation;
use crate::report::{Report, SCHEMA_VERSION};

/// Oldest schema this build still reads (by migration).
pub const OLDEST_SCHEMA: u32 = 1;

/// Where schema-1 runs kept their propagation results, beside `report.json`.
pub const V1_PROPAGATION_FILE: &str = "propagation.json";

/// Why a record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: cannot read: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    #[error(
        "{}:{line}:{column}: schema version {found} is not supported: this build reads schemas {}..={} \
         (writes {}); re-run the benchmark or use a build of the matching version",
        path.display(), OLDEST_SCHEMA, SCHEMA_VERSION, SCHEMA_VERSION
    )]
    Schema { path: PathBuf, line: usize, column: usize, found: String },
}

/// Just enough of a record to check its version before trusting the rest of
/// its layout: a newer record may have fields that would otherwise fail with
/// a confusing type error instead of a version error.
#[derive(Deserialize)]
struct Probe {
    schema: Option<serde_json::Value>,
}

/// Read a `report.json` of any supported schema, migrated to this build's.
///
/// A schema-1 record kept its propagation results in `propagation.json`
/// beside it; when that file is there, its results become the migrated
/// record's `propagation`.
pub fn read_report(path: &Path) -> Result<Report, ReadError> {
    let text = fs::read_to_string(path).map_err(|source| ReadError::Io { path: path.to_owned(), source })?;
    let (mut report, from) = parse_versioned(&text, path)?;
    if from == 1 && report.propagation.is_empty() {
        let sibling = path.with_file_name(V1_PROPAGATION_FILE);
        if sibling.is_file() {
            report.propagation = read_v1_propagation(&sibling)?;
        }
    }
    Ok(report)
}

/// Parse a record from text, migrating an older schema; `path` is only used
/// in messages.
pub fn parse_report(text: &str, path: &Path) -> Result<Report, ReadError> {
    parse_versioned(text, path).map(|(report, _)| report)
}

/// The record and the schema it was written in.
fn parse_versioned(text: &str, path: &Path) -> Result<(Report, u32), ReadError> {
    let probe: Probe = serde_json::from_str(text).map_err(|e| parse_error(path, &e, 0, text))?;
    let (line, column) = key_position(text, "\"schema\"").unwrap_or((1, 1));
    let version = match &probe.schema {
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| (OLDEST_SCHEMA..=SCHEMA_VERSION).contains(v)),
        Some(_) => None,
        None => {
            return Err(ReadError::Parse {
                path: path.to_owned(),
                line: 1,
                column: 1,
                message: "missing field `schema`: not a Weft report record".to_owned(),
            });
        }
    };
    let Some(version) = version else {
        let found = probe.schema.map(|s| s.to_string()).unwrap_or_default();
        return Err(ReadError::Schema { path: path.to_owned(), line, column, found });
    };
    let mut report: Report = serde_json::from_str(text).map_err(|e| {
        let whole = parse_error(path, &e, 0, text);
        // A run's load fields are flattened, so serde places their errors at
        // the end of the run; find the field's own position instead, unless
        // serde's error comes first in the file (then it is the first fault).
        match locate_in_runs(text, path) {
            Some(load) if position(&load) < position(&whole) => load,
            _ => whole,
        }
    })?;
    // Schema 1 -> 2: the same runs, skipped and env; `propagation` and
    // `conformance` did not exist (their defaults, empty, are right) and
    // `connections_opened` was not kept (0).
    report.schema = SCHEMA_VERSION;
    Ok((report, version))
}

fn parse_error(path: &Path, e: &serde_json::Error, offset: usize, text: &str) -> ReadError {
    let (line, column) = shift(text, offset, e.line().max(1), e.column().max(1));
    ReadError::Parse { path: path.to_owned(), line, column, message: strip_position(&e.to_string()) }
}

fn position(e: &ReadError) -> (usize, usize) {
    match e {
        ReadError::Parse { line, column, .. } | ReadError::Schema { line, column, .. } => (*line, *column),
        ReadError::Io { .. } => (usize::MAX, usize::MAX),
    }
}

/// The first run whose load fields do not parse, as an error at that field.
fn locate_in_runs(text: &str, path: &Path) -> Option<ReadError> {
    top_level_array_elements(text, "runs").into_iter().find_map(|offset| {
        // Parse just this run as a `Load` (unknown keys are ignored); trailing
        // text after it is not this run's problem.
        let mut stream = serde_json::Deserializer::from_str(&text[offset..]).into_iter::<Load>();
        let e = stream.next()?.err()?;
        Some(parse_error(path, &e, offset, text))
    })
}

/// Byte offsets of the elements of the array under `key` in the top-level
/// object of well-formed JSON `text` (empty if there is none).
fn top_level_array_elements(text: &str, key: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut depth = 0usize;
    // Inside the wanted array: its depth (elements start at depth + 1).
    let mut inside: Option<usize> = None;
    let mut expect_element = false;
    let mut last_key: Option<(usize, usize)> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if expect_element && !b.is_ascii_whitespace() && b != b']' {
            out.push(i);
            expect_element = false;
        }
        match b {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                if depth == 1 {
                    last_key = Some((start, i.min(bytes.len())));
                }
            }
            b'{' | b'[' => {
                depth += 1;
                let is_key = last_key.is_some_and(|(s, e)| &text[s..e] == key);
                if b == b'[' && depth == 2 && is_key && inside.is_none() {
                    inside = Some(depth);
                    expect_element = true;
                }
            }
            b'}' | b']' => {
                if inside == Some(depth) {
                    return out;
                }
                depth = depth.saturating_sub(1);
            }
            b',' if inside == Some(depth) => expect_element = true,
            b',' if depth == 1 => last_key = None,
            _ => {}
        }
        i += 1;
    }
    out
}

/// A (line, column) inside the slice of `text` starting at `offset`, as a
/// position in `text`.
fn shift(text: &str, offset: usize, line: usize, column: usize) -> (usize, usize) {
    if offset == 0 {
        return (line, column);
    }
    let (base_line, base_column) = position_of(text, offset);
    if line == 1 {
        (base_line, base_column + column - 1)
    } else {
        (base_line + line - 1, column)
    }
}

/// `propagation.json` of a schema-1 run: `{"schema": 1, "suite": ..., "results": [...]}`.
fn read_v1_propagation(path: &Path) -> Result<Vec<Propagation>, ReadError> {
    #[derive(Deserialize)]
    struct File {
        results: Vec<Propagation>,
    }
    let text = fs::read_to_string(path).map_err(|source| ReadError::Io { path: path.to_owned(), source })?;
    serde_json::from_str::<File>(&text).map(|f| f.results).map_err(|e| parse_error(path, &e, 0, &text))
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
    text.find(needle).map(|at| position_of(text, at))
}

/// 1-based line and column of byte `at`.
fn position_of(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(at, |nl| at - nl - 1) + 1;
    (line, column)
}

/// Write a record as pretty JSON, atomically (temporary file + rename).
pub fn write_report_json(report: &Report, path: &Path) -> io::Result<()> {
    write_json(report, path)
}

/// Write any record value (a [`Report`], a [`Load`]) as pretty JSON with a
/// final newline, atomically.
pub fn write_json<T: Serialize + ?Sized>(value: &T, path: &Path) -> io::Result<()> {
    let mut json = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    json.push(b'\n');
    write_atomic(path, &json)
}

/// Write `bytes` to `path` through a temporary file in the same directory, so
/// readers see either the old file or the whole new one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path)?;
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

fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{}: not a file path", path.display()))
    })?;
    Ok(path.with_file_name(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id())))
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

    #[test]
    fn finds_the_elements_of_a_top_level_array() {
        let text = r#"{"x": {"runs": [9]}, "s": "\"runs\"", "runs": [ {"a": [1, 2]}, 3 ,"x,y"], "z": [7]}"#;
        let at = top_level_array_elements(text, "runs");
        let found: Vec<char> = at.iter().map(|&i| text[i..].chars().next().unwrap()).collect();
        assert_eq!(found, ['{', '3', '"']);
        assert_eq!(&text[at[0]..at[0] + 3], "{\"a");
        assert!(top_level_array_elements(r#"{"runs": []}"#, "runs").is_empty());
        assert!(top_level_array_elements(r#"{"other": [1]}"#, "runs").is_empty());
    }

    #[test]
    fn shift_moves_positions_into_the_whole_text() {
        let text = "ab\ncd{\"x\":\n1}";
        let offset = text.find('{').unwrap();
        assert_eq!(shift(text, offset, 1, 3), (2, 5));
        assert_eq!(shift(text, offset, 2, 1), (3, 1));
        assert_eq!(shift(text, 0, 4, 2), (4, 2));
    }
}
