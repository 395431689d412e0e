//! The runner's API-level faults against the in-memory API server with its workload
//! controllers: a drain through the lifecycle (ledger first) that a PodDisruptionBudget holds up
//! until a replacement is Ready, a budget that never gives way, an operator's cordon that no
//! revert or reconcile touches, the controller's orphaned-cordon reconcile, a runner that dies
//! between cordon and eviction, and a pod delete with its time to ready.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use faultline_experiments::kubernetes::cordon::{
    cordon_node, reconcile_orphaned_cordons, uncordon_node, CordonOutcome, CordonOwner,
    DrainBudget, LiveFaults, OrphanReason, UncordonOutcome, CORDONED_BY_ANNOTATION,
    CORDON_DEADLINE_ANNOTATION,
};
use faultline_experiments::kubernetes::crd::Fault;
use faultline_experiments::kubernetes::drain::{DrainOptions, KubeNodeScheduler, SkipReason};
use faultline_experiments::kubernetes::memory_api::{MemoryApi, WorkloadControllers};
use faultline_experiments::kubernetes::pod_delete::{
    delete_pods, replacement_readiness, wait_for_replacements, Baseline, PodDeleteError,
    PodDeleteOptions,
};
use faultline_injectors::fault::{FaultAction, Injectors};
use faultline_injectors::ledger::{FaultRecord, Ledger};
use faultline_injectors::lifecycle::{
    reconcile, revert_fault, start_fault, FaultRequest, ReconcileScope, DEFAULT_MAX_FAULT_DURATION,
};
use faultline_injectors::net_partition::RecordingRuleTable;
use faultline_injectors::node_drain::NodeScheduler;
use faultline_injectors::process::RecordingSignaller;
use faultline_injectors::service_stop::RecordingHolder;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{json, Value};

const API_TIMEOUT: Duration = Duration::from_secs(5);

/// Three nodes in three zones; Deployment `web` (ReplicaSet `web-rs`) with w1 and w2 on n1 and
/// w3 on n2, all Ready; a PodDisruptionBudget `web-pdb` with `minAvailable: 2`; on n1 also a
/// DaemonSet pod and a mirror pod.
fn cluster() -> MemoryApi {
    let api = MemoryApi::new();
    api.enable_workload_controllers(WorkloadControllers {
        ready_delay: Duration::ZERO,
    });
    for (name, zone) in [("n1", "a"), ("n2", "b"), ("n3", "c")] {
        api.put(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
            "spec": {}}));
    }
    for (name, node) in [("w1", "n1"), ("w2", "n1"), ("w3", "n2")] {
        api.put(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "generateName": "web-rs-",
                "labels": {"app": "web"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web-rs", "uid": "rs-uid", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "web", "image": "web:1"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}));
    }
    api.put(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "agent-n1", "namespace": "kube-system",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                "name": "node-agent", "uid": "ds-uid", "controller": true}]},
        "spec": {"nodeName": "n1", "containers": [{"name": "a", "image": "a:1"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}));
    api.put(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "etcd-n1", "namespace": "kube-system",
            "annotations": {"kubernetes.io/config.mirror": "a1b2"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": "n1",
                "uid": "n1-uid", "controller": true}]},
        "spec": {"nodeName": "n1", "containers": [{"name": "etcd", "image": "etcd:3"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}));
    api.put(
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "web-pdb", "namespace": "shop"},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}}),
    );
    api
}

fn node(api: &MemoryApi, name: &str) -> Value {
    api.get("v1", "nodes", None, name).expect("node exists")
}

fn unschedulable(api: &MemoryApi, name: &str) -> bool {
    node(api, name)["spec"]["unschedulable"].as_bool() == Some(true)
}

fn cordoned_by(api: &MemoryApi, name: &str) -> Option<String> {
    node(api, name)["metadata"]["annotations"][CORDONED_BY_ANNOTATION]
        .as_str()
        .map(str::to_owned)
}

fn pod(api: &MemoryApi, namespace: &str, name: &str) -> Option<Value> {
    api.get("v1", "pods", Some(namespace), name)
}

fn web_pods(api: &MemoryApi) -> Vec<Value> {
    api.list("v1", "pods")
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app"] == "web")
        .collect()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

fn fast_options() -> DrainOptions {
    DrainOptions {
        eviction_timeout: Duration::from_secs(20),
        first_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        api_timeout: API_TIMEOUT,
        ..DrainOptions::default()
    }
}

/// The runner's side of a drain: its ledger, its recording seams for what a drain does not
/// use, and the Kubernetes scheduler.
struct Runner {
    _dir: tempfile::TempDir,
    ledger: Ledger,
    scheduler: KubeNodeScheduler,
    rules: RecordingRuleTable,
    signals: RecordingSignaller,
    holder: RecordingHolder,
}

impl Runner {
    fn new(api: &MemoryApi, fault_id: &str, options: DrainOptions) -> Arc<Self> {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::new(dir.path().join("ledger"));
        Arc::new(Self {
            _dir: dir,
            ledger,
            scheduler: KubeNodeScheduler::new(
                api.client(),
                tokio::runtime::Handle::current(),
                CordonOwner {
                    fault_id: fault_id.into(),
                    deadline: SystemTime::now() + Duration::from_secs(600),
                },
                options,
            ),
            rules: RecordingRuleTable::default(),
            signals: RecordingSignaller::default(),
            holder: RecordingHolder::default(),
        })
    }

    fn env(&self) -> Injectors<'_> {
        Injectors {
            rules: &self.rules,
            signals: &self.signals,
            scheduler: &self.scheduler,
            holder: &self.holder,
        }
    }

    /// `start_fault` for a drain of `node`, on a blocking thread as the seam requires.
    async fn drain(self: &Arc<Self>, node: &str) -> faultline_injectors::Result<FaultRecord> {
        let runner = Arc::clone(self);
        let node = node.to_owned();
        tokio::task::spawn_blocking(move || {
            start_fault(
                &runner.ledger,
                &runner.env(),
                FaultRequest {
                    target: format!("node {node}"),
                    duration: Duration::from_secs(600),
                    max_duration: DEFAULT_MAX_FAULT_DURATION,
                    build: Box::new(move |_| FaultAction::Drain { node }),
                },
                now_ms(),
            )
        })
        .await
        .expect("drain thread")
    }

    async fn revert(self: &Arc<Self>, id: &str) -> bool {
        let runner = Arc::clone(self);
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || revert_fault(&runner.ledger, &runner.env(), &id))
            .await
            .expect("revert thread")
            .expect("revert")
    }

    async fn reconcile(self: &Arc<Self>, now_unix_ms: u64) -> Vec<String> {
        let runner = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            reconcile(
                &runner.ledger,
                &runner.env(),
                &ReconcileScope::default(),
                now_unix_ms,
            )
        })
        .await
        .expect("reconcile thread")
        .expect("reconcile")
        .orphan_cordons
    }
}

/// Waits (bounded) until the server has answered an eviction of `pod` with 429.
async fn wait_for_refusal(api: &MemoryApi, pod: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while refusals(api, pod) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no eviction of {pod} within 10 s: {:?}",
            api.requests()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Evictions of `pod` refused so far: requests sent while the pod still existed afterwards.
fn refusals(api: &MemoryApi, pod: &str) -> usize {
    let path = format!("/api/v1/namespaces/shop/pods/{pod}/eviction");
    let sent = api
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.uri.starts_with(&path))
        .count();
    if self::pod(api, "shop", pod).is_some() {
        sent
    } else {
        sent.saturating_sub(1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_waits_for_the_budget_until_a_replacement_is_ready() {
    let api = cluster();
    let runner = Runner::new(&api, "f-drain-1", fast_options());
    let drain = {
        let runner = Arc::clone(&runner);
        tokio::spawn(async move { runner.drain("n1").await })
    };

    // w1 may go (3 Ready, 2 required); w2 may not until w1's replacement is Ready.
    wait_for_refusal(&api, "w2").await;
    assert!(unschedulable(&api, "n1"));
    assert_eq!(cordoned_by(&api, "n1").as_deref(), Some("f-drain-1"));
    assert!(node(&api, "n1")["metadata"]["annotations"][CORDON_DEADLINE_ANNOTATION].is_string());
    assert!(pod(&api, "shop", "w1").is_none(), "w1 was evicted");
    assert!(
        pod(&api, "shop", "w2").is_some(),
        "w2 is held by the budget"
    );
    let pending: Vec<Value> = web_pods(&api)
        .into_iter()
        .filter(|p| p["spec"]["nodeName"].is_null())
        .collect();
    assert_eq!(pending.len(), 1, "w1's replacement waits for the scheduler");
    assert!(!is_ready(&pending[0]));
    assert!(!drain.is_finished(), "the drain keeps retrying");

    let tick = api.tick();
    assert_eq!(tick.scheduled.len(), 1);
    assert_eq!(
        tick.scheduled[0].1, "n3",
        "never the cordoned n1; n2 already runs w3"
    );
    assert_eq!(tick.became_ready.len(), 1);

    let record = tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .expect("the drain ends once the budget allows")
        .expect("drain task")
        .expect("drain succeeds");
    assert!(pod(&api, "shop", "w2").is_none(), "w2 was evicted");
    let state = runner.scheduler.node_state("n1");
    assert_eq!(state.cordon, Some(CordonOutcome::Cordoned));
    let report = state.report.expect("a drain report");
    let evicted: Vec<(String, Option<String>)> = report
        .evicted
        .iter()
        .map(|e| (e.pod.to_string(), e.blocked_by.clone()))
        .collect();
    assert_eq!(
        evicted,
        vec![
            ("shop/w1".to_owned(), None),
            ("shop/w2".to_owned(), Some("web-pdb".to_owned())),
        ]
    );
    assert_eq!(report.evicted[0].attempts, 1);
    assert!(report.evicted[1].attempts >= 2, "{report:?}");
    let skipped: Vec<(String, SkipReason)> = report
        .skipped
        .iter()
        .map(|s| (s.pod.to_string(), s.reason.clone()))
        .collect();
    assert_eq!(
        skipped,
        vec![
            (
                "kube-system/agent-n1".to_owned(),
                SkipReason::DaemonSet {
                    name: "node-agent".into()
                }
            ),
            ("kube-system/etcd-n1".to_owned(), SkipReason::Mirror),
        ]
    );
    assert!(pod(&api, "kube-system", "agent-n1").is_some());
    assert!(pod(&api, "kube-system", "etcd-n1").is_some());
    let evictions_of_skipped = api
        .requests()
        .iter()
        .filter(|r| r.uri.contains("/namespaces/kube-system/"))
        .count();
    assert_eq!(
        evictions_of_skipped, 0,
        "no request touches the skipped pods"
    );

    // w2's replacement lands on a schedulable node too.
    api.tick();
    assert!(web_pods(&api).iter().all(|p| p["spec"]["nodeName"] != "n1"));

    // The lifecycle's reconcile sees a live drain and keeps its cordon; revert removes it.
    assert!(runner.reconcile(now_ms()).await.is_empty());
    assert!(unschedulable(&api, "n1"));
    assert!(runner.revert(&record.id).await);
    assert!(!unschedulable(&api, "n1"));
    assert_eq!(cordoned_by(&api, "n1"), None);
    assert!(node(&api, "n1")["metadata"]["annotations"]
        .get(CORDON_DEADLINE_ANNOTATION)
        .is_none());
    assert!(
        !runner.revert(&record.id).await,
        "a second revert finds nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_that_never_gives_way_fails_the_drain_naming_pods_and_budget() {
    let api = cluster();
    api.put(
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "web-pdb", "namespace": "shop"},
        "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": "web"}}}}),
    );
    let runner = Runner::new(
        &api,
        "f-drain-2",
        DrainOptions {
            eviction_timeout: Duration::from_millis(300),
            ..fast_options()
        },
    );
    let error = runner.drain("n1").await.expect_err("the budget wins");
    let text = error.to_string();
    for part in [
        "node n1",
        "shop/w1",
        "shop/w2",
        "PodDisruptionBudget web-pdb",
        "needs 3 healthy pods and has 3 currently",
        "longer eviction timeout",
    ] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
    assert!(refusals(&api, "w1") >= 2, "retried before giving up");
    // A failed inject leaves nothing: the lifecycle reverted the cordon and forgot the record.
    assert!(!unschedulable(&api, "n1"));
    assert_eq!(cordoned_by(&api, "n1"), None);
    assert!(runner.ledger.list().expect("ledger").0.is_empty());
    assert_eq!(web_pods(&api).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_cordon_is_never_uncordoned() {
    let api = cluster();
    let mut n2 = node(&api, "n2");
    n2["spec"]["unschedulable"] = json!(true);
    api.put(n2);
    let runner = Runner::new(&api, "f-drain-3", fast_options());

    let record = runner
        .drain("n2")
        .await
        .expect("drain of an operator-cordoned node");
    assert_eq!(
        runner.scheduler.node_state("n2").cordon,
        Some(CordonOutcome::CordonedByOperator)
    );
    assert_eq!(cordoned_by(&api, "n2"), None, "not claimed as ours");
    assert!(
        pod(&api, "shop", "w3").is_none(),
        "its pods are evicted all the same"
    );

    assert!(runner.reconcile(now_ms()).await.is_empty());
    assert!(runner.revert(&record.id).await);
    assert!(
        unschedulable(&api, "n2"),
        "revert leaves the operator's cordon"
    );
    assert!(runner.reconcile(now_ms() + 3_600_000).await.is_empty());
    let controller = reconcile_orphaned_cordons(
        &api.client(),
        &LiveFaults::new(),
        SystemTime::now(),
        API_TIMEOUT,
    )
    .await
    .expect("controller reconcile");
    assert!(controller.uncordoned.is_empty() && controller.kept.is_empty());
    assert_eq!(
        uncordon_node(&api.client(), "n2", API_TIMEOUT)
            .await
            .expect("uncordon"),
        UncordonOutcome::NotOurs {
            unschedulable: true
        }
    );
    assert!(unschedulable(&api, "n2"));
    assert!(api
        .requests()
        .iter()
        .all(|r| !(r.method == "PATCH" && r.uri.starts_with("/api/v1/nodes/n2"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_drain_at_once_is_refused_unless_overridden() {
    let api = cluster();
    let client = api.client();
    let owner = |id: &str| CordonOwner {
        fault_id: id.into(),
        deadline: SystemTime::now() + Duration::from_secs(600),
    };
    let budget = DrainBudget::default();
    cordon_node(&client, "n1", &owner("f-a"), &budget, API_TIMEOUT)
        .await
        .expect("first drain");
    let error = cordon_node(&client, "n2", &owner("f-b"), &budget, API_TIMEOUT)
        .await
        .expect_err("second drain refused");
    assert!(error.to_string().contains("n1, n2"), "{error}");
    assert!(!unschedulable(&api, "n2"));
    let overridden = DrainBudget {
        allow_override: true,
        ..DrainBudget::default()
    };
    cordon_node(&client, "n2", &owner("f-b"), &overridden, API_TIMEOUT)
        .await
        .expect("overridden");
    assert_eq!(cordoned_by(&api, "n2").as_deref(), Some("f-b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_uncordons_only_orphaned_cordons() {
    let api = cluster();
    for name in ["n4", "n5"] {
        api.put(
            json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "spec": {"unschedulable": name == "n5"}}),
        );
    }
    let client = api.client();
    let later = SystemTime::now() + Duration::from_secs(600);
    let earlier = SystemTime::now() - Duration::from_secs(60);
    let any_number = DrainBudget {
        allow_override: true,
        ..DrainBudget::default()
    };
    for (node, fault_id, deadline) in [
        ("n1", "f-gone", later),
        ("n2", "f-live", later),
        ("n3", "f-expired", later),
        ("n4", "f-live", earlier),
    ] {
        let owner = CordonOwner {
            fault_id: fault_id.into(),
            deadline,
        };
        cordon_node(&client, node, &owner, &any_number, API_TIMEOUT)
            .await
            .expect("cordon");
    }
    // The Faults as the controller lists them: f-live until later, f-expired already past.
    for (name, deadline) in [
        ("f-live", "2999-01-01T00:00:00Z"),
        ("f-expired", "2001-01-01T00:00:00Z"),
    ] {
        api.put(
            json!({"apiVersion": "faultline.dev/v1alpha1", "kind": "Fault",
            "metadata": {"name": name},
            "spec": {"action": "kill", "deadline": deadline, "createdBy": "runner"}}),
        );
    }
    let faults = Api::<Fault>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("faults");
    let live = LiveFaults::from_faults(&faults.items);

    let report = reconcile_orphaned_cordons(&client, &live, SystemTime::now(), API_TIMEOUT)
        .await
        .expect("reconcile");
    assert_eq!(
        report.uncordoned,
        vec![
            ("n1".into(), "f-gone".into(), OrphanReason::NoRecord),
            ("n3".into(), "f-expired".into(), OrphanReason::RecordExpired),
            (
                "n4".into(),
                "f-live".into(),
                OrphanReason::AnnotationExpired
            ),
        ]
    );
    assert_eq!(report.kept, vec!["n2".to_owned()]);
    for (name, cordoned) in [
        ("n1", false),
        ("n2", true),
        ("n3", false),
        ("n4", false),
        ("n5", true),
    ] {
        assert_eq!(unschedulable(&api, name), cordoned, "{name}");
    }
    assert_eq!(cordoned_by(&api, "n2").as_deref(), Some("f-live"));

    let again = reconcile_orphaned_cordons(&client, &live, SystemTime::now(), API_TIMEOUT)
        .await
        .expect("reconcile again");
    assert!(again.uncordoned.is_empty(), "idempotent: {again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_killed_between_cordon_and_eviction_leaves_the_annotation_as_the_record() {
    let api = cluster();
    // The node is cordoned, as `start_fault` does right after writing its record; then the
    // runner dies before evicting, and its Job pod takes the ledger with it.
    {
        let runner = Runner::new(&api, "f-crashed", fast_options());
        let scheduler_runner = Arc::clone(&runner);
        tokio::task::spawn_blocking(move || scheduler_runner.scheduler.cordon("n1"))
            .await
            .expect("cordon thread")
            .expect("cordon");
    }
    assert_eq!(cordoned_by(&api, "n1").as_deref(), Some("f-crashed"));
    assert_eq!(web_pods(&api).len(), 3, "nothing was evicted");

    // The controller finds no Fault by that name and heals the node.
    let report = reconcile_orphaned_cordons(
        &api.client(),
        &LiveFaults::new(),
        SystemTime::now(),
        API_TIMEOUT,
    )
    .await
    .expect("reconcile");
    assert_eq!(
        report.uncordoned,
        vec![("n1".into(), "f-crashed".into(), OrphanReason::NoRecord)]
    );
    assert!(!unschedulable(&api, "n1"));
    assert_eq!(cordoned_by(&api, "n1"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_reconcile_finds_our_cordon_when_the_record_is_gone_or_expired() {
    let api = cluster();
    api.remove("policy/v1", "poddisruptionbudgets", Some("shop"), "web-pdb");
    let runner = Runner::new(&api, "f-runner", fast_options());
    let record = runner.drain("n1").await.expect("drain");
    assert!(unschedulable(&api, "n1"));

    // Expired: reverted through its record.
    let scope_runner = Arc::clone(&runner);
    let expired = tokio::task::spawn_blocking(move || {
        reconcile(
            &scope_runner.ledger,
            &scope_runner.env(),
            &ReconcileScope::default(),
            record.deadline_unix_ms,
        )
    })
    .await
    .expect("thread")
    .expect("reconcile");
    assert_eq!(expired.expired, vec![record.id.clone()]);
    assert!(!unschedulable(&api, "n1"));

    // Record gone (ledger deleted) after a cordon: an orphan found through `cordoned()`.
    let cordon_runner = Arc::clone(&runner);
    tokio::task::spawn_blocking(move || cordon_runner.scheduler.cordon("n1"))
        .await
        .expect("thread")
        .expect("cordon");
    std::fs::remove_dir_all(runner.ledger.dir()).ok();
    assert_eq!(runner.reconcile(now_ms()).await, vec!["n1".to_owned()]);
    assert!(!unschedulable(&api, "n1"));
    assert_eq!(cordoned_by(&api, "n1"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_delete_measures_time_to_ready_from_the_replacement() {
    let api = cluster();
    let client = api.client();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let before = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list");
    let w3 = pods.get("w3").await.expect("w3");

    let deleted = delete_pods(&client, &[w3], &PodDeleteOptions::default())
        .await
        .expect("delete");
    assert_eq!(deleted.len(), 1);
    assert!(!deleted[0].already_gone);
    assert_eq!(deleted[0].node.as_deref(), Some("n2"));
    assert!(pod(&api, "shop", "w3").is_none());
    let delete = api
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE")
        .expect("a DELETE");
    assert_eq!(delete.uri, "/api/v1/namespaces/shop/pods/w3?");
    let baseline = Baseline::new(&before.items, deleted.clone());
    assert_eq!(baseline.expected, 1);

    let listed = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("list");
    let pending = replacement_readiness(&baseline, &listed.items);
    assert_eq!(
        pending.replacements.len(),
        1,
        "only the Pending replacement"
    );
    assert!(!pending.complete());

    let watch = {
        let client = client.clone();
        let baseline = baseline.clone();
        tokio::spawn(async move {
            wait_for_replacements(
                &client,
                "shop",
                "app=web",
                &baseline,
                Duration::from_secs(10),
            )
            .await
        })
    };
    // Whether the watcher lists before or after this, it ends with the replacement Ready.
    api.tick();
    let watched = tokio::time::timeout(Duration::from_secs(10), watch)
        .await
        .expect("the watch ends")
        .expect("watch task");
    assert!(watched.readiness.complete(), "{watched:?}");
    let observed = watched.observed_at.expect("observed");
    assert!(observed >= deleted[0].deleted_at);
    let replacement = &watched.readiness.replacements[0];
    assert!(
        replacement.pod.name.starts_with("web-rs-"),
        "{replacement:?}"
    );
    assert!(replacement.ready_at.is_some());
    assert_eq!(watched.readiness.ready, 1);

    // The same pod again: gone already, not an error.
    let stale: Pod = serde_json::from_value(json!({"metadata": {"name": "w3",
        "namespace": "shop", "uid": deleted[0].uid}}))
    .expect("pod");
    let again = delete_pods(&client, &[stale], &PodDeleteOptions::default())
        .await
        .expect("idempotent");
    assert!(again[0].already_gone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_delete_in_a_protected_namespace_touches_nothing() {
    let api = cluster();
    let client = api.client();
    let agent: Pod = Api::namespaced(client.clone(), "kube-system")
        .get("agent-n1")
        .await
        .expect("pod");
    let error = delete_pods(&client, &[agent], &PodDeleteOptions::default())
        .await
        .expect_err("refused");
    assert!(matches!(error, PodDeleteError::Protected { .. }), "{error}");
    assert!(pod(&api, "kube-system", "agent-n1").is_some());
    assert!(api.requests().iter().all(|r| r.method != "DELETE"));
}
