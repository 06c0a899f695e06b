//! Conformance results: one [`TestResult`] per (test, substrate, variant).

use serde::{Deserialize, Serialize};

/// The outcome of one conformance test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Every assertion held.
    Pass,
    /// An assertion did not hold: `expected` and `observed` say which.
    Fail,
    /// The substrate cannot express the test (e.g. ClusterIP matching on
    /// `local`, where there is no interception): `reason` says why. Never a pass.
    NotApplicable,
    /// The test was not run (filtered out, a needed tool is missing, ...):
    /// `reason` says why.
    Skipped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::NotApplicable => "not-applicable",
            Status::Skipped => "skipped",
        }
    }
}

/// One conformance test's result on one substrate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TestResult {
    /// Stable test name, e.g. `MeshHTTPRouteMatching` or `MtlsByDefault`.
    pub name: String,
    /// The Gateway API (GAMMA) conformance feature the test covers, e.g.
    /// `MeshHTTPRouteRedirectPath`; `null` for mesh behaviours beyond routing.
    #[serde(default)]
    pub feature: Option<String>,
    /// Substrate the test ran on: `local`, `netns`, `kind`.
    pub substrate: String,
    /// What was under test: `weft` normally; `baseline` (no mesh) or a
    /// `weft` build with a feature switched off (e.g. `weft-no-routes`) when
    /// showing that the suite can fail.
    pub variant: String,
    pub status: Status,
    /// Wall time of the test, topology deployment and teardown included, seconds.
    pub duration_s: f64,
    /// Why the test is `not-applicable` or `skipped`; on `fail`, what went wrong.
    #[serde(default)]
    pub reason: Option<String>,
    /// On `fail`: what the test expected to see.
    #[serde(default)]
    pub expected: Option<String>,
    /// On `fail`: what it saw instead.
    #[serde(default)]
    pub observed: Option<String>,
}
