//! The built-in scenarios end to end on a real lab, the negative controls that prove the judge
//! can fail, Ctrl-C in the middle of a fault, and bad input to `chaosctl run`.
//!
//! Runs are shortened (baseline, fault duration, load) but otherwise exactly the catalog's
//! specs. They run one at a time: each loads the machine, and the steady-state check must not
//! trip over a neighbour.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::time::Duration;

use common::{can_run_lab, spec_file, wait_until, TestLab};
use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

struct Run {
    output: Output,
    dir: PathBuf,
}

impl Run {
    fn json(&self, name: &str) -> Value {
        let path = self.dir.join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            let listing: Vec<String> = std::fs::read_dir(&self.dir)
                .map(|d| {
                    d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                        .collect()
                })
                .unwrap_or_default();
            panic!(
                "{}: {e}; the run directory holds {listing:?}\n{}",
                path.display(),
                self.log()
            )
        });
        serde_json::from_str(&text).expect("json")
    }

    fn log(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }

    fn exit_code(&self) -> i32 {
        self.output.status.code().unwrap_or(-1)
    }

    fn verdict(&self, name: &str) -> Value {
        self.json("report.json")["verdicts"]
            .as_array()
            .expect("verdicts")
            .iter()
            .find(|v| v["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} verdict\n{}", self.log()))
    }
}

fn run(lab: &TestLab, spec: &Path, extra: &[&str]) -> Run {
    let results = lab.state_root().join("runs");
    let mut args = vec![
        "run",
        spec.to_str().expect("utf8"),
        "--tenants",
        "10",
        "--rate",
        "60",
        "--output-dir",
        results.to_str().expect("utf8"),
    ];
    args.extend_from_slice(extra);
    let output = lab.chaosctl(&args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let Some(dir) = stdout
        .lines()
        .find_map(|l| l.strip_prefix("results: "))
        .map(PathBuf::from)
    else {
        panic!(
            "no results line:\nstdout:\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    Run { output, dir }
}

/// What every scenario must show: impact in the fault window, recovery measured, the
/// consistency and split-brain verdicts, and nothing of ours left behind.
fn assert_judged_and_clean(lab: &TestLab, run: &Run) {
    let report = run.json("report.json");
    let faults = report["faults"].as_array().expect("faults");
    assert!(!faults.is_empty(), "no fault window\n{}", run.log());
    // Every window says when its injection began and its heal began (issue 11, part 2).
    for f in faults {
        let at = |key: &str| f[key].as_u64().unwrap_or_else(|| panic!("{key} in {f}"));
        assert!(at("injecting_ns") <= at("start_ns"), "{f}");
        assert!(at("start_ns") <= at("reverting_ns"), "{f}");
        assert!(at("reverting_ns") <= at("end_ns"), "{f}");
    }
    // The read-back settled first and recorded it (issue 11, part 3).
    let observations =
        std::fs::read_to_string(run.dir.join("observations.jsonl")).expect("observations");
    assert!(
        observations.contains("\"type\":\"settled\""),
        "no settled observation\n{}",
        run.log()
    );
    let start_s = faults[0]["start_ns"].as_f64().expect("start") / 1e9;
    let end_s = faults[0]["end_ns"].as_f64().unwrap_or(start_s * 1e9) / 1e9;
    let impact: f64 = report["timeline"]["points"]
        .as_array()
        .expect("timeline")
        .iter()
        .filter(|p| (start_s - 1.0..=end_s + 10.0).contains(&p["t_s"].as_f64().unwrap_or(-1.0)))
        .map(|p| {
            p["errors"].as_f64().unwrap_or(0.0)
                + p["infos"].as_f64().unwrap_or(0.0)
                + p["failing_tenants"].as_f64().unwrap_or(0.0)
        })
        .sum();
    let recovery = report["recovery"]["faults"].as_array().expect("recovery");
    let impacted = recovery
        .iter()
        .any(|f| f["time_to_impact_ms"].is_u64() || f["impacted_series"].as_u64() > Some(0));
    assert!(
        impact > 0.0 || impacted,
        "the fault window shows no impact\n{}",
        run.log()
    );
    assert!(!recovery.is_empty(), "recovery not measured\n{}", run.log());
    assert!(
        recovery
            .iter()
            .all(|f| f["ttr_ms"].is_u64() || f["recovered"] == false),
        "every fault has a TTR or is marked never recovered\n{}",
        run.log()
    );
    assert_names_the_system_under_test(run);
    for name in ["consistency", "split-brain", "recovery", "isolation"] {
        let verdict = run.verdict(name);
        assert!(
            ["valid", "invalid", "unknown"]
                .contains(&verdict["status"].as_str().unwrap_or_default()),
            "{verdict}"
        );
    }
    for file in [
        "report.html",
        "report.xml",
        "summary.txt",
        "spec.yaml",
        "run.log",
        "logs/agent.log",
    ] {
        assert!(
            run.dir.join(file).exists(),
            "the run directory holds {file}"
        );
    }
    let faults: Value =
        serde_json::from_str(&lab.ok(&["faults", "--output", "json"])).expect("faults json");
    assert_eq!(
        faults,
        Value::Array(vec![]),
        "the ledger is empty after the run"
    );
    assert!(
        lab.our_rules().is_empty(),
        "no rule of ours remains: {:#?}",
        lab.our_rules()
    );
}

/// run.json, report.json, the HTML report and the summary name the NATS server that ran, as
/// the harness chose it.
fn assert_names_the_system_under_test(run: &Run) {
    let (program, version) = common::nats_server_under_test();
    for (file, servers) in [
        (
            "run.json",
            run.json("run.json")["system_under_test"].clone(),
        ),
        (
            "report.json",
            run.json("report.json")["experiment"]["system_under_test"].clone(),
        ),
    ] {
        let nats = servers
            .as_array()
            .and_then(|s| s.iter().find(|s| s["service"] == "nats"))
            .unwrap_or_else(|| panic!("{file} names no nats server: {servers}"));
        assert_eq!(nats["program"], program.as_str(), "{file}");
        assert_eq!(nats["version"], version.as_str(), "{file}");
    }
    for file in ["report.html", "summary.txt"] {
        let text = std::fs::read_to_string(run.dir.join(file)).expect("report");
        assert!(
            text.contains(version.as_str()),
            "{file} does not say {version}"
        );
    }
}

/// Runs a scenario and checks what every scenario must show. The lab is returned too: its
/// state root holds the run directory.
fn scenario(name: &str, edits: &[(&str, &str)]) -> Option<(TestLab, Run)> {
    if !can_run_lab() {
        return None;
    }
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = TestLab::up();
    let spec = spec_file(&lab, name, edits);
    let run = run(&lab, &spec, &["--duration", "6s"]);
    assert!(
        [0, 1].contains(&run.exit_code()),
        "{name} ended with an error\n{}",
        run.log()
    );
    assert_judged_and_clean(&lab, &run);
    let record = run.json("run.json");
    assert_eq!(record["scenario"], name);
    assert_eq!(record["aborted"], Value::Null, "{}", run.log());
    Some((lab, run))
}

#[test]
fn pod_failure_kills_a_gateway_replica_that_comes_back() {
    let Some((_lab, run)) = scenario("pod-failure", &[]) else {
        return;
    };
    let record = run.json("run.json");
    assert_eq!(record["injected"][0]["kind"], "kill");
}

#[test]
fn node_failure_drains_a_node() {
    let Some((_lab, run)) = scenario("node-failure", &[]) else {
        return;
    };
    assert_eq!(run.json("run.json")["injected"][0]["kind"], "drain");
}

#[test]
fn az_failure_cuts_a_zone_off() {
    let Some((_lab, run)) = scenario("az-failure", &[]) else {
        return;
    };
    let sides = &run.json("report.json")["faults"][0]["sides"];
    assert_eq!(sides.as_array().map(Vec::len), Some(2), "{sides}");
}

#[test]
fn nats_failure_takes_out_a_majority_of_the_stream_peers() {
    let Some((_lab, run)) = scenario("nats-failure", &[]) else {
        return;
    };
    let affected = &run.json("run.json")["injected"][0]["affected"];
    assert_eq!(
        affected.as_array().map(Vec::len),
        Some(2),
        "a majority of 3 servers: {affected}"
    );
}

#[test]
fn gateway_failure_kills_every_gateway() {
    let Some((_lab, run)) = scenario("gateway-failure", &[]) else {
        return;
    };
    let ids = &run.json("run.json")["injected"][0]["fault_ids"];
    assert_eq!(ids.as_array().map(Vec::len), Some(3), "{ids}");
}

#[test]
fn network_partition_splits_the_zones() {
    let Some((_lab, run)) = scenario("network-partition", &[]) else {
        return;
    };
    assert_eq!(run.json("run.json")["injected"][0]["kind"], "partition");
}

#[test]
fn negative_control_single_replica_streams_lose_service_and_fail_recovery() {
    let Some((_lab, run)) = scenario(
        "nats-failure",
        &[
            ("adapter: nats}", "adapter: nats, stream_replicas: 1}"),
            (
                "slo: {max_ttr: 30s}",
                "slo: {max_ttr: 5s, survivable: true}",
            ),
        ],
    ) else {
        return;
    };
    assert_eq!(run.exit_code(), 1, "{}", run.log());
    assert_eq!(
        run.verdict("recovery")["status"],
        "invalid",
        "{}",
        run.log()
    );
}

#[test]
fn negative_control_a_gateway_that_acks_before_storing_loses_writes() {
    if !can_run_lab() {
        return;
    }
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = TestLab::new();
    let topology = lab.ok(&["lab", "topology"]);
    assert!(topology.contains("tenant-gateway"), "{topology}");
    let unsafe_topology = topology.replacen(
        "      - --listen={node_ip}:8080\n",
        "      - --unsafe-ack\n      - --listen={node_ip}:8080\n",
        1,
    );
    assert_ne!(
        unsafe_topology, topology,
        "the gateway command is a YAML list item"
    );
    let path = lab.state_root().join("unsafe.yaml");
    std::fs::write(&path, unsafe_topology).expect("write");
    lab.ok(&["lab", "up", "--topology", path.to_str().expect("utf8")]);
    let spec = spec_file(&lab, "az-failure", &[("adapter: nats}", "adapter: http}")]);
    let run = run(&lab, &spec, &["--duration", "8s"]);
    assert_eq!(run.exit_code(), 1, "{}", run.log());
    let consistency = run.verdict("consistency");
    assert_eq!(consistency["status"], "invalid", "{}", run.log());
    let lost = consistency["anomalies"]
        .as_array()
        .expect("anomalies")
        .iter()
        .any(|a| a["name"] == "lost" && a["count"].as_u64() > Some(0));
    assert!(lost, "lost writes are named: {consistency}");
    assert_judged_and_clean(&lab, &run);
}

/// Starts az-failure, waits for the partition, sends SIGINT `times` times; returns the
/// output and the run directory.
fn interrupt_mid_fault(lab: &TestLab, times: usize) -> (String, PathBuf) {
    let spec = spec_file(lab, "az-failure", &[]);
    let results = lab.state_root().join("runs");
    let child = common::chaosctl_command(lab.state_root(), &lab.name)
        .args([
            "run",
            spec.to_str().expect("utf8"),
            "--tenants",
            "10",
            "--rate",
            "60",
            "--duration",
            "60s",
            "--output-dir",
            results.to_str().expect("utf8"),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn run");
    wait_until(
        Duration::from_secs(60),
        "the partition to be active",
        || !lab.our_rules().is_empty(),
    );
    for _ in 0..times {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .expect("SIGINT");
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(2),
        "aborted runs exit 2\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("ABORTED"), "{stdout}");
    assert!(lab.our_rules().is_empty(), "{:#?}", lab.our_rules());
    let faults: Value =
        serde_json::from_str(&lab.ok(&["faults", "--output", "json"])).expect("faults json");
    assert_eq!(faults, Value::Array(vec![]));
    let dir = PathBuf::from(
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("results: "))
            .expect("results line"),
    );
    (stdout, dir)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .expect("json")
}

#[test]
fn sigint_mid_fault_heals_everything_and_still_reports() {
    if !can_run_lab() {
        return;
    }
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = TestLab::up();
    let (_, dir) = interrupt_mid_fault(&lab, 1);
    let record = read_json(&dir.join("run.json"));
    assert!(
        record["aborted"]
            .as_str()
            .is_some_and(|a| a.contains("interrupted")),
        "{record}"
    );
    let report = read_json(&dir.join("report.json"));
    assert!(
        report["experiment"]["aborted"].is_string(),
        "the report itself is marked aborted"
    );
    assert!(std::fs::read_to_string(dir.join("report.html"))
        .expect("html")
        .contains("ABORTED"));
    let run_id = dir.file_name().and_then(|n| n.to_str()).expect("run id");
    let parent = dir.parent().and_then(Path::to_str).expect("results dir");
    let rerender = lab.chaosctl(&["report", run_id, "--output-dir", parent]);
    assert_eq!(
        rerender.status.code(),
        Some(2),
        "an aborted run stays exit 2"
    );
    let report = read_json(&dir.join("report.json"));
    assert!(
        report["experiment"]["aborted"].is_string(),
        "the re-rendered report is still marked aborted"
    );
}

#[test]
fn a_second_sigint_skips_the_read_back_but_never_the_heal() {
    if !can_run_lab() {
        return;
    }
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = TestLab::up();
    let (_, dir) = interrupt_mid_fault(&lab, 2);
    let record = read_json(&dir.join("run.json"));
    let aborted = record["aborted"].as_str().unwrap_or_default();
    assert!(
        aborted.contains("2x") && aborted.contains("healed"),
        "both signals handled, nothing killed: {record}"
    );
    // Whether the second signal came in time to skip the read-back, the report says what it
    // could judge: a consistency verdict without a read-back is never `valid`.
    let report = read_json(&dir.join("report.json"));
    let consistency = report["verdicts"]
        .as_array()
        .expect("verdicts")
        .iter()
        .find(|v| v["name"] == "consistency")
        .cloned()
        .expect("consistency");
    if aborted.contains("read-back was skipped") {
        assert_eq!(consistency["status"], "unknown", "{consistency}");
    }
}

#[test]
fn bad_run_input_gets_a_clear_error() {
    if !can_run_lab() {
        return;
    }
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = TestLab::up();
    let stderr = lab.fails(&["run", "moon-failure"]);
    assert!(
        stderr.contains("unknown scenario `moon-failure`") && stderr.contains("chaosctl list"),
        "{stderr}"
    );

    let unknown_field = spec_file(
        &lab,
        "az-failure",
        &[("baseline: 8s", "baseline: 8s\nbaselin: 9s")],
    );
    let stderr = lab.fails(&["run", unknown_field.to_str().expect("utf8")]);
    assert!(
        stderr.contains("unknown field `baselin`") && stderr.contains("line "),
        "{stderr}"
    );
    assert!(stderr.contains("column"), "{stderr}");

    let nothing = spec_file(
        &lab,
        "az-failure",
        &[("selector: {zone: random}", "selector: {zone: z9}")],
    );
    let stderr = lab.fails(&["run", nothing.to_str().expect("utf8")]);
    assert!(
        stderr.contains("faults[0].selector.zone") && stderr.contains("matches nothing"),
        "{stderr}"
    );

    let everything = spec_file(&lab, "pod-failure", &[("replica: random", "replica: all")]);
    let stderr = lab.fails(&["run", everything.to_str().expect("utf8")]);
    assert!(stderr.contains("blast radius"), "{stderr}");

    let short = spec_file(&lab, "az-failure", &[("duration: 1m 30s", "duration: 20s")]);
    let stderr = lab.fails(&["run", short.to_str().expect("utf8")]);
    assert!(
        stderr.contains("shorter than the baseline plus the faults"),
        "{stderr}"
    );
    assert!(lab.our_rules().is_empty());
    assert!(!lab.state_root().join("runs").exists(), "nothing ran");
}

#[test]
fn a_baseline_that_misses_the_steady_state_injects_nothing() {
    if !can_run_lab() {
        return;
    }
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = TestLab::up();
    // No real system answers within a microsecond at p99.
    let spec = spec_file(
        &lab,
        "az-failure",
        &[("baseline: 8s", "baseline: 5s\nsteady_state: {max_p99: 1us}")],
    );
    let run = run(&lab, &spec, &["--duration", "6s"]);
    assert_eq!(run.exit_code(), 2, "{}", run.log());
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    assert!(
        stdout.contains("steady state did not hold") && stdout.contains("nothing was injected"),
        "{stdout}"
    );
    let record = run.json("run.json");
    assert_eq!(record["injected"], Value::Array(vec![]), "{record}");
    assert!(lab.our_rules().is_empty());
}

#[test]
fn an_abort_condition_ends_the_run_and_heals() {
    if !can_run_lab() {
        return;
    }
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let lab = TestLab::up();
    // Killing every NATS server is an instant fault: the errors that follow are outside any
    // fault window, which is what abort conditions watch.
    let spec = spec_file(
        &lab,
        "pod-failure",
        &[
            ("adapter: http}", "adapter: nats}"),
            (
                "selector: {service: gateway, replica: random}",
                "selector: {service: nats, replica: all}",
            ),
            (
                "{error_rate_above: 0.5, for: 10s}",
                "{error_rate_above: 0.3, for: 2s}",
            ),
            (
                "slo: {max_ttr: 10s, survivable: true}",
                "slo: {max_ttr: 10s, survivable: true}\nblast_radius: {allow_all_zones: true}",
            ),
        ],
    );
    let run = run(&lab, &spec, &[]);
    assert_eq!(run.exit_code(), 2, "{}", run.log());
    let record = run.json("run.json");
    assert!(
        record["aborted"]
            .as_str()
            .is_some_and(|a| a.contains("abort condition 0 fired")),
        "{record}"
    );
    assert!(run.json("report.json")["experiment"]["aborted"].is_string());
    assert!(lab.our_rules().is_empty());
}
