//! The lab as the engine's [`Target`]: facts from the topology and the agent's `services.json`,
//! injections through the ledger (`faults.rs`), reverts by ledger id.

use std::time::Duration;

use faultline_injectors::fault::FaultAction;
use faultline_injectors::lifecycle::revert_fault;
use faultline_injectors::net_partition::Grudge;

use crate::engine::plan::Action;
use crate::engine::target::{Facts, Injection, ReplicaFacts, ServiceFacts, Target, ZoneFacts};
use crate::engine::EngineError;

use super::control::LabContext;
use super::faults::PartitionTarget;

impl Target for LabContext {
    fn facts(&self) -> Result<Facts, EngineError> {
        let state = self.services()?;
        let mut replicas: Vec<ReplicaFacts> = state
            .replicas
            .into_iter()
            .map(|r| ReplicaFacts {
                running: r.pid.is_some(),
                service: r.service,
                replica: r.replica,
                node: r.node,
                listed: true,
            })
            .collect();
        // Replicas the agent has not listed yet stand where the topology would place them.
        for service in &self.topology.services {
            for replica in 1..=service.replicas {
                if !replicas
                    .iter()
                    .any(|r| r.service == service.name && r.replica == replica)
                {
                    replicas.push(ReplicaFacts {
                        service: service.name.clone(),
                        replica,
                        node: self.topology.eligible_nodes(service, replica)[0].clone(),
                        running: false,
                        listed: false,
                    });
                }
            }
        }
        Ok(Facts {
            name: self.paths.name.clone(),
            zones: self
                .topology
                .zones
                .iter()
                .map(|z| ZoneFacts {
                    name: z.name.clone(),
                    nodes: z.nodes.clone(),
                })
                .collect(),
            services: self
                .topology
                .services
                .iter()
                .map(|s| ServiceFacts {
                    name: s.name.clone(),
                    replicas: s.replicas,
                })
                .collect(),
            replicas,
            jetstream: self.jetstream_service().ok().map(|(service, _)| service),
        })
    }

    fn partition_grudge(&self, target: &PartitionTarget) -> Result<Grudge<String>, EngineError> {
        Ok(LabContext::partition_grudge(self, target)?.1)
    }

    fn inject(
        &self,
        action: &Action,
        duration: Duration,
        max: Duration,
        into: &mut Injection,
    ) -> Result<(), EngineError> {
        match action {
            Action::Partition { target, stop } => {
                let record = self.inject_partition(target, duration, max)?;
                if let FaultAction::Partition { sides, .. } = &record.action {
                    into.sides.clone_from(sides);
                }
                into.ids.push(record.id);
                for (service, replica) in stop {
                    into.ids
                        .push(self.inject_stop(service, *replica, duration, max)?.id);
                }
            }
            Action::Kill { service, replicas } => {
                for replica in replicas {
                    into.ids.push(self.inject_kill(service, *replica)?.id);
                }
            }
            Action::Pause { service, replica } => {
                into.ids
                    .push(self.inject_pause(service, *replica, duration, max)?.id);
            }
            Action::Drain { node } => {
                into.ids.push(self.inject_drain(node, duration, max)?.id);
            }
            Action::QuorumLoss { stream, mode } => {
                let loss = self.inject_quorum_loss(stream, *mode, duration, max)?;
                into.ids.extend(loss.faults.iter().map(|f| f.id.clone()));
                into.affected = Some(
                    loss.chosen
                        .iter()
                        .map(|s| format!("{} ({} on {})", s.name, s.replica, s.node))
                        .collect(),
                );
                if let Some(FaultAction::Partition { sides, .. }) =
                    loss.faults.first().map(|record| &record.action)
                {
                    into.sides.clone_from(sides);
                }
            }
        }
        Ok(())
    }

    fn revert(&self, id: &str) -> Result<(), String> {
        self.with_injectors(|env| revert_fault(&self.ledger(), env, id))
            .map(|_| ())
            .map_err(|error| format!("{id}: {error}"))
    }
}
