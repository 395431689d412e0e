//! `/metrics`: Prometheus text format through prometheus-client.
//!
//! Run counts, anomalies and TTRs are read from the run index at each scrape, so the metrics,
//! the index and the page always agree, and a daemon restart does not lose them (retention
//! removing old runs lowers the counters, which Prometheus reads as a counter reset).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use faultline_experiments::schedule::{RunFilter, RunIndex, Scheduler};

type Labels = Vec<(String, String)>;

/// What the daemon knows beyond the scheduler, at scrape time.
#[derive(Clone, Debug, Default)]
pub struct TargetFigures {
    /// Faults active now.
    pub faults_active: u64,
    /// Background load operations by outcome (`ok`, `fail`, `info`), when it runs.
    pub background_ops: Option<BTreeMap<String, u64>>,
}

fn label(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Renders every metric.
pub fn render(scheduler: &Scheduler, target: &TargetFigures) -> Result<String, String> {
    let mut registry = Registry::default();
    register_index(&mut registry, scheduler.index())?;
    register_scheduler(&mut registry, scheduler, target)?;
    let mut text = String::new();
    encode(&mut text, &registry).map_err(|e| e.to_string())?;
    Ok(text)
}

/// Runs, anomalies, and the latest judged run of each scenario: its longest TTR and its score.
fn register_index(registry: &mut Registry, index: &RunIndex) -> Result<(), String> {
    let runs = Family::<Labels, Counter>::default();
    registry.register(
        "faultline_runs",
        "Finished runs (scheduled and manual) by suite, scenario and verdict",
        runs.clone(),
    );
    for count in index.counts().map_err(|e| e.to_string())? {
        runs.get_or_create(&label(&[
            ("suite", &count.suite),
            ("scenario", &count.scenario),
            ("verdict", count.status.as_str()),
        ]))
        .inc_by(count.count);
    }

    let anomalies = Family::<Labels, Counter>::default();
    registry.register(
        "faultline_anomalies",
        "Anomalies found by the checkers over all indexed runs, by kind",
        anomalies.clone(),
    );
    for (kind, count) in index.anomaly_totals().map_err(|e| e.to_string())? {
        anomalies
            .get_or_create(&label(&[("kind", &kind)]))
            .inc_by(count);
    }

    // The latest judged run of each scenario: its longest TTR and its score.
    let ttr = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    registry.register(
        "faultline_run_ttr_seconds",
        "Longest time to recover of the latest judged run, by scenario",
        ttr.clone(),
    );
    let score = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    registry.register(
        "faultline_run_score",
        "Score (0-100) of the latest judged run, by scenario",
        score.clone(),
    );
    let mut seen = std::collections::BTreeSet::new();
    for row in index
        .list(&RunFilter {
            limit: Some(2000),
            ..RunFilter::default()
        })
        .map_err(|e| e.to_string())?
    {
        if !row.status.is_judged() || !seen.insert(row.scenario.clone()) {
            continue;
        }
        let labels = label(&[("scenario", &row.scenario)]);
        if let Some(ms) = row.max_ttr_ms() {
            ttr.get_or_create(&labels).set(ms as f64 / 1000.0);
        }
        if let Some(s) = row.score {
            score.get_or_create(&labels).set(f64::from(s));
        }
    }

    Ok(())
}

/// The scheduler's state, the target's active faults and the background load.
fn register_scheduler(
    registry: &mut Registry,
    scheduler: &Scheduler,
    target: &TargetFigures,
) -> Result<(), String> {
    let next = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    registry.register(
        "faultline_next_run_timestamp_seconds",
        "When each enabled suite comes due next, Unix time",
        next.clone(),
    );
    for run in scheduler.next_runs() {
        if let Some(at) = run.at {
            next.get_or_create(&label(&[("suite", &run.suite)]))
                .set(at.timestamp_millis() as f64 / 1000.0);
        }
    }

    let status = scheduler.status().map_err(|e| e.to_string())?;
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: f64| {
        let g = Gauge::<f64, AtomicU64>::default();
        g.set(value);
        registry.register(name, help, g);
    };
    gauge(
        registry,
        "faultline_faults_active",
        "Faults injected and not yet reverted",
        target.faults_active as f64,
    );
    gauge(
        registry,
        "faultline_runs_queued",
        "Runs waiting to start",
        status.queued as f64,
    );
    gauge(
        registry,
        "faultline_run_in_progress",
        "1 while an experiment runs",
        f64::from(u8::from(status.running.is_some())),
    );
    gauge(
        registry,
        "faultline_halted",
        "1 while halted (no runs start until resume)",
        f64::from(u8::from(status.halted.is_some())),
    );
    gauge(
        registry,
        "faultline_blackout_active",
        "1 during a blackout window",
        f64::from(u8::from(status.blackout.is_some())),
    );
    if let Some(ops) = &target.background_ops {
        let background = Family::<Labels, Counter>::default();
        registry.register(
            "faultline_background_ops",
            "Operations of the background tenant load, by outcome",
            background.clone(),
        );
        for (outcome, count) in ops {
            background
                .get_or_create(&label(&[("outcome", outcome)]))
                .inc_by(*count);
        }
    }
    Ok(())
}
