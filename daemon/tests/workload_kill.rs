//! Kill a NATS server mid-run: the generator keeps going and records `fail`/`info` outcomes
//! without a gap in the history, and `ok` outcomes resume once the server is back.

mod common;
mod workload_common;

use std::time::Duration;

use common::{can_run_lab, TestLab};
use faultline_experiments::history::{Observation, OpKind, Outcome};
use faultline_experiments::workload::schedule::tenants;
use faultline_experiments::workload::WorkloadConfig;
use workload_common::{
    assert_read_back_complete, assert_summary_matches, finish, observations, spawn_load,
    wait_until_loading, Files, History,
};

#[test]
fn killing_a_nats_server_mid_run_records_failures_without_a_gap_and_ok_resumes() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    let files = Files::new(&lab, "kill");
    let child = spawn_load(
        &lab,
        &files,
        &[
            "--duration",
            "25s",
            "--rate",
            "120",
            "--tenants",
            "30",
            "--quiet",
        ],
    );
    wait_until_loading(&files, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(7));
    lab.ok(&["inject", "kill", "--service", "nats", "--replica", "1"]);
    let report = finish(child);
    let history = History::read(&files.history);

    let specs = tenants(&WorkloadConfig {
        tenants: 30,
        ..WorkloadConfig::default()
    });
    assert_summary_matches(&history, &report, |t| {
        specs
            .iter()
            .find(|s| s.id == t)
            .expect("known tenant")
            .tier
            .name()
            .to_owned()
    });

    // The kill shows in the observations (as the supervisor's restart of nats/1).
    let obs = observations(&files.observations);
    let kill_ns = obs
        .iter()
        .find_map(|o| match o {
            Observation::Fault {
                kind,
                fault_id,
                start_ns,
                ..
            } if kind == "kill" && fault_id.contains("nats/1") => Some(*start_ns),
            _ => None,
        })
        .expect("a kill fault observation for nats/1");

    // No gap: every second of the run has operations, before, during and after the kill.
    let seconds = history.per_second();
    let first = *seconds.keys().next().expect("ops");
    for s in first..first + 24 {
        assert!(
            seconds.get(&s).is_some_and(|ops| !ops.is_empty()),
            "no operation in second {s}"
        );
    }

    // The kill cost something: failed or uncertain operations around it.
    let around = |o: &&faultline_experiments::history::Operation| {
        o.invoke_ns + 3_000_000_000 >= kill_ns && o.invoke_ns <= kill_ns + 15_000_000_000
    };
    let bad = history
        .load()
        .filter(around)
        .filter(|o| o.outcome != Outcome::Ok)
        .count();
    assert!(bad > 0, "no fail/info outcome around the kill");
    for o in history.load().filter(|o| o.outcome != Outcome::Ok) {
        assert!(o.error.is_some(), "{o:?} has no error text");
    }

    // Once the server is back, writes succeed again.
    let end = history.load().map(|o| o.invoke_ns).max().expect("ops");
    let late: Vec<_> = history
        .load()
        .filter(|o| o.kind == OpKind::Write && o.invoke_ns + 5_000_000_000 >= end)
        .collect();
    let late_ok = late.iter().filter(|o| o.outcome == Outcome::Ok).count();
    assert!(
        late.len() > 50 && late_ok * 100 >= late.len() * 95,
        "{late_ok} of {} late writes ok",
        late.len()
    );

    // Nothing acknowledged was lost, and all three servers agree after the restart.
    assert_read_back_complete(&history, 3);
}
