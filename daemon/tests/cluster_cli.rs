//! `chaosctl --kubeconfig/--context` against the in-memory API server served on loopback: halt,
//! resume and the list of Faults, the clear error of an API server that never answers, and the
//! refusal of lab-only commands.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use faultline_experiments::kubernetes::memory_api::MemoryApi;
use serde_json::json;

fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mem\n  cluster:\n    server: {server}\n\
             users:\n- name: mem\n  user: {{}}\ncontexts:\n- name: staging\n  context:\n    cluster: mem\n    user: mem\n\
             current-context: staging\n"
        ),
    )
    .expect("kubeconfig");
    path
}

fn chaosctl(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chaosctl"))
        .env("FAULTLINE_STATE_ROOT", state)
        .args(args)
        .output()
        .expect("run chaosctl")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halt_faults_and_resume_act_on_the_cluster() {
    let api = MemoryApi::new();
    api.put(json!({
        "apiVersion": "faultline.dev/v1alpha1", "kind": "Fault",
        "metadata": {"name": "cut-a"},
        "spec": {"action": "partition", "partition": {"sides": []},
                 "deadline": "2099-01-01T00:00:00Z", "experiment": "chaos/az-failure", "createdBy": "test"},
        "status": {"nodes": {"n-a1": {"appliedAt": "2026-12-02T07:00:00Z", "revertedAt": "2026-12-02T07:00:05Z", "reason": "deadline"}}},
    }));
    let (addr, _server) = api
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = kubeconfig(dir.path(), &format!("http://{addr}"));
    let config = config.to_str().expect("utf8");
    let state = dir.path().join("state");

    let run = |args: &'static [&'static str]| {
        let mut all = vec!["--kubeconfig", config, "--context", "staging"];
        all.extend_from_slice(args);
        let state = state.clone();
        let all: Vec<String> = all.iter().map(|s| (*s).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            chaosctl(&state, &refs)
        })
    };

    let halted = run(&["halt"]).await.expect("join");
    assert!(halted.status.success(), "{}", text(&halted));
    assert!(
        text(&halted).contains("every node reports its faults reverted"),
        "{}",
        text(&halted)
    );
    let halt = api
        .get("faultline.dev/v1alpha1", "halts", None, "halt")
        .expect("Halt object created");
    assert!(halt["spec"]["requestedBy"]
        .as_str()
        .is_some_and(|s| s.starts_with("chaosctl")));

    let again = run(&["halt"]).await.expect("join");
    assert!(text(&again).contains("already halted"), "{}", text(&again));

    let listed = run(&["faults"]).await.expect("join");
    let listing = text(&listed);
    assert!(listing.contains("HALTED"), "{listing}");
    assert!(
        listing.contains("cut-a") && listing.contains("n-a1=deadline"),
        "{listing}"
    );
    assert!(listing.contains("chaos/az-failure"), "{listing}");

    let json_listing = run(&["faults", "--output", "json"]).await.expect("join");
    let parsed: serde_json::Value = serde_json::from_slice(&json_listing.stdout).expect("json");
    assert_eq!(parsed["halted"], true);
    assert_eq!(parsed["faults"][0]["metadata"]["name"], "cut-a");

    let resumed = run(&["resume"]).await.expect("join");
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert!(api
        .get("faultline.dev/v1alpha1", "halts", None, "halt")
        .is_none());
    let not_halted = run(&["resume"]).await.expect("join");
    assert!(
        text(&not_halted).contains("is not halted"),
        "{}",
        text(&not_halted)
    );

    let lab_only = run(&["lab", "status"]).await.expect("join");
    assert!(!lab_only.status.success());
    assert!(
        text(&lab_only).contains("drop --context"),
        "{}",
        text(&lab_only)
    );
}

#[test]
fn an_api_server_that_never_answers_gives_a_clear_error_in_seconds() {
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = kubeconfig(
        dir.path(),
        &format!("http://{}", silent.local_addr().expect("addr")),
    );
    let started = Instant::now();
    let output = chaosctl(
        &dir.path().join("state"),
        &["--kubeconfig", config.to_str().expect("utf8"), "halt"],
    );
    let took = started.elapsed();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("did not answer within 8s"),
        "{}",
        text(&output)
    );
    // A hang would run into the test harness's limit; this bound only says "not a hang".
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_name_on_a_cluster_takes_the_clusters_defaults_or_says_what_to_add() {
    let api = MemoryApi::new();
    let (addr, _server) = api
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = kubeconfig(dir.path(), &format!("http://{addr}"));
    let state = dir.path().join("state");
    let run = move || {
        let (config, state) = (config.clone(), state.clone());
        tokio::task::spawn_blocking(move || {
            chaosctl(
                &state,
                &[
                    "--kubeconfig",
                    config.to_str().expect("utf8"),
                    "run",
                    "pod-failure",
                ],
            )
        })
    };

    // No defaults: refused before anything is created, saying what to add where.
    let refused = run().await.expect("join");
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let message = text(&refused);
    for needle in [
        "`pod-failure` has no kubernetes: section",
        "faultline-system/faultline-cluster-defaults",
        "clusterDefaults.kubernetes",
        "workloads:",
    ] {
        assert!(message.contains(needle), "{needle:?} in {message}");
    }

    // Defaults without the gateway workload that pod-failure kills: validate names the fault
    // and says the section came from the cluster's defaults.
    api.put(json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "faultline-cluster-defaults", "namespace": "faultline-system"},
        "data": {"kubernetes.yaml": "workloads:\n  - {name: web, namespace: shop, selector: {app: web}}\n"}}));
    let incomplete = run().await.expect("join");
    assert_eq!(incomplete.status.code(), Some(2), "{}", text(&incomplete));
    let message = text(&incomplete);
    assert!(
        message.contains("faults[0].selector.service")
            && message.contains("came from the cluster's defaults"),
        "{message}"
    );
    assert!(
        api.list("faultline.dev/v1alpha1", "experiments").is_empty(),
        "nothing created"
    );
}
