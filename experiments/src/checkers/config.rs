//! Checker configuration: the recovery SLO and the checkers' tunables.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::CheckError;

/// The recovery SLO of one scenario. Durations are milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Slo {
    /// The scenario the SLO was chosen for, informational (e.g. `pod-failure`).
    pub scenario: Option<String>,
    /// Longest acceptable time to recovery (TTR); a series that recovers later, or never,
    /// is "never recovered" and makes the recovery verdict invalid.
    pub recovery_deadline_ms: u64,
    /// Per fault kind (`kill`, `drain`, `partition`, ...) overrides of `recovery_deadline_ms`.
    pub deadline_by_fault_kind: BTreeMap<String, u64>,
    /// A bucket passes only if at least this fraction of its operations ended `ok` (0..=1).
    pub min_success_rate: f64,
    /// A bucket passes only if its p99 latency (completion minus intended send time) is at most
    /// this.
    pub max_p99_ms: u64,
    /// A bucket passes only if its throughput (`ok` completions) is at least this fraction of the
    /// series' pre-fault baseline (0..=1).
    pub min_throughput_ratio: f64,
    /// The throughput criterion applies only to series whose baseline is at least this many
    /// `ok` completions per second; sparser series are too noisy per bucket.
    pub min_baseline_ops_per_s: f64,
}

impl Default for Slo {
    fn default() -> Self {
        Self {
            scenario: None,
            recovery_deadline_ms: 60_000,
            deadline_by_fault_kind: BTreeMap::new(),
            min_success_rate: 0.99,
            max_p99_ms: 1_000,
            min_throughput_ratio: 0.5,
            min_baseline_ops_per_s: 20.0,
        }
    }
}

impl Slo {
    /// The seed SLO of a built-in scenario: pod-failure 10 s, node-failure 60 s,
    /// gateway-failure 15 s; the other scenarios use the plan's 60 s resilience criterion.
    pub fn for_scenario(name: &str) -> Self {
        let deadline = match name {
            "pod-failure" => 10_000,
            "gateway-failure" => 15_000,
            _ => 60_000,
        };
        Self {
            scenario: Some(name.to_string()),
            recovery_deadline_ms: deadline,
            ..Self::default()
        }
    }

    /// The recovery deadline for a fault of `kind`.
    pub fn deadline_ms(&self, kind: &str) -> u64 {
        self.deadline_by_fault_kind
            .get(kind)
            .copied()
            .unwrap_or(self.recovery_deadline_ms)
    }
}

/// Everything the checkers can be tuned with. Durations are milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckConfig {
    /// The recovery SLO.
    pub slo: Slo,
    /// Width of a recovery bucket (default 1000).
    pub bucket_ms: u64,
    /// How many consecutive passing buckets count as recovered (default 5).
    pub sustain_buckets: u32,
    /// How long after the last heal replicas may still differ (default 10 000). Divergence seen
    /// in read-backs or stream info taken later than that is split-brain.
    pub convergence_deadline_ms: u64,
    /// How long two nodes may both claim leadership of one stream before it counts as two
    /// leaders (default 2000, about two leader-sampling periods).
    pub leader_overlap_tolerance_ms: u64,
    /// Evidence items kept per anomaly, earliest first (default 20). Counts are always exact.
    pub max_evidence: usize,
    /// Longest accepted line of a history or observations file, bytes (default 256 MiB).
    pub max_line_bytes: usize,
}

impl Default for CheckConfig {
    fn default() -> Self {
        Self {
            slo: Slo::default(),
            bucket_ms: 1_000,
            sustain_buckets: 5,
            convergence_deadline_ms: 10_000,
            leader_overlap_tolerance_ms: 2_000,
            max_evidence: 20,
            max_line_bytes: 256 << 20,
        }
    }
}

impl CheckConfig {
    /// The default configuration with the seed SLO of a scenario.
    pub fn for_scenario(name: &str) -> Self {
        Self {
            slo: Slo::for_scenario(name),
            ..Self::default()
        }
    }

    /// Checks the configuration without touching anything.
    pub fn validate(&self) -> Result<(), CheckError> {
        let bad = |what: &str| Err(CheckError::InvalidConfig(what.to_string()));
        if self.bucket_ms == 0 {
            return bad("bucket_ms must be at least 1");
        }
        if self.sustain_buckets == 0 {
            return bad("sustain_buckets must be at least 1");
        }
        if self.max_evidence == 0 {
            return bad("max_evidence must be at least 1");
        }
        if self.max_line_bytes < 1024 {
            return bad("max_line_bytes must be at least 1024");
        }
        let s = &self.slo;
        if !(0.0..=1.0).contains(&s.min_success_rate) {
            return bad("slo.min_success_rate must be between 0 and 1");
        }
        if !(0.0..=1.0).contains(&s.min_throughput_ratio) {
            return bad("slo.min_throughput_ratio must be between 0 and 1");
        }
        if !s.min_baseline_ops_per_s.is_finite() || s.min_baseline_ops_per_s < 0.0 {
            return bad("slo.min_baseline_ops_per_s must be a non-negative number");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_seeds() {
        assert_eq!(
            Slo::for_scenario("pod-failure").recovery_deadline_ms,
            10_000
        );
        assert_eq!(
            Slo::for_scenario("node-failure").recovery_deadline_ms,
            60_000
        );
        assert_eq!(
            Slo::for_scenario("gateway-failure").recovery_deadline_ms,
            15_000
        );
        let mut slo = Slo::default();
        slo.deadline_by_fault_kind.insert("kill".into(), 5);
        assert_eq!(slo.deadline_ms("kill"), 5);
        assert_eq!(slo.deadline_ms("drain"), 60_000);
    }

    #[test]
    fn config_round_trips_and_validates() {
        let c = CheckConfig::for_scenario("pod-failure");
        let s = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<CheckConfig>(&s).unwrap(), c);
        assert!(c.validate().is_ok());
        let bad = CheckConfig {
            bucket_ms: 0,
            ..CheckConfig::default()
        };
        assert!(bad.validate().is_err());
        assert!(serde_json::from_str::<CheckConfig>(r#"{"bukket_ms": 1}"#).is_err());
        let partial: CheckConfig = serde_json::from_str(r#"{"sustain_buckets": 3}"#).unwrap();
        assert_eq!(partial.sustain_buckets, 3);
        assert_eq!(partial.bucket_ms, 1_000);
    }
}
