//! The `weft` command line without touching iptables: `--dry-run` output,
//! environment variables, and bad values (exit 64 naming flag and value).
//! No root needed. `weft check` against a fake API server: [`check`].

mod check;

use std::process::{Command, Output};

use mesh_init::{Family, Rules};

/// `weft init --dry-run ...` with an iptables that does not exist, which
/// proves a dry run never calls it.
fn dry_run(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args([
            "init",
            "--dry-run",
            "--iptables",
            "/nonexistent/weft-test/iptables",
        ])
        .args(args)
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .output()
        .expect("running weft")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dry_run_prints_the_restore_input_and_runs_nothing() {
    let v4 = Rules::default().render(Family::V4);
    let v6 = Rules::default().render(Family::V6);
    assert_eq!(stdout(&dry_run(&["--ipv6=off"], &[])), v4);
    assert_eq!(stdout(&dry_run(&["--ipv6=on"], &[])), format!("{v4}{v6}"));
    assert_eq!(stdout(&dry_run(&[], &[("WEFT_INIT_IPV6", "on")])), format!("{v4}{v6}"));
    // auto: IPv6 rules exactly when this namespace has IPv6 enabled.
    let auto = if mesh_init::ipv6_enabled() { format!("{v4}{v6}") } else { v4.clone() };
    assert_eq!(stdout(&dry_run(&[], &[])), auto);
    assert_eq!(
        stdout(&dry_run(&["--cleanup", "--ipv6=off"], &[])),
        Rules::cleanup_script()
    );
}

#[test]
fn flags_and_environment_set_the_rules() {
    let expected = Rules {
        outbound_port: 15001,
        inbound_port: 15006,
        proxy_uid: 1337,
        proxy_gid: Some(1338),
        skip_inbound_ports: Vec::new(),
        skip_outbound_ports: "25,3306-3307".parse::<mesh_init::PortList>().unwrap().0,
        skip_outbound_cidrs: "10.96.0.0/12".parse::<mesh_init::CidrList>().unwrap().0,
    }
    .render(Family::V4);
    let by_flags = dry_run(
        &[
            "--outbound-port=15001",
            "--inbound-port=15006",
            "--proxy-uid=1337",
            "--proxy-gid=1338",
            "--skip-inbound-ports=",
            "--skip-outbound-ports=25,3306-3307",
            "--skip-outbound-cidrs=10.96.0.0/12",
            "--ipv6=off",
        ],
        &[],
    );
    assert_eq!(stdout(&by_flags), expected);
    let by_env = dry_run(
        &["--skip-inbound-ports="],
        &[
            ("WEFT_INIT_IPV6", "off"),
            ("WEFT_INIT_OUTBOUND_PORT", "15001"),
            ("WEFT_INIT_INBOUND_PORT", "15006"),
            ("WEFT_INIT_PROXY_UID", "1337"),
            ("WEFT_INIT_PROXY_GID", "1338"),
            ("WEFT_INIT_SKIP_OUTBOUND_PORTS", "25,3306-3307"),
            ("WEFT_INIT_SKIP_OUTBOUND_CIDRS", "10.96.0.0/12"),
        ],
    );
    assert_eq!(stdout(&by_env), expected);
}

#[test]
fn bad_values_exit_64_naming_the_flag_and_the_value() {
    let cases: &[(&str, &str)] = &[
        ("--outbound-port", "0"),
        ("--inbound-port", "70000"),
        ("--proxy-uid", "-1"),
        ("--proxy-gid", "-1"),
        ("--skip-inbound-ports", "4190,abc"),
        ("--skip-inbound-ports", "4191-4190"),
        ("--skip-outbound-ports", "1-70000"),
        ("--skip-outbound-cidrs", "10.0.0.0/33"),
        ("--skip-outbound-cidrs", "10.1.2.3/8"),
        ("--ipv6", "maybe"),
    ];
    for (flag, value) in cases {
        let out = dry_run(&[&format!("{flag}={value}")], &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{flag}={value}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains(value),
            "{flag}={value}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{flag}={value} printed rules");
    }
    let out = dry_run(&[], &[("WEFT_INIT_SKIP_OUTBOUND_PORTS", "http")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("--skip-outbound-ports") && stderr.contains("http"),
        "{stderr}"
    );

    // Valid one by one, wrong together.
    let out = dry_run(&["--outbound-port=4143"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("both 4143"), "{stderr}");

    // Root as the proxy's uid or gid would exempt every root process.
    for (flag, env) in [("--proxy-uid", "WEFT_INIT_PROXY_UID"), ("--proxy-gid", "WEFT_INIT_PROXY_GID")] {
        for out in [dry_run(&[&format!("{flag}=0")], &[]), dry_run(&[], &[(env, "0")])] {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(64), "{flag} 0: {stderr}");
            assert!(stderr.contains(&format!("{flag} 0: ")) && stderr.contains("bypass the proxy"), "{stderr}");
            assert!(out.stdout.is_empty(), "{flag} 0 printed rules");
        }
    }
}

fn samples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kube/tests/samples")
}

/// The trust anchor the golden samples carry.
fn fixture_anchor() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kube/tests/fixtures/trust-anchor.pem")
}

/// `weft inject --trust-anchor <the fixture> ARGS` with `stdin` on its standard input.
fn weft_inject(args: &[&str], stdin: &[u8]) -> Output {
    let anchor = fixture_anchor();
    let mut all = vec!["--trust-anchor", anchor.to_str().unwrap()];
    all.extend_from_slice(args);
    weft_inject_as_given(&all, stdin)
}

/// `weft inject ARGS` (only the images added) with `stdin` on its standard input.
fn weft_inject_as_given(args: &[&str], stdin: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("inject")
        .args(["--proxy-image", "ghcr.io/weft/mesh-proxy:test", "--init-image", "ghcr.io/weft/weft:test"])
        .args(args)
        .env_remove("WEFT_INJECT_TRUST_ANCHOR")
        .env_remove("RUST_LOG")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running weft");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn weft_inject_writes_the_golden_output_from_a_file_and_from_stdin() {
    let input = samples().join("in/workloads.yaml");
    let golden = std::fs::read_to_string(samples().join("injected/workloads.yaml")).unwrap();
    let from_file = weft_inject(&[input.to_str().unwrap()], b"");
    assert_eq!(stdout(&from_file), golden);
    let said = String::from_utf8_lossy(&from_file.stderr);
    for line in [
        "weft inject: document 2: Service shop/web: not a workload, passed through",
        "weft inject: document 3: Deployment shop/legacy: not injected: annotated weft.io/inject: disabled",
        "weft inject: document 5: ReplicaSet shop/worker: injected",
    ] {
        assert!(said.lines().any(|l| l == line), "{line:?} not in stderr:\n{said}");
    }
    let from_stdin = weft_inject(&["-"], &std::fs::read(&input).unwrap());
    assert_eq!(stdout(&from_stdin), golden);
    // Injecting the output again changes nothing.
    assert_eq!(stdout(&weft_inject(&["-"], golden.as_bytes())), golden);
}

#[test]
fn weft_inject_refuses_malformed_input_naming_the_document_and_writes_nothing() {
    let out = weft_inject(&["-"], b"apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: b}\nspec: {replicas: many}\n");
    assert_eq!(out.status.code(), Some(65), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("<stdin>:5: document 2: Deployment b: not a valid object of its kind"), "{said}");
    let missing = weft_inject(&["/nonexistent/weft-test/app.yaml"], b"");
    assert_eq!(missing.status.code(), Some(66));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/weft-test/app.yaml"));
}

/// The proxy carries the control plane's trust anchor in its pod spec, so
/// `weft inject` needs it given: without it, or with something that is not
/// a CA certificate, nothing is written and the message says how to get it.
#[test]
fn weft_inject_needs_the_control_planes_trust_anchor() {
    let input = samples().join("in/pod.yaml");
    let input = input.to_str().unwrap();
    let out = weft_inject_as_given(&["--control-namespace", "mesh-system", input], b"");
    assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stdout.is_empty());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("no --trust-anchor")
            && said.contains("kubectl -n mesh-system get configmap weft-trust-anchor -o jsonpath='{.data.ca\\.crt}' > ca.crt"),
        "{said}"
    );

    let leaf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kube/tests/fixtures/webhook.pem");
    let out = weft_inject_as_given(&["--trust-anchor", leaf.to_str().unwrap(), input], b"");
    assert_eq!(out.status.code(), Some(64));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("webhook.pem: not a CA certificate"), "{said}");
    let missing = weft_inject_as_given(&["--trust-anchor", "/nonexistent/weft-test/ca.crt", input], b"");
    assert_eq!(missing.status.code(), Some(66));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/weft-test/ca.crt"));

    let out = weft_inject(&[input], b"");
    assert_eq!(out.status.code(), Some(0));
    let pem = std::fs::read_to_string(fixture_anchor()).unwrap();
    let pod: serde_json::Value = serde_saphyr::from_str(&stdout(&out)).unwrap();
    let env = &pod["spec"]["containers"][0]["env"];
    let anchor = env.as_array().unwrap().iter().find(|e| e["name"] == "WEFT_PROXY_TRUST_ANCHOR_PEM").unwrap();
    assert_eq!(anchor["value"], pem.as_str());
}

/// The init container the injector writes runs `weft init` with flags
/// this very binary accepts, and they become the rules the annotations asked for.
#[test]
fn the_injected_init_container_args_are_accepted_by_weft_init() {
    let injected = std::fs::read_to_string(samples().join("injected/statefulset.yaml")).unwrap();
    let sts: serde_json::Value = serde_saphyr::from_str(&injected).unwrap();
    let init = &sts["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(init["command"], serde_json::json!(["weft"]));
    let args: Vec<String> = serde_json::from_value(init["args"].clone()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(&args)
        .args(["--dry-run", "--ipv6", "off", "--iptables", "/nonexistent/weft-test/iptables"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let rules = stdout(&out);
    for needle in ["4191,4567,4568", "4567:4568", "169.254.169.254/32", "10.96.0.0/12", "--to-ports 4143", "--to-ports 4140", "--uid-owner 2102"] {
        assert!(rules.contains(needle), "{needle} not in:\n{rules}");
    }
}

/// `weft <args>` to completion.
fn weft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("running weft")
}

/// The documents of a YAML stream, each as JSON.
fn yaml_documents(out: &Output) -> Vec<serde_json::Value> {
    let text = stdout(out);
    serde_saphyr::from_multiple::<serde_json::Value>(&text).unwrap_or_else(|e| panic!("not YAML: {e}\n{text}"))
}

#[test]
fn install_and_uninstall_print_parseable_manifests() {
    let install = yaml_documents(&weft(&["install", "--namespace", "mesh", "--replicas", "2"]));
    let kinds: Vec<&str> = install.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for kind in ["Namespace", "CustomResourceDefinition", "Deployment", "PodDisruptionBudget", "MutatingWebhookConfiguration"] {
        assert!(kinds.contains(&kind), "{kind} not in {kinds:?}");
    }
    assert!(install.iter().filter(|d| d["metadata"].get("namespace").is_some()).all(|d| d["metadata"]["namespace"] == "mesh"));
    let text = stdout(&weft(&["install"]));
    assert!(text.starts_with("# Weft "), "a header comment first: {}", &text[..80.min(text.len())]);
    assert!(text.contains("Gateway API standard CRDs"), "the prerequisite is named");

    let uninstall = yaml_documents(&weft(&["uninstall", "--namespace", "mesh"]));
    assert_eq!(uninstall.len(), install.len(), "every installed object is deleted");
    assert_eq!(uninstall.last().unwrap()["kind"], "Namespace", "the namespace goes last");
    for doc in &uninstall {
        let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["apiVersion", "kind", "metadata"], "{doc}");
    }
}

#[test]
fn install_refuses_bad_flags_naming_them() {
    for (args, expected) in [
        (&["install", "--replicas", "0"][..], "--replicas 0"),
        (&["install", "--control-memory-limit", "64MB"][..], "--control-memory-limit \"64MB\""),
        (&["install", "--webhook-failure-policy", "sometimes"][..], "sometimes"),
        (&["install", "--trust-anchor", "/nonexistent/ca.pem"][..], "--issuer-cert"),
        (
            &["install", "--trust-anchor", "/nonexistent/a.pem", "--issuer-cert", "/nonexistent/i.pem", "--issuer-key", "/nonexistent/k.pem"][..],
            "--trust-anchor /nonexistent/a.pem",
        ),
        (&["uninstall", "--namespace", "Not A Name"][..], "--namespace \"Not A Name\""),
    ] {
        let out = weft(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {expected:?} not in {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed manifests");
    }
}
