//! Cordons that Faultline owns. A node that a drain marks unschedulable carries the annotation
//! `faultline.dev/cordoned-by: <fault id>` (and `faultline.dev/cordon-deadline`), so the node
//! itself is the record a crashed runner leaves behind. Revert and reconcile uncordon only nodes
//! that carry it: a node an operator cordoned never does, and is never touched.
//!
//! The drain's blast-radius guard ([`check_drain`]) is a pure function of the nodes' facts.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime};

use faultline_injectors::ledger::FaultRecord;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use super::crd::Fault;

/// The annotation naming the fault that cordoned a node.
pub const CORDONED_BY_ANNOTATION: &str = "faultline.dev/cordoned-by";
/// The annotation holding that fault's deadline (RFC 3339), so that an expired cordon is
/// recognisable from the node alone.
pub const CORDON_DEADLINE_ANNOTATION: &str = "faultline.dev/cordon-deadline";
/// The well-known label naming a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// How often a cordon or uncordon re-reads the node after a conflicting write before giving up.
const CONFLICT_RETRIES: u32 = 5;

/// The fault that owns a cordon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CordonOwner {
    /// The fault's id: what the controller's reconcile looks up (a Fault's name or a ledger id).
    pub fault_id: String,
    /// The fault's deadline; after it, any reconcile uncordons.
    pub deadline: SystemTime,
}

/// What a cordon did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CordonOutcome {
    /// The node was schedulable; it is now cordoned and annotated as ours.
    Cordoned,
    /// The node already carried our annotation (this fault's or another's); left as it is.
    AlreadyOurs {
        /// The fault id in the annotation.
        fault_id: String,
    },
    /// An operator had cordoned the node; it is left unannotated, so no revert ever uncordons it.
    CordonedByOperator,
}

/// What an uncordon did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UncordonOutcome {
    /// The node carried our annotation; it is schedulable again and the annotations are gone.
    Uncordoned {
        /// The fault id the annotation named.
        fault_id: String,
    },
    /// The node carries no annotation of ours: not touched (if it is unschedulable, an operator
    /// did that).
    NotOurs {
        /// Whether the node is unschedulable.
        unschedulable: bool,
    },
    /// The node no longer exists: nothing to revert.
    NodeGone,
}

/// A node that carries our cordon annotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnedCordon {
    /// The node's name.
    pub node: String,
    /// The fault id the annotation names.
    pub fault_id: String,
    /// The deadline annotation, if present and readable.
    pub deadline: Option<SystemTime>,
}

/// A failed cordon, uncordon or listing.
#[derive(Debug, thiserror::Error)]
pub enum CordonError {
    /// The node to cordon does not exist.
    #[error("node {node} not found; check the name with `kubectl get nodes`")]
    NodeNotFound {
        /// The node's name.
        node: String,
    },
    /// The API server refused or failed a request.
    #[error("{action} node {node}: {source}")]
    Api {
        /// What was being done, e.g. `cordoning`.
        action: &'static str,
        /// The node's name, or `*` for a listing.
        node: String,
        /// kube's error.
        source: kube::Error,
    },
    /// The API server did not answer in time.
    #[error(
        "{action} node {node}: no answer from the API server within {timeout:?}; is it reachable?"
    )]
    Timeout {
        /// What was being done.
        action: &'static str,
        /// The node's name, or `*` for a listing.
        node: String,
        /// The bound that passed.
        timeout: Duration,
    },
    /// Someone else kept changing the node between our read and our write.
    #[error("{action} node {node}: the node changed under us {CONFLICT_RETRIES} times in a row; try again")]
    Contended {
        /// What was being done.
        action: &'static str,
        /// The node's name.
        node: String,
    },
    /// The blast-radius guard refused the drain.
    #[error("refusing to drain node {node}: {refusal}")]
    Refused {
        /// The node's name.
        node: String,
        /// Why.
        refusal: DrainRefusal,
    },
}

/// Runs one API call under a deadline, mapping both kinds of failure.
pub(crate) async fn bounded<T>(
    action: &'static str,
    node: &str,
    timeout: Duration,
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, CordonError> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(CordonError::Api {
            action,
            node: node.to_owned(),
            source,
        }),
        Err(_) => Err(CordonError::Timeout {
            action,
            node: node.to_owned(),
            timeout,
        }),
    }
}

fn is_status(error: &CordonError, code: u16) -> bool {
    matches!(error, CordonError::Api { source: kube::Error::Api(status), .. } if status.code == code)
}

fn annotation<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn is_unschedulable(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|spec| spec.unschedulable)
        .unwrap_or(false)
}

/// Parses an RFC 3339 time as Kubernetes writes it (`Z` or an offset).
pub(crate) fn parse_time(text: &str) -> Option<SystemTime> {
    text.parse::<k8s_openapi::jiff::Timestamp>()
        .ok()
        .map(SystemTime::from)
}

fn format_time(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

/// The node's cordon, if it is ours.
pub fn owned_cordon(node: &Node) -> Option<OwnedCordon> {
    let fault_id = annotation(node, CORDONED_BY_ANNOTATION)?;
    Some(OwnedCordon {
        node: node.metadata.name.clone().unwrap_or_default(),
        fault_id: fault_id.to_owned(),
        deadline: annotation(node, CORDON_DEADLINE_ANNOTATION).and_then(parse_time),
    })
}

/// Cordons `node` for `owner`, after the blast-radius guard: sets `spec.unschedulable` and our
/// annotations in one JSON merge patch. Idempotent: a node that already carries our annotation
/// is left as it is, and a node an operator cordoned is left unannotated (the drain goes on,
/// but no revert will ever uncordon it).
///
/// Why a JSON merge patch: the fields are a scalar and two map entries, where strategic merge
/// adds nothing (it differs only for lists); merge patch is the least powerful method that
/// works, and the same on every API server. The patch carries the `resourceVersion` we read, so
/// an operator's cordon between our read and our write is a conflict (re-read), never claimed
/// as ours.
///
/// # Errors
/// The node is missing, the guard refuses, or the API fails.
pub async fn cordon_node(
    client: &kube::Client,
    node: &str,
    owner: &CordonOwner,
    budget: &DrainBudget,
    timeout: Duration,
) -> Result<CordonOutcome, CordonError> {
    let nodes: Api<Node> = Api::all(client.clone());
    for _ in 0..CONFLICT_RETRIES {
        let Some(current) = bounded("reading", node, timeout, nodes.get_opt(node)).await? else {
            return Err(CordonError::NodeNotFound {
                node: node.to_owned(),
            });
        };
        if let Some(owned) = owned_cordon(&current) {
            return Ok(CordonOutcome::AlreadyOurs {
                fault_id: owned.fault_id,
            });
        }
        if is_unschedulable(&current) {
            return Ok(CordonOutcome::CordonedByOperator);
        }
        let all = bounded("listing", "*", timeout, nodes.list(&ListParams::default())).await?;
        let facts: Vec<NodeFacts> = all.items.iter().map(NodeFacts::from_node).collect();
        check_drain(&facts, node, budget).map_err(|refusal| CordonError::Refused {
            node: node.to_owned(),
            refusal,
        })?;
        let patch = json!({
            "metadata": {
                "resourceVersion": current.metadata.resource_version,
                "annotations": {
                    CORDONED_BY_ANNOTATION: owner.fault_id,
                    CORDON_DEADLINE_ANNOTATION: format_time(owner.deadline),
                },
            },
            "spec": {"unschedulable": true},
        });
        let result = bounded(
            "cordoning",
            node,
            timeout,
            nodes.patch(node, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await;
        match result {
            Ok(_) => return Ok(CordonOutcome::Cordoned),
            Err(error) if is_status(&error, 409) => {}
            Err(error) if is_status(&error, 404) => {
                return Err(CordonError::NodeNotFound {
                    node: node.to_owned(),
                })
            }
            Err(error) => return Err(error),
        }
    }
    Err(CordonError::Contended {
        action: "cordoning",
        node: node.to_owned(),
    })
}

/// Uncordons `node` only if it carries our annotation (whichever fault it names: it is ours),
/// and removes the annotations in the same merge patch. A node without it is never touched, so
/// an operator's cordon survives every revert. Idempotent; a missing node is reverted.
///
/// # Errors
/// The API fails.
pub async fn uncordon_node(
    client: &kube::Client,
    node: &str,
    timeout: Duration,
) -> Result<UncordonOutcome, CordonError> {
    let nodes: Api<Node> = Api::all(client.clone());
    for _ in 0..CONFLICT_RETRIES {
        let Some(current) = bounded("reading", node, timeout, nodes.get_opt(node)).await? else {
            return Ok(UncordonOutcome::NodeGone);
        };
        let Some(owned) = owned_cordon(&current) else {
            return Ok(UncordonOutcome::NotOurs {
                unschedulable: is_unschedulable(&current),
            });
        };
        let patch = json!({
            "metadata": {
                "resourceVersion": current.metadata.resource_version,
                "annotations": {CORDONED_BY_ANNOTATION: null, CORDON_DEADLINE_ANNOTATION: null},
            },
            "spec": {"unschedulable": null},
        });
        let result = bounded(
            "uncordoning",
            node,
            timeout,
            nodes.patch(node, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await;
        match result {
            Ok(_) => {
                return Ok(UncordonOutcome::Uncordoned {
                    fault_id: owned.fault_id,
                })
            }
            Err(error) if is_status(&error, 409) => {}
            Err(error) if is_status(&error, 404) => return Ok(UncordonOutcome::NodeGone),
            Err(error) => return Err(error),
        }
    }
    Err(CordonError::Contended {
        action: "uncordoning",
        node: node.to_owned(),
    })
}

/// Every node that carries our cordon annotation, by name.
///
/// # Errors
/// The API fails.
pub async fn owned_cordons(
    client: &kube::Client,
    timeout: Duration,
) -> Result<Vec<OwnedCordon>, CordonError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let all = bounded("listing", "*", timeout, nodes.list(&ListParams::default())).await?;
    let mut owned: Vec<OwnedCordon> = all.items.iter().filter_map(owned_cordon).collect();
    owned.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(owned)
}

/// The faults that are still live, by id, with their deadlines when known: what a cordon's
/// annotation is checked against.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveFaults {
    deadlines: BTreeMap<String, Option<SystemTime>>,
}

impl LiveFaults {
    /// No live fault.
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks `fault_id` live until `deadline` (`None`: no known deadline).
    pub fn insert(&mut self, fault_id: impl Into<String>, deadline: Option<SystemTime>) {
        self.deadlines.insert(fault_id.into(), deadline);
    }

    /// The faults a ledger holds, by record id.
    pub fn from_ledger(records: &[FaultRecord]) -> Self {
        let mut live = Self::new();
        for record in records {
            live.insert(
                record.id.clone(),
                Some(SystemTime::UNIX_EPOCH + Duration::from_millis(record.deadline_unix_ms)),
            );
        }
        live
    }

    /// The Fault objects, by name. One being deleted counts as gone.
    pub fn from_faults(faults: &[Fault]) -> Self {
        let mut live = Self::new();
        for fault in faults {
            if fault.metadata.deletion_timestamp.is_some() {
                continue;
            }
            if let Some(name) = &fault.metadata.name {
                live.insert(name.clone(), parse_time(&fault.spec.deadline));
            }
        }
        live
    }
}

/// Why a cordon is an orphan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrphanReason {
    /// No live record names the fault: it is gone (a runner killed mid-drain, a deleted Fault).
    NoRecord,
    /// The record's deadline has passed.
    RecordExpired,
    /// The node's own deadline annotation has passed, whatever the record says.
    AnnotationExpired,
}

impl fmt::Display for OrphanReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OrphanReason::NoRecord => "its fault has no live record",
            OrphanReason::RecordExpired => "its fault's deadline has passed",
            OrphanReason::AnnotationExpired => "the deadline on the node has passed",
        })
    }
}

/// The cordons of ours to undo at `now`: those whose fault has no live record, whose record has
/// expired, or whose own deadline annotation has passed. Pure.
pub fn orphaned_cordons(
    cordons: &[OwnedCordon],
    live: &LiveFaults,
    now: SystemTime,
) -> Vec<(OwnedCordon, OrphanReason)> {
    cordons
        .iter()
        .filter_map(|cordon| {
            let reason = match live.deadlines.get(&cordon.fault_id) {
                None => Some(OrphanReason::NoRecord),
                Some(Some(deadline)) if *deadline <= now => Some(OrphanReason::RecordExpired),
                Some(_) if cordon.deadline.is_some_and(|d| d <= now) => {
                    Some(OrphanReason::AnnotationExpired)
                }
                Some(_) => None,
            }?;
            Some((cordon.clone(), reason))
        })
        .collect()
}

/// What [`reconcile_orphaned_cordons`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CordonReconcile {
    /// Nodes uncordoned, with the fault their annotation named and why.
    pub uncordoned: Vec<(String, String, OrphanReason)>,
    /// Nodes whose cordon belongs to a live fault, left cordoned.
    pub kept: Vec<String>,
}

/// The controller's reconcile: uncordons every node whose annotation names a fault that is not
/// in `live`, or has expired (by its record or by the node's own deadline). Nodes without our
/// annotation, operators' cordons included, are never touched.
///
/// # Errors
/// The API fails; nodes uncordoned before the failure stay uncordoned, and the next reconcile
/// finishes the rest.
pub async fn reconcile_orphaned_cordons(
    client: &kube::Client,
    live: &LiveFaults,
    now: SystemTime,
    timeout: Duration,
) -> Result<CordonReconcile, CordonError> {
    let cordons = owned_cordons(client, timeout).await?;
    let orphans = orphaned_cordons(&cordons, live, now);
    let orphan_nodes: BTreeSet<&str> = orphans.iter().map(|(c, _)| c.node.as_str()).collect();
    let mut report = CordonReconcile {
        kept: cordons
            .iter()
            .filter(|c| !orphan_nodes.contains(c.node.as_str()))
            .map(|c| c.node.clone())
            .collect(),
        ..CordonReconcile::default()
    };
    for (cordon, reason) in orphans {
        if let UncordonOutcome::Uncordoned { fault_id } =
            uncordon_node(client, &cordon.node, timeout).await?
        {
            report.uncordoned.push((cordon.node, fault_id, reason));
        }
    }
    Ok(report)
}

/// The blast-radius limits of a drain.
#[derive(Clone, Debug, PartialEq)]
pub struct DrainBudget {
    /// At most this many nodes cordoned by Faultline at once, this one included.
    pub max_nodes: usize,
    /// At most this fraction (0-1) of a zone's nodes cordoned by Faultline; `None`: no limit.
    pub max_zone_fraction: Option<f64>,
    /// The experiment's explicit override: every check is skipped.
    pub allow_override: bool,
}

impl Default for DrainBudget {
    fn default() -> Self {
        Self {
            max_nodes: 1,
            max_zone_fraction: None,
            allow_override: false,
        }
    }
}

/// What the guard needs to know about one node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// The node's name.
    pub name: String,
    /// Its `topology.kubernetes.io/zone`.
    pub zone: Option<String>,
    /// Whether it is unschedulable (by anyone).
    pub unschedulable: bool,
    /// The fault whose cordon it carries, if ours.
    pub cordoned_by: Option<String>,
}

impl NodeFacts {
    /// The facts of a Node object.
    pub fn from_node(node: &Node) -> Self {
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            zone: node
                .metadata
                .labels
                .as_ref()
                .and_then(|labels| labels.get(ZONE_LABEL))
                .cloned(),
            unschedulable: is_unschedulable(node),
            cordoned_by: annotation(node, CORDONED_BY_ANNOTATION).map(str::to_owned),
        }
    }
}

/// Why the guard refused a drain.
#[derive(Clone, Debug, PartialEq)]
pub enum DrainRefusal {
    /// More nodes would be drained at once than allowed.
    TooManyNodes {
        /// Every node Faultline would then hold cordoned.
        draining: Vec<String>,
        /// The limit.
        max: usize,
    },
    /// Too large a share of one zone would be drained.
    ZoneFraction {
        /// The zone.
        zone: String,
        /// Its nodes that would be drained.
        draining: Vec<String>,
        /// How many nodes the zone has.
        zone_nodes: usize,
        /// The limit.
        max_fraction: f64,
    },
    /// No schedulable node would be left for the evicted pods.
    NoNodeLeft,
}

impl fmt::Display for DrainRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DrainRefusal::TooManyNodes { draining, max } => write!(
                f,
                "{} nodes would be drained at once ({}), more than the limit of {max}; wait for the other drains to end, or override the blast-radius guard in the experiment",
                draining.len(),
                draining.join(", ")
            ),
            DrainRefusal::ZoneFraction {
                zone,
                draining,
                zone_nodes,
                max_fraction,
            } => write!(
                f,
                "{} of the {zone_nodes} nodes of zone {zone} would be drained ({}), more than {:.0}%; override the blast-radius guard in the experiment to allow it",
                draining.len(),
                draining.join(", "),
                max_fraction * 100.0
            ),
            DrainRefusal::NoNodeLeft => f.write_str(
                "no schedulable node would be left for its pods; uncordon a node, or override the blast-radius guard in the experiment",
            ),
        }
    }
}

/// The blast-radius guard of a drain of `node`, given every node's facts. Pure. Counts the nodes
/// Faultline already holds cordoned (by annotation) plus this one against `max_nodes` and the
/// zone's share, and refuses a drain that leaves no schedulable node at all.
///
/// # Errors
/// The refusal, saying which limit and which nodes.
pub fn check_drain(
    nodes: &[NodeFacts],
    node: &str,
    budget: &DrainBudget,
) -> Result<(), DrainRefusal> {
    if budget.allow_override {
        return Ok(());
    }
    let draining: BTreeSet<&str> = nodes
        .iter()
        .filter(|n| n.cordoned_by.is_some())
        .map(|n| n.name.as_str())
        .chain(std::iter::once(node))
        .collect();
    if draining.len() > budget.max_nodes {
        return Err(DrainRefusal::TooManyNodes {
            draining: draining.iter().map(|n| (*n).to_owned()).collect(),
            max: budget.max_nodes,
        });
    }
    let zone = nodes
        .iter()
        .find(|n| n.name == node)
        .and_then(|n| n.zone.as_deref());
    if let (Some(zone), Some(max_fraction)) = (zone, budget.max_zone_fraction) {
        let in_zone: Vec<&NodeFacts> = nodes
            .iter()
            .filter(|n| n.zone.as_deref() == Some(zone))
            .collect();
        let zone_draining: Vec<String> = in_zone
            .iter()
            .filter(|n| draining.contains(n.name.as_str()))
            .map(|n| n.name.clone())
            .collect();
        if zone_draining.len() as f64 > max_fraction * in_zone.len() as f64 {
            return Err(DrainRefusal::ZoneFraction {
                zone: zone.to_owned(),
                draining: zone_draining,
                zone_nodes: in_zone.len(),
                max_fraction,
            });
        }
    }
    let schedulable_left = nodes
        .iter()
        .any(|n| !n.unschedulable && !draining.contains(n.name.as_str()));
    if !schedulable_left {
        return Err(DrainRefusal::NoNodeLeft);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(name: &str, zone: &str, unschedulable: bool, cordoned_by: Option<&str>) -> NodeFacts {
        NodeFacts {
            name: name.into(),
            zone: Some(zone.into()),
            unschedulable,
            cordoned_by: cordoned_by.map(str::to_owned),
        }
    }

    fn cluster() -> Vec<NodeFacts> {
        vec![
            facts("a1", "a", false, None),
            facts("a2", "a", false, None),
            facts("b1", "b", false, None),
            facts("c1", "c", false, None),
        ]
    }

    /// (name, nodes, node to drain, budget, the refusal expected)
    type Case<'a> = (
        &'a str,
        &'a [NodeFacts],
        &'a str,
        &'a DrainBudget,
        Option<&'a str>,
    );

    #[test]
    #[allow(clippy::too_many_lines)] // One row per case reads better than split tables.
    fn the_drain_guard_table() {
        let budget = DrainBudget::default();
        let zone_half = DrainBudget {
            max_nodes: 3,
            max_zone_fraction: Some(0.5),
            allow_override: false,
        };
        let override_all = DrainBudget {
            allow_override: true,
            ..DrainBudget::default()
        };
        let plain = cluster();
        let mut one_ours = cluster();
        one_ours[0] = facts("a1", "a", true, Some("f-1"));
        let mut operator = cluster();
        operator[2] = facts("b1", "b", true, None);
        let lone = vec![facts("solo", "a", false, None)];
        let mut all_but_one_cordoned = cluster();
        for node in &mut all_but_one_cordoned[1..] {
            node.unschedulable = true;
        }
        let cases: Vec<Case> = vec![
            ("one node is fine", &plain, "b1", &budget, None),
            (
                "a second node is refused",
                &one_ours,
                "b1",
                &budget,
                Some("TooManyNodes"),
            ),
            (
                "the same node again is fine",
                &one_ours,
                "a1",
                &budget,
                None,
            ),
            (
                "an operator's cordon does not count",
                &operator,
                "a1",
                &budget,
                None,
            ),
            (
                "override allows a second",
                &one_ours,
                "b1",
                &override_all,
                None,
            ),
            ("half of zone a is fine", &plain, "a1", &zone_half, None),
            (
                "all of zone a is refused",
                &one_ours,
                "a2",
                &zone_half,
                Some("ZoneFraction"),
            ),
            (
                "all of zone b is refused",
                &plain,
                "b1",
                &zone_half,
                Some("ZoneFraction"),
            ),
            (
                "the only node is refused",
                &lone,
                "solo",
                &budget,
                Some("NoNodeLeft"),
            ),
            (
                "the last schedulable node is refused",
                &all_but_one_cordoned,
                "a1",
                &budget,
                Some("NoNodeLeft"),
            ),
            (
                "override allows the last node",
                &lone,
                "solo",
                &override_all,
                None,
            ),
        ];
        for (name, nodes, node, budget, want) in cases {
            let got = check_drain(nodes, node, budget);
            let kind = got.as_ref().err().map(|refusal| match refusal {
                DrainRefusal::TooManyNodes { .. } => "TooManyNodes",
                DrainRefusal::ZoneFraction { .. } => "ZoneFraction",
                DrainRefusal::NoNodeLeft => "NoNodeLeft",
            });
            assert_eq!(kind, want, "{name}: {got:?}");
        }
    }

    #[test]
    fn refusals_name_the_nodes_and_the_way_out() {
        let mut nodes = cluster();
        nodes[0] = facts("a1", "a", true, Some("f-1"));
        let refusal = check_drain(&nodes, "b1", &DrainBudget::default()).expect_err("refused");
        let text = refusal.to_string();
        assert!(
            text.contains("a1, b1") && text.contains("limit of 1"),
            "{text}"
        );
        assert!(text.contains("override"), "{text}");
    }

    fn cordon(node: &str, fault_id: &str, deadline: Option<u64>) -> OwnedCordon {
        OwnedCordon {
            node: node.into(),
            fault_id: fault_id.into(),
            deadline: deadline.map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s)),
        }
    }

    #[test]
    fn orphaned_cordons_table() {
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let mut live = LiveFaults::new();
        live.insert("f-live", Some(at(2_000)));
        live.insert("f-record-expired", Some(at(900)));
        live.insert("f-no-deadline", None);
        let cordons = vec![
            cordon("n-gone", "f-gone", Some(2_000)),
            cordon("n-live", "f-live", Some(2_000)),
            cordon("n-record-expired", "f-record-expired", Some(2_000)),
            cordon("n-annotation-expired", "f-live", Some(999)),
            cordon("n-no-deadline", "f-no-deadline", None),
        ];
        let orphans = orphaned_cordons(&cordons, &live, at(1_000));
        let got: Vec<(&str, &OrphanReason)> =
            orphans.iter().map(|(c, r)| (c.node.as_str(), r)).collect();
        assert_eq!(
            got,
            vec![
                ("n-gone", &OrphanReason::NoRecord),
                ("n-record-expired", &OrphanReason::RecordExpired),
                ("n-annotation-expired", &OrphanReason::AnnotationExpired),
            ]
        );
    }

    #[test]
    fn kubernetes_times_parse_with_zone_or_offset() {
        let want = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_198_400);
        assert_eq!(parse_time("2026-12-02T08:00:00Z"), Some(want));
        assert_eq!(parse_time("2026-12-02T09:00:00+01:00"), Some(want));
        assert_eq!(parse_time("tomorrow"), None);
        assert_eq!(parse_time(&format_time(want)), Some(want));
    }
}
