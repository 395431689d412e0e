//! The score: a deterministic 0-100 number derived from the verdicts, defined in
//! docs/checkers.md ("Score"). The verdicts stay primary: any invalid verdict caps the score
//! at 49, so a run with lost writes can never look like a pass.

use super::model::{RecoverySummary, Status, Verdict};
use super::{consistency, isolation, recovery, split_brain};

/// Weights of the checkers, summing to 100.
pub const WEIGHTS: [(&str, f64); 4] = [
    (consistency::NAME, 35.0),
    (split_brain::NAME, 25.0),
    (isolation::NAME, 20.0),
    (recovery::NAME, 20.0),
];

/// Highest score of a run with an invalid verdict.
pub const INVALID_CAP: u8 = 49;
/// Highest score of a run with an unknown verdict (and no invalid one).
pub const UNKNOWN_CAP: u8 = 89;

/// Computes the score of a set of verdicts.
pub fn score(verdicts: &[Verdict], recovery: &RecoverySummary) -> u8 {
    let status_of = |name: &str| {
        verdicts
            .iter()
            .find(|v| v.name == name)
            .map_or(Status::Unknown, |v| v.status)
    };
    let mut total = 0.0;
    for (name, weight) in WEIGHTS {
        let credit = match status_of(name) {
            Status::Invalid => 0.0,
            Status::Unknown => 0.5,
            Status::Valid if name == recovery::NAME => {
                // Recovering at the deadline earns half the weight, instantly all of it.
                let worst = recovery
                    .faults
                    .iter()
                    .filter_map(|f| Some(f.ttr_ms? as f64 / f.deadline_ms.max(1) as f64))
                    .fold(0.0, f64::max);
                1.0 - 0.5 * worst.clamp(0.0, 1.0)
            }
            Status::Valid => 1.0,
        };
        total += weight * credit;
    }
    let mut s = total.round().clamp(0.0, 100.0) as u8;
    let overall = Status::merge_all(verdicts.iter().map(|v| v.status));
    if status_of(isolation::NAME) == Status::Invalid {
        s = 0;
    } else if overall == Status::Invalid {
        s = s.min(INVALID_CAP);
    } else if overall == Status::Unknown {
        s = s.min(UNKNOWN_CAP);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::model::FaultRecovery;

    fn v(name: &str, status: Status) -> Verdict {
        Verdict {
            name: name.into(),
            status,
            summary: String::new(),
            anomalies: vec![],
            notes: vec![],
        }
    }

    fn all(statuses: [Status; 4]) -> Vec<Verdict> {
        WEIGHTS
            .iter()
            .zip(statuses)
            .map(|((n, _), s)| v(n, s))
            .collect()
    }

    fn fault(ttr: Option<u64>) -> RecoverySummary {
        RecoverySummary {
            faults: vec![FaultRecovery {
                fault_id: "f".into(),
                kind: "kill".into(),
                reference_ns: Some(0),
                deadline_ms: 10_000,
                time_to_impact_ms: None,
                ttr_ms: ttr,
                recovered: ttr.is_some(),
                total_outage_ms: 0,
                outage_until: crate::checkers::model::OutageUntil::Recovery,
                worst_tenant: None,
                worst_series: None,
                impacted_series: 0,
                impacted_tenants: 0,
                never_recovered_series: 0,
                failing_before_series: 0,
            }],
        }
    }

    #[test]
    fn table() {
        use Status::{Invalid as I, Unknown as U, Valid as V};
        let none = RecoverySummary::default();
        let cases: &[([Status; 4], &RecoverySummary, u8)] = &[
            ([V, V, V, V], &none, 100),
            ([V, V, V, V], &fault(Some(0)), 100),
            ([V, V, V, V], &fault(Some(5_000)), 95),
            ([V, V, V, V], &fault(Some(10_000)), 90),
            ([V, V, V, I], &fault(None), 49),
            ([I, V, V, V], &none, 49),
            ([V, V, I, V], &none, 0),
            ([U, V, V, V], &none, 83),
            ([V, V, V, U], &none, 89),
            ([U, U, U, U], &none, 50),
        ];
        for (statuses, rec, want) in cases {
            assert_eq!(score(&all(*statuses), rec), *want, "{statuses:?}");
        }
        assert_eq!(score(&[], &none), 50);
    }
}
