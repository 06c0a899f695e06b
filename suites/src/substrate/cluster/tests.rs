//! The shared half of the capability: spec validation, how a request is
//! dialed under each interception, and the topology's manifests as
//! mesh-control reads them.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use mesh_control::discovery::manifests::Manifests;
use mesh_index::{DiscoverDestination, ProtocolHint};

use super::*;

fn spec() -> ClusterSpec {
    let ns = |n: &str| NamespaceSpec {
        name: n.into(),
        default_inbound_policy: None,
    };
    let w = |name: &str, meshed| WorkloadSpec {
        name: name.into(),
        namespace: "a".into(),
        service_account: name.into(),
        replicas: 1,
        meshed,
        app: Default::default(),
    };
    ClusterSpec {
        namespaces: vec![ns("a")],
        services: vec![ServiceSpec {
            name: "web".into(),
            namespace: "a".into(),
            ports: vec![
                PortSpec {
                    name: "http".into(),
                    port: 80,
                    target_port: 8080,
                    app_protocol: Some("http".into()),
                },
                PortSpec {
                    name: "grpc".into(),
                    port: 7070,
                    target_port: 7070,
                    app_protocol: Some("grpc".into()),
                },
            ],
            selects: vec!["web".into()],
        }],
        workloads: vec![w("client", true), w("web", true), w("plain", false)],
        manifests: Vec::new(),
        mesh: Default::default(),
    }
}

fn pod(name: &str, workload: &str, meshed: bool, port: u16) -> PodInfo {
    PodInfo {
        name: name.into(),
        namespace: "a".into(),
        workload: workload.into(),
        service_account: workload.into(),
        meshed,
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        app: SocketAddr::from(([127, 0, 0, 1], port + 1000)),
        endpoint_port: port,
        outbound: meshed.then(|| SocketAddr::from(([127, 0, 0, 1], port + 2000))),
        admin: meshed.then(|| SocketAddr::from(([127, 0, 0, 1], port + 3000))),
        netns: None,
    }
}

/// A local-shaped cluster: client-0 (meshed), web-0 and web-1 behind
/// Service web, plain-0 without a sidecar.
fn local(mode: MeshMode) -> Cluster {
    let mut c = Cluster::new("local", mode, Interception::Explicit);
    c.pods = vec![
        pod("client-0", "client", true, 41000),
        pod("web-0", "web", true, 41001),
        pod("web-1", "web", true, 41002),
        pod("plain-0", "plain", false, 41003),
    ];
    c.services = vec![ServiceInfo {
        name: "web".into(),
        namespace: "a".into(),
        cluster_ip: "127.97.0.1".parse().unwrap(),
        ports: spec().services[0].ports.clone(),
        pods: vec![1, 2],
    }];
    c
}

#[test]
fn a_spec_reports_every_problem() {
    assert_eq!(spec().validate(), Ok(()));
    let mut bad = spec();
    bad.workloads[0].namespace = "nowhere".into();
    bad.workloads[1].replicas = 0;
    bad.services[0].selects.push("ghost".into());
    bad.workloads.push(bad.workloads[2].clone());
    let problems = bad.validate().unwrap_err();
    assert_eq!(problems.len(), 5, "{problems:?}");
    for needle in ["namespace nowhere", "replicas", "ghost", "declared twice"] {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{needle}: {problems:?}"
        );
    }
}

#[test]
fn explicit_mesh_dials_the_sidecar_and_names_the_target() {
    let c = local(MeshMode::Weft);
    let d = c.dial("client-0", &To::service("web", "a", 80)).unwrap();
    assert_eq!(d.connect, c.pods[0].outbound.unwrap());
    assert_eq!(d.authority, "web.a.svc.cluster.local:80");
    assert!(d.via_sidecar);
    let d = c.dial("client-0", &To::pod("web-1")).unwrap();
    assert_eq!(d.connect, c.pods[0].outbound.unwrap());
    assert_eq!(
        d.authority, "127.0.0.1:41002",
        "a pod by its endpoint address"
    );
    // Nothing intercepts a ClusterIP: not applicable, with the reason.
    let e = c
        .dial("client-0", &To::cluster_ip("web", "a", 80))
        .unwrap_err();
    assert!(
        matches!(&e, DialError::NotExpressible(why) if why.contains("ClusterIP")),
        "{e}"
    );
    // Mistakes in a test are not "not applicable".
    assert!(matches!(
        c.dial("nobody", &To::pod("web-0")),
        Err(DialError::Unknown(_))
    ));
    assert!(matches!(
        c.dial("client-0", &To::service("web", "a", 81)),
        Err(DialError::Unknown(_))
    ));
}

/// Without a sidecar a client connects to the pod's address, where a meshed
/// pod's sidecar receives (and may refuse it), as in a cluster.
#[test]
fn without_a_sidecar_the_client_takes_the_endpoints_in_turn() {
    for (c, from) in [
        (local(MeshMode::Baseline), "client-0"),
        (local(MeshMode::Weft), "plain-0"),
    ] {
        let picks: Vec<SocketAddr> = (0..4)
            .map(|_| c.dial(from, &To::service("web", "a", 80)).unwrap().connect)
            .collect();
        let at = |p: &PodInfo| SocketAddr::new(p.ip, p.endpoint_port);
        let (web0, web1) = (at(&c.pods[1]), at(&c.pods[2]));
        assert_eq!(picks, vec![web0, web1, web0, web1], "from {from}");
        let d = c.dial(from, &To::pod("web-1")).unwrap();
        assert_eq!(d.connect, web1);
        assert!(!d.via_sidecar);
    }
}

#[test]
fn transparent_interception_dials_the_cluster_ip_from_the_pod() {
    let mut c = local(MeshMode::Weft);
    c.interception = Interception::Transparent;
    c.pods[0].netns = Some("/run/netns/client".into());
    c.pods[1].ip = "198.18.0.11".parse().unwrap();
    let d = c.dial("client-0", &To::cluster_ip("web", "a", 80)).unwrap();
    assert_eq!(d.connect, "127.97.0.1:80".parse().unwrap());
    assert_eq!(d.authority, "127.97.0.1:80");
    assert_eq!(
        d.netns.as_deref(),
        Some(std::path::Path::new("/run/netns/client"))
    );
    let d = c.dial("client-0", &To::service("web", "a", 80)).unwrap();
    assert_eq!(d.connect, "127.97.0.1:80".parse().unwrap());
    assert_eq!(d.authority, "web.a.svc.cluster.local:80");
    let d = c.dial("client-0", &To::pod("web-0")).unwrap();
    assert_eq!(d.connect, "198.18.0.11:41001".parse().unwrap());
}

#[test]
fn the_topology_resolves_in_mesh_control_to_meshed_pods() {
    let c = local(MeshMode::Weft);
    let yaml = yaml::render(
        &spec().namespaces,
        &c.services,
        &c.pods,
        Interception::Explicit,
    );
    let dir = tempfile::tempdir().unwrap();
    crate::substrate::manifests::write(dir.path(), "topology.yaml", &yaml).unwrap();
    let index = mesh_index::Index::new(mesh_index::Config::default());
    let mut backend = Manifests::new(dir.path(), index.clone());
    let report = backend.scan().unwrap();
    assert!(report.errors.is_empty(), "{:?}\n{yaml}", report.errors);
    for port in [80, 7070] {
        let view = index
            .watch_destination(&format!("web.a.svc.cluster.local:{port}"))
            .unwrap()
            .borrow()
            .clone();
        assert!(view.exists);
        let got: Vec<SocketAddr> = view.endpoints.keys().copied().collect();
        // On local every port of a pod is its sidecar's one inbound port.
        assert_eq!(
            got,
            vec![
                "127.0.0.1:41001".parse().unwrap(),
                "127.0.0.1:41002".parse().unwrap()
            ],
            "port {port}"
        );
        for ep in view.endpoints.values() {
            assert_eq!(
                ep.identity.as_deref(),
                Some("spiffe://cluster.local/ns/a/sa/web")
            );
            assert_eq!(ep.hint, ProtocolHint::H2);
        }
    }
    // A pod by its address is one meshed endpoint.
    let view = index
        .watch_destination("127.0.0.1:41002")
        .unwrap()
        .borrow()
        .clone();
    assert_eq!(view.endpoints.len(), 1);
}

#[test]
fn transparent_topologies_list_target_ports() {
    let mut c = local(MeshMode::Weft);
    c.pods[1].ip = "198.18.0.11".parse().unwrap();
    let yaml = yaml::render(
        &spec().namespaces,
        &c.services,
        &c.pods,
        Interception::Transparent,
    );
    assert!(yaml.contains("- name: http\n  port: 8080\n"), "{yaml}");
    assert!(yaml.contains("- name: grpc\n  port: 7070\n"), "{yaml}");
    assert!(yaml.contains("podIP: \"198.18.0.11\""), "{yaml}");
}

#[test]
fn modes_name_the_variant_and_the_switched_off_feature() {
    assert_eq!(MeshMode::Weft.as_str(), "weft");
    assert_eq!(MeshMode::Baseline.as_str(), "baseline");
    let no_routes = MeshMode::WeftWithout(Feature::Routes);
    assert_eq!(no_routes.as_str(), "weft-no-routes");
    assert_eq!(no_routes.disabled().map(Feature::as_str), Some("routes"));
    assert!(no_routes.meshed() && MeshMode::Weft.meshed() && !MeshMode::Baseline.meshed());
    // A switched-off feature still deploys the mesh: the client uses its sidecar.
    let c = local(MeshMode::WeftWithout(Feature::Timeouts));
    assert!(
        c.dial("client-0", &To::service("web", "a", 80))
            .unwrap()
            .via_sidecar
    );
}
