//! `chaosctl runs`, `chaosctl runs show ID` and `chaosctl trends`: the run index, read directly
//! from `<state root>/runs.sqlite` (so they work whether or not the daemon is running).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use faultline_experiments::schedule::index::Owner;
use faultline_experiments::schedule::{trends, RunFilter, RunIndex, RunRow};

use super::Output;

#[derive(Args)]
pub(crate) struct RunsArgs {
    #[command(subcommand)]
    command: Option<RunsCommand>,
    /// Only runs of this suite.
    #[arg(long)]
    suite: Option<String>,
    /// Only runs of this scenario.
    #[arg(long)]
    scenario: Option<String>,
    /// Only runs queued since then: a duration back from now (`7d`, `12h`) or a date
    /// (`2026-06-01`, `2026-06-01T08:00:00Z`).
    #[arg(long)]
    since: Option<String>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 50)]
    limit: usize,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Subcommand)]
enum RunsCommand {
    /// One run in full: verdicts, TTR per fault, anomalies, where its reports are.
    Show {
        /// The index id (first column of `chaosctl runs`) or the run id (directory name).
        id: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Args)]
pub(crate) struct TrendsArgs {
    /// Only this scenario.
    #[arg(long)]
    scenario: Option<String>,
    /// How many weeks back.
    #[arg(long, default_value_t = 8)]
    weeks: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TrendsOutput::Text)]
    output: TrendsOutput,
    /// Write the output to this file instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TrendsOutput {
    Text,
    Json,
    Yaml,
    /// A self-contained HTML page with a plot per scenario.
    Html,
}

/// Opens the index and marks runs whose process is gone as aborted, so a killed `chaosctl run`
/// or daemon never shows as running forever.
pub(crate) fn open_index(state_root: &Path) -> anyhow::Result<RunIndex> {
    let path = RunIndex::default_path(state_root);
    let index = RunIndex::open(&path)?;
    index.abort_orphans(Utc::now(), Owner::is_alive)?;
    Ok(index)
}

/// Parses `--since`: a duration back from now, an RFC 3339 time or a date.
pub(crate) fn parse_since(text: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(duration) = humantime::parse_duration(text) {
        return Ok(now - chrono::Duration::from_std(duration).context("--since is too far back")?);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(day) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0).expect("midnight").and_utc());
    }
    anyhow::bail!(
        "--since {text}: write a duration back from now (7d, 12h) or a date (2026-06-01, 2026-06-01T08:00:00Z)"
    )
}

fn age(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - t).num_seconds().max(0);
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m", seconds / 60),
        3600..86_400 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86_400),
    }
}

fn ttr_text(row: &RunRow) -> String {
    row.max_ttr_ms().map_or_else(
        || "-".to_owned(),
        |ms| format!("{:.1}s", ms as f64 / 1000.0),
    )
}

fn anomalies_text(row: &RunRow) -> String {
    if row.anomalies.is_empty() {
        return "-".to_owned();
    }
    row.anomalies
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The kubectl-style table of `chaosctl runs`.
pub(crate) fn table(rows: &[RunRow], now: DateTime<Utc>) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<6} {:<10} {:<18} {:<9} {:<8} {:<6} {:<9} {:>5} {:>8}  ANOMALIES\n",
        "ID", "SUITE", "SCENARIO", "TRIGGER", "STATUS", "AGE", "DURATION", "SCORE", "TTR MAX"
    );
    for row in rows {
        let duration = row.duration().map_or_else(
            || "-".to_owned(),
            |d| humantime::format_duration(std::time::Duration::from_secs(d.as_secs())).to_string(),
        );
        let _ = writeln!(
            out,
            "{:<6} {:<10} {:<18} {:<9} {:<8} {:<6} {:<9} {:>5} {:>8}  {}",
            row.id,
            row.suite.as_deref().unwrap_or("-"),
            row.scenario,
            row.trigger,
            row.status.as_str(),
            age(row.queued_at, now),
            duration,
            row.score.map_or_else(|| "-".to_owned(), |s| s.to_string()),
            ttr_text(row),
            anomalies_text(row),
        );
    }
    out
}

fn show_text(row: &RunRow) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let when = |t: Option<DateTime<Utc>>| t.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339());
    let _ = writeln!(out, "id:        {}", row.id);
    let _ = writeln!(out, "run id:    {}", row.run_id.as_deref().unwrap_or("-"));
    let _ = writeln!(
        out,
        "suite:     {}",
        row.suite.as_deref().unwrap_or("- (manual)")
    );
    let _ = writeln!(out, "scenario:  {}", row.scenario);
    let _ = writeln!(out, "trigger:   {}", row.trigger);
    let _ = writeln!(out, "status:    {}", row.status.as_str());
    let _ = writeln!(out, "due:       {}", when(row.due_at));
    let _ = writeln!(out, "queued:    {}", row.queued_at.to_rfc3339());
    let _ = writeln!(out, "started:   {}", when(row.started_at));
    let _ = writeln!(out, "ended:     {}", when(row.ended_at));
    let _ = writeln!(
        out,
        "exit code: {}",
        row.exit_code
            .map_or_else(|| "-".to_owned(), |c| c.to_string())
    );
    let _ = writeln!(
        out,
        "score:     {}",
        row.score.map_or_else(|| "-".to_owned(), |s| s.to_string())
    );
    if let Some(note) = &row.note {
        let _ = writeln!(out, "note:      {note}");
    }
    if !row.verdicts.is_empty() {
        let _ = writeln!(out, "verdicts:");
        for (name, status) in &row.verdicts {
            let _ = writeln!(out, "  {name:<12} {status}");
        }
    }
    if !row.ttr.is_empty() {
        let _ = writeln!(out, "recovery:");
        for t in &row.ttr {
            let _ = writeln!(
                out,
                "  {:<24} {:<12} ttr {:<8} {}",
                t.fault_id,
                t.kind,
                t.ttr_ms.map_or_else(
                    || "-".to_owned(),
                    |ms| format!("{:.1}s", ms as f64 / 1000.0)
                ),
                if t.recovered {
                    "recovered"
                } else {
                    "NOT RECOVERED"
                }
            );
        }
    }
    if !row.anomalies.is_empty() {
        let _ = writeln!(out, "anomalies:");
        for (kind, count) in &row.anomalies {
            let _ = writeln!(out, "  {kind:<16} {count}");
        }
    }
    if let Some(dir) = &row.dir {
        let _ = writeln!(out, "results:   {dir}");
        let _ = writeln!(
            out,
            "report:    {}",
            Path::new(dir).join("report.html").display()
        );
    }
    out
}

pub(crate) fn runs(state_root: &Path, args: &RunsArgs) -> anyhow::Result<ExitCode> {
    let index = open_index(state_root)?;
    if let Some(RunsCommand::Show { id, output }) = &args.command {
        let row = index.get(id)?.with_context(|| {
            format!(
                "no run {id} in the index {}; `chaosctl runs` lists them",
                index.path().display()
            )
        })?;
        if !output.print_data(&row)? {
            print!("{}", show_text(&row));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let now = Utc::now();
    let filter = RunFilter {
        suite: args.suite.clone(),
        scenario: args.scenario.clone(),
        since: args
            .since
            .as_deref()
            .map(|s| parse_since(s, now))
            .transpose()?,
        limit: Some(args.limit),
    };
    let rows = index.list(&filter)?;
    if !args.output.print_data(&rows)? {
        if rows.is_empty() {
            println!("no runs yet; `chaosctl run NAME` or `faultlined serve` fills the index");
        } else {
            print!("{}", table(&rows, now));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn trends(state_root: &Path, args: &TrendsArgs) -> anyhow::Result<ExitCode> {
    let index = open_index(state_root)?;
    let now = Utc::now();
    let rows = index.list(&RunFilter {
        scenario: args.scenario.clone(),
        since: Some(now - chrono::Duration::weeks(i64::from(args.weeks))),
        ..RunFilter::default()
    })?;
    let trends = trends::weekly(&rows, args.weeks, now);
    let text = match args.output {
        TrendsOutput::Text => trends::text(&trends),
        TrendsOutput::Json => serde_json::to_string_pretty(&trends)? + "\n",
        TrendsOutput::Yaml => serde_yaml::to_string(&trends)?,
        TrendsOutput::Html => trends::html(&trends, "Faultline trends"),
    };
    if let Some(path) = &args.out {
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    } else {
        if args.output == TrendsOutput::Html && std::io::stdout().is_terminal() {
            anyhow::bail!("an HTML page is not for the terminal; add --out trends.html");
        }
        print!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_dates() {
        let now = DateTime::parse_from_rfc3339("2026-06-10T12:00:00Z")
            .expect("now")
            .with_timezone(&Utc);
        assert_eq!(
            parse_since("2d", now).expect("2d"),
            now - chrono::Duration::days(2)
        );
        assert_eq!(
            parse_since("2026-06-01", now).expect("date").to_rfc3339(),
            "2026-06-01T00:00:00+00:00"
        );
        assert!(parse_since("last tuesday", now)
            .expect_err("bad")
            .to_string()
            .contains("write a duration"));
    }
}
