//! The `Experiment` custom resource (namespaced, `faultline.dev/v1alpha1`): one experiment to run
//! on the cluster, and what became of it.
//!
//! Its `.spec` is the lab YAML's experiment spec itself ([`ExperimentSpec`]), so a file that
//! `chaosctl validate` accepts is a valid `.spec` and one [`ExperimentSpec::validate`] decides.
//! The CRD schema of `.spec` is an object with `x-kubernetes-preserve-unknown-fields`: the
//! schema stays structural, and the API server does not second-guess the spec's own rules
//! (durations as text, unknown fields refused by the runner with line and column).
//!
//! The controller writes `.status.phase` (Pending, Queued, Running, Healing, Succeeded, Failed,
//! Aborted); the runner Job writes the live progress, the fault windows, the verdicts, the
//! score, the run id and the report path.

use std::borrow::Cow;
use std::ops::{Deref, DerefMut};

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checkers::CheckReport;
use crate::spec::{ExperimentSpec, SpecError};

/// The `.spec` of an Experiment: the lab YAML's experiment spec, unchanged.
#[derive(CustomResource, Clone, Debug, PartialEq, Deserialize, Serialize)]
#[kube(
    group = "faultline.dev",
    version = "v1alpha1",
    kind = "Experiment",
    namespaced,
    status = "ExperimentStatus",
    shortname = "flx",
    category = "faultline",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Verdict","type":"string","jsonPath":".status.verdict"}"#,
    printcolumn = r#"{"name":"Score","type":"integer","jsonPath":".status.score"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(transparent)]
pub struct ExperimentBody(pub ExperimentSpec);

impl Deref for ExperimentBody {
    type Target = ExperimentSpec;

    fn deref(&self) -> &ExperimentSpec {
        &self.0
    }
}

impl DerefMut for ExperimentBody {
    fn deref_mut(&mut self) -> &mut ExperimentSpec {
        &mut self.0
    }
}

impl JsonSchema for ExperimentBody {
    fn schema_name() -> Cow<'static, str> {
        "ExperimentBody".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        // The spec has its own parser and validate(); the API server only keeps it.
        schemars::json_schema!({
            "description": "The experiment spec, exactly as in a lab YAML file (`chaosctl show NAME` prints one). Checked by the runner with the same validate() as `chaosctl validate`.",
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true
        })
    }
}

impl Experiment {
    /// `NAMESPACE/NAME`, as the runner's `--experiment` and Fault objects name it.
    pub fn qualified_name(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or("default"),
            self.metadata.name.as_deref().unwrap_or_default()
        )
    }

    /// The pure validation of the spec, as `chaosctl validate` runs it; errors name the object.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.spec
            .validate(&format!("experiment {}", self.qualified_name()))
    }

    /// The current phase; an object without status is Pending.
    pub fn phase(&self) -> ExperimentPhase {
        self.status
            .as_ref()
            .and_then(|s| s.phase)
            .unwrap_or_default()
    }
}

/// Reads the spec of an Experiment from its JSON, as the API server returns it: unknown fields
/// and bad durations are errors that name the object, like `chaosctl validate` on a file.
pub fn parse_spec(
    value: &serde_json::Value,
    qualified_name: &str,
) -> Result<ExperimentSpec, SpecError> {
    serde_json::from_value(value.clone()).map_err(|e| SpecError::Parse {
        source_name: format!("experiment {qualified_name}"),
        message: format!("spec: {e}"),
    })
}

/// Where an Experiment is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub enum ExperimentPhase {
    /// Created; the controller has not looked at it yet.
    #[default]
    Pending,
    /// Waiting: another Experiment runs on this cluster (`.status.queuedBehind` names it).
    Queued,
    /// The runner Job runs it.
    Running,
    /// Faults are being reverted (the end of the run, or an abort).
    Healing,
    /// Finished and judged valid.
    Succeeded,
    /// Finished and judged invalid or unknown, or could not run (`.status.message` says why).
    Failed,
    /// Ended early by a halt, an abort condition or a deleted runner; faults were healed.
    Aborted,
}

impl ExperimentPhase {
    /// Whether nothing more happens to the Experiment.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            ExperimentPhase::Succeeded | ExperimentPhase::Failed | ExperimentPhase::Aborted
        )
    }

    /// Whether a runner owns the Experiment (it holds the cluster's one slot).
    pub fn is_active(self) -> bool {
        matches!(self, ExperimentPhase::Running | ExperimentPhase::Healing)
    }

    /// The phase as written in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            ExperimentPhase::Pending => "Pending",
            ExperimentPhase::Queued => "Queued",
            ExperimentPhase::Running => "Running",
            ExperimentPhase::Healing => "Healing",
            ExperimentPhase::Succeeded => "Succeeded",
            ExperimentPhase::Failed => "Failed",
            ExperimentPhase::Aborted => "Aborted",
        }
    }
}

/// What became of an Experiment. The controller writes the phase while it queues and starts the
/// runner; the runner writes everything else.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentStatus {
    /// Where the Experiment is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ExperimentPhase>,
    /// One line for people: why it is queued, what failed, the verdict's summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// While Queued: the running Experiment it waits for, `NAMESPACE/NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_behind: Option<String>,
    /// The runner Job's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The run id; the reports are served at `/runs/RUN_ID/report.html|json|xml`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The run's directory on the report volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_path: Option<String>,
    /// When the runner started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it finished (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The live progress, refreshed by the runner about once a second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ExperimentProgress>,
    /// The fault windows, as injected and healed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fault_windows: Vec<FaultWindowStatus>,
    /// The merged verdict: `valid`, `invalid` or `unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// One verdict per checker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<CheckerVerdict>,
    /// The score, 0-100 (docs/checkers.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<u8>,
    /// The exit code `chaosctl run` ends with: 0 pass, 1 SLO or consistency failure, 2 error,
    /// unknown or aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// The live progress of a run.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentProgress {
    /// The engine's phase: setup, baseline, inject, recovery-watch, read-back, check, report.
    pub step: String,
    /// Seconds since the run started.
    pub elapsed_seconds: u64,
    /// Seconds left of the planned run.
    pub left_seconds: u64,
    /// Operations per second over the last window.
    pub ops_per_second: u64,
    /// Operations recorded so far.
    pub ops: u64,
    /// `fail` operations so far.
    pub failed: u64,
    /// `info` operations (outcome unknown) so far.
    pub info: u64,
    /// p99 latency over the last window, ms.
    pub p99_ms: u64,
    /// The faults active now, described.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active_faults: Vec<String>,
}

impl ExperimentProgress {
    /// One line, as the lab's live display shows it.
    pub fn line(&self) -> String {
        format!(
            "[{:>5}s] {:<14} {:>6} ops/s  ops {}  fail {}  info {}  p99 {}ms  left {}s  faults: {}",
            self.elapsed_seconds,
            self.step,
            self.ops_per_second,
            self.ops,
            self.failed,
            self.info,
            self.p99_ms,
            self.left_seconds,
            if self.active_faults.is_empty() {
                "none".to_owned()
            } else {
                self.active_faults.join(", ")
            }
        )
    }
}

/// One fault window of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FaultWindowStatus {
    /// The fault's id (the Fault object's name on a cluster).
    pub fault_id: String,
    /// Its kind.
    pub kind: String,
    /// Seconds from the run start to the injection.
    pub start_seconds: u64,
    /// Seconds from the run start to the heal; absent if the run ended first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_seconds: Option<u64>,
    /// Nodes or pods it touched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub affected: Vec<String>,
}

/// One checker's verdict.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckerVerdict {
    /// The checker: `recovery`, `consistency`, `split-brain` or `isolation`.
    pub name: String,
    /// `valid`, `invalid` or `unknown`.
    pub status: String,
    /// One line for people.
    pub summary: String,
}

impl ExperimentStatus {
    /// Fills the verdict part from a checkers' report: merged verdict, each checker's, the
    /// score, the fault windows and the exit code; and the phase that follows from them.
    pub fn record_report(&mut self, report: &CheckReport) {
        let seconds = |ns: u64| ns / 1_000_000_000;
        self.verdict = Some(report.status.as_str().to_owned());
        self.verdicts = report
            .verdicts
            .iter()
            .map(|v| CheckerVerdict {
                name: v.name.clone(),
                status: v.status.as_str().to_owned(),
                summary: v.summary.clone(),
            })
            .collect();
        self.score = Some(report.score);
        self.fault_windows = report
            .faults
            .iter()
            .map(|w| FaultWindowStatus {
                fault_id: w.fault_id.clone(),
                kind: w.kind.clone(),
                start_seconds: seconds(w.start_ns),
                end_seconds: w.end_ns.map(seconds),
                affected: w.affected.clone(),
            })
            .collect();
        self.exit_code = Some(report.exit_code());
        let valid = report.status == crate::checkers::Status::Valid;
        self.phase = Some(if valid {
            ExperimentPhase::Succeeded
        } else {
            ExperimentPhase::Failed
        });
        self.message = Some(
            report
                .verdicts
                .iter()
                .map(|v| format!("{}: {}", v.name, v.status.as_str()))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn the_spec_schema_is_structural_and_keeps_every_field() {
        let crd = serde_json::to_value(Experiment::crd()).expect("json");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let version = &crd["spec"]["versions"][0];
        assert!(version["subresources"]["status"].is_object());
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(spec["type"], "object");
        assert_eq!(spec["x-kubernetes-preserve-unknown-fields"], true);
        let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"];
        assert_eq!(status["properties"]["phase"]["type"], "string");
    }

    #[test]
    fn a_catalog_spec_round_trips_through_the_object() {
        let spec = crate::spec::catalog::spec("pod-failure").expect("catalog");
        let experiment = Experiment::new("nightly", ExperimentBody(spec.clone()));
        let json = serde_json::to_value(&experiment).expect("json");
        assert_eq!(json["spec"]["name"], "pod-failure");
        let back = parse_spec(&json["spec"], "default/nightly").expect("parses");
        assert_eq!(back, spec);
    }

    #[test]
    fn an_unknown_field_in_the_spec_is_an_error_naming_the_object() {
        let spec = crate::spec::catalog::spec("pod-failure").expect("catalog");
        let mut json = serde_json::to_value(ExperimentBody(spec)).expect("json");
        json["surprise"] = serde_json::json!(1);
        let error = parse_spec(&json, "shop/nightly").expect_err("unknown field");
        let text = error.to_string();
        assert!(text.contains("experiment shop/nightly"), "{text}");
        assert!(text.contains("surprise"), "{text}");
    }

    #[test]
    fn phases_order_the_slot() {
        assert!(ExperimentPhase::Running.is_active());
        assert!(ExperimentPhase::Healing.is_active());
        assert!(!ExperimentPhase::Queued.is_active());
        for phase in [
            ExperimentPhase::Succeeded,
            ExperimentPhase::Failed,
            ExperimentPhase::Aborted,
        ] {
            assert!(phase.is_finished());
            assert!(!phase.is_active());
        }
    }
}
