//! Consistency: was any acknowledged write lost, any value invented, duplicated or stored at
//! a conflicting sequence? Definitions are in docs/checkers.md ("Consistency").

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use super::config::CheckConfig;
use super::facts::{flag, EvidenceBuf, Facts, ValueFacts, NO_SEQ};
use super::intern::{Sym, Symbols, ValueId, NO_SYM};
use super::model::{Anomaly, Evidence, Severity, Status, Verdict};

/// The checker's name in reports.
pub const NAME: &str = "consistency";

/// The consistency verdict and invalid anomalies per tenant.
#[derive(Debug, Clone)]
pub struct ConsistencyOutput {
    /// The verdict.
    pub verdict: Verdict,
    /// Invalid anomalies attributed to each tenant (by value prefix).
    pub by_tenant: FxHashMap<Sym, u64>,
}

struct Acc {
    buf: EvidenceBuf,
    severity: Severity,
    categories: BTreeMap<String, u64>,
}

impl Acc {
    fn new(cfg: &CheckConfig, severity: Severity) -> Self {
        Self {
            buf: EvidenceBuf::new(cfg.max_evidence),
            severity,
            categories: BTreeMap::new(),
        }
    }

    fn into_anomaly(self, name: &str) -> Anomaly {
        Anomaly {
            name: name.to_string(),
            severity: self.severity,
            count: self.buf.count,
            categories: self.categories,
            evidence: self.buf.into_sorted(),
        }
    }
}

fn from_buf(name: &str, severity: Severity, buf: &EvidenceBuf) -> Anomaly {
    Anomaly {
        name: name.to_string(),
        severity,
        count: buf.count,
        categories: BTreeMap::new(),
        evidence: buf.clone().into_sorted(),
    }
}

/// Evidence about one value: its tenant, stream and sequence, at `at`, through `node`.
fn value_evidence(
    syms: &Symbols,
    v: ValueId,
    f: &ValueFacts,
    at: u64,
    node: Sym,
    detail: String,
) -> Evidence {
    Evidence {
        at_ns: (at != u64::MAX).then_some(at),
        value: Some(syms.value_name(v)),
        tenant: (f.tenant != NO_SYM).then(|| syms.tenant(f.tenant).to_string()),
        node: (node != NO_SYM).then(|| syms.node(node).to_string()),
        stream: [f.write_stream, f.stored_stream]
            .into_iter()
            .find(|s| *s != NO_SYM)
            .map(|s| syms.stream(s).to_string()),
        seq: [f.ack_seq, f.stored_seq].into_iter().find(|s| *s != NO_SEQ),
        detail,
        ..Evidence::default()
    }
}

/// Whether the stream held the value when the run began and the run did not write it (a slice
/// of a load that keeps running): it counts as acknowledged before the run.
fn held_before(f: &ValueFacts) -> bool {
    f.flags & (flag::INITIAL | flag::ATTEMPTED) == flag::INITIAL
}

/// Where an acknowledged value came from, for evidence.
fn origin(syms: &Symbols, f: &ValueFacts) -> String {
    if held_before(f) {
        format!(
            "held when the run began (read through {})",
            syms.node(f.read_node)
        )
    } else {
        format!("acknowledged through {}", syms.node(f.write_node))
    }
}

/// Lost writes, each classified as prefix, middle or postfix of its producer's acknowledged
/// values by counter.
fn lost_anomaly(
    facts: &Facts,
    cfg: &CheckConfig,
    lost_ids: Vec<ValueId>,
    survived: &[bool],
    by_tenant: &mut FxHashMap<Sym, u64>,
) -> Anomaly {
    let syms = &facts.symbols;
    let mut lost = Acc::new(cfg, Severity::Invalid);
    if lost_ids.is_empty() {
        return lost.into_anomaly("lost");
    }
    let mut bounds: FxHashMap<u32, (u64, u64)> = FxHashMap::default();
    for p in 0..syms.producer_count() as u32 {
        let mut lo = None;
        let mut hi = None;
        for (c, v) in syms.producer_values(p) {
            if survived.get(v.index()).copied().unwrap_or(false) {
                lo.get_or_insert(c);
                hi = Some(c);
            }
        }
        if let (Some(lo), Some(hi)) = (lo, hi) {
            bounds.insert(p, (lo, hi));
        }
    }
    for v in lost_ids {
        let f = &facts.values[v.index()];
        let category = match syms.value_counter(v) {
            None => "unordered",
            Some((p, c)) => match bounds.get(&p) {
                None => "prefix",
                Some((lo, _)) if c < *lo => "prefix",
                Some((_, hi)) if c > *hi => "postfix",
                Some(_) => "middle",
            },
        };
        *by_tenant.entry(f.tenant).or_default() += 1;
        lost.buf.count += 1;
        *lost.categories.entry(category.to_string()).or_default() += 1;
        let (at, node) = if held_before(f) {
            (f.read_ns, f.read_node)
        } else {
            (f.ack_ns, f.write_node)
        };
        if lost.buf.wants(at) {
            let seen = if f.flags & flag::READ != 0 && !held_before(f) {
                format!(
                    " (it was read through {} during the run)",
                    syms.node(f.read_node)
                )
            } else {
                String::new()
            };
            let d = format!(
                "{} but absent from every final read-back; {category} loss{seen}",
                origin(syms, f)
            );
            lost.buf
                .push_sample(value_evidence(syms, v, f, at, node, d));
        }
    }
    lost.into_anomaly("lost")
}

/// Caveats, and whether they leave the verdict undecided.
fn notes(facts: &Facts, unchecked: u64, acked: u64) -> (Vec<String>, bool) {
    let mut notes = Vec::new();
    let mut undecided = false;
    if unchecked > 0 {
        undecided = true;
        notes.push(format!(
            "{unchecked} acknowledged values are in streams that no final read-back covered, so their loss cannot be ruled out"
        ));
    }
    for kind in [
        "write-without-value",
        "deliver-without-value",
        "read-without-items",
        "too-many-read-back-nodes",
    ] {
        if let Some((n, line)) = facts.defects.get(kind) {
            undecided = true;
            notes.push(format!("{n} operations with {kind} (first on line {line})"));
        }
    }
    if let Some((n, line)) = facts.defects.get("value-tenant-mismatch") {
        notes.push(format!(
            "{n} writes carry a value of another tenant (first on line {line}); values are attributed by their prefix"
        ));
    }
    let failed: u64 = facts
        .readback_failed
        .values()
        .map(|m| u64::from(m.count_ones()))
        .sum();
    if failed > 0 {
        notes.push(format!(
            "{failed} final read-backs (tenant, stream, node) failed; those views were not checked"
        ));
    }
    if facts.initial_failed > 0 {
        notes.push(format!(
            "{} initial-state reads failed; values only those views held when the run began were not checked",
            facts.initial_failed
        ));
    }
    if acked == 0 {
        notes.push("no acknowledged writes".to_string());
    }

    (notes, undecided)
}

/// Runs the consistency checker.
// One pass over every value deciding each anomaly in turn, as docs/checkers.md lists them.
#[allow(clippy::too_many_lines)]
pub fn check(facts: &Facts, cfg: &CheckConfig) -> ConsistencyOutput {
    let syms = &facts.symbols;
    let mut lost_on_node = Acc::new(cfg, Severity::Invalid);
    let mut unexpected = Acc::new(cfg, Severity::Invalid);
    let mut aborted = Acc::new(cfg, Severity::Invalid);
    let mut recovered = Acc::new(cfg, Severity::Info);
    let mut unknown = Acc::new(cfg, Severity::Info);
    let mut dup_delivered = Acc::new(cfg, Severity::Info);
    let mut by_tenant: FxHashMap<Sym, u64> = FxHashMap::default();
    let mut unchecked = 0u64;
    let mut acked = 0u64;
    // Values the streams held when the run began (among `acked`).
    let mut held_count = 0u64;
    // Lost values, classified per producer afterwards.
    let mut lost_ids: Vec<ValueId> = Vec::new();
    let mut survived = vec![false; facts.values.len()];
    // Consecutive values mostly share a (tenant, stream): look coverage up once per run.
    let mut coverage_cache = ((NO_SYM, NO_SYM), 0u64);

    for (i, f) in facts.values.iter().enumerate() {
        let v = ValueId(i as u32);
        let fl = f.flags;
        let seen = fl & (flag::READ | flag::DELIVERED) != 0;
        let tenant = f.tenant;
        let held = held_before(f);
        if held {
            held_count += 1;
        } else if fl & flag::ATTEMPTED == 0 {
            if seen {
                *by_tenant.entry(tenant).or_default() += 1;
                unexpected.buf.count += 1;
                if unexpected.buf.wants(f.read_ns) {
                    let d = "read but never written".to_string();
                    unexpected.buf.push_sample(value_evidence(
                        syms,
                        v,
                        f,
                        f.read_ns,
                        f.read_node,
                        d,
                    ));
                }
            }
            continue;
        }
        if !held && f.deliveries > 1 {
            dup_delivered.buf.count += 1;
            if dup_delivered.buf.wants(f.read_ns) {
                let d = format!("delivered {} times", f.deliveries);
                dup_delivered.buf.push_sample(value_evidence(
                    syms,
                    v,
                    f,
                    f.read_ns,
                    f.read_node,
                    d,
                ));
            }
        }
        if !held && fl & flag::OK == 0 {
            if fl & flag::INFO != 0 {
                let (acc, d) = if seen {
                    (&mut recovered, "outcome info, but read: it happened")
                } else {
                    (&mut unknown, "outcome info and never read")
                };
                acc.buf.count += 1;
                if acc.buf.wants(f.read_ns) {
                    acc.buf.push_sample(value_evidence(
                        syms,
                        v,
                        f,
                        f.read_ns,
                        f.read_node,
                        d.to_string(),
                    ));
                }
            } else if seen {
                *by_tenant.entry(tenant).or_default() += 1;
                aborted.buf.count += 1;
                if aborted.buf.wants(f.read_ns) {
                    let d = "every write attempt failed, yet it was read".to_string();
                    aborted
                        .buf
                        .push_sample(value_evidence(syms, v, f, f.read_ns, f.read_node, d));
                }
            }
            continue;
        }
        acked += 1;
        let present = fl & (flag::READBACK | flag::DELIVERED) != 0;
        let stream = if held {
            f.stored_stream
        } else {
            f.write_stream
        };
        let key = (tenant, stream);
        if key != coverage_cache.0 {
            coverage_cache = (key, facts.coverage.get(&key).copied().unwrap_or(0));
        }
        let coverage = coverage_cache.1;
        if coverage == 0 && fl & (flag::JOB | flag::DELIVERED) == 0 {
            unchecked += 1;
            continue;
        }
        if !present {
            lost_ids.push(v);
            continue;
        }
        survived[i] = true;
        if fl & flag::READBACK != 0 {
            // A read through a node may have been answered by another replica; where a node's
            // own replica was read alone, only those views say what one node lost.
            let replica_views = coverage & facts.replica_bits;
            let per_node = if replica_views == 0 {
                coverage
            } else {
                replica_views
            };
            let missing = per_node & !f.readback_nodes;
            for bit in 0..64 {
                if missing & (1 << bit) == 0 {
                    continue;
                }
                let node = facts.readback_nodes[bit];
                *by_tenant.entry(tenant).or_default() += 1;
                lost_on_node.buf.count += 1;
                *lost_on_node
                    .categories
                    .entry(syms.node(node).to_string())
                    .or_default() += 1;
                if lost_on_node.buf.wants(f.ack_ns) {
                    let d = if replica_views == 0 {
                        format!(
                            "{}, missing from the final read-back through {}",
                            origin(syms, f),
                            syms.node(node)
                        )
                    } else {
                        format!(
                            "{}, missing from {}'s own replica (read alone, the other replicas held down)",
                            origin(syms, f),
                            syms.node(node)
                        )
                    };
                    let mut e = value_evidence(syms, v, f, f.ack_ns, node, d);
                    e.other_node =
                        (f.write_node != NO_SYM).then(|| syms.node(f.write_node).to_string());
                    lost_on_node.buf.push_sample(e);
                }
            }
        }
    }

    let lost = lost_anomaly(facts, cfg, lost_ids, &survived, &mut by_tenant);
    let (notes, undecided) = notes(facts, unchecked, acked);
    let anomalies = vec![
        lost,
        lost_on_node.into_anomaly("lost-on-node"),
        unexpected.into_anomaly("unexpected"),
        aborted.into_anomaly("aborted-read"),
        from_buf(
            "duplicate-stored",
            Severity::Invalid,
            &facts.duplicate_stored,
        ),
        from_buf(
            "sequence-conflict",
            Severity::Invalid,
            &facts.sequence_conflicts,
        ),
        recovered.into_anomaly("recovered"),
        unknown.into_anomaly("unknown"),
        dup_delivered.into_anomaly("duplicate-delivered"),
    ];
    let fallback = if undecided {
        Status::Unknown
    } else {
        Status::Valid
    };
    let mut verdict = Verdict::from_anomalies(NAME, anomalies, notes, fallback);
    if verdict.status == Status::Valid {
        let held = if held_count > 0 {
            format!(" ({held_count} of them held when the run began)")
        } else {
            String::new()
        };
        verdict.summary = format!(
            "{acked} acknowledged writes{held}, none lost; {}",
            verdict.summary
        );
    }
    ConsistencyOutput { verdict, by_tenant }
}
