//! `faultlined serve` on a real lab, end to end: a suite due every minute runs twice; the run
//! index, `/metrics` and the page agree; an invalid schedule on SIGHUP keeps the old one; a
//! kill -9 of the daemon mid-run leaves the run aborted in the index, heals, and the schedule
//! resumes after a restart; SIGTERM heals and records the running run.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{can_run_lab, wait_until, TestLab};
use faultline_daemon::serve::client::{self, request};
use faultline_experiments::schedule::{RunFilter, RunIndex, RunRow, RunStatus};

/// A `faultlined serve` this test started; killed by PID when dropped.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(lab: &TestLab, schedule: &Path, token: &Path, log: PathBuf) -> Self {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_faultlined"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--open-reads",
                "--lab",
                &lab.name,
            ])
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
        let pid = daemon.pid();
        wait_until(
            Duration::from_secs(180),
            "faultlined serve to listen",
            || client::find(lab.state_root()).is_some_and(|info| info.pid == pid),
        );
        daemon
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).expect("signal");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A short pod kill: 5 s baseline, a gateway replica killed 2 s later, 15 s in all.
const SPEC: &str = "
name: quick-kill
description: Kill one gateway replica; it comes back.
workload: {tenants: 10, rate: 40, adapter: http}
faults:
  - kind: kill
    selector: {service: gateway, replica: random}
    start: 2s
baseline: 5s
duration: 15s
recovery_deadline: 8s
slo: {max_ttr: 10s, survivable: true}
";

const SCHEDULE: &str = "
suites:
  - name: minutely
    cron: \"* * * * *\"
    scenarios: [{scenario: quick-kill.yaml}]
background: {enabled: true, tenants: 10, rate: 20, rotate_every: 1m, keep_for: 1h}
";

fn rows(lab: &TestLab) -> Vec<RunRow> {
    RunIndex::open(&RunIndex::default_path(lab.state_root()))
        .expect("index")
        .list(&RunFilter::default())
        .expect("list")
}

fn address(lab: &TestLab) -> SocketAddr {
    client::find(lab.state_root()).expect("daemon").listen
}

fn get(lab: &TestLab, path: &str) -> String {
    let answer = request(address(lab), "GET", path, None, None).expect("request");
    assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
    answer.body
}

/// The index, the JSON API, /metrics and the page say the same about every run.
fn assert_index_api_metrics_and_page_agree(lab: &TestLab) {
    let api: serde_json::Value = serde_json::from_str(&get(lab, "/api/v1/runs")).expect("json");
    let api_ids: Vec<i64> = api
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_i64().expect("id"))
        .collect();
    let metrics = get(lab, "/metrics");
    let page = get(lab, "/");
    let now_rows = rows(lab);
    let mut expected: BTreeMap<&str, u64> = BTreeMap::new();
    for row in now_rows.iter().filter(|r| r.status.is_final()) {
        *expected.entry(row.status.as_str()).or_default() += 1;
        assert!(
            page.contains(&format!(
                "data-id=\"{}\" data-status=\"{}\"",
                row.id,
                row.status.as_str()
            )),
            "the page shows run {} as {}",
            row.id,
            row.status.as_str()
        );
    }
    for (status, count) in &expected {
        let line = format!(
            "faultline_runs_total{{suite=\"minutely\",scenario=\"quick-kill\",verdict=\"{status}\"}} {count}"
        );
        assert!(metrics.contains(&line), "missing `{line}`:\n{metrics}");
    }
    assert!(now_rows
        .iter()
        .all(|r| api_ids.contains(&r.id) || r.status == RunStatus::Queued));
    assert!(metrics.contains("faultline_next_run_timestamp_seconds{suite=\"minutely\"}"));
    assert!(metrics.contains("faultline_run_ttr_seconds{scenario=\"quick-kill\"}"));
    assert!(page.contains("<svg class=\"trend\" data-scenario=\"quick-kill\""));
}

/// An invalid schedule on SIGHUP keeps the old one and says why.
fn assert_an_invalid_reload_is_refused(lab: &TestLab, daemon: &Daemon, schedule: &Path) {
    std::fs::write(schedule, SCHEDULE.replace("cron:", "crn:")).expect("break");
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    wait_until(Duration::from_secs(10), "the reload to be refused", || {
        daemon.log().contains("SIGHUP: kept the old schedule")
    });
    assert!(
        daemon.log().contains("unknown field `crn`"),
        "{}",
        daemon.log()
    );
    assert!(get(lab, "/api/v1/schedules").contains("minutely"));
    std::fs::write(schedule, SCHEDULE).expect("restore");
}

/// The background load ran between the runs: its segments are gzip-compressed histories, and
/// /metrics counts its operations.
fn assert_background_history_is_rotated_and_counted(lab: &TestLab) {
    use std::io::Read as _;
    let dir = lab.state_root().join("background");
    let archives: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("background dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("history-") && n.ends_with(".jsonl.gz"))
        })
        .collect();
    assert!(
        !archives.is_empty(),
        "no archived background history in {}",
        dir.display()
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&archives[0]).expect("open"))
        .read_to_string(&mut text)
        .expect("gunzip");
    let header: serde_json::Value =
        serde_json::from_str(text.lines().next().expect("header")).expect("json");
    assert!(
        header["run_id"]
            .as_str()
            .is_some_and(|r| r.starts_with("background-")),
        "{header}"
    );
    assert!(text.lines().count() > 10, "operations were recorded");
    let metrics = get(lab, "/metrics");
    let ok: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("faultline_background_ops_total{outcome=\"ok\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(ok > 0, "background operations are counted:\n{metrics}");
}

/// `chaosctl halt` goes through the daemon; `resume` lets it run again.
fn assert_halt_and_resume_go_through_the_daemon(lab: &TestLab) {
    let halted = lab.ok(&["halt"]);
    assert!(halted.contains("faultlined serve (pid"), "{halted}");
    let status: serde_json::Value =
        serde_json::from_str(&get(lab, "/api/v1/schedules")).expect("json");
    assert!(status["halted"].is_string(), "{status}");
    lab.ok(&["resume"]);
    let status: serde_json::Value =
        serde_json::from_str(&get(lab, "/api/v1/schedules")).expect("json");
    assert!(status["halted"].is_null(), "{status}");
}

#[test]
fn a_suite_due_every_minute_runs_is_indexed_measured_and_survives_a_crash() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::new();
    let root = lab.state_root().to_path_buf();
    std::fs::write(root.join("quick-kill.yaml"), SPEC).expect("spec");
    let schedule = root.join("schedule.yaml");
    std::fs::write(&schedule, SCHEDULE).expect("schedule");
    let token = root.join("token");
    std::fs::write(&token, "e2e-token-0123456789abcdef").expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let log = root.join("serve.log");
    let daemon = Daemon::start(&lab, &schedule, &token, log.clone());
    assert_eq!(get(&lab, "/healthz"), "ok\n");

    // Two runs of the minutely suite, each judged.
    let finished = |rows: &[RunRow]| rows.iter().filter(|r| r.status.is_final()).count();
    wait_until(Duration::from_secs(300), "two finished runs", || {
        finished(&rows(&lab)) >= 2
    });
    let all = rows(&lab);
    let done: Vec<&RunRow> = all.iter().filter(|r| r.status.is_final()).collect();
    for row in &done {
        assert_eq!(row.suite.as_deref(), Some("minutely"));
        assert_eq!(row.trigger, "schedule");
        assert!(
            row.status.is_judged(),
            "run {} ended {:?}: {:?}\n{}",
            row.id,
            row.status,
            row.note,
            daemon.log()
        );
        assert_eq!(row.verdicts.len(), 4, "{row:?}");
        assert!(!row.ttr.is_empty(), "a TTR per fault: {row:?}");
        let dir = PathBuf::from(row.dir.as_deref().expect("dir"));
        assert!(dir.join("report.html").exists() && dir.join("run.json").exists());
    }
    assert!(get(&lab, "/readyz").starts_with("ready"));

    assert_index_api_metrics_and_page_agree(&lab);
    assert_background_history_is_rotated_and_counted(&lab);
    // One experiment at a time: a manual run is refused while the daemon may start one.
    let refused = lab.fails(&["run", "pod-failure"]);
    assert!(refused.contains("one experiment at a time"), "{refused}");

    assert_an_invalid_reload_is_refused(&lab, &daemon, &schedule);

    // kill -9 mid-run: the run is aborted in the index at restart, and the schedule resumes.
    wait_until(
        Duration::from_secs(120),
        "a run in its fault window",
        || {
            rows(&lab).iter().any(|r| {
                r.status == RunStatus::Running
                    && r.started_at
                        .is_some_and(|s| (chrono::Utc::now() - s).num_seconds() >= 8)
            })
        },
    );
    let crashed = rows(&lab)
        .into_iter()
        .find(|r| r.status == RunStatus::Running)
        .expect("running");
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    drop(daemon);
    let daemon = Daemon::start(&lab, &schedule, &token, log);
    let row = rows(&lab)
        .into_iter()
        .find(|r| r.id == crashed.id)
        .expect("row");
    assert_eq!(row.status, RunStatus::Aborted, "{row:?}");
    assert!(
        row.note
            .as_deref()
            .is_some_and(|n| n.contains("stopped mid-run")),
        "{row:?}"
    );
    wait_until(Duration::from_secs(150), "a run after the restart", || {
        rows(&lab)
            .iter()
            .any(|r| r.id > crashed.id && r.status != RunStatus::Queued)
    });
    let faults: serde_json::Value =
        serde_json::from_str(&lab.ok(&["faults", "--output", "json"])).expect("faults");
    assert!(
        faults
            .as_array()
            .is_some_and(|f| f.iter().all(|f| f["id"] != serde_json::Value::Null)),
        "faults is a list"
    );

    assert_halt_and_resume_go_through_the_daemon(&lab);

    // SIGTERM heals the running run, records it and exits.
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    let mut daemon = daemon;
    let status = daemon.child.wait().expect("wait");
    assert!(status.success(), "{status}\n{}", daemon.log());
    assert!(client::find(lab.state_root()).is_none());
    assert!(
        rows(&lab).iter().all(|r| r.status != RunStatus::Running),
        "nothing is left running: {:?}",
        rows(&lab)
    );
    let faults: serde_json::Value =
        serde_json::from_str(&lab.ok(&["faults", "--output", "json"])).expect("faults");
    assert_eq!(faults, serde_json::json!([]), "no fault is left active");
    assert!(lab.our_rules().is_empty());
}
