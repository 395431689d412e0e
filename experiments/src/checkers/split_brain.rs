//! Split-brain: did two sides ever accept conflicting writes? Six conditions, defined in
//! docs/checkers.md ("Split-brain").

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use super::config::CheckConfig;
use super::facts::{EvidenceBuf, Facts, Fingerprint, MULTI_TENANT};
use super::intern::Sym;
use super::model::{Anomaly, Evidence, Severity, Status, Verdict};
use super::observations::Observations;

/// The checker's name in reports.
pub const NAME: &str = "split-brain";

fn anomaly(name: &str, buf: EvidenceBuf) -> Anomaly {
    Anomaly {
        name: name.to_string(),
        severity: Severity::Invalid,
        count: buf.count,
        categories: BTreeMap::new(),
        evidence: buf.into_sorted(),
    }
}

/// Runs the split-brain checker.
pub fn check(facts: &Facts, obs: &Observations, cfg: &CheckConfig) -> Verdict {
    let mut notes = Vec::new();
    let anomalies = vec![
        both_sides(facts, obs, cfg),
        anomaly("duplicate-ack-seq", facts.duplicate_ack_seq.clone()),
        non_prefix_reads(facts, cfg),
        divergence(facts, obs, cfg, &mut notes),
        divergence_persisted(obs, cfg, &mut notes),
        anomaly("ack-without-quorum", facts.ack_without_quorum.clone()),
        two_leaders(facts, cfg, &mut notes),
    ];
    let mut fallback = Status::Valid;
    if facts.uncertain_node_acks > 0 {
        if facts.nodes_at_send {
            fallback = Status::Unknown;
            notes.push(format!(
                "history format 1 from the NATS adapter names the server each operation was sent through, which a reconnect can make wrong: {} acknowledgements inside partition windows were not placed on a side, so both-sides-acked and ack-without-quorum were not evaluated for partitions; record the run again with this version",
                facts.uncertain_node_acks
            ));
        } else {
            notes.push(format!(
                "{} acknowledgements inside partition windows spanned a client reconnect, so the server that answered each is uncertain: both-sides-acked and ack-without-quorum left them out (the latter still counted peers that were stopped, paused or killed)",
                facts.uncertain_node_acks
            ));
        }
    }
    if facts.partly_in_effect_acks > 0 {
        notes.push(format!(
            "{} acknowledgements overlapped a fault's injection or heal, while it was only partly in effect: both-sides-acked and ack-without-quorum left them out for that fault",
            facts.partly_in_effect_acks
        ));
    }
    if facts.unplaced_partition_acks > 0 {
        notes.push(format!(
            "{} acknowledgements inside partition windows went through nodes on no side of the partition; they were not placed",
            facts.unplaced_partition_acks
        ));
    }
    if obs.present {
        if facts.stream_peers.is_empty() && !obs.faults.is_empty() {
            notes.push(
                "no stream info observed: acks without quorum were not evaluated".to_string(),
            );
        }
    } else {
        fallback = Status::Unknown;
        notes.insert(
            0,
            "no observations were given: partition, quorum, divergence and leader conditions were not evaluated"
                .to_string(),
        );
    }
    Verdict::from_anomalies(NAME, anomalies, notes, fallback)
}

/// Acks accepted on both sides of an active partition for the same stream.
fn both_sides(facts: &Facts, obs: &Observations, cfg: &CheckConfig) -> Anomaly {
    let syms = &facts.symbols;
    let mut buf = EvidenceBuf::new(cfg.max_evidence * 2);
    for ((fi, stream), acks) in &facts.partition_acks {
        if acks.sides.count_ones() < 2 {
            continue;
        }
        buf.count += 1;
        let fault = &obs.faults[*fi];
        let mut first = acks.first.clone();
        first.sort_by_key(|e| (e.invoke_ns, e.side));
        for ack in first.into_iter().take(2) {
            let v = ack.value;
            buf.push_sample(Evidence {
                at_ns: Some(ack.invoke_ns),
                value: Some(syms.value_name(v)),
                tenant: Some(syms.tenant(syms.value_tenant(v)).to_string()),
                node: Some(syms.node(ack.node).to_string()),
                stream: Some(syms.stream(*stream).to_string()),
                line: (ack.line > 0).then_some(ack.line),
                detail: format!(
                    "acknowledged on side {} ({}) of partition {}; {}",
                    ack.side,
                    fault
                        .sides
                        .get(ack.side as usize)
                        .map(|s| s.join(","))
                        .unwrap_or_default(),
                    fault.fault_id,
                    facts.leader_quote(*stream, ack.invoke_ns, ack.complete_ns)
                ),
                ..Evidence::default()
            });
        }
    }
    let mut a = anomaly("both-sides-acked", buf);
    a.evidence.truncate(cfg.max_evidence * 2);
    a
}

/// Two reads of one stream (by one tenant) where neither is a prefix of the other, found by
/// checking every read against the union of all reads: a read must contain every stored
/// sequence of its tenant between its first and last sequence.
fn non_prefix_reads(facts: &Facts, cfg: &CheckConfig) -> Anomaly {
    let syms = &facts.symbols;
    let mut buf = EvidenceBuf::new(cfg.max_evidence);
    let mut groups: BTreeMap<Sym, FxHashMap<Sym, Vec<usize>>> = BTreeMap::new();
    for (i, r) in facts.reads.iter().enumerate() {
        groups
            .entry(r.stream)
            .or_default()
            .entry(r.tenant)
            .or_default()
            .push(i);
    }
    for (stream, by_tenant) in groups {
        let Some(sf) = facts.streams.get(stream as usize) else {
            continue;
        };
        let mut seqs: FxHashMap<Sym, Vec<u64>> =
            by_tenant.keys().map(|t| (*t, Vec::new())).collect();
        if let Some(list) = seqs.get_mut(&sf.tenant) {
            // One tenant's stream (the usual case): no per-value lookups.
            list.extend(sf.stored.iter_sorted().map(|(seq, _)| seq));
        } else if sf.tenant == MULTI_TENANT {
            for (seq, v) in sf.stored.iter_sorted() {
                if let Some(list) = seqs.get_mut(&syms.value_tenant(super::intern::ValueId(v))) {
                    list.push(seq);
                }
            }
        }
        for (tenant, reads) in by_tenant {
            let list = &seqs[&tenant];
            // Dense lists (every sequence from the first to the last, the usual case for a
            // tenant's own stream) are counted and summed arithmetically.
            let base = list.first().copied().unwrap_or(0);
            let dense = list
                .last()
                .is_some_and(|l| l - base + 1 == list.len() as u64);
            let position = |seq: u64, inclusive: bool| -> usize {
                if dense {
                    let p = (seq + u64::from(inclusive)).saturating_sub(base);
                    p.min(list.len() as u64) as usize
                } else if inclusive {
                    list.partition_point(|s| *s <= seq)
                } else {
                    list.partition_point(|s| *s < seq)
                }
            };
            let mut prefix: Vec<u64> = Vec::new();
            for i in reads {
                let r = &facts.reads[i];
                let lo = position(r.first, false);
                let hi = position(r.last, true);
                let stored = (hi - lo) as u64;
                if stored == r.count {
                    continue;
                }
                buf.count += 1;
                if !buf.wants(r.invoke_ns) {
                    continue;
                }
                if prefix.is_empty() {
                    prefix.reserve(list.len() + 1);
                    prefix.push(0);
                    let mut acc = 0u64;
                    for s in list {
                        acc = acc.wrapping_add(*s);
                        prefix.push(acc);
                    }
                }
                let (missing_seq, missing_value) = if stored == r.count + 1 {
                    let seq = prefix[hi].wrapping_sub(prefix[lo]).wrapping_sub(r.seq_sum);
                    (
                        Some(seq),
                        sf.stored
                            .get(seq)
                            .map(|v| syms.value_name(super::intern::ValueId(v))),
                    )
                } else {
                    (None, None)
                };
                buf.push_sample(Evidence {
                    at_ns: Some(r.invoke_ns),
                    value: missing_value,
                    tenant: Some(syms.tenant(tenant).to_string()),
                    node: Some(syms.node(r.node).to_string()),
                    stream: Some(syms.stream(stream).to_string()),
                    seq: missing_seq,
                    line: (r.line > 0).then_some(r.line),
                    detail: format!(
                        "{} through {} returned {} values between seq {} and {}, but other reads saw {} there{}",
                        if r.readback { "final read-back" } else { "read" },
                        syms.node(r.node),
                        r.count,
                        r.first,
                        r.last,
                        stored,
                        if missing_seq.is_some() { "; the value shown is the one it skipped" } else { "" }
                    ),
                    ..Evidence::default()
                });
            }
        }
    }
    anomaly("non-prefix-reads", buf)
}

/// Per-node read-backs (or stream info) that still differ after the convergence deadline.
fn divergence(
    facts: &Facts,
    obs: &Observations,
    cfg: &CheckConfig,
    notes: &mut Vec<String>,
) -> Anomaly {
    let syms = &facts.symbols;
    let mut buf = EvidenceBuf::new(cfg.max_evidence);
    // After a recorded settle, the read-back follows it: its reads are the settled state.
    let settled = obs.settled.as_ref().map(|s| s.at_ns);
    let Some(deadline) = settled.or_else(|| obs.converge_at_ns(cfg.convergence_deadline_ms)) else {
        notes.push(
            "a fault never healed during the run: divergence after convergence was not evaluated"
                .to_string(),
        );
        return anomaly("divergence", buf);
    };
    let mut views: BTreeMap<(&str, &str), Vec<(&str, Fingerprint)>> = BTreeMap::new();
    for ((tenant, stream, node), fp) in &facts.fingerprints {
        views
            .entry((syms.tenant(*tenant), syms.stream(*stream)))
            .or_default()
            .push((syms.node(*node), *fp));
    }
    let mut early = 0u64;
    for ((tenant, stream), mut list) in views {
        list.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
        let differs = list
            .windows(2)
            .any(|w| (w[0].1.count, w[0].1.hash) != (w[1].1.count, w[1].1.hash));
        if !differs {
            continue;
        }
        let late: Vec<&(&str, Fingerprint)> =
            list.iter().filter(|(_, fp)| fp.at_ns >= deadline).collect();
        let Some(pair) = late.iter().enumerate().find_map(|(i, a)| {
            late[i + 1..]
                .iter()
                .find(|b| (a.1.count, a.1.hash) != (b.1.count, b.1.hash))
                .map(|b| (*a, *b))
        }) else {
            early += 1;
            continue;
        };
        let ((na, fa), (nb, fb)) = (pair.0, pair.1);
        buf.push(Evidence {
            at_ns: Some(fa.at_ns.max(fb.at_ns)),
            tenant: Some(tenant.to_string()),
            node: Some((*na).to_string()),
            other_node: Some((*nb).to_string()),
            stream: Some(stream.to_string()),
            detail: divergence_detail(na, fa, nb, fb),
            ..Evidence::default()
        });
    }
    if early > 0 {
        notes.push(format!(
            "{early} streams' read-backs differed between nodes but were taken before the convergence deadline"
        ));
    }
    anomaly("divergence", buf)
}

/// What differs between two final read-backs of one stream, in words.
fn divergence_detail(na: &str, fa: &Fingerprint, nb: &str, fb: &Fingerprint) -> String {
    if (fa.count, fa.last_seq) == (fb.count, fb.last_seq) {
        format!(
            "final read-backs through {na} and {nb} both hold {} values up to seq {}, but not the same ones: at one or more sequences they return different values",
            fa.count, fa.last_seq
        )
    } else if fa.count == fb.count {
        format!(
            "final read-backs through {na} and {nb} both hold {} values, but end at different sequences: {na} at seq {}, {nb} at seq {}",
            fa.count, fa.last_seq, fb.last_seq
        )
    } else {
        format!(
            "the final read-back through {na} holds {} values (up to seq {}), through {nb} {} (up to seq {}): {} more through {na}",
            fa.count,
            fa.last_seq,
            fb.count,
            fb.last_seq,
            fa.count.abs_diff(fb.count)
        )
    }
}

/// One replica's stream state as its server reported it: (last seq, (first seq, messages,
/// bytes) when recorded).
type ReplicaState = (u64, Option<(u64, u64, u64)>);

/// One server's row for a stream: (server, sample time, state, leader it reported).
type Row<'a> = (&'a str, u64, ReplicaState, Option<&'a str>);

/// Per-server stream states that still disagree once the system was given its time to settle:
/// the states recorded when the settle before the read-back ended (when it was recorded), else
/// each server's latest state after the convergence deadline.
fn divergence_persisted(obs: &Observations, cfg: &CheckConfig, notes: &mut Vec<String>) -> Anomaly {
    let mut buf = EvidenceBuf::new(cfg.max_evidence);
    let from = match &obs.settled {
        Some(settled) => {
            if !settled.unanswered.is_empty() {
                notes.push(format!(
                    "{} did not report their stream state when the settle ended: their replicas were not compared",
                    settled.unanswered.join(", ")
                ));
            }
            Some(settled.at_ns)
        }
        None => obs.converge_at_ns(cfg.convergence_deadline_ms),
    };
    let Some(from) = from else {
        return anomaly("divergence-persisted", buf);
    };
    let mut latest: BTreeMap<(&str, &str), (u64, ReplicaState, Option<&str>)> = BTreeMap::new();
    for s in &obs.stream_infos {
        if s.at_ns < from {
            continue;
        }
        let sample = (s.at_ns, (s.last_seq, s.state), s.leader.as_deref());
        let e = latest
            .entry((s.stream.as_str(), s.observer.as_str()))
            .or_insert(sample);
        // With a settle recorded, its own samples are the evidence; later ones (taken during
        // the read-back) do not replace them.
        if obs.settled.is_none() && s.at_ns >= e.0 {
            *e = sample;
        }
    }
    let mut by_stream: BTreeMap<&str, Vec<Row<'_>>> = BTreeMap::new();
    for ((stream, observer), (at, state, leader)) in latest {
        by_stream
            .entry(stream)
            .or_default()
            .push((observer, at, state, leader));
    }
    let describe = |(last, state): ReplicaState| match state {
        Some((first, messages, bytes)) => {
            format!("{messages} messages, {bytes} bytes, seq {first}..{last}")
        }
        None => format!("last seq {last}"),
    };
    for (stream, list) in by_stream {
        // Compare what both samples recorded: a sample without the full state (older
        // observations) compares on its last sequence only.
        let differ = |a: &ReplicaState, b: &ReplicaState| match (a.1, b.1) {
            (Some(x), Some(y)) => a.0 != b.0 || x != y,
            _ => a.0 != b.0,
        };
        let Some(a) = list.iter().max_by_key(|x| (x.2 .0, std::cmp::Reverse(x.0))) else {
            continue;
        };
        let Some(b) = list.iter().find(|x| differ(&x.2, &a.2)) else {
            continue;
        };
        let replicas: Vec<String> = list
            .iter()
            .map(|(node, _, state, leader)| {
                format!(
                    "{node}: {}{}",
                    describe(*state),
                    leader.map_or(String::new(), |l| format!(", leader {l}"))
                )
            })
            .collect();
        let when = if obs.settled.is_some() {
            "when the settle before the read-back ended"
        } else {
            "after the convergence deadline"
        };
        buf.push(Evidence {
            at_ns: Some(a.1.max(b.1)),
            node: Some(a.0.to_string()),
            other_node: Some(b.0.to_string()),
            stream: Some(stream.to_string()),
            seq: Some(a.2 .0),
            detail: format!("replicas still differ {when}: {}", replicas.join("; ")),
            ..Evidence::default()
        });
    }
    if buf.count == 0 && obs.settled.as_ref().is_some_and(|s| !s.converged) {
        notes.push(
            "the servers' stream states did not all agree when the settle ended (a leader, or a server that held no replica or did not answer), though the stored data compared equal".to_string(),
        );
    }
    anomaly("divergence-persisted", buf)
}

/// Two nodes claiming leadership of one stream at overlapping times.
fn two_leaders(f: &Facts, cfg: &CheckConfig, notes: &mut Vec<String>) -> Anomaly {
    let mut buf = EvidenceBuf::new(cfg.max_evidence);
    let tolerance = cfg.leader_overlap_tolerance_ms.saturating_mul(1_000_000);
    let s = &f.symbols;
    // Runs of consecutive self-claims: (start, end) per (stream, node).
    let mut runs: BTreeMap<&str, Vec<(u64, u64, &str)>> = BTreeMap::new();
    // One stream at a time, so that only one stream's samples are regrouped at once.
    for (&stream, samples) in &f.leaders {
        let stream = s.stream(stream);
        // Observer -> samples in time order.
        let mut by_observer: BTreeMap<&str, Vec<(u64, bool)>> = BTreeMap::new();
        for &(at, observer, leader) in samples {
            by_observer
                .entry(s.node(observer))
                .or_default()
                .push((at, leader == observer));
        }
        for (node, mut samples) in by_observer {
            samples.sort_unstable();
            let mut open: Option<(u64, u64)> = None;
            for (at, claims) in samples {
                match (claims, &mut open) {
                    (true, Some(r)) => r.1 = at,
                    (true, None) => open = Some((at, at)),
                    (false, Some(_)) => {
                        let (a, b) = open.take().unwrap_or_default();
                        runs.entry(stream).or_default().push((a, b, node));
                    }
                    (false, None) => {}
                }
            }
            if let Some((a, b)) = open {
                runs.entry(stream).or_default().push((a, b, node));
            }
        }
    }
    if f.leaders.values().any(|l| !l.is_empty()) && runs.is_empty() {
        notes.push(
            "no node ever reported itself as a leader: two leaders were not evaluated".to_string(),
        );
    }
    for (stream, mut list) in runs {
        list.sort_unstable();
        for i in 0..list.len() {
            for j in i + 1..list.len() {
                let (a, b) = (list[i], list[j]);
                if b.0 > a.1 {
                    break;
                }
                if a.2 == b.2 {
                    continue;
                }
                let overlap = a.1.min(b.1).saturating_sub(b.0);
                if overlap <= tolerance {
                    continue;
                }
                buf.push(Evidence {
                    at_ns: Some(b.0),
                    node: Some(a.2.to_string()),
                    other_node: Some(b.2.to_string()),
                    stream: Some(stream.to_string()),
                    detail: format!(
                        "{} and {} both reported themselves leader of {stream} for {:.1} s",
                        a.2,
                        b.2,
                        overlap as f64 / 1e9
                    ),
                    ..Evidence::default()
                });
            }
        }
    }
    anomaly("two-leaders", buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(count: u64, last_seq: u64, hash: u64) -> Fingerprint {
        Fingerprint {
            at_ns: 0,
            count,
            hash,
            last_seq,
        }
    }

    #[test]
    fn a_divergence_says_what_differs() {
        let same_shape = divergence_detail("a1", &fp(60, 60, 1), "b1", &fp(60, 60, 2));
        assert!(same_shape.contains("not the same ones"), "{same_shape}");
        assert!(!same_shape.contains("through b1 60"), "{same_shape}");
        let shifted = divergence_detail("a1", &fp(60, 61, 1), "b1", &fp(60, 60, 2));
        assert!(shifted.contains("a1 at seq 61, b1 at seq 60"), "{shifted}");
        let fewer = divergence_detail("a1", &fp(60, 60, 1), "b1", &fp(58, 60, 2));
        assert!(fewer.ends_with("2 more through a1"), "{fewer}");
    }
}
