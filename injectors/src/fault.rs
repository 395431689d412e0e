//! The fault seam: every fault kind as one resolved action with `inject` and `revert`.
//!
//! Both are idempotent, and `revert` tolerates an `inject` that never ran or ran halfway:
//! deleting a rule that is not there, continuing a process that is gone, or uncordoning a node
//! that is not cordoned all count as reverted.

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use crate::net_partition::{PartitionRule, RuleTable};
use crate::node_drain::NodeScheduler;
use crate::process::{ProcessTarget, Signaller};
use crate::service_stop::ReplicaHolder;
use crate::Result;

/// A fault resolved down to what it touches, as stored in the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum FaultAction {
    /// Policy rules that cut the given sides off from each other.
    Partition {
        /// The rule-priority slot this partition owns.
        slot: u32,
        /// The sides, by node name, for reports.
        sides: Vec<Vec<String>>,
        /// Every rule, in every namespace.
        rules: Vec<PartitionRule>,
    },
    /// SIGKILL one process; nothing to revert, the supervisor restarts it.
    Kill {
        /// The victim.
        process: ProcessTarget,
    },
    /// SIGSTOP one process until revert sends SIGCONT.
    Pause {
        /// The paused process.
        process: ProcessTarget,
    },
    /// Hold a replica down (no restarts) and SIGKILL it, until revert releases it.
    Stop {
        /// The replica, e.g. `nats/2`.
        replica: String,
        /// Its process when the fault started.
        process: ProcessTarget,
    },
    /// Cordon and evict a node until revert uncordons it.
    Drain {
        /// Node name.
        node: String,
    },
}

impl FaultAction {
    /// The kind's name as shown to users.
    pub fn kind_name(&self) -> &'static str {
        match self {
            FaultAction::Partition { .. } => "partition",
            FaultAction::Kill { .. } => "kill",
            FaultAction::Pause { .. } => "pause",
            FaultAction::Drain { .. } => "drain",
            FaultAction::Stop { .. } => "stop",
        }
    }

    /// Whether the fault is over as soon as it was injected (nothing to hold or revert).
    pub fn is_instant(&self) -> bool {
        matches!(self, FaultAction::Kill { .. })
    }

    /// Whether the fault ends at its deadline with no Faultline process alive: a kill is over
    /// at once, and a partition's elements carry a kernel timeout. A pause, a hold and a drain
    /// need a process of ours to revert them at their deadline.
    pub fn ends_by_itself(&self) -> bool {
        matches!(
            self,
            FaultAction::Kill { .. } | FaultAction::Partition { .. }
        )
    }

    /// Injects the fault until `deadline_unix_ms`. Idempotent. Partitions hand the deadline
    /// to the kernel, which ends them then even with no Faultline process alive.
    ///
    /// # Errors
    /// The privileged call failed; the caller reverts and removes the record.
    pub fn inject(&self, env: &Injectors<'_>, deadline_unix_ms: u64) -> Result<()> {
        match self {
            FaultAction::Partition { rules, .. } => env.rules.add(rules, deadline_unix_ms),
            FaultAction::Kill { process } => env.signals.signal(process, Signal::SIGKILL).map(drop),
            FaultAction::Pause { process } => {
                env.signals.signal(process, Signal::SIGSTOP).map(drop)
            }
            FaultAction::Drain { node } => {
                env.scheduler.cordon(node)?;
                env.scheduler.evict(node)
            }
            FaultAction::Stop { replica, process } => {
                // Hold first, or the supervisor may restart it between the two steps.
                env.holder.hold(replica)?;
                env.signals.signal(process, Signal::SIGKILL).map(drop)
            }
        }
    }

    /// Reverts the fault. Idempotent, and fine if `inject` never ran.
    ///
    /// # Errors
    /// The privileged call failed for another reason than "not found"; the record stays so a
    /// later reconcile retries.
    pub fn revert(&self, env: &Injectors<'_>) -> Result<()> {
        match self {
            FaultAction::Partition { rules, .. } => env.rules.delete(rules),
            FaultAction::Kill { .. } => Ok(()),
            FaultAction::Pause { process } => {
                env.signals.signal(process, Signal::SIGCONT).map(drop)
            }
            FaultAction::Drain { node } => env.scheduler.uncordon(node),
            FaultAction::Stop { replica, .. } => env.holder.release(replica),
        }
    }
}

/// The privileged implementations a fault acts through.
#[derive(Clone, Copy)]
pub struct Injectors<'a> {
    /// Policy rules.
    pub rules: &'a dyn RuleTable,
    /// Signals.
    pub signals: &'a dyn Signaller,
    /// Node cordon and eviction.
    pub scheduler: &'a dyn NodeScheduler,
    /// Holding replicas down.
    pub holder: &'a dyn ReplicaHolder,
}
