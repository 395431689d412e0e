//! Checkers: pure functions of a history and its observations that return verdicts with evidence.
//!
//! The history is read once, as a stream, and folded into order-independent facts
//! ([`facts::Facts`]); each checker is then a pure function of those facts, the observations and
//! the [`CheckConfig`]. Four checkers run: [`recovery`], [`consistency`], [`split_brain`] and
//! [`isolation`]. Each returns a [`Verdict`] (`valid`, `invalid` or `unknown`, with evidence); a
//! checker that panics or cannot decide returns `unknown`, never `valid`. Verdicts merge by
//! priority (invalid > unknown > valid) and a [`score`] is derived from them.
//!
//! The entry point is [`check_files`]; [`Checks`] is the streaming pipeline underneath it for
//! callers that produce operations themselves. Exact definitions are in `docs/checkers.md`.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use crate::history::{HistoryHeader, Observation, Operation, HISTORY_FORMAT_VERSION};

pub mod buckets;
pub mod config;
pub mod consistency;
pub mod facts;
pub mod intern;
pub mod isolation;
pub mod model;
pub mod observations;
mod reader;
pub mod recovery;
pub mod score;
pub mod split_brain;

pub use config::{CheckConfig, Slo};
pub use facts::{Item, Op};
pub use intern::{Symbols, ValueId};
pub use model::{
    Anomaly, CheckReport, ClientZoneSummary, Evidence, ExperimentInfo, FaultRecovery, FaultWindow,
    InputSummary, RecoverySummary, RunInfo, ServerVersion, Severity, Status, TenantSummary,
    Timeline, TimelinePoint, Verdict, REPORT_FORMAT, REPORT_SCHEMA_VERSION,
};
pub use observations::Observations;

use facts::Facts;

/// Why a check could not produce a report. Every message says which file, where, and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// A file could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The file has no header line.
    #[error("{} is empty: expected a {expected} header on its first line", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
        /// The expected format.
        expected: &'static str,
    },
    /// A line that is not the last one does not parse.
    #[error("{}:{line}:{column}: {message}", path.display())]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// 1-based column.
        column: u64,
        /// What is wrong.
        message: String,
    },
    /// The header names another format.
    #[error("{}: not a {expected} file (its header says format {found:?}); pass the file the faultline workload wrote", path.display())]
    WrongFormat {
        /// The file.
        path: PathBuf,
        /// The expected format.
        expected: &'static str,
        /// The format found.
        found: String,
    },
    /// The header names a version this build does not read.
    #[error("{}: format version {found} is not supported (this faultline reads versions {} to {supported}); use a faultline release that matches the recorder", path.display(), crate::history::OLDEST_HISTORY_FORMAT_VERSION)]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// A line exceeds `max_line_bytes`.
    #[error("{}:{line}: line longer than {limit} bytes; this is probably not a history (raise max_line_bytes if it is)", path.display())]
    LineTooLong {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// The limit.
        limit: usize,
    },
    /// History and observations come from different runs.
    #[error("the observations belong to run {observations:?} but the history to run {history:?}; pass the observations file of the same run")]
    RunMismatch {
        /// The history's run id.
        history: String,
        /// The observations' run id.
        observations: String,
    },
    /// The configuration is invalid.
    #[error("invalid check configuration: {0}")]
    InvalidConfig(String),
    /// A report could not be written.
    #[error("cannot write report {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl CheckError {
    /// The exit code of a check that failed with an error (same as unknown).
    pub const EXIT_CODE: i32 = 2;

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            CheckError::Io { .. } => "io",
            CheckError::Empty { .. } => "empty",
            CheckError::BadLine { .. } => "bad_line",
            CheckError::WrongFormat { .. } => "wrong_format",
            CheckError::UnsupportedVersion { .. } => "unsupported_version",
            CheckError::LineTooLong { .. } => "line_too_long",
            CheckError::RunMismatch { .. } => "run_mismatch",
            CheckError::InvalidConfig(_) => "invalid_config",
            CheckError::Write { .. } => "write",
        }
    }
}

/// Result alias for this module tree.
pub type Result<T, E = CheckError> = std::result::Result<T, E>;

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(ToString::to_string)
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".to_string())
}

/// The streaming check pipeline: create it, push every operation (in any order), finish.
///
/// Memory is linear in the number of distinct values (see [`facts`]), not in the number of
/// operations kept: nothing per operation is retained except a 12-byte latency sample.
pub struct Checks {
    facts: Facts,
    observations: Observations,
    config: CheckConfig,
    run: RunInfo,
    input: InputSummary,
    scratch: Vec<Item>,
    failure: Option<String>,
}

impl Checks {
    /// A pipeline for the run described by `header`.
    pub fn new(
        header: &HistoryHeader,
        mut observations: Observations,
        config: CheckConfig,
    ) -> Result<Self> {
        config.validate()?;
        if let Some(obs_run) = &observations.run_id {
            if *obs_run != header.run_id {
                return Err(CheckError::RunMismatch {
                    history: header.run_id.clone(),
                    observations: obs_run.clone(),
                });
            }
        }
        // The checkers read the leader samples from the facts.
        let mut facts = Facts::taking_leaders(&mut observations, &config);
        // Format 1 took a NATS operation's node when it was sent; see history.rs.
        facts.nodes_at_send = header.version < 2 && header.adapter == "nats";
        Ok(Self {
            facts,
            observations,
            config,
            run: RunInfo {
                run_id: header.run_id.clone(),
                adapter: header.adapter.clone(),
                started_at_unix_ms: header.started_at_unix_ms,
                history_version: header.version,
            },
            input: InputSummary::default(),
            scratch: Vec::new(),
            failure: None,
        })
    }

    /// The symbol table, to intern names before building [`Op`]s.
    pub fn symbols_mut(&mut self) -> &mut Symbols {
        &mut self.facts.symbols
    }

    /// Folds in one interned operation. A panic inside is caught: the report then says
    /// `unknown` for every checker.
    pub fn push(&mut self, op: &Op<'_>) {
        if self.failure.is_some() {
            return;
        }
        let facts = &mut self.facts;
        if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| facts.ingest(op))) {
            self.failure = Some(format!(
                "internal error while folding line {}: {}",
                op.line,
                panic_message(p.as_ref())
            ));
        }
    }

    fn push_raw(&mut self, text: &reader::OpText<'_>, line: u64) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let symbols = &mut self.facts.symbols;
        let op = match text {
            reader::OpText::Fast(l) => reader::intern_line(symbols, l, line, &mut scratch),
            reader::OpText::Serde(raw) => reader::intern_op(symbols, raw, line, &mut scratch),
        };
        self.push(&op);
        self.scratch = scratch;
    }

    /// Folds in one operation of the public history format.
    pub fn push_operation(&mut self, op: &Operation) {
        let s = &mut self.facts.symbols;
        self.scratch.clear();
        if let Some(items) = &op.read {
            self.scratch.extend(items.iter().map(|i| Item {
                seq: i.seq,
                value: s.intern_value(&i.value),
            }));
        }
        let scratch = std::mem::take(&mut self.scratch);
        let op = Op {
            tenant: s.tenants.intern(&op.tenant),
            process: s.processes.intern(&op.process),
            node: s.nodes.intern(&op.node),
            stream: s.streams.intern(&op.stream),
            kind: op.kind,
            pattern: op.pattern,
            outcome: op.outcome,
            attempt: op.attempt,
            value: op.value.as_deref().map(|v| s.intern_value(v)),
            seq: op.seq,
            invoke_ns: op.invoke_ns,
            complete_ns: op.complete_ns,
            read: op.read.as_ref().map(|_| &scratch[..]),
            served_tenant: op.served_tenant.as_deref().map(|t| s.tenants.intern(t)),
            node_uncertain: op.reconnected,
            client_zone: op.client_zone.as_deref().map(|z| s.zones.intern(z)),
            line: 0,
        };
        self.push(&op);
        self.scratch = scratch;
    }

    /// Runs every checker and assembles the report.
    pub fn finish(mut self) -> CheckReport {
        let f = &self.facts;
        self.input.operations = f.operations;
        self.input.values = f.symbols.distinct_values() as u64;
        self.input.tenants = f.symbols.tenants.len() as u64;
        self.input.out_of_order_lines = f.out_of_order;
        self.input.defects = f
            .defects
            .iter()
            .map(|(k, (n, _))| ((*k).to_string(), *n))
            .collect();
        self.input.first_invoke_ns = (f.first_invoke_ns != u64::MAX).then_some(f.first_invoke_ns);
        self.input.last_complete_ns = (f.operations > 0).then_some(f.last_complete_ns);
        self.input.observations_truncated_last_line = self.observations.truncated_last_line;
        let (obs, cfg) = (&self.observations, &self.config);

        // Nothing read is nothing checked: no checker may call an empty history valid.
        let failure = self.failure.as_deref().or((f.operations == 0).then_some(
            "the history holds no operation: there is nothing to check (was the load running, \
             and is this the history the run wrote?)",
        ));
        let recovery = guarded(failure, recovery::NAME, || recovery::check(f, obs, cfg));
        let (recovery, rec_out) = match recovery {
            Ok(o) => (o.verdict.clone(), Some(o)),
            Err(v) => (v, None),
        };
        let consistency = guarded(failure, consistency::NAME, || consistency::check(f, cfg));
        let (consistency, mut by_tenant) = match consistency {
            Ok(o) => (o.verdict, o.by_tenant),
            Err(v) => (v, rustc_hash::FxHashMap::default()),
        };
        let split = guarded(failure, split_brain::NAME, || {
            split_brain::check(f, obs, cfg)
        })
        .unwrap_or_else(|v| v);
        let isolation =
            guarded(failure, isolation::NAME, || isolation::check(f)).unwrap_or_else(|v| v);

        let mut verdicts = vec![consistency, split, isolation, recovery];
        if obs.truncated_last_line {
            observations_truncated(&mut verdicts, obs.truncated_line_may_hold_fault);
        }
        let (summary, timeline, mut tenants) = match rec_out {
            Some(o) => (o.summary, o.timeline, o.tenants),
            None => Default::default(),
        };
        for (t, n) in &f.cross_tenant_by_tenant {
            by_tenant.entry(*t).and_modify(|x| *x += n).or_insert(*n);
        }
        for t in &mut tenants {
            if let Some(sym) = f.symbols.tenants.get(&t.tenant) {
                t.anomalies = by_tenant.get(&sym).copied().unwrap_or(0);
            }
        }
        let client_zones = client_zone_summaries(f, &by_tenant);
        tenants.sort_by(|a, b| {
            b.anomalies
                .cmp(&a.anomalies)
                .then(b.never_recovered.cmp(&a.never_recovered))
                .then(b.failing_buckets.cmp(&a.failing_buckets))
                .then_with(|| a.tenant.cmp(&b.tenant))
        });
        let status = Status::merge_all(verdicts.iter().map(|v| v.status));
        let score = score::score(&verdicts, &summary);
        CheckReport {
            format: REPORT_FORMAT.to_string(),
            schema_version: REPORT_SCHEMA_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            run: self.run,
            input: self.input,
            config: self.config,
            status,
            score,
            verdicts,
            faults: self.observations.faults,
            recovery: summary,
            tenants,
            timeline,
            client_zones,
            experiment: None,
        }
    }
}

/// The load broken down by the zone its clients stood in, when they stood in more than one
/// (nothing to compare otherwise). A zone's anomalies are its tenants' (as
/// [`TenantSummary::anomalies`]): all of a tenant's clients stand in one zone.
fn client_zone_summaries(
    f: &Facts,
    anomalies_by_tenant: &rustc_hash::FxHashMap<intern::Sym, u64>,
) -> Vec<ClientZoneSummary> {
    if f.by_zone.len() < 2 {
        return Vec::new();
    }
    let mut zones: Vec<ClientZoneSummary> = f
        .by_zone
        .iter()
        .map(|(zone, counts)| {
            let tenants: Vec<intern::Sym> = f
                .tenant_zones
                .iter()
                .filter(|(_, z)| z == zone)
                .map(|(t, _)| *t)
                .collect();
            ClientZoneSummary {
                zone: f.symbols.zones.name(*zone).to_owned(),
                tenants: tenants.len() as u64,
                operations: counts.operations,
                acked_writes: counts.acked_writes,
                failed: counts.failed,
                unknown: counts.unknown,
                anomalies: tenants
                    .iter()
                    .filter_map(|t| anomalies_by_tenant.get(t))
                    .sum(),
            }
        })
        .collect();
    zones.sort_by(|a, b| a.zone.cmp(&b.zone));
    zones
}

/// Notes the observations' cut-off last line on every verdict. If it may have been a fault
/// window, no verdict that rests on fault windows (recovery, split-brain) may stay valid: the
/// recovery checker already says unknown, split-brain is demoted here.
fn observations_truncated(verdicts: &mut [Verdict], may_hold_fault: bool) {
    for v in verdicts {
        v.notes
            .push("the observations' last line was truncated and skipped".to_string());
        if may_hold_fault && v.name == split_brain::NAME && v.status == Status::Valid {
            let why = "the observations' last line was cut off and may have held a fault window: \
                       acknowledgements inside it were not checked";
            v.status = Status::Unknown;
            v.summary = format!("could not decide: {why}");
            v.notes.push(why.to_string());
        }
    }
}

/// Runs one checker, turning a panic (or an earlier folding failure) into an unknown verdict.
fn guarded<T>(failure: Option<&str>, name: &str, run: impl FnOnce() -> T) -> Result<T, Verdict> {
    if let Some(why) = failure {
        return Err(Verdict::unknown(name, why));
    }
    panic::catch_unwind(AssertUnwindSafe(run)).map_err(|p| {
        Verdict::unknown(
            name,
            format!(
                "the checker failed internally: {}",
                panic_message(p.as_ref())
            ),
        )
    })
}

/// Checks operations held in memory (tests, small tools). Order does not matter.
pub fn check_operations<'a>(
    header: &HistoryHeader,
    operations: impl IntoIterator<Item = &'a Operation>,
    observations: Option<Vec<Observation>>,
    config: &CheckConfig,
) -> Result<CheckReport> {
    let obs = match observations {
        Some(o) => Observations::from_observations(o)?,
        None => Observations::none(),
    };
    let mut checks = Checks::new(header, obs, config.clone())?;
    for op in operations {
        checks.push_operation(op);
    }
    Ok(checks.finish())
}

/// Checks a history read from `reader` (named `path` in errors), streaming.
pub fn check_reader<R: BufRead>(
    reader: R,
    path: &Path,
    observations: Observations,
    config: &CheckConfig,
) -> Result<CheckReport> {
    config.validate()?;
    let max = config.max_line_bytes;
    let mut lines = reader::Lines::new(reader, max);
    let header = reader::read_history_header(&mut lines, path, max)?;
    let mut checks = Checks::new(&header, observations, config.clone())?;
    let stats = reader::read_history_body(&mut lines, path, max, |raw, line| {
        checks.push_raw(raw, line);
    })?;
    checks.input.truncated_last_line = stats.truncated_last_line;
    checks.input.history = Some(path.display().to_string());
    let mut report = checks.finish();
    if stats.truncated_last_line {
        for v in &mut report.verdicts {
            v.notes
                .push("the history's last line was truncated and skipped".to_string());
        }
    }
    Ok(report)
}

/// Reads an observations file.
pub fn read_observations(path: &Path, config: &CheckConfig) -> Result<Observations> {
    let file = File::open(path).map_err(|source| CheckError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_observations_from(BufReader::with_capacity(1 << 16, file), path, config)
}

/// Reads observations from `reader` (named `path` in errors).
pub fn read_observations_from<R: BufRead>(
    reader: R,
    path: &Path,
    config: &CheckConfig,
) -> Result<Observations> {
    let mut observations = Observations {
        present: true,
        ..Observations::none()
    };
    let stats = reader::read_observations(reader, path, config.max_line_bytes, &mut observations)
        .map_err(|e| match e {
        CheckError::UnsupportedVersion {
            found, supported, ..
        } => CheckError::UnsupportedVersion {
            path: path.to_path_buf(),
            found,
            supported,
        },
        CheckError::WrongFormat {
            expected, found, ..
        } => CheckError::WrongFormat {
            path: path.to_path_buf(),
            expected,
            found,
        },
        other => other,
    })?;
    observations.finish();
    observations.truncated_last_line = stats.truncated_last_line;
    observations.truncated_line_may_hold_fault = stats.truncated_may_hold_fault;
    Ok(observations)
}

/// The entry point of `chaosctl check`: reads a history file (and optionally its observations
/// file), runs every checker and returns the report. Exit with [`CheckReport::exit_code`], or
/// [`CheckError::EXIT_CODE`] on error.
pub fn check_files(
    history: &Path,
    observations: Option<&Path>,
    config: &CheckConfig,
) -> Result<CheckReport> {
    config.validate()?;
    let obs = match observations {
        Some(p) => read_observations(p, config)?,
        None => Observations::none(),
    };
    let file = File::open(history).map_err(|source| CheckError::Io {
        path: history.to_path_buf(),
        source,
    })?;
    let mut report = check_reader(
        BufReader::with_capacity(1 << 20, file),
        history,
        obs,
        config,
    )?;
    report.input.observations = observations.map(|p| p.display().to_string());
    Ok(report)
}

/// Whether every fault has recovered by the recovery checker's own rule, judged on the history
/// so far: the fault windows in the observations file (when it can be read) plus `faults`
/// (those an engine has not recorded yet). False while no fault is known. The engine's
/// recovery watch ends on this, so that it never stops watching a run the checker would then
/// judge "never recovered" (one definition of recovered).
///
/// # Errors
/// The history cannot be read or checked.
pub fn recovered_so_far(
    history: &Path,
    observations: &Path,
    faults: &[FaultWindow],
    config: &CheckConfig,
) -> Result<bool> {
    let mut obs = read_observations(observations, config).unwrap_or_else(|_| Observations {
        present: true,
        ..Observations::none()
    });
    obs.faults.extend_from_slice(faults);
    obs.finish();
    let file = File::open(history).map_err(|source| CheckError::Io {
        path: history.to_path_buf(),
        source,
    })?;
    let report = check_reader(
        BufReader::with_capacity(1 << 20, file),
        history,
        obs,
        config,
    )?;
    let faults = &report.recovery.faults;
    Ok(!faults.is_empty() && faults.iter().all(|f| f.recovered))
}

/// The history format version these checkers read.
pub const SUPPORTED_HISTORY_VERSION: u32 = HISTORY_FORMAT_VERSION;
