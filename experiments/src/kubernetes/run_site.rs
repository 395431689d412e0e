//! A cluster as the site of a run (the runner Job's side of `engine::run::run_on_cluster`):
//!
//! - **The tenant load** runs in the runner's own process and connects straight to the pods:
//!   the NATS pods of `kubernetes.nats` (pod IP, `client_port`), or for the `http` adapter the
//!   pods of the `gateway` workload (pod IP, its `port`). Each pod's IP and name map to its
//!   node, so operations are attributed to nodes as the fault windows name them.
//! - **Observations** (per-server `/jsz`, leaders) come from each NATS pod's IP and monitoring
//!   port.
//! - **Probes**: `nats_stream_health` asks every NATS pod's `/jsz?streams=true` and needs a
//!   leader for every stream; `http` asks `GET path` on every pod of the named workload.
//! - **Time to ready** of pods deleted by a `kill` comes from their replacements' Ready
//!   conditions ([`ClusterTarget::time_to_ready`]).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::engine::execute::InjectedFault;
use crate::engine::site::RunSite;
use crate::engine::target::{Target, CLUSTER_NAME};
use crate::engine::EngineError;
use crate::lab::jetstream::{merge_jsz, ALL_STREAMS};
use crate::spec::{
    label_selector, ExperimentSpec, KubernetesSpec, Probe, DEFAULT_WORKLOAD_HTTP_PORT,
};
use crate::workload::target::{HttpEndpoint, NatsServer};
use crate::workload::{self, AdapterKind, BackgroundWorkload, WorkloadConfig};

use super::target::{http_get, monitor_json, ClusterTarget};

/// A cluster as the site of one run.
pub struct ClusterSite {
    target: ClusterTarget,
    kube: KubernetesSpec,
    runtime: tokio::runtime::Handle,
}

/// One pod the load or a probe talks to.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PodAddress {
    name: String,
    node: String,
    ip: IpAddr,
}

impl ClusterSite {
    /// The site of `spec` (a validated cluster spec) on `target`.
    ///
    /// # Errors
    /// The spec has no `kubernetes:` section.
    pub fn new(
        target: ClusterTarget,
        spec: &ExperimentSpec,
        runtime: tokio::runtime::Handle,
    ) -> Result<Self, EngineError> {
        let kube = spec.kubernetes.clone().ok_or_else(|| {
            EngineError::Cluster(
                "the spec has no `kubernetes:` section; set target: kubernetes and name the workloads"
                    .into(),
            )
        })?;
        Ok(Self {
            target,
            kube,
            runtime,
        })
    }

    /// The cluster target the faults go through.
    pub fn cluster_target(&self) -> &ClusterTarget {
        &self.target
    }

    /// The running, addressed pods of `namespace` matching `selector`, by name.
    fn pods(&self, namespace: &str, selector: &str) -> Result<Vec<PodAddress>, String> {
        let api: Api<Pod> = Api::namespaced(self.target.client().clone(), namespace);
        let params = ListParams::default().labels(selector);
        let bound = self.target.options().api_timeout;
        let listed = self
            .runtime
            .block_on(async { tokio::time::timeout(bound, api.list(&params)).await })
            .map_err(|_| {
                format!("listing pods ({namespace}, {selector}): no answer from the API server within {}", humantime::format_duration(bound))
            })?
            .map_err(|e| format!("listing pods ({namespace}, {selector}): {e}"))?;
        let mut pods: Vec<PodAddress> = listed
            .items
            .iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .filter_map(|pod| {
                let status = pod.status.as_ref()?;
                Some(PodAddress {
                    name: pod.metadata.name.clone()?,
                    node: pod.spec.as_ref()?.node_name.clone()?,
                    ip: status.pod_ip.as_deref()?.parse().ok()?,
                })
            })
            .collect();
        pods.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(pods)
    }

    fn nats_pods(&self) -> Result<(Vec<PodAddress>, u16, u16), String> {
        let nats = self.kube.nats.as_ref().ok_or(
            "the tenant load and nats_stream_health need the NATS pods: add kubernetes.nats (namespace, selector, monitor_port, client_port)",
        )?;
        let pods = self.pods(&nats.namespace, &label_selector(&nats.selector))?;
        if pods.is_empty() {
            return Err(format!(
                "kubernetes.nats (namespace {}, selector {}) matches no pod with an IP; check the namespace and selector",
                nats.namespace,
                label_selector(&nats.selector)
            ));
        }
        Ok((pods, nats.client_port, nats.monitor_port))
    }

    fn workload_pods(&self, name: &str) -> Result<(Vec<PodAddress>, u16), String> {
        let workload = self
            .kube
            .workloads
            .iter()
            .find(|w| w.name == name)
            .ok_or_else(|| format!("`{name}` is not a workload in kubernetes.workloads"))?;
        let pods = self.pods(&workload.namespace, &workload.label_selector())?;
        if pods.is_empty() {
            return Err(format!(
                "kubernetes.workloads `{name}` (namespace {}, selector {}) matches no pod with an IP",
                workload.namespace,
                workload.label_selector()
            ));
        }
        Ok((pods, workload.port.unwrap_or(DEFAULT_WORKLOAD_HTTP_PORT)))
    }

    /// Where the load goes: the NATS pods (always, for observations), and the gateway pods
    /// for the `http` adapter.
    fn load_target(
        &self,
        adapter: AdapterKind,
        services: &[String],
    ) -> Result<workload::Target, String> {
        let (nats_pods, client_port, monitor_port) = self.nats_pods()?;
        let mut node_of = HashMap::new();
        let nats = nats_pods
            .iter()
            .map(|pod| {
                node_of.insert(pod.ip.to_string(), pod.node.clone());
                node_of.insert(pod.name.clone(), pod.node.clone());
                NatsServer {
                    node: pod.node.clone(),
                    url: format!("nats://{}", SocketAddr::new(pod.ip, client_port)),
                    monitor: Some(SocketAddr::new(pod.ip, monitor_port)),
                }
            })
            .collect();
        let mut gateways = Vec::new();
        if adapter == AdapterKind::Http {
            for service in services {
                let (pods, port) = self.workload_pods(service).map_err(|e| {
                    format!("{e}; the http adapter sends the load to the pods of workload.services ({}) (or use workload.adapter: nats)", services.join(", "))
                })?;
                gateways.extend(pods.iter().map(|pod| HttpEndpoint {
                    node: pod.node.clone(),
                    addr: SocketAddr::new(pod.ip, port),
                }));
            }
        }
        Ok(workload::Target::from_servers(nats, gateways, node_of))
    }

    fn stream_health(&self) -> Result<(), String> {
        let (pods, _, monitor_port) = self.nats_pods()?;
        let timeout = self.target.options().monitor_timeout;
        let mut merged = BTreeMap::new();
        let mut answered = 0;
        for pod in &pods {
            let ip = pod.ip.to_string();
            let jsz = self.runtime.block_on(monitor_json(
                &ip,
                monitor_port,
                "/jsz?streams=true",
                timeout,
            ));
            if let Some(jsz) = jsz {
                answered += 1;
                merge_jsz(&mut merged, &pod.name, &jsz, ALL_STREAMS);
            }
        }
        if answered == 0 {
            return Err(format!(
                "no NATS pod answered /jsz on its monitoring port {monitor_port}"
            ));
        }
        match merged.values().find(|p| p.leader.is_none()) {
            Some(leaderless) => Err(format!("stream {} has no leader", leaderless.stream)),
            None => Ok(()),
        }
    }

    fn http_probe(&self, service: &str, port: u16, path: &str) -> Result<(), String> {
        let (pods, _) = self.workload_pods(service)?;
        let timeout = self.target.options().monitor_timeout;
        for pod in &pods {
            let answer = self
                .runtime
                .block_on(http_get(&pod.ip.to_string(), port, path, timeout));
            if !answer.is_some_and(|(status, _)| (200..300).contains(&status)) {
                return Err(format!(
                    "probe GET {path} on {service} pod {} ({}:{port}) failed",
                    pod.name, pod.ip
                ));
            }
        }
        Ok(())
    }
}

impl RunSite for ClusterSite {
    fn name(&self) -> String {
        CLUSTER_NAME.to_owned()
    }

    fn target(&self) -> &dyn Target {
        &self.target
    }

    fn spawn_load(&self, config: WorkloadConfig) -> Result<BackgroundWorkload, EngineError> {
        let target = self
            .load_target(config.adapter, &config.http_services)
            .map_err(EngineError::Cluster)?;
        Ok(workload::spawn(target, config)?)
    }

    fn probe(&self, probe: &Probe) -> Result<(), String> {
        match probe {
            Probe::NatsStreamHealth => self.stream_health(),
            Probe::Http {
                service,
                port,
                path,
            } => self.http_probe(service, *port, path),
        }
    }

    fn time_to_ready(&self, fault: &InjectedFault) -> Option<Duration> {
        fault
            .fault_ids
            .iter()
            .filter_map(|id| self.target.time_to_ready(id).ok().flatten())
            .map(|readiness| readiness.time_to_ready)
            .collect::<Option<Vec<Duration>>>()?
            .into_iter()
            .max()
    }
}
