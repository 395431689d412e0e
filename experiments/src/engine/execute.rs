//! Running the planned faults against a [`Target`] (the lab or a cluster), and healing them: every injected fault is
//! tracked until reverted, and [`Injected::heal_all`] (also run on drop) reverts whatever is
//! still active, so the final heal happens on success, error, abort and interrupt alike.

use std::time::Duration;

use serde::Serialize;

use crate::lab::faults::PartitionTarget;

use crate::lab::role::RoleChoice;

use super::plan::{affected_nodes, resolve_primary, Action, PlannedFault};
use super::target::{Injection, Target};
use super::EngineError;

/// One injected fault, as the report and the observations need it.
#[derive(Clone, Debug, Serialize)]
pub struct InjectedFault {
    /// Index in the plan.
    pub plan_index: usize,
    /// The spec's fault kind.
    pub kind: String,
    /// Ids of every action it took (ledger ids on the lab, Fault names or drain ids on a
    /// cluster).
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
    /// For a role selector: what the role probe chose and why, e.g. `zone of primary of etcd
    /// = b (etcd/2 on b1 said leader; etcd/1: follower, etcd/3: follower)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chosen: Option<String>,
    /// For a role selector: the primary found and every replica's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<RoleChoice>,
    /// For pods deleted through the API: from the first deletion until every replacement was
    /// Ready, in ms, as the site measured it after the recovery watch (absent when the
    /// replacements were not all Ready by then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_to_ready_ms: Option<u64>,
}

/// Every fault injected so far in a run.
pub struct Injected<'a> {
    target: &'a dyn Target,
    max_duration: Duration,
    /// The run's clock, ns since the run start: read when each injection and heal begins and
    /// when it completes, so that windows are what the faults really were.
    now_ns: &'a dyn Fn() -> u64,
    faults: Vec<InjectedFault>,
}

impl<'a> Injected<'a> {
    /// Nothing injected yet; `now_ns` is the run's clock.
    pub fn new(
        target: &'a dyn Target,
        max_duration: Duration,
        now_ns: &'a dyn Fn() -> u64,
    ) -> Self {
        Self {
            target,
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
        let injecting_ns = (self.now_ns)();
        // A role selector is resolved now, not when the run was planned: the primary may have
        // changed since (an earlier fault may have moved it).
        let (action, role, affected) = match &planned.action {
            Action::OfPrimary { service, then } => {
                let choice = self.target.primary_of(service)?;
                let facts = self.target.facts()?;
                let action = resolve_primary(&facts, *then, &choice);
                let affected = affected_nodes(self.target, &facts, &action)?;
                let chosen = choice.sentence(then.place());
                (action, Some((choice, chosen)), affected)
            }
            other => (other.clone(), None, planned.affected_nodes.clone()),
        };
        let mut injection = Injection::default();
        // The target records every id as soon as it exists, so a failure halfway still heals
        // what was made.
        let result =
            self.target
                .inject(&action, planned.duration, self.max_duration, &mut injection);
        // Every rule is installed and every process stopped once the calls above returned.
        let applied_ns = (self.now_ns)();
        let mut description = describe(&action, planned.duration);
        if let Some((_, chosen)) = &role {
            description = format!("{description}; {chosen}");
        }
        let instant = matches!(action, Action::Kill { .. });
        self.faults.push(InjectedFault {
            plan_index,
            kind: planned.kind.clone(),
            fault_ids: injection.ids,
            injecting_ns,
            start_ns: applied_ns,
            reverting_ns: instant.then_some(applied_ns),
            end_ns: instant.then_some(applied_ns),
            sides: injection.sides,
            affected: injection.affected.unwrap_or(affected),
            survivable: planned.survivable,
            description,
            chosen: role.as_ref().map(|(_, chosen)| chosen.clone()),
            role: role.map(|(choice, _)| choice),
            time_to_ready_ms: None,
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
        let target = self.target;
        let reverting_ns = (self.now_ns)();
        let fault = &mut self.faults[index];
        let mut failures = Vec::new();
        for id in &fault.fault_ids {
            if let Err(error) = target.revert(id) {
                failures.push(error);
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
        let mut failures = self.heal_due(|_| true);
        failures.extend(self.target.heal_rest());
        failures
    }
}

impl Drop for Injected<'_> {
    fn drop(&mut self) {
        if self.any_active() {
            for failure in self.heal_all() {
                stderr_line!("faultline: heal on drop failed: {failure}");
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
        Action::OfPrimary { service, then } => {
            format!("{then:?} on the primary of {service} for {lasting}").to_lowercase()
        }
    }
}
