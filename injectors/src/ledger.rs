//! The durable fault ledger: one fsynced JSON file per active fault.
//!
//! A record is written (file fsynced, then renamed into place, then the directory fsynced)
//! before the kernel or an API is touched, and removed only after its revert succeeded. All
//! mutations happen under an exclusive `flock` on `<dir>/.lock`, so the agent and any number of
//! `chaosctl` processes can reconcile at the same time without reverting twice.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::audit::{AuditEvent, AuditLog};
use crate::fault::FaultAction;
use crate::{Error, Result};

const RECORD_SUFFIX: &str = ".json";
const HALT_FILE: &str = "HALTED";
const LOCK_FILE: &str = ".lock";

/// The durable record of one fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRecord {
    /// Unique fault id, also the record's file name.
    pub id: String,
    /// What the fault does, resolved down to kernel objects and PIDs, so that revert needs
    /// nothing but this record.
    pub action: FaultAction,
    /// Human description of the target, e.g. `zone a vs rest`.
    pub target: String,
    /// Creation time, Unix milliseconds.
    pub created_unix_ms: u64,
    /// Hard deadline, Unix milliseconds. Reconcile reverts the fault once it has passed.
    pub deadline_unix_ms: u64,
    /// When the injection completed (every rule installed, every process stopped), Unix
    /// milliseconds. Absent while the injection is under way, and in records written before
    /// this field existed: between `created_unix_ms` and this time the fault is only partly
    /// in effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_unix_ms: Option<u64>,
}

impl FaultRecord {
    /// Parses a record as the ledger stores it (JSON, unknown fields refused).
    pub fn from_json(bytes: &[u8]) -> std::result::Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// Whether the deadline has passed at `now_unix_ms`.
    pub fn expired(&self, now_unix_ms: u64) -> bool {
        now_unix_ms >= self.deadline_unix_ms
    }
}

/// The halt marker written by `chaosctl halt`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaltMarker {
    /// When the halt was requested, Unix milliseconds.
    pub since_unix_ms: u64,
}

/// A ledger directory.
#[derive(Clone, Debug)]
pub struct Ledger {
    dir: PathBuf,
    /// Where the halt marker lives when it is shared with other ledgers (the lab's state root,
    /// so a halt covers every lab, including labs created after it); `None`: in `dir`.
    shared_halt: Option<PathBuf>,
    /// Where the lifecycle appends what it does; `None`: nowhere.
    audit: Option<AuditLog>,
}

/// Proof that the caller holds the ledger's exclusive lock.
pub struct LedgerLock {
    _lock: Flock<File>,
}

impl Ledger {
    /// A ledger kept in `dir`. Nothing is created until the first write.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            shared_halt: None,
            audit: None,
        }
    }

    /// The same ledger, with every injection, revert, expiry, halt and resume appended to
    /// `log`.
    #[must_use]
    pub fn with_audit(mut self, log: AuditLog) -> Self {
        self.audit = Some(log);
        self
    }

    /// Appends to the audit log, if the ledger has one.
    pub fn audit(&self, event: AuditEvent, record: Option<&FaultRecord>, outcome: &str) {
        if let Some(log) = &self.audit {
            log.record(event, record, outcome);
        }
    }

    /// The same ledger, obeying the halt marker at `path`, which other ledgers share. A marker
    /// in the ledger's own directory (written by earlier versions) still halts it too.
    #[must_use]
    pub fn with_shared_halt(mut self, path: impl Into<PathBuf>) -> Self {
        self.shared_halt = Some(path.into());
        self
    }

    /// The directory holding the records.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn io_error(&self, path: &Path, source: std::io::Error) -> Error {
        let _ = self;
        Error::Ledger {
            path: path.to_path_buf(),
            source,
        }
    }

    fn ensure_dir(&self) -> Result<()> {
        fs::create_dir_all(&self.dir).map_err(|e| self.io_error(&self.dir, e))
    }

    /// Takes the exclusive ledger lock, blocking until it is free.
    pub fn lock(&self) -> Result<LedgerLock> {
        self.ensure_dir()?;
        let path = self.dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| self.io_error(&path, e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| self.io_error(&path, errno.into()))?;
        Ok(LedgerLock { _lock: lock })
    }

    /// Writes `record` durably: temp file, fsync, rename, fsync of the directory.
    pub fn write(&self, _lock: &LedgerLock, record: &FaultRecord) -> Result<()> {
        self.ensure_dir()?;
        let json = serde_json::to_vec_pretty(record).expect("fault records always serialize");
        self.write_durably(&format!("{}{RECORD_SUFFIX}", record.id), &json)
    }

    fn write_durably(&self, name: &str, contents: &[u8]) -> Result<()> {
        let final_path = self.dir.join(name);
        let tmp_path = self.dir.join(format!(".tmp-{name}"));
        let mut file = File::create(&tmp_path).map_err(|e| self.io_error(&tmp_path, e))?;
        file.write_all(contents)
            .and_then(|()| file.sync_all())
            .map_err(|e| self.io_error(&tmp_path, e))?;
        fs::rename(&tmp_path, &final_path).map_err(|e| self.io_error(&final_path, e))?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| self.io_error(&self.dir, e))
    }

    /// Whether the record of fault `id` is still there (its fault not yet reverted). Needs no
    /// lock: a record file appears and disappears by rename and unlink.
    pub fn contains(&self, id: &str) -> bool {
        self.dir.join(format!("{id}{RECORD_SUFFIX}")).exists()
    }

    /// Removes a record; a record that is already gone counts as removed.
    pub fn remove(&self, _lock: &LedgerLock, id: &str) -> Result<()> {
        let path = self.dir.join(format!("{id}{RECORD_SUFFIX}"));
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_error(&path, e)),
        }
    }

    /// Every record in the ledger, sorted by creation time. A missing directory holds none.
    /// Corrupt records are returned as errors in the second list so that one bad file does not
    /// hide the others.
    pub fn list(&self) -> Result<(Vec<FaultRecord>, Vec<Error>)> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], vec![])),
            Err(e) => return Err(self.io_error(&self.dir, e)),
        };
        let mut records = Vec::new();
        let mut corrupt = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| self.io_error(&self.dir, e))?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.starts_with('.') || !name.ends_with(RECORD_SUFFIX) {
                continue;
            }
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                // Removed by a concurrent revert between read_dir and read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io_error(&path, e)),
            };
            match FaultRecord::from_json(&bytes) {
                Ok(record) => records.push(record),
                Err(reason) => corrupt.push(Error::CorruptRecord {
                    path: path.clone(),
                    reason,
                }),
            }
        }
        records.sort_by(|a, b| (a.created_unix_ms, &a.id).cmp(&(b.created_unix_ms, &b.id)));
        Ok((records, corrupt))
    }

    /// The halt marker, if faults are halted: the shared one first, then the ledger's own.
    pub fn halted(&self) -> Result<Option<HaltMarker>> {
        if let Some(shared) = &self.shared_halt {
            if let Some(marker) = read_halt_marker(shared)? {
                return Ok(Some(marker));
            }
        }
        read_halt_marker(&self.dir.join(HALT_FILE))
    }

    /// Blocks new faults until [`Ledger::clear_halt`]; with a shared marker, in every ledger
    /// that shares it.
    pub fn set_halt(&self, _lock: &LedgerLock, marker: &HaltMarker) -> Result<()> {
        if let Some(shared) = &self.shared_halt {
            return write_halt_marker(shared, marker);
        }
        let json = serde_json::to_vec(marker).expect("halt marker always serializes");
        self.write_durably(HALT_FILE, &json)
    }

    /// Allows new faults again: removes the shared marker and the ledger's own.
    pub fn clear_halt(&self, _lock: &LedgerLock) -> Result<()> {
        if let Some(shared) = &self.shared_halt {
            clear_halt_marker(shared)?;
        }
        clear_halt_marker(&self.dir.join(HALT_FILE))
    }
}

fn marker_error(path: &Path, source: std::io::Error) -> Error {
    Error::Ledger {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the halt marker at `path`; `None` when there is none. An unreadable marker still
/// halts (since time 0): a damaged file must never allow faults.
pub fn read_halt_marker(path: &Path) -> Result<Option<HaltMarker>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes).unwrap_or(HaltMarker { since_unix_ms: 0 }),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(marker_error(path, e)),
    }
}

/// Writes the halt marker at `path` durably (temp file, fsync, rename, directory fsync),
/// creating its directory.
pub fn write_halt_marker(path: &Path, marker: &HaltMarker) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| marker_error(dir, e))?;
    let tmp = dir.join(format!(
        ".tmp-{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(HALT_FILE)
    ));
    let json = serde_json::to_vec(marker).expect("halt marker always serializes");
    let mut file = File::create(&tmp).map_err(|e| marker_error(&tmp, e))?;
    file.write_all(&json)
        .and_then(|()| file.sync_all())
        .map_err(|e| marker_error(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| marker_error(path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| marker_error(dir, e))
}

/// Removes the halt marker at `path`; a missing marker counts as removed.
pub fn clear_halt_marker(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => {
            let dir = path.parent().unwrap_or(Path::new("."));
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| marker_error(dir, e))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(marker_error(path, e)),
    }
}

/// The current wall-clock time in Unix milliseconds.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A new fault id: time-ordered and unique across processes.
pub fn new_fault_id(now_unix_ms: u64) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let salt = (nanos ^ std::process::id().rotate_left(16)) & 0xffff;
    format!("f{now_unix_ms:x}{salt:04x}")
}
