//! The daemon's web page: self-contained HTML (no external assets), like the run reports. The
//! run list with verdict badges, a trend plot per scenario, the next runs, active faults, and a
//! halt button that posts to the API with the operator's token.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use faultline_experiments::schedule::{trends, RunRow, RunStatus, SchedulerStatus};

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn badge(status: RunStatus) -> String {
    let colour = match status {
        RunStatus::Passed => "#2e7d32",
        RunStatus::Failed => "#c62828",
        RunStatus::Unknown | RunStatus::Error => "#6a1b9a",
        RunStatus::Aborted => "#ef6c00",
        RunStatus::Running => "#1565c0",
        RunStatus::Queued | RunStatus::Skipped => "#616161",
    };
    format!(
        r#"<span class="badge badge-{s}" style="background:{colour}">{s}</span>"#,
        s = status.as_str()
    )
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

fn run_rows(rows: &[RunRow]) -> String {
    let mut runs = String::new();
    for row in rows {
        let _ = write!(
            runs,
            r#"<tr class="run" data-id="{id}" data-status="{status}"><td>{id}</td><td>{suite}</td><td>{scenario}</td><td>{trigger}</td><td>{badge}</td><td>{started}</td><td>{score}</td><td>{ttr}</td><td>{anomalies}</td><td>{note}</td></tr>"#,
            id = row.id,
            status = row.status.as_str(),
            suite = escape(row.suite.as_deref().unwrap_or("-")),
            scenario = escape(&row.scenario),
            trigger = escape(&row.trigger),
            badge = badge(row.status),
            started = when(row.started_at.or(Some(row.queued_at))),
            score = row.score.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            ttr = row.max_ttr_ms().map_or_else(
                || "-".to_owned(),
                |ms| format!("{:.1}s", ms as f64 / 1000.0)
            ),
            anomalies = escape(
                &row.anomalies
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            note = escape(row.note.as_deref().unwrap_or("")),
        );
    }
    runs
}

fn next_rows(status: &SchedulerStatus) -> String {
    let mut next = String::new();
    for run in &status.next {
        let _ = write!(
            next,
            r#"<tr class="next" data-suite="{suite}"><td>{suite}</td><td><code>{cron}</code> {zone}</td><td>{at}</td><td>{scenarios}</td></tr>"#,
            suite = escape(&run.suite),
            cron = escape(&run.cron),
            zone = escape(&run.time_zone),
            at = run
                .at
                .map_or_else(|| "disabled".to_owned(), |t| when(Some(t))),
            scenarios = escape(&run.scenarios.join(", ")),
        );
    }
    next
}

/// The whole page.
pub fn render(
    status: &SchedulerStatus,
    rows: &[RunRow],
    trend_rows: &[RunRow],
    active_faults: &[String],
) -> String {
    let runs = run_rows(rows);
    let next = next_rows(status);
    let faults = if active_faults.is_empty() {
        "<p id=\"faults\">No active fault.</p>".to_owned()
    } else {
        let items = active_faults.iter().fold(String::new(), |mut out, f| {
            let _ = write!(out, "<li class=\"fault\">{}</li>", escape(f));
            out
        });
        format!("<ul id=\"faults\">{items}</ul>")
    };
    let trends = trends::weekly(trend_rows, 8, status.now);
    let plots = trends.iter().fold(String::new(), |mut out, t| {
        let _ = write!(
            out,
            "<div class=\"plot\"><h3>{}</h3>{}</div>",
            escape(&t.scenario),
            trends::svg(t)
        );
        out
    });
    let state = match (&status.halted, &status.blackout, &status.running) {
        (Some(why), _, _) => format!("halted ({})", escape(why)),
        (None, Some(b), _) => format!("blackout {} until {}", escape(&b.name), when(Some(b.until))),
        (None, None, Some((id, scenario))) => format!("running {} (run {id})", escape(scenario)),
        (None, None, None) => "idle".to_owned(),
    };
    format!(
        r#"<!doctype html>
<html><head><meta charset="utf-8"><title>Faultline</title>
<style>
body{{font-family:sans-serif;margin:1.5em;color:#222}}
table{{border-collapse:collapse;margin-bottom:1.5em}}
td,th{{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left;font-size:13px}}
.badge{{color:#fff;border-radius:3px;padding:1px 6px;font-size:12px}}
.plot{{display:inline-block;margin-right:1em}}
#controls{{margin:1em 0}}
</style></head>
<body>
<h1>Faultline</h1>
<p>Schedule <code>{schedule}</code>. State: <strong id="state">{state}</strong>. {queued} queued.
Updated {now}.</p>
<div id="controls">
<input id="token" type="password" placeholder="bearer token" size="30">
<button id="halt" onclick="post('/api/v1/halt')">Halt</button>
<button id="resume" onclick="post('/api/v1/resume')">Resume</button>
<span id="result"></span>
</div>
<h2>Active faults</h2>
{faults}
<h2>Next scheduled runs</h2>
<table id="next"><tr><th>suite</th><th>cron</th><th>next</th><th>scenarios</th></tr>{next}</table>
<h2>Trends</h2>
<p>TTR p50 (blue) and max (red) in seconds, mean score (green, dashed, 0-100), per week.</p>
<div id="trends">{plots}</div>
<h2>Runs</h2>
<table id="runs"><tr><th>id</th><th>suite</th><th>scenario</th><th>trigger</th><th>verdict</th><th>started</th><th>score</th><th>TTR max</th><th>anomalies</th><th>note</th></tr>{runs}</table>
<script>
function post(path) {{
  var token = document.getElementById('token').value;
  fetch(path, {{method: 'POST', headers: {{'Authorization': 'Bearer ' + token}}}})
    .then(function (r) {{ return r.text().then(function (t) {{
      document.getElementById('result').textContent = r.status + ' ' + t;
      if (r.ok) {{ setTimeout(function () {{ location.reload(); }}, 500); }}
    }}); }})
    .catch(function (e) {{ document.getElementById('result').textContent = String(e); }});
}}
</script>
</body></html>
"#,
        schedule = escape(&status.schedule),
        queued = status.queued,
        now = when(Some(status.now)),
    )
}
