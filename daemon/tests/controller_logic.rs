//! The controller's logic against the in-memory API server (real REST paths, resourceVersion
//! conflicts, status subresource): leader election between two replicas (exactly one runs an
//! Experiment, a killed leader hands over, a lost Lease stops the old leader's work), the queue
//! of one Experiment at a time, the reconcile after a runner crash (uncordon, Experiment marked),
//! expired and orphaned Fault deletion with their audit Events, and the runner frame.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use faultline_daemon::controller::reconcile::PassReport;
use faultline_daemon::controller::{Controller, ControllerConfig};
use faultline_daemon::run::{run_experiment, EngineOnCluster};
use faultline_experiments::kubernetes::memory_api::MemoryApi;
use serde_json::{json, Value};

const FL: &str = "faultline.dev/v1alpha1";
/// Generous: the machine is shared and loaded; nothing here is a timing assertion.
const WAIT: Duration = Duration::from_secs(20);
const NS: &str = "faultline-system";

fn config(identity: &str) -> ControllerConfig {
    let mut config = ControllerConfig::new(NS, identity, Duration::from_secs(1));
    config.runner_image = "localhost/faultline/faultlined:test".into();
    config
}

fn spec(target: &str) -> Value {
    let mut spec = serde_json::to_value(
        faultline_experiments::spec::catalog::spec("pod-failure").expect("catalog"),
    )
    .expect("json");
    spec["target"] = json!(target);
    spec
}

fn experiment(api: &MemoryApi, namespace: &str, name: &str) -> Value {
    api.put(json!({"apiVersion": FL, "kind": "Experiment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec("kubernetes")}))
}

fn experiment_status(api: &MemoryApi, namespace: &str, name: &str) -> Value {
    api.get(FL, "experiments", Some(namespace), name)
        .map_or(Value::Null, |e| e["status"].clone())
}

/// The controllers' Lease.
fn the_lease(api: &MemoryApi) -> Value {
    api.get(
        "coordination.k8s.io/v1",
        "leases",
        Some(NS),
        "faultline-controller",
    )
    .expect("lease")
}

fn jobs(api: &MemoryApi) -> Vec<Value> {
    api.list("batch/v1", "jobs")
}

fn job_started_by(job: &Value) -> String {
    job["metadata"]["annotations"]["faultline.dev/started-by"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < WAIT, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

fn fault(api: &MemoryApi, name: &str, experiment: Option<&str>, deadline: SystemTime) {
    let mut spec = json!({"action": "partition",
        "partition": {"sides": [{"name": "a", "nodes": ["n-a1"]}, {"name": "b", "nodes": ["n-b1"]}]},
        "deadline": rfc3339(deadline), "createdBy": "runner shop/nightly"});
    if let Some(experiment) = experiment {
        spec["experiment"] = json!(experiment);
    }
    api.put(json!({"apiVersion": FL, "kind": "Fault", "metadata": {"name": name}, "spec": spec}));
}

fn finish_job(api: &MemoryApi, name: &str, succeeded: bool) {
    let mut job = api
        .get("batch/v1", "jobs", Some(NS), name)
        .expect("the job exists");
    job["status"] = if succeeded {
        json!({"succeeded": 1})
    } else {
        json!({"failed": 1})
    };
    api.put(job);
}

fn set_phase(api: &MemoryApi, namespace: &str, name: &str, phase: &str) {
    let mut object = api
        .get(FL, "experiments", Some(namespace), name)
        .expect("experiment");
    object["status"]["phase"] = json!(phase);
    api.put(object);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)] // One story: elect, run, kill the leader, hand over, queue, stop.
async fn two_controllers_one_leader_runs_the_experiment_and_a_killed_leader_hands_over() {
    let api = MemoryApi::new();
    let a = Controller::new(api.client(), config("replica-a"));
    let b = Controller::new(api.client(), config("replica-b"));
    let stop = Arc::new(AtomicBool::new(false));
    let run_a = tokio::spawn(Arc::clone(&a).run(Arc::clone(&stop)));
    let run_b = tokio::spawn(Arc::clone(&b).run(Arc::clone(&stop)));

    wait_until("one replica leads", || a.is_leader() || b.is_leader()).await;
    experiment(&api, "shop", "nightly");
    wait_until("a runner Job", || !jobs(&api).is_empty()).await;
    wait_until("the experiment is Running", || {
        experiment_status(&api, "shop", "nightly")["phase"] == "Running"
    })
    .await;
    // A few more rounds of both replicas: still one Job, one leader.
    let passes = a.passes() + b.passes();
    wait_until("more passes", || a.passes() + b.passes() >= passes + 5).await;
    assert_eq!(
        jobs(&api).len(),
        1,
        "exactly one runner Job: {:?}",
        jobs(&api)
    );
    assert!(a.is_leader() != b.is_leader(), "exactly one leader");
    let (leader, follower, leader_task, follower_task) = if a.is_leader() {
        (&a, &b, run_a, run_b)
    } else {
        (&b, &a, run_b, run_a)
    };
    assert_eq!(
        job_started_by(&jobs(&api)[0]),
        leader.config().identity,
        "the leader started it"
    );
    let job = &jobs(&api)[0];
    let args = &job["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(
        args,
        &json!([
            "run",
            "--experiment",
            "shop/nightly",
            "--reports-dir",
            "/var/lib/faultline/reports",
            "--defaults-namespace",
            "faultline-system"
        ])
    );
    assert_eq!(
        job["spec"]["template"]["spec"]["serviceAccountName"],
        "faultline-runner"
    );
    assert_eq!(
        job["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "faultline-reports"
    );
    let lease = the_lease(&api);
    assert_eq!(
        lease["spec"]["holderIdentity"],
        leader.config().identity.as_str()
    );

    // Kill the leader: its task ends mid-flight, the Lease is not released.
    leader_task.abort();
    let _ = leader_task.await;
    wait_until("the follower takes over", || follower.is_leader()).await;
    let lease = the_lease(&api);
    assert_eq!(
        lease["spec"]["holderIdentity"],
        follower.config().identity.as_str()
    );
    assert_eq!(lease["spec"]["leaseTransitions"], 1);

    // The new leader keeps the slot: a second Experiment waits behind the running one...
    experiment(&api, "shop", "second");
    wait_until("the second is Queued", || {
        experiment_status(&api, "shop", "second")["phase"] == "Queued"
    })
    .await;
    assert_eq!(
        experiment_status(&api, "shop", "second")["queuedBehind"],
        "shop/nightly"
    );
    assert_eq!(jobs(&api).len(), 1, "no second runner while one runs");
    // ...and starts it once the first has finished.
    let first_job = jobs(&api)[0]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    set_phase(&api, "shop", "nightly", "Succeeded");
    finish_job(&api, &first_job, true);
    wait_until("the second runs", || {
        experiment_status(&api, "shop", "second")["phase"] == "Running"
    })
    .await;
    let second_job = jobs(&api)
        .into_iter()
        .find(|j| j["metadata"]["name"] != first_job.as_str())
        .expect("a second job");
    assert_eq!(job_started_by(&second_job), follower.config().identity);
    assert_eq!(
        experiment_status(&api, "shop", "second")["queuedBehind"],
        Value::Null,
        "a running experiment no longer says it waits"
    );

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = follower_task.await;
    // A clean stop gives the Lease up.
    let lease = the_lease(&api);
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_stops_the_old_leaders_work_at_once() {
    let api = MemoryApi::new();
    let a = Controller::new(api.client(), config("replica-a"));
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(Arc::clone(&a).run(Arc::clone(&stop)));
    wait_until("a leads", || a.is_leader()).await;
    wait_until("a works", || a.passes() >= 2).await;

    // Someone else takes the Lease (a write the old leader did not see coming).
    let mut lease = the_lease(&api);
    lease["spec"]["holderIdentity"] = json!("intruder");
    lease["spec"]["renewTime"] = json!(chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string());
    lease["spec"]["leaseDurationSeconds"] = json!(3600);
    api.put(lease);

    wait_until("a stops leading", || !a.is_leader()).await;
    let passes = a.passes();
    experiment(&api, "shop", "while-lost");
    // Several renew periods and ticks later, the old leader has done nothing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        a.passes(),
        passes,
        "no reconcile pass after the lease was lost"
    );
    assert!(jobs(&api).is_empty(), "no runner started without the lease");
    assert_eq!(experiment_status(&api, "shop", "while-lost"), Value::Null);
    let lease = the_lease(&api);
    assert_eq!(
        lease["spec"]["holderIdentity"], "intruder",
        "a valid lease is not taken"
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = task.await;
}

#[tokio::test]
async fn a_lapsed_lease_is_taken_over_by_exactly_one_of_two_candidates() {
    use faultline_daemon::controller::lease::LeaseElector;
    let api = MemoryApi::new();
    let a = LeaseElector::new(api.client(), NS, "l", "a", Duration::from_secs(1));
    let b = LeaseElector::new(api.client(), NS, "l", "b", Duration::from_secs(1));
    let start = SystemTime::now();
    assert!(a.round(start).await.expect("a").is_leader());
    assert!(!b.round(start).await.expect("b").is_leader(), "a holds it");
    // Both see it lapsed; both read the same resourceVersion before either writes.
    let later = start + Duration::from_secs(5);
    let (ra, rb) = tokio::join!(a.round(later), b.round(later));
    let leaders = [ra.expect("a"), rb.expect("b")]
        .iter()
        .filter(|e| e.is_leader())
        .count();
    assert_eq!(leaders, 1, "the resourceVersion precondition lets one win");
}

#[tokio::test]
async fn experiments_queue_one_at_a_time_and_an_unparsable_spec_fails_alone() {
    let api = MemoryApi::new();
    let controller = Controller::new(api.client(), config("solo"));
    experiment(&api, "shop", "a-first");
    experiment(&api, "shop", "b-second");
    api.put(json!({"apiVersion": FL, "kind": "Experiment",
        "metadata": {"name": "c-broken", "namespace": "shop"},
        "spec": {"name": "x", "surprise": true}}));

    let report = controller.reconcile_once().await.expect("pass");
    assert_eq!(report.jobs_started.len(), 1, "{report:?}");
    assert_eq!(
        experiment_status(&api, "shop", "a-first")["phase"],
        "Running"
    );
    for name in ["b-second", "c-broken"] {
        let status = experiment_status(&api, "shop", name);
        assert_eq!(status["phase"], "Queued", "{name}: {status}");
        assert_eq!(status["queuedBehind"], "shop/a-first");
        let message = status["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("one experiment runs at a time"),
            "{message}"
        );
    }
    // Nothing changes on a second pass: no new Job, no status write.
    let writes = api.requests().len();
    let again = controller.reconcile_once().await.expect("pass");
    assert_eq!(again, PassReport::default());
    let patches = api.requests()[writes..]
        .iter()
        .filter(|r| r.method != "GET")
        .count();
    assert_eq!(patches, 0, "an unchanged picture writes nothing");

    let job = jobs(&api)[0]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    set_phase(&api, "shop", "a-first", "Succeeded");
    finish_job(&api, &job, true);
    let report = controller.reconcile_once().await.expect("pass");
    assert_eq!(report.jobs_started.len(), 1);
    assert_eq!(
        experiment_status(&api, "shop", "b-second")["phase"],
        "Running"
    );
    // The broken one is judged when its turn comes... which is after b-second.
    let status = experiment_status(&api, "shop", "c-broken");
    assert_eq!(status["phase"], "Queued");
    assert_eq!(status["queuedBehind"], "shop/b-second");
    set_phase(&api, "shop", "b-second", "Failed");
    let report = controller.reconcile_once().await.expect("pass");
    assert!(report.jobs_started.is_empty(), "{report:?}");
    let status = experiment_status(&api, "shop", "c-broken");
    assert_eq!(status["phase"], "Failed");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("experiment shop/c-broken") && message.contains("surprise"),
        "{message}"
    );
}

#[tokio::test]
async fn a_crashed_runner_is_marked_and_its_drain_cordon_is_undone() {
    let api = MemoryApi::new();
    let controller = Controller::new(api.client(), config("solo"));
    experiment(&api, "shop", "drain");
    controller.reconcile_once().await.expect("pass");
    let job = jobs(&api)[0]["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_owned();
    // The runner cordoned a node for its drain fault, then died (no Fault object remains).
    let future = rfc3339(SystemTime::now() + Duration::from_secs(600));
    for (node, annotations, unschedulable) in [
        (
            "n-orphan",
            json!({"faultline.dev/cordoned-by": "drain-gone", "faultline.dev/cordon-deadline": future}),
            true,
        ),
        ("n-operator", json!({}), true),
        (
            "n-live",
            json!({"faultline.dev/cordoned-by": "drain-live", "faultline.dev/cordon-deadline": future}),
            true,
        ),
    ] {
        api.put(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node, "annotations": annotations},
            "spec": {"unschedulable": unschedulable}}));
    }
    fault(
        &api,
        "drain-live",
        Some("shop/drain"),
        SystemTime::now() + Duration::from_secs(600),
    );
    finish_job(&api, &job, false);

    let report = controller.reconcile_once().await.expect("pass");
    assert_eq!(report.uncordoned, ["n-orphan"]);
    assert_eq!(report.runner_lost, ["shop/drain"]);
    let node = |name: &str| api.get("v1", "nodes", None, name).expect("node");
    assert_ne!(node("n-orphan")["spec"]["unschedulable"], true);
    assert!(node("n-orphan")["metadata"]["annotations"]["faultline.dev/cordoned-by"].is_null());
    assert_eq!(
        node("n-operator")["spec"]["unschedulable"],
        true,
        "an operator's cordon stays"
    );
    assert_eq!(
        node("n-live")["spec"]["unschedulable"],
        true,
        "a live fault's cordon stays"
    );
    let status = experiment_status(&api, "shop", "drain");
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status["exitCode"], 2);
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&job),
        "{status}"
    );
}

fn events(api: &MemoryApi, reason: &str) -> Vec<Value> {
    api.list("events.k8s.io/v1", "events")
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .collect()
}

#[tokio::test]
async fn expired_faults_are_deleted_and_audited_once_on_their_experiment() {
    let api = MemoryApi::new();
    let experiment = experiment(&api, "shop", "nightly");
    let past = SystemTime::now() - Duration::from_secs(5);
    let future = SystemTime::now() + Duration::from_secs(600);
    fault(&api, "cut-expired", Some("shop/nightly"), past);
    fault(&api, "cut-live", Some("shop/nightly"), future);
    fault(&api, "by-hand-expired", None, past);

    let controller = Controller::new(api.client(), config("solo"));
    let report = controller.reconcile_once().await.expect("pass");
    let mut expired = report.expired_faults.clone();
    expired.sort();
    assert_eq!(expired, ["by-hand-expired", "cut-expired"]);
    let names: Vec<String> = api
        .list(FL, "faults")
        .iter()
        .map(|f| {
            f["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(names, ["cut-live"]);

    let expired_events = events(&api, "FaultExpired");
    assert_eq!(
        expired_events.len(),
        1,
        "only the experiment's fault gets an Event"
    );
    let event = &expired_events[0];
    assert_eq!(event["regarding"]["kind"], "Experiment");
    assert_eq!(event["regarding"]["name"], "nightly");
    assert_eq!(event["regarding"]["uid"], experiment["metadata"]["uid"]);
    assert_eq!(event["related"]["name"], "cut-expired");
    assert_eq!(event["reportingController"], "faultline.dev/controller");
    let note = event["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("runner shop/nightly")
            && note.contains("deadline")
            && note.contains("partition"),
        "who, what, deadline: {note}"
    );
    assert_eq!(
        events(&api, "FaultCreated").len(),
        2,
        "both experiment faults"
    );

    // Another pass, and another replica's first pass: no second entry.
    controller.reconcile_once().await.expect("pass");
    let other = Controller::new(api.client(), config("other"));
    other.reconcile_once().await.expect("pass");
    assert_eq!(events(&api, "FaultCreated").len(), 2);
    assert_eq!(events(&api, "FaultExpired").len(), 1);

    // The live fault is reverted on every node that applied it: one FaultReverted.
    let mut live = api.get(FL, "faults", None, "cut-live").expect("fault");
    live["status"] = json!({"nodes": {"n-a1": {"appliedAt": "2026-12-02T10:00:00Z",
        "revertedAt": "2026-12-02T10:01:00Z", "reason": "deadline"}}});
    api.put(live);
    controller.reconcile_once().await.expect("pass");
    assert_eq!(events(&api, "FaultReverted").len(), 1);
}

#[tokio::test]
async fn deleting_an_experiment_deletes_its_runner_and_its_faults() {
    let api = MemoryApi::new();
    let controller = Controller::new(api.client(), config("solo"));
    experiment(&api, "shop", "ctrl-c");
    controller.reconcile_once().await.expect("pass");
    assert_eq!(jobs(&api).len(), 1);
    fault(
        &api,
        "cut-mine",
        Some("shop/ctrl-c"),
        SystemTime::now() + Duration::from_secs(600),
    );
    fault(
        &api,
        "cut-other",
        Some("shop/still-here"),
        SystemTime::now() + Duration::from_secs(600),
    );
    experiment(&api, "shop", "still-here");
    assert!(api.remove(FL, "experiments", Some("shop"), "ctrl-c"));

    let report = controller.reconcile_once().await.expect("pass");
    assert_eq!(report.jobs_deleted.len(), 1, "{report:?}");
    assert_eq!(report.orphaned_faults, ["cut-mine"]);
    let remaining: Vec<Value> = api.list(FL, "faults");
    assert_eq!(remaining.len(), 1);
    assert_eq!(remaining[0]["metadata"]["name"], "cut-other");
    // The slot is free again: the other experiment starts in the same pass.
    assert_eq!(
        experiment_status(&api, "shop", "still-here")["phase"],
        "Running"
    );
}

#[tokio::test]
async fn the_runner_fails_an_experiment_it_cannot_run_and_says_why() {
    let api = MemoryApi::new();
    let reports = tempfile::tempdir().expect("tempdir");
    let run = |name: &'static str| {
        let client = api.client();
        let dir = reports.path().to_path_buf();
        async move {
            run_experiment(
                client,
                &format!("shop/{name}"),
                "faultline-system",
                &dir,
                Duration::from_secs(5),
                Arc::new(AtomicUsize::new(0)),
                Arc::new(EngineOnCluster::default()),
            )
            .await
        }
    };

    api.put(json!({"apiVersion": FL, "kind": "Experiment",
        "metadata": {"name": "on-lab", "namespace": "shop"}, "spec": spec("lab")}));
    let outcome = run("on-lab").await.expect("runs");
    assert_eq!(outcome.exit_code, 2);
    let status = experiment_status(&api, "shop", "on-lab");
    assert_eq!(status["phase"], "Failed");
    assert!(
        status["message"]
            .as_str()
            .unwrap_or_default()
            .contains("target: kubernetes"),
        "{status}"
    );

    api.put(json!({"apiVersion": FL, "kind": "Experiment",
        "metadata": {"name": "typo", "namespace": "shop"},
        "spec": {"name": "x", "descripton": "typo"}}));
    let outcome = run("typo").await.expect("runs");
    assert_eq!(outcome.exit_code, 2);
    let message = experiment_status(&api, "shop", "typo")["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("experiment shop/typo") && message.contains("descripton"),
        "{message}"
    );

    // A spec for the cluster goes through validate(); whatever it says lands in the status.
    experiment(&api, "shop", "cluster");
    let outcome = run("cluster").await.expect("runs");
    assert_eq!(outcome.exit_code, 2, "no valid spec: never a pass");
    let status = experiment_status(&api, "shop", "cluster");
    assert_eq!(status["phase"], "Failed");
    assert!(status["finishedAt"].is_string());
    // A catalog spec (no kubernetes: section) on a cluster without defaults: what to add.
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("has no kubernetes: section and this cluster has no defaults")
            && message.contains("faultline-system/faultline-cluster-defaults"),
        "{message}"
    );

    // With the cluster's defaults, the same spec gets them and reaches the engine.
    api.put(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "faultline-cluster-defaults", "namespace": "faultline-system"},
        "data": {"kubernetes.yaml":
            "workloads:\n  - {name: gateway, namespace: shop, selector: {app: gateway}}\npartition_mode: pods\n"}}));
    experiment(&api, "shop", "defaulted");
    run("defaulted").await.expect("runs");
    let message = experiment_status(&api, "shop", "defaulted")["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("no node matches kubernetes.nodes"),
        "the engine's own refusal, past validation: {message}"
    );

    // A valid cluster spec reaches the engine, whose refusal (here: the cluster has no node
    // with a zone label) is the status, before anything is injected.
    let mut valid = spec("kubernetes");
    valid["kubernetes"] = json!({"workloads": [
        {"name": "gateway", "namespace": "shop", "selector": {"app": "gateway"}}]});
    api.put(json!({"apiVersion": FL, "kind": "Experiment",
        "metadata": {"name": "valid", "namespace": "shop"}, "spec": valid}));
    let outcome = run("valid").await.expect("runs");
    assert_eq!(outcome.exit_code, 2);
    let status = experiment_status(&api, "shop", "valid");
    assert_eq!(status["phase"], "Failed");
    assert!(
        status["message"]
            .as_str()
            .is_some_and(|m| m.contains("no node matches kubernetes.nodes")),
        "{status}"
    );
    let run_id = status["runId"].as_str().expect("a run id once validated");
    assert!(
        reports
            .path()
            .join(run_id)
            .join("experiment.json")
            .is_file(),
        "the run is recorded on the report volume"
    );
    assert!(api.list(FL, "faults").is_empty(), "nothing injected");

    let error = run("missing").await.expect_err("no such experiment");
    assert!(format!("{error:#}").contains("shop/missing"), "{error:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaosctl_follows_the_status_to_the_verdicts_exit_code() {
    use faultline_daemon::chaosctl::cluster_run::{create_experiment, follow};
    let api = MemoryApi::new();
    let client = api.client();
    let mut spec = faultline_experiments::spec::catalog::spec("pod-failure").expect("catalog");
    spec.target = faultline_experiments::spec::Target::Kubernetes;
    let name = create_experiment(&client, "shop", spec)
        .await
        .expect("created");
    assert!(name.starts_with("pod-failure-"), "{name}");

    // What the controller and the runner would write, in order.
    let writer = {
        let api = api.clone();
        let name = name.clone();
        tokio::spawn(async move {
            for status in [
                json!({"phase": "Running", "message": "runner Job started"}),
                json!({"phase": "Running", "progress": {"step": "inject", "elapsedSeconds": 12,
                    "leftSeconds": 40, "opsPerSecond": 200, "ops": 2400, "failed": 3, "info": 1,
                    "p99Ms": 12, "activeFaults": ["kill pod shop/web-1"]}}),
                json!({"phase": "Failed", "verdict": "invalid", "score": 41, "exitCode": 1,
                    "runId": "pod-failure-x-1", "verdicts": [{"name": "recovery",
                    "status": "invalid", "summary": "never recovered"}]}),
            ] {
                tokio::time::sleep(Duration::from_millis(150)).await;
                let mut object = api
                    .get(FL, "experiments", Some("shop"), &name)
                    .expect("experiment");
                object["status"] = status;
                api.put(object);
            }
        })
    };
    let mut lines = Vec::new();
    let end = follow(
        &client,
        "shop",
        &name,
        &AtomicUsize::new(0),
        Duration::from_millis(20),
        &mut |line| lines.push(line.to_owned()),
    )
    .await
    .expect("followed");
    writer.await.expect("writer");
    assert_eq!(end.exit_code, 1, "the verdict's exit code");
    assert!(!end.interrupted);
    let text = lines.join("\n");
    for expected in [
        "Running",
        "kill pod shop/web-1",
        "2400",
        "never recovered",
        "verdict: invalid (score 41)",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
}

#[tokio::test]
async fn ctrl_c_in_chaosctl_deletes_the_experiment() {
    use faultline_daemon::chaosctl::cluster_run::{create_experiment, follow};
    let api = MemoryApi::new();
    let client = api.client();
    let mut spec = faultline_experiments::spec::catalog::spec("pod-failure").expect("catalog");
    spec.target = faultline_experiments::spec::Target::Kubernetes;
    let name = create_experiment(&client, "shop", spec)
        .await
        .expect("created");
    let mut lines = Vec::new();
    let end = follow(
        &client,
        "shop",
        &name,
        &AtomicUsize::new(1),
        Duration::from_millis(20),
        &mut |line| lines.push(line.to_owned()),
    )
    .await
    .expect("followed");
    assert!(end.interrupted);
    assert_eq!(end.exit_code, 2);
    assert!(
        api.get(FL, "experiments", Some("shop"), &name).is_none(),
        "deleted"
    );
    assert!(lines.join("\n").contains("heals every fault"), "{lines:?}");
}

/// The in-memory API server with another writer slipping in: right before the first `PUT` of a
/// Lease reaches the server, someone else renews that Lease.
#[derive(Clone)]
struct RenewedInBetween {
    api: MemoryApi,
    done: Arc<AtomicBool>,
}

impl tower::Service<http::Request<kube::client::Body>> for RenewedInBetween {
    type Response = <MemoryApi as tower::Service<http::Request<kube::client::Body>>>::Response;
    type Error = <MemoryApi as tower::Service<http::Request<kube::client::Body>>>::Error;
    type Future = <MemoryApi as tower::Service<http::Request<kube::client::Body>>>::Future;

    fn poll_ready(
        &mut self,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.api, context)
    }

    fn call(&mut self, request: http::Request<kube::client::Body>) -> Self::Future {
        let lease_write =
            request.method() == http::Method::PUT && request.uri().path().contains("/leases/");
        if lease_write && !self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            let mut lease = the_lease(&self.api);
            lease["spec"]["holderIdentity"] = json!("replica-fast");
            lease["spec"]["renewTime"] = json!(chrono::Utc::now()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string());
            self.api.put(lease);
        }
        tower::Service::call(&mut self.api, request)
    }
}

#[tokio::test]
async fn a_takeover_that_lost_the_race_is_refused_by_the_resource_version_and_follows() {
    use faultline_daemon::controller::lease::{Election, LeaseElector};
    let api = MemoryApi::new();
    let old = LeaseElector::new(
        api.client(),
        NS,
        "faultline-controller",
        "replica-old",
        Duration::from_secs(1),
    );
    let start = SystemTime::now();
    assert!(old.round(start).await.expect("old").is_leader());

    // The old holder's lease has lapsed; a slow candidate reads it, then another replica renews
    // it before the slow one's write lands.
    let racing = RenewedInBetween {
        api: api.clone(),
        done: Arc::new(AtomicBool::new(false)),
    };
    let slow = LeaseElector::new(
        kube::Client::new(racing, "default"),
        NS,
        "faultline-controller",
        "replica-slow",
        Duration::from_secs(1),
    );
    let election = slow
        .round(start + Duration::from_secs(5))
        .await
        .expect("round");
    assert!(
        matches!(election, Election::Follower { .. }),
        "a stale resourceVersion must not win: {election:?}"
    );
    let lease = the_lease(&api);
    assert_eq!(lease["spec"]["holderIdentity"], "replica-fast");
    let put = api
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.method == "PUT")
        .expect("the slow write reached the server");
    assert!(put.body.contains("replica-slow"), "{}", put.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_the_api_server_stops_leading_when_its_lease_lapses() {
    let api = MemoryApi::new();
    let a = Controller::new(api.client(), config("replica-a"));
    let stop = Arc::new(AtomicBool::new(false));
    let task = tokio::spawn(Arc::clone(&a).run(Arc::clone(&stop)));
    wait_until("a leads", || a.is_leader()).await;
    api.set_reachable(false);
    wait_until("a stops leading", || !a.is_leader()).await;
    let passes = a.passes();
    // Nobody took the Lease: it lapsed on a's own clock, and a stopped without being told.
    let lease = the_lease(&api);
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");
    api.set_reachable(true);
    wait_until("a leads again", || a.is_leader()).await;
    wait_until("and works again", || a.passes() > passes).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = task.await;
}
