//! Running the planned faults against the lab, and healing them: every injected fault is
//! tracked until reverted, and [`Injected::heal_all`] (also run on drop) reverts whatever is
//! still active, so the final heal happens on success, error, abort and interrupt alike.

use std::time::Duration;

use faultline_injectors::lifecycle::revert_fault;
use serde::Serialize;

use crate::lab::control::LabContext;
use crate::lab::faults::PartitionTarget;

use super::plan::{Action, PlannedFault};
use super::EngineError;

/// One injected fault, as the report and the observations need it.
#[derive(Clone, Debug, Serialize)]
pub struct InjectedFault {
    /// Index in the plan.
    pub plan_index: usize,
    /// The spec's fault kind.
    pub kind: String,
    /// Ledger ids of every action it took.
    pub fault_ids: Vec<String>,
    /// When its injection began, ns since the run start.
    pub injecting_ns: u64,
    /// When it was fully in effect (every rule installed, every process stopped), ns since
    /// the run start.
    pub start_ns: u64,
    /// When its heal began, ns since the run start.
    pub reverting_ns: Option<u64>,
    /// When its heal completed, ns since the run start.
    pub end_ns: Option<u64>,
    /// For partitions: the sides.
    pub sides: Vec<Vec<String>>,
    /// Nodes or peers taken out (for quorum loss: the chosen servers, `name (replica on node)`).
    pub affected: Vec<String>,
    /// Whether the system is expected to keep serving.
    pub survivable: bool,
    /// What it did, for people.
    pub description: String,
}

/// Every fault injected so far in a run.
pub struct Injected<'a> {
    ctx: &'a LabContext,
    max_duration: Duration,
    /// The run's clock, ns since the run start: read when each injection and heal begins and
    /// when it completes, so that windows are what the faults really were.
    now_ns: &'a dyn Fn() -> u64,
    faults: Vec<InjectedFault>,
}

impl<'a> Injected<'a> {
    /// Nothing injected yet; `now_ns` is the run's clock.
    pub fn new(ctx: &'a LabContext, max_duration: Duration, now_ns: &'a dyn Fn() -> u64) -> Self {
        Self {
            ctx,
            max_duration,
            now_ns,
            faults: Vec::new(),
        }
    }

    /// Everything injected, healed or not.
    pub fn faults(&self) -> &[InjectedFault] {
        &self.faults
    }

    /// Whether any fault is still active.
    pub fn any_active(&self) -> bool {
        self.faults.iter().any(|f| f.end_ns.is_none())
    }

    /// Injects one planned fault now.
    pub fn inject(
        &mut self,
        plan_index: usize,
        planned: &PlannedFault,
    ) -> Result<&InjectedFault, EngineError> {
        let ctx = self.ctx;
        let injecting_ns = (self.now_ns)();
        let max = self.max_duration;
        let mut ids = Vec::new();
        let mut sides = Vec::new();
        let mut affected = planned.affected_nodes.clone();
        // Track every id as soon as it exists, so a failure halfway still heals what was made.
        let result = (|| -> Result<(), EngineError> {
            match &planned.action {
                Action::Partition { target, stop } => {
                    let record = ctx.inject_partition(target, planned.duration, max)?;
                    if let faultline_injectors::fault::FaultAction::Partition { sides: s, .. } =
                        &record.action
                    {
                        sides.clone_from(s);
                    }
                    ids.push(record.id);
                    for (service, replica) in stop {
                        ids.push(
                            ctx.inject_stop(service, *replica, planned.duration, max)?
                                .id,
                        );
                    }
                }
                Action::Kill { service, replicas } => {
                    for replica in replicas {
                        ids.push(ctx.inject_kill(service, *replica)?.id);
                    }
                }
                Action::Pause { service, replica } => {
                    ids.push(
                        ctx.inject_pause(service, *replica, planned.duration, max)?
                            .id,
                    );
                }
                Action::Drain { node } => {
                    ids.push(ctx.inject_drain(node, planned.duration, max)?.id);
                }
                Action::QuorumLoss { stream, mode } => {
                    let loss = ctx.inject_quorum_loss(stream, *mode, planned.duration, max)?;
                    ids.extend(loss.faults.iter().map(|f| f.id.clone()));
                    affected = loss
                        .chosen
                        .iter()
                        .map(|s| format!("{} ({} on {})", s.name, s.replica, s.node))
                        .collect();
                    if let Some(record) = loss.faults.first() {
                        if let faultline_injectors::fault::FaultAction::Partition {
                            sides: s, ..
                        } = &record.action
                        {
                            sides.clone_from(s);
                        }
                    }
                }
            }
            Ok(())
        })();
        // Every rule is installed and every process stopped once the calls above returned.
        let applied_ns = (self.now_ns)();
        let description = describe(&planned.action, planned.duration);
        let instant = matches!(planned.action, Action::Kill { .. });
        self.faults.push(InjectedFault {
            plan_index,
            kind: planned.kind.clone(),
            fault_ids: ids,
            injecting_ns,
            start_ns: applied_ns,
            reverting_ns: instant.then_some(applied_ns),
            end_ns: instant.then_some(applied_ns),
            sides,
            affected,
            survivable: planned.survivable,
            description,
        });
        match result {
            Ok(()) => Ok(self.faults.last().expect("just pushed")),
            Err(error) => {
                self.heal_one(self.faults.len() - 1);
                Err(error)
            }
        }
    }

    /// Heals one fault; errors are returned and left to the ledger's deadline.
    fn heal_one(&mut self, index: usize) -> Vec<String> {
        let ctx = self.ctx;
        let reverting_ns = (self.now_ns)();
        let fault = &mut self.faults[index];
        let mut failures = Vec::new();
        for id in &fault.fault_ids {
            if let Err(error) = ctx.with_injectors(|env| revert_fault(&ctx.ledger(), env, id)) {
                failures.push(format!("{id}: {error}"));
            }
        }
        if fault.end_ns.is_none() {
            fault.reverting_ns = Some(reverting_ns);
            fault.end_ns = Some((self.now_ns)());
        }
        failures
    }

    /// Heals every fault whose planned end has come (`due` says so).
    pub fn heal_due(&mut self, mut due: impl FnMut(&InjectedFault) -> bool) -> Vec<String> {
        let mut failures = Vec::new();
        for index in 0..self.faults.len() {
            if self.faults[index].end_ns.is_none() && due(&self.faults[index]) {
                failures.extend(self.heal_one(index));
            }
        }
        failures
    }

    /// Heals everything still active. Returns the reverts that failed (their ledger deadlines
    /// still apply).
    pub fn heal_all(&mut self) -> Vec<String> {
        self.heal_due(|_| true)
    }
}

impl Drop for Injected<'_> {
    fn drop(&mut self) {
        if self.any_active() {
            for failure in self.heal_all() {
                eprintln!("faultline: heal on drop failed: {failure}");
            }
        }
    }
}

fn describe(action: &Action, duration: Duration) -> String {
    let lasting = humantime::format_duration(duration);
    match action {
        Action::Partition { target, stop } => {
            let what = match target {
                PartitionTarget::Zone(zone) => format!("zone {zone} cut off"),
                PartitionTarget::Node(node) => format!("node {node} cut off"),
                PartitionTarget::Singletons(nodes) => {
                    format!("nodes {} each cut off", nodes.join(", "))
                }
                PartitionTarget::Shape { shape, by_zone } => format!(
                    "{shape:?} partition over {}",
                    if *by_zone { "zones" } else { "nodes" }
                )
                .to_lowercase(),
            };
            if stop.is_empty() {
                format!("{what} for {lasting}")
            } else {
                format!("{what} and {} services stopped for {lasting}", stop.len())
            }
        }
        Action::Kill { service, replicas } => format!(
            "SIGKILL {}",
            replicas
                .iter()
                .map(|r| format!("{service}/{r}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Action::Pause { service, replica } => format!("SIGSTOP {service}/{replica} for {lasting}"),
        Action::Drain { node } => format!("drain {node} for {lasting}"),
        Action::QuorumLoss { stream, mode } => {
            format!("quorum loss on {stream} ({mode:?}) for {lasting}").to_lowercase()
        }
    }
}
