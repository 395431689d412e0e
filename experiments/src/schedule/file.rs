//! The schedule file: named suites of scenarios with a cron expression and a time zone each,
//! blackout windows, the background load and retention. YAML with unknown fields rejected;
//! cron expressions and zone names are checked while parsing, so their errors carry a line and
//! column. [`ScheduleFile::validate`] is pure; [`ScheduleFile::resolve`] also reads the spec
//! files the suites name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::spec::{catalog, ExperimentSpec};

use super::cron::{CronExpr, Zone};
use super::ScheduleError;

/// The shipped schedule (the seed plan's cadence).
pub const DEFAULT_SCHEDULE: &str = include_str!("default-schedule.yaml");

/// A schedule file as written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleFile {
    /// Time zone for suites and blackouts that name none (IANA name). Default UTC.
    #[serde(default)]
    pub time_zone: Zone,
    /// What to do about runs missed while the daemon was down, unless a suite says otherwise.
    #[serde(default)]
    pub missed_runs: MissedRuns,
    /// The suites.
    pub suites: Vec<SuiteSpec>,
    /// Freeze periods: nothing is injected during one.
    #[serde(default)]
    pub blackouts: Vec<BlackoutSpec>,
    /// The background tenant load.
    #[serde(default)]
    pub background: BackgroundSpec,
    /// How long run directories and rotated history are kept.
    #[serde(default)]
    pub retention: RetentionSpec,
}

/// One named suite.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteSpec {
    /// Name: lower-case letters, digits and `-` (used in URLs and metric labels).
    pub name: String,
    /// What the suite is for.
    #[serde(default)]
    pub description: String,
    /// When it comes due: `minute hour day-of-month month day-of-week`.
    pub cron: CronExpr,
    /// The zone the cron expression is read in; default the file's `time_zone`.
    #[serde(default)]
    pub time_zone: Option<Zone>,
    /// Missed-run policy for this suite; default the file's `missed_runs`.
    #[serde(default)]
    pub missed_runs: Option<MissedRuns>,
    /// The scenarios, run one after the other.
    pub scenarios: Vec<SuiteEntry>,
    /// Where to send the run summary on a verdict change or a failure.
    #[serde(default)]
    pub webhook: Option<WebhookSpec>,
    /// A disabled suite is kept in the file but never comes due (it can still be triggered).
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// One scenario of a suite, with overrides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteEntry {
    /// A built-in scenario (`chaosctl list`) or a spec file, relative to the schedule file.
    pub scenario: String,
    /// How long each fault holds (as `chaosctl run --duration`).
    #[serde(
        default,
        with = "optional_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub duration: Option<Duration>,
    /// Number of tenants of the run's load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenants: Option<u32>,
    /// Operations per second of the run's load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

/// What to do about runs that came due while the daemon was down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissedRuns {
    /// Run the most recent missed run once, at start.
    #[default]
    RunOnce,
    /// Skip missed runs (each suite's skip is recorded in the run index).
    Skip,
}

impl MissedRuns {
    /// The policy as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            MissedRuns::RunOnce => "run-once",
            MissedRuns::Skip => "skip",
        }
    }
}

/// A webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// `http://` or `https://` URL that receives a POST with the run summary as JSON. An
    /// `https://` receiver's certificate is verified (against the system's roots, or
    /// `ca_file`).
    pub url: String,
    /// For `https://`: a PEM file of the CA certificates that sign the receiver's certificate
    /// (an internal CA), relative to the schedule file; they replace the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// A freeze period: either recurring (`cron` + `duration`) or fixed (`from` + `until`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackoutSpec {
    /// Name, shown when a run is stopped or skipped because of it.
    pub name: String,
    /// Recurring: when each window starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<CronExpr>,
    /// Recurring: how long each window lasts.
    #[serde(
        default,
        with = "optional_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub duration: Option<Duration>,
    /// Fixed: start, RFC 3339 (`2026-12-10T00:00:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Fixed: end, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// The zone `cron` is read in; default the file's `time_zone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<Zone>,
}

/// The background tenant load that `faultlined serve` keeps running.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackgroundSpec {
    /// Whether to run it.
    pub enabled: bool,
    /// Number of tenants.
    pub tenants: u32,
    /// Total operations per second.
    pub rate: f64,
    /// `nats` or `http`.
    pub adapter: String,
    /// With `adapter: http`: the lab services that serve the tenant-records contract, as a
    /// spec's `workload.services` (default `[gateway]`). A run is a slice of the load only
    /// when its spec names the same.
    pub services: Vec<String>,
    /// How often its history file is rotated (and the old one compressed).
    #[serde(with = "crate::spec::duration_text")]
    pub rotate_every: Duration,
    /// How long rotated history is kept.
    #[serde(with = "crate::spec::duration_text")]
    pub keep_for: Duration,
}

impl Default for BackgroundSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            tenants: 50,
            rate: 50.0,
            adapter: "nats".to_owned(),
            services: vec![crate::workload::target::GATEWAY_SERVICE.to_owned()],
            rotate_every: Duration::from_secs(3600),
            keep_for: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Retention of run directories.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSpec {
    /// Keep at most this many finished runs (the oldest go first).
    pub max_runs: u32,
    /// Remove finished runs older than this.
    #[serde(with = "crate::spec::duration_text")]
    pub max_age: Duration,
}

impl Default for RetentionSpec {
    fn default() -> Self {
        Self {
            max_runs: 500,
            max_age: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// Optional durations as text.
mod optional_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)] // serde's `with` passes a reference to the field
    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => serializer.serialize_str(&humantime::format_duration(*d).to_string()),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration ({e}); write e.g. 30s, 10m, 9h"
            ))
        })
    }
}

/// A suite ready to run: its specs loaded, overrides applied and validated.
#[derive(Clone, Debug)]
pub struct Suite {
    /// Name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// When it comes due.
    pub cron: CronExpr,
    /// The zone `cron` is read in.
    pub zone: Zone,
    /// Missed-run policy.
    pub missed_runs: MissedRuns,
    /// The scenarios, in order.
    pub entries: Vec<ResolvedEntry>,
    /// Where to send summaries.
    pub webhook: Option<WebhookSpec>,
    /// Whether it comes due by itself.
    pub enabled: bool,
}

/// One scenario of a suite, ready to run.
#[derive(Clone, Debug)]
pub struct ResolvedEntry {
    /// The scenario's name (from its spec).
    pub scenario: String,
    /// Where its spec came from (`catalog:NAME` or a file path).
    pub source: String,
    /// The spec with the entry's overrides applied.
    pub spec: ExperimentSpec,
}

/// A blackout window, resolved.
#[derive(Clone, Debug)]
pub enum Blackout {
    /// Starts at each cron occurrence and lasts `duration`.
    Recurring {
        /// Name.
        name: String,
        /// Window starts (boxed: a parsed expression is large, and most blackouts are few).
        cron: Box<CronExpr>,
        /// The zone `cron` is read in.
        zone: Zone,
        /// Length of each window.
        duration: Duration,
    },
    /// One fixed period.
    Fixed {
        /// Name.
        name: String,
        /// Start.
        from: DateTime<Utc>,
        /// End.
        until: DateTime<Utc>,
    },
}

/// A whole schedule, ready to run.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Where it came from (a file path, or `default`).
    pub source: String,
    /// The suites.
    pub suites: Vec<Suite>,
    /// The blackout windows.
    pub blackouts: Vec<Blackout>,
    /// The background load.
    pub background: BackgroundSpec,
    /// Retention.
    pub retention: RetentionSpec,
}

impl Schedule {
    /// A suite by name.
    pub fn suite(&self, name: &str) -> Option<&Suite> {
        self.suites.iter().find(|s| s.name == name)
    }
}

impl ScheduleFile {
    /// Parses YAML; unknown fields, bad cron expressions and unknown zones are errors with line
    /// and column.
    pub fn parse(yaml: &str, source_name: &str) -> Result<Self, ScheduleError> {
        serde_yaml::from_str(yaml).map_err(|e| ScheduleError::Parse {
            source_name: source_name.to_owned(),
            message: crate::describe_yaml_error(&e),
        })
    }

    /// The shipped schedule.
    pub fn shipped() -> Self {
        Self::parse(DEFAULT_SCHEDULE, "default").expect("the shipped schedule parses")
    }

    /// Pure validation: names, windows, overrides, and that built-in scenarios exist. Spec
    /// files are only read by [`ScheduleFile::resolve`].
    pub fn validate(&self, source_name: &str) -> Result<(), ScheduleError> {
        let invalid = |field: String, message: String| ScheduleError::Invalid {
            source_name: source_name.to_owned(),
            field,
            message,
        };
        if self.suites.is_empty() {
            return Err(invalid("suites".into(), "list at least one suite".into()));
        }
        let mut names = BTreeSet::new();
        for (i, suite) in self.suites.iter().enumerate() {
            if !names.insert(suite.name.as_str()) {
                return Err(invalid(
                    format!("suites[{i}].name"),
                    format!("suite `{}` is defined twice", suite.name),
                ));
            }
            validate_suite(suite)
                .map_err(|(field, message)| invalid(format!("suites[{i}].{field}"), message))?;
        }
        for (i, blackout) in self.blackouts.iter().enumerate() {
            resolve_blackout(blackout, self.time_zone)
                .map_err(|(name, message)| invalid(format!("blackouts[{i}].{name}"), message))?;
        }
        let bg = &self.background;
        if bg.tenants == 0 {
            return Err(invalid(
                "background.tenants".into(),
                "must be at least 1".into(),
            ));
        }
        if bg.rate.is_nan() || bg.rate <= 0.0 {
            return Err(invalid(
                "background.rate".into(),
                "must be above 0 operations per second".into(),
            ));
        }
        if !matches!(bg.adapter.as_str(), "nats" | "http") {
            return Err(invalid(
                "background.adapter".into(),
                format!("`{}` is not an adapter; use nats or http", bg.adapter),
            ));
        }
        if bg.adapter == "http"
            && (bg.services.is_empty() || bg.services.iter().any(String::is_empty))
        {
            return Err(invalid(
                "background.services".into(),
                "name the lab services that serve the HTTP contract, e.g. [gateway]".into(),
            ));
        }
        if bg.rotate_every < Duration::from_secs(60) {
            return Err(invalid(
                "background.rotate_every".into(),
                "must be at least 1m".into(),
            ));
        }
        if self.retention.max_runs == 0 {
            return Err(invalid(
                "retention.max_runs".into(),
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Validates, then loads every suite's specs (built-in, or files relative to `base_dir`),
    /// applies the overrides and validates each resulting spec.
    pub fn resolve(&self, source_name: &str, base_dir: &Path) -> Result<Schedule, ScheduleError> {
        self.validate(source_name)?;
        let mut suites = Vec::new();
        for (i, suite) in self.suites.iter().enumerate() {
            let mut entries = Vec::new();
            for (j, entry) in suite.scenarios.iter().enumerate() {
                let field = format!("suites[{i}].scenarios[{j}]");
                let (mut spec, source) =
                    load_spec(&entry.scenario, base_dir).map_err(|m| ScheduleError::Invalid {
                        source_name: source_name.to_owned(),
                        field: format!("{field}.scenario"),
                        message: m,
                    })?;
                spec.apply_overrides(entry.duration, entry.tenants, entry.rate);
                spec.validate(&source).map_err(|e| ScheduleError::Invalid {
                    source_name: source_name.to_owned(),
                    field,
                    message: e.to_string(),
                })?;
                entries.push(ResolvedEntry {
                    scenario: spec.name.clone(),
                    source,
                    spec,
                });
            }
            suites.push(Suite {
                name: suite.name.clone(),
                description: suite.description.clone(),
                cron: suite.cron.clone(),
                zone: suite.time_zone.unwrap_or(self.time_zone),
                missed_runs: suite.missed_runs.unwrap_or(self.missed_runs),
                entries,
                webhook: suite
                    .webhook
                    .as_ref()
                    .map(|hook| resolve_webhook(hook, base_dir))
                    .transpose()
                    .map_err(|message| ScheduleError::Invalid {
                        source_name: source_name.to_owned(),
                        field: format!("suites[{i}].webhook.ca_file"),
                        message,
                    })?,
                enabled: suite.enabled,
            });
        }
        let blackouts = self
            .blackouts
            .iter()
            .map(|b| resolve_blackout(b, self.time_zone))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|(field, message)| ScheduleError::Invalid {
                source_name: source_name.to_owned(),
                field,
                message,
            })?;
        Ok(Schedule {
            source: source_name.to_owned(),
            suites,
            blackouts,
            background: self.background.clone(),
            retention: self.retention.clone(),
        })
    }
}

/// Reads, parses and resolves a schedule file.
pub fn load_schedule(path: &Path) -> Result<Schedule, ScheduleError> {
    let source_name = path.display().to_string();
    let yaml = std::fs::read_to_string(path).map_err(|e| ScheduleError::Read {
        path: path.to_path_buf(),
        source: e,
    })?;
    let file = ScheduleFile::parse(&yaml, &source_name)?;
    file.resolve(&source_name, path.parent().unwrap_or(Path::new(".")))
}

/// The shipped schedule, resolved.
pub fn shipped_schedule() -> Schedule {
    ScheduleFile::shipped()
        .resolve("default", Path::new("."))
        .expect("the shipped schedule resolves")
}

/// Whether a YAML document is a schedule file rather than an experiment spec (it has `suites`).
pub fn is_schedule_yaml(yaml: &str) -> bool {
    serde_yaml::from_str::<serde_yaml::Value>(yaml)
        .ok()
        .and_then(|v| v.as_mapping().map(|m| m.contains_key("suites")))
        .unwrap_or(false)
}

/// Checks one suite; the error is (field within the suite, message).
fn validate_suite(suite: &SuiteSpec) -> Result<(), (String, String)> {
    if suite.name.is_empty()
        || !suite
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err((
            "name".into(),
            format!(
                "`{}` is not a suite name; use lower-case letters, digits and -",
                suite.name
            ),
        ));
    }
    if suite.scenarios.is_empty() {
        return Err(("scenarios".into(), "list at least one scenario".into()));
    }
    for (j, entry) in suite.scenarios.iter().enumerate() {
        let field = |name: &str| format!("scenarios[{j}].{name}");
        if entry.scenario.trim().is_empty() {
            return Err((
                field("scenario"),
                "name a built-in scenario or a spec file".into(),
            ));
        }
        if !looks_like_file(&entry.scenario) {
            catalog::yaml(&entry.scenario).map_err(|e| (field("scenario"), e.to_string()))?;
        }
        if entry.duration.is_some_and(|d| d.is_zero()) {
            return Err((field("duration"), "must be above 0".into()));
        }
        if entry.tenants == Some(0) {
            return Err((field("tenants"), "must be at least 1".into()));
        }
        if entry.rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
            return Err((
                field("rate"),
                "must be above 0 operations per second".into(),
            ));
        }
    }
    if let Some(hook) = &suite.webhook {
        let https = hook.url.starts_with("https://");
        if !https && !hook.url.starts_with("http://") {
            return Err((
                "webhook.url".into(),
                format!("`{}` is not an http:// or https:// URL", hook.url),
            ));
        }
        if hook.ca_file.is_some() && !https {
            return Err((
                "webhook.ca_file".into(),
                format!(
                    "a CA file only applies to an https:// URL, and `{}` is not one",
                    hook.url
                ),
            ));
        }
    }
    Ok(())
}

/// The webhook with its CA file relative to `base_dir`, read once so that a missing or empty
/// file is an error now rather than at the first failed delivery.
fn resolve_webhook(hook: &WebhookSpec, base_dir: &Path) -> Result<WebhookSpec, String> {
    let Some(ca_file) = &hook.ca_file else {
        return Ok(hook.clone());
    };
    let path = base_dir.join(ca_file);
    super::webhook::load_roots(&path)?;
    Ok(WebhookSpec {
        url: hook.url.clone(),
        ca_file: Some(path),
    })
}

fn looks_like_file(scenario: &str) -> bool {
    scenario.contains('/')
        || Path::new(scenario)
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

fn load_spec(scenario: &str, base_dir: &Path) -> Result<(ExperimentSpec, String), String> {
    if looks_like_file(scenario) {
        let path: PathBuf = base_dir.join(scenario);
        let yaml = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read spec file {}: {e}", path.display()))?;
        let source = path.display().to_string();
        let spec = ExperimentSpec::parse(&yaml, &source).map_err(|e| e.to_string())?;
        Ok((spec, source))
    } else {
        let spec = catalog::spec(scenario).map_err(|e| e.to_string())?;
        Ok((spec, format!("catalog:{scenario}")))
    }
}

fn resolve_blackout(spec: &BlackoutSpec, default_zone: Zone) -> Result<Blackout, (String, String)> {
    let name = spec.name.clone();
    match (&spec.cron, spec.duration, &spec.from, &spec.until) {
        (Some(cron), Some(duration), None, None) => {
            if duration.is_zero() {
                return Err(("duration".into(), "must be above 0".into()));
            }
            Ok(Blackout::Recurring {
                name,
                cron: Box::new(cron.clone()),
                zone: spec.time_zone.unwrap_or(default_zone),
                duration,
            })
        }
        (None, None, Some(from), Some(until)) => {
            let parse = |field: &str, text: &str| {
                DateTime::parse_from_rfc3339(text)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|e| {
                        (
                            field.to_owned(),
                            format!("`{text}` is not an RFC 3339 time ({e}); write e.g. 2026-12-10T00:00:00Z or 2026-12-10T00:00:00+01:00"),
                        )
                    })
            };
            let from = parse("from", from)?;
            let until = parse("until", until)?;
            if until <= from {
                return Err(("until".into(), "must be after `from`".into()));
            }
            Ok(Blackout::Fixed { name, from, until })
        }
        _ => Err((
            "name".into(),
            format!("blackout `{name}` needs either cron and duration (recurring) or from and until (fixed)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "\
suites:
  - name: nightly
    cron: \"0 2 * * *\"
    scenarios:
      - scenario: pod-failure
";

    fn error_of(yaml: &str) -> String {
        match ScheduleFile::parse(yaml, "s.yaml") {
            Err(e) => e.to_string(),
            Ok(file) => file
                .resolve("s.yaml", Path::new("."))
                .expect_err(yaml)
                .to_string(),
        }
    }

    #[test]
    fn the_shipped_schedule_follows_the_seed_plan() {
        let schedule = shipped_schedule();
        let nightly = schedule.suite("nightly").expect("nightly");
        let names: Vec<&str> = nightly
            .entries
            .iter()
            .map(|e| e.scenario.as_str())
            .collect();
        assert_eq!(names, ["pod-failure", "node-failure"]);
        let weekly = schedule.suite("weekly").expect("weekly");
        let names: Vec<&str> = weekly.entries.iter().map(|e| e.scenario.as_str()).collect();
        assert_eq!(names.len(), catalog::CATALOG.len());
        assert!(names.contains(&"az-failure"));
        let plan_ids: BTreeSet<_> = weekly
            .entries
            .iter()
            .filter_map(|e| e.spec.plan_id.clone())
            .collect();
        assert_eq!(plan_ids.len(), 6, "T6.1-T6.6: {plan_ids:?}");
        assert!(schedule.background.enabled);
    }

    #[test]
    fn minimal_file_resolves_with_defaults() {
        let file = ScheduleFile::parse(MINIMAL, "s.yaml").expect("parse");
        let schedule = file.resolve("s.yaml", Path::new(".")).expect("resolve");
        let suite = &schedule.suites[0];
        assert_eq!(suite.zone, Zone::default());
        assert_eq!(suite.missed_runs, MissedRuns::RunOnce);
        assert!(suite.enabled);
        assert_eq!(schedule.retention, RetentionSpec::default());
    }

    #[test]
    fn parse_errors_carry_line_and_column() {
        let cases = [
            (
                MINIMAL.replace("    cron:", "    crn: x\n    cron:"),
                "s.yaml: line 3 column 5",
                "unknown field `crn`",
            ),
            (
                MINIMAL.replace("0 2 * * *", "0 26 * * *"),
                "s.yaml: line 2 column 5: suites[0]",
                "`0 26 * * *` is not a cron expression",
            ),
            (
                format!("time_zone: Mars/Olympus\n{MINIMAL}"),
                "s.yaml: line 1 column 1",
                "`Mars/Olympus` is not a time zone",
            ),
            (
                MINIMAL.replace(
                    "- scenario: pod-failure",
                    "- scenario: pod-failure\n        duration: soon",
                ),
                "s.yaml: line 5 column 9: suites[0].scenarios[0]",
                "not a duration",
            ),
        ];
        for (yaml, at, what) in cases {
            let error = error_of(&yaml);
            assert!(
                error.contains(at) && error.contains(what),
                "{yaml}\n=> {error}"
            );
        }
    }

    #[test]
    fn validation_table() {
        let cases = [
            ("name: nightly", "name: Nightly", "suites[0].name"),
            (
                "scenario: pod-failure",
                "scenario: pod-failur",
                "unknown scenario",
            ),
            (
                "scenario: pod-failure",
                "scenario: pod-failure\n        tenants: 0",
                "suites[0].scenarios[0].tenants",
            ),
            (
                "scenario: pod-failure",
                "scenario: pod-failure\n        rate: -1",
                "suites[0].scenarios[0].rate",
            ),
            (
                "scenario: pod-failure",
                "scenario: specs/missing.yaml",
                "cannot read spec file",
            ),
            (
                "    scenarios:",
                "    webhook: {url: \"ftp://x\"}\n    scenarios:",
                "webhook.url",
            ),
            (
                "    scenarios:",
                "    webhook: {url: \"http://x\", ca_file: ca.pem}\n    scenarios:",
                "webhook.ca_file",
            ),
            (
                "    scenarios:",
                "    webhook: {url: \"https://x\", ca_file: missing-ca.pem}\n    scenarios:",
                "cannot read the CA file",
            ),
        ];
        for (from, to, expected) in cases {
            let yaml = MINIMAL.replacen(from, to, 1);
            let error = error_of(&yaml);
            assert!(error.contains(expected), "{to}: {error}");
        }
        let twice = format!("{MINIMAL}{}", &MINIMAL["suites:\n".len()..]);
        assert!(error_of(&twice).contains("defined twice"));
        for (blackout, expected) in [
            (
                "{name: b, cron: \"0 9 * * *\"}",
                "needs either cron and duration",
            ),
            (
                "{name: b, from: \"2026-01-02T00:00:00Z\", until: \"2026-01-01T00:00:00Z\"}",
                "must be after",
            ),
            (
                "{name: b, from: yesterday, until: \"2026-01-01T00:00:00Z\"}",
                "blackouts[0].from",
            ),
        ] {
            let error = error_of(&format!("{MINIMAL}blackouts:\n  - {blackout}\n"));
            assert!(error.contains(expected), "{blackout}: {error}");
        }
        for (background, expected) in [
            ("{adapter: grpc}", "background.adapter"),
            ("{adapter: http, services: []}", "background.services"),
            ("{adapter: http, services: [\"\"]}", "background.services"),
        ] {
            let error = error_of(&format!("{MINIMAL}background: {background}\n"));
            assert!(error.contains(expected), "{background}: {error}");
        }
        // An HTTP background load names its services; a NATS one needs none.
        for background in [
            "{adapter: http, services: [my-api]}",
            "{adapter: nats, services: []}",
        ] {
            let yaml = format!("{MINIMAL}background: {background}\n");
            let schedule = ScheduleFile::parse(&yaml, "s.yaml")
                .expect("parse")
                .resolve("s.yaml", Path::new("."))
                .unwrap_or_else(|e| panic!("{background}: {e}"));
            assert_eq!(
                schedule.background.services.len(),
                usize::from(background.contains("my-api"))
            );
        }
    }

    #[test]
    fn overrides_apply_to_the_spec_like_chaosctl_run() {
        let yaml = MINIMAL.replace(
            "scenario: pod-failure",
            "scenario: az-failure\n        duration: 40s\n        tenants: 7\n        rate: 33",
        );
        let schedule = ScheduleFile::parse(&yaml, "s.yaml")
            .expect("parse")
            .resolve("s.yaml", Path::new("."))
            .expect("resolve");
        let spec = &schedule.suites[0].entries[0].spec;
        assert_eq!(spec.workload.tenants, 7);
        assert!((spec.workload.rate - 33.0).abs() < f64::EPSILON);
        assert!(spec
            .faults
            .iter()
            .all(|f| f.duration == Duration::from_secs(40)));
        assert!(spec.duration >= spec.last_fault_end() + spec.recovery_deadline);
    }

    #[test]
    fn spec_files_are_read_relative_to_the_schedule() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("specs")).expect("mkdir");
        let mut spec = catalog::yaml("pod-failure").expect("catalog").to_owned();
        spec = spec.replace("name: pod-failure", "name: my-pod-kill");
        std::fs::write(dir.path().join("specs/mine.yaml"), spec).expect("write");
        let yaml = MINIMAL.replace("scenario: pod-failure", "scenario: specs/mine.yaml");
        std::fs::write(dir.path().join("schedule.yaml"), yaml).expect("write");
        let schedule = load_schedule(&dir.path().join("schedule.yaml")).expect("load");
        assert_eq!(schedule.suites[0].entries[0].scenario, "my-pod-kill");
    }

    #[test]
    fn schedule_yaml_is_told_apart_from_a_spec() {
        assert!(is_schedule_yaml(DEFAULT_SCHEDULE));
        assert!(!is_schedule_yaml(
            catalog::yaml("az-failure").expect("catalog")
        ));
        assert!(!is_schedule_yaml(": not yaml ["));
    }
}
