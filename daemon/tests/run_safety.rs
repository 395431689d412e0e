//! A run under a hostile operator, on a real lab with real signals sent by PID (issue 13,
//! parts 4-6): one run per lab (a second run or inject is refused naming the first, a lock left
//! by a SIGKILLed run is taken over and said); SIGHUP and SIGPIPE heal like SIGINT; a signal
//! while judging marks the run aborted; a second SIGINT during the read-back cuts it short; a
//! halt ends the fault windows of a running run; and a halt covers labs brought up after it,
//! refusing a run before it starts anything.
//!
//! Runs are shortened catalog specs, one at a time: each loads the machine.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::{can_run_lab, chaosctl_command, spec_file, wait_until, TestLab};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn results_dir(lab: &TestLab) -> PathBuf {
    lab.state_root().join("runs")
}

/// `chaosctl run SPEC` in the background, stdout and stderr piped.
fn spawn_run(lab: &TestLab, spec: &Path, extra: &[&str]) -> Child {
    let results = results_dir(lab);
    chaosctl_command(lab.state_root(), &lab.name)
        .args([
            "run",
            spec.to_str().expect("utf8"),
            "--tenants",
            "10",
            "--rate",
            "60",
            "--output-dir",
            results.to_str().expect("utf8"),
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chaosctl run")
}

fn signal(child: &Child, signal: Signal) {
    kill(Pid::from_raw(child.id() as i32), signal).expect("send the signal");
}

/// Every run directory in the results directory.
fn run_dirs(lab: &TestLab) -> Vec<PathBuf> {
    std::fs::read_dir(results_dir(lab))
        .map(|entries| entries.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .expect("json")
}

/// Waits for the run to exit; returns its exit code, stdout and stderr.
fn finish(child: Child) -> (Option<i32>, String, String) {
    let output = child.wait_with_output().expect("wait for chaosctl run");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// What an exited child wrote.
fn finish_now(child: &mut Child) -> (String, String) {
    use std::io::Read as _;
    let mut out = (String::new(), String::new());
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out.0);
    }
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut out.1);
    }
    out
}

/// The one run directory, once the run has ended.
fn only_run_dir(lab: &TestLab) -> PathBuf {
    let dirs = run_dirs(lab);
    assert_eq!(dirs.len(), 1, "one run directory: {dirs:?}");
    dirs[0].clone()
}

/// What every interrupted run must show: exit 2, no rule and no fault of ours left, and a run
/// record and report marked aborted with `why`.
fn assert_healed_and_aborted(lab: &TestLab, code: Option<i32>, log: &str, why: &str) -> Value {
    assert_eq!(code, Some(2), "an interrupted run exits 2\n{log}");
    assert!(lab.our_rules().is_empty(), "{:#?}", lab.our_rules());
    let faults: Value =
        serde_json::from_str(&lab.ok(&["faults", "--output", "json"])).expect("faults json");
    assert_eq!(faults, Value::Array(vec![]), "no fault left");
    let dir = only_run_dir(lab);
    let record = read_json(&dir.join("run.json"));
    assert!(
        record["aborted"].as_str().is_some_and(|a| a.contains(why)),
        "run.json aborted with `{why}`: {record}\n{log}"
    );
    let report = read_json(&dir.join("report.json"));
    assert!(
        report["experiment"]["aborted"].is_string(),
        "the report itself is marked aborted"
    );
    record
}

/// az-failure with a long partition, signalled once the partition is in the kernel.
fn signal_mid_partition(lab: &TestLab, sig: Signal) -> (Option<i32>, String, String) {
    let spec = spec_file(lab, "az-failure", &[]);
    let child = spawn_run(lab, &spec, &["--duration", "60s"]);
    wait_until(
        Duration::from_secs(60),
        "the partition to be active",
        || !lab.our_rules().is_empty(),
    );
    signal(&child, sig);
    finish(child)
}

#[test]
fn sighup_heals_like_sigint_and_still_reports() {
    if !can_run_lab() {
        return;
    }
    let _turn = one_at_a_time();
    let lab = TestLab::up();
    let (code, stdout, stderr) = signal_mid_partition(&lab, Signal::SIGHUP);
    let log = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("SIGHUP: healing every fault"), "{log}");
    assert!(stdout.contains("ABORTED"), "{log}");
    assert_healed_and_aborted(&lab, code, &log, "interrupted");
}

#[test]
fn a_closed_stdout_heals_like_sigint_and_never_ends_the_run_early() {
    if !can_run_lab() {
        return;
    }
    let _turn = one_at_a_time();
    let lab = TestLab::up();
    let spec = spec_file(&lab, "az-failure", &[]);
    let mut child = spawn_run(&lab, &spec, &["--duration", "60s"]);
    wait_until(
        Duration::from_secs(60),
        "the partition to be active",
        || !lab.our_rules().is_empty(),
    );
    // As `chaosctl run … | head` does once it has its lines: the reader goes away. The next
    // status line (at most 5 s later) meets a closed pipe.
    drop(child.stdout.take());
    let (code, _, stderr) = finish(child);
    assert!(stderr.contains("SIGPIPE"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let record = assert_healed_and_aborted(&lab, code, &stderr, "interrupted");
    assert!(
        std::fs::read_to_string(only_run_dir(&lab).join("report.html"))
            .expect("a partial report")
            .contains("ABORTED"),
        "{record}"
    );
}

/// pod-failure, the shortest catalog run, as it goes from phase to phase: calls `at_line` with
/// each line of its live display until it returns true.
fn run_until_line(lab: &TestLab, mut at_line: impl FnMut(&str, &Child) -> bool) -> Child {
    let spec = spec_file(lab, "pod-failure", &[]);
    let mut child = spawn_run(lab, &spec, &[]);
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines
            .next()
            .expect("the run ended before the awaited phase")
            .expect("read a line");
        if at_line(&line, &child) {
            break;
        }
    }
    // Keep reading so that the run never blocks on a full pipe; the lines are not needed.
    std::thread::spawn(move || for _ in lines {});
    child
}

#[test]
fn sigterm_while_judging_marks_the_run_aborted() {
    if !can_run_lab() {
        return;
    }
    let _turn = one_at_a_time();
    let lab = TestLab::up();
    let child = run_until_line(&lab, |line, child| {
        // The live display prints a line at each phase change; `judging` is the checkers.
        if line.starts_with("check") || line.starts_with("judging") {
            signal(child, Signal::SIGTERM);
            return true;
        }
        false
    });
    let (code, _, stderr) = finish(child);
    let log = format!("stderr:\n{stderr}");
    assert_eq!(code, Some(2), "a signal after the start is exit 2\n{log}");
    let dir = only_run_dir(&lab);
    let record = read_json(&dir.join("run.json"));
    assert!(
        record["aborted"]
            .as_str()
            .is_some_and(|a| a.contains("interrupted")),
        "{record}\n{log}"
    );
    assert_eq!(record["exit_code"], 2, "{record}");
    assert!(read_json(&dir.join("report.json"))["experiment"]["aborted"].is_string());
}

#[test]
fn a_second_sigint_during_the_read_back_cuts_it_short_as_it_says() {
    if !can_run_lab() {
        return;
    }
    let _turn = one_at_a_time();
    let lab = TestLab::up();
    let spec = spec_file(&lab, "az-failure", &[]);
    let mut child = spawn_run(&lab, &spec, &["--duration", "60s"]);
    wait_until(
        Duration::from_secs(60),
        "the partition to be active",
        || !lab.our_rules().is_empty(),
    );
    signal(&child, Signal::SIGINT);
    // The second comes once the read-back has begun: long after the first, when the run has
    // already decided to read back.
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines
            .next()
            .expect("the run ended before the read-back")
            .expect("read a line");
        if line.starts_with("read") {
            signal(&child, Signal::SIGINT);
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    let (code, _, stderr) = finish(child);
    assert!(
        stderr.contains("again: skipping the read-back"),
        "the message: {stderr}"
    );
    let record = assert_healed_and_aborted(&lab, code, &stderr, "2x");
    let aborted = record["aborted"].as_str().unwrap_or_default();
    assert!(
        aborted.contains("read-back was cut short") || aborted.contains("read-back was skipped"),
        "the behaviour agrees with the message: {record}\n{stderr}"
    );
}

#[test]
fn a_halt_during_a_hold_ends_the_run_s_fault_windows_then() {
    if !can_run_lab() {
        return;
    }
    let _turn = one_at_a_time();
    let lab = TestLab::up();
    // Quorum loss by stopping: the chosen NATS replicas are held down (no restarts).
    let spec = spec_file(
        &lab,
        "nats-failure",
        &[
            ("mode: isolate", "mode: stop"),
            ("duration: 20s", "duration: 60s"),
        ],
    );
    let child = spawn_run(&lab, &spec, &[]);
    let held = || lab.status()["services"].to_string().contains("\"held\"");
    wait_until(Duration::from_secs(60), "a replica to be held", held);
    lab.ok(&["halt"]);
    let (code, stdout, stderr) = finish(child);
    let log = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    lab.ok(&["resume"]);
    assert!(!held(), "the halt released the holds: {}", lab.status());
    assert!(stdout.contains("ABORTED: halted"), "{log}");
    let record = assert_healed_and_aborted(&lab, code, &log, "halted");
    // The window ends when the halt reverted the fault, seconds after it began, not at its
    // planned end 60 s after.
    let report = read_json(&only_run_dir(&lab).join("report.json"));
    let faults = report["faults"].as_array().expect("fault windows");
    assert_eq!(faults.len(), 1, "{record}");
    let at = |key: &str| faults[0][key].as_u64().unwrap_or_else(|| panic!("{key}"));
    let held_for = Duration::from_nanos(at("end_ns") - at("start_ns"));
    assert!(
        held_for < Duration::from_secs(30),
        "the window lasted {held_for:?} of the planned 60 s: {}",
        faults[0]
    );
    assert_eq!(
        record["injected"][0]["end_ns"], faults[0]["end_ns"],
        "{record}"
    );
}

/// The holder named in the lab's run lock file, once there is one.
fn lock_holder(lab: &TestLab) -> Option<Value> {
    let path = lab
        .state_root()
        .join("locks")
        .join(format!("{}.lock", lab.name));
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

#[test]
fn one_run_per_lab_and_a_dead_run_s_lock_is_taken_over_and_said() {
    if !can_run_lab() {
        return;
    }
    let _turn = one_at_a_time();
    let lab = TestLab::up();
    // A long baseline: the first run holds the lab while the others try.
    let spec = spec_file(
        &lab,
        "pod-failure",
        &[
            ("baseline: 8s", "baseline: 60s"),
            ("duration: 45s", "duration: 90s"),
        ],
    );
    let mut first = spawn_run(&lab, &spec, &[]);
    let first_pid = i64::from(first.id());
    wait_until(Duration::from_secs(30), "the first run's lock", || {
        assert!(
            first.try_wait().expect("poll the first run").is_none(),
            "the first run ended early: {:?}",
            finish_now(&mut first)
        );
        lock_holder(&lab).is_some_and(|h| h["pid"] == first_pid)
    });
    let run_id = lock_holder(&lab).expect("holder")["run_id"]
        .as_str()
        .expect("run id")
        .to_owned();

    let second = lab.chaosctl(&[
        "run",
        spec.to_str().expect("utf8"),
        "--output-dir",
        results_dir(&lab).to_str().expect("utf8"),
    ]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    for named in [
        format!("lab `{}` is busy", lab.name),
        format!("run {run_id}"),
        format!("pid {first_pid}"),
        "started ".to_owned(),
    ] {
        assert!(stderr.contains(&named), "`{named}` in: {stderr}");
    }
    assert_eq!(
        run_dirs(&lab)
            .iter()
            .filter(|d| !d.ends_with(&run_id))
            .count(),
        0,
        "the second run made nothing: {:?}",
        run_dirs(&lab)
    );
    let inject = lab.fails(&["inject", "kill", "--service", "gateway", "--replica", "1"]);
    assert!(
        inject.contains("is busy") && inject.contains(&format!("pid {first_pid}")),
        "{inject}"
    );

    // SIGKILL: no chance to release the lock. The kernel drops the flock; the file still
    // names the dead run, and the next taker says it took over.
    signal(&first, Signal::SIGKILL);
    first.wait().expect("reap the first run");
    let output = lab.chaosctl(&["inject", "kill", "--service", "gateway", "--replica", "1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("took over")
            && stderr.contains(&format!("run {run_id}"))
            && stderr.contains("its process is gone"),
        "{stderr}"
    );
    // Released on exit: the next one takes it without a word.
    let output = lab.chaosctl(&["inject", "kill", "--service", "gateway", "--replica", "2"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && !stderr.contains("took over"),
        "{stderr}"
    );
}

#[test]
fn a_halt_holds_for_labs_brought_up_after_it_and_refuses_a_run_before_any_load() {
    if !can_run_lab() {
        return;
    }
    let _turn = one_at_a_time();
    // No lab is up when the halt comes.
    let lab = TestLab::new();
    let halted = lab.ok(&["halt"]);
    assert!(halted.contains("until `chaosctl resume`"), "{halted}");

    let spec = spec_file(&lab, "pod-failure", &[]);
    let refused = lab.chaosctl(&["run", spec.to_str().expect("utf8")]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("halted") && stderr.contains("nothing was started"),
        "{stderr}"
    );
    assert!(
        !lab.lab_dir().join("lab.json").exists() && lab.namespaces().is_empty(),
        "refused before the lab was brought up: {:?}",
        lab.namespaces()
    );
    assert!(run_dirs(&lab).is_empty(), "no run directory");

    // A lab brought up after the halt is halted too.
    lab.ok(&["lab", "up"]);
    let inject = lab.fails(&["inject", "partition", "--zone", "a", "--for", "30s"]);
    assert!(
        inject.contains("halted") && inject.contains("chaosctl resume"),
        "{inject}"
    );
    assert!(lab.our_rules().is_empty());
    // Listing faults and the lab's status say so, naming the way out.
    let faults = lab.ok(&["faults"]);
    assert!(
        faults.contains("HALTED since ") && faults.contains("until `chaosctl resume`"),
        "{faults}"
    );
    let status = lab.ok(&["lab", "status"]);
    assert!(status.contains("FAULTS HALTED"), "{status}");

    lab.ok(&["resume"]);
    assert!(!lab.ok(&["faults"]).contains("HALTED"));
    lab.ok(&["inject", "partition", "--zone", "a", "--for", "30s"]);
    assert!(!lab.our_rules().is_empty());
    // And a halt reverts it in this lab, which did not exist when the first halt came.
    lab.ok(&["halt"]);
    assert!(lab.our_rules().is_empty());
    lab.ok(&["resume"]);
}
