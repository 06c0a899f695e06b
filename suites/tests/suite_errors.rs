//! Bad suite files are rejected with every problem, each located `file:line:col`.

mod common;
// `bench run --substrate kind|kube --dry-run` (issue 10, must-show 4).
mod kind_plan;

use common::*;

const BAD: &str = r#"name = "broken"
[defaults]
duration = "0s"
[[scenario]]
name = "a"
rates = [100, -1]
variants = ["baseline", "envoy"]
[[scenario]]
name = "a"
rates = [10]
"#;

#[test]
fn malformed_suite_reports_every_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "bad.toml", BAD);
    let p = path.display().to_string();
    for sub in ["plan", "run"] {
        let mut cmd = bench_exe_cmd();
        cmd.args([sub, "--suite", &p]);
        if sub == "run" {
            cmd.arg("--out").arg(dir.path().join("out"));
        }
        let out = run(&mut cmd);
        let err = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(64),
            "bench {sub}: config errors exit 64; stderr:\n{err}"
        );
        assert!(
            err.contains(&format!("{p}:3:12: `duration` must be longer than 0")),
            "{err}"
        );
        assert!(
            err.contains(&format!("{p}:6:15: rate must be a positive number")),
            "{err}"
        );
        assert!(
            err.contains(&format!("{p}:7:25: unknown variant `envoy`")),
            "{err}"
        );
        assert!(
            err.contains(&format!(
                "{p}:9:8: duplicate scenario name `a` (first used on line 5)"
            )),
            "{err}"
        );
        assert!(
            !dir.path().join("out").exists(),
            "a rejected suite must not create output"
        );
    }
}

#[test]
fn syntax_error_and_unknown_suite_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "syntax.toml",
        "name = \"x\"\n[[scenario]]\nname = \"a\"\nrates = [1,\n",
    );
    let out = run(bench_exe_cmd().args(["plan", "--suite"]).arg(&path));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.starts_with(&format!("{}:", path.display())), "{err}");

    let out = run(bench_exe_cmd().args(["plan", "--suite", "no-such-suite"]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("no suite named `no-such-suite`") && err.contains("quick, ci, full"),
        "{err}"
    );
}

#[test]
fn plan_prints_the_matrix_and_estimate_of_the_builtin_suite() {
    let out = run(bench_exe_cmd().args(["plan", "--suite", "quick"]));
    let s = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(s.contains("http1-small 500 rps baseline rep 1/3"), "{s}");
    assert!(
        s.contains("http1-small 500 rps weft-plaintext rep 3/3"),
        "{s}"
    );
    assert!(s.contains("max-throughput c=16 haproxy rep 1/3"), "{s}");
    assert!(
        s.contains("discovery-propagation propagation 1000 svc/2000 ep x10 rep 3/3"),
        "{s}"
    );
    // Three repetitions of every cell, 2 min 48 s of it measuring (suites/quick.toml).
    assert!(s.contains("45 cells, estimated"), "{s}");
    assert!(s.contains("of which 2m 48s measuring"), "{s}");
}

#[test]
fn capacity_suites_are_planned_and_their_errors_located() {
    let out = run(bench_exe_cmd().args(["plan", "--suite", "capacity"]));
    let s = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(s.contains("capacity: the highest open-loop rate with p99 <= 5ms and 0 errors"), "{s}");
    assert!(s.contains("http1-capacity capacity at p99<=5ms weft-plaintext rep 1/1"), "{s}");
    assert!(s.contains("5 cells, estimated"), "{s}");

    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "cap.toml",
        "name = \"c\"\n[[scenario]]\nname = \"a\"\nmode = \"capacity\"\nslo = { max = \"5 parsecs\" }\nmax_rate = -3\n[[scenario]]\nname = \"b\"\nrates = [10]\nramp_factor = 2.0\n",
    );
    let out = run(bench_exe_cmd().args(["plan", "--suite"]).arg(&path));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    let p = path.display();
    for want in [
        format!("{p}:5:15: `slo.max` = \"5 parsecs\" is not a duration"),
        format!("{p}:6:12: `max_rate` must be a rate above 0"),
        format!("{p}:10:15: `ramp_factor` is for mode = \"capacity\" scenarios"),
    ] {
        assert!(err.contains(&want), "missing {want:?} in:\n{err}");
    }
}

/// Suite errors need no sibling binaries, so skip building them.
fn bench_exe_cmd() -> std::process::Command {
    std::process::Command::new(bench_exe())
}

/// The protocols' own settings are checked with file:line too: an echo
/// needs bytes, a TCP echo has no delay to give, the hardening modes take
/// HTTP only, and an unknown protocol lists them all.
#[test]
fn protocol_problems_are_located() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "protocols.toml",
        r#"name = "p"
[[scenario]]
name = "t"
protocol = "tcp"
server_delay = "1ms"
rates = [10]
[[scenario]]
name = "q"
protocol = "quic"
rates = [10]
[[scenario]]
name = "o"
mode = "overload"
protocol = "grpc"
concurrency = 4
"#,
    );
    let p = path.display().to_string();
    let out = run(bench_exe_cmd().args(["plan", "--suite", &p]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    for want in [
        format!("{p}:4:12: protocol `tcp` echoes `body_size` bytes per exchange"),
        format!("{p}:5:16: `server_delay` does not apply to protocol `tcp`"),
        format!("{p}:9:12: unknown protocol `quic`: expected one of http1, http2, grpc, grpc-stream, tcp, tcp-churn, websocket"),
        format!("{p}:14:12: protocol `grpc` with mode = \"overload\""),
    ] {
        assert!(err.contains(&want), "{want:?} not in:\n{err}");
    }
}
