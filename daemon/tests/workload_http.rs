//! The HTTP tenant-records path through the lab's tenant gateways: kill gateway replicas
//! mid-run; the client fails over, and the history records the failed attempts and the
//! retries (same value, attempt + 1).

mod common;
mod workload_common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{can_run_lab, TestLab};
use faultline_experiments::history::{Observation, OpKind, Outcome};
use workload_common::{
    assert_read_back_complete, finish, observations, spawn_load, wait_until_loading, Files, History,
};

#[test]
fn killing_gateway_replicas_fails_over_and_records_attempts_and_retries() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    let files = Files::new(&lab, "http");
    let child = spawn_load(
        &lab,
        &files,
        &[
            "--adapter",
            "http",
            "--duration",
            "20s",
            "--rate",
            "200",
            "--tenants",
            "30",
            "--quiet",
        ],
    );
    wait_until_loading(&files, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(5));
    lab.ok(&["inject", "kill", "--service", "gateway", "--replica", "1"]);
    std::thread::sleep(Duration::from_secs(4));
    lab.ok(&["inject", "kill", "--service", "gateway", "--replica", "2"]);
    let report = finish(child);
    let history = History::read(&files.history);
    assert_eq!(history.header.adapter, "http");
    assert_eq!(
        report["summary"]["ops"].as_u64(),
        Some(history.load().count() as u64)
    );

    let kills = observations(&files.observations)
        .iter()
        .filter(|o| matches!(o, Observation::Fault { kind, fault_id, .. } if kind == "kill" && fault_id.contains("gateway/")))
        .count();
    assert_eq!(kills, 2, "both gateway kills observed");

    // Attempts of each value, in order.
    let mut attempts: BTreeMap<&str, Vec<(u32, Outcome, &str)>> = BTreeMap::new();
    for o in history.load().filter(|o| o.kind == OpKind::Write) {
        attempts
            .entry(o.value.as_deref().expect("value"))
            .or_default()
            .push((o.attempt, o.outcome, o.node.as_str()));
    }
    for list in attempts.values_mut() {
        list.sort_by_key(|a| a.0);
        let numbers: Vec<u32> = list.iter().map(|a| a.0).collect();
        assert_eq!(
            numbers,
            (1..=list.len() as u32).collect::<Vec<_>>(),
            "attempts numbered 1, 2, …"
        );
    }
    let failed_over: Vec<_> = attempts
        .iter()
        .filter(|(_, list)| {
            list.len() > 1
                && list.first().is_some_and(|a| a.1 != Outcome::Ok)
                && list.last().is_some_and(|a| a.1 == Outcome::Ok)
        })
        .collect();
    assert!(
        !failed_over.is_empty(),
        "no failed attempt followed by a successful retry"
    );
    for (value, list) in &failed_over {
        assert_ne!(
            list[0].2,
            list[list.len() - 1].2,
            "{value} retried on the same gateway: {list:?}"
        );
    }
    assert_eq!(
        report["summary"]["retries"].as_u64(),
        Some(history.load().filter(|o| o.attempt > 1).count() as u64)
    );
    // A real client gets through: nearly every logical write ends acknowledged.
    let done = attempts
        .values()
        .filter(|l| l.last().is_some_and(|a| a.1 == Outcome::Ok))
        .count();
    assert!(
        done * 100 >= attempts.len() * 99,
        "{done} of {} writes acknowledged in the end",
        attempts.len()
    );

    // Read back through each gateway: complete, and the same everywhere.
    assert_read_back_complete(&history, 3);
}
