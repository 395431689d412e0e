//! Process faults: kill (SIGKILL) and pause/resume (SIGSTOP/SIGCONT) of one service replica.
//!
//! A target is a PID plus its start time in clock ticks (field 22 of `/proc/PID/stat`), so a
//! recycled PID is never signalled: a PID whose start time differs counts as gone.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// One process, pinned by PID and start time.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcessTarget {
    /// Process id.
    pub pid: i32,
    /// Start time in clock ticks since boot, from `/proc/PID/stat`.
    pub start_ticks: u64,
    /// Human label, e.g. `nats/1 on a1`.
    pub label: String,
}

/// The privileged seam for signals.
pub trait Signaller: Send + Sync {
    /// Sends `signal` to `target`. Returns `false` when the process is gone (or its PID was
    /// recycled), which callers treat as "nothing to do".
    ///
    /// # Errors
    /// The kernel refused the signal for another reason (e.g. EPERM).
    fn signal(&self, target: &ProcessTarget, signal: Signal) -> Result<bool>;
    /// Whether `target` is alive and stopped (SIGSTOP). A gone process is not stopped.
    fn is_stopped(&self, target: &ProcessTarget) -> bool;
}

/// Fields of `/proc/PID/stat` that we need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// One-letter state: R, S, D, T (stopped), Z (zombie), ...
    pub state: char,
    /// Start time in clock ticks since boot.
    pub start_ticks: u64,
}

/// Parses `/proc/PID/stat`. The command name is in parentheses and may contain spaces and
/// parentheses itself, so fields are counted from the last `)`.
pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let after_comm = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // After the comm, field 3 (state) is index 0 and field 22 (starttime) is index 19.
    let state = fields.first()?.chars().next()?;
    let start_ticks = fields.get(19)?.parse().ok()?;
    Some(ProcStat { state, start_ticks })
}

/// Reads `/proc/PID/stat` under `proc_root`; `None` when the process is gone.
pub fn read_proc_stat(proc_root: &Path, pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    parse_proc_stat(&text)
}

/// Pins a live PID as a [`ProcessTarget`]; `None` when it is gone.
pub fn target_for_pid(
    proc_root: &Path,
    pid: i32,
    label: impl Into<String>,
) -> Option<ProcessTarget> {
    read_proc_stat(proc_root, pid).map(|stat| ProcessTarget {
        pid,
        start_ticks: stat.start_ticks,
        label: label.into(),
    })
}

/// The real [`Signaller`], through `kill(2)`.
#[derive(Clone, Debug)]
pub struct NixSignaller {
    proc_root: PathBuf,
}

impl NixSignaller {
    /// A signaller that verifies targets against `proc_root` (normally `/proc`).
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
        }
    }

    fn is_same_process(&self, target: &ProcessTarget) -> Option<ProcStat> {
        read_proc_stat(&self.proc_root, target.pid)
            .filter(|stat| stat.start_ticks == target.start_ticks && stat.state != 'Z')
    }
}

impl Signaller for NixSignaller {
    fn signal(&self, target: &ProcessTarget, signal: Signal) -> Result<bool> {
        if self.is_same_process(target).is_none() {
            return Ok(false);
        }
        match kill(Pid::from_raw(target.pid), signal) {
            Ok(()) => Ok(true),
            Err(Errno::ESRCH) => Ok(false),
            Err(source) => Err(Error::Signal {
                signal: signal.as_str().to_owned(),
                pid: target.pid,
                source,
            }),
        }
    }

    fn is_stopped(&self, target: &ProcessTarget) -> bool {
        self.is_same_process(target)
            .is_some_and(|stat| stat.state == 'T')
    }
}

/// A [`Signaller`] that records what it was asked, for logic tests.
#[derive(Debug, Default)]
pub struct RecordingSignaller {
    sent: Mutex<Vec<(i32, Signal)>>,
}

impl RecordingSignaller {
    /// Every signal sent so far, in order.
    pub fn sent(&self) -> Vec<(i32, Signal)> {
        self.sent.lock().expect("poisoned").clone()
    }
}

impl Signaller for RecordingSignaller {
    fn signal(&self, target: &ProcessTarget, signal: Signal) -> Result<bool> {
        self.sent
            .lock()
            .expect("poisoned")
            .push((target.pid, signal));
        Ok(true)
    }

    fn is_stopped(&self, target: &ProcessTarget) -> bool {
        let sent = self.sent.lock().expect("poisoned");
        sent.iter()
            .rev()
            .find(|(pid, sig)| {
                *pid == target.pid && matches!(sig, Signal::SIGSTOP | Signal::SIGCONT)
            })
            .is_some_and(|(_, sig)| *sig == Signal::SIGSTOP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let tail = "S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 424242 20 21";
        for comm in ["nats-server", "a b", "x) (y", ")"] {
            let line = format!("1234 ({comm}) {tail}");
            assert_eq!(
                parse_proc_stat(&line),
                Some(ProcStat {
                    state: 'S',
                    start_ticks: 424_242
                }),
                "comm {comm:?}"
            );
        }
        assert_eq!(parse_proc_stat("1234 (truncated"), None);
        assert_eq!(parse_proc_stat("1234 (x) S 1 2"), None);
    }

    #[test]
    fn own_process_is_found_and_a_wrong_start_time_is_not() {
        let proc_root = Path::new("/proc");
        let me = target_for_pid(proc_root, std::process::id() as i32, "self").expect("self");
        let signaller = NixSignaller::new(proc_root);
        assert!(signaller.is_same_process(&me).is_some());
        let recycled = ProcessTarget {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert!(signaller.is_same_process(&recycled).is_none());
        // Signal 0 semantics: a recycled PID is reported gone and nothing is sent.
        assert!(!signaller
            .signal(&recycled, Signal::SIGCONT)
            .expect("no error"));
    }
}
