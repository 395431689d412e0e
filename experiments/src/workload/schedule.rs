//! Tenants and the open-loop schedule: which tenant does what, and when, fixed in advance by the
//! seed.
//!
//! The schedule is generated lazily, in time order, by merging one arrival process per tenant
//! and pattern. Each process draws from its own generator (seeded from the run seed, the tenant
//! and the pattern), so the schedule depends only on the configuration, never on timing, and
//! memory stays flat however long the run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::config::{PatternParams, Tier, TierConfig, WorkloadConfig};
use super::rng::{hash_str, mix, Rng};

/// Prefix of the streams the workload owns: `FL_<tenant>`.
pub const STREAM_PREFIX: &str = "FL_";

/// One tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantSpec {
    /// 0-based index.
    pub index: u32,
    /// Tenant id, e.g. `t017`.
    pub id: String,
    /// Its tier.
    pub tier: Tier,
    /// Whether it is an idle tenant (long silences, then a burst).
    pub idle: bool,
    /// Mean scheduled operations per second (0 for idle tenants).
    pub rate: f64,
    /// Whether it submits background jobs (and so runs job consumers).
    pub jobs: bool,
    /// Its stream, `FL_<id>`.
    pub stream: String,
    /// The zone its clients stand in, when the load's clients are per zone or in one zone.
    pub client_zone: Option<String>,
}

impl TenantSpec {
    /// The tenant's stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }
}

/// The stream of a tenant.
pub fn stream_name(tenant: &str) -> String {
    format!("{STREAM_PREFIX}{tenant}")
}

/// The subject of one tenant's records of one pattern: `tenant.<id>.<pattern>`.
pub fn subject(tenant: &str, pattern: &str) -> String {
    format!("tenant.{tenant}.{pattern}")
}

/// The tenant that a stream belongs to, if it is one of ours.
pub fn tenant_of_stream(stream: &str) -> Option<&str> {
    stream.strip_prefix(STREAM_PREFIX)
}

/// The tenant of a subject `tenant.<id>.…`.
pub fn tenant_of_subject(subject: &str) -> Option<&str> {
    let mut parts = subject.split('.');
    (parts.next() == Some("tenant"))
        .then(|| parts.next())
        .flatten()
}

/// Splits `total` into parts proportional to `shares` (largest remainder; ties go to the
/// later, smaller tier). When there are enough, every tier with a share gets at least one,
/// taken from the biggest part.
fn apportion(total: u32, shares: &[f64]) -> Vec<u32> {
    let sum: f64 = shares.iter().sum();
    let quotas: Vec<f64> = shares.iter().map(|s| f64::from(total) * s / sum).collect();
    let mut parts: Vec<u32> = quotas.iter().map(|q| q.floor() as u32).collect();
    let mut left = total - parts.iter().sum::<u32>();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|a, b| {
        let ra = quotas[*a] - quotas[*a].floor();
        let rb = quotas[*b] - quotas[*b].floor();
        rb.total_cmp(&ra).then(b.cmp(a))
    });
    for i in order {
        if left == 0 {
            break;
        }
        parts[i] += 1;
        left -= 1;
    }
    let wanted = shares.iter().filter(|s| **s > 0.0).count() as u32;
    if total >= wanted {
        for i in 0..parts.len() {
            if shares[i] > 0.0 && parts[i] == 0 {
                let biggest = (0..parts.len()).max_by_key(|j| parts[*j]).unwrap_or(0);
                parts[biggest] -= 1;
                parts[i] += 1;
            }
        }
    }
    parts
}

/// The tenants of a run: small ones first, then medium, then large. Which tenants of a tier
/// are idle is chosen by the seed.
pub fn tenants(config: &WorkloadConfig) -> Vec<TenantSpec> {
    let shares: Vec<f64> = config.tiers.iter().map(|t| t.share).collect();
    let counts = apportion(config.tenants, &shares);
    let width = config.tenants.to_string().len().max(3);
    let mut out = Vec::with_capacity(config.tenants as usize);
    let mut index = 0u32;
    for tier in Tier::ALL {
        let tc = config.tier(tier);
        let count = counts[tier.index()];
        let first = index;
        let idle_count = (f64::from(count) * tc.idle_fraction).round() as u32;
        let mut ranked: Vec<u32> = (first..first + count).collect();
        ranked.sort_by_key(|i| mix(&[config.seed, u64::from(*i), 0x1D1E]));
        let idle: Vec<u32> = ranked[..idle_count as usize].to_vec();
        for i in first..first + count {
            let is_idle = idle.contains(&i);
            let has_active_mix = tc.mix.chat + tc.mix.batch + tc.mix.jobs > 0.0;
            let id = format!("t{:0width$}", i + 1);
            out.push(TenantSpec {
                index: i,
                stream: stream_name(&id),
                id,
                tier,
                idle: is_idle || !has_active_mix,
                rate: 0.0,
                jobs: !is_idle && tc.mix.jobs > 0.0,
                client_zone: None,
            });
        }
        index += count;
    }
    let total_weight: f64 = out
        .iter()
        .filter(|t| !t.idle)
        .map(|t| config.tier(t.tier).weight)
        .sum();
    if total_weight > 0.0 {
        for t in &mut out {
            if !t.idle {
                t.rate = config.rate * config.tier(t.tier).weight / total_weight;
            }
        }
    }
    out
}

/// What one unit of work does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UnitKind {
    /// A chat session: one write per message, each followed by a reply (a read).
    Chat {
        /// Session number within the tenant, from 1.
        session: u64,
        /// Each message's intended time, ns after the unit's start (the first is 0).
        messages: Vec<u64>,
    },
    /// A batch of documents, pipelined.
    Batch {
        /// Batch number within the tenant, from 1.
        batch: u64,
        /// Number of documents.
        docs: u32,
    },
    /// One background job submission.
    Job {
        /// Job number within the tenant, from 1.
        job: u64,
    },
    /// An idle tenant's burst, pipelined like a batch.
    Burst {
        /// Burst number within the tenant, from 1.
        burst: u64,
        /// Number of writes.
        writes: u32,
    },
}

/// One unit of work of one tenant, starting at its intended time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unit {
    /// Intended start, ns after the run start.
    pub at_ns: u64,
    /// Tenant index.
    pub tenant: u32,
    /// What it does.
    pub kind: UnitKind,
}

impl Unit {
    /// The process (and value producer) of this unit: `t017/c42` for chat session 42, `b` for
    /// batches, `i` for bursts, and `t017/jobs` for the job submitter.
    pub fn process(&self, tenant: &str) -> String {
        match &self.kind {
            UnitKind::Chat { session, .. } => format!("{tenant}/c{session}"),
            UnitKind::Batch { batch, .. } => format!("{tenant}/b{batch}"),
            UnitKind::Job { .. } => format!("{tenant}/jobs"),
            UnitKind::Burst { burst, .. } => format!("{tenant}/i{burst}"),
        }
    }

    /// Number of operations the unit schedules (writes and reads).
    pub fn ops(&self) -> u64 {
        match &self.kind {
            UnitKind::Chat { messages, .. } => 2 * messages.len() as u64,
            UnitKind::Batch { docs, .. } => u64::from(*docs),
            UnitKind::Job { .. } => 1,
            UnitKind::Burst { writes, .. } => u64::from(*writes),
        }
    }
}

/// The payload size of a value, drawn from the tier's range by a hash of the value (so it is
/// the same on every retry and every run with the same seed).
pub fn payload_size(tier: &TierConfig, value: &str) -> usize {
    let span = (tier.payload_max - tier.payload_min) as u64 + 1;
    tier.payload_min + (hash_str(value) % span) as usize
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Process {
    Chat = 0,
    Batch = 1,
    Job = 2,
    Burst = 3,
}

struct Arrivals {
    rng: Rng,
    /// Mean gap between arrivals, ns (chat, batch, jobs), or the mean silence (bursts).
    mean_gap_ns: f64,
    next_at: u64,
    counter: u64,
}

/// The lazily generated schedule of a run: [`Unit`]s in intended-time order (ties by tenant,
/// then pattern).
pub struct Schedule {
    duration_ns: u64,
    params: PatternParams,
    heap: BinaryHeap<Reverse<(u64, u32, Process)>>,
    arrivals: Vec<[Option<Arrivals>; 4]>,
}

fn ns(d: std::time::Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

impl Schedule {
    /// The schedule of `config` for `tenants` (from [`tenants`]).
    pub fn new(config: &WorkloadConfig, tenants: &[TenantSpec]) -> Self {
        let p = &config.patterns;
        let mean_chat_ops = f64::from(p.chat_messages_min + p.chat_messages_max); // 2 ops a message
        let mean_batch = f64::from(p.batch_min + p.batch_max) / 2.0;
        let mut heap = BinaryHeap::new();
        let mut arrivals = Vec::with_capacity(tenants.len());
        for t in tenants {
            let tc = config.tier(t.tier);
            let mix_sum = tc.mix.chat + tc.mix.batch + tc.mix.jobs;
            let stream = |process: Process, mean_gap_ns: f64| {
                let mut rng = Rng::for_stream(&[config.seed, u64::from(t.index), process as u64]);
                let first = rng.exp(mean_gap_ns);
                Arrivals {
                    rng,
                    mean_gap_ns,
                    next_at: first as u64,
                    counter: 0,
                }
            };
            let gap = |ops_per_s: f64| {
                if ops_per_s > 0.0 {
                    1e9 / ops_per_s
                } else {
                    0.0
                }
            };
            let mut slots: [Option<Arrivals>; 4] = [None, None, None, None];
            if t.idle {
                slots[Process::Burst as usize] =
                    Some(stream(Process::Burst, ns(p.idle_silence) as f64));
            } else if mix_sum > 0.0 && t.rate > 0.0 {
                let share = |w: f64| t.rate * w / mix_sum;
                let rates = [
                    (Process::Chat, share(tc.mix.chat) / mean_chat_ops),
                    (Process::Batch, share(tc.mix.batch) / mean_batch),
                    (Process::Job, share(tc.mix.jobs)),
                ];
                for (process, units_per_s) in rates {
                    if units_per_s > 0.0 {
                        slots[process as usize] = Some(stream(process, gap(units_per_s)));
                    }
                }
            }
            for (i, slot) in slots.iter().enumerate() {
                if let Some(a) = slot {
                    if a.next_at < ns(config.duration) {
                        let process =
                            [Process::Chat, Process::Batch, Process::Job, Process::Burst][i];
                        heap.push(Reverse((a.next_at, t.index, process)));
                    }
                }
            }
            arrivals.push(slots);
        }
        Self {
            duration_ns: ns(config.duration),
            params: config.patterns.clone(),
            heap,
            arrivals,
        }
    }
}

impl Iterator for Schedule {
    type Item = Unit;

    fn next(&mut self) -> Option<Unit> {
        let Reverse((at_ns, tenant, process)) = self.heap.pop()?;
        let p = &self.params;
        let end = self.duration_ns;
        let a = self.arrivals[tenant as usize][process as usize]
            .as_mut()
            .expect("only scheduled processes are in the heap");
        a.counter += 1;
        let left = end - at_ns;
        let (kind, busy_ns) = match process {
            Process::Chat => {
                let n = a.rng.range(
                    u64::from(p.chat_messages_min),
                    u64::from(p.chat_messages_max),
                );
                let mut offsets = Vec::with_capacity(n as usize);
                let mut offset = 0u64;
                for i in 0..n {
                    if i > 0 {
                        offset += a.rng.range(ns(p.think_min), ns(p.think_max));
                    }
                    if offset < left {
                        offsets.push(offset);
                    }
                }
                (
                    UnitKind::Chat {
                        session: a.counter,
                        messages: offsets,
                    },
                    0,
                )
            }
            Process::Batch => {
                let n = a.rng.range(u64::from(p.batch_min), u64::from(p.batch_max));
                let fit = if ns(p.batch_gap) == 0 {
                    n
                } else {
                    left.div_ceil(ns(p.batch_gap))
                };
                (
                    UnitKind::Batch {
                        batch: a.counter,
                        docs: n.min(fit) as u32,
                    },
                    0,
                )
            }
            Process::Job => (UnitKind::Job { job: a.counter }, 0),
            Process::Burst => {
                let n = a.rng.range(u64::from(p.burst_min), u64::from(p.burst_max));
                let fit = if ns(p.burst_gap) == 0 {
                    n
                } else {
                    left.div_ceil(ns(p.burst_gap))
                };
                let writes = n.min(fit);
                (
                    UnitKind::Burst {
                        burst: a.counter,
                        writes: writes as u32,
                    },
                    writes * ns(p.burst_gap),
                )
            }
        };
        // Bursts follow the previous burst's end after a silence; the rest are Poisson.
        let gap = a.rng.exp(a.mean_gap_ns).max(1.0) as u64;
        a.next_at = at_ns.saturating_add(busy_ns).saturating_add(gap);
        if a.next_at < end {
            self.heap.push(Reverse((a.next_at, tenant, process)));
        }
        Some(Unit {
            at_ns,
            tenant,
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(tenants: u32, seed: u64) -> WorkloadConfig {
        WorkloadConfig {
            tenants,
            seed,
            rate: 200.0,
            duration: Duration::from_secs(120),
            ..WorkloadConfig::default()
        }
    }

    #[test]
    fn apportion_table() {
        let shares = [0.70, 0.25, 0.05];
        for (total, expected) in [
            (100, vec![70, 25, 5]),
            (10, vec![7, 2, 1]),
            (1, vec![1, 0, 0]),
            (3, vec![1, 1, 1]),
            (2, vec![1, 1, 0]),
            (20, vec![14, 5, 1]),
            (1000, vec![700, 250, 50]),
        ] {
            let got = apportion(total, &shares);
            assert_eq!(got, expected, "{total}");
            assert_eq!(got.iter().sum::<u32>(), total);
        }
    }

    #[test]
    fn default_tenants_are_70_25_5_with_tier_rates() {
        let c = config(100, 1);
        let ts = tenants(&c);
        assert_eq!(ts.len(), 100);
        let count = |tier| ts.iter().filter(|t| t.tier == tier).count();
        assert_eq!(
            (count(Tier::Small), count(Tier::Medium), count(Tier::Large)),
            (70, 25, 5)
        );
        assert_eq!(ts[0].id, "t001");
        assert_eq!(ts[99].id, "t100");
        assert_eq!(ts[99].tier, Tier::Large);
        assert_eq!(
            ts.iter()
                .filter(|t| t.tier == Tier::Small && t.idle)
                .count(),
            21
        );
        let total: f64 = ts.iter().map(|t| t.rate).sum();
        assert!((total - 200.0).abs() < 1e-6, "{total}");
        let small = ts
            .iter()
            .find(|t| t.tier == Tier::Small && !t.idle)
            .expect("small")
            .rate;
        let large = ts
            .iter()
            .find(|t| t.tier == Tier::Large)
            .expect("large")
            .rate;
        assert!((large / small - 16.0).abs() < 1e-9);
        assert_eq!(ts[5].stream(), "FL_t006");
        let wide = tenants(&config(1500, 1));
        assert_eq!(wide[0].id, "t0001");
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
        let c = config(30, 7);
        let ts = tenants(&c);
        let a: Vec<Unit> = Schedule::new(&c, &ts).collect();
        let b: Vec<Unit> = Schedule::new(&c, &ts).collect();
        assert_eq!(a, b);
        let c2 = config(30, 8);
        let other: Vec<Unit> = Schedule::new(&c2, &tenants(&c2)).collect();
        assert_ne!(a, other);
    }

    #[test]
    fn units_are_in_time_order_within_the_run_and_the_rate_is_met() {
        let c = config(100, 3);
        let ts = tenants(&c);
        let units: Vec<Unit> = Schedule::new(&c, &ts).collect();
        assert!(units.windows(2).all(|w| w[0].at_ns <= w[1].at_ns));
        let end = ns(c.duration);
        let mut active_ops = 0u64;
        for u in &units {
            assert!(u.at_ns < end);
            if let UnitKind::Chat { messages, .. } = &u.kind {
                assert!(messages.iter().all(|m| u.at_ns + m < end));
                assert!(messages.len() <= 10);
            }
            if !ts[u.tenant as usize].idle {
                active_ops += u.ops();
            }
        }
        // 200 ops/s for 120 s, give or take Poisson noise and sessions cut off at the end.
        let rate = active_ops as f64 / 120.0;
        assert!((150.0..250.0).contains(&rate), "{rate}");
        for kind in ["Chat", "Batch", "Job", "Burst"] {
            assert!(
                units
                    .iter()
                    .any(|u| format!("{:?}", u.kind).starts_with(kind)),
                "{kind}"
            );
        }
    }

    #[test]
    fn every_value_is_unique() {
        let c = config(20, 5);
        let ts = tenants(&c);
        let mut seen = std::collections::HashSet::new();
        for u in Schedule::new(&c, &ts) {
            let process = u.process(&ts[u.tenant as usize].id);
            let n = match &u.kind {
                UnitKind::Chat { messages, .. } => messages.len() as u64,
                UnitKind::Batch { docs, .. } => u64::from(*docs),
                UnitKind::Burst { writes, .. } => u64::from(*writes),
                UnitKind::Job { job } => {
                    assert!(seen.insert(format!("{process}/{job}")));
                    continue;
                }
            };
            for k in 1..=n {
                assert!(seen.insert(format!("{process}/{k}")));
            }
        }
        assert!(seen.len() > 100);
    }

    #[test]
    fn names_parse_back() {
        assert_eq!(tenant_of_stream("FL_t001"), Some("t001"));
        assert_eq!(tenant_of_stream("OTHER"), None);
        assert_eq!(tenant_of_subject(&subject("t042", "chat")), Some("t042"));
        assert_eq!(tenant_of_subject("x.t042.chat"), None);
        let tier = TierConfig::default_for(Tier::Small);
        let size = payload_size(&tier, "t001/c1/1");
        assert!((128..=512).contains(&size));
        assert_eq!(size, payload_size(&tier, "t001/c1/1"));
    }
}
