//! `chaosctl check`: re-run the checkers on a recorded history.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use faultline_experiments::checkers::{check_files, CheckConfig, CheckError};
use faultline_experiments::report::{self, ReportFormat};

#[derive(Args)]
pub(crate) struct CheckArgs {
    /// The history file (JSON Lines, `faultline-history` format).
    #[arg(long)]
    history: PathBuf,
    /// The observations file recorded alongside it (leaders, fault windows, stream info).
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
}

/// Exit code: 0 valid, 1 invalid, 2 unknown or error.
pub(crate) fn run(args: &CheckArgs) -> ExitCode {
    match check(args) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("chaosctl: error: {error}");
            ExitCode::from(CheckError::EXIT_CODE.clamp(0, 255) as u8)
        }
    }
}

fn check(args: &CheckArgs) -> Result<u8, CheckError> {
    let config = match (&args.config, &args.scenario) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).map_err(|source| CheckError::Io {
                path: path.clone(),
                source,
            })?;
            serde_json::from_str(&text)
                .map_err(|e| CheckError::InvalidConfig(format!("{}: {e}", path.display())))?
        }
        (None, Some(scenario)) => CheckConfig::for_scenario(scenario),
        (None, None) => CheckConfig::default(),
    };
    let report = check_files(&args.history, args.observations.as_deref(), &config)?;
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
