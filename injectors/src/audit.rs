//! The audit log: every injection, revert, expiry, halt and resume, one JSON line each,
//! appended and fsynced to one file (`<state root>/audit.jsonl` on the lab) by whichever
//! process did it: `chaosctl`, an engine run, or the agent's reconcile.
//!
//! An entry that cannot be written is reported on stderr and never stops the fault operation:
//! a revert must not fail because the disk is full.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::ledger::{now_unix_ms, FaultRecord};
use crate::{Error, Result};

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditEvent {
    /// A fault was injected (or its injection failed).
    Inject,
    /// A fault was reverted before its deadline: by hand, by its run, or by a halt.
    Revert,
    /// A fault was reverted because its deadline passed.
    Expire,
    /// New faults were blocked and every active one reverted.
    Halt,
    /// New faults were allowed again.
    Resume,
}

impl AuditEvent {
    /// The name used in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inject => "inject",
            Self::Revert => "revert",
            Self::Expire => "expire",
            Self::Halt => "halt",
            Self::Resume => "resume",
        }
    }
}

/// One line of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When, RFC 3339 with milliseconds (UTC).
    pub time: String,
    /// When, Unix milliseconds.
    pub unix_ms: u64,
    /// The real uid of the process that did it.
    pub uid: u32,
    /// The user behind `sudo`, when it ran through sudo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sudo_user: Option<String>,
    /// Its PID.
    pub pid: u32,
    /// Its command line.
    pub command: String,
    /// The lab (or scope) it acted on; `*` for the whole state root.
    pub lab: String,
    /// What happened.
    pub event: AuditEvent,
    /// The fault id, for fault events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<String>,
    /// The fault's kind (`partition`, `pause`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The fault's target, described.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The fault's deadline, Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_unix_ms: Option<u64>,
    /// `ok`, or `failed: <why>`; a revert by a halt says `ok (halt)`.
    pub outcome: String,
}

/// Where to append, and for which lab.
#[derive(Clone, Debug)]
pub struct AuditLog {
    path: PathBuf,
    lab: String,
}

impl AuditLog {
    /// Entries for `lab`, appended to `path`.
    pub fn new(path: impl Into<PathBuf>, lab: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            lab: lab.into(),
        }
    }

    /// Appends one entry about `record` (or none, for halt and resume), by this process, now.
    /// Failures are reported on stderr, never returned.
    pub fn record(&self, event: AuditEvent, record: Option<&FaultRecord>, outcome: &str) {
        let now = now_unix_ms();
        let entry = AuditEntry {
            time: humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(now))
                .to_string(),
            unix_ms: now,
            uid: nix::unistd::getuid().as_raw(),
            sudo_user: std::env::var("SUDO_USER").ok(),
            pid: std::process::id(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            lab: self.lab.clone(),
            event,
            fault: record.map(|r| r.id.clone()),
            kind: record.map(|r| r.action.kind_name().to_owned()),
            target: record.map(|r| r.target.clone()),
            deadline_unix_ms: record
                .filter(|r| !r.action.is_instant())
                .map(|r| r.deadline_unix_ms),
            outcome: outcome.to_owned(),
        };
        if let Err(error) = self.append(&entry) {
            let _ = writeln!(
                std::io::stderr(),
                "faultline: warning: {error}; the {} of {} is not in the audit log",
                event.as_str(),
                entry.fault.as_deref().unwrap_or(&self.lab)
            );
        }
    }

    /// Appends `entry` as one line (a single `O_APPEND` write, so concurrent writers never
    /// interleave within a line) and fsyncs it.
    ///
    /// # Errors
    /// [`Error::Ledger`] naming the file when it cannot be opened, written or synced.
    pub fn append(&self, entry: &AuditEntry) -> Result<()> {
        let io = |source| Error::Ledger {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).map_err(io)?;
        }
        let mut line = serde_json::to_vec(entry).expect("audit entries always serialize");
        line.push(b'\n');
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(io)
    }
}

/// Every entry of the audit log at `path`, oldest first; lines that do not parse are skipped
/// (a line cut short by a crash). A missing file holds none.
///
/// # Errors
/// [`Error::Ledger`] when the file exists but cannot be read.
pub fn read_audit_log(path: &Path) -> Result<Vec<AuditEntry>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(vec![]),
        Err(source) => Err(Error::Ledger {
            path: path.to_path_buf(),
            source,
        }),
    }
}
