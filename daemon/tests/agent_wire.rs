//! The node agent's requests on the wire, one by one, against a tower-test mock of the API
//! server: method, path, query, content type and body of the status apply, the fact lists with
//! their selectors, the finalizer's JSON patch, and the watches.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use faultline_daemon::agent::node::TableProcesses;
use faultline_daemon::agent::{AgentConfig, Core, NodeAgent, Privileged};
use faultline_experiments::kubernetes::crd::Fault;
use faultline_experiments::kubernetes::wire_testing::{mock, next, Handle};
use faultline_injectors::net_partition::RecordingRuleTable;
use faultline_injectors::process::RecordingSignaller;
use http::Response;
use kube::client::Body;
use serde_json::{json, Value};

struct Harness {
    _state: tempfile::TempDir,
    agent: Arc<NodeAgent>,
    handle: Handle,
}

fn harness() -> Harness {
    let state = tempfile::tempdir().expect("tempdir");
    let (client, handle) = mock();
    let core = Core::open(
        AgentConfig {
            node_name: "n-a1".into(),
            pod_uid: "agent-uid".into(),
            pod_namespace: "faultline-system".into(),
            state_dir: state.path().to_path_buf(),
            tick: Duration::from_millis(100),
            max_fault_duration: Duration::from_secs(7200),
            api_timeout: Duration::from_secs(5),
            exempt_cidrs: Vec::new(),
        },
        Privileged {
            rules: Box::new(RecordingRuleTable::default()),
            signals: Box::new(RecordingSignaller::default()),
            processes: Box::new(TableProcesses::default()),
        },
    )
    .expect("core");
    Harness {
        _state: state,
        agent: Arc::new(NodeAgent::new(core, client)),
        handle,
    }
}

fn fault(extra_status: &Value) -> Fault {
    serde_json::from_value(json!({
        "apiVersion": "faultline.dev/v1alpha1", "kind": "Fault",
        "metadata": {"name": "cut-a", "uid": "uid-1", "resourceVersion": "7",
                     "finalizers": ["other.example/keep", "faultline.dev/node-agents"],
                     "deletionTimestamp": "2026-12-02T07:00:00Z"},
        "spec": {
            "action": "partition",
            "partition": {"mode": "both", "sides": [
                {"name": "a", "nodes": ["n-a1"], "nodeAddresses": ["192.168.1.10"]},
                {"name": "b", "nodes": ["n-b1"], "nodeAddresses": ["192.168.2.10"]},
            ]},
            "deadline": "2026-12-02T08:00:00Z",
            "createdBy": "wire-test",
        },
        "status": extra_status,
    }))
    .expect("fault")
}

#[tokio::test]
async fn status_is_server_side_applied_under_the_nodes_own_field_manager() {
    let mut h = harness();
    h.agent
        .core()
        .journal()
        .update("uid-1", |e| {
            e.name = "cut-a".into();
            e.applied_at = Some("2026-12-02T07:00:00.123Z".into());
            e.rules = Some(3);
        })
        .expect("journal");
    let agent = Arc::clone(&h.agent);
    let push = tokio::spawn(async move { agent.push_statuses().await });
    let seen = next(
        &mut h.handle,
        200,
        &json!({"apiVersion": "faultline.dev/v1alpha1", "kind": "Fault",
        "metadata": {"name": "cut-a"}, "spec": fault(&json!({})).spec}),
    )
    .await;
    push.await.expect("push");
    assert_eq!(seen.method, "PATCH");
    assert_eq!(
        seen.path,
        "/apis/faultline.dev/v1alpha1/faults/cut-a/status"
    );
    assert_eq!(
        seen.query.get("fieldManager").map(String::as_str),
        Some("faultline-agent-n-a1")
    );
    assert_eq!(seen.query.get("force").map(String::as_str), Some("true"));
    assert_eq!(seen.content_type, "application/apply-patch+yaml");
    assert_eq!(
        seen.body,
        json!({
            "apiVersion": "faultline.dev/v1alpha1", "kind": "Fault",
            "status": {"nodes": {"n-a1": {"appliedAt": "2026-12-02T07:00:00.123Z", "rules": 3}}},
        }),
        "only this node's key, nothing else"
    );
    assert!(
        !h.agent.core().journal().get("uid-1").expect("entry").dirty,
        "a successful apply marks the entry reported"
    );
}

#[tokio::test]
async fn facts_are_listed_with_the_right_selectors() {
    let mut h = harness();
    let agent = Arc::clone(&h.agent);
    let facts = tokio::spawn(async move { agent.node_facts(&fault(&json!({}))).await });
    let slices = next(
        &mut h.handle,
        200,
        &json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "metadata": {},
               "items": [{"metadata": {"name": "kubernetes"}, "addressType": "IPv4",
                          "endpoints": [{"addresses": ["192.168.9.1"]}]}]}),
    )
    .await;
    assert_eq!(slices.method, "GET");
    assert_eq!(
        slices.path,
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
    );
    assert_eq!(
        slices.query.get("labelSelector").map(String::as_str),
        Some("kubernetes.io/service-name=kubernetes")
    );
    let pods = next(
        &mut h.handle,
        200,
        &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {},
               "items": [{"metadata": {"name": "cart-0", "namespace": "shop", "uid": "u-cart"},
                          "spec": {"containers": [{"name": "c"}]}}]}),
    )
    .await;
    assert_eq!(pods.path, "/api/v1/pods");
    assert_eq!(
        pods.query.get("fieldSelector").map(String::as_str),
        Some("spec.nodeName=n-a1")
    );
    let facts = facts.await.expect("join").expect("facts");
    assert_eq!(
        facts.api_server_endpoints,
        vec![std::net::Ipv4Addr::new(192, 168, 9, 1)]
    );
    assert_eq!(facts.pods.len(), 1);
    assert_eq!(facts.pods[0].uid, "u-cart");
}

#[tokio::test]
async fn the_finalizer_is_removed_with_a_json_patch_that_tests_its_position() {
    let mut h = harness();
    let agent = Arc::clone(&h.agent);
    // n-b1 applied and never reverted; the agent asks whether it still exists.
    let status = json!({"nodes": {"n-b1": {"appliedAt": "2026-12-02T07:00:00Z"}}});
    let release = tokio::spawn(async move { agent.maybe_release_finalizer(&fault(&status)).await });
    let node = next(&mut h.handle, 404, &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
               "message": "nodes \"n-b1\" not found"}))
    .await;
    assert_eq!(
        (node.method.as_str(), node.path.as_str()),
        ("GET", "/api/v1/nodes/n-b1")
    );
    let patch = next(
        &mut h.handle,
        200,
        &serde_json::to_value(fault(&json!({}))).expect("json"),
    )
    .await;
    release.await.expect("join");
    assert_eq!(patch.method, "PATCH");
    assert_eq!(patch.path, "/apis/faultline.dev/v1alpha1/faults/cut-a");
    assert_eq!(patch.content_type, "application/json-patch+json");
    assert_eq!(
        patch.body,
        json!([
            {"op": "test", "path": "/metadata/finalizers/1", "value": "faultline.dev/node-agents"},
            {"op": "remove", "path": "/metadata/finalizers/1"},
        ])
    );
}

#[tokio::test]
async fn faults_and_halts_are_listed_then_watched_from_the_lists_resource_version() {
    let mut h = harness();
    let agent = Arc::clone(&h.agent);
    let stop = Arc::new(AtomicBool::new(false));
    let run = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move { agent.run(stop).await })
    };
    let mut lists = BTreeMap::new();
    let mut watches = BTreeMap::new();
    for _ in 0..4 {
        let (request, send) = tokio::time::timeout(Duration::from_secs(5), h.handle.next_request())
            .await
            .expect("request in time")
            .expect("request");
        let uri = request.uri().clone();
        let path = uri.path().to_owned();
        let query = uri.query().unwrap_or_default().to_owned();
        let kind = if path.ends_with("/faults") {
            "Fault"
        } else {
            "Halt"
        };
        if query.contains("watch=true") {
            watches.insert(path.clone(), query.clone());
            // An empty watch that ends; the watcher will come back later.
            send.send_response(
                Response::builder()
                    .status(200)
                    .body(Body::from(Vec::new()))
                    .expect("r"),
            );
        } else {
            lists.insert(path.clone(), query.clone());
            send.send_response(
                Response::builder()
                    .status(200)
                    .body(Body::from(
                        json!({"apiVersion": "faultline.dev/v1alpha1", "kind": format!("{kind}List"),
                               "metadata": {"resourceVersion": "41"}, "items": []})
                        .to_string()
                        .into_bytes(),
                    ))
                    .expect("r"),
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    run.abort();
    for resource in ["faults", "halts"] {
        let path = format!("/apis/faultline.dev/v1alpha1/{resource}");
        assert!(lists.contains_key(&path), "{resource} listed: {lists:?}");
        let watch = watches
            .get(&path)
            .unwrap_or_else(|| panic!("{resource} watched: {watches:?}"));
        assert!(watch.contains("resourceVersion=41"), "{watch}");
        assert!(watch.contains("allowWatchBookmarks=true"), "{watch}");
    }
}
