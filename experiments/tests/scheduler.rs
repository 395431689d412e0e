//! The scheduler driven by a controllable clock: cron in real zones across daylight-saving
//! changes, one run at a time, missed runs, blackouts, halt, reload and crash leftovers. The
//! target is a fake runner that holds each run until the test releases or stops it; nothing
//! sleeps for the schedule's sake.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use faultline_experiments::schedule::{
    Event, ManualClock, Owner, RunFilter, RunIndex, RunRequest, RunResult, RunStatus, Schedule,
    ScheduleFile, Scheduler, StopSignal, SuiteRunner, Trigger,
};

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect(text)
        .with_timezone(&Utc)
}

fn schedule(yaml: &str) -> Schedule {
    ScheduleFile::parse(yaml, "test.yaml")
        .expect("parse")
        .resolve("test.yaml", Path::new("."))
        .expect("resolve")
}

#[derive(Default)]
struct FakeState {
    started: Vec<(i64, String, String)>,
    release: BTreeMap<i64, RunStatus>,
    active: usize,
    max_active: usize,
    stopped: Vec<(i64, String)>,
}

/// Holds each run until [`FakeRunner::release`] or a stop; counts concurrent runs.
#[derive(Default)]
struct FakeRunner {
    state: Mutex<FakeState>,
    changed: Condvar,
}

impl FakeRunner {
    fn release(&self, id: i64, status: RunStatus) {
        self.state.lock().expect("state").release.insert(id, status);
        self.changed.notify_all();
    }

    fn started(&self) -> Vec<(i64, String, String)> {
        self.state.lock().expect("state").started.clone()
    }
}

impl SuiteRunner for FakeRunner {
    fn run(&self, request: &RunRequest, stop: &StopSignal) -> RunResult {
        let mut state = self.state.lock().expect("state");
        state.started.push((
            request.index_id,
            request.suite.clone(),
            request.entry.scenario.clone(),
        ));
        state.active += 1;
        state.max_active = state.max_active.max(state.active);
        let status = loop {
            if let Some(status) = state.release.remove(&request.index_id) {
                break status;
            }
            if stop.is_stopped() {
                state
                    .stopped
                    .push((request.index_id, stop.reason().unwrap_or_default()));
                break RunStatus::Aborted;
            }
            state = self
                .changed
                .wait_timeout(state, Duration::from_millis(5))
                .expect("wait")
                .0;
        };
        state.active -= 1;
        RunResult {
            run_id: Some(format!("{}-{}", request.entry.scenario, request.index_id)),
            status: Some(status),
            exit_code: Some(u8::from(status != RunStatus::Passed) * 2),
            score: Some(90),
            ..RunResult::default()
        }
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    index_path: std::path::PathBuf,
    clock: ManualClock,
    runner: Arc<FakeRunner>,
    scheduler: Scheduler,
    events: Vec<Event>,
}

impl Harness {
    fn new(yaml: &str, at: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let index_path = RunIndex::default_path(dir.path());
        let clock = ManualClock::at(utc(at));
        let runner = Arc::new(FakeRunner::default());
        let (scheduler, events) = Scheduler::start(
            schedule(yaml),
            RunIndex::open(&index_path).expect("index"),
            runner.clone(),
            Arc::new(clock.clone()),
        )
        .expect("start");
        Self {
            _dir: dir,
            index_path,
            clock,
            runner,
            scheduler,
            events,
        }
    }

    /// Stops this scheduler (as a crash would: no shutdown) and starts another on the same
    /// index at `at`.
    fn restart_at(&mut self, yaml: &str, at: &str) {
        self.clock.set(utc(at));
        let (scheduler, events) = Scheduler::start(
            schedule(yaml),
            RunIndex::open(&self.index_path).expect("index"),
            self.runner.clone(),
            Arc::new(self.clock.clone()),
        )
        .expect("restart");
        self.scheduler = scheduler;
        self.events = events;
    }

    fn tick(&mut self) -> Vec<Event> {
        let events = self.scheduler.tick().expect("tick");
        self.events.extend(events.clone());
        events
    }

    /// Moves the clock forward in `step`s until `until`, ticking after each.
    fn run_clock(&mut self, until: &str, step: Duration) {
        let until = utc(until);
        while self.clock_now() < until {
            self.clock.advance(step);
            self.tick();
        }
    }

    fn clock_now(&self) -> DateTime<Utc> {
        use faultline_experiments::schedule::Clock as _;
        self.clock.now()
    }

    /// Ends run `id` with `status` and lets the scheduler record it.
    fn finish(&mut self, id: i64, status: RunStatus) -> Vec<Event> {
        self.runner.release(id, status);
        assert!(
            self.scheduler.wait_running(Duration::from_secs(10)),
            "run {id} did not end"
        );
        self.tick()
    }

    fn rows(&self) -> Vec<faultline_experiments::schedule::RunRow> {
        let mut rows = self
            .scheduler
            .index()
            .list(&RunFilter::default())
            .expect("list");
        rows.reverse();
        rows
    }

    fn statuses(&self) -> Vec<(String, RunStatus)> {
        self.rows()
            .into_iter()
            .map(|r| {
                (
                    format!("{}/{}", r.suite.unwrap_or_default(), r.scenario),
                    r.status,
                )
            })
            .collect()
    }
}

const TWO_SUITES: &str = "
time_zone: Europe/Berlin
suites:
  - name: nightly
    cron: \"0 2 * * *\"
    scenarios: [{scenario: pod-failure}, {scenario: node-failure}]
  - name: weekly
    cron: \"0 2 * * 0\"
    scenarios: [{scenario: az-failure}]
";

#[test]
fn suites_that_come_due_together_queue_and_run_one_at_a_time() {
    use RunStatus::{Passed, Queued, Running};
    // Sunday 2026-06-07, 01:59 in Berlin (CEST, UTC+2).
    let mut h = Harness::new(TWO_SUITES, "2026-06-06T23:59:00Z");
    assert!(h.tick().is_empty());
    h.clock.advance(Duration::from_secs(60));
    h.tick();
    assert_eq!(
        h.statuses(),
        [
            ("nightly/pod-failure".into(), Running),
            ("nightly/node-failure".into(), Queued),
            ("weekly/az-failure".into(), Queued),
        ]
    );
    let ids: Vec<i64> = h.rows().iter().map(|r| r.id).collect();
    h.finish(ids[0], Passed);
    h.finish(ids[1], RunStatus::Failed);
    assert_eq!(h.rows()[2].status, Running);
    h.finish(ids[2], Passed);
    assert_eq!(
        h.statuses().iter().map(|s| s.1).collect::<Vec<_>>(),
        [Passed, RunStatus::Failed, Passed]
    );
    let state = h.runner.state.lock().expect("state");
    assert_eq!(state.max_active, 1, "never two experiments at once");
    let order: Vec<&str> = state.started.iter().map(|s| s.2.as_str()).collect();
    assert_eq!(order, ["pod-failure", "node-failure", "az-failure"]);
    drop(state);
    let row = h
        .scheduler
        .index()
        .get(&ids[0].to_string())
        .expect("get")
        .expect("row");
    assert_eq!(row.trigger, "schedule");
    assert_eq!(row.due_at, Some(utc("2026-06-07T00:00:00Z")));
    assert_eq!(
        row.run_id.as_deref(),
        Some(format!("pod-failure-{}", ids[0]).as_str())
    );
}

#[test]
fn a_suite_due_again_while_its_run_is_still_queued_is_skipped_not_stacked() {
    let yaml = "
suites:
  - name: often
    cron: \"* * * * *\"
    scenarios: [{scenario: pod-failure}]
  - name: hourly
    cron: \"0 * * * *\"
    scenarios: [{scenario: az-failure}]
";
    let mut h = Harness::new(yaml, "2026-06-07T09:59:30Z");
    // 10:00: both due; `often` runs, `hourly` waits. Then `often` comes due every minute while
    // its own run goes on: each is queued once, later ones skipped while one waits.
    h.run_clock("2026-06-07T10:03:30Z", Duration::from_secs(30));
    let rows = h.rows();
    let summary: Vec<(String, RunStatus)> = h.statuses();
    assert_eq!(summary[0], ("often/pod-failure".into(), RunStatus::Running));
    assert_eq!(summary[1], ("hourly/az-failure".into(), RunStatus::Queued));
    assert_eq!(summary[2], ("often/pod-failure".into(), RunStatus::Queued));
    assert!(
        summary[3..].iter().all(|s| s.1 == RunStatus::Skipped),
        "{summary:?}"
    );
    assert_eq!(
        summary.len(),
        5,
        "10:01 queued, 10:02 and 10:03 skipped: {summary:?}"
    );
    assert!(rows[3]
        .note
        .as_deref()
        .is_some_and(|n| n.contains("still queued")));
}

/// Steps the clock through three nights around a daylight-saving change and returns the due
/// times of the runs queued.
fn due_times_over(zone: &str, cron: &str, from: &str, until: &str) -> Vec<String> {
    let yaml = format!(
        "time_zone: {zone}\nsuites:\n  - name: nightly\n    cron: \"{cron}\"\n    scenarios: [{{scenario: pod-failure}}]\n"
    );
    let mut h = Harness::new(&yaml, from);
    let until = utc(until);
    while h.clock_now() < until {
        h.clock.advance(Duration::from_secs(120));
        for event in h.tick() {
            if let Event::Started { id, .. } = event {
                h.finish(id, RunStatus::Passed);
            }
        }
    }
    h.rows()
        .iter()
        .map(|r| r.due_at.expect("due").to_rfc3339())
        .collect()
}

#[test]
fn berlin_spring_forward_runs_the_missing_time_once() {
    let due = due_times_over(
        "Europe/Berlin",
        "30 2 * * *",
        "2026-03-28T00:00:00Z",
        "2026-03-31T00:00:00Z",
    );
    assert_eq!(
        due,
        [
            "2026-03-28T01:30:00+00:00",
            "2026-03-29T01:00:00+00:00", // 02:30 does not exist: 03:00 CEST, once
            "2026-03-30T00:30:00+00:00",
        ]
    );
}

#[test]
fn berlin_fall_back_runs_the_doubled_time_once() {
    let due = due_times_over(
        "Europe/Berlin",
        "30 2 * * *",
        "2026-10-24T00:00:00Z",
        "2026-10-27T00:00:00Z",
    );
    assert_eq!(
        due,
        [
            "2026-10-24T00:30:00+00:00",
            "2026-10-25T00:30:00+00:00", // 02:30 happens twice: only the first
            "2026-10-26T01:30:00+00:00",
        ]
    );
}

#[test]
fn new_york_spring_forward_and_fall_back_run_once_a_night() {
    let due = due_times_over(
        "America/New_York",
        "30 2 * * *",
        "2026-03-07T00:00:00Z",
        "2026-03-10T00:00:00Z",
    );
    assert_eq!(
        due,
        [
            "2026-03-07T07:30:00+00:00",
            "2026-03-08T07:00:00+00:00", // 02:30 does not exist: 03:00 EDT, once
            "2026-03-09T06:30:00+00:00",
        ]
    );
    let due = due_times_over(
        "America/New_York",
        "30 1 * * *",
        "2026-10-31T00:00:00Z",
        "2026-11-03T00:00:00Z",
    );
    assert_eq!(
        due,
        [
            "2026-10-31T05:30:00+00:00",
            "2026-11-01T05:30:00+00:00", // 01:30 happens twice: only the first
            "2026-11-02T06:30:00+00:00",
        ]
    );
}

const NIGHTLY_RUN_ONCE: &str = "
suites:
  - name: nightly
    cron: \"0 2 * * *\"
    scenarios: [{scenario: pod-failure}, {scenario: node-failure}]
";

#[test]
fn missed_runs_run_once_queues_the_most_recent_once() {
    let mut h = Harness::new(NIGHTLY_RUN_ONCE, "2026-06-01T12:00:00Z");
    h.tick();
    // Down from Monday noon to Thursday noon: three nights missed.
    h.restart_at(NIGHTLY_RUN_ONCE, "2026-06-04T12:00:00Z");
    let rows = h.rows();
    assert_eq!(
        rows.len(),
        2,
        "one run of each scenario, not three: {rows:?}"
    );
    for row in &rows {
        assert_eq!(row.trigger, Trigger::Missed.as_str());
        assert_eq!(row.due_at, Some(utc("2026-06-04T02:00:00Z")));
        let note = row.note.as_deref().unwrap_or_default();
        assert!(
            note.contains("3 missed occurrences") && note.contains("missed_runs: run-once"),
            "{note}"
        );
    }
    h.tick();
    assert_eq!(h.rows()[0].status, RunStatus::Running);
    // A second restart the same day does not run it again.
    h.restart_at(NIGHTLY_RUN_ONCE, "2026-06-04T13:00:00Z");
    assert_eq!(h.rows().len(), 2);
}

#[test]
fn missed_runs_skip_records_the_skip_and_runs_nothing() {
    let yaml = NIGHTLY_RUN_ONCE.replace("suites:", "missed_runs: skip\nsuites:");
    let mut h = Harness::new(&yaml, "2026-06-01T12:00:00Z");
    h.restart_at(&yaml, "2026-06-03T12:00:00Z");
    h.tick();
    let rows = h.rows();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row.status, RunStatus::Skipped);
        assert!(row
            .note
            .as_deref()
            .is_some_and(|n| n.contains("missed_runs: skip")));
    }
    assert!(h.runner.started().is_empty());
    // The schedule resumes: the next night runs.
    h.run_clock("2026-06-04T02:01:00Z", Duration::from_secs(600));
    assert_eq!(h.rows()[2].status, RunStatus::Running);
}

#[test]
fn a_run_left_running_by_a_dead_daemon_is_aborted_at_restart_and_the_schedule_resumes() {
    let mut h = Harness::new(NIGHTLY_RUN_ONCE, "2026-06-01T01:59:00Z");
    // A run of a daemon that was killed: its owner process is gone.
    let index = RunIndex::open(&h.index_path).expect("index");
    let id = index
        .queue(
            Some("nightly"),
            "pod-failure",
            Trigger::Schedule,
            None,
            utc("2026-05-31T02:00:00Z"),
            None,
        )
        .expect("queue");
    index
        .start(
            id,
            utc("2026-05-31T02:00:00Z"),
            Owner {
                pid: i32::MAX,
                start_ticks: 1,
            },
        )
        .expect("start");
    h.restart_at(NIGHTLY_RUN_ONCE, "2026-06-01T01:59:00Z");
    assert!(
        h.events.contains(&Event::Orphaned { ids: vec![id] }),
        "{:?}",
        h.events
    );
    let row = index.get(&id.to_string()).expect("get").expect("row");
    assert_eq!(row.status, RunStatus::Aborted);
    h.run_clock("2026-06-01T02:00:00Z", Duration::from_secs(60));
    assert_eq!(h.rows().last().map(|r| r.status), Some(RunStatus::Queued));
    assert!(h.rows().iter().any(|r| r.status == RunStatus::Running));
}

const WITH_BLACKOUT: &str = "
suites:
  - name: hourly
    cron: \"0 * * * *\"
    scenarios: [{scenario: pod-failure}]
blackouts:
  - {name: business-hours, cron: \"0 9 * * 1-5\", duration: 8h}
";

#[test]
fn a_blackout_stops_the_running_run_and_skips_what_comes_due_during_it() {
    // Monday 2026-06-01 07:59 UTC.
    let mut h = Harness::new(WITH_BLACKOUT, "2026-06-01T07:59:00Z");
    h.run_clock("2026-06-01T08:00:00Z", Duration::from_secs(60));
    let first = h.rows()[0].id;
    assert_eq!(h.rows()[0].status, RunStatus::Running);
    // 09:00: the blackout starts while the 08:00 run still goes on; the 09:00 run is skipped.
    h.run_clock("2026-06-01T09:00:00Z", Duration::from_secs(60));
    assert!(h.scheduler.wait_running(Duration::from_secs(10)));
    h.tick();
    let rows = h.rows();
    assert_eq!(rows[0].status, RunStatus::Aborted);
    let note = rows[0].note.clone().unwrap_or_default();
    assert!(
        note.contains("blackout business-hours began") && note.contains("healed"),
        "{note}"
    );
    assert_eq!(h.runner.state.lock().expect("state").stopped[0].0, first);
    assert_eq!(rows[1].status, RunStatus::Skipped);
    assert!(rows[1]
        .note
        .as_deref()
        .is_some_and(|n| n.contains("during blackout business-hours")));
    // Nothing starts during the blackout, even when triggered by hand; it starts at 17:00.
    h.scheduler.trigger("hourly").expect("trigger");
    h.run_clock("2026-06-01T16:50:00Z", Duration::from_secs(600));
    assert_eq!(h.runner.started().len(), 1);
    assert!(h.scheduler.status().expect("status").blackout.is_some());
    h.run_clock("2026-06-01T17:00:00Z", Duration::from_secs(60));
    let triggered = h
        .rows()
        .into_iter()
        .find(|r| r.trigger == "api")
        .expect("triggered");
    assert_eq!(
        triggered.status,
        RunStatus::Running,
        "the triggered run starts when the blackout ends"
    );
}

#[test]
fn halt_stops_the_run_and_blocks_runs_until_resume() {
    let mut h = Harness::new(NIGHTLY_RUN_ONCE, "2026-06-01T01:59:00Z");
    h.run_clock("2026-06-01T02:00:00Z", Duration::from_secs(60));
    let running = h.scheduler.halt("operator");
    assert_eq!(running, Some(h.rows()[0].id));
    assert!(h.scheduler.wait_running(Duration::from_secs(10)));
    h.tick();
    h.run_clock("2026-06-02T02:00:00Z", Duration::from_secs(3600));
    let statuses: Vec<RunStatus> = h.rows().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            RunStatus::Aborted,
            RunStatus::Queued,
            RunStatus::Skipped,
            RunStatus::Skipped
        ]
    );
    assert!(h.rows()[2]
        .note
        .as_deref()
        .is_some_and(|n| n.contains("halted")));
    h.scheduler.resume();
    h.tick();
    assert_eq!(h.rows()[1].status, RunStatus::Running);
}

#[test]
fn trigger_reload_and_next_runs() {
    let mut h = Harness::new(TWO_SUITES, "2026-06-03T12:00:00Z");
    assert!(h.scheduler.trigger("nope").is_err());
    let ids = h.scheduler.trigger("weekly").expect("trigger");
    assert_eq!(ids.len(), 1);
    h.tick();
    assert_eq!(h.rows()[0].trigger, "api");
    let next = h.scheduler.next_runs();
    assert_eq!(next[0].suite, "nightly");
    assert_eq!(next[0].at, Some(utc("2026-06-04T00:00:00Z")));
    assert_eq!(next[1].at, Some(utc("2026-06-07T00:00:00Z")));
    // Reload: nightly moves to 04:00 Berlin, weekly is unchanged, a new suite appears.
    let changed = TWO_SUITES.replace("\"0 2 * * *\"", "\"0 4 * * *\"")
        + "  - name: extra\n    cron: \"0 5 * * *\"\n    scenarios: [{scenario: gateway-failure}]\n";
    h.scheduler.reload(schedule(&changed));
    let next: BTreeMap<String, Option<DateTime<Utc>>> = h
        .scheduler
        .next_runs()
        .into_iter()
        .map(|n| (n.suite, n.at))
        .collect();
    assert_eq!(next["nightly"], Some(utc("2026-06-04T02:00:00Z")));
    assert_eq!(next["weekly"], Some(utc("2026-06-07T00:00:00Z")));
    assert_eq!(next["extra"], Some(utc("2026-06-04T03:00:00Z")));
}

#[test]
fn a_queued_run_whose_scenario_was_removed_by_a_reload_ends_as_an_error() {
    let mut h = Harness::new(TWO_SUITES, "2026-06-03T12:00:00Z");
    h.scheduler.halt("hold");
    h.scheduler.trigger("nightly").expect("trigger");
    let one_scenario = TWO_SUITES.replace(", {scenario: node-failure}", "");
    h.scheduler.reload(schedule(&one_scenario));
    h.scheduler.resume();
    h.tick();
    let first = h.rows()[0].id;
    h.finish(first, RunStatus::Passed);
    let rows = h.rows();
    assert_eq!(rows[1].status, RunStatus::Error);
    assert!(rows[1]
        .note
        .as_deref()
        .is_some_and(|n| n.contains("no scenario node-failure")));
}

/// A runner that panics: the run ends as an error and the scheduler goes on.
struct PanickingRunner;

impl SuiteRunner for PanickingRunner {
    fn run(&self, _: &RunRequest, _: &StopSignal) -> RunResult {
        panic!("the target blew up");
    }
}

#[test]
fn a_runner_that_panics_leaves_an_error_row_and_the_scheduler_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::at(utc("2026-06-03T12:00:00Z"));
    let (mut scheduler, _) = Scheduler::start(
        schedule(TWO_SUITES),
        RunIndex::open(&dir.path().join("i.sqlite")).expect("index"),
        Arc::new(PanickingRunner),
        Arc::new(clock),
    )
    .expect("start");
    scheduler.trigger("nightly").expect("trigger");
    scheduler.tick().expect("tick");
    assert!(scheduler.wait_running(Duration::from_secs(10)));
    scheduler.tick().expect("tick");
    assert!(scheduler.wait_running(Duration::from_secs(10)));
    scheduler.tick().expect("tick");
    let rows = scheduler.index().list(&RunFilter::default()).expect("list");
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter().all(|r| r.status == RunStatus::Error),
        "{rows:?}"
    );
    assert!(rows[0]
        .note
        .as_deref()
        .is_some_and(|n| n.contains("panicked")));
}

#[test]
fn retention_removes_old_run_directories_under_the_results_root_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let results = dir.path().join("runs");
    let outside = dir.path().join("elsewhere");
    let index = RunIndex::open(&dir.path().join("i.sqlite")).expect("index");
    let mut dirs = Vec::new();
    for (i, root) in [&results, &results, &outside].iter().enumerate() {
        let run_dir = root.join(format!("run-{i}"));
        std::fs::create_dir_all(&run_dir).expect("mkdir");
        std::fs::write(run_dir.join("spec.yaml"), "x").expect("write");
        let id = index
            .begin_manual(
                "pod-failure",
                utc("2026-01-01T00:00:00Z"),
                Owner::this_process(),
            )
            .expect("begin");
        index
            .finish(
                id,
                utc("2026-01-01T00:01:00Z"),
                &RunResult {
                    status: Some(RunStatus::Passed),
                    dir: Some(run_dir.clone()),
                    ..RunResult::default()
                },
            )
            .expect("finish");
        dirs.push(run_dir);
    }
    let keep_one = "
suites:
  - {name: n, cron: \"0 2 * * *\", scenarios: [{scenario: pod-failure}]}
retention: {max_runs: 1, max_age: 3650d}
";
    let (scheduler, _) = Scheduler::start(
        schedule(keep_one),
        index,
        Arc::new(FakeRunner::default()),
        Arc::new(ManualClock::at(utc("2026-01-02T00:00:00Z"))),
    )
    .expect("start");
    let mut scheduler = scheduler.with_results_root(results.clone());
    let events = scheduler.tick().expect("tick");
    assert!(events.contains(&Event::Pruned { runs: 2 }), "{events:?}");
    assert!(
        !dirs[0].exists() && !dirs[1].exists(),
        "pruned directories are removed"
    );
    assert!(dirs[2].exists(), "the newest run is kept");
    assert_eq!(
        scheduler
            .index()
            .list(&RunFilter::default())
            .expect("list")
            .len(),
        1
    );
}
