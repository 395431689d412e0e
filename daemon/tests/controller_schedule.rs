//! The controller's schedule against the in-memory API, with a clock the test moves: a due
//! suite becomes Experiments one at a time, each one's end lands in the run index, a Halt
//! object stops the run in progress (its Experiment is deleted) and skips due runs, and a
//! replica that stops leading leaves its Experiment to the new leader.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use faultline_daemon::controller::schedule::{ClusterSchedule, RUN_INDEX_LABEL, SUITE_LABEL};
use faultline_experiments::kubernetes::memory_api::MemoryApi;
use faultline_experiments::schedule::{load_schedule, ManualClock, RunFilter, RunRow, RunStatus};
use serde_json::{json, Value};

const FL: &str = "faultline.dev/v1alpha1";
const NS: &str = "faultline-system";
/// Generous: the machine is shared; nothing here is a timing assertion.
const WAIT: Duration = Duration::from_secs(20);

struct Harness {
    api: MemoryApi,
    runtime: tokio::runtime::Runtime,
    clock: ManualClock,
    reports: tempfile::TempDir,
}

impl Harness {
    fn new(start: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        Self {
            api: MemoryApi::new(),
            runtime,
            clock: ManualClock::at(at(start)),
            reports: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// A schedule hosted on this API, with the suite `every-minute` (`scenarios`, UTC).
    fn schedule(&self, scenarios: &[&str]) -> ClusterSchedule {
        let file = self.reports.path().join("schedule.yaml");
        let mut entries = String::new();
        for scenario in scenarios {
            entries.push_str("      - scenario: ");
            entries.push_str(scenario);
            entries.push('\n');
        }
        std::fs::write(
            &file,
            format!(
                "time_zone: UTC\nmissed_runs: skip\nsuites:\n  - name: every-minute\n    cron: \"* * * * *\"\n    scenarios:\n{entries}background:\n  enabled: false\n"
            ),
        )
        .expect("schedule file");
        let client = {
            let _entered = self.runtime.enter();
            self.api.client()
        };
        ClusterSchedule::new(
            client,
            self.runtime.handle().clone(),
            NS,
            self.reports.path(),
            load_schedule(&file).expect("schedule parses"),
            Arc::new(self.clock.clone()),
            Duration::from_millis(50),
            Duration::from_secs(5),
        )
    }

    fn experiments(&self) -> Vec<Value> {
        self.api.list(FL, "experiments")
    }

    /// Steps `schedule` (leading) until `condition` holds.
    fn step_until(
        &self,
        schedule: &mut ClusterSchedule,
        what: &str,
        mut condition: impl FnMut(&Self) -> bool,
    ) -> Vec<String> {
        let start = Instant::now();
        let mut lines = Vec::new();
        loop {
            lines.extend(schedule.step(true));
            if condition(self) {
                return lines;
            }
            assert!(
                start.elapsed() < WAIT,
                "{what}: not within {WAIT:?}; log:\n{}",
                lines.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes the status a runner writes at the end of a run.
    fn finish(&self, experiment: &Value, status: Value) {
        let mut object = experiment.clone();
        object["status"] = status;
        self.api.put(object);
    }
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().expect("time")
}

fn name(object: &Value) -> String {
    object["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned()
}

fn rows(index_path: &Path) -> Vec<RunRow> {
    let index = faultline_experiments::schedule::RunIndex::open(index_path).expect("index");
    let mut rows = index.list(&RunFilter::default()).expect("rows");
    rows.sort_by_key(|r| r.id);
    rows
}

#[test]
fn a_due_suite_runs_as_experiments_one_at_a_time_and_lands_in_the_index() {
    let h = Harness::new("2026-12-07T01:59:30Z");
    let mut schedule = h.schedule(&["pod-failure", "node-failure"]);
    let lines = schedule.step(true);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("leading: started the schedule")),
        "{lines:?}"
    );
    assert!(h.experiments().is_empty(), "nothing is due yet");

    h.clock.set(at("2026-12-07T02:00:00Z"));
    h.step_until(&mut schedule, "the first Experiment", |h| {
        !h.experiments().is_empty()
    });
    let first = h.experiments().remove(0);
    assert_eq!(first["metadata"]["namespace"], NS);
    assert!(
        name(&first).starts_with("every-minute-pod-failure-"),
        "{first}"
    );
    assert_eq!(first["metadata"]["labels"][SUITE_LABEL], "every-minute");
    assert!(first["metadata"]["labels"][RUN_INDEX_LABEL].is_string());
    assert_eq!(
        first["spec"]["target"], "kubernetes",
        "catalog specs run on the cluster"
    );
    assert_eq!(first["spec"]["name"], "pod-failure");

    // One at a time: the second scenario waits while the first runs.
    for _ in 0..10 {
        schedule.step(true);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(h.experiments().len(), 1, "the second waits for the first");

    h.finish(
        &first,
        json!({"phase": "Succeeded", "verdict": "valid", "score": 97, "exitCode": 0,
               "runId": "pod-failure-20261207T020000",
               "verdicts": [{"name": "recovery", "status": "valid", "summary": "ok"}]}),
    );
    h.step_until(&mut schedule, "the second Experiment", |h| {
        h.experiments().len() == 2
    });
    let second = h
        .experiments()
        .into_iter()
        .find(|e| name(e) != name(&first))
        .expect("second");
    assert_eq!(second["spec"]["name"], "node-failure");
    h.finish(
        &second,
        json!({"phase": "Failed", "verdict": "invalid", "score": 40, "exitCode": 1,
               "message": "consistency: invalid",
               "verdicts": [{"name": "consistency", "status": "invalid", "summary": "2 lost"}]}),
    );
    h.step_until(&mut schedule, "both runs judged", |_| {
        rows(&schedule_index(&h))
            .iter()
            .all(|r| r.status.is_final())
    });

    let rows = rows(&schedule_index(&h));
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].scenario, "pod-failure");
    assert_eq!(rows[0].suite.as_deref(), Some("every-minute"));
    assert_eq!(rows[0].status, RunStatus::Passed);
    assert_eq!(rows[0].score, Some(97));
    assert_eq!(
        rows[0].run_id.as_deref(),
        Some("pod-failure-20261207T020000")
    );
    assert_eq!(rows[0].verdicts["recovery"], "valid");
    assert_eq!(rows[1].scenario, "node-failure");
    assert_eq!(rows[1].status, RunStatus::Failed);
    assert_eq!(rows[1].exit_code, Some(1));
    assert!(
        rows[1]
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("consistency: invalid"),
        "{:?}",
        rows[1].note
    );
}

fn schedule_index(h: &Harness) -> std::path::PathBuf {
    faultline_experiments::schedule::RunIndex::default_path(h.reports.path())
}

#[test]
fn a_halt_object_stops_the_run_deletes_its_experiment_and_skips_due_runs() {
    let h = Harness::new("2026-12-07T01:59:50Z");
    let mut schedule = h.schedule(&["pod-failure"]);
    schedule.step(true);
    h.clock.set(at("2026-12-07T02:00:00Z"));
    h.step_until(&mut schedule, "the Experiment", |h| {
        !h.experiments().is_empty()
    });

    h.api.put(
        json!({"apiVersion": FL, "kind": "Halt", "metadata": {"name": "halt"},
                     "spec": {"reason": "incident 42", "requestedBy": "sre"}}),
    );
    let lines = h.step_until(&mut schedule, "the Experiment deleted", |h| {
        h.experiments().is_empty()
    });
    assert!(
        lines.iter().any(|l| l.contains("Halt halt exists")),
        "{lines:?}"
    );
    h.step_until(&mut schedule, "the run recorded", |h| {
        rows(&schedule_index(h))[0].status.is_final()
    });
    let row = rows(&schedule_index(&h)).remove(0);
    assert_eq!(row.status, RunStatus::Aborted);
    let note = row.note.unwrap_or_default();
    assert!(note.contains("Halt halt exists"), "{note}");
    assert!(note.contains("deleted experiment"), "{note}");

    // Due while halted: recorded as skipped, and no Experiment appears.
    h.clock.set(at("2026-12-07T02:01:00Z"));
    h.step_until(&mut schedule, "the due run skipped", |h| {
        rows(&schedule_index(h)).len() == 2
    });
    assert_eq!(rows(&schedule_index(&h))[1].status, RunStatus::Skipped);
    assert!(h.experiments().is_empty());

    h.api.remove(FL, "halts", None, "halt");
    let lines = schedule.step(true);
    assert!(lines.iter().any(|l| l.starts_with("resumed")), "{lines:?}");
    h.clock.set(at("2026-12-07T02:02:00Z"));
    h.step_until(&mut schedule, "runs again after the Halt is gone", |h| {
        !h.experiments().is_empty()
    });
}

#[test]
fn a_replica_that_stops_leading_leaves_its_experiment_to_the_new_leader() {
    let h = Harness::new("2026-12-07T01:59:50Z");
    let mut old_leader = h.schedule(&["pod-failure"]);
    old_leader.step(true);
    h.clock.set(at("2026-12-07T02:00:00Z"));
    h.step_until(&mut old_leader, "the Experiment", |h| {
        !h.experiments().is_empty()
    });

    let lines = old_leader.step(false);
    assert!(lines.iter().any(|l| l.contains("not leading")), "{lines:?}");
    assert_eq!(h.experiments().len(), 1, "the Experiment goes on");
    let row = rows(&schedule_index(&h)).remove(0);
    assert_eq!(row.status, RunStatus::Aborted);
    assert!(
        row.note
            .as_deref()
            .unwrap_or_default()
            .contains("lost the lease; experiment faultline-system/every-minute-pod-failure-"),
        "{:?}",
        row.note
    );
    // A follower does nothing, even when a suite is due.
    h.clock.set(at("2026-12-07T02:01:00Z"));
    assert!(old_leader.step(false).is_empty());
    assert_eq!(rows(&schedule_index(&h)).len(), 1);

    // The new leader reads the same index from the report volume and goes on with the schedule
    // (missed_runs: skip records the minute it missed).
    let mut new_leader = h.schedule(&["pod-failure"]);
    new_leader.step(true);
    h.clock.set(at("2026-12-07T02:02:00Z"));
    h.step_until(&mut new_leader, "the new leader's Experiment", |h| {
        h.experiments().len() == 2
    });
    assert!(rows(&schedule_index(&h)).len() >= 2);
}
