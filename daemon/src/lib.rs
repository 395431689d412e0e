//! The binaries' shared code: `chaosctl` (the CLI) and `faultlined` (the agent, and `serve`,
//! the unattended scheduler with its HTTP API).

pub mod agent;
pub mod chaosctl;
pub mod serve;

use std::path::PathBuf;

/// Finds the `faultlined` binary: `FAULTLINE_AGENT`, else next to the running executable.
pub fn agent_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FAULTLINE_AGENT") {
        return PathBuf::from(path);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("faultlined")))
        .unwrap_or_else(|| PathBuf::from("faultlined"))
}
