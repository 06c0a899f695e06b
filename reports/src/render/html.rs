//! `report.html`: one self-contained page (inline CSS, inline SVG, no
//! scripts, no external URLs) that can be attached to a CI run or mailed.

use std::fmt::Write as _;

use super::charts::{self, Palette};
use super::{
    conformance_notes, env_lines, legend, load_details, most_demanding, propagation_row, repetitions, Columns,
    CONFORMANCE_TITLE, NO_LOAD_RUNS, PROPAGATION_HEADERS, PROPAGATION_TITLE,
};
use crate::compare::{self, Cell, Comparison, GroupKey};
use crate::conformance::{cell_word, Matrix};
use crate::Status;

const CSS: &str = r#"
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; margin: 0 auto;
       max-width: 1360px; padding: 1.5rem 2rem 3rem; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.7rem; margin-bottom: .4rem; }
h2 { margin-top: 2.4rem; border-bottom: 2px solid #d9dde3; padding-bottom: .25rem; }
h3 { margin: 1.6rem 0 .3rem; font-size: 1.1rem; }
.env { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: .5rem 0 1rem; }
.env dt { font-weight: 600; } .env dd { margin: 0; }
.muted { color: #5f6670; font-size: .92rem; margin: .1rem 0 .6rem; }
table { border-collapse: collapse; width: 100%; font-size: .88rem; margin: .3rem 0 .8rem; }
th, td { padding: .32rem .5rem; border-bottom: 1px solid #e3e6ea; text-align: right; white-space: nowrap; }
th { background: #f3f5f7; font-weight: 600; vertical-align: bottom; white-space: normal; }
th:first-child, td:first-child { text-align: left; }
tbody tr:hover { background: #f8fafc; }
tr.baseline td { color: #555; font-style: italic; }
.swatch { display: inline-block; width: .75rem; height: .75rem; border-radius: 2px; margin-right: .4rem;
          vertical-align: -1px; }
.skipped { border: 2px solid #c62828; background: #fdecea; padding: .6rem 1rem; border-radius: 6px; margin: 1rem 0; }
.skipped strong { color: #b71c1c; }
.warn { color: #b71c1c; font-weight: 600; }
.chart { margin: .4rem 0 1rem; }
.keys { display: flex; gap: 1.2rem; font-size: .9rem; margin: .8rem 0 0 1rem; }
.chart svg { max-width: 100%; height: auto; display: block; }
details { margin: .4rem 0 1rem; } summary { cursor: pointer; color: #0b57d0; }
.legend dt { font-weight: 600; margin-top: .5rem; } .legend dd { margin-left: 1rem; }
table.conformance td { text-align: center; } table.conformance td:nth-child(2) { text-align: left; }
td.pass { background: #e6f4ea; color: #1e6b34; } td.fail { background: #fdecea; color: #b71c1c; font-weight: 700; }
td.na { background: #f1f3f4; color: #5f6670; } td.skipped { background: #fff4e0; color: #8a5300; }
td.none { color: #9aa0a6; }
.spread { color: #5f6670; font-size: .78rem; }
.wide { overflow-x: auto; }
td.noise { color: #5f6670; font-style: italic; }
"#;

/// Render a record as a self-contained HTML page.
pub fn html(cmp: &Comparison<'_>) -> String {
    let report = cmp.report;
    let groups = cmp.groups();
    let palette = Palette::new(cmp);
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        esc(&report.title())
    );
    let _ = writeln!(out, "<h1>{}</h1>", esc(&report.title()));
    out.push_str("<dl class=\"env\">\n");
    for (k, v) in env_lines(report) {
        let _ = writeln!(out, "<dt>{k}</dt><dd>{}</dd>", esc(&v));
    }
    out.push_str("</dl>\n");

    if !report.skipped.is_empty() {
        out.push_str("<div class=\"skipped\"><strong>⚠ Skipped variants — requested but NOT measured:</strong><ul>\n");
        for s in &report.skipped {
            let _ = writeln!(
                out,
                "<li><code>{}</code> in scenario <code>{}</code>: {}</li>",
                esc(&s.variant),
                esc(&s.scenario),
                esc(&s.reason)
            );
        }
        out.push_str("</ul>");
        if let Some(cmd) = crate::compare::install_missing_peers(report) {
            let _ = write!(out, "Install the missing peers in one line (Debian, Ubuntu): <code>{}</code>", esc(&cmd));
        }
        out.push_str("</div>\n");
    }
    let disagree = super::disagreements(report);
    if !disagree.is_empty() {
        let _ = writeln!(out, "<div class=\"skipped\" id=\"cross-check\"><strong>{}:</strong><ul>", esc(super::DISAGREE_TITLE));
        for line in &disagree {
            let _ = writeln!(out, "<li>{}</li>", esc(line));
        }
        out.push_str("</ul></div>\n");
    }
    if groups.is_empty() && report.capacity.is_empty() && report.sweeps.is_empty() {
        let _ = writeln!(out, "<p class=\"warn\">{}</p>", esc(NO_LOAD_RUNS));
    }

    // Scenarios in display order; each gets its cross-rate charts, then its groups.
    let mut scenarios: Vec<(String, String)> = Vec::new();
    for (k, _) in &groups {
        let s = (k.substrate.clone(), k.scenario.clone());
        if !scenarios.contains(&s) {
            scenarios.push(s);
        }
    }
    for (substrate, scenario) in &scenarios {
        let mine: Vec<&(GroupKey, Vec<&Cell>)> =
            groups.iter().filter(|(k, _)| &k.substrate == substrate && &k.scenario == scenario).collect();
        scenario_section(&mut out, cmp, &palette, substrate, scenario, &mine);
    }

    if !report.propagation.is_empty() {
        let _ = writeln!(out, "<h2>{}</h2>\n<table>\n<thead><tr>", esc(PROPAGATION_TITLE));
        for h in PROPAGATION_HEADERS {
            let _ = write!(out, "<th>{}</th>", esc(h));
        }
        out.push_str("</tr></thead>\n<tbody>\n");
        for p in &report.propagation {
            out.push_str("<tr>");
            for v in propagation_row(p) {
                let _ = write!(out, "<td>{}</td>", esc(&v));
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody>\n</table>\n");
    }

    hardening_sections(&mut out, report);
    capacity_sections(&mut out, report);
    sweep_sections(&mut out, report);

    if !cmp.conformance.is_empty() {
        conformance(&mut out, &cmp.conformance);
    }
    if let Some(h) = &report.hostile {
        hostile(&mut out, h);
    }

    out.push_str("<h2>How to read this</h2>\n<dl class=\"legend\">\n");
    for (term, text) in legend(cmp) {
        let _ = writeln!(out, "<dt>{term}</dt><dd>{}</dd>", inline_code(&esc(&text)));
    }
    out.push_str("</dl>\n</body>\n</html>\n");
    out
}

/// One section: its title, note and table, a legend and its chart.
fn section_table(
    out: &mut String,
    t: &super::hardening::Table,
    key: &[(String, plotters::style::RGBColor)],
    drawn: Result<Option<(&str, String)>, super::RenderError>,
) {
    let _ = writeln!(out, "<h2>{}</h2>\n<p class=\"muted\">{}</p>", inline_code(&esc(&t.title)), inline_code(&esc(&t.note.replace("**", ""))));
    out.push_str("<table>\n<thead><tr>");
    for head in &t.headers {
        let _ = write!(out, "<th>{}</th>", esc(head));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &t.rows {
        out.push_str("<tr>");
        for v in row {
            let _ = write!(out, "<td>{}</td>", inline_code(&esc(v)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
    if !key.is_empty() {
        out.push_str("<div class=\"keys\">");
        for (name, c) in key {
            let _ = write!(out, "<span><span class=\"swatch\" style=\"background:rgb({},{},{})\"></span>{}</span>", c.0, c.1, c.2, esc(name));
        }
        out.push_str("</div>\n");
    }
    chart(out, drawn);
}

/// Capacity at an SLO: a table and a chart per scenario.
fn capacity_sections(out: &mut String, report: &crate::Report) {
    for (t, key) in super::capacity::tables(report).iter().zip(super::capacity::scenarios(report)) {
        let drawn = super::capacity::chart_svg(report, &key).map(|svg| Some(("Capacity: percentile against offered rate", svg)));
        section_table(out, t, &super::capacity::keys(report, &key), drawn);
    }
}

/// Scale sweeps: a table and a cost-against-size chart per scenario.
fn sweep_sections(out: &mut String, report: &crate::Report) {
    for (t, key) in super::sweeps::tables(report).iter().zip(super::sweeps::scenarios(report)) {
        let drawn = super::sweeps::chart_svg(report, &key).map(|svg| Some(("Sweep: cost against size", svg)));
        section_table(out, t, &super::sweeps::keys(report, &key), drawn);
    }
}

/// Soak, faults and overload: the shared tables, each with its chart.
fn hardening_sections(out: &mut String, report: &crate::Report) {
    let h = &report.hardening;
    let tables = super::hardening::tables(report);
    let mut charts: Vec<Result<Option<(&str, String)>, super::RenderError>> = Vec::new();
    let mut keys: Vec<Vec<(String, plotters::style::RGBColor)>> = Vec::new();
    for s in &h.soak {
        charts.push(super::hardening::soak_svg(s).map(|svg| Some(("RSS and open fds over time", svg))));
        keys.push(super::hardening::soak_keys(s));
    }
    if !h.faults.is_empty() {
        charts.push(Ok(None));
        keys.push(Vec::new());
    }
    for o in &h.overload {
        charts.push(super::hardening::slices_svg(&o.slices).map(|svg| Some(("Overload p99 and shed per slice", svg))));
        keys.push(Vec::new());
    }
    for ((t, drawn), key) in tables.iter().zip(charts).zip(keys) {
        section_table(out, t, &key, drawn);
    }
    for f in &h.faults {
        let _ = writeln!(out, "<h3>Fault <code>{}</code>: p99 and failures per 0.5 s slice (fault from {:.1} s for {:.1} s)</h3>", esc(&f.fault), f.fault_at_s, f.fault_for_s);
        chart(out, super::hardening::slices_svg(&f.slices).map(|svg| Some(("Fault timeline", svg))));
    }
}

fn scenario_section(
    out: &mut String,
    cmp: &Comparison<'_>,
    palette: &Palette,
    substrate: &str,
    scenario: &str,
    groups: &[&(GroupKey, Vec<&Cell>)],
) {
    let _ = writeln!(out, "<h2>Scenario <code>{}</code> <small>({})</small></h2>", esc(scenario), esc(substrate));
    let skipped: Vec<_> = cmp.report.skipped.iter().filter(|s| s.scenario == scenario).collect();
    if !skipped.is_empty() {
        // The reasons are in the box at the top; here the names suffice.
        let list: Vec<String> = skipped.iter().map(|s| format!("<code>{}</code>", esc(&s.variant))).collect();
        let _ = writeln!(
            out,
            "<p class=\"warn\">Not measured in this scenario: {} (reasons under “Skipped variants” above)</p>",
            list.join(", ")
        );
    }

    let open: Vec<&(GroupKey, Vec<&Cell>)> = groups.iter().copied().filter(|(k, _)| k.rate.is_some()).collect();
    if open.len() > 1 {
        match charts::added_vs_rate_svg(&open, palette) {
            Ok(Some((svg, variants))) => {
                out.push_str("<div class=\"keys\">");
                for v in &variants {
                    let c = palette.color(v);
                    let _ = write!(
                        out,
                        "<span><span class=\"swatch\" style=\"background:rgb({},{},{})\"></span>{}</span>",
                        c.0,
                        c.1,
                        c.2,
                        esc(v)
                    );
                }
                out.push_str("</div>\n");
                chart(out, Ok(Some(("Added latency vs rate", svg))));
            }
            other => chart(out, other.map(|_| None)),
        }
    }
    let owned: Vec<(GroupKey, Vec<&Cell>)> = groups.iter().map(|(k, g)| (k.clone(), g.clone())).collect();
    let top = most_demanding(&owned);
    if let Some(i) = top {
        let (k, g) = groups[i];
        chart(out, charts::resources_svg(k, g, palette).map(|o| o.map(|svg| ("Proxy resources", svg))));
    }

    for (i, (key, group)) in groups.iter().enumerate() {
        let _ = writeln!(out, "<h3>{} — {}</h3>", esc(&key.describe()), esc(&repetitions(group)));
        let details = load_details(cmp, group);
        if !details.is_empty() {
            let _ = writeln!(out, "<p class=\"muted\">{}.</p>", esc(&details));
        }
        table(out, group, palette);
        // The most demanding load is shown; the others are one click away,
        // which keeps a many-rate suite readable without scripts.
        let open_attr = if Some(i) == top { " open" } else { "" };
        let _ = writeln!(out, "<details{open_attr}><summary>Latency by percentile at {}</summary>", esc(&compare::load_label(key.rate, key.concurrency)));
        chart(out, charts::spectrum_svg(cmp, key, group, palette).map(|svg| Some(("Latency by percentile", svg))));
        out.push_str("</details>\n");
    }
}

/// The matrix with a class per outcome, each column's totals, then the
/// failures (expected vs observed) and the reasons for the rest.
fn conformance(out: &mut String, m: &Matrix<'_>) {
    let _ = writeln!(out, "<h2>{}</h2>", esc(CONFORMANCE_TITLE));
    out.push_str("<table class=\"conformance\">\n<thead><tr><th>test</th><th>GAMMA feature</th>");
    for c in &m.columns {
        let _ = write!(out, "<th>{}</th>", esc(&m.label(c)));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &m.rows {
        let _ = write!(out, "<tr><td><code>{}</code></td><td>{}</td>", esc(row.name), esc(row.feature.unwrap_or("")));
        for cell in &row.cells {
            let (class, word) = match cell.map(|t| t.status) {
                Some(Status::Pass) => ("pass", cell_word(Status::Pass)),
                Some(Status::Fail) => ("fail", cell_word(Status::Fail)),
                Some(Status::NotApplicable) => ("na", cell_word(Status::NotApplicable)),
                Some(Status::Skipped) => ("skipped", cell_word(Status::Skipped)),
                None => ("none", "—"),
            };
            let _ = write!(out, "<td class=\"{class}\">{word}</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n<ul>\n");
    for (i, c) in m.columns.iter().enumerate() {
        let counts = m.counts(i);
        let _ = writeln!(
            out,
            "<li><strong>{}</strong>: {} ({} tests)</li>",
            esc(&m.label(c)),
            esc(&counts.describe()),
            counts.total()
        );
    }
    out.push_str("</ul>\n");
    for (heading, notes) in conformance_notes(m) {
        let _ = writeln!(out, "<h3>{}</h3>\n<ul>", esc(heading));
        for n in notes {
            let _ = writeln!(out, "<li><code>{}</code> on {}: {}</li>", esc(&n.test), esc(&n.column), esc(&n.text));
        }
        out.push_str("</ul>\n");
    }
}

fn chart(out: &mut String, drawn: Result<Option<(&str, String)>, super::RenderError>) {
    match drawn {
        Ok(Some((label, svg))) => {
            let _ = writeln!(out, "<figure class=\"chart\" aria-label=\"{}\">{}</figure>", esc(label), strip_xml_decl(&svg));
        }
        Ok(None) => {}
        Err(e) => {
            let _ = writeln!(out, "<p class=\"warn\">Chart unavailable: {}</p>", esc(&e.to_string()));
        }
    }
}

/// An XML declaration is not allowed inside an HTML document.
fn strip_xml_decl(svg: &str) -> &str {
    match svg.strip_prefix("<?xml") {
        Some(rest) => rest.find("?>").map_or(svg, |i| rest[i + 2..].trim_start()),
        None => svg,
    }
}

fn table(out: &mut String, group: &[&Cell], palette: &Palette) {
    let columns = Columns::of(group);
    // With a spread under every figure the table can outgrow the page: it
    // scrolls on its own instead of being cut off.
    out.push_str("<div class=\"wide\"><table>\n<thead><tr><th>variant</th>");
    for (name, unit) in columns.headers() {
        match unit {
            Some(unit) => {
                let _ = write!(out, "<th>{}<br>{}</th>", esc(name), esc(unit));
            }
            None => {
                let _ = write!(out, "<th>{}</th>", esc(name));
            }
        }
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for c in group {
        let color = palette.color(&c.variant);
        let _ = write!(
            out,
            "<tr{}><td><span class=\"swatch\" style=\"background:rgb({},{},{})\"></span>{}</td>",
            if c.is_baseline() { " class=\"baseline\"" } else { "" },
            color.0,
            color.1,
            color.2,
            esc(&c.variant)
        );
        for f in columns.row(c) {
            let class = if f.noise { " class=\"noise\"" } else { "" };
            let _ = write!(out, "<td{class}>{}", esc(&f.text));
            if let Some(sub) = &f.sub {
                let _ = write!(out, "<br><span class=\"spread\">{}</span>", esc(sub));
            }
            out.push_str("</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table></div>\n");
}

/// Escape text for HTML element content and attribute values.
fn hostile(out: &mut String, h: &record::HostileRun) {
    let _ = writeln!(out, "<h2>{}</h2>\n<p>{}</p>\n<table>\n<thead><tr>", esc(super::hostile::TITLE), esc(&super::hostile::summary(h)));
    for c in super::hostile::HEADERS {
        let _ = write!(out, "<th>{}</th>", esc(c));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for a in &h.attacks {
        out.push_str("<tr>");
        for c in super::hostile::row(a) {
            let _ = write!(out, "<td>{}</td>", esc(&c));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

/// Turn the legend's Markdown `code` and *emphasis* into HTML (input is
/// already escaped and contains no tags).
fn inline_code(s: &str) -> String {
    let mut out = String::new();
    let mut code = false;
    let mut em = false;
    for ch in s.chars() {
        match ch {
            '`' => {
                out.push_str(if code { "</code>" } else { "<code>" });
                code = !code;
            }
            '*' if !code => {
                out.push_str(if em { "</em>" } else { "<em>" });
                em = !em;
            }
            _ => out.push(ch),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(inline_code("the `baseline` is *scheduled*"), "the <code>baseline</code> is <em>scheduled</em>");
        assert_eq!(strip_xml_decl("<?xml version=\"1.0\"?>\n<svg/>"), "<svg/>");
    }
}
