//! `weft stat` and `weft top`: Linkerd-viz-style golden figures with no
//! Prometheus. Each proxy's admin `/metrics` is scraped at the start and the
//! end of a window; the difference gives, per workload (one proxy) and per
//! route, peer or authority, the success rate, the request rate and
//! p50/p95/p99 latency from the histogram's bucket deltas.
//!
//! ```text
//!  targets (--admin URLs | --run: a bench run's proxies.json | --kube: meshed pods)
//!     │ scrape: HTTP GET /metrics (inside a netns for netns pods) or the API server's pod proxy
//!     ▼
//!  expo::parse (strict text-format parser) ──> window::rows (deltas, histogram_quantile)
//!     ▼
//!  render::Report ──> table | JSON        cli: stat (one window), top (refreshing)
//! ```
#![forbid(unsafe_code)]

pub mod cli;
pub mod expo;
pub mod render;
pub mod scrape;
pub mod state;
pub mod targets;
pub mod window;
