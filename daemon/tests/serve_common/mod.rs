//! Shared by the tests that run `faultlined serve` on a real lab with a background load: the
//! daemon (killed by PID when dropped), the run index's rows, history files and the
//! background load's segment files.

#![allow(dead_code, clippy::missing_panics_doc)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use faultline_daemon::serve::client;
use faultline_experiments::history::Operation;
use faultline_experiments::schedule::{RunFilter, RunIndex, RunRow};

use crate::common::{wait_until, TestLab};

/// The bearer token the tests' daemons read.
pub const TOKEN: &str = "slice-token-0123456789abcdef";

/// Writes the token file (mode 0600) into the lab's state root.
pub fn token_file(lab: &TestLab) -> PathBuf {
    let token = lab.state_root().join("token");
    std::fs::write(&token, TOKEN).expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    token
}

/// A `faultlined serve` this test started; killed by PID when dropped.
pub struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    pub fn start(lab: &TestLab, schedule: &Path, token: &Path) -> Self {
        let log = lab.state_root().join("serve.log");
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_faultlined"))
            .args(["serve", "--listen", "127.0.0.1:0", "--open-reads", "--lab"])
            .arg(&lab.name)
            .arg("--state-root")
            .arg(lab.state_root())
            .arg("--schedule")
            .arg(schedule)
            .arg("--token-file")
            .arg(token)
            .env("FAULTLINE_AGENT", env!("CARGO_BIN_EXE_faultlined"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(out))
            .spawn()
            .expect("start faultlined serve");
        let daemon = Self { child, log };
        let pid = daemon.child.id() as i32;
        wait_until(
            Duration::from_secs(180),
            "faultlined serve to listen",
            || client::find(lab.state_root()).is_some_and(|info| info.pid == pid),
        );
        daemon
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn rows(lab: &TestLab) -> Vec<RunRow> {
    RunIndex::open(&RunIndex::default_path(lab.state_root()))
        .expect("index")
        .list(&RunFilter::default())
        .expect("list")
}

/// The operations of a history file (header skipped, a partial last line tolerated).
pub fn operations(path: &Path) -> Vec<Operation> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The background load's history files, by name (`history-<time>.jsonl`, `.jsonl.gz` once
/// archived).
pub fn background_files(lab: &TestLab) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(lab.state_root().join("background"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| n.starts_with("history-"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Triggers suite `suite` through the API and waits for its run to end; returns its row and
/// the daemon's log.
pub fn trigger_and_wait(lab: &TestLab, daemon: &Daemon, suite: &str) -> (RunRow, String) {
    let address = client::find(lab.state_root()).expect("daemon").listen;
    let answer = client::request(
        address,
        "POST",
        &format!("/api/v1/suites/{suite}/trigger"),
        Some(TOKEN),
        None,
    )
    .expect("trigger");
    assert_eq!(answer.status, 202, "{}", answer.body);
    wait_until(Duration::from_secs(150), "the run to finish", || {
        rows(lab).iter().any(|r| r.status.is_final())
    });
    let row = rows(lab)
        .into_iter()
        .find(|r| r.status.is_final())
        .expect("run");
    (row, daemon.log())
}

/// Waits for the background load's one live segment and some of its operations; returns its
/// path.
pub fn live_segment(lab: &TestLab, operations_at_least: usize) -> PathBuf {
    wait_until(Duration::from_secs(60), "the background load", || {
        background_files(lab).len() == 1
    });
    let segment = lab
        .state_root()
        .join("background")
        .join(&background_files(lab)[0]);
    wait_until(Duration::from_secs(60), "background operations", || {
        operations(&segment).len() > operations_at_least
    });
    segment
}
