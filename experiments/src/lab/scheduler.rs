//! The lab's scheduler: cordons live in `cordoned.json` (the agent never places a replica on a
//! cordoned node and evicts what runs there), holds in `held.json` (the agent does not restart a
//! held replica).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use faultline_injectors::node_drain::NodeScheduler;
use faultline_injectors::process::{NixSignaller, ProcessTarget, Signaller};
use faultline_injectors::service_stop::ReplicaHolder;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::Signal;

use super::state::{read_json, write_json, CordonedNodes, HeldReplicas, LabPaths, ServicesState};
use super::LabError;

/// [`NodeScheduler`] for one lab.
pub struct LabScheduler {
    paths: LabPaths,
    nodes: Vec<String>,
    signaller: NixSignaller,
}

impl LabScheduler {
    /// A scheduler for the lab at `paths` whose topology has `nodes`.
    pub fn new(paths: LabPaths, nodes: Vec<String>, proc_root: PathBuf) -> Self {
        Self {
            paths,
            nodes,
            signaller: NixSignaller::new(proc_root),
        }
    }

    fn update<T>(&self, path: &Path, change: impl FnOnce(&mut T)) -> Result<(), LabError>
    where
        T: Default + serde::Serialize + serde::de::DeserializeOwned,
    {
        let lock_path = self.paths.dir.join(".scheduler.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| LabError::State {
                path: lock_path.clone(),
                source,
            })?;
        let _lock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| LabError::State {
                path: lock_path.clone(),
                source: errno.into(),
            })?;
        let mut state: T = read_json(path)?.unwrap_or_default();
        change(&mut state);
        write_json(path, &state)
    }
}

fn scheduler_error(node: &str, error: &LabError) -> faultline_injectors::Error {
    faultline_injectors::Error::Scheduler {
        node: node.to_owned(),
        reason: error.to_string(),
    }
}

impl NodeScheduler for LabScheduler {
    fn cordon(&self, node: &str) -> faultline_injectors::Result<()> {
        if !self.nodes.iter().any(|n| n == node) {
            return Err(faultline_injectors::Error::Scheduler {
                node: node.to_owned(),
                reason: format!("no such node in lab `{}`", self.paths.name),
            });
        }
        self.update(&self.paths.cordoned_file(), |c: &mut CordonedNodes| {
            c.nodes.insert(node.to_owned());
        })
        .map_err(|e| scheduler_error(node, &e))
    }

    fn evict(&self, node: &str) -> faultline_injectors::Result<()> {
        let services: ServicesState = read_json(&self.paths.services_file())
            .map_err(|e| scheduler_error(node, &e))?
            .unwrap_or_default();
        for replica in services.replicas.iter().filter(|r| r.node == node) {
            if let (Some(pid), Some(start_ticks)) = (replica.pid, replica.start_ticks) {
                let target = ProcessTarget {
                    pid,
                    start_ticks,
                    label: replica.key(),
                };
                // SIGTERM: a drain is a graceful eviction; the agent restarts it elsewhere.
                self.signaller.signal(&target, Signal::SIGTERM)?;
            }
        }
        Ok(())
    }

    fn uncordon(&self, node: &str) -> faultline_injectors::Result<()> {
        self.update(&self.paths.cordoned_file(), |c: &mut CordonedNodes| {
            c.nodes.remove(node);
        })
        .map_err(|e| scheduler_error(node, &e))
    }

    fn cordoned(&self) -> faultline_injectors::Result<Vec<String>> {
        let cordoned: CordonedNodes = read_json(&self.paths.cordoned_file())
            .map_err(|e| scheduler_error("*", &e))?
            .unwrap_or_default();
        Ok(cordoned.nodes.into_iter().collect())
    }
}

impl ReplicaHolder for LabScheduler {
    fn hold(&self, replica: &str) -> faultline_injectors::Result<()> {
        self.update(&self.paths.held_file(), |h: &mut HeldReplicas| {
            h.replicas.insert(replica.to_owned());
        })
        .map_err(|e| scheduler_error(replica, &e))
    }

    fn release(&self, replica: &str) -> faultline_injectors::Result<()> {
        self.update(&self.paths.held_file(), |h: &mut HeldReplicas| {
            h.replicas.remove(replica);
        })
        .map_err(|e| scheduler_error(replica, &e))
    }

    fn held(&self) -> faultline_injectors::Result<Vec<String>> {
        let held: HeldReplicas = read_json(&self.paths.held_file())
            .map_err(|e| scheduler_error("*", &e))?
            .unwrap_or_default();
        Ok(held.replicas.into_iter().collect())
    }
}
