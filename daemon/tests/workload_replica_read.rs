//! Issue 11, part 1, on the real lab: a read "through" a NATS server may be answered by another
//! replica, so the final read-back also reads each server's own replica alone, the other
//! servers held down. One server is paused while writes continue, and still paused when the
//! load ends; when its turn comes the others are held down, its pause ends at its deadline,
//! and it is read alone before it can catch up. `lost-on-node` must name exactly that node,
//! with exactly the values its own store lacks, and nothing on the other nodes.

mod common;
mod workload_common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{can_run_lab, TestLab};
use faultline_experiments::history::{Observation, OpKind, Outcome, Pattern};
use workload_common::{finish, observations, spawn_load, wait_until_loading, Files, History};

#[test]
#[ignore = "quarantined 2026-12-03: failed 2 of 3 suite runs (the paused replica caught up before \
            it was read alone; then 3 values lost from every replica on 2.15.1 after the holds); \
            issue 11 notes. Run with: cargo test -p faultline-daemon --test workload_replica_read \
            -- --ignored"]
#[allow(clippy::too_many_lines)] // one lab run, then its checks in order
fn a_replica_behind_is_read_alone_and_lost_on_node_names_exactly_it() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    // Replicas are read alone in replica order: nats/1 first, while it is still behind.
    let behind = lab.node_of("nats/1");
    let files = Files::new(&lab, "replica-read");
    let child = spawn_load(
        &lab,
        &files,
        &[
            "--duration",
            "12s",
            "--rate",
            "100",
            "--tenants",
            "12",
            "--connections",
            "3",
            // Long enough for nats/1's pause to end while the others are held down.
            "--replica-wait",
            "60s",
            "--quiet",
        ],
    );
    wait_until_loading(&files, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(3));
    // Paused past the load's end (12 s), its drain (at most 10 s) and the reads through every
    // server (about 45 s in all on CI); it resumes at its deadline while the others are held
    // down for its read alone, within the 60 s it is waited for.
    lab.ok(&[
        "inject",
        "pause",
        "--service",
        "nats",
        "--replica",
        "1",
        "--for",
        "60s",
    ]);
    let report = finish(child);
    let history = History::read(&files.history);
    let observed = observations(&files.observations);
    let paused_ns = observed
        .iter()
        .find_map(|o| match o {
            Observation::Fault { kind, start_ns, .. } if kind == "pause" => Some(*start_ns),
            _ => None,
        })
        .expect("the pause's window");

    // When each replica read alone began, for the time it costs.
    let starts: BTreeMap<&str, u64> = history
        .ops
        .iter()
        .filter(|o| o.pattern == Pattern::ReadBackReplica)
        .fold(BTreeMap::new(), |mut m, o| {
            let e = m.entry(o.node.as_str()).or_insert(u64::MAX);
            *e = (*e).min(o.invoke_ns);
            m
        });
    eprintln!(
        "replica reads began at (s): {:?}",
        starts
            .iter()
            .map(|(n, t)| (*n, *t as f64 / 1e9))
            .collect::<Vec<_>>()
    );

    // Every server's own replica was read, every tenant of each.
    let replicas = report["read_back"]["replicas"]
        .as_array()
        .expect("replica read-backs in the report");
    assert_eq!(replicas.len(), 3, "{report:#}");
    // The server behind is read in full; the others try every tenant, and a read a lone server
    // leaves unanswered (seen on nats-server 2.15.1) is a failed read with its reason, not a loss.
    for r in replicas {
        let (ok, failed) = (r["ok"].as_u64(), r["failed"].as_u64());
        assert_eq!(ok.zip(failed).map(|(o, f)| o + f), Some(12), "{r}");
        if r["node"] == "a1" {
            assert_eq!(ok, Some(12), "{r}");
        }
    }

    // What the server behind reported of its own replica while it was alone: its last
    // sequence per stream (the last stream state it recorded, once settled: on resuming it
    // first applies what its peers sent before they went down).
    let mut own_last: BTreeMap<String, u64> = BTreeMap::new();
    for o in observed {
        if let Observation::StreamInfo {
            observer,
            stream,
            last_seq,
            ..
        } = o
        {
            if observer == behind {
                own_last.insert(stream, last_seq);
            }
        }
    }
    assert_eq!(own_last.len(), 12, "{own_last:?}");
    eprintln!(
        "{behind} paused at {:.3} s; its own last sequences when read alone: {own_last:?}",
        paused_ns as f64 / 1e9
    );

    // Its read alone returned exactly its own store: sequences 1 up to that last sequence.
    let alone: Vec<_> = history
        .ops
        .iter()
        .filter(|o| o.pattern == Pattern::ReadBackReplica && o.node == behind)
        .collect();
    assert_eq!(alone.len(), 12);
    for o in &alone {
        let seqs: Vec<u64> = o
            .read
            .as_ref()
            .expect("items")
            .iter()
            .map(|i| i.seq)
            .collect();
        let last = own_last[&o.stream];
        assert_eq!(seqs, (1..=last).collect::<Vec<u64>>(), "{}", o.stream);
    }

    // The values it lacks: acknowledged at a sequence beyond its own last one.
    let mut missing: BTreeSet<(String, u64)> = BTreeSet::new();
    for o in history
        .load()
        .filter(|o| o.kind == OpKind::Write && o.outcome == Outcome::Ok)
    {
        let (Some(value), Some(seq)) = (o.value.clone(), o.seq) else {
            continue;
        };
        if seq > own_last[&o.stream] {
            missing.insert((value, seq));
        }
    }
    // How far behind it still was when read depends on how much it caught up after the pause
    // ended (timing, and the server's version): the judge must name exactly what was missing
    // then, however much that is.
    eprintln!("{behind} lacked {} values when read alone", missing.len());

    // The judge: exactly those, on exactly that node; nothing lost from every replica.
    let consistency = lab.check_verdict(&files.history, &files.observations, "consistency");
    let anomaly = |name: &str| {
        consistency["anomalies"]
            .as_array()
            .expect("anomalies")
            .iter()
            .find(|a| a["name"] == name)
            .cloned()
            .unwrap_or_default()
    };
    let lost_on_node = anomaly("lost-on-node");
    assert_eq!(
        lost_on_node["count"].as_u64(),
        Some(missing.len() as u64),
        "{consistency:#}"
    );
    let categories = lost_on_node["categories"]
        .as_object()
        .expect("lost-on-node per node");
    assert_eq!(
        categories.keys().collect::<Vec<_>>(),
        vec![&behind],
        "{categories:?}"
    );
    let samples = lost_on_node["evidence"].as_array().expect("evidence");
    assert!(!samples.is_empty());
    for e in samples {
        assert_eq!(e["node"].as_str(), Some(behind.as_str()), "{e}");
        let value = e["value"].as_str().expect("value").to_owned();
        let seq = e["seq"].as_u64().expect("seq");
        assert!(missing.contains(&(value, seq)), "{e} is not missing there");
        assert!(
            e["detail"].as_str().unwrap_or("").contains("own replica"),
            "{e}"
        );
    }
    assert_eq!(anomaly("lost")["count"].as_u64().unwrap_or(0), 0);
}
