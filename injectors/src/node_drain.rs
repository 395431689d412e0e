//! Node drain: cordon the node so nothing new is placed there, then evict what runs on it so the
//! scheduler places it elsewhere. Revert uncordons.
//!
//! The scheduler is the target's: the lab supervisor, or the Kubernetes API (cordon, Eviction).

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::Result;

/// The seam to whatever places workloads on nodes.
pub trait NodeScheduler: Send + Sync {
    /// Marks `node` unschedulable. Idempotent.
    ///
    /// # Errors
    /// The node is unknown or the state cannot be written.
    fn cordon(&self, node: &str) -> Result<()>;
    /// Evicts the workloads running on `node`; the scheduler restarts them elsewhere where their
    /// placement allows. Idempotent; an empty node is fine.
    ///
    /// # Errors
    /// An eviction was refused.
    fn evict(&self, node: &str) -> Result<()>;
    /// Marks `node` schedulable again. Idempotent; an uncordoned or unknown node is fine.
    ///
    /// # Errors
    /// The state cannot be written.
    fn uncordon(&self, node: &str) -> Result<()>;
    /// The nodes currently cordoned.
    ///
    /// # Errors
    /// The state cannot be read.
    fn cordoned(&self) -> Result<Vec<String>>;
}

/// A [`NodeScheduler`] that only remembers, for logic tests.
#[derive(Debug, Default)]
pub struct RecordingScheduler {
    cordoned: Mutex<BTreeSet<String>>,
    evictions: Mutex<Vec<String>>,
}

impl RecordingScheduler {
    /// Nodes evicted so far, in order.
    pub fn evictions(&self) -> Vec<String> {
        self.evictions.lock().expect("poisoned").clone()
    }
}

impl NodeScheduler for RecordingScheduler {
    fn cordon(&self, node: &str) -> Result<()> {
        self.cordoned
            .lock()
            .expect("poisoned")
            .insert(node.to_owned());
        Ok(())
    }

    fn evict(&self, node: &str) -> Result<()> {
        self.evictions
            .lock()
            .expect("poisoned")
            .push(node.to_owned());
        Ok(())
    }

    fn uncordon(&self, node: &str) -> Result<()> {
        self.cordoned.lock().expect("poisoned").remove(node);
        Ok(())
    }

    fn cordoned(&self) -> Result<Vec<String>> {
        Ok(self
            .cordoned
            .lock()
            .expect("poisoned")
            .iter()
            .cloned()
            .collect())
    }
}
