//! `weft stat` and `weft top`: their arguments and what they run. Exit 0
//! with figures, 1 when no target could be scraped, 64 on bad arguments.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::expo::Exposition;
use crate::render::{Failure, Report};
use crate::scrape::{scrape, ScrapeError, Target};
use crate::targets::{resolve, TargetArgs};
use crate::window::{rows, By};

/// Success rate, request rate and latency of proxies over one window.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("targets").required(true).multiple(false)))]
pub struct StatArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// The window: metrics are scraped at its start and at its end (Ctrl-C
    /// ends it early; rates use the time that passed).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub window: Duration,
    /// Rows per workload, or per route, peer or authority within each workload.
    #[arg(long, value_enum, default_value_t = By::Workload)]
    pub by: By,
    /// JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `weft stat` refreshing: a window every --interval, busiest rows first.
#[derive(Debug, Clone, clap::Args)]
#[command(group(clap::ArgGroup::new("targets").required(true).multiple(false)))]
pub struct TopArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// How often the table is refreshed (each refresh covers the last interval).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Stop after this many refreshes [default: until interrupted].
    #[arg(long)]
    pub iterations: Option<u64>,
    #[arg(long, value_enum, default_value_t = By::Route)]
    pub by: By,
    /// One JSON document per refresh, one per line.
    #[arg(long)]
    pub json: bool,
}

/// The family every proxy with the golden metrics declares (`# TYPE`), even before any traffic.
const GOLDEN_FAMILY: &str = "weft_http_responses";

/// One scrape of every target: its exposition and when it was taken.
type Scrapes = Vec<Result<(Exposition, Instant), ScrapeError>>;

async fn scrape_all(targets: &[Target]) -> Scrapes {
    let scrapes = targets.iter().map(|t| async move { scrape(t).await.map(|e| (e, Instant::now())) });
    futures_util::future::join_all(scrapes).await
}

/// The report for the window between `before` and `after`.
pub fn report(targets: &[Target], before: &Scrapes, after: &Scrapes, window: Duration, by: By) -> Report {
    let mut report = Report { window_seconds: window.as_secs_f64(), by, rows: Vec::new(), errors: Vec::new() };
    for ((target, b), a) in targets.iter().zip(before).zip(after) {
        match (b, a) {
            // A proxy that declares none of the golden families is older than them:
            // say so rather than show it idle.
            (Ok(_), Ok((a, _))) if !a.types.contains_key(GOLDEN_FAMILY) => report.errors.push(Failure {
                workload: target.name.clone(),
                error: format!("{}: no {GOLDEN_FAMILY} family (a mesh-proxy older than the golden metrics?)", target.source),
            }),
            (Ok((b, t0)), Ok((a, t1))) => report.rows.extend(rows(&target.name, b, a, t1.duration_since(*t0), by)),
            (Err(e), _) | (_, Err(e)) => report.errors.push(Failure { workload: target.name.clone(), error: e.to_string() }),
        }
    }
    report
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(|e| {
        eprintln!("weft: starting the async runtime: {e}");
        ExitCode::FAILURE
    })
}

async fn targets(what: &str, args: &TargetArgs) -> Result<Vec<Target>, ExitCode> {
    resolve(args).await.map_err(|e| {
        eprintln!("weft {what}: {e}");
        ExitCode::from(if e.is_usage() { 64 } else { 1 })
    })
}

fn print(text: &str) -> bool {
    // `weft stat | head` closing stdout early is not a failure.
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("weft: writing to stdout: {e}");
            false
        }
        _ => true,
    }
}

pub fn stat(args: &StatArgs) -> ExitCode {
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let targets = match targets("stat", &args.targets).await {
            Ok(t) => t,
            Err(code) => return code,
        };
        let before = scrape_all(&targets).await;
        let started = Instant::now();
        eprintln!(
            "weft stat: window started: {} of {} proxies scraped; ends in {} (Ctrl-C ends it now)",
            before.iter().filter(|s| s.is_ok()).count(),
            targets.len(),
            humantime::format_duration(args.window)
        );
        // Ctrl-C (SIGINT) closes the window early: the figures cover what passed.
        tokio::select! {
            _ = tokio::time::sleep(args.window) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        let after = scrape_all(&targets).await;
        let report = report(&targets, &before, &after, started.elapsed(), args.by);
        let all_failed = report.errors.len() == targets.len();
        let text = if args.json { report.to_json() } else { report.to_table() };
        if all_failed && !args.json {
            eprint!("weft stat: no target could be scraped:\n{text}");
            return ExitCode::FAILURE;
        }
        match (print(&text), all_failed) {
            (true, false) => ExitCode::SUCCESS,
            _ => ExitCode::FAILURE,
        }
    })
}

pub fn top(args: &TopArgs) -> ExitCode {
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let targets = match targets("top", &args.targets).await {
            Ok(t) => t,
            Err(code) => return code,
        };
        let terminal = std::io::stdout().is_terminal() && !args.json;
        let mut before = scrape_all(&targets).await;
        let mut done = 0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(args.interval) => {}
                _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
            }
            let after = scrape_all(&targets).await;
            let mut report = report(&targets, &before, &after, args.interval, args.by);
            report.rows.sort_by(|a, b| b.rps.total_cmp(&a.rps));
            let text = match (args.json, terminal) {
                (true, _) => serde_json::to_string(&report).unwrap_or_default() + "\n",
                // Clear the screen and home the cursor: a refreshing table.
                (false, true) => format!("\x1b[2J\x1b[H{}", report.to_table()),
                (false, false) => report.to_table() + "\n",
            };
            if !print(&text) {
                return ExitCode::FAILURE;
            }
            before = after;
            done += 1;
            if args.iterations.is_some_and(|n| done >= n) {
                return ExitCode::SUCCESS;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expo::parse;
    use crate::targets::admin_target;

    #[test]
    fn a_proxy_without_the_golden_families_is_named_not_shown_idle() {
        let targets = vec![admin_target("new=127.0.0.1:1").unwrap(), admin_target("old=127.0.0.1:2").unwrap()];
        let new = parse("# TYPE weft_http_responses counter\n# EOF\n").unwrap();
        let old = parse("# TYPE weft_requests counter\nweft_requests_total{direction=\"inbound\",status_class=\"2xx\"} 5\n# EOF\n").unwrap();
        let now = Instant::now();
        let scrapes: Scrapes = vec![Ok((new, now)), Ok((old, now))];
        let report = report(&targets, &scrapes, &scrapes, Duration::from_secs(1), By::Workload);
        assert!(report.rows.is_empty(), "{report:?}");
        assert_eq!(report.errors.len(), 1, "{report:?}");
        assert_eq!(report.errors[0].workload, "old");
        assert!(report.errors[0].error.contains("no weft_http_responses family"), "{report:?}");
    }
}
