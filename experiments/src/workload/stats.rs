//! Counting what was recorded: a log-linear latency histogram, per tier and operation kind, the
//! live progress line, and the k6-style end-of-run summary.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::history::{OpKind, Outcome};

use super::config::Tier;

const SUB_BITS: u64 = 5;
const LINEAR: u64 = 1 << SUB_BITS; // 32
const HALF: u64 = LINEAR / 2; // 16
const BUCKETS: usize = (LINEAR + (64 - SUB_BITS) * HALF) as usize;

/// A log-linear histogram of microseconds: exact below 32 µs, then 16 buckets per power of two
/// (at most ~6% relative error). Fixed size, so memory stays flat.
#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish_non_exhaustive()
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

fn bucket_of(v: u64) -> usize {
    if v < LINEAR {
        return v as usize;
    }
    let msb = 63 - u64::from(v.leading_zeros());
    let shift = msb - SUB_BITS + 1;
    let m = v >> shift;
    (LINEAR + (shift - 1) * HALF + (m - HALF)) as usize
}

fn bucket_upper(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let shift = (i - LINEAR) / HALF + 1;
    let m = (i - LINEAR) % HALF + HALF;
    let upper = (u128::from(m + 1) << shift) - 1;
    u64::try_from(upper).unwrap_or(u64::MAX)
}

impl Histogram {
    /// Records one value.
    pub fn record(&mut self, micros: u64) {
        self.counts[bucket_of(micros)] += 1;
        self.total += 1;
        self.sum += u128::from(micros);
        self.min = self.min.min(micros);
        self.max = self.max.max(micros);
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1), as the upper bound of its bucket, capped at the
    /// largest value seen; 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_upper(i).min(self.max).max(self.min);
            }
        }
        self.max
    }

    /// Mean, 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }

    /// Smallest value, 0 when empty.
    pub fn min(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            self.min
        }
    }

    /// Largest value.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Counts and latencies of one group of operations.
#[derive(Clone, Debug, Default)]
pub struct KindStats {
    /// Operations recorded.
    pub ops: u64,
    /// `ok` ones.
    pub ok: u64,
    /// `fail` ones.
    pub fail: u64,
    /// `info` ones.
    pub info: u64,
    /// Latency (completion minus intended time) of every operation, µs.
    pub latency: Histogram,
}

impl KindStats {
    /// Adds one operation.
    pub fn add(&mut self, outcome: Outcome, latency_us: u64) {
        self.ops += 1;
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Fail => self.fail += 1,
            Outcome::Info => self.info += 1,
        }
        self.latency.record(latency_us);
    }
}

fn kind_index(kind: OpKind) -> usize {
    match kind {
        OpKind::Write => 0,
        OpKind::Read => 1,
        OpKind::Deliver => 2,
        OpKind::Connect => 3,
    }
}

const KINDS: [OpKind; 4] = [
    OpKind::Write,
    OpKind::Read,
    OpKind::Deliver,
    OpKind::Connect,
];

/// Everything counted so far: load operations per tier and kind, read-back operations per
/// kind, and the current one-second window for the progress line.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    /// Load operations, `[tier][kind]`.
    pub load: [[KindStats; 4]; 3],
    /// Final read-back operations, by tier.
    pub read_back: [KindStats; 4],
    /// Writes acknowledged as duplicates (the value was stored by an earlier attempt).
    pub duplicate_acks: u64,
    /// Operations with attempt > 1.
    pub retries: u64,
    /// Lines written to the history (header included).
    pub history_lines: u64,
    /// Lines written to the observations file (header included).
    pub observation_lines: u64,
    /// The current window of the live progress line.
    pub window: Window,
}

/// One window of the live progress line.
#[derive(Clone, Debug, Default)]
pub struct Window {
    /// Operations completed in the window.
    pub ops: u64,
    /// `fail` ones.
    pub fail: u64,
    /// `info` ones.
    pub info: u64,
    /// Latencies.
    pub latency: Histogram,
}

impl Totals {
    /// Adds one recorded operation.
    pub fn add(
        &mut self,
        tier: Tier,
        kind: OpKind,
        outcome: Outcome,
        latency_us: u64,
        read_back: bool,
        attempt: u32,
    ) {
        if read_back {
            self.read_back[tier.index()].add(outcome, latency_us);
            return;
        }
        self.load[tier.index()][kind_index(kind)].add(outcome, latency_us);
        if attempt > 1 {
            self.retries += 1;
        }
        self.window.ops += 1;
        match outcome {
            Outcome::Fail => self.window.fail += 1,
            Outcome::Info => self.window.info += 1,
            Outcome::Ok => {}
        }
        self.window.latency.record(latency_us);
    }

    /// All load operations together.
    pub fn load_total(&self) -> (u64, u64, u64, u64) {
        let mut t = (0, 0, 0, 0);
        for s in self.load.iter().flatten() {
            t.0 += s.ops;
            t.1 += s.ok;
            t.2 += s.fail;
            t.3 += s.info;
        }
        t
    }

    /// All read-back operations together.
    pub fn read_back_total(&self) -> (u64, u64, u64, u64) {
        let mut t = (0, 0, 0, 0);
        for s in &self.read_back {
            t.0 += s.ops;
            t.1 += s.ok;
            t.2 += s.fail;
            t.3 += s.info;
        }
        t
    }
}

/// Latency figures of one summary row, milliseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Mean.
    pub avg_ms: f64,
    /// Minimum.
    pub min_ms: f64,
    /// Median.
    pub med_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

impl LatencySummary {
    fn of(h: &Histogram) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            avg_ms: h.mean() / 1000.0,
            min_ms: ms(h.min()),
            med_ms: ms(h.quantile(0.5)),
            p90_ms: ms(h.quantile(0.9)),
            p95_ms: ms(h.quantile(0.95)),
            p99_ms: ms(h.quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// One row of the summary: a tier and an operation kind.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SummaryRow {
    /// `small`, `medium`, `large`, or `all`.
    pub tier: String,
    /// `write`, `read`, `deliver`, or `read_back`.
    pub kind: String,
    /// Operations recorded (every attempt counts).
    pub ops: u64,
    /// `ok` ones.
    pub ok: u64,
    /// `fail` ones.
    pub fail: u64,
    /// `info` ones.
    pub info: u64,
    /// Operations per second over the load (0 for read-back rows).
    pub rate_per_s: f64,
    /// Latency from the intended send time to completion.
    pub latency: LatencySummary,
}

/// The end-of-run summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Run id.
    pub run_id: String,
    /// Adapter name.
    pub adapter: String,
    /// Seconds the load ran.
    pub elapsed_s: f64,
    /// Load operations recorded (every attempt counts; read-back not included).
    pub ops: u64,
    /// `ok` ones.
    pub ok: u64,
    /// `fail` ones.
    pub fail: u64,
    /// `info` ones.
    pub info: u64,
    /// Attempts after the first (HTTP retries).
    pub retries: u64,
    /// Writes acknowledged as duplicates of an earlier attempt.
    pub duplicate_acks: u64,
    /// Read-back operations recorded.
    pub read_back_ops: u64,
    /// `ok` read-back operations.
    pub read_back_ok: u64,
    /// Lines in the history file, header included (the history holds `ops + read_back_ops`
    /// operations).
    pub history_lines: u64,
    /// Per tier and kind, then `all` per kind, then read-back per tier.
    pub rows: Vec<SummaryRow>,
}

impl Summary {
    /// Builds the summary from the totals.
    pub fn from_totals(run_id: &str, adapter: &str, elapsed: Duration, totals: &Totals) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let row = |tier: &str, kind: &str, s: &KindStats| SummaryRow {
            tier: tier.to_owned(),
            kind: kind.to_owned(),
            ops: s.ops,
            ok: s.ok,
            fail: s.fail,
            info: s.info,
            rate_per_s: s.ops as f64 / secs,
            latency: LatencySummary::of(&s.latency),
        };
        let mut rows = Vec::new();
        for tier in Tier::ALL {
            for kind in KINDS {
                let s = &totals.load[tier.index()][kind_index(kind)];
                if s.ops > 0 {
                    rows.push(row(tier.name(), kind_name(kind), s));
                }
            }
        }
        for kind in KINDS {
            let mut all = KindStats::default();
            for tier in Tier::ALL {
                merge(&mut all, &totals.load[tier.index()][kind_index(kind)]);
            }
            if all.ops > 0 {
                rows.push(row("all", kind_name(kind), &all));
            }
        }
        for tier in Tier::ALL {
            let s = &totals.read_back[tier.index()];
            if s.ops > 0 {
                rows.push(SummaryRow {
                    rate_per_s: 0.0,
                    ..row(tier.name(), "read_back", s)
                });
            }
        }
        let (ops, ok, fail, info) = totals.load_total();
        let (read_back_ops, read_back_ok, _, _) = totals.read_back_total();
        Self {
            run_id: run_id.to_owned(),
            adapter: adapter.to_owned(),
            elapsed_s: elapsed.as_secs_f64(),
            ops,
            ok,
            fail,
            info,
            retries: totals.retries,
            duplicate_acks: totals.duplicate_acks,
            read_back_ops,
            read_back_ok,
            history_lines: totals.history_lines,
            rows,
        }
    }

    /// The k6-style text summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let pct = |n: u64, d: u64| {
            if d == 0 {
                0.0
            } else {
                100.0 * n as f64 / d as f64
            }
        };
        let _ = writeln!(
            out,
            "\n  run {} ({} adapter), {:.1} s\n",
            self.run_id, self.adapter, self.elapsed_s
        );
        let dots = |label: &str| format!("{label:.<34}");
        let mark = if self.fail + self.info == 0 {
            '✓'
        } else {
            '✗'
        };
        let _ = writeln!(
            out,
            "   {mark} {}: {:.2}% ✓ {} ok  ✗ {} fail  ? {} info",
            dots("operations ok"),
            pct(self.ok, self.ops),
            self.ok,
            self.fail,
            self.info
        );
        let _ = writeln!(out, "     {}: {}", dots("operations"), self.ops);
        let _ = writeln!(out, "     {}: {}", dots("retries"), self.retries);
        let _ = writeln!(
            out,
            "     {}: {}",
            dots("duplicate acks"),
            self.duplicate_acks
        );
        for r in &self.rows {
            let label = format!("{} {}", r.tier, r.kind);
            let l = &r.latency;
            let _ = writeln!(
                out,
                "     {}: {} ops {}ok={:.2}% fail={} info={}\n     {:36}avg={} min={} med={} p(90)={} p(95)={} p(99)={} max={}",
                dots(&label),
                r.ops,
                if r.kind == "read_back" {
                    String::new()
                } else {
                    format!("{:.1}/s ", r.rate_per_s)
                },
                pct(r.ok, r.ops),
                r.fail,
                r.info,
                "",
                fmt_ms(l.avg_ms),
                fmt_ms(l.min_ms),
                fmt_ms(l.med_ms),
                fmt_ms(l.p90_ms),
                fmt_ms(l.p95_ms),
                fmt_ms(l.p99_ms),
                fmt_ms(l.max_ms),
            );
        }
        if self.read_back_ops > 0 {
            let _ = writeln!(
                out,
                "     {}: {} of {} ok",
                dots("read-back reads"),
                self.read_back_ok,
                self.read_back_ops
            );
        }
        let _ = writeln!(
            out,
            "     {}: {}",
            dots("history lines"),
            self.history_lines
        );
        out
    }
}

fn kind_name(kind: OpKind) -> &'static str {
    match kind {
        OpKind::Write => "write",
        OpKind::Read => "read",
        OpKind::Deliver => "deliver",
        OpKind::Connect => "connect",
    }
}

fn merge(into: &mut KindStats, from: &KindStats) {
    into.ops += from.ops;
    into.ok += from.ok;
    into.fail += from.fail;
    into.info += from.info;
    for (a, b) in into
        .latency
        .counts
        .iter_mut()
        .zip(from.latency.counts.iter())
    {
        *a += b;
    }
    into.latency.total += from.latency.total;
    into.latency.sum += from.latency.sum;
    into.latency.min = into.latency.min.min(from.latency.min);
    into.latency.max = into.latency.max.max(from.latency.max);
}

/// Milliseconds, k6 style: `850µs`, `12.34ms`, `1.5s`.
pub fn fmt_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0}µs", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{ms:.2}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

/// What the live progress line shows.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Progress {
    /// Seconds since the run started.
    pub elapsed_s: f64,
    /// Operations completed per second over the last window.
    pub ops_per_s: f64,
    /// Operations recorded so far.
    pub ops: u64,
    /// `fail` operations so far.
    pub fail: u64,
    /// `info` operations so far.
    pub info: u64,
    /// `fail` in the last window.
    pub window_fail: u64,
    /// `info` in the last window.
    pub window_info: u64,
    /// p99 latency over the last window, ms.
    pub p99_ms: f64,
    /// Operations in flight now.
    pub in_flight: u64,
    /// Active faults, as `kind target`.
    pub faults: Vec<String>,
}

impl Progress {
    /// One line, e.g.
    /// `[  12s] 198 ops/s  ops 2380  fail 0 (+0)  info 3 (+1)  p99 12.3ms  in flight 5  faults: none`.
    pub fn line(&self) -> String {
        format!(
            "[{:>5.0}s] {:>6.0} ops/s  ops {}  fail {} (+{})  info {} (+{})  p99 {}  in flight {}  faults: {}",
            self.elapsed_s,
            self.ops_per_s,
            self.ops,
            self.fail,
            self.window_fail,
            self.info,
            self.window_info,
            fmt_ms(self.p99_ms),
            self.in_flight,
            if self.faults.is_empty() {
                "none".to_owned()
            } else {
                self.faults.join(", ")
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_cover_their_values() {
        let mut last = 0;
        for v in (0..5000u64).chain([1 << 20, (1 << 20) + 12345, u64::MAX / 3, u64::MAX]) {
            let b = bucket_of(v);
            assert!(b < BUCKETS, "{v}");
            assert!(b >= last || v < 5000, "{v}");
            last = b;
            assert!(bucket_upper(b) >= v, "{v} -> {b} -> {}", bucket_upper(b));
            if v >= 32 {
                let lower = if b == 0 { 0 } else { bucket_upper(b - 1) + 1 };
                assert!(lower <= v, "{v}");
                assert!((bucket_upper(b) - lower) as f64 <= v as f64 / 15.0, "{v}");
            }
        }
    }

    #[test]
    fn quantiles_are_close() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        for (q, expected) in [(0.5, 5000.0), (0.9, 9000.0), (0.99, 9900.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - expected).abs() / expected < 0.07, "q{q}: {got}");
        }
        assert_eq!(h.quantile(1.0), 10_000);
        assert_eq!(h.min(), 1);
        assert!((h.mean() - 5000.5).abs() < 1e-9);
        assert_eq!(Histogram::default().quantile(0.99), 0);
    }

    #[test]
    fn summary_rows_and_render() {
        let mut t = Totals::default();
        t.add(Tier::Small, OpKind::Write, Outcome::Ok, 1500, false, 1);
        t.add(
            Tier::Small,
            OpKind::Write,
            Outcome::Info,
            2_000_000,
            false,
            1,
        );
        t.add(Tier::Large, OpKind::Read, Outcome::Fail, 800, false, 2);
        t.add(Tier::Large, OpKind::Read, Outcome::Ok, 900, true, 1);
        let s = Summary::from_totals("r1", "nats", Duration::from_secs(2), &t);
        assert_eq!((s.ops, s.ok, s.fail, s.info, s.retries), (3, 1, 1, 1, 1));
        assert_eq!((s.read_back_ops, s.read_back_ok), (1, 1));
        let kinds: Vec<(String, String)> = s
            .rows
            .iter()
            .map(|r| (r.tier.clone(), r.kind.clone()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("small", "write"),
                ("large", "read"),
                ("all", "write"),
                ("all", "read"),
                ("large", "read_back")
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        let text = s.render();
        assert!(text.contains("small write"), "{text}");
        assert!(text.contains("p(99)="), "{text}");
        assert_eq!(fmt_ms(0.5), "500µs");
        assert_eq!(fmt_ms(12.345), "12.35ms");
        assert_eq!(fmt_ms(1500.0), "1.50s");
    }
}
