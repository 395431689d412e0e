//! The experiment layer: the lab target, the tenant workload and its history, the checkers and
//! reports, the experiment spec and the engine that runs the phases, and the scheduler that runs
//! suites of experiments unattended.
//!
//! `unsafe` is denied except in one place: the lab agent starts each service in a session of
//! its own with `setsid(2)` between fork and exec (`lab/agent.rs`), which `std` offers only
//! through the unsafe `pre_exec`.

pub mod checkers;
pub mod engine;
pub mod history;
pub mod kubernetes;
pub mod lab;
pub mod report;
pub mod schedule;
pub mod spec;
pub mod workload;

/// A YAML error as `line L column C: message`, without serde_yaml's trailing repeat of the
/// location.
pub(crate) fn describe_yaml_error(error: &serde_yaml::Error) -> String {
    let text = error.to_string();
    match error.location() {
        Some(at) => {
            let suffix = format!(" at line {} column {}", at.line(), at.column());
            let message = text.strip_suffix(&suffix).unwrap_or(&text);
            format!("line {} column {}: {message}", at.line(), at.column())
        }
        None => text,
    }
}
