//! The tenant workload: a realistic multi-tenant background load that records a complete
//! operation history ([`crate::history`]) while faults are injected.
//!
//! - **Tenants** ([`schedule::tenants`]): 100 by default, in tiers of 70 small, 25 medium and
//!   5 large, each tier with its own rate weight and payload sizes; some tenants of a tier are
//!   idle tenants.
//! - **Patterns**: chat sessions (5–10 messages, each a write followed by a reply read, with
//!   think time), batch ingestion (10–100 pipelined documents), background jobs (a work queue
//!   whose consumers record `deliver` operations), and idle tenants' bursts.
//! - **Open loop** ([`schedule::Schedule`]): every operation's intended time is fixed in advance
//!   by the seed; latency is measured from the intended time, so a stalled system shows up as
//!   latency rather than as fewer requests (coordinated omission).
//! - **Adapters**: NATS JetStream ([`nats`]) and the HTTP tenant-records contract ([`http`],
//!   [`contract`]), whose reference implementation is the lab's tenant gateway ([`gateway`]).
//! - **History** ([`recorder`]): every operation streams to disk as it completes; memory stays
//!   flat. After the load, [`Workload::read_back`] reads every tenant through every node.
//!
//! Use [`Workload`] from inside the lab's client namespace (as `chaosctl load` does), or
//! [`background::spawn_in_lab`] from anywhere.

pub mod background;
pub mod chat_ws;
pub mod clients;
pub mod clock;
pub mod config;
pub mod conformance;
pub mod contract;
pub mod gateway;
pub mod http;
pub mod httpc;
pub mod nats;
pub mod observe;
pub mod recorder;
pub mod rng;
pub mod run;
pub mod schedule;
pub mod slice;
pub mod stats;
pub mod target;

use std::path::PathBuf;

pub use background::{spawn, spawn_in_lab, BackgroundWorkload};
pub use clock::RunClock;
pub use config::{AdapterKind, ChatMode, Tier, WorkloadConfig};
pub use recorder::ObservationSink;
pub use run::{NodeReadBack, ProgressFn, ReadBackSummary, Workload, WorkloadReport};
pub use slice::{LiveLoad, SliceSpan};
pub use stats::{Progress, Summary};
pub use target::Target;
pub use tokio_util::sync::CancellationToken;

/// Errors of the workload, its adapters and the gateway.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The configuration is invalid.
    #[error("workload: {0}")]
    Config(String),
    /// An output file cannot be created or written.
    #[error("cannot write the {what} file {path}: {error}; check that its directory exists and is writable")]
    Output {
        /// `history` or `observations`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// Writing the history failed during the run; the history is incomplete.
    #[error("writing the history {path} failed: {message}; the history is incomplete")]
    HistoryWrite {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// The system under test cannot be reached.
    #[error("cannot reach {what} at {endpoints}: {reason}; is the lab up (`chaosctl lab status`) and are the URLs right?")]
    Unreachable {
        /// `NATS` or `tenant gateway`.
        what: String,
        /// Where we tried.
        endpoints: String,
        /// What the client said.
        reason: String,
    },
    /// A tenant could not be provisioned (its stream created).
    #[error("cannot provision tenant {tenant}: {reason}")]
    Provision {
        /// Tenant id.
        tenant: String,
        /// What failed.
        reason: String,
    },
    /// Entering the lab's client namespace failed.
    #[error("cannot enter network namespace {netns}: {error}; is the lab up and are we root?")]
    Netns {
        /// Namespace.
        netns: String,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The async runtime could not start.
    #[error("cannot start the workload's runtime: {0}")]
    Runtime(std::io::Error),
    /// The gateway failed.
    #[error("tenant gateway: {0}")]
    Gateway(String),
    /// The lab failed.
    #[error(transparent)]
    Lab(#[from] crate::lab::LabError),
}

impl WorkloadError {
    /// A short label for counting errors in metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            WorkloadError::Config(_) => "config",
            WorkloadError::Output { .. } => "output",
            WorkloadError::HistoryWrite { .. } => "history_write",
            WorkloadError::Unreachable { .. } => "unreachable",
            WorkloadError::Provision { .. } => "provision",
            WorkloadError::Netns { .. } => "netns",
            WorkloadError::Runtime(_) => "runtime",
            WorkloadError::Gateway(_) => "gateway",
            WorkloadError::Lab(_) => "lab",
        }
    }
}
