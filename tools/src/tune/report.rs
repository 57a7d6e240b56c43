//! Rendering check and apply results for people (a table) and for programs (JSON).

use std::fmt::Write as _;

use serde::Serialize;

use crate::tune::apply::{Action, Outcome};
use crate::tune::check::{Row, Status, Summary};
use crate::tune::profile::Profile;

const HEADERS: [&str; 4] = ["SETTING", "EXPECTED", "ACTUAL", "STATUS"];

/// A fixed-width table of the rows, then one `why:` line per row that differs
/// and a summary line.
#[must_use]
pub fn table(profile: &Profile, rows: &[Row], strict: bool) -> String {
    let cells: Vec<[String; 4]> = rows
        .iter()
        .map(|row| {
            [
                row.setting.clone(),
                row.expected.to_string(),
                row.actual.clone().unwrap_or_else(|| "-".to_owned()),
                row.status.label().to_owned(),
            ]
        })
        .collect();
    let mut widths = HEADERS.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let _ = writeln!(text, "profile: {} ({})", profile.name, profile.description);
    let line = |text: &mut String, cells: [&str; 4]| {
        let _ = writeln!(
            text,
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
        );
    };
    line(&mut text, HEADERS);
    for row in &cells {
        line(&mut text, [&row[0], &row[1], &row[2], &row[3]]);
    }
    let differing: Vec<&Row> = rows.iter().filter(|r| r.status == Status::Diff).collect();
    if !differing.is_empty() {
        let _ = writeln!(text);
        for row in differing {
            let _ = writeln!(text, "why {}: {}", row.setting, row.reason);
        }
    }
    let summary = Summary::of(rows);
    let _ = writeln!(
        text,
        "\n{} ok, {} differ, {} missing (not applicable on this host{}): {}",
        summary.ok,
        summary.diff,
        summary.missing,
        if strict {
            ", counted as differing under --strict"
        } else {
            ""
        },
        if summary.passed(strict) {
            "PASS"
        } else {
            "FAIL"
        }
    );
    text
}

/// One line per apply action.
#[must_use]
pub fn actions(actions: &[Action]) -> String {
    let mut text = String::new();
    for action in actions {
        let _ = match &action.outcome {
            Outcome::Applied => writeln!(text, "applied {} = {}", action.setting, action.value),
            Outcome::Failed(why) => {
                writeln!(text, "failed  {} = {}: {why}", action.setting, action.value)
            }
            Outcome::Skipped(why) => writeln!(text, "skipped {}: {why}", action.setting),
        };
    }
    if actions.is_empty() {
        text.push_str("nothing to apply\n");
    }
    text
}

/// The `--json` document: the rows after any apply, the apply actions, and the verdict.
#[derive(Debug, Serialize)]
pub struct JsonReport<'a> {
    pub profile: &'a str,
    pub strict: bool,
    pub passed: bool,
    pub summary: Summary,
    pub rows: Vec<JsonRow<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<&'a [Action]>,
}

/// One row of [`JsonReport`].
#[derive(Debug, Serialize)]
pub struct JsonRow<'a> {
    pub setting: &'a str,
    pub expected: String,
    pub actual: Option<&'a str>,
    pub status: Status,
    pub reason: &'a str,
}

impl<'a> JsonReport<'a> {
    #[must_use]
    pub fn new(
        profile: &'a Profile,
        rows: &'a [Row],
        strict: bool,
        applied: Option<&'a [Action]>,
    ) -> JsonReport<'a> {
        let summary = Summary::of(rows);
        JsonReport {
            profile: &profile.name,
            strict,
            passed: summary.passed(strict),
            summary,
            rows: rows
                .iter()
                .map(|row| JsonRow {
                    setting: &row.setting,
                    expected: row.expected.to_string(),
                    actual: row.actual.as_deref(),
                    status: row.status,
                    reason: &row.reason,
                })
                .collect(),
            applied,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::check::tests::{fake_host, test_profile};
    use crate::tune::check::{check, LimitsOf};
    use crate::tune::system::SystemRoot;

    #[test]
    fn the_table_has_a_row_per_setting_and_explains_differences() {
        let dir = tempfile::tempdir().unwrap();
        fake_host(dir.path());
        let profile = test_profile();
        let rows = check(&profile, &SystemRoot::at(dir.path()), LimitsOf::ThisProcess);
        let text = table(&profile, &rows, false);
        assert!(text.contains("SETTING"));
        let swappiness = text
            .lines()
            .find(|l| l.starts_with("vm.swappiness "))
            .unwrap();
        assert!(swappiness.contains("<= 1") && swappiness.contains("60"));
        assert!(swappiness.ends_with("DIFF"));
        assert!(text.contains("why vm.swappiness: keep memory in RAM"));
        assert!(text.contains("4 ok, 3 differ, 2 missing"));
        assert!(text.trim_end().ends_with("FAIL"));
    }

    #[test]
    fn json_carries_status_and_verdict() {
        let dir = tempfile::tempdir().unwrap();
        fake_host(dir.path());
        let profile = test_profile();
        let rows = check(&profile, &SystemRoot::at(dir.path()), LimitsOf::ThisProcess);
        let json = serde_json::to_value(JsonReport::new(&profile, &rows, true, None)).unwrap();
        assert_eq!(json["passed"], false);
        assert_eq!(json["summary"]["missing"], 2);
        assert_eq!(json["rows"][0]["setting"], "vm.swappiness");
        assert_eq!(json["rows"][0]["status"], "DIFF");
        assert_eq!(json["rows"][0]["expected"], "<= 1");
        assert!(json.get("applied").is_none());
    }
}
