//! Table tests: for each named anomaly, the clean history with exactly that anomaly added is
//! flagged with the right name and evidence; the clean history itself is valid.

#[path = "checkers_support/mod.rs"]
mod support;

use faultline_experiments::checkers::{Anomaly, Severity, Status};
use faultline_experiments::history::{Observation, OpKind, Outcome, Pattern};
use support::{items, op, H, MS};

struct Case {
    anomaly: &'static str,
    checker: &'static str,
    severity: Severity,
    inject: fn(&mut H),
    evidence: fn(&Anomaly),
}

fn ev_has(a: &Anomaly, f: impl Fn(&faultline_experiments::checkers::Evidence) -> bool) -> bool {
    a.evidence.iter().any(f)
}

// The table itself: one entry per anomaly.
#[allow(clippy::too_many_lines)]
fn cases() -> Vec<Case> {
    vec![
        Case {
            anomaly: "lost",
            checker: "consistency",
            severity: Severity::Invalid,
            inject: |h| h.drop_from_readbacks("s-t1", None, "t1/p/100"),
            evidence: |a| {
                assert_eq!(a.count, 1);
                assert_eq!(a.categories.get("middle"), Some(&1));
                let e = &a.evidence[0];
                assert_eq!(e.value.as_deref(), Some("t1/p/100"));
                assert_eq!(e.tenant.as_deref(), Some("t1"));
                assert_eq!(e.node.as_deref(), Some("n2"));
                assert_eq!(e.stream.as_deref(), Some("s-t1"));
                assert_eq!(e.seq, Some(101));
                assert_eq!(e.at_ns, Some(10_005 * MS));
            },
        },
        Case {
            anomaly: "lost",
            checker: "consistency",
            severity: Severity::Invalid,
            inject: |h| {
                h.drop_from_readbacks("s-t2", None, "t2/p/198");
                h.drop_from_readbacks("s-t2", None, "t2/p/199");
            },
            evidence: |a| {
                assert_eq!(a.count, 2);
                assert_eq!(a.categories.get("postfix"), Some(&2));
                assert!(ev_has(a, |e| e.value.as_deref() == Some("t2/p/199")));
            },
        },
        Case {
            anomaly: "lost",
            checker: "consistency",
            severity: Severity::Invalid,
            inject: |h| h.drop_from_readbacks("s-t1", None, "t1/p/0"),
            evidence: |a| assert_eq!(a.categories.get("prefix"), Some(&1)),
        },
        Case {
            anomaly: "lost-on-node",
            checker: "consistency",
            severity: Severity::Invalid,
            inject: |h| h.drop_from_readbacks("s-t1", Some("n3"), "t1/p/199"),
            evidence: |a| {
                assert_eq!(a.count, 1);
                let e = &a.evidence[0];
                assert_eq!(e.value.as_deref(), Some("t1/p/199"));
                assert_eq!(e.node.as_deref(), Some("n3"));
                assert_eq!(e.other_node.as_deref(), Some("n2"));
            },
        },
        Case {
            anomaly: "unexpected",
            checker: "consistency",
            severity: Severity::Invalid,
            inject: |h| h.add_to_readbacks("s-t1", None, 201, "t1/q/1"),
            evidence: |a| {
                let e = &a.evidence[0];
                assert_eq!(e.value.as_deref(), Some("t1/q/1"));
                assert_eq!(e.seq, Some(201));
                assert_eq!(e.tenant.as_deref(), Some("t1"));
            },
        },
        Case {
            anomaly: "aborted-read",
            checker: "consistency",
            severity: Severity::Invalid,
            inject: |h| {
                let w = h.write_of("t1/p/50");
                w.outcome = Outcome::Fail;
                w.seq = None;
            },
            evidence: |a| assert_eq!(a.evidence[0].value.as_deref(), Some("t1/p/50")),
        },
        Case {
            anomaly: "duplicate-stored",
            checker: "consistency",
            severity: Severity::Invalid,
            inject: |h| h.add_to_readbacks("s-t1", None, 201, "t1/p/10"),
            evidence: |a| {
                assert_eq!(a.count, 1);
                assert_eq!(a.evidence[0].value.as_deref(), Some("t1/p/10"));
                assert!(
                    a.evidence[0].detail.contains("11") && a.evidence[0].detail.contains("201")
                );
            },
        },
        Case {
            anomaly: "sequence-conflict",
            checker: "consistency",
            severity: Severity::Invalid,
            inject: |h| {
                for r in h.readbacks("s-t1", Some("n3")) {
                    let list = r.read.as_mut().unwrap();
                    list.swap(149, 150);
                    let (a, b) = (list[149].seq, list[150].seq);
                    list[149].seq = b;
                    list[150].seq = a;
                }
            },
            evidence: |a| {
                assert_eq!(a.count, 2);
                assert!(ev_has(a, |e| e.seq == Some(150)
                    && e.node.as_deref() == Some("n3")
                    || e.seq == Some(150) && e.other_node.as_deref() == Some("n3")));
                assert!(a.evidence.iter().all(|e| e.other_value.is_some()));
            },
        },
        Case {
            anomaly: "recovered",
            checker: "consistency",
            severity: Severity::Info,
            inject: |h| {
                let w = h.write_of("t1/p/60");
                w.outcome = Outcome::Info;
                w.seq = None;
            },
            evidence: |a| assert_eq!(a.evidence[0].value.as_deref(), Some("t1/p/60")),
        },
        Case {
            anomaly: "unknown",
            checker: "consistency",
            severity: Severity::Info,
            inject: |h| {
                let w = h.write_of("t1/p/199");
                w.outcome = Outcome::Info;
                w.seq = None;
                h.drop_from_readbacks("s-t1", None, "t1/p/199");
            },
            evidence: |a| assert_eq!(a.evidence[0].value.as_deref(), Some("t1/p/199")),
        },
        Case {
            anomaly: "duplicate-delivered",
            checker: "consistency",
            severity: Severity::Info,
            inject: |h| {
                for at in [1_000, 2_000] {
                    let mut d = op("t1", "n1", OpKind::Deliver, Pattern::Job, "s-t1", at);
                    d.value = Some("t1/p/5".into());
                    d.seq = Some(6);
                    h.ops.push(d);
                }
            },
            evidence: |a| {
                assert_eq!(a.evidence[0].value.as_deref(), Some("t1/p/5"));
                assert!(a.evidence[0].detail.contains("2 times"));
            },
        },
        Case {
            anomaly: "both-sides-acked",
            checker: "split-brain",
            severity: Severity::Invalid,
            inject: |h| {
                h.push_fault(
                    "f2",
                    "partition",
                    10_000,
                    12_000,
                    &[&["n1"], &["n2", "n3"]],
                    &[],
                );
            },
            evidence: |a| {
                assert_eq!(a.count, 2); // both streams
                assert!(ev_has(a, |e| e.node.as_deref() == Some("n1")
                    && e.detail.contains("f2")));
                assert!(ev_has(a, |e| e.node.as_deref() == Some("n2")));
            },
        },
        Case {
            anomaly: "duplicate-ack-seq",
            checker: "split-brain",
            severity: Severity::Invalid,
            inject: |h| h.write_of("t1/p/20").seq = Some(20),
            evidence: |a| {
                let e = &a.evidence[0];
                assert_eq!(e.seq, Some(20));
                let pair = [e.value.as_deref(), e.other_value.as_deref()];
                assert!(pair.contains(&Some("t1/p/20")) && pair.contains(&Some("t1/p/19")));
            },
        },
        Case {
            anomaly: "non-prefix-reads",
            checker: "split-brain",
            severity: Severity::Invalid,
            inject: |h| {
                let mut r = op("t1", "n1", OpKind::Read, Pattern::Chat, "s-t1", 15_000);
                let list: Vec<(u64, String)> = (1..=100)
                    .filter(|s| *s != 50)
                    .map(|s| (s, format!("t1/p/{}", s - 1)))
                    .collect();
                let refs: Vec<(u64, &str)> = list.iter().map(|(s, v)| (*s, v.as_str())).collect();
                r.read = Some(items(&refs));
                h.ops.push(r);
            },
            evidence: |a| {
                assert_eq!(a.count, 1);
                let e = &a.evidence[0];
                assert_eq!(e.seq, Some(50));
                assert_eq!(e.value.as_deref(), Some("t1/p/49"));
                assert_eq!(e.node.as_deref(), Some("n1"));
                assert_eq!(e.at_ns, Some(15_000 * MS));
            },
        },
        Case {
            anomaly: "divergence-persisted",
            checker: "split-brain",
            severity: Severity::Invalid,
            inject: |h| {
                for o in &mut h.obs {
                    if let Observation::StreamInfo {
                        observer,
                        stream,
                        last_seq,
                        ..
                    } = o
                    {
                        if observer == "n3" && stream == "s-t1" {
                            *last_seq = 190;
                        }
                    }
                }
            },
            evidence: |a| {
                let e = &a.evidence[0];
                assert_eq!(e.stream.as_deref(), Some("s-t1"));
                assert_eq!(e.other_node.as_deref(), Some("n3"));
                assert!(e.detail.contains("190"));
            },
        },
        Case {
            anomaly: "ack-without-quorum",
            checker: "split-brain",
            severity: Severity::Invalid,
            inject: |h| {
                for o in &mut h.obs {
                    if let Observation::Fault { affected, .. } = o {
                        affected.push("n3".into());
                    }
                }
            },
            evidence: |a| {
                // Writes sent between 5 s and 7 s (completing by 7 s): 20 per tenant.
                assert_eq!(a.count, 40);
                let e = &a.evidence[0];
                assert_eq!(e.at_ns, Some(5_000 * MS));
                assert!(e.detail.contains("2 of 3 peers"));
            },
        },
        Case {
            anomaly: "two-leaders",
            checker: "split-brain",
            severity: Severity::Invalid,
            inject: |h| {
                // From 10 s to 15 s, n2 also says it leads s-t1 (n1 never stops saying so).
                for o in &mut h.obs {
                    if let Observation::Leader {
                        at_ns,
                        observer,
                        stream,
                        leader,
                    } = o
                    {
                        if observer == "n2"
                            && stream == "s-t1"
                            && (10_000 * MS..=15_000 * MS).contains(at_ns)
                        {
                            *leader = Some("n2".into());
                        }
                    }
                }
            },
            evidence: |a| {
                assert_eq!(a.count, 1);
                let e = &a.evidence[0];
                assert_eq!(e.stream.as_deref(), Some("s-t1"));
                assert_eq!(
                    (e.node.as_deref(), e.other_node.as_deref()),
                    (Some("n1"), Some("n2"))
                );
            },
        },
        Case {
            anomaly: "cross-tenant-read",
            checker: "isolation",
            severity: Severity::Invalid,
            inject: |h| {
                let mut r = op("t1", "n2", OpKind::Read, Pattern::Chat, "s-t2", 12_000);
                r.read = Some(items(&[(1, "t2/p/0")]));
                h.ops.push(r);
            },
            evidence: |a| {
                let e = &a.evidence[0];
                assert_eq!(e.tenant.as_deref(), Some("t1"));
                assert_eq!(e.other_tenant.as_deref(), Some("t2"));
                assert_eq!(e.value.as_deref(), Some("t2/p/0"));
                assert_eq!(e.node.as_deref(), Some("n2"));
            },
        },
        Case {
            anomaly: "cross-tenant-read",
            checker: "isolation",
            severity: Severity::Invalid,
            inject: |h| {
                let mut r = op("t2", "n1", OpKind::Read, Pattern::Chat, "s-t2", 12_000);
                r.served_tenant = Some("t1".into());
                r.read = Some(vec![]);
                h.ops.push(r);
            },
            evidence: |a| {
                let e = &a.evidence[0];
                assert_eq!(
                    (e.tenant.as_deref(), e.other_tenant.as_deref()),
                    (Some("t2"), Some("t1"))
                );
            },
        },
        Case {
            anomaly: "never-recovered",
            checker: "recovery",
            severity: Severity::Invalid,
            inject: |h| {
                for o in &mut h.ops {
                    if o.tenant == "t1" && o.kind == OpKind::Write && o.invoke_ns >= 5_000 * MS {
                        o.complete_ns = o.invoke_ns + 2_000 * MS;
                    }
                }
            },
            evidence: |a| {
                assert_eq!(a.count, 1);
                assert_eq!(a.evidence[0].tenant.as_deref(), Some("t1"));
                assert!(a.evidence[0].detail.contains("chat/write"));
            },
        },
    ]
}

#[test]
fn clean_history_is_valid() {
    let r = H::clean().check();
    for v in &r.verdicts {
        assert_eq!(
            v.status,
            Status::Valid,
            "{}: {} {:?}",
            v.name,
            v.summary,
            v.notes
        );
        assert!(
            v.anomalies.iter().all(|a| a.severity == Severity::Info),
            "{v:?}"
        );
    }
    assert_eq!(r.status, Status::Valid);
    assert_eq!(r.exit_code(), 0);
    assert_eq!(r.score, 100);
    assert_eq!(r.recovery.faults.len(), 1);
    assert_eq!(r.recovery.faults[0].ttr_ms, Some(0));
    assert_eq!(r.input.operations, 406);
}

#[test]
fn each_anomaly_is_flagged_with_evidence() {
    for (i, case) in cases().into_iter().enumerate() {
        let mut h = H::clean();
        (case.inject)(&mut h);
        let r = h.check();
        let v = r
            .verdict(case.checker)
            .unwrap_or_else(|| panic!("case {i}: no verdict {}", case.checker));
        let a = v
            .anomaly(case.anomaly)
            .unwrap_or_else(|| panic!("case {i}: {} not flagged: {v:#?}", case.anomaly));
        assert_eq!(a.severity, case.severity, "case {i}");
        assert!(a.count > 0 && !a.evidence.is_empty(), "case {i}");
        (case.evidence)(a);
        match case.severity {
            Severity::Invalid => {
                assert_eq!(v.status, Status::Invalid, "case {i} {}", case.anomaly);
                assert_eq!(r.status, Status::Invalid);
                assert_eq!(r.exit_code(), 1);
                assert!(r.score <= 49, "case {i}: score {}", r.score);
            }
            Severity::Info => {
                assert_eq!(v.status, Status::Valid, "case {i} {}: {v:#?}", case.anomaly);
            }
        }
    }
}

#[test]
fn recovery_measures_ttr_and_impact() {
    let mut h = H::clean();
    // t2's writes are slow from the kill until 9 s: impact at once, TTR 2 s after the heal.
    for o in &mut h.ops {
        if o.tenant == "t2"
            && o.kind == OpKind::Write
            && (5_000 * MS..9_000 * MS).contains(&o.invoke_ns)
        {
            o.complete_ns = o.invoke_ns + 1_500 * MS;
        }
    }
    let r = h.check();
    let v = r.verdict("recovery").unwrap();
    assert_eq!(v.status, Status::Valid, "{v:#?}");
    let f = &r.recovery.faults[0];
    assert_eq!(f.time_to_impact_ms, Some(0));
    assert_eq!(f.ttr_ms, Some(2_000));
    assert_eq!(f.total_outage_ms, 4_000);
    assert_eq!(f.worst_tenant.as_deref(), Some("t2"));
    assert_eq!(f.worst_series.as_deref(), Some("chat/write"));
    assert_eq!(f.impacted_tenants, 1);
    assert!(f.recovered);
    assert_eq!(r.score, 98); // 100 - 20 * 0.5 * 2/10
    let t2 = r.tenants.iter().find(|t| t.tenant == "t2").unwrap();
    assert_eq!(t2.failing_runs, vec![[5, 4]]);
    assert_eq!(t2.worst_ttr_ms, Some(2_000));
    // Survivable: TTR is measured from the fault's start.
    for o in &mut h.obs {
        if let Observation::Fault { survivable, .. } = o {
            *survivable = true;
        }
    }
    let r = h.check();
    assert_eq!(r.recovery.faults[0].ttr_ms, Some(4_000));
}

#[test]
fn throughput_criterion_uses_the_baseline() {
    let mut h = H::clean();
    h.config.slo.min_baseline_ops_per_s = 5.0; // each series does 10 ok/s
                                               // t1 loses half its throughput from 12 s to 15 s: its writes there fail outright (they
                                               // are not in the read-backs either, so consistency stays clean).
    let mut dropped = Vec::new();
    for o in &mut h.ops {
        if o.tenant == "t1"
            && o.kind == OpKind::Write
            && (12_000 * MS..15_000 * MS).contains(&o.invoke_ns)
            && o.seq.unwrap() % 2 == 0
        {
            o.outcome = Outcome::Fail;
            dropped.push(o.value.clone().unwrap());
        }
    }
    h.config.slo.min_success_rate = 0.0; // isolate the throughput criterion
    let r = h.check();
    let t1 = r.tenants.iter().find(|t| t.tenant == "t1").unwrap();
    assert_eq!(
        t1.failing_buckets, 0,
        "half the baseline is still within ratio 0.5"
    );
    h.config.slo.min_throughput_ratio = 0.8;
    let r = h.check();
    let t1 = r.tenants.iter().find(|t| t.tenant == "t1").unwrap();
    assert_eq!(t1.failing_runs, vec![[12, 3]]);
    let _ = dropped;
}

#[test]
fn missing_inputs_make_checkers_unknown_not_valid() {
    let h = H::clean();
    // No observations: recovery and split-brain cannot be sure.
    let r = faultline_experiments::checkers::check_operations(
        &support::header(),
        &h.ops,
        None,
        &h.config,
    )
    .unwrap();
    assert_eq!(r.verdict("recovery").unwrap().status, Status::Unknown);
    assert_eq!(r.verdict("split-brain").unwrap().status, Status::Unknown);
    assert_eq!(r.verdict("consistency").unwrap().status, Status::Valid);
    assert_eq!(r.status, Status::Unknown);
    assert_eq!(r.exit_code(), 2);
    // No read-back: loss cannot be ruled out.
    let mut h = H::clean();
    h.ops.retain(|o| o.pattern != Pattern::ReadBack);
    let r = h.check();
    let c = r.verdict("consistency").unwrap();
    assert_eq!(c.status, Status::Unknown, "{c:#?}");
    assert!(c.notes[0].contains("400 acknowledged values"));
    // A write without a value is inconsistent input.
    let mut h = H::clean();
    h.ops
        .push(op("t1", "n1", OpKind::Write, Pattern::Chat, "s-t1", 3_000));
    let r = h.check();
    assert_eq!(r.verdict("consistency").unwrap().status, Status::Unknown);
    assert_eq!(r.input.defects.get("write-without-value"), Some(&1));
    // A fault that never healed: no TTR.
    let mut h = H::clean();
    for o in &mut h.obs {
        if let Observation::Fault { end_ns, .. } = o {
            *end_ns = None;
        }
    }
    let r = h.check();
    assert_eq!(r.verdict("recovery").unwrap().status, Status::Unknown);
    // Lost writes stay invalid even when something else is unknown.
    h.drop_from_readbacks("s-t1", None, "t1/p/100");
    assert_eq!(
        h.check().verdict("consistency").unwrap().status,
        Status::Invalid
    );
}

#[test]
fn results_do_not_depend_on_order() {
    let mut h = H::clean();
    h.drop_from_readbacks("s-t1", None, "t1/p/100");
    h.add_to_readbacks("s-t2", None, 300, "t2/p/7");
    let a = h.check();
    h.ops.reverse();
    let b = h.check();
    // Counts, categories and statuses are order-independent; which occurrence is sampled as
    // evidence may differ.
    let shape = |r: &faultline_experiments::checkers::CheckReport| {
        r.verdicts
            .iter()
            .map(|v| {
                let a: Vec<_> = v
                    .anomalies
                    .iter()
                    .map(|a| (a.name.clone(), a.count, a.categories.clone()))
                    .collect();
                (v.name.clone(), v.status, a)
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(shape(&a), shape(&b));
    assert_eq!(a.tenants, b.tenants);
    assert_eq!(a.score, b.score);
    assert_eq!(a.recovery, b.recovery);
    assert_eq!(a.timeline, b.timeline);
}
