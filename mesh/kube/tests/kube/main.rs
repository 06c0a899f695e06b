//! mesh-kube's integration tests (one test binary for the crate; one module per part).

mod images;
mod install;
