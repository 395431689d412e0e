//! One run per lab. Two runs on one lab recreate each other's streams and judge each other's
//! faults (the first then reports losses that never happened), so `chaosctl run`, `chaosctl
//! inject` and the daemon's runs each hold the lab's run lock while they act on it.
//!
//! The lock is an exclusive `flock` on `<state root>/locks/<lab>.lock`, which the kernel
//! releases when its holder dies however it dies, so a crash can never leave a lab locked. The
//! file also names its holder (what, run id, PID, start time, command line): a refused caller
//! says who holds the lab, and a caller that gets the lock while the file still names a holder
//! knows that holder died without releasing it (a clean release empties the file) and says it
//! took over.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use faultline_injectors::ledger::now_unix_ms;
use faultline_injectors::process::read_proc_stat;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::state::run_lock_file;
use super::LabError;

/// Who holds a lab's run lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHolder {
    /// What it does, e.g. `run az-failure` or `inject partition`.
    pub what: String,
    /// The run id, for runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Its process.
    pub pid: i32,
    /// The process's start time in clock ticks since boot, so a recycled PID is not taken for
    /// the holder.
    pub start_ticks: u64,
    /// When it took the lock, Unix milliseconds.
    pub started_unix_ms: u64,
    /// Its command line.
    pub command: String,
}

impl RunHolder {
    /// This process, doing `what` (with `run_id` for a run).
    pub fn this_process(what: impl Into<String>, run_id: Option<String>) -> Self {
        let pid = std::process::id() as i32;
        Self {
            what: what.into(),
            run_id,
            pid,
            start_ticks: read_proc_stat(Path::new("/proc"), pid).map_or(0, |s| s.start_ticks),
            started_unix_ms: now_unix_ms(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
        }
    }

    /// For people: `run az-failure-20261203T073500 (pid 4242, started 2026-12-03T07:35:00Z,
    /// `chaosctl run az-failure`)`.
    pub fn describe(&self) -> String {
        let started = humantime::format_rfc3339_seconds(
            UNIX_EPOCH + Duration::from_millis(self.started_unix_ms),
        );
        let what = match &self.run_id {
            Some(id) => format!("run {id}"),
            None => self.what.clone(),
        };
        format!(
            "{what} (pid {}, started {started}, `{}`)",
            self.pid, self.command
        )
    }

    /// Whether its process still runs (same PID, same start time).
    pub fn alive(&self, proc_root: &Path) -> bool {
        read_proc_stat(proc_root, self.pid)
            .is_some_and(|stat| stat.start_ticks == self.start_ticks && stat.state != 'Z')
    }
}

/// A lab's run lock, held until dropped.
pub struct RunLock {
    file: Flock<File>,
}

/// What [`RunLock::acquire`] found.
pub struct Acquired {
    /// The lock, held until dropped.
    pub lock: RunLock,
    /// The holder named in the file when the lock was free: it died without releasing it.
    pub took_over: Option<RunHolder>,
}

impl RunLock {
    /// Takes lab `lab`'s run lock at once for `holder`, or fails with [`LabError::Busy`] naming
    /// who holds it. Never waits.
    ///
    /// # Errors
    /// [`LabError::Busy`] when another process holds it; [`LabError::State`] when the lock
    /// file cannot be opened or written.
    pub fn acquire(state_root: &Path, lab: &str, holder: &RunHolder) -> Result<Acquired, LabError> {
        let path = run_lock_file(state_root, lab);
        let state_error = |source: std::io::Error| LabError::State {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(state_error)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(state_error)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                return Err(LabError::Busy {
                    lab: lab.to_owned(),
                    holder: read_holder(&mut file).map_or_else(
                        || "another chaosctl that is just starting".to_owned(),
                        |h| h.describe(),
                    ),
                    path,
                })
            }
            Err((_, errno)) => return Err(state_error(errno.into())),
        };
        let took_over = read_holder(&mut file);
        let json = serde_json::to_vec(holder).expect("a run holder always serializes");
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(&json))
            .and_then(|()| file.sync_data())
            .map_err(state_error)?;
        Ok(Acquired {
            lock: RunLock { file },
            took_over,
        })
    }

    /// Where lab `lab`'s lock lives.
    pub fn path(state_root: &Path, lab: &str) -> PathBuf {
        run_lock_file(state_root, lab)
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // An empty file says the lock was released on purpose; the flock goes with the file.
        let _ = self.file.set_len(0);
    }
}

fn read_holder(file: &mut File) -> Option<RunHolder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(what: &str) -> RunHolder {
        RunHolder::this_process(what, Some(format!("{what}-1")))
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_named() {
        let root = tempfile::tempdir().expect("tempdir");
        let first = RunLock::acquire(root.path(), "lab", &holder("first")).expect("first");
        assert!(first.took_over.is_none());
        let refused = RunLock::acquire(root.path(), "lab", &holder("second"));
        let Err(LabError::Busy { holder: named, .. }) = refused else {
            panic!("the second must be refused");
        };
        assert!(named.contains("run first-1"), "{named}");
        assert!(
            named.contains(&format!("pid {}", std::process::id())),
            "{named}"
        );
        // Another lab is independent.
        RunLock::acquire(root.path(), "other", &holder("third")).expect("other lab");
        drop(first);
        let again = RunLock::acquire(root.path(), "lab", &holder("second")).expect("released");
        assert!(
            again.took_over.is_none(),
            "a clean release is not a takeover"
        );
    }

    #[test]
    fn a_holder_that_never_released_is_taken_over_and_named() {
        let root = tempfile::tempdir().expect("tempdir");
        let path = RunLock::path(root.path(), "lab");
        fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        let dead = RunHolder {
            pid: i32::MAX,
            ..holder("dead")
        };
        fs::write(&path, serde_json::to_vec(&dead).expect("json")).expect("write");
        let acquired = RunLock::acquire(root.path(), "lab", &holder("new")).expect("free");
        assert_eq!(acquired.took_over, Some(dead.clone()));
        assert!(!dead.alive(Path::new("/proc")));
    }
}
