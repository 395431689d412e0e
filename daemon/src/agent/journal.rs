//! The agent's journal: what this node did with each Fault, kept on the node's disk (fsynced) so
//! that a restarted agent neither applies a Fault twice nor forgets to report what it did. The
//! ledger stays the safety record (what to revert and when); the journal is the reporting one.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use faultline_experiments::kubernetes::crd::NodeFaultStatus;
use serde::{Deserialize, Serialize};

/// Why a node's part of a Fault ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EndReason {
    /// The deadline passed (on the node's own clock).
    Deadline,
    /// The Fault was deleted.
    Deleted,
    /// A Halt object exists.
    Halted,
    /// A guard refused it; nothing was touched.
    Refused,
    /// A kill: over as soon as the signal was sent.
    Instant,
    /// The agent was stopped (SIGTERM) and healed its node on the way out.
    AgentStopped,
}

impl EndReason {
    fn as_str(self) -> &'static str {
        match self {
            EndReason::Deadline => "deadline",
            EndReason::Deleted => "deleted",
            EndReason::Halted => "halted",
            EndReason::Refused => "refused",
            EndReason::Instant => "instant",
            EndReason::AgentStopped => "agentStopped",
        }
    }
}

/// This node's part of one Fault.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The Fault's name.
    pub name: String,
    /// The Fault's deadline, Unix milliseconds.
    pub deadline_unix_ms: u64,
    /// When the fault was in effect here, RFC 3339.
    pub applied_at: Option<String>,
    /// When this node's revert completed (or the Fault was refused), RFC 3339.
    pub ended_at: Option<String>,
    /// Why it ended.
    pub reason: Option<EndReason>,
    /// The last error.
    pub last_error: Option<String>,
    /// Rules installed.
    pub rules: Option<u32>,
    /// Processes signalled.
    pub processes: Option<u32>,
    /// Whether the status in the API server lags behind this entry.
    pub dirty: bool,
}

impl Entry {
    /// Whether nothing more is to be done here but reporting.
    pub fn is_over(&self) -> bool {
        self.reason.is_some()
    }

    /// The status this node reports for the Fault.
    pub fn status(&self) -> NodeFaultStatus {
        NodeFaultStatus {
            applied_at: self.applied_at.clone(),
            reverted_at: self.ended_at.clone(),
            reason: self.reason.map(|r| r.as_str().to_owned()),
            last_error: self.last_error.clone(),
            rules: self.rules,
            processes: self.processes,
        }
    }
}

/// The journal file: Fault uid -> entry.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    entries: BTreeMap<String, Entry>,
}

impl Journal {
    /// Opens (or starts) the journal at `path`.
    ///
    /// # Errors
    /// The file exists but cannot be read or parsed.
    pub fn open(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let entries = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("agent journal {} is corrupt ({e}); move it aside to start afresh (the ledger still heals every fault)", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Self { path, entries })
    }

    /// Every entry, by Fault uid.
    pub fn entries(&self) -> &BTreeMap<String, Entry> {
        &self.entries
    }

    /// One entry.
    pub fn get(&self, uid: &str) -> Option<&Entry> {
        self.entries.get(uid)
    }

    /// Changes (or creates) an entry, marks it dirty and writes the journal durably.
    ///
    /// # Errors
    /// The journal cannot be written.
    pub fn update(&mut self, uid: &str, change: impl FnOnce(&mut Entry)) -> io::Result<()> {
        let entry = self.entries.entry(uid.to_owned()).or_default();
        change(entry);
        entry.dirty = true;
        self.save()
    }

    /// Marks an entry as reported.
    ///
    /// # Errors
    /// The journal cannot be written.
    pub fn mark_clean(&mut self, uid: &str) -> io::Result<()> {
        if let Some(entry) = self.entries.get_mut(uid) {
            entry.dirty = false;
        }
        self.save()
    }

    /// Drops entries for which `keep` is false.
    ///
    /// # Errors
    /// The journal cannot be written.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &Entry) -> bool) -> io::Result<()> {
        let before = self.entries.len();
        self.entries.retain(|uid, entry| keep(uid, entry));
        if self.entries.len() == before {
            return Ok(());
        }
        self.save()
    }

    fn save(&self) -> io::Result<()> {
        write_durably(&self.path, &serde_json::to_vec_pretty(&self.entries)?)
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file: temp file,
/// fsync, rename, directory fsync.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir)?;
    let temp = path.with_extension("tmp");
    let mut file = File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&temp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_a_reopen_and_corruption_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("journal.json");
        let mut journal = Journal::open(&path).expect("open");
        journal
            .update("u1", |e| {
                e.name = "f1".into();
                e.applied_at = Some("2026-12-02T07:00:00Z".into());
            })
            .expect("update");
        let reopened = Journal::open(&path).expect("reopen");
        assert_eq!(reopened.get("u1").map(|e| e.name.as_str()), Some("f1"));
        assert!(reopened.get("u1").is_some_and(|e| e.dirty));
        fs::write(&path, b"{not json").expect("write");
        let error = Journal::open(&path).unwrap_err();
        assert!(error.to_string().contains("move it aside"), "{error}");
    }
}
