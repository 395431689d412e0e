//! nats-server 2.9.10, the documented known-buggy release: a recorded excerpt of a real lab run
//! (`tests/fixtures/nats-2.9.10-az-failure`, see its README) in which the replicas diverged
//! after a zone partition. The real checkers, with the run's own spec, must judge it INVALID
//! and name the divergence with per-replica evidence.

use std::path::{Path, PathBuf};

use faultline_experiments::checkers::{check_files, Severity, Status, Verdict};
use faultline_experiments::engine::run::check_config;
use faultline_experiments::spec::ExperimentSpec;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nats-2.9.10-az-failure")
}

fn invalid_anomaly<'a>(
    verdict: &'a Verdict,
    name: &str,
) -> &'a faultline_experiments::checkers::Anomaly {
    let anomaly = verdict
        .anomaly(name)
        .unwrap_or_else(|| panic!("{}: no `{name}` anomaly: {verdict:#?}", verdict.name));
    assert_eq!(anomaly.severity, Severity::Invalid, "{anomaly:#?}");
    anomaly
}

#[test]
fn the_judge_finds_the_divergence_recorded_on_nats_2_9_10() {
    let dir = fixture();
    // The excerpt is what 2.9.10 did, and it is small enough to keep in the repository.
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("run.json")).expect("run.json"))
            .expect("run.json is JSON");
    assert_eq!(run["system_under_test"][0]["service"], "nats");
    assert_eq!(
        run["system_under_test"][0]["version"],
        "nats-server: v2.9.10"
    );
    let size: u64 = ["history.jsonl", "observations.jsonl"]
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).expect("fixture file").len())
        .sum();
    assert!(size < 100_000, "the fixture grew to {size} bytes");

    let spec = ExperimentSpec::parse(
        &std::fs::read_to_string(dir.join("spec.yaml")).expect("spec.yaml"),
        "spec.yaml",
    )
    .expect("the run's spec parses");
    let report = check_files(
        &dir.join("history.jsonl"),
        Some(&dir.join("observations.jsonl")),
        &check_config(&spec),
    )
    .expect("the fixture is judged");
    assert_eq!(report.status, Status::Invalid);
    assert_eq!(report.exit_code(), 1);

    let consistency = report.verdict("consistency").expect("consistency verdict");
    assert_eq!(consistency.status, Status::Invalid);
    let conflicts = invalid_anomaly(consistency, "sequence-conflict");
    assert_eq!(conflicts.count, 3, "{conflicts:#?}");
    assert!(
        conflicts
            .evidence
            .iter()
            .all(|e| e.stream.as_deref() == Some("FL_t005")
                && (23..=25).contains(&e.seq.unwrap_or(0)))
    );
    // The acknowledged values missing from c1's own replica, read alone after the settle.
    let lost_on_node = invalid_anomaly(consistency, "lost-on-node");
    assert_eq!(lost_on_node.count, 2, "{lost_on_node:#?}");
    let missing: Vec<(&str, &str)> = lost_on_node
        .evidence
        .iter()
        .map(|e| {
            (
                e.node.as_deref().unwrap_or(""),
                e.value.as_deref().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(missing, [("c1", "t005/jobs/6"), ("c1", "t005/jobs/7")]);

    // The replicas of FL_t005 hold as many messages but not the same bytes: c1's differs.
    let split = report.verdict("split-brain").expect("split-brain verdict");
    assert_eq!(split.status, Status::Invalid);
    let divergence = invalid_anomaly(split, "divergence");
    assert!(divergence.evidence.iter().any(|e| {
        e.stream.as_deref() == Some("FL_t005")
            && [e.node.as_deref(), e.other_node.as_deref()].contains(&Some("c1"))
    }));
    let persisted = invalid_anomaly(split, "divergence-persisted");
    let detail = &persisted.evidence[0].detail;
    assert!(
        detail.contains("a1: 27 messages, 10890 bytes")
            && detail.contains("c1: 27 messages, 10703 bytes"),
        "{detail}"
    );
    // Tenants stayed isolated: the run's failure is the divergence, not a cross-tenant read.
    assert_eq!(
        report.verdict("isolation").map(|v| v.status),
        Some(Status::Valid)
    );
}
