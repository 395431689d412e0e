//! The cluster run end to end (issue 9's acceptance): the runner's real engine
//! (`EngineOnCluster`, through `run_experiment` as `faultlined run` calls it) against the
//! in-memory API, with three REAL nats-server processes in a JetStream cluster standing in for
//! the NATS pods: on 127.0.0.11, .12 and .13 (the pods' IPs), the same ports on each, registered
//! as pods `nats-0..2` on nodes in zones a, b and c. The gateway workload's pods are API objects
//! only (a ReplicaSet the in-memory controllers replace and mark Ready after a delay).
//!
//! A test agent thread stands in for the node agents: it watches the Fault objects and applies
//! them for real to the nats-server PIDs (pause: SIGSTOP, then SIGCONT; stop: SIGKILL, then a
//! restart; kill: SIGKILL and a restart), reverts at the deadline or on deletion, and clears the
//! agents' finalizer as the real agents do. Partitions need the real agent (netlink in node
//! namespaces) and are left to `agent_real.rs`; the plan-level tests of every catalog scenario
//! are in `experiments/tests/kube_cluster_target.rs`.
//!
//! Every request the runner made is then authorized against its RBAC in `manifests/`, as the
//! API server would. Every process is killed by PID on every path (the guards below).

mod manifests_common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use faultline_daemon::run::{run_experiment, EngineOnCluster};
use faultline_experiments::kubernetes::memory_api::{MemoryApi, WorkloadControllers};
use faultline_experiments::spec::{ExperimentSpec, Probe};
use manifests_common::rbac::{allows, attributes, rules_of, Attributes};
use manifests_common::the_object;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

const FL: &str = "faultline.dev/v1alpha1";
const IPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(127, 0, 0, 11),
    Ipv4Addr::new(127, 0, 0, 12),
    Ipv4Addr::new(127, 0, 0, 13),
];
/// How long a replacement gateway pod takes to be Ready. Ready conditions carry whole seconds,
/// so time to ready is asserted against a third of it.
const READY_DELAY: Duration = Duration::from_millis(1500);

/// A port free on all three addresses at once, other than `taken`.
fn port_free_on_all(taken: &[u16]) -> u16 {
    for _ in 0..100 {
        let Ok(first) = TcpListener::bind((IPS[0], 0)) else {
            continue;
        };
        let port = first.local_addr().expect("addr").port();
        if taken.contains(&port) {
            continue;
        }
        let rest: Vec<TcpListener> = IPS[1..]
            .iter()
            .filter_map(|ip| TcpListener::bind((*ip, port)).ok())
            .collect();
        if rest.len() == 2 {
            return port;
        }
    }
    panic!("no port free on 127.0.0.11-13 after 100 tries");
}

/// `GET path` on `ip:port`, the body of a 200 answer.
fn http_get(ip: Ipv4Addr, port: u16, path: &str) -> Option<String> {
    let mut stream =
        TcpStream::connect_timeout(&(ip, port).into(), Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_owned()))
}

fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Three nats-server processes in one JetStream cluster. Every process (also the ones the test
/// agent restarts) is killed by PID on drop.
struct NatsCluster {
    dir: tempfile::TempDir,
    client: u16,
    monitor: u16,
    routes: u16,
    servers: Mutex<Vec<Option<Child>>>,
}

impl NatsCluster {
    fn start() -> Arc<Self> {
        let client = port_free_on_all(&[]);
        let monitor = port_free_on_all(&[client]);
        let routes = port_free_on_all(&[client, monitor]);
        let cluster = Arc::new(Self {
            dir: tempfile::tempdir().expect("tempdir"),
            client,
            monitor,
            routes,
            servers: Mutex::new(vec![None, None, None]),
        });
        for i in 0..3 {
            cluster.spawn(i);
        }
        wait_until(Duration::from_secs(30), "a JetStream meta leader", || {
            (0..3).all(|i| {
                http_get(IPS[i], monitor, "/jsz").is_some_and(|body| {
                    serde_json::from_str::<Value>(&body).is_ok_and(|v| {
                        v["meta_cluster"]["leader"]
                            .as_str()
                            .is_some_and(|l| !l.is_empty())
                    })
                })
            })
        });
        cluster
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("nats-{i}.log"))
    }

    /// Starts server `i` (again): same name, address, ports and store.
    fn spawn(&self, i: usize) {
        let routes: Vec<String> = IPS
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, ip)| format!("nats://{ip}:{}", self.routes))
            .collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(i))
            .expect("log");
        let child = Command::new("nats-server")
            .arg(format!("--addr={}", IPS[i]))
            .arg(format!("--port={}", self.client))
            .arg(format!("--http_port={}", self.monitor))
            .arg(format!("--server_name=nats-{i}"))
            .arg("--jetstream")
            .arg(format!(
                "--store_dir={}",
                self.dir.path().join(format!("store-{i}")).display()
            ))
            .arg("--cluster_name=fl-cluster-run")
            .arg(format!("--cluster=nats://{}:{}", IPS[i], self.routes))
            .arg(format!("--routes={}", routes.join(",")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("nats-server is not installed: run scripts/setup.sh");
        let mut servers = self.servers.lock().expect("servers");
        if let Some(mut old) = servers[i].take() {
            let _ = old.kill();
            let _ = old.wait();
        }
        servers[i] = Some(child);
    }

    fn pid(&self, i: usize) -> Option<Pid> {
        let servers = self.servers.lock().expect("servers");
        servers[i]
            .as_ref()
            .map(|c| Pid::from_raw(i32::try_from(c.id()).expect("pid")))
    }

    fn signal(&self, i: usize, signal: Signal) {
        if let Some(pid) = self.pid(i) {
            let _ = kill(pid, signal);
        }
    }

    /// SIGKILL server `i` and reap it.
    fn kill_now(&self, i: usize) {
        let mut servers = self.servers.lock().expect("servers");
        if let Some(mut child) = servers[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process state letter from `/proc/PID/stat` (`T`: stopped).
    fn state(&self, i: usize) -> Option<char> {
        let pid = self.pid(i)?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.chars().next()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        let servers = self.servers.get_mut().unwrap_or_else(|e| e.into_inner());
        for child in servers.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the test agent did, in order.
type AgentLog = Arc<Mutex<Vec<String>>>;

/// The node agents' part, for the NATS pods: applies each Fault to the nats-server PID of its
/// pod, reverts it at its deadline or on deletion, and then clears the finalizer. Stopped (and
/// everything still applied reverted) on drop.
struct TestAgent {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    log: AgentLog,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Applied {
    Paused(usize),
    Stopped(usize),
    Killed,
}

impl TestAgent {
    fn start(api: MemoryApi, nats: Arc<NatsCluster>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let log: AgentLog = Arc::default();
        let thread = {
            let (stop, log) = (Arc::clone(&stop), Arc::clone(&log));
            std::thread::spawn(move || agent_loop(&api, &nats, &stop, &log))
        };
        Self {
            stop,
            thread: Some(thread),
            log,
        }
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn revert(nats: &NatsCluster, applied: Applied) {
    match applied {
        Applied::Paused(i) => nats.signal(i, Signal::SIGCONT),
        Applied::Stopped(i) => nats.spawn(i),
        Applied::Killed => {}
    }
}

fn agent_loop(api: &MemoryApi, nats: &NatsCluster, stop: &AtomicBool, log: &AgentLog) {
    let mut applied: BTreeMap<String, Option<Applied>> = BTreeMap::new();
    let note = |line: String| log.lock().expect("log").push(line);
    while !stop.load(Ordering::SeqCst) {
        for mut fault in api.list(FL, "faults") {
            let name = fault["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let deleting = fault["metadata"]["deletionTimestamp"].is_string();
            let expired = fault["spec"]["deadline"]
                .as_str()
                .and_then(|d| humantime::parse_rfc3339(d).ok())
                .is_some_and(|deadline| deadline <= SystemTime::now());
            let action = fault["spec"]["action"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let pod = fault["spec"]["pod"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let server = pod
                .strip_prefix("nats-")
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|n| *n < 3);
            if !applied.contains_key(&name) && !deleting && !expired {
                let done = match (action.as_str(), server) {
                    ("pause", Some(i)) => {
                        nats.signal(i, Signal::SIGSTOP);
                        Some(Applied::Paused(i))
                    }
                    ("stop", Some(i)) => {
                        nats.kill_now(i);
                        Some(Applied::Stopped(i))
                    }
                    ("kill", Some(i)) => {
                        nats.kill_now(i);
                        nats.spawn(i);
                        Some(Applied::Killed)
                    }
                    _ => None,
                };
                note(format!("apply {name} {action} {pod}"));
                applied.insert(name.clone(), done);
            }
            if deleting || expired {
                if let Some(Some(done)) = applied.get(&name).copied() {
                    revert(nats, done);
                    note(format!("revert {name} {action} {pod}"));
                    applied.insert(name.clone(), None);
                }
            }
            if deleting {
                fault["metadata"]["finalizers"] = json!([]);
                api.put(fault);
                api.remove(FL, "faults", None, &name);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for done in applied.into_values().flatten() {
        revert(nats, done);
    }
}

/// Nodes a1..c2 in zones a, b, c; NATS pods nats-0..2 (StatefulSet) on a1, b1, c1 at the
/// servers' addresses; gateway pods (ReplicaSet) on a2, b2, c2.
fn cluster() -> MemoryApi {
    let api = MemoryApi::new();
    api.enable_workload_controllers(WorkloadControllers {
        ready_delay: READY_DELAY,
    });
    for (zone, name, address) in [
        ("a", "a1", "10.203.1.1"),
        ("a", "a2", "10.203.1.2"),
        ("b", "b1", "10.203.2.1"),
        ("b", "b2", "10.203.2.2"),
        ("c", "c1", "10.203.3.1"),
        ("c", "c2", "10.203.3.2"),
    ] {
        api.put(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
            "status": {"addresses": [{"type": "InternalIP", "address": address}]}}));
    }
    let ready = json!([{"type": "Ready", "status": "True",
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]);
    for (i, node) in ["a1", "b1", "c1"].iter().enumerate() {
        api.put(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("nats-{i}"), "namespace": "nats",
                "labels": {"app": "nats"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet",
                    "name": "nats", "uid": "sts-uid", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "nats", "image": "nats:2.9"}]},
            "status": {"phase": "Running", "podIP": IPS[i].to_string(), "conditions": ready}}));
    }
    for (name, node) in [("gw-a", "a2"), ("gw-b", "b2"), ("gw-c", "c2")] {
        api.put(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "shop", "generateName": "gateway-rs-",
                "labels": {"app": "gateway"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "gateway-rs", "uid": "rs-uid", "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "gw", "image": "gw:1"}]},
            "status": {"phase": "Running", "podIP": "10.244.9.9", "conditions": ready}}));
    }
    api
}

/// A pod delete of one gateway replica, then a quorum loss of the tenant streams by pausing a
/// majority of their peers (the leader first): what the agents can do here without netlink.
fn spec(nats: &NatsCluster) -> ExperimentSpec {
    let yaml = format!(
        r"
name: cluster-run
description: a gateway pod deleted, then the tenant streams' quorum paused, on a cluster
target: kubernetes
workload: {{tenants: 8, rate: 40, adapter: nats}}
faults:
  - kind: kill
    selector: {{service: gateway, replica: random}}
    start: 1s
  - kind: quorum-loss
    mode: pause
    selector: {{stream: tenants}}
    start: 2s
    duration: 4s
baseline: 4s
duration: 40s
recovery_deadline: 15s
settle: 10s
slo: {{max_ttr: 30s}}
kubernetes:
  workloads:
    - {{name: gateway, namespace: shop, selector: {{app: gateway}}}}
  nats: {{namespace: nats, selector: {{app: nats}}, monitor_port: {}, client_port: {}}}
  kill_mode: delete
",
        nats.monitor, nats.client
    );
    let mut spec = ExperimentSpec::parse(&yaml, "cluster-run.yaml").expect("a cluster spec");
    spec.steady_state.probes = vec![Probe::NatsStreamHealth];
    spec.validate("cluster-run.yaml").expect("valid");
    spec
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runner_runs_an_experiment_on_the_cluster_against_real_nats_servers() {
    let nats = NatsCluster::start();
    let api = cluster();
    let controllers = api.spawn_controllers(Duration::from_millis(100));
    let agent = TestAgent::start(api.clone(), Arc::clone(&nats));
    let spec = spec(&nats);
    api.put(json!({"apiVersion": FL, "kind": "Experiment",
        "metadata": {"name": "first", "namespace": "shop"},
        "spec": serde_json::to_value(&spec).expect("json")}));
    let reports = tempfile::tempdir().expect("tempdir");

    let started = Instant::now();
    let outcome = run_experiment(
        api.client(),
        "shop/first",
        "faultline-system",
        reports.path(),
        Duration::from_secs(5),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(EngineOnCluster {
            api_timeout: Duration::from_secs(5),
            monitor_timeout: Duration::from_secs(2),
            ..EngineOnCluster::default()
        }),
    )
    .await
    .expect("the runner ran");
    eprintln!(
        "run took {:.1} s; exit code {}; agent: {:?}",
        started.elapsed().as_secs_f64(),
        outcome.exit_code,
        agent.log()
    );

    // The Experiment ends with a verdict (NATS 2.9 may lose or duplicate under quorum loss:
    // docs/findings.md; either verdict is a real one), never an error.
    let status = api
        .get(FL, "experiments", Some("shop"), "first")
        .expect("experiment")["status"]
        .clone();
    let phase = status["phase"].as_str().unwrap_or_default();
    assert!(
        phase == "Succeeded" || phase == "Failed",
        "phase {phase}: {status}"
    );
    assert!(outcome.exit_code <= 1, "a verdict, not an error: {status}");
    let verdicts = status["verdicts"].as_array().cloned().unwrap_or_default();
    assert!(verdicts.len() >= 3, "verdicts in the status: {status}");
    assert!(status["score"].is_u64(), "{status}");
    assert_eq!(
        status["faultWindows"].as_array().map(Vec::len),
        Some(2),
        "the fault windows in the status: {status}"
    );

    let run_id = status["runId"].as_str().expect("run id");
    let dir = reports.path().join(run_id);
    assert_history_and_report(&dir);
    assert_faults_recorded(&dir);
    assert_healed(&api, &agent, &nats);
    assert_runner_rbac_allows_every_request(&api);
    drop(agent);
    controllers.abort();
}

/// The checkers ran on a real history, and the reports are there.
fn assert_history_and_report(dir: &Path) {
    let history = lines(&dir.join("history.jsonl"));
    let ops = history
        .iter()
        .filter(|l| l["tenant"].is_string() && l["kind"].is_string())
        .count();
    assert!(ops > 50, "{ops} operations in the history");
    let nodes: std::collections::BTreeSet<&str> =
        history.iter().filter_map(|l| l["node"].as_str()).collect();
    assert!(
        nodes.iter().any(|n| ["a1", "b1", "c1"].contains(n)),
        "operations name the NATS pods' nodes: {nodes:?}"
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).expect("report.json"))
            .expect("json");
    assert!(
        report["verdicts"].as_array().is_some_and(|v| !v.is_empty()),
        "{report}"
    );
    assert!(dir.join("report.html").is_file() && dir.join("report.xml").is_file());
}

/// Both faults were injected and healed, with their windows and time to ready recorded.
fn assert_faults_recorded(dir: &Path) {
    let record: Value =
        serde_json::from_slice(&std::fs::read(dir.join("run.json")).expect("run.json"))
            .expect("json");
    let injected = record["injected"].as_array().cloned().unwrap_or_default();
    assert_eq!(injected.len(), 2, "{record}");
    for fault in &injected {
        assert!(fault["end_ns"].is_u64(), "healed: {fault}");
        assert!(!fault["fault_ids"].as_array().expect("ids").is_empty());
    }
    let kill = injected.iter().find(|f| f["kind"] == "kill").expect("kill");
    let ready_ms = kill["time_to_ready_ms"].as_u64().expect("time to ready");
    assert!(
        ready_ms >= READY_DELAY.as_millis() as u64 / 3 && ready_ms < 30_000,
        "the replacement became Ready after the controllers' delay: {ready_ms} ms"
    );
    let quorum = injected
        .iter()
        .find(|f| f["kind"] == "quorum-loss")
        .expect("quorum loss");
    assert_eq!(
        quorum["fault_ids"].as_array().map(Vec::len),
        Some(2),
        "a majority of 3 paused: {quorum}"
    );
    let windows = lines(&dir.join("observations.jsonl"))
        .into_iter()
        .filter(|o| o["fault_id"].is_string())
        .count();
    assert!(windows >= 2, "fault windows in the observations");
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.join("report.json")).expect("report.json"))
            .expect("json");
    let experiment_faults = report["experiment"]["faults"].to_string();
    assert!(
        experiment_faults.contains("replacements Ready after"),
        "{experiment_faults}"
    );
}

/// The agent really paused two servers and resumed them; nothing is left behind.
fn assert_healed(api: &MemoryApi, agent: &TestAgent, nats: &NatsCluster) {
    let log = agent.log();
    assert_eq!(
        log.iter()
            .filter(|l| l.starts_with("apply") && l.contains(" pause "))
            .count(),
        2,
        "{log:?}"
    );
    assert_eq!(
        log.iter()
            .filter(|l| l.starts_with("revert") && l.contains(" pause "))
            .count(),
        2,
        "{log:?}"
    );
    wait_until(Duration::from_secs(5), "every Fault gone", || {
        api.list(FL, "faults").is_empty()
    });
    for (i, ip) in IPS.iter().enumerate() {
        assert_ne!(nats.state(i), Some('T'), "nats-{i} is still stopped");
        assert!(
            http_get(*ip, nats.monitor, "/varz").is_some(),
            "nats-{i} answers again"
        );
    }
}

/// Every request the runner made (the test agent and the controllers act on the in-memory API
/// directly) is one the runner's ClusterRole or Role in `manifests/` allows.
fn assert_runner_rbac_allows_every_request(api: &MemoryApi) {
    let mut rules = rules_of(&the_object("ClusterRole", "faultline-runner"));
    rules.extend(rules_of(&the_object("Role", "faultline-runner")));
    let seen: BTreeSet<Attributes> = api.requests().iter().map(attributes).collect();
    assert!(
        seen.iter()
            .any(|r| r.resource == "faults" && r.verb == "create"),
        "the runner's requests are logged: {seen:#?}"
    );
    let denied: Vec<&Attributes> = seen
        .iter()
        .filter(|request| !rules.iter().any(|rule| allows(rule, request)))
        .collect();
    assert!(
        denied.is_empty(),
        "manifests/faultline-runner-rbac.yaml denies requests the runner makes: {denied:#?}"
    );
}
