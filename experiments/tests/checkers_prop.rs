//! Property test: a history produced by a correct simulated store under random node kills is
//! always valid for consistency, split-brain and isolation; injecting one lost, duplicated or
//! cross-tenant record flips the verdict.

#[path = "checkers_support/mod.rs"]
mod support;

use faultline_experiments::checkers::{CheckConfig, Status};
use faultline_experiments::history::{Observation, OpKind, Operation, Outcome, Pattern, ReadItem};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::{op, H, MS, NODES};

/// One tick of the simulation, ms.
const TICK: u64 = 20;

#[derive(Clone, Debug)]
struct Fault {
    start_tick: u64,
    ticks: u64,
    /// Bit per node that is down.
    mask: u8,
}

/// A replicated log per tenant stream that acknowledges a write only when the node the client
/// talks to and a majority of nodes are up; writes through a down node fail, or end `info` and
/// may or may not have been applied; `info` writes are retried with the same value, and the
/// store deduplicates retries (same sequence).
fn simulate(seed: u64, tenants: usize, ticks: u64, faults: &[Fault]) -> H {
    simulate_with_quorum(seed, tenants, ticks, faults, 2)
}

/// As [`simulate`], with the number of nodes that must be up to serve.
// A simulation reads best as one loop.
#[allow(clippy::too_many_lines)]
fn simulate_with_quorum(
    seed: u64,
    tenants: usize,
    ticks: u64,
    faults: &[Fault],
    quorum: usize,
) -> H {
    let mut rng = StdRng::seed_from_u64(seed);
    let down = |tick: u64, node: usize| {
        faults.iter().any(|f| {
            (f.start_tick..f.start_tick + f.ticks).contains(&tick) && f.mask & (1 << node) != 0
        })
    };
    let mut logs: Vec<Vec<String>> = vec![Vec::new(); tenants];
    let mut counters = vec![0u64; tenants];
    let mut pending: Vec<Option<(String, u32)>> = vec![None; tenants];
    let mut ops: Vec<Operation> = Vec::new();
    for tick in 0..ticks {
        let t = (tick as usize) % tenants;
        let tenant = format!("t{t}");
        let stream = format!("s-{tenant}");
        let node = rng.gen_range(0..3usize);
        let up = (0..3).filter(|n| !down(tick, *n)).count();
        let serving = !down(tick, node) && up >= quorum;
        let at = tick * TICK;
        if rng.gen_bool(0.15) {
            let mut r = op(
                &tenant,
                NODES[node],
                OpKind::Read,
                Pattern::Chat,
                &stream,
                at,
            );
            if serving {
                r.read = Some(
                    logs[t]
                        .iter()
                        .enumerate()
                        .map(|(i, v)| ReadItem {
                            seq: i as u64 + 1,
                            value: v.clone(),
                        })
                        .collect(),
                );
            } else {
                r.outcome = Outcome::Fail;
            }
            ops.push(r);
            continue;
        }
        let (value, attempt) = pending[t].take().unwrap_or_else(|| {
            counters[t] += 1;
            (format!("{tenant}/p/{}", counters[t]), 1)
        });
        let mut w = op(
            &tenant,
            NODES[node],
            OpKind::Write,
            Pattern::Chat,
            &stream,
            at,
        );
        w.value = Some(value.clone());
        w.attempt = attempt;
        w.complete_ns = at * MS + 2 * MS;
        let existing = logs[t].iter().position(|v| *v == value);
        if serving {
            let seq = if let Some(i) = existing {
                i + 1
            } else {
                logs[t].push(value);
                logs[t].len()
            };
            w.seq = Some(seq as u64);
        } else if existing.is_none() && rng.gen_bool(0.5) {
            w.outcome = Outcome::Fail;
            w.error = Some("no responders".into());
        } else {
            w.outcome = Outcome::Info;
            w.error = Some("timeout".into());
            if existing.is_none() && rng.gen_bool(0.5) {
                logs[t].push(value.clone());
            }
            if rng.gen_bool(0.7) {
                pending[t] = Some((value, attempt + 1));
            }
        }
        ops.push(w);
    }
    let last_heal = faults
        .iter()
        .map(|f| (f.start_tick + f.ticks) * TICK)
        .max()
        .unwrap_or(0);
    let end = (ticks * TICK).max(last_heal) + 15_000;
    for (t, log) in logs.iter().enumerate() {
        for node in NODES {
            let mut r = op(
                &format!("t{t}"),
                node,
                OpKind::Read,
                Pattern::ReadBack,
                &format!("s-t{t}"),
                end,
            );
            r.read = Some(
                log.iter()
                    .enumerate()
                    .map(|(i, v)| ReadItem {
                        seq: i as u64 + 1,
                        value: v.clone(),
                    })
                    .collect(),
            );
            ops.push(r);
        }
    }
    let mut obs = vec![support::obs_header()];
    for (i, f) in faults.iter().enumerate() {
        obs.push(Observation::Fault {
            fault_id: format!("f{i}"),
            kind: "kill".into(),
            start_ns: f.start_tick * TICK * MS,
            end_ns: Some((f.start_tick + f.ticks) * TICK * MS),
            injecting_ns: None,
            reverting_ns: None,
            sides: vec![],
            affected: (0..3)
                .filter(|n| f.mask & (1 << n) != 0)
                .map(|n| NODES[n].to_string())
                .collect(),
            survivable: false,
            chosen: None,
        });
    }
    for (t, log) in logs.iter().enumerate() {
        for node in NODES {
            obs.push(Observation::StreamInfo {
                at_ns: (end + 1_000) * MS,
                observer: node.into(),
                stream: format!("s-t{t}"),
                leader: Some("n1".into()),
                replicas: NODES.iter().map(ToString::to_string).collect(),
                last_seq: log.len() as u64,
                first_seq: None,
                messages: None,
                bytes: None,
            });
        }
    }
    H {
        ops,
        obs,
        config: CheckConfig::default(),
    }
}

fn faults() -> impl Strategy<Value = Vec<Fault>> {
    proptest::collection::vec(
        (0u64..400, 1u64..100, 1u8..8).prop_map(|(start_tick, ticks, mask)| Fault {
            start_tick,
            ticks,
            mask,
        }),
        0..4,
    )
}

fn safety_valid(h: &H) -> Result<(), TestCaseError> {
    let r = h.check();
    for name in ["consistency", "split-brain", "isolation"] {
        let v = r.verdict(name).unwrap();
        prop_assert_eq!(
            v.status,
            Status::Valid,
            "{}: {} {:?}",
            name,
            v.summary,
            v.anomalies
        );
    }
    Ok(())
}

fn acked_value(h: &H, pick: usize) -> Option<(String, String)> {
    let acked: Vec<&Operation> = h
        .ops
        .iter()
        .filter(|o| o.kind == OpKind::Write && o.outcome == Outcome::Ok)
        .collect();
    (!acked.is_empty()).then(|| {
        let o = acked[pick % acked.len()];
        (o.value.clone().unwrap(), o.stream.clone())
    })
}

#[test]
fn the_simulation_exercises_the_checkers() {
    let faults = [Fault {
        start_tick: 100,
        ticks: 100,
        mask: 0b110,
    }];
    let h = simulate(7, 2, 400, &faults);
    let r = h.check();
    let c = r.verdict("consistency").unwrap();
    assert_eq!(c.status, Status::Valid, "{c:#?}");
    assert!(
        c.anomaly("recovered").is_some() || c.anomaly("unknown").is_some(),
        "{c:#?}"
    );
    assert!(h
        .ops
        .iter()
        .any(|o| o.attempt > 1 && o.outcome == Outcome::Ok));
    assert!(r.recovery.faults[0].time_to_impact_ms.is_some());
    // A store that serves without a majority is caught.
    let broken = simulate_with_quorum(7, 2, 400, &faults, 1);
    let r = broken.check();
    let v = r.verdict("split-brain").unwrap();
    assert_eq!(v.status, Status::Invalid);
    assert!(v.anomaly("ack-without-quorum").is_some());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn correct_store_is_valid(seed in any::<u64>(), tenants in 1usize..4, ticks in 50u64..500, faults in faults()) {
        let h = simulate(seed, tenants, ticks, &faults);
        safety_valid(&h)?;
    }

    #[test]
    fn one_lost_record_flips_the_verdict(seed in any::<u64>(), tenants in 1usize..4, ticks in 50u64..500, faults in faults(), pick in any::<usize>()) {
        let mut h = simulate(seed, tenants, ticks, &faults);
        safety_valid(&h)?;
        let Some((value, stream)) = acked_value(&h, pick) else { return Ok(()) };
        h.drop_from_readbacks(&stream, None, &value);
        let r = h.check();
        prop_assert_eq!(r.status, Status::Invalid);
        let lost = r.verdict("consistency").unwrap().anomaly("lost").cloned();
        prop_assert!(lost.is_some_and(|a| a.count == 1 && a.evidence[0].value.as_deref() == Some(value.as_str())));
    }

    #[test]
    fn one_duplicated_record_flips_the_verdict(seed in any::<u64>(), tenants in 1usize..4, ticks in 50u64..500, faults in faults(), pick in any::<usize>()) {
        let mut h = simulate(seed, tenants, ticks, &faults);
        let Some((value, stream)) = acked_value(&h, pick) else { return Ok(()) };
        let next = h.readbacks(&stream, Some("n1"))[0].read.as_ref().unwrap().len() as u64 + 1;
        h.add_to_readbacks(&stream, None, next, &value);
        let r = h.check();
        prop_assert_eq!(r.status, Status::Invalid);
        prop_assert!(r.verdict("consistency").unwrap().anomaly("duplicate-stored").is_some());
    }

    #[test]
    fn one_cross_tenant_record_flips_the_verdict(seed in any::<u64>(), tenants in 1usize..4, ticks in 50u64..500, faults in faults(), pick in any::<usize>()) {
        let mut h = simulate(seed, tenants, ticks, &faults);
        match acked_value(&h, pick) {
            Some((value, stream)) if tenants > 1 => {
                // Another tenant's final read-back returns this record.
                let owner = stream.trim_start_matches("s-").to_string();
                let victim = (0..tenants).map(|t| format!("t{t}")).find(|t| *t != owner).unwrap();
                let victim_stream = format!("s-{victim}");
                let next = h.readbacks(&victim_stream, Some("n2"))[0].read.as_ref().unwrap().len() as u64 + 1;
                h.add_to_readbacks(&victim_stream, Some("n2"), next, &value);
            }
            _ => {
                // The server says it served another tenant.
                let r = h.ops.iter_mut().find(|o| o.kind == OpKind::Read).unwrap();
                r.served_tenant = Some("intruder".into());
            }
        }
        let r = h.check();
        prop_assert_eq!(r.status, Status::Invalid);
        prop_assert_eq!(r.score, 0);
        let v = r.verdict("isolation").unwrap();
        prop_assert_eq!(v.status, Status::Invalid);
        prop_assert!(v.anomaly("cross-tenant-read").is_some_and(|a| a.count == 1));
    }
}
