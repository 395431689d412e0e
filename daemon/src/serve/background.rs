//! The background tenant load of `faultlined serve`: the tenant load runs between suites in
//! segments of `rotate_every` (an hour by default); each segment's history and observations are
//! gzip-compressed when it ends, and files older than `keep_for` are removed. Each segment is a
//! fresh workload, so memory stays flat however long the daemon runs.
//!
//! A run is a slice of it: the run holds the running segment ([`Background::hold`]), so it
//! does not rotate under the run, and takes its operations for the run's span; the load is
//! never paused for it, whether it is a NATS or an HTTP load. A run the load is not the load
//! of (another adapter, stream replica count or HTTP services, or no segment running) pauses
//! it and starts its own load ([`Background::pause`]), and the daemon logs why.
//! Before a run, the last minute of the background load is the steady-state check: a loaded
//! machine or cluster skips the run with the reason, before anything is injected.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use faultline_experiments::lab::control::{HostPaths, LabContext};
use faultline_experiments::schedule::file::BackgroundSpec;
use faultline_experiments::spec::SteadyState;
use faultline_experiments::workload::{self, AdapterKind, LiveLoad, Progress, WorkloadConfig};

/// Seconds of per-second samples kept for the steady-state check.
const RECENT: usize = 60;
/// How long a segment may go without progress before it is ended.
const STALLED: Duration = Duration::from_secs(30);
/// How long a segment's load may run past `rotate_every` while a run holds it; the supervisor
/// stops it at the rotation, so this only bounds a run's slice.
const HOLD_ALLOWANCE: Duration = Duration::from_secs(24 * 3600);

/// One second of the background load.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    ops: u64,
    bad: u64,
    p99_ms: f64,
}

#[derive(Default)]
struct State {
    recent: VecDeque<Sample>,
    /// Totals of finished segments, by outcome.
    done: BTreeMap<String, u64>,
    /// The running segment's latest progress.
    current: Option<Progress>,
    /// Whether a segment is running.
    running: bool,
    paused: bool,
    /// A run holds the running segment: it does not rotate until released.
    held: bool,
    /// The running segment, for a run to take a slice of.
    live: Option<LiveLoad>,
    /// The settings; the next segment starts with them.
    spec: Option<BackgroundSpec>,
    /// Bumped by each reload that changes the settings: a segment started with an older one
    /// ends (once no run holds it).
    generation: u64,
}

/// The last minute of the background load, as the steady-state check sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RecentWindow {
    /// Seconds covered.
    pub seconds: usize,
    /// Operations in them.
    pub ops: u64,
    /// Share of `ok` operations.
    pub success_rate: f64,
    /// Highest per-second p99 latency, ms.
    pub p99_ms: f64,
}

impl RecentWindow {
    /// `Err` with the reason when the window breaks the steady state; `Ok` when it holds or the
    /// window is too short to say (the run's own baseline check still applies).
    pub fn judge(&self, steady: &SteadyState) -> Result<(), String> {
        if self.seconds < 10 || self.ops == 0 {
            return Ok(());
        }
        let max_p99 = steady.max_p99.as_millis() as f64;
        if self.success_rate < steady.min_success_rate {
            return Err(format!(
                "the background load's last {} s: success rate {:.2}% is below {:.2}% ({} operations); the machine or cluster is not in a steady state, so nothing was injected",
                self.seconds,
                self.success_rate * 100.0,
                steady.min_success_rate * 100.0,
                self.ops
            ));
        }
        if self.p99_ms > max_p99 {
            return Err(format!(
                "the background load's last {} s: p99 latency {:.0} ms is above {max_p99:.0} ms; the machine or cluster is loaded, so nothing was injected",
                self.seconds, self.p99_ms
            ));
        }
        Ok(())
    }
}

/// The background load.
pub struct Background {
    state: Arc<(Mutex<State>, Condvar)>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Background {
    /// Starts the load on lab `lab`, writing its rotated history under `dir`.
    pub fn start(
        host: HostPaths,
        lab: String,
        spec: BackgroundSpec,
        dir: PathBuf,
        log: fn(&str),
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let state = Arc::new((
            Mutex::new(State {
                paused: !spec.enabled,
                spec: Some(spec),
                ..State::default()
            }),
            Condvar::new(),
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let state = Arc::clone(&state);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("background-load".to_owned())
                .spawn(move || supervise(&host, &lab, &dir, &state, &stop, log))?
        };
        Ok(Self {
            state,
            stop,
            thread: Some(thread),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops the running segment (its files are archived) and waits up to `timeout` until it
    /// has ended; no segment starts until [`Background::resume`].
    pub fn pause(&self, timeout: Duration) -> bool {
        let mut state = self.lock();
        state.paused = true;
        let deadline = Instant::now() + timeout;
        while state.running {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            state = self
                .state
                .1
                .wait_timeout(state, left)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        state.recent.clear();
        true
    }

    /// Holds the running segment for a run (it does not rotate until [`Background::release`])
    /// and returns it, waiting up to `timeout` for one to run. `None` (nothing held) when no
    /// segment runs by then.
    pub fn hold(&self, timeout: Duration) -> Option<LiveLoad> {
        let mut state = self.lock();
        let deadline = Instant::now() + timeout;
        while state.live.is_none() || state.paused {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = self
                .state
                .1
                .wait_timeout(state, left.min(Duration::from_millis(200)))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        state.held = true;
        state.live.clone()
    }

    /// Lets the held segment rotate again.
    pub fn release(&self) {
        self.lock().held = false;
        self.state.1.notify_all();
    }

    /// Stops the load for good (its segment is archived), waiting up to `timeout`.
    pub fn shutdown(&self, timeout: Duration) -> bool {
        self.stop.store(true, Ordering::SeqCst);
        self.state.1.notify_all();
        self.pause(timeout)
    }

    /// Lets segments run again (unless a reload disabled the load).
    pub fn resume(&self) {
        let mut state = self.lock();
        state.paused = !state.spec.as_ref().is_some_and(|s| s.enabled);
        drop(state);
        self.state.1.notify_all();
    }

    /// Takes the settings of a reloaded schedule: when they differ, the running segment ends
    /// (after the run that holds it, if one does) and the next starts with them; `enabled:
    /// false` stops the load until a reload enables it. Returns what changed, if anything.
    pub fn reconfigure(&self, spec: BackgroundSpec) -> Option<String> {
        let mut state = self.lock();
        if state.spec.as_ref() == Some(&spec) {
            return None;
        }
        let what = if spec.enabled {
            format!(
                "background load: now {} tenants at {} ops/s on {}, rotated every {}, kept {}",
                spec.tenants,
                spec.rate,
                if spec.adapter == "http" {
                    format!("http through {}", spec.services.join(", "))
                } else {
                    spec.adapter.clone()
                },
                humantime::format_duration(spec.rotate_every),
                humantime::format_duration(spec.keep_for)
            )
        } else {
            "background load: disabled".to_owned()
        };
        state.paused = !spec.enabled;
        state.spec = Some(spec);
        state.generation += 1;
        drop(state);
        self.state.1.notify_all();
        Some(what)
    }

    /// The last minute, if the load has run in it.
    pub fn recent(&self) -> Option<RecentWindow> {
        let state = self.lock();
        if state.recent.is_empty() {
            return None;
        }
        let ops: u64 = state.recent.iter().map(|s| s.ops).sum();
        let bad: u64 = state.recent.iter().map(|s| s.bad).sum();
        Some(RecentWindow {
            seconds: state.recent.len(),
            ops,
            success_rate: if ops == 0 {
                1.0
            } else {
                1.0 - bad as f64 / ops as f64
            },
            p99_ms: state.recent.iter().map(|s| s.p99_ms).fold(0.0, f64::max),
        })
    }

    /// Operations so far, by outcome (`ok`, `fail`, `info`).
    pub fn ops_by_outcome(&self) -> BTreeMap<String, u64> {
        let state = self.lock();
        let mut totals = state.done.clone();
        if let Some(p) = &state.current {
            add_progress(&mut totals, p);
        }
        for outcome in ["ok", "fail", "info"] {
            totals.entry(outcome.to_owned()).or_insert(0);
        }
        totals
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.state.1.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn add_progress(totals: &mut BTreeMap<String, u64>, p: &Progress) {
    *totals.entry("ok".to_owned()).or_default() += p.ops.saturating_sub(p.fail + p.info);
    *totals.entry("fail".to_owned()).or_default() += p.fail;
    *totals.entry("info".to_owned()).or_default() += p.info;
}

fn stamp() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()
}

#[allow(clippy::too_many_lines)] // one loop: wait, start a segment, sample it, archive it
fn supervise(
    host: &HostPaths,
    lab: &str,
    dir: &Path,
    state: &(Mutex<State>, Condvar),
    stop: &AtomicBool,
    log: fn(&str),
) {
    let lock = || {
        state
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    // Segments a killed daemon left open are archived like any other.
    for leftover in std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
    {
        if let Err(e) = compress(&leftover) {
            log(&format!(
                "background load: cannot compress {}: {e}",
                leftover.display()
            ));
        }
    }
    let mut segment = 0_u64;
    while !stop.load(Ordering::SeqCst) {
        if lock().paused {
            let guard = lock();
            drop(
                state
                    .1
                    .wait_timeout(guard, Duration::from_millis(200))
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            continue;
        }
        let ctx = match LabContext::open(host, lab) {
            Ok(ctx) => ctx,
            Err(e) => {
                log(&format!(
                    "background load: lab {lab} is not usable ({e}); retrying in 10 s"
                ));
                sleep_unless(stop, Duration::from_secs(10));
                continue;
            }
        };
        let (spec, generation) = {
            let s = lock();
            (s.spec.clone().unwrap_or_default(), s.generation)
        };
        segment += 1;
        let name = stamp();
        let history = dir.join(format!("history-{name}.jsonl"));
        let observations = dir.join(format!("observations-{name}.jsonl"));
        let config = WorkloadConfig {
            run_id: Some(format!("background-{name}")),
            tenants: spec.tenants,
            rate: spec.rate,
            duration: spec.rotate_every + HOLD_ALLOWANCE,
            seed: segment,
            adapter: if spec.adapter == "http" {
                AdapterKind::Http
            } else {
                AdapterKind::Nats
            },
            http_services: spec.services.clone(),
            history: history.clone(),
            observations: observations.clone(),
            record_faults: false,
            ..WorkloadConfig::default()
        };
        lock().running = true;
        let load = match workload::spawn_in_lab(&ctx, config) {
            Ok(load) => load,
            Err(e) => {
                lock().running = false;
                state.1.notify_all();
                log(&format!(
                    "background load: cannot start ({e}); retrying in 10 s"
                ));
                sleep_unless(stop, Duration::from_secs(10));
                continue;
            }
        };
        {
            let mut s = lock();
            s.live = Some(load.live());
        }
        state.1.notify_all();
        let mut last = Progress::default();
        let started = Instant::now();
        let mut last_change = Instant::now();
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let p = load.progress();
            {
                let mut s = lock();
                let ops = p.ops.saturating_sub(last.ops);
                let bad = (p.fail + p.info).saturating_sub(last.fail + last.info);
                s.recent.push_back(Sample {
                    ops,
                    bad,
                    p99_ms: p.p99_ms,
                });
                while s.recent.len() > RECENT {
                    s.recent.pop_front();
                }
                s.current = Some(p.clone());
            }
            if p.elapsed_s > last.elapsed_s {
                last_change = Instant::now();
            }
            last = p;
            if stop.load(Ordering::SeqCst) || lock().paused {
                load.stop();
                break;
            }
            // A run holding the segment takes its slice from this segment's files: it rotates
            // once released.
            let (held, respec) = {
                let s = lock();
                (s.held, s.generation != generation)
            };
            if (respec || last.elapsed_s >= spec.rotate_every.as_secs_f64()) && !held {
                load.stop();
                break;
            }
            // A load that stopped reporting (its history cannot be written, the disk is full)
            // or overran its segment is ended, so the next segment starts afresh.
            if last_change.elapsed() >= STALLED
                || (!held && started.elapsed() >= spec.rotate_every + STALLED)
            {
                log(&format!(
                    "background load: segment {name} stopped reporting progress; ending it and starting a new one"
                ));
                load.stop();
                break;
            }
        }
        let finished = load.finish(false);
        {
            let mut s = lock();
            s.live = None;
            if let Some(p) = s.current.take() {
                add_progress(&mut s.done, &p);
            }
        }
        if let Err(e) = finished {
            log(&format!(
                "background load: segment {name} ended with an error: {e}"
            ));
        }
        for file in [&history, &observations] {
            if let Err(e) = compress(file) {
                log(&format!(
                    "background load: cannot compress {}: {e}",
                    file.display()
                ));
            }
        }
        match prune(dir, spec.keep_for, SystemTime::now()) {
            Ok(0) => {}
            Ok(n) => log(&format!(
                "background load: removed {n} history files older than {}",
                humantime::format_duration(spec.keep_for)
            )),
            Err(e) => log(&format!(
                "background load: cannot prune {}: {e}",
                dir.display()
            )),
        }
        lock().running = false;
        state.1.notify_all();
    }
}

fn sleep_unless(stop: &AtomicBool, total: Duration) {
    let start = Instant::now();
    while start.elapsed() < total && !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Compresses `file` to `file.gz` (written, fsynced, then renamed into place) and removes
/// `file`.
pub fn compress(file: &Path) -> std::io::Result<PathBuf> {
    let mut name = file.as_os_str().to_owned();
    name.push(".gz");
    let target = PathBuf::from(name);
    let mut partial = target.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut input = BufReader::new(File::open(file)?);
    let mut encoder = flate2::write::GzEncoder::new(
        BufWriter::new(File::create(&partial)?),
        flate2::Compression::default(),
    );
    std::io::copy(&mut input, &mut encoder)?;
    let mut out = encoder.finish()?;
    out.flush()?;
    out.get_ref().sync_all()?;
    std::fs::rename(&partial, &target)?;
    std::fs::remove_file(file)?;
    Ok(target)
}

/// Removes compressed history older than `keep_for` from `dir`; returns how many.
pub fn prune(dir: &Path, keep_for: Duration, now: SystemTime) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "gz") {
            continue;
        }
        let modified = entry.metadata()?.modified()?;
        if now.duration_since(modified).unwrap_or_default() > keep_for {
            std::fs::remove_file(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn compress_keeps_the_bytes_and_prune_removes_only_old_archives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("history-1.jsonl");
        let text = "{\"format\":\"faultline-history\"}\n".repeat(1000);
        std::fs::write(&file, &text).expect("write");
        let archive = compress(&file).expect("compress");
        assert!(!file.exists());
        let mut back = String::new();
        flate2::read::GzDecoder::new(File::open(&archive).expect("open"))
            .read_to_string(&mut back)
            .expect("gunzip");
        assert_eq!(back, text);
        assert!(std::fs::metadata(&archive).expect("meta").len() < text.len() as u64 / 10);
        std::fs::write(dir.path().join("history-2.jsonl"), "live").expect("write");
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(
            prune(dir.path(), Duration::from_secs(7200), later).expect("prune"),
            0
        );
        assert_eq!(
            prune(dir.path(), Duration::from_secs(1800), later).expect("prune"),
            1
        );
        assert!(!archive.exists());
        assert!(
            dir.path().join("history-2.jsonl").exists(),
            "the live file stays"
        );
    }

    #[test]
    fn the_recent_window_judges_the_steady_state() {
        let steady = SteadyState::default();
        let good = RecentWindow {
            seconds: 60,
            ops: 3000,
            success_rate: 0.999,
            p99_ms: 40.0,
        };
        assert_eq!(good.judge(&steady), Ok(()));
        let failing = RecentWindow {
            success_rate: 0.8,
            ..good
        };
        let reason = failing.judge(&steady).expect_err("below 99%");
        assert!(
            reason.contains("success rate 80.00% is below 99.00%")
                && reason.contains("nothing was injected"),
            "{reason}"
        );
        let slow = RecentWindow {
            p99_ms: 2500.0,
            ..good
        };
        assert!(slow
            .judge(&steady)
            .expect_err("slow")
            .contains("p99 latency 2500 ms"));
        let short = RecentWindow {
            seconds: 3,
            ..failing
        };
        assert_eq!(short.judge(&steady), Ok(()), "too short to judge");
    }
}
