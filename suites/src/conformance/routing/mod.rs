//! Routing tests, modelled on the Gateway API mesh (GAMMA) conformance
//! tests: each deploys the base topology (`topology`) with its own routes
//! and checks what the echo servers saw.

mod basic;
mod filters;
mod grpc;
mod matching;
mod traffic;

use super::Test;

/// A [`Test`] whose check is the async fn `$check(&Cluster) -> Verdict`.
macro_rules! test {
    ($name:literal, $feature:expr, $about:literal, $topology:expr, $check:path) => {
        crate::conformance::Test {
            name: $name,
            feature: $feature,
            about: $about,
            topology: $topology,
            check: |c| Box::pin($check(c)),
        }
    };
}
pub(crate) use test;

/// The routing tests, in the order they run.
pub fn tests() -> Vec<Test> {
    let mut t = Vec::new();
    t.extend(basic::tests());
    t.extend(matching::tests());
    t.extend(traffic::tests());
    t.extend(filters::tests());
    t.extend(grpc::tests());
    t
}

/// A `ResponseHeaderModifier` filter setting `name: value` (YAML at rule level).
pub(crate) fn set_response_header(name: &str, value: &str) -> String {
    format!(
        "    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier:
        set:
        - name: {name}
          value: {value}
"
    )
}
