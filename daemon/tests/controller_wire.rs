//! The controller's, the runner's and chaosctl's cluster requests on the wire, request by
//! request, against a tower-test mock of the API server: Lease acquire, renew, take-over and
//! lose; the runner Job and the Experiment status updates; the audit Events and the expired
//! Fault's delete; the report fetch through the service proxy.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use faultline_daemon::chaosctl::cluster_run::{fetch_report, list_runs, ReportKind};
use faultline_daemon::controller::lease::{Election, LeaseElector};
use faultline_daemon::controller::{Controller, ControllerConfig};
use faultline_daemon::run::{run_experiment, EngineOnCluster};
use faultline_experiments::kubernetes::wire_testing::{mock, next, next_raw};
use serde_json::{json, Value};

const NS: &str = "faultline-system";
const LEASE_PATH: &str =
    "/apis/coordination.k8s.io/v1/namespaces/faultline-system/leases/faultline-controller";

fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "code": code, "reason": reason, "message": reason})
}

fn lease(holder: &str, renewed: &str, rv: &str, transitions: i32) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "faultline-controller", "namespace": NS, "resourceVersion": rv},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
            "acquireTime": "2026-12-02T10:00:00.000000Z", "renewTime": renewed,
            "leaseTransitions": transitions}})
}

fn at(text: &str) -> SystemTime {
    humantime::parse_rfc3339_weak(text).expect("time")
}

fn elector(client: kube::Client, identity: &str) -> LeaseElector {
    LeaseElector::new(
        client,
        NS,
        "faultline-controller",
        identity,
        Duration::from_secs(15),
    )
}

#[tokio::test]
async fn the_lease_is_created_when_there_is_none() {
    let (client, mut handle) = mock();
    let now = at("2026-12-02T10:00:00");
    let round = tokio::spawn(async move { elector(client, "ctl-a").round(now).await });
    let get = next(&mut handle, 404, &status(404, "NotFound")).await;
    assert_eq!(
        (get.method.as_str(), get.path.as_str()),
        ("GET", LEASE_PATH)
    );
    let created = lease("ctl-a", "2026-12-02T10:00:00Z", "1", 0);
    let create = next(&mut handle, 201, &created).await;
    assert_eq!(create.method, "POST");
    assert_eq!(
        create.path,
        "/apis/coordination.k8s.io/v1/namespaces/faultline-system/leases"
    );
    let spec = &create.body["spec"];
    assert_eq!(create.body["metadata"]["name"], "faultline-controller");
    assert_eq!(spec["holderIdentity"], "ctl-a");
    assert_eq!(spec["leaseDurationSeconds"], 15);
    assert_eq!(spec["leaseTransitions"], 0);
    assert!(
        spec["renewTime"]
            .as_str()
            .is_some_and(|t| t.starts_with("2026-12-02T10:00:00")),
        "{spec}"
    );
    assert_eq!(spec["acquireTime"], spec["renewTime"]);
    assert!(matches!(
        round.await.expect("join").expect("round"),
        Election::Leader { acquired: true, .. }
    ));
}

#[tokio::test]
async fn renewing_replaces_the_lease_with_the_resource_version_read() {
    let (client, mut handle) = mock();
    let now = at("2026-12-02T10:00:05");
    let round = tokio::spawn(async move { elector(client, "ctl-a").round(now).await });
    next(
        &mut handle,
        200,
        &lease("ctl-a", "2026-12-02T10:00:00.000000Z", "41", 3),
    )
    .await;
    let put = next(
        &mut handle,
        200,
        &lease("ctl-a", "2026-12-02T10:00:05.000000Z", "42", 3),
    )
    .await;
    assert_eq!(
        (put.method.as_str(), put.path.as_str()),
        ("PUT", LEASE_PATH)
    );
    assert_eq!(
        put.body["metadata"]["resourceVersion"], "41",
        "the precondition"
    );
    assert_eq!(put.body["spec"]["holderIdentity"], "ctl-a");
    assert_eq!(
        put.body["spec"]["leaseTransitions"], 3,
        "a renewal is no transition"
    );
    assert!(put.body["spec"]["acquireTime"]
        .as_str()
        .is_some_and(|t| t.starts_with("2026-12-02T10:00:00")));
    assert!(put.body["spec"]["renewTime"]
        .as_str()
        .is_some_and(|t| t.starts_with("2026-12-02T10:00:05")));
    assert!(matches!(
        round.await.expect("join").expect("round"),
        Election::Leader {
            acquired: false,
            ..
        }
    ));
}

#[tokio::test]
async fn a_conflict_on_renewal_loses_the_lease() {
    let (client, mut handle) = mock();
    let now = at("2026-12-02T10:00:05");
    let round = tokio::spawn(async move { elector(client, "ctl-a").round(now).await });
    next(
        &mut handle,
        200,
        &lease("ctl-a", "2026-12-02T10:00:00.000000Z", "41", 0),
    )
    .await;
    let put = next(&mut handle, 409, &status(409, "Conflict")).await;
    assert_eq!(put.method, "PUT");
    assert_eq!(
        round.await.expect("join").expect("round"),
        Election::Follower {
            holder: Some("ctl-a".into())
        },
        "someone wrote in between: not leading"
    );
}

#[tokio::test]
async fn a_lapsed_lease_is_taken_over_with_one_more_transition_and_a_live_one_is_not() {
    let (client, mut handle) = mock();
    let now = at("2026-12-02T10:01:00");
    let c = client.clone();
    let round = tokio::spawn(async move { elector(c, "ctl-b").round(now).await });
    next(
        &mut handle,
        200,
        &lease("ctl-a", "2026-12-02T10:00:00.000000Z", "41", 2),
    )
    .await;
    let put = next(
        &mut handle,
        200,
        &lease("ctl-b", "2026-12-02T10:01:00.000000Z", "42", 3),
    )
    .await;
    assert_eq!(put.body["metadata"]["resourceVersion"], "41");
    assert_eq!(put.body["spec"]["holderIdentity"], "ctl-b");
    assert_eq!(put.body["spec"]["leaseTransitions"], 3);
    assert!(put.body["spec"]["acquireTime"]
        .as_str()
        .is_some_and(|t| t.starts_with("2026-12-02T10:01:00")));
    assert!(round.await.expect("join").expect("round").is_leader());

    // Renewed 5 s ago with 15 s to run: ctl-b only reads.
    let now = at("2026-12-02T10:00:05");
    let round = tokio::spawn(async move { elector(client, "ctl-b").round(now).await });
    let get = next(
        &mut handle,
        200,
        &lease("ctl-a", "2026-12-02T10:00:00.000000Z", "41", 2),
    )
    .await;
    assert_eq!(get.method, "GET");
    assert_eq!(
        round.await.expect("join").expect("round"),
        Election::Follower {
            holder: Some("ctl-a".into())
        }
    );
    assert!(
        matches!(
            tokio::time::timeout(Duration::from_millis(100), handle.next_request()).await,
            Err(_) | Ok(None)
        ),
        "no write to a live lease"
    );
}

fn experiment_json(name: &str, uid: &str, status: &Value, spec: &Value) -> Value {
    json!({"apiVersion": "faultline.dev/v1alpha1", "kind": "Experiment",
        "metadata": {"name": name, "namespace": "shop", "uid": uid, "resourceVersion": "5",
            "creationTimestamp": "2026-12-02T10:00:00Z"},
        "spec": spec, "status": status})
}

fn list(kind: &str, items: &[Value]) -> Value {
    json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "9"}, "items": items})
}

#[tokio::test]
async fn a_pending_experiment_gets_a_runner_job_then_a_merge_patched_status() {
    let (client, mut handle) = mock();
    let mut config = ControllerConfig::new(NS, "ctl-a", Duration::from_secs(15));
    config.runner_image = "localhost/faultline/faultlined:0.1.0".into();
    let controller = Controller::new(client, config);
    let pass = tokio::spawn(async move { controller.reconcile_once().await });

    let experiments = next(
        &mut handle,
        200,
        &list(
            "ExperimentList",
            &[experiment_json(
                "nightly",
                "0c1d2e3f-aaaa",
                &json!({}),
                &serde_json::to_value(
                    faultline_experiments::spec::catalog::spec("pod-failure").expect("catalog"),
                )
                .expect("json"),
            )],
        ),
    )
    .await;
    assert_eq!(experiments.path, "/apis/faultline.dev/v1alpha1/experiments");
    let jobs = next(&mut handle, 200, &list("JobList", &[])).await;
    assert_eq!(jobs.path, "/apis/batch/v1/namespaces/faultline-system/jobs");
    assert_eq!(
        jobs.param("labelSelector"),
        Some("app.kubernetes.io/managed-by=faultline-controller")
    );
    let faults = next(&mut handle, 200, &list("FaultList", &[])).await;
    assert_eq!(faults.path, "/apis/faultline.dev/v1alpha1/faults");
    let nodes = next(&mut handle, 200, &list("NodeList", &[])).await;
    assert_eq!(nodes.path, "/api/v1/nodes");

    let create = next(
        &mut handle,
        201,
        &json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "run-shop-nightly-0c1d2e3f", "namespace": NS}}),
    )
    .await;
    assert_eq!(create.method, "POST");
    assert_eq!(
        create.path,
        "/apis/batch/v1/namespaces/faultline-system/jobs"
    );
    let job = &create.body;
    assert_eq!(job["metadata"]["name"], "run-shop-nightly-0c1d2e3f");
    assert_eq!(
        job["metadata"]["annotations"]["faultline.dev/experiment"],
        "shop/nightly"
    );
    assert_eq!(
        job["metadata"]["annotations"]["faultline.dev/experiment-uid"],
        "0c1d2e3f-aaaa"
    );
    assert_eq!(job["spec"]["backoffLimit"], 0);
    let spec = faultline_experiments::spec::catalog::spec("pod-failure").expect("catalog");
    let bound =
        (spec.duration.max(spec.last_fault_end()) + spec.recovery_deadline).as_secs() + 1800;
    assert_eq!(
        job["spec"]["activeDeadlineSeconds"], bound,
        "a stuck runner cannot hold the slot"
    );
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(
        pod["containers"][0]["image"],
        "localhost/faultline/faultlined:0.1.0"
    );
    assert_eq!(
        pod["containers"][0]["volumeMounts"][0]["mountPath"],
        "/var/lib/faultline/reports"
    );

    let patch = next(
        &mut handle,
        200,
        &experiment_json("nightly", "0c1d2e3f-aaaa", &json!({}), &json!({})),
    )
    .await;
    assert_eq!(patch.method, "PATCH");
    assert_eq!(
        patch.path,
        "/apis/faultline.dev/v1alpha1/namespaces/shop/experiments/nightly/status"
    );
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(patch.body["status"]["phase"], "Running");
    assert_eq!(patch.body["status"]["jobName"], "run-shop-nightly-0c1d2e3f");
    assert_eq!(
        patch.body["status"]["queuedBehind"],
        Value::Null,
        "cleared explicitly, so an earlier Queued leaves no trace"
    );
    assert!(patch.body["status"]
        .as_object()
        .expect("object")
        .contains_key("queuedBehind"));
    let report = pass.await.expect("join").expect("pass");
    assert_eq!(report.jobs_started, ["run-shop-nightly-0c1d2e3f"]);
}

#[tokio::test]
async fn an_expired_fault_is_audited_as_events_on_its_experiment_and_deleted() {
    let (client, mut handle) = mock();
    let controller = Controller::new(
        client,
        ControllerConfig::new(NS, "ctl-a", Duration::from_secs(15)),
    );
    let pass = tokio::spawn(async move { controller.reconcile_once().await });
    next(
        &mut handle,
        200,
        &list(
            "ExperimentList",
            &[experiment_json(
                "nightly",
                "uid-x",
                &json!({"phase": "Running"}),
                &json!({}),
            )],
        ),
    )
    .await;
    let job = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "run-x", "namespace": NS, "annotations": {
            "faultline.dev/experiment": "shop/nightly", "faultline.dev/experiment-uid": "uid-x"}},
        "spec": {"template": {"spec": {"containers": []}}}});
    next(&mut handle, 200, &list("JobList", &[job])).await;
    let fault = json!({"apiVersion": "faultline.dev/v1alpha1", "kind": "Fault",
        "metadata": {"name": "cut-a", "uid": "f-uid", "creationTimestamp": "2026-12-02T10:00:00Z"},
        "spec": {"action": "partition", "partition": {"sides": [{"name": "a", "nodes": ["n1"]}]},
            "deadline": "2026-12-02T10:05:00Z", "experiment": "shop/nightly",
            "createdBy": "runner shop/nightly"}});
    next(
        &mut handle,
        200,
        &list("FaultList", std::slice::from_ref(&fault)),
    )
    .await;

    let created = next(
        &mut handle,
        201,
        &json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "nightly.cut-a.created"}, "eventTime": "2026-12-02T10:00:00.000000Z"}),
    )
    .await;
    assert_eq!(created.method, "POST");
    assert_eq!(
        created.path,
        "/apis/events.k8s.io/v1/namespaces/shop/events"
    );
    assert_eq!(created.body["metadata"]["name"], "nightly.cut-a.created");
    assert_eq!(created.body["reason"], "FaultCreated");
    assert_eq!(created.body["action"], "Create");
    assert_eq!(created.body["type"], "Normal");
    assert_eq!(created.body["regarding"]["kind"], "Experiment");
    assert_eq!(created.body["regarding"]["uid"], "uid-x");
    assert_eq!(created.body["related"]["name"], "cut-a");
    assert_eq!(created.body["reportingInstance"], "ctl-a");
    assert!(
        created.body["eventTime"].is_string(),
        "events.k8s.io/v1 requires eventTime"
    );

    let delete = next(&mut handle, 200, &fault).await;
    assert_eq!(
        (delete.method.as_str(), delete.path.as_str()),
        ("DELETE", "/apis/faultline.dev/v1alpha1/faults/cut-a")
    );
    let expired = next(
        &mut handle,
        201,
        &json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "nightly.cut-a.expired"}, "eventTime": "2026-12-02T10:00:00.000000Z"}),
    )
    .await;
    assert_eq!(expired.body["reason"], "FaultExpired");
    assert_eq!(expired.body["type"], "Warning");
    let note = expired.body["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("runner shop/nightly") && note.contains("2026-12-02T10:05:00Z"),
        "who and deadline: {note}"
    );
    next(&mut handle, 200, &list("NodeList", &[])).await;
    let report = pass.await.expect("join").expect("pass");
    assert_eq!(report.expired_faults, ["cut-a"]);
    assert!(
        matches!(
            tokio::time::timeout(Duration::from_millis(100), handle.next_request()).await,
            Err(_) | Ok(None)
        ),
        "a running experiment with its runner: no status write"
    );
}

#[tokio::test]
async fn the_runner_reads_the_experiment_and_writes_its_failure_to_the_status_subresource() {
    let (client, mut handle) = mock();
    let reports = tempfile::tempdir().expect("tempdir");
    let dir = reports.path().to_path_buf();
    let run = tokio::spawn(async move {
        run_experiment(
            client,
            "shop/on-lab",
            "faultline-system",
            &dir,
            Duration::from_secs(5),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(EngineOnCluster::default()),
        )
        .await
    });
    let mut spec = serde_json::to_value(
        faultline_experiments::spec::catalog::spec("pod-failure").expect("catalog"),
    )
    .expect("json");
    spec["target"] = json!("lab");
    let get = next(
        &mut handle,
        200,
        &experiment_json("on-lab", "u", &json!({"phase": "Running"}), &spec),
    )
    .await;
    assert_eq!(
        (get.method.as_str(), get.path.as_str()),
        (
            "GET",
            "/apis/faultline.dev/v1alpha1/namespaces/shop/experiments/on-lab"
        )
    );
    let patch = next(
        &mut handle,
        200,
        &experiment_json("on-lab", "u", &json!({}), &spec),
    )
    .await;
    assert_eq!(patch.method, "PATCH");
    assert_eq!(
        patch.path,
        "/apis/faultline.dev/v1alpha1/namespaces/shop/experiments/on-lab/status"
    );
    assert_eq!(patch.content_type, "application/merge-patch+json");
    let status = &patch.body["status"];
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status["exitCode"], 2);
    assert!(status["finishedAt"].is_string());
    assert!(
        status["progress"].is_null()
            && status.as_object().expect("object").contains_key("progress")
    );
    assert!(status["message"]
        .as_str()
        .is_some_and(|m| m.contains("target: kubernetes")));
    assert_eq!(run.await.expect("join").expect("runs").exit_code, 2);
}

#[tokio::test]
async fn reports_are_fetched_through_the_api_servers_service_proxy() {
    let (client, mut handle) = mock();
    let c = client.clone();
    let fetch = tokio::spawn(async move {
        fetch_report(
            &c,
            NS,
            "pod-failure-nightly-20261202T100000",
            ReportKind::Html,
        )
        .await
    });
    let seen = next_raw(
        &mut handle,
        200,
        "text/html",
        b"<!doctype html><title>r</title>",
    )
    .await;
    assert_eq!(seen.method, "GET");
    assert_eq!(
        seen.path,
        "/api/v1/namespaces/faultline-system/services/faultline-controller:http/proxy/runs/pod-failure-nightly-20261202T100000/report.html"
    );
    assert_eq!(
        fetch.await.expect("join").expect("fetched"),
        "<!doctype html><title>r</title>"
    );

    let c = client.clone();
    let runs = tokio::spawn(async move { list_runs(&c, NS).await });
    let seen = next(
        &mut handle,
        200,
        &json!([{"id": "r1", "experiment": "shop/nightly", "verdict": "valid", "score": 97,
            "reports": ["html", "json", "xml"]}]),
    )
    .await;
    assert_eq!(
        seen.path,
        "/api/v1/namespaces/faultline-system/services/faultline-controller:http/proxy/runs"
    );
    let runs = runs.await.expect("join").expect("runs");
    assert_eq!(runs[0].score, Some(97));

    // No controller behind the Service: a clear error, not a parse failure.
    let c = client.clone();
    let fetch = tokio::spawn(async move { fetch_report(&c, NS, "r1", ReportKind::Json).await });
    next(&mut handle, 503, &status(503, "ServiceUnavailable")).await;
    let error = fetch.await.expect("join").expect_err("unavailable");
    assert!(
        format!("{error:#}").contains("faultlined controller"),
        "{error:#}"
    );

    // A run id that would leave the runs directory is refused before any request.
    let error = fetch_report(&client, NS, "../secrets", ReportKind::Html)
        .await
        .expect_err("refused");
    assert!(error.to_string().contains("not a run id"), "{error}");
}
