//! The worked example `examples/etcd/` as a user runs it: Debian's etcd 3.4 in a topology of
//! its own, the Python records shim (which must pass `chaosctl contract check`), and the spec
//! that cuts off the zone of etcd's leader (`zone: {of: primary, service: etcd}`). The run is
//! judged PASS, and the zone the engine chose is the leader's, asked of etcd independently
//! before the run.

mod common;

use std::path::{Path, PathBuf};

use common::{can_run_lab, chaosctl_command, TestLab};

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/etcd")
}

/// Whether Debian's etcd is installed; says so when it is not (scripts/setup.sh installs it).
fn etcd_installed() -> bool {
    let found = std::process::Command::new("etcd")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!(
            "skipping the etcd example: etcd is not installed (Debian's etcd-server; scripts/setup.sh installs it)"
        );
    }
    found
}

/// The zone of the member that etcd itself says leads, asked with etcdctl from the client
/// namespace. The lab's address plan gives zone a 10.203.1.0/24, b 10.203.2.0/24, c 10.203.3.0/24.
fn leader_zone(lab: &TestLab) -> String {
    let output = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.netns("client"), "etcdctl"])
        .args([
            "--endpoints=http://10.203.1.11:2379,http://10.203.2.11:2379,http://10.203.3.11:2379",
            "endpoint",
            "status",
            "-w",
            "json",
        ])
        .output()
        .expect("etcdctl");
    assert!(
        output.status.success(),
        "etcdctl: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let members: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let leaders: Vec<&str> = members
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["Status"]["leader"] == m["Status"]["header"]["member_id"])
        .map(|m| m["Endpoint"].as_str().expect("endpoint"))
        .collect();
    assert_eq!(leaders.len(), 1, "{members}");
    match leaders[0] {
        "http://10.203.1.11:2379" => "a",
        "http://10.203.2.11:2379" => "b",
        "http://10.203.3.11:2379" => "c",
        other => panic!("unexpected endpoint {other}"),
    }
    .to_owned()
}

#[test]
fn the_etcd_example_passes_and_cuts_off_the_leaders_zone() {
    if !can_run_lab() || !etcd_installed() {
        return;
    }
    let lab = TestLab::new();
    let topology = example().join("topology.yaml");
    lab.ok(&["lab", "up", "--topology", topology.to_str().expect("utf8")]);
    // The shim implements the contract, as the README says to check first.
    let conformance = lab.ok(&["contract", "check", "http://10.203.1.11:8080"]);
    assert!(conformance.contains("conforms"), "{conformance}");
    // Without faults etcd keeps its leader; the run's role probe must find the same one.
    let zone = leader_zone(&lab);

    let results = lab.state_root().join("runs");
    let spec = example().join("spec.yaml");
    let output = lab.chaosctl(&[
        "run",
        spec.to_str().expect("utf8"),
        "--output-dir",
        results.to_str().expect("utf8"),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("PASSED: all 4 checks held"),
        "the README promises PASS\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let dir = PathBuf::from(
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("results: "))
            .expect("results line"),
    );
    let json = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).expect(name)).expect(name)
    };

    // What was chosen, and why, in run.json, the fault's observation and the report.
    let chosen = format!("zone of primary of etcd = {zone} (");
    let injected = &json("run.json")["injected"][0];
    assert!(
        injected["chosen"]
            .as_str()
            .is_some_and(|c| c.starts_with(&chosen) && c.contains("said leader")),
        "{injected}"
    );
    assert_eq!(injected["role"]["zone"], zone.as_str(), "{injected}");
    let leader_node = format!("{zone}1");
    assert!(
        injected["sides"]
            .as_array()
            .expect("sides")
            .iter()
            .any(|side| side == &serde_json::json!([leader_node])),
        "the leader's node is a side of its own: {injected}"
    );
    let observations =
        std::fs::read_to_string(dir.join("observations.jsonl")).expect("observations");
    assert!(
        observations
            .lines()
            .any(|l| l.contains("\"type\":\"fault\"") && l.contains(&chosen)),
        "{observations}"
    );
    let report = json("report.json");
    assert!(
        report["experiment"]["faults"][0]
            .as_str()
            .is_some_and(|f| f.contains(&chosen)),
        "{}",
        report["experiment"]
    );
    for verdict in report["verdicts"].as_array().expect("verdicts") {
        assert_eq!(verdict["status"], "valid", "{verdict}");
    }
    let html = std::fs::read_to_string(dir.join("report.html")).expect("html");
    assert!(html.contains(&chosen), "the HTML report names the choice");
    let summary = std::fs::read_to_string(dir.join("summary.txt")).expect("summary");
    assert!(summary.contains(&chosen), "{summary}");
}

#[test]
fn validate_checks_role_selectors_against_the_specs_topology() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let validate = |spec: &str| {
        let path = scratch.path().join("spec.yaml");
        let topology = example().join("topology.yaml");
        std::fs::write(
            &path,
            spec.replace(
                "topology: topology.yaml",
                &format!("topology: {}", topology.display()),
            ),
        )
        .expect("write spec");
        chaosctl_command(scratch.path(), "none")
            .args(["validate", path.to_str().expect("utf8")])
            .output()
            .expect("chaosctl")
    };
    let spec = std::fs::read_to_string(example().join("spec.yaml")).expect("spec");
    let output = validate(&spec);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (service, expected) in [
        (
            "records",
            "faults[0].selector.zone.service: `records` has no role probe",
        ),
        (
            "etcdd",
            "faults[0].selector.zone.service: `etcdd` is not a service of the topology; known: etcd, records",
        ),
    ] {
        let output = validate(&spec.replace(
            "{of: primary, service: etcd}",
            &format!("{{of: primary, service: {service}}}"),
        ));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && stderr.contains(expected),
            "{service}: {stderr}"
        );
    }
    let output = validate(&spec.replace(
        "{of: primary, service: etcd}",
        "{of: leader, service: etcd}",
    ));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line ") && stderr.contains("`of: leader` is not a role"),
        "{stderr}"
    );
}
