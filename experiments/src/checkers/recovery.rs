//! Recovery: per tenant and operation class, in buckets, how long the platform took to serve
//! within the SLO again. Definitions are in docs/checkers.md ("Recovery").

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use super::config::CheckConfig;
use super::facts::Facts;
use super::intern::Sym;
use super::model::{
    Anomaly, Evidence, FaultRecovery, FaultWindow, RecoverySummary, Severity, Status,
    TenantSummary, Timeline, TimelinePoint, Verdict,
};
use super::observations::Observations;

/// The checker's name in reports.
pub const NAME: &str = "recovery";

/// Timelines longer than this many points are coarsened for the report.
const MAX_TIMELINE_POINTS: usize = 2_000;

/// Everything the recovery checker produces.
#[derive(Debug, Clone)]
pub struct RecoveryOutput {
    /// The verdict.
    pub verdict: Verdict,
    /// Figures per fault.
    pub summary: RecoverySummary,
    /// The overall timeline.
    pub timeline: Timeline,
    /// Per-tenant view (the `anomalies` field is filled in by the caller).
    pub tenants: Vec<TenantSummary>,
}

/// Nearest-rank percentile of an unsorted slice (reorders it).
fn percentile(xs: &mut [u32], p: f64) -> Option<u32> {
    if xs.is_empty() {
        return None;
    }
    let rank = ((p * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    let (_, v, _) = xs.select_nth_unstable(rank - 1);
    Some(*v)
}

/// Per-series, per-bucket pass/fail, plus the data behind it.
struct Grid {
    /// Buckets evaluated: `0..end`.
    end: usize,
    /// `pass[s][b]`.
    pass: Vec<Vec<bool>>,
    /// Global p50/p99 per bucket, µs.
    global: Vec<(Option<u32>, Option<u32>)>,
    /// Number of buckets with any data.
    total: usize,
    /// Whether a baseline existed.
    baseline: bool,
}

fn grid(facts: &Facts, obs: &Observations, cfg: &CheckConfig) -> Grid {
    let series = &facts.series;
    let total = series.iter().map(|s| s.buckets.len()).max().unwrap_or(0);
    let bucket_ns = facts.bucket_ns;
    let bucket_secs = bucket_ns as f64 / 1e9;
    let end = if facts.load_first_invoke_ns == u64::MAX {
        0
    } else {
        // The bucket holding the last send is partial; it is not judged.
        ((facts.load_last_invoke_ns / bucket_ns) as usize).min(total)
    };

    // Counting sort of the latency samples by (series, bucket), then by bucket alone.
    let mut offsets = Vec::with_capacity(series.len() + 1);
    let mut acc = 0usize;
    for s in series {
        offsets.push(acc);
        acc += s.buckets.len();
    }
    offsets.push(acc);
    let mut starts = vec![0u32; acc + 1];
    for l in &facts.latencies {
        starts[offsets[l.series as usize] + l.bucket as usize + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut fill = starts.clone();
    let mut sorted = vec![0u32; facts.latencies.len()];
    for l in &facts.latencies {
        let cell = offsets[l.series as usize] + l.bucket as usize;
        sorted[fill[cell] as usize] = l.latency_us;
        fill[cell] += 1;
    }
    drop(fill);

    let baseline_range = obs.first_fault_ns().map(|f| {
        let first = facts.load_first_invoke_ns.div_ceil(bucket_ns) as usize;
        let last = ((f / bucket_ns) as usize).min(total);
        (first, last)
    });
    let baseline = baseline_range.is_some_and(|(a, b)| b > a);
    let slo = &cfg.slo;
    let max_p99_us = slo.max_p99_ms.saturating_mul(1_000);
    let mut pass = Vec::with_capacity(series.len());
    for (si, s) in series.iter().enumerate() {
        let rate = match baseline_range {
            Some((a, b)) if b > a => {
                let sum: u64 = s.buckets[a.min(s.buckets.len())..b.min(s.buckets.len())]
                    .iter()
                    .map(|c| u64::from(c.done_ok))
                    .sum();
                Some(sum as f64 / ((b - a) as f64 * bucket_secs))
            }
            _ => None,
        };
        let min_done = match rate {
            Some(r) if r >= slo.min_baseline_ops_per_s => {
                slo.min_throughput_ratio * r * bucket_secs
            }
            _ => 0.0,
        };
        let mut p = Vec::with_capacity(end);
        for b in 0..end {
            let Some(c) = s.buckets.get(b) else {
                p.push(min_done <= 0.0);
                continue;
            };
            let n = c.ok + c.fail + c.info;
            let cell = offsets[si] + b;
            let lat = &mut sorted[starts[cell] as usize..starts[cell + 1] as usize];
            let ok_rate = n == 0 || f64::from(c.ok) >= slo.min_success_rate * f64::from(n);
            let ok_p99 = percentile(lat, 0.99).is_none_or(|v| u64::from(v) <= max_p99_us);
            let ok_tp = f64::from(c.done_ok) >= min_done;
            p.push(ok_rate && ok_p99 && ok_tp);
        }
        pass.push(p);
    }
    drop(sorted);

    // Global percentiles per bucket.
    let mut bstarts = vec![0u32; total + 1];
    for l in &facts.latencies {
        bstarts[l.bucket as usize + 1] += 1;
    }
    for i in 1..bstarts.len() {
        bstarts[i] += bstarts[i - 1];
    }
    let mut fill = bstarts.clone();
    let mut by_bucket = vec![0u32; facts.latencies.len()];
    for l in &facts.latencies {
        by_bucket[fill[l.bucket as usize] as usize] = l.latency_us;
        fill[l.bucket as usize] += 1;
    }
    let global = (0..total)
        .map(|b| {
            let xs = &mut by_bucket[bstarts[b] as usize..bstarts[b + 1] as usize];
            (percentile(xs, 0.5), percentile(xs, 0.99))
        })
        .collect();
    Grid {
        end,
        pass,
        global,
        total,
        baseline,
    }
}

/// One series' result for one fault.
struct SeriesResult {
    recovered_b: Option<usize>,
    ttr_ns: Option<u64>,
    never: bool,
    failing: usize,
    first_fail_b: Option<usize>,
}

fn series_result(
    pass: &[bool],
    end: usize,
    start_b: usize,
    ref_ns: u64,
    bucket_ns: u64,
    sustain: usize,
    deadline_ns: u64,
) -> SeriesResult {
    let ref_b = (ref_ns / bucket_ns) as usize;
    let mut run = 0usize;
    let mut recovered_b = None;
    for (b, ok) in pass.iter().enumerate().take(end).skip(ref_b) {
        if *ok {
            run += 1;
            if run == sustain {
                recovered_b = Some(b + 1 - sustain);
                break;
            }
        } else {
            run = 0;
        }
    }
    let ttr_ns = recovered_b.map(|b| (b as u64 * bucket_ns).saturating_sub(ref_ns));
    let never = ttr_ns.is_none_or(|t| t > deadline_ns);
    let stop = recovered_b.unwrap_or(end);
    let window = pass.get(start_b.min(stop)..stop).unwrap_or(&[]);
    let failing = window.iter().filter(|p| !**p).count();
    let first_fail_b = window.iter().position(|p| !*p).map(|i| i + start_b);
    SeriesResult {
        recovered_b,
        ttr_ns,
        never,
        failing,
        first_fail_b,
    }
}

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

/// What the per-fault passes accumulate across faults.
#[derive(Default)]
struct Acc {
    never: Vec<Evidence>,
    impact: Vec<Evidence>,
    never_count: u64,
    impacted_count: u64,
    /// Per tenant: worst TTR (ms) and whether some series never recovered.
    tenant_ttr: FxHashMap<Sym, (Option<u64>, bool)>,
}

/// Caveats about the inputs, and whether they make the verdict unknown.
fn input_notes(facts: &Facts, obs: &Observations, g: &Grid) -> (Vec<String>, bool) {
    let mut notes = Vec::new();
    let mut unknown = false;
    if !obs.present {
        unknown = true;
        notes.push("no observations were given, so fault windows are unknown".to_string());
    }
    if facts.load_first_invoke_ns == u64::MAX {
        notes.push("the history has no load operations to measure".to_string());
        unknown |= !obs.faults.is_empty();
    }
    if obs.present && obs.faults.is_empty() {
        notes.push("no fault windows were observed: nothing to recover from".to_string());
    }
    if !g.baseline && !obs.faults.is_empty() {
        notes.push(
            "no full bucket before the first fault: the throughput criterion was not applied"
                .to_string(),
        );
    }
    for (kind, (n, line)) in &facts.defects {
        if matches!(*kind, "complete-before-invoke" | "time-out-of-range") {
            notes.push(format!("{n} operations with {kind} (first on line {line})"));
        }
    }
    (notes, unknown)
}

/// Recovery figures of one fault whose TTR reference is `ref_ns`.
// One pass over the series that collects every figure of the fault; splitting it would pass a
// dozen accumulators around.
#[allow(clippy::too_many_lines)]
fn one_fault(
    facts: &Facts,
    g: &Grid,
    cfg: &CheckConfig,
    f: &FaultWindow,
    ref_ns: u64,
    acc: &mut Acc,
) -> FaultRecovery {
    let syms = &facts.symbols;
    let bucket_ns = facts.bucket_ns;
    let sustain = cfg.sustain_buckets as usize;
    let deadline_ms = cfg.slo.deadline_ms(&f.kind);
    let from = if f.survivable {
        "the start"
    } else {
        "the heal"
    };
    let start_b = (f.start_ns / bucket_ns) as usize;
    let mut worst: Option<(bool, u64, usize, usize)> = None; // (never, ttr, failing, series)
    let mut tti: Option<u64> = None;
    let mut impacted_series = 0u64;
    let mut impacted_tenants: Vec<Sym> = Vec::new();
    let mut never_count = 0u64;
    let mut last_stop = start_b;
    let mut results = Vec::with_capacity(facts.series.len());
    for (si, s) in facts.series.iter().enumerate() {
        let limit_ns = deadline_ms.saturating_mul(1_000_000);
        let r = series_result(
            &g.pass[si],
            g.end,
            start_b,
            ref_ns,
            bucket_ns,
            sustain,
            limit_ns,
        );
        last_stop = last_stop.max(r.recovered_b.unwrap_or(g.end));
        let class = format!("{}/{}", pattern_name(s.pattern), kind_name(s.kind));
        let tenant = syms.tenant(s.tenant);
        let t = acc.tenant_ttr.entry(s.tenant).or_insert((Some(0), false));
        if r.never {
            t.1 = true;
            never_count += 1;
            let detail = match r.ttr_ns {
                Some(ttr) => format!(
                    "{class} recovered {:.1} s after {from} of fault {}, later than the {:.1} s deadline",
                    ttr as f64 / 1e9,
                    f.fault_id,
                    deadline_ms as f64 / 1e3
                ),
                None => format!(
                    "{class} never had {sustain} passing buckets in a row after {from} of fault {}",
                    f.fault_id
                ),
            };
            acc.never.push(Evidence {
                at_ns: Some(ref_ns),
                tenant: Some(tenant.to_string()),
                detail,
                ..Evidence::default()
            });
        } else if let (Some(ttr), Some(old)) = (r.ttr_ns, t.0) {
            t.0 = Some(old.max(ms(ttr)));
        }
        if let Some(b) = r.first_fail_b {
            impacted_series += 1;
            if !impacted_tenants.contains(&s.tenant) {
                impacted_tenants.push(s.tenant);
            }
            let at = (b as u64 * bucket_ns).max(f.start_ns);
            let into = at - f.start_ns;
            tti = Some(tti.map_or(into, |x| x.min(into)));
            acc.impact.push(Evidence {
                at_ns: Some(at),
                tenant: Some(tenant.to_string()),
                detail: format!(
                    "{class} first failed the SLO {:.1} s into fault {}; {} failing buckets",
                    into as f64 / 1e9,
                    f.fault_id,
                    r.failing
                ),
                ..Evidence::default()
            });
        }
        let key = (r.never, r.ttr_ns.unwrap_or(u64::MAX), r.failing, si);
        let better = worst.is_none_or(|w| {
            (key.0, key.1, key.2) > (w.0, w.1, w.2)
                || ((key.0, key.1, key.2) == (w.0, w.1, w.2)
                    && syms.tenant(s.tenant) < syms.tenant(facts.series[w.3].tenant))
        });
        if better && (r.failing > 0 || r.never || r.ttr_ns.unwrap_or(0) > 0) {
            worst = Some(key);
        }
        results.push(r);
    }
    // Union outage: buckets where any series failed, from the fault start to the last series'
    // recovery.
    let outage = (start_b..last_stop.min(g.end))
        .filter(|&b| {
            results
                .iter()
                .enumerate()
                .any(|(si, r)| r.recovered_b.is_none_or(|rb| b < rb) && !g.pass[si][b])
        })
        .count() as u64;
    let worst_series = worst.map(|w| &facts.series[w.3]);
    acc.never_count += never_count;
    acc.impacted_count += impacted_series;
    FaultRecovery {
        fault_id: f.fault_id.clone(),
        kind: f.kind.clone(),
        reference_ns: Some(ref_ns),
        deadline_ms,
        time_to_impact_ms: tti.map(ms),
        ttr_ms: (never_count == 0)
            .then(|| results.iter().filter_map(|r| r.ttr_ns).max().map_or(0, ms)),
        recovered: never_count == 0,
        total_outage_ms: outage * ms(bucket_ns),
        worst_tenant: worst_series.map(|s| syms.tenant(s.tenant).to_string()),
        worst_series: worst_series
            .map(|s| format!("{}/{}", pattern_name(s.pattern), kind_name(s.kind))),
        impacted_series,
        impacted_tenants: impacted_tenants.len() as u64,
        never_recovered_series: never_count,
    }
}

/// Runs the recovery checker.
pub fn check(facts: &Facts, obs: &Observations, cfg: &CheckConfig) -> RecoveryOutput {
    let g = grid(facts, obs, cfg);
    let (mut notes, mut unknown) = input_notes(facts, obs, &g);
    let mut acc = Acc::default();
    let mut faults_out = Vec::new();
    for f in &obs.faults {
        let reference = if f.survivable {
            Some(f.start_ns)
        } else {
            f.end_ns
        };
        if let Some(ref_ns) = reference {
            faults_out.push(one_fault(facts, &g, cfg, f, ref_ns, &mut acc));
            continue;
        }
        unknown = true;
        notes.push(format!(
            "fault {} never healed during the run: its time to recovery cannot be measured",
            f.fault_id
        ));
        faults_out.push(FaultRecovery {
            fault_id: f.fault_id.clone(),
            kind: f.kind.clone(),
            reference_ns: None,
            deadline_ms: cfg.slo.deadline_ms(&f.kind),
            time_to_impact_ms: None,
            ttr_ms: None,
            recovered: false,
            total_outage_ms: 0,
            worst_tenant: None,
            worst_series: None,
            impacted_series: 0,
            impacted_tenants: 0,
            never_recovered_series: 0,
        });
    }
    let anomaly = |name: &str, severity, count, mut evidence: Vec<Evidence>| {
        evidence.sort();
        evidence.truncate(cfg.max_evidence);
        Anomaly {
            name: name.to_string(),
            severity,
            count,
            categories: BTreeMap::new(),
            evidence,
        }
    };
    let never = anomaly(
        "never-recovered",
        Severity::Invalid,
        acc.never_count,
        acc.never,
    );
    let impacted = anomaly("impacted", Severity::Info, acc.impacted_count, acc.impact);
    let tenants = tenant_view(facts, &g, &acc.tenant_ttr, !obs.faults.is_empty());
    let timeline = timeline(facts, &g, cfg);
    let fallback = if unknown {
        Status::Unknown
    } else {
        Status::Valid
    };
    let mut verdict = Verdict::from_anomalies(NAME, vec![never, impacted], notes, fallback);
    if verdict.status == Status::Valid {
        let worst = faults_out.iter().filter_map(|f| f.ttr_ms).max();
        verdict.summary = match worst {
            Some(t) => format!(
                "recovered from every fault; worst TTR {:.1} s",
                t as f64 / 1e3
            ),
            None => "no fault to recover from".to_string(),
        };
    }
    RecoveryOutput {
        verdict,
        summary: RecoverySummary { faults: faults_out },
        timeline,
        tenants,
    }
}

fn tenant_view(
    facts: &Facts,
    g: &Grid,
    ttr: &FxHashMap<Sym, (Option<u64>, bool)>,
    any_fault: bool,
) -> Vec<TenantSummary> {
    let mut by_tenant: BTreeMap<&str, (Sym, Vec<usize>)> = BTreeMap::new();
    for (si, s) in facts.series.iter().enumerate() {
        by_tenant
            .entry(facts.symbols.tenant(s.tenant))
            .or_insert((s.tenant, Vec::new()))
            .1
            .push(si);
    }
    let mut out: Vec<TenantSummary> = by_tenant
        .into_iter()
        .map(|(name, (sym, series))| {
            let (mut ok, mut fail, mut info) = (0u64, 0u64, 0u64);
            for &si in &series {
                for c in &facts.series[si].buckets {
                    ok += u64::from(c.ok);
                    fail += u64::from(c.fail);
                    info += u64::from(c.info);
                }
            }
            let failing: Vec<bool> = (0..g.end)
                .map(|b| series.iter().any(|&si| !g.pass[si][b]))
                .collect();
            let mut runs = Vec::new();
            let mut b = 0;
            while b < failing.len() {
                if failing[b] {
                    let start = b;
                    while b < failing.len() && failing[b] {
                        b += 1;
                    }
                    runs.push([start as u64, (b - start) as u64]);
                } else {
                    b += 1;
                }
            }
            let (worst, never) = ttr.get(&sym).copied().unwrap_or((None, false));
            TenantSummary {
                tenant: name.to_string(),
                operations: ok + fail + info,
                ok,
                fail,
                info,
                failing_buckets: failing.iter().filter(|f| **f).count() as u64,
                worst_ttr_ms: if never || !any_fault { None } else { worst },
                never_recovered: never,
                failing_runs: runs,
                anomalies: 0,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.never_recovered
            .cmp(&a.never_recovered)
            .then(b.failing_buckets.cmp(&a.failing_buckets))
            .then_with(|| a.tenant.cmp(&b.tenant))
    });
    out
}

fn timeline(facts: &Facts, g: &Grid, cfg: &CheckConfig) -> Timeline {
    let bucket_s = facts.bucket_ns as f64 / 1e9;
    let n = g.total;
    let mut points: Vec<TimelinePoint> = (0..n)
        .map(|b| {
            let (mut done, mut fail, mut info) = (0u64, 0u64, 0u64);
            for s in &facts.series {
                if let Some(c) = s.buckets.get(b) {
                    done += u64::from(c.done_ok);
                    fail += u64::from(c.fail);
                    info += u64::from(c.info);
                }
            }
            let mut failing: Vec<Sym> = Vec::new();
            if b < g.end {
                for (si, s) in facts.series.iter().enumerate() {
                    if !g.pass[si][b] && !failing.contains(&s.tenant) {
                        failing.push(s.tenant);
                    }
                }
            }
            let (p50, p99) = g.global[b];
            TimelinePoint {
                t_s: b as f64 * bucket_s,
                throughput: done as f64 / bucket_s,
                errors: fail as f64 / bucket_s,
                infos: info as f64 / bucket_s,
                p50_ms: p50.map(|v| f64::from(v) / 1e3),
                p99_ms: p99.map(|v| f64::from(v) / 1e3),
                failing_tenants: failing.len() as u64,
            }
        })
        .collect();
    let mut step_ms = cfg.bucket_ms;
    if points.len() > MAX_TIMELINE_POINTS {
        let k = points.len().div_ceil(MAX_TIMELINE_POINTS);
        step_ms *= k as u64;
        points = points
            .chunks(k)
            .map(|c| {
                let len = c.len() as f64;
                let p50s: Vec<f64> = c.iter().filter_map(|p| p.p50_ms).collect();
                TimelinePoint {
                    t_s: c[0].t_s,
                    throughput: c.iter().map(|p| p.throughput).sum::<f64>() / len,
                    errors: c.iter().map(|p| p.errors).sum::<f64>() / len,
                    infos: c.iter().map(|p| p.infos).sum::<f64>() / len,
                    p50_ms: (!p50s.is_empty())
                        .then(|| p50s.iter().sum::<f64>() / p50s.len() as f64),
                    p99_ms: c.iter().filter_map(|p| p.p99_ms).reduce(f64::max),
                    failing_tenants: c.iter().map(|p| p.failing_tenants).max().unwrap_or(0),
                }
            })
            .collect();
    }
    Timeline { step_ms, points }
}

/// `chat`, `batch`, ... as in the history.
pub fn pattern_name(p: crate::history::Pattern) -> &'static str {
    use crate::history::Pattern;
    match p {
        Pattern::Chat => "chat",
        Pattern::Batch => "batch",
        Pattern::Job => "job",
        Pattern::Idle => "idle",
        Pattern::ReadBack => "read_back",
    }
}

/// `write`, `read` or `deliver`.
pub fn kind_name(k: crate::history::OpKind) -> &'static str {
    use crate::history::OpKind;
    match k {
        OpKind::Write => "write",
        OpKind::Read => "read",
        OpKind::Deliver => "deliver",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let mut xs: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&mut xs, 0.99), Some(99));
        assert_eq!(percentile(&mut xs, 0.5), Some(50));
        assert_eq!(percentile(&mut [7], 0.99), Some(7));
        assert_eq!(percentile(&mut [], 0.99), None);
    }

    #[test]
    fn ttr_from_sustained_run() {
        // Buckets of 1 s; heal at 10 s; fails 10..13, passes from 13.
        let mut pass = vec![true; 30];
        for p in &mut pass[5..13] {
            *p = false;
        }
        pass[15] = true;
        let s = 1_000_000_000;
        let r = series_result(&pass, 30, 5, 10 * s, s, 5, 10 * s);
        assert_eq!(r.recovered_b, Some(13));
        assert_eq!(r.ttr_ns, Some(3 * s));
        assert!(!r.never);
        assert_eq!(r.failing, 8);
        assert_eq!(r.first_fail_b, Some(5));
        // A passing bucket inside the outage does not count as recovery.
        pass[11] = true;
        let r = series_result(&pass, 30, 5, 10 * s, s, 5, 10 * s);
        assert_eq!(r.recovered_b, Some(13));
        // Not enough buckets left: never recovered.
        let r = series_result(&pass, 16, 5, 10 * s, s, 5, 10 * s);
        assert!(r.never && r.recovered_b.is_none());
        // Over the deadline.
        let r = series_result(&pass, 30, 5, 10 * s, s, 5, 2 * s);
        assert!(r.never);
    }
}
