//! What one node's agent does with a Fault: a pure function of the Fault, the node's own facts
//! and the pods on it. Everything is resolved and checked (the blast-radius guards included)
//! before the agent touches anything, as the lab's engine plan does.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use faultline_injectors::net_partition::{priority_for_slot, PartitionRule, RULE_PRIORITY_SLOTS};

use super::crd::{FaultKind, FaultSpec, PartitionMode, PartitionSide, PartitionSpec, PodRef};

/// The name, in the agent's namespace directory, of the node's own (host) network namespace.
pub const NODE_NETNS: &str = "node";

/// The name, in the agent's namespace directory, of a pod's network namespace.
pub fn pod_netns_name(pod_uid: &str) -> String {
    format!("pod-{pod_uid}")
}

/// The namespace that never counts as a user's workload.
pub const SYSTEM_NAMESPACE: &str = "kube-system";

/// Prefixes shorter than this are refused: a rule that wide cuts far more than a side.
pub const NARROWEST_PREFIX_LEN: u8 = 8;

/// An IPv4 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    /// The network address (host bits zero).
    pub address: Ipv4Addr,
    /// The prefix length, 0-32.
    pub len: u8,
}

impl Prefix {
    /// Parses `a.b.c.d/n` or a bare address (a `/32`). Host bits are cleared.
    ///
    /// # Errors
    /// Not an IPv4 address or prefix; IPv6 gets its own message.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.contains(':') {
            return Err(format!(
                "{text:?} is IPv6; partitions cover IPv4 only, so list the IPv4 addresses and CIDRs"
            ));
        }
        let (address, len) = match text.split_once('/') {
            Some((address, len)) => (
                address,
                len.parse::<u8>()
                    .ok()
                    .filter(|len| *len <= 32)
                    .ok_or_else(|| format!("{text:?}: the prefix length must be 0-32"))?,
            ),
            None => (text, 32),
        };
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an IPv4 address or CIDR"))?;
        Ok(Self::new(address, len))
    }

    /// The prefix of `len` bits holding `address`.
    pub fn new(address: Ipv4Addr, len: u8) -> Self {
        let mask = if len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(len))
        };
        Self {
            address: Ipv4Addr::from(u32::from(address) & mask),
            len,
        }
    }

    fn first(self) -> u32 {
        u32::from(self.address)
    }

    fn last(self) -> u32 {
        self.first() | (u32::MAX.checked_shr(u32::from(self.len)).unwrap_or(0))
    }

    /// Whether `other` lies wholly inside this prefix.
    pub fn contains(self, other: Prefix) -> bool {
        self.first() <= other.first() && other.last() <= self.last()
    }

    /// Whether the two prefixes share any address.
    pub fn overlaps(self, other: Prefix) -> bool {
        self.first() <= other.last() && other.first() <= self.last()
    }

    fn halves(self) -> [Prefix; 2] {
        let len = self.len + 1;
        let upper = self.first() | (1 << (32 - u32::from(len)));
        [
            Prefix::new(self.address, len),
            Prefix::new(Ipv4Addr::from(upper), len),
        ]
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.len)
    }
}

/// `prefix` minus every prefix in `holes`, as the fewest prefixes that cover exactly the rest
/// (sorted). Used to carve the API server's endpoints out of a side's pod CIDR.
pub fn subtract(prefix: Prefix, holes: &[Prefix]) -> Vec<Prefix> {
    if holes.iter().any(|hole| hole.contains(prefix)) {
        return Vec::new();
    }
    if !holes.iter().any(|hole| hole.overlaps(prefix)) {
        return vec![prefix];
    }
    // A hole lies strictly inside: split in two and carve each half.
    prefix
        .halves()
        .into_iter()
        .flat_map(|half| subtract(half, holes))
        .collect()
}

/// A pod on this node, as the agent lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalPod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// Whether the pod shares the node's network namespace.
    pub host_network: bool,
}

/// What the agent knows about its node when it plans.
#[derive(Clone, Debug, Default)]
pub struct NodeFacts {
    /// This node's name (`NODE_NAME`).
    pub node_name: String,
    /// The agent's own pod UID (`POD_UID`), never acted on without an override.
    pub agent_pod_uid: String,
    /// The agent's own namespace (`POD_NAMESPACE`).
    pub agent_namespace: String,
    /// The API server's endpoints (from the `kubernetes` Service's EndpointSlices).
    pub api_server_endpoints: Vec<Ipv4Addr>,
    /// Pods on this node (needed for pod-level partitions).
    pub pods: Vec<LocalPod>,
    /// What the agent never cuts, whatever the Fault says (`faultlined agent --exempt-cidr`):
    /// e.g. DNS, the monitoring stack or a cloud metadata service.
    pub exempt_prefixes: Vec<Prefix>,
}

/// The node's part of a Fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodePlan {
    /// The Fault does not concern this node.
    NotMine,
    /// A guard refused the Fault on this node; the reason goes into the node's status.
    Refused(String),
    /// Block these destinations (host namespace and/or pod namespaces), until the deadline.
    Partition {
        /// The rule-priority slot.
        slot: u32,
        /// The sides, by node name, for the ledger and reports.
        sides: Vec<Vec<String>>,
        /// Every rule, already carved around the exemptions.
        rules: Vec<PartitionRule>,
        /// Pods left alone by a guard (namespace/name), for the status.
        skipped_pods: Vec<String>,
    },
    /// Signal every process of one pod.
    Pod {
        /// Pause, kill or stop.
        kind: FaultKind,
        /// The pod.
        pod: PodRef,
    },
}

/// Plans this node's part of `spec`. Pure: the same inputs always give the same plan.
pub fn plan_for_node(spec: &FaultSpec, facts: &NodeFacts) -> NodePlan {
    match spec.action {
        FaultKind::Partition => plan_partition(spec, facts),
        kind @ (FaultKind::Pause | FaultKind::Kill | FaultKind::Stop) => {
            let Some(pod) = &spec.pod else {
                return NodePlan::Refused(format!(
                    "spec.pod is required for action {}",
                    kind.as_str()
                ));
            };
            if pod.node_name != facts.node_name {
                return NodePlan::NotMine;
            }
            if let Some(reason) = pod_guard(spec, facts, &pod.namespace, &pod.uid) {
                return NodePlan::Refused(format!("pod {}/{}: {reason}", pod.namespace, pod.name));
            }
            NodePlan::Pod {
                kind,
                pod: pod.clone(),
            }
        }
    }
}

/// Why a pod may not be touched, if it may not.
fn pod_guard(spec: &FaultSpec, facts: &NodeFacts, namespace: &str, uid: &str) -> Option<String> {
    if uid == facts.agent_pod_uid && !spec.overrides.allow_agent_pod {
        return Some(
            "this is the Faultline agent's own pod; set spec.overrides.allowAgentPod to allow it"
                .into(),
        );
    }
    if (namespace == SYSTEM_NAMESPACE || namespace == facts.agent_namespace)
        && !spec.overrides.allow_system_pods
    {
        return Some(format!(
            "namespace {namespace} is protected; set spec.overrides.allowSystemPods to allow it"
        ));
    }
    None
}

fn plan_partition(spec: &FaultSpec, facts: &NodeFacts) -> NodePlan {
    let Some(partition) = &spec.partition else {
        return NodePlan::Refused("spec.partition is required for action partition".into());
    };
    if spec.priority_slot >= RULE_PRIORITY_SLOTS {
        return NodePlan::Refused(format!(
            "spec.prioritySlot {} is outside 0-{}",
            spec.priority_slot,
            RULE_PRIORITY_SLOTS - 1
        ));
    }
    let mut seen = BTreeSet::new();
    for side in &partition.sides {
        for node in &side.nodes {
            if !seen.insert(node.as_str()) {
                return NodePlan::Refused(format!(
                    "node {node} is listed on more than one side; list each node once"
                ));
            }
        }
    }
    let Some(mine) = partition
        .sides
        .iter()
        .find(|side| side.nodes.contains(&facts.node_name))
    else {
        return NodePlan::NotMine;
    };
    let blocked = match blocked_sides(partition, mine) {
        Ok(blocked) => blocked,
        Err(reason) => return NodePlan::Refused(reason),
    };

    let mut holes = Vec::new();
    if !spec.overrides.isolate_control_plane {
        holes.extend(
            facts
                .api_server_endpoints
                .iter()
                .map(|address| Prefix::new(*address, 32)),
        );
    }
    holes.extend(facts.exempt_prefixes.iter().copied());
    for cidr in &partition.exempt_cidrs {
        match Prefix::parse(cidr) {
            Ok(prefix) => holes.push(prefix),
            Err(reason) => {
                return NodePlan::Refused(format!("spec.partition.exemptCidrs: {reason}"))
            }
        }
    }

    let destinations = match destinations(&blocked, &holes) {
        Ok(destinations) => destinations,
        Err(reason) => return NodePlan::Refused(reason),
    };
    for own in mine
        .node_addresses
        .iter()
        .filter_map(|a| Prefix::parse(a).ok())
    {
        if let Some(covering) = destinations.iter().find(|d| d.contains(own)) {
            return NodePlan::Refused(format!(
                "the rule to {covering} would cover this node's own address {}; sides must not overlap",
                own.address
            ));
        }
    }
    let alone = mine.nodes.len() == 1;
    let cut_from_every_side = blocked.len() + 1 == partition.sides.len();
    let control_plane_cut =
        spec.overrides.isolate_control_plane || facts.api_server_endpoints.is_empty();
    if alone && cut_from_every_side && control_plane_cut && !spec.overrides.allow_node_isolation {
        return NodePlan::Refused(format!(
            "node {} would be cut off from everything (alone on side {}, every other side cut, no API server exemption); set spec.overrides.allowNodeIsolation to allow it",
            facts.node_name, mine.name
        ));
    }

    let (rules, skipped_pods) = rules_in_namespaces(spec, facts, partition.mode, &destinations);
    NodePlan::Partition {
        slot: spec.priority_slot,
        sides: partition
            .sides
            .iter()
            .map(|side| side.nodes.clone())
            .collect(),
        rules,
        skipped_pods,
    }
}

/// The rules for every namespace the mode covers, and the pods a guard left alone.
fn rules_in_namespaces(
    spec: &FaultSpec,
    facts: &NodeFacts,
    mode: PartitionMode,
    destinations: &BTreeSet<Prefix>,
) -> (Vec<PartitionRule>, Vec<String>) {
    let priority = priority_for_slot(spec.priority_slot);
    let mut namespaces = Vec::new();
    let mut skipped_pods = Vec::new();
    if matches!(mode, PartitionMode::Nodes | PartitionMode::Both) {
        namespaces.push(NODE_NETNS.to_owned());
    }
    if matches!(mode, PartitionMode::Pods | PartitionMode::Both) {
        for pod in facts.pods.iter().filter(|pod| !pod.host_network) {
            if pod_guard(spec, facts, &pod.namespace, &pod.uid).is_some() {
                skipped_pods.push(format!("{}/{}", pod.namespace, pod.name));
            } else {
                namespaces.push(pod_netns_name(&pod.uid));
            }
        }
    }
    let rules = namespaces
        .iter()
        .flat_map(|netns| {
            destinations.iter().map(move |destination| PartitionRule {
                netns: netns.clone(),
                destination: destination.address,
                prefix_len: destination.len,
                priority,
            })
        })
        .collect();
    (rules, skipped_pods)
}

/// The sides `mine` may not reach: its `cannotReach` list, or every other side.
fn blocked_sides<'a>(
    partition: &'a PartitionSpec,
    mine: &PartitionSide,
) -> Result<Vec<&'a PartitionSide>, String> {
    let Some(names) = &mine.cannot_reach else {
        return Ok(partition
            .sides
            .iter()
            .filter(|side| side.name != mine.name)
            .collect());
    };
    let mut sides = Vec::new();
    for name in names {
        match partition.sides.iter().find(|side| &side.name == name) {
            Some(side) if side.name != mine.name => sides.push(side),
            Some(_) => return Err(format!("side {} lists itself in cannotReach", mine.name)),
            None => {
                return Err(format!(
                    "side {} cannot reach unknown side {name:?}; name one of: {}",
                    mine.name,
                    partition
                        .sides
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
    }
    Ok(sides)
}

/// Every prefix the blocked sides own, carved around the `holes`.
fn destinations(blocked: &[&PartitionSide], holes: &[Prefix]) -> Result<BTreeSet<Prefix>, String> {
    let mut destinations = BTreeSet::new();
    for side in blocked {
        for (field, text) in side
            .node_addresses
            .iter()
            .map(|a| ("nodeAddresses", a))
            .chain(side.pod_cidrs.iter().map(|c| ("podCIDRs", c)))
        {
            let prefix = Prefix::parse(text)
                .map_err(|reason| format!("side {} {field}: {reason}", side.name))?;
            if prefix.len < NARROWEST_PREFIX_LEN {
                return Err(format!(
                    "side {} {field}: {prefix} is wider than /{NARROWEST_PREFIX_LEN}; a rule that wide cuts far more than the side",
                    side.name
                ));
            }
            destinations.extend(subtract(prefix, holes));
        }
    }
    Ok(destinations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::crd::Overrides;

    fn prefix(text: &str) -> Prefix {
        Prefix::parse(text).expect("prefix")
    }

    #[test]
    fn subtract_table() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("10.0.1.0/24", &[], &["10.0.1.0/24"]),
            ("10.0.1.0/24", &["10.0.2.5"], &["10.0.1.0/24"]),
            ("10.0.1.0/24", &["10.0.0.0/16"], &[]),
            ("10.0.1.0/24", &["10.0.1.0/24"], &[]),
            (
                "10.0.1.0/30",
                &["10.0.1.1"],
                &["10.0.1.0/32", "10.0.1.2/31"],
            ),
            ("10.0.1.0/24", &["10.0.1.0/25"], &["10.0.1.128/25"]),
            (
                "10.0.1.0/29",
                &["10.0.1.0", "10.0.1.7"],
                &["10.0.1.1/32", "10.0.1.2/31", "10.0.1.4/31", "10.0.1.6/32"],
            ),
        ];
        for (from, holes, want) in cases {
            let holes: Vec<Prefix> = holes.iter().map(|h| prefix(h)).collect();
            let got: Vec<String> = subtract(prefix(from), &holes)
                .iter()
                .map(ToString::to_string)
                .collect();
            assert_eq!(&got, want, "{from} minus {holes:?}");
        }
    }

    #[test]
    fn subtract_covers_exactly_the_rest() {
        let from = prefix("10.9.0.0/26");
        let holes = [prefix("10.9.0.17"), prefix("10.9.0.40/30")];
        let pieces = subtract(from, &holes);
        for host in 0..64u32 {
            let address = Ipv4Addr::from(u32::from(from.address) + host);
            let single = Prefix::new(address, 32);
            let in_hole = holes.iter().any(|h| h.contains(single));
            let covered = pieces.iter().filter(|p| p.contains(single)).count();
            assert_eq!(covered, usize::from(!in_hole), "{address}");
        }
    }

    #[test]
    fn prefix_parse_errors_say_what_is_wrong() {
        assert!(Prefix::parse("fd00::1/64").unwrap_err().contains("IPv6"));
        assert!(Prefix::parse("10.0.0.0/33").unwrap_err().contains("0-32"));
        assert!(Prefix::parse("ten").unwrap_err().contains("not an IPv4"));
        assert_eq!(prefix("10.1.2.3/24").to_string(), "10.1.2.0/24");
    }

    fn side(name: &str, nodes: &[&str], address: &str, cidr: &str) -> PartitionSide {
        PartitionSide {
            name: name.into(),
            nodes: nodes.iter().map(|n| (*n).to_owned()).collect(),
            node_addresses: vec![address.into()],
            pod_cidrs: vec![cidr.into()],
            cannot_reach: None,
        }
    }

    fn zone_split(mode: PartitionMode) -> FaultSpec {
        FaultSpec {
            action: FaultKind::Partition,
            partition: Some(PartitionSpec {
                sides: vec![
                    side("a", &["n-a1"], "192.168.1.10", "10.244.1.0/24"),
                    side("rest", &["n-b1", "n-c1"], "192.168.2.10", "10.244.2.0/24"),
                ],
                mode,
                exempt_cidrs: vec![],
            }),
            pod: None,
            deadline: "2026-12-02T08:00:00Z".into(),
            priority_slot: 7,
            experiment: None,
            created_by: "test".into(),
            overrides: Overrides::default(),
        }
    }

    fn facts(node: &str) -> NodeFacts {
        NodeFacts {
            node_name: node.into(),
            agent_pod_uid: "agent-uid".into(),
            agent_namespace: "faultline-system".into(),
            api_server_endpoints: vec![Ipv4Addr::new(192, 168, 2, 10)],
            pods: vec![
                LocalPod {
                    namespace: "shop".into(),
                    name: "cart-0".into(),
                    uid: "u-cart".into(),
                    host_network: false,
                },
                LocalPod {
                    namespace: "kube-system".into(),
                    name: "coredns-1".into(),
                    uid: "u-dns".into(),
                    host_network: false,
                },
                LocalPod {
                    namespace: "faultline-system".into(),
                    name: "agent".into(),
                    uid: "agent-uid".into(),
                    host_network: true,
                },
            ],
            exempt_prefixes: Vec::new(),
        }
    }

    fn rules_of(plan: &NodePlan) -> Vec<String> {
        match plan {
            NodePlan::Partition { rules, .. } => rules
                .iter()
                .map(|r| {
                    format!(
                        "{} {}/{} {}",
                        r.netns, r.destination, r.prefix_len, r.priority
                    )
                })
                .collect(),
            other => panic!("not a partition: {other:?}"),
        }
    }

    #[test]
    fn the_agents_own_exemptions_are_never_cut() {
        let mut facts = facts("n-a1");
        facts.exempt_prefixes = vec![Prefix::parse("10.244.2.128/25").expect("prefix")];
        let plan = plan_for_node(&zone_split(PartitionMode::Nodes), &facts);
        assert_eq!(rules_of(&plan), vec!["node 10.244.2.0/25 24007"]);
        // Even when the Fault asks to cut the control plane too (and may isolate the node).
        let mut fault = zone_split(PartitionMode::Nodes);
        fault.overrides.isolate_control_plane = true;
        fault.overrides.allow_node_isolation = true;
        let plan = plan_for_node(&fault, &facts);
        assert_eq!(
            rules_of(&plan),
            vec!["node 10.244.2.0/25 24007", "node 192.168.2.10/32 24007"]
        );
    }

    #[test]
    fn node_mode_cuts_the_other_side_and_exempts_the_api_server() {
        let plan = plan_for_node(&zone_split(PartitionMode::Nodes), &facts("n-a1"));
        // The API server lives at the other side's node address: that /32 is left out.
        assert_eq!(rules_of(&plan), vec!["node 10.244.2.0/24 24007"]);
        let plan = plan_for_node(&zone_split(PartitionMode::Nodes), &facts("n-b1"));
        assert_eq!(
            rules_of(&plan),
            vec!["node 10.244.1.0/24 24007", "node 192.168.1.10/32 24007"]
        );
        assert_eq!(
            plan_for_node(&zone_split(PartitionMode::Nodes), &facts("n-z9")),
            NodePlan::NotMine
        );
    }

    #[test]
    fn isolating_the_control_plane_cuts_it_too() {
        let mut spec = zone_split(PartitionMode::Nodes);
        spec.overrides.isolate_control_plane = true;
        spec.overrides.allow_node_isolation = true;
        assert_eq!(
            rules_of(&plan_for_node(&spec, &facts("n-a1"))),
            vec!["node 10.244.2.0/24 24007", "node 192.168.2.10/32 24007"]
        );
    }

    #[test]
    fn a_lone_node_cut_from_everything_needs_an_override() {
        let mut spec = zone_split(PartitionMode::Nodes);
        spec.overrides.isolate_control_plane = true;
        let NodePlan::Refused(reason) = plan_for_node(&spec, &facts("n-a1")) else {
            panic!("not refused")
        };
        assert!(reason.contains("allowNodeIsolation"), "{reason}");
        // The side with two nodes keeps a peer, so it is not cut off from everything.
        assert!(matches!(
            plan_for_node(&spec, &facts("n-b1")),
            NodePlan::Partition { .. }
        ));
    }

    #[test]
    fn pod_mode_covers_pod_namespaces_but_not_protected_or_host_network_pods() {
        let plan = plan_for_node(&zone_split(PartitionMode::Both), &facts("n-b1"));
        let rules = rules_of(&plan);
        assert!(rules.contains(&"node 10.244.1.0/24 24007".to_owned()));
        assert!(rules.contains(&"pod-u-cart 10.244.1.0/24 24007".to_owned()));
        assert!(!rules.iter().any(|r| r.starts_with("pod-u-dns")));
        assert!(!rules.iter().any(|r| r.starts_with("pod-agent-uid")));
        let NodePlan::Partition { skipped_pods, .. } = plan else {
            unreachable!()
        };
        assert_eq!(skipped_pods, vec!["kube-system/coredns-1"]);
        let pods_only = rules_of(&plan_for_node(
            &zone_split(PartitionMode::Pods),
            &facts("n-b1"),
        ));
        assert!(pods_only.iter().all(|r| r.starts_with("pod-u-cart")));
    }

    #[test]
    fn bad_partitions_are_refused_with_a_reason() {
        let mut twice = zone_split(PartitionMode::Nodes);
        twice.partition.as_mut().unwrap().sides[1]
            .nodes
            .push("n-a1".into());
        let mut wide = zone_split(PartitionMode::Nodes);
        wide.partition.as_mut().unwrap().sides[1].pod_cidrs = vec!["10.0.0.0/4".into()];
        let mut unknown = zone_split(PartitionMode::Nodes);
        unknown.partition.as_mut().unwrap().sides[0].cannot_reach = Some(vec!["zz".into()]);
        let mut overlap = zone_split(PartitionMode::Nodes);
        overlap.partition.as_mut().unwrap().sides[1].pod_cidrs = vec!["192.168.1.0/24".into()];
        let mut v6 = zone_split(PartitionMode::Nodes);
        v6.partition.as_mut().unwrap().sides[1].pod_cidrs = vec!["fd00::/64".into()];
        for (spec, needle) in [
            (twice, "more than one side"),
            (wide, "wider than /8"),
            (unknown, "unknown side \"zz\""),
            (overlap, "own address"),
            (v6, "IPv6"),
        ] {
            match plan_for_node(&spec, &facts("n-a1")) {
                NodePlan::Refused(reason) => assert!(reason.contains(needle), "{reason}"),
                other => panic!("expected a refusal with {needle:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_bridge_side_reaches_everyone() {
        let mut spec = zone_split(PartitionMode::Nodes);
        let sides = &mut spec.partition.as_mut().unwrap().sides;
        sides[0].cannot_reach = Some(vec!["rest".into()]);
        sides[1].cannot_reach = Some(vec!["a".into()]);
        sides.push(PartitionSide {
            cannot_reach: Some(vec![]),
            ..side("bridge", &["n-x1"], "192.168.3.10", "10.244.3.0/24")
        });
        assert_eq!(
            rules_of(&plan_for_node(&spec, &facts("n-x1"))),
            Vec::<String>::new()
        );
        assert_eq!(
            rules_of(&plan_for_node(&spec, &facts("n-a1"))),
            vec!["node 10.244.2.0/24 24007"]
        );
    }

    #[test]
    fn pod_faults_act_only_on_the_pods_node_and_respect_guards() {
        let mut spec = zone_split(PartitionMode::Nodes);
        spec.action = FaultKind::Pause;
        spec.partition = None;
        spec.pod = Some(PodRef {
            namespace: "shop".into(),
            name: "cart-0".into(),
            uid: "u-cart".into(),
            node_name: "n-b1".into(),
        });
        assert_eq!(plan_for_node(&spec, &facts("n-a1")), NodePlan::NotMine);
        assert!(matches!(
            plan_for_node(&spec, &facts("n-b1")),
            NodePlan::Pod {
                kind: FaultKind::Pause,
                ..
            }
        ));
        for (namespace, uid, needle) in [
            ("kube-system", "u-dns", "allowSystemPods"),
            ("faultline-system", "agent-uid", "allowAgentPod"),
        ] {
            let mut guarded = spec.clone();
            let pod = guarded.pod.as_mut().unwrap();
            pod.namespace = namespace.into();
            pod.uid = uid.into();
            match plan_for_node(&guarded, &facts("n-b1")) {
                NodePlan::Refused(reason) => assert!(reason.contains(needle), "{reason}"),
                other => panic!("{other:?}"),
            }
            let mut allowed = guarded.clone();
            allowed.overrides.allow_system_pods = true;
            allowed.overrides.allow_agent_pod = true;
            assert!(matches!(
                plan_for_node(&allowed, &facts("n-b1")),
                NodePlan::Pod { .. }
            ));
        }
    }
}
