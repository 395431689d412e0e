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
use crate::spec::{ExperimentSpec, FaultKind, FaultSpec};

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
        let affected_nodes = affected_nodes(target, &facts, &action)?;
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
            let wanted = s.node.as_deref().unwrap_or_default();
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
        (Some(zone), _, _) => PartitionTarget::Zone(pick(facts, index, "zone", zone, zones, rng)?),
        (_, Some(node), _) => PartitionTarget::Node(pick(facts, index, "node", node, nodes, rng)?),
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
