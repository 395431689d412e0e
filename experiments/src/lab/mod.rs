//! The embedded lab target: network namespaces as nodes and zones, real processes as services.
//!
//! Layout on disk, under `<state root>/labs/<name>/`:
//! - `lab.json`: the topology and its digest, written before anything is created, so
//!   `lab down` can undo a `lab up` that was killed halfway;
//! - `services.json`: replicas, placement, PIDs, readiness and restarts (written by the agent);
//! - `cordoned.json`: cordoned nodes (written by drains);
//! - `agent.pid`, `agent.log`, `logs/`, `data/`: the agent and the services' output and data;
//! - `ledger/`: the fault ledger;
//! - `guards/`: one file per running deadline guard (see [`guard`]).
//!
//! Namespaces are named `fl-<lab>-<node>`, plus `fl-<lab>-sw` (the switch, holding the bridge)
//! and `fl-<lab>-client` (where the workload and probes run; it stands with the largest side of
//! a partition), and `fl-<lab>-c-<zone>` per zone (where a `per-zone` workload's clients run;
//! each shares its zone's fate). Lab and node names are lowercase
//! letters and digits only, so the prefix `fl-<lab>-` names exactly one lab's namespaces.

pub mod agent;
pub mod control;
pub mod faults;
pub mod guard;
pub mod jetstream;
pub mod net;
pub mod probe;
pub mod replica_read;
pub mod role;
pub mod run_lock;
pub mod scheduler;
pub mod servers;
mod session;
pub mod state;
pub mod target;
pub mod topology;

use std::path::PathBuf;

/// Namespace name prefix shared by everything Faultline creates.
pub const NETNS_PREFIX: &str = "fl-";
/// Default state root.
pub const DEFAULT_STATE_ROOT: &str = "/var/lib/faultline";
/// Default lab name.
pub const DEFAULT_LAB_NAME: &str = "default";

/// Errors of the lab target.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The topology file is malformed or invalid.
    #[error("topology {source_name}: {message}")]
    Topology {
        /// File name or `<built-in default>`.
        source_name: String,
        /// What is wrong, with line and column where known.
        message: String,
    },
    /// The lab name is not usable.
    #[error("lab name `{0}` is invalid: use 1 to 12 lowercase letters or digits, starting with a letter")]
    BadName(String),
    /// The lab needs root for namespaces and netlink.
    #[error(
        "the lab needs root (network namespaces, netlink): run chaosctl as root, e.g. with sudo"
    )]
    NotRoot,
    /// The name is taken by a lab with a different topology (or other server binaries).
    #[error("lab `{name}` is up with a different topology ({existing_source} there, {requested_source} asked): {difference}. Run `chaosctl lab down --lab {name}` first, or choose another --lab")]
    NameInUse {
        /// Lab name.
        name: String,
        /// Where the running lab's topology came from.
        existing_source: String,
        /// Where the requested topology came from.
        requested_source: String,
        /// How they differ, naming both programs where those differ.
        difference: String,
    },
    /// The lab is not up.
    #[error("lab `{0}` is not up; start it with `chaosctl lab up --lab {0}`")]
    NotUp(String),
    /// A name given on the command line matches nothing in the topology.
    #[error("{what} `{name}` is not in lab `{lab}`; known: {known}")]
    Unknown {
        /// Lab name.
        lab: String,
        /// `zone`, `node`, `service` or `replica`.
        what: &'static str,
        /// What was asked for.
        name: String,
        /// What exists.
        known: String,
    },
    /// A file of the lab's state could not be read or written.
    #[error("lab state {path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Building the lab network failed.
    #[error("lab network: `{command}` failed: {stderr}")]
    Network {
        /// The iproute2 command.
        command: String,
        /// What it printed.
        stderr: String,
    },
    /// A service did not become ready in time.
    #[error("lab `{lab}`: not ready after {seconds} s: {waiting}; see {log}")]
    NotReady {
        /// Lab name.
        lab: String,
        /// Seconds waited.
        seconds: u64,
        /// The replicas still not ready.
        waiting: String,
        /// Where to look.
        log: PathBuf,
    },
    /// Starting the agent failed.
    #[error("cannot start the lab agent {path}: {source}; build it with `cargo build --bins` or set FAULTLINE_AGENT")]
    Agent {
        /// The binary.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The deadline guard of a pause, hold or drain could not be started.
    #[error("lab `{lab}`: cannot start the deadline guard `{program}`: {reason}; run `chaosctl lab up --lab {lab}` with faultlined next to chaosctl (or FAULTLINE_AGENT naming it) to record where faultlined is")]
    Guard {
        /// Lab name.
        lab: String,
        /// The `faultlined` binary tried, or `faultlined` when the lab has none recorded.
        program: String,
        /// What failed.
        reason: String,
    },
    /// A service replica's command could not be started (its program is missing, say).
    #[error("cannot start {service}/{replica}: `{program}`: {source}; check the service's command in the topology (is the program installed, and on PATH or given by its full path?)")]
    ServiceStart {
        /// The service.
        service: String,
        /// The replica.
        replica: u32,
        /// The program the command names.
        program: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A service replica's process keeps exiting before it is ready (or exited once and its
    /// restart policy leaves it down).
    #[error("{service}/{replica} (`{program}`) {how} before it was ready{}; {}check the service's command in the topology (run it by hand to see why it stops)", repeated(*.times, *.retrying), log_ending(.log_tail))]
    ServiceExited {
        /// The service.
        service: String,
        /// The replica.
        replica: u32,
        /// The program the command names.
        program: String,
        /// How it last ended, e.g. `exited with 1`.
        how: String,
        /// How many times in a row.
        times: u32,
        /// Whether its restart policy starts it again.
        retrying: bool,
        /// The last lines of its log (standard output and error).
        log_tail: Vec<String>,
    },
    /// A fault primitive failed.
    #[error(transparent)]
    Fault(#[from] faultline_injectors::Error),
    /// A role selector could not be resolved.
    #[error("lab `{lab}`: cannot tell the primary of service `{service}`: {message}")]
    Role {
        /// Lab name.
        lab: String,
        /// Service name.
        service: String,
        /// Why, with every replica's answer where there were some.
        message: String,
    },
    /// Another run or inject holds the lab's run lock.
    #[error("lab `{lab}` is busy: {holder} holds its run lock ({path}); one run or inject at a time per lab: wait until it ends, or stop it with Ctrl-C (or `kill -INT` its pid)")]
    Busy {
        /// Lab name.
        lab: String,
        /// Who holds it, described.
        holder: String,
        /// The lock file.
        path: PathBuf,
    },
}

/// `, 3 times in a row`, or `, and its restart policy leaves it down`, for
/// [`LabError::ServiceExited`].
fn repeated(times: u32, retrying: bool) -> String {
    match (times, retrying) {
        (_, false) => ", and its restart policy leaves it down".to_owned(),
        (0 | 1, true) => String::new(),
        (n, true) => format!(", {n} times in a row"),
    }
}

/// What a replica's log ended with, for [`LabError::ServiceExited`].
fn log_ending(lines: &[String]) -> String {
    if lines.is_empty() {
        "it printed nothing; ".to_owned()
    } else {
        format!("its log ends: {}; ", lines.join(" | "))
    }
}

/// Checks a lab name.
pub fn check_lab_name(name: &str) -> Result<(), LabError> {
    // Lab names become namespace prefixes, so they follow the same rule as node names.
    topology::check_name("lab", name, 12).map_err(|_| LabError::BadName(name.to_owned()))
}

/// Whether we run as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
