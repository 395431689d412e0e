//! Isolation: any read that returns a record of another tenant makes the run invalid at once.
//! Definitions are in docs/checkers.md ("Isolation").

use std::collections::BTreeMap;

use super::facts::Facts;
use super::model::{Anomaly, Severity, Status, Verdict};

/// The checker's name in reports.
pub const NAME: &str = "isolation";

/// Runs the isolation checker.
pub fn check(facts: &Facts) -> Verdict {
    let a = Anomaly {
        name: "cross-tenant-read".to_string(),
        severity: Severity::Invalid,
        count: facts.cross_tenant.count,
        categories: BTreeMap::new(),
        evidence: facts.cross_tenant.clone().into_sorted(),
    };
    let mut notes = Vec::new();
    let mut fallback = Status::Valid;
    if facts.unattributable_reads > 0 {
        fallback = Status::Unknown;
        notes.push(format!(
            "{} read values have no tenant prefix, so their owner is unknown",
            facts.unattributable_reads
        ));
    }
    let mut v = Verdict::from_anomalies(NAME, vec![a], notes, fallback);
    if v.status == Status::Invalid {
        let pairs: Vec<String> = v.anomalies[0]
            .evidence
            .iter()
            .filter_map(|e| {
                Some(format!(
                    "{} got {}'s",
                    e.tenant.as_deref()?,
                    e.other_tenant.as_deref()?
                ))
            })
            .take(3)
            .collect();
        v.summary = format!(
            "{} cross-tenant reads ({})",
            facts.cross_tenant.count,
            pairs.join("; ")
        );
    } else if v.status == Status::Valid {
        v.summary = "no read returned another tenant's record".to_string();
    }
    v
}
