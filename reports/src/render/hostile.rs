//! The hostile-clients table (`bench hostile`): one row per (attack,
//! listener, mode), shared by the Markdown and HTML renderers.

use record::hostile::{Attack, HostileRun};

pub(super) const TITLE: &str = "Hostile clients";

pub(super) const HEADERS: [&str; 9] =
    ["attack", "listener", "mode", "outcome", "closed after", "RSS before/peak/after MiB", "p99 quiet → during", "p99 ratio", "verdict"];

/// One sentence above the table: the run's shape and the bounds the verdicts used.
pub(super) fn summary(h: &HostileRun) -> String {
    let failed = h.attacks.iter().filter(|a| !a.pass).count();
    let bound = h.attacks.first().map_or(0.0, |a| a.memory_bound_mib);
    let args = if h.proxy_args.is_empty() { "default flags".to_owned() } else { h.proxy_args.join(" ") };
    let nofile = h.proxy_nofile.map_or_else(|| "unknown".to_owned(), |n| n.to_string());
    format!(
        "{} attacks ({} size), {} failed. Proxies with {args}, RLIMIT_NOFILE {nofile}; {} idle connections and {} distinct Hosts; slow attacks watched {:.0} s; well-behaved client at {:.0} rps. A verdict needs an allowed outcome and peak RSS within {bound:.0} MiB of before; the p99 ratio is recorded, not judged.",
        h.attacks.len(),
        h.size,
        failed,
        h.idle_connections,
        h.distinct_hosts,
        h.window_s,
        h.probe_rate,
    )
}

/// The cells of one row, in [`HEADERS`] order (plain text; callers escape).
pub(super) fn row(a: &Attack) -> Vec<String> {
    let outcome = match (a.status, a.detail.is_empty()) {
        (Some(s), true) => format!("{} {s}", a.outcome.as_str()),
        (Some(s), false) => format!("{} {s}: {}", a.outcome.as_str(), a.detail),
        (None, true) => a.outcome.as_str().to_owned(),
        (None, false) => format!("{}: {}", a.outcome.as_str(), a.detail),
    };
    let m = &a.memory;
    let p99 = |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |us| format!("{:.1} ms", us / 1000.0));
    vec![
        a.attack.clone(),
        a.listener.clone(),
        a.mode.clone(),
        outcome,
        a.closed_after_s.map_or_else(|| "—".to_owned(), |s| format!("{s:.2} s")),
        format!("{:.1} / {:.1} / {:.1}", m.before_mib, m.peak_mib, m.after_mib),
        format!("{} → {}", p99(a.p99_quiet_us), p99(a.p99_during_us)),
        a.p99_ratio().map_or_else(|| "—".to_owned(), |r| format!("{r:.2}x")),
        if a.pass { "pass".to_owned() } else { "FAIL".to_owned() },
    ]
}
