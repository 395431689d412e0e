//! The lab's files on disk, each written atomically (temp file, fsync, rename).

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use faultline_injectors::process::ProcessTarget;

use super::topology::Topology;
use super::{LabError, NETNS_PREFIX};

const GUARD_SUFFIX: &str = ".json";

/// Every path of one lab.
#[derive(Clone, Debug)]
pub struct LabPaths {
    /// Lab name.
    pub name: String,
    /// `<state root>/labs/<name>`.
    pub dir: PathBuf,
}

impl LabPaths {
    /// The paths of lab `name` under `state_root`.
    pub fn new(state_root: &Path, name: &str) -> Self {
        Self {
            name: name.to_owned(),
            dir: state_root.join("labs").join(name),
        }
    }

    /// The state root this lab lives under.
    pub fn state_root(&self) -> &Path {
        // `dir` is `<state root>/labs/<name>`.
        self.dir
            .parent()
            .and_then(Path::parent)
            .unwrap_or(Path::new("/"))
    }

    /// The halt marker of the whole state root, shared by every lab (see [`halt_marker_file`]).
    pub fn halt_marker_file(&self) -> PathBuf {
        halt_marker_file(self.state_root())
    }

    /// The state root's audit log (see [`audit_log_file`]).
    pub fn audit_log_file(&self) -> PathBuf {
        audit_log_file(self.state_root())
    }

    /// Topology and digest.
    pub fn lab_file(&self) -> PathBuf {
        self.dir.join("lab.json")
    }
    /// Replicas and restarts.
    pub fn services_file(&self) -> PathBuf {
        self.dir.join("services.json")
    }
    /// Cordoned nodes.
    pub fn cordoned_file(&self) -> PathBuf {
        self.dir.join("cordoned.json")
    }
    /// Replicas held down by stop faults.
    pub fn held_file(&self) -> PathBuf {
        self.dir.join("held.json")
    }
    /// The agent's PID.
    pub fn agent_pid_file(&self) -> PathBuf {
        self.dir.join("agent.pid")
    }
    /// One file per running deadline guard, `<fault id>.json`: its PID and start time.
    pub fn guards_dir(&self) -> PathBuf {
        self.dir.join("guards")
    }
    /// The file of fault `fault`'s deadline guard.
    pub fn guard_file(&self, fault: &str) -> PathBuf {
        self.guards_dir().join(format!("{fault}{GUARD_SUFFIX}"))
    }
    /// Every deadline guard recorded for this lab, by fault id, oldest fault first: PID and
    /// start time as the process that started it wrote them. A guard that ended by a kill
    /// leaves its file: check the process before trusting it.
    pub fn recorded_guards(&self) -> Vec<(String, ProcessTarget)> {
        let Ok(entries) = fs::read_dir(self.guards_dir()) else {
            return vec![];
        };
        let mut guards: Vec<(String, ProcessTarget)> = entries
            .filter_map(|entry| {
                let path = entry.ok()?.path();
                let fault = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(GUARD_SUFFIX)?
                    .to_owned();
                if fault.starts_with('.') {
                    return None;
                }
                Some((fault, read_json(&path).ok()??))
            })
            .collect();
        guards.sort_by(|a, b| a.0.cmp(&b.0));
        guards
    }
    /// The agent's log (the deadline guards write theirs there too).
    pub fn agent_log(&self) -> PathBuf {
        self.dir.join("agent.log")
    }
    /// Services' logs.
    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }
    /// Services' data.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    /// The fault ledger.
    pub fn ledger_dir(&self) -> PathBuf {
        self.dir.join("ledger")
    }
    /// The namespace of a node, or of `sw` / `client`.
    pub fn netns(&self, node: &str) -> String {
        format!("{NETNS_PREFIX}{}-{node}", self.name)
    }
    /// The prefix every namespace of this lab starts with.
    pub fn netns_prefix(&self) -> String {
        format!("{NETNS_PREFIX}{}-", self.name)
    }
}

/// `lab.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LabRecord {
    /// Lab name.
    pub name: String,
    /// Hex digest of the topology, to refuse a different topology under the same name.
    pub digest: String,
    /// The topology.
    pub topology: Topology,
    /// Creation time, Unix milliseconds.
    pub created_unix_ms: u64,
    /// Where the topology came from: its file, or `<built-in default>`.
    #[serde(default)]
    pub source: String,
    /// Every service's program and version, probed once the namespaces exist. Empty until
    /// then, and in labs brought up before versions were recorded.
    #[serde(default)]
    pub servers: Vec<crate::checkers::ServerVersion>,
    /// The `faultlined` binary `lab up` last started the agent with: faults start their
    /// deadline guards with it. Absent in labs brought up before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_binary: Option<PathBuf>,
}

/// One restart of a replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartEvent {
    /// When the new process started, Unix milliseconds.
    pub at_unix_ms: u64,
    /// Why: e.g. `killed by SIGKILL`, `exited with 1`, `evicted from a1 (cordoned)`.
    pub reason: String,
    /// The node it was started on.
    pub node: String,
}

/// One replica as the agent sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaState {
    /// Service name.
    pub service: String,
    /// Replica number, from 1.
    pub replica: u32,
    /// Node it runs on (or last ran on).
    pub node: String,
    /// PID of the running process.
    pub pid: Option<i32>,
    /// Its start time in clock ticks, to recognise a recycled PID.
    pub start_ticks: Option<u64>,
    /// Whether the readiness check passes.
    pub ready: bool,
    /// Every restart, oldest first.
    pub restarts: Vec<RestartEvent>,
    /// Why it is not running, when it is not.
    pub down_reason: Option<String>,
    /// Why its last start failed, while it has not been ready since: `lab up` stops waiting
    /// on a replica whose program cannot be started or that keeps exiting before it is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_failure: Option<StartFailure>,
}

/// A replica that could not be started, or that exited before it was ready.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartFailure {
    /// The program its command names, placeholders expanded.
    pub program: String,
    /// How it failed.
    pub kind: StartFailureKind,
    /// The spawn error (`No such file or directory (os error 2)`) or how it exited
    /// (`exited with 1`).
    pub reason: String,
    /// The OS error number of a failed spawn, e.g. 2 (ENOENT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_error: Option<i32>,
    /// How many times in a row it failed so.
    pub times: u32,
    /// Whether the agent starts it again (its restart policy), or leaves it down.
    pub retrying: bool,
}

/// How a start failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFailureKind {
    /// The program could not be started at all (missing, not executable, ...).
    Spawn,
    /// It started and exited before its readiness check ever passed.
    ExitedBeforeReady,
}

impl ReplicaState {
    /// `service/replica`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.service, self.replica)
    }
}

/// `services.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ServicesState {
    /// Every replica.
    pub replicas: Vec<ReplicaState>,
    /// When the agent last wrote this file, Unix milliseconds.
    pub updated_unix_ms: u64,
}

/// `cordoned.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CordonedNodes {
    /// Cordoned nodes.
    pub nodes: BTreeSet<String>,
}

/// `held.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HeldReplicas {
    /// Held replicas, `service/replica`.
    pub replicas: BTreeSet<String>,
}

/// Reads a JSON file; `None` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, LabError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LabError::State {
                path: path.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(LabError::State {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Writes a JSON file atomically and durably.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), LabError> {
    let state_error = |source| LabError::State {
        path: path.to_path_buf(),
        source,
    };
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(state_error)?;
    let tmp = parent.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state")
    ));
    let json = serde_json::to_vec_pretty(value).expect("lab state always serializes");
    let mut file = fs::File::create(&tmp).map_err(state_error)?;
    file.write_all(&json)
        .and_then(|()| file.sync_all())
        .map_err(state_error)?;
    fs::rename(&tmp, path).map_err(state_error)?;
    fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(state_error)
}

/// A stable hex digest (FNV-1a, 64 bit) of a topology; only used to compare topologies.
pub fn topology_digest(topology: &Topology) -> String {
    let json = serde_json::to_vec(topology).expect("topology always serializes");
    let hash = json.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// `<state root>/HALTED`: while it exists, no lab under the state root takes a new fault and
/// no run starts, whether the lab existed when `chaosctl halt` ran or was created after.
pub fn halt_marker_file(state_root: &Path) -> PathBuf {
    state_root.join("HALTED")
}

/// `<state root>/audit.jsonl`: every injection, revert, expiry, halt and resume in every lab,
/// one fsynced JSON line each (`chaosctl audit` prints it).
pub fn audit_log_file(state_root: &Path) -> PathBuf {
    state_root.join("audit.jsonl")
}

/// `<state root>/locks/<lab>.lock`: the lab's run lock (see [`super::run_lock`]). Outside the
/// lab's directory, so that a lab that is not up yet is not listed as one.
pub fn run_lock_file(state_root: &Path, lab: &str) -> PathBuf {
    state_root.join("locks").join(format!("{lab}.lock"))
}

/// Names of the labs that have a state directory under `state_root`.
pub fn known_labs(state_root: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(state_root.join("labs")) else {
        return vec![];
    };
    let mut names: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| super::check_lab_name(name).is_ok())
        .collect();
    names.sort();
    names
}
