//! `scripts/demo.sh`, the README's main job: it honours the user's lab name and tears down the
//! lab it brought up on every exit path, and a run interrupted by Ctrl-C ends it non-zero. The
//! release build is skipped (`FAULTLINE_DEMO_BIN_DIR` points at this build's binaries);
//! everything else is real.

mod common;

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{can_run_lab, TestLab};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_chaosctl"))
        .parent()
        .expect("bin dir")
        .to_path_buf()
}

/// The demo on `lab`, in its own process group (so a test can Ctrl-C it like a terminal does).
fn demo(lab: &TestLab, agent: &Path) -> Child {
    Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/demo.sh"))
        .env("FAULTLINE_STATE_ROOT", lab.state_root())
        .env("FAULTLINE_LAB", &lab.name)
        .env("FAULTLINE_AGENT", agent)
        .env("FAULTLINE_DEMO_BIN_DIR", bin_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("start the demo")
}

/// Waits for the demo to end, killing its whole group if it outlives `timeout`.
fn finish(mut child: Child, timeout: Duration) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > timeout {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let output = child.wait_with_output().expect("output");
            panic!(
                "the demo did not end within {timeout:?}:\n{}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn assert_no_lab_left(lab: &TestLab, output: &Output) {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        lab.namespaces().is_empty(),
        "namespaces left: {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        lab.namespaces()
    );
    assert!(
        !lab.lab_dir().exists(),
        "the lab's state is left in {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        lab.lab_dir().display()
    );
    assert!(
        stdout.contains(&format!("bringing lab {} up", lab.name)),
        "the demo does not say which lab it uses:\n{stdout}"
    );
    assert!(
        stdout.contains(&format!("tearing lab {} down", lab.name)),
        "{stdout}"
    );
}

#[test]
fn a_failing_lab_up_leaves_no_lab_behind() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::new();
    // An agent that exits at once: `lab up` creates the namespaces, then fails.
    let output = finish(
        demo(&lab, Path::new("/bin/false")),
        Duration::from_secs(120),
    );
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("the lab agent exited"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_no_lab_left(&lab, &output);
}

/// The demo on `lab`, sent a Ctrl-C (to its whole group, as a terminal does) once `ready`
/// holds; what it wrote and how it ended.
fn demo_interrupted_when(
    lab: &TestLab,
    never: &str,
    poll: Duration,
    mut ready: impl FnMut() -> bool,
) -> Output {
    let child = demo(lab, Path::new(env!("CARGO_BIN_EXE_faultlined")));
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < Duration::from_secs(180), "{never}");
        std::thread::sleep(poll);
    }
    killpg(Pid::from_raw(child.id() as i32), Signal::SIGINT).expect("Ctrl-C");
    finish(child, Duration::from_secs(120))
}

#[test]
fn ctrl_c_while_the_lab_comes_up_leaves_no_lab_behind() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::new();
    // Ctrl-C as soon as the lab has begun to exist. On a busy machine it may land after
    // `lab up`, in the run, which heals and exits 2; the demo must end non-zero and clean
    // either way.
    let output = demo_interrupted_when(
        &lab,
        "the demo never began to bring the lab up",
        Duration::from_millis(5),
        || !lab.namespaces().is_empty(),
    );
    assert_ne!(output.status.code(), Some(0));
    assert_no_lab_left(&lab, &output);
}

#[test]
fn ctrl_c_during_the_run_ends_the_demo_non_zero_and_clean() {
    if !can_run_lab() {
        return;
    }
    let lab = TestLab::new();
    // Ctrl-C while the zone is cut off: the run catches it, heals and exits 2. Bash then runs
    // its INT trap (130) or, having seen the run handle the signal, skips it; then the demo
    // must pass the run's code on itself. Never 0.
    let lab_is_up = || {
        common::chaosctl_command(lab.state_root(), &lab.name)
            .args(["lab", "status"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    // Rules are listed only once the lab is whole: namespaces still being made cannot be read.
    let output = demo_interrupted_when(
        &lab,
        "the demo's run never cut the zone off",
        Duration::from_millis(100),
        || lab_is_up() && !lab.our_rules().is_empty(),
    );
    assert!(
        matches!(output.status.code(), Some(2 | 130)),
        "{:?}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout)
    );
    assert_no_lab_left(&lab, &output);
}
