//! Service Mesh Performance (SMP) JSON: one document per load cell.
//!
//! Follows the SMP messages of `protos/service_mesh_performance.proto`
//! (package `smp`) of github.com/service-mesh-performance/service-mesh-performance
//! at revision 290495f: `PerformanceTestConfig`, `PerformanceTestResult`,
//! `ServiceMeshConfig` and `EnvironmentConfig`, each in the proto3 JSON
//! mapping with the proto's field names (as Meshery's Go structs write them).
//! SMP has no message holding all four, so a document is an object with one
//! key per message plus `weft`, what SMP has no field for (errors, p99.9,
//! every repetition). `reports/SCHEMA.md` lists what is filled and what is left out.

use serde_json::{json, Map, Value};

use super::ExportError;
use crate::compare::{load_label, median, Cell, Comparison};
use crate::Run;

/// What each document's `smp_version` says: the spec revision followed.
pub const SMP_VERSION: &str = "service_mesh_performance.proto@290495f";

const MB: f64 = 1_000_000.0;

/// A latency in ms, from µs, kept to the µs.
fn ms(us: f64) -> f64 {
    (us * 1000.0).round() / 1_000_000.0
}

/// `1.5s`, `30s`: the SMP `duration` string (Go's duration syntax).
fn duration(s: f64) -> String {
    format!("{}s", crate::compare::trim_float((s * 1000.0).round() / 1000.0))
}

fn labels(pairs: &[(&str, String)]) -> Value {
    Value::Object(pairs.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| ((*k).to_owned(), Value::String(v.clone()))).collect())
}

/// Cores used by the resources of `role` in a run, in milli-cores; `None`
/// without such a resource.
fn mcores(run: &Run, role: &str) -> Option<f64> {
    let of_role: Vec<_> = run.resources.iter().filter(|r| r.role == role).collect();
    if of_role.is_empty() || run.load.duration_s <= 0.0 {
        return None;
    }
    Some(of_role.iter().map(|r| r.cpu_seconds).sum::<f64>() / run.load.duration_s * 1000.0)
}

/// Median over a cell's repetitions of what `f` gives (skipping `None`).
fn median_of(runs: &[&Run], f: impl Fn(&Run) -> Option<f64>) -> Option<f64> {
    let mut v: Vec<f64> = runs.iter().filter_map(|r| f(r)).collect();
    (!v.is_empty()).then(|| median(&mut v))
}

/// The SMP document of one cell. `id` names it (the file stem), `hdr_log`
/// the interval log written beside it, if any.
pub fn cell_document(cmp: &Comparison<'_>, cell: &Cell, id: &str, hdr_log: Option<&str>) -> Result<Value, ExportError> {
    let report = cmp.report;
    let env = &report.env;
    let runs: Vec<&Run> = cmp.runs_of(cell).collect();
    let mut mins = Vec::new();
    let mut repetitions = Vec::new();
    for r in &runs {
        let h = r.load.latency_histogram().map_err(|e| ExportError::Histogram {
            subject: format!("{} repetition {}", cell.subject(), r.repetition),
            detail: e.to_string(),
        })?;
        let min = if h.is_empty() { 0.0 } else { h.min() as f64 };
        mins.push(min);
        let p = &r.load.latency_us;
        repetitions.push(json!({
            "repetition": r.repetition,
            "requests": r.load.requests,
            "errors": r.load.errors,
            "actual_qps": r.load.achieved_rps,
            "latencies_ms": {
                "min": ms(min), "average": ms(p.mean), "p50": ms(p.p50), "p90": ms(p.p90),
                "p99": ms(p.p99), "p999": ms(p.p999), "max": ms(p.max),
            },
        }));
    }
    let l = &cell.latency_us;
    let scenario_labels = [
        ("suite", report.suite.clone()),
        ("substrate", cell.substrate.clone()),
        ("scenario", cell.scenario.clone()),
        ("variant", cell.variant.clone()),
        ("protocol", cell.protocol.clone()),
        ("mode", cell.mode.clone()),
        ("load", load_label(cell.rate, cell.concurrency)),
    ];
    let first = runs.first().map(|r| &r.load);
    let mut client = Map::new();
    client.insert("internal".into(), json!(true));
    client.insert("load_generator".into(), json!("weft-loadgen"));
    // SMP's protocol enum knows HTTP, TCP, UDP and gRPC; a WebSocket starts as HTTP.
    let smp_protocol = match cell.protocol.as_str() {
        "grpc" | "grpc-stream" => "PROTOCOL_GRPC",
        "tcp" | "tcp-churn" => "PROTOCOL_TCP",
        _ => "PROTOCOL_HTTP",
    };
    client.insert("protocol".into(), json!(smp_protocol));
    if let Some(load) = first {
        client.insert("connections".into(), json!(load.connections));
    }
    if let Some(rate) = cell.rate {
        client.insert("rps".into(), json!(rate.round() as i64));
    }
    let config_labels = [
        ("concurrency", cell.concurrency.map(|c| c.to_string()).unwrap_or_default()),
        ("body_size_bytes", first.map(|l| l.body_size.to_string()).unwrap_or_default()),
        ("warmup", first.map(|l| duration(l.warmup_s)).unwrap_or_default()),
        ("repetitions", cell.repetitions.to_string()),
    ];
    let config = json!({
        "smp_version": SMP_VERSION,
        "id": id,
        "name": format!("{} {} {}", report.suite, cell.substrate, cell.subject()),
        "labels": labels(&[&scenario_labels[..], &config_labels[..]].concat()),
        "clients": [Value::Object(client)],
        "duration": first.map(|l| duration(l.duration_s)).unwrap_or_default(),
    });
    let result = json!({
        "smp_version": SMP_VERSION,
        "id": id,
        "labels": labels(&scenario_labels),
        "start_time": report.started_at,
        "end_time": report.finished_at,
        "latencies_ms": {
            "min": ms(median(&mut mins.clone())),
            "average": ms(l.mean),
            "p50": ms(l.p50),
            "p90": ms(l.p90),
            "p99": ms(l.p99),
            "max": ms(l.max),
        },
        "actual_qps": cell.achieved_rps,
        "test_id": id,
        "mesh_config_id": id,
        "env_id": env.host,
    });
    let mut mesh = Map::new();
    mesh.insert("smp_version".into(), json!(SMP_VERSION));
    mesh.insert("id".into(), json!(id));
    mesh.insert("labels".into(), labels(&[("variant", cell.variant.clone())]));
    let proxies = runs.first().map_or(0, |r| r.resources.iter().filter(|x| x.role == "proxy").count());
    if proxies > 0 {
        let mut sidecar = Map::new();
        sidecar.insert("count".into(), json!(proxies));
        if let Some(m) = median_of(&runs, |r| mcores(r, "proxy")) {
            sidecar.insert("cpu_mcores".into(), json!(m.round() as i64));
        }
        if let Some(b) = cell.proxy_rss_peak {
            sidecar.insert("mem_mb".into(), json!((b as f64 / MB).round() as i64));
        }
        sidecar.insert("rps".into(), json!(cell.achieved_rps.round() as i64));
        mesh.insert("sidecar".into(), Value::Object(sidecar));
    }
    if let Some(b) = cell.control_rss_peak {
        let mut control = Map::new();
        control.insert("count".into(), json!(1));
        if let Some(m) = median_of(&runs, |r| mcores(r, "control")) {
            control.insert("cpu_mcores".into(), json!(m.round() as i64));
        }
        control.insert("mem_mb".into(), json!((b as f64 / MB).round() as i64));
        mesh.insert("mesh_control_plane".into(), Value::Object(control));
    }
    let weft_variant = cell.variant == "weft" || cell.variant.starts_with("weft-");
    mesh.insert("mtls_enabled".into(), json!(cell.variant == "weft"));
    let build = if weft_variant { env.versions.get("weft") } else { env.versions.get(&cell.variant) };
    if let Some(v) = build {
        if weft_variant {
            mesh.insert("mesh_build".into(), json!(v));
        }
        mesh.insert("proxy_build".into(), json!(v));
    }
    let environment = json!({
        "smp_version": SMP_VERSION,
        "id": env.host,
        "labels": labels(&[
            ("host", env.host.clone()),
            ("kernel", env.kernel.clone()),
            ("git_rev", env.git_rev.clone()),
            ("substrate", cell.substrate.clone()),
        ]),
        "nodes": [{ "type": cell.substrate, "cores": env.cores }],
    });
    let p = &cell.latency_us;
    let mut weft = json!({
        "record": "report.json",
        "latency": "corrected: from each request's scheduled send to the end of its response",
        "aggregation": "latencies_ms, actual_qps and cpu_mcores are medians over the repetitions; mem_mb the largest peak",
        "requests": cell.requests,
        "errors": cell.errors,
        "errors_by_class": errors_by_class(&runs),
        "late_sends": cell.late_sends,
        "latencies_ms": { "p999": ms(p.p999), "p9999": ms(p.p9999) },
        "repetitions": repetitions,
    });
    if let Some(f) = hdr_log {
        weft["hdr_log"] = json!(f);
    }
    Ok(json!({
        "smp_version": SMP_VERSION,
        "performance_test_config": config,
        "performance_test_result": result,
        "service_mesh_config": Value::Object(mesh),
        "environment_config": environment,
        "weft": weft,
    }))
}

fn errors_by_class(runs: &[&Run]) -> Value {
    let mut sum = std::collections::BTreeMap::<String, u64>::new();
    for r in runs {
        for (k, v) in &r.load.errors_by_class {
            *sum.entry(k.clone()).or_default() += v;
        }
    }
    json!(sum)
}
