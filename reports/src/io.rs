//! Reading and writing `report.json`: the record crate's reader (which
//! migrates schema-1 files and names `path:line:col` of any fault) and its
//! atomic writers, here so every reader of `reports` finds them in one place.

pub use record::io::{parse_report, read_report, write_atomic, write_json, write_report_json, ReadError, OLDEST_SCHEMA};
