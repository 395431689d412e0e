//! Recovery: per tenant and operation class, in buckets, how long the platform took to serve
//! within the SLO again. Definitions are in docs/checkers.md ("Recovery").
//!
//! The time axis is walked as [`Span`]s: each bucket that holds data, and each gap of empty
//! buckets between them, so work and memory follow the data and not the timestamps. A series
//! that already failed its SLO before the first fault is judged against its own baseline, not
//! blamed on the fault.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rustc_hash::FxHashMap;

use super::config::CheckConfig;
use super::facts::Facts;
use super::intern::Sym;
use super::model::{
    Anomaly, Evidence, FaultRecovery, FaultWindow, OutageUntil, RecoverySummary, Severity, Status,
    TenantSummary, Timeline, TimelinePoint, Verdict,
};
use super::observations::Observations;

/// The checker's name in reports.
pub const NAME: &str = "recovery";

/// The anomaly of series judged against their own baseline.
pub const FAILING_BEFORE: &str = "failing-before-fault";

/// Timelines longer than this many points are coarsened for the report.
const MAX_TIMELINE_POINTS: u64 = 2_000;

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

/// A stretch of the judged time axis: one bucket that holds data, or a gap of empty buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    /// First bucket.
    start: u64,
    /// Number of buckets.
    len: u64,
    /// The cell holding the data; `None` for a gap, where no series has any operation.
    cell: Option<u32>,
}

impl Span {
    fn end(&self) -> u64 {
        self.start + self.len
    }

    /// How many of this span's buckets lie in `[lo, hi)`.
    fn overlap(&self, lo: u64, hi: u64) -> u64 {
        self.end().min(hi).saturating_sub(self.start.max(lo))
    }
}

/// Spans covering `[0, end)` from the cells in time order.
fn spans(order: &[(u64, u32)], end: u64) -> Vec<Span> {
    let mut out = Vec::with_capacity(2 * order.len() + 1);
    let mut at = 0;
    for &(bucket, cell) in order {
        if bucket >= end {
            break;
        }
        if bucket > at {
            out.push(Span {
                start: at,
                len: bucket - at,
                cell: None,
            });
        }
        out.push(Span {
            start: bucket,
            len: 1,
            cell: Some(cell),
        });
        at = bucket + 1;
    }
    if at < end {
        out.push(Span {
            start: at,
            len: end - at,
            cell: None,
        });
    }
    out
}

/// How one series did before the first fault.
#[derive(Clone, Copy, Debug, Default)]
struct Baseline {
    /// Baseline buckets that passed.
    passing: u64,
    /// Baseline buckets judged.
    buckets: u64,
    /// The baseline is at least `sustain_buckets` long and never had that many passing buckets
    /// in a row: the series did not meet the recovery criterion before any fault.
    failing: bool,
}

/// Passing buckets of `pass` (one flag per span) within `[lo, hi)`.
fn passing_in(pass: &[bool], spans: &[Span], lo: u64, hi: u64) -> u64 {
    spans
        .iter()
        .zip(pass)
        .take_while(|(sp, _)| sp.start < hi)
        .filter(|(_, ok)| **ok)
        .map(|(sp, _)| sp.overlap(lo, hi))
        .sum()
}

fn baseline_of(pass: &[bool], spans: &[Span], lo: u64, hi: u64, sustain: u64) -> Baseline {
    let (mut passing, mut run, mut held) = (0, 0, false);
    for (sp, ok) in spans.iter().zip(pass) {
        if sp.start >= hi {
            break;
        }
        let n = sp.overlap(lo, hi);
        if n == 0 {
            continue;
        }
        if *ok {
            passing += n;
            run += n;
            held |= run >= sustain;
        } else {
            run = 0;
        }
    }
    let buckets = hi.saturating_sub(lo);
    Baseline {
        passing,
        buckets,
        failing: buckets >= sustain && !held,
    }
}

/// Per-series, per-span pass/fail, plus the data behind it.
struct Grid {
    /// The judged axis, `[0, end)`.
    spans: Vec<Span>,
    /// One past the last judged bucket.
    end: u64,
    /// `pass[series][span]`.
    pass: Vec<Vec<bool>>,
    /// Every `(bucket, cell)` that holds data, in time order (also those past `end`).
    order: Vec<(u64, u32)>,
    /// Global p50/p99 per cell, µs.
    global: Vec<(Option<u32>, Option<u32>)>,
    /// One past the last bucket that holds data.
    total: u64,
    /// The baseline's buckets `[first, last)`, when it has at least one.
    baseline: Option<(u64, u64)>,
    /// How each series did in the baseline.
    before: Vec<Baseline>,
}

fn grid(facts: &Facts, obs: &Observations, cfg: &CheckConfig) -> Grid {
    let series = &facts.series;
    let bucket_ns = facts.bucket_ns;
    let bucket_secs = bucket_ns as f64 / 1e9;
    let order = facts.cells.in_time_order();
    let total = order.last().map_or(0, |(b, _)| b + 1);
    let end = if facts.load_first_invoke_ns == u64::MAX {
        0
    } else {
        // The bucket holding the last send is partial; it is not judged.
        (facts.load_last_invoke_ns / bucket_ns).min(total)
    };
    let spans = spans(&order, end);
    let ByCell {
        offsets,
        starts,
        mut sorted,
    } = by_series_and_cell(facts);

    let baseline = obs
        .first_fault_ns()
        .map(|f| {
            (
                facts.load_first_invoke_ns.div_ceil(bucket_ns),
                (f / bucket_ns).min(total),
            )
        })
        .filter(|(a, b)| b > a);
    let slo = &cfg.slo;
    let sustain = u64::from(cfg.sustain_buckets);
    let max_p99_us = slo.max_p99_ms.saturating_mul(1_000);
    let mut pass = Vec::with_capacity(series.len());
    let mut before = Vec::with_capacity(series.len());
    for (si, s) in series.iter().enumerate() {
        let rate = baseline.map(|(a, b)| {
            let from = order.partition_point(|(bucket, _)| *bucket < a);
            let sum: u64 = order[from..]
                .iter()
                .take_while(|(bucket, _)| *bucket < b)
                .filter_map(|(_, cell)| s.buckets.get(*cell as usize))
                .map(|c| u64::from(c.done_ok))
                .sum();
            sum as f64 / ((b - a) as f64 * bucket_secs)
        });
        let min_done = match rate {
            Some(r) if r >= slo.min_baseline_ops_per_s => {
                slo.min_throughput_ratio * r * bucket_secs
            }
            _ => 0.0,
        };
        // A bucket without operations passes unless the throughput criterion applies.
        let empty_passes = min_done <= 0.0;
        let p: Vec<bool> = spans
            .iter()
            .map(|sp| {
                let Some(cell) = sp.cell else {
                    return empty_passes;
                };
                let Some(c) = s.buckets.get(cell as usize) else {
                    return empty_passes;
                };
                let n = c.ok + c.fail + c.info;
                let at = offsets[si] + cell as usize;
                let lat = &mut sorted[starts[at] as usize..starts[at + 1] as usize];
                let ok_rate = n == 0 || f64::from(c.ok) >= slo.min_success_rate * f64::from(n);
                let ok_p99 = percentile(lat, 0.99).is_none_or(|v| u64::from(v) <= max_p99_us);
                let ok_tp = f64::from(c.done_ok) >= min_done;
                ok_rate && ok_p99 && ok_tp
            })
            .collect();
        before.push(baseline.map_or_else(Baseline::default, |(a, b)| {
            baseline_of(&p, &spans, a, b.min(end), sustain)
        }));
        pass.push(p);
    }
    drop(sorted);
    Grid {
        spans,
        end,
        pass,
        order,
        global: global_percentiles(facts),
        total,
        baseline,
        before,
    }
}

/// The latency samples sorted by (series, cell): those of series `s` in cell `c` are
/// `sorted[starts[offsets[s] + c]..starts[offsets[s] + c + 1]]`.
struct ByCell {
    offsets: Vec<usize>,
    starts: Vec<u32>,
    sorted: Vec<u32>,
}

/// A counting sort of the latency samples by (series, cell).
fn by_series_and_cell(facts: &Facts) -> ByCell {
    let mut offsets = Vec::with_capacity(facts.series.len() + 1);
    let mut acc = 0usize;
    for s in &facts.series {
        offsets.push(acc);
        acc += s.buckets.len();
    }
    offsets.push(acc);
    let mut starts = vec![0u32; acc + 1];
    for l in &facts.latencies {
        starts[offsets[l.series as usize] + l.cell as usize + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut fill = starts.clone();
    let mut sorted = vec![0u32; facts.latencies.len()];
    for l in &facts.latencies {
        let at = offsets[l.series as usize] + l.cell as usize;
        sorted[fill[at] as usize] = l.latency_us;
        fill[at] += 1;
    }
    ByCell {
        offsets,
        starts,
        sorted,
    }
}

/// p50 and p99 over every series, per cell, µs.
fn global_percentiles(facts: &Facts) -> Vec<(Option<u32>, Option<u32>)> {
    let cells = facts.cells.len();
    let mut starts = vec![0u32; cells + 1];
    for l in &facts.latencies {
        starts[l.cell as usize + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut fill = starts.clone();
    let mut by_cell = vec![0u32; facts.latencies.len()];
    for l in &facts.latencies {
        by_cell[fill[l.cell as usize] as usize] = l.latency_us;
        fill[l.cell as usize] += 1;
    }
    (0..cells)
        .map(|c| {
            let xs = &mut by_cell[starts[c] as usize..starts[c + 1] as usize];
            (percentile(xs, 0.5), percentile(xs, 0.99))
        })
        .collect()
}

/// One series' result for one fault.
struct SeriesResult {
    recovered_b: Option<u64>,
    ttr_ns: Option<u64>,
    never: bool,
    failing: u64,
    first_fail_b: Option<u64>,
}

/// Failing buckets of `pass` within `[lo, hi)`, and the first of them.
fn failing_in(pass: &[bool], spans: &[Span], lo: u64, hi: u64) -> (u64, Option<u64>) {
    let (mut n, mut first) = (0, None);
    for (sp, ok) in spans.iter().zip(pass) {
        if sp.start >= hi {
            break;
        }
        let k = sp.overlap(lo, hi);
        if !*ok && k > 0 {
            n += k;
            first.get_or_insert(sp.start.max(lo));
        }
    }
    (n, first)
}

fn series_result(
    pass: &[bool],
    spans: &[Span],
    start_b: u64,
    ref_ns: u64,
    bucket_ns: u64,
    sustain: u64,
    deadline_ns: u64,
) -> SeriesResult {
    let ref_b = ref_ns / bucket_ns;
    let end = spans.last().map_or(0, Span::end);
    let (mut run, mut run_start, mut recovered_b) = (0u64, 0u64, None);
    for (sp, ok) in spans.iter().zip(pass) {
        if sp.end() <= ref_b {
            continue;
        }
        let from = sp.start.max(ref_b);
        if *ok {
            if run == 0 {
                run_start = from;
            }
            run += sp.end() - from;
            if run >= sustain {
                recovered_b = Some(run_start);
                break;
            }
        } else {
            run = 0;
        }
    }
    let ttr_ns = recovered_b.map(|b| (b * bucket_ns).saturating_sub(ref_ns));
    let never = ttr_ns.is_none_or(|t| t > deadline_ns);
    let (failing, first_fail_b) = failing_in(pass, spans, start_b, recovered_b.unwrap_or(end));
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
    before: Vec<Evidence>,
    never_count: u64,
    impacted_count: u64,
    /// Series-and-fault pairs judged against their own baseline, by outcome.
    before_categories: BTreeMap<String, u64>,
    /// Per tenant: worst TTR (ms) and whether some series never recovered.
    tenant_ttr: FxHashMap<Sym, (Option<u64>, bool)>,
}

/// How a series that failed before the first fault did after one fault, against its baseline.
const NO_WORSE: &str = "no-worse";
const WORSE: &str = "worse";
const NO_DATA: &str = "no-data";

/// Caveats about the inputs, and whether they make the verdict unknown.
fn input_notes(
    facts: &Facts,
    obs: &Observations,
    g: &Grid,
    cfg: &CheckConfig,
) -> (Vec<String>, bool) {
    let mut notes = Vec::new();
    let mut unknown = false;
    if !obs.present {
        unknown = true;
        notes.push("no observations were given, so fault windows are unknown".to_string());
    }
    if obs.truncated_line_may_hold_fault {
        unknown = true;
        notes.push(
            "the observations' last line was cut off and may have held a fault window: the \
             recovery from the faults that remain cannot stand for the whole run"
                .to_string(),
        );
    }
    let no_load = facts.load_first_invoke_ns == u64::MAX;
    if no_load {
        notes.push("the history has no load operations to measure".to_string());
        unknown |= !obs.faults.is_empty();
    }
    if obs.present && obs.faults.is_empty() {
        notes.push("no fault windows were observed: nothing to recover from".to_string());
    }
    if g.baseline.is_none() && !obs.faults.is_empty() {
        notes.push(
            "no full bucket before the first fault: the throughput criterion was not applied"
                .to_string(),
        );
    }
    let baseline_len = g
        .baseline
        .map_or(0, |(a, b)| b.min(g.end).saturating_sub(a));
    if !no_load && !obs.faults.is_empty() && baseline_len < u64::from(cfg.sustain_buckets) {
        notes.push(format!(
            "only {baseline_len} buckets before the first fault (fewer than sustain_buckets, \
             {}): series already failing before it cannot be told apart and are judged by the \
             SLO like the others",
            cfg.sustain_buckets
        ));
    }
    for (kind, (n, line)) in &facts.defects {
        if matches!(*kind, "complete-before-invoke" | "time-out-of-range") {
            notes.push(format!("{n} operations with {kind} (first on line {line})"));
        }
    }
    (notes, unknown)
}

/// Judges a series that failed its SLO before the first fault against its own baseline: the
/// share of passing buckets from the reference to the deadline against the baseline's.
#[allow(clippy::too_many_arguments)] // The figures of one fault, passed down once.
fn against_baseline(
    g: &Grid,
    si: usize,
    class: &str,
    tenant: &str,
    f: &FaultWindow,
    from: &str,
    ref_ns: u64,
    horizon_b: u64,
    bucket_ns: u64,
    sustain: u32,
    acc: &mut Acc,
) {
    let base = g.before[si];
    let ref_b = ref_ns / bucket_ns;
    let hi = horizon_b.min(g.end);
    let after = hi.saturating_sub(ref_b);
    let passed = passing_in(&g.pass[si], &g.spans, ref_b, hi);
    let before = format!(
        "{class} never had {sustain} passing buckets in a row before the first fault ({} of {} \
         baseline buckets passed)",
        base.passing, base.buckets
    );
    let (category, detail) = if after == 0 {
        (
            NO_DATA,
            format!(
                "{before}; no bucket between {from} of fault {} and the deadline to compare: \
                 undecided",
                f.fault_id
            ),
        )
    } else if u128::from(passed) * u128::from(base.buckets)
        >= u128::from(base.passing) * u128::from(after)
    {
        (
            NO_WORSE,
            format!(
                "{before}; from {from} of fault {} to the deadline {passed} of {after} passed: \
                 no worse than before, so not blamed on the fault",
                f.fault_id
            ),
        )
    } else {
        (
            WORSE,
            format!(
                "{before}; from {from} of fault {} to the deadline only {passed} of {after} \
                 passed: worse than before, but how much of it the fault caused is undecided",
                f.fault_id
            ),
        )
    };
    *acc.before_categories
        .entry(category.to_string())
        .or_default() += 1;
    acc.before.push(Evidence {
        at_ns: Some(ref_ns),
        tenant: Some(tenant.to_string()),
        detail,
        ..Evidence::default()
    });
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
    let sustain = u64::from(cfg.sustain_buckets);
    let deadline_ms = cfg.slo.deadline_ms(&f.kind);
    let limit_ns = deadline_ms.saturating_mul(1_000_000);
    let from = if f.survivable {
        "the start"
    } else {
        "the heal"
    };
    let start_b = f.start_ns / bucket_ns;
    // The buckets that begin before the deadline passes.
    let horizon_b = ref_ns.saturating_add(limit_ns).div_ceil(bucket_ns);
    let mut worst: Option<(bool, u64, u64, usize)> = None; // (never, ttr, failing, series)
    let mut tti: Option<u64> = None;
    let mut impacted_series = 0u64;
    let mut impacted_tenants: Vec<Sym> = Vec::new();
    let mut never_count = 0u64;
    let mut failing_before = 0u64;
    // `None` for series judged against their own baseline.
    let mut results: Vec<Option<SeriesResult>> = Vec::with_capacity(facts.series.len());
    for (si, s) in facts.series.iter().enumerate() {
        let class = format!("{}/{}", pattern_name(s.pattern), kind_name(s.kind));
        let tenant = syms.tenant(s.tenant);
        if g.before[si].failing {
            failing_before += 1;
            against_baseline(
                g,
                si,
                &class,
                tenant,
                f,
                from,
                ref_ns,
                horizon_b,
                bucket_ns,
                cfg.sustain_buckets,
                acc,
            );
            results.push(None);
            continue;
        }
        let r = series_result(
            &g.pass[si],
            &g.spans,
            start_b,
            ref_ns,
            bucket_ns,
            sustain,
            limit_ns,
        );
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
            let at = (b * bucket_ns).max(f.start_ns);
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
        results.push(Some(r));
    }
    // Union outage: buckets in which some series not yet recovered failed, from the fault's
    // start to the last series' recovery; when some series did not recover in time, only up to
    // the deadline (or the history's end, if earlier), and then it is a lower bound.
    let judged = || results.iter().flatten();
    let (stop, outage_until) = if judged().all(|r| !r.never) {
        let last = judged().filter_map(|r| r.recovered_b).max().unwrap_or(0);
        (last.max(start_b).min(g.end), OutageUntil::Recovery)
    } else if g.end < horizon_b {
        (g.end, OutageUntil::HistoryEnd)
    } else {
        (horizon_b, OutageUntil::Deadline)
    };
    let mut outage = 0u64;
    for (i, sp) in g.spans.iter().enumerate() {
        if sp.start >= stop {
            break;
        }
        let k = sp.overlap(start_b, stop);
        if k == 0 {
            continue;
        }
        let failing = results.iter().enumerate().any(|(si, r)| {
            r.as_ref()
                .is_some_and(|r| r.recovered_b.is_none_or(|rb| sp.start < rb))
                && !g.pass[si][i]
        });
        if failing {
            outage += k;
        }
    }
    let worst_series = worst.map(|w| &facts.series[w.3]);
    acc.never_count += never_count;
    acc.impacted_count += impacted_series;
    FaultRecovery {
        fault_id: f.fault_id.clone(),
        kind: f.kind.clone(),
        reference_ns: Some(ref_ns),
        deadline_ms,
        time_to_impact_ms: tti.map(ms),
        ttr_ms: (never_count == 0).then(|| judged().filter_map(|r| r.ttr_ns).max().map_or(0, ms)),
        recovered: never_count == 0,
        total_outage_ms: outage * ms(bucket_ns),
        outage_until,
        worst_tenant: worst_series.map(|s| syms.tenant(s.tenant).to_string()),
        worst_series: worst_series
            .map(|s| format!("{}/{}", pattern_name(s.pattern), kind_name(s.kind))),
        impacted_series,
        impacted_tenants: impacted_tenants.len() as u64,
        never_recovered_series: never_count,
        failing_before_series: failing_before,
    }
}

/// The figures of a fault that never healed: nothing measured.
fn never_healed(f: &FaultWindow, cfg: &CheckConfig) -> FaultRecovery {
    FaultRecovery {
        fault_id: f.fault_id.clone(),
        kind: f.kind.clone(),
        reference_ns: None,
        deadline_ms: cfg.slo.deadline_ms(&f.kind),
        time_to_impact_ms: None,
        ttr_ms: None,
        recovered: false,
        total_outage_ms: 0,
        outage_until: OutageUntil::NotMeasured,
        worst_tenant: None,
        worst_series: None,
        impacted_series: 0,
        impacted_tenants: 0,
        never_recovered_series: 0,
        failing_before_series: 0,
    }
}

/// Runs the recovery checker.
pub fn check(facts: &Facts, obs: &Observations, cfg: &CheckConfig) -> RecoveryOutput {
    let g = grid(facts, obs, cfg);
    let (mut notes, mut unknown) = input_notes(facts, obs, &g, cfg);
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
        faults_out.push(never_healed(f, cfg));
    }
    let undecided = [WORSE, NO_DATA]
        .iter()
        .filter_map(|c| acc.before_categories.get(*c))
        .sum::<u64>();
    if undecided > 0 {
        unknown = true;
        notes.push(format!(
            "{undecided} series (per fault) that already failed their SLO before the first fault \
             did worse after the fault than before it, or had nothing to compare: whether the \
             fault kept them from recovering is undecided (see {FAILING_BEFORE})"
        ));
    }
    let no_worse = acc.before_categories.get(NO_WORSE).copied().unwrap_or(0);
    let anomaly = |name: &str, severity, count, mut evidence: Vec<Evidence>, categories| {
        evidence.sort();
        evidence.truncate(cfg.max_evidence);
        Anomaly {
            name: name.to_string(),
            severity,
            count,
            categories,
            evidence,
        }
    };
    let never = anomaly(
        "never-recovered",
        Severity::Invalid,
        acc.never_count,
        acc.never,
        BTreeMap::new(),
    );
    let impacted = anomaly(
        "impacted",
        Severity::Info,
        acc.impacted_count,
        acc.impact,
        BTreeMap::new(),
    );
    let before_count = acc.before_categories.values().sum();
    let before = anomaly(
        FAILING_BEFORE,
        Severity::Info,
        before_count,
        acc.before,
        acc.before_categories,
    );
    let tenants = tenant_view(facts, &g, &acc.tenant_ttr, !obs.faults.is_empty());
    let timeline = timeline(facts, &g, cfg);
    let fallback = if unknown {
        Status::Unknown
    } else {
        Status::Valid
    };
    let mut verdict = Verdict::from_anomalies(NAME, vec![never, impacted, before], notes, fallback);
    if verdict.status == Status::Valid {
        let worst = faults_out.iter().filter_map(|f| f.ttr_ms).max();
        let mut summary = match worst {
            Some(t) => format!(
                "recovered from every fault; worst TTR {:.1} s",
                t as f64 / 1e3
            ),
            None => "no fault to recover from".to_string(),
        };
        if no_worse > 0 {
            let _ = write!(
                summary,
                "; {no_worse} series already failing before the first fault did no worse after \
                 it (see {FAILING_BEFORE})"
            );
        }
        verdict.summary = summary;
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
            // Failing runs: the spans in which some series of the tenant failed, merged.
            let mut runs: Vec<[u64; 2]> = Vec::new();
            let mut failing_buckets = 0;
            for (i, sp) in g.spans.iter().enumerate() {
                if !series.iter().any(|&si| !g.pass[si][i]) {
                    continue;
                }
                failing_buckets += sp.len;
                match runs.last_mut() {
                    Some(run) if run[0] + run[1] == sp.start => run[1] += sp.len,
                    _ => runs.push([sp.start, sp.len]),
                }
            }
            let (worst, never) = ttr.get(&sym).copied().unwrap_or((None, false));
            TenantSummary {
                tenant: name.to_string(),
                operations: ok + fail + info,
                ok,
                fail,
                info,
                failing_buckets,
                worst_ttr_ms: if never || !any_fault { None } else { worst },
                never_recovered: never,
                failing_before_faults: any_fault && series.iter().any(|&si| g.before[si].failing),
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

/// The overall timeline, at most [`MAX_TIMELINE_POINTS`] points of equally many buckets: rates
/// summed over the point's buckets, p50 averaged and p99 and failing tenants maximised over its
/// buckets that hold data (a gap has no latency and no throughput). Only whole buckets of the
/// load are plotted: the bucket of the first send and the one of the last send are partial (a
/// few operations, or only the fast completions), and would plot as a dip or plunge.
fn timeline(facts: &Facts, g: &Grid, cfg: &CheckConfig) -> Timeline {
    let bucket_s = facts.bucket_ns as f64 / 1e9;
    let first_whole = if facts.load_first_invoke_ns == u64::MAX {
        0
    } else {
        facts.load_first_invoke_ns.div_ceil(facts.bucket_ns)
    };
    // When the load is shorter than two buckets, nothing would be left: plot what there is.
    let (first_whole, total) = if g.end > first_whole {
        (first_whole, g.end)
    } else {
        (0, g.total)
    };
    let per_point = (total - first_whole).div_ceil(MAX_TIMELINE_POINTS).max(1);
    // Per cell: ok completions, fail and info outcomes over every series.
    let mut sums = vec![(0u64, 0u64, 0u64); facts.cells.len()];
    for s in &facts.series {
        for (sum, c) in sums.iter_mut().zip(&s.buckets) {
            sum.0 += u64::from(c.done_ok);
            sum.1 += u64::from(c.fail);
            sum.2 += u64::from(c.info);
        }
    }
    // Per judged span: tenants with a failing series (each series' tenant as a dense index).
    let mut dense: FxHashMap<Sym, usize> = FxHashMap::default();
    let tenant_of: Vec<usize> = facts
        .series
        .iter()
        .map(|s| {
            let next = dense.len();
            *dense.entry(s.tenant).or_insert(next)
        })
        .collect();
    let mut marked = vec![usize::MAX; dense.len()];
    let failing: Vec<u64> = (0..g.spans.len())
        .map(|i| {
            let mut n = 0;
            for (si, tenant) in tenant_of.iter().enumerate() {
                let t = &mut marked[*tenant];
                if !g.pass[si][i] && *t != i {
                    *t = i;
                    n += 1;
                }
            }
            n
        })
        .collect();
    let points_n = (total - first_whole).div_ceil(per_point);
    let mut points = Vec::with_capacity(points_n as usize);
    let (mut next_cell, mut next_span) = (0usize, 0usize);
    while g
        .order
        .get(next_cell)
        .is_some_and(|&(b, _)| b < first_whole)
    {
        next_cell += 1;
    }
    for p in 0..points_n {
        let lo = first_whole + p * per_point;
        let hi = (lo + per_point).min(total);
        let (mut done, mut fail, mut info) = (0u64, 0u64, 0u64);
        let (mut p50_sum, mut p50_n, mut p99) = (0.0f64, 0u32, None::<u32>);
        while let Some(&(bucket, cell)) = g.order.get(next_cell) {
            if bucket >= hi {
                break;
            }
            let (cell_done, cell_fail, cell_info) = sums[cell as usize];
            done += cell_done;
            fail += cell_fail;
            info += cell_info;
            let (cell_p50, cell_p99) = g.global[cell as usize];
            if let Some(v) = cell_p50 {
                p50_sum += f64::from(v);
                p50_n += 1;
            }
            p99 = p99.max(cell_p99);
            next_cell += 1;
        }
        while g.spans.get(next_span).is_some_and(|sp| sp.end() <= lo) {
            next_span += 1;
        }
        let failing_tenants = g.spans[next_span.min(g.spans.len())..]
            .iter()
            .zip(&failing[next_span.min(failing.len())..])
            .take_while(|(sp, _)| sp.start < hi)
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0);
        let width = (hi - lo) as f64 * bucket_s;
        points.push(TimelinePoint {
            t_s: lo as f64 * bucket_s,
            throughput: done as f64 / width,
            errors: fail as f64 / width,
            infos: info as f64 / width,
            p50_ms: (p50_n > 0).then(|| p50_sum / f64::from(p50_n) / 1e3),
            p99_ms: p99.map(|v| f64::from(v) / 1e3),
            failing_tenants,
        });
    }
    Timeline {
        step_ms: cfg.bucket_ms.saturating_mul(per_point),
        points,
    }
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
        Pattern::ReadBackReplica => "read_back_replica",
        Pattern::InitialState => "initial_state",
    }
}

/// `write`, `read`, `deliver` or `connect`.
pub fn kind_name(k: crate::history::OpKind) -> &'static str {
    use crate::history::OpKind;
    match k {
        OpKind::Write => "write",
        OpKind::Read => "read",
        OpKind::Deliver => "deliver",
        OpKind::Connect => "connect",
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

    /// One span per bucket, as a history with data in every bucket gives.
    fn dense(n: u64) -> Vec<Span> {
        let order: Vec<(u64, u32)> = (0..n).map(|b| (b, b as u32)).collect();
        spans(&order, n)
    }

    #[test]
    fn spans_cover_the_axis_with_gaps_between_cells() {
        let order = [(2, 5), (3, 1), (16_000_000, 0)];
        let s = spans(&order, 20_000_000);
        let shape: Vec<(u64, u64, Option<u32>)> =
            s.iter().map(|sp| (sp.start, sp.len, sp.cell)).collect();
        assert_eq!(
            shape,
            vec![
                (0, 2, None),
                (2, 1, Some(5)),
                (3, 1, Some(1)),
                (4, 15_999_996, None),
                (16_000_000, 1, Some(0)),
                (16_000_001, 3_999_999, None),
            ]
        );
        // Cells at or past the end are not judged.
        assert_eq!(spans(&order, 3).len(), 2);
        assert!(spans(&[], 0).is_empty());
        assert_eq!(s[3].overlap(10, 20), 10);
        assert_eq!(s[3].overlap(0, 4), 0);
    }

    #[test]
    fn ttr_from_sustained_run() {
        // Buckets of 1 s; heal at 10 s; fails 5..13, passes from 13.
        let mut pass = vec![true; 30];
        for p in &mut pass[5..13] {
            *p = false;
        }
        let s = 1_000_000_000;
        let r = series_result(&pass, &dense(30), 5, 10 * s, s, 5, 10 * s);
        assert_eq!(r.recovered_b, Some(13));
        assert_eq!(r.ttr_ns, Some(3 * s));
        assert!(!r.never);
        assert_eq!(r.failing, 8);
        assert_eq!(r.first_fail_b, Some(5));
        // A passing bucket inside the outage does not count as recovery.
        pass[11] = true;
        let r = series_result(&pass, &dense(30), 5, 10 * s, s, 5, 10 * s);
        assert_eq!(r.recovered_b, Some(13));
        // Not enough buckets left: never recovered.
        let r = series_result(&pass[..16], &dense(16), 5, 10 * s, s, 5, 10 * s);
        assert!(r.never && r.recovered_b.is_none());
        // Over the deadline.
        let r = series_result(&pass, &dense(30), 5, 10 * s, s, 5, 2 * s);
        assert!(r.never);
    }

    #[test]
    fn gaps_count_as_many_buckets_as_they_span() {
        let s = 1_000_000_000;
        // Data in buckets 0..4 and 40; the gap 4..40 passes for a sparse series: recovered at
        // the heal (bucket 10), inside the gap.
        let order: Vec<(u64, u32)> = (0..4).chain([40]).map(|b| (b, b as u32)).collect();
        let sp = spans(&order, 41);
        let pass: Vec<bool> = sp.iter().map(|x| x.cell != Some(2)).collect();
        let r = series_result(&pass, &sp, 2, 10 * s, s, 5, 60 * s);
        assert_eq!((r.recovered_b, r.ttr_ns), (Some(10), Some(0)));
        assert_eq!((r.failing, r.first_fail_b), (1, Some(2)));
        // A gap that fails (the throughput criterion applies): 36 failing buckets, never.
        let pass: Vec<bool> = sp.iter().map(|x| x.cell.is_some()).collect();
        let r = series_result(&pass, &sp, 2, 10 * s, s, 5, 60 * s);
        assert!(r.never && r.recovered_b.is_none());
        assert_eq!((r.failing, r.first_fail_b), (36, Some(4)));
        let b = baseline_of(&pass, &sp, 0, 10, 5);
        assert_eq!((b.passing, b.buckets, b.failing), (4, 10, true));
        let b = baseline_of(&pass, &sp, 0, 4, 5);
        assert!(
            !b.failing,
            "a baseline shorter than sustain_buckets proves nothing"
        );
    }
}
