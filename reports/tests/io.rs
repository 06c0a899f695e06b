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
    assert!(fs::read_to_string(&path).unwrap().contains("\n  \"schema\": 2,"), "pretty JSON");
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
fn unknown_schemas_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.json");
    for (found, text) in [("3", "3"), ("0", "0"), ("\"2\"", "\"2\"")] {
        fs::write(&path, format!("{{\n  \"schema\": {text},\n  \"something\": \"new\"\n}}\n")).unwrap();
        let err = read_report(&path).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ReadError::Schema { .. }), "{err:?}");
        assert!(msg.starts_with(&format!("{}:2:3: schema version {found} is not supported", path.display())), "{msg}");
        assert!(msg.contains("reads schemas 1..=2 (writes 2)"), "{msg}");
    }
}

/// Two faults: the one earlier in the file is named, whichever kind it is.
#[test]
fn the_first_fault_in_the_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let runs = vec![common::run("s", "weft", 10.0, 0, 100), common::run("s", "weft", 10.0, 1, 100)];
    let mut value = serde_json::to_value(common::report(runs)).unwrap();
    value["runs"][0]["repetition"] = "first".into();
    value["runs"][1]["errors"] = "some".into();
    let json = serde_json::to_string_pretty(&value).unwrap();
    let line = json.lines().position(|l| l.contains("\"first\"")).unwrap() + 1;
    fs::write(&path, &json).unwrap();
    let msg = read_report(&path).unwrap_err().to_string();
    assert!(msg.starts_with(&format!("{}:{line}:", path.display())), "{msg}");

    value["runs"][0]["repetition"] = 0.into();
    value["runs"][0]["late_sends"] = "late".into();
    value["runs"][1]["repetition"] = "second".into();
    let json = serde_json::to_string_pretty(&value).unwrap();
    let line = json.lines().position(|l| l.contains("\"late\"")).unwrap() + 1;
    fs::write(&path, &json).unwrap();
    let msg = read_report(&path).unwrap_err().to_string();
    assert!(msg.starts_with(&format!("{}:{line}:", path.display())), "{msg}");
}

#[test]
fn a_wrong_type_in_a_runs_own_field_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let mut value = serde_json::to_value(common::report(vec![common::run("s", "weft", 10.0, 0, 100)])).unwrap();
    value["runs"][0]["repetition"] = "first".into();
    let json = serde_json::to_string_pretty(&value).unwrap();
    let line = json.lines().position(|l| l.contains("\"first\"")).unwrap() + 1;
    fs::write(&path, json).unwrap();
    let msg = read_report(&path).unwrap_err().to_string();
    assert!(msg.starts_with(&format!("{}:{line}:", path.display())), "{msg}");
}

/// A schema-1 record: the same runs, no `propagation` or `conformance`, and
/// its propagation results in `propagation.json` beside it.
#[test]
fn schema_1_records_are_migrated_with_their_propagation_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let current = common::report(vec![common::run("s", "weft", 10.0, 0, 100)]);
    let mut v1 = serde_json::to_value(&current).unwrap();
    v1["schema"] = 1.into();
    let obj = v1.as_object_mut().unwrap();
    obj.remove("propagation");
    obj.remove("conformance");
    obj["runs"][0].as_object_mut().unwrap().remove("connections_opened");
    fs::write(&path, serde_json::to_string_pretty(&v1).unwrap()).unwrap();

    let read = read_report(&path).unwrap();
    assert_eq!(read.schema, 2, "migrated in memory");
    assert!(read.propagation.is_empty() && read.conformance.is_empty());
    assert_eq!(read.runs[0].load.connections_opened, 0, "not kept by schema 1");
    let mut expected = current.clone();
    expected.runs[0].load.connections_opened = 0;
    assert_eq!(read, expected);

    fs::write(
        dir.path().join("propagation.json"),
        r#"{"schema": 1, "suite": "quick", "results": [{"scenario": "discovery", "repetition": 0,
            "services": 20, "endpoints": 40, "changes": 2, "poll_ms": 250.0, "startup_ms": 90.5,
            "samples_ms": [120.0, 240.0], "p50_ms": 120.0, "p99_ms": 240.0, "max_ms": 240.0,
            "control_rss_bytes": 31457280}]}"#,
    )
    .unwrap();
    let read = read_report(&path).unwrap();
    assert_eq!(read.propagation.len(), 1);
    let p = &read.propagation[0];
    assert_eq!((p.scenario.as_str(), p.services, p.samples_ms.as_slice()), ("discovery", 20, &[120.0, 240.0][..]));

    // Written back, it is a schema-2 record that holds the propagation itself.
    fs::remove_file(dir.path().join("propagation.json")).unwrap();
    write_report_json(&read, &path).unwrap();
    let again = read_report(&path).unwrap();
    assert_eq!(again, read);

    // A broken propagation.json beside a schema-1 record is named, not ignored.
    v1["schema"] = 1.into();
    fs::write(&path, serde_json::to_string_pretty(&v1).unwrap()).unwrap();
    fs::write(dir.path().join("propagation.json"), "{\"results\": [1]}").unwrap();
    let msg = read_report(&path).unwrap_err().to_string();
    assert!(msg.starts_with(&format!("{}:1:", dir.path().join("propagation.json").display())), "{msg}");
}

/// A schema-2 record ignores a stray `propagation.json`: its own field is the truth.
#[test]
fn schema_2_records_do_not_read_propagation_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    write_report_json(&common::healthy(), &path).unwrap();
    fs::write(dir.path().join("propagation.json"), "not json").unwrap();
    assert_eq!(read_report(&path).unwrap(), common::healthy());
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

/// `bench run`'s exports: an SMP document and an HdrHistogram interval log
/// per cell; the log gives back every repetition's histogram exactly, and
/// the SMP figures are the cell's (what the report shows).
#[test]
fn exports_write_an_smp_document_and_an_interval_log_per_cell() {
    use reports::compare::Comparison;
    use reports::export::{self, hdr_log, smp};
    let dir = tempfile::tempdir().unwrap();
    let mut r = common::healthy();
    // A control plane on the weft cells, so the SMP mesh_control_plane is filled.
    for run in r.runs.iter_mut().filter(|x| x.variant == "weft") {
        run.resources.push(reports::Resource {
            component: "control".into(),
            role: "control".into(),
            rss_peak_bytes: 20 * common::MIB,
            rss_mean_bytes: 19 * common::MIB,
            rss_anon_peak_bytes: None,
            cpu_seconds: 0.5,
            samples: 40,
        });
    }
    let written = export::write_beside(&r, dir.path()).unwrap();
    assert_eq!((written.smp.len(), written.hdr.len()), (8, 8), "one of each per cell");
    let cmp = Comparison::of(&r);
    let cell = cmp.cells.iter().find(|c| c.variant == "weft" && c.rate == Some(1000.0)).unwrap();
    let stem = export::cell_stem(cell);
    assert_eq!(stem, "local_http1-small_http1_weft_1000rps");

    // The interval log: one interval per repetition, the record's histograms unchanged.
    let log = fs::read(dir.path().join("hdr").join(format!("{stem}.hlog"))).unwrap();
    let text = String::from_utf8(log.clone()).unwrap();
    assert!(text.contains("#[Values in microseconds") && text.contains("#[StartTime: 1767323045.000"), "{text}");
    let back = hdr_log::read_log(&log).unwrap();
    let runs: Vec<_> = cmp.runs_of(cell).collect();
    assert_eq!(back.len(), 3);
    for (h, run) in back.iter().zip(&runs) {
        assert_eq!(*h, run.load.latency_histogram().unwrap());
    }
    let intervals: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert!(intervals[0].starts_with("0.000,10.000,") && intervals[2].starts_with("20.000,10.000,"), "{intervals:?}");

    // The SMP document.
    let doc: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join("smp").join(format!("{stem}.json"))).unwrap()).unwrap();
    assert_eq!(doc["smp_version"], smp::SMP_VERSION);
    let res = &doc["performance_test_result"];
    assert_eq!(res["latencies_ms"]["p50"].as_f64().unwrap(), cell.latency_us.p50 / 1000.0);
    assert_eq!(res["latencies_ms"]["p99"].as_f64().unwrap(), cell.latency_us.p99 / 1000.0);
    assert_eq!(res["actual_qps"].as_f64().unwrap(), cell.achieved_rps);
    assert_eq!(res["start_time"], "2026-01-02T03:04:05Z");
    let client = &doc["performance_test_config"]["clients"][0];
    assert_eq!((client["rps"].as_i64(), client["connections"].as_i64()), (Some(1000), Some(8)));
    assert_eq!(client["protocol"], "PROTOCOL_HTTP");
    assert_eq!(doc["performance_test_config"]["duration"], "10s");
    let mesh = &doc["service_mesh_config"];
    assert_eq!(mesh["mtls_enabled"], true);
    assert_eq!(mesh["mesh_build"], "0.1.0");
    // 0.2 cores per 1000 rps at 999 rps: 200 mcores; 10 MiB = 10 MB.
    assert_eq!((mesh["sidecar"]["count"].as_i64(), mesh["sidecar"]["cpu_mcores"].as_i64()), (Some(1), Some(200)));
    assert_eq!(mesh["sidecar"]["mem_mb"].as_i64(), Some(10));
    assert_eq!(mesh["mesh_control_plane"]["cpu_mcores"].as_i64(), Some(50));
    assert_eq!(doc["environment_config"]["nodes"][0]["cores"].as_i64(), Some(2));
    assert_eq!(doc["weft"]["repetitions"].as_array().unwrap().len(), 3);
    assert_eq!(doc["weft"]["hdr_log"], format!("{stem}.hlog"));
    // The baseline has no sidecar and no mesh build.
    let base = cmp.cells.iter().find(|c| c.variant == "baseline").unwrap();
    let doc: serde_json::Value = serde_json::from_slice(
        &fs::read(dir.path().join("smp").join(format!("{}.json", export::cell_stem(base)))).unwrap(),
    )
    .unwrap();
    assert!(doc["service_mesh_config"].get("sidecar").is_none() && doc["service_mesh_config"].get("mesh_build").is_none());

    // Closed loop: no target rate, the concurrency in the labels and the name.
    let mut closed = common::run("max", "weft", 1.0, 0, 300);
    (closed.load.mode, closed.load.rate, closed.load.concurrency) = ("closed".into(), None, Some(16));
    let closed_dir = dir.path().join("closed");
    let w = export::write(&common::report(vec![closed]), Some(&closed_dir), None).unwrap();
    assert_eq!((w.smp.len(), w.hdr.len()), (1, 0), "only what was asked for");
    let doc: serde_json::Value =
        serde_json::from_slice(&fs::read(closed_dir.join("local_max_http1_weft_c16.json")).unwrap()).unwrap();
    let config = &doc["performance_test_config"];
    assert!(config["clients"][0].get("rps").is_none(), "{config}");
    assert_eq!((&config["labels"]["concurrency"], &config["labels"]["mode"]), (&"16".into(), &"closed".into()));
    assert!(doc["weft"].get("hdr_log").is_none(), "no log written, none named");

    // A record without load runs has nothing to export.
    assert!(export::write(&common::conformance_only(), Some(dir.path()), None).unwrap_err().to_string().contains("no load runs"));
}

/// A record `bench run` wrote (with its derived `cells` section) reads and
/// writes back byte for byte: tests/data/stored-record.json was written
/// before the cell identity became one flattened `record::CellId`.
#[test]
fn a_stored_record_round_trips_byte_for_byte() {
    let stored = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/stored-record.json");
    let r = read_report(&stored).unwrap();
    assert!(!r.cells.is_empty(), "the fixture has a cells section");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    write_report_json(&r, &path).unwrap();
    assert_eq!(fs::read_to_string(&path).unwrap(), fs::read_to_string(&stored).unwrap());
}
