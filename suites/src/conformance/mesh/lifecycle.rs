//! Changes to a running mesh under steady traffic: a replica shut down,
//! the control plane gone and back, certificates rotated. None may fail a
//! request.

use std::time::{Duration, Instant};

use super::{fail, op_verdict, under_traffic};
use crate::conformance::expect::{self, Case, Expect};
use crate::conformance::routing::{set_response_header, test};
use crate::conformance::topology::{self, backends, http_route, svc, CLIENT, HTTP, NS};
use crate::conformance::{run, Test, Verdict};
use crate::substrate::cluster::{Cluster, ClusterSpec, Req};

pub fn tests() -> Vec<Test> {
    vec![
        test!(
            "MeshGracefulShutdown",
            None,
            "a replica terminated under steady traffic (out of the endpoints and SIGTERM to its sidecar at once; its app once the sidecar has drained) fails no request",
            topology::base,
            graceful_shutdown
        ),
        test!(
            "MeshControlPlaneOutage",
            None,
            "mesh-control stopped under steady traffic: no request fails (the sidecars keep the last known endpoints and policy); restarted, a new route applies",
            topology::base,
            control_outage
        ),
        test!(
            "MeshCertificateRotation",
            None,
            "with 4 s certificates, the server sidecar's certificate is renewed twice under steady traffic (weft_identity_certificates, a new expiry) and no request fails",
            rotation_topology,
            rotation
        ),
    ]
}

async fn graceful_shutdown(c: &Cluster) -> Verdict {
    let to = svc("echo", HTTP);
    if let Err(v) = super::warm(c, CLIENT, &to).await {
        return v;
    }
    let (done, tally) = under_traffic(
        c,
        CLIENT,
        &to,
        &Req::get("/shutdown"),
        Duration::from_secs(1),
        Duration::from_millis(1500),
        c.terminate_pod("echo-v2-0"),
    )
    .await;
    if let Err(e) = done {
        return op_verdict(c, "terminate pod echo-v2-0", e);
    }
    let both = tally.ok.contains_key("echo-v1") && tally.ok.contains_key("echo-v2");
    if !tally.failures.is_empty() || !both {
        return fail(
            "GETs to echo:80 from 3 senders while pod echo-v2-0 was terminated (1 s in)",
            "no failed request; both replicas answered before the termination",
            tally.show(),
        );
    }
    Verdict::Pass
}

async fn control_outage(c: &Cluster) -> Verdict {
    let to = svc("echo", HTTP);
    if let Err(v) = super::warm(c, CLIENT, &to).await {
        return v;
    }
    let (stopped, tally) = under_traffic(
        c,
        CLIENT,
        &to,
        &Req::get("/outage"),
        Duration::from_millis(500),
        Duration::from_secs(2),
        c.stop_control(),
    )
    .await;
    if let Err(e) = stopped {
        return op_verdict(c, "stop mesh-control", e);
    }
    let both = tally.ok.contains_key("echo-v1") && tally.ok.contains_key("echo-v2");
    if !tally.failures.is_empty() || !both {
        return fail(
            "GETs to echo:80 from 3 senders while mesh-control was stopped (0.5 s in, then 2 s without it)",
            "no failed request; both replicas answering from the last known endpoints",
            tally.show(),
        );
    }
    if let Err(e) = c.start_control().await {
        return op_verdict(c, "restart mesh-control", e);
    }
    let route = http_route(
        "after-restart",
        NS,
        "echo-v1",
        Some(HTTP),
        &format!(
            "  -\n{}{}",
            set_response_header("x-after-restart", "yes"),
            backends(&[("echo-v1", HTTP, None)])
        ),
    );
    if let Err(e) = c.apply("after-restart.yaml", &route) {
        return fail(
            "write route after-restart.yaml",
            "written",
            e.to_string(),
        );
    }
    // The sidecars reconnect with a backoff of up to 10 s.
    let case = Case {
        name: "a route applied after the restart",
        from: CLIENT,
        to: svc("echo-v1", HTTP),
        req: Req::get("/after"),
        expect: Expect::ok("echo-v1").header("x-after-restart", "yes"),
    };
    expect::eventually(c, &case, run::patience() + Duration::from_secs(10)).await
}

const CERT_LIFETIME: Duration = Duration::from_secs(4);
/// Renewals to wait for (a proxy renews at 70 % of the lifetime).
const RENEWALS: f64 = 2.0;

fn rotation_topology() -> ClusterSpec {
    let mut spec = topology::base();
    spec.mesh.cert_lifetime = Some(CERT_LIFETIME);
    spec
}

async fn certs(c: &Cluster) -> Result<(f64, f64), crate::substrate::cluster::OpError> {
    let text = c.admin_get("echo-v1-0", "/metrics").await?;
    use crate::substrate::cluster::ops_sum as sum;
    Ok((
        sum(&text, "weft_identity_certificates", &[]),
        sum(&text, "weft_identity_certificate_expiry_timestamp_seconds", &[]),
    ))
}

async fn rotation(c: &Cluster) -> Verdict {
    if let Err(v) = super::warm(c, CLIENT, &svc("echo-v1", HTTP)).await {
        return v;
    }
    let (n0, exp0) = match certs(c).await {
        Ok(v) => v,
        Err(e) => return op_verdict(c, "read echo-v1-0's sidecar metrics", e),
    };
    let wait = async {
        let deadline = Instant::now() + CERT_LIFETIME * 5;
        loop {
            match certs(c).await {
                Ok((n, exp)) if n >= n0 + RENEWALS || Instant::now() >= deadline => {
                    return Ok((n, exp))
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let (after, tally) = under_traffic(
        c,
        CLIENT,
        &svc("echo-v1", HTTP),
        &Req::get("/rotation"),
        Duration::from_millis(200),
        Duration::from_millis(500),
        wait,
    )
    .await;
    let (n1, exp1) = match after {
        Ok(v) => v,
        Err(e) => return op_verdict(c, "read echo-v1-0's sidecar metrics", e),
    };
    if n1 < n0 + RENEWALS || exp1 <= exp0 || !tally.failures.is_empty() || tally.sent() == 0 {
        return fail(
            format!("GETs to echo-v1:80 from 3 senders for {RENEWALS} certificate renewals of echo-v1-0's sidecar ({CERT_LIFETIME:?} certificates)"),
            format!("weft_identity_certificates up by at least {RENEWALS}, a later expiry, no failed request"),
            format!(
                "certificates {n0} -> {n1}, expiry {exp0} -> {exp1}; {}",
                tally.show()
            ),
        );
    }
    Verdict::Pass
}
