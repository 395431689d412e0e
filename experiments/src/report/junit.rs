//! JUnit XML: one test case per verdict, so CI systems show the results.

use std::fmt::Write as _;

use crate::checkers::{CheckReport, Severity, Status};

use super::{evidence_line, fault_line, utc};

/// Escapes text for XML 1.0 attributes and content, dropping characters XML cannot carry.
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// The text of one test case: anomalies with their evidence, then notes.
fn case_body(v: &crate::checkers::Verdict) -> String {
    let mut body = String::new();
    for a in &v.anomalies {
        let sev = if a.severity == Severity::Invalid {
            "invalid"
        } else {
            "reported"
        };
        let _ = writeln!(body, "{} ({sev}): {}", a.name, a.count);
        for (k, n) in &a.categories {
            let _ = writeln!(body, "  {k}: {n}");
        }
        for e in &a.evidence {
            let _ = writeln!(body, "  {}", evidence_line(e));
        }
    }
    for n in &v.notes {
        let _ = writeln!(body, "note: {n}");
    }
    body
}

/// Renders the JUnit document.
pub(crate) fn render(report: &CheckReport) -> String {
    let failures = report
        .verdicts
        .iter()
        .filter(|v| v.status == Status::Invalid)
        .count();
    let errors = report
        .verdicts
        .iter()
        .filter(|v| v.status == Status::Unknown)
        .count();
    let suite = format!("faultline.{}", report.run.run_id);
    let mut s = String::new();
    let _ = writeln!(s, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        s,
        r#"<testsuites name="faultline" tests="{}" failures="{failures}" errors="{errors}">"#,
        report.verdicts.len()
    );
    let _ = writeln!(
        s,
        r#"  <testsuite name="{}" tests="{}" failures="{failures}" errors="{errors}" skipped="0" timestamp="{}">"#,
        xml_escape(&suite),
        report.verdicts.len(),
        xml_escape(
            &utc(report.run.started_at_unix_ms)
                .replace(' ', "T")
                .replace("TUTC", "Z")
        )
    );
    let _ = writeln!(s, "    <properties>");
    for (k, v) in [
        ("run_id", report.run.run_id.clone()),
        ("adapter", report.run.adapter.clone()),
        ("status", report.status.as_str().to_string()),
        ("score", report.score.to_string()),
        ("schema_version", report.schema_version.to_string()),
    ] {
        let _ = writeln!(
            s,
            r#"      <property name="{k}" value="{}"/>"#,
            xml_escape(&v)
        );
    }
    let _ = writeln!(s, "    </properties>");
    for v in &report.verdicts {
        let _ = writeln!(
            s,
            r#"    <testcase classname="{}" name="{}" time="0">"#,
            xml_escape(&suite),
            xml_escape(&v.name)
        );
        let mut body = case_body(v);
        if v.name == crate::checkers::recovery::NAME {
            // The per-fault figures, so CI shows the outage as measured or as a lower bound.
            for (i, f) in report.recovery.faults.iter().enumerate() {
                let _ = writeln!(body, "fault {}", fault_line(f, report.faults.get(i)));
            }
        }
        match v.status {
            Status::Invalid => {
                let kind = v
                    .anomalies
                    .iter()
                    .find(|a| a.severity == Severity::Invalid)
                    .map_or("invalid", |a| a.name.as_str());
                let _ = writeln!(
                    s,
                    r#"      <failure message="{}" type="{}">{}</failure>"#,
                    xml_escape(&v.summary),
                    xml_escape(kind),
                    xml_escape(&body)
                );
            }
            Status::Unknown => {
                let _ = writeln!(
                    s,
                    r#"      <error message="{}" type="unknown">{}</error>"#,
                    xml_escape(&v.summary),
                    xml_escape(&body)
                );
            }
            Status::Valid => {
                let _ = writeln!(
                    s,
                    "      <system-out>{}</system-out>",
                    xml_escape(&format!("{}\n{body}", v.summary))
                );
            }
        }
        let _ = writeln!(s, "    </testcase>");
    }
    let _ = writeln!(s, "  </testsuite>");
    let _ = writeln!(s, "</testsuites>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            xml_escape("a<b>&\"'\u{1}\n"),
            "a&lt;b&gt;&amp;&quot;&apos;\u{fffd}\n"
        );
    }
}
