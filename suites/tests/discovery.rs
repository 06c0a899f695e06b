//! Discovery on the local substrate: the manifests the substrate writes are
//! what the real `mesh-control` accepts, and a `bench run` with three server
//! replicas (one slow) sends the `weft` variant through Destination with no
//! error, next to nginx/HAProxy round robin, plus a small propagation
//! measurement written to `propagation.json`.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;

use common::*;
use suites::substrate::manifests;

const REPLICAS: &str = r#"
name = "replicas"
description = "discovery end-to-end test"
[defaults]
duration = "1500ms"
warmup = "500ms"
connections = 4
timeout = "5s"
[[scenario]]
name = "three"
replicas = 3
slow_replica_delay = "20ms"
rates = [100]
variants = ["baseline", "weft", "nginx", "haproxy"]
[[scenario]]
name = "propagation"
mode = "propagation"
services = 20
endpoints = 40
changes = 3
"#;

#[test]
fn weft_reaches_three_replicas_through_discovery() {
    let dir = tempfile::tempdir().unwrap();
    let suite = write(dir.path(), "replicas.toml", REPLICAS);
    let out = dir.path().join("results");
    let o = run(bench()
        .args(["run", "--suite"])
        .arg(&suite)
        .arg("--out")
        .arg(&out));
    let stdout = text(&o.stdout);
    assert!(
        o.status.success(),
        "bench run failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        o.status,
        text(&o.stderr)
    );
    let r = reports::io::read_report(&out.join("report.json")).expect("record parses");
    let weft = r
        .runs
        .iter()
        .find(|run| run.variant == "weft")
        .unwrap_or_else(|| panic!("no weft run; skipped: {:?}", r.skipped));
    assert!(weft.load.requests > 0, "{weft:?}");
    assert_eq!(weft.load.errors, 0, "{:?}", weft.load.errors_by_class);
    let names = |run: &reports::Run, role: &str| -> Vec<String> {
        let mut v: Vec<String> = run
            .resources
            .iter()
            .filter(|x| x.role == role)
            .map(|x| x.component.clone())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(weft, "server"), ["server-0", "server-1", "server-2"]);
    assert_eq!(
        names(weft, "proxy"),
        [
            "proxy-inbound-0",
            "proxy-inbound-1",
            "proxy-inbound-2",
            "proxy-outbound"
        ],
        "one server sidecar per replica, one client sidecar"
    );
    assert_eq!(names(weft, "control"), ["control"]);
    // The peers round-robin over the same replicas (or are not installed here).
    for peer in ["baseline", "nginx", "haproxy"] {
        match r.runs.iter().find(|run| run.variant == peer) {
            Some(run) => {
                assert!(run.load.requests > 0, "{peer}: {run:?}");
                assert_eq!(run.load.errors, 0, "{peer}: {:?}", run.load.errors_by_class);
            }
            None => assert!(
                r.skipped
                    .iter()
                    .any(|s| s.variant == peer && s.reason.contains("not found")),
                "{peer} neither ran nor was unavailable: {:?}",
                r.skipped
            ),
        }
    }

    // Propagation is part of the record (schema 2), not a file of its own.
    assert!(
        !out.join("propagation.json").exists(),
        "propagation.json is no longer written"
    );
    assert_eq!(r.propagation.len(), 1, "{:?}", r.propagation);
    let p = &r.propagation[0];
    assert_eq!(
        (p.scenario.as_str(), p.services, p.endpoints, p.changes),
        ("propagation", 20, 40, 3)
    );
    assert_eq!(p.samples_ms.len(), 3);
    assert!(p.samples_ms.iter().all(|s| *s > 0.0), "{p:?}");
    assert!(p.control_rss_bytes > 0, "{p:?}");
    assert!(
        stdout.contains("## Discovery propagation")
            && stdout.contains("| propagation | 1 | 20 | 40 | 3 |"),
        "{stdout}"
    );
    // Rendered from report.json, like every other table.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| propagation | 1 | 20 | 40 | 3 |"), "{md}");
}

/// A mesh-control child that is killed when the test ends, however it ends.
struct ControlPlane(Child);

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn substrate_manifests_are_accepted_by_mesh_control() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("manifests");
    std::fs::create_dir(&m).unwrap();
    // Real bound addresses, held for the test, as the substrate would list them.
    let listeners: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let replicas: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    manifests::write(
        &m,
        "service.yaml",
        &manifests::service(manifests::CLUSTER_IP, manifests::DEFAULT_INBOUND_POLICY),
    )
    .unwrap();
    manifests::write(&m, "endpoints.yaml", &manifests::endpoints(&replicas)).unwrap();

    // As the substrate runs it (a token file too, so no warning is expected at all).
    let tokens = dir.path().join("bootstrap-tokens");
    std::fs::write(
        &tokens,
        "spiffe://cluster.local/ns/bench/sa/server 0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut child = Command::new(bin_dir().join("mesh-control"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--manifests-poll",
            "50ms",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .arg("--bootstrap-tokens")
        .arg(&tokens)
        .arg("--manifests")
        .arg(&m)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mesh-control starts");
    let stderr = child.stderr.take().unwrap();
    let _guard = ControlPlane(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen: Vec<String> = Vec::new();
    let mut wait_for = |what: &str, pred: &dyn Fn(&str) -> bool| -> Vec<String> {
        eventually_for(what, patience(), || {
            while let Ok(l) = rx.try_recv() {
                seen.push(l);
            }
            seen.iter().any(|l| pred(l)).then(|| seen.clone())
        })
    };
    let seen = wait_for("mesh-control applies the manifests", &|l| {
        l.contains("manifests applied")
    });
    let applied = seen
        .iter()
        .find(|l| l.contains("manifests applied"))
        .unwrap();
    assert!(applied.contains("files=2"), "{applied}");
    let problems: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    assert!(problems.is_empty(), "mesh-control complained: {problems:?}");

    // The check above can fail: a manifest mesh-control rejects is logged.
    manifests::write(
        &m,
        "endpoints.yaml",
        &manifests::endpoints(&replicas).replace("addressType: IPv4", "addressType: [IPv4"),
    )
    .unwrap();
    let broken = |l: &str| l.contains("WARN") && l.contains("endpoints.yaml");
    let seen = wait_for("mesh-control warns about a broken manifest", &broken);
    let warned = seen.iter().find(|l| broken(l)).unwrap();
    assert!(warned.contains("previous state"), "{warned}");
}
