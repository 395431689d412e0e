//! Lab faults: resolving what a user names (a zone, a node, a service replica, a shape) down to
//! the resolved [`FaultAction`] that the ledger stores, then running it through the lifecycle.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use faultline_injectors::fault::FaultAction;
use faultline_injectors::ledger::{now_unix_ms, FaultRecord};
use faultline_injectors::lifecycle::{start_fault_guarded, FaultRequest};
use faultline_injectors::net_partition::{self, priority_for_slot, rules_for, Endpoint, Grudge};
use faultline_injectors::process::ProcessTarget;

use serde::{Deserialize, Serialize};

use super::control::LabContext;
use super::jetstream::{most_common_group, Server};
use super::topology::{RoleProbe, CLIENT_ADDRESS};
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

/// How a quorum-loss fault takes out the peers it chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuorumLossMode {
    /// SIGKILL each chosen peer and hold it down until heal.
    Stop,
    /// SIGSTOP each chosen peer until heal.
    Pause,
    /// Cut each chosen peer off from everyone until heal.
    Isolate,
}

impl std::str::FromStr for QuorumLossMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stop" => Ok(Self::Stop),
            "pause" => Ok(Self::Pause),
            "isolate" => Ok(Self::Isolate),
            other => Err(format!(
                "unknown mode `{other}`; use stop, pause or isolate"
            )),
        }
    }
}

/// What a quorum-loss fault chose and did.
#[derive(Clone, Debug, Serialize)]
pub struct QuorumLoss {
    /// The stream (or `$meta`) whose peers were attacked.
    pub stream: String,
    /// Its leader when the fault started.
    pub leader: Option<String>,
    /// All its peers.
    pub peers: Vec<String>,
    /// The majority chosen, leader first.
    pub chosen: Vec<Server>,
    /// How they were taken out.
    pub mode: QuorumLossMode,
    /// The ledger records, one per action.
    pub faults: Vec<FaultRecord>,
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
        let nodes = self.node_names();
        let sides = sides_of(&nodes, &grudge);
        // Clients stand with the largest side: whatever it cannot reach, they cannot either.
        let client = Endpoint {
            netns: self.paths.netns("client"),
            address: CLIENT_ADDRESS,
        };
        let majority = largest_connected_group(&nodes, &grudge);
        let mut endpoint_grudge = endpoint_grudge;
        let mut cut = |a: &Endpoint, b: &Endpoint| {
            endpoint_grudge
                .entry(a.clone())
                .or_default()
                .insert(b.clone());
            endpoint_grudge
                .entry(b.clone())
                .or_default()
                .insert(a.clone());
        };
        for node in nodes.iter().filter(|n| !majority.contains(n)) {
            cut(&endpoints[node], &client);
        }
        // Each zone's clients share their zone's fate: cut off from whatever the zone's first
        // node is cut off from.
        for zone_client in self.topology.zone_clients() {
            let endpoint = Endpoint {
                netns: self.paths.netns(&zone_client.name),
                address: zone_client.address,
            };
            for node in zone_client_cut(&zone_client.anchor, &nodes, &grudge) {
                cut(&endpoint, &endpoints[&node]);
            }
        }
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

    /// Stops a replica (SIGKILL) and holds it down for `duration`.
    pub fn inject_stop(
        &self,
        service: &str,
        replica: u32,
        duration: Duration,
        max: Duration,
    ) -> Result<FaultRecord, LabError> {
        let process = self.replica_process(service, replica)?;
        let description = process.label.clone();
        let key = format!("{service}/{replica}");
        self.start(description, duration, max, move |_| FaultAction::Stop {
            replica: key,
            process,
        })
    }

    /// Takes out a majority of the peers of `stream` (a stream name, `tenants` for the peer set
    /// most streams share, or `$meta`) for `duration`: the leader first. Every action has its
    /// own ledger record; if one fails, the ones before it are reverted.
    pub fn inject_quorum_loss(
        &self,
        stream: &str,
        mode: QuorumLossMode,
        duration: Duration,
        max: Duration,
    ) -> Result<QuorumLoss, LabError> {
        let placements = self.jetstream_placements(stream)?;
        let mut group = most_common_group(&placements)
            .expect("placements are never empty")
            .clone();
        let servers = self.jetstream_servers()?;
        // The leader is what the JetStream role probe says for this stream: the question
        // `replica: primary` and `zone: {of: primary}` ask, not a special case.
        let (service, monitor_port) = self.jetstream_service()?;
        let probe = RoleProbe::NatsJetstream {
            monitor_port,
            stream: stream.to_owned(),
        };
        group.leader = self.primary_now(&service, &probe)?.and_then(|primary| {
            let replica = format!("{service}/{}", primary.replica);
            servers
                .iter()
                .find(|s| s.replica == replica)
                .map(|s| s.name.clone())
        });
        let chosen: Vec<Server> = group
            .majority()
            .iter()
            .map(|name| {
                servers
                    .iter()
                    .find(|s| &s.name == name)
                    .cloned()
                    .ok_or_else(|| LabError::Unknown {
                        lab: self.paths.name.clone(),
                        what: "JetStream server",
                        name: name.clone(),
                        known: servers
                            .iter()
                            .map(|s| s.name.clone())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            })
            .collect::<Result<_, _>>()?;
        let mut faults = Vec::new();
        let outcome = (|| -> Result<(), LabError> {
            match mode {
                QuorumLossMode::Isolate => {
                    let nodes = chosen.iter().map(|s| s.node.clone()).collect();
                    faults.push(self.inject_partition(
                        &PartitionTarget::Singletons(nodes),
                        duration,
                        max,
                    )?);
                }
                QuorumLossMode::Pause | QuorumLossMode::Stop => {
                    for server in &chosen {
                        let (service, replica) = split_replica(&server.replica);
                        faults.push(if mode == QuorumLossMode::Pause {
                            self.inject_pause(service, replica, duration, max)?
                        } else {
                            self.inject_stop(service, replica, duration, max)?
                        });
                    }
                }
            }
            Ok(())
        })();
        if let Err(error) = outcome {
            for fault in &faults {
                // Best effort: a failure here is retried by reconcile at the fault's deadline.
                let _ = self.with_injectors(|env| {
                    faultline_injectors::lifecycle::revert_fault(&self.ledger(), env, &fault.id)
                });
            }
            return Err(error);
        }
        Ok(QuorumLoss {
            stream: if stream == super::jetstream::ALL_STREAMS {
                format!("{stream} ({})", group.stream)
            } else {
                stream.to_owned()
            },
            leader: group.leader.clone(),
            peers: group.peers.clone(),
            chosen,
            mode,
            faults,
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
            start_fault_guarded(
                &ledger,
                env,
                FaultRequest {
                    target,
                    duration,
                    max_duration,
                    build: Box::new(build),
                },
                now_unix_ms(),
                // A fault with no kernel timer gets a guard that ends it at its deadline even
                // if every other Faultline process dies.
                |record| {
                    if record.action.ends_by_itself() {
                        return Ok(());
                    }
                    super::guard::spawn(self, record)
                        .map(drop)
                        .map_err(|error| faultline_injectors::Error::DeadlineGuard {
                            fault: record.id.clone(),
                            reason: error.to_string(),
                        })
                },
            )
        })?)
    }
}

fn split_replica(key: &str) -> (&str, u32) {
    let (service, replica) = key.rsplit_once('/').unwrap_or((key, "1"));
    (service, replica.parse().unwrap_or(1))
}

/// The largest set of nodes that all reach each other under `grudge` (greedy over each node's
/// view, which is exact for the shapes we make: isolate, halves, singletons, bridge, ring).
pub fn largest_connected_group(nodes: &[String], grudge: &Grudge<String>) -> Vec<String> {
    let reaches = |a: &String, b: &String| {
        a == b
            || (grudge.get(a).is_none_or(|g| !g.contains(b))
                && grudge.get(b).is_none_or(|g| !g.contains(a)))
    };
    let mut best: Vec<String> = Vec::new();
    for start in nodes {
        let mut group: Vec<String> = vec![start.clone()];
        for candidate in nodes {
            if !group.contains(candidate) && group.iter().all(|member| reaches(member, candidate)) {
                group.push(candidate.clone());
            }
        }
        if group.len() > best.len() {
            best = group;
        }
    }
    best
}

/// The nodes a client standing with `anchor` cannot reach under `grudge`: those `anchor` cannot
/// reach, in either direction.
pub fn zone_client_cut(anchor: &str, nodes: &[String], grudge: &Grudge<String>) -> Vec<String> {
    nodes
        .iter()
        .filter(|node| {
            grudge.get(anchor).is_some_and(|b| b.contains(*node))
                || grudge.get(*node).is_some_and(|b| b.contains(anchor))
        })
        .cloned()
        .collect()
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
    fn zone_client_cut_table() {
        let nodes = names(&["a1", "a2", "b1", "b2", "c1", "c2"]);
        let zone_a = net_partition::isolate(&names(&["a1", "a2"]), &nodes).expect("shape");
        let a1_alone = net_partition::isolate(&names(&["a1"]), &nodes).expect("shape");
        let a2_alone = net_partition::isolate(&names(&["a2"]), &nodes).expect("shape");
        let cases: [(&str, &Grudge<String>, &[&str]); 6] = [
            ("a1", &zone_a, &["b1", "b2", "c1", "c2"]),
            ("b1", &zone_a, &["a1", "a2"]),
            ("c1", &zone_a, &["a1", "a2"]),
            // A zone split by a node partition: its clients stay on its first node's side.
            ("a1", &a1_alone, &["a2", "b1", "b2", "c1", "c2"]),
            ("a1", &a2_alone, &["a2"]),
            ("a1", &Grudge::new(), &[]),
        ];
        for (anchor, grudge, expected) in cases {
            assert_eq!(
                zone_client_cut(anchor, &nodes, grudge),
                names(expected),
                "{anchor} under {grudge:?}"
            );
        }
    }

    #[test]
    fn largest_connected_group_table() {
        let nodes = names(&["a1", "a2", "b1", "b2", "c1", "c2"]);
        let zone_a = net_partition::isolate(&names(&["a1", "a2"]), &nodes).expect("shape");
        assert_eq!(
            largest_connected_group(&nodes, &zone_a),
            names(&["b1", "b2", "c1", "c2"])
        );
        let two_alone = net_partition::singletons(&names(&["a1", "b1"]), &nodes).expect("shape");
        assert_eq!(
            largest_connected_group(&nodes, &two_alone),
            names(&["a2", "b2", "c1", "c2"])
        );
        let bridge = net_partition::bridge(&nodes).expect("shape");
        assert_eq!(
            largest_connected_group(&nodes, &bridge).len(),
            4,
            "{bridge:?}"
        );
        assert_eq!(
            largest_connected_group(&nodes, &net_partition::Grudge::new()),
            nodes
        );
    }

    #[test]
    fn no_partition_is_one_side() {
        let nodes = names(&["a1", "b1"]);
        assert_eq!(sides_of(&nodes, &Grudge::new()), vec![nodes.clone()]);
    }
}
