//! From a spec's faults to a concrete plan on one target (a lab or a cluster): random selectors drawn from the run's
//! seed, replicas and nodes named, start times fixed, and the blast radius checked before
//! anything is touched.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use crate::lab::faults::{largest_connected_group, PartitionTarget, QuorumLossMode, Shape};
use crate::lab::jetstream::ALL_STREAMS;
use crate::lab::role::{PrimaryPlace, RoleChoice};
use crate::spec::{ExperimentSpec, FaultKind, FaultSpec, Place, PRIMARY};

use super::target::{Facts, Target};
use super::EngineError;

/// One fault, resolved to names on the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Action {
    /// A partition, optionally also holding down the services on its first side.
    Partition {
        /// What to cut.
        #[serde(serialize_with = "debug_text")]
        target: PartitionTarget,
        /// Replicas to stop for the same duration (az-failure's `stop_services`).
        stop: Vec<(String, u32)>,
    },
    /// SIGKILL these replicas.
    Kill {
        /// Service name.
        service: String,
        /// Replica numbers.
        replicas: Vec<u32>,
    },
    /// SIGSTOP one replica.
    Pause {
        /// Service name.
        service: String,
        /// Replica number.
        replica: u32,
    },
    /// Cordon and evict a node.
    Drain {
        /// Node name.
        node: String,
    },
    /// Quorum loss on a stream's peers; the peers are chosen at injection time, when the
    /// leader is known.
    QuorumLoss {
        /// Stream name, `tenants` or `$meta`.
        stream: String,
        /// How the peers are taken out.
        mode: QuorumLossMode,
    },
    /// A fault on a service's primary, resolved when it is injected: the engine asks the
    /// target ([`Target::primary_of`]) which replica is the primary at that moment, then
    /// injects [`resolve_primary`]'s action on it.
    OfPrimary {
        /// The service whose role probe is asked.
        service: String,
        /// What to do to the primary.
        then: OnPrimary,
    },
}

/// What a role selector does to the primary it finds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnPrimary {
    /// Cut off its zone; with `stop_services`, also hold down every replica in that zone.
    PartitionZone {
        /// az-failure's `stop_services`.
        stop_services: bool,
    },
    /// Cut off its node.
    PartitionNode,
    /// SIGKILL it.
    Kill,
    /// SIGSTOP it.
    Pause,
    /// Drain its node.
    Drain,
}

impl OnPrimary {
    /// Which of the primary's places the action takes.
    pub fn place(self) -> PrimaryPlace {
        match self {
            OnPrimary::PartitionZone { .. } => PrimaryPlace::Zone,
            OnPrimary::PartitionNode | OnPrimary::Drain => PrimaryPlace::Node,
            OnPrimary::Kill | OnPrimary::Pause => PrimaryPlace::Replica,
        }
    }
}

/// The action a role selector stands for, once the primary is known: its zone cut off, its
/// node drained, the replica itself killed. Pure; `facts` are the target's when it is injected
/// (for the replicas a zone's `stop_services` holds down).
pub fn resolve_primary(facts: &Facts, then: OnPrimary, primary: &RoleChoice) -> Action {
    let service = primary.service.clone();
    match then {
        OnPrimary::PartitionZone { stop_services } => Action::Partition {
            target: PartitionTarget::Zone(primary.zone.clone()),
            stop: if stop_services {
                zone_replicas(facts, &primary.zone)
            } else {
                vec![]
            },
        },
        OnPrimary::PartitionNode => Action::Partition {
            target: PartitionTarget::Node(primary.node.clone()),
            stop: vec![],
        },
        OnPrimary::Kill => Action::Kill {
            service,
            replicas: vec![primary.replica],
        },
        OnPrimary::Pause => Action::Pause {
            service,
            replica: primary.replica,
        },
        OnPrimary::Drain => Action::Drain {
            node: primary.node.clone(),
        },
    }
}

/// Every replica the target lists on a zone's nodes.
fn zone_replicas(facts: &Facts, zone: &str) -> Vec<(String, u32)> {
    let zone_nodes = facts
        .zone(zone)
        .map(|z| z.nodes.clone())
        .unwrap_or_default();
    facts
        .replicas
        .iter()
        .filter(|r| r.listed && zone_nodes.contains(&r.node))
        .map(|r| (r.service.clone(), r.replica))
        .collect()
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn debug_text<S: serde::Serializer>(
    target: &PartitionTarget,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("{target:?}"))
}

/// One injection in the plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedFault {
    /// Index of the fault in the spec.
    pub spec_index: usize,
    /// The spec's kind.
    pub kind: String,
    /// What it does.
    pub action: Action,
    /// Offset from the start of the run.
    #[serde(with = "crate::spec::duration_text")]
    pub at: Duration,
    /// How long it holds (zero for kills).
    #[serde(with = "crate::spec::duration_text")]
    pub duration: Duration,
    /// Nodes it affects, for the blast radius and the report.
    pub affected_nodes: Vec<String>,
    /// Whether the system should keep serving during it.
    pub survivable: bool,
}

/// Resolves every fault of `spec` on a target, in start order, and checks the blast radius:
/// the engine's limits first, then the target's own.
pub fn plan<T: Target + ?Sized>(
    target: &T,
    spec: &ExperimentSpec,
    seed: u64,
) -> Result<Vec<PlannedFault>, EngineError> {
    let facts = target.facts()?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut planned = Vec::new();
    for (index, fault) in spec.faults.iter().enumerate() {
        let action = resolve(&facts, index, fault, &mut rng)?;
        let affected_nodes = if let Action::OfPrimary { service, then } = &action {
            // Whichever replica turns out to be the primary, the fault stays within limits.
            let mut worst: Vec<String> = Vec::new();
            for candidate in candidate_primaries(&facts, service) {
                let resolved = resolve_primary(&facts, *then, &candidate);
                let affected = affected_nodes(target, &facts, &resolved)?;
                check_blast_radius(&facts, spec, index, &affected).map_err(|e| match e {
                    EngineError::BlastRadius { fault, message } => EngineError::BlastRadius {
                        fault,
                        message: format!(
                            "if {}/{} on {} is the primary when it is injected, {message}",
                            candidate.service, candidate.replica, candidate.node
                        ),
                    },
                    other => other,
                })?;
                if affected.len() > worst.len() {
                    worst = affected;
                }
            }
            worst
        } else {
            affected_nodes(target, &facts, &action)?
        };
        check_blast_radius(&facts, spec, index, &affected_nodes)?;
        let times = fault.repeat.as_ref().map_or(1, |r| r.times);
        for repetition in 0..times {
            let every = fault.repeat.as_ref().map_or(Duration::ZERO, |r| r.every);
            planned.push(PlannedFault {
                spec_index: index,
                kind: fault.kind.as_str().to_owned(),
                action: action.clone(),
                at: spec.baseline + fault.start + every * repetition,
                duration: if fault.kind == FaultKind::Kill {
                    Duration::ZERO
                } else {
                    fault.duration
                },
                affected_nodes: affected_nodes.clone(),
                survivable: spec.slo.survivable,
            });
        }
    }
    planned.sort_by_key(|p| p.at);
    target.check_plan(spec, &facts, &planned)?;
    Ok(planned)
}

/// Every replica of `service` that could be its primary, as a choice the role probe could make
/// (for checking each possible outcome before anything is touched).
fn candidate_primaries(facts: &Facts, service: &str) -> Vec<RoleChoice> {
    facts
        .replicas
        .iter()
        .filter(|r| r.service == service)
        .map(|r| RoleChoice {
            service: service.to_owned(),
            replica: r.replica,
            node: r.node.clone(),
            zone: facts.zone_of(&r.node).unwrap_or_default().to_owned(),
            answers: std::collections::BTreeMap::new(),
        })
        .collect()
}

/// A role selector's service, checked against the target: known, with a role probe.
fn role_service(
    facts: &Facts,
    index: usize,
    field: &str,
    service: &str,
) -> Result<String, EngineError> {
    let known = || {
        facts
            .services
            .iter()
            .map(|s| s.name.clone())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if facts.service(service).is_none() {
        return Err(selector_error(
            facts,
            index,
            field,
            format!(
                "`{service}` matches no service in {}; known: {}",
                facts.place(),
                known()
            ),
        ));
    }
    if !facts.roles.iter().any(|s| s == service) {
        return Err(selector_error(
            facts,
            index,
            field,
            if facts.name == super::target::CLUSTER_NAME {
                format!("the primary of `{service}` cannot be resolved on the cluster: workloads have no role probe there; name a zone, node or replica instead")
            } else {
                format!(
                    "`{service}` has no role probe in {}'s topology, so its primary cannot be asked; add `role:` to the service (docs/topology.md, Role probes)",
                    facts.place()
                )
            },
        ));
    }
    Ok(service.to_owned())
}

fn selector_error(facts: &Facts, index: usize, field: &str, message: String) -> EngineError {
    EngineError::Selector {
        lab: facts.name.clone(),
        field: format!("faults[{index}].selector.{field}"),
        message,
    }
}

fn pick(
    facts: &Facts,
    index: usize,
    field: &str,
    wanted: &str,
    known: &[String],
    rng: &mut StdRng,
) -> Result<String, EngineError> {
    if wanted == "random" {
        return known.choose(rng).cloned().ok_or_else(|| {
            selector_error(
                facts,
                index,
                field,
                "there is nothing to choose from".into(),
            )
        });
    }
    if known.iter().any(|k| k == wanted) {
        Ok(wanted.to_owned())
    } else {
        Err(selector_error(
            facts,
            index,
            field,
            format!(
                "`{wanted}` matches nothing in {}; known: {}",
                facts.place(),
                known.join(", ")
            ),
        ))
    }
}

fn resolve(
    facts: &Facts,
    index: usize,
    fault: &FaultSpec,
    rng: &mut StdRng,
) -> Result<Action, EngineError> {
    let s = &fault.selector;
    let zones = facts.zone_names();
    let nodes = facts.nodes();
    let services: Vec<String> = facts.services.iter().map(|s| s.name.clone()).collect();
    let replicas_of = |service: &str| -> Vec<String> {
        facts.service(service).map_or_else(Vec::new, |svc| {
            (1..=svc.replicas).map(|r| r.to_string()).collect()
        })
    };
    if let Some(action) = resolve_of_primary(facts, index, fault)? {
        return Ok(action);
    }
    Ok(match fault.kind {
        FaultKind::Partition => resolve_partition(facts, index, fault, &zones, &nodes, rng)?,
        FaultKind::Kill | FaultKind::Pause => {
            let service = pick(
                facts,
                index,
                "service",
                s.service.as_deref().unwrap_or_default(),
                &services,
                rng,
            )?;
            let known = replicas_of(&service);
            let replicas: Vec<u32> = match s.replica.as_deref().unwrap_or("random") {
                "all" => known.iter().filter_map(|r| r.parse().ok()).collect(),
                wanted => vec![pick(facts, index, "replica", wanted, &known, rng)?
                    .parse()
                    .expect("replica numbers")],
            };
            if fault.kind == FaultKind::Kill {
                Action::Kill { service, replicas }
            } else {
                Action::Pause {
                    service,
                    replica: replicas[0],
                }
            }
        }
        FaultKind::Drain => {
            // `random` drains a node that runs something: draining an empty node tests nothing.
            let wanted = s.node.as_ref().and_then(Place::name).unwrap_or_default();
            let busy: Vec<String> = facts
                .replicas
                .iter()
                .filter(|r| r.listed && r.running)
                .map(|r| r.node.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let candidates = if wanted == "random" && !busy.is_empty() {
                &busy
            } else {
                &nodes
            };
            Action::Drain {
                node: pick(facts, index, "node", wanted, candidates, rng)?,
            }
        }
        FaultKind::QuorumLoss => {
            if facts.jetstream.is_none() {
                return Err(selector_error(
                    facts,
                    index,
                    "stream",
                    format!(
                        "no JetStream service in {}; a quorum loss needs one",
                        facts.place()
                    ),
                ));
            }
            Action::QuorumLoss {
                stream: s.stream.clone().unwrap_or_else(|| ALL_STREAMS.to_owned()),
                mode: fault.mode.unwrap_or(QuorumLossMode::Isolate),
            }
        }
    })
}

/// A role selector's fault, left for the engine to resolve at injection; `None` for any
/// other selector.
fn resolve_of_primary(
    facts: &Facts,
    index: usize,
    fault: &FaultSpec,
) -> Result<Option<Action>, EngineError> {
    let s = &fault.selector;
    let zone_of = s.zone.as_ref().and_then(Place::primary_of);
    let node_of = s.node.as_ref().and_then(Place::primary_of);
    let (field, service, then) = match fault.kind {
        FaultKind::Kill | FaultKind::Pause if s.replica.as_deref() == Some(PRIMARY) => (
            "service",
            s.service.as_deref().unwrap_or_default(),
            if fault.kind == FaultKind::Kill {
                OnPrimary::Kill
            } else {
                OnPrimary::Pause
            },
        ),
        FaultKind::Partition if zone_of.is_some() => (
            "zone.service",
            zone_of.unwrap_or_default(),
            OnPrimary::PartitionZone {
                stop_services: fault.stop_services,
            },
        ),
        FaultKind::Partition if node_of.is_some() => (
            "node.service",
            node_of.unwrap_or_default(),
            OnPrimary::PartitionNode,
        ),
        FaultKind::Drain if node_of.is_some() => (
            "node.service",
            node_of.unwrap_or_default(),
            OnPrimary::Drain,
        ),
        _ => return Ok(None),
    };
    Ok(Some(Action::OfPrimary {
        service: role_service(facts, index, field, service)?,
        then,
    }))
}

fn resolve_partition(
    facts: &Facts,
    index: usize,
    fault: &FaultSpec,
    zones: &[String],
    nodes: &[String],
    rng: &mut StdRng,
) -> Result<Action, EngineError> {
    let s = &fault.selector;
    let target = match (&s.zone, &s.node, s.shape.as_deref()) {
        (Some(Place::Named(zone)), _, _) => {
            PartitionTarget::Zone(pick(facts, index, "zone", zone, zones, rng)?)
        }
        (_, Some(Place::Named(node)), _) => {
            PartitionTarget::Node(pick(facts, index, "node", node, nodes, rng)?)
        }
        (_, _, Some("one-vs-rest")) => {
            PartitionTarget::Zone(pick(facts, index, "zone", "random", zones, rng)?)
        }
        (_, _, Some(shape)) => PartitionTarget::Shape {
            shape: shape
                .parse::<Shape>()
                .map_err(|e| selector_error(facts, index, "shape", e))?,
            by_zone: true,
        },
        _ => {
            return Err(selector_error(
                facts,
                index,
                "zone",
                "a partition needs a zone, node or shape".into(),
            ))
        }
    };
    let stop = if fault.stop_services {
        let PartitionTarget::Zone(zone) = &target else {
            unreachable!("validated: stop_services needs a zone")
        };
        zone_replicas(facts, zone)
    } else {
        vec![]
    };
    Ok(Action::Partition { target, stop })
}

/// The nodes an action cuts off, stops or drains. For a partition: every node outside the
/// largest group of nodes that still all reach each other.
pub fn affected_nodes<T: Target + ?Sized>(
    target: &T,
    facts: &Facts,
    action: &Action,
) -> Result<Vec<String>, EngineError> {
    let node_of = |service: &str, replica: u32| -> Result<String, EngineError> {
        facts
            .node_of(service, replica)
            .map(str::to_owned)
            .ok_or_else(|| EngineError::Selector {
                lab: facts.name.clone(),
                field: "selector.replica".into(),
                message: format!("{service}/{replica} runs nowhere"),
            })
    };
    let mut affected: BTreeSet<String> = BTreeSet::new();
    match action {
        Action::Partition { target: what, stop } => {
            let grudge = target.partition_grudge(what)?;
            let nodes = facts.nodes();
            let largest = largest_connected_group(&nodes, &grudge);
            affected.extend(nodes.into_iter().filter(|n| !largest.contains(n)));
            for (service, replica) in stop {
                affected.insert(node_of(service, *replica)?);
            }
        }
        Action::Kill { service, replicas } => {
            for replica in replicas {
                affected.insert(node_of(service, *replica)?);
            }
        }
        Action::Pause { service, replica } => {
            affected.insert(node_of(service, *replica)?);
        }
        Action::Drain { node } => {
            affected.insert(node.clone());
        }
        Action::OfPrimary { service, then } => {
            // Unknown until injection: every node a candidate's action could touch.
            for candidate in candidate_primaries(facts, service) {
                let resolved = resolve_primary(facts, *then, &candidate);
                affected.extend(affected_nodes(target, facts, &resolved)?);
            }
        }
        Action::QuorumLoss { .. } => {
            // The peers are chosen at injection; a majority of the JetStream servers' nodes.
            let service = facts.jetstream.clone().unwrap_or_default();
            let count = facts.service(&service).map_or(0, |s| s.replicas);
            for replica in 1..=count / 2 + 1 {
                affected.insert(node_of(&service, replica)?);
            }
        }
    }
    Ok(affected.into_iter().collect())
}

fn check_blast_radius(
    facts: &Facts,
    spec: &ExperimentSpec,
    index: usize,
    affected: &[String],
) -> Result<(), EngineError> {
    let limit = &spec.blast_radius;
    if affected.len() > limit.max_nodes as usize {
        return Err(EngineError::BlastRadius {
            fault: index,
            message: format!(
                "it affects {} nodes ({}) but blast_radius.max_nodes is {}; raise the limit or narrow the selector",
                affected.len(),
                affected.join(", "),
                limit.max_nodes
            ),
        });
    }
    let zones: BTreeSet<String> = affected
        .iter()
        .filter_map(|node| facts.zone_of(node))
        .map(str::to_owned)
        .collect();
    if !limit.allow_all_zones && facts.zones.len() > 1 && zones.len() == facts.zones.len() {
        return Err(EngineError::BlastRadius {
            fault: index,
            message: format!(
                "it touches every zone at once ({}); set blast_radius.allow_all_zones: true if that is intended",
                zones.into_iter().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::control::{HostPaths, LabContext};
    use crate::lab::state::LabPaths;
    use crate::lab::topology::Topology;

    /// A lab context over the default topology whose state lives in a temp dir; `plan` only
    /// reads the topology and (absent) service state, so nothing real is needed.
    fn lab() -> (tempfile::TempDir, LabContext) {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = HostPaths::with_state_root(dir.path());
        let ctx = LabContext {
            paths: LabPaths::new(&host.state_root, "plan"),
            topology: Topology::default_lab(),
            netns_dir: host.netns_dir,
            proc_root: host.proc_root,
            agent_binary: None,
        };
        (dir, ctx)
    }

    fn spec(fault_yaml: &str, extra: &str) -> ExperimentSpec {
        let yaml = format!(
            "name: t\ndescription: t\nfaults:\n{fault_yaml}\nbaseline: 10s\nduration: 2m\nrecovery_deadline: 30s\nslo: {{max_ttr: 10s}}\n{extra}"
        );
        let spec = ExperimentSpec::parse(&yaml, "t.yaml").expect(&yaml);
        spec.validate("t.yaml").expect(&yaml);
        spec
    }

    #[test]
    fn random_selectors_follow_the_seed_and_times_are_absolute() {
        let (_dir, ctx) = lab();
        let spec = spec(
            "  - {kind: partition, selector: {zone: random}, start: 5s, duration: 20s}",
            "",
        );
        let first = plan(&ctx, &spec, 7).expect("plan");
        assert_eq!(
            first,
            plan(&ctx, &spec, 7).expect("plan"),
            "same seed, same plan"
        );
        assert_eq!(first[0].at, Duration::from_secs(15));
        assert_eq!(first[0].affected_nodes.len(), 2, "{first:?}");
        let zones: BTreeSet<String> = (0..20)
            .map(
                |seed| match &plan(&ctx, &spec, seed).expect("plan")[0].action {
                    Action::Partition {
                        target: PartitionTarget::Zone(z),
                        ..
                    } => z.clone(),
                    other => panic!("{other:?}"),
                },
            )
            .collect();
        assert!(zones.len() > 1, "seeds choose different zones: {zones:?}");
    }

    #[test]
    fn a_selector_matching_nothing_is_refused_with_what_exists() {
        let (_dir, ctx) = lab();
        let error = plan(
            &ctx,
            &spec("  - {kind: drain, selector: {node: z9}, duration: 5s}", ""),
            1,
        )
        .expect_err("z9 is not a node")
        .to_string();
        assert!(
            error.contains("faults[0].selector.node") && error.contains("a1, a2"),
            "{error}"
        );
    }

    #[test]
    fn role_selectors_wait_for_injection_and_are_checked_for_every_candidate() {
        let (_dir, ctx) = lab();
        let zone_of =
            "  - {kind: partition, selector: {zone: {of: primary, service: nats}}, duration: 5s}";
        let planned = plan(&ctx, &spec(zone_of, ""), 1).expect("plan");
        assert_eq!(
            planned[0].action,
            Action::OfPrimary {
                service: "nats".into(),
                then: OnPrimary::PartitionZone {
                    stop_services: false
                }
            }
        );
        assert_eq!(planned[0].affected_nodes.len(), 2, "{planned:?}");
        let kill = "  - {kind: kill, selector: {service: nats, replica: primary}}";
        assert_eq!(
            plan(&ctx, &spec(kill, ""), 1).expect("plan")[0].action,
            Action::OfPrimary {
                service: "nats".into(),
                then: OnPrimary::Kill
            }
        );
        let error = plan(
            &ctx,
            &spec(
                "  - {kind: pause, selector: {service: gateway, replica: primary}, duration: 5s}",
                "",
            ),
            1,
        )
        .expect_err("gateway has no role probe")
        .to_string();
        assert!(
            error.contains(
                "faults[0].selector.service: `gateway` has no role probe in lab `plan`'s topology"
            ),
            "{error}"
        );
        let error = plan(
            &ctx,
            &spec(
                "  - {kind: drain, selector: {node: {of: primary, service: etcd}}, duration: 5s}",
                "",
            ),
            1,
        )
        .expect_err("no etcd here")
        .to_string();
        assert!(
            error.contains("faults[0].selector.node.service: `etcd` matches no service in lab `plan`; known: nats, gateway"),
            "{error}"
        );
        let az = "  - {kind: partition, selector: {zone: {of: primary, service: nats}}, stop_services: true, duration: 5s}";
        let error = plan(&ctx, &spec(az, "blast_radius: {max_nodes: 1}"), 1)
            .expect_err("a zone is two nodes")
            .to_string();
        assert!(
            error
                .contains("if nats/1 on a1 is the primary when it is injected, it affects 2 nodes"),
            "{error}"
        );
    }

    #[test]
    fn resolve_primary_table() {
        let (_dir, ctx) = lab();
        let facts = ctx.facts().expect("facts");
        let primary = RoleChoice {
            service: "nats".into(),
            replica: 2,
            node: "b1".into(),
            zone: "b".into(),
            answers: std::collections::BTreeMap::new(),
        };
        let zone_b = PartitionTarget::Zone("b".into());
        let cases = [
            (
                OnPrimary::PartitionZone {
                    stop_services: false,
                },
                Action::Partition {
                    target: zone_b.clone(),
                    stop: vec![],
                },
            ),
            (
                OnPrimary::PartitionNode,
                Action::Partition {
                    target: PartitionTarget::Node("b1".into()),
                    stop: vec![],
                },
            ),
            (
                OnPrimary::Kill,
                Action::Kill {
                    service: "nats".into(),
                    replicas: vec![2],
                },
            ),
            (
                OnPrimary::Pause,
                Action::Pause {
                    service: "nats".into(),
                    replica: 2,
                },
            ),
            (OnPrimary::Drain, Action::Drain { node: "b1".into() }),
        ];
        for (then, expected) in cases {
            assert_eq!(
                resolve_primary(&facts, then, &primary),
                expected,
                "{then:?}"
            );
        }
    }

    #[test]
    fn blast_radius_limits_nodes_and_zones() {
        let (_dir, ctx) = lab();
        let kill_all = "  - {kind: kill, selector: {service: nats, replica: all}}";
        let error = plan(&ctx, &spec(kill_all, ""), 1)
            .expect_err("every zone")
            .to_string();
        assert!(error.contains("every zone at once"), "{error}");
        plan(
            &ctx,
            &spec(kill_all, "blast_radius: {allow_all_zones: true}"),
            1,
        )
        .expect("allowed");
        let error = plan(
            &ctx,
            &spec(
                kill_all,
                "blast_radius: {allow_all_zones: true, max_nodes: 2}",
            ),
            1,
        )
        .expect_err("three nodes")
        .to_string();
        assert!(error.contains("affects 3 nodes"), "{error}");
        let ring = "  - {kind: partition, selector: {shape: majorities-ring}, duration: 5s}";
        let planned = plan(&ctx, &spec(ring, ""), 1).expect("ring");
        assert_eq!(planned[0].affected_nodes.len(), 2, "{planned:?}");
    }
}
