//! `bench run` end to end on the local substrate with every kind of hop (the
//! meshed `weft` with its control plane and mTLS, plaintext sidecars, the
//! peer proxies), then `bench report` and `bench gate` on its output.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use common::*;

const TINY: &str = r#"
name = "tiny"
description = "end-to-end test"
[defaults]
duration = "1500ms"
warmup = "500ms"
connections = 2
timeout = "5s"
variants = ["baseline", "weft", "weft-plaintext", "weft-client-only", "nginx", "haproxy"]
[[scenario]]
name = "h1"
rates = [200]
"#;

/// One real run shared by the tests of this file (they only read it).
fn results() -> PathBuf {
    static RUN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    static LOCK: Mutex<()> = Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let suite = write(&dir, "tiny.toml", TINY);
        let out = dir.join("results");
        let o = run(bench()
            .args(["run", "--suite"])
            .arg(&suite)
            .arg("--out")
            .arg(&out));
        if !o.status.success() {
            return Err(format!(
                "bench run failed ({}):\nstdout:\n{}\nstderr:\n{}",
                o.status,
                text(&o.stdout),
                text(&o.stderr)
            ));
        }
        Ok(out)
    })
    .clone()
    .unwrap_or_else(|e| panic!("{e}"))
}

fn report_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

#[test]
fn run_writes_a_complete_record_for_every_variant() {
    let out = results();
    for f in ["report.json", "report.md", "report.html", "latency.png"] {
        let m = std::fs::metadata(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        assert!(m.len() > 0, "{f} is empty");
    }
    // Nothing half-written left beside it.
    let parent = out.parent().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".partial-"))
        .collect();
    assert!(leftovers.is_empty(), "staging dirs left: {leftovers:?}");

    let r = reports::io::read_report(&out.join("report.json")).expect("record parses");
    assert_eq!(r.schema, 2);
    assert_eq!(report_json(&out)["schema"], 2);
    assert_eq!(r.suite, "tiny");
    assert!(
        r.skipped.is_empty(),
        "nothing should be skipped here: {:?}",
        r.skipped
    );
    let variants: Vec<&str> = r.runs.iter().map(|x| x.variant.as_str()).collect();
    assert_eq!(
        variants,
        [
            "baseline",
            "weft",
            "weft-plaintext",
            "weft-client-only",
            "nginx",
            "haproxy"
        ]
    );
    for run in &r.runs {
        assert_eq!(run.substrate, "local");
        assert_eq!(run.load.rate, Some(200.0));
        assert!(run.load.requests > 0, "{}: no requests", run.variant);
        assert_eq!(
            run.load.errors, 0,
            "{}: errors {:?}",
            run.variant, run.load.errors_by_class
        );
        assert!(run.load.latency_us.p50 > 0.0, "{}", run.variant);
        assert!(!run.load.histogram.is_empty(), "{}", run.variant);
        let server = run.resources.iter().find(|x| x.role == "server");
        assert!(
            server.is_some_and(|s| s.rss_peak_bytes > 0),
            "{}: server not sampled: {:?}",
            run.variant,
            run.resources
        );
        let proxies: Vec<_> = run.resources.iter().filter(|x| x.role == "proxy").collect();
        let expected = match run.variant.as_str() {
            "baseline" => 0,
            "weft" | "weft-plaintext" => 2,
            _ => 1,
        };
        assert_eq!(
            proxies.len(),
            expected,
            "{}: {:?}",
            run.variant,
            run.resources
        );
        for p in proxies {
            assert!(
                p.rss_peak_bytes > 0 && p.samples > 0,
                "{}: {p:?}",
                run.variant
            );
            assert!(p.rss_mean_bytes <= p.rss_peak_bytes, "{p:?}");
            // A real process's RSS holds its code pages too: the private
            // (anonymous) part is there and smaller.
            let anon = p.rss_anon_peak_bytes.unwrap_or_else(|| panic!("no RssAnon: {p:?}"));
            assert!(anon > 0 && anon < p.rss_peak_bytes, "{p:?}");
        }
        // The machine over the same window: how busy, how much stolen.
        let h = run.host.unwrap_or_else(|| panic!("{}: no host figures", run.variant));
        assert!((0.0..=1.0).contains(&h.steal) && h.busy > 0.0 && h.busy <= 1.0, "{}: {h:?}", run.variant);
        // Every Weft proxy is scraped around the window; the peers are not Weft.
        match (run.variant.as_str(), &run.proxy_counts) {
            ("baseline" | "nginx" | "haproxy", c) => assert!(c.is_none(), "{}: {c:?}", run.variant),
            (v, None) => panic!("{v}: no proxy counts in the record"),
            (v, Some(c)) => {
                assert_eq!(c.proxies.len(), expected, "{v}: {c:?}");
                assert_eq!(c.loadgen_requests, run.load.requests, "{v}");
                assert!(c.proxy_requests > 0, "{v}: {c:?}");
            }
        }
        // Only the meshed variant runs (and is charged for) the control plane.
        let control: Vec<_> = run
            .resources
            .iter()
            .filter(|x| x.role == "control")
            .collect();
        if run.variant == "weft" {
            assert_eq!(control.len(), 1, "weft: {:?}", run.resources);
            assert_eq!(control[0].component, "control");
            assert!(
                control[0].rss_peak_bytes > 0 && control[0].samples > 0,
                "control plane not sampled: {:?}",
                control[0]
            );
        } else {
            assert!(control.is_empty(), "{}: {control:?}", run.variant);
        }
    }
    for k in ["weft", "nginx", "haproxy"] {
        assert!(
            r.env.versions.contains_key(k),
            "version of {k} missing: {:?}",
            r.env.versions
        );
    }
    assert!(r.env.cores >= 1 && !r.env.git_rev.is_empty());

    // The derived cells: each figure with its spread, each added percentile
    // with its verdict; one repetition here, so no verdict, and the report says so.
    let cells = report_json(&out)["cells"].as_array().cloned().unwrap_or_default();
    assert_eq!(cells.len(), variants.len(), "{cells:#?}");
    let weft = cells.iter().find(|c| c["variant"] == "weft").unwrap();
    let p50 = &weft["figures"]["p50_us"];
    assert_eq!((p50["n"].as_u64(), p50["min"].as_f64()), (Some(1), p50["value"].as_f64()), "{weft:#}");
    assert_eq!(weft["added"]["p99_us"]["verdict"], "too-few-repetitions", "{weft:#}");
    assert_eq!(cells.iter().find(|c| c["variant"] == "baseline").unwrap()["added"], serde_json::json!({}));
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains(" ms (1 run: no spread; "), "{md}");
}

#[test]
fn report_rerenders_from_the_record() {
    let src = results();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("report.json"), dir.path().join("report.json")).unwrap();
    let o = run(bench().arg("report").arg(dir.path()));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains("haproxy"), "markdown printed");
    for f in ["report.md", "report.html", "latency.png"] {
        assert!(
            dir.path().join(f).metadata().is_ok_and(|m| m.len() > 0),
            "{f} not re-rendered"
        );
    }
    let o = run(bench().arg("report").arg(dir.path().join("missing")));
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("missing"), "{}", text(&o.stderr));
}

#[test]
fn gate_exit_codes() {
    let results = results();
    let dir = tempfile::tempdir().unwrap();
    let pass = write(
        dir.path(),
        "pass.toml",
        "[[rule]]\nname = \"no errors\"\nmetric = \"error_rate\"\nmax = 0.01\nvariants = [\"baseline\", \"weft\"]\n",
    );
    let o = run(bench()
        .args(["gate", "--results"])
        .arg(&results)
        .arg("--policy")
        .arg(&pass));
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(text(&o.stdout).contains("PASSED"), "{}", text(&o.stdout));

    // Nothing answers in a nanosecond: this rule must fail.
    let fail = write(
        dir.path(),
        "fail.toml",
        "[[rule]]\nname = \"impossible\"\nmetric = \"p50_ms\"\nmax = 0.000001\n",
    );
    let o = run(bench()
        .args(["gate", "--results"])
        .arg(results.join("report.json"))
        .arg("--policy")
        .arg(&fail));
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout:\n{}\nstderr:\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(
        text(&o.stdout).contains("impossible"),
        "{}",
        text(&o.stdout)
    );

    let bad = write(dir.path(), "bad.toml", "[[rule]]\nname = \"x\"\nmetric = \"p50_ms\"\n\n[[rule]]\nname = \"y\"\nmetric = \"speed\"\nmax = 1\n");
    let o = run(bench()
        .args(["gate", "--results"])
        .arg(&results)
        .arg("--policy")
        .arg(&bad));
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{}:2:", bad.display()))
            || err.contains(&format!("{}:1:", bad.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}:7:", bad.display())),
        "unknown metric located: {err}"
    );

    let o = run(bench()
        .args(["gate", "--results"])
        .arg(dir.path().join("nope"))
        .arg("--policy")
        .arg(&pass));
    assert_eq!(
        o.status.code(),
        Some(2),
        "missing results are bad input: {}",
        text(&o.stderr)
    );
}

/// A control plane that cannot start fails the meshed cells only, with its
/// own words in the record; the rest of the scenario still runs.
#[test]
fn a_broken_control_plane_fails_only_the_meshed_cells() {
    let dir = tempfile::tempdir().unwrap();
    let bins = dir.path().join("bin");
    std::fs::create_dir(&bins).unwrap();
    for b in ["loadgen", "mesh-proxy", "weft"] {
        std::os::unix::fs::symlink(bin_dir().join(b), bins.join(b)).unwrap();
    }
    let fake = write(
        &bins,
        "mesh-control",
        "#!/bin/sh\necho 'mesh-control: no CA for you' >&2\nexit 3\n",
    );
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let suite = write(
        dir.path(),
        "s.toml",
        "name = \"s\"\n[defaults]\nduration = \"500ms\"\nwarmup = \"200ms\"\nconnections = 1\nvariants = [\"baseline\", \"weft\", \"weft-plaintext\"]\n[[scenario]]\nname = \"h1\"\nrates = [50]\n",
    );
    let out = dir.path().join("results");
    let o = run(bench()
        .env("WEFT_BIN_DIR", &bins)
        .args(["run", "--suite"])
        .arg(&suite)
        .arg("--out")
        .arg(&out));
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "a failed cell exits 1: {err}");
    assert!(err.contains("no CA for you"), "the cause is shown: {err}");
    let r = reports::io::read_report(&out.join("report.json")).expect("record written");
    let ran: Vec<&str> = r.runs.iter().map(|x| x.variant.as_str()).collect();
    assert_eq!(ran, ["baseline", "weft-plaintext"]);
    assert!(r.runs.iter().all(|x| x.load.requests > 0 && x.load.errors == 0));
    assert_eq!(r.skipped.len(), 1, "{:?}", r.skipped);
    assert_eq!(r.skipped[0].variant, "weft");
    assert!(
        r.skipped[0].reason.contains("control failed to start")
            && r.skipped[0].reason.contains("no CA for you"),
        "{:?}",
        r.skipped[0]
    );
}

/// The bench cross-checks itself: with no warm-up the "before" scrape is
/// taken before the first request and the "after" one once loadgen has
/// drained, so the proxies must count exactly loadgen's requests.
#[test]
fn the_proxies_count_what_loadgen_sent() {
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "xcheck.toml",
        "name = \"xcheck\"\n[defaults]\nduration = \"1500ms\"\nwarmup = \"0s\"\nconnections = 2\ntimeout = \"5s\"\nvariants = [\"weft\"]\n[[scenario]]\nname = \"h1\"\nrates = [200]\n",
    );
    let out = dir.path().join("results");
    let o = run(bench().args(["run", "--suite"]).arg(&suite).arg("--out").arg(&out));
    assert!(o.status.success(), "{}\n{}", text(&o.stdout), text(&o.stderr));
    let r = reports::io::read_report(&out.join("report.json")).expect("record parses");
    let [cell] = &r.runs[..] else { panic!("one cell: {:?}", r.runs) };
    let c = cell.proxy_counts.as_ref().expect("the weft cell carries the proxies' counts");
    let loadgen = cell.load.requests;
    assert!(loadgen > 0 && cell.load.errors == 0, "{:?}", cell.load.errors_by_class);
    assert_eq!(c.compared, "proxy-outbound");
    assert_eq!((c.proxy_requests, c.loadgen_requests), (loadgen, loadgen), "{c:?}");
    assert!(!c.flagged && c.disagreement == 0.0, "{c:?}");
    let by = |name: &str| c.proxies.iter().find(|p| p.component == name).unwrap_or_else(|| panic!("{name}: {c:?}"));
    let (outbound, inbound) = (by("proxy-outbound"), by("proxy-inbound"));
    assert_eq!((outbound.role.as_str(), inbound.role.as_str()), ("outbound", "inbound"));
    // The server side saw the same requests, every one answered and timed.
    assert_eq!(inbound.own_requests(), loadgen, "{c:?}");
    for p in [outbound, inbound] {
        assert_eq!(p.responses.values().sum::<u64>(), loadgen, "{p:?}");
        assert_eq!(p.latency_count, loadgen, "{p:?}");
        let (p50, p99) = (p.latency_p50_us.unwrap(), p.latency_p99_us.unwrap());
        assert!(p50 > 0.0 && p50 <= p99, "{p:?}");
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains(&format!("| {loadgen} = {loadgen} |")), "{md}");
    assert!(!md.contains("Cross-check failed"), "{md}");
}

/// A scenario's `proxy_args` reach the deployed proxies: one request in
/// flight and no queue make every other concurrent request a shed 503.
#[test]
fn proxy_args_tune_every_weft_proxy_of_the_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "args.toml",
        "name = \"args\"\n[defaults]\nduration = \"1s\"\nwarmup = \"0s\"\nconnections = 8\ntimeout = \"5s\"\nserver_delay = \"50ms\"\nvariants = [\"weft-plaintext\"]\n[[scenario]]\nname = \"tight\"\nrates = [100]\nproxy_args = [\"--max-concurrent-requests\", \"1\", \"--max-queued-requests=0\"]\n[[scenario]]\nname = \"default\"\nrates = [100]\n",
    );
    let out = dir.path().join("results");
    let o = run(bench().args(["run", "--suite"]).arg(&suite).arg("--out").arg(&out));
    // Whatever bench's exit status says of the shed cell, the record holds both.
    let r = reports::io::read_report(&out.join("report.json")).unwrap_or_else(|e| panic!("{e}\n{}\n{}", text(&o.stdout), text(&o.stderr)));
    let cell = |name: &str| r.runs.iter().find(|c| c.scenario == name).unwrap_or_else(|| panic!("{name}: {:?}", r.runs));
    let (tight, default) = (cell("tight"), cell("default"));
    assert_eq!(tight.proxy_args, ["--max-concurrent-requests", "1", "--max-queued-requests=0"]);
    assert!(default.proxy_args.is_empty());
    // 100 rps of 50 ms requests: about 5 in flight, so most find the one slot taken.
    let shed = tight.load.errors_by_class.get("shed").copied().unwrap_or(0);
    assert!(shed > tight.load.requests / 2, "{:?} of {}", tight.load.errors_by_class, tight.load.requests);
    assert_eq!(default.load.errors, 0, "{:?}", default.load.errors_by_class);
}

/// A capacity search through the real binaries: a generous SLO that every
/// probe holds (ramp to `max_rate`, then its validation), and a server
/// slower than the SLO (the start rate fails twice: capacity 0, nothing
/// validated).
#[test]
fn capacity_searches_probe_through_the_deployed_variants() {
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "cap.toml",
        r#"name = "cap"
[defaults]
duration = "1s"
warmup = "200ms"
connections = 2
mode = "capacity"
start_rate = 50
max_rate = 100
[[scenario]]
name = "fits"
variants = ["baseline", "weft-plaintext"]
slo = { percentile = 99.0, max = "2s" }
[[scenario]]
name = "too-slow"
variants = ["baseline"]
server_delay = "20ms"
slo = { percentile = 50.0, max = "5ms" }
"#,
    );
    let out = dir.path().join("results");
    let o = run(bench().args(["run", "--suite"]).arg(&suite).arg("--out").arg(&out));
    assert!(o.status.success(), "{}\n{}", text(&o.stdout), text(&o.stderr));
    let r = reports::io::read_report(&out.join("report.json")).expect("record parses");
    assert!(r.runs.is_empty(), "probes are in the capacity section, not load runs");
    let found: Vec<(&str, &str, f64, bool, &str)> = r
        .capacity
        .iter()
        .map(|c| (c.scenario.as_str(), c.variant.as_str(), c.capacity_rps, c.validated, c.limited_by.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            ("fits", "baseline", 100.0, true, "max-rate"),
            ("fits", "weft-plaintext", 100.0, true, "max-rate"),
            ("too-slow", "baseline", 0.0, false, "start-rate"),
        ]
    );
    for c in &r.capacity[..2] {
        let probes: Vec<(&str, Option<f64>, &str)> =
            c.probes.iter().map(|p| (p.phase.as_str(), p.load.rate, p.verdict.as_str())).collect();
        assert_eq!(probes, [("ramp", Some(50.0), "pass"), ("ramp", Some(100.0), "pass"), ("validate", Some(100.0), "pass")]);
        assert!(c.probes.iter().all(|p| p.load.requests > 0 && p.load.errors == 0 && p.percentile_us > 0.0), "{c:?}");
        let proxies = c.probes[0].resources.iter().filter(|x| x.role == "proxy").count();
        assert_eq!(proxies, if c.variant == "baseline" { 0 } else { 2 }, "each probe samples the variant's processes");
    }
    // Every probe knows how much of the machine the hypervisor took.
    for p in r.capacity.iter().flat_map(|c| &c.probes) {
        let h = p.host.unwrap_or_else(|| panic!("no host figures: {p:?}"));
        assert!((0.0..=1.0).contains(&h.steal) && h.busy > 0.0 && h.busy <= 1.0, "{h:?}");
    }
    let slow = &r.capacity[2].probes;
    // A failure under stolen CPU is run again without counting (a busy CI host may do that).
    let counted = slow.iter().filter(|p| p.verdict != "disturbed").count();
    assert_eq!(counted, 2, "the start rate's failure is confirmed by a second probe: {slow:?}");
    assert!(
        slow.iter().all(|p| {
            let stolen = p.host.is_some_and(|h| h.disturbed());
            (p.verdict == "slo" && !stolen || p.verdict == "disturbed" && stolen) && p.percentile_us >= 20_000.0 && p.load.rate == Some(50.0)
        }),
        "{slow:?}"
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Capacity at p99 ≤ 2000 ms: `fits` (local)"), "{md}");
    assert!(md.contains("| `weft-plaintext` | 0 | 100 | pass at 100 rps"), "{md}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("SLO: p99 ≤ 2000 ms"), "the chart is in the page");
    assert!(out.join("capacity.svg").metadata().is_ok_and(|m| m.len() > 0));
}

/// Every sweep dimension through the real binaries at tiny sizes (two for
/// endpoints, one for the others, to stay cheap): each
/// size really held (endpoints in the client proxy's balancer, Services
/// answering by Host, connections opened, Services in mesh-control), a load
/// window sampled per size, and the chart and table rendered.
#[test]
fn sweeps_grow_each_dimension_through_the_real_binaries() {
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "sw.toml",
        r#"name = "sw"
[defaults]
duration = "500ms"
warmup = "100ms"
connections = 2
mode = "sweep"
rates = [40]
[[scenario]]
name = "ep"
sweep = { dimension = "endpoints", sizes = [1, 10] }
[[scenario]]
name = "conn"
sweep = { dimension = "connections", sizes = [10] }
[[scenario]]
name = "auth"
sweep = { dimension = "authorities", sizes = [10] }
[[scenario]]
name = "svc"
sweep = { dimension = "services", sizes = [10] }
changes = 2
"#,
    );
    let out = dir.path().join("results");
    let o = run(bench().args(["run", "--suite"]).arg(&suite).arg("--out").arg(&out));
    assert!(o.status.success(), "{}\n{}", text(&o.stdout), text(&o.stderr));
    let r = reports::io::read_report(&out.join("report.json")).expect("record parses");
    assert!(r.runs.is_empty() && r.skipped.is_empty(), "{:?}", r.skipped);
    let dims: Vec<(&str, &str, Vec<usize>)> =
        r.sweeps.iter().map(|s| (s.scenario.as_str(), s.dimension.as_str(), s.points.iter().map(|p| p.size).collect())).collect();
    assert_eq!(dims, [("ep", "endpoints", vec![1, 10]), ("conn", "connections", vec![10]), ("auth", "authorities", vec![10]), ("svc", "services", vec![10])]);
    for s in &r.sweeps[..3] {
        assert!(s.nofile_limit.is_some_and(|n| n > 0), "{}", s.scenario);
        for p in &s.points {
            let run = p.run.as_ref().expect("a load run per size");
            assert!(run.load.requests > 0 && run.load.errors == 0, "{} {}: {:?}", s.scenario, p.size, run.load.errors_by_class);
            assert!(p.proxy_rss_peak_bytes.is_some_and(|b| b > 0) && p.proxy_cpu_seconds.is_some(), "{} {}", s.scenario, p.size);
        }
    }
    let ep = &r.sweeps[0].points[1];
    assert!(ep.setup.starts_with("10 ready in proxy-outbound's balancer after "), "{}", ep.setup);
    let conn = &r.sweeps[1].points[0];
    assert_eq!(conn.run.as_ref().unwrap().load.connections, 10);
    assert!(r.sweeps[2].points[0].setup.contains("10 of 10 answered 2xx"), "{}", r.sweeps[2].points[0].setup);
    for p in &r.sweeps[3].points {
        let pr = p.propagation.as_ref().expect("the harness per size");
        assert_eq!((pr.services, pr.changes), (p.size, 2));
        assert!(pr.control_rss_bytes > 0 && pr.p99_ms > 0.0);
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("## Sweep of endpoints: `ep` (local)") && md.contains("## Sweep of services: `svc` (local)"), "{md}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("Cost against ").count(), 4, "a chart per sweep in the page");
    assert!(out.join("sweep-ep.svg").metadata().is_ok_and(|m| m.len() > 0));
}

/// The peer chains and the mesh through the real binaries, with the wire
/// between their proxies captured: bench and `tcpdump -i lo` run in a
/// network namespace of the test's own (its loopback carries only this
/// run), bench says where its proxies meet (`RUST_LOG=suites=info`), and
/// every connection to that port must be TLS (a handshake record 0x16 0x03
/// first, application data 0x17 after it, no plaintext HTTP) except bench's
/// own readiness probe, which must have been refused. The same by hand:
/// suites/README.md, "Seeing the wire".
#[test]
fn peer_chains_and_the_mesh_carry_only_tls_between_their_proxies() {
    for tool in ["nginx", "haproxy", "tcpdump"] {
        assert!(
            suites::substrate::peers::find_binary(tool).is_some(),
            "{tool} not found in PATH or /usr/sbin: ci/test installs it (apt-get install {})",
            if tool == "nginx" { "nginx-light" } else { tool }
        );
    }
    let ns = wire::Netns::new("chains");
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("lo.pcap");
    let mut dump = ns
        .exec("tcpdump")
        .args(["-i", "lo", "-n", "-U", "-s", "0", "-w"])
        .arg(&pcap)
        .arg("tcp")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tcpdump starts");
    let listening = {
        use std::io::BufRead;
        let stderr = dump.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx.recv_timeout(patience()).unwrap_or_default()
    };
    let dump = Killed(dump);
    assert!(listening.contains("listening on lo"), "tcpdump did not start capturing: {listening:?}");
    let suite = write(
        dir.path(),
        "chains.toml",
        r#"name = "chains-wire"
[defaults]
duration = "1s"
warmup = "300ms"
connections = 2
variants = ["weft", "nginx-mtls", "haproxy-mtls"]
[[scenario]]
name = "h1"
rates = [100]
"#,
    );
    let out = dir.path().join("results");
    let o = ns
        .exec(bench_exe())
        .env("WEFT_BIN_DIR", bin_dir())
        .env("RUST_LOG", "suites=info")
        .env("NO_COLOR", "1")
        .args(["run", "--suite"])
        .arg(&suite)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("bench runs");
    // tcpdump writes out what it holds on SIGINT.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(dump.0.id() as i32), nix::sys::signal::Signal::SIGINT).unwrap();
    let mut dump = dump;
    let status = dump.0.wait().unwrap();
    let stderr = text(&o.stderr);
    assert!(o.status.success(), "{}\n{stderr}", text(&o.stdout));
    assert!(status.success(), "tcpdump: {status}");

    // Both proxies of each chain carried the load and were sampled.
    let r = reports::io::read_report(&out.join("report.json")).expect("record parses");
    for run in &r.runs {
        assert_eq!(run.load.errors, 0, "{}: {:?}", run.variant, run.load.errors_by_class);
        assert!(run.load.requests > 0, "{}", run.variant);
        let mut proxies: Vec<&str> =
            run.resources.iter().filter(|x| x.role == "proxy" && x.rss_peak_bytes > 0 && x.samples > 0).map(|x| x.component.as_str()).collect();
        proxies.sort_unstable();
        let want: &[&str] = match run.variant.as_str() {
            "nginx-mtls" => &["nginx-inbound", "nginx-outbound"],
            "haproxy-mtls" => &["haproxy-inbound", "haproxy-outbound"],
            _ => &["proxy-inbound", "proxy-outbound"],
        };
        assert_eq!(proxies, want, "{}: {:?}", run.variant, run.resources);
    }

    // Where each variant's proxies meet, as bench logged it.
    let mut meet: BTreeMap<String, Vec<u16>> = BTreeMap::new();
    for line in stderr.lines().filter(|l| l.contains("mTLS between the proxies")) {
        let field = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).map(str::to_string);
        let (Some(v), Some(addrs)) = (field("variant="), field("inter_proxy=")) else { panic!("{line}") };
        let ports = addrs.split(',').map(|a| a.rsplit(':').next().unwrap().parse::<u16>().unwrap());
        meet.entry(v).or_default().extend(ports);
    }
    assert_eq!(meet.keys().map(String::as_str).collect::<Vec<_>>(), ["haproxy-mtls", "nginx-mtls", "weft"], "{stderr}");

    let streams = wire::read(&pcap);
    let inter: Vec<u16> = meet.values().flatten().copied().collect();
    for (variant, ports) in &meet {
        let mut app_records = 0;
        let mut tls_conns = 0;
        for &port in ports {
            for ((src, dst), sent) in streams.iter().filter(|((_, d), _)| *d == port) {
                let answer = streams.get(&(*dst, *src)).map(Vec::as_slice).unwrap_or_default();
                let first_line = sent.split(|b| *b == b'\n').next().unwrap_or_default();
                if first_line.starts_with(b"GET ") && wire::contains(first_line, b"/healthz HTTP/1.1") {
                    // bench's readiness probe of the server side: must be refused.
                    assert!(!answer.starts_with(b"HTTP/1.1 2") && !answer.starts_with(b"HTTP/1.0 2"), "{variant}: a plaintext request to {port} was served: {:?}", text(answer));
                    continue;
                }
                assert_eq!(&sent[..2], [0x16, 0x03], "{variant}: connection {src}->{port} does not open with a TLS handshake record: {}", wire::head(sent, 16));
                let up = wire::tls_records(sent).unwrap_or_else(|e| panic!("{variant} {src}->{port}: {e}"));
                let down = wire::tls_records(answer).unwrap_or_else(|e| panic!("{variant} {port}->{src}: {e}"));
                assert_eq!(down.first(), Some(&0x16), "{variant}: the answer opens with the server's handshake");
                for (what, bytes) in [("sent", sent.as_slice()), ("answer", answer)] {
                    for plain in [&b"HTTP/1."[..], b"GET /", b"PRI * HTTP/2"] {
                        assert!(!wire::contains(bytes, plain), "{variant}: plaintext {:?} in the {what} of {src}->{port}", text(plain));
                    }
                }
                eprintln!(
                    "wire {variant} {src}->{port}: {} bytes, first {}; records {:02x?}...; answer first {}",
                    sent.len(),
                    wire::head(sent, 6),
                    &up[..up.len().min(6)],
                    wire::head(answer, 6)
                );
                app_records += up.iter().filter(|t| **t == 0x17).count();
                tls_conns += 1;
            }
        }
        assert!(tls_conns > 0, "{variant}: no connection to {ports:?} captured");
        // 130 requests went through each chain (100 rps, 1.3 s).
        assert!(app_records >= 20, "{variant}: only {app_records} application data records between the proxies");
    }
    // The capture does see plaintext where there is some: loadgen's requests to the first hops.
    assert!(
        streams.iter().any(|((_, d), s)| !inter.contains(d) && wire::contains(s, b"GET / HTTP/1.1")),
        "no plaintext request anywhere in the capture: it cannot tell TLS from plaintext"
    );
}

/// A child process killed (and reaped) when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start `program` and return it with the address after each of `prefixes`
/// on its stdout, in the order printed.
fn spawn_listening(program: &Path, args: &[&str], prefixes: &[&str]) -> (Killed, Vec<String>) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let child = Killed(child);
    let mut found = Vec::new();
    for prefix in prefixes {
        let addr = lines
            .by_ref()
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix(prefix).map(str::to_owned))
            .unwrap_or_else(|| panic!("{} never printed `{prefix}<addr>`", program.display()));
        found.push(addr);
    }
    (child, found)
}

/// One HTTP/1.1 exchange on a fresh connection: the status line and body.
fn http_get(addr: &str, host: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// Family name -> type, from the `# TYPE` lines of a `/metrics` text
/// (prometheus-client 0.24 writes them only for families with a sample).
fn families(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(f, t)| (f.to_owned(), t.to_owned()))
        .collect()
}

/// Every `weft_*` / `process_*` identifier in a PromQL expression (label
/// values, in quotes, are not identifiers).
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' {
            i += expr[i + 1..].find('"').map_or(b.len(), |n| n + 2);
            continue;
        }
        let starts = (expr[i..].starts_with("weft_") || expr[i..].starts_with("process_"))
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'));
        if starts {
            let end = expr[i..]
                .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                .map_or(b.len(), |n| i + n);
            out.push(expr[i..end].to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// Families the binaries register but write on `/metrics` only after their
/// first event (a retry, a timeout, a refused certificate, a TokenReview, a
/// finished gRPC call, ...), which a short test cannot all cause: for these
/// the test checks the binary itself carries the family name.
const EVENT_ONLY: [(&str, &str, &str); 10] = [
    ("weft_http_retries", "counter", "mesh-proxy"),
    // Written from the live balancers: none without discovery.
    ("weft_balancer_endpoints", "gauge", "mesh-proxy"),
    ("weft_balancer_ejections", "counter", "mesh-proxy"),
    ("weft_http_retry_budget_exhausted", "counter", "mesh-proxy"),
    ("weft_http_timeouts", "counter", "mesh-proxy"),
    ("weft_discovery_streams", "gauge", "mesh-proxy"),
    ("weft_control_grpc_requests", "counter", "mesh-control"),
    ("weft_control_grpc_streams", "gauge", "mesh-control"),
    ("weft_control_certificates_refused", "counter", "mesh-control"),
    ("weft_control_tokenreview_duration_seconds", "histogram", "mesh-control"),
];

/// The [`EVENT_ONLY`] entry a PromQL sample name belongs to.
fn event_only(name: &str) -> Option<&'static (&'static str, &'static str, &'static str)> {
    EVENT_ONLY.iter().find(|(f, kind, _)| {
        let one = std::collections::BTreeMap::from([(f.to_string(), kind.to_string())]);
        family_of(name, &one).is_some()
    })
}

/// The family a PromQL sample name belongs to, if `types` has it with a
/// type that writes that sample (`_total` for counters, `_bucket`, `_sum`,
/// `_count` for histograms, the bare name for gauges).
fn family_of(name: &str, types: &std::collections::BTreeMap<String, String>) -> Option<String> {
    let is = |family: &str, kind: &str| types.get(family).is_some_and(|t| t == kind);
    if is(name, "gauge") {
        return Some(name.to_owned());
    }
    if let Some(f) = name.strip_suffix("_total").filter(|f| is(f, "counter")) {
        return Some(f.to_owned());
    }
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s).filter(|f| is(f, "histogram")))
        .map(str::to_owned)
}

/// dashboards/weft-mesh.json as Grafana imports it: every PromQL expression
/// of its panels and variables names only metric families that a real
/// mesh-proxy pair (after real requests through it) and a real mesh-control
/// (`--admin-listen`) write on `/metrics`.
#[test]
fn the_dashboard_names_only_metrics_the_binaries_export() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards/weft-mesh.json");
    let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard parses");
    // Importable into Grafana 10+: a Prometheus data source variable every query uses.
    let vars = dash["templating"]["list"].as_array().unwrap();
    assert!(vars.iter().any(|v| v["type"] == "datasource" && v["name"] == "datasource" && v["query"] == "prometheus"));
    let mut exprs: Vec<(String, String)> = Vec::new();
    for p in dash["panels"].as_array().unwrap().iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().unwrap().to_owned();
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().filter(|t| !t.is_empty()).unwrap_or_else(|| panic!("{title}: no query"));
        exprs.extend(targets.iter().map(|t| (title.clone(), t["expr"].as_str().unwrap().to_owned())));
    }
    for v in vars.iter().filter(|v| v["type"] == "query") {
        exprs.push((format!("variable {}", v["name"]), v["definition"].as_str().unwrap().to_owned()));
    }
    // (panel, sample name, whether mesh-control exports it rather than the proxies)
    let named: Vec<(String, String, bool)> = exprs
        .iter()
        .flat_map(|(t, e)| {
            metric_names(e).into_iter().map(move |n| {
                let control = n.starts_with("weft_control_") || (n.starts_with("process_") && e.contains("$control"));
                (t.clone(), n, control)
            })
        })
        .collect();
    for section in ["weft_http_", "weft_tcp_", "process_", "weft_control_"] {
        assert!(named.iter().any(|(_, n, _)| n.starts_with(section)), "no {section}* panel");
    }

    // app <- inbound proxy <- outbound proxy <- requests; and a control plane.
    let bins = bin_dir();
    let dir = tempfile::tempdir().unwrap();
    let (_app, app) = spawn_listening(&bins.join("loadgen"), &["serve", "--listen", "127.0.0.1:0"], &["listening on "]);
    let proxy_args = ["--outbound-listen", "127.0.0.1:0", "--inbound-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--threads", "1"];
    let (_inbound, inb) = spawn_listening(
        &bins.join("mesh-proxy"),
        &[&proxy_args[..], &["--app", &app[0], "--default-inbound-policy", "all-unauthenticated"]].concat(),
        &["listening inbound ", "listening admin "],
    );
    let route = format!("svc.weft.local={}", inb[0]);
    let (_outbound, outb) =
        spawn_listening(&bins.join("mesh-proxy"), &[&proxy_args[..], &["--route", &route]].concat(), &["listening outbound ", "listening admin "]);
    let (manifests, data, tokens) = (dir.path().join("m"), dir.path().join("d"), dir.path().join("tokens"));
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(&tokens, "").unwrap();
    let (_control, control) = spawn_listening(
        &bins.join("mesh-control"),
        &[
            "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--trust-domain", "dash.test",
            "--data-dir", data.to_str().unwrap(), "--bootstrap-tokens", tokens.to_str().unwrap(),
            "--manifests", manifests.to_str().unwrap(),
        ],
        &["listening admin "],
    );
    for i in 0..5 {
        let got = eventually_for(&format!("request {i} through the proxies"), patience(), || {
            http_get(&outb[0], "svc.weft.local", "/").ok().filter(|r| r.starts_with("HTTP/1.1 200"))
        });
        assert!(!got.is_empty());
    }
    // A response and a closed connection are counted as they finish: scrape
    // until both proxies have written those (the last families the requests
    // above produce), then check once.
    let finished = ["weft_http_responses", "weft_tcp_connections_closed"];
    let (proxy_types, control_types) = eventually_for("both proxies to count the responses and closes", patience(), || {
        let scrape = |addr: &str| http_get(addr, addr, "/metrics").ok().map(|t| families(&t));
        let (inbound, outbound) = (scrape(&inb[1])?, scrape(&outb[1])?);
        let done = finished.iter().all(|f| inbound.contains_key(*f) && outbound.contains_key(*f));
        let mut proxy = inbound;
        proxy.extend(outbound);
        done.then_some((proxy, scrape(&control[0])?))
    });

    let mut binaries: std::collections::BTreeMap<&str, String> = std::collections::BTreeMap::new();
    let mut wrong = Vec::new();
    for (title, name, control) in &named {
        if family_of(name, if *control { &control_types } else { &proxy_types }).is_some() {
            continue;
        }
        match event_only(name) {
            Some((family, _, binary)) => {
                let text = binaries.entry(binary).or_insert_with(|| {
                    String::from_utf8_lossy(&std::fs::read(bins.join(binary)).unwrap()).into_owned()
                });
                if !text.contains(family) {
                    wrong.push(format!("{title}: {name} (not on /metrics yet, and {binary} has no family {family})"));
                }
            }
            None => wrong.push(format!("{title}: {name}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "the dashboard names metrics the binaries do not export:\n  {}\nproxies export: {:?}\nmesh-control exports: {:?}",
        wrong.join("\n  "),
        proxy_types.keys().collect::<Vec<_>>(),
        control_types.keys().collect::<Vec<_>>()
    );
}

/// The dashboard check's name handling: the samples each family type writes
/// resolve, anything else (a counter without `_total`, a gauge's `_bucket`,
/// a typo) does not.
#[test]
fn dashboard_metric_names_resolve_only_to_the_samples_a_family_writes() {
    let types = std::collections::BTreeMap::from([
        ("weft_http_requests".to_owned(), "counter".to_owned()),
        ("weft_http_response_duration_seconds".to_owned(), "histogram".to_owned()),
        ("process_resident_memory_bytes".to_owned(), "gauge".to_owned()),
    ]);
    let resolve = |n: &str| family_of(n, &types);
    assert_eq!(resolve("weft_http_requests_total").as_deref(), Some("weft_http_requests"));
    assert_eq!(resolve("weft_http_response_duration_seconds_bucket").as_deref(), Some("weft_http_response_duration_seconds"));
    assert_eq!(resolve("weft_http_response_duration_seconds_count").as_deref(), Some("weft_http_response_duration_seconds"));
    assert_eq!(resolve("process_resident_memory_bytes").as_deref(), Some("process_resident_memory_bytes"));
    for wrong in ["weft_http_requests", "weft_http_request_total", "weft_http_response_duration_seconds", "process_resident_memory_bytes_total", "weft_http_requests_bucket"] {
        assert_eq!(resolve(wrong), None, "{wrong}");
    }
    assert_eq!(
        metric_names(r#"sum by (le) (rate(weft_x_bucket{a="weft_not_a_metric"}[5m])) / process_y + label_values(weft_z, pod)"#),
        ["weft_x_bucket", "process_y", "weft_z"]
    );
}

const REPEATED: &str = r#"
name = "repeated"
description = "bench compare and the exports, end to end"
[defaults]
duration = "700ms"
warmup = "200ms"
repetitions = 3
connections = 2
timeout = "5s"
variants = ["baseline", "weft-plaintext"]
[[scenario]]
name = "h1"
rates = [200]
"#;

/// A tiny run with 3 repetitions per cell, compared with itself (within
/// noise everywhere) and with a copy whose weft-plaintext latencies are
/// tripled (slower there, and only there); its SMP and HdrHistogram exports
/// are there and agree with the record, the logs also as read by
/// HdrHistogram's Python reader when ci/test provides it (WEFT_HDRH_PYTHON).
#[test]
fn compare_and_exports_of_a_repeated_run() {
    let dir = tempfile::tempdir().unwrap();
    let suite = write(dir.path(), "repeated.toml", REPEATED);
    let out = dir.path().join("a");
    let o = run(bench().args(["run", "--suite"]).arg(&suite).arg("--out").arg(&out));
    assert!(o.status.success(), "bench run: {}\n{}", text(&o.stdout), text(&o.stderr));
    let record = reports::io::read_report(&out.join("report.json")).unwrap();
    assert_eq!(record.runs.len(), 6);

    // Against itself: within noise everywhere, exit 0 even with --fail-on-regression.
    let o = run(bench().arg("compare").arg(&out).arg(&out).arg("--fail-on-regression"));
    let same = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{same}\n{}", text(&o.stderr));
    assert!(same.contains("no metric is worse beyond the noise"), "{same}");
    for verdict in ["slower", "faster", "worse", "better", "too few"] {
        assert!(!same.lines().skip(4).any(|l| l.ends_with(verdict)), "{verdict} in:\n{same}");
    }
    assert!(same.contains("within noise") && same.contains("bootstrap 95%"), "{same}");

    // A doctored copy: weft-plaintext's latencies tripled.
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    for r in v["runs"].as_array_mut().unwrap() {
        if r["variant"] == "weft-plaintext" {
            for k in ["p50", "p90", "p99", "p999", "p9999", "max", "mean"] {
                let x = r["latency_us"][k].as_f64().unwrap();
                r["latency_us"][k] = (x * 3.0).into();
            }
        }
    }
    let slowed = dir.path().join("slowed.json");
    std::fs::write(&slowed, serde_json::to_string(&v).unwrap()).unwrap();
    let o = run(bench().arg("compare").arg(out.join("report.json")).arg(&slowed).arg("--json"));
    assert_eq!(o.status.code(), Some(0), "without --fail-on-regression a regression still exits 0");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for cell in j["cells"].as_array().unwrap() {
        let p50 = cell["metrics"].as_array().unwrap().iter().find(|m| m["metric"] == "p50_us").unwrap();
        let want = if cell["variant"] == "weft-plaintext" { "worse" } else { "within-noise" };
        assert_eq!(p50["judgement"]["verdict"], want, "{cell}");
    }
    let o = run(bench().arg("compare").arg(&out).arg(&slowed).arg("--fail-on-regression"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    assert!(text(&o.stdout).contains("slower"), "{}", text(&o.stdout));

    // Bad input names the path and what is wrong (exit 2).
    let o = run(bench().arg("compare").arg(&out).arg(dir.path().join("nope")));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("nope") && text(&o.stderr).contains("cannot read"), "{}", text(&o.stderr));
    let other = dir.path().join("other.json");
    v["runs"].as_array_mut().unwrap().iter_mut().for_each(|r| r["scenario"] = "elsewhere".into());
    std::fs::write(&other, serde_json::to_string(&v).unwrap()).unwrap();
    let o = run(bench().arg("compare").arg(&out).arg(&other));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("no cell in common") && text(&o.stderr).contains("other.json"), "{}", text(&o.stderr));

    // The exports bench run wrote, against the record.
    let cmp = reports::compare::Comparison::of(&record);
    for cell in &cmp.cells {
        let stem = reports::export::cell_stem(cell);
        let doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("smp").join(format!("{stem}.json"))).unwrap()).unwrap();
        let lat = &doc["performance_test_result"]["latencies_ms"];
        assert_eq!(lat["p50"].as_f64().unwrap(), cell.latency_us.p50 / 1000.0, "{stem}");
        assert_eq!(lat["p99"].as_f64().unwrap(), cell.latency_us.p99 / 1000.0, "{stem}");
        assert_eq!(doc["performance_test_config"]["clients"][0]["rps"], 200);
        let log_path = out.join("hdr").join(format!("{stem}.hlog"));
        let back = reports::export::hdr_log::read_log(&std::fs::read(&log_path).unwrap()).unwrap();
        let runs: Vec<_> = cmp.runs_of(cell).collect();
        assert_eq!(back.len(), 3, "{stem}: one interval per repetition");
        for (h, r) in back.iter().zip(&runs) {
            assert_eq!(*h, r.load.latency_histogram().unwrap(), "{stem}");
        }
        independent_reader_agrees(&log_path, &runs);
    }
    // `bench export` from the stored record writes the same files.
    let (smp, hdr) = (dir.path().join("smp2"), dir.path().join("hdr2"));
    let o = run(bench().arg("export").arg(&out).arg("--smp").arg(&smp).arg("--hdr").arg(&hdr));
    assert!(o.status.success(), "{}", text(&o.stderr));
    for (mine, theirs) in [(&smp, out.join("smp")), (&hdr, out.join("hdr"))] {
        let mut names: Vec<_> = std::fs::read_dir(mine).unwrap().map(|e| e.unwrap().file_name()).collect();
        names.sort();
        assert_eq!(names.len(), 2);
        for n in names {
            assert_eq!(std::fs::read(mine.join(&n)).unwrap(), std::fs::read(theirs.join(&n)).unwrap(), "{n:?}");
        }
    }
}

/// Each interval of the log as HdrHistogram's Python reader sees it agrees
/// with the record's percentiles of that repetition within one histogram
/// bucket. ci/test sets WEFT_HDRH_PYTHON to a Python with the `hdrh` package.
fn independent_reader_agrees(log: &Path, runs: &[&reports::Run]) {
    let Some(python) = std::env::var_os("WEFT_HDRH_PYTHON") else {
        assert!(std::env::var("CI").is_err(), "CI must read the logs independently: run the tests through ci/test, which sets WEFT_HDRH_PYTHON");
        eprintln!("WEFT_HDRH_PYTHON not set: {} not read by the Python hdrh reader (ci/test sets it)", log.display());
        return;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/read_hdr_log.py");
    let o = run(std::process::Command::new(python).arg(script).arg(log));
    assert!(o.status.success(), "read_hdr_log.py: {}", text(&o.stderr));
    let intervals: Vec<serde_json::Value> = text(&o.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(intervals.len(), runs.len(), "{}", text(&o.stdout));
    for (i, r) in intervals.iter().zip(runs) {
        let h = r.load.latency_histogram().unwrap();
        assert_eq!(i["count"].as_u64(), Some(h.len()), "{i}");
        let p = &r.load.latency_us;
        for (k, mine) in [("p50", p.p50), ("p90", p.p90), ("p99", p.p99), ("p999", p.p999), ("max", p.max)] {
            let theirs = i[k].as_f64().unwrap();
            let bucket = h.equivalent_range(mine.max(theirs) as u64) as f64;
            assert!((theirs - mine).abs() <= bucket, "{}: {k} {theirs} (hdrh) vs {mine} (record), bucket {bucket}", log.display());
        }
    }
}

const GATE: &str = r#"
name = "gate-test"
description = "bench gate --base --candidate end to end"
[defaults]
duration = "500ms"
warmup = "200ms"
repetitions = 5
connections = 2
timeout = "5s"
variants = ["weft"]
[[scenario]]
name = "h1"
rates = [200]
"#;

/// The same-run gate through the real binaries: two identical builds (the
/// candidate is the same binaries in a directory of their own) measured in
/// alternating rounds get a verdict, the record re-judged from disk says
/// the same, and a directory without a build is bad input (exit 2). Which
/// verdict is not asserted: identical builds pass about 9 runs in 10 on a
/// quiet machine (docs/FIGURES.md, "Same-run gate: 10 + 10 runs"), so
/// asserting a pass would be a timing assertion that fails now and then.
/// The verdict's logic is tested on doctored records in reports'
/// tests/gate.rs.
#[test]
fn the_same_run_gate_judges_two_identical_builds() {
    let dir = tempfile::tempdir().unwrap();
    let suite = write(dir.path(), "gate.toml", GATE);
    let candidate = dir.path().join("candidate");
    std::fs::create_dir(&candidate).unwrap();
    for name in ["mesh-proxy", "mesh-control", "weft", "loadgen"] {
        std::os::unix::fs::symlink(bin_dir().join(name), candidate.join(name)).unwrap();
    }
    let out = dir.path().join("gate");
    let o = run(bench().arg("gate").arg("--base").arg(bin_dir()).arg("--candidate").arg(&candidate).arg("--suite").arg(&suite).arg("--out").arg(&out));
    let said = text(&o.stdout);
    let code = o.status.code();
    assert!(matches!(code, Some(0 | 1)), "exit {code:?}, want a verdict (0 or 1)\n{said}\n{}", text(&o.stderr));
    let verdict = if code == Some(0) { "Same-run gate PASSED" } else { "Same-run gate FAILED" };
    assert!(said.contains(verdict) && said.contains("95% CI") && said.contains("p50"), "{said}");
    eprintln!("identical builds: {}", said.lines().next().unwrap_or(""));
    let record = reports::io::read_report(&out.join("report.json")).unwrap();
    let order: Vec<&str> = record.runs.iter().map(|r| r.variant.as_str()).collect();
    let (b, c) = ("weft@base", "weft@candidate");
    assert_eq!(order, [b, c, c, b, b, c, c, b, b, c], "rounds alternate which build goes first");
    assert!(record.env.versions.contains_key("weft@candidate"), "{:?}", record.env.versions);
    assert_eq!(std::fs::read_to_string(out.join("gate.txt")).unwrap(), said.split("results: ").next().unwrap());

    // Judged again from the record alone: the same verdict.
    let o = run(bench().arg("gate").arg("--results").arg(&out));
    assert_eq!(o.status.code(), code, "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), std::fs::read_to_string(out.join("gate.txt")).unwrap());

    let nope = dir.path().join("nope");
    let o = run(bench().arg("gate").arg("--base").arg(&nope).arg("--candidate").arg(&candidate).arg("--suite").arg(&suite));
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(err.contains("--base") && err.contains("nope") && err.contains("mesh-proxy"), "{err}");
}

/// gRPC, TCP (steady and churn) and WebSocket cells through the real
/// binaries: weft (mTLS between the sidecars) for gRPC, TCP churn and
/// WebSocket, the static plaintext pair and HAProxy for steady TCP. Every
/// exchange answered, and the record names each cell's protocol.
#[test]
fn protocols_run_through_the_variants() {
    let dir = tempfile::tempdir().unwrap();
    let suite = write(
        dir.path(),
        "protocols.toml",
        r#"name = "protocols"
[defaults]
duration = "1s"
warmup = "0s"
connections = 2
body_size = 64
variants = ["weft"]
[[scenario]]
name = "g"
protocol = "grpc"
rates = [100]
[[scenario]]
name = "churn"
protocol = "tcp-churn"
rates = [100]
[[scenario]]
name = "ws"
protocol = "websocket"
rates = [100]
[[scenario]]
name = "tcp"
protocol = "tcp"
rates = [100]
variants = ["weft-plaintext", "haproxy"]
"#,
    );
    let out = dir.path().join("results");
    let o = run(bench().args(["run", "--suite"]).arg(&suite).arg("--out").arg(&out));
    let r = reports::io::read_report(&out.join("report.json"))
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", text(&o.stdout), text(&o.stderr)));
    assert!(o.status.success(), "{}\n{}", text(&o.stdout), text(&o.stderr));
    let mut seen = Vec::new();
    for c in &r.runs {
        let what = format!("{}/{}", c.scenario, c.variant);
        assert_eq!(c.load.errors, 0, "{what}: {:?}", c.load.errors_by_class);
        assert_eq!(c.load.requests, 100, "{what}");
        if c.load.protocol == "tcp-churn" {
            assert!(c.load.connections_opened >= 100, "{what}: a connection per echo");
        }
        seen.push((c.scenario.as_str(), c.variant.as_str(), c.load.protocol.as_str()));
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            ("churn", "weft", "tcp-churn"),
            ("g", "weft", "grpc"),
            ("tcp", "haproxy", "tcp"),
            ("tcp", "weft-plaintext", "tcp"),
            ("ws", "weft", "websocket"),
        ]
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for p in ["grpc", "tcp-churn", "websocket"] {
        assert!(md.contains(p), "report.md names {p}");
    }
}
