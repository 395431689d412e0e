//! One vocabulary on the command line: `--lab` everywhere (`--name` kept as an alias on `lab`
//! commands), `lab list`, and a lab chosen for commands that name none: the only lab up is used
//! and said; with several up, the error lists them.

mod common;

use std::process::{Command, Output};

use common::{can_run_lab, TestLab};

/// `chaosctl ARGS` with the lab's state root but no FAULTLINE_LAB: the lab is not named.
fn unnamed(lab: &TestLab, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chaosctl"))
        .env("FAULTLINE_STATE_ROOT", lab.state_root())
        .env("FAULTLINE_AGENT", env!("CARGO_BIN_EXE_faultlined"))
        .env_remove("FAULTLINE_LAB")
        .args(args)
        .output()
        .expect("run chaosctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn lab_commands_take_lab_and_keep_name_as_an_alias() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::up();
    for flag in ["--lab", "--name"] {
        let output = unnamed(
            &lab,
            &["lab", "status", flag, &lab.name, "--output", "json"],
        );
        assert!(output.status.success(), "{flag}: {}", text(&output.stderr));
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
        assert_eq!(status["name"], lab.name.as_str());
    }
    // A lab that is not up: the hint names the flag every command takes.
    let output = unnamed(&lab, &["lab", "status", "--lab", "nosuchlab"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("start it with `chaosctl lab up --lab nosuchlab`"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn the_only_lab_up_is_used_and_several_are_listed() {
    if !can_run_lab() {
        return;
    }
    let first = TestLab::up();
    // The only lab up, not named: used, and said on stderr.
    let output = unnamed(&first, &["faults", "--output", "json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains(&format!("using lab {}, the only lab up", first.name)),
        "{}",
        text(&output.stderr)
    );
    let output = unnamed(&first, &["lab", "status", "--output", "json"]);
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(status["name"], first.name.as_str());

    // A second lab under the same state root: now the choice is the user's.
    let second = common::unique_lab_name();
    let output = common::chaosctl_command(first.state_root(), &second)
        .args(["lab", "up"])
        .output()
        .expect("lab up");
    let _second_down = SecondLab {
        state_root: first.state_root().to_path_buf(),
        name: second.clone(),
    };
    assert!(output.status.success(), "{}", text(&output.stderr));
    let output = unnamed(&first, &["faults"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("2 labs are"), "{stderr}");
    assert!(
        stderr.contains(&first.name) && stderr.contains(&second),
        "{stderr}"
    );
    assert!(stderr.contains("--lab NAME"), "{stderr}");

    // `lab list` shows both, up.
    let output = unnamed(&first, &["lab", "list", "--output", "json"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
    let mut up: Vec<&str> = rows
        .as_array()
        .expect("rows")
        .iter()
        .filter(|row| row["up"] == true)
        .filter_map(|row| row["name"].as_str())
        .collect();
    up.sort_unstable();
    let mut expected = vec![first.name.as_str(), second.as_str()];
    expected.sort_unstable();
    assert_eq!(up, expected);
    for row in rows.as_array().expect("rows") {
        assert_eq!(row["ready"], row["replicas"], "{row}");
        assert!(row["replicas"].as_u64() > Some(0), "{row}");
    }
}

/// Takes the second lab down on every path (the first has its own guard).
struct SecondLab {
    state_root: std::path::PathBuf,
    name: String,
}

impl Drop for SecondLab {
    fn drop(&mut self) {
        let _ = common::chaosctl_command(&self.state_root, &self.name)
            .args(["lab", "down"])
            .output();
    }
}

/// `chaosctl ARGS` on an empty state root: for messages that come before any lab is touched.
fn on_empty_root(args: &[&str]) -> (Option<i32>, String) {
    let root = tempfile::tempdir().expect("state root");
    let output = Command::new(env!("CARGO_BIN_EXE_chaosctl"))
        .env("FAULTLINE_STATE_ROOT", root.path())
        .env_remove("FAULTLINE_LAB")
        .args(args)
        .output()
        .expect("run chaosctl");
    (output.status.code(), text(&output.stderr))
}

#[test]
fn durations_are_refused_in_the_users_units_naming_the_flag() {
    let pause = ["inject", "pause", "--service", "nats", "--replica", "1"];
    let cases: [(&[&str], &str); 5] = [
        (
            &["--for", "-5s"],
            "invalid value '-5s' for '--for <DURATION>': a duration cannot be negative: `-5s`; e.g. 30s, 5m or 1h30m",
        ),
        (
            &["--for=-5s"],
            "a duration cannot be negative: `-5s`",
        ),
        (
            &["--for", "30"],
            "`30` has no unit: write 30s for seconds or 30m for minutes",
        ),
        (
            &["--for", "3h"],
            "chaosctl: error: --for 3h is longer than the 2h limit; ask for less, or raise the limit with --max-fault-duration 3h",
        ),
        (
            &["--for", "0s"],
            "chaosctl: error: --for 0s: a fault must hold for some time, e.g. --for 30s",
        ),
    ];
    for (flags, expected) in cases {
        let args: Vec<&str> = pause.iter().chain(flags).copied().collect();
        let (code, stderr) = on_empty_root(&args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}:\n{stderr}");
        assert!(
            !stderr.contains(" ms "),
            "{args:?}: raw milliseconds:\n{stderr}"
        );
    }
}

#[test]
fn spec_errors_speak_plainly_and_suggest_the_near_miss() {
    let dir = tempfile::tempdir().expect("dir");
    let negative = dir.path().join("negative.yaml");
    std::fs::write(&negative, "name: x\nworkload: {tenants: -3}\n").expect("write");
    let (code, stderr) = on_empty_root(&["validate", &negative.display().to_string()]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains(
            "line 2 column 21: workload.tenants: must be a whole number, 0 or more, got -3"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("u32"), "{stderr}");

    let typo = dir.path().join("typo.yaml");
    std::fs::write(&typo, "name: x\nworkload: {tenats: 3}\n").expect("write");
    let (_, stderr) = on_empty_root(&["validate", &typo.display().to_string()]);
    assert!(
        stderr.contains("workload: unknown field `tenats`; did you mean `tenants`?"),
        "{stderr}"
    );

    let (code, stderr) = on_empty_root(&["show", "az-failur"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("unknown scenario `az-failur` (did you mean `az-failure`?)"),
        "{stderr}"
    );
}

#[test]
fn completion_scripts_load_in_their_shell_and_know_the_commands() {
    let (code, stderr) = on_empty_root(&["completion", "nosuchshell"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("bash"),
        "the error lists the shells: {stderr}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_chaosctl"))
        .args(["completion", "bash"])
        .output()
        .expect("completion");
    assert!(output.status.success());
    let script = text(&output.stdout);
    for word in ["inject", "quorum-loss", "--lab", "--max-fault-duration"] {
        assert!(script.contains(word), "the bash script lacks {word}");
    }
    // Sourced by a real bash, it registers a completion for chaosctl.
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("chaosctl.bash");
    std::fs::write(&path, &script).expect("write");
    let check = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p chaosctl", path.display()))
        .output()
        .expect("bash");
    assert!(
        check.status.success() && text(&check.stdout).contains("chaosctl"),
        "{}",
        text(&check.stderr)
    );
}

/// `chaosctl ARGS` on an empty state root, with stdout.
fn data_on_empty_root(args: &[&str]) -> Vec<u8> {
    let root = tempfile::tempdir().expect("state root");
    let output = Command::new(env!("CARGO_BIN_EXE_chaosctl"))
        .env("FAULTLINE_STATE_ROOT", root.path())
        .env_remove("FAULTLINE_LAB")
        .args(args)
        .output()
        .expect("run chaosctl");
    assert!(
        output.status.success(),
        "{args:?}: {}",
        text(&output.stderr)
    );
    output.stdout
}

#[test]
fn tables_also_come_as_json_and_yaml_with_the_same_content() {
    for command in [&["list"][..], &["lab", "list"][..], &["audit"][..]] {
        let json: serde_json::Value = if command == ["audit"] {
            // The audit log's JSON is one entry per line, like the file; none here.
            let out = data_on_empty_root(&[command, &["--output", "json"][..]].concat());
            assert!(out.is_empty(), "{}", text(&out));
            serde_json::Value::Array(vec![])
        } else {
            serde_json::from_slice(&data_on_empty_root(
                &[command, &["--output", "json"][..]].concat(),
            ))
            .expect("json")
        };
        let yaml: serde_json::Value = serde_yaml::from_slice(&data_on_empty_root(
            &[command, &["--output", "yaml"][..]].concat(),
        ))
        .unwrap_or_else(|e| panic!("{command:?}: not YAML: {e}"));
        assert_eq!(yaml, json, "{command:?}");
    }
    let scenarios: serde_json::Value =
        serde_yaml::from_slice(&data_on_empty_root(&["list", "--output", "yaml"])).expect("yaml");
    let names: Vec<&str> = scenarios
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names.len(), 6, "{scenarios}");
    assert!(names.contains(&"az-failure"), "{names:?}");
    assert_eq!(scenarios[0]["plan_id"], "T6.1");
}
