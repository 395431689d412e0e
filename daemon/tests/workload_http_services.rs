//! The http load names the lab services it loads (`--service`, the spec's
//! `workload.services`), and `chaosctl load --gateway URLs --lab L` loads the user's endpoints
//! from inside the lab: its client namespace, its node names, its fault windows.

mod common;
mod workload_common;

use std::time::Duration;

use common::{can_run_lab, TestLab};
use faultline_experiments::history::Observation;
use workload_common::{
    finish, load_args, observations, spawn_load, wait_until_loading, Files, History,
};

#[test]
#[allow(clippy::too_many_lines)] // one lab, three loads and their checks in order
fn the_http_load_goes_to_the_named_services_and_user_urls_inside_a_lab_record_fault_windows() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::new();
    let topology = lab.state_root().join("records.yaml");
    let yaml = faultline_experiments::lab::topology::DEFAULT_TOPOLOGY_YAML
        .replace("- name: gateway", "- name: records");
    assert!(yaml.contains("- name: records"), "renamed");
    std::fs::write(&topology, yaml).expect("topology");
    lab.ok(&["lab", "up", "--topology", topology.to_str().expect("utf8")]);

    // Without naming it, the load says which services there are and how to name one.
    let files = Files::new(&lab, "unnamed");
    let output = common::chaosctl_command(lab.state_root(), &lab.name)
        .args(load_args(
            &files,
            &["--adapter", "http", "--duration", "2s", "--quiet"],
        ))
        .output()
        .expect("load");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "no `gateway` service: {stderr}");
    assert!(stderr.contains("no service `gateway`"), "{stderr}");
    assert!(
        stderr.contains("records") && stderr.contains("--service"),
        "{stderr}"
    );

    let files = Files::new(&lab, "named");
    let args = [
        "--adapter",
        "http",
        "--service",
        "records",
        "--duration",
        "4s",
        "--tenants",
        "10",
        "--rate",
        "50",
        "--quiet",
        "--no-read-back",
    ];
    finish(spawn_load(&lab, &files, &args));
    let history = History::read(&files.history);
    assert!(
        history.load().count() > 20,
        "the load reached the records service"
    );
    let nodes: std::collections::BTreeSet<&str> = history.load().map(|o| o.node.as_str()).collect();
    assert!(
        nodes.iter().all(|n| n.len() == 2),
        "lab node names: {nodes:?}"
    );

    // The user's URLs, with --lab: from the client namespace, with lab node names and the
    // lab's fault windows.
    let status = lab.status();
    let endpoint = status["services"]
        .as_array()
        .expect("services")
        .iter()
        .find(|s| {
            s["replica"]
                .as_str()
                .is_some_and(|r| r.starts_with("records"))
        })
        .and_then(|s| s["endpoints"]["http"].as_str())
        .expect("records endpoint")
        .to_owned();
    let url = format!("http://{endpoint}");
    let files = Files::new(&lab, "urls");
    let child = spawn_load(
        &lab,
        &files,
        &[
            "--adapter",
            "http",
            "--gateway",
            &url,
            "--lab",
            &lab.name,
            "--duration",
            "10s",
            "--tenants",
            "10",
            "--rate",
            "50",
            "--quiet",
            "--no-read-back",
        ],
    );
    wait_until_loading(&files, Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    lab.ok(&["inject", "partition", "--zone", "c", "--for", "3s"]);
    finish(child);
    let history = History::read(&files.history);
    assert!(history
        .load()
        .any(|o| o.outcome == faultline_experiments::history::Outcome::Ok));
    let nodes: std::collections::BTreeSet<&str> = history.load().map(|o| o.node.as_str()).collect();
    assert!(
        nodes.iter().all(|n| !n.contains(':')),
        "operations name the lab node, not the URL: {nodes:?}"
    );
    let windows = observations(&files.observations)
        .into_iter()
        .filter(|o| matches!(o, Observation::Fault { kind, .. } if kind == "partition"))
        .count();
    assert_eq!(windows, 1, "the partition's fault window is recorded");
}
