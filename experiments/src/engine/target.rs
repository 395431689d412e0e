//! The seam between the engine and where faults land: the lab (`crate::lab::target`) or a
//! cluster (`crate::kubernetes::target`). The engine plans from a target's [`Facts`], injects
//! through [`Target::inject`] and heals through [`Target::revert`]; it has no other knowledge of
//! either, so there is no `if kubernetes` in `plan.rs`, `execute.rs` or `run.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use faultline_injectors::net_partition::{self, Grudge};

use crate::lab::faults::{PartitionTarget, Shape};
use crate::lab::role::RoleChoice;
use crate::spec::ExperimentSpec;

use super::plan::{Action, PlannedFault};
use super::EngineError;

/// What a target knows about itself when the engine plans: zones and their nodes, services and
/// their replicas. Orders matter: random selectors draw from them with the run's seed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// The target's name, for messages (a lab name, or `cluster`).
    pub name: String,
    /// Zones, each with its nodes.
    pub zones: Vec<ZoneFacts>,
    /// Services (lab services, or cluster workloads), each with its replica count.
    pub services: Vec<ServiceFacts>,
    /// Every replica the target knows of, in the target's own order.
    pub replicas: Vec<ReplicaFacts>,
    /// The service that runs JetStream, if any.
    pub jetstream: Option<String>,
    /// Services whose primary can be asked ([`Target::primary_of`]): on the lab, those with a
    /// role probe in the topology; none on a cluster.
    pub roles: Vec<String>,
}

/// The [`Facts::name`] of a cluster.
pub const CLUSTER_NAME: &str = "cluster";

/// One zone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ZoneFacts {
    /// Its name.
    pub name: String,
    /// Its nodes.
    pub nodes: Vec<String>,
}

/// One service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceFacts {
    /// Its name.
    pub name: String,
    /// How many replicas it has (numbered from 1).
    pub replicas: u32,
}

/// One replica (a lab process, or a pod: the n-th of its workload by name).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaFacts {
    /// Service name.
    pub service: String,
    /// Replica number, from 1.
    pub replica: u32,
    /// The node it runs on, or would run on.
    pub node: String,
    /// Whether it runs now.
    pub running: bool,
    /// Whether the target's current state lists it (a lab replica never started is only
    /// placed by the topology).
    pub listed: bool,
}

impl Facts {
    /// Where, for messages: "lab `NAME`" or "the cluster".
    pub fn place(&self) -> String {
        if self.name == CLUSTER_NAME {
            "the cluster".to_owned()
        } else {
            format!("lab `{}`", self.name)
        }
    }

    /// Every node, zone by zone.
    pub fn nodes(&self) -> Vec<String> {
        self.zones.iter().flat_map(|z| z.nodes.clone()).collect()
    }

    /// Zone names.
    pub fn zone_names(&self) -> Vec<String> {
        self.zones.iter().map(|z| z.name.clone()).collect()
    }

    /// A zone's nodes.
    pub fn zone(&self, name: &str) -> Option<&ZoneFacts> {
        self.zones.iter().find(|z| z.name == name)
    }

    /// The zone of a node.
    pub fn zone_of(&self, node: &str) -> Option<&str> {
        self.zones
            .iter()
            .find(|z| z.nodes.iter().any(|n| n == node))
            .map(|z| z.name.as_str())
    }

    /// A service by name.
    pub fn service(&self, name: &str) -> Option<&ServiceFacts> {
        self.services.iter().find(|s| s.name == name)
    }

    /// The node of a replica.
    pub fn node_of(&self, service: &str, replica: u32) -> Option<&str> {
        self.replicas
            .iter()
            .find(|r| r.service == service && r.replica == replica)
            .map(|r| r.node.as_str())
    }
}

/// What an injection made, filled in as it goes so that a failure halfway still heals what was
/// made.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Injection {
    /// Ids of every action taken (ledger ids on the lab, Fault names or drain ids on a cluster),
    /// each revertible with [`Target::revert`].
    pub ids: Vec<String>,
    /// For partitions: the sides, by node.
    pub sides: Vec<Vec<String>>,
    /// What was taken out, when the target knows better than the plan (quorum loss chooses its
    /// peers at injection).
    pub affected: Option<Vec<String>>,
}

/// Where the engine's faults land.
pub trait Target {
    /// The facts the plan is drawn from.
    ///
    /// # Errors
    /// The target cannot be read.
    fn facts(&self) -> Result<Facts, EngineError>;

    /// A partition target as a node-level grudge (who may not reach whom).
    ///
    /// # Errors
    /// The target names something unknown, or the shape does not fit.
    fn partition_grudge(&self, target: &PartitionTarget) -> Result<Grudge<String>, EngineError>;

    /// The target's own blast-radius refusals over the whole plan, after the engine's
    /// (`blast_radius.max_nodes`, every zone at once). None by default.
    ///
    /// # Errors
    /// A refusal, naming the fault and what to change.
    fn check_plan(
        &self,
        _spec: &ExperimentSpec,
        _facts: &Facts,
        _planned: &[PlannedFault],
    ) -> Result<(), EngineError> {
        Ok(())
    }

    /// Which replica of `service` is its primary now, asked of the replicas themselves (the
    /// lab's role probes). The engine calls it when a role selector's fault is injected.
    /// A target without role probes refuses, which is the default.
    ///
    /// # Errors
    /// The service has no role probe here, or no single replica said primary.
    fn primary_of(&self, service: &str) -> Result<RoleChoice, EngineError> {
        let facts = self.facts()?;
        Err(EngineError::Selector {
            lab: facts.name.clone(),
            field: "selector".into(),
            message: format!(
                "the primary of `{service}` cannot be resolved on {}: it has no role probes; name a zone, node or replica instead",
                facts.place()
            ),
        })
    }

    /// Injects one planned action for `duration` (capped at `max`), recording each id in `into`
    /// as soon as it exists.
    ///
    /// # Errors
    /// The injection failed; whatever `into` holds is still to be reverted.
    fn inject(
        &self,
        action: &Action,
        duration: Duration,
        max: Duration,
        into: &mut Injection,
    ) -> Result<(), EngineError>;

    /// Reverts one id from an [`Injection`]. Idempotent; an unknown or gone id is reverted.
    ///
    /// # Errors
    /// The revert failed (the fault's deadline still applies), as text for the record.
    fn revert(&self, id: &str) -> Result<(), String>;

    /// After every id was reverted: anything else of this run still in place (a cluster's
    /// Fault objects that outlived their ids). Returns what failed. Nothing by default.
    fn heal_rest(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A partition target as a grudge over members (zones or nodes), and whether the members are
/// zones. The shared resolution of both targets.
///
/// # Errors
/// An unknown zone or node, or a shape that does not fit the members.
pub fn member_grudge(
    facts: &Facts,
    target: &PartitionTarget,
) -> Result<(Grudge<String>, bool), String> {
    let nodes = facts.nodes();
    let zones = facts.zone_names();
    let shape_error = |e: net_partition::ShapeError| e.to_string();
    Ok(match target {
        PartitionTarget::Zone(zone) => {
            if facts.zone(zone).is_none() {
                return Err(format!(
                    "zone `{zone}` is unknown; known: {}",
                    zones.join(", ")
                ));
            }
            (
                net_partition::isolate(std::slice::from_ref(zone), &zones).map_err(shape_error)?,
                true,
            )
        }
        PartitionTarget::Node(node) => {
            if !nodes.contains(node) {
                return Err(format!(
                    "node `{node}` is unknown; known: {}",
                    nodes.join(", ")
                ));
            }
            (
                net_partition::isolate(std::slice::from_ref(node), &nodes).map_err(shape_error)?,
                false,
            )
        }
        PartitionTarget::Singletons(group) => (
            net_partition::singletons(group, &nodes).map_err(shape_error)?,
            false,
        ),
        PartitionTarget::Shape { shape, by_zone } => {
            let members = if *by_zone { &zones } else { &nodes };
            let grudge = match shape {
                Shape::Halves => net_partition::halves(members),
                Shape::MajoritiesRing => net_partition::majorities_ring(members),
                Shape::Bridge => net_partition::bridge(members),
            }
            .map_err(shape_error)?;
            (grudge, *by_zone)
        }
    })
}

/// A grudge over zones, as a grudge over their nodes.
pub fn zone_grudge_to_nodes(facts: &Facts, zone_grudge: &Grudge<String>) -> Grudge<String> {
    let mut grudge = Grudge::new();
    for zone in &facts.zones {
        let blocked: BTreeSet<String> = zone_grudge
            .get(&zone.name)
            .into_iter()
            .flatten()
            .flat_map(|other| {
                facts
                    .zone(other)
                    .map(|z| z.nodes.clone())
                    .unwrap_or_default()
            })
            .collect();
        if blocked.is_empty() {
            continue;
        }
        for node in &zone.nodes {
            grudge.insert(node.clone(), blocked.clone());
        }
    }
    grudge
}
