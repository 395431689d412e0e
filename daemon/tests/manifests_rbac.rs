//! The agent's RBAC in `manifests/` allows every request the real agent makes, and nothing is
//! granted that it never uses. The agent runs against the in-memory API server through a
//! Fault's whole life on two nodes (watch, pod-level partition planning with the API server's
//! endpoints, status by server-side apply, a deleted Fault whose other node is down, the
//! finalizer released once it comes back); each logged request is then authorized the way the
//! API server's RBAC authorizer would, against the ClusterRole and the Role as checked in.
//! A role with one rule removed is shown to be caught.

mod manifests_common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use faultline_daemon::agent::node::TableProcesses;
use faultline_daemon::agent::{AgentConfig, Core, NodeAgent, Privileged};
use faultline_experiments::kubernetes::memory_api::{LoggedRequest, MemoryApi};
use faultline_injectors::net_partition::{PartitionRule, RecordingRuleTable, RuleTable};
use faultline_injectors::process::RecordingSignaller;
use manifests_common::rbac::{allows, attributes, rules_of, Attributes, Rule};
use manifests_common::the_object;
use serde_json::json;

const FAULTS: &str = "faultline.dev/v1alpha1";
const AGENT_NAMESPACE: &str = "faultline-system";

/// The agent's rules, as bound to its ServiceAccount in `manifests/`.
fn agent_rules() -> Vec<Rule> {
    let mut rules = rules_of(&the_object("ClusterRole", "faultline-agent"));
    rules.extend(rules_of(&the_object(
        "Role",
        "faultline-agent-apiserver-endpoints",
    )));
    rules
}

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

/// One node's agent with recording seams below the API, on its own state directory.
struct TestNode {
    name: String,
    state: tempfile::TempDir,
    rules: Arc<RecordingRuleTable>,
}

/// A running agent: `stop` is a SIGTERM, `kill` a SIGKILL.
struct Running {
    stop: Arc<AtomicBool>,
    safety_stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.safety_stop.store(true, Ordering::Relaxed);
    }

    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
        self.safety_stop.store(true, Ordering::Relaxed);
    }
}

impl TestNode {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            state: tempfile::tempdir().expect("tempdir"),
            rules: Arc::default(),
        }
    }

    fn start(&self, api: &MemoryApi) -> Running {
        let core = Core::open(
            AgentConfig {
                node_name: self.name.clone(),
                pod_uid: "agent-uid".into(),
                pod_namespace: AGENT_NAMESPACE.into(),
                state_dir: self.state.path().to_path_buf(),
                tick: Duration::from_millis(100),
                max_fault_duration: Duration::from_secs(7200),
                api_timeout: Duration::from_secs(2),
                exempt_cidrs: Vec::new(),
            },
            Privileged {
                rules: Box::new(Shared(Arc::clone(&self.rules))),
                signals: Box::new(RecordingSignaller::default()),
                processes: Box::new(TableProcesses::default()),
            },
        )
        .expect("open core");
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
}

async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn cluster() -> MemoryApi {
    let api = MemoryApi::new();
    for (node, address, cidr) in [
        ("n-a1", "192.168.1.10", "10.244.1.0/24"),
        ("n-b1", "192.168.2.10", "10.244.2.0/24"),
    ] {
        api.put(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node},
            "spec": {"podCIDRs": [cidr]},
            "status": {"addresses": [{"type": "InternalIP", "address": address}]},
        }));
    }
    api.put(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["192.168.9.10"]}],
    }));
    api
}

fn node_status(api: &MemoryApi, node: &str) -> serde_json::Value {
    api.get(FAULTS, "faults", None, "cut-a")
        .map_or(serde_json::Value::Null, |fault| {
            fault["status"]["nodes"][node].clone()
        })
}

/// Every request the agents made during a Fault's whole life on two nodes.
async fn agent_requests() -> Vec<LoggedRequest> {
    let api = cluster();
    let steady_node = TestNode::new("n-a1");
    let crashing_node = TestNode::new("n-b1");
    let steady_agent = steady_node.start(&api);
    let crashing_agent = crashing_node.start(&api);
    let deadline = humantime::format_rfc3339_millis(SystemTime::now() + Duration::from_secs(60));
    // Created directly, not through the API, so the log holds only the agents' requests.
    api.put(json!({
        "apiVersion": FAULTS, "kind": "Fault",
        "metadata": {"name": "cut-a", "finalizers": ["faultline.dev/node-agents"]},
        "spec": {
            "action": "partition",
            "partition": {"mode": "both", "sides": [
                {"name": "a", "nodes": ["n-a1"], "nodeAddresses": ["192.168.1.10"], "podCIDRs": ["10.244.1.0/24"]},
                {"name": "b", "nodes": ["n-b1"], "nodeAddresses": ["192.168.2.10"], "podCIDRs": ["10.244.2.0/24"]},
            ]},
            "deadline": deadline.to_string(),
            "prioritySlot": 1,
            "experiment": "chaos/rbac",
            "createdBy": "manifests-rbac-test",
        },
    }));
    eventually(
        "both nodes report appliedAt",
        Duration::from_secs(10),
        || {
            ["n-a1", "n-b1"]
                .iter()
                .all(|node| node_status(&api, node)["appliedAt"].is_string())
        },
    )
    .await;

    // n-b1's agent dies holding the fault; the Fault is deleted (the API server only marks it,
    // because of the finalizer). n-a1 reverts and asks whether n-b1 is still a node.
    crashing_agent.kill().await;
    let mut fault = api.get(FAULTS, "faults", None, "cut-a").expect("fault");
    fault["metadata"]["deletionTimestamp"] =
        json!(humantime::format_rfc3339(SystemTime::now()).to_string());
    api.put(fault);
    eventually("n-a1 asks about n-b1", Duration::from_secs(10), || {
        api.requests()
            .iter()
            .any(|request| request.method == "GET" && request.uri.contains("/nodes/n-b1"))
    })
    .await;

    // n-b1's agent comes back, reverts, and the finalizer is released.
    let crashing_agent = crashing_node.start(&api);
    eventually("the finalizer is released", Duration::from_secs(10), || {
        api.get(FAULTS, "faults", None, "cut-a")
            .is_none_or(|fault| {
                fault["metadata"]["finalizers"]
                    .as_array()
                    .is_none_or(Vec::is_empty)
            })
    })
    .await;
    steady_agent.stop().await;
    crashing_agent.stop().await;
    api.requests()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_rbac_allows_every_request_the_agent_makes_and_grants_nothing_unused() {
    let requests = agent_requests().await;
    let rules = agent_rules();
    let seen: BTreeSet<Attributes> = requests.iter().map(attributes).collect();

    let denied: Vec<&Attributes> = seen
        .iter()
        .filter(|request| !rules.iter().any(|rule| allows(rule, request)))
        .collect();
    assert!(
        denied.is_empty(),
        "manifests/faultline-agent-rbac.yaml denies requests the agent makes: {denied:#?}"
    );

    // Every verb granted was used: least privilege, checked against the agent itself.
    let used: BTreeSet<(String, String, String)> = seen
        .iter()
        .map(|request| {
            (
                request.group.clone(),
                request.resource.clone(),
                request.verb.clone(),
            )
        })
        .collect();
    eprintln!("the agents' requests, as (group, resource, verb): {used:?}");
    let mut unused = Vec::new();
    for rule in &rules {
        for group in &rule.groups {
            for resource in &rule.resources {
                for verb in &rule.verbs {
                    let grant = (group.clone(), resource.clone(), verb.clone());
                    if !used.contains(&grant) {
                        unused.push(grant);
                    }
                }
            }
        }
    }
    assert!(
        unused.is_empty(),
        "granted but never used by the agent (remove them, or say in the rule's comment why \
         they are kept): {unused:?}\nused: {used:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_missing_a_rule_the_agent_needs_is_caught() {
    let requests = agent_requests().await;
    let rules: Vec<Rule> = agent_rules()
        .into_iter()
        .filter(|rule| !rule.resources.contains(&"faults/status".to_owned()))
        .collect();
    let denied: BTreeSet<Attributes> = requests
        .iter()
        .map(attributes)
        .filter(|request| !rules.iter().any(|rule| allows(rule, request)))
        .collect();
    assert!(
        !denied.is_empty()
            && denied
                .iter()
                .all(|request| request.resource == "faults/status" && request.verb == "patch"),
        "{denied:#?}"
    );
}

#[test]
fn request_attributes_follow_the_api_servers_reading_of_paths() {
    let request = |method: &str, uri: &str| LoggedRequest {
        method: method.into(),
        uri: uri.into(),
        content_type: None,
        body: String::new(),
    };
    let cases = [
        ("GET", "/api/v1/nodes/n-a1", "get", "", "nodes", None),
        (
            "GET",
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dn-a1",
            "list",
            "",
            "pods",
            None,
        ),
        (
            "GET",
            "/apis/faultline.dev/v1alpha1/faults?watch=true&resourceVersion=5",
            "watch",
            "faultline.dev",
            "faults",
            None,
        ),
        (
            "PATCH",
            "/apis/faultline.dev/v1alpha1/faults/cut-a/status?fieldManager=x",
            "patch",
            "faultline.dev",
            "faults/status",
            None,
        ),
        (
            "GET",
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=x",
            "list",
            "discovery.k8s.io",
            "endpointslices",
            Some("default"),
        ),
        (
            "DELETE",
            "/api/v1/namespaces/default/pods",
            "deletecollection",
            "",
            "pods",
            Some("default"),
        ),
    ];
    for (method, uri, verb, group, resource, namespace) in cases {
        let attributes = attributes(&request(method, uri));
        assert_eq!(
            (
                attributes.verb.as_str(),
                attributes.group.as_str(),
                attributes.resource.as_str(),
                attributes.namespace.as_deref()
            ),
            (verb, group, resource, namespace),
            "{method} {uri}"
        );
    }
}

/// The controller's rules, as bound to its ServiceAccount in `manifests/`.
fn controller_rules() -> Vec<Rule> {
    let mut rules = rules_of(&the_object("ClusterRole", "faultline-controller"));
    rules.extend(rules_of(&the_object("Role", "faultline-controller")));
    rules
}

/// Two controller replicas through a queue, an expired Fault, an orphaned cordon and a deleted
/// Experiment; every request they made.
async fn controller_requests() -> Vec<LoggedRequest> {
    use faultline_daemon::controller::{own_image, Controller, ControllerConfig};
    let api = MemoryApi::new();
    api.put(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "ctl-a", "namespace": AGENT_NAMESPACE},
        "spec": {"containers": [{"name": "controller", "image": "localhost/x:1"}]}}));
    let image = own_image(&api.client(), AGENT_NAMESPACE, "ctl-a")
        .await
        .expect("own image");
    let spec = {
        let mut spec = serde_json::to_value(
            faultline_experiments::spec::catalog::spec("pod-failure").expect("catalog"),
        )
        .expect("json");
        spec["target"] = json!("kubernetes");
        spec
    };
    for name in ["first", "second"] {
        api.put(json!({"apiVersion": FAULTS, "kind": "Experiment",
            "metadata": {"name": name, "namespace": "shop"}, "spec": spec}));
    }
    let past = humantime::format_rfc3339_seconds(SystemTime::now() - Duration::from_secs(5));
    api.put(
        json!({"apiVersion": FAULTS, "kind": "Fault", "metadata": {"name": "cut-old"},
        "spec": {"action": "partition", "partition": {"sides": []}, "deadline": past.to_string(),
            "experiment": "shop/first", "createdBy": "runner"}}),
    );
    api.put(json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "annotations": {"faultline.dev/cordoned-by": "gone"}},
        "spec": {"unschedulable": true}}));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for identity in ["ctl-a", "ctl-b"] {
        let mut config = ControllerConfig::new(AGENT_NAMESPACE, identity, Duration::from_secs(1));
        config.runner_image.clone_from(&image);
        tasks.push(tokio::spawn(
            Controller::new(api.client(), config).run(Arc::clone(&stop)),
        ));
    }
    let status = |name: &str| {
        api.get(FAULTS, "experiments", Some("shop"), name)
            .map(|e| e["status"]["phase"].clone())
            .unwrap_or_default()
    };
    eventually(
        "a runs, b waits, the fault and the cordon are gone",
        Duration::from_secs(20),
        || {
            status("first") == "Running"
                && status("second") == "Queued"
                && api.list(FAULTS, "faults").is_empty()
                && api.get("v1", "nodes", None, "n1").expect("node")["spec"]["unschedulable"]
                    != true
        },
    )
    .await;
    // A renewal (update) happens within a lease period.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(api.remove(FAULTS, "experiments", Some("shop"), "first"));
    eventually(
        "the runner of a deleted experiment is deleted",
        Duration::from_secs(20),
        || {
            api.list("batch/v1", "jobs").iter().all(|job| {
                job["metadata"]["annotations"]["faultline.dev/experiment"] != "shop/first"
            })
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        let _ = task.await;
    }
    api.requests()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_rbac_allows_every_request_the_controller_makes_and_grants_nothing_unused() {
    let requests = controller_requests().await;
    let rules = controller_rules();
    let seen: BTreeSet<Attributes> = requests.iter().map(attributes).collect();
    let denied: Vec<&Attributes> = seen
        .iter()
        .filter(|request| !rules.iter().any(|rule| allows(rule, request)))
        .collect();
    assert!(
        denied.is_empty(),
        "manifests/faultline-controller-rbac.yaml denies requests the controller makes: {denied:#?}"
    );
    let used: BTreeSet<(String, String, String)> = seen
        .iter()
        .map(|r| (r.group.clone(), r.resource.clone(), r.verb.clone()))
        .collect();
    let mut unused = Vec::new();
    for rule in &rules {
        for group in &rule.groups {
            for resource in &rule.resources {
                for verb in &rule.verbs {
                    let grant = (group.clone(), resource.clone(), verb.clone());
                    if !used.contains(&grant) {
                        unused.push(grant);
                    }
                }
            }
        }
    }
    assert!(
        unused.is_empty(),
        "granted to the controller but never used: {unused:?}\nused: {used:?}"
    );
}
