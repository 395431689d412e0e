//! `faultlined`: the Faultline agent. In lab mode it supervises one lab's services and enforces
//! fault deadlines; on a cluster it runs as a privileged DaemonSet on every node.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use faultline_experiments::lab::agent::run_agent;
use faultline_experiments::lab::control::{HostPaths, LabContext};

/// The Faultline agent.
#[derive(Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Supervise one embedded lab: start and restart its services, keep them off cordoned nodes,
    /// and revert faults whose deadline passed (every second). Started by `chaosctl lab up`.
    Lab {
        /// Lab name.
        #[arg(long, default_value = faultline_experiments::lab::DEFAULT_LAB_NAME)]
        name: String,
        /// Root of Faultline's state.
        #[arg(long, env = "FAULTLINE_STATE_ROOT", default_value = faultline_experiments::lab::DEFAULT_STATE_ROOT)]
        state_root: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.mode {
        Mode::Lab { name, state_root } => {
            let stop = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                if let Err(error) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
                    eprintln!("faultlined: cannot handle signal {signal}: {error}");
                    return ExitCode::from(2);
                }
            }
            let host = HostPaths::with_state_root(state_root);
            let result = LabContext::open(&host, &name).and_then(|ctx| run_agent(&ctx, &stop));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("faultlined: {error}");
                    ExitCode::from(2)
                }
            }
        }
    }
}
