//! Reports: JSON, self-contained HTML, JUnit XML and the terminal summary.
//!
//! All four render one [`CheckReport`]. The JSON report is the report serialized with serde, and
//! `schemas/report.schema.json` is its schema (versioned by `schema_version`). The HTML page has
//! no external asset: its plots are inline SVG drawn with `plotters`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::str::FromStr;

use crate::checkers::model::OutageUntil;
pub use crate::checkers::{CheckError, CheckReport, REPORT_FORMAT, REPORT_SCHEMA_VERSION};
use crate::checkers::{Evidence, FaultRecovery, Status};

mod html;
mod junit;
mod plots;
mod terminal;

pub use terminal::terminal_summary;

/// The output formats of `chaosctl check --output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    /// JSON, see `schemas/report.schema.json`.
    Json,
    /// A self-contained HTML page.
    Html,
    /// JUnit XML, one test case per verdict.
    Junit,
    /// The terminal summary, without colours.
    Text,
}

impl FromStr for ReportFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "html" => Ok(Self::Html),
            "junit" | "xml" => Ok(Self::Junit),
            "text" | "txt" => Ok(Self::Text),
            other => Err(format!(
                "unknown report format {other:?}: use json, html, junit or text"
            )),
        }
    }
}

impl ReportFormat {
    /// The usual file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Html => "html",
            Self::Junit => "xml",
            Self::Text => "txt",
        }
    }
}

/// Writes the JSON report (pretty-printed, ending with a newline).
pub fn write_json<W: Write>(report: &CheckReport, mut out: W) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut out, report)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Writes the self-contained HTML page.
pub fn write_html<W: Write>(report: &CheckReport, mut out: W) -> io::Result<()> {
    out.write_all(html::render(report)?.as_bytes())?;
    out.flush()
}

/// Writes JUnit XML: one test suite, one test case per verdict (failure when invalid, error when
/// unknown).
pub fn write_junit<W: Write>(report: &CheckReport, mut out: W) -> io::Result<()> {
    out.write_all(junit::render(report).as_bytes())?;
    out.flush()
}

/// Writes `report` in `format` to `path`.
pub fn write_file(
    report: &CheckReport,
    format: ReportFormat,
    path: &Path,
) -> Result<(), CheckError> {
    let wrap = |source| CheckError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file = File::create(path).map_err(wrap)?;
    let mut out = BufWriter::new(file);
    match format {
        ReportFormat::Json => write_json(report, &mut out),
        ReportFormat::Html => write_html(report, &mut out),
        ReportFormat::Junit => write_junit(report, &mut out),
        ReportFormat::Text => out.write_all(terminal_summary(report, false).as_bytes()),
    }
    .and_then(|()| out.flush())
    .map_err(wrap)
}

/// Seconds since the run start, for display.
pub(crate) fn secs(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1e9)
}

/// Milliseconds as seconds, for display.
pub(crate) fn ms_as_s(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1e3)
}

/// A fault's total outage as every report shows it: a measurement only when every series
/// recovered, otherwise the lower bound it is, and why it stopped there.
pub(crate) fn outage_text(f: &FaultRecovery) -> String {
    let t = ms_as_s(f.total_outage_ms);
    match f.outage_until {
        OutageUntil::Recovery => t,
        OutageUntil::Deadline => format!("at least {t} (not recovered by the deadline)"),
        OutageUntil::HistoryEnd => {
            format!("at least {t} (not recovered when the history ended, before the deadline)")
        }
        OutageUntil::NotMeasured => "not measured (the fault never healed)".to_string(),
    }
}

/// One line per fault for text reports: impact, TTR, deadline, outage, impacted and worst
/// tenant, and the series judged against their own baseline.
pub(crate) fn fault_line(
    f: &FaultRecovery,
    window: Option<&crate::checkers::FaultWindow>,
) -> String {
    let when = window.map_or_else(String::new, |w| {
        let end = w
            .end_ns
            .map_or_else(|| "end of run".to_string(), |e| format!("{}s", secs(e)));
        format!(" {}s-{end}", secs(w.start_ns))
    });
    let tti = f.time_to_impact_ms.map_or_else(
        || "no impact".to_string(),
        |t| format!("impact after {}", ms_as_s(t)),
    );
    let ttr = match (f.reference_ns, f.ttr_ms) {
        (None, _) => "TTR not measured (never healed)".to_string(),
        (Some(_), Some(t)) => format!("TTR {}", ms_as_s(t)),
        (Some(_), None) => "NOT RECOVERED".to_string(),
    };
    let worst = match (&f.worst_tenant, &f.worst_series) {
        (Some(t), Some(c)) => format!(", worst tenant {t} ({c})"),
        _ => String::new(),
    };
    let before = if f.failing_before_series > 0 {
        format!(
            ", {} series failing before the first fault judged against their own baseline",
            f.failing_before_series
        )
    } else {
        String::new()
    };
    format!(
        "{} {}{when}: {tti}, {ttr} (deadline {}), outage {}, {} tenants impacted{worst}{before}",
        f.fault_id,
        f.kind,
        ms_as_s(f.deadline_ms),
        outage_text(f),
        f.impacted_tenants
    )
}

/// One line describing a piece of evidence.
pub(crate) fn evidence_line(e: &Evidence) -> String {
    let mut s = String::new();
    if let Some(t) = e.at_ns {
        let _ = write!(s, "t={}s ", secs(t));
    }
    let parts = [
        ("value", &e.value),
        ("other value", &e.other_value),
        ("tenant", &e.tenant),
        ("other tenant", &e.other_tenant),
        ("node", &e.node),
        ("other node", &e.other_node),
        ("stream", &e.stream),
    ];
    for (k, v) in parts {
        if let Some(v) = v {
            let _ = write!(s, "{k} {v} ");
        }
    }
    if let Some(q) = e.seq {
        let _ = write!(s, "seq {q} ");
    }
    if let Some(l) = e.line {
        let _ = write!(s, "line {l} ");
    }
    let _ = write!(s, "- {}", e.detail);
    s
}

/// Upper-case status word.
/// The run's outcome in plain words, for the top of every report: `PASSED: all 4 checks held`,
/// `FAILED: 2 of 4 checks failed`, `INCONCLUSIVE: …`. Jepsen's valid/invalid stays with each
/// checker.
pub fn outcome(report: &CheckReport) -> String {
    let total = report.verdicts.len();
    let count = |status: Status| {
        report
            .verdicts
            .iter()
            .filter(|v| v.status == status)
            .count()
    };
    let aborted = report
        .experiment
        .as_ref()
        .and_then(|e| e.aborted.as_deref());
    match (report.status, aborted) {
        (Status::Invalid, _) => format!(
            "FAILED: {} of {total} checks failed",
            count(Status::Invalid)
        ),
        (_, Some(_)) => "INCONCLUSIVE: the run was aborted; this is a partial report".to_owned(),
        (Status::Valid, None) => format!("PASSED: all {total} checks held"),
        (Status::Unknown, None) => format!(
            "INCONCLUSIVE: {} of {total} checks could not be decided",
            count(Status::Unknown)
        ),
    }
}

/// What the score is, in one sentence next to the number.
pub const SCORE_MEANING: &str = "100 when every check holds; at most 89 with an undecided \
     check, at most 49 with a failed one, 0 if tenants were not isolated; secondary to the checks";

pub(crate) fn status_word(s: Status) -> &'static str {
    match s {
        Status::Valid => "VALID",
        Status::Invalid => "INVALID",
        Status::Unknown => "UNKNOWN",
    }
}

/// A UTC timestamp from Unix milliseconds (`YYYY-MM-DD HH:MM:SS UTC`).
pub(crate) fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_764_129_600_123), "2025-11-26 04:00:00 UTC");
    }

    #[test]
    fn formats_parse() {
        assert_eq!("junit".parse::<ReportFormat>(), Ok(ReportFormat::Junit));
        assert!("pdf".parse::<ReportFormat>().is_err());
    }
}
