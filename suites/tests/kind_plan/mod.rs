//! `bench run --substrate kind|kube --dry-run` through the real binary: the
//! whole plan (cluster, images, installs per variant, one Job per cell,
//! sampling, teardown last) with manifests that parse into their
//! k8s-openapi types, and nothing run: kind, docker and kubectl on PATH are
//! tripwires that record any call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Service};
use suites::suite::{LoadShape, Variant};

use crate::common::*;

mod fake_cluster;

struct Section {
    title: String,
    body: Vec<String>,
}

fn sections(out: &str) -> Vec<Section> {
    let mut v: Vec<Section> = Vec::new();
    for line in out.lines() {
        if let Some(t) = line.strip_prefix("==> ") {
            v.push(Section {
                title: t.to_string(),
                body: Vec::new(),
            });
        } else if let Some(s) = v.last_mut() {
            s.body.push(line.to_string());
        }
    }
    v
}

/// The YAML of every `<<'EOF'` here-document in a section, parsed.
fn manifests(s: &Section) -> Vec<serde_json::Value> {
    let mut docs = Vec::new();
    let mut yaml: Option<String> = None;
    for l in &s.body {
        match (&mut yaml, l.as_str()) {
            (None, l) if l.starts_with("$ ") && l.ends_with("<<'EOF'") => yaml = Some(String::new()),
            (Some(y), "EOF") => {
                let parsed: Vec<serde_json::Value> = serde_saphyr::from_multiple(y)
                    .unwrap_or_else(|e| panic!("section {}: not YAML: {e}\n{y}", s.title));
                docs.extend(parsed);
                yaml = None;
            }
            (Some(y), l) => {
                y.push_str(l);
                y.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(yaml.is_none(), "section {}: unterminated here-document", s.title);
    docs
}

/// A dir of `kind`, `docker`, `kubectl`, `linkerd` scripts that record being
/// run (by absolute path to `sh`: PATH holds only this dir).
fn tripwires(dir: &Path) -> (PathBuf, PathBuf) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let called = dir.join("called");
    for tool in ["kind", "docker", "kubectl", "linkerd"] {
        let p = bin.join(tool);
        std::fs::write(&p, format!("#!/bin/sh\necho {tool} \"$@\" >> {}\nexit 1\n", called.display())).unwrap();
        let mut perm = std::fs::metadata(&p).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&p, perm).unwrap();
    }
    (bin, called)
}

fn dry_run(dir: &Path, args: &[&str]) -> std::process::Output {
    let (bin, _) = tripwires(dir);
    // Only the tripwires: a dry run needs no other program (istioctl absent).
    run(Command::new(bench_exe())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PATH", bin)
        .args(["run", "--dry-run"])
        .args(args))
}

fn kind_of(doc: &serde_json::Value) -> &str {
    doc["kind"].as_str().unwrap_or("?")
}

#[test]
fn kind_dry_run_of_quick_prints_the_whole_plan_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dry_run(dir.path(), &["--substrate", "kind", "--suite", "quick"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{}\nstdout:\n{stdout}", text(&out.stderr));
    assert!(!dir.path().join("called").exists(), "a dry run ran: {}", std::fs::read_to_string(dir.path().join("called")).unwrap_or_default());
    let secs = sections(&stdout);
    let titles: Vec<&str> = secs.iter().map(|s| s.title.as_str()).collect();

    // Fixed sections first, teardown last.
    assert_eq!(&titles[..2], ["cluster", "images"], "{titles:#?}");
    assert!(titles[2].starts_with("namespace weft-bench-"), "{titles:#?}");
    assert_eq!(titles[3], "sampling");
    assert_eq!(titles.last(), Some(&"teardown"));
    let body = |i: usize| secs[i].body.join("\n");
    assert!(body(0).contains("$ kind get clusters") && body(0).contains("$ kind create cluster --name weft-bench --config ") && body(0).contains("kind-configs/default.yaml"), "{}", body(0));
    assert!(body(1).contains("images/build --tag ") && body(1).contains(" --kind-load weft-bench"), "{}", body(1));
    assert!(body(3).contains("GET /api/v1/nodes/<node>/proxy/stats/summary"), "{}", body(3));
    let ns_docs = manifests(&secs[2]);
    assert_eq!(ns_docs.len(), 1);
    let ns: Namespace = serde_json::from_value(ns_docs[0].clone()).unwrap();
    let ns_name = ns.metadata.name.clone().unwrap();
    assert!(ns.metadata.labels.unwrap().contains_key("weft.dev/run"));
    let teardown = secs.last().unwrap().body.join("\n");
    assert!(teardown.contains(&format!("$ kubectl --context kind-weft-bench delete namespace {ns_name} ")), "{teardown}");

    // One install per variant that runs on a cluster; the others skipped loudly.
    let installs: Vec<&str> = titles.iter().filter_map(|t| t.strip_prefix("install ")).map(|t| t.split(' ').next().unwrap()).collect();
    assert_eq!(installs, ["baseline", "weft", "weft-client-only"], "{titles:#?}");
    let weft = &secs[titles.iter().position(|t| t.starts_with("install weft ")).unwrap()];
    let weft = weft.body.join("\n");
    assert!(weft.contains("$ kubectl --context kind-weft-bench get namespace weft"), "{weft}");
    // The images as images/build named them: weft install's own scheme.
    assert!(weft.contains("install --registry ghcr.io/weft --tag ") && weft.contains("| kubectl --context kind-weft-bench apply -f -"), "{weft}");
    assert!(weft.contains(&format!("annotate namespace {ns_name} weft.io/inject=enabled --overwrite")), "{weft}");
    // mesh-control turns ready only after listing HTTPRoutes and GRPCRoutes:
    // the Gateway API CRDs go in before `weft install`.
    let (gateway, install) = (weft.find("apply -f https://github.com/kubernetes-sigs/gateway-api/"), weft.find(" install --registry"));
    assert!(matches!((gateway, install), (Some(g), Some(i)) if g < i), "{weft}");
    assert!(weft.contains("rollout status deployment/weft-control -n weft") && weft.contains("/weft check --context kind-weft-bench"), "{weft}");
    for skipped in ["skip weft-plaintext in scenario http1-small (6 cells)", "skip nginx in scenario max-throughput (3 cells)", "skip scenario discovery-propagation (3 cells)"] {
        let i = titles.iter().position(|t| *t == skipped).unwrap_or_else(|| panic!("no `{skipped}` in {titles:#?}"));
        assert!(body(i).contains("# WARNING: "), "{}", body(i));
    }
    assert_eq!(titles.iter().filter(|t| t.starts_with("uninstall ")).count(), 1, "{titles:#?}");

    // One Job per cell that runs, each inside its scenario's server section.
    let suite = suites::suite::resolve("quick").unwrap();
    let cells = suites::plan::cells(&suite);
    let runs_here = [Variant::Baseline, Variant::Weft, Variant::WeftClientOnly, Variant::WeftServerOnly];
    let mut expected: BTreeMap<String, (String, Variant)> = BTreeMap::new();
    for (i, c) in cells.iter().enumerate() {
        let sc = &suite.scenarios[c.scenario];
        if runs_here.contains(&c.variant) && !matches!(sc.load, LoadShape::Propagation(_)) {
            let title = format!("job {}/{} {}", i + 1, cells.len(), suites::plan::label(&suite, c));
            expected.insert(title, (sc.name.clone(), c.variant));
        }
    }
    let jobs: Vec<usize> = (0..secs.len()).filter(|i| secs[*i].title.starts_with("job ")).collect();
    assert_eq!(jobs.len(), expected.len(), "{titles:#?}");
    for i in jobs {
        let title = &secs[i].title;
        let (scenario, variant) = expected.remove(title).unwrap_or_else(|| panic!("unexpected or repeated `{title}`"));
        let server = (0..i).rev().find(|k| secs[*k].title.starts_with("server ")).unwrap();
        assert_eq!(secs[server].title, format!("server {scenario} ({variant})"), "before `{title}`");
        assert!(!titles[server..i].iter().any(|t| t.starts_with("remove server")), "`{title}` after its server was removed");
        let install = (0..server).rev().find(|k| secs[*k].title.starts_with("install ")).unwrap();
        assert!(secs[install].title.starts_with(&format!("install {variant} ")), "`{title}` under {}", secs[install].title);
        let docs = manifests(&secs[i]);
        assert_eq!(docs.len(), 1, "{title}");
        let job: Job = serde_json::from_value(docs[0].clone()).unwrap_or_else(|e| panic!("{title}: not a Job: {e}"));
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.node_selector.unwrap()["weft.dev/role"], "client");
        let args = pod.containers[0].args.clone().unwrap().join(" ");
        assert!(args.starts_with(&format!("run --target http://server.{ns_name}.svc.cluster.local:8080/")) && args.ends_with("--json -"), "{args}");
        let point = if title.contains(" 500 rps ") { "--rate 500 " } else if title.contains(" 2000 rps ") { "--rate 2000 " } else { "--concurrency 16 " };
        assert!(args.contains(point), "{title}: {args}");
        let b = secs[i].body.join("\n");
        assert!(b.contains("# sample after 1s of warm-up for ") && b.contains("server (server: server in "), "{b}");
        if variant == Variant::Weft {
            assert!(b.contains("proxy-outbound") && b.contains("proxy-inbound") && b.contains("control/*"), "{b}");
        }
        // A Weft cell's pod stays up after the record for the cross-check's second scrape.
        assert_eq!(args.contains(" --linger 8s --json -"), variant.as_str().starts_with("weft"), "{title}: {args}");
        assert!(b.contains("$ kubectl --context kind-weft-bench delete job "), "{b}");
    }
    assert!(expected.is_empty(), "jobs missing: {expected:#?}");

    // Every server section: a Deployment and a Service on the server node.
    for s in secs.iter().filter(|s| s.title.starts_with("server ")) {
        let docs = manifests(s);
        let kinds: Vec<&str> = docs.iter().map(kind_of).collect();
        assert_eq!(kinds, ["Deployment", "Service"], "{}", s.title);
        let d: Deployment = serde_json::from_value(docs[0].clone()).unwrap();
        let pod = d.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.node_selector.unwrap()["weft.dev/role"], "server");
        let _: Service = serde_json::from_value(docs[1].clone()).unwrap();
    }
}

#[test]
fn kube_dry_run_uses_the_context_registry_and_node_labels_given() {
    let dir = tempfile::tempdir().unwrap();
    let out = dry_run(dir.path(), &["--substrate", "kube", "--suite", "ci"]);
    assert_eq!(out.status.code(), Some(64));
    let err = text(&out.stderr);
    assert!(err.contains("--substrate kube needs --registry REG"), "{err}");

    let out = dry_run(
        dir.path(),
        &["--substrate", "kube", "--suite", "ci", "--context", "prod", "--registry", "reg.example/team", "--client-selector", "pool=load", "--server-selector", "pool=app"],
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!dir.path().join("called").exists());
    let secs = sections(&stdout);
    assert_eq!(secs[0].body.join("\n").trim(), "$ kubectl --context prod cluster-info");
    let images = secs[1].body.join("\n");
    assert!(images.contains(" --registry reg.example/team --push") && !images.contains("--kind-load"), "{images}");
    let job = secs.iter().find(|s| s.title.starts_with("job ")).unwrap();
    let j: Job = serde_json::from_value(manifests(job)[0].clone()).unwrap();
    let pod = j.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.node_selector.unwrap()["pool"], "load");
    assert!(pod.containers[0].image.as_deref().unwrap().starts_with("reg.example/team/loadgen:"));
    assert!(!stdout.lines().any(|l| l.starts_with("$ kind ")), "{stdout}");
}

#[test]
fn a_real_kind_run_without_its_tools_says_which_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out_dir = dir.path().join("out");
    let out = run(Command::new(bench_exe())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PATH", &empty)
        .args(["run", "--substrate", "kind", "--suite", "quick", "--out"])
        .arg(&out_dir));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(err.contains("kubectl, kind, docker (or podman) not found on PATH"), "{err}");
    assert!(!out_dir.exists(), "nothing may be written");

    let out = run(Command::new(bench_exe()).env("PATH", &empty).args(["clean", "--substrate", "kind"]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("`kind get clusters`: kind not found on PATH"), "{err}");
}

#[test]
fn kind_suite_installs_linkerd_through_its_cli_and_skips_istio_without_istioctl() {
    let dir = tempfile::tempdir().unwrap();
    let out = dry_run(dir.path(), &["--substrate", "kind", "--suite", "kind"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!dir.path().join("called").exists());
    let secs = sections(&stdout);
    let titles: Vec<&str> = secs.iter().map(|s| s.title.as_str()).collect();
    let installs: Vec<&str> = titles.iter().filter(|t| t.starts_with("install ")).copied().collect();
    assert_eq!(installs, ["install baseline (mesh: none)", "install weft (mesh: weft)", "install linkerd (mesh: linkerd)"], "{titles:#?}");
    let linkerd = secs.iter().find(|s| s.title.starts_with("install linkerd")).unwrap().body.join("\n");
    for line in [
        "$ linkerd --context kind-weft-bench install --crds | kubectl --context kind-weft-bench apply -f -",
        "$ linkerd --context kind-weft-bench install | kubectl --context kind-weft-bench apply -f -",
        "$ linkerd --context kind-weft-bench check",
    ] {
        assert!(linkerd.contains(line), "{line}\n{linkerd}");
    }
    assert!(linkerd.contains(" linkerd.io/inject=enabled --overwrite"), "{linkerd}");
    let istio = secs.iter().find(|s| s.title == "skip istio (3 cells)").unwrap_or_else(|| panic!("{titles:#?}"));
    assert!(istio.body.join("\n").contains("WARNING: istioctl not found on PATH"), "{:?}", istio.body);
    assert_eq!(titles.iter().filter(|t| t.starts_with("job ")).count(), 9, "{titles:#?}");
    let job = secs.iter().find(|s| s.title.contains(" linkerd rep ")).unwrap().body.join("\n");
    assert!(job.contains("proxy-outbound (proxy: linkerd-proxy in ") && job.contains("control/* (control: every container in namespace linkerd)"), "{job}");
}
