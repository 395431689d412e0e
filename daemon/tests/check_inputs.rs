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
