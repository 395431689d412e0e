//! The custom resources of the cluster target: `Fault` (one injected fault, already resolved)
//! and `Halt` (the global stop switch), both cluster-scoped in `faultline.dev/v1alpha1`. The
//! namespaced `Experiment` is in [`super::experiment`]; its CRD is generated here with the others.
//!
//! The CRD YAML under `manifests/` is generated from these types ([`crd_manifests`]); a test
//! fails when the checked-in files differ. The schema stays structural: the action is a plain
//! string kind plus optional sections, never an internally tagged enum.

use std::collections::BTreeMap;

use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of every Faultline resource.
pub const GROUP: &str = "faultline.dev";
/// The API version of every Faultline resource.
pub const VERSION: &str = "v1alpha1";
/// The finalizer that keeps a Fault until every node that applied it has reverted it.
pub const NODE_AGENTS_FINALIZER: &str = "faultline.dev/node-agents";
/// Label on a Fault naming its experiment (`NAMESPACE.NAME`), for list selectors.
pub const EXPERIMENT_LABEL: &str = "faultline.dev/experiment";

/// One injected fault, resolved down to nodes, addresses and pods. Created by the runner (or
/// `chaosctl inject --context`), applied by the node agents, each for its own node.
#[derive(CustomResource, Clone, Debug, PartialEq, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "faultline.dev",
    version = "v1alpha1",
    kind = "Fault",
    status = "FaultStatus",
    shortname = "flt",
    category = "faultline",
    printcolumn = r#"{"name":"Action","type":"string","jsonPath":".spec.action"}"#,
    printcolumn = r#"{"name":"Deadline","type":"string","jsonPath":".spec.deadline"}"#,
    printcolumn = r#"{"name":"Experiment","type":"string","jsonPath":".spec.experiment"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultSpec {
    /// What the fault does; the matching section (`partition` or `pod`) must be set.
    pub action: FaultKind,
    /// For `partition`: the sides and who may not reach whom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<PartitionSpec>,
    /// For `pause`, `kill` and `stop`: the pod whose containers are signalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRef>,
    /// Absolute deadline, RFC 3339. Every agent heals at this moment on its own clock, whether or
    /// not it can reach the API server.
    pub deadline: String,
    /// The rule-priority slot (0-999) of a partition; unique among active Faults.
    #[serde(default)]
    pub priority_slot: u32,
    /// The experiment this fault belongs to, `NAMESPACE/NAME`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment: Option<String>,
    /// Who created it: a user, `chaosctl`, or a runner Job.
    pub created_by: String,
    /// Explicit overrides of the node agents' blast-radius guards.
    #[serde(default, skip_serializing_if = "Overrides::is_default")]
    pub overrides: Overrides,
}

/// The kinds of fault a node agent applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FaultKind {
    /// Cut sides of the cluster off from each other: nf_tables elements that the kernel expires
    /// at the deadline.
    Partition,
    /// SIGSTOP every process of a pod until the deadline, then SIGCONT.
    Pause,
    /// SIGKILL every process of a pod once; the kubelet restarts the containers.
    Kill,
    /// Keep every process of a pod dead until the deadline (SIGKILL, again on every restart).
    Stop,
}

impl FaultKind {
    /// The kind as written in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::Pause => "pause",
            FaultKind::Kill => "kill",
            FaultKind::Stop => "stop",
        }
    }
}

/// A partition: named sides, each owning nodes, node addresses and pod CIDRs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PartitionSpec {
    /// The sides. A node appears in at most one side.
    pub sides: Vec<PartitionSide>,
    /// Where the rules go on each node: the host namespace, every pod namespace, or both.
    #[serde(default)]
    pub mode: PartitionMode,
    /// Extra destinations never cut (CIDRs), on top of the API server's endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exempt_cidrs: Vec<String>,
}

/// One side of a partition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PartitionSide {
    /// The side's name, e.g. a zone.
    pub name: String,
    /// Node names on this side.
    pub nodes: Vec<String>,
    /// The nodes' addresses (IPv4).
    #[serde(default)]
    pub node_addresses: Vec<String>,
    /// The nodes' pod CIDRs (`Node.spec.podCIDRs`, IPv4).
    #[serde(default, rename = "podCIDRs")]
    pub pod_cidrs: Vec<String>,
    /// The sides this one may not reach, by name. Absent: every other side (a clean split).
    /// Bridges and rings name their own lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cannot_reach: Option<Vec<String>>,
}

/// Where partition rules are installed on a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PartitionMode {
    /// The host network namespace only: covers host traffic and what the host forwards for pods.
    #[default]
    Nodes,
    /// Every pod's network namespace only, for datapaths that bypass the host's routing (eBPF).
    Pods,
    /// Both.
    Both,
}

/// A pod, pinned by UID so a recreated pod of the same name is never touched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// The node the pod runs on; only that node's agent acts.
    pub node_name: String,
}

/// Explicit overrides of the node agents' blast-radius guards. All default to `false`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(clippy::struct_excessive_bools)] // Independent opt-ins, each its own field in the CRD.
pub struct Overrides {
    /// Allow acting on pods in `kube-system`.
    #[serde(default)]
    pub allow_system_pods: bool,
    /// Allow acting on the agent's own pod.
    #[serde(default)]
    pub allow_agent_pod: bool,
    /// Allow a partition that leaves a node with nobody to reach (no peer, no control plane).
    #[serde(default)]
    pub allow_node_isolation: bool,
    /// Also cut the API server's endpoints off; then only deadlines guard.
    #[serde(default)]
    pub isolate_control_plane: bool,
}

impl Overrides {
    /// Whether every override is off (then the field is left out of the object).
    pub fn is_default(&self) -> bool {
        *self == Overrides::default()
    }
}

/// What each node's agent did with the fault, keyed by node name. Each agent writes only its
/// own key, through server-side apply with its own field manager.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FaultStatus {
    /// Per node.
    #[serde(default)]
    pub nodes: BTreeMap<String, NodeFaultStatus>,
}

/// One node's part of a fault.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeFaultStatus {
    /// When the fault was in effect on the node (every rule installed, every signal sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
    /// When the node's revert completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_at: Option<String>,
    /// Why the revert happened: `deadline`, `deleted`, `halted`, `refused` or `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last error (a refusal by a guard, or a failed inject or revert).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Rules installed on the node (partitions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<u32>,
    /// Processes signalled (pod faults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<u32>,
}

/// The global halt. While any Halt object exists, every agent reverts every fault and applies
/// none. `chaosctl halt --context C` creates `halt`; `chaosctl resume --context C` deletes it.
#[derive(
    CustomResource, Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema,
)]
#[kube(
    group = "faultline.dev",
    version = "v1alpha1",
    kind = "Halt",
    category = "faultline",
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".spec.reason"}"#,
    printcolumn = r#"{"name":"By","type":"string","jsonPath":".spec.requestedBy"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HaltSpec {
    /// Why faults are halted.
    #[serde(default)]
    pub reason: String,
    /// Who asked.
    #[serde(default)]
    pub requested_by: String,
}

/// The name `chaosctl halt --context` gives its Halt object.
pub const HALT_NAME: &str = "halt";

/// The CRDs as checked in under `manifests/`: file name and YAML text.
pub fn crd_manifests() -> Vec<(&'static str, String)> {
    let header = "# Generated from experiments/src/kubernetes/crd.rs; do not edit. Regenerate with\n# FAULTLINE_UPDATE_MANIFESTS=1 cargo test -p faultline-experiments --test crd_manifests\n";
    [
        ("01-crd-faults.yaml", serde_yaml::to_string(&Fault::crd())),
        ("01-crd-halts.yaml", serde_yaml::to_string(&Halt::crd())),
        (
            "01-crd-experiments.yaml",
            serde_yaml::to_string(&super::experiment::Experiment::crd()),
        ),
    ]
    .into_iter()
    .map(|(file, yaml)| (file, format!("{header}{}", yaml.expect("CRDs serialise"))))
    .collect()
}
