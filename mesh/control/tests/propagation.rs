//! Propagation and RSS at 1000 Services / 2000 endpoints. A measurement, not
//! a check: ignored by default, run it with
//! `cargo test -p mesh-control --release --test propagation -- --ignored --nocapture`.

use mesh_control::propagation::{measure, PropagationConfig};

#[tokio::test]
#[ignore = "measurement; run explicitly with --ignored --nocapture"]
async fn propagation_at_1000_services() {
    let report = measure(&PropagationConfig::new(env!("CARGO_BIN_EXE_mesh-control"))).await.expect("measurement");
    println!("{report}");
    assert_eq!(report.samples.len(), 20);
}
