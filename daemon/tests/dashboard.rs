//! The Grafana dashboard (`charts/faultline/dashboards/faultline-suites.json`) is valid JSON in
//! Grafana's shape, and every metric it queries is one `/metrics` exports.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use faultline_daemon::serve::metrics::{render, TargetFigures};
use faultline_experiments::schedule::{
    FaultTtr, ManualClock, Owner, RunIndex, RunRequest, RunResult, RunStatus, ScheduleFile,
    Scheduler, StopSignal, SuiteRunner,
};

struct NeverRuns;

impl SuiteRunner for NeverRuns {
    fn run(&self, _: &RunRequest, _: &StopSignal) -> RunResult {
        RunResult::error("not in this test")
    }
}

/// Every metric name `/metrics` exports when everything has a value.
fn exported_names() -> BTreeSet<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = RunIndex::open(&dir.path().join("runs.sqlite")).expect("index");
    let now = "2026-06-03T12:00:00Z".parse().expect("time");
    let id = index
        .begin_manual("az-failure", now, Owner::this_process())
        .expect("begin");
    index
        .finish(
            id,
            now,
            &RunResult {
                status: Some(RunStatus::Passed),
                score: Some(90),
                ttr: vec![FaultTtr {
                    fault_id: "f".into(),
                    kind: "partition".into(),
                    ttr_ms: Some(1000),
                    recovered: true,
                }],
                anomalies: [("recovered".to_owned(), 1)].into(),
                ..RunResult::default()
            },
        )
        .expect("finish");
    let schedule = ScheduleFile::shipped()
        .resolve("default", Path::new("."))
        .expect("shipped");
    let (scheduler, _) = Scheduler::start(
        schedule,
        index,
        Arc::new(NeverRuns),
        Arc::new(ManualClock::at(now)),
    )
    .expect("start");
    let text = render(
        &scheduler,
        &TargetFigures {
            faults_active: 0,
            background_ops: Some([("ok".to_owned(), 1)].into()),
        },
    )
    .expect("render");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn the_dashboard_is_grafana_json_over_exported_metrics() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/faultline/dashboards/faultline-suites.json");
    let text = std::fs::read_to_string(&path).expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6);
    let exported = exported_names();
    let mut queried = BTreeSet::new();
    for panel in panels {
        assert!(
            panel["gridPos"]["w"].is_u64() && panel["type"].is_string(),
            "{panel}"
        );
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("faultline_") {
                    queried.insert(word.to_owned());
                }
            }
        }
    }
    let missing: Vec<&String> = queried.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}; exported: {exported:?}"
    );
    for name in [
        "faultline_runs_total",
        "faultline_run_ttr_seconds",
        "faultline_anomalies_total",
        "faultline_faults_active",
        "faultline_background_ops_total",
        "faultline_next_run_timestamp_seconds",
    ] {
        assert!(queried.contains(name), "the dashboard shows {name}");
    }
}
