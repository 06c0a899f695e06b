//! images/: what can be checked without a container engine. The Dockerfile
//! builds binaries that exist, the proxy image runs as the uid `weft init`
//! exempts, the init image has both iptables back ends and runs as root, and
//! images/build is valid bash (and shellcheck-clean when shellcheck is installed).
//! Building and running the images needs docker or podman: images/README.md.

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use mesh_kube::names;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Dockerfile as instructions: continuation lines joined, comments dropped.
fn instructions() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("images/Dockerfile")).unwrap();
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || (line.is_empty() && current.is_empty()) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                if !current.trim().is_empty() {
                    out.push(current.split_whitespace().collect::<Vec<_>>().join(" "));
                }
                current.clear();
            }
        }
    }
    out
}

/// Stage name -> its instructions (after its FROM).
fn stages() -> Vec<(String, Vec<String>)> {
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    for ins in instructions() {
        if let Some(from) = ins.strip_prefix("FROM ") {
            let name = from.split(" AS ").nth(1).expect("every stage is named (FROM image AS name)");
            stages.push((name.trim().to_owned(), Vec::new()));
        } else if let Some((_, body)) = stages.last_mut() {
            body.push(ins);
        }
    }
    stages
}

fn stage(name: &str) -> Vec<String> {
    stages().into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no stage {name}")).1
}

/// Every binary target of the workspace, from `cargo metadata` (explicit [[bin]]s and src/main.rs alike).
fn workspace_bins() -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap())
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn dockerfile_builds_workspace_binaries_into_one_image_each() {
    let builder = stage("builder");
    let build = builder.iter().find(|i| i.contains("cargo build")).expect("the builder runs cargo build");
    assert!(build.contains("--release") && build.contains("--locked"), "{build}");
    let words: Vec<&str> = build.split_whitespace().collect();
    let built: BTreeSet<String> =
        words.windows(2).filter(|w| w[0] == "--bin").map(|w| w[1].to_owned()).collect();
    let want: BTreeSet<String> = ["mesh-proxy", "mesh-control", "loadgen", "weft"].map(String::from).into();
    assert_eq!(built, want, "{build}");
    let bins = workspace_bins();
    for bin in &built {
        assert!(bins.contains(bin), "the Dockerfile builds {bin}, not a binary of the workspace ({bins:?})");
    }

    // One runtime target per binary, each copying it from the builder and running it.
    for (target, bin) in [("proxy", "mesh-proxy"), ("control", "mesh-control"), ("loadgen", "loadgen"), ("weft", "weft")] {
        let body = stage(target);
        let copy = format!("COPY --from=builder /out/{bin} /usr/local/bin/{bin}");
        assert!(body.contains(&copy), "stage {target}: no `{copy}` in {body:#?}");
        let entry = format!("ENTRYPOINT [\"/usr/local/bin/{bin}\"]");
        assert!(body.contains(&entry), "stage {target}: no `{entry}` in {body:#?}");
        assert!(body.iter().any(|i| i.starts_with("USER ")), "stage {target} sets its USER explicitly");
    }
}

fn user(stage_name: &str) -> String {
    let body = stage(stage_name);
    let user = body.iter().rev().find_map(|i| i.strip_prefix("USER ")).unwrap_or_else(|| panic!("{stage_name}: no USER"));
    user.to_owned()
}

#[test]
fn proxy_runs_as_the_exempt_uid_and_others_not_as_root() {
    let proxy = user("proxy");
    let uid = proxy.split(':').next().unwrap();
    assert_eq!(uid, names::PROXY_UID.to_string(), "the proxy image's USER {proxy} must be names::PROXY_UID");
    for s in ["control", "loadgen"] {
        let u = user(s);
        assert!(!matches!(u.split(':').next().unwrap(), "root" | "0"), "{s} runs as {u}: must not be root");
    }
}

#[test]
fn init_image_has_iptables_and_runs_weft_init_as_root() {
    let body = stage("weft");
    assert!(
        body.iter().any(|i| i.starts_with("RUN ") && i.contains("apt-get install") && i.split_whitespace().any(|w| w == "iptables")),
        "the weft stage installs Debian's iptables (iptables-nft and iptables-legacy): {body:#?}"
    );
    assert!(matches!(user("weft").as_str(), "root" | "0" | "0:0"), "weft init needs root");
    assert!(body.contains(&"CMD [\"init\"]".to_owned()), "{body:#?}");
    // The runtime's Debian is the builder's, so the binaries' glibc matches.
    let froms: Vec<String> = instructions().into_iter().filter(|i| i.starts_with("FROM ")).collect();
    assert!(froms.iter().any(|f| f.contains("-${DEBIAN} AS builder")), "{froms:?}");
    assert!(froms.iter().any(|f| f.contains("debian:${DEBIAN}-slim AS weft")), "{froms:?}");
    assert!(froms.iter().filter(|f| f.contains("distroless")).all(|f| f.contains("cc-debian12")), "{froms:?}");
    let arg = instructions().into_iter().find(|i| i.starts_with("ARG DEBIAN=")).unwrap();
    assert_eq!(arg, "ARG DEBIAN=bookworm", "distroless cc-debian12 is bookworm");
}

#[test]
fn dockerignore_keeps_build_output_out_of_the_context() {
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    let lines: Vec<&str> = ignore.lines().map(str::trim).collect();
    for want in ["target/", "**/target/", ".git/"] {
        assert!(lines.contains(&want), ".dockerignore lacks {want}");
    }
}

#[test]
fn build_script_is_valid_bash() {
    let script = root().join("images/build");
    let out = Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(out.status.success(), "bash -n images/build: {}", String::from_utf8_lossy(&out.stderr));
    match Command::new("shellcheck").arg(&script).output() {
        Ok(out) => assert!(out.status.success(), "shellcheck images/build:\n{}", String::from_utf8_lossy(&out.stdout)),
        Err(e) => eprintln!("shellcheck not installed ({e}): only `bash -n` checked images/build"),
    }
    // --dry-run prints every command and the image references without an engine.
    let out = Command::new("bash")
        .arg(&script)
        .args(["--dry-run", "--engine", "podman", "--tag", "t1", "--registry", "reg.example/x/", "--push", "--kind-load", "k"])
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    let refs: Vec<&str> = stdout.lines().collect();
    // weft install's names (`--registry R --tag T`), so the two cannot drift apart.
    let targets = [
        ("proxy", names::PROXY_IMAGE),
        ("control", names::CONTROL_IMAGE),
        ("loadgen", names::LOADGEN_IMAGE),
        ("weft", names::INIT_IMAGE),
    ];
    let want: Vec<String> = targets.iter().map(|(_, image)| format!("reg.example/x/{image}:t1")).collect();
    assert_eq!(refs, want);
    for (target, image) in targets {
        // Also tagged with the crate version, weft install's default tag.
        let cmd = format!(
            "+ podman build -f images/Dockerfile --target {target} -t reg.example/x/{image}:t1 -t reg.example/x/{image}:{} .",
            env!("CARGO_PKG_VERSION")
        );
        assert!(stderr.contains(&cmd), "{cmd:?} not in\n{stderr}");
        assert!(stderr.contains(&format!("+ podman push reg.example/x/{image}:t1")), "{stderr}");
    }
    assert!(stderr.contains("kind load image-archive --name k"), "{stderr}");
    assert!(stderr.contains("weft install --registry reg.example/x --tag t1"), "{stderr}");
    // Without --registry: weft install's default registry.
    let out = Command::new("bash").arg(&script).args(["--dry-run", "--engine", "docker", "--tag", "t2", "--only", "proxy"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{}/{}:t2", names::IMAGE_REGISTRY, names::PROXY_IMAGE));
    // Bad arguments exit 64 naming what was wrong.
    let out = Command::new("bash").arg(&script).args(["--dry-run", "--only", "sidecar"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'sidecar'"));
}
