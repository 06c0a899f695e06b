mod common;

use std::fs;

use common::{healthy, report, run};
use reports::compare::Comparison;
use reports::render::{latency_png, write_all};
use reports::Report;

fn markdown(r: &Report) -> String {
    reports::render::markdown(&Comparison::of(r))
}

fn html(r: &Report) -> String {
    reports::render::html(&Comparison::of(r))
}

fn with_closed_loop() -> Report {
    let mut r = healthy();
    for v in ["baseline", "weft-client-only"] {
        let mut c = run("max-throughput", v, 1.0, 0, if v == "baseline" { 900 } else { 1400 });
        c.load.mode = "closed".into();
        c.load.rate = None;
        c.load.concurrency = Some(16);
        c.load.late_sends = 0;
        r.runs.push(c);
    }
    r
}

#[test]
fn markdown_has_tables_in_order_with_added_latency() {
    let r = healthy();
    let md = markdown(&r);
    let cells = Comparison::of(&r).cells;
    let weft = cells.iter().find(|c| c.variant == "weft" && c.rate == Some(1000.0)).unwrap();

    assert!(md.starts_with("# Weft benchmark report: quick\n"), "{md}");
    assert!(md.contains("- **Host:** testhost, 2 cores, kernel 6.1.0-test"));
    assert!(md.contains("- **Build:** git abc1234"));
    assert!(md.contains("rustc 1.95.0, weft 0.1.0"));
    assert!(md.contains("## Scenario `http1-small` (local)"));
    assert!(md.contains("### http1, open loop, 500 rps — medians of 3 repetitions"));
    assert!(md.contains("10 s measured after 2 s warm-up, 8 connections, 128 B bodies."));
    assert!(md.find("500 rps —").unwrap() < md.find("1000 rps —").unwrap(), "rates rise");

    // Every repetition of the fixture measures the same, so each spread is
    // one value twice, and the difference is outside the (zero) noise.
    let fig = |us: f64| format!("{0:.3} ({0:.3}..{0:.3})", us / 1000.0);
    let l = &weft.latency_us;
    let expected_row = format!(
        "| `weft` | {} | {} | {} | {} | {} | +{a50:.3} ms (CI +{a50:.3}..+{a50:.3}; {r50:.2}x) | +{a99:.3} ms (CI +{a99:.3}..+{a99:.3}; {r99:.2}x) | 999 (999..999) | 0 | 10.0 (10.0..10.0) | 2.0 (2.0..2.0) | 0.200 (0.200..0.200) |",
        fig(l.p50),
        fig(l.p90),
        fig(l.p99),
        fig(l.p999),
        fig(l.max),
        a50 = weft.added_p50_us.unwrap() / 1000.0,
        r50 = weft.ratio_p50.unwrap(),
        a99 = weft.added_p99_us.unwrap() / 1000.0,
        r99 = weft.ratio_p99.unwrap(),
    );
    assert!(md.contains(&expected_row), "missing row {expected_row}\n{md}");
    assert!(md.contains("| `baseline` | 0.2"), "{md}");
    assert!(md.contains("| — | — | 999 (999..999) | 0 | — | — | — |"), "baseline has no added latency or proxy: {md}");
    // The proxies' private (anonymous) memory beside their RSS.
    assert!(md.contains("| proxy peak RSS (MiB) | of it private (MiB) | proxy CPU"), "{md}");
    assert!(md.contains("**Of it private**"), "explained under How to read this: {md}");

    // Variant order inside a table: baseline, weft variants, peers.
    let table = &md[md.find("1000 rps —").unwrap()..];
    let pos = |v: &str| table.find(&format!("| `{v}` |")).unwrap();
    assert!(pos("baseline") < pos("weft") && pos("weft") < pos("weft-client-only") && pos("weft-client-only") < pos("nginx"));

    assert!(md.contains("SKIPPED VARIANTS"), "skipped listed loudly");
    assert!(md.contains("`haproxy` in scenario `http1-small`: haproxy binary not found on PATH"));
    assert!(md.contains("## How to read this"));
    assert!(md.contains("coordinated-omission"));
    assert!(md.contains("**CPU / 1000 rps**"));
    assert!(!md.contains("| late sends |"), "no late-sends column when there were none");
}

#[test]
fn markdown_shows_late_sends_errors_and_closed_loop() {
    let mut r = with_closed_loop();
    r.runs[0].load.late_sends = 12;
    r.runs[0].load.errors = 5;
    let md = markdown(&r);
    assert!(md.contains("| late sends |"), "{md}");
    assert!(md.contains("| 5 (0.033%) | 12 |"), "errors with rate, then late sends: {md}");
    assert!(md.contains("### http1, closed loop, c=16 — 1 repetition (no median, no spread)"), "{md}");
}

fn external_urls(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for scheme in ["http://", "https://", "//"] {
        for (i, _) in html.match_indices(scheme) {
            let before = &html[i.saturating_sub(8)..i];
            let after = &html[i..(i + 30).min(html.len())];
            let xmlns = before.ends_with("xmlns=\"") && after.starts_with("http://www.w3.org/2000/svg");
            let in_other = scheme == "//" && (before.ends_with("http:") || before.ends_with("https:"));
            if !xmlns && !in_other {
                found.push(format!("{before}{after}"));
            }
        }
    }
    found
}

#[test]
fn html_is_self_contained_with_tables_and_charts() {
    let r = with_closed_loop();
    let page = html(&r);
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert_eq!(external_urls(&page), Vec::<String>::new());
    for banned in ["<script", "<link", "<img", "src=", "@import", "url("] {
        assert!(!page.contains(banned), "page contains {banned}");
    }
    assert!(!page.contains("<?xml"), "no XML declarations inside HTML");
    assert!(page.contains("<style>"));
    // Spectrum per group (3), added-vs-rate and resources for http1-small, resources for max-throughput.
    assert_eq!(page.matches("<svg").count(), 6, "{page}");
    assert!(!page.contains("Chart unavailable"), "{page}");
    assert!(page.contains("99.9%"), "nines axis labels");
    assert!(page.contains("added p50 vs rate (bars: 95% CI)"), "3 repetitions: each point with its interval");
    assert!(page.contains("proxy peak RSS at 1000 rps"));
    assert!(page.contains("<td>+0."), "added latency cells");
    assert!(page.contains("haproxy binary not found on PATH"));
    assert!(page.contains("<details open><summary>Latency by percentile at 1000 rps"));
}

#[test]
fn html_escapes_record_text() {
    let mut r = healthy();
    r.suite = "<script>alert(1)</script>".into();
    r.skipped[0].reason = "a & b <c>".into();
    let page = html(&r);
    assert!(!page.contains("<script>"));
    assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(page.contains("a &amp; b &lt;c&gt;"));
}

#[test]
fn corrupt_histogram_is_reported_in_the_page_and_fails_the_png() {
    let mut r = healthy();
    for run in r.runs.iter_mut().filter(|x| x.variant == "nginx" && x.load.rate == Some(1000.0)) {
        run.load.histogram = "bm90IGEgaGlzdG9ncmFt".into();
    }
    let page = html(&r);
    assert!(page.contains("Chart unavailable: http1-small/nginx/1000 rps: histogram is not an HDR"), "{page}");
    let dir = tempfile::tempdir().unwrap();
    let err = latency_png(&Comparison::of(&r), &dir.path().join("latency.png")).unwrap_err();
    assert!(err.to_string().contains("http1-small/nginx/1000 rps"), "{err}");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "no partial or temp file left");
}

#[test]
fn latency_png_is_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("latency.png");
    latency_png(&Comparison::of(&with_closed_loop()), &path).unwrap();
    let bytes = fs::read(&path).unwrap();
    assert!(bytes.len() > 10_000, "a real picture, got {} bytes", bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // IHDR: width and height.
    assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 1000);
    assert_eq!(u32::from_be_bytes(bytes[20..24].try_into().unwrap()), 600);
}

#[test]
fn write_all_writes_the_three_files_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results/run-1");
    let written = write_all(&healthy(), &out).unwrap();
    assert_eq!(written.latency_png, Some(out.join("latency.png")));
    let mut names: Vec<String> =
        fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["latency.png", "report.html", "report.md"]);
    assert!(fs::read_to_string(out.join("report.md")).unwrap().contains("| `weft` |"));
}

#[test]
fn a_record_without_load_runs_renders_without_a_chart() {
    let mut r = report(vec![]);
    r.skipped.push(reports::Skipped { scenario: "s".into(), variant: "nginx".into(), reason: "missing".into() });
    let dir = tempfile::tempdir().unwrap();
    // A chart from an earlier render of the same directory must not outlive its data.
    fs::write(dir.path().join("latency.png"), b"stale").unwrap();
    let written = write_all(&r, dir.path()).unwrap();
    assert_eq!(written.latency_png, None);
    assert!(!dir.path().join("latency.png").exists());
    let note = "No load runs in this record, so no latency tables or charts (latency.png is not written).";
    assert!(written.markdown.contains(note), "{}", written.markdown);
    assert_eq!(fs::read_to_string(dir.path().join("report.md")).unwrap(), written.markdown);
    assert!(html(&r).contains(note));
    let err = latency_png(&Comparison::of(&r), &dir.path().join("latency.png")).unwrap_err();
    assert!(matches!(err, reports::render::RenderError::NoLoadRuns), "{err}");
    assert!(!dir.path().join("latency.png").exists());
}

#[test]
fn control_plane_memory_gets_its_own_column_only_where_it_ran() {
    let mut r = healthy();
    let md_without = markdown(&r);
    assert!(!md_without.contains("control plane RSS"), "no control plane, no column");
    for run in r.runs.iter_mut().filter(|x| x.variant == "weft") {
        run.resources.push(reports::Resource {
            component: "control".into(),
            role: "control".into(),
            rss_peak_bytes: 12 * 1024 * 1024,
            rss_mean_bytes: 12 * 1024 * 1024,
            rss_anon_peak_bytes: None,
            cpu_seconds: 0.0,
            samples: 4,
        });
    }
    let md = markdown(&r);
    assert!(md.contains("| control plane RSS (MiB) |"), "{md}");
    let weft_row = md.lines().find(|l| l.starts_with("| `weft` |")).unwrap();
    assert!(weft_row.ends_with("| 12.0 (12.0..12.0) |"), "{weft_row}");
    let baseline_row = md.lines().find(|l| l.starts_with("| `baseline` |")).unwrap();
    assert!(baseline_row.ends_with("| — |"), "{baseline_row}");
    assert!(html(&r).contains("control plane RSS"));
}

/// The memory and CPU bar charts name every variant under its bar; with
/// seven variants in a half-width chart the names would overlap, so they go
/// in two staggered rows (alternating), each name once per chart.
#[test]
fn bar_chart_names_every_variant_without_overlap() {
    let variants = ["baseline", "weft", "weft-plaintext", "weft-client-only", "weft-server-only", "nginx", "haproxy"];
    let runs = variants.iter().map(|v| run("http1-small", v, 2000.0, 0, 250)).collect();
    let page = html(&report(runs));
    // plotters writes `<text x=".." y=".." ... text-anchor="middle" ...>\nNAME\n</text>`
    // for a bar's name (chart legends are left-anchored).
    let label_y = |name: &str| -> Vec<i64> {
        page.match_indices(&format!(">\n{name}\n</text>"))
            .map(|(at, _)| &page[page[..at].rfind("<text").unwrap()..at])
            .filter(|tag| tag.contains("text-anchor=\"middle\""))
            .map(|tag| tag.split(" y=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap())
            .collect()
    };
    let rows: Vec<Vec<i64>> = variants[1..].iter().map(|v| label_y(v)).collect();
    for (v, ys) in variants[1..].iter().zip(&rows) {
        assert_eq!(ys.len(), 2, "{v} named once under each of the two bar charts: {ys:?}");
    }
    let (even, odd) = (rows[0][0], rows[1][0]);
    assert!(odd > even, "alternate names sit lower: {rows:?}");
    for (i, ys) in rows.iter().enumerate() {
        assert_eq!(ys[0], if i % 2 == 0 { even } else { odd }, "{rows:?}");
    }
}

/// The bench's cross-check: a `weft` cell whose proxy counted 1 % more
/// requests than loadgen is marked in its row, listed at the top with both
/// counts, and the flag survives a JSON round trip; a cell that agrees and
/// the variants without a Weft proxy are not flagged.
#[test]
fn a_cell_whose_proxy_counts_disagree_is_flagged() {
    use reports::record::{CrossCheck, ProxyWindow};
    use std::collections::BTreeMap;
    let counts = |proxy: u64, loadgen: u64| {
        let outbound = ProxyWindow {
            component: "proxy-outbound".into(),
            role: "outbound".into(),
            requests: BTreeMap::from([("outbound".to_string(), proxy)]),
            responses: BTreeMap::from([("success".to_string(), proxy)]),
            latency_count: proxy,
            latency_p50_us: Some(800.0),
            latency_p99_us: Some(2400.0),
            incomplete: None,
        };
        CrossCheck::new("weft_http_requests_total", "weft_http_response_duration_seconds", vec![outbound], "proxy-outbound", reports::record::Sent::requests(loadgen))
    };
    let mut r = healthy();
    let plain = markdown(&r);
    assert!(!plain.contains("proxy count") && !plain.contains("Cross-check"), "no counts, no column: {plain}");

    let mut flagged_one = false;
    for run in r.runs.iter_mut().filter(|x| x.variant.starts_with("weft")) {
        let l = run.load.requests;
        // The first `weft` run disagrees by 1 %, every other agrees exactly.
        let c = if run.variant == "weft" && !flagged_one {
            flagged_one = true;
            run.load.requests = 5000;
            counts(5050, 5000)
        } else {
            counts(l, l)
        };
        run.proxy_counts = Some(c);
    }
    assert!(flagged_one);
    let bad = r.runs.iter().find(|x| x.proxy_counts.as_ref().is_some_and(|c| c.flagged)).expect("one flagged");
    let (scenario, l) = (bad.scenario.clone(), bad.load.requests);

    // The record keeps the flag.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    reports::io::write_report_json(&r, &path).unwrap();
    let back = reports::io::read_report(&path).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.runs.iter().filter(|x| x.proxy_counts.as_ref().is_some_and(|c| c.flagged)).count(), 1);

    let md = markdown(&r);
    assert!(md.contains("| proxy count (vs loadgen) |"), "{md}");
    let top = md.split("## Scenario").next().unwrap();
    assert!(top.contains("Cross-check failed"), "the list is at the top: {top}");
    let listed: Vec<&str> = top.lines().filter(|x| x.starts_with("> - ")).collect();
    let want = format!("proxy-outbound counted {} requests", l + l / 100);
    assert_eq!(l, 5000);
    assert!(
        listed.iter().any(|x| x.contains(&format!("{scenario}/weft/")) && x.contains(&want) && x.contains(&format!("loadgen {l} (+1.00 %)"))),
        "{listed:?}"
    );
    let weft_rows: Vec<&str> = md.lines().filter(|x| x.starts_with("| `weft` |")).collect();
    assert!(weft_rows.iter().any(|x| x.contains("| ⚠ ")), "marker in the flagged row: {weft_rows:?}");
    for row in md.lines().filter(|x| x.starts_with("| `baseline` |")) {
        assert!(row.ends_with("| — |") && !row.contains('⚠'), "{row}");
    }
    let agreeing: Vec<&str> = md.lines().filter(|x| x.starts_with("| `weft-") && x.contains(" = ")).collect();
    assert!(!agreeing.is_empty() && agreeing.iter().all(|x| !x.contains('⚠')), "{md}");

    let page = html(&r);
    assert!(page.contains("id=\"cross-check\"") && page.contains(&want), "html lists it");
    assert!(page.contains("<td>⚠ "), "html marks the row");
}

/// The `weft` row of the only table in `md`.
fn weft_row(md: &str) -> &str {
    md.lines().find(|l| l.starts_with("| `weft` |")).unwrap_or_else(|| panic!("no weft row: {md}"))
}

/// Baseline and weft at 1000 rps, one run per given median.
fn two_variants(base_p50: &[u64], weft_p50: &[u64]) -> Report {
    let mut runs = Vec::new();
    for (rep, p) in base_p50.iter().enumerate() {
        runs.push(run("http1-small", "baseline", 1000.0, rep as u32, *p));
    }
    for (rep, p) in weft_p50.iter().enumerate() {
        runs.push(run("http1-small", "weft", 1000.0, rep as u32, *p));
    }
    report(runs)
}

#[test]
fn a_difference_inside_the_noise_is_rendered_as_such_never_as_a_signed_number() {
    // Three repetitions each, overlapping: the medians differ (230 vs 240 µs)
    // but the bootstrap interval of the difference contains 0.
    let r = two_variants(&[200, 260, 230], &[210, 250, 240]);
    let md = markdown(&r);
    let row = weft_row(&md);
    let cells: Vec<&str> = row.split(" | ").collect();
    // variant, p50, p90, p99, p99.9, max, added p50, added p99, ...
    assert_eq!(cells[1], "0.240 (0.210..0.250)", "median then min..max: {row}");
    for added in [cells[6], cells[7]] {
        assert!(added.starts_with("within noise (±0.") && added.ends_with(" ms)"), "{added} in {row}");
        assert!(!added.contains('+') && !added.contains('-'), "no signed number: {added}");
    }
    let page = html(&r);
    assert!(page.contains("<td class=\"noise\">within noise<br><span class=\"spread\">±0."), "{page}");
    assert!(page.contains("0.240<br><span class=\"spread\">0.210..0.250</span>"), "{page}");
    // The notation and the test are explained once, in the legend.
    assert_eq!(md.matches("- **Noise**: `0.531 (0.498..0.580)`").count(), 1, "{md}");
    assert!(md.contains("bootstrap 95% confidence interval of the difference of medians"), "{md}");
    assert!(page.contains("<dt>Noise</dt>"));
}

#[test]
fn a_difference_outside_the_noise_shows_its_interval() {
    let r = two_variants(&[200, 205, 210], &[300, 305, 310]);
    let cmp = Comparison::of(&r);
    let weft = cmp.cells.iter().find(|c| c.variant == "weft").unwrap();
    let p50 = &weft.added.as_ref().unwrap().p50;
    assert_eq!(p50.verdict, reports::noise::Verdict::Worse);
    let (lo, hi) = p50.interval.unwrap();
    let expected = format!(
        "+{:.3} ms (CI +{:.3}..+{:.3}; {:.2}x)",
        p50.difference / 1000.0,
        lo / 1000.0,
        hi / 1000.0,
        weft.ratio_p50.unwrap()
    );
    let md = reports::render::markdown(&cmp);
    let row = weft_row(&md);
    assert_eq!(row.split(" | ").nth(6), Some(expected.as_str()), "{row}");
    assert!(lo > 0.0 && lo <= p50.difference && p50.difference <= hi, "{lo} {} {hi}", p50.difference);
}

#[test]
fn one_repetition_says_it_has_no_spread() {
    let r = two_variants(&[200], &[250]);
    let md = markdown(&r);
    let row = weft_row(&md);
    let cells: Vec<&str> = row.split(" | ").collect();
    assert_eq!(cells[1], "0.250", "one run: no min..max: {row}");
    assert_eq!(cells[6], "+0.050 ms (1 run: no spread; 1.25x)", "{row}");
    assert!(md.contains("— 1 repetition (no median, no spread)"), "{md}");
    // Two runs have a spread but still no verdict.
    let md = markdown(&two_variants(&[200, 210], &[250, 260]));
    let cells: Vec<String> = weft_row(&md).split(" | ").map(str::to_owned).collect();
    assert_eq!(cells[1], "0.255 (0.250..0.260)", "{md}");
    assert!(cells[6].starts_with("+0.050 ms (2 runs: no verdict; "), "{md}");
}

#[test]
fn private_memory_column_only_where_the_substrate_split_rss() {
    let mut r = healthy();
    for run in &mut r.runs {
        for res in &mut run.resources {
            res.rss_anon_peak_bytes = None; // as a kind run records them
        }
    }
    let md = markdown(&r);
    assert!(md.contains("| proxy peak RSS (MiB) | proxy CPU"), "{md}");
    assert!(!md.contains("of it private (MiB)"), "no split, no column: {md}");
    let cells = Comparison::of(&r).summary();
    assert!(cells.iter().all(|c| !c.figures.contains_key("proxy_rss_anon_peak_bytes")));
    assert!(cells.iter().any(|c| c.figures.contains_key("proxy_rss_peak_bytes")));
}

#[test]
fn the_header_says_how_much_cpu_the_hypervisor_took_when_the_runs_know() {
    let mut r = healthy();
    assert!(!markdown(&r).contains("CPU stolen"), "older records: no line");
    for (i, run) in r.runs.iter_mut().enumerate() {
        // 0.1 %, 0.2 %, ... and one window at 20 %.
        let steal = if i == 0 { 0.20 } else { i as f64 / 1000.0 };
        run.host = Some(reports::HostCpu { steal, busy: 0.5 });
    }
    let n = r.runs.len();
    let md = markdown(&r);
    let line = md.lines().find(|l| l.contains("CPU stolen")).unwrap_or_else(|| panic!("{md}"));
    assert!(line.contains("max 20.0 %"), "{line}");
    assert!(n > 2 && n < 50, "the others stay under 5 %: {n}");
    assert!(line.contains(&format!("(1 of {n} windows above 5 %")), "{line}");
    let html = html(&r);
    assert!(html.contains("CPU stolen") && html.contains("max 20.0 %"), "both formats");
}
