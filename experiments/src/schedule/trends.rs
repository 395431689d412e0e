//! Trends: TTR and score per scenario, week by week, from the run index. Pure functions of the
//! index's rows, rendered as text or as a self-contained HTML page with inline SVG plots.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

use super::index::RunRow;

/// One week of one scenario.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WeekPoint {
    /// Start of the week (the cut-off `now - weeks * 7d` plus whole weeks).
    pub week_start: DateTime<Utc>,
    /// Judged runs that week.
    pub runs: u32,
    /// Of those, passed.
    pub passed: u32,
    /// Median of the runs' longest TTR, in ms.
    pub ttr_p50_ms: Option<u64>,
    /// Longest TTR of the week, in ms.
    pub ttr_max_ms: Option<u64>,
    /// Mean score.
    pub score_mean: Option<f64>,
    /// Lowest score.
    pub score_min: Option<u8>,
}

/// One scenario's weeks, oldest first; weeks without a judged run are left out.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScenarioTrend {
    /// Scenario.
    pub scenario: String,
    /// Its weeks.
    pub weeks: Vec<WeekPoint>,
}

/// Groups judged runs (passed, failed, unknown) that ended in the last `weeks` weeks before
/// `now` by scenario and week.
pub fn weekly(rows: &[RunRow], weeks: u32, now: DateTime<Utc>) -> Vec<ScenarioTrend> {
    let start = now - Duration::weeks(i64::from(weeks));
    let mut by_scenario: BTreeMap<&str, BTreeMap<i64, Vec<&RunRow>>> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.status.is_judged()) {
        let Some(ended) = row.ended_at else { continue };
        if ended < start || ended > now {
            continue;
        }
        let week = (ended - start).num_weeks();
        by_scenario
            .entry(&row.scenario)
            .or_default()
            .entry(week)
            .or_default()
            .push(row);
    }
    by_scenario
        .into_iter()
        .map(|(scenario, weeks)| ScenarioTrend {
            scenario: scenario.to_owned(),
            weeks: weeks
                .into_iter()
                .map(|(week, runs)| point(start + Duration::weeks(week), &runs))
                .collect(),
        })
        .collect()
}

fn point(week_start: DateTime<Utc>, runs: &[&RunRow]) -> WeekPoint {
    let mut ttrs: Vec<u64> = runs.iter().filter_map(|r| r.max_ttr_ms()).collect();
    ttrs.sort_unstable();
    let scores: Vec<u8> = runs.iter().filter_map(|r| r.score).collect();
    WeekPoint {
        week_start,
        runs: runs.len() as u32,
        passed: runs
            .iter()
            .filter(|r| r.status == super::index::RunStatus::Passed)
            .count() as u32,
        // The lower median, so the value is one that was measured.
        ttr_p50_ms: (!ttrs.is_empty()).then(|| ttrs[(ttrs.len() - 1) / 2]),
        ttr_max_ms: ttrs.last().copied(),
        score_mean: (!scores.is_empty())
            .then(|| scores.iter().map(|s| f64::from(*s)).sum::<f64>() / scores.len() as f64),
        score_min: scores.iter().min().copied(),
    }
}

fn seconds(ms: Option<u64>) -> String {
    ms.map_or_else(
        || "-".to_owned(),
        |ms| format!("{:.1}s", ms as f64 / 1000.0),
    )
}

/// The trends as a text table per scenario.
pub fn text(trends: &[ScenarioTrend]) -> String {
    let mut out = String::new();
    if trends.is_empty() {
        out.push_str("no judged runs in that period\n");
    }
    for trend in trends {
        let _ = writeln!(out, "{}", trend.scenario);
        let _ = writeln!(
            out,
            "  {:<12} {:>5} {:>7} {:>9} {:>9} {:>10} {:>9}",
            "WEEK OF", "RUNS", "PASSED", "TTR P50", "TTR MAX", "SCORE AVG", "SCORE MIN"
        );
        for w in &trend.weeks {
            let _ = writeln!(
                out,
                "  {:<12} {:>5} {:>7} {:>9} {:>9} {:>10} {:>9}",
                w.week_start.format("%Y-%m-%d"),
                w.runs,
                w.passed,
                seconds(w.ttr_p50_ms),
                seconds(w.ttr_max_ms),
                w.score_mean
                    .map_or_else(|| "-".to_owned(), |s| format!("{s:.0}")),
                w.score_min
                    .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            );
        }
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One scenario's plot: TTR p50 and max (seconds, left axis) and mean score (0-100, dashed,
/// right axis) per week, as inline SVG.
pub fn svg(trend: &ScenarioTrend) -> String {
    const W: f64 = 560.0;
    const H: f64 = 180.0;
    const PAD: f64 = 36.0;
    let n = trend.weeks.len().max(2) as f64 - 1.0;
    let ttr_top = trend
        .weeks
        .iter()
        .filter_map(|w| w.ttr_max_ms)
        .max()
        .unwrap_or(1000)
        .max(1000) as f64
        / 1000.0;
    let x = |i: usize| PAD + (W - 2.0 * PAD) * i as f64 / n;
    let y_ttr = |s: f64| H - PAD - (H - 2.0 * PAD) * s / ttr_top;
    let y_score = |s: f64| H - PAD - (H - 2.0 * PAD) * s / 100.0;
    let line = |values: &[(usize, f64)], y: &dyn Fn(f64) -> f64| {
        values
            .iter()
            .map(|(i, v)| format!("{:.1},{:.1}", x(*i), y(*v)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let p50: Vec<(usize, f64)> = trend
        .weeks
        .iter()
        .enumerate()
        .filter_map(|(i, w)| Some((i, w.ttr_p50_ms? as f64 / 1000.0)))
        .collect();
    let max: Vec<(usize, f64)> = trend
        .weeks
        .iter()
        .enumerate()
        .filter_map(|(i, w)| Some((i, w.ttr_max_ms? as f64 / 1000.0)))
        .collect();
    let score: Vec<(usize, f64)> = trend
        .weeks
        .iter()
        .enumerate()
        .filter_map(|(i, w)| Some((i, w.score_mean?)))
        .collect();
    let mut out = format!(
        r##"<svg class="trend" data-scenario="{name}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="TTR and score of {name}">
<line x1="{PAD}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#999"/>
<text x="4" y="{PAD}" font-size="10">{ttr_top:.1}s</text><text x="4" y="{bottom}" font-size="10">0</text>
<text x="{right}" y="{PAD}" font-size="10">100</text>
<polyline class="ttr-p50" fill="none" stroke="#1f77b4" stroke-width="2" points="{p50}"/>
<polyline class="ttr-max" fill="none" stroke="#d62728" stroke-width="2" points="{max}"/>
<polyline class="score" fill="none" stroke="#2ca02c" stroke-dasharray="4 3" stroke-width="2" points="{score}"/>
"##,
        name = escape(&trend.scenario),
        bottom = H - PAD,
        right = W - PAD,
        p50 = line(&p50, &y_ttr),
        max = line(&max, &y_ttr),
        score = line(&score, &y_score),
    );
    // Markers, so a single week (one point, no line) still shows.
    for (series, colour, values, y) in [
        ("ttr-p50", "#1f77b4", &p50, &y_ttr as &dyn Fn(f64) -> f64),
        ("ttr-max", "#d62728", &max, &y_ttr),
        ("score", "#2ca02c", &score, &y_score),
    ] {
        for (i, v) in values {
            let _ = write!(
                out,
                r#"<circle class="{series}" cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{v:.1}</title></circle>"#,
                x(*i),
                y(*v)
            );
        }
    }
    for (i, w) in trend.weeks.iter().enumerate() {
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{}" font-size="9" text-anchor="middle">{}</text>"#,
            x(i),
            H - PAD + 14.0,
            w.week_start.format("%m-%d")
        );
    }
    out.push_str("</svg>");
    out
}

/// A self-contained HTML page of the trends.
pub fn html(trends: &[ScenarioTrend], title: &str) -> String {
    let mut body = String::new();
    for trend in trends {
        let _ = write!(
            body,
            "<section><h2>{}</h2>{}<pre>{}</pre></section>",
            escape(&trend.scenario),
            svg(trend),
            escape(&text(std::slice::from_ref(trend)))
        );
    }
    if trends.is_empty() {
        body.push_str("<p>No judged runs in that period.</p>");
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>body{{font-family:sans-serif;margin:2em}}pre{{font-size:12px}}</style></head><body><h1>{t}</h1><p>TTR p50 (blue) and max (red), in seconds; mean score (green, dashed, 0-100), per week.</p>{body}</body></html>\n",
        t = escape(title)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::index::{FaultTtr, RunStatus};

    fn row(
        id: i64,
        scenario: &str,
        status: RunStatus,
        days_ago: i64,
        ttr_ms: u64,
        score: u8,
    ) -> RunRow {
        let ended = now() - Duration::days(days_ago);
        RunRow {
            id,
            run_id: None,
            suite: Some("weekly".into()),
            scenario: scenario.into(),
            trigger: "schedule".into(),
            status,
            due_at: None,
            queued_at: ended,
            started_at: Some(ended),
            ended_at: Some(ended),
            exit_code: None,
            score: Some(score),
            verdicts: BTreeMap::new(),
            ttr: vec![FaultTtr {
                fault_id: "f".into(),
                kind: "partition".into(),
                ttr_ms: Some(ttr_ms),
                recovered: true,
            }],
            anomalies: BTreeMap::new(),
            dir: None,
            note: None,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_780_000_000, 0).expect("time")
    }

    #[test]
    fn weekly_groups_judged_runs_and_takes_p50_and_max() {
        let rows = [
            row(1, "az-failure", RunStatus::Passed, 20, 4000, 95),
            row(2, "az-failure", RunStatus::Failed, 19, 9000, 40),
            row(3, "az-failure", RunStatus::Passed, 18, 5000, 90),
            row(4, "az-failure", RunStatus::Passed, 2, 12000, 80),
            row(5, "az-failure", RunStatus::Aborted, 1, 1, 0), // not judged: left out
            row(6, "az-failure", RunStatus::Passed, 40, 1, 100), // before the window
            row(7, "pod-failure", RunStatus::Passed, 3, 2000, 100),
        ];
        let trends = weekly(&rows, 4, now());
        assert_eq!(trends.len(), 2);
        let az = &trends[0];
        assert_eq!(az.scenario, "az-failure");
        assert_eq!(az.weeks.len(), 2);
        let first = &az.weeks[0];
        assert_eq!((first.runs, first.passed), (3, 2));
        assert_eq!(first.ttr_p50_ms, Some(5000));
        assert_eq!(first.ttr_max_ms, Some(9000));
        assert_eq!(first.score_min, Some(40));
        assert!((first.score_mean.expect("mean") - 75.0).abs() < 1e-9);
        assert_eq!(az.weeks[1].ttr_max_ms, Some(12000));
        let page = html(&trends, "Faultline trends");
        assert_eq!(page.matches("<svg class=\"trend\"").count(), 2);
        assert!(text(&trends).contains("12.0s"));
    }
}
