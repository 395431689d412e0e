//! The real `faultlined controller` and `faultlined run` processes against the in-memory API
//! server served on loopback (through a kubeconfig, as on a cluster): the controller reads its
//! own pod for the runner image, takes the Lease, starts a runner Job for an Experiment, serves
//! `/runs` from its reports directory, and on SIGTERM gives the Lease up; the runner fails an
//! Experiment it cannot run and says why in the status.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use faultline_experiments::kubernetes::memory_api::MemoryApi;
use serde_json::{json, Value};

const FL: &str = "faultline.dev/v1alpha1";
const NS: &str = "faultline-system";
const WAIT: Duration = Duration::from_secs(20);

/// Kills the process on drop (by its PID), so a failing test leaves nothing running.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kubeconfig(dir: &Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mem\n  cluster:\n    server: {server}\n\
             users:\n- name: mem\n  user: {{}}\ncontexts:\n- name: mem\n  context:\n    cluster: mem\n    user: mem\n    namespace: shop\n\
             current-context: mem\n"
        ),
    )
    .expect("kubeconfig");
    path
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < WAIT, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// Starts `faultlined controller` and returns it with the address its log says it serves on.
fn start_controller(config: &Path, reports: &Path) -> (Process, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_faultlined"))
        .args(["controller", "--kubeconfig"])
        .arg(config)
        .args([
            "--identity",
            "ctl-0",
            "--namespace",
            NS,
            "--listen",
            "127.0.0.1:0",
        ])
        .args([
            "--lease-duration",
            "2s",
            "--renew-every",
            "300ms",
            "--tick",
            "200ms",
        ])
        .arg("--reports-dir")
        .arg(reports)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn faultlined controller");
    let stderr = child.stderr.take().expect("stderr");
    let controller = Process(child);
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut log = Vec::new();
    let mut listen = None;
    let start = Instant::now();
    while listen.is_none() {
        assert!(
            start.elapsed() < WAIT,
            "no 'serving reports' line: {log:#?}"
        );
        if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(100)) {
            listen = line
                .split(" on ")
                .nth(1)
                .and_then(|rest| rest.split(';').next())
                .map(str::to_owned);
            log.push(line);
        }
    }
    (controller, listen.expect("address"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_process_elects_starts_a_runner_serves_reports_and_releases_on_sigterm() {
    let api = MemoryApi::new();
    let (addr, server) = api
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = kubeconfig(dir.path(), &format!("http://{addr}"));
    let reports = dir.path().join("reports");
    std::fs::create_dir_all(reports.join("pod-failure-nightly-1")).expect("run dir");
    std::fs::write(
        reports.join("pod-failure-nightly-1/report.json"),
        json!({"status": "valid", "score": 99}).to_string(),
    )
    .expect("report");
    api.put(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "ctl-0", "namespace": NS},
        "spec": {"containers": [{"name": "controller", "image": "registry.example/faultlined:9"}]}}));

    let (controller, listen) = start_controller(&config, &reports);

    let mut spec = serde_json::to_value(
        faultline_experiments::spec::catalog::spec("pod-failure").expect("catalog"),
    )
    .expect("json");
    spec["target"] = json!("kubernetes");
    api.put(json!({"apiVersion": FL, "kind": "Experiment",
        "metadata": {"name": "nightly", "namespace": "shop"}, "spec": spec}));
    wait_until("a runner Job", || !api.list("batch/v1", "jobs").is_empty()).await;
    let job = &api.list("batch/v1", "jobs")[0];
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["image"], "registry.example/faultlined:9",
        "the runner runs the controller's own image"
    );
    let lease = api
        .get(
            "coordination.k8s.io/v1",
            "leases",
            Some(NS),
            "faultline-controller",
        )
        .expect("lease");
    assert_eq!(lease["spec"]["holderIdentity"], "ctl-0");

    let (code, body) = http_get(&listen, "/runs").await;
    assert_eq!(code, 200, "{body}");
    let runs: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(runs[0]["id"], "pod-failure-nightly-1");
    assert_eq!(runs[0]["score"], 99);
    let (code, _) = http_get(&listen, "/runs/pod-failure-nightly-1/report.json").await;
    assert_eq!(code, 200);
    let (code, body) = http_get(&listen, "/runs/pod-failure-nightly-1/report.html").await;
    assert_eq!(code, 404);
    assert!(body.contains("no report.html"), "{body}");
    let (code, _) = http_get(&listen, "/runs/..%2F..%2Fetc/report.json").await;
    assert_eq!(code, 404);

    // SIGTERM: the controller stops and gives the Lease up.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(controller.0.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let mut controller = controller;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = controller.0.try_wait().expect("wait") {
            break status;
        }
        assert!(start.elapsed() < WAIT, "still running after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let lease = api
        .get(
            "coordination.k8s.io/v1",
            "leases",
            Some(NS),
            "faultline-controller",
        )
        .expect("lease");
    assert!(
        lease["spec"]["holderIdentity"].is_null(),
        "released: {lease}"
    );

    // The runner the Job would start, as a process: it cannot run this build's cluster engine
    // (or this spec), and the status says why; nothing passes.
    let output = Command::new(env!("CARGO_BIN_EXE_faultlined"))
        .args(["run", "--experiment", "shop/nightly", "--kubeconfig"])
        .arg(&config)
        .arg("--reports-dir")
        .arg(&reports)
        .output()
        .expect("faultlined run");
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let status = &api
        .get(FL, "experiments", Some("shop"), "nightly")
        .expect("experiment")["status"];
    assert_eq!(status["phase"], "Failed", "{status}");
    assert!(
        status["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{status}"
    );
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaosctl_report_and_runs_go_through_the_api_servers_service_proxy() {
    let api = MemoryApi::new();
    let (addr, server) = api
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = kubeconfig(dir.path(), &format!("http://{addr}"));
    let reports = dir.path().join("reports");
    let run = reports.join("az-failure-nightly-20261202T100000");
    std::fs::create_dir_all(&run).expect("run dir");
    std::fs::write(run.join("report.html"), "<!doctype html><p>az</p>").expect("html");
    std::fs::write(
        run.join("report.json"),
        json!({"status": "invalid", "score": 12}).to_string(),
    )
    .expect("json");
    let (backend, reports_server) = faultline_daemon::controller::reports::serve(
        reports.clone(),
        "127.0.0.1:0".parse().expect("addr"),
        None,
    )
    .await
    .expect("reports");
    api.proxy_service(NS, "faultline-controller", "http", backend);

    let root = dir.path().to_path_buf();
    let chaosctl = move |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_chaosctl"))
            .env("FAULTLINE_STATE_ROOT", root.join("state"))
            .current_dir(&root)
            .arg("--kubeconfig")
            .arg(&config)
            .args(args)
            .output()
            .expect("chaosctl")
    };
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let saved = tokio::task::spawn_blocking({
        let chaosctl = chaosctl.clone();
        move || chaosctl(&["report", "az-failure-nightly-20261202T100000"])
    })
    .await
    .expect("join");
    assert!(saved.status.success(), "{}", text(&saved));
    assert_eq!(
        std::fs::read_to_string(
            dir.path()
                .join("az-failure-nightly-20261202T100000.report.html")
        )
        .expect("saved"),
        "<!doctype html><p>az</p>"
    );
    let runs = tokio::task::spawn_blocking({
        let chaosctl = chaosctl.clone();
        move || chaosctl(&["runs"])
    })
    .await
    .expect("join");
    assert!(runs.status.success(), "{}", text(&runs));
    assert!(
        text(&runs).contains("az-failure-nightly-20261202T100000")
            && text(&runs).contains("invalid"),
        "{}",
        text(&runs)
    );
    let proxied = api
        .requests()
        .into_iter()
        .filter(|r| r.uri.contains("/services/faultline-controller:http/proxy/"))
        .count();
    assert_eq!(proxied, 2, "both went through the service proxy");

    let missing = tokio::task::spawn_blocking({
        let chaosctl = chaosctl.clone();
        move || chaosctl(&["report", "no-such-run", "--format", "json"])
    })
    .await
    .expect("join");
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing).contains("no-such-run"), "{}", text(&missing));

    let no_controller = tokio::task::spawn_blocking(move || {
        chaosctl(&["--faultline-namespace", "elsewhere", "runs"])
    })
    .await
    .expect("join");
    assert_eq!(no_controller.status.code(), Some(2));
    assert!(
        text(&no_controller).contains("is `faultlined controller` running"),
        "{}",
        text(&no_controller)
    );
    reports_server.abort();
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaosctl_run_on_a_cluster_creates_the_experiment_and_exits_with_its_verdict() {
    let api = MemoryApi::new();
    let (addr, server) = api
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = kubeconfig(dir.path(), &format!("http://{addr}"));
    let mut spec = faultline_experiments::spec::catalog::spec("pod-failure").expect("catalog");
    spec.target = faultline_experiments::spec::Target::Kubernetes;
    let mut value = serde_json::to_value(&spec).expect("json");
    value["kubernetes"] = json!({"workloads": [
        {"name": "gateway", "namespace": "shop", "selector": {"app": "gateway"}}]});
    let file = dir.path().join("pod-failure.yaml");
    std::fs::write(&file, serde_yaml::to_string(&value).expect("yaml")).expect("spec file");

    // The controller and the runner, as far as chaosctl can tell: the status moves to a verdict.
    let judge = {
        let api = api.clone();
        tokio::spawn(async move {
            loop {
                if let Some(mut experiment) = api.list(FL, "experiments").into_iter().next() {
                    experiment["status"] = json!({"phase": "Succeeded", "verdict": "valid",
                        "score": 97, "exitCode": 0, "runId": "pod-failure-x-1",
                        "verdicts": [{"name": "recovery", "status": "valid", "summary": "recovered in 4 s"}]});
                    api.put(experiment.clone());
                    return experiment;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_chaosctl"))
            .env("FAULTLINE_STATE_ROOT", dir.path().join("state"))
            .arg("--kubeconfig")
            .arg(&config)
            .args(["-n", "team-a", "run"])
            .arg(&file)
            .output()
            .expect("chaosctl")
    })
    .await
    .expect("join");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.status.code(), Some(0), "{text}");
    assert!(text.contains("verdict: valid (score 97)"), "{text}");
    assert!(text.contains("report pod-failure-x-1"), "{text}");
    let experiment = judge.await.expect("judge");
    assert_eq!(
        experiment["metadata"]["namespace"], "team-a",
        "-n picks the namespace"
    );
    assert_eq!(experiment["spec"]["target"], "kubernetes");
    assert_eq!(
        experiment["spec"]["kubernetes"]["workloads"][0]["name"],
        "gateway"
    );
    server.abort();
}
