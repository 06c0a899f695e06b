//! `weft stat`'s output: an aligned terminal table, or JSON for scripts.

use crate::window::{By, Row};

/// One window's figures over every target.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    /// The window asked for; each workload's rates use its own two scrapes' interval.
    pub window_seconds: f64,
    pub by: By,
    pub rows: Vec<Row>,
    /// Targets that could not be scraped (their rows are missing).
    pub errors: Vec<Failure>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Failure {
    pub workload: String,
    pub error: String,
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    pub fn to_table(&self) -> String {
        let key = match self.by {
            By::Workload => None,
            By::Route => Some("ROUTE"),
            By::Peer => Some("PEER"),
            By::Authority => Some("AUTHORITY"),
        };
        let tcp = self.by.has_tcp();
        let mut header = vec!["WORKLOAD", "DIRECTION"];
        header.extend(key);
        header.extend(["REQUESTS", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99"]);
        if tcp {
            header.push("TCP_CONN");
        }
        let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
        for r in &self.rows {
            let mut cells = vec![r.workload.clone(), r.direction.clone()];
            if key.is_some() {
                cells.push(r.key.clone().unwrap_or_default());
            }
            cells.extend([
                r.requests.to_string(),
                r.success_rate.map_or("-".to_owned(), |s| format!("{:.2}%", s * 100.0)),
                format!("{:.1}", r.rps),
                latency(r.p50),
                latency(r.p95),
                latency(r.p99),
            ]);
            if tcp {
                cells.push(r.tcp_open.map_or("-".to_owned(), |n| n.to_string()));
            }
            lines.push(cells);
        }
        let widths: Vec<usize> =
            (0..lines[0].len()).map(|c| lines.iter().map(|l| l[c].chars().count()).max().unwrap_or(0)).collect();
        // Names left-aligned, figures right-aligned.
        let figures_from = lines[0].len() - 6 - usize::from(tcp);
        let mut out = String::new();
        for line in &lines {
            let cells: Vec<String> = line
                .iter()
                .enumerate()
                .map(|(c, cell)| match c < figures_from {
                    true => format!("{cell:<w$}", w = widths[c]),
                    false => format!("{cell:>w$}", w = widths[c]),
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        if self.rows.is_empty() {
            out.push_str(&format!("(no HTTP responses in the {:.1}s window)\n", self.window_seconds));
        }
        for f in &self.errors {
            out.push_str(&format!("{}: {}\n", f.workload, f.error));
        }
        out
    }
}

fn latency(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".to_owned(),
        Some(s) if s < 0.01 => format!("{:.2}ms", s * 1e3),
        Some(s) if s < 1.0 => format!("{:.1}ms", s * 1e3),
        Some(s) => format!("{s:.2}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_json() {
        let row = Row {
            workload: "server-1".into(),
            direction: "inbound".into(),
            key: Some("web-split/0".into()),
            requests: 10_000,
            successes: 9_990,
            success_rate: Some(0.999),
            rps: 1000.0,
            p50: Some(0.00042),
            p95: Some(0.0125),
            p99: Some(1.5),
            tcp_open: None,
            tcp_opened: None,
            read_bytes_per_second: None,
            write_bytes_per_second: None,
        };
        let report = Report {
            window_seconds: 10.0,
            by: By::Route,
            rows: vec![row],
            errors: vec![Failure { workload: "client".into(), error: "GET http://x/metrics: refused".into() }],
        };
        let table = report.to_table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "WORKLOAD  DIRECTION  ROUTE        REQUESTS  SUCCESS     RPS  LATENCY_P50  LATENCY_P95  LATENCY_P99");
        assert_eq!(lines[1], "server-1  inbound    web-split/0     10000   99.90%  1000.0       0.42ms       12.5ms        1.50s");
        assert_eq!(lines[2], "client: GET http://x/metrics: refused");
        let per_workload = Report {
            by: By::Workload,
            rows: vec![Row { key: None, tcp_open: Some(8), ..report.rows[0].clone() }],
            errors: Vec::new(),
            ..report.clone()
        };
        assert_eq!(
            per_workload.to_table(),
            "WORKLOAD  DIRECTION  REQUESTS  SUCCESS     RPS  LATENCY_P50  LATENCY_P95  LATENCY_P99  TCP_CONN\n\
             server-1  inbound       10000   99.90%  1000.0       0.42ms       12.5ms        1.50s         8\n"
        );
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["by"], "route");
        assert_eq!(json["rows"][0]["key"], "web-split/0");
        assert_eq!(json["rows"][0]["requests"], 10_000);
        assert_eq!(json["errors"][0]["workload"], "client");
    }
}
