//! `report.md`: the tables, for terminals, pull requests and READMEs.

use std::fmt::Write as _;

use super::{
    conformance_notes, disagreements, env_lines, legend, load_details, propagation_row, repetitions, Columns, CONFORMANCE_TITLE,
    DISAGREE_TITLE, NO_LOAD_RUNS, PROPAGATION_HEADERS, PROPAGATION_TITLE,
};
use crate::compare::{Cell, Comparison};
use crate::conformance::{cell_word, Matrix};
use crate::Status;

/// Render a record as Markdown.
pub fn markdown(cmp: &Comparison<'_>) -> String {
    let report = cmp.report;
    let groups = cmp.groups();
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n", md(&report.title()));
    for (k, v) in env_lines(report) {
        let _ = writeln!(out, "- **{k}:** {}", md(&v));
    }
    out.push('\n');

    if !report.skipped.is_empty() {
        let _ = writeln!(out, "> **⚠ SKIPPED VARIANTS — requested but NOT measured:**");
        for s in &report.skipped {
            let _ = writeln!(out, "> - `{}` in scenario `{}`: {}", s.variant, s.scenario, md(&s.reason));
        }
        if let Some(cmd) = crate::compare::install_missing_peers(report) {
            let _ = writeln!(out, ">\n> Install the missing peers in one line (Debian, Ubuntu): `{cmd}`");
        }
        out.push('\n');
    }
    let disagree = disagreements(report);
    if !disagree.is_empty() {
        let _ = writeln!(out, "> **{DISAGREE_TITLE}:**");
        for line in &disagree {
            let _ = writeln!(out, "> - {}", md(line));
        }
        out.push('\n');
    }
    if groups.is_empty() && report.capacity.is_empty() && report.sweeps.is_empty() {
        let _ = writeln!(out, "**{NO_LOAD_RUNS}**\n");
    }

    let mut current_scenario: Option<(String, String)> = None;
    for (key, group) in &groups {
        let scen = (key.substrate.clone(), key.scenario.clone());
        if current_scenario.as_ref() != Some(&scen) {
            let _ = writeln!(out, "## Scenario `{}` ({})\n", key.scenario, md(&key.substrate));
            let skipped: Vec<_> = report.skipped.iter().filter(|s| s.scenario == key.scenario).collect();
            if !skipped.is_empty() {
                let list: Vec<String> = skipped.iter().map(|s| format!("`{}`", s.variant)).collect();
                let _ = writeln!(out, "**Not measured in this scenario:** {} (reasons above)\n", list.join(", "));
            }
            current_scenario = Some(scen);
        }
        let _ = writeln!(out, "### {} — {}\n", md(&key.describe()), repetitions(group));
        let details = load_details(cmp, group);
        if !details.is_empty() {
            let _ = writeln!(out, "{details}.\n");
        }
        table(&mut out, group);
        out.push('\n');
    }

    if !report.propagation.is_empty() {
        let _ = writeln!(out, "## {PROPAGATION_TITLE}\n");
        let _ = writeln!(out, "| {} |", PROPAGATION_HEADERS.join(" | "));
        let align: Vec<&str> = (0..PROPAGATION_HEADERS.len()).map(|i| if i == 0 { "---" } else { "---:" }).collect();
        let _ = writeln!(out, "| {} |", align.join(" | "));
        for p in &report.propagation {
            let mut row = propagation_row(p);
            row[0] = md(&row[0]);
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out.push('\n');
    }

    let capacity = super::capacity::tables(report);
    let sweeps = super::sweeps::tables(report);
    for t in super::hardening::tables(report).into_iter().chain(capacity).chain(sweeps) {
        let _ = writeln!(out, "## {}\n\n{}\n", t.title, t.note);
        let _ = writeln!(out, "| {} |", t.headers.join(" | "));
        let align: Vec<&str> = (0..t.headers.len()).map(|i| if i == 0 { "---" } else { "---:" }).collect();
        let _ = writeln!(out, "| {} |", align.join(" | "));
        for row in &t.rows {
            let row: Vec<String> = row.iter().map(|c| c.replace('|', "\\|")).collect();
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out.push('\n');
    }

    if !cmp.conformance.is_empty() {
        conformance(&mut out, &cmp.conformance);
    }
    if let Some(h) = &report.hostile {
        hostile(&mut out, h);
    }

    out.push_str("## How to read this\n\n");
    for (term, text) in legend(cmp) {
        let _ = writeln!(out, "- **{term}**: {text}");
    }
    out
}

/// The matrix (tests × substrates), each column's totals, then what failed
/// and why the rest did not run.
fn conformance(out: &mut String, m: &Matrix<'_>) {
    let _ = writeln!(out, "## {CONFORMANCE_TITLE}\n");
    let header: Vec<String> = ["test".to_owned(), "GAMMA feature".to_owned()]
        .into_iter()
        .chain(m.columns.iter().map(|c| md(&m.label(c))))
        .collect();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let align: Vec<&str> = (0..header.len()).map(|i| if i < 2 { "---" } else { ":---:" }).collect();
    let _ = writeln!(out, "| {} |", align.join(" | "));
    for row in &m.rows {
        let cells: Vec<&str> = row
            .cells
            .iter()
            .map(|c| match c.map(|t| t.status) {
                Some(Status::Fail) => "**FAIL**",
                Some(s) => cell_word(s),
                None => "—",
            })
            .collect();
        let _ = writeln!(out, "| `{}` | {} | {} |", md(row.name), md(row.feature.unwrap_or("")), cells.join(" | "));
    }
    out.push('\n');
    for (i, c) in m.columns.iter().enumerate() {
        let counts = m.counts(i);
        let _ = writeln!(out, "- **{}**: {} ({} tests)", md(&m.label(c)), counts.describe(), counts.total());
    }
    out.push('\n');
    for (heading, notes) in conformance_notes(m) {
        let _ = writeln!(out, "### {heading}\n");
        for n in notes {
            let _ = writeln!(out, "- `{}` on {}: {}", md(&n.test), md(&n.column), md(&n.text));
        }
        out.push('\n');
    }
}

fn hostile(out: &mut String, h: &record::HostileRun) {
    let _ = writeln!(out, "## {}\n\n{}\n", super::hostile::TITLE, md(&super::hostile::summary(h)));
    let _ = writeln!(out, "| {} |", super::hostile::HEADERS.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(super::hostile::HEADERS.len()));
    for a in &h.attacks {
        let cells: Vec<String> = super::hostile::row(a).iter().map(|c| md(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push('\n');
}

fn table(out: &mut String, group: &[&Cell]) {
    let columns = Columns::of(group);
    let header: Vec<String> = std::iter::once("variant".to_owned())
        .chain(columns.headers().into_iter().map(|(name, unit)| match unit {
            Some(unit) => format!("{name} ({unit})"),
            None => name.to_owned(),
        }))
        .collect();
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let align: Vec<&str> = (0..header.len()).map(|i| if i == 0 { "---" } else { "---:" }).collect();
    let _ = writeln!(out, "| {} |", align.join(" | "));
    for c in group {
        let row: Vec<String> = columns.row(c).iter().map(|f| f.markdown()).collect();
        let _ = writeln!(out, "| `{}` | {} |", c.variant, row.join(" | "));
    }
}

/// Keep record text from breaking Markdown structure (tables, emphasis).
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '|' | '*' | '_' | '`' | '<' | '>' | '[' | ']' | '\\' => {
                out.push('\\');
                out.push(ch);
            }
            '\n' | '\r' => out.push(' '),
            _ => out.push(ch),
        }
    }
    out
}
