//! The node agent's logic against the in-memory API server (real REST paths, watches, SSA,
//! finalizers) with recording seams below the API: watch, ledger, deadlines without the API
//! server, revert on delete (also while the agent was down), a crash mid-inject, two Faults on
//! one node, halt, pod faults, guards, status and the finalizer. The real kernel side is tested
//! in `agent_real.rs` and `injectors/tests/`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use faultline_daemon::agent::node::TableProcesses;
use faultline_daemon::agent::{AgentConfig, Core, NodeAgent, Privileged};
use faultline_experiments::kubernetes::memory_api::MemoryApi;
use faultline_injectors::net_partition::{PartitionRule, RecordingRuleTable, RuleTable};
use faultline_injectors::process::{ProcessTarget, RecordingSignaller, Signaller};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

const FAULTS: &str = "faultline.dev/v1alpha1";

/// Lets the test keep a handle on a seam the agent owns.
struct Shared<T>(Arc<T>);

impl RuleTable for Shared<RecordingRuleTable> {
    fn add(
        &self,
        rules: &[PartitionRule],
        deadline_unix_ms: u64,
    ) -> faultline_injectors::Result<()> {
        self.0.add(rules, deadline_unix_ms)
    }
    fn delete(&self, rules: &[PartitionRule]) -> faultline_injectors::Result<()> {
        self.0.delete(rules)
    }
    fn list_ours(&self, netns: &str) -> faultline_injectors::Result<Vec<PartitionRule>> {
        self.0.list_ours(netns)
    }
}

impl Signaller for Shared<RecordingSignaller> {
    fn signal(&self, target: &ProcessTarget, signal: Signal) -> faultline_injectors::Result<bool> {
        self.0.signal(target, signal)
    }
    fn is_stopped(&self, target: &ProcessTarget) -> bool {
        self.0.is_stopped(target)
    }
}

impl faultline_daemon::agent::node::NodeProcesses for Shared<TableProcesses> {
    fn pod_processes(&self, pod_uid: &str) -> Vec<ProcessTarget> {
        self.0.pod_processes(pod_uid)
    }
    fn all_pod_processes(&self) -> Vec<ProcessTarget> {
        self.0.all_pod_processes()
    }
    fn refresh_namespaces(&self) -> Vec<String> {
        self.0.refresh_namespaces()
    }
}

/// One node's agent with recording seams, on its own state directory.
struct TestNode {
    name: String,
    state: tempfile::TempDir,
    rules: Arc<RecordingRuleTable>,
    signals: Arc<RecordingSignaller>,
    processes: Arc<TableProcesses>,
}

/// A running agent; dropping it without [`Running::stop`] is a crash (no heal).
struct Running {
    stop: Arc<AtomicBool>,
    safety_stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// A SIGTERM: the agent heals its node and exits.
    async fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.task.await;
        self.safety_stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// A SIGKILL: everything stops where it is.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
        self.safety_stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl TestNode {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            state: tempfile::tempdir().expect("tempdir"),
            rules: Arc::default(),
            signals: Arc::default(),
            processes: Arc::default(),
        }
    }

    fn config(&self) -> AgentConfig {
        AgentConfig {
            node_name: self.name.clone(),
            pod_uid: "agent-uid".into(),
            pod_namespace: "faultline-system".into(),
            state_dir: self.state.path().to_path_buf(),
            tick: Duration::from_millis(100),
            max_fault_duration: Duration::from_secs(7200),
            api_timeout: Duration::from_secs(2),
            exempt_cidrs: Vec::new(),
        }
    }

    fn core(&self) -> Core {
        Core::open(
            self.config(),
            Privileged {
                rules: Box::new(Shared(Arc::clone(&self.rules))),
                signals: Box::new(Shared(Arc::clone(&self.signals))),
                processes: Box::new(Shared(Arc::clone(&self.processes))),
            },
        )
        .expect("open core")
    }

    fn start(&self, api: &MemoryApi) -> Running {
        let core = self.core();
        core.safety_pass(faultline_injectors::ledger::now_unix_ms());
        let agent = Arc::new(NodeAgent::new(core, api.client()));
        let stop = Arc::new(AtomicBool::new(false));
        let safety_stop = Arc::new(AtomicBool::new(false));
        agent.spawn_safety_loop(Arc::clone(&safety_stop));
        let task = {
            let agent = Arc::clone(&agent);
            let stop = Arc::clone(&stop);
            tokio::spawn(async move { agent.run(stop).await })
        };
        Running {
            stop,
            safety_stop,
            task,
        }
    }

    fn rules(&self) -> Vec<String> {
        self.rules
            .installed()
            .iter()
            .map(|r| {
                format!(
                    "{} {}/{} {}",
                    r.netns, r.destination, r.prefix_len, r.priority
                )
            })
            .collect()
    }
}

fn rfc3339_in(from_now: Duration) -> String {
    humantime::format_rfc3339_millis(SystemTime::now() + from_now).to_string()
}

fn cluster() -> MemoryApi {
    let api = MemoryApi::new();
    for (node, zone, address, cidr) in [
        ("n-a1", "a", "192.168.1.10", "10.244.1.0/24"),
        ("n-b1", "b", "192.168.2.10", "10.244.2.0/24"),
        ("n-c1", "c", "192.168.3.10", "10.244.3.0/24"),
    ] {
        api.put(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node, "labels": {"topology.kubernetes.io/zone": zone}},
            "spec": {"podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": address}]},
        }));
    }
    api.put(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["192.168.3.10"]}],
    }));
    api
}

fn zone_a_partition(name: &str, slot: u32, deadline: &str) -> Value {
    json!({
        "apiVersion": FAULTS, "kind": "Fault",
        "metadata": {"name": name, "finalizers": ["faultline.dev/node-agents"]},
        "spec": {
            "action": "partition",
            "partition": {"sides": [
                {"name": "a", "nodes": ["n-a1"], "nodeAddresses": ["192.168.1.10"], "podCIDRs": ["10.244.1.0/24"]},
                {"name": "rest", "nodes": ["n-b1", "n-c1"], "nodeAddresses": ["192.168.2.10", "192.168.3.10"],
                 "podCIDRs": ["10.244.2.0/24", "10.244.3.0/24"]},
            ]},
            "deadline": deadline,
            "prioritySlot": slot,
            "experiment": "chaos/az-failure",
            "createdBy": "agent-logic-test",
        },
    })
}

async fn create(api: &MemoryApi, object: Value) {
    let client = api.client();
    let request = http::Request::post("/apis/faultline.dev/v1alpha1/faults")
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&object).expect("json"))
        .expect("request");
    let _: Value = client.request(request).await.expect("create");
}

async fn delete(api: &MemoryApi, path: &str) {
    let request = http::Request::delete(path)
        .body(Vec::new())
        .expect("request");
    let _: Value = api.client().request(request).await.expect("delete");
}

/// Polls `check` until it holds or `within` passes; returns how long it took.
async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn node_status(api: &MemoryApi, fault: &str, node: &str) -> Value {
    api.get(FAULTS, "faults", None, fault)
        .map_or(Value::Null, |f| f["status"]["nodes"][node].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_is_applied_reported_and_healed_at_the_deadline() {
    let api = cluster();
    let a1 = TestNode::new("n-a1");
    let b1 = TestNode::new("n-b1");
    let running = [a1.start(&api), b1.start(&api)];
    create(
        &api,
        zone_a_partition("cut-a", 3, &rfc3339_in(Duration::from_secs(3))),
    )
    .await;

    eventually("rules on both nodes", Duration::from_secs(20), || {
        !a1.rules().is_empty() && !b1.rules().is_empty()
    })
    .await;
    // a1 cuts the rest but keeps the API server (192.168.3.10) reachable.
    assert_eq!(
        a1.rules(),
        vec![
            "node 10.244.2.0/24 24003",
            "node 10.244.3.0/24 24003",
            "node 192.168.2.10/32 24003"
        ]
    );
    assert_eq!(
        b1.rules(),
        vec!["node 10.244.1.0/24 24003", "node 192.168.1.10/32 24003"]
    );
    eventually(
        "both nodes report appliedAt",
        Duration::from_secs(5),
        || {
            ["n-a1", "n-b1"]
                .iter()
                .all(|n| node_status(&api, "cut-a", n)["appliedAt"].is_string())
        },
    )
    .await;
    assert_eq!(node_status(&api, "cut-a", "n-a1")["rules"], 3);

    eventually("healed at the deadline", Duration::from_secs(20), || {
        a1.rules().is_empty() && b1.rules().is_empty()
    })
    .await;
    eventually(
        "revertedAt with reason deadline",
        Duration::from_secs(3),
        || {
            node_status(&api, "cut-a", "n-a1")["reason"] == "deadline"
                && node_status(&api, "cut-a", "n-b1")["revertedAt"].is_string()
        },
    )
    .await;
    // Each agent wrote only its own key, under its own field manager.
    let managers: Vec<String> = api
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.uri.contains("/faults/cut-a/status"))
        .map(|r| r.uri.clone())
        .collect();
    assert!(managers
        .iter()
        .any(|u| u.contains("fieldManager=faultline-agent-n-a1")));
    assert!(managers
        .iter()
        .any(|u| u.contains("fieldManager=faultline-agent-n-b1")));
    for running in running {
        running.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_heals_while_the_api_server_is_unreachable_and_status_follows_later() {
    let api = cluster();
    let a1 = TestNode::new("n-a1");
    let running = a1.start(&api);
    create(
        &api,
        zone_a_partition("cut-a", 0, &rfc3339_in(Duration::from_secs(2))),
    )
    .await;
    eventually("rules installed", Duration::from_secs(20), || {
        !a1.rules().is_empty()
    })
    .await;
    eventually("appliedAt reported", Duration::from_secs(20), || {
        node_status(&api, "cut-a", "n-a1")["appliedAt"].is_string()
    })
    .await;

    api.set_reachable(false);
    eventually(
        "healed without the API server",
        Duration::from_secs(5),
        || a1.rules().is_empty(),
    )
    .await;
    assert!(
        node_status(&api, "cut-a", "n-a1")["revertedAt"].is_null(),
        "nothing can be reported while unreachable"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    api.set_reachable(true);
    eventually(
        "revertedAt reported once reachable",
        Duration::from_secs(10),
        || node_status(&api, "cut-a", "n-a1")["reason"] == "deadline",
    )
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_deleted_while_the_agent_was_down_is_healed_at_its_next_start() {
    let api = cluster();
    let a1 = TestNode::new("n-a1");
    let running = a1.start(&api);
    create(
        &api,
        zone_a_partition("cut-a", 1, &rfc3339_in(Duration::from_secs(120))),
    )
    .await;
    eventually("rules installed", Duration::from_secs(20), || {
        !a1.rules().is_empty()
    })
    .await;
    eventually("appliedAt reported", Duration::from_secs(20), || {
        node_status(&api, "cut-a", "n-a1")["appliedAt"].is_string()
    })
    .await;
    running.kill().await;

    delete(&api, "/apis/faultline.dev/v1alpha1/faults/cut-a").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!a1.rules().is_empty(), "nobody was there to heal");
    assert!(
        api.get(FAULTS, "faults", None, "cut-a").is_some(),
        "the finalizer holds the Fault while n-a1 has not reverted"
    );

    let running = a1.start(&api);
    eventually("healed at restart", Duration::from_secs(20), || {
        a1.rules().is_empty()
    })
    .await;
    eventually(
        "finalizer released, Fault gone",
        Duration::from_secs(5),
        || api.get(FAULTS, "faults", None, "cut-a").is_none(),
    )
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_inject_is_finished_at_restart_without_applying_twice() {
    use faultline_injectors::fault::FaultAction;
    use faultline_injectors::ledger::{FaultRecord, Ledger};

    let api = cluster();
    let a1 = TestNode::new("n-a1");
    let deadline = rfc3339_in(Duration::from_secs(60));
    create(&api, zone_a_partition("cut-a", 2, &deadline)).await;
    let uid = api.get(FAULTS, "faults", None, "cut-a").expect("fault")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_owned();

    // What a SIGKILL between the ledger write and the last netlink message leaves: the journal
    // knows the Fault, the record is written, one of three rules is in the kernel.
    let full =
        [("10.244.2.0", 24), ("10.244.3.0", 24), ("192.168.2.10", 32)].map(|(address, len)| {
            PartitionRule {
                netns: "node".into(),
                destination: address.parse().expect("address"),
                prefix_len: len,
                priority: 24_002,
            }
        });
    let ledger = Ledger::new(a1.config().ledger_dir());
    let lock = ledger.lock().expect("lock");
    let now = faultline_injectors::ledger::now_unix_ms();
    ledger
        .write(
            &lock,
            &FaultRecord {
                id: "crashed-1".into(),
                action: FaultAction::Partition {
                    slot: 2,
                    sides: vec![vec!["n-a1".into()], vec!["n-b1".into(), "n-c1".into()]],
                    rules: full.to_vec(),
                },
                target: format!("fault/cut-a/{uid} partition of 3 rules"),
                created_unix_ms: now,
                deadline_unix_ms: now + 60_000,
                applied_unix_ms: None,
            },
        )
        .expect("write");
    drop(lock);
    a1.rules.add(&full[..1], now + 60_000).expect("one rule");
    {
        let mut journal = faultline_daemon::agent::journal::Journal::open(
            a1.state.path().join("agent-journal.json"),
        )
        .expect("journal");
        journal
            .update(&uid, |e| {
                e.name = "cut-a".into();
                e.deadline_unix_ms = now + 60_000;
            })
            .expect("journal");
    }

    let running = a1.start(&api);
    eventually("all three rules in place", Duration::from_secs(20), || {
        a1.rules().len() == 3
    })
    .await;
    eventually("appliedAt reported", Duration::from_secs(20), || {
        node_status(&api, "cut-a", "n-a1")["appliedAt"].is_string()
    })
    .await;
    let (records, _) = ledger.list().expect("list");
    assert_eq!(
        records.len(),
        1,
        "the crashed record was finished, not doubled"
    );
    assert_eq!(records[0].id, "crashed-1");
    running.stop().await;
    assert!(a1.rules().is_empty(), "a stopping agent heals its node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_faults_share_a_node_and_a_taken_slot_is_refused() {
    let api = cluster();
    let a1 = TestNode::new("n-a1");
    let running = a1.start(&api);
    let later = rfc3339_in(Duration::from_secs(120));
    create(&api, zone_a_partition("first", 4, &later)).await;
    let mut second = zone_a_partition("second", 5, &later);
    second["spec"]["partition"]["sides"][1]["podCIDRs"] = json!(["10.244.9.0/24"]);
    second["spec"]["partition"]["sides"][1]["nodeAddresses"] = json!([]);
    create(&api, second).await;
    eventually("both faults applied", Duration::from_secs(20), || {
        a1.rules().len() == 4
    })
    .await;
    create(&api, zone_a_partition("clash", 4, &later)).await;

    eventually(
        "the clash is refused in its status",
        Duration::from_secs(5),
        || {
            node_status(&api, "clash", "n-a1")["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("slot 4 is already used"))
        },
    )
    .await;

    delete(&api, "/apis/faultline.dev/v1alpha1/faults/first").await;
    eventually(
        "only the first fault's rules go",
        Duration::from_secs(5),
        || a1.rules() == vec!["node 10.244.9.0/24 24005"],
    )
    .await;
    eventually(
        "the deleted fault is released",
        Duration::from_secs(5),
        || api.get(FAULTS, "faults", None, "first").is_none(),
    )
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halt_reverts_everything_at_once_and_blocks_new_faults_until_it_is_gone() {
    let api = cluster();
    let a1 = TestNode::new("n-a1");
    let running = a1.start(&api);
    let later = rfc3339_in(Duration::from_secs(120));
    for (index, name) in ["h1", "h2", "h3"].iter().enumerate() {
        let mut fault = zone_a_partition(name, index as u32, &later);
        fault["spec"]["partition"]["sides"][1]["podCIDRs"] =
            json!([format!("10.250.{index}.0/24")]);
        fault["spec"]["partition"]["sides"][1]["nodeAddresses"] = json!([]);
        create(&api, fault).await;
    }
    eventually("three faults applied", Duration::from_secs(20), || {
        a1.rules().len() == 3
    })
    .await;

    let request = http::Request::post("/apis/faultline.dev/v1alpha1/halts")
        .header("content-type", "application/json")
        .body(
            serde_json::to_vec(&json!({
                "apiVersion": FAULTS, "kind": "Halt",
                "metadata": {"name": "halt"}, "spec": {"reason": "game day over"},
            }))
            .expect("json"),
        )
        .expect("request");
    let _: Value = api.client().request(request).await.expect("halt");
    let took = eventually("halt reverts every fault", Duration::from_secs(5), || {
        a1.rules().is_empty()
    })
    .await;
    eprintln!("halt reverted 3 faults in {took:?}");

    create(&api, zone_a_partition("while-halted", 9, &later)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(a1.rules().is_empty(), "nothing is applied while halted");
    eventually("halted faults say so", Duration::from_secs(20), || {
        node_status(&api, "h1", "n-a1")["reason"] == "halted"
    })
    .await;

    delete(&api, "/apis/faultline.dev/v1alpha1/halts/halt").await;
    eventually(
        "a new fault applies after resume",
        Duration::from_secs(5),
        || a1.rules().len() == 3,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        a1.rules().iter().all(|r| r.ends_with(" 24009")),
        "halted faults stay reverted after resume: {:?}",
        a1.rules()
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_pause_stops_every_process_until_the_deadline_and_guards_refuse_system_pods() {
    let api = cluster();
    let b1 = TestNode::new("n-b1");
    let processes: Vec<ProcessTarget> = (0..3)
        .map(|i| ProcessTarget {
            pid: 4000 + i,
            start_ticks: 77,
            label: format!("cart-0 container {i}"),
        })
        .collect();
    b1.processes.set_pod("u-cart", processes.clone());
    b1.processes.set_pod("u-dns", vec![]);
    let running = b1.start(&api);
    let pod_fault = |name: &str, namespace: &str, pod: &str, uid: &str| {
        json!({
            "apiVersion": FAULTS, "kind": "Fault",
            "metadata": {"name": name, "finalizers": ["faultline.dev/node-agents"]},
            "spec": {
                "action": "pause",
                "pod": {"namespace": namespace, "name": pod, "uid": uid, "nodeName": "n-b1"},
                "deadline": rfc3339_in(Duration::from_secs(2)),
                "createdBy": "agent-logic-test",
            },
        })
    };
    create(&api, pod_fault("pause-cart", "shop", "cart-0", "u-cart")).await;
    create(
        &api,
        pod_fault("pause-dns", "kube-system", "coredns-1", "u-dns"),
    )
    .await;

    eventually(
        "every process of the pod stopped",
        Duration::from_secs(5),
        || processes.iter().all(|p| b1.signals.is_stopped(p)),
    )
    .await;
    eventually(
        "the kube-system pod is refused in its status",
        Duration::from_secs(5),
        || {
            node_status(&api, "pause-dns", "n-b1")["lastError"]
                .as_str()
                .is_some_and(|e| e.contains("allowSystemPods"))
        },
    )
    .await;
    assert_eq!(node_status(&api, "pause-dns", "n-b1")["reason"], "refused");
    eventually("continued at the deadline", Duration::from_secs(20), || {
        processes.iter().all(|p| !b1.signals.is_stopped(p))
    })
    .await;
    assert_eq!(node_status(&api, "pause-cart", "n-b1")["processes"], 3);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_finalizer_waits_for_every_node_that_applied_unless_the_node_left() {
    let api = cluster();
    let a1 = TestNode::new("n-a1");
    let b1 = TestNode::new("n-b1");
    let run_a = a1.start(&api);
    let run_b = b1.start(&api);
    create(
        &api,
        zone_a_partition("cut-a", 6, &rfc3339_in(Duration::from_secs(120))),
    )
    .await;
    eventually("both applied and reported", Duration::from_secs(20), || {
        ["n-a1", "n-b1"]
            .iter()
            .all(|n| node_status(&api, "cut-a", n)["appliedAt"].is_string())
    })
    .await;
    // n-b1 crashes and never comes back; its Node is then removed from the cluster.
    run_b.kill().await;
    delete(&api, "/apis/faultline.dev/v1alpha1/faults/cut-a").await;
    eventually("n-a1 reverts", Duration::from_secs(20), || {
        a1.rules().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        api.get(FAULTS, "faults", None, "cut-a").is_some(),
        "n-b1 applied and has not reverted: the Fault stays"
    );
    api.remove("v1", "nodes", None, "n-b1");
    eventually(
        "released once n-b1 left the cluster",
        Duration::from_secs(5),
        || api.get(FAULTS, "faults", None, "cut-a").is_none(),
    )
    .await;
    run_a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_keeps_a_pod_down_until_the_deadline_and_kill_is_over_at_once() {
    let api = cluster();
    let b1 = TestNode::new("n-b1");
    let cart = ProcessTarget {
        pid: 5000,
        start_ticks: 9,
        label: "cart".into(),
    };
    let web = ProcessTarget {
        pid: 5100,
        start_ticks: 9,
        label: "web".into(),
    };
    b1.processes.set_pod("u-cart", vec![cart.clone()]);
    b1.processes.set_pod("u-web", vec![web.clone()]);
    let running = b1.start(&api);
    let pod_fault = |name: &str, action: &str, pod: &str, uid: &str, seconds: u64| {
        json!({
            "apiVersion": FAULTS, "kind": "Fault",
            "metadata": {"name": name},
            "spec": {
                "action": action,
                "pod": {"namespace": "shop", "name": pod, "uid": uid, "nodeName": "n-b1"},
                "deadline": rfc3339_in(Duration::from_secs(seconds)),
                "createdBy": "agent-logic-test",
            },
        })
    };
    let kills = |pid: i32| {
        b1.signals
            .sent()
            .iter()
            .filter(|(p, s)| *p == pid && *s == Signal::SIGKILL)
            .count()
    };
    create(&api, pod_fault("stop-cart", "stop", "cart-0", "u-cart", 2)).await;
    create(&api, pod_fault("kill-web", "kill", "web-0", "u-web", 60)).await;

    // A restarted container gets a new PID; the hold kills it too.
    eventually("the stopped pod is killed", Duration::from_secs(20), || {
        kills(5000) >= 1
    })
    .await;
    let restarted = ProcessTarget {
        pid: 5001,
        start_ticks: 10,
        label: "cart restarted".into(),
    };
    b1.processes.set_pod("u-cart", vec![restarted.clone()]);
    eventually(
        "the restarted container is killed as well",
        Duration::from_secs(5),
        || kills(5001) >= 1,
    )
    .await;
    eventually("kill is over at once", Duration::from_secs(20), || {
        node_status(&api, "kill-web", "n-b1")["reason"] == "instant"
    })
    .await;
    assert_eq!(kills(5100), 1, "a kill is sent once");

    eventually(
        "the hold ends at the deadline",
        Duration::from_secs(6),
        || node_status(&api, "stop-cart", "n-b1")["reason"] == "deadline",
    )
    .await;
    let after = kills(5001);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(kills(5001), after, "no more kills once released");
    running.stop().await;
}
