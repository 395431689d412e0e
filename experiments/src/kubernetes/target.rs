//! The cluster as the engine's [`Target`]: how a scenario becomes Fault objects, drains and
//! pod deletes.
//!
//! - **Facts.** Zones are the values of `topology.kubernetes.io/zone` on the nodes in the
//!   experiment's scope; each workload of `kubernetes.workloads` (and the NATS pods, as service
//!   `nats`) is a service whose replicas are its scheduled, non-terminating pods sorted by name.
//!   Replica `n` is the `n`-th such pod when the fault starts.
//! - **Partitions** (every lab shape, over zones or nodes) become one `partition` Fault whose
//!   sides are the members (zones or nodes) with their node names, node addresses and
//!   `Node.spec.podCIDRs`, each naming the sides it may not reach; the node agents apply it in
//!   the mode the spec asks (`nodes`, `pods`, `both`).
//! - **Pause and crash** of pods, and a zone's stopped workloads, become `pause`, `kill` and
//!   `stop` Faults for the pod's node agent. **Kill in mode `delete`** deletes the pods with grace
//!   period 0 (`pod_delete.rs`) and keeps a baseline for their time to ready.
//! - **Drain** cordons with our annotation and evicts through `KubeNodeScheduler`.
//! - **Quorum loss** asks each NATS pod's `/varz` and `/jsz?streams=true` (pod IP, monitoring
//!   port) who holds the stream and who leads, then isolates, pauses or stops a majority, the
//!   leader first.
//!
//! A runner uses it as the lab's engine uses a `LabContext`, from a plain thread:
//!
//! ```text
//! let target = ClusterTarget::new(client, runtime.handle().clone(), &spec, options)?;
//! let planned = engine::plan::plan(&target, &spec, seed)?;      // refusals happen here
//! let mut injected = engine::execute::Injected::new(&target, max_fault_duration, &clock);
//! injected.inject(i, &planned[i])?;                             // at each fault's offset
//! injected.heal_due(|fault| /* its end has come */);
//! injected.heal_all();                                           // always; also on drop
//! target.time_to_ready(&injected.faults()[i].fault_ids[0])?;    // pod deletes
//! ```
//!
//! Every Fault carries an absolute deadline, a priority slot no other Fault holds, the finalizer
//! the agents clear, and the label [`EXPERIMENT_LABEL`]. Revert deletes the Fault (the agents
//! heal) or uncordons the drained node; [`ClusterTarget::heal_all`] (also on drop) deletes every
//! Fault of the experiment and uncordons every node it cordoned.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use faultline_injectors::net_partition::Grudge;
use faultline_injectors::node_drain::NodeScheduler as _;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::engine::plan::{Action, PlannedFault};
use crate::engine::target::{
    member_grudge, zone_grudge_to_nodes, Facts, Injection, ReplicaFacts, ServiceFacts, Target,
    ZoneFacts, CLUSTER_NAME,
};
use crate::engine::EngineError;
use crate::lab::faults::{largest_connected_group, sides_of, PartitionTarget, QuorumLossMode};
use crate::lab::jetstream::{merge_jsz, meta_leader, most_common_group, Placement, META};
use crate::spec::{ExperimentSpec, KubernetesSpec, PodKillMode, NATS_SERVICE};

use super::cordon::{check_drain, CordonOwner, DrainBudget, NodeFacts, ZONE_LABEL};
use super::crd::{
    Fault, FaultKind as CrdKind, FaultSpec as CrdSpec, PartitionSide, PartitionSpec, PodRef,
    EXPERIMENT_LABEL, NODE_AGENTS_FINALIZER,
};
use super::drain::{DrainOptions, KubeNodeScheduler, FAULTLINE_NAMESPACE};
use super::node_plan::SYSTEM_NAMESPACE;
use super::pod_delete::{
    delete_pods, replacement_readiness, Baseline, PodDeleteOptions, Readiness,
};

/// Priority slots a Fault may hold (the agents' rule range).
const SLOTS: u32 = 1000;
/// How long a crash (`kill`) Fault stays for its agent to see it.
const KILL_FAULT_LIFETIME: Duration = Duration::from_secs(60);

/// How the cluster target behaves.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The value of [`EXPERIMENT_LABEL`] on every Fault (`NAMESPACE.NAME` of the Experiment, or
    /// a run id); also the prefix of Fault names, so keep it a DNS label.
    pub experiment: String,
    /// The Experiment the Faults belong to, `NAMESPACE/NAME`, as their `spec.experiment`: the
    /// controller audits them on it and deletes them once it is gone. `None`: [`Self::experiment`].
    pub owner: Option<String>,
    /// Who creates the Faults (`spec.createdBy`).
    pub created_by: String,
    /// The bound on each request to the API server.
    pub api_timeout: Duration,
    /// The bound on each NATS monitoring request.
    pub monitor_timeout: Duration,
    /// Drains: eviction timeout, backoff, protected namespaces. The budget is set from the spec.
    pub drain: DrainOptions,
    /// Destinations partitions never cut (CIDRs), on top of the API server's endpoints.
    pub exempt_cidrs: Vec<String>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            experiment: "faultline".into(),
            owner: None,
            created_by: "faultline-runner".into(),
            api_timeout: Duration::from_secs(10),
            monitor_timeout: Duration::from_secs(5),
            drain: DrainOptions::default(),
            exempt_cidrs: Vec::new(),
        }
    }
}

/// A node in scope, as partitions need it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct NodeInfo {
    zone: String,
    addresses: Vec<String>,
    pod_cidrs: Vec<String>,
    facts: NodeFacts,
}

/// One read of the cluster.
#[derive(Clone, Debug, Default)]
struct Snapshot {
    facts: Facts,
    nodes: BTreeMap<String, NodeInfo>,
    /// Service name -> its pods (scheduled, not terminating), by name.
    pods: BTreeMap<String, Vec<Pod>>,
}

/// What one NATS pod said on its monitoring port.
struct NatsAnswer {
    /// Its server name.
    name: String,
    pod: Pod,
    /// Its `/jsz` answer, if any.
    jsz: Option<serde_json::Value>,
}

/// A pod delete, kept for time to ready.
#[derive(Clone, Debug)]
struct DeleteRecord {
    service: String,
    baseline: Baseline,
}

#[derive(Default)]
struct State {
    sequence: u32,
    /// Drain id -> node.
    drains: BTreeMap<String, String>,
    /// Delete id -> what was deleted.
    deletes: BTreeMap<String, DeleteRecord>,
}

/// The engine's target on a Kubernetes cluster.
pub struct ClusterTarget {
    client: kube::Client,
    runtime: tokio::runtime::Handle,
    kube: KubernetesSpec,
    /// The spec's `blast_radius.allow_all_zones`.
    allow_all_zones: bool,
    options: ClusterOptions,
    state: Mutex<State>,
}

impl ClusterTarget {
    /// A target for `spec` (which must be a validated cluster spec) on `client`. The target is
    /// synchronous, as the engine is: each call runs on `runtime` and waits, so call it from a
    /// plain thread (or `spawn_blocking`), never from inside an async task.
    ///
    /// # Errors
    /// The spec has no `kubernetes:` section.
    pub fn new(
        client: kube::Client,
        runtime: tokio::runtime::Handle,
        spec: &ExperimentSpec,
        options: ClusterOptions,
    ) -> Result<Self, EngineError> {
        let kube = spec.kubernetes.clone().ok_or_else(|| {
            cluster_error("the spec has no `kubernetes:` section; set target: kubernetes and name the workloads")
        })?;
        Ok(Self {
            client,
            runtime,
            kube,
            allow_all_zones: spec.blast_radius.allow_all_zones,
            options,
            state: Mutex::new(State::default()),
        })
    }

    /// The API client it uses.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// How it behaves.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `work` on the runtime and waits for it, within `bound`.
    fn block<T>(
        &self,
        what: &str,
        bound: Duration,
        work: impl Future<Output = Result<T, String>>,
    ) -> Result<T, String> {
        self.runtime
            .block_on(async { tokio::time::timeout(bound, work).await })
            .unwrap_or_else(|_| {
                Err(format!(
                    "{what}: no answer from the API server within {}; is it reachable?",
                    humantime::format_duration(bound)
                ))
            })
    }

    /// Reads nodes and pods. Refuses selectors that match nothing.
    fn snapshot(&self) -> Result<Snapshot, EngineError> {
        let client = self.client.clone();
        let kube = self.kube.clone();
        let timeout = self.options.api_timeout;
        let (nodes, pods) = self
            .block("listing nodes and pods", timeout * 4, async move {
                let nodes = Api::<Node>::all(client.clone())
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| format!("listing nodes: {e}"))?
                    .items;
                let mut pods = BTreeMap::new();
                let selections = kube
                    .workloads
                    .iter()
                    .map(|w| (w.name.clone(), w.namespace.clone(), w.label_selector()))
                    .chain(kube.nats.iter().map(|n| {
                        (
                            NATS_SERVICE.to_owned(),
                            n.namespace.clone(),
                            crate::spec::label_selector(&n.selector),
                        )
                    }));
                for (name, namespace, selector) in selections {
                    let list = Api::<Pod>::namespaced(client.clone(), &namespace)
                        .list(&ListParams::default().labels(&selector))
                        .await
                        .map_err(|e| {
                            format!("listing pods of {name} ({namespace}, {selector}): {e}")
                        })?
                        .items;
                    pods.insert(name, list);
                }
                Ok((nodes, pods))
            })
            .map_err(|e| cluster_error(&e))?;
        self.build_snapshot(&nodes, pods)
    }

    fn build_snapshot(
        &self,
        nodes: &[Node],
        pods: BTreeMap<String, Vec<Pod>>,
    ) -> Result<Snapshot, EngineError> {
        let infos = self.nodes_in_scope(nodes);
        if infos.is_empty() {
            return Err(cluster_error(&format!(
                "no node matches kubernetes.nodes ({}) with a {ZONE_LABEL} label; label the nodes or widen the scope",
                describe_scope(&self.kube)
            )));
        }
        let mut zones: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, info) in &infos {
            zones
                .entry(info.zone.clone())
                .or_default()
                .push(name.clone());
        }
        let mut services = Vec::new();
        let mut replicas = Vec::new();
        let mut selected = BTreeMap::new();
        for (service, list) in pods {
            let mut live: Vec<Pod> = list
                .into_iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.spec
                            .as_ref()
                            .and_then(|s| s.node_name.as_ref())
                            .is_some_and(|n| infos.contains_key(n))
                })
                .collect();
            live.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            if live.is_empty() {
                return Err(cluster_error(&format!(
                    "{} matches no scheduled pod on the nodes in scope; check its namespace and selector",
                    self.describe_service(&service)
                )));
            }
            for (index, pod) in live.iter().enumerate() {
                replicas.push(ReplicaFacts {
                    service: service.clone(),
                    replica: index as u32 + 1,
                    node: node_of(pod).to_owned(),
                    running: pod.status.as_ref().and_then(|s| s.phase.as_deref())
                        == Some("Running"),
                    listed: true,
                });
            }
            services.push(ServiceFacts {
                name: service.clone(),
                replicas: live.len() as u32,
            });
            selected.insert(service, live);
        }
        // Workloads in the spec's order, then nats: the order random selectors draw from.
        let order: Vec<&str> = self
            .kube
            .workloads
            .iter()
            .map(|w| w.name.as_str())
            .chain(self.kube.nats.iter().map(|_| NATS_SERVICE))
            .collect();
        services.sort_by_key(|s| order.iter().position(|o| *o == s.name));
        Ok(Snapshot {
            facts: Facts {
                name: CLUSTER_NAME.to_owned(),
                zones: zones
                    .into_iter()
                    .map(|(name, nodes)| ZoneFacts { name, nodes })
                    .collect(),
                services,
                replicas,
                jetstream: self.kube.nats.as_ref().map(|_| NATS_SERVICE.to_owned()),
                // Workloads have no role probe: a role selector is refused on a cluster.
                roles: Vec::new(),
            },
            nodes: infos,
            pods: selected,
        })
    }

    /// The nodes in the experiment's scope that carry a zone label.
    fn nodes_in_scope(&self, nodes: &[Node]) -> BTreeMap<String, NodeInfo> {
        let scope = &self.kube.nodes;
        let mut infos: BTreeMap<String, NodeInfo> = BTreeMap::new();
        for node in nodes {
            let facts = NodeFacts::from_node(node);
            let Some(zone) = facts.zone.clone() else {
                continue;
            };
            if (!scope.zones.is_empty() && !scope.zones.contains(&zone))
                || (!scope.names.is_empty() && !scope.names.contains(&facts.name))
            {
                continue;
            }
            let status = node.status.as_ref();
            let addresses = status
                .and_then(|s| s.addresses.as_ref())
                .into_iter()
                .flatten()
                .filter(|a| {
                    a.type_ == "InternalIP" && a.address.parse::<std::net::Ipv4Addr>().is_ok()
                })
                .map(|a| format!("{}/32", a.address))
                .collect();
            let spec = node.spec.as_ref();
            let pod_cidrs = spec
                .and_then(|s| s.pod_cidrs.clone())
                .or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![c]))
                .unwrap_or_default()
                .into_iter()
                .filter(|c| !c.contains(':'))
                .collect();
            infos.insert(
                facts.name.clone(),
                NodeInfo {
                    zone,
                    addresses,
                    pod_cidrs,
                    facts,
                },
            );
        }
        infos
    }

    fn describe_service(&self, service: &str) -> String {
        if service == NATS_SERVICE {
            if let Some(nats) = &self.kube.nats {
                return format!(
                    "kubernetes.nats (namespace {}, selector {})",
                    nats.namespace,
                    crate::spec::label_selector(&nats.selector)
                );
            }
        }
        self.kube
            .workloads
            .iter()
            .find(|w| w.name == service)
            .map_or_else(
                || format!("service {service}"),
                |w| {
                    format!(
                        "kubernetes.workloads `{}` (namespace {}, selector {})",
                        w.name,
                        w.namespace,
                        w.label_selector()
                    )
                },
            )
    }

    fn namespace_of(&self, service: &str) -> Option<&str> {
        if service == NATS_SERVICE {
            return self.kube.nats.as_ref().map(|n| n.namespace.as_str());
        }
        self.kube
            .workloads
            .iter()
            .find(|w| w.name == service)
            .map(|w| w.namespace.as_str())
    }

    fn next_name(&self, what: &str) -> String {
        let mut state = self.lock();
        state.sequence += 1;
        let name = format!("{}-{}-{}", self.options.experiment, state.sequence, what);
        name.chars().take(253).collect()
    }

    /// Creates one Fault: the lowest free priority slot, the deadline, the finalizer and the
    /// experiment label. Returns its name.
    fn create_fault(
        &self,
        what: &str,
        action: CrdKind,
        partition: Option<PartitionSpec>,
        pod: Option<PodRef>,
        lasting: Duration,
    ) -> Result<String, EngineError> {
        let name = self.next_name(what);
        let deadline = humantime::format_rfc3339_seconds(SystemTime::now() + lasting).to_string();
        let mut fault = Fault::new(
            &name,
            CrdSpec {
                action,
                partition,
                pod,
                deadline,
                priority_slot: 0,
                experiment: Some(
                    self.options
                        .owner
                        .clone()
                        .unwrap_or_else(|| self.options.experiment.clone()),
                ),
                created_by: self.options.created_by.clone(),
                overrides: super::crd::Overrides {
                    allow_system_pods: self.kube.overrides.allow_protected_namespaces,
                    ..super::crd::Overrides::default()
                },
            },
        );
        fault.metadata = ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([(
                EXPERIMENT_LABEL.to_owned(),
                self.options.experiment.clone(),
            )])),
            finalizers: Some(vec![NODE_AGENTS_FINALIZER.to_owned()]),
            ..ObjectMeta::default()
        };
        let client = self.client.clone();
        self.block("creating a Fault", self.options.api_timeout * 2, async move {
            let api = Api::<Fault>::all(client);
            let existing = api
                .list(&ListParams::default())
                .await
                .map_err(|e| format!("listing Faults for a free priority slot: {e}"))?;
            let used: BTreeSet<u32> = existing.items.iter().map(|f| f.spec.priority_slot).collect();
            fault.spec.priority_slot = (0..SLOTS).find(|s| !used.contains(s)).ok_or_else(|| {
                format!("all {SLOTS} priority slots are held by Faults; wait for some to end or delete stale ones")
            })?;
            api.create(&PostParams::default(), &fault)
                .await
                .map_err(|e| format!("creating Fault {}: {e}", fault.metadata.name.as_deref().unwrap_or_default()))?;
            Ok(())
        })
        .map_err(|e| cluster_error(&e))?;
        Ok(name)
    }

    /// The sides of a partition over members (zones or nodes), each naming the sides it may not
    /// reach. Members the grudge leaves untouched (a bridge) get no side: they cut nothing and
    /// nobody cuts them.
    fn partition_spec(
        &self,
        snapshot: &Snapshot,
        member_grudge: &Grudge<String>,
        by_zone: bool,
    ) -> PartitionSpec {
        let mut members: BTreeSet<&String> = member_grudge.keys().collect();
        members.extend(member_grudge.values().flatten());
        let sides = members
            .into_iter()
            .map(|member| {
                let nodes: Vec<String> = if by_zone {
                    snapshot
                        .facts
                        .zone(member)
                        .map(|z| z.nodes.clone())
                        .unwrap_or_default()
                } else {
                    vec![member.clone()]
                };
                let infos: Vec<&NodeInfo> =
                    nodes.iter().filter_map(|n| snapshot.nodes.get(n)).collect();
                PartitionSide {
                    name: member.clone(),
                    node_addresses: infos.iter().flat_map(|i| i.addresses.clone()).collect(),
                    pod_cidrs: infos.iter().flat_map(|i| i.pod_cidrs.clone()).collect(),
                    nodes,
                    cannot_reach: Some(
                        member_grudge
                            .get(member)
                            .into_iter()
                            .flatten()
                            .cloned()
                            .collect(),
                    ),
                }
            })
            .collect();
        PartitionSpec {
            sides,
            mode: self.kube.partition_mode,
            exempt_cidrs: self.options.exempt_cidrs.clone(),
        }
    }

    fn inject_partition(
        &self,
        snapshot: &Snapshot,
        target: &PartitionTarget,
        lasting: Duration,
        into: &mut Injection,
    ) -> Result<(), EngineError> {
        let (members, by_zone) =
            member_grudge(&snapshot.facts, target).map_err(|e| cluster_error(&e))?;
        let nodes_grudge = if by_zone {
            zone_grudge_to_nodes(&snapshot.facts, &members)
        } else {
            members.clone()
        };
        let partition = self.partition_spec(snapshot, &members, by_zone);
        into.sides = sides_of(&snapshot.facts.nodes(), &nodes_grudge);
        into.ids.push(self.create_fault(
            "partition",
            CrdKind::Partition,
            Some(partition),
            None,
            lasting,
        )?);
        Ok(())
    }

    /// The pod that is replica `replica` (from 1) of `service` now.
    fn pod_at<'s>(
        &self,
        snapshot: &'s Snapshot,
        service: &str,
        replica: u32,
    ) -> Result<&'s Pod, EngineError> {
        let pods = snapshot
            .pods
            .get(service)
            .map(Vec::as_slice)
            .unwrap_or_default();
        pods.get(replica as usize - 1).ok_or_else(|| {
            cluster_error(&format!(
                "{service} replica {replica} is gone: {} has {} pods now",
                self.describe_service(service),
                pods.len()
            ))
        })
    }

    fn pod_fault(
        &self,
        pod: &Pod,
        kind: CrdKind,
        lasting: Duration,
        into: &mut Injection,
    ) -> Result<(), EngineError> {
        let reference = PodRef {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            node_name: node_of(pod).to_owned(),
        };
        into.ids
            .push(self.create_fault(kind.as_str(), kind, None, Some(reference), lasting)?);
        Ok(())
    }

    fn inject_delete(
        &self,
        snapshot: &Snapshot,
        service: &str,
        replicas: &[u32],
        into: &mut Injection,
    ) -> Result<(), EngineError> {
        let targets: Vec<Pod> = replicas
            .iter()
            .map(|r| self.pod_at(snapshot, service, *r).cloned())
            .collect::<Result<_, _>>()?;
        let existing = snapshot.pods.get(service).cloned().unwrap_or_default();
        let client = self.client.clone();
        let options = PodDeleteOptions {
            api_timeout: self.options.api_timeout,
            allow_protected: self.kube.overrides.allow_protected_namespaces,
            ..PodDeleteOptions::default()
        };
        let bound = self.options.api_timeout * (targets.len() as u32 + 1);
        let deleted = self
            .block("deleting pods", bound, async move {
                delete_pods(&client, &targets, &options)
                    .await
                    .map_err(|e| e.to_string())
            })
            .map_err(|e| cluster_error(&e))?;
        let id = self.next_name("delete");
        self.lock().deletes.insert(
            id.clone(),
            DeleteRecord {
                service: service.to_owned(),
                baseline: Baseline::new(&existing, deleted),
            },
        );
        into.ids.push(id);
        Ok(())
    }

    fn inject_drain(
        &self,
        node: &str,
        lasting: Duration,
        into: &mut Injection,
    ) -> Result<(), EngineError> {
        let id = self.next_name("drain");
        let scheduler = self.scheduler(&id, lasting);
        // Recorded before the cordon: a cordon that half happened is still uncordoned.
        self.lock().drains.insert(id.clone(), node.to_owned());
        into.ids.push(id);
        scheduler
            .cordon(node)
            .and_then(|()| scheduler.evict(node))
            .map_err(|e| cluster_error(&e.to_string()))
    }

    fn scheduler(&self, fault_id: &str, lasting: Duration) -> KubeNodeScheduler {
        KubeNodeScheduler::new(
            self.client.clone(),
            self.runtime.clone(),
            CordonOwner {
                fault_id: fault_id.to_owned(),
                deadline: SystemTime::now() + lasting,
            },
            DrainOptions {
                budget: self.drain_budget(),
                ..self.options.drain.clone()
            },
        )
    }

    fn drain_budget(&self) -> DrainBudget {
        DrainBudget {
            max_nodes: 1,
            max_zone_fraction: self.kube.max_drain_zone_fraction,
            allow_override: self.kube.overrides.allow_multi_node_drain,
        }
    }

    /// Asks every NATS pod (pod IP, monitoring port) which servers hold `stream` and who
    /// leads, and returns a majority of its peers, the leader first, with their pods.
    fn stream_majority(
        &self,
        snapshot: &Snapshot,
        stream: &str,
    ) -> Result<Vec<(String, Pod)>, EngineError> {
        let port = self.kube.nats.as_ref().map_or(8222, |n| n.monitor_port);
        let timeout = self.options.monitor_timeout;
        let path = if stream == META {
            "/jsz"
        } else {
            "/jsz?streams=true"
        };
        let answers: Vec<NatsAnswer> = snapshot
            .pods
            .get(NATS_SERVICE)
            .into_iter()
            .flatten()
            .filter_map(|pod| {
                let ip = pod.status.as_ref()?.pod_ip.clone()?;
                let (varz, jsz) = self.runtime.block_on(async {
                    (
                        monitor_json(&ip, port, "/varz", timeout).await,
                        monitor_json(&ip, port, path, timeout).await,
                    )
                });
                // A server's name is its pod's name unless its /varz says otherwise (the
                // NATS Helm chart names servers after their pods).
                let name = varz
                    .as_ref()
                    .and_then(|v| v.get("server_name")?.as_str().map(str::to_owned))
                    .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
                (varz.is_some() || jsz.is_some()).then(|| NatsAnswer {
                    name,
                    pod: pod.clone(),
                    jsz,
                })
            })
            .collect();
        let servers: BTreeMap<&str, &Pod> =
            answers.iter().map(|a| (a.name.as_str(), &a.pod)).collect();
        if servers.is_empty() {
            return Err(cluster_error(&format!(
                "no NATS pod of {} answered on its monitoring port {port} (/varz, /jsz); check kubernetes.nats.monitor_port",
                self.describe_service(NATS_SERVICE)
            )));
        }
        let group = if stream == META {
            Placement {
                stream: META.to_owned(),
                leader: answers
                    .iter()
                    .find_map(|a| a.jsz.as_ref().and_then(meta_leader)),
                peers: servers.keys().map(|s| (*s).to_owned()).collect(),
            }
        } else {
            let mut merged = BTreeMap::new();
            for answer in &answers {
                if let Some(jsz) = &answer.jsz {
                    merge_jsz(&mut merged, &answer.name, jsz, stream);
                }
            }
            let placements: Vec<Placement> = merged.into_values().collect();
            most_common_group(&placements).cloned().ok_or_else(|| {
                cluster_error(&format!(
                    "no NATS server reports stream `{stream}`; create the streams first (the workload does) or use `$meta`"
                ))
            })?
        };
        group
            .majority()
            .into_iter()
            .map(|name| {
                let pod = servers.get(name.as_str()).map(|pod| (*pod).clone());
                pod.map(|pod| (name.clone(), pod)).ok_or_else(|| {
                    cluster_error(&format!(
                        "stream peer {name} is not one of the NATS pods ({}); is kubernetes.nats's selector complete?",
                        servers.keys().copied().collect::<Vec<_>>().join(", ")
                    ))
                })
            })
            .collect()
    }

    fn inject_quorum_loss(
        &self,
        snapshot: &Snapshot,
        stream: &str,
        mode: QuorumLossMode,
        lasting: Duration,
        into: &mut Injection,
    ) -> Result<(), EngineError> {
        let chosen = self.stream_majority(snapshot, stream)?;
        into.affected = Some(
            chosen
                .iter()
                .map(|(name, pod)| {
                    format!(
                        "{name} ({}/{} on {})",
                        pod.metadata.namespace.as_deref().unwrap_or_default(),
                        pod.metadata.name.as_deref().unwrap_or_default(),
                        node_of(pod)
                    )
                })
                .collect(),
        );
        match mode {
            QuorumLossMode::Isolate => {
                let nodes: Vec<String> = chosen
                    .iter()
                    .map(|(_, pod)| node_of(pod).to_owned())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                // The peers are known only now: the every-zone refusal of `check_plan`, again.
                let all = snapshot.facts.nodes();
                let grudge = faultline_injectors::net_partition::singletons(&nodes, &all)
                    .map_err(|e| cluster_error(&e.to_string()))?;
                let largest = largest_connected_group(&all, &grudge);
                if !self.allow_all_zones
                    && !snapshot
                        .facts
                        .zones
                        .iter()
                        .any(|z| z.nodes.iter().all(|n| largest.contains(n)))
                {
                    return Err(cluster_error(&format!(
                        "isolating the NATS peers' nodes ({}) would partition every zone; set blast_radius.allow_all_zones: true if that is intended",
                        nodes.join(", ")
                    )));
                }
                self.inject_partition(snapshot, &PartitionTarget::Singletons(nodes), lasting, into)
            }
            QuorumLossMode::Pause | QuorumLossMode::Stop => {
                let kind = if mode == QuorumLossMode::Pause {
                    CrdKind::Pause
                } else {
                    CrdKind::Stop
                };
                for (_, pod) in &chosen {
                    self.pod_fault(pod, kind, lasting, into)?;
                }
                Ok(())
            }
        }
    }

    /// Time to ready of a `delete` injection's pods, from their replacements' Ready conditions
    /// as the API server holds them now; `None` for an id that is not a pod delete.
    ///
    /// # Errors
    /// The pods cannot be listed.
    pub fn time_to_ready(&self, id: &str) -> Result<Option<Readiness>, EngineError> {
        let Some(record) = self.lock().deletes.get(id).cloned() else {
            return Ok(None);
        };
        let snapshot_pods = {
            let client = self.client.clone();
            let (namespace, selector) = self.selection(&record.service);
            self.block("listing pods", self.options.api_timeout, async move {
                Api::<Pod>::namespaced(client, &namespace)
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map(|l| l.items)
                    .map_err(|e| format!("listing pods: {e}"))
            })
            .map_err(|e| cluster_error(&e))?
        };
        Ok(Some(replacement_readiness(
            &record.baseline,
            &snapshot_pods,
        )))
    }

    fn selection(&self, service: &str) -> (String, String) {
        if service == NATS_SERVICE {
            if let Some(nats) = &self.kube.nats {
                return (
                    nats.namespace.clone(),
                    crate::spec::label_selector(&nats.selector),
                );
            }
        }
        self.kube
            .workloads
            .iter()
            .find(|w| w.name == service)
            .map(|w| (w.namespace.clone(), w.label_selector()))
            .unwrap_or_default()
    }

    /// Deletes every Fault labelled with this experiment and uncordons every node this target
    /// cordoned. Returns what failed (the Faults' deadlines and the controller's cordon
    /// reconcile still apply).
    pub fn heal_all(&self) -> Vec<String> {
        let mut failures = Vec::new();
        let drains: Vec<String> = self.lock().drains.keys().cloned().collect();
        for id in drains {
            if let Err(error) = Target::revert(self, &id) {
                failures.push(error);
            }
        }
        let client = self.client.clone();
        let selector = format!("{EXPERIMENT_LABEL}={}", self.options.experiment);
        let result = self.block(
            "deleting the experiment's Faults",
            self.options.api_timeout * 4,
            async move {
                let api = Api::<Fault>::all(client);
                let faults = api
                    .list(&ListParams::default().labels(&selector))
                    .await
                    .map_err(|e| format!("listing Faults ({selector}): {e}"))?;
                let mut failed = Vec::new();
                for fault in faults.items {
                    let name = fault.metadata.name.clone().unwrap_or_default();
                    if fault.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    if let Err(error) = delete_fault(&api, &name).await {
                        failed.push(error);
                    }
                }
                Ok(failed)
            },
        );
        match result {
            Ok(failed) => failures.extend(failed),
            Err(error) => failures.push(error),
        }
        failures
    }
}

impl Drop for ClusterTarget {
    fn drop(&mut self) {
        for failure in self.heal_all() {
            stderr_line!("faultline: heal on drop failed: {failure}");
        }
    }
}

async fn delete_fault(api: &Api<Fault>, name: &str) -> Result<(), String> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(format!("deleting Fault {name}: {error}")),
    }
}

impl Target for ClusterTarget {
    fn facts(&self) -> Result<Facts, EngineError> {
        Ok(self.snapshot()?.facts)
    }

    fn partition_grudge(&self, target: &PartitionTarget) -> Result<Grudge<String>, EngineError> {
        let facts = self.snapshot()?.facts;
        let (members, by_zone) = member_grudge(&facts, target).map_err(|e| cluster_error(&e))?;
        Ok(if by_zone {
            zone_grudge_to_nodes(&facts, &members)
        } else {
            members
        })
    }

    fn check_plan(
        &self,
        spec: &ExperimentSpec,
        facts: &Facts,
        planned: &[PlannedFault],
    ) -> Result<(), EngineError> {
        let refuse = |fault: usize, message: String| EngineError::BlastRadius { fault, message };
        for fault in planned {
            let services: Vec<&str> = match &fault.action {
                Action::Kill { service, .. } | Action::Pause { service, .. } => vec![service],
                Action::Partition { stop, .. } => stop.iter().map(|(s, _)| s.as_str()).collect(),
                Action::QuorumLoss { .. } => vec![NATS_SERVICE],
                Action::Drain { .. } | Action::OfPrimary { .. } => vec![],
            };
            for service in services {
                let namespace = self.namespace_of(service).unwrap_or_default();
                if (namespace == SYSTEM_NAMESPACE || namespace == FAULTLINE_NAMESPACE)
                    && !self.kube.overrides.allow_protected_namespaces
                {
                    return Err(refuse(fault.spec_index, format!(
                        "it targets pods of {} in the protected namespace {namespace}; select other pods, or set kubernetes.overrides.allow_protected_namespaces: true",
                        self.describe_service(service)
                    )));
                }
            }
            if let Action::Partition { target, .. } = &fault.action {
                let grudge = self.partition_grudge(target)?;
                let nodes = facts.nodes();
                let largest = largest_connected_group(&nodes, &grudge);
                let whole_zone_left = facts
                    .zones
                    .iter()
                    .any(|z| z.nodes.iter().all(|n| largest.contains(n)));
                if !whole_zone_left && !spec.blast_radius.allow_all_zones {
                    return Err(refuse(fault.spec_index, format!(
                        "it partitions every zone ({}): no zone stays whole with the largest side; set blast_radius.allow_all_zones: true if that is intended",
                        facts.zone_names().join(", ")
                    )));
                }
            }
        }
        // Drains whose windows overlap count together, with the nodes already cordoned by
        // Faultline, against the one-node and zone-share limits.
        let snapshot = self.snapshot()?;
        let drains: Vec<&PlannedFault> = planned
            .iter()
            .filter(|p| matches!(p.action, Action::Drain { .. }))
            .collect();
        let window = |p: &PlannedFault| (p.at, p.at + p.duration.max(Duration::from_millis(1)));
        for (i, drain) in drains.iter().enumerate() {
            let Action::Drain { node } = &drain.action else {
                continue;
            };
            let mut nodes: Vec<NodeFacts> = snapshot
                .nodes
                .values()
                .map(|info| info.facts.clone())
                .collect();
            let (start, end) = window(drain);
            for (j, other) in drains.iter().enumerate() {
                let (other_start, other_end) = window(other);
                let overlaps = i != j && other_start < end && start < other_end;
                if let (true, Action::Drain { node: other_node }) = (overlaps, &other.action) {
                    if let Some(facts) = nodes.iter_mut().find(|n| &n.name == other_node) {
                        facts
                            .cordoned_by
                            .get_or_insert_with(|| format!("faults[{}]", other.spec_index));
                    }
                }
            }
            check_drain(&nodes, node, &self.drain_budget()).map_err(|refusal| {
                refuse(
                    drain.spec_index,
                    format!("{refusal} (kubernetes.overrides.allow_multi_node_drain)"),
                )
            })?;
        }
        Ok(())
    }

    fn inject(
        &self,
        action: &Action,
        duration: Duration,
        max: Duration,
        into: &mut Injection,
    ) -> Result<(), EngineError> {
        let lasting = duration.min(max);
        let snapshot = self.snapshot()?;
        match action {
            Action::Partition { target, stop } => {
                self.inject_partition(&snapshot, target, lasting, into)?;
                for (service, replica) in stop {
                    let pod = self.pod_at(&snapshot, service, *replica)?;
                    self.pod_fault(pod, CrdKind::Stop, lasting, into)?;
                }
                Ok(())
            }
            Action::Kill { service, replicas } => match self.kube.kill_mode {
                PodKillMode::Delete => self.inject_delete(&snapshot, service, replicas, into),
                PodKillMode::Crash => {
                    for replica in replicas {
                        let pod = self.pod_at(&snapshot, service, *replica)?;
                        self.pod_fault(pod, CrdKind::Kill, KILL_FAULT_LIFETIME, into)?;
                    }
                    Ok(())
                }
            },
            Action::Pause { service, replica } => {
                let pod = self.pod_at(&snapshot, service, *replica)?;
                self.pod_fault(pod, CrdKind::Pause, lasting, into)
            }
            Action::Drain { node } => self.inject_drain(node, lasting, into),
            Action::QuorumLoss { stream, mode } => {
                self.inject_quorum_loss(&snapshot, stream, *mode, lasting, into)
            }
            Action::OfPrimary { service, .. } => Err(EngineError::Cluster(format!(
                "the primary of `{service}` cannot be resolved on a cluster: workloads have no role probe; name a zone, node or replica instead"
            ))),
        }
    }

    fn revert(&self, id: &str) -> Result<(), String> {
        if self.lock().deletes.contains_key(id) {
            // A delete is done once the API server took it; its controller brings the pod back.
            return Ok(());
        }
        let drained = self.lock().drains.get(id).cloned();
        if let Some(node) = drained {
            self.scheduler(id, Duration::ZERO)
                .uncordon(&node)
                .map_err(|e| format!("{id}: uncordoning {node}: {e}"))?;
            self.lock().drains.remove(id);
            return Ok(());
        }
        let client = self.client.clone();
        let name = id.to_owned();
        self.block("deleting a Fault", self.options.api_timeout, async move {
            delete_fault(&Api::<Fault>::all(client), &name).await
        })
    }

    fn heal_rest(&self) -> Vec<String> {
        self.heal_all()
    }
}

fn node_of(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

fn cluster_error(message: &str) -> EngineError {
    EngineError::Cluster(message.to_owned())
}

fn describe_scope(kube: &KubernetesSpec) -> String {
    match (kube.nodes.zones.is_empty(), kube.nodes.names.is_empty()) {
        (true, true) => "every node".into(),
        (false, true) => format!("zones {}", kube.nodes.zones.join(", ")),
        (true, false) => format!("nodes {}", kube.nodes.names.join(", ")),
        (false, false) => format!(
            "zones {}, nodes {}",
            kube.nodes.zones.join(", "),
            kube.nodes.names.join(", ")
        ),
    }
}

/// `GET http://ip:port/path`, parsed as JSON; `None` on any failure (a NATS pod that does not
/// answer is left out, as on the lab).
pub(crate) async fn monitor_json(
    ip: &str,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Option<serde_json::Value> {
    let (status, body) = http_get(ip, port, path, timeout).await?;
    if status != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

/// `GET http://ip:port/path` over HTTP/1.0: the status code and the body; `None` when there is
/// no answer within `timeout`.
pub(crate) async fn http_get(
    ip: &str,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Option<(u16, String)> {
    let request = async {
        let mut stream = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
        let head =
            format!("GET {path} HTTP/1.0\r\nHost: {ip}:{port}\r\nAccept: application/json\r\n\r\n");
        stream.write_all(head.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let status = head
            .lines()
            .next()
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|code| code.parse().ok())?;
        Some((status, body.to_owned()))
    };
    tokio::time::timeout(timeout, request).await.ok().flatten()
}
