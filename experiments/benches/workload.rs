//! Workload benchmarks against a real lab (root; `nats-server` and `wrk` installed; the
//! `faultlined` and `tenant-gateway` binaries built next to each other):
//!
//! ```text
//! cargo build --release --bins
//! cargo bench -p faultline-experiments --bench workload -- [--seconds S] [--rss-seconds R] [--only throughput|http|websocket|rss]
//! ```
//!
//! 1. **throughput**: the generator recording the full history (batch pattern only, so every
//!    operation is a pipelined write) against a bare async-nats publish loop with the same
//!    connection count and the same number of acknowledgements in flight, on the same lab and
//!    the same streams. Figures are acknowledged writes per second.
//! 2. **http**: the generator's HTTP adapter against `wrk` on the same gateway replica, the same
//!    record size and the same number of connections.
//! 3. **websocket**: chat over WebSocket (`--chat websocket`, chat sessions only, 5-10
//!    messages each, no think time) against a bare loop of the same sessions on the same
//!    gateway replica: open a socket, a write frame and a read frame per message, close.
//!    Figures are acknowledged chat messages per second.
//! 4. **rss**: the generator's resident memory at the start and the end of a longer run at a
//!    moderate rate, with the default tenants and patterns.
//!
//! The agent is `FAULTLINE_AGENT`, else `faultlined` in the directory above this bench binary
//! (`target/release`). Each benchmark prints its figures; the summary at the end is the
//! BENCHMARKS.md table.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faultline_experiments::history::{OpKind, Outcome};
use faultline_experiments::lab::control::{self, HostPaths};
use faultline_experiments::lab::topology::Topology;
use faultline_experiments::workload::config::{PatternMix, Tier};
use faultline_experiments::workload::nats::{
    provision, ConnectSpec, NatsConn, DEFAULT_PING_INTERVAL,
};
use faultline_experiments::workload::schedule::{subject, tenants};
use faultline_experiments::workload::target::{enter_netns, Target};
use faultline_experiments::workload::{
    AdapterKind, CancellationToken, ChatMode, Workload, WorkloadConfig,
};
use futures::stream::FuturesUnordered;
use futures::StreamExt;

const LAB: &str = "wbench";
const CONNECTIONS: usize = 3;
const IN_FLIGHT_PER_CONNECTION: usize = 128;
const TENANTS: u32 = 30;
const PAYLOAD: usize = 256;
const HTTP_CONNECTIONS: usize = 32;
/// Chat sessions the bare WebSocket loop keeps open at once.
const CHAT_SESSIONS: usize = 32;
/// Tenants of the WebSocket benchmark, all of one weight: enough that two sessions of one
/// tenant rarely overlap on either side. A reply read covers the tenant's records from the
/// session's first on, so overlapping sessions would make the generator's reads longer than
/// the bare loop's.
const CHAT_TENANTS: u32 = 200;

struct Args {
    seconds: u64,
    rss_seconds: u64,
    only: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        seconds: 15,
        rss_seconds: 120,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).unwrap_or(a.seconds),
            "--rss-seconds" => {
                a.rss_seconds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(a.rss_seconds);
            }
            "--only" => a.only = it.next(),
            _ => {} // `cargo bench` passes --bench.
        }
    }
    a
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Brings the lab down when dropped, on panic too.
struct LabGuard {
    host: HostPaths,
    _root: tempfile::TempDir,
}

impl Drop for LabGuard {
    fn drop(&mut self) {
        if let Err(e) = control::down(&self.host, LAB) {
            eprintln!("lab down failed: {e}");
        }
    }
}

fn agent_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("FAULTLINE_AGENT") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("faultlined"))
        .expect("target dir")
}

/// A config whose every operation is a pipelined write of `PAYLOAD` bytes.
fn writes_only(
    adapter: AdapterKind,
    rate: f64,
    seconds: u64,
    in_flight: usize,
    dir: &Path,
    name: &str,
) -> WorkloadConfig {
    let mut config = WorkloadConfig {
        run_id: Some(format!("bench-{name}")),
        tenants: TENANTS,
        rate,
        duration: Duration::from_secs(seconds),
        adapter,
        connections: CONNECTIONS,
        max_in_flight: in_flight,
        history: dir.join(format!("{name}.jsonl")),
        observations: dir.join(format!("{name}.observations.jsonl")),
        drain_timeout: Duration::from_secs(1),
        ..WorkloadConfig::default()
    };
    for tier in Tier::ALL {
        let t = &mut config.tiers[tier.index()];
        t.idle_fraction = 0.0;
        t.mix = PatternMix {
            chat: 0.0,
            batch: 1.0,
            jobs: 0.0,
        };
        t.payload_min = PAYLOAD;
        t.payload_max = PAYLOAD;
    }
    config.patterns.batch_gap = Duration::from_micros(100);
    config
}

/// Acknowledged writes per second, from the history: ok writes over the span from the first
/// intended send to the last completion.
fn acked_per_second(history: &Path) -> (f64, u64, u64) {
    let text = std::fs::read_to_string(history).expect("history");
    let (mut ok, mut other, mut first, mut last) = (0u64, 0u64, u64::MAX, 0u64);
    for line in text.lines().skip(1) {
        let op: faultline_experiments::history::Operation = serde_json::from_str(line).expect("op");
        if op.kind != OpKind::Write {
            continue;
        }
        if op.outcome == Outcome::Ok {
            ok += 1;
        } else {
            other += 1;
        }
        first = first.min(op.invoke_ns);
        last = last.max(op.complete_ns);
    }
    let span = (last.saturating_sub(first)).max(1) as f64 / 1e9;
    (ok as f64 / span, ok, other)
}

/// Acknowledged writes per second within the first `seconds` of the run (from the first
/// intended send): what the system did while the generator offered its load. An open-loop
/// chat load offered above capacity leaves a backlog of sessions that finish later; counting
/// up to the last completion would charge that backlog to the generator.
fn acked_within(history: &Path, seconds: u64) -> (f64, u64, u64) {
    let text = std::fs::read_to_string(history).expect("history");
    let ops: Vec<faultline_experiments::history::Operation> = text
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).expect("op"))
        .filter(|o: &faultline_experiments::history::Operation| o.kind == OpKind::Write)
        .collect();
    let first = ops.iter().map(|o| o.invoke_ns).min().unwrap_or(0);
    let end = first + seconds * 1_000_000_000;
    let ok = ops
        .iter()
        .filter(|o| o.outcome == Outcome::Ok && o.complete_ns <= end)
        .count() as u64;
    let other = ops.iter().filter(|o| o.outcome != Outcome::Ok).count() as u64;
    (ok as f64 / seconds as f64, ok, other)
}

async fn generator(config: WorkloadConfig, target: Target) -> (f64, u64, u64) {
    let history = config.history.clone();
    let mut workload = Workload::start(config, target).await.expect("start");
    workload.run(CancellationToken::new()).await.expect("run");
    workload.finish().await.expect("finish");
    acked_per_second(&history)
}

/// The bare loop: `CONNECTIONS` connections, each keeping `IN_FLIGHT_PER_CONNECTION` publishes
/// in flight round-robin over the tenants' streams, for `seconds`.
async fn bare_loop(target: &Target, seconds: u64) -> (f64, u64, u64) {
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..CONNECTIONS {
        let spec = ConnectSpec {
            urls: target.nats_urls_for(k),
            name: format!("bare-{k}"),
            connect_timeout: Duration::from_secs(3),
            op_timeout: Duration::from_secs(2),
            ping_interval: DEFAULT_PING_INTERVAL,
            pinned_node: None,
            retry_initial: false,
        };
        let conn = NatsConn::connect(&spec, target.node_of_host.clone())
            .await
            .expect("connect");
        let (acked, failed) = (acked.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let payload = bytes::Bytes::from(vec![b'x'; PAYLOAD]);
            let mut pending = FuturesUnordered::new();
            let mut n = 0u64;
            while Instant::now() < stop {
                while pending.len() < IN_FLIGHT_PER_CONNECTION {
                    n += 1;
                    let tenant = format!(
                        "t{:03}",
                        (n as usize * CONNECTIONS + k) % TENANTS as usize + 1
                    );
                    let subject = subject(&tenant, "batch");
                    let id = format!("{tenant}/bare{k}/{n}");
                    let js = conn.js.clone();
                    let payload = payload.clone();
                    pending.push(async move {
                        let message = async_nats::jetstream::message::PublishMessage::build()
                            .payload(payload)
                            .message_id(id);
                        match js.send_publish(subject, message).await {
                            Ok(ack) => ack.await.is_ok(),
                            Err(_) => false,
                        }
                    });
                }
                if let Some(ok) = pending.next().await {
                    if ok { &acked } else { &failed }.fetch_add(1, Ordering::Relaxed);
                }
            }
            while let Some(ok) = pending.next().await {
                if ok { &acked } else { &failed }.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.expect("bare task");
    }
    let secs = start.elapsed().as_secs_f64();
    let ok = acked.load(Ordering::Relaxed);
    (ok as f64 / secs, ok, failed.load(Ordering::Relaxed))
}

/// Fresh streams for the tenants (so each measurement starts alike).
async fn fresh_streams(target: &Target) {
    let spec = ConnectSpec {
        urls: target.nats_urls_for(0),
        name: "bench-setup".into(),
        connect_timeout: Duration::from_secs(3),
        op_timeout: Duration::from_secs(5),
        ping_interval: DEFAULT_PING_INTERVAL,
        pinned_node: None,
        retry_initial: false,
    };
    let conn = NatsConn::connect(&spec, target.node_of_host.clone())
        .await
        .expect("connect");
    let specs = tenants(&WorkloadConfig {
        tenants: TENANTS,
        ..WorkloadConfig::default()
    });
    for t in specs {
        provision(&conn.js, &t.id, 3, true, false)
            .await
            .expect("provision");
    }
}

fn wrk(netns_dir: &Path, netns: &str, url: &str, seconds: u64, script: &Path) -> (f64, u64) {
    let (url, script) = (url.to_owned(), script.to_owned());
    let output = faultline_injectors::netns::run_in_netns(netns_dir, netns, move || {
        std::process::Command::new("wrk")
            .args([
                "-t2",
                &format!("-c{HTTP_CONNECTIONS}"),
                &format!("-d{seconds}s"),
                "-s",
            ])
            .arg(&script)
            .arg(&url)
            .output()
    })
    .expect("enter netns")
    .expect("run wrk (apt-get install -y wrk)");
    let text = String::from_utf8_lossy(&output.stdout);
    println!("{text}");
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("wrk Requests/sec");
    let non_2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (rps, non_2xx)
}

const WRK_SCRIPT: &str = r#"
-- POST one 256-byte record per request, to tenants t001..t030 in turn, each with a unique
-- Idempotency-Key, as the generator does.
local counter = 0
local thread_id = 0
local pad = string.rep("x", 256)
setup = function(thread)
  thread:set("thread_id", thread_id)
  thread_id = thread_id + 1
end
request = function()
  counter = counter + 1
  local tenant = string.format("t%03d", (counter % 30) + 1)
  local id = string.format("%s/wrk%d/%d", tenant, thread_id, counter)
  return wrk.format("POST", "/v1/tenants/" .. tenant .. "/records",
    {["X-Tenant-Id"] = tenant, ["Idempotency-Key"] = id, ["X-Record-Kind"] = "batch"}, pad)
end
"#;

/// Runs `f` on a thread inside the lab's client namespace, on its own two-worker runtime.
fn in_client_ns<T, F, Fut>(netns: &(PathBuf, String), f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T>,
{
    let (dir, name) = netns.clone();
    std::thread::spawn(move || {
        enter_netns(&dir, &name).expect("enter the client namespace");
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f())
    })
    .join()
    .expect("benchmark thread")
}

fn http_target(target: &Target) -> Target {
    Target::from_urls(&[], &[format!("http://{}", target.gateways[0].addr)]).expect("gateway url")
}

fn bench_http(target: &Target, netns: &(PathBuf, String), dir: &Path, seconds: u64) -> String {
    let script = dir.join("post.lua");
    std::fs::write(&script, WRK_SCRIPT).expect("lua");
    // Provision the tenants through the gateway (fresh streams), then wrk, then ours.
    let (t, d) = (http_target(target), dir.to_path_buf());
    in_client_ns(netns, move || async move {
        let config = writes_only(AdapterKind::Http, 1.0, 1, 8, &d, "provision");
        drop(Workload::start(config, t).await.expect("provision tenants"));
    });
    let url = format!("http://{}", target.gateways[0].addr);
    let (wrk_rps, non_2xx) = wrk(&netns.0, &netns.1, &url, seconds, &script);
    let (t, d) = (http_target(target), dir.to_path_buf());
    let (ours, ok, other) = in_client_ns(netns, move || {
        let config = writes_only(
            AdapterKind::Http,
            wrk_rps * 1.1,
            seconds,
            HTTP_CONNECTIONS,
            &d,
            "http",
        );
        generator(config, t)
    });
    println!(
        "http: wrk {wrk_rps:.0} req/s ({non_2xx} non-2xx); generator {ours:.0} acked/s ({ok} ok, {other} not ok); ratio {:.2}",
        ours / wrk_rps
    );
    format!(
        "| HTTP path vs wrk (1 gateway replica, {HTTP_CONNECTIONS} connections, {PAYLOAD} B records, {seconds} s each) | wrk {wrk_rps:.0} req/s | {ours:.0} acked writes/s | {:.2}x |",
        ours / wrk_rps
    )
}

/// The bare WebSocket loop: `CHAT_SESSIONS` loops, each opening a socket, sending 5 to 10
/// messages (a write frame, then a read frame from the session's first seq, each awaiting its
/// reply) and closing it, for `seconds`. Acknowledged messages per second.
async fn bare_chat_loop(addr: std::net::SocketAddr, seconds: u64) -> (f64, u64, u64) {
    use futures::SinkExt;
    use tokio_websockets::{ClientBuilder, Message};
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..CHAT_SESSIONS {
        let (acked, failed) = (acked.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let payload = "x".repeat(PAYLOAD);
            let mut session = 0u64;
            while Instant::now() < stop {
                session += 1;
                let tenant = format!(
                    "t{:03}",
                    (k + CHAT_SESSIONS * session as usize) % CHAT_TENANTS as usize + 1
                );
                let uri = format!("ws://{addr}/v1/tenants/{tenant}/chat");
                let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
                let _ = stream.set_nodelay(true);
                let (mut ws, _) = ClientBuilder::new()
                    .uri(&uri)
                    .expect("uri")
                    .add_header(
                        http::HeaderName::from_static("x-tenant-id"),
                        http::HeaderValue::from_str(&tenant).expect("tenant"),
                    )
                    .expect("header")
                    .connect_on(stream)
                    .await
                    .expect("upgrade");
                let mut first = None;
                for m in 0..5 + session % 6 {
                    let id = format!("{tenant}/bare{k}-{session}/{m}");
                    let write = serde_json::json!({"op": "write", "id": id, "payload": payload});
                    ws.send(Message::text(write.to_string())).await.expect("send");
                    let reply: serde_json::Value = loop {
                        let frame = ws.next().await.expect("open").expect("frame");
                        if let Some(text) = frame.as_text() {
                            break serde_json::from_str(text).expect("reply");
                        }
                    };
                    if reply["op"] == "ack" {
                        acked.fetch_add(1, Ordering::Relaxed);
                        first = first.or(reply["seq"].as_u64());
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    let read = serde_json::json!({"op": "read", "from_seq": first.unwrap_or(1), "limit": 50});
                    ws.send(Message::text(read.to_string())).await.expect("send");
                    while ws.next().await.expect("open").expect("frame").as_text().is_none() {}
                }
                let _ = ws.close().await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("bare chat task");
    }
    let secs = start.elapsed().as_secs_f64();
    let ok = acked.load(Ordering::Relaxed);
    (ok as f64 / secs, ok, failed.load(Ordering::Relaxed))
}

fn bench_websocket(target: &Target, netns: &(PathBuf, String), dir: &Path, seconds: u64) -> String {
    let (t, d) = (http_target(target), dir.to_path_buf());
    let addr = target.gateways[0].addr;
    let (bare, ours) = in_client_ns(netns, move || async move {
        // Provision the tenants through the gateway (fresh streams) first.
        let mut config = writes_only(AdapterKind::Http, 1.0, 1, 8, &d, "ws-provision");
        config.tenants = CHAT_TENANTS;
        drop(
            Workload::start(config, t.clone())
                .await
                .expect("provision tenants"),
        );
        let (bare, bare_ok, bare_failed) = bare_chat_loop(addr, seconds).await;
        println!("bare chat loop: {bare:.0} acked messages/s ({bare_ok} ok, {bare_failed} not)");
        let mut config = writes_only(AdapterKind::Http, 1.0, seconds, 4096, &d, "websocket");
        config.chat = ChatMode::Websocket;
        config.fresh = false;
        config.tenants = CHAT_TENANTS;
        for tier in Tier::ALL {
            let t = &mut config.tiers[tier.index()];
            t.mix = PatternMix {
                chat: 1.0,
                batch: 0.0,
                jobs: 0.0,
            };
            t.weight = 1.0;
        }
        config.patterns.think_min = Duration::from_millis(1);
        config.patterns.think_max = Duration::from_millis(1);
        config.patterns.reply_after = Duration::from_millis(1);
        // Two operations (a write and a read) per message; at most 1.1x the bare loop's.
        config.rate = bare * 2.0 * 1.1;
        let history = config.history.clone();
        let (all, all_ok, _) = generator(config, t).await;
        let (ours, ok, other) = acked_within(&history, seconds);
        println!(
            "generator: {ours:.0} acked chat messages/s in its {seconds} s ({ok} ok, {other} not ok; {all_ok} in all, {all:.0}/s to the last completion), full history; ratio {:.2}",
            ours / bare
        );
        (bare, ours)
    });
    format!(
        "| Chat over WebSocket vs a bare loop of the same sessions (1 gateway replica, 5-10 messages a session, a write and a read frame each, {CHAT_TENANTS} tenants, {PAYLOAD} B, {seconds} s each) | {bare:.0} acked messages/s | {ours:.0} acked messages/s | {:.2}x |",
        ours / bare
    )
}

fn bench_throughput(
    target: &Target,
    netns: &(PathBuf, String),
    dir: &Path,
    seconds: u64,
) -> String {
    let (t, d) = (target.clone(), dir.to_path_buf());
    let in_flight = CONNECTIONS * IN_FLIGHT_PER_CONNECTION;
    let (bare, ours) = in_client_ns(netns, move || async move {
        fresh_streams(&t).await;
        let (bare, bare_ok, bare_failed) = bare_loop(&t, seconds).await;
        println!("bare loop: {bare:.0} acked/s ({bare_ok} ok, {bare_failed} failed)");
        let config = writes_only(
            AdapterKind::Nats,
            bare * 1.1,
            seconds,
            in_flight,
            &d,
            "throughput",
        );
        let (ours, ok, other) = generator(config, t).await;
        println!(
            "generator: {ours:.0} acked/s ({ok} ok, {other} not ok), full history; ratio {:.2}",
            ours / bare
        );
        (bare, ours)
    });
    format!(
        "| Generator with full history vs bare async-nats publish loop ({CONNECTIONS} connections, {in_flight} acks in flight, R3 streams, {PAYLOAD} B, {seconds} s each) | {bare:.0} acks/s | {ours:.0} acked writes/s | {:.2}x |",
        ours / bare
    )
}

fn bench_rss(target: &Target, netns: &(PathBuf, String), dir: &Path, rss_seconds: u64) -> String {
    let (t, d) = (target.clone(), dir.to_path_buf());
    in_client_ns(netns, move || async move {
        let config = WorkloadConfig {
            run_id: Some("bench-rss".into()),
            duration: Duration::from_secs(rss_seconds),
            rate: 200.0,
            history: d.join("rss.jsonl"),
            observations: d.join("rss.observations.jsonl"),
            ..WorkloadConfig::default()
        };
        let mut workload = Workload::start(config, t).await.expect("start");
        let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = samples.clone();
        workload.on_progress(Arc::new(move |p| {
            s.lock()
                .expect("samples")
                .push((p.elapsed_s, rss_kib(), p.ops));
        }));
        let summary = workload.run(CancellationToken::new()).await.expect("run");
        workload.finish().await.expect("finish");
        let samples = samples.lock().expect("samples").clone();
        let start = samples
            .iter()
            .find(|s| s.0 >= 10.0)
            .or(samples.last())
            .copied()
            .unwrap_or_default();
        let end = samples.last().copied().unwrap_or_default();
        let max = samples.iter().map(|s| s.1).max().unwrap_or(0);
        println!(
            "rss: {} ops in {rss_seconds} s; RSS {} KiB at {:.0} s, {} KiB at {:.0} s, max {max} KiB",
            summary.ops, start.1, start.0, end.1, end.0
        );
        format!(
            "| Generator RSS: default 100 tenants, 200 ops/s, {rss_seconds} s ({} operations recorded) | {} KiB at {:.0} s | {} KiB at {:.0} s (max {max} KiB) | {:.2}x |",
            summary.ops,
            start.1,
            start.0,
            end.1,
            end.0,
            end.1 as f64 / start.1.max(1) as f64
        )
    })
}

fn main() {
    let a = args();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping the workload benchmarks: they need root (a real lab)");
        return;
    }
    let agent = agent_binary();
    if !agent.exists() || !agent.with_file_name("tenant-gateway").exists() {
        eprintln!(
            "skipping: {} and tenant-gateway next to it are needed; run `cargo build --release --bins` first",
            agent.display()
        );
        return;
    }
    let root = tempfile::Builder::new()
        .prefix("faultline-bench-")
        .tempdir()
        .expect("tempdir");
    let dir = root.path().to_path_buf();
    let host = HostPaths::with_state_root(root.path());
    let resolved = faultline_experiments::lab::servers::resolve_here(
        &Topology::default_lab(),
        faultline_experiments::lab::topology::DEFAULT_TOPOLOGY_SOURCE,
        std::env::var_os("FAULTLINE_NATS_SERVER").map(std::path::PathBuf::from),
    )
    .expect("a nats-server");
    let (ctx, _) =
        control::up(&host, LAB, &resolved, &agent, Duration::from_secs(90)).expect("lab up");
    let guard = LabGuard { host, _root: root };
    let target = Target::from_lab(
        &ctx,
        &[faultline_experiments::workload::target::GATEWAY_SERVICE.to_owned()],
    )
    .expect("target");
    let netns = target.client_netns().expect("a lab target");
    let want = |name: &str| a.only.as_deref().is_none_or(|o| o == name);
    let mut rows: Vec<String> = Vec::new();
    if want("http") {
        rows.push(bench_http(&target, &netns, &dir, a.seconds));
    }
    if want("websocket") {
        rows.push(bench_websocket(&target, &netns, &dir, a.seconds));
    }
    if want("throughput") {
        rows.push(bench_throughput(&target, &netns, &dir, a.seconds));
    }
    if want("rss") {
        rows.push(bench_rss(&target, &netns, &dir, a.rss_seconds));
    }
    drop(guard);
    println!("\n| benchmark | baseline | workload | ratio |\n|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}
