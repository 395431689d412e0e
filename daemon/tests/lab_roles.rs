//! A user's own replicated service in the lab: its `env:` map and placeholders give each
//! replica the lab's facts (peers, its own address, index and zone), and its role probe lets
//! faults pick the current primary: `inject kill --replica primary`, `partition
//! --zone-of-primary`. The fake store here is a shell script whose replica 2 says `primary`.

mod common;

use common::{can_run_lab, TestLab};

const STORE: &str = r#"zones:
  - {name: a, nodes: [a1]}
  - {name: b, nodes: [b1]}
  - {name: c, nodes: [c1]}
services:
  - name: store
    replicas: 3
    placement: spread_zones
    env:
      STORE_SELF: "{node_ip}:7000"
      STORE_PEERS: "{peers:7000}"
      STORE_INDEX: "{index}"
      STORE_ZONE: "{zone}"
    command:
      - /bin/sh
      - -c
      - >-
        mkdir -p {data_dir}/www &&
        env | grep ^STORE_ | sort > {data_dir}/env &&
        echo '{members:http:7000}' > {data_dir}/members &&
        if [ "$STORE_INDEX" = 1 ]; then echo primary; else echo replica; fi > {data_dir}/www/role &&
        exec /usr/bin/python3 -m http.server --bind {node_ip} 7000 --directory {data_dir}/www
    ready: {http: {port: 7000, path: /role}}
    role: {http: {port: 7000, path: /role}}
  - name: plain
    command: [/bin/sleep, "100000"]
"#;

fn up_with_store() -> TestLab {
    let lab = TestLab::new();
    let topology = lab.state_root().join("store.yaml");
    std::fs::write(&topology, STORE).expect("write topology");
    lab.ok(&["lab", "up", "--topology", topology.to_str().expect("utf8")]);
    lab
}

#[test]
fn each_replica_gets_its_peers_address_index_and_zone_without_a_wrapper() {
    if !can_run_lab() {
        return;
    }
    let lab = up_with_store();
    let data = lab.lab_dir().join("data");
    let env = std::fs::read_to_string(data.join("store-1/env")).expect("store/1 env");
    assert_eq!(
        env,
        "STORE_INDEX=0\nSTORE_PEERS=10.203.2.11:7000,10.203.3.11:7000\nSTORE_SELF=10.203.1.11:7000\nSTORE_ZONE=a\n"
    );
    let env = std::fs::read_to_string(data.join("store-3/env")).expect("store/3 env");
    assert!(
        env.contains("STORE_INDEX=2\n") && env.contains("STORE_ZONE=c\n"),
        "{env}"
    );
    assert!(
        env.contains("STORE_PEERS=10.203.1.11:7000,10.203.2.11:7000\n"),
        "{env}"
    );
    let members = std::fs::read_to_string(data.join("store-2/members")).expect("members");
    assert_eq!(
        members.trim(),
        "store1=http://10.203.1.11:7000,store2=http://10.203.2.11:7000,store3=http://10.203.3.11:7000"
    );
}

#[test]
fn role_selectors_hit_the_replica_that_says_primary() {
    if !can_run_lab() {
        return;
    }
    let lab = up_with_store();
    let replica = |status: &serde_json::Value, key: &str| {
        status["services"]
            .as_array()
            .expect("services")
            .iter()
            .find(|s| s["replica"] == key)
            .cloned()
            .unwrap_or_else(|| panic!("{key} not in status"))
    };
    let before = lab.status();
    let out = lab.ok(&[
        "inject",
        "kill",
        "--service",
        "store",
        "--replica",
        "primary",
    ]);
    assert!(
        out.contains("primary of store: store/2 on b1 (zone b)")
            && out.contains("store/1=replica")
            && out.contains("store/2=primary"),
        "{out}"
    );
    // store/2 was killed and restarted; the others were not touched.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = lab.status();
        if replica(&now, "store/2")["restarts"] == 1 {
            assert_eq!(
                replica(&now, "store/1")["pid"],
                replica(&before, "store/1")["pid"]
            );
            assert_eq!(
                replica(&now, "store/3")["pid"],
                replica(&before, "store/3")["pid"]
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "store/2 not restarted: {now}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = lab.ok(&[
        "inject",
        "partition",
        "--zone-of-primary",
        "store",
        "--for",
        "2s",
    ]);
    assert!(out.contains("(zone b)"), "{out}");
    assert!(
        lab.our_rules().iter().any(|r| r.contains(&lab.netns("b1"))),
        "no rule in b1: {:?}",
        lab.our_rules()
    );
    let error = lab.fails(&[
        "inject",
        "kill",
        "--service",
        "plain",
        "--replica",
        "primary",
    ]);
    assert!(error.contains("has no role probe"), "{error}");
}

/// A spec's `replica: primary` on the built-in lab: the engine asks NATS's role probe (the
/// JetStream meta leader) when the fault is injected, pauses that server, and the run's record
/// says whom it chose and what every server answered.
#[test]
fn a_spec_pauses_the_replica_the_role_probe_names_when_the_fault_is_injected() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    let spec = lab.state_root().join("pause-leader.yaml");
    std::fs::write(
        &spec,
        "name: pause-leader
description: pause whichever NATS server leads the meta group
workload: {tenants: 5, rate: 30, replica_read_back: false}
faults:
  - kind: pause
    selector: {service: nats, replica: primary}
    start: 2s
    duration: 4s
baseline: 5s
duration: 25s
recovery_deadline: 15s
slo: {max_ttr: 15s}
",
    )
    .expect("write spec");
    let results = lab.state_root().join("runs");
    let output = lab.chaosctl(&[
        "run",
        spec.to_str().expect("utf8"),
        "--output-dir",
        results.to_str().expect("utf8"),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("results: "))
        .unwrap_or_else(|| {
            panic!(
                "no results line\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let run: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(std::path::Path::new(dir).join("run.json")).expect("run.json"),
    )
    .expect("json");
    let injected = &run["injected"][0];
    let replica = injected["role"]["replica"].as_u64().expect("role.replica");
    let answers = injected["role"]["answers"].as_object().expect("answers");
    assert_eq!(answers.len(), 3, "{injected}");
    for (key, answer) in answers {
        let leads = key == &format!("nats/{replica}");
        assert_eq!(answer == "leader", leads, "{key}: {answer} in {injected}");
    }
    assert!(
        injected["chosen"]
            .as_str()
            .is_some_and(|c| c.starts_with(&format!("primary of nats = replica {replica} ("))),
        "{injected}"
    );
    assert!(
        injected["description"]
            .as_str()
            .is_some_and(|d| d.starts_with(&format!("SIGSTOP nats/{replica} for 4s"))),
        "{injected}"
    );
}

/// Role probes ask a service's replicas at once (a few at a time); what they choose and record
/// is what asking them one after another chooses. On one lab: NATS's JetStream probe (the meta
/// group's leader), an HTTP probe, and a command probe that takes a while per replica.
#[test]
fn asking_the_replicas_at_once_chooses_what_asking_them_one_by_one_chooses() {
    use faultline_experiments::lab::control::{HostPaths, LabContext};
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::new();
    let topology = lab.state_root().join("roles.yaml");
    let yaml = format!(
        "{}{}",
        faultline_experiments::lab::topology::DEFAULT_TOPOLOGY_YAML,
        r#"  - name: web
    replicas: 3
    command:
      - /bin/sh
      - -c
      - >-
        mkdir -p {data_dir}/www &&
        if [ {replica} = 3 ]; then echo primary; else echo replica; fi > {data_dir}/www/role &&
        exec /usr/bin/python3 -m http.server --bind {node_ip} 7000 --directory {data_dir}/www
    ready: {http: {port: 7000, path: /role}}
    role: {http: {port: 7000, path: /role}}
  - name: slow
    replicas: 3
    command: [/bin/sleep, "100000"]
    role:
      command: [/bin/sh, -c, "sleep 0.5; if [ {replica} = 1 ]; then echo leader; else echo follower; fi"]
"#
    );
    std::fs::write(&topology, yaml).expect("write topology");
    lab.ok(&["lab", "up", "--topology", topology.to_str().expect("utf8")]);
    let ctx = LabContext::open(&HostPaths::with_state_root(lab.state_root()), &lab.name)
        .expect("open the lab");
    for (service, primary) in [("nats", None), ("web", Some(3)), ("slow", Some(1))] {
        let started = std::time::Instant::now();
        let one_by_one = ctx
            .primary_of_asking(service, 1)
            .unwrap_or_else(|e| panic!("{service} one by one: {e}"));
        let serial = started.elapsed();
        let started = std::time::Instant::now();
        let at_once = ctx
            .primary_of(service)
            .unwrap_or_else(|e| panic!("{service} at once: {e}"));
        let concurrent = started.elapsed();
        assert_eq!(at_once, one_by_one, "{service}");
        assert_eq!(at_once.answers.len(), 3, "{at_once:?}");
        if let Some(primary) = primary {
            assert_eq!(at_once.replica, primary, "{at_once:?}");
        }
        // For BENCHMARKS.md, not asserted: a timing on a shared machine proves nothing.
        eprintln!(
            "role probe of {service}: one by one {serial:?}, at once {concurrent:?} ({:.2}x)",
            serial.as_secs_f64() / concurrent.as_secs_f64()
        );
    }
    lab.ok(&["lab", "down"]);
}
