//! `chaosctl load` refuses bad input with a clear error and no panic. None of these needs a lab:
//! the unreachable targets are closed ports on loopback.

mod common;

use std::path::Path;
use std::process::Command;

fn chaosctl(state_root: &Path, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_chaosctl"))
        .env("FAULTLINE_STATE_ROOT", state_root)
        .env_remove("FAULTLINE_LAB")
        .args(args)
        .output()
        .expect("run chaosctl");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    (output.status.success(), stderr)
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[test]
fn bad_input_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let history = dir.path().join("h.jsonl");
    let history = history.to_str().expect("utf-8");
    let nats = format!("nats://127.0.0.1:{}", closed_port());
    let gateway = format!("http://127.0.0.1:{}", closed_port());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--rate", "0"], "--rate must be a positive number"),
        (vec!["--rate", "-5"], "--rate must be a positive number"),
        (vec!["--tenants", "0"], "--tenants must be at least 1"),
        (vec!["--duration", "0s"], "--duration must be longer than 0"),
        (
            vec!["--history", "/nonexistent-faultline-dir/h.jsonl"],
            "cannot write the history file /nonexistent-faultline-dir/h.jsonl",
        ),
        (
            vec!["--history", "/tmp"],
            "cannot write the history file /tmp: Is a directory",
        ),
        (vec!["--nats", &nats], "cannot reach NATS at"),
        (
            vec!["--adapter", "http", "--gateway", &gateway],
            "cannot reach tenant gateway at",
        ),
        (
            vec!["--nats", "localhost-no-port"],
            "must be nats://IP:PORT",
        ),
        (vec!["--adapter", "smtp"], "unknown adapter `smtp`"),
        (
            vec!["--chat", "websocket"],
            "--chat websocket needs --adapter http",
        ),
        (vec!["--chat", "carrier-pigeon"], "unknown chat mode"),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["load", "--quiet"];
        args.extend(extra.iter().copied());
        // Defaults for what the case does not set: a short run against nothing (never reached,
        // the input checks come first) and a writable history.
        for (flag, value) in [("--duration", "5s"), ("--history", history)] {
            if !extra.contains(&flag) {
                args.extend([flag, value]);
            }
        }
        if !extra.contains(&"--nats") && !extra.contains(&"--gateway") {
            args.extend(["--nats", "nats://127.0.0.1:1"]);
        }
        let (ok, stderr) = chaosctl(dir.path(), &args);
        assert!(!ok, "{args:?} should fail");
        assert!(
            stderr.contains(expected),
            "{args:?}: expected `{expected}` in:\n{stderr}"
        );
        assert!(
            !Path::new(history).exists() || expected.contains("reach"),
            "{args:?} left {history} behind"
        );
    }
}

#[test]
fn a_lab_that_is_not_up_is_named() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let history = dir.path().join("h.jsonl");
    let (ok, stderr) = chaosctl(
        dir.path(),
        &[
            "load",
            "--lab",
            "nolab",
            "--history",
            history.to_str().expect("utf-8"),
            "--duration",
            "5s",
        ],
    );
    assert!(!ok);
    assert!(stderr.contains("lab `nolab` is not up"), "{stderr}");
}
