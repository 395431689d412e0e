//! A scheduled run of `faultlined serve` on a real lab is a slice of the background load: its
//! verdicts come from the background load's operations in the run's span, no second load
//! starts (the run's operations are the background load's, of its tenants; the segment was
//! neither paused nor rotated), the values the streams held when it began are judged too
//! (none falsely lost), and the background history goes on across the run.

mod common;
mod serve_common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{can_run_lab, wait_until, TestLab};
use faultline_daemon::serve::client::{self, request};
use faultline_experiments::history::{OpKind, Operation, Pattern};
use faultline_experiments::schedule::RunRow;
use serve_common::{
    background_files, live_segment, operations, token_file, trigger_and_wait, Daemon, TOKEN,
};

/// One NATS server killed 2 s into the fault phase; the supervisor restarts it. The scenario's
/// own `tenants` and `rate` do not apply: a slice is the background load's.
const SPEC: &str = "
name: quick-nats-kill
description: Kill one NATS server; the others keep serving and it comes back.
workload: {tenants: 40, rate: 100}
faults:
  - kind: kill
    selector: {service: nats, replica: random}
    start: 2s
baseline: 5s
duration: 15s
recovery_deadline: 8s
settle: 5s
slo: {max_ttr: 10s, survivable: true}
";

const SCHEDULE: &str = "
suites:
  - name: by-hand
    cron: \"0 0 1 1 *\"
    enabled: false
    scenarios: [{scenario: quick-nats-kill.yaml}]
background: {enabled: true, tenants: 6, rate: 30, rotate_every: 1h, keep_for: 1h}
";

#[test]
fn a_scheduled_run_is_a_slice_of_the_background_load() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::new();
    let root = lab.state_root().to_path_buf();
    std::fs::write(root.join("quick-nats-kill.yaml"), SPEC).expect("spec");
    let schedule = root.join("schedule.yaml");
    std::fs::write(&schedule, SCHEDULE).expect("schedule");
    let token = token_file(&lab);
    let daemon = Daemon::start(&lab, &schedule, &token);

    // The background load runs before the run: one live segment.
    let segment = live_segment(&lab, 50);
    let (row, log) = trigger_and_wait(&lab, &daemon, "by-hand");
    assert!(
        row.status.is_judged(),
        "run ended {:?}: {:?}\n{log}",
        row.status,
        row.note
    );
    assert_eq!(row.verdicts.len(), 4, "{row:?}");
    // No false `lost` or `unexpected` at the slice's start: the values the background load
    // wrote before the run are the initial state.
    assert_eq!(
        row.verdicts.get("consistency").map(String::as_str),
        Some("valid"),
        "{row:?}\n{log}"
    );
    assert!(!log.contains("pausing"), "the load was not paused:\n{log}");

    assert_the_history_is_the_backgrounds_slice(&row, &segment);
    assert_the_background_load_went_on(&lab, &row, &segment);
    let address = client::find(&root).expect("daemon").listen;
    assert_a_reload_restarts_the_load_with_new_settings(&lab, &schedule, address);
    drop(daemon);
    assert!(lab.our_rules().is_empty());
}

/// The run's history is the slice: the background load's operations, of its tenants, with a
/// read-back through each server, judged.
fn assert_the_history_is_the_backgrounds_slice(row: &RunRow, segment: &Path) {
    let dir = PathBuf::from(row.dir.as_deref().expect("dir"));
    let slice = operations(&dir.join("history.jsonl"));
    let header: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(dir.join("history.jsonl"))
            .expect("history")
            .lines()
            .next()
            .expect("header"),
    )
    .expect("json");
    assert_eq!(
        header["run_id"],
        row.run_id.clone().expect("run id").as_str()
    );
    let tenants: HashSet<&str> = slice.iter().map(|o| o.tenant.as_str()).collect();
    assert!(
        tenants.len() <= 6,
        "only the background load's 6 tenants, not the scenario's 40: {tenants:?}"
    );
    let background = operations(segment);
    let background_writes: HashSet<&str> = background
        .iter()
        .filter(|o| o.kind == OpKind::Write)
        .filter_map(|o| o.value.as_deref())
        .collect();
    let slice_writes: Vec<&str> = slice
        .iter()
        .filter(|o| o.kind == OpKind::Write)
        .filter_map(|o| o.value.as_deref())
        .collect();
    assert!(slice_writes.len() > 100, "{} writes", slice_writes.len());
    assert!(
        slice_writes.iter().all(|v| background_writes.contains(v)),
        "every write of the run is the background load's"
    );
    let read_backs = slice
        .iter()
        .filter(|o| o.pattern == Pattern::ReadBack)
        .count();
    assert_eq!(read_backs, 6 * 3, "every tenant through each of 3 servers");
    let initial_reads: Vec<&Operation> = slice
        .iter()
        .filter(|o| o.pattern == Pattern::InitialState)
        .collect();
    assert_eq!(
        initial_reads.len(),
        6 * 3,
        "the initial state of every tenant through each of 3 servers"
    );
    let held: HashSet<&str> = initial_reads
        .iter()
        .flat_map(|o| o.read.iter().flatten())
        .map(|item| item.value.as_str())
        .collect();
    assert!(
        held.len() > 50 && held.iter().all(|v| background_writes.contains(v)),
        "the streams held the background load's earlier writes: {} values",
        held.len()
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report"))
            .expect("json");
    // No false loss of the values held when the run began: each is in the read-back.
    assert!(
        report
            .to_string()
            .contains("held when the run began), none lost"),
        "the consistency verdict judged the slice's writes and the values held before"
    );
}

/// The background load goes on across the run, in the same segment: never paused, never
/// rotated, and its operations continue after the run's end.
fn assert_the_background_load_went_on(lab: &TestLab, row: &RunRow, segment: &Path) {
    let background = operations(segment);
    let ended = row.ended_at.expect("ended").timestamp_millis() as u64;
    let started = row.started_at.expect("started").timestamp_millis() as u64;
    wait_until(
        Duration::from_secs(30),
        "background operations after the run",
        || {
            operations(segment)
                .iter()
                .any(|o| o.invoke_unix_ms > ended + 1_000)
        },
    );
    assert_eq!(
        background_files(lab).len(),
        1,
        "{:?}",
        background_files(lab)
    );
    let during = background
        .iter()
        .filter(|o| (started..ended).contains(&o.invoke_unix_ms))
        .count();
    assert!(
        during > 100,
        "{during} background operations during the run"
    );
    assert!(
        background.iter().all(|o| !o.pattern.is_read_back()),
        "the slice's read-back is not in the background history"
    );
}

/// A reload with other background settings ends the segment and starts one with them.
fn assert_a_reload_restarts_the_load_with_new_settings(
    lab: &TestLab,
    schedule: &Path,
    address: std::net::SocketAddr,
) {
    std::fs::write(schedule, SCHEDULE.replace("tenants: 6", "tenants: 3")).expect("schedule");
    let answer = request(
        address,
        "POST",
        "/api/v1/schedule/reload",
        Some(TOKEN),
        None,
    )
    .expect("reload");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(
        answer.body.contains("now 3 tenants at 30 ops/s"),
        "{}",
        answer.body
    );
    wait_until(Duration::from_secs(60), "a new segment", || {
        background_files(lab)
            .iter()
            .any(|n| n.ends_with(".jsonl.gz"))
            && background_files(lab).len() == 2
    });
    let newest = background_files(lab)
        .into_iter()
        .find(|n| Path::new(n).extension().is_some_and(|e| e == "jsonl"))
        .expect("the live segment");
    let path = lab.state_root().join("background").join(newest);
    wait_until(
        Duration::from_secs(30),
        "the new segment's operations",
        || operations(&path).len() > 30,
    );
    let tenants: HashSet<String> = operations(&path).into_iter().map(|o| o.tenant).collect();
    assert!(
        !tenants.is_empty()
            && tenants
                .iter()
                .all(|t| t[1..].parse::<u32>().is_ok_and(|i| (1..=3).contains(&i))),
        "only the 3 tenants of the new settings: {tenants:?}"
    );
}
