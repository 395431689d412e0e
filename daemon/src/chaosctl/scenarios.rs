//! `chaosctl list | show | validate`: the catalog and specs, without touching the system.

use std::process::ExitCode;

use anyhow::Context as _;
use faultline_experiments::schedule;
use faultline_experiments::spec::catalog::{self, CATALOG};
use faultline_experiments::spec::ExperimentSpec;

use super::Output;

/// One built-in scenario as `chaosctl list` shows it.
#[derive(serde::Serialize)]
struct ScenarioRow {
    name: String,
    plan_id: Option<String>,
    faults: Vec<String>,
    max_ttr: String,
    description: String,
}

pub(crate) fn list(output: Output) -> anyhow::Result<ExitCode> {
    let mut rows = Vec::new();
    for (name, _) in CATALOG {
        let spec = catalog::spec(name)?;
        rows.push(ScenarioRow {
            name: spec.name.clone(),
            plan_id: spec.plan_id.clone(),
            faults: spec
                .faults
                .iter()
                .map(|f| f.kind.as_str().to_owned())
                .collect(),
            max_ttr: humantime::format_duration(spec.slo.max_ttr).to_string(),
            description: spec.description.trim().to_owned(),
        });
    }
    if output.print_data(&rows)? {
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<18} {:<5} {:<11} {:<9} DESCRIPTION",
        "NAME", "PLAN", "FAULT", "MAX TTR"
    );
    for row in &rows {
        let first_line = row.description.split(". ").next().unwrap_or_default();
        println!(
            "{:<18} {:<5} {:<11} {:<9} {first_line}.",
            row.name,
            row.plan_id.as_deref().unwrap_or("-"),
            row.faults.first().map_or("", String::as_str),
            row.max_ttr,
        );
    }
    println!("\nRun one with `chaosctl run NAME`; print its spec with `chaosctl show NAME`.");
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn show(name: &str) -> anyhow::Result<ExitCode> {
    print!("{}", catalog::yaml(name)?);
    Ok(ExitCode::SUCCESS)
}

/// Loads a spec from a file path or, failing that, the catalog, then validates it.
pub(crate) fn load(file_or_name: &str) -> anyhow::Result<(ExperimentSpec, String)> {
    let (spec, source) = read(file_or_name)?;
    spec.validate(&source)?;
    Ok((spec, source))
}

/// Reads a spec from a file path or, failing that, the catalog, without validating it (the
/// caller validates after its overrides).
pub(crate) fn read(file_or_name: &str) -> anyhow::Result<(ExperimentSpec, String)> {
    let path = std::path::Path::new(file_or_name);
    let (yaml, source) = if path.exists() {
        let yaml = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read spec file {file_or_name}"))?;
        (yaml, file_or_name.to_owned())
    } else if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
        || file_or_name.contains('/')
    {
        anyhow::bail!("spec file {file_or_name} does not exist");
    } else {
        (
            catalog::yaml(file_or_name)?.to_owned(),
            format!("catalog:{file_or_name}"),
        )
    };
    let spec = ExperimentSpec::parse(&yaml, &source)?;
    Ok((spec, source))
}

pub(crate) fn validate(file_or_name: &str) -> anyhow::Result<ExitCode> {
    let path = std::path::Path::new(file_or_name);
    if path.is_file() {
        let yaml =
            std::fs::read_to_string(path).with_context(|| format!("cannot read {file_or_name}"))?;
        if schedule::is_schedule_yaml(&yaml) {
            return validate_schedule(path);
        }
    }
    let (spec, source) = load(file_or_name)?;
    // Role selectors need the topology's role probes: checked when the spec names its topology
    // (else when the run plans, against the lab's).
    if let Some(path) = spec.topology_path(&source) {
        let yaml = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{source}: topology: cannot read {}; the path is relative to the spec file",
                path.display()
            )
        })?;
        let topology = faultline_experiments::lab::topology::Topology::parse(
            &yaml,
            &path.display().to_string(),
        )?;
        let services: Vec<(String, bool)> = topology
            .services
            .iter()
            .map(|s| (s.name.clone(), s.role.is_some()))
            .collect();
        spec.validate_roles(&source, &services)?;
    }
    println!(
        "{source}: valid ({} fault{}, {} total, baseline {})",
        spec.faults.len(),
        if spec.faults.len() == 1 { "" } else { "s" },
        humantime::format_duration(spec.duration),
        humantime::format_duration(spec.baseline)
    );
    Ok(ExitCode::SUCCESS)
}

/// `chaosctl validate SCHEDULE.yaml`: the schedule, every spec it names, and when each suite
/// comes due next.
fn validate_schedule(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    let schedule = schedule::load_schedule(path)?;
    let now = chrono::Utc::now();
    println!(
        "{}: valid schedule ({} suite{}, {} blackout window{})",
        path.display(),
        schedule.suites.len(),
        if schedule.suites.len() == 1 { "" } else { "s" },
        schedule.blackouts.len(),
        if schedule.blackouts.len() == 1 {
            ""
        } else {
            "s"
        },
    );
    for suite in &schedule.suites {
        let next = if suite.enabled {
            suite
                .cron
                .next_after(now, suite.zone.0)
                .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339())
        } else {
            "disabled".to_owned()
        };
        let scenarios: Vec<&str> = suite.entries.iter().map(|e| e.scenario.as_str()).collect();
        println!(
            "  {:<12} {:<14} {:<16} next {next}  {}",
            suite.name,
            suite.cron.as_str(),
            suite.zone.0.name(),
            scenarios.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
