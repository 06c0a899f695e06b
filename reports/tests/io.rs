mod common;

use std::fs;

use reports::io::{read_report, write_report_json, ReadError};

#[test]
fn write_then_read_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let r = common::healthy();
    write_report_json(&r, &path).unwrap();
    assert_eq!(read_report(&path).unwrap(), r);
    let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("report.json")], "no temp files left behind");
    assert!(fs::read_to_string(&path).unwrap().contains("\n  \"schema\": 1,"), "pretty JSON");
}

#[test]
fn broken_json_names_path_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    fs::write(&path, "{\n  \"schema\": 1,\n  \"suite\": \"quick\",\n  \"env\": {,\n}\n").unwrap();
    let err = read_report(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ReadError::Parse { line: 4, .. }), "{err:?}");
    assert!(msg.starts_with(&format!("{}:4:11: ", path.display())), "{msg}");
    assert!(!msg.contains(" at line "), "position is not repeated: {msg}");
}

#[test]
fn wrong_field_type_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let mut value = serde_json::to_value(common::report(vec![common::run("s", "weft", 10.0, 0, 100)])).unwrap();
    value["runs"][0]["requests"] = "many".into();
    let json = serde_json::to_string_pretty(&value).unwrap();
    let line = json.lines().position(|l| l.contains("\"many\"")).unwrap() + 1;
    fs::write(&path, json).unwrap();
    let msg = read_report(&path).unwrap_err().to_string();
    assert!(msg.starts_with(&format!("{}:{line}:", path.display())), "{msg}");
    assert!(msg.contains("invalid type"), "{msg}");
}

#[test]
fn schema_2_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.json");
    fs::write(&path, "{\n  \"schema\": 2,\n  \"something\": \"new\"\n}\n").unwrap();
    let err = read_report(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ReadError::Schema { .. }), "{err:?}");
    assert!(msg.starts_with(&format!("{}:2:3: schema version 2 is not supported", path.display())), "{msg}");
    assert!(msg.contains("reads schema 1"), "{msg}");
}

#[test]
fn missing_schema_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.json");
    fs::write(&path, "{\"suite\": \"q\"}").unwrap();
    assert!(read_report(&path).unwrap_err().to_string().contains("missing field `schema`"));
    let err = read_report(&dir.path().join("nope.json")).unwrap_err();
    assert!(matches!(err, ReadError::Io { .. }));
    assert!(err.to_string().contains("nope.json: cannot read"), "{err}");
}
