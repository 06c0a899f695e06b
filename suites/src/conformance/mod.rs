//! `bench conformance`: mesh behaviour checked on a substrate, one
//! [`record::TestResult`] per test.
//!
//! ```text
//!  registry (all tests) ──--only──> selected
//!     each test:  topology() ──Substrate::deploy_cluster──> Cluster   (its own, fresh)
//!                 check(&Cluster) ── real requests from a client pod ──> Verdict
//!                 teardown                                     (all of it under one timeout)
//!  results ──> table on stdout, exit 1 if any failed
//! ```
//!
//! A test is a stable name, the GAMMA feature it covers, a topology and a
//! check; it never touches a substrate directly, so the same test runs on
//! every substrate that implements [`Substrate::deploy_cluster`](crate::substrate::Substrate::deploy_cluster).
//! What a substrate cannot express makes the test not-applicable, with the
//! substrate's reason.

pub mod command;
pub mod expect;
pub mod mesh;
pub mod routing;
pub mod run;
pub mod topology;

use std::future::Future;
use std::pin::Pin;

use crate::substrate::cluster::{Cluster, ClusterSpec};

/// The outcome of a check.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Pass,
    Fail(Failure),
    /// The substrate cannot express the test; the reason says why.
    NotApplicable(String),
}

/// What went wrong, for the record.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub reason: String,
    pub expected: String,
    pub observed: String,
}

/// A check's future: it borrows the cluster it runs against.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Verdict> + 'a>>;

/// One conformance test.
#[derive(Clone, Copy)]
pub struct Test {
    /// Stable, e.g. `MeshHTTPRouteMatching`.
    pub name: &'static str,
    /// The Gateway API conformance feature it covers, e.g. `MeshConsumerRoute`.
    pub feature: Option<&'static str>,
    /// One line: what it checks.
    pub about: &'static str,
    /// What it deploys.
    pub topology: fn() -> ClusterSpec,
    /// What it asserts, against its deployed topology.
    pub check: for<'a> fn(&'a Cluster) -> CheckFuture<'a>,
}

impl std::fmt::Debug for Test {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Test")
            .field("name", &self.name)
            .field("feature", &self.feature)
            .finish()
    }
}

/// Every test, in the order they run.
pub fn registry() -> Vec<Test> {
    let mut t = routing::tests();
    t.extend(mesh::tests());
    t
}

/// The tests whose name contains `pattern` (case-insensitive; `*` matches
/// any run of characters), or all without one.
pub fn select(tests: Vec<Test>, pattern: Option<&str>) -> Vec<Test> {
    match pattern {
        None => tests,
        Some(p) => tests.into_iter().filter(|t| matches(p, t.name)).collect(),
    }
}

/// `pattern` matches when its `*`-separated pieces occur in `name` in order
/// (case-insensitive); without `*`, a substring match.
pub fn matches(pattern: &str, name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let mut at = 0;
    for piece in pattern
        .to_ascii_lowercase()
        .split('*')
        .filter(|p| !p.is_empty())
    {
        match name[at..].find(piece) {
            Some(i) => at += i + piece.len(),
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_stable() {
        let tests = registry();
        let mut names: Vec<&str> = tests.iter().map(|t| t.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate test names");
        for t in &tests {
            assert!(t.name.starts_with("Mesh"), "{}", t.name);
            assert!(!t.about.is_empty(), "{} says what it checks", t.name);
            (t.topology)()
                .validate()
                .unwrap_or_else(|p| panic!("{}: {p:?}", t.name));
        }
    }

    #[test]
    fn patterns_select_by_substring_or_glob() {
        assert!(matches("matching", "MeshHTTPRouteMatching"));
        assert!(matches("Mesh*Redirect*", "MeshHTTPRouteRedirectPort"));
        assert!(!matches("grpc", "MeshHTTPRouteMatching"));
        assert!(matches("", "MeshBasic"));
        let grpc = select(registry(), Some("GRPC"));
        assert!(!grpc.is_empty() && grpc.iter().all(|t| t.name.contains("GRPC")));
    }
}
