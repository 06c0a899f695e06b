//! What a test expects of a reply, and the two ways of checking it: one
//! request "eventually consistent" (the mesh may need a moment to learn a
//! route; once right it must stay right), and a distribution over many.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::Verdict;
use crate::substrate::cluster::{Cluster, DialError, Reply, Req, To};

/// Replies in a row that must match once one has (as the Gateway API
/// conformance suite requires): a route that flaps does not pass.
pub const CONSECUTIVE: usize = 3;

/// One request and what must come back.
#[derive(Clone, Debug)]
pub struct Case {
    pub name: &'static str,
    /// The pod sending it.
    pub from: &'static str,
    pub to: To,
    pub req: Req,
    pub expect: Expect,
}

/// Properties of a reply; `None` / empty means "not checked".
#[derive(Clone, Debug, Default)]
pub struct Expect {
    pub status: u16,
    /// The workload whose echo server answered.
    pub backend: Option<&'static str>,
    /// The path the echo server saw.
    pub path: Option<String>,
    /// The raw query the echo server saw (`Some(None)`: none).
    pub query: Option<Option<String>>,
    /// `Host` / `:authority` the echo server saw.
    pub authority: Option<String>,
    /// The protocol the echo server was spoken to in (`HTTP/1.1`, `HTTP/2.0`).
    pub proto: Option<&'static str>,
    /// Request headers the echo server saw, by name: the exact list of
    /// values in order.
    pub request_headers: Vec<(&'static str, Vec<String>)>,
    pub absent_request_headers: Vec<&'static str>,
    /// Response headers the client got, by name: the exact list of values.
    pub response_headers: Vec<(&'static str, Vec<String>)>,
    pub absent_response_headers: Vec<&'static str>,
    /// A redirect's `Location`, compared as scheme, host, port and path.
    pub location: Option<String>,
    pub grpc_status: Option<u32>,
}

impl Expect {
    /// 200 from `backend`.
    pub fn ok(backend: &'static str) -> Expect {
        Expect {
            status: 200,
            backend: Some(backend),
            ..Expect::default()
        }
    }

    pub fn status(status: u16) -> Expect {
        Expect {
            status,
            ..Expect::default()
        }
    }

    pub fn path(mut self, p: &str) -> Expect {
        self.path = Some(p.into());
        self
    }

    pub fn proto(mut self, p: &'static str) -> Expect {
        self.proto = Some(p);
        self
    }

    pub fn query(mut self, q: Option<&str>) -> Expect {
        self.query = Some(q.map(str::to_string));
        self
    }

    /// The echo server saw exactly these values of `name`.
    pub fn saw(mut self, name: &'static str, values: &[&str]) -> Expect {
        self.request_headers
            .push((name, values.iter().map(|v| v.to_string()).collect()));
        self
    }

    pub fn not_saw(mut self, name: &'static str) -> Expect {
        self.absent_request_headers.push(name);
        self
    }

    /// The response has exactly one `name`, with `value`.
    pub fn header(self, name: &'static str, value: &str) -> Expect {
        self.headers(name, &[value])
    }

    /// The response has exactly these values of `name`.
    pub fn headers(mut self, name: &'static str, values: &[&str]) -> Expect {
        self.response_headers
            .push((name, values.iter().map(|v| v.to_string()).collect()));
        self
    }

    pub fn no_header(mut self, name: &'static str) -> Expect {
        self.absent_response_headers.push(name);
        self
    }

    pub fn location(mut self, l: &str) -> Expect {
        self.location = Some(l.into());
        self
    }

    pub fn grpc(mut self, code: u32) -> Expect {
        self.grpc_status = Some(code);
        self
    }

    /// One line: what a passing reply looks like.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("status {}", self.status)];
        if let Some(b) = self.backend {
            parts.push(format!("answered by {b}"));
        }
        if let Some(g) = self.grpc_status {
            parts.push(format!("grpc-status {g}"));
        }
        if let Some(p) = &self.path {
            parts.push(format!("backend saw path {p}"));
        }
        if let Some(q) = &self.query {
            parts.push(format!("backend saw query {q:?}"));
        }
        if let Some(a) = &self.authority {
            parts.push(format!("backend saw authority {a}"));
        }
        if let Some(p) = self.proto {
            parts.push(format!("backend spoken to in {p}"));
        }
        for (n, v) in &self.request_headers {
            parts.push(format!("backend saw {n}: {}", v.join(", ")));
        }
        for n in &self.absent_request_headers {
            parts.push(format!("backend saw no {n}"));
        }
        for (n, v) in &self.response_headers {
            parts.push(format!("response {n}: {}", v.join(", ")));
        }
        for n in &self.absent_response_headers {
            parts.push(format!("response without {n}"));
        }
        if let Some(l) = &self.location {
            parts.push(format!("Location {l}"));
        }
        parts.join("; ")
    }

    /// Every way `r` differs from this expectation.
    pub fn mismatches(&self, r: &Reply) -> Vec<String> {
        let mut m = Vec::new();
        if let Some(e) = &r.error {
            return vec![format!("no response: {e}")];
        }
        if r.status != self.status {
            m.push(format!("status {} (expected {})", r.status, self.status));
        }
        if let Some(g) = self.grpc_status {
            if r.grpc_status != Some(g) {
                m.push(format!("grpc-status {:?} (expected {g})", r.grpc_status));
            }
        }
        let needs_echo = self.backend.is_some()
            || self.path.is_some()
            || self.query.is_some()
            || self.authority.is_some()
            || self.proto.is_some()
            || !self.request_headers.is_empty()
            || !self.absent_request_headers.is_empty();
        match (&r.echo, needs_echo) {
            (None, true) => m.push("no echo server answered".into()),
            (Some(e), _) => {
                if let Some(b) = self.backend {
                    if e.replica.name != b {
                        m.push(format!("answered by {} (expected {b})", e.replica.name));
                    }
                }
                if let Some(p) = &self.path {
                    if &e.path != p {
                        m.push(format!("backend saw path {} (expected {p})", e.path));
                    }
                }
                if let Some(q) = &self.query {
                    if &e.query != q {
                        m.push(format!("backend saw query {:?} (expected {q:?})", e.query));
                    }
                }
                if let Some(p) = self.proto {
                    if e.proto != p {
                        m.push(format!("backend spoken to in {} (expected {p})", e.proto));
                    }
                }
                if let Some(a) = &self.authority {
                    if e.authority.as_ref() != Some(a) {
                        m.push(format!(
                            "backend saw authority {:?} (expected {a})",
                            e.authority
                        ));
                    }
                }
                for (n, want) in &self.request_headers {
                    let got = e.headers.get(*n).cloned().unwrap_or_default();
                    if !same_values(&got, want) {
                        m.push(format!("backend saw {n}: {got:?} (expected {want:?})"));
                    }
                }
                for n in &self.absent_request_headers {
                    if let Some(v) = e.headers.get(*n) {
                        m.push(format!("backend saw {n}: {v:?} (expected none)"));
                    }
                }
            }
            (None, false) => {}
        }
        for (n, want) in &self.response_headers {
            let got: Vec<String> = r
                .headers
                .get_all(*n)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            if !same_values(&got, want) {
                m.push(format!("response {n}: {got:?} (expected {want:?})"));
            }
        }
        for n in &self.absent_response_headers {
            if let Some(v) = r.header(n) {
                m.push(format!("response {n}: {v:?} (expected none)"));
            }
        }
        if let Some(want) = &self.location {
            match r.header("location") {
                Some(got) if same_location(got, want) => {}
                other => m.push(format!("Location {other:?} (expected {want})")),
            }
        }
        m
    }
}

/// Header values compare as lists; a hop may fold repeated fields into one
/// comma-separated value (RFC 9110 §5.3), which is the same list.
fn same_values(got: &[String], want: &[String]) -> bool {
    let split: Vec<&str> = got
        .iter()
        .flat_map(|v| v.split(',').map(str::trim))
        .collect();
    got == want || split == want.iter().map(String::as_str).collect::<Vec<_>>()
}

/// Locations compare by scheme, host, port (a scheme's default port may be
/// left out or written) and path-and-query.
pub fn same_location(got: &str, want: &str) -> bool {
    fn parts(l: &str) -> Option<(String, String, u16, String)> {
        let uri: http::Uri = l.parse().ok()?;
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let default = match scheme.as_str() {
            "https" => 443,
            _ => 80,
        };
        let host = uri.host()?.to_ascii_lowercase();
        let pq = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        Some((scheme, host, uri.port_u16().unwrap_or(default), pq))
    }
    matches!((parts(got), parts(want)), (Some(a), Some(b)) if a == b)
}

/// Send `case` until its expectation holds for [`CONSECUTIVE`] replies in
/// a row, or `patience` runs out (then: fail with the last mismatch).
pub async fn eventually(c: &Cluster, case: &Case, patience: Duration) -> Verdict {
    let deadline = Instant::now() + patience;
    let mut streak = 0;
    let mut sent = 0;
    loop {
        let reply = match c.send(case.from, &case.to, &case.req).await {
            Ok(r) => r,
            Err(e) => return dial_verdict(case.name, e),
        };
        sent += 1;
        let mismatches = case.expect.mismatches(&reply);
        if mismatches.is_empty() {
            streak += 1;
            if streak >= CONSECUTIVE {
                return Verdict::Pass;
            }
            continue;
        }
        streak = 0;
        if Instant::now() >= deadline {
            return Verdict::Fail(super::Failure {
                reason: format!(
                    "case {:?}: {} from pod {} to {}: {} (still after {sent} tries in {patience:?})",
                    case.name,
                    case.req.describe(),
                    case.from,
                    case.to,
                    mismatches.join("; ")
                ),
                expected: case.expect.describe(),
                observed: reply.describe(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every case in order; the first one that does not pass decides.
pub async fn all(c: &Cluster, cases: &[Case], patience: Duration) -> Verdict {
    for case in cases {
        match eventually(c, case, patience).await {
            Verdict::Pass => {}
            other => return other,
        }
    }
    Verdict::Pass
}

/// A [`DialError`] as a verdict: what the substrate cannot express is not
/// applicable; a topology mistake is a failure of the test itself.
pub fn dial_verdict(case: &str, e: DialError) -> Verdict {
    match e {
        DialError::NotExpressible(why) => Verdict::NotApplicable(why),
        DialError::Unknown(why) => Verdict::Fail(super::Failure {
            reason: format!("case {case:?}: the test is wrong: {why}"),
            expected: "a request the topology can carry".into(),
            observed: why,
        }),
    }
}

/// How `n` replies spread over backends, with the failed ones under `""`.
pub async fn distribution(
    c: &Cluster,
    from: &str,
    to: &To,
    req: &Req,
    n: usize,
) -> Result<BTreeMap<String, usize>, DialError> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let r = c.send(from, to, req).await?;
        let key = match (&r.error, r.status, r.backend()) {
            (None, 200, Some(b)) => b.to_string(),
            _ => String::new(),
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    Ok(counts)
}

/// Whether `counts` matches `weights` (backend -> weight) within
/// `tolerance` (an absolute share, e.g. 0.07 = 7 percentage points) for
/// every backend, with no failed replies.
pub fn within(
    counts: &BTreeMap<String, usize>,
    weights: &[(&str, u32)],
    tolerance: f64,
) -> Result<(), String> {
    let n: usize = counts.values().sum();
    let total: u32 = weights.iter().map(|(_, w)| w).sum();
    let mut problems = Vec::new();
    if let Some(failed) = counts.get("") {
        problems.push(format!("{failed} of {n} requests failed"));
    }
    for (b, got) in counts {
        if !b.is_empty() && !weights.iter().any(|(w, _)| w == b) {
            problems.push(format!("{got} went to {b}, which has no weight"));
        }
    }
    for (b, w) in weights {
        let want = f64::from(*w) / f64::from(total);
        let got = *counts.get(*b).unwrap_or(&0) as f64 / n.max(1) as f64;
        if (got - want).abs() > tolerance {
            problems.push(format!(
                "{b} got {:.1}% (expected {:.1}% ± {:.1})",
                got * 100.0,
                want * 100.0,
                tolerance * 100.0
            ));
        }
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(problems.join("; ")),
    }
}

/// `counts` as `echo-v1: 412, echo-v2: 188`.
pub fn show(counts: &BTreeMap<String, usize>) -> String {
    counts
        .iter()
        .map(|(b, n)| format!("{}: {n}", if b.is_empty() { "failed" } else { b }))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use loadgen::echo::{Echo, Replica};

    fn reply(status: u16, backend: &str, headers: &[(&str, &str)]) -> Reply {
        let mut echo = Echo {
            method: "GET".into(),
            path: "/p".into(),
            proto: "HTTP/1.1".into(),
            replica: Replica {
                name: backend.into(),
                namespace: "gamma".into(),
                pod: format!("{backend}-0"),
            },
            ..Echo::default()
        };
        for (n, v) in headers {
            echo.headers
                .entry(n.to_string())
                .or_default()
                .push(v.to_string());
        }
        Reply {
            status,
            echo: Some(echo),
            ..Reply::default()
        }
    }

    #[test]
    fn a_matching_reply_has_no_mismatch_and_each_difference_is_named() {
        let e = Expect::ok("echo-v1")
            .path("/p")
            .saw("x-a", &["1", "2"])
            .not_saw("x-gone");
        assert!(e
            .mismatches(&reply(200, "echo-v1", &[("x-a", "1"), ("x-a", "2")]))
            .is_empty());
        // Folded by an HTTP/2 hop: the same list.
        assert!(e
            .mismatches(&reply(200, "echo-v1", &[("x-a", "1, 2")]))
            .is_empty());
        let m = e.mismatches(&reply(404, "echo-v2", &[("x-gone", "y")]));
        assert_eq!(m.len(), 4, "{m:?}");
        assert!(m.iter().any(|s| s.contains("status 404")));
        assert!(m.iter().any(|s| s.contains("answered by echo-v2")));
        assert!(m.iter().any(|s| s.contains("x-a")));
        assert!(m.iter().any(|s| s.contains("x-gone")));
        let failed = Reply {
            error: Some("connect refused".into()),
            ..Reply::default()
        };
        assert_eq!(e.mismatches(&failed), vec!["no response: connect refused"]);
    }

    #[test]
    fn locations_compare_with_default_ports_optional() {
        assert!(same_location("http://a.b/x?y=1", "http://a.b:80/x?y=1"));
        assert!(same_location("https://a.b:443/x", "https://a.b/x"));
        assert!(!same_location("http://a.b:8080/x", "http://a.b/x"));
        assert!(!same_location("https://a.b/x", "http://a.b/x"));
        assert!(!same_location("http://a.b/y", "http://a.b/x"));
        assert!(!same_location("not a url", "http://a.b/x"));
    }

    #[test]
    fn distributions_are_judged_within_the_tolerance() {
        let counts = BTreeMap::from([("echo-v1".to_string(), 70), ("echo-v2".to_string(), 30)]);
        assert!(within(&counts, &[("echo-v1", 7), ("echo-v2", 3)], 0.05).is_ok());
        let e = within(&counts, &[("echo-v1", 1), ("echo-v2", 1)], 0.05).unwrap_err();
        assert!(e.contains("echo-v1 got 70.0%"), "{e}");
        let with_failures = BTreeMap::from([("echo-v1".to_string(), 95), (String::new(), 5)]);
        assert!(within(&with_failures, &[("echo-v1", 1)], 0.1)
            .unwrap_err()
            .contains("5 of 100 requests failed"));
        let stray = BTreeMap::from([("echo-v1".to_string(), 50), ("echo-v3".to_string(), 50)]);
        assert!(within(&stray, &[("echo-v1", 1)], 0.6)
            .unwrap_err()
            .contains("echo-v3"));
    }
}
