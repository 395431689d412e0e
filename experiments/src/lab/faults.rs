//! Lab faults: resolving what a user names (a zone, a node, a service replica, a shape) down to
//! the resolved [`FaultAction`] that the ledger stores, then running it through the lifecycle.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use faultline_injectors::fault::FaultAction;
use faultline_injectors::ledger::{now_unix_ms, FaultRecord};
use faultline_injectors::lifecycle::{start_fault, FaultRequest};
use faultline_injectors::net_partition::{self, priority_for_slot, rules_for, Endpoint, Grudge};
use faultline_injectors::process::ProcessTarget;

use super::control::LabContext;
use super::LabError;

/// Which partition to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartitionTarget {
    /// One zone against every other zone.
    Zone(String),
    /// One node against every other node.
    Node(String),
    /// These nodes, each alone (e.g. a majority of a service's replicas).
    Singletons(Vec<String>),
    /// A shape over zones (every node follows its zone) or over nodes.
    Shape {
        /// The shape.
        shape: Shape,
        /// Whether the members are zones (`true`) or nodes.
        by_zone: bool,
    },
}

/// The partition shapes beyond "one against the rest".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Two halves.
    Halves,
    /// Every member sees a majority, no two the same majority.
    MajoritiesRing,
    /// Two halves and one member that sees both.
    Bridge,
}

impl std::str::FromStr for Shape {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "halves" => Ok(Shape::Halves),
            "majorities-ring" => Ok(Shape::MajoritiesRing),
            "bridge" => Ok(Shape::Bridge),
            other => Err(format!(
                "unknown shape `{other}`; use halves, majorities-ring or bridge"
            )),
        }
    }
}

impl LabContext {
    fn unknown(
        &self,
        what: &'static str,
        name: &str,
        known: impl IntoIterator<Item = String>,
    ) -> LabError {
        LabError::Unknown {
            lab: self.paths.name.clone(),
            what,
            name: name.to_owned(),
            known: known.into_iter().collect::<Vec<_>>().join(", "),
        }
    }

    fn zone_names(&self) -> Vec<String> {
        self.topology.zones.iter().map(|z| z.name.clone()).collect()
    }

    fn node_names(&self) -> Vec<String> {
        self.topology.nodes().into_iter().map(|n| n.name).collect()
    }

    /// Resolves a partition target to a node-level grudge and a description.
    pub fn partition_grudge(
        &self,
        target: &PartitionTarget,
    ) -> Result<(String, Grudge<String>), LabError> {
        let nodes = self.node_names();
        let zones = self.zone_names();
        let shape_error = |e: net_partition::ShapeError| LabError::Unknown {
            lab: self.paths.name.clone(),
            what: "partition",
            name: format!("{target:?}"),
            known: e.to_string(),
        };
        Ok(match target {
            PartitionTarget::Zone(zone) => {
                let members = &self
                    .topology
                    .zone(zone)
                    .ok_or_else(|| self.unknown("zone", zone, zones.clone()))?
                    .nodes;
                (
                    format!("zone {zone} vs rest"),
                    net_partition::isolate(members, &nodes).map_err(shape_error)?,
                )
            }
            PartitionTarget::Node(node) => {
                if !nodes.contains(node) {
                    return Err(self.unknown("node", node, nodes.clone()));
                }
                (
                    format!("node {node} vs rest"),
                    net_partition::isolate(std::slice::from_ref(node), &nodes)
                        .map_err(shape_error)?,
                )
            }
            PartitionTarget::Singletons(group) => {
                if let Some(unknown) = group.iter().find(|n| !nodes.contains(n)) {
                    return Err(self.unknown("node", unknown, nodes.clone()));
                }
                (
                    format!("nodes {} each alone", group.join(", ")),
                    net_partition::singletons(group, &nodes).map_err(shape_error)?,
                )
            }
            PartitionTarget::Shape { shape, by_zone } => {
                let members = if *by_zone { &zones } else { &nodes };
                let grudge = match shape {
                    Shape::Halves => net_partition::halves(members),
                    Shape::MajoritiesRing => net_partition::majorities_ring(members),
                    Shape::Bridge => net_partition::bridge(members),
                }
                .map_err(shape_error)?;
                let grudge = if *by_zone {
                    self.zone_grudge_to_nodes(&grudge)
                } else {
                    grudge
                };
                (
                    format!(
                        "{shape:?} over {}",
                        if *by_zone { "zones" } else { "nodes" }
                    )
                    .to_lowercase(),
                    grudge,
                )
            }
        })
    }

    fn zone_grudge_to_nodes(&self, zone_grudge: &Grudge<String>) -> Grudge<String> {
        let mut grudge = Grudge::new();
        for node in self.topology.nodes() {
            let blocked: BTreeSet<String> = zone_grudge
                .get(&node.zone)
                .into_iter()
                .flatten()
                .flat_map(|zone| {
                    self.topology
                        .zone(zone)
                        .map(|z| z.nodes.clone())
                        .unwrap_or_default()
                })
                .collect();
            if !blocked.is_empty() {
                grudge.insert(node.name, blocked);
            }
        }
        grudge
    }

    /// Starts a partition for `duration`.
    pub fn inject_partition(
        &self,
        target: &PartitionTarget,
        duration: Duration,
        max: Duration,
    ) -> Result<FaultRecord, LabError> {
        let (description, grudge) = self.partition_grudge(target)?;
        let endpoints: BTreeMap<String, Endpoint> = self
            .topology
            .nodes()
            .into_iter()
            .map(|n| {
                let endpoint = Endpoint {
                    netns: self.paths.netns(&n.name),
                    address: n.address,
                };
                (n.name, endpoint)
            })
            .collect();
        let endpoint_grudge: Grudge<Endpoint> = grudge
            .iter()
            .map(|(node, blocked)| {
                (
                    endpoints[node].clone(),
                    blocked.iter().map(|b| endpoints[b].clone()).collect(),
                )
            })
            .collect();
        let sides = sides_of(&self.node_names(), &grudge);
        self.start(description, duration, max, move |slot| {
            FaultAction::Partition {
                slot,
                sides,
                rules: rules_for(&endpoint_grudge, priority_for_slot(slot)),
            }
        })
    }

    /// The running process of `service` replica `replica` (from 1).
    pub fn replica_process(&self, service: &str, replica: u32) -> Result<ProcessTarget, LabError> {
        let svc = self.topology.service(service).ok_or_else(|| {
            self.unknown(
                "service",
                service,
                self.topology.services.iter().map(|s| s.name.clone()),
            )
        })?;
        if replica == 0 || replica > svc.replicas {
            return Err(self.unknown(
                "replica",
                &format!("{service}/{replica}"),
                (1..=svc.replicas).map(|r| format!("{service}/{r}")),
            ));
        }
        let state = self
            .services()?
            .replicas
            .into_iter()
            .find(|r| r.service == service && r.replica == replica);
        match state.and_then(|r| Some((r.pid?, r.start_ticks?, r.node))) {
            Some((pid, start_ticks, node)) => Ok(ProcessTarget {
                pid,
                start_ticks,
                label: format!("{service}/{replica} on {node}"),
            }),
            None => Err(LabError::Unknown {
                lab: self.paths.name.clone(),
                what: "replica",
                name: format!("{service}/{replica}"),
                known: "it is not running right now; check `chaosctl lab status`".to_owned(),
            }),
        }
    }

    /// Kills a replica with SIGKILL; the supervisor restarts it.
    pub fn inject_kill(&self, service: &str, replica: u32) -> Result<FaultRecord, LabError> {
        let process = self.replica_process(service, replica)?;
        let description = process.label.clone();
        self.start(
            description,
            Duration::from_secs(1),
            Duration::from_secs(1),
            move |_| FaultAction::Kill { process },
        )
    }

    /// Pauses a replica with SIGSTOP for `duration`.
    pub fn inject_pause(
        &self,
        service: &str,
        replica: u32,
        duration: Duration,
        max: Duration,
    ) -> Result<FaultRecord, LabError> {
        let process = self.replica_process(service, replica)?;
        let description = process.label.clone();
        self.start(description, duration, max, move |_| FaultAction::Pause {
            process,
        })
    }

    /// Drains a node for `duration`.
    pub fn inject_drain(
        &self,
        node: &str,
        duration: Duration,
        max: Duration,
    ) -> Result<FaultRecord, LabError> {
        if self.topology.node(node).is_none() {
            return Err(self.unknown("node", node, self.node_names()));
        }
        let node = node.to_owned();
        self.start(format!("node {node}"), duration, max, move |_| {
            FaultAction::Drain { node }
        })
    }

    fn start(
        &self,
        target: String,
        duration: Duration,
        max_duration: Duration,
        build: impl FnOnce(u32) -> FaultAction + 'static,
    ) -> Result<FaultRecord, LabError> {
        let ledger = self.ledger();
        Ok(self.with_injectors(|env| {
            start_fault(
                &ledger,
                env,
                FaultRequest {
                    target,
                    duration,
                    max_duration,
                    build: Box::new(build),
                },
                now_unix_ms(),
            )
        })?)
    }
}

/// The distinct views of a partition: for each node, the set of nodes it still reaches
/// (itself included), deduplicated. Isolating a zone gives two sides; a bridge gives three.
pub fn sides_of(nodes: &[String], grudge: &Grudge<String>) -> Vec<Vec<String>> {
    let mut sides: Vec<Vec<String>> = Vec::new();
    for node in nodes {
        let blocked = grudge.get(node);
        let view: Vec<String> = nodes
            .iter()
            .filter(|other| {
                blocked.is_none_or(|b| !b.contains(*other))
                    && grudge.get(*other).is_none_or(|b| !b.contains(node))
            })
            .cloned()
            .collect();
        if !sides.contains(&view) {
            sides.push(view);
        }
    }
    sides
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn sides_of_a_zone_partition_are_the_zone_and_the_rest() {
        let nodes = names(&["a1", "a2", "b1", "b2"]);
        let grudge = net_partition::isolate(&names(&["a1", "a2"]), &nodes).expect("shape");
        assert_eq!(
            sides_of(&nodes, &grudge),
            vec![names(&["a1", "a2"]), names(&["b1", "b2"])]
        );
    }

    #[test]
    fn no_partition_is_one_side() {
        let nodes = names(&["a1", "b1"]);
        assert_eq!(sides_of(&nodes, &Grudge::new()), vec![nodes.clone()]);
    }
}
