//! The scheduler: which suite is due, the queue (one experiment at a time), missed runs after a
//! restart, blackouts, halt, and handing each run to a [`SuiteRunner`].
//!
//! It is a plain state machine driven by [`Scheduler::tick`]; the daemon ticks it every second,
//! tests tick it after moving a [`ManualClock`]. Runs execute on their own thread, so a tick
//! never waits for one. The queue lives in the run index (rows with status `queued`), so queued
//! runs and their order survive a restart.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::blackout::{active_at, ActiveBlackout};
use super::file::{MissedRuns, ResolvedEntry, Schedule, Suite};
use super::index::{Owner, RunIndex, RunResult, RunRow, RunStatus, Trigger};
use super::ScheduleError;

/// Where the scheduler reads the time.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    /// A clock standing at `at`.
    pub fn at(at: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(at)))
    }

    /// Sets the time.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().expect("clock") = at;
    }

    /// Moves the time forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().expect("clock");
        *now += chrono::Duration::from_std(by).expect("a sane duration");
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock")
    }
}

/// Asks a running run to heal and stop. The count doubles as the engine's interrupt counter.
#[derive(Clone, Debug, Default)]
pub struct StopSignal {
    count: Arc<AtomicUsize>,
    reason: Arc<Mutex<Option<String>>>,
}

impl StopSignal {
    /// Asks the run to stop; the first reason given is kept.
    pub fn stop(&self, reason: &str) {
        let mut kept = self.reason.lock().expect("stop reason");
        if kept.is_none() {
            *kept = Some(reason.to_owned());
        }
        self.count.fetch_add(1, Ordering::SeqCst);
    }

    /// Why the run was asked to stop, if it was.
    pub fn reason(&self) -> Option<String> {
        self.reason.lock().expect("stop reason").clone()
    }

    /// Whether it was asked to stop.
    pub fn is_stopped(&self) -> bool {
        self.count.load(Ordering::SeqCst) > 0
    }

    /// The counter, for the engine's `RunOptions::interrupts`.
    pub fn counter(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.count)
    }
}

/// One scenario run the scheduler hands to its target.
#[derive(Clone, Debug)]
pub struct RunRequest {
    /// The run's id in the index.
    pub index_id: i64,
    /// The suite.
    pub suite: String,
    /// The scenario, its spec with overrides applied.
    pub entry: ResolvedEntry,
    /// Why it runs.
    pub trigger: String,
}

/// The seam between the scheduler and a target (the lab today, a cluster tomorrow).
pub trait SuiteRunner: Send + Sync + 'static {
    /// Runs one scenario: load, faults, heal, judge, reports. Must heal every fault before it
    /// returns, and return promptly (after healing) once `stop` is raised.
    fn run(&self, request: &RunRequest, stop: &StopSignal) -> RunResult;
}

/// Told when a run ends; the daemon sends webhooks from here. Must not block.
pub trait RunObserver: Send + Sync {
    /// `row` has just ended; `previous` is the status of the suite's previous judged run of the
    /// same scenario.
    fn finished(&self, suite: Option<&Suite>, row: &RunRow, previous: Option<RunStatus>);
}

/// Something the scheduler did, for the daemon's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A run was queued.
    Queued {
        /// Index id.
        id: i64,
        /// Suite.
        suite: String,
        /// Scenario.
        scenario: String,
        /// Why.
        trigger: Trigger,
    },
    /// A run was recorded as skipped.
    Skipped {
        /// Index id.
        id: i64,
        /// Suite.
        suite: String,
        /// Scenario.
        scenario: String,
        /// Why.
        reason: String,
    },
    /// A run started.
    Started {
        /// Index id.
        id: i64,
        /// Scenario.
        scenario: String,
    },
    /// A run was asked to heal and stop.
    Stopping {
        /// Index id.
        id: i64,
        /// Why.
        reason: String,
    },
    /// A run ended.
    Finished {
        /// Index id.
        id: i64,
        /// Scenario.
        scenario: String,
        /// Its final status.
        status: RunStatus,
    },
    /// Runs left `running` by a process that is gone were marked aborted.
    Orphaned {
        /// Index ids.
        ids: Vec<i64>,
    },
    /// Finished runs were removed by retention.
    Pruned {
        /// How many.
        runs: usize,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Queued {
                id,
                suite,
                scenario,
                trigger,
            } => write!(
                f,
                "queued run {id}: {suite}/{scenario} ({})",
                trigger.as_str()
            ),
            Event::Skipped {
                id,
                suite,
                scenario,
                reason,
            } => write!(f, "skipped run {id}: {suite}/{scenario}: {reason}"),
            Event::Started { id, scenario } => write!(f, "started run {id}: {scenario}"),
            Event::Stopping { id, reason } => write!(f, "stopping run {id}: {reason}"),
            Event::Finished {
                id,
                scenario,
                status,
            } => write!(f, "finished run {id}: {scenario}: {}", status.as_str()),
            Event::Orphaned { ids } => write!(
                f,
                "marked runs {ids:?} aborted: the process running them stopped mid-run"
            ),
            Event::Pruned { runs } => write!(f, "retention removed {runs} finished runs"),
        }
    }
}

/// When a suite comes due next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NextRun {
    /// Suite.
    pub suite: String,
    /// Its cron expression.
    pub cron: String,
    /// Its time zone.
    pub time_zone: String,
    /// Next due time; `None` for a disabled suite.
    pub at: Option<DateTime<Utc>>,
    /// Its scenarios.
    pub scenarios: Vec<String>,
}

/// What the scheduler is doing, for the API and the page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SchedulerStatus {
    /// Now, by the scheduler's clock.
    pub now: DateTime<Utc>,
    /// Where the schedule came from.
    pub schedule: String,
    /// The run going on: index id and scenario.
    pub running: Option<(i64, String)>,
    /// Number of queued runs.
    pub queued: usize,
    /// Why new runs are blocked, after `halt`.
    pub halted: Option<String>,
    /// The blackout in force.
    pub blackout: Option<ActiveBlackout>,
    /// Each suite's next due time.
    pub next: Vec<NextRun>,
}

struct Running {
    id: i64,
    scenario: String,
    stop: StopSignal,
    done: mpsc::Receiver<RunResult>,
    thread: Option<JoinHandle<()>>,
}

/// The scheduler.
pub struct Scheduler {
    schedule: Schedule,
    index: RunIndex,
    runner: Arc<dyn SuiteRunner>,
    clock: Arc<dyn Clock>,
    observer: Option<Arc<dyn RunObserver>>,
    results_root: Option<PathBuf>,
    next_due: BTreeMap<String, DateTime<Utc>>,
    running: Option<Running>,
    halted: Option<String>,
    last_prune: Option<DateTime<Utc>>,
}

/// How often retention runs.
const PRUNE_EVERY: chrono::Duration = chrono::Duration::hours(1);

impl Scheduler {
    /// Starts the scheduler: marks runs left `running` by a dead process as aborted, applies the
    /// missed-run policy for every suite that came due while nothing was running, and computes
    /// each suite's next due time. Returns what it did.
    pub fn start(
        schedule: Schedule,
        index: RunIndex,
        runner: Arc<dyn SuiteRunner>,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, Vec<Event>), ScheduleError> {
        let mut scheduler = Self {
            schedule,
            index,
            runner,
            clock,
            observer: None,
            results_root: None,
            next_due: BTreeMap::new(),
            running: None,
            halted: None,
            last_prune: None,
        };
        let now = scheduler.clock.now();
        let mut events = Vec::new();
        let orphans = scheduler.index.abort_orphans(now, Owner::is_alive)?;
        if !orphans.is_empty() {
            events.push(Event::Orphaned { ids: orphans });
        }
        for suite in scheduler.schedule.suites.clone() {
            if suite.enabled {
                scheduler.catch_up(&suite, now, &mut events)?;
            }
        }
        scheduler.plan_next(now);
        Ok((scheduler, events))
    }

    /// Sends finished runs to `observer` (webhooks).
    #[must_use]
    pub fn with_observer(mut self, observer: Arc<dyn RunObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Lets retention delete run directories, but only those directly under `results_root`.
    #[must_use]
    pub fn with_results_root(mut self, results_root: PathBuf) -> Self {
        self.results_root = Some(results_root);
        self
    }

    /// The schedule in force.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The run index.
    pub fn index(&self) -> &RunIndex {
        &self.index
    }

    /// Applies the missed-run policy to `suite`: occurrences after the last handled one, up to
    /// `now`, were missed while the daemon was down.
    fn catch_up(
        &mut self,
        suite: &Suite,
        now: DateTime<Utc>,
        events: &mut Vec<Event>,
    ) -> Result<(), ScheduleError> {
        let Some(last) = self.index.last_due(&suite.name)? else {
            // First start with this suite: nothing can have been missed.
            self.index.set_last_due(&suite.name, now)?;
            return Ok(());
        };
        let missed = suite
            .cron
            .occurrences_between(last, now, suite.zone.0, 10_000);
        let Some(latest) = missed.last().copied() else {
            return Ok(());
        };
        let note = format!(
            "came due at {} while the daemon was down ({} missed occurrence{}); missed_runs: {}",
            latest.to_rfc3339(),
            missed.len(),
            if missed.len() == 1 { "" } else { "s" },
            suite.missed_runs.as_str()
        );
        match suite.missed_runs {
            MissedRuns::RunOnce => {
                self.queue_suite(
                    suite,
                    Trigger::Missed,
                    Some(latest),
                    now,
                    Some(&note),
                    events,
                )?;
            }
            MissedRuns::Skip => {
                for entry in &suite.entries {
                    let id = self.index.skip(
                        Some(&suite.name),
                        &entry.scenario,
                        Trigger::Missed,
                        Some(latest),
                        now,
                        &note,
                    )?;
                    events.push(Event::Skipped {
                        id,
                        suite: suite.name.clone(),
                        scenario: entry.scenario.clone(),
                        reason: note.clone(),
                    });
                }
            }
        }
        self.index.set_last_due(&suite.name, latest)?;
        Ok(())
    }

    fn plan_next(&mut self, now: DateTime<Utc>) {
        self.next_due = self
            .schedule
            .suites
            .iter()
            .filter(|s| s.enabled)
            .filter_map(|s| Some((s.name.clone(), s.cron.next_after(now, s.zone.0)?)))
            .collect();
    }

    fn queue_suite(
        &mut self,
        suite: &Suite,
        trigger: Trigger,
        due: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        note: Option<&str>,
        events: &mut Vec<Event>,
    ) -> Result<Vec<i64>, ScheduleError> {
        let mut ids = Vec::new();
        for entry in &suite.entries {
            let id =
                self.index
                    .queue(Some(&suite.name), &entry.scenario, trigger, due, now, note)?;
            events.push(Event::Queued {
                id,
                suite: suite.name.clone(),
                scenario: entry.scenario.clone(),
                trigger,
            });
            ids.push(id);
        }
        Ok(ids)
    }

    /// One step: collect a finished run, stop a run when a blackout starts, queue the suites
    /// that came due, start the next queued run when nothing runs, and apply retention.
    pub fn tick(&mut self) -> Result<Vec<Event>, ScheduleError> {
        let now = self.clock.now();
        let mut events = Vec::new();
        self.collect_finished(now, &mut events)?;
        let blackout = active_at(&self.schedule.blackouts, now);
        if let (Some(running), Some(b)) = (&self.running, &blackout) {
            if !running.stop.is_stopped() {
                let reason = format!(
                    "blackout {} began (until {}): every fault was healed and the run stopped",
                    b.name,
                    b.until.to_rfc3339()
                );
                running.stop.stop(&reason);
                events.push(Event::Stopping {
                    id: running.id,
                    reason,
                });
            }
        }
        self.queue_due(now, blackout.as_ref(), &mut events)?;
        if self.running.is_none() && self.halted.is_none() && blackout.is_none() {
            self.start_next(now, &mut events)?;
        }
        if self.last_prune.is_none_or(|last| now - last >= PRUNE_EVERY) {
            self.last_prune = Some(now);
            let pruned = self.prune(now)?;
            if pruned > 0 {
                events.push(Event::Pruned { runs: pruned });
            }
        }
        Ok(events)
    }

    fn queue_due(
        &mut self,
        now: DateTime<Utc>,
        blackout: Option<&ActiveBlackout>,
        events: &mut Vec<Event>,
    ) -> Result<(), ScheduleError> {
        // In the file's order, so suites due at the same moment queue as they are listed.
        let due: Vec<String> = self
            .schedule
            .suites
            .iter()
            .filter(|s| self.next_due.get(&s.name).is_some_and(|at| *at <= now))
            .map(|s| s.name.clone())
            .collect();
        for name in due {
            let Some(suite) = self.schedule.suite(&name).cloned() else {
                continue;
            };
            // Several occurrences since the last tick (a stalled machine) collapse into the
            // latest one.
            let at = suite
                .cron
                .latest_at_or_before(now, suite.zone.0)
                .unwrap_or(now);
            let skip_reason = if let Some(b) = blackout {
                Some(format!(
                    "came due during blackout {} (until {}); nothing is injected during a blackout",
                    b.name,
                    b.until.to_rfc3339()
                ))
            } else if let Some(why) = &self.halted {
                Some(format!(
                    "came due while halted ({why}); `chaosctl resume` allows runs again"
                ))
            } else if self.has_queued(&name)? {
                Some(format!(
                    "came due while its previous run was still queued; one {name} run waits at a time"
                ))
            } else {
                None
            };
            match skip_reason {
                Some(reason) => {
                    for entry in &suite.entries {
                        let id = self.index.skip(
                            Some(&name),
                            &entry.scenario,
                            Trigger::Schedule,
                            Some(at),
                            now,
                            &reason,
                        )?;
                        events.push(Event::Skipped {
                            id,
                            suite: name.clone(),
                            scenario: entry.scenario.clone(),
                            reason: reason.clone(),
                        });
                    }
                }
                None => {
                    self.queue_suite(&suite, Trigger::Schedule, Some(at), now, None, events)?;
                }
            }
            self.index.set_last_due(&name, at)?;
            if let Some(next) = suite.cron.next_after(now, suite.zone.0) {
                self.next_due.insert(name, next);
            } else {
                self.next_due.remove(&name);
            }
        }
        Ok(())
    }

    fn has_queued(&self, suite: &str) -> Result<bool, ScheduleError> {
        Ok(self
            .index
            .queued()?
            .iter()
            .any(|row| row.suite.as_deref() == Some(suite)))
    }

    fn start_next(
        &mut self,
        now: DateTime<Utc>,
        events: &mut Vec<Event>,
    ) -> Result<(), ScheduleError> {
        for row in self.index.queued()? {
            let suite_name = row.suite.clone().unwrap_or_default();
            let entry = self.schedule.suite(&suite_name).and_then(|suite| {
                suite
                    .entries
                    .iter()
                    .find(|e| e.scenario == row.scenario)
                    .cloned()
            });
            let Some(entry) = entry else {
                self.index.finish(
                    row.id,
                    now,
                    &RunResult::error(format!(
                        "suite {suite_name} has no scenario {} any more (the schedule was reloaded); not run",
                        row.scenario
                    )),
                )?;
                events.push(Event::Finished {
                    id: row.id,
                    scenario: row.scenario.clone(),
                    status: RunStatus::Error,
                });
                continue;
            };
            self.index.start(row.id, now, Owner::this_process())?;
            let request = RunRequest {
                index_id: row.id,
                suite: suite_name,
                entry,
                trigger: row.trigger.clone(),
            };
            let stop = StopSignal::default();
            let (tx, rx) = mpsc::channel();
            let runner = Arc::clone(&self.runner);
            let thread_stop = stop.clone();
            let thread = std::thread::Builder::new()
                .name(format!("run-{}", row.id))
                .spawn(move || {
                    let mut result = runner.run(&request, &thread_stop);
                    if let Some(reason) = thread_stop.reason() {
                        // The engine only knows it was interrupted; the index says why, keeping
                        // a runner's note that already gives the reason and more.
                        result.status = Some(RunStatus::Aborted);
                        if !result.note.as_deref().is_some_and(|n| n.contains(&reason)) {
                            result.note = Some(reason);
                        }
                    }
                    let _ = tx.send(result);
                })
                .map_err(|e| ScheduleError::Index {
                    path: self.index.path().to_path_buf(),
                    message: format!("cannot start a thread for run {}: {e}", row.id),
                })?;
            events.push(Event::Started {
                id: row.id,
                scenario: row.scenario.clone(),
            });
            self.running = Some(Running {
                id: row.id,
                scenario: row.scenario,
                stop,
                done: rx,
                thread: Some(thread),
            });
            return Ok(());
        }
        Ok(())
    }

    fn collect_finished(
        &mut self,
        now: DateTime<Utc>,
        events: &mut Vec<Event>,
    ) -> Result<(), ScheduleError> {
        let Some(running) = self.running.as_mut() else {
            return Ok(());
        };
        let result = match running.done.try_recv() {
            Ok(result) => result,
            Err(mpsc::TryRecvError::Empty) => return Ok(()),
            Err(mpsc::TryRecvError::Disconnected) => {
                RunResult::error("the run's thread ended without a result (it panicked)")
            }
        };
        let mut running = self.running.take().expect("checked above");
        if let Some(thread) = running.thread.take() {
            let _ = thread.join();
        }
        self.record_end(running.id, &running.scenario, now, &result, events)
    }

    fn record_end(
        &mut self,
        id: i64,
        scenario: &str,
        now: DateTime<Utc>,
        result: &RunResult,
        events: &mut Vec<Event>,
    ) -> Result<(), ScheduleError> {
        self.index.finish(id, now, result)?;
        let status = result.status.unwrap_or(RunStatus::Error);
        events.push(Event::Finished {
            id,
            scenario: scenario.to_owned(),
            status,
        });
        if let (Some(observer), Some(row)) = (&self.observer, self.index.get(&id.to_string())?) {
            let previous = self
                .index
                .previous_judged(id, row.suite.as_deref(), &row.scenario)?;
            let suite = row.suite.as_deref().and_then(|s| self.schedule.suite(s));
            observer.finished(suite, &row, previous);
        }
        Ok(())
    }

    /// Waits up to `timeout` for the running run to end, so the next [`Scheduler::tick`] records
    /// it. Returns whether it ended. Used on shutdown and by tests.
    pub fn wait_running(&mut self, timeout: Duration) -> bool {
        let Some(running) = self.running.as_mut() else {
            return true;
        };
        match running.done.recv_timeout(timeout) {
            Ok(result) => {
                // Put it back where `collect_finished` looks for it.
                let (tx, rx) = mpsc::channel();
                let _ = tx.send(result);
                running.done = rx;
                true
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => true,
            Err(mpsc::RecvTimeoutError::Timeout) => false,
        }
    }

    /// Queues every scenario of `suite` now (the API's "trigger"), whether or not it is enabled.
    /// It starts when nothing runs and no blackout or halt is in force.
    pub fn trigger(&mut self, suite: &str) -> Result<Vec<i64>, ScheduleError> {
        let suite = self
            .schedule
            .suite(suite)
            .cloned()
            .ok_or_else(|| ScheduleError::UnknownSuite(suite.to_owned()))?;
        let now = self.clock.now();
        self.queue_suite(&suite, Trigger::Api, None, now, None, &mut Vec::new())
    }

    /// Stops the running run (it heals first) and starts nothing until [`Scheduler::resume`].
    pub fn halt(&mut self, reason: &str) -> Option<i64> {
        self.halted = Some(reason.to_owned());
        let running = self.running.as_ref()?;
        running.stop.stop(&format!(
            "halted ({reason}): every fault was healed and the run stopped"
        ));
        Some(running.id)
    }

    /// Allows runs again after [`Scheduler::halt`].
    pub fn resume(&mut self) {
        self.halted = None;
    }

    /// Replaces the schedule. Suites whose cron and zone did not change keep their next due
    /// time; new or changed suites are planned from now. Queued runs stay queued.
    pub fn reload(&mut self, schedule: Schedule) {
        let now = self.clock.now();
        let old = std::mem::replace(&mut self.schedule, schedule);
        let mut next = BTreeMap::new();
        for suite in self.schedule.suites.iter().filter(|s| s.enabled) {
            let unchanged = old
                .suite(&suite.name)
                .is_some_and(|o| o.enabled && o.cron == suite.cron && o.zone == suite.zone);
            let at = if unchanged {
                self.next_due.get(&suite.name).copied()
            } else {
                None
            };
            if let Some(at) = at.or_else(|| suite.cron.next_after(now, suite.zone.0)) {
                next.insert(suite.name.clone(), at);
            }
        }
        self.next_due = next;
    }

    /// Stops the running run, waits for it to heal and records its end. For shutdown.
    pub fn shutdown(
        &mut self,
        reason: &str,
        timeout: Duration,
    ) -> Result<Vec<Event>, ScheduleError> {
        let mut events = Vec::new();
        if let Some(running) = &self.running {
            running.stop.stop(reason);
            events.push(Event::Stopping {
                id: running.id,
                reason: reason.to_owned(),
            });
        }
        if self.wait_running(timeout) {
            let now = self.clock.now();
            self.collect_finished(now, &mut events)?;
        }
        Ok(events)
    }

    /// What it is doing.
    pub fn status(&self) -> Result<SchedulerStatus, ScheduleError> {
        let now = self.clock.now();
        Ok(SchedulerStatus {
            now,
            schedule: self.schedule.source.clone(),
            running: self.running.as_ref().map(|r| (r.id, r.scenario.clone())),
            queued: self.index.queued()?.len(),
            halted: self.halted.clone(),
            blackout: active_at(&self.schedule.blackouts, now),
            next: self.next_runs(),
        })
    }

    /// Each suite's next due time, soonest first (disabled suites last).
    pub fn next_runs(&self) -> Vec<NextRun> {
        let mut next: Vec<NextRun> = self
            .schedule
            .suites
            .iter()
            .map(|s| NextRun {
                suite: s.name.clone(),
                cron: s.cron.as_str().to_owned(),
                time_zone: s.zone.0.name().to_owned(),
                at: self.next_due.get(&s.name).copied(),
                scenarios: s.entries.iter().map(|e| e.scenario.clone()).collect(),
            })
            .collect();
        next.sort_by_key(|n| (n.at.is_none(), n.at));
        next
    }

    /// The StopSignal of the running run (the daemon's halt endpoint raises it).
    pub fn running_stop(&self) -> Option<StopSignal> {
        self.running.as_ref().map(|r| r.stop.clone())
    }

    fn prune(&mut self, now: DateTime<Utc>) -> Result<usize, ScheduleError> {
        let retention = &self.schedule.retention;
        let removed = self
            .index
            .prune(retention.max_runs, retention.max_age, now)?;
        if let Some(root) = &self.results_root {
            for row in &removed {
                let Some(dir) = row.dir.as_deref().map(Path::new) else {
                    continue;
                };
                // Only our own run directories: never follow a path outside the results root.
                if dir.parent() == Some(root.as_path()) && dir.join("spec.yaml").exists() {
                    let _ = std::fs::remove_dir_all(dir);
                }
            }
        }
        Ok(removed.len())
    }
}
