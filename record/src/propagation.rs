//! Discovery propagation results: how long a manifests edit takes to reach a
//! `Destination.Get` stream, and mesh-control's memory at that scale (the
//! `mode = "propagation"` scenarios of a suite).

use serde::{Deserialize, Serialize};

/// One propagation measurement (one repetition of one scenario).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Propagation {
    /// Scenario name within the suite.
    pub scenario: String,
    /// Repetition index, from 0.
    pub repetition: u32,
    /// Services in the manifests directory.
    pub services: usize,
    /// Endpoints over all services.
    pub endpoints: usize,
    /// Edits timed (one sample each).
    pub changes: usize,
    /// mesh-control's `--manifests-poll`, ms.
    pub poll_ms: f64,
    /// Process start until listening, the initial load of every manifest included, ms.
    pub startup_ms: f64,
    /// Edit (rename into place) until the watching stream's next message, ms, in edit order.
    pub samples_ms: Vec<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// mesh-control's VmRSS after the edits, bytes.
    pub control_rss_bytes: u64,
}
