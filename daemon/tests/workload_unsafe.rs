//! The negative control: a tenant gateway started with `--unsafe-ack` acknowledges writes
//! before they are stored. Under quorum loss the history must show what a correct gateway
//! never produces: acknowledged writes during the loss, and acknowledged writes that no node
//! has afterwards.

mod common;
mod workload_common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{can_run_lab, TestLab};
use faultline_experiments::history::{Observation, OpKind, Outcome};
use faultline_experiments::lab::topology::DEFAULT_TOPOLOGY_YAML;
use workload_common::{finish, observations, spawn_load, wait_until_loading, Files, History};

#[test]
fn a_gateway_that_acks_before_storing_is_caught_by_the_history() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::new();
    let topology = lab.state_root().join("unsafe.yaml");
    let yaml = DEFAULT_TOPOLOGY_YAML.replace(
        "      - --replicas=3\n",
        "      - --replicas=3\n      - --unsafe-ack\n",
    );
    assert!(
        yaml.contains("--unsafe-ack"),
        "the default topology's gateway command changed"
    );
    std::fs::write(&topology, yaml).expect("write topology");
    lab.ok(&["lab", "up", "--topology", topology.to_str().expect("utf-8")]);

    let files = Files::new(&lab, "unsafe");
    let child = spawn_load(
        &lab,
        &files,
        &[
            "--adapter",
            "http",
            "--duration",
            "25s",
            "--rate",
            "100",
            "--tenants",
            "10",
            "--quiet",
        ],
    );
    wait_until_loading(&files, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(5));
    let isolated = [lab.node_of("nats/1"), lab.node_of("nats/2")];
    lab.ok(&[
        "inject",
        "partition",
        "--isolate",
        &isolated.join(","),
        "--for",
        "10s",
    ]);
    finish(child);
    let history = History::read(&files.history);

    let start = observations(&files.observations)
        .iter()
        .find_map(|o| match o {
            Observation::Fault { kind, start_ns, .. } if kind == "partition" => Some(*start_ns),
            _ => None,
        })
        .expect("a partition fault observation");
    let (from, to) = (start + 1_000_000_000, start + 10_000_000_000);
    let acked_during = history
        .load()
        .filter(|o| {
            o.kind == OpKind::Write
                && o.outcome == Outcome::Ok
                && o.complete_ns > from
                && o.complete_ns < to
        })
        .count();
    assert!(
        acked_during > 0,
        "the unsafe gateway acknowledged nothing during quorum loss"
    );

    let mut present = BTreeSet::new();
    for tenants in history.read_back().values() {
        for items in tenants.values().flatten() {
            present.extend(items.iter().map(|(_, v)| v.clone()));
        }
    }
    let lost = history.acked().difference(&present).count();
    assert!(lost > 0, "no acknowledged write went missing");
    eprintln!("unsafe gateway: {acked_during} writes acknowledged during quorum loss, {lost} acknowledged writes lost");
}
