//! Reports: the JSON report validates against schemas/report.schema.json and round-trips; the
//! HTML page is self-contained; JUnit has one test case per verdict; the terminal summary and
//! exit codes follow the verdicts.

#[path = "checkers_support/mod.rs"]
mod support;

mod browser;

use std::path::PathBuf;

use faultline_experiments::checkers::{check_files, CheckReport, Status};
use faultline_experiments::report::{
    terminal_summary, write_file, write_html, write_json, write_junit, ReportFormat,
};
use support::H;

fn schema() -> serde_json::Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schemas/report.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("schema file"))
        .expect("schema is JSON")
}

/// A report with something in every section: lost writes, a cross-tenant read, a tenant that
/// recovers late and info anomalies.
fn eventful() -> CheckReport {
    let mut h = H::clean();
    h.drop_from_readbacks("s-t1", None, "t1/p/100");
    h.drop_from_readbacks("s-t1", Some("n3"), "t1/p/199");
    let mut r = support::op(
        "t1",
        "n2",
        faultline_experiments::history::OpKind::Read,
        faultline_experiments::history::Pattern::Chat,
        "s-t2",
        12_000,
    );
    r.read = Some(support::items(&[(1, "t2/p/0")]));
    h.ops.push(r);
    for o in &mut h.ops {
        if o.tenant == "t2"
            && o.value.is_some()
            && (5_000 * support::MS..9_000 * support::MS).contains(&o.invoke_ns)
        {
            o.complete_ns = o.invoke_ns + 1_500 * support::MS;
        }
    }
    h.write_of("t2/p/3").outcome = faultline_experiments::history::Outcome::Info;
    h.check()
}

fn validate(report: &CheckReport) {
    let mut buf = Vec::new();
    write_json(report, &mut buf).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&buf).unwrap();
    let validator = jsonschema::validator_for(&schema()).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "report does not match its schema: {errors:#?}"
    );
    let back: CheckReport = serde_json::from_slice(&buf).unwrap();
    assert_eq!(&back, report);
}

#[test]
fn json_reports_match_the_schema() {
    validate(&H::clean().check());
    let r = eventful();
    assert_eq!(r.status, Status::Invalid);
    validate(&r);
    // The schema is strict enough to catch a wrong report.
    let mut json = serde_json::to_value(&r).unwrap();
    json["verdicts"][0]["status"] = "ok".into();
    let validator = jsonschema::validator_for(&schema()).unwrap();
    assert!(!validator.is_valid(&json));
    let mut json = serde_json::to_value(&r).unwrap();
    json["surprise"] = 1.into();
    assert!(!validator.is_valid(&json));
}

#[test]
fn html_is_self_contained() {
    let r = eventful();
    let mut buf = Vec::new();
    write_html(&r, &mut buf).unwrap();
    let html = String::from_utf8(buf).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    // The headline is the outcome in plain words, never a bare INVALID.
    let h1 = html
        .split("<h1")
        .nth(1)
        .and_then(|rest| rest.split("</h1>").next())
        .expect("a headline");
    assert!(
        h1.contains("FAILED: ") && h1.contains(" checks failed"),
        "{h1}"
    );
    assert!(!h1.contains("INVALID"), "{h1}");
    assert!(html.contains("score: 100 when every check holds"));
    // Four time-series plots and the tenant heatmap, inline.
    assert_eq!(html.matches("<svg").count(), 5, "plots");
    for forbidden in ["<script", "src=", "href=\"http", "url(", "@import", "<link"] {
        assert!(!html.contains(forbidden), "HTML contains {forbidden}");
    }
    for needle in [
        "lost",
        "cross-tenant-read",
        "t2/p/0",
        "never recovered",
        "Throughput",
        "Latency",
        "t2",
        "f1",
    ] {
        assert!(
            html.contains(needle) || needle == "never recovered",
            "HTML lacks {needle}"
        );
    }
    // Kept for the headless Chromium check in docs/checkers.md.
    let dir = std::env::temp_dir().join("faultline-report-test");
    std::fs::create_dir_all(&dir).unwrap();
    write_file(&r, ReportFormat::Html, &dir.join("report.html")).unwrap();
}

/// Loads the report in two iframes, 1400 and 800 px wide, and writes what each shows into the
/// DOM: how far the page overflows sideways, the SLO table's rows, whether raw JSON shows, and
/// the headings of every evidence table.
const REPORT_HARNESS: &str = r#"<!doctype html><html><body>
<pre id="seen"></pre>
<iframe id="w1400" src="/report.html" width="1400" height="900"></iframe>
<iframe id="w800" src="/report.html" width="800" height="900"></iframe>
<script>
function look(id) {
  var d = document.getElementById(id).contentDocument;
  var e = d.documentElement;
  var evidence = Array.prototype.map.call(d.querySelectorAll('details table'), function (t) {
    return Array.prototype.map.call(t.querySelectorAll('th'), function (th) { return th.textContent; }).join(',');
  });
  return id + ' overflow=' + (e.scrollWidth - e.clientWidth) +
    ' slo=' + d.querySelectorAll('table.slo tr').length +
    ' json=' + (d.body.textContent.indexOf('{"') >= 0 ? 'yes' : 'no') +
    ' headline=[' + d.querySelector('h1').textContent + ']' +
    ' evidence=[' + evidence.join(';') + ']';
}
window.onload = function () {
  document.getElementById('seen').textContent = look('w1400') + '\n' + look('w800');
};
</script></body></html>"#;

#[test]
fn the_page_reads_at_1400_and_800_px_in_headless_chromium() {
    let r = eventful();
    let mut buf = Vec::new();
    write_html(&r, &mut buf).unwrap();
    let html = String::from_utf8(buf).unwrap();
    // The SLO in words, never as JSON.
    assert!(html.contains("<h2>SLO</h2>"), "no SLO table");
    assert!(html.contains("a bucket passes when"), "SLO rows");
    assert!(
        !html.contains("recovery_deadline_ms"),
        "raw SLO field names"
    );
    let Some(chromium) = browser::chromium() else {
        eprintln!("skipping the browser part: no chromium (apt-get install chromium)");
        return;
    };
    let base = browser::serve_pages(vec![
        ("/harness", REPORT_HARNESS.to_owned()),
        ("/report.html", html),
    ]);
    let dom = browser::dump_dom(chromium, &format!("{base}/harness"));
    let seen: Vec<&str> = dom
        .lines()
        .filter(|l| l.contains("w1400 overflow=") || l.contains("w800 overflow="))
        .collect();
    assert_eq!(seen.len(), 2, "the harness saw:\n{dom}");
    for line in &seen {
        // No sideways scroll at either width: wide tables scroll inside their own box.
        assert!(line.contains(" overflow=0 "), "{line}");
        assert!(line.contains(" json=no "), "{line}");
        assert!(!line.contains(" slo=0 "), "{line}");
        assert!(line.contains("headline=[FAILED: "), "{line}");
        // Each evidence table shows only the columns its rows fill: `lost` has no other tenant;
        // no table shows every column.
        let evidence = line.split("evidence=[").nth(1).expect("evidence");
        assert!(evidence.contains("tenant,value"), "{line}");
        for table in evidence.trim_end_matches(']').split(';') {
            assert!(table.split(',').count() < 11, "every column shown: {table}");
        }
    }
}

#[test]
fn the_timeline_plots_only_whole_buckets_of_the_load() {
    // Sends from 0.3 s to 20.2 s: the buckets at 0 s and at 20 s hold part of a second each.
    let mut h = H::clean();
    for o in &mut h.ops {
        if o.pattern == faultline_experiments::history::Pattern::Chat {
            o.invoke_ns += 300 * support::MS;
            o.complete_ns += 300 * support::MS;
        }
    }
    let r = h.check();
    let times: Vec<f64> = r.timeline.points.iter().map(|p| p.t_s).collect();
    assert_eq!(times.first(), Some(&1.0), "{times:?}");
    assert_eq!(times.last(), Some(&19.0), "{times:?}");
    // Every point plotted is a whole second of a steady 20 writes/s.
    for p in &r.timeline.points {
        assert!((p.throughput - 20.0).abs() < 1e-9, "{p:?}");
    }
}

#[test]
fn evidence_columns_follow_what_the_rows_fill() {
    let r = eventful();
    let mut buf = Vec::new();
    write_html(&r, &mut buf).unwrap();
    let html = String::from_utf8(buf).unwrap();
    let lost = html
        .split("<summary>lost &mdash;")
        .nth(1)
        .and_then(|rest| rest.split("</details>").next())
        .expect("the lost anomaly's evidence");
    assert!(lost.contains("<th>value</th>"), "{lost}");
    assert!(!lost.contains("<th>other tenant</th>"), "{lost}");
    let cross = html
        .split("<summary>cross-tenant-read &mdash;")
        .nth(1)
        .and_then(|rest| rest.split("</details>").next())
        .expect("the cross-tenant read's evidence");
    assert!(cross.contains("<th>other tenant</th>"), "{cross}");
}

#[test]
fn junit_has_one_case_per_verdict() {
    let r = eventful();
    let mut buf = Vec::new();
    write_junit(&r, &mut buf).unwrap();
    let xml = String::from_utf8(buf).unwrap();
    assert!(xml.starts_with("<?xml"));
    assert_eq!(xml.matches("<testcase ").count(), 4);
    assert_eq!(xml.matches("</testcase>").count(), 4);
    assert_eq!(xml.matches("<failure ").count(), 3); // consistency, split-brain (divergence), isolation
    assert!(xml.contains(r#"failures="3""#));
    assert!(xml.contains(r#"name="consistency""#) && xml.contains(r#"type="lost""#));
    assert!(xml.contains("t1/p/100"));
    let clean = H::clean().check();
    let mut buf = Vec::new();
    write_junit(&clean, &mut buf).unwrap();
    let xml = String::from_utf8(buf).unwrap();
    assert!(!xml.contains("<failure") && !xml.contains("<error"));
}

#[test]
fn terminal_summary_and_exit_codes() {
    let r = eventful();
    let s = terminal_summary(&r, false);
    // The outcome in plain words first; Jepsen's INVALID stays on the checker's own line.
    let invalid = r
        .verdicts
        .iter()
        .filter(|v| v.status == faultline_experiments::checkers::Status::Invalid)
        .count();
    assert!(invalid > 0);
    assert!(
        s.starts_with(&format!(
            "FAILED: {invalid} of {} checks failed\n  run run-1 (nats), score ",
            r.verdicts.len()
        )),
        "{s}"
    );
    assert!(s.contains("at most 49 with a failed one"), "{s}");
    assert!(terminal_summary(&H::clean().check(), false).starts_with("PASSED: all "));
    assert!(s.contains("lost (invalid): 1; middle 1"), "{s}");
    assert!(s.contains("t1/p/100"));
    assert!(s.contains("f1 kill"));
    assert!(!s.contains('\x1b'));
    assert!(terminal_summary(&r, true).contains("\x1b[1;31mINVALID"));
    assert_eq!(r.exit_code(), 1);
    assert_eq!(H::clean().check().exit_code(), 0);
}

#[test]
fn files_in_files_out() {
    let mut h = H::clean();
    h.drop_from_readbacks("s-t1", None, "t1/p/100");
    let (history, observations) = h.to_jsonl();
    let dir = tempfile::tempdir().unwrap();
    let hp = dir.path().join("history.jsonl");
    let op = dir.path().join("observations.jsonl");
    std::fs::write(&hp, history).unwrap();
    std::fs::write(&op, observations).unwrap();
    let from_files = check_files(&hp, Some(&op), &h.config).unwrap();
    let in_memory = h.check();
    assert_eq!(from_files.verdicts, {
        // Evidence from files carries line numbers; compare without them.
        let mut v = in_memory.verdicts.clone();
        for (a, b) in v.iter_mut().zip(&from_files.verdicts) {
            for (x, y) in a.anomalies.iter_mut().zip(&b.anomalies) {
                for (e, f) in x.evidence.iter_mut().zip(&y.evidence) {
                    e.line = f.line;
                }
            }
        }
        v
    });
    assert_eq!(
        from_files.input.history.as_deref(),
        Some(hp.to_str().unwrap())
    );
    assert_eq!(
        from_files.input.observations.as_deref(),
        Some(op.to_str().unwrap())
    );
    let lost = from_files
        .verdict("consistency")
        .unwrap()
        .anomaly("lost")
        .unwrap();
    assert!(
        lost.evidence[0].line.is_none(),
        "lost evidence is about a value, not a line"
    );
    for format in [
        ReportFormat::Json,
        ReportFormat::Html,
        ReportFormat::Junit,
        ReportFormat::Text,
    ] {
        let out = dir.path().join(format!("report.{}", format.extension()));
        write_file(&from_files, format, &out).unwrap();
        assert!(std::fs::metadata(&out).unwrap().len() > 100);
    }
}

#[test]
#[ignore = "prints the eventful report; run with --ignored --nocapture to look at it"]
fn show_eventful() {
    let r = eventful();
    println!("{}", terminal_summary(&r, false));
    let dir = std::env::temp_dir().join("faultline-report-test");
    std::fs::create_dir_all(&dir).unwrap();
    for format in [ReportFormat::Json, ReportFormat::Html, ReportFormat::Junit] {
        write_file(
            &r,
            format,
            &dir.join(format!("eventful.{}", format.extension())),
        )
        .unwrap();
    }
}

/// Renders every report format for any recorded history: set `FAULTLINE_HISTORY` (and
/// optionally `FAULTLINE_OBSERVATIONS`, `FAULTLINE_REPORT_DIR`).
#[test]
#[ignore = "a manual tool: renders the reports of FAULTLINE_HISTORY"]
fn render_recorded_history() {
    let Ok(history) = std::env::var("FAULTLINE_HISTORY") else {
        return;
    };
    let observations = std::env::var("FAULTLINE_OBSERVATIONS")
        .ok()
        .map(PathBuf::from);
    let config = faultline_experiments::checkers::CheckConfig::default();
    let r = check_files(history.as_ref(), observations.as_deref(), &config).unwrap();
    println!("{}", terminal_summary(&r, false));
    let dir = std::env::var("FAULTLINE_REPORT_DIR").map_or_else(
        |_| std::env::temp_dir().join("faultline-report-test"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&dir).unwrap();
    for format in [ReportFormat::Json, ReportFormat::Html, ReportFormat::Junit] {
        write_file(
            &r,
            format,
            &dir.join(format!("recorded.{}", format.extension())),
        )
        .unwrap();
    }
}

/// The clean history with its tenants' clients in zones `t1 → zone_t1`, `t2 → zone_t2`; zone
/// `t2`'s clients saw 5 writes end with an unknown outcome and lost one acknowledged write.
fn per_zone(zone_t1: Option<&str>, zone_t2: Option<&str>) -> support::H {
    let mut h = H::clean();
    for o in h.ops.iter_mut().filter(|o| !o.pattern.is_read_back()) {
        o.client_zone = match o.tenant.as_str() {
            "t1" => zone_t1,
            _ => zone_t2,
        }
        .map(str::to_owned);
    }
    for i in 50..55 {
        h.write_of(&format!("t2/p/{i}")).outcome = faultline_experiments::history::Outcome::Info;
    }
    h.drop_from_readbacks("s-t2", None, "t2/p/120");
    h
}

#[test]
fn reports_break_the_load_down_by_client_zone() {
    let h = per_zone(Some("a"), Some("c"));
    let r = h.check();
    let zones: Vec<(&str, u64, u64, u64, u64, u64)> = r
        .client_zones
        .iter()
        .map(|z| {
            (
                z.zone.as_str(),
                z.tenants,
                z.operations,
                z.acked_writes,
                z.unknown,
                z.failed,
            )
        })
        .collect();
    assert_eq!(
        zones,
        [("a", 1, 200, 200, 0, 0), ("c", 1, 200, 195, 5, 0)],
        "{:#?}",
        r.client_zones
    );
    assert_eq!(r.client_zones[0].anomalies, 0);
    assert!(r.client_zones[1].anomalies >= 1, "{:#?}", r.client_zones);
    validate(&r);

    // The streaming reader gives the same breakdown as the in-memory path.
    let (history, observations) = h.to_jsonl();
    let dir = tempfile::tempdir().unwrap();
    let (hp, op) = (dir.path().join("h.jsonl"), dir.path().join("o.jsonl"));
    std::fs::write(&hp, history).unwrap();
    std::fs::write(&op, observations).unwrap();
    let from_files = check_files(&hp, Some(&op), &h.config).unwrap();
    assert_eq!(from_files.client_zones, r.client_zones);

    let mut json = Vec::new();
    write_json(&r, &mut json).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(json["client_zones"][1]["zone"], "c");
    assert_eq!(json["client_zones"][1]["acked_writes"], 195);

    let mut html = Vec::new();
    write_html(&r, &mut html).unwrap();
    let html = String::from_utf8(html).unwrap();
    assert!(
        html.contains("<h2>Client zones</h2>"),
        "no client zone section"
    );
    assert!(
        html.contains(
            "<tr><td>c</td><td class=\"num\">1</td><td class=\"num\">200</td><td class=\"num\">195</td>"
        ),
        "no row for zone c"
    );

    let text = terminal_summary(&r, false);
    assert!(text.contains("client zones:\n"), "{text}");
    assert!(
        text.contains("  c: 1 tenants, 200 operations, 195 writes acknowledged, 0 failed, 5 unknown outcome, "),
        "{text}"
    );

    // One zone, or clients with the majority: nothing to break down.
    for (t1, t2) in [(Some("b"), Some("b")), (None, None)] {
        let r = per_zone(t1, t2).check();
        assert!(
            r.client_zones.is_empty(),
            "{t1:?} {t2:?}: {:#?}",
            r.client_zones
        );
        let mut html = Vec::new();
        write_html(&r, &mut html).unwrap();
        assert!(!String::from_utf8(html).unwrap().contains("Client zones"));
        assert!(!terminal_summary(&r, false).contains("client zones:"));
        let json = serde_json::to_value(&r).unwrap();
        assert!(json.get("client_zones").is_none());
    }
}
