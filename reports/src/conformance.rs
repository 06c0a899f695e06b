//! The conformance matrix: tests × (substrate, variant), computed once per
//! report (in [`Comparison`](crate::compare::Comparison)) and shown by both
//! renderers and counted by the gate.

use record::{Status, TestResult};

/// The variant conformance normally runs; other variants (`baseline`, a
/// `weft` build with a feature switched off) show that the suite can fail.
pub const DEFAULT_VARIANT: &str = "weft";

/// One column of the matrix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub substrate: String,
    pub variant: String,
}

/// One test's row: its results, one per column (`None`: not run there).
#[derive(Clone, Debug, PartialEq)]
pub struct Row<'r> {
    pub name: &'r str,
    /// The GAMMA feature the test covers, if any.
    pub feature: Option<&'r str>,
    pub cells: Vec<Option<&'r TestResult>>,
}

/// How the results of one column came out.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub pass: usize,
    pub fail: usize,
    pub not_applicable: usize,
    pub skipped: usize,
}

impl Counts {
    /// Tests that were actually checked (passed or failed).
    pub fn checked(&self) -> usize {
        self.pass + self.fail
    }

    pub fn total(&self) -> usize {
        self.pass + self.fail + self.not_applicable + self.skipped
    }

    /// `40 pass, 1 FAIL, 2 n/a, 0 skipped`.
    pub fn describe(&self) -> String {
        format!(
            "{} pass, {} {}, {} n/a, {} skipped",
            self.pass,
            self.fail,
            if self.fail > 0 { "FAIL" } else { "fail" },
            self.not_applicable,
            self.skipped
        )
    }
}

/// Tests × columns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Matrix<'r> {
    /// Substrates in the order `local`, `netns`, `kind`, then others as they
    /// appear; within a substrate `weft` first, then other variants as they appear.
    pub columns: Vec<Column>,
    /// Tests in the order they first appear in the record.
    pub rows: Vec<Row<'r>>,
}

impl<'r> Matrix<'r> {
    pub fn of(results: &'r [TestResult]) -> Matrix<'r> {
        let mut columns: Vec<Column> = Vec::new();
        for t in results {
            if !columns.iter().any(|c| c.substrate == t.substrate && c.variant == t.variant) {
                columns.push(Column { substrate: t.substrate.clone(), variant: t.variant.clone() });
            }
        }
        let substrate_rank = |s: &str| match s {
            "local" => 0,
            "netns" => 1,
            "kind" => 2,
            _ => 3,
        };
        // Stable: first appearance breaks ties.
        columns.sort_by_key(|c| (substrate_rank(&c.substrate), c.variant != DEFAULT_VARIANT));
        let mut rows: Vec<Row<'r>> = Vec::new();
        for t in results {
            let at = columns.iter().position(|c| c.substrate == t.substrate && c.variant == t.variant).expect("collected");
            let row = match rows.iter().position(|r| r.name == t.name) {
                Some(i) => &mut rows[i],
                None => {
                    rows.push(Row { name: &t.name, feature: None, cells: vec![None; columns.len()] });
                    rows.last_mut().expect("just pushed")
                }
            };
            row.feature = row.feature.or(t.feature.as_deref());
            // One result per (test, column) is the rule; should a record hold
            // two, the cell shows the worse so nothing bad is hidden.
            let cell = &mut row.cells[at];
            if cell.is_none_or(|old| severity(t.status) > severity(old.status)) {
                *cell = Some(t);
            }
        }
        Matrix { columns, rows }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether any column is of a variant other than `weft`: then column
    /// headers name the variant too.
    pub fn shows_variants(&self) -> bool {
        self.columns.iter().any(|c| c.variant != DEFAULT_VARIANT)
    }

    /// `local`, or `local / weft-no-routes` when variants are shown.
    pub fn label(&self, column: &Column) -> String {
        if self.shows_variants() {
            format!("{} / {}", column.substrate, column.variant)
        } else {
            column.substrate.clone()
        }
    }

    /// How column `i` came out (counting what the matrix shows).
    pub fn counts(&self, i: usize) -> Counts {
        let mut c = Counts::default();
        for t in self.rows.iter().filter_map(|r| r.cells[i]) {
            match t.status {
                Status::Pass => c.pass += 1,
                Status::Fail => c.fail += 1,
                Status::NotApplicable => c.not_applicable += 1,
                Status::Skipped => c.skipped += 1,
            }
        }
        c
    }

    /// Every shown result with `status`, in row order, then column order,
    /// each with its column.
    pub fn with_status(&self, status: Status) -> Vec<(&Column, &'r TestResult)> {
        let mut out = Vec::new();
        for row in &self.rows {
            for (i, cell) in row.cells.iter().enumerate() {
                if let Some(t) = cell.filter(|t| t.status == status) {
                    out.push((&self.columns[i], t));
                }
            }
        }
        out
    }
}

fn severity(s: Status) -> u8 {
    match s {
        Status::Pass => 0,
        Status::NotApplicable => 1,
        Status::Skipped => 2,
        Status::Fail => 3,
    }
}

/// The word a matrix cell shows (`FAIL` in capitals so it stands out).
pub fn cell_word(status: Status) -> &'static str {
    match status {
        Status::Pass => "pass",
        Status::Fail => "FAIL",
        Status::NotApplicable => "n/a",
        Status::Skipped => "skipped",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, substrate: &str, variant: &str, status: Status) -> TestResult {
        TestResult {
            name: name.into(),
            feature: name.starts_with("Mesh").then(|| name.to_owned()),
            substrate: substrate.into(),
            variant: variant.into(),
            status,
            duration_s: 0.5,
            reason: None,
            expected: None,
            observed: None,
        }
    }

    #[test]
    fn columns_rows_counts() {
        let results = vec![
            t("MeshBasic", "netns", "weft", Status::Pass),
            t("MeshBasic", "local", "weft", Status::Pass),
            t("MtlsByDefault", "local", "weft", Status::NotApplicable),
            t("MeshBasic", "local", "baseline", Status::Fail),
            t("MtlsByDefault", "netns", "weft", Status::Fail),
            t("MtlsByDefault", "netns", "weft", Status::Pass),
        ];
        let m = Matrix::of(&results);
        let labels: Vec<String> = m.columns.iter().map(|c| m.label(c)).collect();
        assert_eq!(labels, ["local / weft", "local / baseline", "netns / weft"]);
        assert_eq!(m.rows.iter().map(|r| r.name).collect::<Vec<_>>(), ["MeshBasic", "MtlsByDefault"]);
        assert_eq!(m.rows[0].feature, Some("MeshBasic"));
        assert_eq!(m.rows[1].feature, None);
        assert_eq!(m.rows[1].cells[1], None, "not run there");
        // The duplicate shows its failure.
        assert_eq!(m.rows[1].cells[2].unwrap().status, Status::Fail);
        assert_eq!(m.counts(0), Counts { pass: 1, fail: 0, not_applicable: 1, skipped: 0 });
        assert_eq!(m.counts(2).describe(), "1 pass, 1 FAIL, 0 n/a, 0 skipped");
        let fails: Vec<(&str, &str)> =
            m.with_status(Status::Fail).iter().map(|(c, t)| (c.variant.as_str(), t.name.as_str())).collect();
        assert_eq!(fails, [("baseline", "MeshBasic"), ("weft", "MtlsByDefault")]);
        assert!(!Matrix::of(&results[..2]).shows_variants());
    }
}
