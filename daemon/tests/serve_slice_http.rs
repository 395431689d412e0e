//! An HTTP background load slices like a NATS one, on a real lab: a scheduled run whose
//! scenario loads the gateways is judged from the slice of `faultlined serve`'s HTTP background
//! load (no second load, the load never paused, one segment file, only its tenants), read back
//! through every gateway while the load goes on. And a value the background load wrote before
//! a run, held by the store when the run began and lost during it, is judged `lost` from the
//! slice: the gateway keeps one replica per tenant and the NATS servers lose their store when
//! they restart (ephemeral storage), so killing the server that holds a tenant's stream really
//! loses what it held.

mod common;
mod serve_common;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{can_run_lab, chaosctl_command, nats_server_under_test, wait_until, TestLab};
use faultline_experiments::history::{OpKind, Operation, Outcome, Pattern};
use faultline_experiments::lab::topology::DEFAULT_TOPOLOGY_YAML;
use faultline_experiments::schedule::RunRow;
use serve_common::{
    background_files, live_segment, operations, token_file, trigger_and_wait, Daemon,
};

/// One gateway replica killed 2 s into the fault phase; the HTTP clients go to the others and
/// the supervisor restarts it. The scenario's `tenants` and `rate` do not apply: a slice is
/// the background load's.
const GATEWAY_KILL: &str = "
name: quick-gateway-kill
description: Kill one gateway replica; the others serve and it comes back.
workload: {adapter: http, tenants: 40, rate: 100}
faults:
  - kind: kill
    selector: {service: gateway, replica: random}
    start: 2s
baseline: 5s
duration: 15s
recovery_deadline: 8s
settle: 5s
slo: {max_ttr: 10s, survivable: true}
";

fn schedule(scenarios: &[(&str, &str)], background: &str) -> String {
    use std::fmt::Write as _;
    let mut text = "suites:\n".to_owned();
    for (suite, file) in scenarios {
        let _ = writeln!(
            text,
            "  - name: {suite}\n    cron: \"0 0 1 1 *\"\n    enabled: false\n    scenarios: [{{scenario: {file}}}]"
        );
    }
    let _ = writeln!(text, "background: {background}");
    text
}

fn history_header(path: &Path) -> serde_json::Value {
    serde_json::from_str(
        std::fs::read_to_string(path)
            .expect("history")
            .lines()
            .next()
            .expect("header"),
    )
    .expect("json")
}

fn report(row: &RunRow) -> serde_json::Value {
    let dir = PathBuf::from(row.dir.as_deref().expect("dir"));
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report"))
        .expect("json")
}

fn gateway_nodes(lab: &TestLab) -> HashSet<String> {
    (1..=3)
        .map(|r| lab.node_of(&format!("gateway/{r}")))
        .collect()
}

/// The run's history is the slice: the background load's writes, of its 6 tenants, with the
/// initial state and the read-back through each gateway, judged with the values held before.
fn assert_the_history_is_the_http_backgrounds_slice(lab: &TestLab, row: &RunRow, segment: &Path) {
    let dir = PathBuf::from(row.dir.as_deref().expect("dir"));
    let history = dir.join("history.jsonl");
    assert_eq!(history_header(&history)["adapter"], "http");
    let slice = operations(&history);
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

    // The initial state and the read-back went through each of the 3 gateways, every tenant.
    let gateways = gateway_nodes(lab);
    for (pattern, what) in [
        (Pattern::InitialState, "initial-state reads"),
        (Pattern::ReadBack, "read-back"),
    ] {
        let views: Vec<&Operation> = slice.iter().filter(|o| o.pattern == pattern).collect();
        assert_eq!(
            views.len(),
            6 * 3,
            "{what}: every tenant through 3 gateways"
        );
        let through: HashSet<String> = views.iter().map(|o| o.node.clone()).collect();
        assert_eq!(through, gateways, "{what} through every gateway");
        assert!(
            views.iter().all(|o| o.outcome == Outcome::Ok),
            "{what}: every gateway answered"
        );
    }
    let held: HashSet<&str> = slice
        .iter()
        .filter(|o| o.pattern == Pattern::InitialState)
        .flat_map(|o| o.read.iter().flatten())
        .map(|item| item.value.as_str())
        .collect();
    assert!(
        held.len() > 50 && held.iter().all(|v| background_writes.contains(v)),
        "the gateways held the background load's earlier writes: {} values",
        held.len()
    );
    assert!(
        report(row)
            .to_string()
            .contains("held when the run began), none lost"),
        "the consistency verdict judged the slice's writes and the values held before"
    );
}

#[test]
fn an_http_run_is_a_slice_of_the_http_background_load() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::new();
    let root = lab.state_root().to_path_buf();
    std::fs::write(root.join("quick-gateway-kill.yaml"), GATEWAY_KILL).expect("spec");
    let schedule_file = root.join("schedule.yaml");
    std::fs::write(
        &schedule_file,
        schedule(
            &[("by-hand", "quick-gateway-kill.yaml")],
            "{enabled: true, tenants: 6, rate: 30, adapter: http, rotate_every: 1h, keep_for: 1h}",
        ),
    )
    .expect("schedule");
    let token = token_file(&lab);
    let daemon = Daemon::start(&lab, &schedule_file, &token);

    let segment = live_segment(&lab, 50);
    assert_eq!(history_header(&segment)["adapter"], "http");
    let (row, log) = trigger_and_wait(&lab, &daemon, "by-hand");
    assert!(
        row.status.is_judged(),
        "run ended {:?}: {:?}\n{log}",
        row.status,
        row.note
    );
    assert_eq!(row.verdicts.len(), 4, "{row:?}");
    // No false `lost` or `unexpected` at the slice's ends: the values written before the run
    // are its initial state, those written during the read-back are left out.
    assert_eq!(
        row.verdicts.get("consistency").map(String::as_str),
        Some("valid"),
        "{row:?}\n{log}"
    );
    assert!(
        !log.contains("pausing"),
        "the load was not paused, no own load started:\n{log}"
    );

    assert_the_history_is_the_http_backgrounds_slice(&lab, &row, &segment);

    // The load went on across the run, in the same segment, without the slice's reads.
    let ended = row.ended_at.expect("ended").timestamp_millis() as u64;
    wait_until(
        Duration::from_secs(30),
        "background operations after the run",
        || {
            operations(&segment)
                .iter()
                .any(|o| o.invoke_unix_ms > ended + 1_000)
        },
    );
    assert_eq!(
        background_files(&lab).len(),
        1,
        "one segment file: {:?}",
        background_files(&lab)
    );
    assert!(
        operations(&segment).iter().all(|o| o.pattern.is_load()),
        "the slice's own reads are not in the background history"
    );
    drop(daemon);
    assert!(lab.our_rules().is_empty());
}

/// The default topology with one stream replica per tenant (the gateway's `--replicas=1`) and
/// NATS servers whose store is emptied at every start: the storage of a replica that restarts
/// elsewhere, or on a new disk. Killing the server that holds a tenant's stream loses it.
fn ephemeral_single_replica_topology() -> String {
    let nats = &nats_server_under_test().0;
    let command_start = DEFAULT_TOPOLOGY_YAML
        .find("    command:\n      - nats-server\n")
        .expect("the default topology's nats command");
    let command_end = command_start
        + DEFAULT_TOPOLOGY_YAML[command_start..]
            .find("      - --routes={peers:nats:6222}\n")
            .expect("the nats command's last argument")
        + "      - --routes={peers:nats:6222}\n".len();
    let wiping = format!(
        "    command:\n      - /bin/sh\n      - -c\n      - 'rm -rf {{data_dir}}/jetstream && exec {nats} --addr={{node_ip}} --port=4222 --http_port=8222 --server_name={{service}}{{replica}} --jetstream --store_dir={{data_dir}} --cluster_name=fl-{{lab}} --cluster=nats://{{node_ip}}:6222 --routes={{peers:nats:6222}}'\n"
    );
    let yaml = format!(
        "{}{wiping}{}",
        &DEFAULT_TOPOLOGY_YAML[..command_start],
        &DEFAULT_TOPOLOGY_YAML[command_end..]
    );
    assert!(
        yaml.contains("      - --replicas=3\n"),
        "the gateway's replicas"
    );
    yaml.replace("      - --replicas=3\n", "      - --replicas=1\n")
}

/// Kills NATS server `replica` 2 s into the fault phase; it restarts with an empty store.
fn nats_kill(replica: u32) -> String {
    format!(
        "
name: lose-nats-{replica}
description: Kill NATS server {replica}, which holds single-replica streams on storage lost at restart.
workload: {{adapter: http}}
faults:
  - kind: kill
    selector: {{service: nats, replica: {replica}}}
    start: 2s
baseline: 5s
duration: 15s
recovery_deadline: 10s
settle: 5s
slo: {{max_ttr: 12s, survivable: true}}
"
    )
}

/// Brings `lab` up with [`ephemeral_single_replica_topology`]. The topology names the server
/// under test itself, inside its wrapper, so `lab up` gets no `--nats-server` to put in place of
/// a `nats-server` program (there is none).
fn up_with_ephemeral_single_replica_storage(lab: &TestLab) {
    let topology = lab.state_root().join("ephemeral.yaml");
    std::fs::write(&topology, ephemeral_single_replica_topology()).expect("topology");
    let up = chaosctl_command(lab.state_root(), &lab.name)
        .env_remove("FAULTLINE_NATS_SERVER")
        .args(["lab", "up", "--topology"])
        .arg(&topology)
        .output()
        .expect("chaosctl lab up");
    assert!(
        up.status.success(),
        "lab up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
}

/// Each of `held_lost` was acknowledged to the background load before the slice began (its
/// history's start), seen by the initial-state reads, and is in no read-back view although its
/// tenant was read back.
fn assert_held_before_and_gone_after(row: &RunRow, segment: &Path, held_lost: &[String]) {
    // ... which the background load wrote, acknowledged, before the slice began (its history's
    // start), ...
    let history = PathBuf::from(row.dir.as_deref().expect("dir")).join("history.jsonl");
    let started = history_header(&history)["started_at_unix_ms"]
        .as_u64()
        .expect("start");
    let background = operations(segment);
    for value in held_lost {
        let writes: Vec<&Operation> = background
            .iter()
            .filter(|o| o.kind == OpKind::Write && o.value.as_deref() == Some(value))
            .collect();
        assert!(
            writes
                .iter()
                .any(|o| o.outcome == Outcome::Ok && o.complete_unix_ms <= started),
            "{value} was acknowledged to the background load before the slice began at {started}: {writes:?}"
        );
    }
    // ... which the initial-state reads saw, and which no read-back view has.
    let slice = operations(&history);
    let seen = |pattern: Pattern| -> HashSet<String> {
        slice
            .iter()
            .filter(|o| o.pattern == pattern)
            .flat_map(|o| o.read.iter().flatten())
            .map(|item| item.value.clone())
            .collect()
    };
    let (initial, read_back) = (seen(Pattern::InitialState), seen(Pattern::ReadBack));
    for value in held_lost {
        assert!(
            initial.contains(value),
            "{value} was held when the run began"
        );
        assert!(!read_back.contains(value), "{value} is gone after the run");
        // The store answered without it: a read-back of its tenant succeeded.
        let tenant = value.split('/').next().expect("tenant");
        assert!(
            slice.iter().any(|o| o.pattern == Pattern::ReadBack
                && o.tenant == tenant
                && o.outcome == Outcome::Ok),
            "{tenant} was read back"
        );
    }
}

/// Which NATS server holds how many tenants' streams, from each server's store.
fn streams_per_server(lab: &TestLab) -> BTreeMap<u32, usize> {
    (1..=3)
        .map(|replica| {
            let streams = lab
                .lab_dir()
                .join("data")
                .join(format!("nats-{replica}"))
                .join("jetstream")
                .join("$G")
                .join("streams");
            let count = std::fs::read_dir(streams).map_or(0, |d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("FL_"))
                    .count()
            });
            (replica, count)
        })
        .collect()
}

/// The consistency verdict's `lost` count, and the values its evidence names as held when the
/// run began.
fn lost_values_held_before(report: &serde_json::Value) -> (u64, Vec<String>) {
    let lost = report["verdicts"]
        .as_array()
        .expect("verdicts")
        .iter()
        .find(|v| v["name"] == "consistency")
        .and_then(|v| {
            v["anomalies"]
                .as_array()
                .expect("anomalies")
                .iter()
                .find(|a| a["name"] == "lost")
                .cloned()
        })
        .unwrap_or_else(|| panic!("no lost anomaly: {report}"));
    let held_lost: Vec<String> = lost["evidence"]
        .as_array()
        .expect("evidence")
        .iter()
        .filter(|e| {
            e["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("held when the run began"))
        })
        .filter_map(|e| e["value"].as_str().map(str::to_owned))
        .collect();
    assert!(
        !held_lost.is_empty(),
        "no value held when the run began is named lost: {lost}"
    );
    (lost["count"].as_u64().expect("count"), held_lost)
}

#[test]
fn a_value_held_before_the_run_and_lost_during_it_is_judged_lost() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::new();
    let root = lab.state_root().to_path_buf();
    up_with_ephemeral_single_replica_storage(&lab);
    for replica in 1..=3 {
        std::fs::write(
            root.join(format!("lose-nats-{replica}.yaml")),
            nats_kill(replica),
        )
        .expect("spec");
    }
    let schedule_file = root.join("schedule.yaml");
    std::fs::write(
        &schedule_file,
        schedule(
            &[
                ("lose-1", "lose-nats-1.yaml"),
                ("lose-2", "lose-nats-2.yaml"),
                ("lose-3", "lose-nats-3.yaml"),
            ],
            "{enabled: true, tenants: 9, rate: 40, adapter: http, rotate_every: 1h, keep_for: 1h}",
        ),
    )
    .expect("schedule");
    let token = token_file(&lab);
    let daemon = Daemon::start(&lab, &schedule_file, &token);
    let segment = live_segment(&lab, 100);

    // Kill the server that holds the most tenants' streams.
    let placement = streams_per_server(&lab);
    let (&replica, &streams) = placement
        .iter()
        .max_by_key(|(_, n)| **n)
        .expect("three servers");
    assert!(streams > 0, "no server holds a stream: {placement:?}");
    let (row, log) = trigger_and_wait(&lab, &daemon, &format!("lose-{replica}"));
    assert!(
        row.status.is_judged(),
        "run ended {:?}: {:?}\n{log}",
        row.status,
        row.note
    );
    assert!(!log.contains("pausing"), "the run was a slice:\n{log}");
    assert_eq!(
        row.verdicts.get("consistency").map(String::as_str),
        Some("invalid"),
        "{row:?}\n{log}"
    );

    // The verdict names a value held when the run began as lost ...
    let (lost_count, held_lost) = lost_values_held_before(&report(&row));
    assert_held_before_and_gone_after(&row, &segment, &held_lost);
    faultline_experiments::stderr_line!(
        "killed nats/{replica} holding {streams} of 9 tenants' streams: {} lost, {} of them named as held when the run began",
        lost_count,
        held_lost.len()
    );
    drop(daemon);
    assert!(lab.our_rules().is_empty());
}
