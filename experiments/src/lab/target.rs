//! The lab as the engine's [`Target`]: facts from the topology and the agent's `services.json`,
//! injections through the ledger (`faults.rs`), reverts by ledger id. And the lab as a run's
//! [`RunSite`]: the load and the probes from the client namespace, the lab's logs.

use std::path::Path;
use std::time::Duration;

use faultline_injectors::fault::FaultAction;
use faultline_injectors::lifecycle::revert_fault;
use faultline_injectors::net_partition::Grudge;

use crate::engine::plan::Action;
use crate::engine::site::RunSite;
use crate::engine::target::{Facts, Injection, ReplicaFacts, ServiceFacts, Target, ZoneFacts};
use crate::engine::EngineError;
use crate::spec::Probe;
use crate::workload::{BackgroundWorkload, WorkloadConfig};

use super::control::LabContext;
use super::faults::PartitionTarget;
use super::role::RoleChoice;

/// An open lab as the site of a run.
pub struct LabSite {
    ctx: LabContext,
}

impl LabSite {
    /// The site of an open (and reconciled) lab.
    pub fn new(ctx: LabContext) -> Self {
        Self { ctx }
    }
}

impl RunSite for LabSite {
    fn name(&self) -> String {
        self.ctx.paths.name.clone()
    }

    fn target(&self) -> &dyn Target {
        &self.ctx
    }

    fn spawn_load(&self, config: WorkloadConfig) -> Result<BackgroundWorkload, EngineError> {
        Ok(crate::workload::spawn_in_lab(&self.ctx, config)?)
    }

    fn probe(&self, probe: &Probe) -> Result<(), String> {
        let ctx = &self.ctx;
        match probe {
            Probe::Http {
                service,
                port,
                path,
            } => {
                let services = ctx.services().map_err(|e| e.to_string())?;
                for replica in services.replicas.iter().filter(|r| &r.service == service) {
                    let address = ctx
                        .topology
                        .node(&replica.node)
                        .map(|n| n.address)
                        .ok_or("unknown node")?;
                    let answer = super::probe::http_get(
                        &ctx.netns_dir,
                        &ctx.paths.netns("client"),
                        address,
                        *port,
                        path,
                    );
                    if !answer.is_some_and(|(status, _)| (200..300).contains(&status)) {
                        return Err(format!("probe GET {path} on {} failed", replica.key()));
                    }
                }
                Ok(())
            }
            Probe::NatsStreamHealth => {
                let placements = ctx
                    .jetstream_placements(super::jetstream::ALL_STREAMS)
                    .map_err(|e| e.to_string())?;
                if let Some(leaderless) = placements.iter().find(|p| p.leader.is_none()) {
                    return Err(format!("stream {} has no leader", leaderless.stream));
                }
                Ok(())
            }
        }
    }

    fn collect_logs(&self, to: &Path) {
        crate::engine::run::copy_lab_logs(&self.ctx, to);
    }

    fn halted(&self) -> Option<String> {
        // The state root's marker, which `chaosctl halt` writes before it reverts anything.
        let marker = self.ctx.ledger().halted().ok()??;
        Some(
            humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(marker.since_unix_ms),
            )
            .to_string(),
        )
    }
}

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
            roles: self
                .topology
                .services
                .iter()
                .filter(|s| s.role.is_some())
                .map(|s| s.name.clone())
                .collect(),
        })
    }

    fn primary_of(&self, service: &str) -> Result<RoleChoice, EngineError> {
        Ok(LabContext::primary_of(self, service)?)
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
            Action::OfPrimary { service, .. } => {
                return Err(EngineError::Selector {
                    lab: self.paths.name.clone(),
                    field: "selector".into(),
                    message: format!("the primary of `{service}` is resolved by the engine before injection; this is a bug in Faultline, please report it"),
                })
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
