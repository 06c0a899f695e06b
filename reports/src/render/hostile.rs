//! The hostile-clients table (`bench hostile`): one row per (attack,
//! listener, mode), shared by the Markdown and HTML renderers.

use record::hostile::{Attack, HostileRun};

pub(super) const TITLE: &str = "Hostile clients";

pub(super) const HEADERS: [&str; 9] =
    ["attack", "listener", "mode", "outcome", "closed after", "RSS before/peak/after MiB", "p99 quiet → during", "p99 ratio", "verdict"];

/// One sentence above the table: the run's shape and the bounds the verdicts used.
pub(super) fn summary(h: &HostileRun) -> String {
    let failed = h.attacks.iter().filter(|a| !a.pass).count();
    // The usual bound, and the attacks held to another one.
    let mut counts: Vec<(f64, usize)> = Vec::new();
    for a in &h.attacks {
        match counts.iter_mut().find(|(b, _)| *b == a.memory_bound_mib) {
            Some((_, n)) => *n += 1,
            None => counts.push((a.memory_bound_mib, 1)),
        }
    }
    let usual = counts.iter().max_by_key(|(_, n)| *n).map_or(0.0, |(b, _)| *b);
    let mut others: Vec<String> = h
        .attacks
        .iter()
        .filter(|a| a.memory_bound_mib != usual)
        .map(|a| format!("{}: {:.0} MiB", a.attack, a.memory_bound_mib))
        .collect();
    others.dedup();
    let bound = match others.is_empty() {
        true => format!("{usual:.0} MiB"),
        false => format!("{usual:.0} MiB ({})", others.join(", ")),
    };
    let args = if h.proxy_args.is_empty() { "default flags".to_owned() } else { h.proxy_args.join(" ") };
    let nofile = h.proxy_nofile.map_or_else(|| "unknown".to_owned(), |n| n.to_string());
    format!(
        "{} attacks ({} size), {} failed. Proxies with {args}, RLIMIT_NOFILE {nofile}; {} idle connections and {} distinct Hosts; slow attacks watched {:.0} s; well-behaved client at {:.0} rps. A verdict needs an allowed outcome and peak RSS within {bound} of before; the p99 ratio is recorded, not judged.",
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

#[cfg(test)]
mod tests {
    use super::*;
    use record::hostile::{Memory, Outcome};

    fn attack(name: &str, outcome: Outcome, bound: f64, pass: bool) -> Attack {
        Attack {
            attack: name.into(),
            listener: "inbound".into(),
            mode: "mtls".into(),
            outcome,
            status: Some(400).filter(|_| outcome == Outcome::Refused),
            detail: String::new(),
            closed_after_s: Some(0.25),
            memory: Memory { before_mib: 16.0, peak_mib: 17.5, after_mib: 16.5 },
            memory_bound_mib: bound,
            p99_during_us: Some(3000.0),
            p99_quiet_us: Some(2000.0),
            probe_errors: 0,
            pass,
        }
    }

    #[test]
    fn a_row_shows_outcome_memory_ratio_and_verdict() {
        let r = row(&attack("smuggle-cl-te", Outcome::Refused, 64.0, true));
        assert_eq!(r.len(), HEADERS.len());
        assert_eq!(r[3], "refused 400");
        assert_eq!(r[4], "0.25 s");
        assert_eq!(r[5], "16.0 / 17.5 / 16.5");
        assert_eq!(r[6], "2.0 ms → 3.0 ms");
        assert_eq!(r[7], "1.50x");
        assert_eq!(row(&attack("slow-body", Outcome::Hung, 64.0, false))[8], "FAIL");
    }

    #[test]
    fn the_summary_names_every_bound_used() {
        let h = HostileRun {
            size: "short".into(),
            attacks: vec![
                attack("a", Outcome::Closed, 64.0, true),
                attack("b", Outcome::Closed, 64.0, true),
                attack("distinct-hosts", Outcome::Served, 16.0, false),
            ],
            ..HostileRun::default()
        };
        let s = summary(&h);
        assert!(s.contains("3 attacks (short size), 1 failed"), "{s}");
        assert!(s.contains("within 64 MiB (distinct-hosts: 16 MiB) of before"), "{s}");
    }
}
