//! Growing a deployed `weft` variant for the sweep scenarios, on the local
//! substrate.
//!
//! ```text
//!  endpoints    N relays (127.0.0.1:<ephemeral> each, in bench) -> the one server sidecar
//!               published as N endpoints of svc; wait until proxy-outbound's balancer
//!               lists N ready (weft_balancer_endpoints)
//!  authorities  N more Services a<i>.bench, each with the server sidecar as endpoint
//!               (authorities.yaml); wait until the last one answers through the proxy
//!  connections  nothing here: the load generator opens them before its clock
//! ```
//!
//! Why relays: the loopback has one server sidecar listening, and an
//! endpoint is an address. Each relay is a real listener splicing bytes to
//! that sidecar, so every endpoint the client proxy picks is a distinct
//! address with its own mTLS connection, as N pods would be; the relays'
//! CPU is bench's, not the proxy's.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::Local;
use crate::substrate::{manifests, probe, DeployError, Deployment, Scaled, Target};
use crate::suite::{Protocol, SweepDimension};

/// How long the proxy may take to hold a size: a base plus per 1,000
/// (a debug build parses 10,000 EndpointSlices in seconds, not milliseconds).
const PATIENCE_BASE: Duration = Duration::from_secs(30);
const PATIENCE_PER_K: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(250);

impl Local {
    pub(super) async fn scale_to(
        &mut self,
        dep: &Deployment,
        dimension: SweepDimension,
        size: usize,
    ) -> Result<Scaled, DeployError> {
        let unavailable = |why: &str| DeployError::Unavailable { reason: format!("a `{dimension}` sweep {why}") };
        match dimension {
            SweepDimension::Connections => Ok(Scaled { detail: format!("{size} client connections"), guard: None }),
            SweepDimension::Services => Err(unavailable("measures the control plane alone, with no deployment")),
            SweepDimension::Endpoints | SweepDimension::Authorities => {
                let Some(&inbound) = self.mesh.published.first() else {
                    return Err(unavailable("needs the `weft` variant (a client proxy that discovers its endpoints)"));
                };
                let Target::Addr(target) = dep.target else {
                    return Err(unavailable("needs a deployment reachable from bench"));
                };
                let patience = PATIENCE_BASE + PATIENCE_PER_K * (size / 1000) as u32;
                if dimension == SweepDimension::Endpoints {
                    self.endpoints(dep, target, inbound, size, patience).await
                } else {
                    self.authorities(target, inbound, size, patience).await
                }
            }
        }
    }

    async fn endpoints(
        &mut self,
        dep: &Deployment,
        target: SocketAddr,
        inbound: SocketAddr,
        size: usize,
        patience: Duration,
    ) -> Result<Scaled, DeployError> {
        let relays = Relays::start(size, inbound).await?;
        self.control_plane()?.publish_endpoints(&relays.addrs)?;
        let admin = dep
            .admins
            .iter()
            .find(|a| a.outbound)
            .ok_or_else(|| DeployError::Unavailable { reason: "an `endpoints` sweep needs the client proxy's admin listener".into() })?
            .addr;
        let started = Instant::now();
        let mut last = String::from("no scrape yet");
        while started.elapsed() < patience {
            // A request keeps the Service's balancer alive (an unused one is dropped).
            let _ = probe::get(target, Some(manifests::AUTHORITY), "/healthz", Protocol::Http1).await;
            match probe::fetch(admin, None, "/metrics", Protocol::Http1).await {
                Ok((200, body)) => {
                    let ready = ready_endpoints(&String::from_utf8_lossy(&body), manifests::AUTHORITY);
                    if ready == size {
                        return Ok(Scaled {
                            detail: format!("{size} ready in proxy-outbound's balancer after {:.1} s", started.elapsed().as_secs_f64()),
                            guard: Some(Box::new(relays)),
                        });
                    }
                    last = format!("{ready} ready");
                }
                Ok((status, _)) => last = format!("GET /metrics: status {status}"),
                Err(e) => last = e,
            }
            tokio::time::sleep(POLL).await;
        }
        Err(DeployError::Ready {
            component: "proxy-outbound".into(),
            detail: format!("its balancer for {} did not list {size} ready endpoints within {patience:?} (last: {last})", manifests::AUTHORITY),
        })
    }

    async fn authorities(
        &mut self,
        target: SocketAddr,
        inbound: SocketAddr,
        size: usize,
        patience: Duration,
    ) -> Result<Scaled, DeployError> {
        let cp = self.control_plane()?;
        let dir = cp.manifests_dir();
        manifests::write(dir, "authorities.yaml", &authorities_yaml(inbound, size)).map_err(|source| DeployError::Io {
            what: format!("write {}", dir.join("authorities.yaml").display()),
            source,
        })?;
        // One file, written whole: once the last Service answers, every one is loaded.
        let last = authority(size - 1);
        let started = Instant::now();
        probe::until_ok(target, Some(last.as_str()), "/healthz", Protocol::Http1, patience)
            .await
            .map_err(|e| DeployError::Ready { component: "proxy-outbound".into(), detail: format!("GET /healthz with Host {last}: {e}") })?;
        Ok(Scaled {
            detail: format!("{size} Services served after {:.1} s", started.elapsed().as_secs_f64()),
            guard: None,
        })
    }
}

/// The Host naming the i-th sweep Service.
pub fn authority(i: usize) -> String {
    format!("a{i}.{}.svc.cluster.local", manifests::NAMESPACE)
}

/// `weft_balancer_endpoints{...,state="ready"}` summed over the balancers of `authority`.
fn ready_endpoints(metrics: &str, authority: &str) -> usize {
    metrics
        .lines()
        .filter(|l| l.starts_with("weft_balancer_endpoints{") && l.contains("state=\"ready\"") && l.contains(authority))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}

/// `size` Services `a<i>`, each with one EndpointSlice listing the server
/// sidecar (the Pod `server-0` of endpoints.yaml gives it its identity).
fn authorities_yaml(inbound: SocketAddr, size: usize) -> String {
    let (ip, port) = (inbound.ip(), inbound.port());
    let ns = manifests::NAMESPACE;
    let mut s = String::from("# written by bench: the Services of an `authorities` sweep\n");
    for i in 0..size {
        // Data only, never dialed; loopback like the bench Service's.
        let cluster_ip = format!("127.97.{}.{}", i / 250, i % 250 + 1);
        let _ = write!(
            s,
            "---
apiVersion: v1
kind: Service
metadata:
  name: a{i}
  namespace: {ns}
spec:
  clusterIP: \"{cluster_ip}\"
  ports:
  - name: http
    port: {}
    appProtocol: http
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: a{i}-0
  namespace: {ns}
  labels:
    kubernetes.io/service-name: a{i}
addressType: IPv4
ports:
- name: http
  port: {port}
endpoints:
- addresses: [\"{ip}\"]
  conditions:
    ready: true
  targetRef:
    kind: Pod
    name: server-0
    namespace: {ns}
",
            manifests::SERVICE_PORT
        );
    }
    s
}

/// Listeners on 127.0.0.1 splicing each accepted connection to one address;
/// dropping them closes every listener and relayed connection.
struct Relays {
    addrs: Vec<SocketAddr>,
    _tasks: JoinSet<()>,
}

impl Relays {
    async fn start(n: usize, to: SocketAddr) -> Result<Relays, DeployError> {
        let mut addrs = Vec::with_capacity(n);
        let mut tasks = JoinSet::new();
        for _ in 0..n {
            let l = TcpListener::bind("127.0.0.1:0").await.map_err(|source| DeployError::Io {
                what: format!("bind relay listener {} of {n} on 127.0.0.1 (RLIMIT_NOFILE?)", addrs.len() + 1),
                source,
            })?;
            addrs.push(l.local_addr().map_err(|source| DeployError::Io { what: "read a relay's address".into(), source })?);
            tasks.spawn(async move {
                // Owned here, so aborting the listener's task ends its connections.
                let mut conns = JoinSet::new();
                while let Ok((mut inbound, _)) = l.accept().await {
                    conns.spawn(async move {
                        if let Ok(mut out) = TcpStream::connect(to).await {
                            let _ = inbound.set_nodelay(true);
                            let _ = out.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        }
                    });
                    // Reap finished connections so the set stays the size of the open ones.
                    while conns.try_join_next().is_some() {}
                }
            });
        }
        Ok(Relays { addrs, _tasks: tasks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_endpoints_sum_the_authoritys_ready_lines() {
        let m = "# TYPE weft_balancer_endpoints gauge\n\
weft_balancer_endpoints{authority=\"svc.bench.svc.cluster.local:80\",state=\"ready\"} 97\n\
weft_balancer_endpoints{authority=\"svc.bench.svc.cluster.local:80\",state=\"ejected\"} 3\n\
weft_balancer_endpoints{authority=\"other:80\",state=\"ready\"} 5\n";
        assert_eq!(ready_endpoints(m, manifests::AUTHORITY), 97);
        assert_eq!(ready_endpoints("", manifests::AUTHORITY), 0);
    }

    /// What mesh-control makes of the file: every Service resolving to the sidecar.
    #[test]
    fn authorities_yaml_resolves_every_service() {
        use mesh_control::discovery::manifests::Manifests;
        use mesh_index::DiscoverDestination;
        let dir = tempfile::tempdir().unwrap();
        let inbound: SocketAddr = "127.0.0.1:41001".parse().unwrap();
        manifests::write(dir.path(), "service.yaml", &manifests::service(manifests::CLUSTER_IP, manifests::DEFAULT_INBOUND_POLICY)).unwrap();
        manifests::write(dir.path(), "endpoints.yaml", &manifests::endpoints(&[inbound])).unwrap();
        manifests::write(dir.path(), "authorities.yaml", &authorities_yaml(inbound, 300)).unwrap();
        let index = mesh_index::Index::new(mesh_index::Config::default());
        let report = Manifests::new(dir.path(), index.clone()).scan().unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        for i in [0, 249, 250, 299] {
            let view = index.watch_destination(&format!("{}:80", authority(i))).unwrap().borrow().clone();
            assert!(view.exists, "a{i}");
            assert_eq!(view.endpoints.keys().copied().collect::<Vec<_>>(), [inbound], "a{i}");
        }
    }
}
