//! The binaries' contracts: exit codes, the first stdout line, graceful shutdown, and the
//! errors a user sees before any load is sent.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, Server, BIN};
use loadgen::{LoadConfig, LoadError, Mode, Progress};
use nix::sys::signal::{kill, Signal};

#[test]
fn config_errors_exit_64_naming_the_value() {
    for (args, needle) in [
        (
            vec![
                "run",
                "--target",
                "http://127.0.0.1:1/",
                "--rate",
                "0",
                "--duration",
                "1s",
            ],
            "rate 0",
        ),
        (
            vec!["run", "--target", "ftp://127.0.0.1:1/", "--rate", "5"],
            "ftp",
        ),
        (
            vec![
                "run",
                "--target",
                "http://127.0.0.1:1/",
                "--concurrency",
                "0",
            ],
            "concurrency 0",
        ),
        (
            vec![
                "run",
                "--target",
                "http://127.0.0.1:1/",
                "--rate",
                "5",
                "--duration",
                "soon",
            ],
            "soon",
        ),
        (vec!["serve", "--error-rate", "1.5"], "1.5"),
        (
            vec!["run", "--target", "http://127.0.0.1:1/", "--rate", "5", "--protocol", "tcp"],
            "body size 0",
        ),
        (
            vec!["run", "--target", "http://127.0.0.1:1/", "--rate", "5", "--protocol", "quic"],
            "\"quic\"",
        ),
        (vec!["serve", "--tcp-echo", "--delay", "1ms"], "--delay"),
        (vec!["run", "--target", "http://127.0.0.1:1/"], "--rate"),
    ] {
        let out = Command::new(BIN).args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: {stderr:?} does not name {needle:?}"
        );
    }
}

#[test]
fn unreachable_target_fails_before_the_start() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = LoadConfig {
        target: format!("http://127.0.0.1:{port}/").parse().unwrap(),
        mode: Mode::Open { rate: 10.0 },
        duration: Duration::from_secs(60),
        connections: 2,
        ..LoadConfig::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let err = rt
        .block_on(loadgen::run(cfg, Arc::new(Progress::default())))
        .unwrap_err();
    assert!(matches!(err, LoadError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains(&port.to_string()), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30));

    let out = Command::new(BIN)
        .args([
            "run",
            "--target",
            &format!("http://127.0.0.1:{port}/"),
            "--rate",
            "10",
            "--duration",
            "1s",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unreachable"));
}

#[test]
fn serve_exits_zero_on_sigterm_and_sigint() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut server = Server::start(&[]);
        kill(server.pid(), signal).unwrap();
        let status = eventually("serve to exit", || server.child.try_wait().unwrap());
        assert_eq!(status.code(), Some(0), "after {signal}");
    }
}

#[test]
fn host_override_and_post_body_reach_the_server() {
    let server = Server::start(&["--body-size", "10"]);
    let cfg = LoadConfig {
        target: server.url("/echo?x=1").parse().unwrap(),
        host: Some("svc.example:8080".into()),
        mode: Mode::Closed { concurrency: 2 },
        duration: Duration::from_millis(300),
        warmup: Duration::ZERO,
        connections: 2,
        body_size: 70_000,
        ..LoadConfig::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for http2 in [false, true] {
        let cfg = LoadConfig {
            http2,
            ..cfg.clone()
        };
        let r = rt
            .block_on(loadgen::run(cfg, Arc::new(Progress::default())))
            .unwrap();
        assert_eq!(r.errors, 0, "http2={http2}: {:?}", r.errors_by_class);
        assert!(r.requests > 0);
    }
}

/// A server that answers `Connection: close` forces a reconnect per request; that is
/// transparent (no errors) in both loops, and every connection is counted.
#[test]
fn reconnects_when_the_server_closes_every_connection() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            // Blocking accept; the test wakes it with one last connection
            // after setting `stop`.
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                        let mut buf = [0u8; 4096];
                        if matches!(s.read(&mut buf), Ok(n) if n > 0) {
                            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
                        }
                    }
                    Err(e) => panic!("accept: {e}"),
                }
            }
        })
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for mode in [Mode::Open { rate: 20.0 }, Mode::Closed { concurrency: 1 }] {
        let cfg = LoadConfig {
            target: format!("http://{addr}/").parse().unwrap(),
            mode,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            connections: 1,
            ..LoadConfig::default()
        };
        let r = rt
            .block_on(loadgen::run(cfg, Arc::new(Progress::default())))
            .unwrap();
        assert_eq!(r.errors, 0, "{mode:?}: {:?}", r.errors_by_class);
        assert!(r.requests >= 20, "{mode:?}: {} requests", r.requests);
        if mode == (Mode::Open { rate: 20.0 }) {
            assert_eq!(r.requests, 20);
        }
        // one connection per request (plus the first, opened before the window)
        assert!(
            r.connections_opened >= r.requests,
            "{mode:?}: opened {} for {}",
            r.connections_opened,
            r.requests
        );
    }
    stop.store(true, Ordering::Relaxed);
    drop(std::net::TcpStream::connect(addr));
    server.join().unwrap();
}

/// `--json -`: the record as one line on stdout after the table (how the kind
/// substrate reads a Job's record from its pod's log), parsed back whole.
#[test]
fn json_dash_prints_the_record_as_one_stdout_line() {
    let server = Server::start(&[]);
    let out = Command::new(BIN)
        .args(["run", "--target", &server.url("/"), "--rate", "50", "--duration", "400ms"])
        .args(["--warmup", "0s", "--connections", "1", "--json", "-"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with(loadgen::RECORD_LINE_PREFIX), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with(loadgen::RECORD_LINE_PREFIX)).count(), 1);
    let load = loadgen::find_record_line(&stdout).unwrap().unwrap();
    assert_eq!((load.requests, load.errors), (20, 0), "{load:?}");
    assert!(loadgen::find_record_line("a table\nno record\n").is_none());
}

/// gRPC (unary and server streaming), opaque TCP (steady and churn) and WebSocket through
/// the real binaries, open and closed loop: the record names the protocol, every exchange
/// is answered, and only TCP churn opens a connection per exchange.
#[test]
fn grpc_tcp_and_websocket_through_the_binaries() {
    let _x = common::exclusive();
    let http = Server::start(&["--websocket", "--body-size", "48"]);
    let tcp = Server::spawn(&["--tcp-echo"]);
    let (http_url, tcp_url) = (http.url("/"), tcp.url("/"));
    // An upgrade is accepted on any path, /healthz too (what a readiness check asks for).
    let ws_url = http.url("/healthz");
    let cases: [(&str, &str, &[&str]); 5] = [
        ("grpc", &http_url, &[]),
        ("grpc-stream", &http_url, &["--stream-messages", "5"]),
        ("websocket", &ws_url, &[]),
        ("tcp", &tcp_url, &[]),
        ("tcp-churn", &tcp_url, &[]),
    ];
    for (proto, url, extra) in cases {
        for load in [["--rate", "200"], ["--concurrency", "3"]] {
            let mut args = vec![
                "--target", url, "--protocol", proto, "--duration", "500ms", "--warmup",
                "100ms", "--body-size", "32", "--connections", "3",
            ];
            args.extend(load);
            args.extend(extra);
            let rec = common::run_binary(&args);
            let what = format!("{proto} {load:?}");
            assert_eq!(rec.protocol, proto, "{what}");
            assert_eq!(rec.errors, 0, "{what}: {:?}", rec.errors_by_class);
            if load[0] == "--rate" {
                assert_eq!(rec.requests, 100, "{what}: 200/s for 0.5 s");
            } else {
                assert!(rec.requests > 0, "{what}");
            }
            if proto == "tcp-churn" {
                assert!(rec.connections_opened >= rec.requests, "{what}: {rec:?}");
            } else {
                assert_eq!(rec.connections_opened, 3, "{what}");
            }
            assert_eq!(rec.latency_histogram().unwrap().len(), rec.requests, "{what}: every exchange timed");
        }
    }
}

/// A gRPC call the server fails ends with its status: class `grpc_status`, not `io`.
#[test]
fn grpc_errors_are_counted_by_status() {
    let _x = common::exclusive();
    let server = Server::start(&["--error-rate", "0.5"]);
    let url = server.url("/");
    let rec = common::run_binary(&[
        "--target", &url, "--protocol", "grpc", "--rate", "200", "--duration", "500ms",
        "--warmup", "0s", "--connections", "1",
    ]);
    assert_eq!(rec.requests, 100);
    assert_eq!(rec.errors, 50, "every other call: {:?}", rec.errors_by_class);
    assert_eq!(rec.errors_by_class.get("grpc_status"), Some(&50));
}
