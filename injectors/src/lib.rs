//! Fault primitives and the crash-safe fault lifecycle.
//!
//! Each fault module acts on one resolved target and offers `inject` and `revert`, both
//! idempotent; `revert` tolerates an `inject` that never ran, and "not found" counts as
//! reverted. Selection, deadlines and the durable record live in [`lifecycle`] and [`ledger`],
//! not in the faults.
//!
//! Privileged calls (netlink, setns, signals) sit behind narrow traits
//! ([`net_partition::RuleTable`], [`process::Signaller`], [`node_drain::NodeScheduler`],
//! [`service_stop::ReplicaHolder`]) with a
//! real implementation and a recording one, so the lifecycle logic is testable without root.

pub mod audit;
pub mod fault;
pub mod ledger;
pub mod lifecycle;
pub mod net_partition;
pub mod netns;
pub mod nftables;
pub mod node_drain;
pub mod pod_discovery;
pub mod process;
pub mod service_stop;

use std::path::PathBuf;

/// Everything that can go wrong while injecting, reverting or recording a fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ledger directory or one of its files could not be read or written.
    #[error("fault ledger {path}: {source}")]
    Ledger {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A ledger record exists but cannot be parsed.
    #[error("fault ledger record {path} is corrupt: {reason}")]
    CorruptRecord {
        /// The record file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// Entering a network namespace failed.
    #[error("cannot enter network namespace {netns}: {source}; is it still there (`ip netns list`) and are we root?")]
    EnterNetns {
        /// Namespace name.
        netns: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A netlink request inside a namespace failed.
    #[error("netlink request in namespace {netns} failed: {reason}")]
    Netlink {
        /// Namespace name.
        netns: String,
        /// What the kernel or the library said.
        reason: String,
    },
    /// Sending a signal failed for another reason than the process being gone.
    #[error("cannot send {signal} to pid {pid}: {source}")]
    Signal {
        /// Signal name.
        signal: String,
        /// Target process.
        pid: i32,
        /// The underlying errno.
        source: nix::errno::Errno,
    },
    /// The node scheduler (lab or Kubernetes) refused a cordon or uncordon.
    #[error("node {node}: {reason}")]
    Scheduler {
        /// Node name.
        node: String,
        /// What failed.
        reason: String,
    },
    /// New faults are blocked by `chaosctl halt`.
    #[error("faults are halted (since {since}); run `chaosctl resume` to allow new faults")]
    Halted {
        /// When the halt was requested, RFC 3339.
        since: String,
    },
    /// A requested duration is zero or longer than the cap.
    #[error("{}", duration_refusal(*requested_ms, *cap_ms))]
    Duration {
        /// What was asked for.
        requested_ms: u64,
        /// The cap in force.
        cap_ms: u64,
    },
    /// No free slot in the rule-priority range is left for a new partition.
    #[error("every rule-priority slot is taken by an active fault; revert some faults first")]
    NoFreeSlot,
    /// The proc root cannot be listed while looking for pod processes.
    #[error("cannot list processes in {path}: {source}; is it the node's /proc (hostPID)?")]
    ProcList {
        /// The proc root.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A live process's file under the proc root cannot be read.
    #[error("cannot read {path}: {source}; pod discovery needs root on the node's /proc")]
    ProcRead {
        /// The file, e.g. `/proc/1234/cgroup`.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A network namespace file cannot be followed or inspected.
    #[error("cannot identify the network namespace at {path}: {source}; reading another process's namespace needs root with CAP_SYS_PTRACE")]
    NetnsIdentity {
        /// The namespace file or link, e.g. `/proc/1234/ns/net`.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The directory of pod namespace entries cannot be created or listed.
    #[error("pod namespace directory {path}: {source}")]
    NetnsDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A pod namespace entry cannot be created or replaced.
    #[error("cannot write namespace entry {path}: {source}; is its directory writable and on a file system that holds symbolic links?")]
    NetnsEntryWrite {
        /// The entry (or its temporary name).
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A pod namespace entry cannot be removed.
    #[error("cannot remove namespace entry {path}: {source}")]
    NetnsEntryRemove {
        /// The entry.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The process that would end a fault at its deadline could not be started, so the fault
    /// was not injected (its record is removed).
    #[error("fault {fault} was not injected: {reason}")]
    DeadlineGuard {
        /// The fault's id.
        fault: String,
        /// Why the guard did not start, and what to do.
        reason: String,
    },
}

impl Error {
    /// A short, stable label for counting errors in metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Ledger { .. } => "ledger_io",
            Error::CorruptRecord { .. } => "ledger_corrupt",
            Error::EnterNetns { .. } => "enter_netns",
            Error::Netlink { .. } => "netlink",
            Error::Signal { .. } => "signal",
            Error::Scheduler { .. } => "scheduler",
            Error::Halted { .. } => "halted",
            Error::Duration { .. } => "duration",
            Error::NoFreeSlot => "no_free_slot",
            Error::ProcList { .. } => "proc_list",
            Error::ProcRead { .. } => "proc_read",
            Error::NetnsIdentity { .. } => "netns_identity",
            Error::NetnsDir { .. } => "netns_dir",
            Error::NetnsEntryWrite { .. } => "netns_entry_write",
            Error::NetnsEntryRemove { .. } => "netns_entry_remove",
            Error::DeadlineGuard { .. } => "deadline_guard",
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// [`Error::Duration`] in the user's units.
fn duration_refusal(requested_ms: u64, cap_ms: u64) -> String {
    let text =
        |ms: u64| humantime::format_duration(std::time::Duration::from_millis(ms)).to_string();
    if requested_ms == 0 {
        "a fault must hold for some time (its duration is 0s)".to_owned()
    } else {
        format!(
            "a fault of {} is longer than the {} limit; ask for less, or raise the limit with --max-fault-duration",
            text(requested_ms),
            text(cap_ms)
        )
    }
}
