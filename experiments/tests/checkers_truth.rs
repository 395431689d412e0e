//! Never valid on what was not checked, and recovery blames a fault only for what it changed:
//! empty and damaged inputs, cut-off observations, far-off timestamps, parse positions, series
//! already failing before the fault, and outages that did not end by the deadline.

#[path = "checkers_support/mod.rs"]
mod support;

use std::io::Cursor;
use std::path::Path;

use faultline_experiments::checkers::facts::Facts;
use faultline_experiments::checkers::{
    check_files, check_operations, check_reader, CheckConfig, CheckError, CheckReport, Item,
    Observations, Op, Status,
};
use faultline_experiments::history::{OpKind, Pattern};
use faultline_experiments::report::{terminal_summary, write_html, write_json, write_junit};
use support::{header, op, H, MS};

fn from_bytes(data: &[u8]) -> Result<CheckReport, CheckError> {
    check_reader(
        Cursor::new(data),
        Path::new("history.jsonl"),
        Observations::none(),
        &CheckConfig::default(),
    )
}

fn header_line() -> String {
    format!("{}\n", serde_json::to_string(&header()).unwrap())
}

fn write(dir: &Path, name: &str, data: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn assert_all_unknown(r: &CheckReport, why: &str) {
    assert_eq!(r.status, Status::Unknown, "{r:#?}");
    assert_eq!(r.exit_code(), 2);
    assert!(r.score <= 89, "score {}", r.score);
    for v in &r.verdicts {
        assert_eq!(v.status, Status::Unknown, "{v:#?}");
        assert!(
            v.notes.iter().any(|n| n.contains(why)),
            "{}: {:?}",
            v.name,
            v.notes
        );
    }
}

#[test]
fn a_history_without_operations_is_unknown_not_valid() {
    let r = from_bytes(header_line().as_bytes()).unwrap();
    assert_eq!(r.input.operations, 0);
    assert_all_unknown(&r, "no operation");
    // With the run's observations as well: still nothing was checked.
    let h = H::clean();
    let (_, observations) = h.to_jsonl();
    let dir = tempfile::tempdir().unwrap();
    let r = check_files(
        &write(dir.path(), "h.jsonl", &header_line()),
        Some(&write(dir.path(), "o.jsonl", &observations)),
        &h.config,
    )
    .unwrap();
    assert_all_unknown(&r, "no operation");
    let text = terminal_summary(&r, false);
    assert!(
        text.contains("UNKNOWN") && text.contains("exit 2"),
        "{text}"
    );
}

#[test]
fn garbage_after_the_header_is_unknown_or_an_error() {
    // Cut off without a newline: skipped as a truncated last line, and nothing is left.
    let r = from_bytes(format!("{}garbage", header_line()).as_bytes()).unwrap();
    assert!(r.input.truncated_last_line);
    assert_all_unknown(&r, "no operation");
    // A complete line of garbage is an error at its position.
    let err = from_bytes(format!("{}garbage\n", header_line()).as_bytes()).unwrap_err();
    assert!(
        matches!(
            err,
            CheckError::BadLine {
                line: 2,
                column: 1,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_complete_last_line_that_does_not_parse_is_an_error_not_a_truncation() {
    let (history, _) = H::clean().to_jsonl();
    let mut lines: Vec<String> = history.lines().map(String::from).collect();
    let last = lines.len();
    let broken = lines[last - 1].replacen("\"outcome\":\"ok\"", "\"outcome\":\"maybe\"", 1);
    let column = broken.find("\"maybe\"").unwrap() + 1;
    lines[last - 1] = broken;
    let text = format!("{}\n", lines.join("\n"));
    let err = from_bytes(text.as_bytes()).unwrap_err();
    match &err {
        CheckError::BadLine {
            line,
            column: c,
            message,
            ..
        } => {
            assert_eq!(*line, last as u64);
            // serde_json points just past the bad value.
            assert!(
                (column as u64..=column as u64 + 8).contains(c),
                "{c} {column}"
            );
            assert!(message.contains("maybe"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // Without its newline the same line is a cut-off write: skipped, with a note.
    let r = from_bytes(text.trim_end().as_bytes()).unwrap();
    assert!(r.input.truncated_last_line);
}

#[test]
fn parse_errors_give_the_files_line_and_column_once() {
    let h = H::clean();
    let (history, observations) = h.to_jsonl();
    let mut lines: Vec<String> = history.lines().map(String::from).collect();
    lines[10] = lines[10].replacen("\"outcome\":\"ok\"", "\"outcome\":\"maybe\"", 1);
    let err = from_bytes(format!("{}\n", lines.join("\n")).as_bytes()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("history.jsonl:11:"), "{msg}");
    assert!(
        !msg.contains("line 1 column"),
        "serde's own position repeated: {msg}"
    );
    // An observation with a missing field: serde_json has no position for it.
    let mut obs: Vec<String> = observations.lines().map(String::from).collect();
    obs[3] = obs[3].replacen("\"at_ns\":", "\"at_nanos\":", 1);
    let dir = tempfile::tempdir().unwrap();
    let err = check_files(
        &write(dir.path(), "h.jsonl", &history),
        Some(&write(
            dir.path(),
            "o.jsonl",
            &format!("{}\n", obs.join("\n")),
        )),
        &h.config,
    )
    .unwrap_err();
    match &err {
        CheckError::BadLine { line, column, .. } => {
            assert_eq!(*line, 4);
            assert!(*column >= 1, "column {column}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("o.jsonl:4:1: "), "{msg}");
    assert!(msg.contains("at_nanos") || msg.contains("at_ns"), "{msg}");
    assert!(!msg.contains("line 1 column"), "{msg}");
}

#[test]
fn a_cut_off_observation_is_noted_and_a_cut_fault_makes_recovery_unknown() {
    let h = H::clean();
    let (history, observations) = h.to_jsonl();
    let dir = tempfile::tempdir().unwrap();
    let hp = write(dir.path(), "h.jsonl", &history);
    // A leader sample cut off: noted everywhere, verdicts unchanged.
    let cut_leader = format!("{observations}{{\"type\":\"leader\",\"at_ns\":27000");
    let r = check_files(
        &hp,
        Some(&write(dir.path(), "o1.jsonl", &cut_leader)),
        &h.config,
    )
    .unwrap();
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["input"]["observations_truncated_last_line"], true);
    assert_eq!(r.status, Status::Valid, "{r:#?}");
    for v in &r.verdicts {
        assert!(
            v.notes
                .iter()
                .any(|n| n.contains("observations' last line")),
            "{}: {:?}",
            v.name,
            v.notes
        );
    }
    // A fault window cut off: recovery and split-brain cannot stand for the whole run.
    let cut_fault =
        format!("{observations}{{\"type\":\"fault\",\"fault_id\":\"f2\",\"kind\":\"partition\",\"start_ns\":9");
    let r = check_files(
        &hp,
        Some(&write(dir.path(), "o2.jsonl", &cut_fault)),
        &h.config,
    )
    .unwrap();
    assert_eq!(r.verdict("recovery").unwrap().status, Status::Unknown);
    assert_eq!(r.verdict("split-brain").unwrap().status, Status::Unknown);
    assert_eq!(r.verdict("consistency").unwrap().status, Status::Valid);
    assert_eq!(r.exit_code(), 2);
    // A line cut before its type could be anything, so it could be a fault.
    let cut_early = format!("{observations}{{\"ty");
    let r = check_files(
        &hp,
        Some(&write(dir.path(), "o3.jsonl", &cut_early)),
        &h.config,
    )
    .unwrap();
    assert_eq!(r.verdict("recovery").unwrap().status, Status::Unknown);
}

#[test]
fn memory_follows_the_data_not_the_timestamps() {
    let mut h = H::clean();
    // One write stamped 190 days into the run.
    let mut far = op(
        "t1",
        "n1",
        OpKind::Write,
        Pattern::Chat,
        "s-t1",
        190 * 86_400 * 1_000,
    );
    far.value = Some("t1/p/far".into());
    h.ops.push(far);
    let obs = Observations::from_observations(h.obs.clone()).unwrap();
    let mut facts = Facts::new(&obs, &h.config);
    for o in &h.ops {
        let s = &mut facts.symbols;
        let read: Vec<Item> = o
            .read
            .iter()
            .flatten()
            .map(|i| Item {
                seq: i.seq,
                value: s.intern_value(&i.value),
            })
            .collect();
        let op = Op {
            tenant: s.tenants.intern(&o.tenant),
            process: s.processes.intern(&o.process),
            node: s.nodes.intern(&o.node),
            stream: s.streams.intern(&o.stream),
            kind: o.kind,
            pattern: o.pattern,
            outcome: o.outcome,
            attempt: o.attempt,
            value: o.value.as_deref().map(|v| s.intern_value(v)),
            seq: o.seq,
            invoke_ns: o.invoke_ns,
            complete_ns: o.complete_ns,
            read: o.read.as_ref().map(|_| &read[..]),
            served_tenant: None,
            node_uncertain: o.reconnected,
            client_zone: None,
            line: 0,
        };
        facts.ingest(&op);
    }
    // 200 writes over 20 s, plus the far one: tens of buckets hold data, not 16 million.
    let longest = facts.series.iter().map(|s| s.buckets.len()).max().unwrap();
    assert!(longest <= 64, "a series holds {longest} buckets");
    drop(facts);
    // The whole check stays small and still sees the operation.
    let r = check_operations(&header(), &h.ops, Some(h.obs.clone()), &h.config).unwrap();
    assert_eq!(r.input.operations, 407);
    assert!(r.timeline.points.len() <= 2_000);
    assert_eq!(r.timeline.step_ms % r.config.bucket_ms, 0);
    let span_s = r.timeline.points.len() as f64 * r.timeline.step_ms as f64 / 1e3;
    assert!(span_s >= 190.0 * 86_400.0, "{span_s}");
}

/// `t2`'s writes take 1.5 s (past the 1 s p99 SLO) when `slow(bucket)` says so.
fn slow_t2(h: &mut H, slow: impl Fn(u64) -> bool) {
    for o in &mut h.ops {
        if o.tenant == "t2" && o.kind == OpKind::Write && slow(o.invoke_ns / (1_000 * MS)) {
            o.complete_ns = o.invoke_ns + 1_500 * MS;
        }
    }
}

#[test]
fn a_tenant_failing_before_the_fault_is_not_blamed_for_it() {
    let mut history = H::clean();
    slow_t2(&mut history, |_| true);
    let report = history.check();
    let verdict = report.verdict("recovery").unwrap();
    assert_eq!(verdict.status, Status::Valid, "{verdict:#?}");
    assert!(verdict.anomaly("never-recovered").is_none(), "{verdict:#?}");
    let anomaly = verdict.anomaly("failing-before-fault").expect("reported");
    assert_eq!(anomaly.count, 1);
    assert_eq!(anomaly.categories.get("no-worse"), Some(&1));
    let evidence = &anomaly.evidence[0];
    assert_eq!(evidence.tenant.as_deref(), Some("t2"));
    assert!(
        evidence.detail.contains("0 of 5 baseline buckets passed"),
        "{evidence:?}"
    );
    assert!(verdict.summary.contains("no worse"), "{}", verdict.summary);
    let fault = &report.recovery.faults[0];
    assert!(fault.recovered);
    // The outage and the impact are the fault's own: t1 never failed.
    assert_eq!((fault.total_outage_ms, fault.time_to_impact_ms), (0, None));
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["recovery"]["faults"][0]["outage_until"], "recovery");
    assert_eq!(json["recovery"]["faults"][0]["failing_before_series"], 1);
    let t2 = &json["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["tenant"] == "t2")
        .unwrap();
    assert_eq!(t2["failing_before_faults"], true);
    assert_eq!(t2["never_recovered"], false);
    let text = terminal_summary(&report, false);
    assert!(!text.contains("NOT RECOVERED"), "{text}");
}

#[test]
fn a_tenant_failing_before_and_worse_after_is_undecided_not_invalid() {
    let mut h = H::clean();
    // Flapping in the baseline (3 of 5 buckets pass, never 5 in a row), failing after.
    slow_t2(&mut h, |b| b == 1 || b == 3 || b >= 5);
    let r = h.check();
    let v = r.verdict("recovery").unwrap();
    assert_eq!(v.status, Status::Unknown, "{v:#?}");
    let a = v.anomaly("failing-before-fault").expect("reported");
    assert_eq!(a.categories.get("worse"), Some(&1));
    assert!(v.notes.iter().any(|n| n.contains("undecided")), "{v:#?}");
    assert_eq!(r.exit_code(), 2);
}

/// The outage as every report shows it.
fn renders(r: &CheckReport) -> [String; 4] {
    let mut json = Vec::new();
    write_json(r, &mut json).unwrap();
    let mut html = Vec::new();
    write_html(r, &mut html).unwrap();
    let mut junit = Vec::new();
    write_junit(r, &mut junit).unwrap();
    [
        String::from_utf8(json).unwrap(),
        String::from_utf8(html).unwrap(),
        String::from_utf8(junit).unwrap(),
        terminal_summary(r, false),
    ]
}

#[test]
fn an_outage_that_outlasts_the_deadline_is_a_lower_bound_in_every_report() {
    // t2 is healthy before the kill (5-7 s) and fails from 5 s to the end (20 s): never
    // recovered, and still blamed on the fault.
    let mut h = H::clean();
    slow_t2(&mut h, |b| b >= 5);
    let r = h.check(); // pod-failure: 10 s deadline after the heal at 7 s.
    assert_eq!(r.verdict("recovery").unwrap().status, Status::Invalid);
    let f = &r.recovery.faults[0];
    assert_eq!(f.never_recovered_series, 1);
    // Counted from 5 s up to the deadline (17 s), not to the end of the history (19 s).
    assert_eq!(f.total_outage_ms, 12_000);
    let [json, html, junit, text] = renders(&r);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["recovery"]["faults"][0]["outage_until"], "deadline");
    let shown = "at least 12.0 s (not recovered by the deadline)";
    for (name, out) in [("html", &html), ("junit", &junit), ("text", &text)] {
        assert!(out.contains(shown), "{name}: {out}");
    }

    // With a 60 s deadline the history (19 s) ends first: that is what the bound says.
    h.config = CheckConfig::default();
    let r = h.check();
    let f = &r.recovery.faults[0];
    assert_eq!(f.total_outage_ms, 14_000);
    let [json, html, junit, text] = renders(&r);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["recovery"]["faults"][0]["outage_until"], "history_end");
    let shown = "at least 14.0 s (not recovered when the history ended, before the deadline)";
    for (name, out) in [("html", &html), ("junit", &junit), ("text", &text)] {
        assert!(out.contains(shown), "{name}: {out}");
    }

    // An outage that ended is a measurement.
    let mut h = H::clean();
    slow_t2(&mut h, |b| (5..9).contains(&b));
    let r = h.check();
    let f = &r.recovery.faults[0];
    assert_eq!((f.total_outage_ms, f.recovered), (4_000, true));
    let [json, _, _, text] = renders(&r);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["recovery"]["faults"][0]["outage_until"], "recovery");
    assert!(text.contains("outage 4.0 s,"), "{text}");
    assert!(!text.contains("at least"), "{text}");
}

/// Issue 11, part 2: a fault's window is judged only where the fault was fully in effect.
/// The clean history's kill of n2 becomes a kill of n2 and n3 (no quorum), injected from 5 s
/// to 6 s and healed from 6.5 s to 7 s: only acknowledgements wholly inside 6 s..6.5 s are
/// `ack-without-quorum`; those overlapping the injection or the heal are left out and noted.
#[test]
fn ack_without_quorum_rests_only_on_acks_inside_the_effective_window() {
    use faultline_experiments::history::{Observation, Outcome};
    let mut h = H::clean();
    for o in &mut h.obs {
        if let Observation::Fault {
            start_ns,
            end_ns,
            injecting_ns,
            reverting_ns,
            affected,
            ..
        } = o
        {
            affected.push("n3".into());
            *injecting_ns = Some(5_000 * MS);
            *start_ns = 6_000 * MS;
            *reverting_ns = Some(6_500 * MS);
            *end_ns = Some(7_000 * MS);
        }
    }
    let acked = |from: u64, to: u64| {
        h.ops
            .iter()
            .filter(|o| o.kind == OpKind::Write && o.outcome == Outcome::Ok)
            .filter(|o| o.invoke_ns >= from && o.complete_ns <= to)
            .count() as u64
    };
    let inside = acked(6_000 * MS, 6_500 * MS);
    let whole = acked(5_000 * MS, 7_000 * MS);
    assert!(inside > 0 && inside < whole, "{inside} of {whole}");
    let r = h.check();
    let v = r.verdict("split-brain").expect("split-brain");
    let a = v.anomaly("ack-without-quorum").expect("flagged");
    assert_eq!(a.count, inside, "{v:#?}");
    assert!(a
        .evidence
        .iter()
        .all(|e| e.at_ns.is_some_and(|at| at >= 6_000 * MS)));
    assert!(
        v.notes.iter().any(|n| n.contains("partly in effect")),
        "{:?}",
        v.notes
    );
    // The same fault recorded as before (window from the injection's begin to the heal's end)
    // blames every acknowledgement from 5 s to 7 s.
    let mut old = H::clean();
    for o in &mut old.obs {
        if let Observation::Fault { affected, .. } = o {
            affected.push("n3".into());
        }
    }
    let r = old.check();
    let a = r
        .verdict("split-brain")
        .and_then(|v| v.anomaly("ack-without-quorum"))
        .expect("flagged");
    assert_eq!(a.count, whole);
}

/// Issue 11, part 3: the per-server states recorded when the settle ended. `full` gives every
/// server 200 messages up to seq 200 of 20 000 bytes, except that `odd` reports `bytes_on_odd`.
fn settled(h: &mut support::H, converged: bool, odd: &str, bytes_on_odd: u64) {
    use faultline_experiments::history::Observation;
    let at_ns = 27_000 * MS;
    for o in &mut h.obs {
        if let Observation::StreamInfo { at_ns: at, .. } = o {
            *at = at_ns;
        }
    }
    for o in &mut h.obs {
        if let Observation::StreamInfo {
            observer,
            stream,
            first_seq,
            messages,
            bytes,
            ..
        } = o
        {
            *first_seq = Some(1);
            *messages = Some(200);
            *bytes = Some(if observer == odd && stream == "s-t1" {
                bytes_on_odd
            } else {
                20_000
            });
        }
    }
    h.obs.push(Observation::Settled {
        at_ns,
        deadline_ns: 27_000 * MS,
        converged,
        unanswered: vec![],
    });
}

#[test]
fn replicas_with_equal_counts_and_different_bytes_at_the_settle_deadline_are_divergence_persisted()
{
    let mut h = H::clean();
    settled(&mut h, false, "n3", 19_990);
    let r = h.check();
    let v = r.verdict("split-brain").expect("split-brain");
    assert_eq!(v.status, Status::Invalid, "{v:#?}");
    let persisted = v.anomaly("divergence-persisted").expect("flagged");
    assert_eq!(persisted.count, 1);
    let e = &persisted.evidence[0];
    assert_eq!(e.stream.as_deref(), Some("s-t1"));
    assert_eq!(e.other_node.as_deref(), Some("n3"));
    // Per-replica evidence: every server's state.
    for part in [
        "n1: 200 messages, 20000 bytes, seq 1..200",
        "n2: 200 messages, 20000 bytes, seq 1..200",
        "n3: 200 messages, 19990 bytes, seq 1..200",
        "when the settle before the read-back ended",
    ] {
        assert!(e.detail.contains(part), "{part} not in {}", e.detail);
    }
    // The same states, all equal: nothing persisted.
    let mut h = H::clean();
    settled(&mut h, true, "n3", 20_000);
    let r = h.check();
    let v = r.verdict("split-brain").expect("split-brain");
    assert_eq!(v.anomaly("divergence-persisted").map_or(0, |a| a.count), 0);
    assert_eq!(v.status, Status::Valid, "{v:#?}");
}

/// A value missing from every replica after the settle is `lost`, and only `lost`; one missing
/// from one replica is `lost-on-node` on that node.
#[test]
fn after_the_settle_a_value_missing_everywhere_is_lost_not_lost_on_node() {
    let mut h = H::clean();
    settled(&mut h, true, "n3", 20_000);
    h.drop_from_readbacks("s-t1", None, "t1/p/100");
    h.drop_from_readbacks("s-t1", Some("n3"), "t1/p/101");
    let r = h.check();
    let v = r.verdict("consistency").expect("consistency");
    let lost = v.anomaly("lost").expect("lost");
    assert_eq!(lost.count, 1);
    assert_eq!(lost.evidence[0].value.as_deref(), Some("t1/p/100"));
    let on_node = v.anomaly("lost-on-node").expect("lost-on-node");
    assert_eq!(on_node.count, 1, "{on_node:#?}");
    assert_eq!(on_node.evidence[0].value.as_deref(), Some("t1/p/101"));
    assert_eq!(on_node.evidence[0].node.as_deref(), Some("n3"));
}

/// Issue 11, part 1: a read-back through a node may be answered by another replica, so once a
/// node's own replica was read alone (`read_back_replica`), only those views decide
/// `lost-on-node`. Here n2's read through itself was answered by a replica that holds the value,
/// its own replica lacks it, and n3's read through itself lacks a value its own replica holds.
#[test]
fn lost_on_node_rests_on_the_replica_read_alone() {
    let mut h = H::clean();
    let alone: Vec<_> = h
        .ops
        .iter()
        .filter(|o| o.pattern == Pattern::ReadBack)
        .cloned()
        .map(|mut o| {
            o.pattern = Pattern::ReadBackReplica;
            o.process = format!("readback-replica/{}", o.node);
            o.invoke_ns += 1_000 * MS;
            o.complete_ns += 1_000 * MS;
            o
        })
        .collect();
    h.ops.extend(alone);
    let drop_value = |h: &mut H, pattern: Pattern, node: &str, value: &str| {
        for o in h
            .ops
            .iter_mut()
            .filter(|o| o.pattern == pattern && o.node == node && o.stream == "s-t1")
        {
            o.read.as_mut().expect("items").retain(|i| i.value != value);
        }
    };
    drop_value(&mut h, Pattern::ReadBackReplica, "n2", "t1/p/50");
    drop_value(&mut h, Pattern::ReadBack, "n3", "t1/p/60");
    let r = h.check();
    let v = r.verdict("consistency").expect("consistency");
    let on_node = v.anomaly("lost-on-node").expect("lost-on-node");
    assert_eq!(on_node.count, 1, "{on_node:#?}");
    let e = &on_node.evidence[0];
    assert_eq!(e.value.as_deref(), Some("t1/p/50"));
    assert_eq!(e.node.as_deref(), Some("n2"));
    assert_eq!(e.seq, Some(51));
    assert!(e.detail.contains("n2's own replica"), "{}", e.detail);
    assert_eq!(v.anomaly("lost").map_or(0, |a| a.count), 0);
    // Missing from every replica alone and from every read through the nodes: lost.
    for node in ["n1", "n2", "n3"] {
        drop_value(&mut h, Pattern::ReadBackReplica, node, "t1/p/70");
        drop_value(&mut h, Pattern::ReadBack, node, "t1/p/70");
    }
    let r = h.check();
    let v = r.verdict("consistency").expect("consistency");
    let lost = v.anomaly("lost").expect("lost");
    assert_eq!(lost.count, 1);
    assert_eq!(lost.evidence[0].value.as_deref(), Some("t1/p/70"));
    assert_eq!(v.anomaly("lost-on-node").map_or(0, |a| a.count), 1);
}

/// Issue 11, part 3: one definition of "recovered". The engine's recovery watch asks the
/// recovery checker itself, on the history so far: not yet recovered a second after the heal
/// (fewer than `sustain_buckets` passing buckets), recovered once the history holds them, and
/// then the full check agrees.
#[test]
fn the_recovery_watch_uses_the_checkers_rule_on_the_history_so_far() {
    use faultline_experiments::checkers::{recovered_so_far, FaultWindow};
    use faultline_experiments::history::Observation;
    let mut h = H::clean();
    // The engine records its windows only after the watch: the file holds none yet.
    let mut window = None;
    h.obs.retain(|o| match o {
        Observation::Fault {
            fault_id,
            kind,
            start_ns,
            end_ns,
            sides,
            affected,
            survivable,
            ..
        } => {
            window = Some(FaultWindow {
                fault_id: fault_id.clone(),
                kind: kind.clone(),
                start_ns: *start_ns,
                end_ns: *end_ns,
                injecting_ns: Some(*start_ns),
                reverting_ns: *end_ns,
                sides: sides.clone(),
                affected: affected.clone(),
                survivable: *survivable,
            });
            false
        }
        _ => true,
    });
    let window = window.expect("the clean history has a fault");
    let heal_ns = window.end_ns.expect("healed");
    let dir = tempfile::tempdir().unwrap();
    let config = CheckConfig::for_scenario("pod-failure");
    let judge = |until_ns: u64| {
        let mut prefix = H::clean();
        prefix.obs.clone_from(&h.obs);
        prefix.ops.retain(|o| o.complete_ns <= until_ns);
        let (history, observations) = prefix.to_jsonl();
        let history = write(dir.path(), "history.jsonl", &history);
        let observations = write(dir.path(), "observations.jsonl", &observations);
        recovered_so_far(
            &history,
            &observations,
            std::slice::from_ref(&window),
            &config,
        )
        .expect("checks")
    };
    assert!(!judge(heal_ns + 1_000 * MS), "one second after the heal");
    assert!(
        judge(heal_ns + 8_000 * MS),
        "eight passing seconds after the heal"
    );
    // And the full check, with the window recorded, agrees.
    let r = H::clean().check();
    assert!(r.recovery.faults.iter().all(|f| f.recovered), "{r:#?}");
}
