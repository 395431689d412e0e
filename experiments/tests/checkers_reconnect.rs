//! Side-based split-brain conditions and uncertain nodes: an operation during which the client
//! reconnected may have been served through either server, so `both-sides-acked` and
//! `ack-without-quorum` never rest on it, while the same acknowledgements with a certain node
//! are still caught. A node cut off from the others is not down from its own side.

mod checkers_support;

use checkers_support::{header, H, MS};
use faultline_experiments::checkers::{check_operations, Anomaly, CheckReport, Status, Verdict};
use faultline_experiments::history::{OpKind, Operation};

/// The reference history with zone-like partition {n1, n2} | {n3} from 10 s to 12 s: the
/// clean history's writes through n3 in that window are acknowledged on the minority side.
fn partitioned() -> H {
    let mut h = H::clean();
    h.push_fault(
        "p1",
        "partition",
        10_000,
        12_000,
        &[&["n1", "n2"], &["n3"]],
        &["n3"],
    );
    h
}

/// Writes acknowledged inside `[from_ms, to_ms)` through `node`.
fn writes_in<'a>(h: &'a mut H, node: &str, from_ms: u64, to_ms: u64) -> Vec<&'a mut Operation> {
    h.ops
        .iter_mut()
        .filter(|o| {
            o.kind == OpKind::Write
                && o.node == node
                && o.invoke_ns >= from_ms * MS
                && o.invoke_ns < to_ms * MS
        })
        .collect()
}

/// Marks the writes through `node` in the window as spanning a reconnect: sent through
/// `sent_node`, answered through `node`.
fn reconnected(h: &mut H, node: &str, sent_node: &str, from_ms: u64, to_ms: u64) -> usize {
    let list = writes_in(h, node, from_ms, to_ms);
    let n = list.len();
    for o in list {
        o.reconnected = true;
        o.sent_node = Some(sent_node.into());
    }
    n
}

fn split(r: &CheckReport) -> &Verdict {
    r.verdicts
        .iter()
        .find(|v| v.name == "split-brain")
        .expect("split-brain verdict")
}

fn anomaly<'a>(v: &'a Verdict, name: &str) -> Option<&'a Anomaly> {
    v.anomalies.iter().find(|a| a.name == name && a.count > 0)
}

fn count(v: &Verdict, name: &str) -> u64 {
    anomaly(v, name).map_or(0, |a| a.count)
}

/// (name, history, both-sides-acked, ack-without-quorum, status, a note that must appear)
type Row = (&'static str, H, u64, u64, Status, Option<&'static str>);

#[test]
fn uncertain_nodes_never_produce_side_based_anomalies_and_real_ones_are_still_caught() {
    let minority_writes = writes_in(&mut partitioned(), "n3", 10_000, 12_000).len() as u64;
    assert!(minority_writes >= 10, "{minority_writes}");
    let rows: Vec<Row> = vec![
        (
            "certain acks on the minority side: real split-brain",
            partitioned(),
            2,
            minority_writes,
            Status::Invalid,
            None,
        ),
        (
            "the same acks sent through n3, answered through n1 after a reconnect",
            {
                let mut h = partitioned();
                for o in writes_in(&mut h, "n3", 10_000, 12_000) {
                    o.node = "n1".into();
                    o.reconnected = true;
                    o.sent_node = Some("n3".into());
                }
                h
            },
            0,
            0,
            Status::Valid,
            Some("spanned a client reconnect"),
        ),
        (
            "acks answered through n3 after a reconnect from n1",
            {
                let mut h = partitioned();
                reconnected(&mut h, "n3", "n1", 10_000, 12_000);
                h
            },
            0,
            0,
            Status::Valid,
            Some("spanned a client reconnect"),
        ),
        (
            "a reconnect back to the same server is still uncertain",
            {
                let mut h = partitioned();
                reconnected(&mut h, "n3", "n3", 10_000, 12_000);
                h
            },
            0,
            0,
            Status::Valid,
            Some("spanned a client reconnect"),
        ),
        (
            "one uncertain ack among certain ones: the certain ones are still caught",
            {
                let mut h = partitioned();
                if let Some(o) = writes_in(&mut h, "n3", 10_000, 12_000).into_iter().next() {
                    o.reconnected = true;
                    o.sent_node = Some("n1".into());
                }
                h
            },
            2,
            minority_writes - 1,
            Status::Invalid,
            Some("1 acknowledgements inside partition windows spanned a client reconnect"),
        ),
    ];
    for (name, h, both, quorum, status, note) in rows {
        let r = h.check();
        let v = split(&r);
        assert_eq!(count(v, "both-sides-acked"), both, "{name}: {v:#?}");
        assert_eq!(count(v, "ack-without-quorum"), quorum, "{name}: {v:#?}");
        assert_eq!(v.status, status, "{name}: {v:#?}");
        if let Some(note) = note {
            assert!(
                v.notes.iter().any(|n| n.contains(note)),
                "{name}: no note containing {note:?}: {:?}",
                v.notes
            );
        }
    }
}

#[test]
fn a_cut_off_node_is_not_down_from_its_own_side() {
    let r = partitioned().check();
    let quorum = anomaly(split(&r), "ack-without-quorum").expect("ack-without-quorum");
    let e = &quorum.evidence[0];
    assert_eq!(e.node.as_deref(), Some("n3"));
    assert!(
        e.detail
            .contains("2 of 3 peers (n1, n2) were down or cut off from n3"),
        "{}",
        e.detail
    );
    // The evidence quotes what the servers said about the stream's leader around the ack.
    assert!(e.detail.contains("n1 (said by n1, n2, n3)"), "{}", e.detail);
    let both = anomaly(split(&r), "both-sides-acked").expect("both-sides-acked");
    assert!(
        both.evidence
            .iter()
            .all(|e| e.detail.contains("as the servers reported it")),
        "{:#?}",
        both.evidence
    );
    // An ack through the majority side during the partition is fine: from n1's side only n3
    // is cut off, so 2 of 3 peers remain.
    let mut h = partitioned();
    for o in writes_in(&mut h, "n3", 10_000, 12_000) {
        o.node = "n2".into();
    }
    let r = h.check();
    assert_eq!(split(&r).status, Status::Valid, "{:#?}", split(&r));
}

#[test]
fn peers_down_for_everyone_still_count_for_an_uncertain_node() {
    // n2 and n3 stopped from 14 s to 15 s: an ack then is impossible through any server, so
    // an uncertain node does not excuse it.
    let mut h = H::clean();
    h.push_fault("s1", "stop", 14_000, 15_000, &[], &["n2", "n3"]);
    let mut uncertain = 0;
    for node in ["n1", "n2", "n3"] {
        uncertain += reconnected(&mut h, node, "n1", 14_000, 14_990);
    }
    assert!(uncertain > 0);
    let r = h.check();
    let v = split(&r);
    let quorum = anomaly(v, "ack-without-quorum").expect("ack-without-quorum");
    assert!(quorum.count >= uncertain as u64, "{v:#?}");
    assert!(
        quorum.evidence[0]
            .detail
            .contains("2 of 3 peers (n2, n3) were down (stopped, paused or killed)"),
        "{}",
        quorum.evidence[0].detail
    );
}

#[test]
fn format_1_nats_histories_do_not_place_operations_on_sides() {
    let h = partitioned();
    let mut v1 = header();
    v1.version = 1;
    let r = check_operations(&v1, &h.ops, Some(h.obs.clone()), &h.config).expect("check");
    let v = split(&r);
    assert_eq!(count(v, "both-sides-acked"), 0, "{v:#?}");
    assert_eq!(count(v, "ack-without-quorum"), 0, "{v:#?}");
    assert_eq!(v.status, Status::Unknown, "{v:#?}");
    assert!(
        v.notes.iter().any(|n| n.contains("history format 1")),
        "{:?}",
        v.notes
    );
    // The HTTP adapter always named the replica that answered (X-Served-By): still judged.
    v1.adapter = "http".into();
    let r = check_operations(&v1, &h.ops, Some(h.obs.clone()), &h.config).expect("check");
    assert_eq!(split(&r).status, Status::Invalid);
    assert_eq!(count(split(&r), "both-sides-acked"), 2);
}
