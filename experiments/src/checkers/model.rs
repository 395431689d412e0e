//! The checkers' results: verdicts, anomalies, evidence and the whole check report. The JSON
//! report is exactly the serde form of [`CheckReport`]; `schemas/report.schema.json` describes
//! it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::config::CheckConfig;

/// The `format` field of every JSON report.
pub const REPORT_FORMAT: &str = "faultline-check-report";
/// The JSON report's schema version; bumped on any incompatible change.
pub const REPORT_SCHEMA_VERSION: u32 = 1;

/// A checker's conclusion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The history shows no anomaly this checker looks for, and it could check everything.
    Valid,
    /// The history shows at least one anomaly; the evidence says which.
    Invalid,
    /// The checker could not decide (missing input, internal failure).
    Unknown,
}

impl Status {
    fn rank(self) -> u8 {
        match self {
            Status::Valid => 0,
            Status::Unknown => 1,
            Status::Invalid => 2,
        }
    }

    /// Merges two statuses by priority: invalid > unknown > valid.
    #[must_use]
    pub fn merge(self, other: Status) -> Status {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }

    /// Merges many statuses; an empty list is valid.
    pub fn merge_all(statuses: impl IntoIterator<Item = Status>) -> Status {
        statuses.into_iter().fold(Status::Valid, Status::merge)
    }

    /// The process exit code for this status: 0 valid, 1 invalid, 2 unknown.
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Valid => 0,
            Status::Invalid => 1,
            Status::Unknown => 2,
        }
    }

    /// `valid`, `invalid` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Valid => "valid",
            Status::Invalid => "invalid",
            Status::Unknown => "unknown",
        }
    }
}

/// Whether an anomaly makes its checker invalid or is only reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Makes the verdict invalid.
    Invalid,
    /// Reported only; the verdict stays valid.
    Info,
}

/// One piece of evidence: which value, which tenant, when, where.
///
/// Ordering is by time first, so "earliest evidence first" is a plain sort.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evidence {
    /// When it happened, ns since the run start (the operation's intended send time unless the
    /// detail says otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ns: Option<u64>,
    /// The value (`tenant/producer/counter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Another value involved (e.g. the other value at a conflicting sequence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_value: Option<String>,
    /// The tenant concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The other tenant (isolation: whose record was returned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_tenant: Option<String>,
    /// The node the operation went through, or the node whose view is concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Another node involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_node: Option<String>,
    /// Stream or key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Stream sequence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Line of the history file the evidence comes from (1-based), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// What the evidence shows, in words.
    pub detail: String,
}

/// One kind of anomaly found by a checker, with a bounded sample of its evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anomaly {
    /// The anomaly's name, e.g. `lost`, `two-leaders`; see docs/checkers.md.
    pub name: String,
    /// Whether it makes the verdict invalid.
    pub severity: Severity,
    /// Exact number of occurrences.
    pub count: u64,
    /// Occurrences by category (e.g. `prefix`, `middle`, `postfix` for lost writes).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub categories: BTreeMap<String, u64>,
    /// The earliest occurrences, at most `max_evidence`.
    pub evidence: Vec<Evidence>,
}

/// One checker's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Verdict {
    /// The checker: `recovery`, `consistency`, `split-brain` or `isolation`.
    pub name: String,
    /// Its conclusion.
    pub status: Status,
    /// One line for humans.
    pub summary: String,
    /// What it found; anomalies of severity `invalid` come first.
    pub anomalies: Vec<Anomaly>,
    /// Caveats: conditions not evaluated, inputs missing, defects in the history.
    pub notes: Vec<String>,
}

impl Verdict {
    /// A verdict whose status follows from its anomalies: invalid if any anomaly has severity
    /// invalid, else `fallback` (valid, or unknown when something could not be checked).
    pub fn from_anomalies(
        name: &str,
        mut anomalies: Vec<Anomaly>,
        notes: Vec<String>,
        fallback: Status,
    ) -> Self {
        anomalies.retain(|a| a.count > 0);
        anomalies.sort_by(|a, b| {
            a.severity
                .cmp(&b.severity)
                .then_with(|| a.name.cmp(&b.name))
        });
        let invalid: Vec<String> = anomalies
            .iter()
            .filter(|a| a.severity == Severity::Invalid)
            .map(|a| format!("{} {}", a.count, a.name))
            .collect();
        let (status, summary) = if invalid.is_empty() {
            let info: Vec<String> = anomalies
                .iter()
                .map(|a| format!("{} {}", a.count, a.name))
                .collect();
            let s = match (fallback, info.is_empty()) {
                (Status::Unknown, _) => {
                    format!(
                        "could not decide: {}",
                        notes.first().map_or("see notes", String::as_str)
                    )
                }
                (_, true) => "no anomalies".to_string(),
                (_, false) => format!("no invalid anomalies (reported: {})", info.join(", ")),
            };
            (fallback, s)
        } else {
            (Status::Invalid, invalid.join(", "))
        };
        Self {
            name: name.to_string(),
            status,
            summary,
            anomalies,
            notes,
        }
    }

    /// An unknown verdict that says why.
    pub fn unknown(name: &str, why: impl Into<String>) -> Self {
        let why = why.into();
        Self {
            name: name.to_string(),
            status: Status::Unknown,
            summary: format!("could not decide: {why}"),
            anomalies: Vec::new(),
            notes: vec![why],
        }
    }

    /// The anomaly named `name`, if found.
    pub fn anomaly(&self, name: &str) -> Option<&Anomaly> {
        self.anomalies.iter().find(|a| a.name == name)
    }
}

/// Which run the report is about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunInfo {
    /// The run id from the history header.
    pub run_id: String,
    /// The adapter that produced the history (`nats`, `http`).
    pub adapter: String,
    /// Wall-clock start of the run, Unix milliseconds.
    pub started_at_unix_ms: u64,
    /// History format version that was read.
    pub history_version: u32,
}

/// What was read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSummary {
    /// The history file, when read from a file.
    pub history: Option<String>,
    /// The observations file, when one was given.
    pub observations: Option<String>,
    /// Operations checked.
    pub operations: u64,
    /// Distinct values.
    pub values: u64,
    /// Distinct tenants.
    pub tenants: u64,
    /// Operations whose completion time is earlier than the previous line's (the file is not
    /// in completion order). The checkers do not depend on order.
    pub out_of_order_lines: u64,
    /// Whether the last line was cut off (a killed run) and skipped.
    pub truncated_last_line: bool,
    /// Whether the observations file's last line was cut off and skipped. If it may have held a
    /// fault window, the verdicts that rest on fault windows are not `valid` (see the notes).
    #[serde(default)]
    pub observations_truncated_last_line: bool,
    /// Inconsistent operations by kind (e.g. `write-without-value`); see docs/checkers.md.
    pub defects: BTreeMap<String, u64>,
    /// Earliest intended send time, ns since the run start.
    pub first_invoke_ns: Option<u64>,
    /// Latest completion time, ns since the run start.
    pub last_complete_ns: Option<u64>,
}

/// A fault window as observed during the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultWindow {
    /// Fault id from the ledger.
    pub fault_id: String,
    /// Fault kind.
    pub kind: String,
    /// When the fault was fully in effect, ns since the run start.
    pub start_ns: u64,
    /// When its heal completed, ns since the run start; `None` if the run ended first.
    pub end_ns: Option<u64>,
    /// When the injection began (partly in effect until `start_ns`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injecting_ns: Option<u64>,
    /// When the heal began (certainly in effect until then), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverting_ns: Option<u64>,
    /// Partition sides (node names).
    pub sides: Vec<Vec<String>>,
    /// Nodes or peers stopped, paused or cut off.
    pub affected: Vec<String>,
    /// Whether the system should keep serving during the fault.
    pub survivable: bool,
}

impl FaultWindow {
    /// The interval in which the fault was certainly and fully in effect: from the completed
    /// injection to the start of the heal (`u64::MAX` when never healed).
    pub fn effective(&self) -> (u64, u64) {
        let end = self.reverting_ns.or(self.end_ns).unwrap_or(u64::MAX);
        (self.start_ns, end.max(self.start_ns))
    }
}

/// Recovery figures for one fault.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRecovery {
    /// The fault.
    pub fault_id: String,
    /// Its kind.
    pub kind: String,
    /// Where TTR is measured from: the heal, or the injection for survivable faults (ns).
    pub reference_ns: Option<u64>,
    /// The deadline that applied.
    pub deadline_ms: u64,
    /// Fault start to the first failing bucket of any series; `None` if nothing failed.
    pub time_to_impact_ms: Option<u64>,
    /// Worst TTR over all series; `None` when some series never recovered.
    pub ttr_ms: Option<u64>,
    /// Whether every series recovered within the deadline.
    pub recovered: bool,
    /// Time during which at least one series not yet recovered was failing, from the fault
    /// start to the last series' recovery; a lower bound when `outage_until` is not `recovery`.
    pub total_outage_ms: u64,
    /// Where the outage measurement stopped, and so whether `total_outage_ms` is a measurement
    /// or a lower bound.
    #[serde(default)]
    pub outage_until: OutageUntil,
    /// The tenant with the worst TTR (ties: longest outage, then name).
    pub worst_tenant: Option<String>,
    /// That tenant's worst series, `pattern/kind`.
    pub worst_series: Option<String>,
    /// Series (tenant and `pattern/kind`) that failed at least one bucket.
    pub impacted_series: u64,
    /// Tenants with at least one impacted series.
    pub impacted_tenants: u64,
    /// Series that did not recover within the deadline.
    pub never_recovered_series: u64,
    /// Series that already failed their SLO before the first fault: judged against their own
    /// baseline instead of the SLO, and left out of the TTR, the outage and the impact.
    #[serde(default)]
    pub failing_before_series: u64,
}

/// Where a fault's outage measurement stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutageUntil {
    /// Every series recovered within the deadline: the outage is measured.
    #[default]
    Recovery,
    /// Some series had not recovered by the deadline: the outage lasted at least
    /// `total_outage_ms`, counted up to the deadline.
    Deadline,
    /// The history ended before the deadline with some series not recovered: the outage lasted
    /// at least `total_outage_ms`, counted up to the history's end.
    HistoryEnd,
    /// Not measured: the fault never healed during the run.
    NotMeasured,
}

impl OutageUntil {
    /// Whether the outage figure is only a lower bound.
    pub fn is_lower_bound(self) -> bool {
        matches!(self, Self::Deadline | Self::HistoryEnd)
    }
}

/// How one tenant fared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSummary {
    /// Tenant id.
    pub tenant: String,
    /// Load operations (read-back excluded).
    pub operations: u64,
    /// Of which `ok`.
    pub ok: u64,
    /// Of which `fail`.
    pub fail: u64,
    /// Of which `info`.
    pub info: u64,
    /// Buckets in which at least one of its series failed.
    pub failing_buckets: u64,
    /// Worst TTR over its series and the faults; `None` if it never recovered or no fault.
    pub worst_ttr_ms: Option<u64>,
    /// Whether some series of this tenant never recovered within the deadline.
    pub never_recovered: bool,
    /// Whether some series of this tenant already failed its SLO before the first fault (it is
    /// then judged against its own baseline, see docs/checkers.md).
    #[serde(default)]
    pub failing_before_faults: bool,
    /// Failing time ranges as `[start_bucket, bucket_count]`, in buckets since the run start.
    pub failing_runs: Vec<[u64; 2]>,
    /// Anomalies (any checker, any severity) whose evidence names this tenant.
    pub anomalies: u64,
}

/// How the clients standing in one zone fared (`clients: per-zone`): with a zone cut off,
/// its clients fail or stall while the others' keep being acknowledged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientZoneSummary {
    /// The zone the clients stood in.
    pub zone: String,
    /// Tenants whose clients stood there.
    pub tenants: u64,
    /// Their load operations (read-back excluded).
    pub operations: u64,
    /// Their writes acknowledged (`ok`).
    pub acked_writes: u64,
    /// Their operations that ended `fail`.
    pub failed: u64,
    /// Their operations whose outcome is unknown (`info`).
    pub unknown: u64,
    /// Anomalies whose evidence names their tenants (as [`TenantSummary::anomalies`]).
    pub anomalies: u64,
}

/// One point of the overall timeline (all tenants).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelinePoint {
    /// Start of the bucket, seconds since the run start.
    pub t_s: f64,
    /// `ok` completions per second in this bucket (by completion time).
    pub throughput: f64,
    /// `fail` outcomes per second (by intended send time).
    pub errors: f64,
    /// `info` outcomes per second (by intended send time).
    pub infos: f64,
    /// Median latency of the operations sent in this bucket, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile latency, ms.
    pub p99_ms: Option<f64>,
    /// Tenants with a failing series in this bucket.
    pub failing_tenants: u64,
}

/// Time series for the plots.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeline {
    /// Width of a point, ms (a multiple of the bucket width when a long run was coarsened).
    pub step_ms: u64,
    /// The points, in time order.
    pub points: Vec<TimelinePoint>,
}

/// Recovery details beyond the verdict.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecoverySummary {
    /// One entry per fault window.
    pub faults: Vec<FaultRecovery>,
}

/// Everything one check produced: the JSON report is this, serialized.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckReport {
    /// Always [`REPORT_FORMAT`].
    pub format: String,
    /// Always [`REPORT_SCHEMA_VERSION`] when written by this version.
    pub schema_version: u32,
    /// Version of the faultline that wrote the report.
    pub tool_version: String,
    /// The run.
    pub run: RunInfo,
    /// What was read.
    pub input: InputSummary,
    /// The configuration the checkers ran with.
    pub config: CheckConfig,
    /// All verdicts merged: invalid > unknown > valid.
    pub status: Status,
    /// 0-100, see docs/checkers.md; the status, not the score, decides pass or fail.
    pub score: u8,
    /// One verdict per checker.
    pub verdicts: Vec<Verdict>,
    /// Fault windows from the observations.
    pub faults: Vec<FaultWindow>,
    /// Recovery figures per fault.
    pub recovery: RecoverySummary,
    /// Per-tenant view, worst first.
    pub tenants: Vec<TenantSummary>,
    /// Overall time series.
    pub timeline: Timeline,
    /// The load by the zone its clients stood in, zone by zone, when they stood in more than
    /// one (`clients: per-zone`); empty otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_zones: Vec<ClientZoneSummary>,
    /// The experiment that produced the history, when the report comes from `chaosctl run`
    /// (absent for `chaosctl check` on a bare history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<ExperimentInfo>,
}

/// What the engine adds to a report: the scenario and what happened to the run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentInfo {
    /// Scenario name, e.g. `az-failure`.
    pub scenario: String,
    /// The plan id it implements, e.g. `T6.3`.
    pub plan_id: Option<String>,
    /// Lab name.
    pub lab: String,
    /// Seed of the selectors and the load schedule.
    pub seed: u64,
    /// Why the run ended early (interrupt, abort condition, steady state); `None` when it ran
    /// to the end. An aborted run is never a pass.
    pub aborted: Option<String>,
    /// What each fault did, e.g. `quorum loss on tenants (isolate) for 20s: nats2 (nats/2 on b1), …`.
    pub faults: Vec<String>,
    /// The system under test: every service's program and its version. Empty in reports
    /// written before it was recorded.
    #[serde(default)]
    pub system_under_test: Vec<ServerVersion>,
}

/// One service of the system under test: the program its replicas run and the first line
/// that program printed for `--version` when the lab came up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerVersion {
    /// Service name, e.g. `nats`.
    pub service: String,
    /// The program, as an absolute path, e.g. `/opt/faultline/nats-server/bin/nats-server`.
    pub program: String,
    /// What it printed, e.g. `nats-server: v2.15.1`, or `unknown (why)`.
    pub version: String,
}

impl ServerVersion {
    /// `nats (nats-server: v2.15.1, /path/to/nats-server)`.
    pub fn describe(&self) -> String {
        format!("{} ({}, {})", self.service, self.version, self.program)
    }
}

impl CheckReport {
    /// 0 when valid, 1 when invalid, 2 when unknown (errors are also 2, see
    /// [`super::CheckError::EXIT_CODE`]).
    pub fn exit_code(&self) -> i32 {
        self.status.exit_code()
    }

    /// The verdict of the checker named `name`.
    pub fn verdict(&self, name: &str) -> Option<&Verdict> {
        self.verdicts.iter().find(|v| v.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_by_priority() {
        use Status::{Invalid, Unknown, Valid};
        assert_eq!(Status::merge_all([]), Valid);
        assert_eq!(Status::merge_all([Valid, Unknown]), Unknown);
        assert_eq!(Status::merge_all([Unknown, Invalid, Valid]), Invalid);
        assert_eq!(Valid.merge(Invalid).exit_code(), 1);
        assert_eq!(Unknown.exit_code(), 2);
    }

    #[test]
    fn verdict_status_from_anomalies() {
        let a = |name: &str, severity, count| Anomaly {
            name: name.into(),
            severity,
            count,
            categories: BTreeMap::new(),
            evidence: vec![],
        };
        let v = Verdict::from_anomalies(
            "x",
            vec![a("recovered", Severity::Info, 2)],
            vec![],
            Status::Valid,
        );
        assert_eq!(v.status, Status::Valid);
        let v = Verdict::from_anomalies(
            "x",
            vec![
                a("recovered", Severity::Info, 2),
                a("lost", Severity::Invalid, 1),
            ],
            vec![],
            Status::Unknown,
        );
        assert_eq!(v.status, Status::Invalid);
        assert_eq!(v.anomalies[0].name, "lost");
        let v = Verdict::from_anomalies(
            "x",
            vec![a("lost", Severity::Invalid, 0)],
            vec!["n".into()],
            Status::Unknown,
        );
        assert_eq!(v.status, Status::Unknown);
        assert!(v.anomalies.is_empty());
    }
}
