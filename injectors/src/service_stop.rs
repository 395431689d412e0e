//! Stopping a service replica and keeping it down until revert: the supervisor is told to hold
//! the replica, then its process gets SIGKILL. Revert releases the hold and the supervisor starts
//! it again.

use std::collections::BTreeSet;
use std::sync::Mutex;

use crate::Result;

/// The seam to whatever restarts replicas (the lab agent, or a Kubernetes controller).
pub trait ReplicaHolder: Send + Sync {
    /// Keeps `replica` (e.g. `nats/2`) from being restarted. Idempotent.
    ///
    /// # Errors
    /// The hold cannot be recorded.
    fn hold(&self, replica: &str) -> Result<()>;
    /// Lets `replica` be restarted again. Idempotent; an unheld replica is fine.
    ///
    /// # Errors
    /// The hold cannot be removed.
    fn release(&self, replica: &str) -> Result<()>;
    /// The replicas currently held.
    ///
    /// # Errors
    /// The state cannot be read.
    fn held(&self) -> Result<Vec<String>>;
}

/// A [`ReplicaHolder`] that only remembers, for logic tests.
#[derive(Debug, Default)]
pub struct RecordingHolder {
    held: Mutex<BTreeSet<String>>,
}

impl ReplicaHolder for RecordingHolder {
    fn hold(&self, replica: &str) -> Result<()> {
        self.held
            .lock()
            .expect("poisoned")
            .insert(replica.to_owned());
        Ok(())
    }

    fn release(&self, replica: &str) -> Result<()> {
        self.held.lock().expect("poisoned").remove(replica);
        Ok(())
    }

    fn held(&self) -> Result<Vec<String>> {
        Ok(self
            .held
            .lock()
            .expect("poisoned")
            .iter()
            .cloned()
            .collect())
    }
}
