//! `--transparent` for real: two pod namespaces joined by a veth, the
//! iptables rules of the real `weft init` installed in each, the real
//! mesh-control, and two real proxies running as the proxy uid. The apps
//! and clients know nothing of the mesh: they dial pod IPs and Service
//! ClusterIPs. Needs root (namespaces, iptables); CI runs as root.
//!
//! ```text
//!  client ns  198.18.X.1                          server ns  198.18.X.2
//!  curl ─(OUTPUT REDIRECT)─> outbound proxy ══mTLS══> (PREROUTING REDIRECT) inbound proxy ─> app :8080 / :7000
//!  (the proxies listen on ephemeral ports; `weft init` is given them)
//!                                       └─plain─> :9090 (unknown to the control plane; skip-inbound)
//!                                                  mesh-control 198.18.X.2:<ephemeral> (skip-inbound)
//! ```
//!
//! Sockets of the test itself (apps, raw clients) are made by threads that
//! entered a namespace with setns(2): a socket stays in the namespace it was
//! created in. Namespaces (and every process in them) go in Drop guards.

use std::{
    convert::Infallible,
    fs::File,
    net::{IpAddr, SocketAddr},
    os::unix::fs::PermissionsExt,
    path::PathBuf,
    process::{Output, Stdio},
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    process::{Child, Command},
};

use weft_testkit::{run_ok as ok, TestNetns};

use crate::{common::*, mesh_support::*};

const PROXY_UID: &str = "2102";

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root: it creates network namespaces, installs iptables rules in them with `weft init` \
         and runs the proxies as uid {PROXY_UID} (run `cargo test -p mesh-proxy` as root; CI does)"
    );
}


/// The test's pod namespaces (created and removed by
/// `weft_testkit::TestNetns`) and what the tests do in them.
type Netns = TestNetns;

trait NetnsExt {
    fn wrapper(&self) -> Vec<String>;
    fn listen(&self, addr: &str) -> TcpListener;
    fn connect(&self, addr: SocketAddr) -> std::io::Result<TcpStream>;
    fn weft_init(&self, extra: &[&str]);
    async fn curl(&self, extra: &[&str], url: &str) -> Output;
}

impl NetnsExt for Netns {
    /// `ip netns exec NAME` in front of a command.
    fn wrapper(&self) -> Vec<String> {
        args(&["ip", "netns", "exec", &self.name])
    }

    fn listen(&self, addr: &str) -> TcpListener {
        let addr: SocketAddr = addr.parse().unwrap();
        let l = self.run(|| std::net::TcpListener::bind(addr)).unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", self.name));
        l.set_nonblocking(true).unwrap();
        TcpListener::from_std(l).unwrap()
    }

    fn connect(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let s = self.run(|| std::net::TcpStream::connect_timeout(&addr, patience()))?;
        s.set_nonblocking(true)?;
        TcpStream::from_std(s)
    }

    /// `weft init ARGS` in this namespace.
    fn weft_init(&self, extra: &[&str]) {
        let weft = weft_bin().to_str().unwrap().to_owned();
        let mut a = vec!["netns", "exec", &self.name, &weft, "init"];
        a.extend_from_slice(extra);
        ok("ip", &a);
    }

    /// curl in this namespace as root (so its connections are redirected);
    /// (exit ok, stdout, stderr).
    async fn curl(&self, extra: &[&str], url: &str) -> Output {
        let max = patience().as_secs().to_string();
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "curl", "-sS", "--max-time", &max])
            .args(extra)
            .arg(url)
            .output();
        within("curl", out).await.expect("run curl")
    }
}


/// Pod namespaces `c` (198.18.X.1) and `s` (198.18.X.2), a veth `eth0` in
/// each; ClusterIPs 198.19.X.0/24 are routed out of the client's eth0 (the
/// OUTPUT rule redirects them before they leave).
struct Pods {
    client: Netns,
    server: Netns,
    x: u8,
}

impl Pods {
    fn new(what: &str, x: u8) -> Self {
        let client = Netns::new(&format!("{what}c"));
        let server = Netns::new(&format!("{what}s"));
        ok("ip", &["-n", &client.name, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &server.name]);
        for (ns, host) in [(&client, 1), (&server, 2)] {
            ok("ip", &["-n", &ns.name, "addr", "add", &format!("198.18.{x}.{host}/24"), "dev", "eth0"]);
            ok("ip", &["-n", &ns.name, "link", "set", "eth0", "up"]);
        }
        ok("ip", &["-n", &client.name, "route", "add", &format!("198.19.{x}.0/24"), "dev", "eth0"]);
        Pods { client, server, x }
    }

    fn client_ip(&self) -> IpAddr {
        format!("198.18.{}.1", self.x).parse().unwrap()
    }

    fn server_ip(&self) -> IpAddr {
        format!("198.18.{}.2", self.x).parse().unwrap()
    }

    /// Makes both pods dual-stack: (client, server) = 2001:2:0:X::1 and ::2
    /// (X in hex; 2001:2::/48 is IPv6's benchmarking prefix, RFC 5180).
    fn add_ipv6(&self) -> (IpAddr, IpAddr) {
        let v6 = |host: u16| -> IpAddr { std::net::Ipv6Addr::new(0x2001, 2, 0, u16::from(self.x), 0, 0, 0, host).into() };
        for (ns, host) in [(&self.client, 1), (&self.server, 2)] {
            // nodad: usable at once, no duplicate address detection wait.
            ok("ip", &["-n", &ns.name, "addr", "add", &format!("{}/64", v6(host)), "dev", "eth0", "nodad"]);
        }
        (v6(1), v6(2))
    }
}

/// A proxy in a namespace, as the proxy uid, on ephemeral ports that
/// `weft init` is then told to redirect to.
struct NsProxy {
    _child: Child,
    log: PathBuf,
    /// Where its outbound listener is (127.0.0.1, ephemeral).
    outbound: SocketAddr,
    /// Its admin listener, skipped by the inbound redirect.
    admin: SocketAddr,
}

impl NsProxy {
    /// Start the proxy, read its listeners back, then install `weft init`'s
    /// rules for those ports in `ns`, also leaving `skip_inbound` ports alone.
    async fn start(ns: &Netns, log: PathBuf, extra: &[String], skip_inbound: &[u16]) -> Self {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "setpriv"])
            .args([&format!("--reuid={PROXY_UID}"), &format!("--regid={PROXY_UID}"), "--clear-groups", BIN])
            .args(["--transparent", "--outbound-listen", "127.0.0.1:0", "--inbound-listen", "0.0.0.0:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(if extra.iter().any(|a| a == "--detect-timeout") { &[][..] } else { &["--detect-timeout", "300ms"][..] })
            .args(extra)
            .env("RUST_LOG", std::env::var("WEFT_TEST_PROXY_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn mesh-proxy in the namespace");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = Vec::new();
        while !seen.iter().any(|l: &String| l.starts_with("listening admin")) {
            let line = within("proxy announces its listeners", lines.next_line()).await.unwrap();
            let line = line.unwrap_or_else(|| panic!("proxy exited: {}", std::fs::read_to_string(&log).unwrap_or_default()));
            seen.push(line);
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        // Transparent mode has an inbound listener without --app.
        let addr = |name: &str| -> SocketAddr {
            let prefix = format!("listening {name} ");
            seen.iter()
                .find_map(|l| l.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no `{prefix}...` line in {seen:?}"))
                .parse()
                .unwrap()
        };
        let (outbound, inbound, admin) = (addr("outbound"), addr("inbound"), addr("admin"));
        let skip: Vec<String> = std::iter::once(admin.port()).chain(skip_inbound.iter().copied()).map(|p| p.to_string()).collect();
        ns.weft_init(&[
            "--outbound-port",
            &outbound.port().to_string(),
            "--inbound-port",
            &inbound.port().to_string(),
            "--skip-inbound-ports",
            &skip.join(","),
        ]);
        Self { _child: child, log, outbound, admin }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// One HTTP/1 GET from inside `ns`; (status, body).
async fn ns_get(ns: &Netns, addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let stream = ns.connect(addr).unwrap_or_else(|e| panic!("connect {addr} in {}: {e}", ns.name));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let resp = within("admin response", sender.send_request(get(path, "admin"))).await.unwrap();
    let status = resp.status();
    let body = within("admin body", resp.into_body().collect()).await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn ns_metrics(ns: &Netns, proxy: &NsProxy) -> String {
    let (status, body) = ns_get(ns, proxy.admin, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    body
}

async fn ns_ready(ns: &Netns, proxy: &NsProxy) {
    eventually("proxy ready", || async {
        let stream = ns.connect(proxy.admin).ok()?;
        drop(stream);
        (ns_get(ns, proxy.admin, "/ready").await.0 == StatusCode::OK).then_some(())
    })
    .await;
}

fn requests(metrics: &str, direction: &str) -> f64 {
    metric(metrics, &format!(r#"weft_requests_total{{direction="{direction}",status_class="2xx"}}"#)).unwrap_or(0.0)
}

/// An HTTP app answering `peer=<ip>` and its request headers, one per line.
fn http_app(listener: TcpListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let svc = service_fn(move |req: Request<Incoming>| async move {
                let mut lines: Vec<String> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
                    .collect();
                lines.sort();
                let body = format!("peer={}\nversion={:?}\n{}\n", peer.ip(), req.version(), lines.join("\n"));
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    })
}

/// A server-speaks-first TCP app: a banner, then every byte echoed. The
/// peers it saw are recorded.
fn banner_app(listener: TcpListener) -> (Arc<Mutex<Vec<IpAddr>>>, tokio::task::JoinHandle<()>) {
    let peers = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&peers);
    let task = tokio::spawn(async move {
        while let Ok((mut stream, peer)) = listener.accept().await {
            seen.lock().unwrap().push(peer.ip());
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                if w.write_all(b"HELLO weft\n").await.is_ok() {
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
        }
    });
    (peers, task)
}

/// Reads until `want` bytes arrived (or the stream ends).
async fn read_n(stream: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut buf = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match within("bytes from the banner app", stream.read(&mut buf[got..])).await {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    buf.truncate(got);
    buf
}

/// A client in `ns` that says nothing until a [`banner_app`] at `addr`
/// greets it, then has bytes echoed: what a server-speaks-first protocol
/// looks like to the client proxy (opaque TCP after --detect-timeout).
async fn banner_through_proxies(ns: &Netns, addr: SocketAddr, client: &NsProxy) {
    let mut db = ns.connect(addr).unwrap();
    assert_eq!(read_n(&mut db, 11).await, b"HELLO weft\n", "banner through both proxies\n{}", client.stderr());
    db.write_all(b"ping\x00\xff\n").await.unwrap();
    assert_eq!(read_n(&mut db, 7).await, b"ping\x00\xff\n");
}

/// curl `url` from the client pod through both meshed proxies: it must
/// succeed over mTLS (the app sees the client's identity) and be delivered
/// by the server's proxy (the app's peer is the proxy's 127.0.0.6, or
/// `server_ip` over IPv6). The body.
async fn meshed_get(pods: &Pods, flags: &[&str], url: &str, server_ip: IpAddr, client: &NsProxy, server: &NsProxy) -> String {
    // IPv6 has no spare loopback source: the proxy dials from the pod IP.
    let app_peer = if server_ip.is_ipv4() { LOCAL_APP_SOURCE } else { server_ip };
    let out = pods.client.curl(flags, url).await;
    let body = String::from_utf8_lossy(&out.stdout).into_owned();
    let diag = || format!("{url}: {}\n{body}\n--- client\n{}\n--- server\n{}", String::from_utf8_lossy(&out.stderr), client.stderr(), server.stderr());
    assert!(out.status.success(), "{}", diag());
    assert!(body.contains(&format!("weft-client-id: {CLIENT_ID}")), "mTLS between the proxies, the app learns the caller: {}", diag());
    assert!(body.contains(&format!("peer={app_peer}\n")), "delivered by the server's proxy: {}", diag());
    body
}

/// A client-pod connection to `addr` that the server's proxy closes
/// unanswered because the port's policy refuses the client, counted once.
async fn refused_by_policy(pods: &Pods, addr: SocketAddr, server: &NsProxy) {
    let mut conn = pods.client.connect(addr).unwrap();
    let mut got = Vec::new();
    let _ = within("the server's proxy closes an unauthorized connection", conn.read_to_end(&mut got)).await;
    assert!(got.is_empty(), "no banner: {}", String::from_utf8_lossy(&got));
    let sm = ns_metrics(&pods.server, server).await;
    let denied = r#"weft_inbound_authz_denied_total{protocol="tcp",reason="unauthorized"}"#;
    assert_eq!(metric(&sm, denied), Some(1.0), "{sm}");
}

/// Lets the proxy uid read what it needs of a MeshDir: tokens, the trust
/// anchor (the CA's keys stay 0600).
fn readable_by_proxy(m: &MeshDir) {
    let set = |p: PathBuf, mode| std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    set(m.dir.path().to_owned(), 0o755);
    for entry in std::fs::read_dir(m.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("token.") {
            set(path, 0o644);
        }
    }
    set(m.path("data"), 0o711);
    set(m.anchor(), 0o644);
}

/// Where the server's proxy dials its app from (IPv4): only the inbound
/// proxy uses it, so an app seeing it was reached through the proxy.
const LOCAL_APP_SOURCE: IpAddr = IpAddr::V4(mesh_proxy::http::upstream::LOCAL_APP_SOURCE_V4);

const CLIENT_ID: &str = "spiffe://cluster.local/ns/test/sa/client";
const SERVER_ID: &str = "spiffe://cluster.local/ns/test/sa/server";

/// mesh-control in the server pod, serving `yaml` as its manifests, and
/// both pods' proxies (identities `client` and `server`, Destination and
/// Policy from it), ready. The server's proxy leaves the control plane's
/// port and `skip_inbound` alone.
async fn meshed_pods(pods: &Pods, m: &MeshDir, yaml: &str, skip_inbound: &[u16]) -> (Control, NsProxy, NsProxy) {
    meshed_pods_with(pods, m, yaml, skip_inbound, &[]).await
}

/// [`meshed_pods`] with `extra` arguments for both proxies.
async fn meshed_pods_with(pods: &Pods, m: &MeshDir, yaml: &str, skip_inbound: &[u16], extra: &[&str]) -> (Control, NsProxy, NsProxy) {
    let manifests = m.path("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    std::fs::write(manifests.join("pods.yaml"), yaml).unwrap();
    let cp = m
        .control_in(
            &pods.server.wrapper(),
            &format!("{}:0", pods.server_ip()),
            "1h",
            &args(&["--manifests", manifests.to_str().unwrap(), "--manifests-poll", "50ms"]),
        )
        .await;
    readable_by_proxy(m);
    let ctl = cp.addr.to_string();
    let mut common = args(&["--destination", &ctl, "--policy", &ctl]);
    common.extend(args(extra));
    let mut client_args = m.identity_args(CLIENT_ID, cp.addr);
    client_args.extend(common.iter().cloned());
    let mut server_args = m.identity_args(SERVER_ID, cp.addr);
    server_args.extend(common);
    server_args.push("--forward-client-identity".into());
    let client = NsProxy::start(&pods.client, m.path("client.log"), &client_args, &[]).await;
    let skip: Vec<u16> = skip_inbound.iter().copied().chain([cp.addr.port()]).collect();
    let server = NsProxy::start(&pods.server, m.path("server.log"), &server_args, &skip).await;
    ns_ready(&pods.client, &client).await;
    ns_ready(&pods.server, &server).await;
    (cp, client, server)
}

fn pod(name: &str, sa: &str, ip: IpAddr) -> String {
    format!(
        "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: test, annotations: {{weft.io/inject: enabled}}}}\n\
         spec: {{serviceAccountName: {sa}, containers: [{{name: app, image: app}}]}}\nstatus: {{podIP: {ip}}}\n"
    )
}

fn service(name: &str, cluster_ip: &str, port_name: &str, port: u16, target: u16, pod_ip: IpAddr, annotations: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: test, annotations: {{{annotations}}}}}\n\
         spec: {{clusterIP: {cluster_ip}, ports: [{{name: {port_name}, port: {port}, targetPort: {target}}}]}}\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {name}-1, namespace: test, labels: {{kubernetes.io/service-name: {name}}}}}\n\
         addressType: IPv4\nports: [{{name: {port_name}, port: {target}}}]\n\
         endpoints:\n- addresses: [{pod_ip}]\n  targetRef: {{kind: Pod, name: server, namespace: test}}\n"
    )
}

/// Plain clients in the client namespace reach apps in the server
/// namespace through both transparent proxies: HTTP/1 and h2 to a pod IP
/// and to a Service ClusterIP over mTLS (the app learns the client's
/// SPIFFE ID), a server-speaks-first TCP protocol inside mTLS, a
/// destination the control plane does not know in plaintext, a
/// connection straight to the outbound port refused as a loop, and a port
/// whose own authorization policy refuses the client.
#[tokio::test]
async fn transparent_proxies_mesh_pod_namespaces_behind_weft_init() {
    require_root();
    weft_bin();
    let pods = Pods::new("tp", 143);
    let (x, client_ip, server_ip) = (pods.x, pods.client_ip(), pods.server_ip());
    let _web = http_app(pods.server.listen("0.0.0.0:8080"));
    let _unknown = http_app(pods.server.listen("0.0.0.0:9090"));
    let (banner_peers, _banner) = banner_app(pods.server.listen("0.0.0.0:7000"));
    let (vault_peers, _vault) = banner_app(pods.server.listen("0.0.0.0:7001"));

    let m = MeshDir::new(&[CLIENT_ID, SERVER_ID]);
    let mut yaml = pod("client", "client", client_ip) + &pod("server", "server", server_ip);
    yaml += &service("web", &format!("198.19.{x}.10"), "http", 80, 8080, server_ip, "");
    yaml += &service("db", &format!("198.19.{x}.11"), "tcp", 7000, 7000, server_ip, "config.weft.io/opaque-ports: \"7000\"");
    // Only another workload may reach port 7001: the server's proxy judges
    // each original destination port by its own policy.
    yaml += &service("vault", &format!("198.19.{x}.12"), "tcp", 7001, 7001, server_ip, "");
    yaml += "---\napiVersion: policy.weft.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: vault, namespace: test}\n\
             spec:\n  targetRef: {kind: Service, name: vault}\n  from: {identities: [\"spiffe://cluster.local/ns/test/sa/other\"]}\n";
    // The control plane and the unknown app are reached without the server's proxy.
    let (cp, client, server) = meshed_pods(&pods, &m, &yaml, &[9090]).await;

    // (a) HTTP to the pod IP and to the ClusterIP, HTTP/1 and h2: mTLS
    // between the proxies, the app sees the client's identity, Host unchanged.
    let cases = [
        (vec![], format!("http://{server_ip}:8080/headers"), format!("host: {server_ip}:8080"), "HTTP/1.1"),
        (vec!["--http2-prior-knowledge"], format!("http://{server_ip}:8080/headers"), String::new(), "HTTP/2.0"),
        (vec![], format!("http://198.19.{x}.10/headers"), format!("host: 198.19.{x}.10"), "HTTP/1.1"),
    ];
    for (flags, url, host, version) in &cases {
        let body = meshed_get(&pods, flags, url, server_ip, &client, &server).await;
        // h2 from curl carries no Host; the server's proxy restores HTTP/1
        // requests (weft-orig-proto) with their own Host.
        assert!(body.contains(host.as_str()), "Host passed unchanged: {url}: {body}");
        assert!(body.contains(&format!("version={version}")), "{url}: {body}");
    }
    let (cm, sm) = (ns_metrics(&pods.client, &client).await, ns_metrics(&pods.server, &server).await);
    assert_eq!(requests(&cm, "outbound"), 3.0, "client proxy counts every request outbound:\n{cm}");
    assert_eq!(requests(&sm, "inbound"), 3.0, "server proxy counts every request inbound:\n{sm}");

    // (b) A server-speaks-first protocol: the client sends nothing, so after
    // --detect-timeout it is opaque TCP, inside mTLS (weft-tcp/1) to the
    // server's proxy, which relays it to the app.
    banner_through_proxies(&pods.client, SocketAddr::new(server_ip, 7000), &client).await;
    assert_eq!(banner_peers.lock().unwrap().as_slice(), [LOCAL_APP_SOURCE], "the app was reached by the server's proxy");

    // (c) Straight to the outbound port: refused as a loop, counted, and the
    // proxy goes on serving.
    let before = ns_metrics(&pods.client, &client).await;
    let loops = |text: &str| metric(text, r#"weft_refused_connections_total{direction="outbound",reason="loop"}"#).unwrap_or(0.0);
    let mut direct = pods.client.connect(client.outbound).unwrap();
    let _ = direct.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut rest = Vec::new();
    let _ = within("the proxy closes a loop", direct.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "nothing is answered: {}", String::from_utf8_lossy(&rest));
    let after = ns_metrics(&pods.client, &client).await;
    assert_eq!(loops(&after) - loops(&before), 1.0, "{after}");
    assert!(client.stderr().contains("redirect loop"), "{}", client.stderr());

    // (d) A destination the control plane does not know: plaintext, straight
    // to the original destination (no identity header, the client's own IP).
    let out = pods.client.curl(&[], &format!("http://{server_ip}:9090/headers")).await;
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), client.stderr());
    assert!(body.contains(&format!("peer={client_ip}\n")) && !body.contains("weft-client-id"), "{body}");
    let cm = ns_metrics(&pods.client, &client).await;
    assert_eq!(requests(&cm, "outbound"), 4.0, "{cm}");
    assert_eq!(requests(&ns_metrics(&pods.server, &server).await, "inbound"), 3.0, "the server's proxy was not on the path");

    // (e) Port 7001's policy names someone else: the meshed connection is
    // closed by the server's proxy before it reaches the app, and counted.
    refused_by_policy(&pods, SocketAddr::new(server_ip, 7001), &server).await;
    assert!(vault_peers.lock().unwrap().is_empty(), "the app never saw it");
    assert!(server.stderr().contains("to port 7001: unauthorized"), "{}", server.stderr());

    // (f) The hairpin: the server pod calls its own Service. Its outbound
    // proxy's mTLS connection to its own pod IP goes through `lo`, where
    // only `weft init`'s hairpin rule sends it to the inbound proxy (else
    // it would reach the app as TLS bytes): answered, with the server's own
    // identity, and counted inbound.
    let before = requests(&ns_metrics(&pods.server, &server).await, "inbound");
    // As in a cluster, the server pod has a route to the ClusterIPs.
    ok("ip", &["-n", &pods.server.name, "route", "add", &format!("198.19.{x}.0/24"), "dev", "eth0"]);
    let out = pods.server.curl(&[], &format!("http://198.19.{x}.10/headers")).await;
    let body = String::from_utf8_lossy(&out.stdout);
    let diag = format!("{}
{body}
--- server
{}", String::from_utf8_lossy(&out.stderr), server.stderr());
    assert!(out.status.success(), "the pod calling its own Service: {diag}");
    assert!(body.contains(&format!("weft-client-id: {SERVER_ID}")), "through both of its proxies over mTLS: {diag}");
    assert!(body.contains(&format!("peer={LOCAL_APP_SOURCE}\n")), "delivered by its inbound proxy: {diag}");
    let after = requests(&ns_metrics(&pods.server, &server).await, "inbound");
    assert_eq!(after - before, 1.0, "the hairpinned request is counted inbound");
    cp.stop().await;
}

/// Ports the control plane marks opaque skip protocol detection on both
/// proxies: with `--detect-timeout` far beyond the test's patience, a
/// server-speaks-first app's banner still arrives, by ClusterIP and by pod
/// IP, because neither proxy waits for the silent client. And a WebSocket
/// to a ClusterIP crosses both transparent proxies over mTLS.
#[tokio::test]
async fn transparent_opaque_ports_skip_detection_and_websockets_cross() {
    require_root();
    weft_bin();
    let pods = Pods::new("to", 147);
    let (x, client_ip, server_ip) = (pods.x, pods.client_ip(), pods.server_ip());
    let (banner_peers, _banner) = banner_app(pods.server.listen("0.0.0.0:7000"));
    let chat = crate::websocket::ws_app_on(pods.server.listen("0.0.0.0:8081"));

    let m = MeshDir::new(&[CLIENT_ID, SERVER_ID]);
    let mut yaml = pod("client", "client", client_ip) + &pod("server", "server", server_ip);
    yaml += &service("db", &format!("198.19.{x}.11"), "tcp", 7000, 7000, server_ip, "config.weft.io/opaque-ports: \"7000\"");
    yaml += &service("chat", &format!("198.19.{x}.13"), "http", 80, 8081, server_ip, "");
    // Detection that waited would outlast every wait of this test.
    let (cp, client, server) = meshed_pods_with(&pods, &m, &yaml, &[], &["--detect-timeout", "1h"]).await;

    for addr in [format!("198.19.{x}.11:7000"), format!("{server_ip}:7000")] {
        banner_through_proxies(&pods.client, addr.parse().unwrap(), &client).await;
    }
    assert_eq!(banner_peers.lock().unwrap().as_slice(), [LOCAL_APP_SOURCE, LOCAL_APP_SOURCE], "both delivered by the server's proxy");
    assert!(
        metric(&ns_metrics(&pods.server, &server).await, r#"weft_inbound_authz_denied_total{protocol="tcp",reason="unauthorized"}"#)
            .unwrap_or(0.0)
            == 0.0
    );

    let stream = pods.client.connect(format!("198.19.{x}.13:80").parse().unwrap()).unwrap();
    let mut ws = crate::websocket::ws_handshake(stream, &format!("198.19.{x}.13"), "/chat")
        .await
        .unwrap_or_else(|e| panic!("handshake: {e}\n--- client\n{}\n--- server\n{}", client.stderr(), server.stderr()));
    crate::websocket::round_trips(&mut ws, "transparent").await;
    crate::websocket::client_closes(ws).await;
    let seen = chat.upgrades.lock().unwrap()[0].clone();
    assert_eq!(seen["weft-client-id"], CLIENT_ID, "mTLS between the proxies");
    cp.stop().await;
}

/// Without a control plane: plaintext-only transparent proxies forward
/// each request to its original destination in its own protocol, inbound
/// to the app port the client dialed (no --app), and opaque TCP is
/// relayed as is.
#[tokio::test]
async fn transparent_proxies_without_a_control_plane_forward_to_the_original_destination() {
    require_root();
    weft_bin();
    let pods = Pods::new("tq", 144);
    let server_ip = pods.server_ip();
    let _web = http_app(pods.server.listen("0.0.0.0:8080"));
    let (banner_peers, _banner) = banner_app(pods.server.listen("0.0.0.0:7000"));
    let dir = tempfile::tempdir().unwrap();
    // Plaintext-only, no policy source: the permissive default is explicit.
    let open = args(&["--default-inbound-policy", "all-unauthenticated"]);
    let client = NsProxy::start(&pods.client, dir.path().join("client.log"), &open, &[]).await;
    let server = NsProxy::start(&pods.server, dir.path().join("server.log"), &open, &[]).await;
    ns_ready(&pods.client, &client).await;
    ns_ready(&pods.server, &server).await;

    for flags in [vec![], vec!["--http2-prior-knowledge"]] {
        let out = pods.client.curl(&flags, &format!("http://{server_ip}:8080/headers")).await;
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}\n{}\n{}", String::from_utf8_lossy(&out.stderr), client.stderr(), server.stderr());
        assert!(body.contains(&format!("peer={LOCAL_APP_SOURCE}\n")), "through the server's proxy: {body}");
        let expected = if flags.is_empty() { "version=HTTP/1.1" } else { "version=HTTP/2.0" };
        assert!(body.contains(expected), "the request's own protocol, {expected}: {body}");
    }
    assert_eq!(requests(&ns_metrics(&pods.client, &client).await, "outbound"), 2.0);
    assert_eq!(requests(&ns_metrics(&pods.server, &server).await, "inbound"), 2.0);

    let mut db = pods.client.connect(SocketAddr::new(server_ip, 7000)).unwrap();
    assert_eq!(read_n(&mut db, 11).await, b"HELLO weft\n");
    db.write_all(b"\x00\xffbinary\n").await.unwrap();
    assert_eq!(read_n(&mut db, 9).await, b"\x00\xffbinary\n");
    drop(db);
    assert_eq!(banner_peers.lock().unwrap().as_slice(), [LOCAL_APP_SOURCE]);
}

/// A dual-stack pod: `weft init` redirects IPv6 TCP too (ip6tables) and the
/// proxies listen on the IPv6 twins of their listeners ([::1] outbound, [::]
/// inbound), so a client dialing an IPv6 pod address goes through both
/// proxies exactly as over IPv4, instead of around them.
#[tokio::test]
async fn transparent_proxies_carry_ipv6_too() {
    require_root();
    weft_bin();
    let pods = Pods::new("t6", 145);
    let (_, server_ip) = pods.add_ipv6();
    // [::] without IPV6_V6ONLY: the app takes both families.
    let _web = http_app(pods.server.listen("[::]:8080"));
    let dir = tempfile::tempdir().unwrap();
    // Plaintext-only, no policy source: the permissive default is explicit.
    let open = args(&["--default-inbound-policy", "all-unauthenticated"]);
    let client = NsProxy::start(&pods.client, dir.path().join("client.log"), &open, &[]).await;
    let server = NsProxy::start(&pods.server, dir.path().join("server.log"), &open, &[]).await;
    ns_ready(&pods.client, &client).await;
    ns_ready(&pods.server, &server).await;
    for (ns, proxy) in [(&pods.client, &client), (&pods.server, &server)] {
        let nat6 = ok("ip", &["netns", "exec", &ns.name, "ip6tables-save", "-t", "nat"]);
        assert!(nat6.contains("-j WEFT_OUTBOUND") && nat6.contains("-j WEFT_INBOUND"), "weft init's IPv6 rules: {nat6}");
        assert!(proxy.stderr().contains("listening on the IPv6 twin too"), "{}", proxy.stderr());
    }

    let out = pods.client.curl(&["-g"], &format!("http://[{server_ip}]:8080/headers")).await;
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{}\n{}", String::from_utf8_lossy(&out.stderr), client.stderr(), server.stderr());
    assert!(body.contains(&format!("peer={server_ip}\n")), "through the server's proxy: {body}");
    assert_eq!(requests(&ns_metrics(&pods.client, &client).await, "outbound"), 1.0, "the client's proxy carried it");
    assert_eq!(requests(&ns_metrics(&pods.server, &server).await, "inbound"), 1.0, "the server's proxy carried it");
}

/// Dual-stack pods known to the control plane: a plain client dialing the
/// server's IPv6 pod address or an IPv6 ClusterIP is resolved through
/// Destination as `[addr]:port` and carried over mTLS between the proxies,
/// so the app learns the caller's identity, exactly as over IPv4.
#[tokio::test]
async fn transparent_proxies_mesh_ipv6_pods_over_mtls() {
    require_root();
    weft_bin();
    let x = 146;
    let pods = Pods::new("t6m", x);
    let (client6, server6) = pods.add_ipv6();
    // The IPv6 ClusterIP range leaves by eth0 (redirected before it does).
    let cluster6 = std::net::Ipv6Addr::new(0x2001, 2, 1, u16::from(x), 0, 0, 0, 0x10);
    ok("ip", &["-n", &pods.client.name, "-6", "route", "add", &format!("2001:2:1:{:x}::/64", x), "dev", "eth0"]);
    let (client_ip, server_ip) = (pods.client_ip(), pods.server_ip());
    let _web = http_app(pods.server.listen("[::]:8080"));
    let (banner_peers, _banner) = banner_app(pods.server.listen("[::]:7000"));
    let (vault_peers, _vault) = banner_app(pods.server.listen("[::]:7001"));

    let m = MeshDir::new(&[CLIENT_ID, SERVER_ID]);
    let dual_pod = |name: &str, v4: IpAddr, v6: IpAddr| {
        format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: test, annotations: {{weft.io/inject: enabled}}}}\n\
             spec: {{serviceAccountName: {name}, containers: [{{name: app, image: app}}]}}\n\
             status: {{podIP: \"{v4}\", podIPs: [{{ip: \"{v4}\"}}, {{ip: \"{v6}\"}}]}}\n"
        )
    };
    let mut yaml = dual_pod("client", client_ip, client6) + &dual_pod("server", server_ip, server6);
    yaml += &format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: test}}\n\
         spec: {{clusterIPs: [\"{cluster6}\"], ipFamilies: [IPv6], ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: web-1, namespace: test, labels: {{kubernetes.io/service-name: web}}}}\n\
         addressType: IPv6\nports: [{{name: http, port: 8080}}]\n\
         endpoints:\n- addresses: [\"{server6}\"]\n  targetRef: {{kind: Pod, name: server, namespace: test}}\n"
    );
    // Only another workload may reach port 7001 (Service vault's policy);
    // the server's proxy judges each original destination port by its own.
    yaml += "---\napiVersion: policy.weft.io/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: vault, namespace: test}\n\
             spec:\n  targetRef: {kind: Service, name: vault}\n  from: {identities: [\"spiffe://cluster.local/ns/test/sa/other\"]}\n";
    yaml += &format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: vault, namespace: test}}\n\
         spec: {{clusterIPs: [\"2001:2:1:{x:x}::12\"], ipFamilies: [IPv6], ports: [{{name: tcp, port: 7001, targetPort: 7001}}]}}\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: vault-1, namespace: test, labels: {{kubernetes.io/service-name: vault}}}}\n\
         addressType: IPv6\nports: [{{name: tcp, port: 7001}}]\n\
         endpoints:\n- addresses: [\"{server6}\"]\n  targetRef: {{kind: Pod, name: server, namespace: test}}\n"
    );
    let (cp, client, server) = meshed_pods(&pods, &m, &yaml, &[]).await;

    for url in [format!("http://[{server6}]:8080/headers"), format!("http://[{cluster6}]/headers")] {
        meshed_get(&pods, &["-g"], &url, server6, &client, &server).await;
    }
    let (cm, sm) = (ns_metrics(&pods.client, &client).await, ns_metrics(&pods.server, &server).await);
    assert_eq!(requests(&cm, "outbound"), 2.0, "{cm}");
    assert_eq!(requests(&sm, "inbound"), 2.0, "{sm}");

    // A server-speaks-first protocol to the IPv6 pod address: opaque TCP
    // inside mTLS (weft-tcp/1), relayed by the server's proxy.
    banner_through_proxies(&pods.client, SocketAddr::new(server6, 7000), &client).await;
    assert_eq!(banner_peers.lock().unwrap().as_slice(), [server6], "the app was reached by the server's proxy");

    // Port 7001's own policy refuses this client over IPv6 too: closed by
    // the server's proxy before the app, and counted.
    refused_by_policy(&pods, SocketAddr::new(server6, 7001), &server).await;
    assert!(vault_peers.lock().unwrap().is_empty(), "the app never saw it");
    cp.stop().await;
}
