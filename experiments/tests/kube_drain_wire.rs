//! The runner's API-level faults on the wire, request by request, against a tower-test mock of
//! the API server: the Eviction body (and its retry after a 429), the cordon and uncordon merge
//! patches with our annotation, and the pod delete with grace period 0. Also pins down why
//! kube's own `Api::evict` is not used.

use std::time::{Duration, SystemTime};

use faultline_experiments::kubernetes::cordon::{
    cordon_node, uncordon_node, CordonOutcome, CordonOwner, DrainBudget, UncordonOutcome,
};
use faultline_experiments::kubernetes::drain::{evict_node, DrainOptions, SkipReason};
use faultline_experiments::kubernetes::pod_delete::{delete_pods, PodDeleteOptions};
use faultline_experiments::kubernetes::wire_testing::{mock, next};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, EvictParams, Preconditions};
use serde_json::{json, Value};

fn pod(name: &str, uid: &str, owner_kind: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": uid,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": "owner",
                "uid": "owner-uid", "controller": true}]},
        "spec": {"nodeName": "n1", "containers": []},
        "status": {"phase": "Running"}})
}

fn node(name: &str, rv: &str, annotations: &Value, unschedulable: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "resourceVersion": rv, "annotations": annotations},
        "spec": {"unschedulable": unschedulable}})
}

fn status(code: u16, reason: &str, message: &str, details: &Value) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "code": code, "reason": reason, "message": message, "details": details})
}

const SUCCESS: &str =
    r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","code":201}"#;

#[tokio::test]
async fn the_eviction_is_a_typed_policy_v1_body_and_a_429_is_retried() {
    let (client, mut handle) = mock();
    let options = DrainOptions {
        first_backoff: Duration::from_millis(10),
        ..DrainOptions::default()
    };
    let drain = tokio::spawn(async move { evict_node(&client, "n1", &options).await });

    let list = next(
        &mut handle,
        200,
        &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "9"},
            "items": [pod("agent-n1", "u-ds", "DaemonSet"), pod("web-1", "u-web-1", "ReplicaSet")]}),
    )
    .await;
    assert_eq!(
        (list.method.as_str(), list.path.as_str()),
        ("GET", "/api/v1/pods")
    );
    assert_eq!(
        list.query.get("fieldSelector").map(String::as_str),
        Some("spec.nodeName=n1")
    );

    let refused = status(
        429,
        "TooManyRequests",
        "Cannot evict pod as it would violate the pod's disruption budget.",
        &json!({"causes": [{"reason": "DisruptionBudget",
            "message": "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"}]}),
    );
    let want_body = json!({
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": "web-1", "namespace": "shop"},
        "deleteOptions": {"preconditions": {"uid": "u-web-1"}},
    });
    for (attempt, (code, answer)) in [
        (429, refused),
        (201, serde_json::from_str(SUCCESS).expect("json")),
    ]
    .into_iter()
    .enumerate()
    {
        let eviction = next(&mut handle, code, &answer).await;
        assert_eq!(eviction.method, "POST", "attempt {attempt}");
        assert_eq!(eviction.path, "/api/v1/namespaces/shop/pods/web-1/eviction");
        assert_eq!(eviction.content_type, "application/json");
        assert_eq!(eviction.body, want_body, "attempt {attempt}");
    }

    let report = tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .expect("drain ends")
        .expect("task")
        .expect("drain");
    assert_eq!(report.evicted.len(), 1);
    assert_eq!(report.evicted[0].attempts, 2);
    assert_eq!(report.evicted[0].blocked_by.as_deref(), Some("web-pdb"));
    assert_eq!(
        report.skipped[0].reason,
        SkipReason::DaemonSet {
            name: "owner".into()
        }
    );
}

#[tokio::test]
async fn kube_api_evict_sends_the_wrong_key_which_is_why_we_post_our_own() {
    let (client, mut handle) = mock();
    let evict = tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client, "shop");
        let params = EvictParams {
            delete_options: Some(DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some("u-web-1".into()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            }),
            ..EvictParams::default()
        };
        pods.evict("web-1", &params).await
    });
    let seen = next(
        &mut handle,
        201,
        &serde_json::from_str(SUCCESS).expect("json"),
    )
    .await;
    evict.await.expect("task").expect("evict");
    // kube 5 spells the key `delete_options` and leaves out apiVersion, kind and namespace: the
    // API server does not know that field, so the uid precondition never reaches it. If kube
    // fixes this, this assertion fails and `Api::evict` can be reconsidered.
    assert_eq!(
        seen.body,
        json!({"delete_options": {"preconditions": {"uid": "u-web-1"}},
            "metadata": {"name": "web-1"}})
    );
    assert!(seen.body.get("deleteOptions").is_none());
}

#[tokio::test]
async fn the_cordon_is_a_merge_patch_with_our_annotation_and_the_resource_version() {
    let (client, mut handle) = mock();
    let owner = CordonOwner {
        fault_id: "f-1".into(),
        deadline: SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_198_400),
    };
    let cordon = tokio::spawn(async move {
        cordon_node(
            &client,
            "n1",
            &owner,
            &DrainBudget::default(),
            Duration::from_secs(5),
        )
        .await
    });
    let nodes = json!({"apiVersion": "v1", "kind": "NodeList", "metadata": {},
        "items": [node("n1", "42", &json!({}), false), node("n2", "7", &json!({}), false)]});
    let patched = node(
        "n1",
        "44",
        &json!({"faultline.dev/cordoned-by": "f-1"}),
        true,
    );
    // First round: the node changes under us (409), so it is read again.
    for (round, rv) in [(0, "42"), (1, "43")] {
        let read = next(&mut handle, 200, &node("n1", rv, &json!({}), false)).await;
        assert_eq!(
            (read.method.as_str(), read.path.as_str()),
            ("GET", "/api/v1/nodes/n1")
        );
        let list = next(&mut handle, 200, &nodes).await;
        assert_eq!(
            (list.method.as_str(), list.path.as_str()),
            ("GET", "/api/v1/nodes")
        );
        let (code, answer) = if round == 0 {
            (
                409,
                status(
                    409,
                    "Conflict",
                    "the object has been modified",
                    &Value::Null,
                ),
            )
        } else {
            (200, patched.clone())
        };
        let patch = next(&mut handle, code, &answer).await;
        assert_eq!(patch.method, "PATCH");
        assert_eq!(patch.path, "/api/v1/nodes/n1");
        assert!(patch.query.is_empty(), "{:?}", patch.query);
        assert_eq!(patch.content_type, "application/merge-patch+json");
        assert_eq!(
            patch.body,
            json!({
                "metadata": {
                    "resourceVersion": rv,
                    "annotations": {
                        "faultline.dev/cordoned-by": "f-1",
                        "faultline.dev/cordon-deadline": "2026-12-02T08:00:00Z",
                    },
                },
                "spec": {"unschedulable": true},
            }),
            "round {round}"
        );
    }
    let outcome = cordon.await.expect("task").expect("cordon");
    assert_eq!(outcome, CordonOutcome::Cordoned);
}

#[tokio::test]
async fn an_operators_cordon_is_read_and_never_patched() {
    let (client, mut handle) = mock();
    let work = tokio::spawn(async move {
        let owner = CordonOwner {
            fault_id: "f-1".into(),
            deadline: SystemTime::now(),
        };
        let timeout = Duration::from_secs(5);
        let cordon = cordon_node(&client, "n1", &owner, &DrainBudget::default(), timeout).await;
        let uncordon = uncordon_node(&client, "n1", timeout).await;
        (cordon, uncordon)
    });
    for _ in 0..2 {
        let read = next(&mut handle, 200, &node("n1", "5", &json!({}), true)).await;
        assert_eq!(
            (read.method.as_str(), read.path.as_str()),
            ("GET", "/api/v1/nodes/n1")
        );
    }
    let (cordon, uncordon) = work.await.expect("task");
    assert_eq!(cordon.expect("cordon"), CordonOutcome::CordonedByOperator);
    assert_eq!(
        uncordon.expect("uncordon"),
        UncordonOutcome::NotOurs {
            unschedulable: true
        }
    );
    // The client is gone with the task: the mock has nothing more, and in particular no patch.
    let more = tokio::time::timeout(Duration::from_millis(100), handle.next_request()).await;
    assert!(!matches!(more, Ok(Some(_))), "no further request, no patch");
}

#[tokio::test]
async fn the_uncordon_removes_the_annotations_in_the_same_patch() {
    let (client, mut handle) = mock();
    let uncordon =
        tokio::spawn(async move { uncordon_node(&client, "n1", Duration::from_secs(5)).await });
    let ours = json!({"faultline.dev/cordoned-by": "f-1",
        "faultline.dev/cordon-deadline": "2026-12-02T08:00:00Z", "team": "keep"});
    next(&mut handle, 200, &node("n1", "50", &ours, true)).await;
    let patch = next(
        &mut handle,
        200,
        &node("n1", "51", &json!({"team": "keep"}), false),
    )
    .await;
    assert_eq!(patch.method, "PATCH");
    assert_eq!(patch.path, "/api/v1/nodes/n1");
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(
        patch.body,
        json!({
            "metadata": {
                "resourceVersion": "50",
                "annotations": {
                    "faultline.dev/cordoned-by": null,
                    "faultline.dev/cordon-deadline": null,
                },
            },
            "spec": {"unschedulable": null},
        })
    );
    assert_eq!(
        uncordon.await.expect("task").expect("uncordon"),
        UncordonOutcome::Uncordoned {
            fault_id: "f-1".into()
        }
    );
}

#[tokio::test]
async fn the_pod_delete_has_grace_period_zero_and_the_uid_precondition() {
    let (client, mut handle) = mock();
    let pods: Vec<Pod> = [
        pod("web-1", "u-1", "ReplicaSet"),
        pod("web-2", "u-2", "ReplicaSet"),
    ]
    .into_iter()
    .map(|p| serde_json::from_value(p).expect("pod"))
    .collect();
    let delete =
        tokio::spawn(
            async move { delete_pods(&client, &pods, &PodDeleteOptions::default()).await },
        );
    let first = next(&mut handle, 200, &pod("web-1", "u-1", "ReplicaSet")).await;
    assert_eq!(first.method, "DELETE");
    assert_eq!(first.path, "/api/v1/namespaces/shop/pods/web-1");
    assert_eq!(first.content_type, "application/json");
    assert_eq!(
        first.body,
        json!({"gracePeriodSeconds": 0, "preconditions": {"uid": "u-1"}})
    );
    let second = next(
        &mut handle,
        404,
        &status(404, "NotFound", "pods \"web-2\" not found", &Value::Null),
    )
    .await;
    assert_eq!(second.path, "/api/v1/namespaces/shop/pods/web-2");
    assert_eq!(
        second.body,
        json!({"gracePeriodSeconds": 0, "preconditions": {"uid": "u-2"}})
    );
    let deleted = delete.await.expect("task").expect("delete");
    let gone: Vec<(String, bool)> = deleted
        .iter()
        .map(|d| (d.pod.name.clone(), d.already_gone))
        .collect();
    assert_eq!(
        gone,
        vec![("web-1".to_owned(), false), ("web-2".to_owned(), true)]
    );
}
