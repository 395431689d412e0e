//! Chat over WebSocket: opening the socket (`connect` operations, history version 3) is part of
//! what the recovery checker judges. After a fault, the series `chat/connect` recovers at the
//! first working socket; sockets that never work again are `never-recovered`, even when every
//! write that got through was fine.

mod checkers_support;

use checkers_support::{op, H, MS};
use faultline_experiments::checkers::Status;
use faultline_experiments::history::{OpKind, Outcome, Pattern};

/// The clean history plus t1's chat sockets: one opened every 250 ms from 0 to 20 s, through
/// n1; those due in `[fail_from_ms, fail_until_ms)` are refused (`fail`, 3 s to give up).
fn with_sockets(fail_from_ms: u64, fail_until_ms: u64) -> H {
    let mut h = H::clean();
    for i in 0..80u64 {
        let at = i * 250;
        let mut c = op("t1", "n1", OpKind::Connect, Pattern::Chat, "s-t1", at);
        c.process = format!("t1/c{i}");
        if (fail_from_ms..fail_until_ms).contains(&at) {
            c.outcome = Outcome::Fail;
            c.error = Some("not sent to 10.203.1.1:8080: connection refused".into());
            c.complete_ns = c.invoke_ns + 3_000 * MS;
        }
        h.ops.push(c);
    }
    h
}

#[test]
fn the_first_working_socket_after_the_fault_is_the_recovery() {
    // Kill 5-7 s (H::clean); sockets refused from 5 s until 10 s, working again from 10 s.
    let r = with_sockets(5_000, 10_000).check();
    let v = r.verdict("recovery").expect("recovery verdict");
    assert_eq!(v.status, Status::Valid, "{v:#?}");
    let f = &r.recovery.faults[0];
    assert!(f.recovered);
    assert_eq!(f.time_to_impact_ms, Some(0));
    // Healed at 7 s; the first working socket's bucket is 10 s: 3 s to a working socket.
    assert_eq!(f.ttr_ms, Some(3_000));
    assert_eq!(f.worst_tenant.as_deref(), Some("t1"));
    assert_eq!(f.worst_series.as_deref(), Some("chat/connect"));
    assert_eq!(f.impacted_series, 1, "only the sockets failed");
}

#[test]
fn sockets_that_never_work_again_never_recover_though_writes_were_fine() {
    let r = with_sockets(5_000, u64::MAX).check();
    let v = r.verdict("recovery").expect("recovery verdict");
    assert_eq!(v.status, Status::Invalid, "{v:#?}");
    assert!(
        v.anomalies.iter().any(|a| a.name == "never-recovered"),
        "{v:#?}"
    );
    let f = &r.recovery.faults[0];
    assert!(!f.recovered);
    assert_eq!(f.never_recovered_series, 1);
    assert_eq!(f.ttr_ms, None);
    // The consistency checkers see no socket at all: they judge values, not connections.
    for name in ["lost", "duplicates"] {
        if let Some(v) = r.verdict(name) {
            assert_eq!(v.status, Status::Valid, "{name}: {v:#?}");
        }
    }
}

#[test]
fn the_same_history_without_sockets_recovers_at_once() {
    // The control: without the refused sockets, nothing is impacted.
    let r = with_sockets(0, 0).check();
    let f = &r.recovery.faults[0];
    assert!(f.recovered);
    assert_eq!(f.impacted_series, 0);
}
