//! Isolate a majority of the NATS servers for 10 s mid-run: no write succeeds while quorum is
//! lost, and the history shows it.

mod common;
mod workload_common;

use std::time::Duration;

use common::{can_run_lab, TestLab};
use faultline_experiments::history::{Observation, OpKind, Outcome};
use workload_common::{finish, observations, spawn_load, wait_until_loading, Files, History};

#[test]
fn no_write_succeeds_while_a_majority_of_nats_servers_is_isolated() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    let files = Files::new(&lab, "partition");
    let child = spawn_load(
        &lab,
        &files,
        &[
            "--duration",
            "30s",
            "--rate",
            "120",
            "--tenants",
            "30",
            "--quiet",
        ],
    );
    wait_until_loading(&files, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(6));
    let isolated = [lab.node_of("nats/1"), lab.node_of("nats/2")];
    lab.ok(&[
        "inject",
        "partition",
        "--isolate",
        &isolated.join(","),
        "--for",
        "10s",
    ]);
    let report = finish(child);
    let history = History::read(&files.history);
    assert_eq!(
        report["summary"]["ops"].as_u64(),
        Some(history.load().count() as u64)
    );

    let (start, end) = partition_window(&files, &isolated);

    // The rules hold from just after `start` until the deadline, start + 10 s: no write is
    // acknowledged in between.
    let (from, to) = (start + 1_000_000_000, start + 10_000_000_000);
    let during: Vec<_> = history
        .load()
        .filter(|o| o.kind == OpKind::Write && o.invoke_ns >= from && o.invoke_ns < to)
        .collect();
    assert!(
        during.len() > 300,
        "only {} writes attempted during quorum loss",
        during.len()
    );
    let acked: Vec<_> = history
        .load()
        .filter(|o| {
            o.kind == OpKind::Write
                && o.outcome == Outcome::Ok
                && o.complete_ns > from
                && o.complete_ns < to
        })
        .map(|o| (o.value.clone(), o.invoke_ns, o.complete_ns))
        .collect();
    assert!(
        acked.is_empty(),
        "writes acknowledged during quorum loss: {acked:?}"
    );
    // Writes sent in the window fail or stay uncertain; the few that end `ok` were sent just
    // before the heal and acknowledged after it.
    for o in &during {
        assert!(o.outcome != Outcome::Ok || o.complete_ns >= to, "{o:?}");
        assert!(
            o.outcome == Outcome::Ok || o.error.is_some(),
            "{o:?} has no error text"
        );
    }
    let failed = during.iter().filter(|o| o.outcome != Outcome::Ok).count();
    // Most of them: the share that ends `ok` after the heal grows with the machine's load (89%
    // failed on a busy run), so the bar leaves room; the safety claim is the empty `acked` above.
    assert!(
        failed * 4 >= during.len() * 3,
        "{failed} of {} writes in the window failed",
        during.len()
    );

    // Writes succeed again after the heal.
    let after: Vec<_> = history
        .load()
        .filter(|o| o.kind == OpKind::Write && o.invoke_ns > end + 8_000_000_000)
        .collect();
    let ok = after.iter().filter(|o| o.outcome == Outcome::Ok).count();
    assert!(
        !after.is_empty() && ok * 100 >= after.len() * 95,
        "{ok} of {} writes ok after the heal",
        after.len()
    );

    check_read_back_coverage(&history);
}

/// The partition's window on the run's clock, as the workload observed it from the ledger,
/// checked for what it says about the isolated nodes.
fn partition_window(files: &Files, isolated: &[String]) -> (u64, u64) {
    let obs = observations(&files.observations);
    let (start, end, survivable, affected) = obs
        .iter()
        .find_map(|o| match o {
            Observation::Fault {
                kind,
                start_ns,
                end_ns,
                survivable,
                affected,
                ..
            } if kind == "partition" => Some((
                *start_ns,
                end_ns.expect("healed before the run ended"),
                *survivable,
                affected.clone(),
            )),
            _ => None,
        })
        .expect("a partition fault observation");
    assert!(!survivable, "isolating 2 of 3 servers leaves no quorum");
    for node in isolated {
        assert!(affected.contains(node), "{affected:?}");
    }
    assert!(end >= start + 10_000_000_000, "held at least its 10 s");
    (start, end)
}

/// The read-back covers every tenant through every server. Whether every acknowledged write
/// survived is the checkers' verdict, not this test's: NATS 2.9 has been seen here to replace
/// a write acknowledged after the heal with one left uncertain during the partition (same
/// sequence), and one server to miss writes the others have.
fn check_read_back_coverage(history: &History) {
    let views = history.read_back();
    assert_eq!(views.len(), 3, "read back through {:?}", views.keys());
    for (node, tenants) in &views {
        assert_eq!(tenants.len(), 30, "{node}");
        assert!(
            tenants.values().all(Option::is_some),
            "a read-back through {node} failed"
        );
    }
    let acked = history.acked();
    for (node, tenants) in &views {
        let seen: std::collections::BTreeSet<&str> = tenants
            .values()
            .flatten()
            .flatten()
            .map(|(_, v)| v.as_str())
            .collect();
        let missing: Vec<&String> = acked
            .iter()
            .filter(|v| !seen.contains(v.as_str()))
            .collect();
        if !missing.is_empty() {
            eprintln!(
                "note: {} acknowledged writes missing from {node}'s read-back: {missing:?}",
                missing.len()
            );
        }
    }
}
