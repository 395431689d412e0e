//! `chaosctl`: run chaos experiments, inject faults by hand, and manage the embedded lab.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = faultline_daemon::chaosctl::Cli::parse();
    match faultline_daemon::chaosctl::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("chaosctl: error: {error:#}");
            ExitCode::from(2)
        }
    }
}
