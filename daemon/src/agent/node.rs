//! The agent's view of its own node below the API: which processes belong to which pod, the
//! network namespace entries the rule table enters, and the holds that keep stopped pods down.

use faultline_experiments::stderr_line;
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::Mutex;

use faultline_injectors::process::ProcessTarget;
use faultline_injectors::service_stop::ReplicaHolder;
use faultline_injectors::{Error, Result};

use super::journal::write_durably;

/// The seam to the node's processes and namespaces (real: `/proc` and cgroups; tests: a table).
pub trait NodeProcesses: Send + Sync {
    /// The live processes of the pod with this UID on this node; empty when it has none.
    fn pod_processes(&self, pod_uid: &str) -> Vec<ProcessTarget>;
    /// Every live pod process on this node, for the reconcile of orphaned pauses.
    fn all_pod_processes(&self) -> Vec<ProcessTarget>;
    /// Brings the namespace directory up to date (`node`, and `pod-<uid>` for every pod with
    /// its own network namespace) and returns the entry names, `node` first.
    fn refresh_namespaces(&self) -> Vec<String>;
}

/// The prefix of a held pod's name in the holder: `pod/<uid>`.
pub const HELD_POD_PREFIX: &str = "pod/";

/// Holds pods down for stop faults: the set is kept on disk (fsynced) and the agent's safety
/// loop SIGKILLs every process of a held pod each time round, so restarted containers die too.
#[derive(Debug)]
pub struct PodHolder {
    path: PathBuf,
    held: Mutex<BTreeSet<String>>,
}

impl PodHolder {
    /// A holder whose set lives in `path`.
    ///
    /// # Errors
    /// The file exists but cannot be read or parsed.
    pub fn open(path: impl Into<PathBuf>) -> io::Result<Self> {
        let path = path.into();
        let held = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => return Err(e),
        };
        Ok(Self {
            path,
            held: Mutex::new(held),
        })
    }

    fn change(&self, f: impl FnOnce(&mut BTreeSet<String>)) -> Result<()> {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut held);
        let bytes = serde_json::to_vec(&*held).expect("a set of strings serialises");
        write_durably(&self.path, &bytes).map_err(|source| Error::Ledger {
            path: self.path.clone(),
            source,
        })
    }

    /// The UIDs of the pods held down.
    pub fn held_pod_uids(&self) -> Vec<String> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter_map(|r| r.strip_prefix(HELD_POD_PREFIX).map(str::to_owned))
            .collect()
    }
}

impl ReplicaHolder for PodHolder {
    fn hold(&self, replica: &str) -> Result<()> {
        self.change(|held| {
            held.insert(replica.to_owned());
        })
    }

    fn release(&self, replica: &str) -> Result<()> {
        self.change(|held| {
            held.remove(replica);
        })
    }

    fn held(&self) -> Result<Vec<String>> {
        Ok(self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect())
    }
}

/// The agent never drains: drains go through the API (the runner's Eviction calls). This
/// scheduler has no cordons, so reconcile finds none to lift.
#[derive(Debug, Default)]
pub struct NoCordons;

impl faultline_injectors::node_drain::NodeScheduler for NoCordons {
    fn cordon(&self, node: &str) -> Result<()> {
        Err(Error::Scheduler {
            node: node.to_owned(),
            reason: "the node agent does not drain; drains go through the Eviction API".into(),
        })
    }

    fn evict(&self, node: &str) -> Result<()> {
        self.cordon(node)
    }

    fn uncordon(&self, _node: &str) -> Result<()> {
        Ok(())
    }

    fn cordoned(&self) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// A [`NodeProcesses`] from a fixed table, for logic tests.
#[derive(Debug, Default)]
pub struct TableProcesses {
    /// Pod UID -> its processes.
    pub pods: Mutex<Vec<(String, Vec<ProcessTarget>)>>,
}

impl TableProcesses {
    /// Sets a pod's processes.
    pub fn set_pod(&self, uid: &str, processes: Vec<ProcessTarget>) {
        let mut pods = self
            .pods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        pods.retain(|(u, _)| u != uid);
        pods.push((uid.to_owned(), processes));
    }
}

impl NodeProcesses for TableProcesses {
    fn pod_processes(&self, pod_uid: &str) -> Vec<ProcessTarget> {
        self.pods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(uid, _)| uid == pod_uid)
            .map(|(_, p)| p.clone())
            .unwrap_or_default()
    }

    fn all_pod_processes(&self) -> Vec<ProcessTarget> {
        self.pods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .flat_map(|(_, p)| p.clone())
            .collect()
    }

    fn refresh_namespaces(&self) -> Vec<String> {
        let mut names = vec![faultline_experiments::kubernetes::node_plan::NODE_NETNS.to_owned()];
        names.extend(
            self.pods
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .map(|(uid, _)| faultline_experiments::kubernetes::node_plan::pod_netns_name(uid)),
        );
        names
    }
}

/// The real [`NodeProcesses`]: pods found through `/proc/*/cgroup`, namespace entries kept as
/// links in the agent's namespace directory.
pub struct ProcNodeProcesses {
    netns: faultline_injectors::pod_discovery::PodNetnsDir,
}

impl ProcNodeProcesses {
    /// Pods under `proc_root`, namespace entries in `netns`.
    pub fn new(netns: faultline_injectors::pod_discovery::PodNetnsDir) -> Self {
        Self { netns }
    }

    fn targets(
        processes: Vec<faultline_injectors::pod_discovery::PodProcess>,
    ) -> Vec<ProcessTarget> {
        processes
            .into_iter()
            // The runtime's monitor (conmon) is not the workload: pausing it helps nobody.
            .filter(|p| !p.cgroup.runtime_monitor)
            .map(|p| p.target)
            .collect()
    }
}

impl NodeProcesses for ProcNodeProcesses {
    fn pod_processes(&self, pod_uid: &str) -> Vec<ProcessTarget> {
        use faultline_injectors::pod_discovery::{find_pod, PodUid};
        let Some(uid) = PodUid::parse(pod_uid) else {
            return Vec::new();
        };
        match find_pod(self.netns.proc_root(), &uid) {
            Ok(processes) => Self::targets(processes),
            Err(error) => {
                stderr_line!(
                    "faultlined agent: cannot list the processes of pod {pod_uid}: {error}"
                );
                Vec::new()
            }
        }
    }

    fn all_pod_processes(&self) -> Vec<ProcessTarget> {
        match faultline_injectors::pod_discovery::discover_pods(self.netns.proc_root()) {
            Ok(pods) => pods.into_values().flat_map(Self::targets).collect(),
            Err(error) => {
                stderr_line!("faultlined agent: cannot list pod processes: {error}");
                Vec::new()
            }
        }
    }

    fn refresh_namespaces(&self) -> Vec<String> {
        use faultline_injectors::pod_discovery::{pod_entry_name, NODE_ENTRY};
        if let Err(error) = self.netns.sync() {
            stderr_line!("faultlined agent: cannot refresh the namespace entries: {error}");
        }
        let mut names = vec![NODE_ENTRY.to_owned()];
        names.extend(
            self.netns
                .pod_entries()
                .unwrap_or_default()
                .iter()
                .map(pod_entry_name),
        );
        names
    }
}
