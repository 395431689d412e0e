//! The operation history: the public, versioned record of every operation the workload issued.
//!
//! # Format (version 3)
//! JSON Lines. The first line is a [`HistoryHeader`]; every following line is one
//! [`Operation`], written when the operation completes, so lines are in completion order, not
//! invoke order. Readers must not assume any order and must tolerate a truncated last line
//! (a run that was killed). Observations made during the run (leaders, fault windows, final
//! stream info) go to a separate file, described in [`Observation`].
//!
//! Values are unique per operation attempt chain: `tenant/producer/counter`. A retry of the same
//! logical write is a new [`Operation`] with the same value and a higher `attempt`.
//!
//! # Versions
//! - **3** (written now). Version 2 plus the operation kind `connect`: a chat client opening
//!   its WebSocket (`--chat websocket`), `ok` once the socket works, `fail` when it could not be
//!   opened, so the time to a working socket after a fault is in the history; and the pattern
//!   `initial_state`: a run that is a slice of a load that keeps running (the daemon's
//!   background load) records what each tenant's stream held when it began, as reads of it.
//! - **2**. An operation's `node` is the server that answered it, taken when the
//!   answer arrived. An operation during which the client reconnected says so
//!   (`reconnected: true`) and also names the server it was sent through (`sent_node`): it may
//!   have been served by either, so no verdict about sides rests on it. The header records the
//!   client's connection settings (`client`), which decide how fast a dead server is noticed.
//! - **1**. The same lines without `client`, `sent_node` and `reconnected`. The NATS adapter
//!   took `node` when the operation was sent, so an operation buffered across a reconnect names
//!   a server it may never have reached. Readers still accept version 1; the checkers do not
//!   place a version-1 NATS operation on a partition side (docs/checkers.md).
//!
//! Versions are bumped whenever a line gains a field, because a reader of an older version
//! rejects unknown fields; readers accept every version from [`OLDEST_HISTORY_FORMAT_VERSION`]
//! to [`HISTORY_FORMAT_VERSION`]. The JSON Schema of the current version is
//! `schemas/history.schema.json`.

use serde::{Deserialize, Serialize};

pub mod scan;

/// The format name written in every header.
pub const HISTORY_FORMAT: &str = "faultline-history";
/// The current history format version (also written in the observations header).
pub const HISTORY_FORMAT_VERSION: u32 = 3;
/// The oldest history (and observations) format version readers still accept.
pub const OLDEST_HISTORY_FORMAT_VERSION: u32 = 1;
/// The format name of the observations file.
pub const OBSERVATIONS_FORMAT: &str = "faultline-observations";

/// First line of a history file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryHeader {
    /// Always [`HISTORY_FORMAT`].
    pub format: String,
    /// Format version; readers reject versions they do not know.
    pub version: u32,
    /// The run this history belongs to.
    pub run_id: String,
    /// Wall-clock start of the run, Unix milliseconds. Monotonic times are relative to it.
    pub started_at_unix_ms: u64,
    /// Target system adapter, e.g. `nats` or `http`.
    pub adapter: String,
    /// How the load's clients were configured (version 2 on; absent in version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientSettings>,
}

/// The load's client settings that decide how failures look in the history: how fast a dead
/// server is noticed, how long an operation may wait. Fields that do not apply to the adapter
/// are absent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientSettings {
    /// NATS: how often the client pings its server when nothing else arrives, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_interval_ms: Option<u64>,
    /// NATS: unanswered pings the client tolerates; at the next ping it drops the connection
    /// and reconnects. A dead server is therefore noticed within
    /// `(max_pings_out + 1) × ping_interval_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pings_out: Option<u32>,
    /// Longest wait for one connection attempt, ms.
    pub connect_timeout_ms: u64,
    /// Longest wait for one operation's answer (NATS: publish acknowledgement or request;
    /// HTTP: the whole request), ms.
    pub request_timeout_ms: u64,
    /// NATS: longest pause between two reconnect attempts, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_delay_max_ms: Option<u64>,
    /// HTTP: retries after a failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

/// What an operation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// Stored one value (a JetStream publish, or an HTTP record write).
    Write,
    /// Read a tenant's stored values (during the run, or in the final read-back).
    Read,
    /// A consumer received a value (background jobs); duplicates here are reported, not invalid.
    Deliver,
    /// A chat client opened its WebSocket (version 3 on): `ok` when the upgrade was accepted
    /// and the socket works, `fail` when it could not be opened (nothing was sent). No value;
    /// `node` is the replica that accepted it (or the endpoint tried).
    Connect,
}

/// Which workload pattern produced an operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// Request/reply bursts of a chat session.
    Chat,
    /// Batch document ingestion.
    Batch,
    /// Background work-queue jobs.
    Job,
    /// An idle tenant's burst.
    Idle,
    /// The final read-back after heal, through one node: for NATS, a direct get answered by
    /// any replica of the stream (the server picks), so it shows what the cluster holds.
    ReadBack,
    /// The final read-back of one replica alone: the stream's other replicas were held down
    /// (paused), so `node`'s own store answered. What one node holds.
    ReadBackReplica,
    /// What a tenant's stream held when the run began, read through one node (version 3 on).
    /// Only a run that is a slice of a load that keeps running has it: the load wrote those
    /// values before the run. They count as written and acknowledged before the run, so each
    /// must still be in the final read-back, and reading one is not `unexpected`.
    InitialState,
}

impl Pattern {
    /// Whether it is part of the final read-back (through the cluster or of one replica).
    pub fn is_read_back(self) -> bool {
        matches!(self, Self::ReadBack | Self::ReadBackReplica)
    }

    /// Whether the tenant load issued it (not the read-backs or the initial-state read, which
    /// the run issued to judge the load).
    pub fn is_load(self) -> bool {
        !self.is_read_back() && self != Self::InitialState
    }
}

/// How an operation ended. As in Jepsen: `fail` only when the error proves the operation had
/// no effect; anything uncertain is `info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged: it happened.
    Ok,
    /// Definitely did not happen.
    Fail,
    /// May or may not have happened.
    Info,
}

/// One value seen by a read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadItem {
    /// Stream sequence (or record position) at which the value is stored.
    pub seq: u64,
    /// The value, `tenant/producer/counter`.
    pub value: String,
}

/// One completed operation: one line of the history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    /// Tenant id, e.g. `t017`.
    pub tenant: String,
    /// The logical client process (producer or consumer) that issued it.
    pub process: String,
    /// The node or endpoint that answered the operation: for NATS the server the connection
    /// was on when the answer (or the error) arrived, for HTTP the replica named by
    /// `X-Served-By`, else the endpoint tried.
    pub node: String,
    /// Set when the client reconnected while the operation was under way: it may have been
    /// served through `sent_node` or `node` (or a server in between), so its node is uncertain.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reconnected: bool,
    /// When `reconnected`: the server the connection was on when the operation was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_node: Option<String>,
    /// The zone the client that issued it stood in, when the load's clients stood per zone or
    /// in one zone (`clients: per-zone` or `{zone: X}`); absent when they stood with the
    /// majority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_zone: Option<String>,
    /// What it did.
    pub kind: OpKind,
    /// Which workload pattern issued it.
    pub pattern: Pattern,
    /// For writes and deliveries: the value. Absent for reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Attempt number for retries of one value, starting at 1.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// The stream or key the operation addressed.
    pub stream: String,
    /// For acknowledged writes: the sequence the system assigned. For deliveries: the stream
    /// sequence delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Intended send time (open-loop schedule), ns since the run start, monotonic.
    pub invoke_ns: u64,
    /// Completion time, ns since the run start, monotonic.
    pub complete_ns: u64,
    /// Intended send time, Unix milliseconds.
    pub invoke_unix_ms: u64,
    /// Completion time, Unix milliseconds.
    pub complete_unix_ms: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// The error text, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For reads: what was read, in stream order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<Vec<ReadItem>>,
    /// For reads: the tenant whose data the read returned according to the server, when it
    /// differs from `tenant` this is a cross-tenant read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_tenant: Option<String>,
}

fn first_attempt() -> u32 {
    1
}

/// One line of the observations file: something seen during the run besides operations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Observation {
    /// First line of an observations file.
    Header {
        /// Always [`OBSERVATIONS_FORMAT`].
        format: String,
        /// Same as the history's.
        version: u32,
        /// The run.
        run_id: String,
    },
    /// The leader of a stream (or `$meta` for the JetStream meta group) as one node saw it.
    Leader {
        /// Sample time, ns since the run start.
        at_ns: u64,
        /// Node that answered.
        observer: String,
        /// Stream name, or `$meta`.
        stream: String,
        /// The leader it reported; `None` when it reported no leader.
        leader: Option<String>,
    },
    /// A fault window.
    Fault {
        /// Fault id from the ledger.
        fault_id: String,
        /// Fault kind, e.g. `partition`, `kill`, `pause`, `drain`, `quorum-loss`.
        kind: String,
        /// When the fault was fully in effect (the injection completed in every namespace and
        /// process), ns since the run start.
        start_ns: u64,
        /// When the heal completed, ns since the run start; `None` if the run ended first.
        end_ns: Option<u64>,
        /// When the injection began, ns since the run start. From here to `start_ns` the fault
        /// is partly in effect: no verdict rests on an operation overlapping that interval.
        /// Absent in observations that predate it (then `start_ns` is when it began).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        injecting_ns: Option<u64>,
        /// When the heal began, ns since the run start; the fault is certainly in effect until
        /// then, and partly in effect until `end_ns`. Absent when unknown (then `end_ns`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reverting_ns: Option<u64>,
        /// For partitions: the sides, as lists of node names. Empty for other kinds.
        #[serde(default)]
        sides: Vec<Vec<String>>,
        /// Nodes or peers that were stopped, paused or cut off (majority faults).
        #[serde(default)]
        affected: Vec<String>,
        /// Whether the system is expected to keep serving during the fault (TTR from fault,
        /// not from heal).
        #[serde(default)]
        survivable: bool,
        /// For a fault aimed by a role selector: what the role probe chose and why, e.g. `zone
        /// of primary of etcd = b (etcd/2 on b1 said leader; etcd/1: follower, ...)`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chosen: Option<String>,
    },
    /// Stream state as one node reported it during the final read-back.
    StreamInfo {
        /// Sample time, ns since the run start.
        at_ns: u64,
        /// Node that answered.
        observer: String,
        /// Stream name.
        stream: String,
        /// Leader it reported.
        leader: Option<String>,
        /// Replica peer names.
        replicas: Vec<String>,
        /// Last sequence.
        last_seq: u64,
        /// First sequence still stored; absent in older observations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first_seq: Option<u64>,
        /// Messages stored; absent in older observations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        messages: Option<u64>,
        /// Bytes stored: replicas with equal counts and different contents differ here.
        /// Absent in older observations.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bytes: Option<u64>,
    },
    /// The end of the settle before the final read-back: the read-back waited until every
    /// server reported the same state for every stream, or until the convergence deadline.
    /// Every server's stream state at this moment is recorded as `stream_info` with the same
    /// `at_ns`.
    Settled {
        /// When the wait ended, ns since the run start.
        at_ns: u64,
        /// The convergence deadline it waited for at most, ns since the run start.
        deadline_ns: u64,
        /// Whether every stream's per-server states agreed.
        converged: bool,
        /// Servers whose monitoring endpoint did not answer at the end.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        unanswered: Vec<String>,
    },
}
