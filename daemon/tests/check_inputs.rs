//! `chaosctl check` on histories that hold nothing to check: unknown and exit 2, never VALID
//! 100/100; a damaged complete line is an error (exit 2) naming its file, line and column. No
//! lab, no root: these only read files.

use std::path::Path;
use std::process::Output;

fn check(state_root: &Path, history: &Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_chaosctl"))
        .env("FAULTLINE_STATE_ROOT", state_root)
        .env("FAULTLINE_LAB", "fl-check-inputs")
        .args(["check", "--history"])
        .arg(history)
        .output()
        .expect("chaosctl runs")
}

const HEADER: &str = r#"{"format":"faultline-history","version":1,"run_id":"r1","started_at_unix_ms":1764129600000,"adapter":"nats"}"#;

#[test]
fn histories_without_operations_are_unknown_with_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in [
        ("header-only.jsonl", format!("{HEADER}\n")),
        (
            "cut-garbage.jsonl",
            format!("{HEADER}\n\n{{\"tenant\":\"t1\",\"pro"),
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write history");
        let out = check(dir.path(), &path);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(2), "{name}: {stdout}");
        assert!(stdout.contains("UNKNOWN"), "{name}: {stdout}");
        assert!(!stdout.contains("VALID,"), "{name}: {stdout}");
        assert!(!stdout.contains("100/100"), "{name}: {stdout}");
        assert!(stdout.contains("no operation"), "{name}: {stdout}");
    }
}

#[test]
fn a_complete_line_of_garbage_is_an_error_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("garbage.jsonl");
    std::fs::write(&path, format!("{HEADER}\ngarbage\n")).expect("write history");
    let out = check(dir.path(), &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}:2:1: ", path.display())),
        "{stderr}"
    );
    assert!(!stderr.contains("line 1 column"), "{stderr}");
}

/// A run directory whose one fault took 40 s to recover from: within the default 60 s, beyond
/// the 30 s `slo.max_ttr` of the az-failure spec it ran (written as the run's spec.yaml).
fn run_dir_recovering_in_40s() -> tempfile::TempDir {
    use faultline_experiments::history::{
        HistoryHeader, Observation, OpKind, Operation, Outcome, Pattern, HISTORY_FORMAT,
        HISTORY_FORMAT_VERSION, OBSERVATIONS_FORMAT,
    };
    const MS: u64 = 1_000_000;
    const START_UNIX_MS: u64 = 1_764_129_600_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = faultline_experiments::spec::catalog::yaml("az-failure").expect("az-failure");
    assert!(
        spec.contains("max_ttr: 30s"),
        "the spec's own deadline: {spec}"
    );
    std::fs::write(dir.path().join("spec.yaml"), spec).expect("spec");
    let header = HistoryHeader {
        format: HISTORY_FORMAT.into(),
        version: HISTORY_FORMAT_VERSION,
        run_id: "r40".into(),
        started_at_unix_ms: START_UNIX_MS,
        adapter: "nats".into(),
        client: None,
    };
    let mut history = serde_json::to_string(&header).expect("header") + "\n";
    // One write every 100 ms for 100 s; the fault is healed at 20 s, writes fail until 60 s.
    for i in 0..1000_u64 {
        let at_ms = i * 100;
        let failing = (15_000..60_000).contains(&at_ms);
        let op = Operation {
            tenant: "t001".into(),
            process: "t001-p".into(),
            node: "a1".into(),
            reconnected: false,
            sent_node: None,
            kind: OpKind::Write,
            pattern: Pattern::Chat,
            value: Some(format!("t001/c/{i}")),
            attempt: 1,
            stream: "FL_t001".into(),
            seq: (!failing).then_some(i + 1),
            invoke_ns: at_ms * MS,
            complete_ns: at_ms * MS + 5 * MS,
            invoke_unix_ms: START_UNIX_MS + at_ms,
            complete_unix_ms: START_UNIX_MS + at_ms + 5,
            outcome: if failing { Outcome::Fail } else { Outcome::Ok },
            error: failing.then(|| "unavailable".to_owned()),
            read: None,
            served_tenant: None,
            client_zone: None,
        };
        history += &(serde_json::to_string(&op).expect("op") + "\n");
    }
    std::fs::write(dir.path().join("history.jsonl"), history).expect("history");
    let observations = [
        Observation::Header {
            format: OBSERVATIONS_FORMAT.into(),
            version: HISTORY_FORMAT_VERSION,
            run_id: "r40".into(),
        },
        Observation::Fault {
            fault_id: "f1".into(),
            kind: "partition".into(),
            start_ns: 15_000 * MS,
            end_ns: Some(20_000 * MS),
            injecting_ns: None,
            reverting_ns: None,
            sides: vec![vec!["a1".into()], vec!["b1".into(), "c1".into()]],
            affected: vec!["a1".into()],
            survivable: false,
            chosen: None,
        },
    ];
    let text: String = observations
        .iter()
        .map(|o| serde_json::to_string(o).expect("observation") + "\n")
        .collect();
    std::fs::write(dir.path().join("observations.jsonl"), text).expect("observations");
    dir
}

/// `chaosctl check ARGS --output json` → (report, stderr).
fn check_json(state_root: &Path, args: &[&std::ffi::OsStr]) -> (serde_json::Value, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chaosctl"))
        .env("FAULTLINE_STATE_ROOT", state_root)
        .env("FAULTLINE_LAB", "fl-check-inputs")
        .arg("check")
        .args(args)
        .args(["--output", "json"])
        .output()
        .expect("chaosctl runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("report json: {e}\nstderr: {stderr}"));
    (report, stderr)
}

fn recovery_status(report: &serde_json::Value) -> &str {
    report["verdicts"]
        .as_array()
        .expect("verdicts")
        .iter()
        .find(|v| v["name"] == "recovery")
        .and_then(|v| v["status"].as_str())
        .unwrap_or_else(|| panic!("no recovery verdict in {report}"))
}

#[test]
fn a_run_directory_is_judged_with_its_specs_slo_unless_told_otherwise() {
    let dir = run_dir_recovering_in_40s();
    let run = dir.path().as_os_str();

    let (report, stderr) = check_json(dir.path(), &[run]);
    assert_eq!(
        report["config"]["slo"]["recovery_deadline_ms"], 30_000,
        "{stderr}"
    );
    assert_eq!(recovery_status(&report), "invalid", "40 s > 30 s: {report}");
    assert!(
        stderr.contains(&format!(
            "the SLOs of {}",
            dir.path().join("spec.yaml").display()
        )),
        "says which SLO it used: {stderr}"
    );
    assert!(stderr.contains("recovery within 30s"), "{stderr}");

    let (report, stderr) = check_json(dir.path(), &[run, "--default-slo".as_ref()]);
    assert_eq!(
        report["config"]["slo"]["recovery_deadline_ms"], 60_000,
        "{stderr}"
    );
    assert_eq!(recovery_status(&report), "valid", "40 s < 60 s: {report}");
    assert!(
        stderr.contains("the default SLO (--default-slo)"),
        "{stderr}"
    );
    assert!(stderr.contains("recovery within 1m"), "{stderr}");

    // The files by flag judge with the defaults, as before, and say so.
    let history = dir.path().join("history.jsonl");
    let observations = dir.path().join("observations.jsonl");
    let (report, stderr) = check_json(
        dir.path(),
        &[
            "--history".as_ref(),
            history.as_os_str(),
            "--observations".as_ref(),
            observations.as_os_str(),
        ],
    );
    assert_eq!(
        report["config"]["slo"]["recovery_deadline_ms"], 60_000,
        "{stderr}"
    );
    assert!(stderr.contains("the default SLO"), "{stderr}");
}
