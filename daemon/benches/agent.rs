//! The node agent's costs, measured on the real `faultlined agent` process against the
//! in-memory API server on loopback, acting on a real network namespace:
//! - idle memory and CPU with 200 Faults listed (baseline: the same agent with none);
//! - from a Fault appearing in the API to its rules being in the kernel (baseline: installing
//!   the same rules directly through netlink, in the same run);
//! - a halt reverting 20 active Faults (baseline: deleting the same rules directly).
//!
//! Run as root: `cargo bench -p faultline-daemon --bench agent`. The node's namespace is
//! `fl-ab<pid>`, removed at the end, on panic too; nothing touches the host's namespace.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use faultline_experiments::kubernetes::memory_api::MemoryApi;
use faultline_injectors::net_partition::{NetlinkRuleTable, PartitionRule, RuleTable};
use serde_json::{json, Value};

const LISTED_FAULTS: usize = 200;
const LATENCY_SAMPLES: usize = 20;

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("agent bench: skipped, it needs root for a network namespace");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(bench());
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15; after the comm, indexes 11 and 12.
    fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
}

/// CPU share of one core over `window`.
async fn cpu_share(pid: u32, window: Duration) -> f64 {
    let ticks_per_second = 100.0; // USER_HZ on Linux.
    let before = cpu_ticks(pid);
    tokio::time::sleep(window).await;
    (cpu_ticks(pid) - before) as f64 / ticks_per_second / window.as_secs_f64()
}

fn deadline_in(from_now: Duration) -> String {
    humantime::format_rfc3339_millis(SystemTime::now() + from_now).to_string()
}

fn fault(name: &str, node: &str, slot: u32) -> Value {
    json!({
        "apiVersion": "faultline.dev/v1alpha1", "kind": "Fault",
        "metadata": {"name": name},
        "spec": {
            "action": "partition",
            "partition": {"sides": [
                {"name": "a", "nodes": [node], "nodeAddresses": ["10.203.91.1"]},
                {"name": "b", "nodes": ["elsewhere"], "nodeAddresses": [format!("10.203.{}.1", 100 + slot % 100)],
                 "podCIDRs": [format!("10.204.{}.0/24", slot % 250)]},
            ]},
            "deadline": deadline_in(Duration::from_secs(600)),
            "prioritySlot": slot,
            "createdBy": "agent-bench",
            "overrides": {"isolateControlPlane": true, "allowNodeIsolation": true},
        },
    })
}

async fn create(api: &MemoryApi, path: &str, object: &Value) {
    let request = http::Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(object).expect("json"))
        .expect("request");
    let _: Value = api.client().request(request).await.expect("create");
}

fn start_agent(kubeconfig: &Path, netns: &str, state: &Path) -> Agent {
    let child = Command::new(env!("CARGO_BIN_EXE_faultlined"))
        .args(["agent", "--node-name", "bench-node"])
        .arg("--state-dir")
        .arg(state.join("state"))
        .arg("--netns-dir")
        .arg(state.join("netns"))
        .arg("--host-netns")
        .arg(PathBuf::from("/run/netns").join(netns))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--health-addr", "127.0.0.1:0", "--tick", "1s"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start faultlined agent");
    Agent(child)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

// One straight measurement script reads best top to bottom.
#[allow(clippy::too_many_lines)]
async fn bench() {
    let netns = Netns(format!("fl-ab{}", std::process::id() % 100_000));
    assert!(Command::new("ip")
        .args(["netns", "add", &netns.0])
        .status()
        .expect("ip")
        .success());
    let table = NetlinkRuleTable::new("/run/netns");
    let ours = |table: &NetlinkRuleTable| table.list_ours(&netns.0).expect("list").len();

    let api = MemoryApi::new();
    let (addr, _server) = api
        .serve("127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("serve");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: m\n  cluster:\n    server: http://{addr}\n\
             users:\n- name: m\n  user: {{}}\ncontexts:\n- name: m\n  context:\n    cluster: m\n    user: m\ncurrent-context: m\n"
        ),
    )
    .expect("kubeconfig");

    // 1. Idle cost, 0 Faults then 200 (none for this node, as on a big cluster).
    let agent = start_agent(&kubeconfig, &netns.0, dir.path());
    let pid = agent.0.id();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_empty = rss_kib(pid);
    let cpu_empty = cpu_share(pid, Duration::from_secs(10)).await;
    for i in 0..LISTED_FAULTS {
        create(
            &api,
            "/apis/faultline.dev/v1alpha1/faults",
            &fault(&format!("other-{i}"), "another-node", i as u32),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_listed = rss_kib(pid);
    let cpu_listed = cpu_share(pid, Duration::from_secs(10)).await;
    println!(
        "idle agent: RSS {:.1} MiB with {LISTED_FAULTS} Faults listed vs {:.1} MiB with none ({:.2}x); CPU {:.2}% vs {:.2}% of one core",
        rss_listed as f64 / 1024.0,
        rss_empty as f64 / 1024.0,
        rss_listed as f64 / rss_empty.max(1) as f64,
        cpu_listed * 100.0,
        cpu_empty * 100.0
    );

    // 2. Fault in the API -> rules in the kernel, against installing the same rules directly.
    let mut agent_latency = Vec::new();
    for i in 0..LATENCY_SAMPLES {
        let before = ours(&table);
        let start = Instant::now();
        create(
            &api,
            "/apis/faultline.dev/v1alpha1/faults",
            &fault(&format!("mine-{i}"), "bench-node", 300 + i as u32),
        )
        .await;
        while ours(&table) < before + 2 {
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        agent_latency.push(start.elapsed());
    }
    let mut direct = Vec::new();
    for i in 0..LATENCY_SAMPLES {
        let rules: Vec<PartitionRule> = [("10.205.1.1", 32), ("10.206.0.0", 24)]
            .iter()
            .map(|(a, len)| PartitionRule {
                netns: netns.0.clone(),
                destination: a.parse().expect("address"),
                prefix_len: *len,
                priority: 24_900 + i as u32 % 50,
            })
            .collect();
        let start = Instant::now();
        table
            .add(&rules, faultline_injectors::ledger::now_unix_ms() + 60_000)
            .expect("add");
        direct.push(start.elapsed());
        table.delete(&rules).expect("delete");
    }
    let (agent_median, direct_median) = (median(agent_latency.clone()), median(direct));
    println!(
        "Fault created -> rules installed: median {:.1} ms (max {:.1} ms) vs direct netlink install {:.2} ms ({:.2}x)",
        agent_median.as_secs_f64() * 1e3,
        agent_latency.iter().max().expect("samples").as_secs_f64() * 1e3,
        direct_median.as_secs_f64() * 1e3,
        agent_median.as_secs_f64() / direct_median.as_secs_f64()
    );

    // 3. Halt with 20 active Faults on this node.
    assert_eq!(
        ours(&table),
        2 * LATENCY_SAMPLES,
        "every Fault of this node applied"
    );
    let start = Instant::now();
    create(
        &api,
        "/apis/faultline.dev/v1alpha1/halts",
        &json!({"apiVersion": "faultline.dev/v1alpha1", "kind": "Halt", "metadata": {"name": "halt"}, "spec": {}}),
    )
    .await;
    while ours(&table) > 0 {
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let halt = start.elapsed();
    let listed = table.list_ours(&netns.0).expect("list");
    assert!(listed.is_empty());
    // Baseline: the same 40 rules deleted directly.
    let rules: Vec<PartitionRule> = (0..LATENCY_SAMPLES as u32)
        .flat_map(|i| {
            [("10.205.2.1", 32), ("10.207.0.0", 24)].map(|(a, len)| PartitionRule {
                netns: netns.0.clone(),
                destination: a.parse().expect("address"),
                prefix_len: len,
                priority: 24_800 + i,
            })
        })
        .collect();
    table
        .add(&rules, faultline_injectors::ledger::now_unix_ms() + 60_000)
        .expect("add");
    let start = Instant::now();
    table.delete(&rules).expect("delete");
    let direct_delete = start.elapsed();
    println!(
        "halt reverting {LATENCY_SAMPLES} active Faults: {:.1} ms vs deleting their rules directly {:.2} ms ({:.2}x)",
        halt.as_secs_f64() * 1e3,
        direct_delete.as_secs_f64() * 1e3,
        halt.as_secs_f64() / direct_delete.as_secs_f64()
    );
    drop(agent);
}
