//! Deadline guards: what ends a pause, a hold or a drain at its deadline when every other
//! Faultline process is dead.
//!
//! A partition needs none: its set elements carry a kernel timeout. A pause, a hold and a drain
//! have no kernel timer, so when one is recorded in the ledger, the process recording it starts
//! its guard, `faultlined guard`, before it injects anything (a guard that cannot start refuses
//! the fault). The guard is alone in its own session, so nothing that happens to its parent
//! (`chaosctl`, a run, `faultlined serve`) reaches it; its stdin and stdout are closed and its
//! stderr goes to the agent's log.
//!
//! It sleeps until the fault's deadline, then runs the lab's reconcile, the one the agent and
//! every `chaosctl` command run: it reverts whatever of the lab has expired and nothing that has
//! not. If the lab agent is dead then, the guard starts it again as `lab up` would, since a
//! released replica needs a supervisor to come back. Then it exits.
//!
//! It exits early and changes nothing when its fault's record is gone (reverted by hand, by a
//! halt, by the agent) or its lab is (`lab down` also kills it by PID). While it runs, its PID
//! and start time are in `guards/<fault id>.json`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use faultline_injectors::ledger::{now_unix_ms, FaultRecord};
use faultline_injectors::lifecycle::ReconcileReport;
use faultline_injectors::process::{read_proc_stat, ProcessTarget};
use serde::Serialize;

use super::control::{start_agent, HostPaths, LabContext};
use super::session::InOwnSession;
use super::state::{read_json, write_json};
use super::LabError;

/// The hidden `faultlined` subcommand a guard runs.
pub const SUBCOMMAND: &str = "guard";

/// How often a guard looks whether its fault and its lab are still there before the deadline.
const POLL: Duration = Duration::from_millis(250);
/// How often a guard retries a revert that failed at the deadline.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How long it keeps retrying before it gives up (and leaves the fault to the next reconcile).
const RETRY_FOR: Duration = Duration::from_secs(60);

/// Starts the deadline guard of `record`, detached, and records its PID and start time in
/// `guards/<fault id>.json`. The guard is our child until we exit: a thread of ours reaps it
/// when it ends first, so a long-lived caller collects no zombies.
///
/// # Errors
/// [`LabError::Guard`] when the lab has no `faultlined` recorded or it cannot be started;
/// [`LabError::State`] when the guard file cannot be written (the guard is killed then).
pub fn spawn(ctx: &LabContext, record: &FaultRecord) -> Result<ProcessTarget, LabError> {
    let guard_error = |program: &Path, reason: String| LabError::Guard {
        lab: ctx.paths.name.clone(),
        program: program.display().to_string(),
        reason,
    };
    let Some(program) = ctx.agent_binary.clone() else {
        return Err(guard_error(
            Path::new("faultlined"),
            "this lab was brought up before faultlined's path was recorded".to_owned(),
        ));
    };
    let log =
        super::agent::open_agent_log(&ctx.paths.agent_log()).map_err(|source| LabError::State {
            path: ctx.paths.agent_log(),
            source,
        })?;
    let mut child = Command::new(&program)
        .arg(SUBCOMMAND)
        .arg("--lab")
        .arg(&ctx.paths.name)
        .arg("--state-root")
        .arg(ctx.paths.state_root())
        .arg("--fault")
        .arg(&record.id)
        .arg("--deadline-unix-ms")
        .arg(record.deadline_unix_ms.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .in_own_session()
        .spawn()
        .map_err(|error| guard_error(&program, error.to_string()))?;
    let pid = child.id() as i32;
    let target = ProcessTarget {
        pid,
        start_ticks: read_proc_stat(&ctx.proc_root, pid).map_or(0, |stat| stat.start_ticks),
        label: format!("faultlined guard {}", record.id),
    };
    if let Err(error) = write_json(&guard_file(ctx, &record.id), &target) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(error);
    }
    // Reaps it if it ends while we live; if we die first, it is reparented and runs on.
    let _ = std::thread::Builder::new()
        .name(format!("reap-guard-{pid}"))
        .spawn(move || child.wait());
    Ok(target)
}

fn guard_file(ctx: &LabContext, fault: &str) -> PathBuf {
    ctx.paths.guard_file(fault)
}

/// What a guard did.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardOutcome {
    /// The lab was torn down before the deadline.
    LabGone,
    /// The fault's record was gone before the deadline: reverted by hand, by a halt or by the
    /// agent. The guard changed nothing.
    AlreadyReverted,
    /// The deadline came: the lab's reconcile ran and the fault is reverted.
    Reverted {
        /// What the reconcile (the last one, after retries) did.
        report: ReconcileReport,
        /// The PID of the lab agent the guard started, if it was dead.
        agent_started: Option<i32>,
    },
}

/// The guard of fault `fault` of this lab: waits until `deadline_unix_ms`, reconciles the lab,
/// starts its agent if it is dead, and returns. Returns early when the fault's record or the
/// lab is gone. Removes its guard file when it returns.
///
/// # Errors
/// The fault's revert still failed after [`RETRY_FOR`] of retries (the record stays for the
/// next reconcile), or the agent could not be started.
pub fn run(ctx: &LabContext, fault: &str, deadline_unix_ms: u64) -> Result<GuardOutcome, LabError> {
    let outcome = watch(ctx, fault, deadline_unix_ms);
    // Ours only if it names this process: a guard started again for the same fault must keep
    // its file.
    let file = guard_file(ctx, fault);
    let me = std::process::id() as i32;
    if read_json::<ProcessTarget>(&file)
        .ok()
        .flatten()
        .is_some_and(|recorded| recorded.pid == me)
    {
        let _ = fs::remove_file(&file);
    }
    outcome
}

fn watch(ctx: &LabContext, fault: &str, deadline_unix_ms: u64) -> Result<GuardOutcome, LabError> {
    let ledger = ctx.ledger();
    let mut first_attempt: Option<Instant> = None;
    let report = loop {
        if !ctx.paths.lab_file().exists() {
            return Ok(GuardOutcome::LabGone);
        }
        if !ledger.contains(fault) {
            return Ok(GuardOutcome::AlreadyReverted);
        }
        let now = now_unix_ms();
        if now < deadline_unix_ms {
            std::thread::sleep(POLL.min(Duration::from_millis(deadline_unix_ms - now)));
            continue;
        }
        let started = *first_attempt.get_or_insert_with(Instant::now);
        match ctx.reconcile() {
            Ok(report) if !ledger.contains(fault) => break report,
            Ok(report) => stderr_line!(
                "faultlined guard {fault}: the reconcile did not revert it yet: {}",
                serde_json::to_string(&report).unwrap_or_default()
            ),
            Err(error) => stderr_line!("faultlined guard {fault}: reconcile failed: {error}"),
        }
        if started.elapsed() >= RETRY_FOR {
            return Err(LabError::Guard {
                lab: ctx.paths.name.clone(),
                program: "faultlined guard".to_owned(),
                reason: format!(
                    "fault {fault} is still not reverted {} s after its deadline; the next reconcile (the agent, any chaosctl command) retries it",
                    RETRY_FOR.as_secs()
                ),
            });
        }
        std::thread::sleep(RETRY_EVERY);
    };
    // A released hold needs a supervisor to bring its replica back; so does every replica the
    // agent would have restarted meanwhile.
    let agent_started = if ctx.paths.lab_file().exists() && ctx.agent().is_none() {
        let host = HostPaths {
            state_root: ctx.paths.state_root().to_path_buf(),
            netns_dir: ctx.netns_dir.clone(),
            proc_root: ctx.proc_root.clone(),
        };
        let program = ctx
            .agent_binary
            .clone()
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("faultlined"));
        start_agent(ctx, &host, &program)?;
        ctx.agent().map(|agent| agent.pid)
    } else {
        None
    };
    Ok(GuardOutcome::Reverted {
        report,
        agent_started,
    })
}
