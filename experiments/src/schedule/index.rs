//! The run index: every run, scheduled or manual, in one SQLite file
//! (`<state root>/runs.sqlite`), next to the run directories it points to.
//!
//! SQLite through rusqlite, with SQLite compiled in (`bundled`): the daemon, `chaosctl` and later
//! the controller image need no system library, and every build runs the same SQLite. Several
//! processes may use the index at once (the daemon and a manual `chaosctl run`): the file is in
//! WAL mode and writers wait for each other (busy timeout).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::checkers::CheckReport;
use crate::engine::run::RunOutcome;

use super::ScheduleError;

/// The index's schema version (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT,
    suite TEXT,
    scenario TEXT NOT NULL,
    trigger TEXT NOT NULL,
    status TEXT NOT NULL,
    due_at INTEGER,
    queued_at INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    exit_code INTEGER,
    score INTEGER,
    verdicts TEXT NOT NULL DEFAULT '{}',
    dir TEXT,
    note TEXT,
    owner_pid INTEGER,
    owner_start INTEGER
);
CREATE INDEX IF NOT EXISTS runs_by_suite ON runs (suite, id);
CREATE INDEX IF NOT EXISTS runs_by_scenario ON runs (scenario, id);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status);
CREATE TABLE IF NOT EXISTS run_ttr (
    run INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    fault_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    ttr_ms INTEGER,
    recovered INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS run_ttr_by_run ON run_ttr (run);
CREATE TABLE IF NOT EXISTS run_anomalies (
    run INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS run_anomalies_by_run ON run_anomalies (run);
CREATE TABLE IF NOT EXISTS suite_state (
    suite TEXT PRIMARY KEY,
    last_due INTEGER NOT NULL
);
";

/// Where a run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting for the run before it, a blackout's end, or `resume`.
    Queued,
    /// Going on now.
    Running,
    /// Every verdict valid.
    Passed,
    /// An SLO or consistency failure.
    Failed,
    /// A checker could not decide.
    Unknown,
    /// Ended early (abort condition, steady state, blackout, halt, interrupt, crash); healed.
    Aborted,
    /// Could not run (lab, spec or results error).
    Error,
    /// Not run: missed with `missed_runs: skip`, due during a blackout or while halted.
    Skipped,
}

impl RunStatus {
    /// The status as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Passed => "passed",
            RunStatus::Failed => "failed",
            RunStatus::Unknown => "unknown",
            RunStatus::Aborted => "aborted",
            RunStatus::Error => "error",
            RunStatus::Skipped => "skipped",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "queued" => RunStatus::Queued,
            "running" => RunStatus::Running,
            "passed" => RunStatus::Passed,
            "failed" => RunStatus::Failed,
            "unknown" => RunStatus::Unknown,
            "aborted" => RunStatus::Aborted,
            "skipped" => RunStatus::Skipped,
            _ => RunStatus::Error,
        }
    }

    /// Whether the run has ended (or never will run).
    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Queued | RunStatus::Running)
    }

    /// The verdict of a finished run that got as far as judging, for trends and webhooks.
    pub fn is_judged(self) -> bool {
        matches!(
            self,
            RunStatus::Passed | RunStatus::Failed | RunStatus::Unknown
        )
    }
}

/// Why a run was queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Its suite's cron came due.
    Schedule,
    /// It came due while the daemon was down (missed-run policy).
    Missed,
    /// Triggered through the daemon's API (`chaosctl schedule trigger`).
    Api,
    /// A manual `chaosctl run`.
    Manual,
}

impl Trigger {
    /// The trigger as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Missed => "missed",
            Trigger::Api => "api",
            Trigger::Manual => "manual",
        }
    }
}

/// One fault's time to recover.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultTtr {
    /// The fault's id.
    pub fault_id: String,
    /// Its kind.
    pub kind: String,
    /// Time to recover, when it recovered.
    pub ttr_ms: Option<u64>,
    /// Whether it recovered within the deadline.
    pub recovered: bool,
}

/// The process that runs a run; a `running` row whose owner is gone was interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Process id.
    pub pid: i32,
    /// Its start time in clock ticks since boot, so a recycled PID is not taken for it.
    pub start_ticks: u64,
}

impl Owner {
    /// This process.
    pub fn this_process() -> Self {
        let pid = std::process::id() as i32;
        let start_ticks = faultline_injectors::process::read_proc_stat(Path::new("/proc"), pid)
            .map_or(0, |s| s.start_ticks);
        Self { pid, start_ticks }
    }

    /// Whether the process still runs, read from `/proc`.
    pub fn is_alive(self) -> bool {
        faultline_injectors::process::read_proc_stat(Path::new("/proc"), self.pid)
            .is_some_and(|s| s.start_ticks == self.start_ticks && s.state != 'Z')
    }
}

/// How a run ended, for the index.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// The engine's run id (its directory's name).
    pub run_id: Option<String>,
    /// The run directory.
    pub dir: Option<PathBuf>,
    /// The final status.
    pub status: Option<RunStatus>,
    /// The run's exit code (0 pass, 1 failure, 2 error, unknown or aborted).
    pub exit_code: Option<u8>,
    /// The score, 0-100.
    pub score: Option<u8>,
    /// Each checker's status: `recovery` -> `valid`.
    pub verdicts: BTreeMap<String, String>,
    /// Time to recover per fault.
    pub ttr: Vec<FaultTtr>,
    /// Occurrences per anomaly kind.
    pub anomalies: BTreeMap<String, u64>,
    /// Why it ended as it did, for aborted and failed runs.
    pub note: Option<String>,
}

impl RunResult {
    /// From the engine's outcome.
    pub fn from_outcome(outcome: &RunOutcome) -> Self {
        let record = &outcome.record;
        let mut result = outcome
            .report
            .as_ref()
            .map(Self::from_report)
            .unwrap_or_default();
        result.run_id = Some(record.run_id.clone());
        result.dir = Some(outcome.dir.clone());
        result.exit_code = Some(record.exit_code);
        result.status = Some(
            if record.aborted.is_some() || record.steady_state.is_some() {
                RunStatus::Aborted
            } else {
                match record.exit_code {
                    0 => RunStatus::Passed,
                    1 => RunStatus::Failed,
                    _ => RunStatus::Unknown,
                }
            },
        );
        result.note.clone_from(&record.aborted);
        result
    }

    /// The verdicts, score, TTRs and anomaly counts of a check report.
    pub fn from_report(report: &CheckReport) -> Self {
        let mut anomalies = BTreeMap::new();
        for verdict in &report.verdicts {
            for anomaly in &verdict.anomalies {
                *anomalies.entry(anomaly.name.clone()).or_insert(0) += anomaly.count;
            }
        }
        Self {
            score: Some(report.score),
            verdicts: report
                .verdicts
                .iter()
                .map(|v| (v.name.clone(), v.status.as_str().to_owned()))
                .collect(),
            ttr: report
                .recovery
                .faults
                .iter()
                .map(|f| FaultTtr {
                    fault_id: f.fault_id.clone(),
                    kind: f.kind.clone(),
                    ttr_ms: f.ttr_ms,
                    recovered: f.recovered,
                })
                .collect(),
            anomalies,
            ..Self::default()
        }
    }

    /// A run that could not run.
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            status: Some(RunStatus::Error),
            exit_code: Some(2),
            note: Some(message.into()),
            ..Self::default()
        }
    }
}

/// One run as the index knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunRow {
    /// The index's id.
    pub id: i64,
    /// The engine's run id (its directory's name), once it started.
    pub run_id: Option<String>,
    /// The suite, for scheduled runs.
    pub suite: Option<String>,
    /// The scenario.
    pub scenario: String,
    /// Why it was queued.
    pub trigger: String,
    /// Where it stands.
    pub status: RunStatus,
    /// When its suite came due.
    pub due_at: Option<DateTime<Utc>>,
    /// When it was queued (or recorded).
    pub queued_at: DateTime<Utc>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Exit code.
    pub exit_code: Option<u8>,
    /// Score.
    pub score: Option<u8>,
    /// Each checker's status.
    pub verdicts: BTreeMap<String, String>,
    /// TTR per fault.
    pub ttr: Vec<FaultTtr>,
    /// Occurrences per anomaly kind.
    pub anomalies: BTreeMap<String, u64>,
    /// The run directory.
    pub dir: Option<String>,
    /// Why it ended (or was skipped) as it did.
    pub note: Option<String>,
}

impl RunRow {
    /// The longest TTR of its faults, in ms; `None` when no fault has one.
    pub fn max_ttr_ms(&self) -> Option<u64> {
        self.ttr.iter().filter_map(|t| t.ttr_ms).max()
    }

    /// How long it ran.
    pub fn duration(&self) -> Option<Duration> {
        let (Some(start), Some(end)) = (self.started_at, self.ended_at) else {
            return None;
        };
        (end - start).to_std().ok()
    }
}

/// Which runs to list.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    /// Only this suite.
    pub suite: Option<String>,
    /// Only this scenario.
    pub scenario: Option<String>,
    /// Only runs queued at or after this.
    pub since: Option<DateTime<Utc>>,
    /// At most this many, newest first.
    pub limit: Option<usize>,
}

/// Counts for metrics: finished runs by suite, scenario and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunCount {
    /// Suite (empty for manual runs).
    pub suite: String,
    /// Scenario.
    pub scenario: String,
    /// Final status.
    pub status: RunStatus,
    /// Number of runs.
    pub count: u64,
}

/// The run index.
pub struct RunIndex {
    conn: Connection,
    path: PathBuf,
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.and_then(DateTime::<Utc>::from_timestamp_millis)
}

impl RunIndex {
    /// Where the index lives under a state root.
    pub fn default_path(state_root: &Path) -> PathBuf {
        state_root.join("runs.sqlite")
    }

    /// Opens (creating if needed) the index at `path`.
    pub fn open(path: &Path) -> Result<Self, ScheduleError> {
        let fail = |e: rusqlite::Error| ScheduleError::Index {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| ScheduleError::Index {
                path: path.to_path_buf(),
                message: format!("cannot create its directory: {e}"),
            })?;
        }
        let conn = Connection::open(path).map_err(fail)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(fail)?;
        conn.pragma_update(None, "journal_mode", "wal")
            .map_err(fail)?;
        conn.pragma_update(None, "foreign_keys", "on")
            .map_err(fail)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(fail)?;
        if version > SCHEMA_VERSION {
            return Err(ScheduleError::Index {
                path: path.to_path_buf(),
                message: format!("it was written by a newer Faultline (schema {version}, this one reads {SCHEMA_VERSION}); upgrade chaosctl and faultlined together"),
            });
        }
        conn.execute_batch(SCHEMA).map_err(fail)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(fail)?;
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn fail(&self, e: &rusqlite::Error) -> ScheduleError {
        ScheduleError::Index {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Queues a run of `scenario` for `suite`.
    pub fn queue(
        &self,
        suite: Option<&str>,
        scenario: &str,
        trigger: Trigger,
        due_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        note: Option<&str>,
    ) -> Result<i64, ScheduleError> {
        self.insert(
            suite,
            scenario,
            trigger,
            RunStatus::Queued,
            due_at,
            now,
            note,
        )
    }

    /// Records a run that will not happen, and why.
    pub fn skip(
        &self,
        suite: Option<&str>,
        scenario: &str,
        trigger: Trigger,
        due_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        note: &str,
    ) -> Result<i64, ScheduleError> {
        let id = self.insert(
            suite,
            scenario,
            trigger,
            RunStatus::Skipped,
            due_at,
            now,
            Some(note),
        )?;
        self.conn
            .execute(
                "UPDATE runs SET ended_at = ?2 WHERE id = ?1",
                params![id, ms(now)],
            )
            .map_err(|e| self.fail(&e))?;
        Ok(id)
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &self,
        suite: Option<&str>,
        scenario: &str,
        trigger: Trigger,
        status: RunStatus,
        due_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        note: Option<&str>,
    ) -> Result<i64, ScheduleError> {
        self.conn
            .execute(
                "INSERT INTO runs (suite, scenario, trigger, status, due_at, queued_at, note)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    suite,
                    scenario,
                    trigger.as_str(),
                    status.as_str(),
                    due_at.map(ms),
                    ms(now),
                    note
                ],
            )
            .map_err(|e| self.fail(&e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Marks a queued run as running in `owner`.
    pub fn start(&self, id: i64, now: DateTime<Utc>, owner: Owner) -> Result<(), ScheduleError> {
        self.conn
            .execute(
                "UPDATE runs SET status = 'running', started_at = ?2, owner_pid = ?3, owner_start = ?4 WHERE id = ?1",
                params![id, ms(now), owner.pid, owner.start_ticks as i64],
            )
            .map_err(|e| self.fail(&e))?;
        Ok(())
    }

    /// Records a manual run (`chaosctl run`) that starts now.
    pub fn begin_manual(
        &self,
        scenario: &str,
        now: DateTime<Utc>,
        owner: Owner,
    ) -> Result<i64, ScheduleError> {
        let id = self.insert(
            None,
            scenario,
            Trigger::Manual,
            RunStatus::Queued,
            None,
            now,
            None,
        )?;
        self.start(id, now, owner)?;
        Ok(id)
    }

    /// Records how a run ended.
    pub fn finish(
        &self,
        id: i64,
        now: DateTime<Utc>,
        result: &RunResult,
    ) -> Result<(), ScheduleError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.fail(&e))?;
        tx.execute(
            "UPDATE runs SET status = ?2, ended_at = ?3, run_id = ?4, dir = ?5, exit_code = ?6,
             score = ?7, verdicts = ?8, note = COALESCE(?9, note) WHERE id = ?1",
            params![
                id,
                result.status.unwrap_or(RunStatus::Error).as_str(),
                ms(now),
                result.run_id,
                result.dir.as_ref().map(|d| d.display().to_string()),
                result.exit_code,
                result.score,
                serde_json::to_string(&result.verdicts).unwrap_or_else(|_| "{}".into()),
                result.note,
            ],
        )
        .map_err(|e| self.fail(&e))?;
        tx.execute("DELETE FROM run_ttr WHERE run = ?1", params![id])
            .map_err(|e| self.fail(&e))?;
        tx.execute("DELETE FROM run_anomalies WHERE run = ?1", params![id])
            .map_err(|e| self.fail(&e))?;
        for t in &result.ttr {
            tx.execute(
                "INSERT INTO run_ttr (run, fault_id, kind, ttr_ms, recovered) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, t.fault_id, t.kind, t.ttr_ms.map(|v| v as i64), t.recovered],
            )
            .map_err(|e| self.fail(&e))?;
        }
        for (kind, count) in &result.anomalies {
            tx.execute(
                "INSERT INTO run_anomalies (run, kind, count) VALUES (?1, ?2, ?3)",
                params![id, kind, *count as i64],
            )
            .map_err(|e| self.fail(&e))?;
        }
        tx.commit().map_err(|e| self.fail(&e))
    }

    /// Marks every `running` run whose owner process is gone as aborted (a crash or kill -9
    /// mid-run); returns their ids. The faults themselves are healed by the ledger.
    pub fn abort_orphans(
        &self,
        now: DateTime<Utc>,
        is_alive: impl Fn(Owner) -> bool,
    ) -> Result<Vec<i64>, ScheduleError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, owner_pid, owner_start FROM runs WHERE status = 'running'")
            .map_err(|e| self.fail(&e))?;
        let rows: Vec<(i64, Option<i64>, Option<i64>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .and_then(Iterator::collect)
            .map_err(|e| self.fail(&e))?;
        let mut aborted = Vec::new();
        for (id, pid, start) in rows {
            let owner = Owner {
                pid: pid.unwrap_or(0) as i32,
                start_ticks: start.unwrap_or(0) as u64,
            };
            if pid.is_some() && is_alive(owner) {
                continue;
            }
            self.conn
                .execute(
                    "UPDATE runs SET status = 'aborted', ended_at = ?2, exit_code = 2,
                     note = ?3 WHERE id = ?1",
                    params![
                        id,
                        ms(now),
                        format!(
                            "the process running it (pid {}) stopped mid-run; its faults were healed by their ledger deadlines and reconcile",
                            owner.pid
                        )
                    ],
                )
                .map_err(|e| self.fail(&e))?;
            aborted.push(id);
        }
        Ok(aborted)
    }

    /// Runs waiting to start, oldest first.
    pub fn queued(&self) -> Result<Vec<RunRow>, ScheduleError> {
        self.select("WHERE status = 'queued' ORDER BY id ASC", params![])
    }

    /// The run going on, if any.
    pub fn running(&self) -> Result<Vec<RunRow>, ScheduleError> {
        self.select("WHERE status = 'running' ORDER BY id ASC", params![])
    }

    /// Runs matching `filter`, newest first.
    pub fn list(&self, filter: &RunFilter) -> Result<Vec<RunRow>, ScheduleError> {
        self.select(
            "WHERE (?1 IS NULL OR suite = ?1) AND (?2 IS NULL OR scenario = ?2)
             AND (?3 IS NULL OR queued_at >= ?3) ORDER BY id DESC LIMIT ?4",
            params![
                filter.suite,
                filter.scenario,
                filter.since.map(ms),
                filter.limit.map_or(-1, |l| l as i64)
            ],
        )
    }

    /// A run by the index's id or the engine's run id.
    pub fn get(&self, key: &str) -> Result<Option<RunRow>, ScheduleError> {
        let rows = match key.parse::<i64>() {
            Ok(id) => self.select("WHERE id = ?1", params![id])?,
            Err(_) => self.select("WHERE run_id = ?1", params![key])?,
        };
        Ok(rows.into_iter().next())
    }

    /// The status of the latest judged run of the same suite and scenario before `id`.
    pub fn previous_judged(
        &self,
        id: i64,
        suite: Option<&str>,
        scenario: &str,
    ) -> Result<Option<RunStatus>, ScheduleError> {
        self.conn
            .query_row(
                "SELECT status FROM runs WHERE id < ?1 AND suite IS ?2 AND scenario = ?3
                 AND status IN ('passed', 'failed', 'unknown') ORDER BY id DESC LIMIT 1",
                params![id, suite, scenario],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .map(|s| s.map(|s| RunStatus::parse(&s)))
            .map_err(|e| self.fail(&e))
    }

    /// Finished runs by suite, scenario and status.
    pub fn counts(&self) -> Result<Vec<RunCount>, ScheduleError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT COALESCE(suite, ''), scenario, status, COUNT(*) FROM runs
                 WHERE status NOT IN ('queued', 'running') GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            )
            .map_err(|e| self.fail(&e))?;
        stmt.query_map([], |r| {
            Ok(RunCount {
                suite: r.get(0)?,
                scenario: r.get(1)?,
                status: RunStatus::parse(&r.get::<_, String>(2)?),
                count: r.get::<_, i64>(3)? as u64,
            })
        })
        .and_then(Iterator::collect)
        .map_err(|e| self.fail(&e))
    }

    /// Anomaly occurrences over every run, by kind.
    pub fn anomaly_totals(&self) -> Result<BTreeMap<String, u64>, ScheduleError> {
        let mut stmt = self
            .conn
            .prepare("SELECT kind, SUM(count) FROM run_anomalies GROUP BY kind ORDER BY kind")
            .map_err(|e| self.fail(&e))?;
        stmt.query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
            .and_then(Iterator::collect)
            .map_err(|e| self.fail(&e))
    }

    /// The last due time handled for each suite (for missed runs after a restart).
    pub fn last_due(&self, suite: &str) -> Result<Option<DateTime<Utc>>, ScheduleError> {
        self.conn
            .query_row(
                "SELECT last_due FROM suite_state WHERE suite = ?1",
                params![suite],
                |r| r.get::<_, i64>(0),
            )
            .optional()
            .map(from_ms)
            .map_err(|e| self.fail(&e))
    }

    /// Remembers that `suite`'s occurrences up to `due` have been handled.
    pub fn set_last_due(&self, suite: &str, due: DateTime<Utc>) -> Result<(), ScheduleError> {
        self.conn
            .execute(
                "INSERT INTO suite_state (suite, last_due) VALUES (?1, ?2)
                 ON CONFLICT (suite) DO UPDATE SET last_due = MAX(last_due, excluded.last_due)",
                params![suite, ms(due)],
            )
            .map_err(|e| self.fail(&e))?;
        Ok(())
    }

    /// Removes finished runs beyond `max_runs` or older than `max_age` (by end time) from the
    /// index and returns them, so the caller can delete their directories.
    pub fn prune(
        &self,
        max_runs: u32,
        max_age: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<RunRow>, ScheduleError> {
        let cutoff = now - chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
        let finished = self.select(
            "WHERE status NOT IN ('queued', 'running') ORDER BY id DESC",
            params![],
        )?;
        let doomed: Vec<RunRow> = finished
            .into_iter()
            .enumerate()
            .filter(|(i, row)| {
                *i >= max_runs as usize || row.ended_at.unwrap_or(row.queued_at) < cutoff
            })
            .map(|(_, row)| row)
            .collect();
        for row in &doomed {
            self.conn
                .execute("DELETE FROM runs WHERE id = ?1", params![row.id])
                .map_err(|e| self.fail(&e))?;
        }
        Ok(doomed)
    }

    fn select(
        &self,
        clause: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<RunRow>, ScheduleError> {
        let sql = format!(
            "SELECT id, run_id, suite, scenario, trigger, status, due_at, queued_at, started_at,
             ended_at, exit_code, score, verdicts, dir, note FROM runs {clause}"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.fail(&e))?;
        let mut rows: Vec<RunRow> = stmt
            .query_map(params, row_from_sql)
            .and_then(Iterator::collect)
            .map_err(|e| self.fail(&e))?;
        let mut ttr_stmt = self
            .conn
            .prepare_cached("SELECT fault_id, kind, ttr_ms, recovered FROM run_ttr WHERE run = ?1 ORDER BY rowid")
            .map_err(|e| self.fail(&e))?;
        let mut anomaly_stmt = self
            .conn
            .prepare_cached("SELECT kind, count FROM run_anomalies WHERE run = ?1")
            .map_err(|e| self.fail(&e))?;
        for row in &mut rows {
            row.ttr = ttr_stmt
                .query_map(params![row.id], |r| {
                    Ok(FaultTtr {
                        fault_id: r.get(0)?,
                        kind: r.get(1)?,
                        ttr_ms: r.get::<_, Option<i64>>(2)?.map(|v| v as u64),
                        recovered: r.get(3)?,
                    })
                })
                .and_then(Iterator::collect)
                .map_err(|e| self.fail(&e))?;
            row.anomalies = anomaly_stmt
                .query_map(params![row.id], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
                })
                .and_then(Iterator::collect)
                .map_err(|e| self.fail(&e))?;
        }
        Ok(rows)
    }
}

fn row_from_sql(r: &Row<'_>) -> rusqlite::Result<RunRow> {
    let verdicts: String = r.get(12)?;
    Ok(RunRow {
        id: r.get(0)?,
        run_id: r.get(1)?,
        suite: r.get(2)?,
        scenario: r.get(3)?,
        trigger: r.get(4)?,
        status: RunStatus::parse(&r.get::<_, String>(5)?),
        due_at: from_ms(r.get(6)?),
        queued_at: from_ms(Some(r.get(7)?)).unwrap_or_default(),
        started_at: from_ms(r.get(8)?),
        ended_at: from_ms(r.get(9)?),
        exit_code: r.get::<_, Option<i64>>(10)?.map(|v| v.clamp(0, 255) as u8),
        score: r.get::<_, Option<i64>>(11)?.map(|v| v.clamp(0, 255) as u8),
        verdicts: serde_json::from_str(&verdicts).unwrap_or_default(),
        ttr: vec![],
        anomalies: BTreeMap::new(),
        dir: r.get(13)?,
        note: r.get(14)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_780_000_000, 0).expect("time")
            + chrono::Duration::minutes(minutes)
    }

    fn judged(status: RunStatus, ttr_ms: u64, lost: u64) -> RunResult {
        RunResult {
            run_id: Some(format!("az-failure-{ttr_ms}")),
            dir: Some(PathBuf::from("/tmp/x")),
            status: Some(status),
            exit_code: Some(u8::from(status != RunStatus::Passed)),
            score: Some(if lost > 0 { 40 } else { 95 }),
            verdicts: [(
                "consistency".to_owned(),
                if lost > 0 { "invalid" } else { "valid" }.to_owned(),
            )]
            .into(),
            ttr: vec![FaultTtr {
                fault_id: "f1".into(),
                kind: "partition".into(),
                ttr_ms: Some(ttr_ms),
                recovered: true,
            }],
            anomalies: if lost > 0 {
                [("lost".to_owned(), lost)].into()
            } else {
                BTreeMap::new()
            },
            note: None,
        }
    }

    #[test]
    fn a_run_goes_from_queued_to_finished_with_its_numbers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = RunIndex::open(&RunIndex::default_path(dir.path())).expect("open");
        let id = index
            .queue(
                Some("nightly"),
                "az-failure",
                Trigger::Schedule,
                Some(at(0)),
                at(0),
                None,
            )
            .expect("queue");
        assert_eq!(index.queued().expect("queued").len(), 1);
        index
            .start(id, at(1), Owner::this_process())
            .expect("start");
        assert_eq!(
            index
                .get(&id.to_string())
                .expect("get")
                .expect("row")
                .status,
            RunStatus::Running
        );
        index
            .finish(id, at(5), &judged(RunStatus::Failed, 4200, 3))
            .expect("finish");
        let row = index
            .get("az-failure-4200")
            .expect("by run id")
            .expect("row");
        assert_eq!(row.id, id);
        assert_eq!(row.status, RunStatus::Failed);
        assert_eq!(row.max_ttr_ms(), Some(4200));
        assert_eq!(row.anomalies.get("lost"), Some(&3));
        assert_eq!(row.duration(), Some(Duration::from_secs(240)));
        assert_eq!(
            index.anomaly_totals().expect("totals").get("lost"),
            Some(&3)
        );
        assert_eq!(
            index.counts().expect("counts"),
            [RunCount {
                suite: "nightly".into(),
                scenario: "az-failure".into(),
                status: RunStatus::Failed,
                count: 1
            }]
        );
        // Reopening keeps everything (a second process sees the same index).
        drop(index);
        let index = RunIndex::open(&RunIndex::default_path(dir.path())).expect("reopen");
        assert_eq!(index.list(&RunFilter::default()).expect("list").len(), 1);
    }

    #[test]
    fn orphaned_running_rows_become_aborted_and_live_ones_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = RunIndex::open(&dir.path().join("i.sqlite")).expect("open");
        let dead = index
            .begin_manual(
                "pod-failure",
                at(0),
                Owner {
                    pid: 7,
                    start_ticks: 1,
                },
            )
            .expect("dead");
        let live = index
            .begin_manual("pod-failure", at(0), Owner::this_process())
            .expect("live");
        let aborted = index.abort_orphans(at(1), Owner::is_alive).expect("abort");
        assert_eq!(aborted, [dead]);
        let row = index.get(&dead.to_string()).expect("get").expect("row");
        assert_eq!(row.status, RunStatus::Aborted);
        assert!(
            row.note.as_deref().is_some_and(|n| n.contains("pid 7")),
            "{row:?}"
        );
        assert_eq!(
            index
                .get(&live.to_string())
                .expect("get")
                .expect("row")
                .status,
            RunStatus::Running
        );
    }

    #[test]
    fn list_filters_and_prune_keeps_the_newest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = RunIndex::open(&dir.path().join("i.sqlite")).expect("open");
        for i in 0..6 {
            let suite = if i % 2 == 0 { "nightly" } else { "weekly" };
            let id = index
                .queue(
                    Some(suite),
                    "pod-failure",
                    Trigger::Schedule,
                    None,
                    at(i * 60),
                    None,
                )
                .expect("queue");
            index
                .start(id, at(i * 60), Owner::this_process())
                .expect("start");
            index
                .finish(id, at(i * 60 + 1), &judged(RunStatus::Passed, 1000, 0))
                .expect("finish");
        }
        let nightly = index
            .list(&RunFilter {
                suite: Some("nightly".into()),
                ..RunFilter::default()
            })
            .expect("list");
        assert_eq!(nightly.len(), 3);
        assert!(
            nightly.windows(2).all(|w| w[0].id > w[1].id),
            "newest first"
        );
        let recent = index
            .list(&RunFilter {
                since: Some(at(180)),
                ..RunFilter::default()
            })
            .expect("since");
        assert_eq!(recent.len(), 3);
        // Keep 4 runs and nothing older than 4 hours before the last one ended.
        let removed = index
            .prune(4, Duration::from_secs(4 * 3600), at(301))
            .expect("prune");
        let kept = index.list(&RunFilter::default()).expect("list");
        assert_eq!(removed.len(), 2);
        assert_eq!(kept.len(), 4);
        assert!(removed
            .iter()
            .all(|r| r.id < kept.iter().map(|k| k.id).min().unwrap_or(0)));
        let removed = index
            .prune(10, Duration::from_secs(90 * 60), at(301))
            .expect("prune by age");
        assert_eq!(
            removed.len(),
            2,
            "ended at 181 and 121 minutes are older than 90 minutes before 301"
        );
    }

    #[test]
    fn missed_run_state_only_moves_forward() {
        let dir = tempfile::tempdir().expect("tempdir");
        let index = RunIndex::open(&dir.path().join("i.sqlite")).expect("open");
        assert_eq!(index.last_due("nightly").expect("none"), None);
        index.set_last_due("nightly", at(10)).expect("set");
        index.set_last_due("nightly", at(5)).expect("set older");
        assert_eq!(index.last_due("nightly").expect("some"), Some(at(10)));
    }
}
