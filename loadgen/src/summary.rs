//! The human-readable summary of a run, printed by `loadgen run` (the lossless record is
//! [`Load`], which `--json` writes).

use std::fmt::Write as _;

use crate::Load;

/// The human table of a run: percentiles of corrected latency and service time, rate, errors.
pub fn table(load: &Load) -> String {
    let mut out = String::new();
    let shape = match (load.rate, load.concurrency) {
        (Some(rate), _) => format!("open loop at {rate} rps"),
        (_, Some(c)) => format!("closed loop, concurrency {c}"),
        _ => load.mode.clone(),
    };
    let _ = writeln!(
        out,
        "{shape}, {}, {} connections, body {} B; {:.3} s measured after {:.3} s warm-up",
        load.protocol, load.connections, load.body_size, load.duration_s, load.warmup_s
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<22}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
        "", "p50", "p90", "p99", "p99.9", "p99.99", "max"
    );
    for (name, p) in [
        ("latency (ms)", &load.latency_us),
        ("service time (ms)", &load.service_time_us),
    ] {
        let ms = |us: f64| format!("{:.3}", us / 1000.0);
        let _ = writeln!(
            out,
            "{name:<22}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            ms(p.p50),
            ms(p.p90),
            ms(p.p99),
            ms(p.p999),
            ms(p.p9999),
            ms(p.max)
        );
    }
    let _ = writeln!(out);
    match load.rate {
        Some(rate) => {
            let _ = writeln!(
                out,
                "rate        {:.2} rps achieved of {rate} target ({:.2} %)",
                load.achieved_rps,
                100.0 * load.achieved_rps / rate
            );
        }
        None => {
            let _ = writeln!(
                out,
                "rate        {:.2} rps achieved (maximum throughput)",
                load.achieved_rps
            );
        }
    }
    let _ = writeln!(out, "requests    {}", load.requests);
    let _ = writeln!(
        out,
        "late sends  {} (sent > 1 ms after their scheduled time)",
        load.late_sends
    );
    let classes = if load.errors_by_class.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = load
            .errors_by_class
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        format!(" ({})", list.join(", "))
    };
    let _ = writeln!(out, "errors      {}{classes}", load.errors);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_the_load_and_the_error_classes() {
        let mut h = crate::new_histogram();
        for v in [1_000u64, 2_000, 3_000] {
            h.record(v).unwrap();
        }
        let mut load = Load {
            protocol: "http1".into(),
            mode: "open".into(),
            rate: Some(100.0),
            concurrency: None,
            connections: 4,
            body_size: 0,
            duration_s: 2.0,
            warmup_s: 1.0,
            requests: 200,
            errors: 2,
            errors_by_class: [("timeout".to_string(), 2)].into(),
            late_sends: 1,
            not_sent: 0,
            sent_outside_window: 0,
            achieved_rps: 99.0,
            connections_opened: 4,
            latency_us: Default::default(),
            service_time_us: Default::default(),
            histogram: String::new(),
            service_histogram: String::new(),
        };
        load.set_histograms(&h, &h).unwrap();
        let t = table(&load);
        assert!(t.starts_with("open loop at 100 rps, http1, 4 connections, body 0 B; 2.000 s measured after 1.000 s warm-up\n"), "{t}");
        assert!(t.contains("99.00 rps achieved of 100 target (99.00 %)"), "{t}");
        assert!(t.contains("errors      2 (timeout 2)"), "{t}");
    }
}
