//! The load a run watches: its own (started for the run, as `chaosctl run` does) or a slice of
//! a load that keeps running (the daemon's background load, never paused for a run). The phase
//! loop sees both through [`RunLoad`]; the slice's history is cut out of the running load's at
//! the end (`workload::slice`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::workload::slice::{self, CutFiles, InitialRead, LiveLoad, SliceSpan};
use crate::workload::{
    self, BackgroundWorkload, Progress, RunClock, WorkloadConfig, WorkloadError,
};

use super::site::RunSite;
use super::EngineError;

/// Either load.
pub enum RunLoad {
    /// Started for this run; stopped and read back at its end.
    Own(BackgroundWorkload),
    /// A slice of a running load, from `start_ns` on its clock.
    Slice {
        /// The running load.
        live: LiveLoad,
        /// The slice's start on the load's clock.
        start_ns: u64,
        /// The load's progress at the start, subtracted from its counts.
        at_start: Progress,
        /// What the tenants' streams held at the start, being read.
        initial: Result<InitialRead, WorkloadError>,
    },
}

impl RunLoad {
    /// A slice of `live` from now, when there is one; else the run's own load on `site`.
    ///
    /// # Errors
    /// The run's own load did not start.
    pub fn start(
        site: &dyn RunSite,
        live: Option<&LiveLoad>,
        config: WorkloadConfig,
    ) -> Result<Self, EngineError> {
        Ok(match live {
            Some(live) => {
                let dir = config.history.parent().unwrap_or(Path::new("."));
                Self::slice_of(live.clone(), dir)
            }
            None => Self::Own(site.spawn_load(config)?),
        })
    }

    /// The run's start on its clock (0 for an own load).
    pub fn start_ns(&self) -> u64 {
        match self {
            Self::Own(_) => 0,
            Self::Slice { start_ns, .. } => *start_ns,
        }
    }

    /// Begins a slice of `live` now, and starts reading what its tenants' streams hold (into
    /// `dir`, the run's directory, until the cut).
    pub fn slice_of(live: LiveLoad, dir: &Path) -> Self {
        let start_ns = live.clock().now_ns();
        let at_start = live.progress();
        let initial = live.read_initial_state(dir.join(INITIAL_STATE_FILE));
        Self::Slice {
            live,
            start_ns,
            at_start,
            initial,
        }
    }

    /// The clock fault windows are recorded on.
    pub fn clock(&self) -> RunClock {
        match self {
            Self::Own(load) => load.clock(),
            Self::Slice { live, .. } => live.clock(),
        }
    }

    /// Where fault windows go.
    pub fn observations(&self) -> workload::ObservationSink {
        match self {
            Self::Own(load) => load.observations(),
            Self::Slice { live, .. } => live.observations(),
        }
    }

    /// Time since the run's start.
    pub fn elapsed(&self) -> Duration {
        let now = self.clock().now_ns();
        Duration::from_nanos(match self {
            Self::Own(_) => now,
            Self::Slice { start_ns, .. } => now.saturating_sub(*start_ns),
        })
    }

    /// Progress since the run's start: a slice's counts leave out what the load did before.
    pub fn progress(&self) -> Progress {
        match self {
            Self::Own(load) => load.progress(),
            Self::Slice { live, at_start, .. } => {
                let mut p = live.progress();
                p.ops = p.ops.saturating_sub(at_start.ops);
                p.fail = p.fail.saturating_sub(at_start.fail);
                p.info = p.info.saturating_sub(at_start.info);
                p
            }
        }
    }

    /// Stops an own load; a slice's load goes on.
    pub fn stop(&self) {
        if let Self::Own(load) = self {
            load.stop();
        }
    }

    /// The history and observations the recovery watch reads while the run goes on.
    pub fn live_files(&self, dir: &Path) -> (PathBuf, PathBuf) {
        match self {
            Self::Own(_) => (dir.join("history.jsonl"), dir.join("observations.jsonl")),
            Self::Slice { live, .. } => (
                live.history_path().to_path_buf(),
                live.observations_path().to_path_buf(),
            ),
        }
    }

    /// Ends the run's part of the load: an own load is stopped and read back (when
    /// `read_back`; a second interrupt skips or cuts it short); a slice is read back while the
    /// load goes on and cut into `dir`'s `history.jsonl` and `observations.jsonl`. Returns
    /// whether the read-back completed.
    pub fn finish(
        self,
        read_back: bool,
        settle_until_ns: u64,
        interrupts: &AtomicUsize,
        dir: &Path,
        run_id: &str,
    ) -> (Result<(), WorkloadError>, bool) {
        match self {
            Self::Own(load) => finish_own(load, read_back, settle_until_ns, interrupts),
            Self::Slice {
                live,
                start_ns,
                initial,
                ..
            } => {
                let slice = Slice {
                    live: &live,
                    start_ns,
                    initial,
                };
                finish_slice(slice, read_back, settle_until_ns, dir, run_id)
            }
        }
    }
}

fn finish_own(
    load: BackgroundWorkload,
    read_back: bool,
    settle_until_ns: u64,
    interrupts: &AtomicUsize,
) -> (Result<(), WorkloadError>, bool) {
    let skip = load.read_back_skipper();
    let done = std::sync::atomic::AtomicBool::new(false);
    let finished = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                if interrupts.load(Ordering::SeqCst) >= 2 {
                    skip.cancel();
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let finished = load.finish_with(read_back, Some(settle_until_ns));
        done.store(true, Ordering::SeqCst);
        finished
    });
    let completed = finished.as_ref().is_ok_and(|r| r.read_back.is_some());
    (finished.map(|_| ()), completed)
}

/// The slice's initial-state reads until the cut, in the run's directory.
const INITIAL_STATE_FILE: &str = "initial-state.jsonl";
/// The slice's read-back until the cut, in the run's directory.
const READ_BACK_FILE: &str = "read-back.jsonl";

/// How long after the slice's end its last operations are surely in the load's files (the
/// recorder flushes every 200 ms).
const FLUSHED_AFTER: Duration = Duration::from_secs(1);

/// A slice being finished.
struct Slice<'a> {
    live: &'a LiveLoad,
    start_ns: u64,
    initial: Result<InitialRead, WorkloadError>,
}

fn finish_slice(
    slice: Slice<'_>,
    read_back: bool,
    settle_until_ns: u64,
    dir: &Path,
    run_id: &str,
) -> (Result<(), WorkloadError>, bool) {
    let Slice {
        live,
        start_ns,
        initial,
    } = slice;
    let clock = live.clock();
    let cut_ns = clock.now_ns();
    if let Err(e) = initial.and_then(InitialRead::wait) {
        return (Err(e), false);
    }
    let initial_file = dir.join(INITIAL_STATE_FILE);
    let read_back_file = dir.join(READ_BACK_FILE);
    let mut views = vec![initial_file.as_path()];
    let read_backs = if read_back {
        match live.read_back(settle_until_ns, &read_back_file) {
            Ok(count) => {
                views.push(&read_back_file);
                count
            }
            Err(e) => return (Err(e), false),
        }
    } else {
        0
    };
    let end_ns = clock.now_ns();
    std::thread::sleep(FLUSHED_AFTER);
    let span = SliceSpan {
        start_ns,
        cut_ns,
        end_ns,
    };
    let files = CutFiles {
        history_in: live.history_path(),
        observations_in: live.observations_path(),
        history_out: &dir.join("history.jsonl"),
        observations_out: &dir.join("observations.jsonl"),
    };
    let completed = read_back && read_backs > 0;
    let cut = slice::cut(&files, span, run_id, &views).map(|_| ());
    // They are in the run's history now.
    for view in views {
        let _ = std::fs::remove_file(view);
    }
    (cut, completed)
}
