//! The proxy exactly as the injector configures it: the environment of the
//! `weft-proxy` container mesh-kube adds to a pod, resolved as the kubelet
//! would (downward API values, `$(VAR)` expansion), given to the real
//! binary next to the real mesh-control. It must take every variable, get
//! its certificate as `spiffe://cluster.local/ns/shop/sa/web` and turn ready.
//! Only what a laptop cannot have is swapped: mesh-control's Service name
//! for its 127.0.0.1 address, the mounted token file for the test's, the
//! pod's fixed ports for ephemeral ones. The trust anchor is the injector's
//! own: the PEM it wrote into WEFT_PROXY_TRUST_ANCHOR_PEM, nothing mounted.

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mesh_kube::inject::{inject, Config, Outcome, Trigger};

use crate::common::*;
use crate::mesh_support::*;

/// The injected proxy container's environment for a pod of ServiceAccount
/// `web` in namespace `shop`, as the kubelet hands it to the process.
fn kubelet_env(container: &Container) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, var.value_from.as_ref().and_then(|f| f.field_ref.as_ref())) {
            (Some(value), None) => {
                // $(NAME) refers to a variable defined earlier in the list.
                env.iter().fold(value.clone(), |v, (name, val)| v.replace(&format!("$({name})"), val))
            }
            (None, Some(field)) => match field.field_path.as_str() {
                "metadata.namespace" => "shop".to_owned(),
                "spec.serviceAccountName" => "web".to_owned(),
                other => panic!("{}: a downward API field this test does not fill: {other}", var.name),
            },
            _ => panic!("{}: neither a value nor a fieldRef", var.name),
        };
        assert!(!value.contains("$("), "{}={value}: an unexpanded reference", var.name);
        env.push((var.name.clone(), value));
    }
    env
}

#[tokio::test]
async fn the_injected_proxy_certifies_as_its_pods_service_account_and_turns_ready() {
    let id = "spiffe://cluster.local/ns/shop/sa/web";
    let m = MeshDir::new(&[id]);
    let control = m.control("127.0.0.1:0", "1h").await;

    let mut meta = ObjectMeta::default();
    let mut spec = PodSpec {
        containers: vec![Container { name: "web".into(), image: Some("web".into()), ..Container::default() }],
        ..PodSpec::default()
    };
    // The injector is given the trust anchor mesh-control serves with, as
    // mesh-control's webhook and `weft inject --trust-anchor` are.
    let config = Config { trust_anchor_pem: std::fs::read_to_string(m.anchor()).unwrap(), ..Config::default() };
    assert_eq!(inject(&mut meta, &mut spec, Trigger::Manual, &config).unwrap(), Outcome::Injected);
    let mut env = kubelet_env(&spec.containers[0]);
    let swap = |env: &mut Vec<(String, String)>, name: &str, cluster: &str, here: String| {
        let var = env.iter_mut().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} not injected"));
        assert_eq!(var.1, cluster, "{name}");
        var.1 = here;
    };
    let service = "weft-control.weft.svc.cluster.local:8086";
    for name in ["WEFT_PROXY_CONTROL", "WEFT_PROXY_DESTINATION", "WEFT_PROXY_POLICY"] {
        swap(&mut env, name, service, control.addr.to_string());
    }
    swap(&mut env, "WEFT_PROXY_TOKEN_FILE", "/var/run/secrets/weft.io/serviceaccount/token", m.path("token.web").display().to_string());
    assert!(env.contains(&("WEFT_PROXY_TRUST_ANCHOR_PEM".to_owned(), config.trust_anchor_pem.clone())), "{env:?}");
    assert!(env.iter().all(|(n, _)| n != "WEFT_PROXY_TRUST_ANCHOR"), "no anchor file: {env:?}");
    assert!(env.contains(&("WEFT_PROXY_IDENTITY".to_owned(), id.to_owned())), "{env:?}");

    // The listen flags (127.0.0.1:0) override the injected 4140/4143/4191.
    let log = m.path("injected.log");
    let proxy = start_proxy_env(&[], &env, &log).await;
    ready(&proxy).await;
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains(id), "the proxy's log names its identity:\n{log}");
    control.stop().await;
}

#[test]
fn the_injector_keeps_the_proxys_default_opaque_ports() {
    assert_eq!(mesh_kube::names::PROXY_DEFAULT_OPAQUE_PORTS, mesh_proxy::OpaquePorts::DEFAULT);
}

/// `--trust-anchor-pem` goes through the file's checks, and the two
/// spellings are not both accepted (one would silently lose).
#[tokio::test]
async fn an_inline_trust_anchor_is_checked_and_not_given_twice() {
    let m = MeshDir::new(&[]);
    let anchor = m.path("anchor.pem");
    // A PEM, but of a key: no certificate to trust.
    let key = rcgen::KeyPair::generate().unwrap().serialize_pem();
    std::fs::write(&anchor, &key).unwrap();
    let run = |args: Vec<String>, env: Vec<(&'static str, String)>| async move {
        let out = within(&format!("mesh-proxy {args:?} exits"), tokio::process::Command::new(BIN).args(&args).envs(env).output())
            .await
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let destination = ["--destination".to_owned(), "127.0.0.1:1".to_owned()];

    let mut both = destination.to_vec();
    both.extend(["--trust-anchor".to_owned(), anchor.display().to_string()]);
    let (code, err) = run(both, vec![("WEFT_PROXY_TRUST_ANCHOR_PEM", key.clone())]).await;
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("both given") && err.contains("--trust-anchor-pem") && err.contains("anchor.pem"), "{err}");

    // Refused as from the file, the message naming the flag and its env.
    let (code, err) = run(destination.to_vec(), vec![("WEFT_PROXY_TRUST_ANCHOR_PEM", key)]).await;
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains("--trust-anchor-pem (env WEFT_PROXY_TRUST_ANCHOR_PEM): trust anchor PEM holds no certificate"), "{err}");
    let mut file = destination.to_vec();
    file.extend(["--trust-anchor".to_owned(), anchor.display().to_string()]);
    let (code, err) = run(file, vec![]).await;
    assert_eq!(code, Some(64), "{err}");
    assert!(err.contains(&format!("--trust-anchor {}: trust anchor PEM holds no certificate", anchor.display())), "{err}");
}
