//! Where a whole run takes place: the [`Target`] its faults land on, and the few things a run
//! needs around the faults that differ between the lab and a cluster (where the tenant load
//! connects from, how a steady-state probe reaches a service, what to add to a fault's record,
//! which logs to keep). The phase loop in `run.rs` is one implementation for both; it sees a
//! site only through this trait.

use std::path::Path;
use std::time::Duration;

use crate::spec::Probe;
use crate::workload::{BackgroundWorkload, WorkloadConfig};

use super::execute::InjectedFault;
use super::target::Target;
use super::EngineError;

/// A lab or a cluster, as the run sees it.
pub trait RunSite {
    /// Its name for the run's record and report: the lab's name, or `cluster`.
    fn name(&self) -> String;

    /// Where the faults land.
    fn target(&self) -> &dyn Target;

    /// Starts the tenant load against the site's NATS servers or gateways, from where they can
    /// be reached (the lab's client namespace; a cluster's runner pod).
    ///
    /// # Errors
    /// The site has nothing the load can reach, or the workload did not start.
    fn spawn_load(&self, config: WorkloadConfig) -> Result<BackgroundWorkload, EngineError>;

    /// One steady-state probe, at the end of the baseline.
    ///
    /// # Errors
    /// The probe failed: why, for the run's record.
    fn probe(&self, probe: &Probe) -> Result<(), String>;

    /// After the recovery watch: how long the replacements of a fault's deleted pods took to
    /// be Ready, for faults that deleted pods. `None` by default.
    fn time_to_ready(&self, _fault: &InjectedFault) -> Option<Duration> {
        None
    }

    /// Copies the site's logs into `to`; best effort. Nothing by default.
    fn collect_logs(&self, _to: &Path) {}

    /// When an operator halted every fault on the site (`chaosctl halt`), if they did: the
    /// run then ends its fault windows and is marked aborted. Never, by default.
    fn halted(&self) -> Option<String> {
        None
    }
}
