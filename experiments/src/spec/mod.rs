//! The experiment spec: YAML with unknown fields rejected, and a pure [`ExperimentSpec::validate`]
//! kept apart from anything that touches the system (`chaosctl validate` runs only that).

pub mod catalog;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::lab::faults::QuorumLossMode;

/// Errors of parsing or validating a spec. Messages say where (file, line, column or field) and
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The YAML does not parse or does not match the schema.
    #[error("{source_name}: {message}")]
    Parse {
        /// File name, or `catalog:NAME`.
        source_name: String,
        /// What is wrong, with line and column.
        message: String,
    },
    /// The spec parses but cannot run.
    #[error("{source_name}: {field}: {message}")]
    Invalid {
        /// File name, or `catalog:NAME`.
        source_name: String,
        /// The field at fault, e.g. `faults[0].selector`.
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// No such scenario in the catalog.
    #[error(
        "unknown scenario `{0}`; `chaosctl list` shows the built-in ones, or pass a spec file path"
    )]
    UnknownScenario(String),
}

/// One experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// Short name, e.g. `az-failure`.
    pub name: String,
    /// What it does and what it checks.
    pub description: String,
    /// The test-plan id it implements, e.g. `T6.3`.
    #[serde(default)]
    pub plan_id: Option<String>,
    /// Where it runs.
    #[serde(default)]
    pub target: Target,
    /// The background tenant load.
    #[serde(default)]
    pub workload: WorkloadSpec,
    /// What must hold before faults are injected, and outside fault windows.
    #[serde(default)]
    pub steady_state: SteadyState,
    /// The faults, in start order.
    pub faults: Vec<FaultSpec>,
    /// Healthy load before the first fault; the baseline for throughput and latency.
    #[serde(with = "duration_text")]
    pub baseline: Duration,
    /// Total run time from the start of the baseline; the final read-back follows it.
    #[serde(with = "duration_text")]
    pub duration: Duration,
    /// How long after heal (or after the fault, for faults the system should survive) recovery
    /// may take before it counts as "never recovered".
    #[serde(with = "duration_text")]
    pub recovery_deadline: Duration,
    /// The convergence deadline, counted from the last heal: the final read-back waits until
    /// every server reports the same state for every stream, or until this deadline passes;
    /// replicas that still differ then are `divergence-persisted`. Default 10s.
    #[serde(default = "default_settle", with = "duration_text")]
    pub settle: Duration,
    /// Service-level objectives the verdict checks.
    pub slo: SloSpec,
    /// Conditions that end the run early and heal at once.
    #[serde(default)]
    pub abort: Vec<AbortCondition>,
    /// Limits on how much the faults may touch.
    #[serde(default)]
    pub blast_radius: BlastRadius,
}

/// Where an experiment runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The embedded lab.
    #[default]
    Lab,
    /// A Kubernetes cluster (not implemented yet).
    Kubernetes,
}

/// The tenant load.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadSpec {
    /// Number of tenants (70 % small, 25 % medium, 5 % large).
    pub tenants: u32,
    /// Total operations per second.
    pub rate: f64,
    /// `nats` (JetStream, built in) or `http` (the tenant-records contract).
    pub adapter: String,
    /// Replicas of each tenant's stream.
    pub stream_replicas: u32,
    /// Seed of the arrival schedule.
    pub seed: u64,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        Self {
            tenants: 100,
            rate: 200.0,
            adapter: "nats".to_owned(),
            stream_replicas: 3,
            seed: 1,
        }
    }
}

/// The steady-state hypothesis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SteadyState {
    /// Minimum share of `ok` operations during the baseline.
    pub min_success_rate: f64,
    /// Maximum p99 latency during the baseline.
    #[serde(with = "duration_text")]
    pub max_p99: Duration,
    /// Extra probes that must pass before injecting.
    pub probes: Vec<Probe>,
}

impl Default for SteadyState {
    fn default() -> Self {
        Self {
            min_success_rate: 0.99,
            max_p99: Duration::from_secs(1),
            probes: vec![],
        }
    }
}

/// A steady-state probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Probe {
    /// `GET path` on every replica of a service answers 2xx.
    Http {
        /// Service name.
        service: String,
        /// Port.
        port: u16,
        /// Path.
        path: String,
    },
    /// Every tenant stream has a leader and all its replicas current.
    NatsStreamHealth,
}

/// One fault of an experiment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// What kind of fault.
    pub kind: FaultKind,
    /// What it hits.
    pub selector: Selector,
    /// Offset from the end of the baseline.
    #[serde(default, with = "duration_text")]
    pub start: Duration,
    /// How long it holds (ignored for `kill`).
    #[serde(default, with = "duration_text")]
    pub duration: Duration,
    /// Repeat it.
    #[serde(default)]
    pub repeat: Option<Repeat>,
    /// For `quorum-loss`: stop, pause or isolate the chosen peers.
    #[serde(default)]
    pub mode: Option<QuorumLossMode>,
    /// For `partition` of a zone (`az-failure`): also stop the zone's services.
    #[serde(default)]
    pub stop_services: bool,
}

/// Fault kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Network partition.
    Partition,
    /// SIGKILL one replica (or every replica with `replica: all`).
    Kill,
    /// SIGSTOP one replica.
    Pause,
    /// Cordon and evict a node.
    Drain,
    /// JetStream quorum loss on a stream's peers (or the meta group).
    QuorumLoss,
}

impl FaultKind {
    /// The kind's name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Drain => "drain",
            FaultKind::QuorumLoss => "quorum-loss",
        }
    }
}

/// What a fault hits. Which fields apply depends on the kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// A zone by name, or `random`.
    #[serde(default)]
    pub zone: Option<String>,
    /// A node by name, or `random`.
    #[serde(default)]
    pub node: Option<String>,
    /// A service.
    #[serde(default)]
    pub service: Option<String>,
    /// A replica number, `random` or `all`.
    #[serde(default)]
    pub replica: Option<String>,
    /// A stream (tenant stream name, `tenants` for all of them, or `$meta`).
    #[serde(default)]
    pub stream: Option<String>,
    /// A partition shape: `halves`, `majorities-ring`, `bridge`, `one-vs-rest`.
    #[serde(default)]
    pub shape: Option<String>,
}

/// Repetition of a fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repeat {
    /// Time between starts.
    #[serde(with = "duration_text")]
    pub every: Duration,
    /// Total number of injections.
    pub times: u32,
}

/// Service-level objectives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloSpec {
    /// Longest acceptable time to recover.
    #[serde(with = "duration_text")]
    pub max_ttr: Duration,
    /// A 1 s bucket passes when at least this share of operations is `ok`.
    #[serde(default = "default_bucket_success")]
    pub min_success_rate: f64,
    /// A bucket passes when its p99 latency is at most this.
    #[serde(default = "default_bucket_p99", with = "duration_text")]
    pub max_p99: Duration,
    /// A bucket passes when throughput is at least this share of the baseline.
    #[serde(default = "default_throughput_ratio")]
    pub min_throughput_ratio: f64,
    /// Whether the system should keep serving during the fault (TTR counted from the fault).
    #[serde(default)]
    pub survivable: bool,
}

fn default_bucket_success() -> f64 {
    0.95
}
fn default_bucket_p99() -> Duration {
    Duration::from_secs(1)
}
fn default_throughput_ratio() -> f64 {
    0.8
}

/// Ends the run early: the engine heals at once and marks the report aborted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbortCondition {
    /// Error (fail + info) rate above which the condition fires.
    pub error_rate_above: f64,
    /// For how long, outside fault windows, before it fires.
    #[serde(rename = "for", with = "duration_text")]
    pub sustained: Duration,
}

/// Blast-radius limits, checked before anything is injected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlastRadius {
    /// Never affect more nodes than this at once.
    pub max_nodes: u32,
    /// Allow faults that cut off or stop every zone at once.
    pub allow_all_zones: bool,
}

impl Default for BlastRadius {
    fn default() -> Self {
        Self {
            max_nodes: 3,
            allow_all_zones: false,
        }
    }
}

fn default_settle() -> Duration {
    Duration::from_secs(10)
}

/// The longest convergence deadline a spec may set.
const MAX_SETTLE: Duration = Duration::from_secs(10 * 60);

/// Durations as text (`30s`, `10m`, `1h 30m`) in YAML.
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `30s`.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*value).to_string())
    }

    /// Reads `30s`, `10m`, `500ms`.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration ({e}); write e.g. 30s, 10m, 500ms"
            ))
        })
    }
}

impl ExperimentSpec {
    /// Parses YAML; unknown fields are errors with line and column.
    pub fn parse(yaml: &str, source_name: &str) -> Result<Self, SpecError> {
        serde_yaml::from_str(yaml).map_err(|e| SpecError::Parse {
            source_name: source_name.to_owned(),
            message: crate::describe_yaml_error(&e),
        })
    }

    /// Applies `chaosctl run`'s overrides (also a schedule entry's): `duration` sets how long
    /// each fault holds (the run grows to fit the faults and the recovery deadline), `tenants`
    /// and `rate` set the load. Validate afterwards.
    pub fn apply_overrides(
        &mut self,
        duration: Option<Duration>,
        tenants: Option<u32>,
        rate: Option<f64>,
    ) {
        if let Some(duration) = duration {
            for fault in &mut self.faults {
                if !fault.duration.is_zero() {
                    fault.duration = duration;
                }
            }
            self.duration = self
                .duration
                .max(self.last_fault_end() + self.recovery_deadline);
        }
        if let Some(tenants) = tenants {
            self.workload.tenants = tenants;
        }
        if let Some(rate) = rate {
            self.workload.rate = rate;
        }
    }

    /// The end of the last fault window, from the start of the baseline.
    pub fn last_fault_end(&self) -> Duration {
        self.faults
            .iter()
            .map(|fault| {
                let repeats = fault
                    .repeat
                    .as_ref()
                    .map_or(Duration::ZERO, |r| r.every * r.times.saturating_sub(1));
                self.baseline + fault.start + repeats + fault.duration
            })
            .max()
            .unwrap_or(self.baseline)
    }

    /// Pure validation: everything that can be judged without touching the system.
    pub fn validate(&self, source_name: &str) -> Result<(), SpecError> {
        let invalid = |field: String, message: String| SpecError::Invalid {
            source_name: source_name.to_owned(),
            field,
            message,
        };
        if self.target == Target::Kubernetes {
            return Err(invalid(
                "target".into(),
                "the kubernetes target is not available yet; use `target: lab`".into(),
            ));
        }
        if self.faults.is_empty() {
            return Err(invalid("faults".into(), "list at least one fault".into()));
        }
        if self.workload.tenants == 0 {
            return Err(invalid(
                "workload.tenants".into(),
                "must be at least 1".into(),
            ));
        }
        if self.workload.rate.is_nan() || self.workload.rate <= 0.0 {
            return Err(invalid(
                "workload.rate".into(),
                "must be above 0 operations per second".into(),
            ));
        }
        if !matches!(self.workload.adapter.as_str(), "nats" | "http") {
            return Err(invalid(
                "workload.adapter".into(),
                format!(
                    "`{}` is not an adapter; use nats or http",
                    self.workload.adapter
                ),
            ));
        }
        if self.settle > MAX_SETTLE {
            return Err(invalid(
                "settle".into(),
                format!(
                    "{} is above the limit of {}: the final read-back would wait that long; lower it",
                    humantime::format_duration(self.settle),
                    humantime::format_duration(MAX_SETTLE)
                ),
            ));
        }
        if self.baseline.is_zero() {
            return Err(invalid(
                "baseline".into(),
                "must be above 0: the baseline is what recovery is measured against".into(),
            ));
        }
        for (i, fault) in self.faults.iter().enumerate() {
            Self::validate_fault(i, fault).map_err(|(field, message)| invalid(field, message))?;
        }
        let needed = self.last_fault_end();
        if self.duration < needed {
            return Err(invalid(
                "duration".into(),
                format!(
                    "{} is shorter than the baseline plus the faults ({}); make it at least that, plus time to watch recovery",
                    humantime::format_duration(self.duration),
                    humantime::format_duration(needed)
                ),
            ));
        }
        for (name, value) in [
            ("slo.min_success_rate", self.slo.min_success_rate),
            (
                "steady_state.min_success_rate",
                self.steady_state.min_success_rate,
            ),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(invalid(
                    name.into(),
                    format!("{value} is not a share between 0 and 1"),
                ));
            }
        }
        Ok(())
    }

    fn validate_fault(i: usize, fault: &FaultSpec) -> Result<(), (String, String)> {
        let field = |name: &str| format!("faults[{i}].{name}");
        let s = &fault.selector;
        if fault.kind != FaultKind::Kill && fault.duration.is_zero() {
            return Err((field("duration"), "must be above 0".into()));
        }
        if let Some(repeat) = &fault.repeat {
            if repeat.times == 0 {
                return Err((field("repeat.times"), "must be at least 1".into()));
            }
            if repeat.every < fault.duration {
                return Err((
                    field("repeat.every"),
                    "must not be shorter than the fault's duration: repeats would overlap".into(),
                ));
            }
        }
        match fault.kind {
            FaultKind::Partition => {
                let targets = [s.zone.is_some(), s.node.is_some(), s.shape.is_some()]
                    .iter()
                    .filter(|b| **b)
                    .count();
                if targets != 1 {
                    return Err((
                        field("selector"),
                        "a partition needs exactly one of zone, node or shape".into(),
                    ));
                }
                if let Some(shape) = &s.shape {
                    if !matches!(
                        shape.as_str(),
                        "halves" | "majorities-ring" | "bridge" | "one-vs-rest"
                    ) {
                        return Err((field("selector.shape"), format!("`{shape}` is not a shape; use halves, majorities-ring, bridge or one-vs-rest")));
                    }
                }
            }
            FaultKind::Kill | FaultKind::Pause => {
                if s.service.is_none() {
                    return Err((
                        field("selector.service"),
                        "name the service whose replica to hit".into(),
                    ));
                }
                if fault.kind == FaultKind::Pause && s.replica.as_deref() == Some("all") {
                    return Err((
                        field("selector.replica"),
                        "pause takes one replica; use a number or random".into(),
                    ));
                }
            }
            FaultKind::Drain => {
                if s.node.is_none() {
                    return Err((
                        field("selector.node"),
                        "name the node to drain, or random".into(),
                    ));
                }
            }
            FaultKind::QuorumLoss => {
                if fault.mode.is_none() {
                    return Err((
                        field("mode"),
                        "say how to take the peers out: stop, pause or isolate".into(),
                    ));
                }
                if s.stream.is_none() {
                    return Err((
                        field("selector.stream"),
                        "name a stream, `tenants` or `$meta`".into(),
                    ));
                }
            }
        }
        if fault.stop_services && !(fault.kind == FaultKind::Partition && s.zone.is_some()) {
            return Err((
                field("stop_services"),
                "only applies to a zone partition".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "\
name: x
description: y
faults:
  - kind: partition
    selector: {zone: a}
    start: 5s
    duration: 10s
baseline: 10s
duration: 40s
recovery_deadline: 30s
slo: {max_ttr: 10s}
";

    #[test]
    fn minimal_spec_parses_and_validates() {
        let spec = ExperimentSpec::parse(MINIMAL, "x.yaml").expect("parse");
        spec.validate("x.yaml").expect("valid");
        assert_eq!(spec.last_fault_end(), Duration::from_secs(25));
    }

    #[test]
    fn unknown_field_reports_line_and_column() {
        let yaml = MINIMAL.replace("baseline: 10s", "baseline: 10s\nbaseline_extra: 1");
        let error = ExperimentSpec::parse(&yaml, "x.yaml")
            .expect_err("unknown field")
            .to_string();
        assert!(
            error.contains("x.yaml: line 9 column 1") && error.contains("baseline_extra"),
            "{error}"
        );
    }

    #[test]
    fn validation_table() {
        let cases = [
            (
                "duration: 40s",
                "duration: 20s",
                "shorter than the baseline plus the faults",
            ),
            (
                "selector: {zone: a}",
                "selector: {zone: a, node: a1}",
                "exactly one of zone, node or shape",
            ),
            ("kind: partition", "kind: drain", "selector.node"),
            ("kind: partition", "kind: quorum-loss", "faults[0].mode"),
            (
                "duration: 10s\n",
                "duration: 0s\n",
                "faults[0].duration: must be above 0",
            ),
            ("baseline: 10s", "baseline: 0s", "baseline"),
            (
                "name: x",
                "name: x\ntarget: kubernetes",
                "not available yet",
            ),
            ("name: x", "name: x\nworkload: {rate: 0}", "workload.rate"),
            (
                "selector: {zone: a}",
                "selector: {shape: triangle}",
                "not a shape",
            ),
        ];
        for (from, to, expected) in cases {
            let yaml = MINIMAL.replacen(from, to, 1);
            let spec = ExperimentSpec::parse(&yaml, "x.yaml").expect(&yaml);
            let error = spec.validate("x.yaml").expect_err(&yaml).to_string();
            assert!(error.contains(expected), "{to}: {error}");
        }
    }
}
