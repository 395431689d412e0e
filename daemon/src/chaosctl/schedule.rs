//! `chaosctl schedule show | status | reload | trigger`: the shipped schedule, and the running
//! `faultlined serve` (found through `<state root>/serve.json`).

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use faultline_experiments::schedule::DEFAULT_SCHEDULE;

use crate::serve::client::{self, ServeInfo};

#[derive(Subcommand)]
pub(crate) enum ScheduleCommand {
    /// Print the shipped schedule (YAML), ready to copy and edit.
    Show,
    /// What the running daemon is doing: the run going on, the queue, each suite's next run.
    Status,
    /// Make the running daemon re-read its schedule file (as SIGHUP does). An invalid file keeps
    /// the old schedule; the error says why.
    Reload,
    /// Queue every scenario of a suite now. It starts when nothing else runs and no blackout or
    /// halt is in force.
    Trigger {
        /// Suite name.
        suite: String,
    },
}

fn daemon(state_root: &Path) -> anyhow::Result<ServeInfo> {
    client::find(state_root).ok_or_else(|| {
        anyhow::anyhow!(
            "no faultlined serve is running for {}; start one with `faultlined serve --token-file FILE`",
            state_root.display()
        )
    })
}

fn answer(answer: &client::Answer) -> anyhow::Result<ExitCode> {
    let pretty = serde_json::from_str::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| answer.body.clone());
    if (200..300).contains(&answer.status) {
        println!("{pretty}");
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!("the daemon answered {}: {pretty}", answer.status)
    }
}

pub(crate) fn run(state_root: &Path, command: &ScheduleCommand) -> anyhow::Result<ExitCode> {
    match command {
        ScheduleCommand::Show => {
            print!("{DEFAULT_SCHEDULE}");
            Ok(ExitCode::SUCCESS)
        }
        ScheduleCommand::Status => answer(&client::call(
            &daemon(state_root)?,
            "GET",
            "/api/v1/schedules",
        )?),
        ScheduleCommand::Reload => answer(&client::call(
            &daemon(state_root)?,
            "POST",
            "/api/v1/schedule/reload",
        )?),
        ScheduleCommand::Trigger { suite } => answer(&client::call(
            &daemon(state_root)?,
            "POST",
            &format!("/api/v1/suites/{suite}/trigger"),
        )?),
    }
}

/// Halts or resumes through the running daemon, if there is one: it stops its running
/// experiment (which heals) and blocks new runs. Returns whether a daemon was there.
pub(crate) fn through_daemon(state_root: &Path, halt: bool) -> anyhow::Result<bool> {
    let Some(info) = client::find(state_root) else {
        return Ok(false);
    };
    let path = if halt {
        "/api/v1/halt"
    } else {
        "/api/v1/resume"
    };
    let reply = client::call(&info, "POST", path)?;
    anyhow::ensure!(
        (200..300).contains(&reply.status),
        "faultlined serve (pid {}) answered {} to {path}: {}",
        info.pid,
        reply.status,
        reply.body
    );
    println!(
        "faultlined serve (pid {}): {}",
        info.pid,
        if halt {
            "halted; its running experiment heals and stops, no run starts until resume"
        } else {
            "runs allowed again"
        }
    );
    Ok(true)
}
