//! The report as text (one line per check, grouped) or JSON.

use std::fmt::Write as _;

use super::{Report, Verdict};

/// How to mark verdicts: symbols and colour on a terminal, words otherwise
/// (logs and pipes stay greppable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Terminal,
    Plain,
}

impl Verdict {
    fn mark(self, style: Style) -> &'static str {
        match (style, self) {
            (Style::Terminal, Verdict::Pass) => "\x1b[32m✔\x1b[0m",
            (Style::Terminal, Verdict::Warn) => "\x1b[33m‼\x1b[0m",
            (Style::Terminal, Verdict::Fail) => "\x1b[31m✘\x1b[0m",
            (Style::Plain, Verdict::Pass) => "ok  ",
            (Style::Plain, Verdict::Warn) => "WARN",
            (Style::Plain, Verdict::Fail) => "FAIL",
        }
    }
}

impl Report {
    /// One line per check under its group's heading, a hint under each
    /// failure or warning, and a closing status line.
    pub fn to_text(&self, style: Style) -> String {
        let mut out = String::new();
        let what = if self.mode == "pre" { "before install" } else { "installed mesh" };
        let _ = writeln!(out, "weft check, {what} (context {}, namespace {})", self.context, self.namespace);
        let mut group = "";
        for check in &self.checks {
            if check.group != group {
                group = check.group;
                let _ = writeln!(out, "\n{group}");
            }
            let _ = writeln!(out, "  {} {}: {}", check.verdict.mark(style), check.name, check.detail);
            if let Some(hint) = &check.hint {
                let _ = writeln!(out, "       hint: {hint}");
            }
        }
        let (failed, warned, passed) = (self.count(Verdict::Fail), self.count(Verdict::Warn), self.count(Verdict::Pass));
        let status = if failed > 0 { "FAILED" } else { "OK" };
        let _ = writeln!(out, "\nstatus: {status} ({failed} failed, {warned} warnings, {passed} passed)");
        out
    }

    /// The report for scripts: `{"ok": .., "failed": .., "checks": [..]}`.
    pub fn to_json(&self) -> String {
        let value = serde_json::json!({
            "ok": self.ok(),
            "mode": self.mode,
            "context": self.context,
            "namespace": self.namespace,
            "failed": self.count(Verdict::Fail),
            "warnings": self.count(Verdict::Warn),
            "passed": self.count(Verdict::Pass),
            "checks": self.checks,
        });
        serde_json::to_string_pretty(&value).expect("a Report always serializes") + "\n"
    }
}

#[cfg(test)]
mod tests {
    use super::super::Check;
    use super::*;

    #[test]
    fn text_and_json() {
        let report = Report {
            mode: "installed",
            context: "kind-weft".into(),
            namespace: "weft".into(),
            checks: vec![
                Check::pass("a", "first", "fine"),
                Check::warn("a", "second", "soon", "do this"),
                Check::fail("b", "third", "broken", "fix that"),
            ],
        };
        let plain = report.to_text(Style::Plain);
        assert!(plain.contains("\na\n  ok   first: fine\n  WARN second: soon\n       hint: do this\n\nb\n  FAIL third: broken\n"), "{plain}");
        assert!(plain.ends_with("status: FAILED (1 failed, 1 warnings, 1 passed)\n"), "{plain}");
        assert!(!plain.contains('\x1b'));
        let tty = report.to_text(Style::Terminal);
        assert!(tty.contains("✔") && tty.contains("‼") && tty.contains("✘"), "{tty}");
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["ok"], false);
        assert_eq!(json["failed"], 1);
        assert_eq!(json["checks"][1]["verdict"], "warn");
        assert_eq!(json["checks"][2]["hint"], "fix that");
        assert!(json["checks"][0].get("hint").is_none());
    }
}
