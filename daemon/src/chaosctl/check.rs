//! `chaosctl check`: re-run the checkers on a recorded history, or on a run directory with the
//! SLOs of the spec it ran.

use faultline_experiments::stderr_line;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use faultline_experiments::checkers::{check_files, CheckConfig, CheckError};
use faultline_experiments::engine::run::check_config;
use faultline_experiments::report::{self, ReportFormat};
use faultline_experiments::spec::ExperimentSpec;

#[derive(Args)]
pub(crate) struct CheckArgs {
    /// A run directory (`<state root>/runs/RUN_ID` or a run's `--output-dir`): its
    /// history.jsonl and observations.jsonl, judged with the SLOs of its spec.yaml (what the
    /// run judged with) unless --default-slo, --scenario or --config says otherwise.
    #[arg(value_name = "RUN_DIR", required_unless_present = "history")]
    run_dir: Option<PathBuf>,
    /// The history file (JSON Lines, `faultline-history` format) [default: RUN_DIR/history.jsonl].
    #[arg(long)]
    history: Option<PathBuf>,
    /// The observations file recorded alongside it (leaders, fault windows, stream info)
    /// [default: RUN_DIR/observations.jsonl].
    #[arg(long)]
    observations: Option<PathBuf>,
    /// Report format: text (terminal summary), json, html or junit.
    #[arg(long, default_value = "text")]
    output: ReportFormat,
    /// Write the report to this file instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Use the seed SLO of this scenario (e.g. pod-failure: recovery within 10 s).
    #[arg(long)]
    scenario: Option<String>,
    /// A JSON file with the full checker configuration (SLO, bucket width, deadlines).
    #[arg(long, conflicts_with = "scenario")]
    config: Option<PathBuf>,
    /// With RUN_DIR: judge with the built-in default SLO (recovery within 60 s) instead of the
    /// spec's.
    #[arg(long, requires = "run_dir", conflicts_with_all = ["scenario", "config"])]
    default_slo: bool,
}

/// Exit code: 0 valid, 1 invalid, 2 unknown or error.
pub(crate) fn run(args: &CheckArgs) -> ExitCode {
    match check(args) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            stderr_line!("chaosctl: error: {error}");
            ExitCode::from(CheckError::EXIT_CODE.clamp(0, 255) as u8)
        }
    }
}

/// The checker configuration and where it came from, for the line that says so.
fn choose_config(args: &CheckArgs) -> Result<(CheckConfig, String), CheckError> {
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path).map_err(|source| CheckError::Io {
            path: path.clone(),
            source,
        })?;
        let config = serde_json::from_str(&text)
            .map_err(|e| CheckError::InvalidConfig(format!("{}: {e}", path.display())))?;
        return Ok((config, format!("--config {}", path.display())));
    }
    if let Some(scenario) = &args.scenario {
        return Ok((
            CheckConfig::for_scenario(scenario),
            format!("the seed SLO of scenario {scenario}"),
        ));
    }
    match &args.run_dir {
        Some(dir) if !args.default_slo => {
            let path = dir.join("spec.yaml");
            let text = std::fs::read_to_string(&path).map_err(|source| CheckError::Io {
                path: path.clone(),
                source,
            })?;
            let spec = ExperimentSpec::parse(&text, &path.display().to_string()).map_err(|e| {
                CheckError::InvalidConfig(format!(
                    "{e}; judge with the built-in defaults instead with --default-slo"
                ))
            })?;
            Ok((
                check_config(&spec),
                format!("the SLOs of {}", path.display()),
            ))
        }
        Some(_) => Ok((
            CheckConfig::default(),
            "the default SLO (--default-slo)".into(),
        )),
        None => Ok((CheckConfig::default(), "the default SLO".into())),
    }
}

/// The history and observations to read: the flags, else the run directory's files.
fn inputs(args: &CheckArgs) -> (PathBuf, Option<PathBuf>) {
    let in_dir = |name: &str| args.run_dir.as_deref().map(|dir: &Path| dir.join(name));
    let history = args
        .history
        .clone()
        .or_else(|| in_dir("history.jsonl"))
        .unwrap_or_default();
    let observations = args
        .observations
        .clone()
        .or_else(|| in_dir("observations.jsonl").filter(|p| p.exists()));
    (history, observations)
}

fn check(args: &CheckArgs) -> Result<u8, CheckError> {
    let (config, source) = choose_config(args)?;
    // On stderr, so that --output json|html|junit on stdout stays a clean document.
    stderr_line!(
        "chaosctl: judging with {source}: recovery within {}, success rate at least {}, p99 at most {}",
        humantime::format_duration(std::time::Duration::from_millis(config.slo.recovery_deadline_ms)),
        config.slo.min_success_rate,
        humantime::format_duration(std::time::Duration::from_millis(config.slo.max_p99_ms)),
    );
    let (history, observations) = inputs(args);
    let report = check_files(&history, observations.as_deref(), &config)?;
    if let Some(path) = &args.out {
        report::write_file(&report, args.output, path)?;
    } else {
        let stdout = std::io::stdout().lock();
        let written = match args.output {
            ReportFormat::Json => report::write_json(&report, stdout),
            ReportFormat::Html => report::write_html(&report, stdout),
            ReportFormat::Junit => report::write_junit(&report, stdout),
            ReportFormat::Text => {
                print!("{}", report::terminal_summary(&report, false));
                Ok(())
            }
        };
        written.map_err(|source| CheckError::Write {
            path: PathBuf::from("<stdout>"),
            source,
        })?;
    }
    Ok(report.exit_code().clamp(0, 255) as u8)
}
