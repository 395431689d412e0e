//! `chaosctl`: run chaos experiments, inject faults by hand, and manage the embedded lab.

use faultline_experiments::stderr_line;
use std::process::ExitCode;

/// Lets `chaosctl … | head` end quietly, as command-line tools do, instead of panicking on a
/// closed stdout.
#[allow(unsafe_code)]
fn restore_default_sigpipe() {
    // SAFETY: called first thing in main, before any other thread exists; SIG_DFL is a valid
    // disposition and no handler code runs.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    let cli = faultline_daemon::chaosctl::Cli::parse_args();
    match faultline_daemon::chaosctl::run(cli) {
        Ok(code) => code,
        Err(error) => {
            stderr_line!("chaosctl: error: {error:#}");
            ExitCode::from(2)
        }
    }
}
