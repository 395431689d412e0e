//! The schedule and run-index commands as a user runs them, without a lab: `chaosctl schedule
//! show` round-trips through `chaosctl validate`, schedule errors carry line and column,
//! `faultlined serve` refuses a token file others can read, and `runs`/`trends` read the index.

use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;

use chrono::Utc;
use faultline_experiments::schedule::{FaultTtr, Owner, RunIndex, RunResult, RunStatus};

fn chaosctl(state_root: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_chaosctl"))
        .env("FAULTLINE_STATE_ROOT", state_root)
        .args(args)
        .output()
        .expect("run chaosctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_shipped_schedule_validates_and_errors_have_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let shown = chaosctl(dir.path(), &["schedule", "show"]);
    assert!(shown.status.success());
    let file = dir.path().join("schedule.yaml");
    std::fs::write(&file, &shown.stdout).expect("write");
    let valid = chaosctl(dir.path(), &["validate", file.to_str().expect("path")]);
    let out = text(&valid.stdout);
    assert!(valid.status.success(), "{out}{}", text(&valid.stderr));
    assert!(out.contains("valid schedule (2 suites"), "{out}");
    assert!(
        out.contains("nightly") && out.contains("weekly") && out.contains("az-failure"),
        "{out}"
    );

    let broken = text(&shown.stdout).replace("    cron: \"0 2 * * *\"", "    cron: \"0 2 * *\"");
    std::fs::write(&file, broken).expect("write");
    let invalid = chaosctl(dir.path(), &["validate", file.to_str().expect("path")]);
    assert_eq!(invalid.status.code(), Some(2));
    let error = text(&invalid.stderr);
    assert!(
        error.contains("line 8 column 5") && error.contains("not a cron expression"),
        "{error}"
    );
}

#[test]
fn serve_refuses_a_token_file_that_others_can_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "0123456789abcdef0123").expect("write");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let output = Command::new(env!("CARGO_BIN_EXE_faultlined"))
        .args(["serve", "--token-file"])
        .arg(&token)
        .arg("--state-root")
        .arg(dir.path())
        .output()
        .expect("run faultlined");
    assert_eq!(output.status.code(), Some(2));
    let error = text(&output.stderr);
    assert!(
        error.contains("mode 0644") && error.contains("chmod 600"),
        "{error}"
    );
    assert!(
        !dir.path().join("serve.json").exists(),
        "nothing was started"
    );

    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::write(&token, "short").expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_faultlined"))
        .args(["serve", "--token-file"])
        .arg(&token)
        .arg("--state-root")
        .arg(dir.path())
        .output()
        .expect("run faultlined");
    assert!(
        text(&output.stderr).contains("at least 16"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn runs_and_trends_read_the_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = RunIndex::open(&RunIndex::default_path(dir.path())).expect("index");
    let now = Utc::now();
    let id = index
        .begin_manual(
            "az-failure",
            now - chrono::Duration::minutes(5),
            Owner::this_process(),
        )
        .expect("begin");
    index
        .finish(
            id,
            now,
            &RunResult {
                run_id: Some("az-failure-20260101T000000".into()),
                status: Some(RunStatus::Failed),
                exit_code: Some(1),
                score: Some(42),
                ttr: vec![FaultTtr {
                    fault_id: "f-1".into(),
                    kind: "partition".into(),
                    ttr_ms: Some(7300),
                    recovered: true,
                }],
                anomalies: [("lost".to_owned(), 3)].into(),
                ..RunResult::default()
            },
        )
        .expect("finish");
    // A manual run whose chaosctl was killed: shown as aborted, not running forever.
    index
        .begin_manual(
            "pod-failure",
            now,
            Owner {
                pid: i32::MAX,
                start_ticks: 1,
            },
        )
        .expect("begin");
    drop(index);

    let table = text(&chaosctl(dir.path(), &["runs"]).stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATUS"),
        "{table}"
    );
    assert!(
        lines[1].contains("pod-failure") && lines[1].contains("aborted"),
        "{table}"
    );
    assert!(
        lines[2].contains("az-failure")
            && lines[2].contains("failed")
            && lines[2].contains("7.3s")
            && lines[2].contains("lost=3"),
        "{table}"
    );
    let json: serde_json::Value = serde_json::from_slice(
        &chaosctl(
            dir.path(),
            &["runs", "--scenario", "az-failure", "--output", "json"],
        )
        .stdout,
    )
    .expect("json");
    assert_eq!(json.as_array().map(Vec::len), Some(1));
    let shown = text(&chaosctl(dir.path(), &["runs", "show", "az-failure-20260101T000000"]).stdout);
    assert!(
        shown.contains("status:    failed") && shown.contains("ttr 7.3s"),
        "{shown}"
    );
    assert_eq!(
        chaosctl(dir.path(), &["runs", "show", "999"]).status.code(),
        Some(2)
    );

    let trends = text(&chaosctl(dir.path(), &["trends", "--weeks", "2"]).stdout);
    assert!(
        trends.contains("az-failure") && trends.contains("7.3s"),
        "{trends}"
    );
    let page = dir.path().join("trends.html");
    let wrote = chaosctl(
        dir.path(),
        &[
            "trends",
            "--output",
            "html",
            "--out",
            page.to_str().expect("path"),
        ],
    );
    assert!(wrote.status.success());
    let html = std::fs::read_to_string(&page).expect("html");
    assert!(html.contains("<svg class=\"trend\" data-scenario=\"az-failure\""));
}
