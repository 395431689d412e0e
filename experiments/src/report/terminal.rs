//! The terminal summary.

use std::fmt::Write as _;

use crate::checkers::{CheckReport, Severity, Status};

use super::{evidence_line, fault_line, status_word};

/// Evidence lines shown per anomaly.
const SHOWN: usize = 3;

fn paint(s: &str, status: Status, color: bool) -> String {
    if !color {
        return s.to_string();
    }
    let code = match status {
        Status::Valid => "32",
        Status::Invalid => "1;31",
        Status::Unknown => "33",
    };
    format!("\x1b[{code}m{s}\x1b[0m")
}

/// One line per fault: impact, TTR, outage, worst tenant.
fn fault_lines(s: &mut String, report: &CheckReport) {
    for (f, w) in report.recovery.faults.iter().zip(&report.faults) {
        let _ = writeln!(s, "  {}", fault_line(f, Some(w)));
    }
}

/// The load by client zone, when it stood in more than one.
fn client_zone_lines(s: &mut String, report: &CheckReport) {
    if report.client_zones.is_empty() {
        return;
    }
    let _ = writeln!(s, "client zones:");
    for z in &report.client_zones {
        let _ = writeln!(
            s,
            "  {}: {} tenants, {} operations, {} writes acknowledged, {} failed, {} unknown outcome, {} anomalies",
            z.zone, z.tenants, z.operations, z.acked_writes, z.failed, z.unknown, z.anomalies
        );
    }
}

/// A plain-text summary for a terminal: the overall status and score, one line per verdict with
/// its invalid anomalies and a few pieces of evidence, recovery figures per fault, and what was
/// read. With `color`, statuses are coloured with ANSI escapes.
pub fn terminal_summary(report: &CheckReport, color: bool) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}\n  run {} ({}), score {}/100 ({}), exit {}",
        paint(&super::outcome(report), report.status, color),
        report.run.run_id,
        report.run.adapter,
        report.score,
        super::SCORE_MEANING,
        report.exit_code()
    );
    if let Some(experiment) = &report.experiment {
        for server in &experiment.system_under_test {
            let _ = writeln!(
                s,
                "  system under test: {}: {} ({})",
                server.service, server.version, server.program
            );
        }
        for fault in &experiment.faults {
            let _ = writeln!(s, "  fault: {fault}");
        }
        if let Some(reason) = &experiment.aborted {
            let _ = writeln!(s, "  ABORTED: {reason} (partial report)");
        }
    }
    for v in &report.verdicts {
        let _ = writeln!(
            s,
            "  {:<12} {:<8} {}",
            v.name,
            paint(&format!("{:<8}", status_word(v.status)), v.status, color),
            v.summary
        );
        for a in &v.anomalies {
            let cats = if a.categories.is_empty() {
                String::new()
            } else {
                let c: Vec<String> = a
                    .categories
                    .iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect();
                format!("; {}", c.join(", "))
            };
            let sev = match a.severity {
                Severity::Invalid => "invalid",
                Severity::Info => "reported",
            };
            let _ = writeln!(s, "      {} ({sev}): {}{cats}", a.name, a.count);
            if a.severity == Severity::Invalid {
                for e in a.evidence.iter().take(SHOWN) {
                    let _ = writeln!(s, "        {}", evidence_line(e));
                }
                if a.count > SHOWN as u64 {
                    let _ = writeln!(s, "        ... and {} more", a.count - SHOWN as u64);
                }
            }
        }
        for n in &v.notes {
            let _ = writeln!(s, "      note: {n}");
        }
    }
    if !report.recovery.faults.is_empty() {
        let _ = writeln!(s, "faults:");
    }
    fault_lines(&mut s, report);
    client_zone_lines(&mut s, report);
    let i = &report.input;
    let mut extra = Vec::new();
    if i.out_of_order_lines > 0 {
        extra.push(format!(
            "{} lines out of completion order",
            i.out_of_order_lines
        ));
    }
    if i.truncated_last_line {
        extra.push("last line truncated".to_string());
    }
    if i.observations_truncated_last_line {
        extra.push("observations' last line truncated".to_string());
    }
    for (k, n) in &i.defects {
        extra.push(format!("{n} {k}"));
    }
    let _ = writeln!(
        s,
        "input: {} operations, {} values, {} tenants{}{}",
        i.operations,
        i.values,
        i.tenants,
        if extra.is_empty() { "" } else { "; " },
        extra.join("; ")
    );
    s
}
