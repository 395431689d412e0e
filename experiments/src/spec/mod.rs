//! The experiment spec: YAML with unknown fields rejected, and a pure [`ExperimentSpec::validate`]
//! kept apart from anything that touches the system (`chaosctl validate` runs only that).

pub mod catalog;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::lab::faults::QuorumLossMode;

/// Errors of parsing or validating a spec. Messages say where (file, line, column or field) and
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The YAML does not parse or does not match the schema.
    #[error("{source_name}: {message}")]
    Parse {
        /// File name, or `catalog:NAME`.
        source_name: String,
        /// What is wrong, with line and column.
        message: String,
    },
    /// The spec parses but cannot run.
    #[error("{source_name}: {field}: {message}")]
    Invalid {
        /// File name, or `catalog:NAME`.
        source_name: String,
        /// The field at fault, e.g. `faults[0].selector`.
        field: String,
        /// What is wrong and what to do.
        message: String,
    },
    /// No such scenario in the catalog.
    #[error(
        "unknown scenario `{name}`{hint}; `chaosctl list` shows the built-in ones, or pass a spec file path",
        name = .0,
        hint = catalog::did_you_mean(.0)
    )]
    UnknownScenario(String),
}

/// One experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSpec {
    /// Short name, e.g. `az-failure`.
    pub name: String,
    /// What it does and what it checks.
    pub description: String,
    /// The test-plan id it implements, e.g. `T6.3`.
    #[serde(default)]
    pub plan_id: Option<String>,
    /// Where it runs.
    #[serde(default)]
    pub target: Target,
    /// The background tenant load.
    #[serde(default)]
    pub workload: WorkloadSpec,
    /// What must hold before faults are injected, and outside fault windows.
    #[serde(default)]
    pub steady_state: SteadyState,
    /// The faults, in start order.
    pub faults: Vec<FaultSpec>,
    /// Healthy load before the first fault; the baseline for throughput and latency.
    #[serde(with = "duration_text")]
    pub baseline: Duration,
    /// Total run time from the start of the baseline; the final read-back follows it.
    #[serde(with = "duration_text")]
    pub duration: Duration,
    /// How long after heal (or after the fault, for faults the system should survive) recovery
    /// may take before it counts as "never recovered".
    #[serde(with = "duration_text")]
    pub recovery_deadline: Duration,
    /// The convergence deadline, counted from the last heal: the final read-back waits until
    /// every server reports the same state for every stream, or until this deadline passes;
    /// replicas that still differ then are `divergence-persisted`. Default 10s.
    #[serde(default = "default_settle", with = "duration_text")]
    pub settle: Duration,
    /// Service-level objectives the verdict checks.
    pub slo: SloSpec,
    /// Conditions that end the run early and heal at once.
    #[serde(default)]
    pub abort: Vec<AbortCondition>,
    /// Limits on how much the faults may touch.
    #[serde(default)]
    pub blast_radius: BlastRadius,
    /// With `target: kubernetes`: what the faults select on the cluster. Only there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesSpec>,
    /// On the lab: the topology file this experiment needs, relative to the spec file (see
    /// [`ExperimentSpec::topology_path`]). The lab is brought up with it, and a lab that is up
    /// with another topology (or other server binaries) is refused. Default: the lab that is
    /// up, else the built-in topology.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<String>,
}

/// Where an experiment runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The embedded lab.
    #[default]
    Lab,
    /// A Kubernetes cluster: faults become Fault objects for the node agents, drains and pod
    /// deletes go through the API server (needs a `kubernetes:` section).
    Kubernetes,
}

/// What an experiment selects on a cluster. A fault's `service` names one of `workloads` (or
/// `nats`), its `zone` a value of `topology.kubernetes.io/zone`, its `node` a node name.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSpec {
    /// The workloads faults may hit, each a set of pods by namespace and label selector.
    #[serde(default)]
    pub workloads: Vec<WorkloadSelector>,
    /// Which nodes the experiment may touch; empty: every node with a zone label.
    #[serde(default)]
    pub nodes: NodeScope,
    /// The NATS cluster, for `quorum-loss` (and `service: nats`).
    #[serde(default)]
    pub nats: Option<NatsSelector>,
    /// Where partition rules go on each node: `nodes`, `pods` or `both`.
    #[serde(default)]
    pub partition_mode: crate::kubernetes::crd::PartitionMode,
    /// How `kill` takes a pod down: `delete` (API, grace period 0) or `crash` (SIGKILL by the
    /// node agent).
    #[serde(default)]
    pub kill_mode: PodKillMode,
    /// At most this share (0-1] of a zone's nodes drained at once; absent: no share limit (the
    /// one-node limit still holds).
    #[serde(default)]
    pub max_drain_zone_fraction: Option<f64>,
    /// Explicit overrides of the cluster's blast-radius refusals.
    #[serde(default)]
    pub overrides: ClusterOverrides,
}

/// A workload: pods by namespace and label selector.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSelector {
    /// The name faults use in `selector.service`, e.g. `gateway`.
    pub name: String,
    /// The pods' namespace.
    pub namespace: String,
    /// Labels every selected pod carries (all must match), e.g. `{app: gateway}`.
    pub selector: std::collections::BTreeMap<String, String>,
    /// The port its pods serve HTTP on, for the tenant load's `http` adapter when this is the
    /// `gateway` workload; absent: 8080.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl WorkloadSelector {
    /// The selector as the API's `labelSelector` query text (`a=b,c=d`).
    pub fn label_selector(&self) -> String {
        label_selector(&self.selector)
    }
}

/// `a=b,c=d` from a label map.
pub fn label_selector(labels: &std::collections::BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The nodes an experiment may touch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeScope {
    /// Only nodes whose `topology.kubernetes.io/zone` is one of these; empty: every zone.
    #[serde(default)]
    pub zones: Vec<String>,
    /// Only these nodes; empty: every node of the zones above.
    #[serde(default)]
    pub names: Vec<String>,
}

/// The NATS cluster on a cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSelector {
    /// The pods' namespace.
    pub namespace: String,
    /// Labels every NATS server pod carries.
    pub selector: std::collections::BTreeMap<String, String>,
    /// The monitoring port (`/varz`, `/jsz`) on each pod's IP.
    #[serde(default = "default_monitor_port")]
    pub monitor_port: u16,
    /// The client port on each pod's IP, where the tenant load connects.
    #[serde(default = "default_client_port")]
    pub client_port: u16,
}

fn default_monitor_port() -> u16 {
    8222
}

fn default_client_port() -> u16 {
    4222
}

/// The port a workload serves HTTP on when its entry gives none: the tenant gateway's.
pub const DEFAULT_WORKLOAD_HTTP_PORT: u16 = 8080;

/// How a cluster `kill` takes pods down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PodKillMode {
    /// Delete the pod through the API with grace period 0; its controller replaces it.
    #[default]
    Delete,
    /// SIGKILL the pod's processes through the node agent; the kubelet restarts the containers.
    Crash,
}

/// Explicit overrides of the cluster target's blast-radius refusals. All default to `false`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(clippy::struct_excessive_bools)] // Independent opt-ins, each its own field.
pub struct ClusterOverrides {
    /// Allow targets in `kube-system` or Faultline's own namespace.
    pub allow_protected_namespaces: bool,
    /// Allow draining more than one node, or more than `max_drain_zone_fraction` of a zone.
    pub allow_multi_node_drain: bool,
}

/// The tenant load.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadSpec {
    /// Number of tenants (70 % small, 25 % medium, 5 % large).
    pub tenants: u32,
    /// Total operations per second.
    pub rate: f64,
    /// `nats` (JetStream, built in) or `http` (the tenant-records contract).
    pub adapter: String,
    /// Where the clients stand during a partition: `majority` (default: with the largest
    /// side), `per-zone` (one client namespace per zone, sharing its zone's fate, using its
    /// own zone's endpoints first) or `{zone: X}` (every client in zone X). Other than
    /// `majority`: on the lab only.
    pub clients: crate::workload::clients::Clients,
    /// With `adapter: http`: the services that serve the tenant-records contract, on the lab
    /// the topology's service names, on a cluster names in `kubernetes.workloads`; the load
    /// goes to every replica (pod) of each. Default `[gateway]`.
    pub services: Vec<String>,
    /// With `adapter: http`: `http` (default: each chat message is an HTTP request) or
    /// `websocket` (one WebSocket per chat session, docs/workload.md).
    pub chat: crate::workload::ChatMode,
    /// Replicas of each tenant's stream.
    pub stream_replicas: u32,
    /// Seed of the arrival schedule.
    pub seed: u64,
    /// NATS: in the final read-back, also read each server's own replica alone, with the other
    /// servers stopped and held down, so that `lost-on-node` names the node that lacks a value (a read through
    /// a server may be answered by another replica). About 1 s per server plus the reading.
    /// Default true.
    pub replica_read_back: bool,
}

impl Default for WorkloadSpec {
    fn default() -> Self {
        Self {
            tenants: 100,
            rate: 200.0,
            adapter: "nats".to_owned(),
            clients: crate::workload::clients::Clients::Majority,
            services: vec![crate::workload::target::GATEWAY_SERVICE.to_owned()],
            chat: crate::workload::ChatMode::Http,
            stream_replicas: 3,
            seed: 1,
            replica_read_back: true,
        }
    }
}

/// The steady-state hypothesis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SteadyState {
    /// Minimum share of `ok` operations during the baseline.
    pub min_success_rate: f64,
    /// Maximum p99 latency during the baseline.
    #[serde(with = "duration_text")]
    pub max_p99: Duration,
    /// Extra probes that must pass before injecting.
    pub probes: Vec<Probe>,
}

impl Default for SteadyState {
    fn default() -> Self {
        Self {
            min_success_rate: 0.99,
            max_p99: Duration::from_secs(1),
            probes: vec![],
        }
    }
}

/// A steady-state probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Probe {
    /// `GET path` on every replica of a service answers 2xx.
    Http {
        /// Service name.
        service: String,
        /// Port.
        port: u16,
        /// Path.
        path: String,
    },
    /// Every tenant stream has a leader and all its replicas current.
    NatsStreamHealth,
}

/// One fault of an experiment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// What kind of fault.
    pub kind: FaultKind,
    /// What it hits.
    pub selector: Selector,
    /// Offset from the end of the baseline.
    #[serde(default, with = "duration_text")]
    pub start: Duration,
    /// How long it holds (ignored for `kill`).
    #[serde(default, with = "duration_text")]
    pub duration: Duration,
    /// Repeat it.
    #[serde(default)]
    pub repeat: Option<Repeat>,
    /// For `quorum-loss`: stop, pause or isolate the chosen peers.
    #[serde(default)]
    pub mode: Option<QuorumLossMode>,
    /// For `partition` of a zone (`az-failure`): also stop the zone's services.
    #[serde(default)]
    pub stop_services: bool,
}

impl FaultSpec {
    /// The service whose primary this fault's selector follows, if any (`replica: primary`, or
    /// a zone or node `{of: primary, service: S}`).
    pub fn role_service(&self) -> Option<&str> {
        let s = &self.selector;
        if s.replica.as_deref() == Some(PRIMARY) {
            return s.service.as_deref();
        }
        s.zone
            .as_ref()
            .and_then(Place::primary_of)
            .or_else(|| s.node.as_ref().and_then(Place::primary_of))
    }
}

/// Fault kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Network partition.
    Partition,
    /// SIGKILL one replica (or every replica with `replica: all`).
    Kill,
    /// SIGSTOP one replica.
    Pause,
    /// Cordon and evict a node.
    Drain,
    /// JetStream quorum loss on a stream's peers (or the meta group).
    QuorumLoss,
}

impl FaultKind {
    /// The kind's name as written in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Partition => "partition",
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Drain => "drain",
            FaultKind::QuorumLoss => "quorum-loss",
        }
    }
}

/// What a fault hits. Which fields apply depends on the kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Selector {
    /// A zone by name, `random`, or `{of: primary, service: S}`: the zone of S's primary when
    /// the fault is injected.
    #[serde(default)]
    pub zone: Option<Place>,
    /// A node by name, `random`, or `{of: primary, service: S}`: the node of S's primary when
    /// the fault is injected.
    #[serde(default)]
    pub node: Option<Place>,
    /// A service.
    #[serde(default)]
    pub service: Option<String>,
    /// A replica number, `random`, `all`, or `primary` (the one the service's role probe names
    /// when the fault is injected).
    #[serde(default)]
    pub replica: Option<String>,
    /// A stream (tenant stream name, `tenants` for all of them, or `$meta`).
    #[serde(default)]
    pub stream: Option<String>,
    /// A partition shape: `halves`, `majorities-ring`, `bridge`, `one-vs-rest`.
    #[serde(default)]
    pub shape: Option<String>,
}

/// The `replica` value that asks the service's role probe at injection.
pub const PRIMARY: &str = "primary";

/// A zone or node in a selector: by name (or `random`), or wherever a service's primary runs
/// when the fault is injected (`{of: primary, service: S}`, asked through S's role probe).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    /// A name, or `random`.
    Named(String),
    /// Where the primary of this service runs at injection.
    OfPrimary {
        /// The service whose role probe is asked.
        service: String,
    },
}

impl Place {
    /// The name, when the place is named.
    pub fn name(&self) -> Option<&str> {
        match self {
            Place::Named(name) => Some(name),
            Place::OfPrimary { .. } => None,
        }
    }

    /// The service whose primary it follows, when it follows one.
    pub fn primary_of(&self) -> Option<&str> {
        match self {
            Place::Named(_) => None,
            Place::OfPrimary { service } => Some(service),
        }
    }
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Named(name) => f.write_str(name),
            Place::OfPrimary { service } => write!(f, "of the primary of {service}"),
        }
    }
}

impl From<&str> for Place {
    fn from(name: &str) -> Self {
        Place::Named(name.to_owned())
    }
}

impl Serialize for Place {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            Place::Named(name) => serializer.serialize_str(name),
            Place::OfPrimary { service } => {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("of", PRIMARY)?;
                map.serialize_entry("service", service)?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Place {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PlaceVisitor;

        impl<'de> serde::de::Visitor<'de> for PlaceVisitor {
            type Value = Place;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a name, `random`, or `{of: primary, service: SERVICE}`")
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Place, E> {
                Ok(Place::Named(name.to_owned()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Place, A::Error> {
                use serde::de::Error;
                let mut of: Option<String> = None;
                let mut service: Option<String> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "of" => of = Some(map.next_value()?),
                        "service" => service = Some(map.next_value()?),
                        other => {
                            return Err(A::Error::custom(format!(
                                "unknown field `{other}` in a role selector; write `{{of: primary, service: SERVICE}}`"
                            )))
                        }
                    }
                }
                match (of.as_deref(), service) {
                    (Some(PRIMARY), Some(service)) if !service.is_empty() => {
                        Ok(Place::OfPrimary { service })
                    }
                    (Some(PRIMARY), _) => Err(A::Error::custom(
                        "a role selector names its service: `{of: primary, service: SERVICE}` (a service with a `role:` probe in the topology)",
                    )),
                    (Some(other), _) => Err(A::Error::custom(format!(
                        "`of: {other}` is not a role; the only role a probe answers is `primary` (docs/topology.md, Role probes)"
                    ))),
                    (None, _) => Err(A::Error::custom(
                        "a role selector says whose place it is: `{of: primary, service: SERVICE}`",
                    )),
                }
            }
        }

        deserializer.deserialize_any(PlaceVisitor)
    }
}

/// Repetition of a fault.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Repeat {
    /// Time between starts.
    #[serde(with = "duration_text")]
    pub every: Duration,
    /// Total number of injections.
    pub times: u32,
}

/// Service-level objectives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SloSpec {
    /// Longest acceptable time to recover.
    #[serde(with = "duration_text")]
    pub max_ttr: Duration,
    /// A 1 s bucket passes when at least this share of operations is `ok`.
    #[serde(default = "default_bucket_success")]
    pub min_success_rate: f64,
    /// A bucket passes when its p99 latency is at most this.
    #[serde(default = "default_bucket_p99", with = "duration_text")]
    pub max_p99: Duration,
    /// A bucket passes when throughput is at least this share of the baseline.
    #[serde(default = "default_throughput_ratio")]
    pub min_throughput_ratio: f64,
    /// Whether the system should keep serving during the fault (TTR counted from the fault).
    #[serde(default)]
    pub survivable: bool,
}

fn default_bucket_success() -> f64 {
    0.95
}
fn default_bucket_p99() -> Duration {
    Duration::from_secs(1)
}
fn default_throughput_ratio() -> f64 {
    0.8
}

/// Ends the run early: the engine heals at once and marks the report aborted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbortCondition {
    /// Error (fail + info) rate above which the condition fires.
    pub error_rate_above: f64,
    /// For how long, outside fault windows, before it fires.
    #[serde(rename = "for", with = "duration_text")]
    pub sustained: Duration,
}

/// Blast-radius limits, checked before anything is injected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlastRadius {
    /// Never affect more nodes than this at once.
    pub max_nodes: u32,
    /// Allow faults that cut off or stop every zone at once.
    pub allow_all_zones: bool,
}

impl Default for BlastRadius {
    fn default() -> Self {
        Self {
            max_nodes: 3,
            allow_all_zones: false,
        }
    }
}

fn default_settle() -> Duration {
    Duration::from_secs(10)
}

/// The longest convergence deadline a spec may set.
const MAX_SETTLE: Duration = Duration::from_secs(10 * 60);

/// The service name a cluster spec's faults use for the `kubernetes.nats` pods.
pub const NATS_SERVICE: &str = "nats";

/// A namespace name: a DNS label.
fn check_namespace(namespace: &str) -> Result<(), String> {
    let label = !namespace.is_empty()
        && namespace.len() <= 63
        && namespace
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !namespace.starts_with('-')
        && !namespace.ends_with('-');
    if label {
        Ok(())
    } else {
        Err(format!(
            "`{namespace}` is not a namespace name (lower-case letters, digits and `-`, at most 63)"
        ))
    }
}

/// A label selector: at least one label, no characters that would change the query's meaning.
fn check_labels(labels: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
    if labels.is_empty() {
        return Err(
            "name at least one label (an empty selector would match every pod of the namespace)"
                .into(),
        );
    }
    let bad = |text: &str| text.contains([',', '=', '!', ' ', '(', ')']);
    if let Some((key, value)) = labels
        .iter()
        .find(|(k, v)| k.is_empty() || bad(k) || bad(v))
    {
        return Err(format!(
            "`{key}: {value}` is not a plain label; keys and values may not contain , = ! spaces or parentheses"
        ));
    }
    Ok(())
}

/// Durations as text (`30s`, `10m`, `1h 30m`) in YAML.
pub mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `30s`.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*value).to_string())
    }

    /// Reads `30s`, `10m`, `500ms`.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration ({e}); write e.g. 30s, 10m, 500ms"
            ))
        })
    }
}

impl WorkloadSpec {
    /// The adapter, the services it loads and where its clients stand; the field at fault and
    /// the problem otherwise.
    fn validate_clients_and_services(&self) -> Result<(), (&'static str, String)> {
        if self.adapter == "http"
            && (self.services.is_empty() || self.services.iter().any(String::is_empty))
        {
            return Err((
                "workload.services",
                "name at least one service that serves the HTTP contract, e.g. [gateway]".into(),
            ));
        }
        if !matches!(self.adapter.as_str(), "nats" | "http") {
            return Err((
                "workload.adapter",
                format!("`{}` is not an adapter; use nats or http", self.adapter),
            ));
        }
        if self.chat == crate::workload::ChatMode::Websocket && self.adapter != "http" {
            return Err((
                "workload.chat",
                "`websocket` needs `adapter: http` (the chat socket is part of the HTTP contract)"
                    .into(),
            ));
        }
        self.clients
            .validate()
            .map_err(|problem| ("workload.clients", problem))?;
        Ok(())
    }
}

impl ExperimentSpec {
    /// Parses YAML; unknown fields are errors with line and column.
    pub fn parse(yaml: &str, source_name: &str) -> Result<Self, SpecError> {
        serde_yaml::from_str(yaml).map_err(|e| SpecError::Parse {
            source_name: source_name.to_owned(),
            message: crate::describe_yaml_error(&e),
        })
    }

    /// Applies `chaosctl run`'s overrides (also a schedule entry's): `duration` sets how long
    /// each fault holds (the run grows to fit the faults and the recovery deadline), `tenants`
    /// and `rate` set the load. Validate afterwards.
    pub fn apply_overrides(
        &mut self,
        duration: Option<Duration>,
        tenants: Option<u32>,
        rate: Option<f64>,
    ) {
        if let Some(duration) = duration {
            for fault in &mut self.faults {
                if !fault.duration.is_zero() {
                    fault.duration = duration;
                }
            }
            self.duration = self
                .duration
                .max(self.last_fault_end() + self.recovery_deadline);
        }
        if let Some(tenants) = tenants {
            self.workload.tenants = tenants;
        }
        if let Some(rate) = rate {
            self.workload.rate = rate;
        }
    }

    /// The end of the last fault window, from the start of the baseline.
    pub fn last_fault_end(&self) -> Duration {
        self.faults
            .iter()
            .map(|fault| {
                let repeats = fault
                    .repeat
                    .as_ref()
                    .map_or(Duration::ZERO, |r| r.every * r.times.saturating_sub(1));
                self.baseline + fault.start + repeats + fault.duration
            })
            .max()
            .unwrap_or(self.baseline)
    }

    /// Pure validation: everything that can be judged without touching the system.
    pub fn validate(&self, source_name: &str) -> Result<(), SpecError> {
        let invalid = |field: String, message: String| SpecError::Invalid {
            source_name: source_name.to_owned(),
            field,
            message,
        };
        self.validate_target()
            .map_err(|(field, message)| invalid(field, message))?;
        if self.faults.is_empty() {
            return Err(invalid("faults".into(), "list at least one fault".into()));
        }
        if self.workload.tenants == 0 {
            return Err(invalid(
                "workload.tenants".into(),
                "must be at least 1".into(),
            ));
        }
        if self.workload.rate.is_nan() || self.workload.rate <= 0.0 {
            return Err(invalid(
                "workload.rate".into(),
                "must be above 0 operations per second".into(),
            ));
        }
        self.workload
            .validate_clients_and_services()
            .map_err(|(field, message)| invalid(field.into(), message))?;
        if self.target == Target::Kubernetes
            && self.workload.clients != crate::workload::clients::Clients::Majority
        {
            return Err(invalid(
                "workload.clients".into(),
                format!(
                    "`{}` needs the lab's zone client namespaces; on a cluster the load runs in the runner's pod: use `majority`",
                    self.workload.clients.describe()
                ),
            ));
        }
        if self.settle > MAX_SETTLE {
            return Err(invalid(
                "settle".into(),
                format!(
                    "{} is above the limit of {}: the final read-back would wait that long; lower it",
                    humantime::format_duration(self.settle),
                    humantime::format_duration(MAX_SETTLE)
                ),
            ));
        }
        if self.baseline.is_zero() {
            return Err(invalid(
                "baseline".into(),
                "must be above 0: the baseline is what recovery is measured against".into(),
            ));
        }
        for (i, fault) in self.faults.iter().enumerate() {
            Self::validate_fault(i, fault).map_err(|(field, message)| invalid(field, message))?;
        }
        let needed = self.last_fault_end();
        if self.duration < needed {
            return Err(invalid(
                "duration".into(),
                format!(
                    "{} is shorter than the baseline plus the faults ({}); make it at least that, plus time to watch recovery",
                    humantime::format_duration(self.duration),
                    humantime::format_duration(needed)
                ),
            ));
        }
        for (name, value) in [
            ("slo.min_success_rate", self.slo.min_success_rate),
            (
                "steady_state.min_success_rate",
                self.steady_state.min_success_rate,
            ),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(invalid(
                    name.into(),
                    format!("{value} is not a share between 0 and 1"),
                ));
            }
        }
        Ok(())
    }

    /// Each role selector against the services of the lab it runs on: `services` are every
    /// service's name and whether it has a role probe (`role:` in the topology). Pure, like
    /// [`ExperimentSpec::validate`]; `chaosctl validate` runs it against the spec's topology and
    /// the plan against the lab's.
    ///
    /// # Errors
    /// A role selector names an unknown service, or one without a role probe.
    pub fn validate_roles(
        &self,
        source_name: &str,
        services: &[(String, bool)],
    ) -> Result<(), SpecError> {
        for (i, fault) in self.faults.iter().enumerate() {
            let Some(service) = fault.role_service() else {
                continue;
            };
            let field = if fault.selector.replica.as_deref() == Some(PRIMARY) {
                format!("faults[{i}].selector.service")
            } else if fault.selector.zone.is_some() {
                format!("faults[{i}].selector.zone.service")
            } else {
                format!("faults[{i}].selector.node.service")
            };
            let message = match services.iter().find(|(name, _)| name == service) {
                None => format!(
                    "`{service}` is not a service of the topology; known: {}",
                    services
                        .iter()
                        .map(|(name, _)| name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                Some((_, false)) => format!(
                    "`{service}` has no role probe, so its primary cannot be asked; add `role:` to it in the topology (docs/topology.md, Role probes){}",
                    match services.iter().filter(|(_, role)| *role).map(|(n, _)| n.as_str()).collect::<Vec<_>>() {
                        with if with.is_empty() => String::new(),
                        with => format!(", or select one that has one: {}", with.join(", ")),
                    }
                ),
                Some((_, true)) => continue,
            };
            return Err(SpecError::Invalid {
                source_name: source_name.to_owned(),
                field,
                message,
            });
        }
        Ok(())
    }

    /// The file named by `topology:`, relative to the directory of the spec file `source`
    /// (a built-in scenario's, `catalog:NAME`, is relative to the working directory).
    pub fn topology_path(&self, source: &str) -> Option<std::path::PathBuf> {
        let file = std::path::Path::new(self.topology.as_deref()?);
        let base = if source.starts_with("catalog:") {
            None
        } else {
            std::path::Path::new(source).parent()
        };
        Some(base.map_or_else(|| file.to_path_buf(), |dir| dir.join(file)))
    }

    /// Coherence of the target with the rest: a `kubernetes:` section only on a cluster, lab-only
    /// fields only on the lab, and every cluster selector well formed.
    fn validate_target(&self) -> Result<(), (String, String)> {
        if let Some(topology) = &self.topology {
            if self.target == Target::Kubernetes {
                return Err((
                    "topology".into(),
                    "a lab topology does not apply to `target: kubernetes`; remove it (the cluster is what it is)".into(),
                ));
            }
            if topology.trim().is_empty() {
                return Err((
                    "topology".into(),
                    "is empty; name a topology file relative to this spec, or remove the field"
                        .into(),
                ));
            }
        }
        let Some(kube) = &self.kubernetes else {
            if self.target == Target::Kubernetes {
                return Err((
                    "kubernetes".into(),
                    "target: kubernetes needs a `kubernetes:` section naming the workloads (namespace and selector), the nodes and, for quorum loss, the NATS cluster".into(),
                ));
            }
            return Ok(());
        };
        if self.target != Target::Kubernetes {
            return Err((
                "kubernetes".into(),
                "only applies with `target: kubernetes`; remove the section or set the target"
                    .into(),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, workload) in kube.workloads.iter().enumerate() {
            let field = |name: &str| format!("kubernetes.workloads[{i}].{name}");
            if workload.name.is_empty() {
                return Err((field("name"), "must not be empty".into()));
            }
            if !names.insert(workload.name.as_str()) {
                return Err((
                    field("name"),
                    format!(
                        "`{}` is listed twice; name each workload once",
                        workload.name
                    ),
                ));
            }
            if kube.nats.is_some() && workload.name == NATS_SERVICE {
                return Err((
                    field("name"),
                    "`nats` stands for the `kubernetes.nats` pods; give this workload another name"
                        .into(),
                ));
            }
            check_namespace(&workload.namespace).map_err(|m| (field("namespace"), m))?;
            check_labels(&workload.selector).map_err(|m| (field("selector"), m))?;
        }
        if let Some(nats) = &kube.nats {
            check_namespace(&nats.namespace)
                .map_err(|m| ("kubernetes.nats.namespace".into(), m))?;
            check_labels(&nats.selector).map_err(|m| ("kubernetes.nats.selector".into(), m))?;
            if nats.monitor_port == 0 {
                return Err((
                    "kubernetes.nats.monitor_port".into(),
                    "must be a port from 1 to 65535 (NATS's default is 8222)".into(),
                ));
            }
        }
        if let Some(fraction) = kube.max_drain_zone_fraction {
            if !(fraction > 0.0 && fraction <= 1.0) {
                return Err((
                    "kubernetes.max_drain_zone_fraction".into(),
                    format!("{fraction} is not a share above 0 and at most 1"),
                ));
            }
        }
        for (i, probe) in self.steady_state.probes.iter().enumerate() {
            if let Probe::Http { service, .. } = probe {
                if !kube.workloads.iter().any(|w| &w.name == service) {
                    return Err((
                        format!("steady_state.probes[{i}].service"),
                        format!(
                            "`{service}` is not a workload in kubernetes.workloads; an http probe on a cluster asks each pod of a workload (known: {})",
                            if kube.workloads.is_empty() {
                                "none".to_owned()
                            } else {
                                kube.workloads.iter().map(|w| w.name.as_str()).collect::<Vec<_>>().join(", ")
                            }
                        ),
                    ));
                }
            }
        }
        self.validate_cluster_faults(kube)
    }

    /// Each fault's selectors against the cluster section.
    fn validate_cluster_faults(&self, kube: &KubernetesSpec) -> Result<(), (String, String)> {
        let services: Vec<&str> = kube
            .workloads
            .iter()
            .map(|w| w.name.as_str())
            .chain(kube.nats.as_ref().map(|_| NATS_SERVICE))
            .collect();
        for (i, fault) in self.faults.iter().enumerate() {
            let field = |name: &str| format!("faults[{i}].{name}");
            let s = &fault.selector;
            if let Some(service) = &s.service {
                if !services.contains(&service.as_str()) {
                    return Err((
                        field("selector.service"),
                        format!(
                            "`{service}` is not a workload in kubernetes.workloads{}; known: {}",
                            if kube.nats.is_some() {
                                " (or nats)"
                            } else {
                                ""
                            },
                            if services.is_empty() {
                                "none".to_owned()
                            } else {
                                services.join(", ")
                            }
                        ),
                    ));
                }
            }
            if let Some(service) = fault.role_service() {
                return Err((
                    field(if s.replica.as_deref() == Some(PRIMARY) {
                        "selector.replica"
                    } else if s.zone.as_ref().is_some_and(|z| z.primary_of().is_some()) {
                        "selector.zone"
                    } else {
                        "selector.node"
                    }),
                    format!("a role selector (the primary of `{service}`) cannot be resolved on a cluster: workloads have no role probe there; name the zone, node or replica (random or all) instead, or run it on the lab"),
                ));
            }
            if let Some(replica) = &s.replica {
                if replica != "random" && replica != "all" {
                    return Err((
                        field("selector.replica"),
                        format!("`{replica}`: replica numbers are the lab's; on a cluster the workload's selector chooses the pods, so use random or all"),
                    ));
                }
            }
            if let Some(zone) = s.zone.as_ref().and_then(Place::name) {
                if zone != "random"
                    && !kube.nodes.zones.is_empty()
                    && !kube.nodes.zones.iter().any(|z| z == zone)
                {
                    return Err((
                        field("selector.zone"),
                        format!("`{zone}` is outside kubernetes.nodes.zones ({}); add it there or pick one of those", kube.nodes.zones.join(", ")),
                    ));
                }
            }
            if let Some(node) = s.node.as_ref().and_then(Place::name) {
                if node != "random"
                    && !kube.nodes.names.is_empty()
                    && !kube.nodes.names.iter().any(|n| n == node)
                {
                    return Err((
                        field("selector.node"),
                        format!("`{node}` is outside kubernetes.nodes.names ({}); add it there or pick one of those", kube.nodes.names.join(", ")),
                    ));
                }
            }
            if fault.kind == FaultKind::QuorumLoss && kube.nats.is_none() {
                return Err((
                    "kubernetes.nats".into(),
                    format!("faults[{i}] is a quorum loss: name the NATS cluster (namespace, selector, monitor_port)"),
                ));
            }
        }
        Ok(())
    }

    fn validate_fault(i: usize, fault: &FaultSpec) -> Result<(), (String, String)> {
        let field = |name: &str| format!("faults[{i}].{name}");
        let s = &fault.selector;
        if fault.kind != FaultKind::Kill && fault.duration.is_zero() {
            return Err((field("duration"), "must be above 0".into()));
        }
        if let Some(repeat) = &fault.repeat {
            if repeat.times == 0 {
                return Err((field("repeat.times"), "must be at least 1".into()));
            }
            if repeat.every < fault.duration {
                return Err((
                    field("repeat.every"),
                    "must not be shorter than the fault's duration: repeats would overlap".into(),
                ));
            }
        }
        match fault.kind {
            FaultKind::Partition => {
                let targets = [s.zone.is_some(), s.node.is_some(), s.shape.is_some()]
                    .iter()
                    .filter(|b| **b)
                    .count();
                if targets != 1 {
                    return Err((
                        field("selector"),
                        "a partition needs exactly one of zone, node or shape".into(),
                    ));
                }
                if let Some(shape) = &s.shape {
                    if !matches!(
                        shape.as_str(),
                        "halves" | "majorities-ring" | "bridge" | "one-vs-rest"
                    ) {
                        return Err((field("selector.shape"), format!("`{shape}` is not a shape; use halves, majorities-ring, bridge or one-vs-rest")));
                    }
                }
            }
            FaultKind::Kill | FaultKind::Pause => {
                if s.service.is_none() {
                    return Err((
                        field("selector.service"),
                        "name the service whose replica to hit".into(),
                    ));
                }
                if s.zone.is_some() || s.node.is_some() {
                    return Err((
                        field("selector"),
                        format!("a {} picks a replica, not a zone or node: use `service` and `replica` (a number, random, primary{})", fault.kind.as_str(), if fault.kind == FaultKind::Kill { " or all" } else { "" }),
                    ));
                }
                if fault.kind == FaultKind::Pause && s.replica.as_deref() == Some("all") {
                    return Err((
                        field("selector.replica"),
                        "pause takes one replica; use a number or random".into(),
                    ));
                }
            }
            FaultKind::Drain => {
                if s.node.is_none() {
                    return Err((
                        field("selector.node"),
                        "name the node to drain, random, or `{of: primary, service: S}`".into(),
                    ));
                }
                if s.zone.is_some() {
                    return Err((
                        field("selector.zone"),
                        "a drain takes one node: use `node` (a name, random, or `{of: primary, service: S}`)".into(),
                    ));
                }
            }
            FaultKind::QuorumLoss => {
                if fault.role_service().is_some() {
                    return Err((
                        field("selector"),
                        "a quorum loss chooses its peers itself, the stream's leader first; remove the role selector".into(),
                    ));
                }
                if fault.mode.is_none() {
                    return Err((
                        field("mode"),
                        "say how to take the peers out: stop, pause or isolate".into(),
                    ));
                }
                if s.stream.is_none() {
                    return Err((
                        field("selector.stream"),
                        "name a stream, `tenants` or `$meta`".into(),
                    ));
                }
            }
        }
        if fault.stop_services && !(fault.kind == FaultKind::Partition && s.zone.is_some()) {
            return Err((
                field("stop_services"),
                "only applies to a zone partition".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "\
name: x
description: y
faults:
  - kind: partition
    selector: {zone: a}
    start: 5s
    duration: 10s
baseline: 10s
duration: 40s
recovery_deadline: 30s
slo: {max_ttr: 10s}
";

    #[test]
    fn minimal_spec_parses_and_validates() {
        let spec = ExperimentSpec::parse(MINIMAL, "x.yaml").expect("parse");
        spec.validate("x.yaml").expect("valid");
        assert_eq!(spec.last_fault_end(), Duration::from_secs(25));
    }

    #[test]
    fn unknown_field_reports_line_and_column() {
        let yaml = MINIMAL.replace("baseline: 10s", "baseline: 10s\nbaseline_extra: 1");
        let error = ExperimentSpec::parse(&yaml, "x.yaml")
            .expect_err("unknown field")
            .to_string();
        assert!(
            error.contains("x.yaml: line 9 column 1") && error.contains("baseline_extra"),
            "{error}"
        );
    }

    #[test]
    fn validation_table() {
        let cases = [
            (
                "duration: 40s",
                "duration: 20s",
                "shorter than the baseline plus the faults",
            ),
            (
                "selector: {zone: a}",
                "selector: {zone: a, node: a1}",
                "exactly one of zone, node or shape",
            ),
            ("kind: partition", "kind: drain", "selector.node"),
            ("kind: partition", "kind: quorum-loss", "faults[0].mode"),
            (
                "duration: 10s\n",
                "duration: 0s\n",
                "faults[0].duration: must be above 0",
            ),
            ("baseline: 10s", "baseline: 0s", "baseline"),
            (
                "name: x",
                "name: x\ntarget: kubernetes",
                "kubernetes: target: kubernetes needs a `kubernetes:` section",
            ),
            (
                "name: x",
                "name: x\nkubernetes: {}",
                "kubernetes: only applies with `target: kubernetes`",
            ),
            ("name: x", "name: x\nworkload: {rate: 0}", "workload.rate"),
            (
                "name: x",
                "name: x\nworkload: {chat: websocket}",
                "workload.chat: `websocket` needs `adapter: http`",
            ),
            (
                "selector: {zone: a}",
                "selector: {shape: triangle}",
                "not a shape",
            ),
        ];
        for (from, to, expected) in cases {
            let yaml = MINIMAL.replacen(from, to, 1);
            let spec = ExperimentSpec::parse(&yaml, "x.yaml").expect(&yaml);
            let error = spec.validate("x.yaml").expect_err(&yaml).to_string();
            assert!(error.contains(expected), "{to}: {error}");
        }
    }

    #[test]
    fn role_selectors_parse_round_trip_and_validate() {
        let yaml = MINIMAL.replace(
            "selector: {zone: a}",
            "selector: {zone: {of: primary, service: etcd}}",
        );
        let spec = ExperimentSpec::parse(&yaml, "x.yaml").expect("parse");
        spec.validate("x.yaml").expect("valid");
        assert_eq!(
            spec.faults[0].selector.zone,
            Some(Place::OfPrimary {
                service: "etcd".into()
            })
        );
        assert_eq!(spec.faults[0].role_service(), Some("etcd"));
        let text = serde_yaml::to_string(&spec).expect("yaml");
        assert_eq!(
            ExperimentSpec::parse(&text, "again").expect("round trip"),
            spec
        );
        let services = |list: &[(&str, bool)]| -> Vec<(String, bool)> {
            list.iter().map(|(n, r)| ((*n).to_owned(), *r)).collect()
        };
        spec.validate_roles("x.yaml", &services(&[("etcd", true), ("records", false)]))
            .expect("etcd has a role probe");
        let error = spec
            .validate_roles("x.yaml", &services(&[("etcd", false), ("records", true)]))
            .expect_err("no role probe")
            .to_string();
        assert!(
            error.contains("faults[0].selector.zone.service: `etcd` has no role probe")
                && error.contains("add `role:`")
                && error.contains("records"),
            "{error}"
        );
        let error = spec
            .validate_roles("x.yaml", &services(&[("store", true)]))
            .expect_err("unknown service")
            .to_string();
        assert!(
            error.contains("`etcd` is not a service of the topology; known: store"),
            "{error}"
        );
    }

    #[test]
    fn role_selector_errors_say_where() {
        let parse_cases = [
            (
                "selector: {zone: {of: secondary, service: etcd}}",
                "line 5 column 22",
                "`of: secondary` is not a role",
            ),
            (
                "selector: {zone: {of: primary, sevice: etcd}}",
                "line 5 column 22",
                "unknown field `sevice`",
            ),
            (
                "selector: {node: {of: primary}}",
                "line 5 column 22",
                "a role selector names its service",
            ),
        ];
        for (to, at, expected) in parse_cases {
            let yaml = MINIMAL.replace("selector: {zone: a}", to);
            let error = ExperimentSpec::parse(&yaml, "x.yaml")
                .expect_err(to)
                .to_string();
            assert!(
                error.contains(&format!("x.yaml: {at}")) && error.contains(expected),
                "{to}: {error}"
            );
        }
        let invalid_cases = [
            (
                "kind: partition\n    selector: {zone: a}",
                "kind: kill\n    selector: {service: etcd, zone: {of: primary, service: etcd}}",
                "faults[0].selector: a kill picks a replica, not a zone or node",
            ),
            (
                "kind: partition\n    selector: {zone: a}",
                "kind: drain\n    selector: {node: a1, zone: {of: primary, service: etcd}}",
                "faults[0].selector.zone: a drain takes one node",
            ),
            (
                "kind: partition\n    selector: {zone: a}",
                "kind: quorum-loss\n    mode: stop\n    selector: {stream: tenants, node: {of: primary, service: nats}}",
                "a quorum loss chooses its peers itself",
            ),
        ];
        for (from, to, expected) in invalid_cases {
            let yaml = MINIMAL.replacen(from, to, 1);
            let spec = ExperimentSpec::parse(&yaml, "x.yaml").expect(&yaml);
            let error = spec.validate("x.yaml").expect_err(&yaml).to_string();
            assert!(error.contains(expected), "{to}: {error}");
        }
        let kill = MINIMAL.replace(
            "kind: partition\n    selector: {zone: a}",
            "kind: kill\n    selector: {service: etcd, replica: primary}",
        );
        let spec = ExperimentSpec::parse(&kill, "x.yaml").expect("parse");
        spec.validate("x.yaml").expect("replica: primary");
        assert_eq!(spec.faults[0].role_service(), Some("etcd"));
    }

    #[test]
    fn role_selectors_are_refused_on_a_cluster() {
        for (from, to, field) in [
            (
                "selector: {service: gateway, replica: random}",
                "selector: {service: gateway, replica: primary}",
                "faults[0].selector.replica",
            ),
            (
                "kind: kill\n    selector: {service: gateway, replica: random}",
                "kind: partition\n    duration: 5s\n    selector: {zone: {of: primary, service: gateway}}",
                "faults[0].selector.zone",
            ),
        ] {
            let yaml = CLUSTER.replacen(from, to, 1);
            assert_ne!(yaml, CLUSTER);
            let error = ExperimentSpec::parse(&yaml, "c.yaml")
                .expect(&yaml)
                .validate("c.yaml")
                .expect_err(&yaml)
                .to_string();
            assert!(
                error.contains(&format!("{field}: a role selector (the primary of `gateway`) cannot be resolved on a cluster")),
                "{error}"
            );
        }
    }

    const CLUSTER: &str = "\
name: x
description: y
target: kubernetes
kubernetes:
  workloads:
    - {name: gateway, namespace: shop, selector: {app: gateway}}
  nodes: {zones: [a, b, c]}
  nats: {namespace: nats, selector: {app: nats}}
faults:
  - kind: kill
    selector: {service: gateway, replica: random}
    start: 5s
baseline: 10s
duration: 40s
recovery_deadline: 30s
slo: {max_ttr: 10s}
";

    #[test]
    fn clients_stand_in_zones_with_either_adapter_on_the_lab() {
        for workload in [
            "workload: {clients: per-zone}",
            "workload: {adapter: nats, clients: {zone: b}}",
            "workload: {adapter: http, clients: per-zone}",
        ] {
            let yaml = format!("{MINIMAL}{workload}\n");
            let spec = ExperimentSpec::parse(&yaml, "x.yaml").expect(&yaml);
            spec.validate("x.yaml").expect(&yaml);
        }
    }

    #[test]
    fn cluster_spec_parses_and_validates() {
        let spec = ExperimentSpec::parse(CLUSTER, "c.yaml").expect("parse");
        spec.validate("c.yaml").expect("valid");
        let kube = spec.kubernetes.as_ref().expect("section");
        assert_eq!(kube.workloads[0].label_selector(), "app=gateway");
        assert_eq!(kube.nats.as_ref().expect("nats").monitor_port, 8222);
        assert_eq!(kube.kill_mode, PodKillMode::Delete);
        let text = serde_yaml::to_string(&spec).expect("yaml");
        assert_eq!(
            ExperimentSpec::parse(&text, "again").expect("round trip"),
            spec
        );
    }

    #[test]
    fn topology_is_relative_to_the_spec_file_and_only_for_the_lab() {
        let spec =
            ExperimentSpec::parse(&format!("{MINIMAL}topology: labs/three.yaml\n"), "x.yaml")
                .expect("parse");
        spec.validate("specs/x.yaml").expect("valid on the lab");
        assert_eq!(
            spec.topology_path("/srv/specs/x.yaml"),
            Some(std::path::PathBuf::from("/srv/specs/labs/three.yaml"))
        );
        assert_eq!(
            spec.topology_path("catalog:az-failure"),
            Some(std::path::PathBuf::from("labs/three.yaml"))
        );
        let error = ExperimentSpec::parse(&format!("{CLUSTER}topology: t.yaml\n"), "c.yaml")
            .expect("parse")
            .validate("c.yaml")
            .expect_err("a cluster has no lab topology")
            .to_string();
        assert!(error.contains("topology"), "{error}");
        let error = ExperimentSpec::parse(&format!("{MINIMAL}topology: ' '\n"), "x.yaml")
            .expect("parse")
            .validate("x.yaml")
            .expect_err("empty")
            .to_string();
        assert!(error.contains("is empty"), "{error}");
    }

    #[test]
    fn cluster_unknown_field_reports_line_and_column() {
        let yaml = CLUSTER.replace("  nodes: {zones", "  nodez: 1\n  nodes: {zones");
        let error = ExperimentSpec::parse(&yaml, "c.yaml")
            .expect_err("unknown field")
            .to_string();
        assert!(
            error.contains("c.yaml: line 7 column 3: kubernetes: unknown field `nodez`"),
            "{error}"
        );
    }

    #[test]
    fn cluster_validation_table() {
        let cases = [
            ("name: gateway", "name: ''", "kubernetes.workloads[0].name: must not be empty"),
            ("namespace: shop", "namespace: Shop_1", "kubernetes.workloads[0].namespace: `Shop_1` is not a namespace name"),
            ("selector: {app: gateway}", "selector: {}", "kubernetes.workloads[0].selector: name at least one label"),
            ("selector: {app: gateway}", "selector: {app: 'a,b'}", "not a plain label"),
            ("name: gateway", "name: nats", "`nats` stands for the `kubernetes.nats` pods"),
            ("service: gateway", "service: web", "faults[0].selector.service: `web` is not a workload in kubernetes.workloads (or nats); known: gateway, nats"),
            ("replica: random", "replica: '2'", "faults[0].selector.replica: `2`: replica numbers are the lab's"),
            ("selector: {app: nats}}", "selector: {app: nats}, monitor_port: 0}", "kubernetes.nats.monitor_port"),
            ("nodes: {zones: [a, b, c]}", "nodes: {zones: [a]}\n  max_drain_zone_fraction: 1.5", "kubernetes.max_drain_zone_fraction: 1.5"),
            ("kind: kill\n    selector: {service: gateway, replica: random}", "kind: partition\n    selector: {zone: d}\n    duration: 5s", "faults[0].selector.zone: `d` is outside kubernetes.nodes.zones (a, b, c)"),
            ("  nats: {namespace: nats, selector: {app: nats}}\n", "", "`web`"),
            ("baseline: 10s", "baseline: 10s\nsteady_state: {probes: [!http {service: web, port: 80, path: /}]}", "steady_state.probes[0].service: `web` is not a workload in kubernetes.workloads"),
            ("baseline: 10s", "baseline: 10s\nworkload: {clients: per-zone}", "workload.clients: `per-zone` needs the lab's zone client namespaces"),
        ];
        for (from, to, expected) in cases {
            let mut yaml = CLUSTER.replacen(from, to, 1);
            if expected == "`web`" {
                // Without kubernetes.nats, a quorum loss cannot be placed.
                yaml = yaml.replacen(
                    "kind: kill\n    selector: {service: gateway, replica: random}",
                    "kind: quorum-loss\n    mode: pause\n    selector: {stream: tenants}\n    duration: 5s",
                    1,
                );
                let spec = ExperimentSpec::parse(&yaml, "c.yaml").expect(&yaml);
                let error = spec.validate("c.yaml").expect_err(&yaml).to_string();
                assert!(
                    error.contains("kubernetes.nats: faults[0] is a quorum loss"),
                    "{error}"
                );
                continue;
            }
            assert_ne!(yaml, CLUSTER, "{from:?} must be in the base spec");
            let spec = ExperimentSpec::parse(&yaml, "c.yaml").expect(&yaml);
            let error = spec.validate("c.yaml").expect_err(&yaml).to_string();
            assert!(error.contains(expected), "{to}: {error}");
        }
    }
}
