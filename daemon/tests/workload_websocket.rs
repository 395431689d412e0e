//! Chat over WebSocket in the lab (`chaosctl load --adapter http --chat websocket`): every
//! chat session holds one socket to the gateway; cutting that gateway off shows as lost
//! sockets and refused or timed-out connects, then working sockets again, and the recovery
//! verdict's TTR is the time to a working socket. With per-zone clients, stopping one zone's
//! gateway fails only that zone's connects, which reconnect elsewhere and then home again.

mod common;
mod workload_common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{can_run_lab, TestLab};
use faultline_experiments::history::{Observation, OpKind, Outcome, Pattern};
use workload_common::{finish, observations, spawn_load, wait_until_loading, Files, History};

const SECOND: u64 = 1_000_000_000;

#[test]
#[allow(clippy::too_many_lines)] // one scenario, asserted step by step
fn cutting_off_the_gateway_of_the_sessions_fails_their_sockets_until_one_works_again() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    // Every session goes to the gateway of zone c, which the partition cuts off from the
    // clients (they stand with the majority, zones a and b).
    let status = lab.status();
    let gateway = status["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| {
            s["replica"]
                .as_str()
                .is_some_and(|r| r.starts_with("gateway"))
                && s["node"].as_str().is_some_and(|n| n.starts_with('c'))
        })
        .unwrap_or_else(|| panic!("no gateway in zone c: {status}"));
    let node = gateway["node"].as_str().expect("node").to_owned();
    let url = format!(
        "http://{}",
        gateway["endpoints"]["http"]
            .as_str()
            .expect("http endpoint")
    );
    let files = Files::new(&lab, "websocket");
    let child = spawn_load(
        &lab,
        &files,
        &[
            "--adapter",
            "http",
            "--chat",
            "websocket",
            "--gateway",
            &url,
            "--lab",
            &lab.name,
            "--duration",
            "30s",
            "--tenants",
            "20",
            "--rate",
            "40",
            "--quiet",
            "--no-read-back",
        ],
    );
    wait_until_loading(&files, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(8));
    lab.ok(&["inject", "partition", "--zone", "c", "--for", "6s"]);
    let report = finish(child);
    let history = History::read(&files.history);
    assert_eq!(
        report["summary"]["ops"].as_u64(),
        Some(history.load().count() as u64)
    );
    let (start, end) = observations(&files.observations)
        .iter()
        .find_map(|o| match o {
            Observation::Fault {
                kind,
                start_ns,
                end_ns,
                ..
            } if kind == "partition" => Some((*start_ns, end_ns.expect("healed"))),
            _ => None,
        })
        .expect("the partition's fault window");
    // The kernel expires the partition's rules after 6 s, a little before the ledger shows it
    // healed; within 5 s of its start it certainly holds.
    let cut_until = start + 5 * SECOND;

    // Every chat operation names the gateway's node (from the upgrade or the reply), and the
    // sockets were opened: before the cut, all of them worked.
    let chat: Vec<_> = history
        .load()
        .filter(|o| o.pattern == Pattern::Chat)
        .collect();
    assert!(chat.iter().all(|o| o.node == node), "all through {node}");
    let connects: Vec<_> = chat.iter().filter(|o| o.kind == OpKind::Connect).collect();
    assert!(
        connects.iter().all(|o| o.value.is_none()),
        "a connect carries no value"
    );
    let before: Vec<_> = connects.iter().filter(|o| o.invoke_ns < start).collect();
    assert!(before.len() >= 5, "{} sockets before the cut", before.len());
    assert!(
        before.iter().all(|o| o.outcome == Outcome::Ok),
        "{before:#?}"
    );

    // During the cut: sockets that could not be opened (fail, with the reason), and messages
    // on sockets that were lost (their writes info, never ok).
    let failed: Vec<_> = connects
        .iter()
        .filter(|o| o.outcome == Outcome::Fail)
        .collect();
    assert!(!failed.is_empty(), "no connect failed during the cut");
    for o in &failed {
        assert!(o.error.is_some(), "{o:?}");
        assert!(
            o.invoke_ns + 4 * SECOND >= start && o.invoke_ns <= end + 4 * SECOND,
            "a connect failed away from the cut: {o:?}"
        );
        assert!(
            o.complete_ns > o.invoke_ns,
            "its latency is recorded: {o:?}"
        );
    }
    let cut_writes: Vec<_> = chat
        .iter()
        .filter(|o| o.kind == OpKind::Write && o.outcome == Outcome::Ok)
        .filter(|o| o.complete_ns >= start && o.complete_ns < cut_until)
        .collect();
    assert!(
        cut_writes.is_empty(),
        "chat writes acknowledged while cut off: {cut_writes:#?}"
    );

    // Then the sockets work again, and so do the messages on them.
    let last_failed = failed.iter().map(|o| o.invoke_ns).max().expect("failed");
    let recovered: Vec<_> = connects
        .iter()
        .filter(|o| o.invoke_ns > last_failed && o.outcome == Outcome::Ok)
        .collect();
    assert!(!recovered.is_empty(), "no working socket after the cut");
    let late_writes: Vec<_> = chat
        .iter()
        .filter(|o| o.kind == OpKind::Write && o.invoke_ns > end + 5 * SECOND)
        .collect();
    assert!(
        late_writes.len() >= 10 && late_writes.iter().all(|o| o.outcome == Outcome::Ok),
        "{late_writes:#?}"
    );

    // The recovery checker on the sockets alone: its TTR is the time to a working socket, from
    // the fault's reference to the bucket after the last one holding a failed or slow connect.
    let sockets_only = lab.state_root().join("sockets.jsonl");
    let mut text = serde_json::to_string(&history.header).expect("header");
    text.push('\n');
    for o in &connects {
        text.push_str(&serde_json::to_string(o).expect("op"));
        text.push('\n');
    }
    std::fs::write(&sockets_only, text).expect("write the sockets' history");
    let output = lab.chaosctl(&[
        "check",
        "--history",
        &sockets_only.display().to_string(),
        "--observations",
        &files.observations.display().to_string(),
        "--output",
        "json",
    ]);
    let check: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "check report: {e}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    let fault = check["recovery"]["faults"]
        .as_array()
        .expect("faults")
        .iter()
        .find(|f| f["kind"] == "partition")
        .unwrap_or_else(|| panic!("no partition in {}", check["recovery"]))
        .clone();
    assert_eq!(fault["recovered"], true, "{fault}");
    assert_eq!(fault["worst_series"], "chat/connect", "{fault}");
    assert!(fault["impacted_series"].as_u64() >= Some(1), "{fault}");
    let reference_ns = fault["reference_ns"].as_u64().expect("reference");
    let last_bad = connects
        .iter()
        .filter(|o| o.outcome != Outcome::Ok || o.complete_ns - o.invoke_ns > SECOND)
        .map(|o| o.invoke_ns)
        .max()
        .expect("a failed connect");
    // The checker's buckets are 1 s: the series pass again from the bucket after it.
    let working_ns = (last_bad / SECOND + 1) * SECOND;
    assert_eq!(
        fault["ttr_ms"].as_u64(),
        Some(working_ns.saturating_sub(reference_ns) / 1_000_000),
        "TTR is the time to a working socket: {fault}"
    );
    // The whole history is judged too, with the sockets among its series.
    let verdict = lab.check_verdict(&files.history, &files.observations, "recovery");
    assert_ne!(verdict["status"], "unknown", "{verdict}");
}

/// The recovery checker's report on a history of only `ops` (with `header`'s run).
fn recovery_of(
    lab: &TestLab,
    files: &Files,
    history: &History,
    ops: &[&faultline_experiments::history::Operation],
    name: &str,
) -> serde_json::Value {
    let path = lab.state_root().join(name);
    let mut text = serde_json::to_string(&history.header).expect("header");
    text.push('\n');
    for o in ops {
        text.push_str(&serde_json::to_string(o).expect("op"));
        text.push('\n');
    }
    std::fs::write(&path, text).expect("write the history");
    let output = lab.chaosctl(&[
        "check",
        "--history",
        &path.display().to_string(),
        "--observations",
        &files.observations.display().to_string(),
        "--output",
        "json",
    ]);
    let check: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "check report: {e}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    check["recovery"].clone()
}

#[test]
#[allow(clippy::too_many_lines)] // one scenario, asserted step by step
fn per_zone_sockets_reconnect_elsewhere_when_their_zones_gateway_is_stopped_then_come_home() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    let status = lab.status();
    let zone_of: BTreeMap<String, String> = status["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["name"].as_str().expect("name").to_owned(),
                n["zone"].as_str().expect("zone").to_owned(),
            )
        })
        .collect();
    let zones: BTreeSet<String> = zone_of.values().cloned().collect();
    // Zone a's gateway: its replica number and node.
    let (replica, node) = status["services"]
        .as_array()
        .expect("services")
        .iter()
        .find_map(|s| {
            let key = s["replica"].as_str()?.strip_prefix("gateway/")?;
            let node = s["node"].as_str()?;
            (zone_of.get(node).map(String::as_str) == Some("a"))
                .then(|| (key.to_owned(), node.to_owned()))
        })
        .unwrap_or_else(|| panic!("no gateway in zone a: {status}"));

    let files = Files::new(&lab, "websocket-per-zone");
    let child = spawn_load(
        &lab,
        &files,
        &[
            "--adapter",
            "http",
            "--chat",
            "websocket",
            "--clients",
            "per-zone",
            "--duration",
            "30s",
            "--tenants",
            "12",
            "--rate",
            "80",
            "--quiet",
        ],
    );
    wait_until_loading(&files, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(8));
    // SIGKILL, and no restart for 8 s: every connect to it in that time is refused.
    lab.ok(&[
        "inject",
        "stop",
        "--service",
        "gateway",
        "--replica",
        &replica,
        "--for",
        "8s",
    ]);
    finish(child);
    let history = History::read(&files.history);
    let (start, end) = observations(&files.observations)
        .iter()
        .find_map(|o| match o {
            Observation::Fault {
                kind,
                start_ns,
                end_ns,
                ..
            } if kind == "stop" => Some((*start_ns, end_ns.expect("ended in the run"))),
            _ => None,
        })
        .expect("the stop's fault window");

    // Every chat socket is recorded as a `connect` naming its client's zone, and every zone's
    // clients opened some; before the stop, each went to its own zone's gateway.
    let connects: Vec<_> = history
        .load()
        .filter(|o| o.pattern == Pattern::Chat && o.kind == OpKind::Connect)
        .collect();
    let mut seen = BTreeSet::new();
    for o in &connects {
        let zone = o
            .client_zone
            .clone()
            .unwrap_or_else(|| panic!("a connect without its client's zone: {o:?}"));
        assert!(zones.contains(&zone), "{o:?}");
        if o.complete_ns < start {
            assert_eq!(o.outcome, Outcome::Ok, "{o:?}");
            assert_eq!(zone_of.get(&o.node), Some(&zone), "not home: {o:?}");
        }
        seen.insert(zone);
    }
    assert_eq!(seen, zones, "every zone's clients opened sockets");

    // While it was stopped: zone a's connects to it failed (refused, with the reason), and
    // theirs only; they reconnected through another zone's gateway.
    let failed: Vec<_> = connects
        .iter()
        .filter(|o| o.outcome != Outcome::Ok)
        .collect();
    assert!(
        !failed.is_empty(),
        "no connect failed while {node} was down"
    );
    for o in &failed {
        assert_eq!(o.client_zone.as_deref(), Some("a"), "{o:?}");
        assert_eq!(o.node, node, "{o:?}");
        assert!(o.error.is_some(), "{o:?}");
        assert!(
            o.invoke_ns + SECOND >= start && o.invoke_ns <= end + 2 * SECOND,
            "a connect failed away from the stop: {o:?}"
        );
    }
    let zone_a_ok = |o: &&&faultline_experiments::history::Operation| {
        o.client_zone.as_deref() == Some("a") && o.outcome == Outcome::Ok
    };
    let elsewhere: Vec<_> = connects
        .iter()
        .filter(zone_a_ok)
        .filter(|o| o.invoke_ns >= start && o.complete_ns <= end && o.node != node)
        .collect();
    assert!(
        !elsewhere.is_empty(),
        "zone a's clients found no other gateway while {node} was down"
    );
    // After it: zone a's sockets come home again.
    let home_again = connects
        .iter()
        .filter(zone_a_ok)
        .filter(|o| o.invoke_ns > end + 2 * SECOND && o.node == node)
        .count();
    assert!(home_again > 0, "zone a's clients never came back to {node}");

    // The recovery checker on the sockets alone: zone a's tenants' `chat/connect` series
    // failed and recovered, and the worst of them is a zone a tenant's.
    let recovery = recovery_of(&lab, &files, &history, &connects, "sockets-per-zone.jsonl");
    let fault = recovery["faults"]
        .as_array()
        .expect("faults")
        .iter()
        .find(|f| f["kind"] == "stop")
        .unwrap_or_else(|| panic!("no stop in {recovery}"))
        .clone();
    assert_eq!(fault["recovered"], true, "{fault}");
    assert_eq!(fault["worst_series"], "chat/connect", "{fault}");
    assert!(fault["impacted_series"].as_u64() >= Some(1), "{fault}");
    let worst = fault["worst_tenant"].as_str().expect("worst tenant");
    assert!(
        connects
            .iter()
            .any(|o| o.tenant == worst && o.client_zone.as_deref() == Some("a")),
        "the worst tenant {worst} is not one of zone a's: {fault}"
    );

    eprintln!(
        "per-zone sockets, gateway/{replica} on {node} stopped: {} connects, {} failed (zone a), {} of zone a's elsewhere meanwhile, {home_again} home again; chat/connect TTR {} ms over {} series",
        connects.len(),
        failed.len(),
        elsewhere.len(),
        fault["ttr_ms"],
        fault["impacted_series"]
    );

    // The whole run is judged: a stopped stateless gateway loses no acknowledged message.
    let consistency = lab.check_verdict(&files.history, &files.observations, "consistency");
    assert_eq!(consistency["status"], "valid", "{consistency:#}");
    let verdict = lab.check_verdict(&files.history, &files.observations, "recovery");
    assert_ne!(verdict["status"], "unknown", "{verdict}");
}
