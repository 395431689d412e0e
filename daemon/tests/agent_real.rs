//! The real `faultlined agent` process against the in-memory API server served over loopback
//! HTTP, acting on real kernel objects: partition rules (nf_tables over netlink) in a real network
//! namespace standing in for the node's own, and SIGSTOP/SIGCONT of a real process placed in a
//! kubelet-shaped cgroup. The agent is killed with SIGKILL mid-fault and restarted; the real
//! controller is killed with SIGKILL mid-experiment and the agent still heals at the deadline.
//!
//! Needs root (skips with a message otherwise). The node's namespace is `fl-ag<pid>-<n>`, passed
//! with `--host-netns`, so nothing touches the host's own namespace. Every namespace, cgroup and
//! process is removed by a guard, on failure too.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use faultline_experiments::kubernetes::memory_api::MemoryApi;
use faultline_injectors::net_partition::{NetlinkRuleTable, RuleTable};
use faultline_injectors::process::read_proc_stat;
use serde_json::{json, Value};

const FAULTS: &str = "faultline.dev/v1alpha1";

/// One real agent at a time: an agent reconciles every pod process on the machine (it owns its
/// node), so two agents at once would continue each other's paused processes.
static ONE_NODE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn root_or_skip(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipping {test}: it needs root for network namespaces, cgroups and signals");
    false
}

fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}-{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace standing in for the node's own; deleted on drop.
struct NodeNetns(String);

impl NodeNetns {
    fn new() -> Self {
        let name = unique("fl-ag");
        let status = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip netns add");
        assert!(status.success(), "ip netns add {name}");
        Self(name)
    }

    fn rules(&self) -> Vec<String> {
        NetlinkRuleTable::new("/run/netns")
            .list_ours(&self.0)
            .expect("list rules")
            .iter()
            .map(|r| format!("{}/{} {}", r.destination, r.prefix_len, r.priority))
            .collect()
    }
}

impl Drop for NodeNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A process in a kubelet-shaped cgroup (`kubepods/besteffort/pod<uid>/<container>`) under a
/// test-only parent in a v1 hierarchy; killed and removed on drop.
struct PodProcess {
    child: Child,
    cgroups: Vec<PathBuf>,
}

impl PodProcess {
    fn start(uid: &str) -> Option<Self> {
        let hierarchy = ["pids", "freezer", "cpu"]
            .iter()
            .map(|c| Path::new("/sys/fs/cgroup").join(c))
            .find(|p| p.join("cgroup.procs").exists())?;
        let parent = hierarchy.join(unique("fl-test-agent-"));
        let pod = parent
            .join("kubepods")
            .join("besteffort")
            .join(format!("pod{uid}"));
        let container = pod.join("0123456789abcdef");
        fs::create_dir_all(&container).expect("create cgroups");
        let child = Command::new("sleep")
            .arg("300")
            .stdin(Stdio::null())
            .spawn()
            .expect("sleep");
        fs::write(container.join("cgroup.procs"), child.id().to_string())
            .expect("move into cgroup");
        Some(Self {
            child,
            cgroups: vec![
                container,
                pod.clone(),
                pod.parent().expect("qos").to_path_buf(),
                parent.join("kubepods"),
                parent,
            ],
        })
    }

    fn state(&self) -> char {
        read_proc_stat(Path::new("/proc"), self.child.id() as i32).map_or('?', |s| s.state)
    }
}

impl Drop for PodProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for dir in &self.cgroups {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// The in-memory API served on loopback, and a kubeconfig pointing at it.
struct Cluster {
    api: MemoryApi,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    _server: tokio::task::JoinHandle<()>,
}

impl Cluster {
    async fn start() -> Self {
        let api = MemoryApi::new();
        api.put(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n-a1"}}));
        api.put(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n-b1"}}));
        let (addr, server) = api
            .serve("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("serve");
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: mem\n  cluster:\n    server: http://{addr}\n\
                 users:\n- name: mem\n  user: {{}}\ncontexts:\n- name: mem\n  context:\n    cluster: mem\n    user: mem\n\
                 current-context: mem\n"
            ),
        )
        .expect("kubeconfig");
        Self {
            api,
            kubeconfig,
            _dir: dir,
            _server: server,
        }
    }

    async fn create(&self, object: Value) {
        let client = self.api.client();
        let request = http::Request::post("/apis/faultline.dev/v1alpha1/faults")
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&object).expect("json"))
            .expect("request");
        let _: Value = client.request(request).await.expect("create");
    }

    async fn delete_fault(&self, name: &str) {
        let request = http::Request::delete(format!("/apis/faultline.dev/v1alpha1/faults/{name}"))
            .body(Vec::new())
            .expect("request");
        let _: Value = self.api.client().request(request).await.expect("delete");
    }

    fn node_status(&self, fault: &str) -> Value {
        self.api
            .get(FAULTS, "faults", None, fault)
            .map_or(Value::Null, |f| f["status"]["nodes"]["n-a1"].clone())
    }
}

/// A running `faultlined agent` for node `n-a1`; SIGKILLed on drop.
struct Agent {
    child: Child,
}

impl Agent {
    fn start(cluster: &Cluster, node: &NodeNetns, state: &Path, health: u16) -> Self {
        let binary = env!("CARGO_BIN_EXE_faultlined");
        let child = Command::new(binary)
            .args(["agent", "--node-name", "n-a1", "--pod-uid", "agent-uid"])
            .arg("--state-dir")
            .arg(state.join("state"))
            .arg("--netns-dir")
            .arg(state.join("netns"))
            .arg("--host-netns")
            .arg(Path::new("/run/netns").join(&node.0))
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .args([
                "--health-addr",
                &format!("127.0.0.1:{health}"),
                "--tick",
                "200ms",
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("start faultlined agent");
        Self { child }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let status = self.child.wait().expect("wait");
        std::mem::forget(self);
        status
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let attempt = || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    };
    attempt().unwrap_or_else(|e| format!("GET {path} on port {port} failed: {e}"))
}

async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn deadline_in(from_now: Duration) -> String {
    humantime::format_rfc3339_millis(SystemTime::now() + from_now).to_string()
}

fn partition(name: &str, deadline: &str) -> Value {
    json!({
        "apiVersion": FAULTS, "kind": "Fault",
        "metadata": {"name": name, "finalizers": ["faultline.dev/node-agents"]},
        "spec": {
            "action": "partition",
            "partition": {"sides": [
                {"name": "a", "nodes": ["n-a1"], "nodeAddresses": ["10.203.91.1"]},
                {"name": "b", "nodes": ["n-b1"], "nodeAddresses": ["10.203.92.1"], "podCIDRs": ["10.203.192.0/24"]},
            ]},
            "deadline": deadline,
            "prioritySlot": 11,
            "createdBy": "agent-real-test",
            "overrides": {"isolateControlPlane": true, "allowNodeIsolation": true},
        },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_agent_installs_rules_survives_sigkill_and_heals_a_fault_deleted_while_down() {
    if !root_or_skip(
        "real_agent_installs_rules_survives_sigkill_and_heals_a_fault_deleted_while_down",
    ) {
        return;
    }
    let _one_node = ONE_NODE.lock().await;
    let cluster = Cluster::start().await;
    let node = NodeNetns::new();
    let state = tempfile::tempdir().expect("state");
    let health = free_port();
    let agent = Agent::start(&cluster, &node, state.path(), health);

    cluster
        .create(partition("cut", &deadline_in(Duration::from_secs(120))))
        .await;
    eventually(
        "rules in the node's namespace",
        Duration::from_secs(10),
        || node.rules().len() == 2,
    )
    .await;
    assert_eq!(
        node.rules(),
        vec!["10.203.92.1/32 24011", "10.203.192.0/24 24011"]
    );
    eventually("appliedAt reported", Duration::from_secs(20), || {
        cluster.node_status("cut")["appliedAt"].is_string()
    })
    .await;
    let healthz = http_get(health, "/healthz");
    assert!(healthz.starts_with("HTTP/1.1 200"), "{healthz}");
    let readyz = http_get(health, "/readyz");
    assert!(readyz.starts_with("HTTP/1.1 200"), "{readyz}");

    agent.kill();
    cluster.delete_fault("cut").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(node.rules().len(), 2, "no agent, no heal");

    let agent = Agent::start(&cluster, &node, state.path(), health);
    eventually("healed at restart", Duration::from_secs(10), || {
        node.rules().is_empty()
    })
    .await;
    eventually("finalizer released", Duration::from_secs(10), || {
        cluster.api.get(FAULTS, "faults", None, "cut").is_none()
    })
    .await;

    // SIGTERM heals whatever is active before exiting.
    cluster
        .create(partition("cut-2", &deadline_in(Duration::from_secs(120))))
        .await;
    eventually("second fault applied", Duration::from_secs(10), || {
        node.rules().len() == 2
    })
    .await;
    let status = agent.terminate();
    assert!(status.success(), "{status:?}");
    assert!(node.rules().is_empty(), "SIGTERM heals the node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_agent_pauses_a_pod_process_found_through_its_cgroup_and_resumes_it_after_a_crash() {
    if !root_or_skip(
        "real_agent_pauses_a_pod_process_found_through_its_cgroup_and_resumes_it_after_a_crash",
    ) {
        return;
    }
    let _one_node = ONE_NODE.lock().await;
    let uid = "7e1f3a52-0d4b-4c7e-9a0b-1c2d3e4f5a6b";
    let Some(pod) = PodProcess::start(uid) else {
        eprintln!("skipping: no cgroup v1 hierarchy with cgroup.procs here");
        return;
    };
    let cluster = Cluster::start().await;
    let node = NodeNetns::new();
    let state = tempfile::tempdir().expect("state");
    let health = free_port();
    let agent = Agent::start(&cluster, &node, state.path(), health);
    cluster
        .create(json!({
            "apiVersion": FAULTS, "kind": "Fault",
            "metadata": {"name": "pause-cart", "finalizers": ["faultline.dev/node-agents"]},
            "spec": {
                "action": "pause",
                "pod": {"namespace": "shop", "name": "cart-0", "uid": uid, "nodeName": "n-a1"},
                "deadline": deadline_in(Duration::from_secs(8)),
                "createdBy": "agent-real-test",
            },
        }))
        .await;
    eventually(
        "the pod's process is stopped",
        Duration::from_secs(10),
        || pod.state() == 'T',
    )
    .await;
    eventually("processes reported", Duration::from_secs(20), || {
        cluster.node_status("pause-cart")["processes"] == 1
    })
    .await;

    // The agent dies during the pause; the process stays stopped (it is not the agent's child).
    let killed_at = Instant::now();
    agent.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        pod.state(),
        'T',
        "continued {:?} after the agent's SIGKILL",
        killed_at.elapsed()
    );
    let agent = Agent::start(&cluster, &node, state.path(), health);
    eventually("continued at the deadline", Duration::from_secs(10), || {
        pod.state() == 'S'
    })
    .await;
    eventually(
        "reverted with reason deadline",
        Duration::from_secs(5),
        || cluster.node_status("pause-cart")["reason"] == "deadline",
    )
    .await;
    drop(agent);
}

/// A running `faultlined controller` (one replica); SIGKILLed on drop.
struct Controller {
    child: Child,
}

impl Controller {
    fn start(cluster: &Cluster, reports: &Path) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_faultlined"))
            .args(["controller", "--kubeconfig"])
            .arg(&cluster.kubeconfig)
            .args(["--identity", "ctl-0", "--namespace", "faultline-system"])
            .args(["--listen", "127.0.0.1:0", "--lease-duration", "2s"])
            .args(["--renew-every", "300ms", "--tick", "200ms", "--reports-dir"])
            .arg(reports)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start faultlined controller");
        Self { child }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_killed_mid_experiment_leaves_the_agent_to_heal_at_the_deadline() {
    if !root_or_skip("a_controller_killed_mid_experiment_leaves_the_agent_to_heal_at_the_deadline")
    {
        return;
    }
    let _one_node = ONE_NODE.lock().await;
    let cluster = Cluster::start().await;
    cluster.api.put(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "ctl-0", "namespace": "faultline-system"},
        "spec": {"containers": [{"name": "controller", "image": "registry.example/faultlined:9"}]}}));
    let node = NodeNetns::new();
    let state = tempfile::tempdir().expect("state");
    let agent = Agent::start(&cluster, &node, state.path(), free_port());
    let controller = Controller::start(&cluster, &state.path().join("reports"));

    let mut spec = serde_json::to_value(
        faultline_experiments::spec::catalog::spec("az-failure").expect("catalog"),
    )
    .expect("json");
    spec["target"] = json!("kubernetes");
    cluster
        .api
        .put(json!({"apiVersion": FAULTS, "kind": "Experiment",
        "metadata": {"name": "gameday", "namespace": "shop"}, "spec": spec}));
    eventually(
        "the leader starts a runner Job",
        Duration::from_secs(20),
        || !cluster.api.list("batch/v1", "jobs").is_empty(),
    )
    .await;

    // What the runner creates for the zone cut: a Fault of the Experiment with an 8 s deadline.
    let deadline = SystemTime::now() + Duration::from_secs(8);
    let mut fault = partition(
        "gameday-cut-a",
        &humantime::format_rfc3339_millis(deadline).to_string(),
    );
    fault["spec"]["experiment"] = json!("shop/gameday");
    cluster.create(fault).await;
    eventually(
        "rules in the node's namespace",
        Duration::from_secs(10),
        || node.rules().len() == 2,
    )
    .await;

    controller.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        node.rules().len(),
        2,
        "the controller's death heals nothing early"
    );
    eventually(
        "healed by the agent at the deadline",
        Duration::from_secs(20),
        || node.rules().is_empty(),
    )
    .await;
    // The deadline is stored at millisecond precision; the heal cannot come before it.
    assert!(
        SystemTime::now() + Duration::from_millis(5) >= deadline,
        "healed before the deadline"
    );
    eventually(
        "reverted with reason deadline",
        Duration::from_secs(10),
        || cluster.node_status("gameday-cut-a")["reason"] == "deadline",
    )
    .await;
    drop(agent);
}
