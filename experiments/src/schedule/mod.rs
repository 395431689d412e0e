//! Unattended suites: the schedule file, cron in real time zones, blackout windows, the run
//! index and the scheduler that ties them together.
//!
//! The scheduler does not know what it runs on. It hands each due scenario to a
//! [`SuiteRunner`] (the lab's runs the engine on the embedded lab; the Kubernetes controller
//! will start a runner Job) and records the result in the [`RunIndex`]. Time comes from a
//! [`Clock`], so tests drive days of schedule with a [`ManualClock`] and no sleeping.

pub mod blackout;
pub mod cron;
pub mod file;
pub mod index;
pub mod scheduler;
pub mod trends;
pub mod webhook;

use std::path::PathBuf;

pub use blackout::{active_at, ActiveBlackout};
pub use cron::{CronExpr, Zone};
pub use file::{
    is_schedule_yaml, load_schedule, shipped_schedule, Blackout, MissedRuns, ResolvedEntry,
    Schedule, ScheduleFile, Suite, DEFAULT_SCHEDULE,
};
pub use index::{FaultTtr, Owner, RunFilter, RunIndex, RunResult, RunRow, RunStatus, Trigger};
pub use scheduler::{
    Clock, Event, ManualClock, NextRun, RunObserver, RunRequest, Scheduler, SchedulerStatus,
    StopSignal, SuiteRunner, SystemClock,
};

/// Errors of the schedule file, the index and the scheduler. Each says where and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The schedule file does not parse; the message has line and column.
    #[error("{source_name}: {message}")]
    Parse {
        /// File name, or `default`.
        source_name: String,
        /// What is wrong, with line and column.
        message: String,
    },
    /// The schedule file parses but cannot run.
    #[error("{source_name}: {field}: {message}")]
    Invalid {
        /// File name, or `default`.
        source_name: String,
        /// The field at fault, e.g. `suites[0].scenarios[1].scenario`.
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// The schedule file cannot be read.
    #[error("cannot read schedule file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The run index failed.
    #[error("run index {}: {message}", path.display())]
    Index {
        /// The index file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// No such suite.
    #[error("no suite `{0}` in the schedule; `chaosctl schedule show` lists them")]
    UnknownSuite(String),
}

impl ScheduleError {
    /// A short label for counting errors in metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ScheduleError::Parse { .. } => "parse",
            ScheduleError::Invalid { .. } => "invalid",
            ScheduleError::Read { .. } => "read",
            ScheduleError::Index { .. } => "index",
            ScheduleError::UnknownSuite(_) => "unknown_suite",
        }
    }
}
