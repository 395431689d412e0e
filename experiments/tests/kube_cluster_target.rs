//! The engine on a cluster (the acceptance of the cluster target): every catalog scenario, made a
//! cluster spec, plans and runs through the engine's `Injected` against the in-memory API server
//! with its workload controllers (six nodes in three zones, a ReplicaSet-like controller, a
//! PodDisruptionBudget, Ready after a delay). The NATS pods' monitoring endpoints are small
//! `/varz` + `/jsz` servers on loopback addresses (the pods' IPs). Each test asserts the Faults
//! created (shapes, sides, slots, deadlines, labels), the drains and deletes done, and that
//! everything is healed at the end. Then the blast-radius refusals, each proven by its override.
//!
//! No node agent runs here: a Fault is applied by nobody, and after the engine deletes it the
//! test clears the agents' finalizer, as the agents do once they have reverted.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use faultline_experiments::engine::execute::Injected;
use faultline_experiments::engine::plan::{plan, Action, PlannedFault};
use faultline_experiments::engine::EngineError;
use faultline_experiments::kubernetes::cordon::CORDONED_BY_ANNOTATION;
use faultline_experiments::kubernetes::crd::{
    Fault, FaultKind, PartitionMode, EXPERIMENT_LABEL, NODE_AGENTS_FINALIZER,
};
use faultline_experiments::kubernetes::drain::DrainOptions;
use faultline_experiments::kubernetes::memory_api::{MemoryApi, WorkloadControllers};
use faultline_experiments::kubernetes::target::{ClusterOptions, ClusterTarget};
use faultline_experiments::lab::faults::PartitionTarget;
use faultline_experiments::spec::{
    catalog, ExperimentSpec, KubernetesSpec, NatsSelector, PodKillMode, Target, WorkloadSelector,
};
use serde_json::{json, Value};

const READY_DELAY: Duration = Duration::from_millis(300);
const NATS_IPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
];
/// Zone, node, address, pod CIDR.
const NODES: [(&str, &str, &str, &str); 6] = [
    ("a", "a1", "10.203.1.1", "10.244.1.0/24"),
    ("a", "a2", "10.203.1.2", "10.244.2.0/24"),
    ("b", "b1", "10.203.2.1", "10.244.3.0/24"),
    ("b", "b2", "10.203.2.2", "10.244.4.0/24"),
    ("c", "c1", "10.203.3.1", "10.244.5.0/24"),
    ("c", "c2", "10.203.3.2", "10.244.6.0/24"),
];

/// Three NATS monitoring endpoints on loopback, one per pod IP, on one port. `nats-1` leads the
/// tenant stream and the meta group; every server holds the stream. Stopped on drop.
struct NatsMonitors {
    port: u16,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl NatsMonitors {
    fn start() -> Self {
        for _ in 0..50 {
            let Ok(first) = TcpListener::bind((NATS_IPS[0], 0)) else {
                continue;
            };
            let port = first.local_addr().expect("addr").port();
            let rest: Vec<TcpListener> = NATS_IPS[1..]
                .iter()
                .filter_map(|ip| TcpListener::bind((*ip, port)).ok())
                .collect();
            if rest.len() != 2 {
                continue;
            }
            let stop = Arc::new(AtomicBool::new(false));
            let threads = std::iter::once(first)
                .chain(rest)
                .enumerate()
                .map(|(i, listener)| {
                    let stop = Arc::clone(&stop);
                    std::thread::spawn(move || serve(&listener, &format!("nats-{i}"), &stop))
                })
                .collect();
            return Self {
                port,
                stop,
                threads,
            };
        }
        panic!("no port free on 127.0.0.2-4 after 50 tries");
    }
}

impl Drop for NatsMonitors {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn serve(listener: &TcpListener, server: &str, stop: &AtomicBool) {
    listener.set_nonblocking(true).expect("nonblocking");
    while !stop.load(Ordering::SeqCst) {
        let Ok((mut stream, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        stream.set_nonblocking(false).expect("blocking");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut buffer = [0_u8; 2048];
        let read = stream.read(&mut buffer).unwrap_or(0);
        let request = String::from_utf8_lossy(&buffer[..read]);
        let path = request.split_whitespace().nth(1).unwrap_or("/");
        let body = match path {
            "/varz" => json!({"server_name": server}),
            "/jsz?streams=true" => json!({"account_details": [{"name": "$G", "stream_detail": [
                {"name": "tenant-1", "cluster": {"leader": "nats-1",
                    "replicas": [{"name": "nats-0"}, {"name": "nats-2"}]}}]}]}),
            "/jsz" => json!({"meta_cluster": {"leader": "nats-1"}}),
            _ => Value::Null,
        };
        let (status, body) = if body.is_null() {
            ("404 Not Found", String::new())
        } else {
            ("200 OK", body.to_string())
        };
        let _ = write!(
            stream,
            "HTTP/1.0 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
    }
}

/// The in-memory cluster: six nodes in zones a, b, c; gateway pods gw-a, gw-b, gw-c (ReplicaSet
/// `gateway-rs`, namespace shop) on a1, b1, c1 under a budget of `minAvailable: 2`; NATS pods
/// nats-0..2 (StatefulSet, namespace nats) on a2, b2, c2 at 127.0.0.2-4.
fn cluster() -> MemoryApi {
    let api = MemoryApi::new();
    api.enable_workload_controllers(WorkloadControllers {
        ready_delay: READY_DELAY,
    });
    for (zone, name, address, cidr) in NODES {
        api.put(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
            "spec": {"podCIDRs": [cidr], "podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": address},
                {"type": "Hostname", "address": name}]}}));
    }
    let ready = json!([{"type": "Ready", "status": "True",
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
    for (name, node) in [("gw-a", "a1"), ("gw-b", "b1"), ("gw-c", "c1")] {
        api.put(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "generateName": "gateway-rs-",
                "labels": {"app": "gateway"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "gateway-rs", "uid": "rs-uid", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "gw", "image": "gw:1"}]},
            "status": {"phase": "Running", "conditions": ready}}));
    }
    for (i, node) in ["a2", "b2", "c2"].iter().enumerate() {
        api.put(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("nats-{i}"), "namespace": "nats",
                "labels": {"app": "nats"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                    "name": "nats", "uid": "sts-uid", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "nats", "image": "nats:2"}]},
            "status": {"phase": "Running", "podIP": NATS_IPS[i].to_string(), "conditions": ready}}));
    }
    api.put(
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "gateway-pdb", "namespace": "shop"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "gateway"}}}}),
    );
    api
}

fn kubernetes_section(monitor_port: u16) -> KubernetesSpec {
    KubernetesSpec {
        workloads: vec![WorkloadSelector {
            name: "gateway".into(),
            namespace: "shop".into(),
            selector: BTreeMap::from([("app".into(), "gateway".into())]),
            port: None,
        }],
        nats: Some(NatsSelector {
            namespace: "nats".into(),
            selector: BTreeMap::from([("app".into(), "nats".into())]),
            monitor_port,
            client_port: 4222,
        }),
        ..KubernetesSpec::default()
    }
}

/// A catalog scenario as a cluster spec: the same faults, SLOs and blast radius, plus the
/// selectors.
fn cluster_spec(name: &str, monitor_port: u16) -> ExperimentSpec {
    let mut spec = catalog::spec(name).expect("catalog");
    spec.target = Target::Kubernetes;
    spec.kubernetes = Some(kubernetes_section(monitor_port));
    spec.validate(name).expect("a valid cluster spec");
    spec
}

/// The runner's side of one test: a runtime for the API client, the in-memory API and the
/// NATS monitors.
struct Harness {
    runtime: tokio::runtime::Runtime,
    api: MemoryApi,
    nats: NatsMonitors,
}

impl Harness {
    fn new() -> Self {
        Self {
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
            api: cluster(),
            nats: NatsMonitors::start(),
        }
    }

    fn target(&self, spec: &ExperimentSpec, experiment: &str) -> ClusterTarget {
        let _guard = self.runtime.enter();
        ClusterTarget::new(
            self.api.client(),
            self.runtime.handle().clone(),
            spec,
            ClusterOptions {
                experiment: experiment.into(),
                owner: None,
                created_by: "test-runner".into(),
                api_timeout: Duration::from_secs(5),
                monitor_timeout: Duration::from_secs(2),
                drain: DrainOptions {
                    eviction_timeout: Duration::from_secs(10),
                    first_backoff: Duration::from_millis(20),
                    max_backoff: Duration::from_millis(100),
                    api_timeout: Duration::from_secs(5),
                    ..DrainOptions::default()
                },
                exempt_cidrs: vec![],
            },
        )
        .expect("target")
    }

    fn faults(&self) -> Vec<Fault> {
        self.api
            .list("faultline.dev/v1alpha1", "faults")
            .into_iter()
            .map(|f| serde_json::from_value(f).expect("a Fault"))
            .collect()
    }

    /// What the agents do after a Fault is deleted and reverted: clear their finalizer.
    fn agents_release(&self) {
        for mut fault in self.api.list("faultline.dev/v1alpha1", "faults") {
            if fault["metadata"]["deletionTimestamp"].is_string() {
                fault["metadata"]["finalizers"] = json!([]);
                let name = fault["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                self.api.put(fault);
                self.api
                    .remove("faultline.dev/v1alpha1", "faults", None, &name);
            }
        }
    }

    fn pods(&self, app: &str) -> Vec<Value> {
        self.api
            .list("v1", "pods")
            .into_iter()
            .filter(|p| p["metadata"]["labels"]["app"] == app)
            .collect()
    }

    /// Runs the workload controllers until `done` or 10 s.
    fn tick_until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let start = Instant::now();
        while !done(self) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{what}: not within 10 s"
            );
            self.api.tick();
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn unschedulable(&self) -> Vec<String> {
        self.api
            .list("v1", "nodes")
            .into_iter()
            .filter(|n| n["spec"]["unschedulable"].as_bool() == Some(true))
            .map(|n| {
                n["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    /// The heal at the end, then the agents' release: nothing of the run may remain.
    fn assert_healed(&self, injected: &mut Injected<'_>) {
        let failures = injected.heal_all();
        assert!(failures.is_empty(), "heal failures: {failures:?}");
        assert!(!injected.any_active());
        let left: Vec<&Fault> = Vec::new();
        let faults = self.faults();
        assert!(
            faults
                .iter()
                .all(|f| f.metadata.deletion_timestamp.is_some()),
            "every Fault deleted: {:?}{left:?}",
            faults.iter().map(|f| &f.metadata.name).collect::<Vec<_>>()
        );
        self.agents_release();
        assert!(self.faults().is_empty(), "no Fault left");
        assert!(self.unschedulable().is_empty(), "no node left cordoned");
        self.tick_until("three Ready gateway pods", |h| {
            h.pods("gateway").iter().filter(|p| is_ready(p)).count() == 3
        });
    }
}

fn is_ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// Asserts a Fault's bookkeeping: label, finalizer, creator, a deadline `lasting` from now.
fn assert_bookkeeping(fault: &Fault, experiment: &str, lasting: Duration) {
    let name = fault.metadata.name.clone().unwrap_or_default();
    assert!(name.starts_with(experiment), "{name}");
    assert_eq!(
        fault
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(EXPERIMENT_LABEL)),
        Some(&experiment.to_owned()),
        "{name}"
    );
    assert_eq!(
        fault.metadata.finalizers.as_deref(),
        Some(&[NODE_AGENTS_FINALIZER.to_owned()][..]),
        "{name}"
    );
    assert_eq!(fault.spec.created_by, "test-runner");
    assert_eq!(fault.spec.experiment.as_deref(), Some(experiment));
    let deadline: SystemTime = humantime::parse_rfc3339(&fault.spec.deadline).expect("RFC 3339");
    let expected = SystemTime::now() + lasting;
    let off = if deadline > expected {
        deadline.duration_since(expected)
    } else {
        expected.duration_since(deadline)
    }
    .expect("clock");
    assert!(
        off < Duration::from_secs(5),
        "{name}: deadline {} is {off:?} off",
        fault.spec.deadline
    );
}

/// The run's clock; these tests drive heals by hand, so windows need no real times.
fn run_clock() -> u64 {
    1
}

fn plan_and_inject<'t>(
    target: &'t ClusterTarget,
    spec: &ExperimentSpec,
) -> (Vec<PlannedFault>, Injected<'t>) {
    let planned = plan(target, spec, 7).expect("plan");
    let mut injected = Injected::new(target, Duration::from_secs(600), &run_clock);
    for (i, fault) in planned.iter().enumerate() {
        injected.inject(i, fault).expect("inject");
    }
    (planned, injected)
}

fn zone_of(node: &str) -> &'static str {
    NODES.iter().find(|n| n.1 == node).expect("node").0
}

#[test]
fn az_failure_cuts_one_zone_off_at_node_level() {
    let h = Harness::new();
    let spec = cluster_spec("az-failure", h.nats.port);
    let target = h.target(&spec, "az");
    let (planned, mut injected) = plan_and_inject(&target, &spec);
    let Action::Partition {
        target: PartitionTarget::Zone(zone),
        ..
    } = &planned[0].action
    else {
        panic!("{planned:?}")
    };
    assert_eq!(planned[0].affected_nodes.len(), 2);
    let faults = h.faults();
    assert_eq!(faults.len(), 1, "one Fault");
    let fault = &faults[0];
    assert_bookkeeping(fault, "az", Duration::from_secs(30));
    assert_eq!(fault.spec.action, FaultKind::Partition);
    assert_eq!(fault.spec.priority_slot, 0);
    let partition = fault.spec.partition.as_ref().expect("partition");
    assert_eq!(partition.mode, PartitionMode::Nodes);
    assert_eq!(partition.sides.len(), 3, "one side per zone");
    for side in &partition.sides {
        let nodes: Vec<&str> = NODES
            .iter()
            .filter(|n| n.0 == side.name)
            .map(|n| n.1)
            .collect();
        assert_eq!(side.nodes, nodes, "{side:?}");
        let addresses: Vec<String> = NODES
            .iter()
            .filter(|n| n.0 == side.name)
            .map(|n| format!("{}/32", n.2))
            .collect();
        assert_eq!(side.node_addresses, addresses);
        let cidrs: Vec<&str> = NODES
            .iter()
            .filter(|n| n.0 == side.name)
            .map(|n| n.3)
            .collect();
        assert_eq!(side.pod_cidrs, cidrs);
        let cut = side.cannot_reach.clone().expect("explicit");
        if &side.name == zone {
            assert_eq!(cut.len(), 2, "the zone is cut from both others: {cut:?}");
        } else {
            assert_eq!(cut, vec![zone.clone()], "the others only lose the zone");
        }
    }
    let record = &injected.faults()[0];
    assert_eq!(record.sides.len(), 2, "{:?}", record.sides);
    assert!(record
        .sides
        .iter()
        .any(|s| s.iter().all(|n| zone_of(n) == zone)));
    assert_eq!(
        record.fault_ids,
        vec![fault.metadata.name.clone().expect("name")]
    );
    h.assert_healed(&mut injected);
}

#[test]
fn network_partition_halves_and_every_other_shape() {
    let h = Harness::new();
    let spec = cluster_spec("network-partition", h.nats.port);
    let target = h.target(&spec, "halves");
    let (_, mut injected) = plan_and_inject(&target, &spec);
    let faults = h.faults();
    assert_eq!(faults.len(), 1);
    let sides = &faults[0].spec.partition.as_ref().expect("partition").sides;
    let cut: BTreeMap<&str, Vec<String>> = sides
        .iter()
        .map(|s| (s.name.as_str(), s.cannot_reach.clone().expect("explicit")))
        .collect();
    assert_eq!(
        cut["a"],
        vec!["b", "c"],
        "halves of a, b, c: a against b and c"
    );
    assert_eq!(cut["b"], vec!["a"]);
    assert_eq!(cut["c"], vec!["a"]);
    h.assert_healed(&mut injected);

    // The other shapes, each its own run: sides and slots as the shape says.
    for (shape, expected) in [
        ("majorities-ring", vec![("a", vec!["c"]), ("c", vec!["a"])]),
        ("bridge", vec![("a", vec!["c"]), ("c", vec!["a"])]),
        ("one-vs-rest", vec![]),
    ] {
        let mut spec = spec.clone();
        spec.faults[0].selector.shape = Some(shape.into());
        let target = h.target(&spec, &format!("shape-{shape}"));
        let (planned, mut injected) = plan_and_inject(&target, &spec);
        let faults = h.faults();
        assert_eq!(faults.len(), 1, "{shape}");
        let sides = &faults[0].spec.partition.as_ref().expect("partition").sides;
        if shape == "one-vs-rest" {
            let Action::Partition {
                target: PartitionTarget::Zone(zone),
                ..
            } = &planned[0].action
            else {
                panic!("{planned:?}")
            };
            let lone = sides
                .iter()
                .find(|s| &s.name == zone)
                .expect("the zone's side");
            assert_eq!(lone.cannot_reach.as_ref().map(Vec::len), Some(2), "{shape}");
        } else {
            let got: Vec<(&str, Vec<&str>)> = sides
                .iter()
                .map(|s| {
                    (
                        s.name.as_str(),
                        s.cannot_reach
                            .iter()
                            .flatten()
                            .map(String::as_str)
                            .collect(),
                    )
                })
                .collect();
            let want: Vec<(&str, Vec<&str>)> = expected.clone();
            assert_eq!(got, want, "{shape}: zone b reaches both and has no side");
        }
        h.assert_healed(&mut injected);
    }
}

#[test]
fn partitions_at_pod_level_and_unique_slots() {
    let h = Harness::new();
    let mut spec = cluster_spec("az-failure", h.nats.port);
    spec.kubernetes.as_mut().expect("section").partition_mode = PartitionMode::Both;
    // A second partition that overlaps the first: both hold, each in its own slot.
    let mut second = spec.faults[0].clone();
    second.selector.zone = Some("c".into());
    second.start = Duration::from_secs(6);
    spec.faults[0].selector.zone = Some("a".into());
    spec.faults.push(second);
    spec.validate("two").expect("valid");
    let target = h.target(&spec, "slots");
    let (_, mut injected) = plan_and_inject(&target, &spec);
    let faults = h.faults();
    assert_eq!(faults.len(), 2);
    let slots: Vec<u32> = faults.iter().map(|f| f.spec.priority_slot).collect();
    assert_eq!(
        slots
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        2,
        "{slots:?}"
    );
    assert!(faults
        .iter()
        .all(|f| f.spec.partition.as_ref().expect("p").mode == PartitionMode::Both));
    // Reverting the first by id deletes only its Fault.
    let first = injected.faults()[0].fault_ids[0].clone();
    let failures = injected.heal_due(|f| f.plan_index == 0);
    assert!(failures.is_empty(), "{failures:?}");
    let deleted: Vec<String> = h
        .faults()
        .iter()
        .filter(|f| f.metadata.deletion_timestamp.is_some())
        .filter_map(|f| f.metadata.name.clone())
        .collect();
    assert_eq!(deleted, vec![first]);
    h.assert_healed(&mut injected);
}

#[test]
fn pod_failure_deletes_one_gateway_pod_and_measures_time_to_ready() {
    let h = Harness::new();
    let spec = cluster_spec("pod-failure", h.nats.port);
    let target = h.target(&spec, "podkill");
    let before: Vec<String> = h
        .pods("gateway")
        .iter()
        .map(|p| p["metadata"]["uid"].as_str().unwrap_or_default().to_owned())
        .collect();
    let (planned, mut injected) = plan_and_inject(&target, &spec);
    let Action::Kill { service, replicas } = &planned[0].action else {
        panic!("{planned:?}")
    };
    assert_eq!((service.as_str(), replicas.len()), ("gateway", 1));
    assert!(
        h.faults().is_empty(),
        "mode delete goes through the API, not the agents"
    );
    let gone: Vec<&String> = before
        .iter()
        .filter(|uid| {
            !h.pods("gateway")
                .iter()
                .any(|p| p["metadata"]["uid"] == **uid)
        })
        .collect();
    assert_eq!(gone.len(), 1, "exactly one pod deleted");
    let deletes = h
        .api
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE" && r.uri.contains("/pods/"))
        .collect::<Vec<_>>();
    assert_eq!(deletes.len(), 1);
    assert!(
        deletes[0].body.contains("\"gracePeriodSeconds\":0"),
        "{}",
        deletes[0].body
    );
    let id = injected.faults()[0].fault_ids[0].clone();
    let early = target.time_to_ready(&id).expect("list").expect("a delete");
    assert!(
        !early.complete(),
        "the replacement is not Ready yet: {early:?}"
    );
    h.tick_until("the replacement is Ready", |_| {
        target
            .time_to_ready(&id)
            .expect("list")
            .expect("delete")
            .complete()
    });
    let readiness = target.time_to_ready(&id).expect("list").expect("delete");
    assert_eq!((readiness.expected, readiness.ready), (1, 1));
    assert!(readiness.time_to_ready.expect("measured") < Duration::from_secs(10));
    h.assert_healed(&mut injected);
}

#[test]
fn gateway_failure_deletes_every_gateway_pod() {
    let h = Harness::new();
    let spec = cluster_spec("gateway-failure", h.nats.port);
    let target = h.target(&spec, "gwall");
    let (planned, mut injected) = plan_and_inject(&target, &spec);
    assert_eq!(planned[0].affected_nodes, vec!["a1", "b1", "c1"]);
    assert!(h.pods("gateway").iter().all(|p| !is_ready(p)
        || p["metadata"]["name"]
            .as_str()
            .is_some_and(|n| !n.starts_with("gw-"))));
    assert!(
        h.pods("gateway").iter().all(|p| !p["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .starts_with("gw-")),
        "all three originals gone"
    );
    let id = injected.faults()[0].fault_ids[0].clone();
    h.tick_until("three replacements Ready", |_| {
        target
            .time_to_ready(&id)
            .expect("list")
            .expect("delete")
            .complete()
    });
    assert_eq!(
        target
            .time_to_ready(&id)
            .expect("list")
            .expect("d")
            .expected,
        3
    );
    h.assert_healed(&mut injected);
}

#[test]
fn node_failure_drains_through_the_eviction_api_and_uncordons_on_heal() {
    let h = Harness::new();
    let spec = cluster_spec("node-failure", h.nats.port);
    let target = h.target(&spec, "drain");
    let (planned, mut injected) = plan_and_inject(&target, &spec);
    let Action::Drain { node } = &planned[0].action else {
        panic!("{planned:?}")
    };
    let id = injected.faults()[0].fault_ids[0].clone();
    assert_eq!(h.unschedulable(), vec![node.clone()]);
    let annotated = h.api.get("v1", "nodes", None, node).expect("node");
    assert_eq!(
        annotated["metadata"]["annotations"][CORDONED_BY_ANNOTATION],
        json!(id)
    );
    let evictions: Vec<_> = h
        .api
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.uri.ends_with("/eviction"))
        .collect();
    assert_eq!(evictions.len(), 1, "the one pod on {node}");
    assert!(evictions[0].body.contains("\"kind\":\"Eviction\""));
    assert!(
        h.api
            .list("v1", "pods")
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .all(|p| p["spec"]["nodeName"] != json!(node)),
        "nothing left on {node}"
    );
    h.tick_until("the evicted pod is replaced elsewhere", |h| {
        h.pods("gateway").iter().filter(|p| is_ready(p)).count() == 3 || h.pods("nats").len() == 2
    });
    // Heal by id at the planned end, then the final sweep.
    let failures = injected.heal_due(|_| true);
    assert!(failures.is_empty(), "{failures:?}");
    assert!(h.unschedulable().is_empty());
    h.assert_healed(&mut injected);
}

#[test]
fn nats_failure_asks_jsz_and_isolates_a_majority_leader_first() {
    let h = Harness::new();
    let spec = cluster_spec("nats-failure", h.nats.port);
    let target = h.target(&spec, "quorum");
    let (_, mut injected) = plan_and_inject(&target, &spec);
    let record = &injected.faults()[0];
    assert_eq!(
        record.affected,
        vec!["nats-1 (nats/nats-1 on b2)", "nats-0 (nats/nats-0 on a2)"],
        "the leader first, then a peer"
    );
    let faults = h.faults();
    assert_eq!(faults.len(), 1);
    assert_bookkeeping(&faults[0], "quorum", Duration::from_secs(20));
    let sides = &faults[0].spec.partition.as_ref().expect("partition").sides;
    for lone in ["a2", "b2"] {
        let side = sides
            .iter()
            .find(|s| s.name == lone)
            .expect("a side per loner");
        assert_eq!(side.nodes, vec![lone]);
        assert_eq!(
            side.cannot_reach.as_ref().map(Vec::len),
            Some(5),
            "{lone} alone"
        );
    }
    h.assert_healed(&mut injected);

    // Pause and stop: one Fault per chosen pod, for its node's agent.
    for (mode, kind) in [("pause", FaultKind::Pause), ("stop", FaultKind::Stop)] {
        let mut spec = spec.clone();
        spec.faults[0].mode = Some(mode.parse().expect("mode"));
        let target = h.target(&spec, &format!("quorum-{mode}"));
        let (_, mut injected) = plan_and_inject(&target, &spec);
        let pods: Vec<(String, String, FaultKind)> = h
            .faults()
            .iter()
            .map(|f| {
                let pod = f.spec.pod.clone().expect("pod");
                (pod.name, pod.node_name, f.spec.action)
            })
            .collect();
        assert_eq!(
            pods,
            vec![
                ("nats-1".into(), "b2".into(), kind),
                ("nats-0".into(), "a2".into(), kind)
            ],
            "{mode}"
        );
        h.assert_healed(&mut injected);
    }
}

#[test]
fn pod_faults_for_the_agents_pause_crash_and_a_zones_stopped_workloads() {
    let h = Harness::new();
    let mut spec = cluster_spec("pod-failure", h.nats.port);
    spec.kubernetes.as_mut().expect("section").kill_mode = PodKillMode::Crash;
    let mut pause = spec.faults[0].clone();
    pause.kind = faultline_experiments::spec::FaultKind::Pause;
    pause.duration = Duration::from_secs(10);
    spec.faults.push(pause);
    spec.validate("pods").expect("valid");
    let target = h.target(&spec, "pods");
    let (_, mut injected) = plan_and_inject(&target, &spec);
    let mut kinds: Vec<FaultKind> = h.faults().iter().map(|f| f.spec.action).collect();
    kinds.sort_by_key(|k| k.as_str());
    assert_eq!(kinds, vec![FaultKind::Kill, FaultKind::Pause]);
    for fault in h.faults() {
        let pod = fault.spec.pod.expect("pod");
        let live = h
            .api
            .get("v1", "pods", Some("shop"), &pod.name)
            .expect("pod exists");
        assert_eq!(live["metadata"]["uid"], json!(pod.uid), "pinned by uid");
        assert_eq!(live["spec"]["nodeName"], json!(pod.node_name));
    }
    assert_eq!(h.pods("gateway").len(), 3, "crash mode deletes nothing");
    h.assert_healed(&mut injected);

    let mut spec = cluster_spec("az-failure", h.nats.port);
    spec.faults[0].selector.zone = Some("b".into());
    spec.faults[0].stop_services = true;
    spec.validate("stop").expect("valid");
    let target = h.target(&spec, "stop");
    let (_, mut injected) = plan_and_inject(&target, &spec);
    let mut stopped: Vec<String> = h
        .faults()
        .iter()
        .filter(|f| f.spec.action == FaultKind::Stop)
        .map(|f| f.spec.pod.clone().expect("pod").name)
        .collect();
    stopped.sort();
    assert_eq!(
        stopped,
        vec!["gw-b", "nats-1"],
        "every selected pod in zone b"
    );
    assert_eq!(
        injected.faults()[0].fault_ids.len(),
        3,
        "partition and two stops"
    );
    h.assert_healed(&mut injected);
}

fn refusal(target: &ClusterTarget, spec: &ExperimentSpec) -> String {
    match plan(target, spec, 7) {
        Ok(planned) => panic!("expected a refusal, got {planned:?}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn blast_radius_protected_namespaces_are_refused_unless_overridden() {
    let h = Harness::new();
    h.api.put(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "dns-1", "namespace": "kube-system", "labels": {"app": "dns"}},
        "spec": {"nodeName": "a1"}, "status": {"phase": "Running"}}));
    let mut spec = cluster_spec("pod-failure", h.nats.port);
    let kube = spec.kubernetes.as_mut().expect("section");
    kube.workloads[0].namespace = "kube-system".into();
    kube.workloads[0].selector = BTreeMap::from([("app".into(), "dns".into())]);
    let target = h.target(&spec, "protected");
    let error = refusal(&target, &spec);
    assert!(
        error.contains("faults[0] exceeds the blast radius")
            && error.contains("protected namespace kube-system")
            && error.contains("allow_protected_namespaces"),
        "{error}"
    );
    spec.kubernetes
        .as_mut()
        .expect("s")
        .overrides
        .allow_protected_namespaces = true;
    let target = h.target(&spec, "protected-ok");
    plan(&target, &spec, 7).expect("overridden");
    assert!(
        h.faults().is_empty() && h.unschedulable().is_empty(),
        "nothing touched"
    );
}

#[test]
fn blast_radius_drains_beyond_one_node_or_a_zone_share_are_refused_unless_overridden() {
    let h = Harness::new();
    let mut spec = cluster_spec("node-failure", h.nats.port);
    let mut second = spec.faults[0].clone();
    second.selector.node = Some("b1".into());
    spec.faults[0].selector.node = Some("a1".into());
    second.start = Duration::from_secs(10);
    spec.faults.push(second);
    let target = h.target(&spec, "twodrains");
    let error = refusal(&target, &spec);
    assert!(
        error.contains("2 nodes would be drained at once"),
        "{error}"
    );
    // Not overlapping: allowed.
    let mut apart = spec.clone();
    apart.faults[1].start = Duration::from_secs(40);
    apart.duration = Duration::from_secs(200);
    apart.validate("apart").expect("valid");
    plan(&h.target(&apart, "apart"), &apart, 7).expect("one at a time");
    spec.kubernetes
        .as_mut()
        .expect("s")
        .overrides
        .allow_multi_node_drain = true;
    plan(&h.target(&spec, "twodrains-ok"), &spec, 7).expect("overridden");

    let mut share = cluster_spec("node-failure", h.nats.port);
    share.faults[0].selector.node = Some("a1".into());
    share
        .kubernetes
        .as_mut()
        .expect("s")
        .max_drain_zone_fraction = Some(0.4);
    let error = refusal(&h.target(&share, "share"), &share);
    assert!(
        error.contains("1 of the 2 nodes of zone a") && error.contains("40%"),
        "{error}"
    );
    share
        .kubernetes
        .as_mut()
        .expect("s")
        .overrides
        .allow_multi_node_drain = true;
    plan(&h.target(&share, "share-ok"), &share, 7).expect("overridden");
    assert!(h.unschedulable().is_empty(), "planning cordons nothing");
}

#[test]
fn blast_radius_partitioning_every_zone_is_refused_unless_overridden() {
    let h = Harness::new();
    // One zone in scope: cutting a node off leaves no zone whole.
    let mut spec = cluster_spec("az-failure", h.nats.port);
    spec.faults[0].selector.zone = None;
    spec.faults[0].selector.node = Some("a1".into());
    let kube = spec.kubernetes.as_mut().expect("s");
    kube.nodes.zones = vec!["a".into()];
    kube.workloads.clear();
    kube.nats = None;
    spec.validate("one-zone").expect("valid");
    let error = refusal(&h.target(&spec, "everyzone"), &spec);
    assert!(
        error.contains("partitions every zone (a)") && error.contains("allow_all_zones"),
        "{error}"
    );
    spec.blast_radius.allow_all_zones = true;
    plan(&h.target(&spec, "everyzone-ok"), &spec, 7).expect("overridden");

    // Three zones: halves over nodes of every zone is caught by the engine's own check.
    let mut spec = cluster_spec("gateway-failure", h.nats.port);
    spec.blast_radius.allow_all_zones = false;
    let error = refusal(&h.target(&spec, "allzones"), &spec);
    assert!(
        error.contains("touches every zone at once (a, b, c)"),
        "{error}"
    );
}

#[test]
fn selectors_that_match_nothing_are_refused() {
    let h = Harness::new();
    let mut spec = cluster_spec("pod-failure", h.nats.port);
    spec.kubernetes.as_mut().expect("s").workloads[0].selector =
        BTreeMap::from([("app".into(), "nothing".into())]);
    let error = refusal(&h.target(&spec, "nothing"), &spec);
    assert!(
        error.contains("kubernetes.workloads `gateway` (namespace shop, selector app=nothing) matches no scheduled pod"),
        "{error}"
    );
    let mut spec = cluster_spec("az-failure", h.nats.port);
    spec.kubernetes.as_mut().expect("s").nodes.zones = vec!["z".into()];
    spec.faults[0].selector.zone = Some("z".into());
    let error = refusal(&h.target(&spec, "nozone"), &spec);
    assert!(
        error.contains("no node matches kubernetes.nodes (zones z)"),
        "{error}"
    );
    let mut spec = cluster_spec("az-failure", h.nats.port);
    spec.faults[0].selector.zone = Some("q".into());
    let error = refusal(&h.target(&spec, "unknownzone"), &spec);
    assert!(
        error.contains("faults[0].selector.zone") && error.contains("known: a, b, c"),
        "{error}"
    );
    assert!(matches!(
        plan(&h.target(&spec, "x"), &spec, 7),
        Err(EngineError::Selector { .. })
    ));
}

#[test]
fn blast_radius_a_quorum_loss_that_would_isolate_every_zone_is_refused_at_injection() {
    let h = Harness::new();
    // Every NATS pod in zone a, the only zone in scope: isolating the leader and a peer (a1,
    // a2) leaves no zone whole. The plan cannot know the peers; the injection refuses.
    for (name, node) in [("nats-1", "a1"), ("nats-2", "a1")] {
        let mut pod = h.api.get("v1", "pods", Some("nats"), name).expect("pod");
        pod["spec"]["nodeName"] = json!(node);
        h.api.put(pod);
    }
    let mut spec = cluster_spec("nats-failure", h.nats.port);
    spec.kubernetes.as_mut().expect("s").nodes.zones = vec!["a".into()];
    spec.validate("one-zone").expect("valid");
    let target = h.target(&spec, "qzone");
    let planned = plan(&target, &spec, 7).expect("the plan cannot see the peers yet");
    let mut injected = Injected::new(&target, Duration::from_secs(600), &run_clock);
    let error = injected
        .inject(0, &planned[0])
        .expect_err("refused")
        .to_string();
    assert!(
        error.contains("isolating the NATS peers' nodes (a1, a2) would partition every zone"),
        "{error}"
    );
    assert!(h.faults().is_empty(), "nothing created");
    drop(injected);
    spec.blast_radius.allow_all_zones = true;
    let target = h.target(&spec, "qzone-ok");
    let (_, mut injected) = plan_and_inject(&target, &spec);
    assert_eq!(h.faults().len(), 1, "overridden");
    h.assert_healed(&mut injected);
}
