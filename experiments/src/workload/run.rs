//! Running a workload: preparing the tenants, dispatching the open-loop schedule, recording
//! every operation, job consumers, leader sampling, and the final read-back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::consumer::PullConsumer;
use bytes::Bytes;
use futures::StreamExt;
use hyper::Method;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::history::{
    ClientSettings, HistoryHeader, OpKind, Operation, Outcome, Pattern, ReadItem, HISTORY_FORMAT,
    HISTORY_FORMAT_VERSION,
};

use super::chat_ws::{error_outcome, ChatSocket};
use super::clients::SiteWithNodes;
use super::clock::RunClock;
use super::config::{AdapterKind, ChatMode, WorkloadConfig};
use super::contract::{ChatReply, ChatRequest};
use super::http::{parse_ack, parse_records, HttpClient};
use super::nats::{provision, ConnectSpec, NatsConn, ReadRecord, Served};
use super::observe::{fault_loop, leader_loop, FaultWatcher, Monitor};
use super::recorder::{ObservationSink, Recorder, RecorderThread};
use super::rng::mix;
use super::schedule::{payload_size, subject, tenants, Schedule, TenantSpec, Unit, UnitKind};
use super::stats::{Progress, Summary};
use super::target::Target;
use super::WorkloadError;

/// Called about once a second with the live progress.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// The read-back through one node or endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeReadBack {
    /// Node.
    pub node: String,
    /// Tenants read successfully.
    pub ok: u64,
    /// Tenants whose read failed.
    pub failed: u64,
    /// Records read.
    pub records: u64,
    /// Why the node could not be read at all, if so.
    pub error: Option<String>,
}

/// What the final read-back found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReadBackSummary {
    /// Per node, read through it (NATS: any replica may have answered).
    pub nodes: Vec<NodeReadBack>,
    /// Per node, its own replica read alone with the other servers held down (NATS on a lab,
    /// unless `replica_read_back` is off).
    pub replicas: Vec<NodeReadBack>,
    /// Tenants read.
    pub tenants: u64,
    /// Tenants every node read successfully, with identical contents.
    pub agreeing: u64,
    /// Up to 20 tenants whose views differ or could not all be read.
    pub disagreeing: Vec<String>,
}

/// Everything a finished workload produced.
#[derive(Clone, Debug, Serialize)]
pub struct WorkloadReport {
    /// The summary (read-back included once it ran).
    pub summary: Summary,
    /// The read-back, if it ran.
    pub read_back: Option<ReadBackSummary>,
    /// History file.
    pub history: PathBuf,
    /// Observations file.
    pub observations: PathBuf,
}

enum Adapter {
    Nats {
        /// The load's connections, one group per place the clients stand: one group in the
        /// lab's client namespace (`majority`), else one per client site.
        groups: Vec<Vec<NatsConn>>,
    },
    Http {
        /// The lab's client namespace's client (provisioning, the read-back).
        client: Arc<HttpClient>,
        /// One client per client site when the load's clients stand in zones: tenant `i` uses
        /// `zones[i mod len]`. Empty when they stand with the majority.
        zones: Vec<Arc<HttpClient>>,
    },
}

/// The NATS connection of tenant `index`: its group is `index mod groups` (its client site's,
/// as [`Workload::start`] assigns zones), its connection in the group `(index / groups) mod
/// len`, so that the tenants of one group spread over all its connections.
fn nats_conn_of(groups: &[Vec<NatsConn>], index: u32) -> &NatsConn {
    let index = index as usize;
    let group = &groups[index % groups.len()];
    &group[(index / groups.len()) % group.len()]
}

/// The HTTP client of tenant `index`.
fn http_client_of<'a>(
    client: &'a Arc<HttpClient>,
    zones: &'a [Arc<HttpClient>],
    index: u32,
) -> &'a HttpClient {
    if zones.is_empty() {
        client
    } else {
        &zones[index as usize % zones.len()]
    }
}

struct Exec {
    adapter: Adapter,
    recorder: Recorder,
    clock: RunClock,
    tenants: Arc<Vec<TenantSpec>>,
    config: Arc<WorkloadConfig>,
    permits: Arc<Semaphore>,
    in_flight: Arc<AtomicU64>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

/// A prepared workload: tenants provisioned, connections open, files created, clock started.
///
/// The life cycle is `start` → `run` (the load, until its duration or `cancel`) → `read_back`
/// (after the engine has healed the faults) → `finish`. The clock and the observation sink are
/// available from `start` on, so an engine injecting faults meanwhile records its fault windows
/// on the same time base.
pub struct Workload {
    exec: Arc<Exec>,
    target: Target,
    run_id: String,
    consumers: Vec<(usize, PullConsumer)>,
    monitor: Arc<Monitor>,
    faults: Option<Arc<Mutex<FaultWatcher>>>,
    progress: Arc<Mutex<Progress>>,
    on_progress: Option<ProgressFn>,
    thread: Option<RecorderThread>,
    elapsed: Duration,
    read_back: Option<ReadBackSummary>,
    /// The convergence deadline on the run's clock, when the caller set one.
    settle_until_ns: Option<u64>,
}

fn run_id_now() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("wl-{ms}")
}

fn sleep_until(clock: &RunClock, ns: u64) -> tokio::time::Sleep {
    tokio::time::sleep_until(tokio::time::Instant::from_std(clock.instant_at(ns)))
}

impl Workload {
    /// Validates the config, checks the output files, connects, provisions every tenant (fresh
    /// streams, job consumers), opens the history and starts the clock.
    pub async fn start(config: WorkloadConfig, target: Target) -> Result<Self, WorkloadError> {
        config.validate()?;
        super::recorder::check_writable("history", &config.history)?;
        super::recorder::check_writable("observations", &config.observations)?;
        let sites = target.client_sites(&config.clients)?;
        let mut tenant_specs = tenants(&config);
        for tenant in tenant_specs.iter_mut().filter(|_| !sites.is_empty()) {
            let (site, _) = &sites[tenant.index as usize % sites.len()];
            tenant.client_zone = Some(site.zone.clone());
        }
        let tenant_specs = Arc::new(tenant_specs);
        let run_id = config.run_id.clone().unwrap_or_else(run_id_now);
        let (adapter, consumers) = match config.adapter {
            AdapterKind::Nats => connect_nats(&config, &target, &tenant_specs, sites).await?,
            AdapterKind::Http => connect_http(&config, &target, &tenant_specs, sites).await?,
        };
        let clock = RunClock::start_now();
        let header = HistoryHeader {
            format: HISTORY_FORMAT.to_owned(),
            version: HISTORY_FORMAT_VERSION,
            run_id: run_id.clone(),
            started_at_unix_ms: clock.start_unix_ms(),
            adapter: config.adapter.name().to_owned(),
            client: Some(client_settings(&config)),
        };
        let (recorder, thread) = Recorder::open(&config.history, &config.observations, &header)?;
        let faults = target
            .ledger_dir
            .as_ref()
            .filter(|_| config.record_faults)
            .map(|dir| {
                let nats_nodes = target.nats.iter().map(|s| s.node.clone()).collect();
                Arc::new(Mutex::new(FaultWatcher::new(
                    dir,
                    nats_nodes,
                    target.lab().cloned(),
                )))
            });
        let config = Arc::new(config);
        let exec = Arc::new(Exec {
            adapter,
            recorder,
            clock,
            tenants: tenant_specs,
            permits: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            in_flight: Arc::new(AtomicU64::new(0)),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        Ok(Self {
            exec,
            target,
            run_id,
            consumers,
            monitor: Arc::new(Monitor::new()),
            faults,
            progress: Arc::new(Mutex::new(Progress::default())),
            on_progress: None,
            thread: Some(thread),
            elapsed: Duration::ZERO,
            read_back: None,
            settle_until_ns: None,
        })
    }

    /// The run's time base.
    pub fn clock(&self) -> RunClock {
        self.exec.clock
    }

    /// Where to record observations (fault windows) from outside.
    pub fn observations(&self) -> ObservationSink {
        self.exec.recorder.observations()
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The tenants.
    pub fn tenants(&self) -> &[TenantSpec] {
        &self.exec.tenants
    }

    /// Calls `f` about once a second while the load runs.
    pub fn on_progress(&mut self, f: ProgressFn) {
        self.on_progress = Some(f);
    }

    /// The latest progress.
    pub fn progress(&self) -> Progress {
        self.progress.lock().expect("progress").clone()
    }

    /// Runs the schedule until its duration has passed or `cancel` fires, then waits for every
    /// operation in flight (each bounded by its timeout), lets the job consumers drain the
    /// work queues (at most `drain_timeout`), and returns the summary of the load.
    pub async fn run(&mut self, cancel: CancellationToken) -> Result<Summary, WorkloadError> {
        let exec = self.exec.clone();
        let config = exec.config.clone();
        let clock = exec.clock;
        let origin = clock.now_ns();
        let end = origin + config.duration.as_nanos().min(u128::from(u64::MAX / 2)) as u64;
        let background = CancellationToken::new();
        let tasks = self.spawn_background(cancel, origin, &background);
        let drain = CancellationToken::new();
        let hard_stop = CancellationToken::new();
        let workers = self.spawn_workers(&drain, &hard_stop);

        let failure = dispatch(&exec, origin, end).await;
        self.elapsed = Duration::from_nanos(clock.now_ns().saturating_sub(origin));
        exec.tracker.close();
        exec.tracker.wait().await;

        // Let the consumers drain, then stop everything.
        drain.cancel();
        let hard = hard_stop.clone();
        let drain_timeout = config.drain_timeout;
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(drain_timeout).await;
            hard.cancel();
        });
        workers.wait().await;
        stopper.abort();
        background.cancel();
        for t in tasks {
            t.abort();
            let _ = t.await;
        }
        if let Some(faults) = &self.faults {
            faults
                .lock()
                .expect("faults")
                .poll(&clock, &exec.recorder.observations());
        }
        if let Some(e) = failure.or_else(|| exec.recorder.failure()) {
            return Err(WorkloadError::HistoryWrite {
                path: config.history.clone(),
                message: e,
            });
        }
        let totals = exec.recorder.snapshot().await;
        Ok(Summary::from_totals(
            &self.run_id,
            config.adapter.name(),
            self.elapsed,
            &totals,
        ))
    }

    /// Cancellation forwarding, leader sampling, progress and endpoint refresh.
    fn spawn_background(
        &self,
        cancel: CancellationToken,
        origin: u64,
        background: &CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let exec = &self.exec;
        let mut tasks = Vec::new();
        let sessions_cancel = exec.cancel.clone();
        tasks.push(tokio::spawn(async move {
            cancel.cancelled().await;
            sessions_cancel.cancel();
        }));
        if self.target.nats.iter().any(|s| s.monitor.is_some()) {
            tasks.push(tokio::spawn(leader_loop(
                self.target.clone(),
                self.monitor.clone(),
                exec.clock,
                exec.recorder.observations(),
                exec.config.sample_interval,
                background.clone(),
            )));
        }
        if let Some(faults) = &self.faults {
            tasks.push(tokio::spawn(fault_loop(
                faults.clone(),
                exec.clock,
                exec.recorder.observations(),
                background.clone(),
            )));
        }
        tasks.push(tokio::spawn(progress_loop(
            exec.clone(),
            self.faults.clone(),
            self.progress.clone(),
            self.on_progress.clone(),
            origin,
            background.clone(),
        )));
        if let (Adapter::Http { client, zones }, true) =
            (&exec.adapter, self.target.lab().is_some())
        {
            let clients = std::iter::once(client).chain(zones).cloned().collect();
            tasks.push(tokio::spawn(refresh_endpoints(
                self.target.clone(),
                clients,
                background.clone(),
            )));
        }
        tasks
    }

    /// The job consumers of every tenant that runs jobs.
    fn spawn_workers(
        &self,
        drain: &CancellationToken,
        hard_stop: &CancellationToken,
    ) -> TaskTracker {
        let exec = &self.exec;
        let workers = TaskTracker::new();
        if let Adapter::Nats { groups } = &exec.adapter {
            for (tenant, consumer) in &self.consumers {
                let spec = &exec.tenants[*tenant];
                let conn = nats_conn_of(groups, spec.index).clone();
                for w in 1..=exec.config.tier(spec.tier).workers {
                    workers.spawn(job_worker(
                        exec.clone(),
                        *tenant,
                        format!("{}/w{w}", spec.id),
                        consumer.clone(),
                        conn.clone(),
                        drain.clone(),
                        hard_stop.clone(),
                    ));
                }
            }
        }
        workers.close();
        workers
    }

    /// Sets the convergence deadline of the final read-back on the run's clock (an engine
    /// counts it from the last heal), instead of `settle` from the read-back's start.
    pub fn settle_until(&mut self, deadline_ns: u64) {
        self.settle_until_ns = Some(deadline_ns);
    }

    /// The final read-back: every tenant's data through every node (NATS servers, or gateway
    /// endpoints for the HTTP adapter) separately, each a `read_back` operation in the
    /// history; for NATS also each server's stream state as `stream_info` observations.
    pub async fn read_back(&mut self) -> Result<ReadBackSummary, WorkloadError> {
        let _ = self.target.refresh();
        let exec = self.exec.clone();
        // Settle first: a replica that is still catching up is read as it will stay.
        if !self.target.nats.is_empty() {
            let deadline_ns = self
                .settle_until_ns
                .unwrap_or_else(|| exec.clock.now_ns() + exec.config.settle.as_nanos() as u64);
            self.monitor
                .settle(
                    &self.target.nats,
                    &exec.clock,
                    &exec.recorder.observations(),
                    deadline_ns,
                )
                .await;
        }
        let mut fingerprints: BTreeMap<usize, Vec<Option<u64>>> = BTreeMap::new();
        let mut nodes = Vec::new();
        let mut replicas = Vec::new();
        match &exec.adapter {
            Adapter::Nats { .. } => {
                for server in self.target.nats.clone() {
                    let node = read_back_nats(
                        &exec,
                        &self.target,
                        &self.monitor,
                        &server,
                        &mut fingerprints,
                    )
                    .await;
                    nodes.push(node);
                }
                replicas = self.read_back_replicas().await;
            }
            Adapter::Http { client, .. } => {
                // Stream state as each NATS server sees it, when the servers are known.
                for server in &self.target.nats {
                    let _ = self
                        .monitor
                        .stream_infos(
                            &self.target.nats,
                            server,
                            &exec.clock,
                            &exec.recorder.observations(),
                        )
                        .await;
                }
                for endpoint in client.endpoints() {
                    let node = read_back_http(&exec, client, &endpoint, &mut fingerprints).await;
                    nodes.push(node);
                }
            }
        }
        let mut summary = ReadBackSummary {
            nodes,
            replicas,
            tenants: exec.tenants.len() as u64,
            ..ReadBackSummary::default()
        };
        for (tenant, prints) in &fingerprints {
            let first = prints.first().copied().flatten();
            if first.is_some()
                && prints.len() == summary.nodes.len()
                && prints.iter().all(|p| *p == first)
            {
                summary.agreeing += 1;
            } else if summary.disagreeing.len() < 20 {
                summary.disagreeing.push(exec.tenants[*tenant].id.clone());
            }
        }
        if let Some(faults) = &self.faults {
            faults
                .lock()
                .expect("faults")
                .poll(&exec.clock, &exec.recorder.observations());
        }
        self.read_back = Some(summary.clone());
        Ok(summary)
    }

    /// Each NATS server's own replica read alone (on a lab, unless `replica_read_back` is off),
    /// server by server in replica order.
    async fn read_back_replicas(&mut self) -> Vec<NodeReadBack> {
        let exec = self.exec.clone();
        let mut replicas = Vec::new();
        let Some(ctx) = self
            .target
            .lab()
            .filter(|_| {
                exec.config.replica_read_back
                    && self.target.nats.len() > 1
                    && self.target.from_topology()
            })
            .cloned()
        else {
            return replicas;
        };
        // What happened before is the run's; the holds below and the restarts they cause
        // are not.
        if let Some(faults) = &self.faults {
            faults
                .lock()
                .expect("faults")
                .poll(&exec.clock, &exec.recorder.observations());
        }
        // The replica views do not count in the summary's agreement of the views through nodes.
        let mut ignored = BTreeMap::new();
        for server in self.target.nats.clone() {
            replicas.push(
                read_replica_alone(
                    &exec,
                    &self.target,
                    &self.monitor,
                    &ctx,
                    &server,
                    &mut ignored,
                )
                .await,
            );
        }
        if let Some(faults) = &self.faults {
            faults.lock().expect("faults").forget_restarts();
        }
        replicas
    }

    /// Closes the history and observations (recording faults still active as open windows)
    /// and returns the report.
    pub async fn finish(mut self) -> Result<WorkloadReport, WorkloadError> {
        if let Some(faults) = &self.faults {
            let mut f = faults.lock().expect("faults");
            f.poll(&self.exec.clock, &self.exec.recorder.observations());
            f.close(&self.exec.recorder.observations());
        }
        // Give the writer a moment to take the last observations off the queue.
        let _ = self.exec.recorder.snapshot().await;
        let thread = self.thread.take().expect("finished once");
        let closed = tokio::task::spawn_blocking(move || thread.close())
            .await
            .map_err(|e| WorkloadError::HistoryWrite {
                path: self.exec.config.history.clone(),
                message: e.to_string(),
            })??;
        Ok(WorkloadReport {
            summary: Summary::from_totals(
                &self.run_id,
                self.exec.config.adapter.name(),
                self.elapsed,
                &closed.totals,
            ),
            read_back: self.read_back.take(),
            history: closed.history,
            observations: closed.observations,
        })
    }
}

/// Starts each unit at its intended time until the schedule ends, the run is cancelled or the
/// history cannot be written (the reason is returned); then waits for the run's end.
async fn dispatch(exec: &Arc<Exec>, origin: u64, end: u64) -> Option<String> {
    let clock = exec.clock;
    for unit in Schedule::new(&exec.config, &exec.tenants) {
        let at = origin + unit.at_ns;
        tokio::select! {
            () = sleep_until(&clock, at) => {}
            () = exec.cancel.cancelled() => return None,
        }
        if let Some(e) = exec.recorder.failure() {
            return Some(e);
        }
        let e = exec.clone();
        exec.tracker
            .spawn(async move { e.unit(unit, origin).await });
    }
    tokio::select! {
        () = sleep_until(&clock, end) => {}
        () = exec.cancel.cancelled() => {}
    }
    None
}

/// The connection settings of load connection `k`.
fn load_connect_spec(config: &WorkloadConfig, urls: Vec<String>, k: usize) -> ConnectSpec {
    ConnectSpec {
        urls,
        name: format!("faultline-load-{k}"),
        connect_timeout: Duration::from_secs(3),
        op_timeout: config.op_timeout,
        ping_interval: config.ping_interval,
        pinned_node: None,
        retry_initial: false,
    }
}

/// The load's client settings, for the history header.
fn client_settings(config: &WorkloadConfig) -> ClientSettings {
    match config.adapter {
        AdapterKind::Nats => load_connect_spec(config, Vec::new(), 0).client_settings(),
        AdapterKind::Http => {
            let timeout = u64::try_from(config.http_timeout.as_millis()).unwrap_or(u64::MAX);
            // The HTTP client's connect and request share one timeout.
            ClientSettings {
                connect_timeout_ms: timeout,
                request_timeout_ms: timeout,
                retries: Some(config.http_retries),
                ..ClientSettings::default()
            }
        }
    }
}

/// How long provisioning keeps retrying a tenant's stream before the load gives up.
const PROVISION_PATIENCE: Duration = Duration::from_secs(20);

async fn connect_nats(
    config: &WorkloadConfig,
    target: &Target,
    tenants: &Arc<Vec<TenantSpec>>,
    sites: Vec<SiteWithNodes>,
) -> Result<(Adapter, Vec<(usize, PullConsumer)>), WorkloadError> {
    if target.nats.is_empty() {
        return Err(WorkloadError::Config(
            "the target has no NATS servers (give --nats URLs or a lab with a NATS service)"
                .to_owned(),
        ));
    }
    let unreachable = |spec: &ConnectSpec, reason| WorkloadError::Unreachable {
        what: "NATS".to_owned(),
        endpoints: spec.urls.join(", "),
        reason,
    };
    let mut groups = Vec::new();
    if sites.is_empty() {
        let mut conns = Vec::with_capacity(config.connections);
        for k in 0..config.connections {
            let spec = load_connect_spec(config, target.nats_urls_for(k), k);
            let conn = NatsConn::connect(&spec, target.node_of_host.clone())
                .await
                .map_err(|reason| unreachable(&spec, reason))?;
            conns.push(conn);
        }
        groups.push(conns);
    }
    // Each zone's clients share `connections` connections made in its client namespace,
    // listing its own servers first.
    for (site, near) in sites {
        let mut conns = Vec::with_capacity(config.connections);
        for k in 0..config.connections {
            let mut spec = load_connect_spec(config, target.nats_urls_near(&near, k), k);
            spec.name = format!("faultline-load-{}-{k}", site.zone);
            let conn = NatsConn::connect_at(&spec, target.node_of_host.clone(), site.clone())
                .await
                .map_err(|reason| {
                    unreachable(&spec, format!("from zone {}: {reason}", site.zone))
                })?;
            conns.push(conn);
        }
        groups.push(conns);
    }
    // Each tenant is provisioned through its own connection, so its job consumer pulls through
    // it too, from where its clients stand.
    let results: Vec<Result<Option<(usize, PullConsumer)>, WorkloadError>> =
        futures::stream::iter(tenants.iter())
            .map(|t| {
                let js = nats_conn_of(&groups, t.index).js.clone();
                let replicas = config.stream_replicas;
                let fresh = config.fresh;
                async move {
                    // Right after `lab up` the cluster can still be placing its first streams
                    // (a JetStream request times out): keep asking for a while, not 5 times.
                    let started = std::time::Instant::now();
                    let mut attempts = 0u64;
                    loop {
                        attempts += 1;
                        let last = match provision(&js, &t.id, replicas, fresh, t.jobs).await {
                            Ok(consumer) => return Ok(consumer.map(|c| (t.index as usize, c))),
                            Err(e) => e,
                        };
                        if started.elapsed() >= PROVISION_PATIENCE {
                            return Err(WorkloadError::Provision {
                                tenant: t.id.clone(),
                                reason: format!(
                                    "{last} (after {attempts} attempts in {} s)",
                                    started.elapsed().as_secs()
                                ),
                            });
                        }
                        tokio::time::sleep(Duration::from_millis(200 * attempts.min(5))).await;
                    }
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
    let mut consumers = Vec::new();
    for r in results {
        if let Some(c) = r? {
            consumers.push(c);
        }
    }
    consumers.sort_by_key(|(i, _)| *i);
    Ok((Adapter::Nats { groups }, consumers))
}

async fn connect_http(
    config: &WorkloadConfig,
    target: &Target,
    tenants: &Arc<Vec<TenantSpec>>,
    sites: Vec<SiteWithNodes>,
) -> Result<(Adapter, Vec<(usize, PullConsumer)>), WorkloadError> {
    if target.gateways.is_empty() {
        return Err(WorkloadError::Config(
            format!(
                "the target has no HTTP endpoints: give --gateway URLs, or name the lab services that serve the HTTP contract (--service, or workload.services in the spec; now: {})",
                config.http_services.join(", ")
            ),
        ));
    }
    let client = Arc::new(HttpClient::new(
        &target.gateways,
        config.http_timeout,
        config.http_retries,
    ));
    let health = client.healthy().await;
    if health.iter().all(|(_, r)| r.is_err()) {
        return Err(WorkloadError::Unreachable {
            what: "tenant gateway".to_owned(),
            endpoints: health
                .iter()
                .map(|(a, _)| format!("http://{a}"))
                .collect::<Vec<_>>()
                .join(", "),
            reason: health
                .iter()
                .filter_map(|(_, r)| r.as_ref().err().cloned())
                .collect::<Vec<_>>()
                .join("; "),
        });
    }
    let results: Vec<Result<(), WorkloadError>> = futures::stream::iter(tenants.iter())
        .map(|t| {
            let client = client.clone();
            let fresh = config.fresh;
            async move {
                client
                    .provision(&t.id, fresh)
                    .await
                    .map_err(|reason| WorkloadError::Provision {
                        tenant: t.id.clone(),
                        reason,
                    })
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    for r in results {
        r?;
    }
    let zones = sites
        .into_iter()
        .map(|(site, near)| {
            Arc::new(HttpClient::at_site(
                &target.gateways,
                config.http_timeout,
                config.http_retries,
                site,
                near,
            ))
        })
        .collect();
    Ok((Adapter::Http { client, zones }, Vec::new()))
}

/// A payload of `size` bytes that names its value and tenant.
fn payload(tenant: &str, value: &str, size: usize) -> Bytes {
    let mut body =
        format!("{{\"tenant\":\"{tenant}\",\"value\":\"{value}\",\"pad\":\"").into_bytes();
    let fill = size.saturating_sub(body.len() + 2);
    body.resize(body.len() + fill, b'x');
    body.extend_from_slice(b"\"}");
    Bytes::from(body)
}

/// The common fields of the operations of one unit.
struct Meta<'a> {
    tenant: &'a TenantSpec,
    process: &'a str,
    pattern: Pattern,
}

/// The rest of an operation's fields.
struct Done {
    kind: OpKind,
    node: String,
    reconnected: bool,
    sent_node: Option<String>,
    value: Option<String>,
    attempt: u32,
    seq: Option<u64>,
    invoke_ns: u64,
    complete_ns: u64,
    outcome: Outcome,
    error: Option<String>,
    read: Option<Vec<ReadItem>>,
    served_tenant: Option<String>,
}

impl Done {
    /// A read: `ok` with its items and the tenant they were served for, or `fail`.
    fn read(
        node: String,
        attempt: u32,
        invoke_ns: u64,
        complete_ns: u64,
        result: Result<(Vec<ReadItem>, String), String>,
    ) -> Self {
        let (outcome, error, read, served_tenant) = match result {
            Ok((items, served)) => (Outcome::Ok, None, Some(items), Some(served)),
            Err(e) => (Outcome::Fail, Some(e), None, None),
        };
        Self {
            kind: OpKind::Read,
            node,
            reconnected: false,
            sent_node: None,
            value: None,
            attempt,
            seq: None,
            invoke_ns,
            complete_ns,
            outcome,
            error,
            read,
            served_tenant,
        }
    }
}

impl Done {
    /// Marks an operation during which the client reconnected, sent through `sent_node`.
    fn reconnected(mut self, sent_node: Option<String>) -> Self {
        self.reconnected = sent_node.is_some();
        self.sent_node = sent_node;
        self
    }
}

impl Meta<'_> {
    fn op(&self, clock: &RunClock, d: Done) -> Operation {
        Operation {
            tenant: self.tenant.id.clone(),
            process: self.process.to_owned(),
            node: d.node,
            reconnected: d.reconnected,
            sent_node: d.sent_node,
            client_zone: self.tenant.client_zone.clone(),
            kind: d.kind,
            pattern: self.pattern,
            value: d.value,
            attempt: d.attempt,
            stream: self.tenant.stream.clone(),
            seq: d.seq,
            invoke_ns: d.invoke_ns,
            complete_ns: d.complete_ns,
            invoke_unix_ms: clock.unix_ms_at(d.invoke_ns),
            complete_unix_ms: clock.unix_ms_at(d.complete_ns),
            outcome: d.outcome,
            error: d.error,
            read: d.read,
            served_tenant: d.served_tenant,
        }
    }
}

fn items(records: &[ReadRecord]) -> Vec<ReadItem> {
    records
        .iter()
        .map(|r| ReadItem {
            seq: r.seq,
            value: r.value.clone(),
        })
        .collect()
}

/// The tenant a read was served for: ours when every record is ours, else the first other.
fn served(tenant: &str, records: &[ReadRecord]) -> String {
    records
        .iter()
        .filter_map(|r| r.tenant.as_deref())
        .find(|t| *t != tenant)
        .unwrap_or(tenant)
        .to_owned()
}

impl Exec {
    async fn unit(self: Arc<Self>, unit: Unit, origin: u64) {
        let tenant = &self.tenants[unit.tenant as usize];
        let process = unit.process(&tenant.id);
        let start = origin + unit.at_ns;
        match &unit.kind {
            UnitKind::Chat { messages, .. } => {
                let meta = Meta {
                    tenant,
                    process: &process,
                    pattern: Pattern::Chat,
                };
                if let (Adapter::Http { client, zones }, ChatMode::Websocket) =
                    (&self.adapter, self.config.chat)
                {
                    let client = http_client_of(client, zones, tenant.index);
                    self.chat_session_ws(&meta, client, messages, start).await;
                    return;
                }
                let reply_after = self.config.patterns.reply_after.as_nanos() as u64;
                let mut first_seq = None;
                for (k, offset) in messages.iter().enumerate() {
                    let at = start + offset;
                    if !self.wait(at).await {
                        return;
                    }
                    let value = format!("{process}/{}", k + 1);
                    if let Some(seq) = self.write(&meta, "chat", value, at).await {
                        first_seq.get_or_insert(seq);
                    }
                    let reply = at + reply_after;
                    if !self.wait(reply).await {
                        return;
                    }
                    self.read(&meta, first_seq.unwrap_or(1), reply).await;
                }
            }
            UnitKind::Batch { docs: n, .. } | UnitKind::Burst { writes: n, .. } => {
                let (pattern, kind, gap) = if matches!(unit.kind, UnitKind::Batch { .. }) {
                    (Pattern::Batch, "batch", self.config.patterns.batch_gap)
                } else {
                    (Pattern::Idle, "idle", self.config.patterns.burst_gap)
                };
                let gap = gap.as_nanos() as u64;
                for k in 0..u64::from(*n) {
                    let at = start + k * gap;
                    if !self.wait(at).await {
                        return;
                    }
                    let me = self.clone();
                    let process = process.clone();
                    let index = unit.tenant as usize;
                    // Pipelined: each document goes at its own time, without waiting for the
                    // previous acknowledgement.
                    self.tracker.spawn(async move {
                        let meta = Meta {
                            tenant: &me.tenants[index],
                            process: &process,
                            pattern,
                        };
                        let value = format!("{process}/{}", k + 1);
                        me.write(&meta, kind, value, at).await;
                    });
                }
            }
            UnitKind::Job { job } => {
                let meta = Meta {
                    tenant,
                    process: &process,
                    pattern: Pattern::Job,
                };
                if self.wait(start).await {
                    self.write(&meta, "job", format!("{process}/{job}"), start)
                        .await;
                }
            }
        }
    }

    /// Sleeps until `ns`; false when cancelled.
    async fn wait(&self, ns: u64) -> bool {
        if self.cancel.is_cancelled() {
            return false;
        }
        tokio::select! {
            () = sleep_until(&self.clock, ns) => true,
            () = self.cancel.cancelled() => false,
        }
    }

    /// One logical write (with its retries, for HTTP); the acknowledged sequence, if any.
    async fn write(
        &self,
        meta: &Meta<'_>,
        kind: &str,
        value: String,
        intended_ns: u64,
    ) -> Option<u64> {
        let _permit = self.permits.acquire().await.ok()?;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let tier = self.config.tier(meta.tenant.tier);
        let body = payload(&meta.tenant.id, &value, payload_size(tier, &value));
        let seq = match &self.adapter {
            Adapter::Nats { groups } => {
                let conn = nats_conn_of(groups, meta.tenant.index);
                self.write_nats(meta, conn, kind, value, body, intended_ns)
                    .await
            }
            Adapter::Http { client, zones } => {
                let client = http_client_of(client, zones, meta.tenant.index);
                self.write_http(meta, client, kind, &value, body, intended_ns)
                    .await
            }
        };
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        seq
    }

    async fn write_nats(
        &self,
        meta: &Meta<'_>,
        conn: &NatsConn,
        kind: &str,
        value: String,
        body: Bytes,
        intended_ns: u64,
    ) -> Option<u64> {
        let sent = conn.server();
        let result = conn
            .write(&subject(&meta.tenant.id, kind), &value, body)
            .await;
        let complete_ns = self.clock.now_ns();
        // The answer's server, taken now that it has arrived: a publish buffered across a
        // reconnect was answered through the new server, not the one it was sent to.
        let served = Served::between(sent, conn.server());
        if result.duplicate {
            self.recorder.duplicate_ack().await;
        }
        let done = Done {
            kind: OpKind::Write,
            node: served.node,
            reconnected: served.reconnected,
            sent_node: served.sent_node,
            value: Some(value),
            attempt: 1,
            seq: result.seq,
            invoke_ns: intended_ns,
            complete_ns,
            outcome: result.outcome,
            error: result.error,
            read: None,
            served_tenant: None,
        };
        self.recorder
            .op(meta.op(&self.clock, done), meta.tenant.tier)
            .await;
        result.seq.filter(|_| result.outcome == Outcome::Ok)
    }

    /// Attempts until one is acknowledged, a failure is final, or the retries are used up. A
    /// retry goes to the next endpoint after a backoff; its invoke time is when it is sent.
    async fn write_http(
        &self,
        meta: &Meta<'_>,
        client: &HttpClient,
        kind: &str,
        value: &str,
        body: Bytes,
        intended_ns: u64,
    ) -> Option<u64> {
        let path = super::contract::records_path(&meta.tenant.id);
        let headers = HttpClient::write_headers(&meta.tenant.id, value, kind);
        let mut invoke_ns = intended_ns;
        for attempt in 1..=1 + client.retries {
            let endpoint = client.pick()?;
            let a = client
                .attempt(&endpoint, Method::POST, &path, &headers, body.clone())
                .await;
            let complete_ns = self.clock.now_ns();
            let (seq, duplicate) = a.body.as_deref().map_or((None, false), parse_ack);
            if duplicate {
                self.recorder.duplicate_ack().await;
            }
            let done = Done {
                kind: OpKind::Write,
                node: a.node.clone(),
                reconnected: false,
                sent_node: None,
                value: Some(value.to_owned()),
                attempt,
                seq,
                invoke_ns,
                complete_ns,
                outcome: a.outcome,
                error: a.error.clone(),
                read: None,
                served_tenant: None,
            };
            self.recorder
                .op(meta.op(&self.clock, done), meta.tenant.tier)
                .await;
            if a.outcome == Outcome::Ok {
                return seq;
            }
            if !a.retry {
                return None;
            }
            if attempt <= client.retries {
                tokio::time::sleep(HttpClient::backoff(attempt + 1)).await;
                invoke_ns = self.clock.now_ns();
            }
        }
        None
    }

    /// One in-run read of a tenant's records from `from` on (a chat reply).
    async fn read(&self, meta: &Meta<'_>, from: u64, intended_ns: u64) {
        let Ok(_permit) = self.permits.acquire().await else {
            return;
        };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let limit = u64::from(self.config.patterns.read_limit);
        match &self.adapter {
            Adapter::Nats { groups } => {
                let conn = nats_conn_of(groups, meta.tenant.index);
                let sent = conn.server();
                let budget = self.config.op_timeout * 2;
                let read = conn.read(&meta.tenant.stream, from, limit, 0);
                let result = match tokio::time::timeout(budget, read).await {
                    Ok(Ok(records)) => Ok((items(&records), served(&meta.tenant.id, &records))),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(format!("read timed out after {budget:?}")),
                };
                let complete_ns = self.clock.now_ns();
                let served = Served::between(sent, conn.server());
                let done = Done::read(served.node, 1, intended_ns, complete_ns, result)
                    .reconnected(served.sent_node);
                self.recorder
                    .op(meta.op(&self.clock, done), meta.tenant.tier)
                    .await;
            }
            Adapter::Http { client, zones } => {
                let client = http_client_of(client, zones, meta.tenant.index);
                self.read_http(meta, client, from, limit, intended_ns).await;
            }
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    async fn read_http(
        &self,
        meta: &Meta<'_>,
        client: &HttpClient,
        from: u64,
        limit: u64,
        intended_ns: u64,
    ) {
        let path = HttpClient::read_path(&meta.tenant.id, from, limit);
        let headers = [(super::contract::TENANT_HEADER, meta.tenant.id.as_str())];
        let mut invoke_ns = intended_ns;
        for attempt in 1..=1 + client.retries {
            let Some(endpoint) = client.pick() else { break };
            let a = client
                .attempt(&endpoint, Method::GET, &path, &headers, Bytes::new())
                .await;
            let complete_ns = self.clock.now_ns();
            let result = match (a.outcome, a.body.as_deref().map(parse_records)) {
                (Outcome::Ok, Some(Ok(list))) => {
                    let items = list
                        .records
                        .into_iter()
                        .map(|r| ReadItem {
                            seq: r.seq,
                            value: r.id,
                        })
                        .collect();
                    Ok((items, list.tenant))
                }
                (Outcome::Ok, Some(Err(e))) => Err(e),
                _ => Err(a.error.clone().unwrap_or_default()),
            };
            let ok = result.is_ok();
            let done = Done::read(a.node.clone(), attempt, invoke_ns, complete_ns, result);
            self.recorder
                .op(meta.op(&self.clock, done), meta.tenant.tier)
                .await;
            if ok || !a.retry || attempt > client.retries {
                break;
            }
            tokio::time::sleep(HttpClient::backoff(attempt + 1)).await;
            invoke_ns = self.clock.now_ns();
        }
    }
}

/// Chat sessions over the contract's WebSocket (`--chat websocket`, module [`super::chat_ws`]).
impl Exec {
    /// One session: its messages and reply reads as frames on one socket, opened at the first
    /// message and again whenever it was lost.
    async fn chat_session_ws(
        &self,
        meta: &Meta<'_>,
        client: &HttpClient,
        messages: &[u64],
        start: u64,
    ) {
        let reply_after = self.config.patterns.reply_after.as_nanos() as u64;
        let limit = self.config.patterns.read_limit;
        let mut socket = None;
        let mut first_seq = None;
        for (k, offset) in messages.iter().enumerate() {
            let at = start + offset;
            if !self.wait(at).await {
                break;
            }
            let tier = self.config.tier(meta.tenant.tier);
            let value = format!("{}/{}", meta.process, k + 1);
            let body = payload(&meta.tenant.id, &value, payload_size(tier, &value));
            let write = ChatRequest::Write {
                payload: String::from_utf8_lossy(&body).into_owned(),
                id: value,
            };
            if let Some(seq) = self.ws_step(meta, client, &mut socket, &write, at).await {
                first_seq.get_or_insert(seq);
            }
            let reply = at + reply_after;
            if !self.wait(reply).await {
                break;
            }
            let read = ChatRequest::Read {
                from_seq: first_seq.unwrap_or(1),
                limit,
            };
            self.ws_step(meta, client, &mut socket, &read, reply).await;
        }
        if let Some(socket) = socket {
            socket.close().await;
        }
    }

    /// One write or read on the session's socket, with its retries (as over HTTP: at most
    /// `http_retries` more rounds, after a backoff). A round without a socket first opens one
    /// and records that as a `connect` operation; a round whose connect failed sends nothing.
    /// The step's first operation is invoked at the intended time, later ones when sent. A
    /// write's acknowledged sequence, if any.
    async fn ws_step(
        &self,
        meta: &Meta<'_>,
        client: &HttpClient,
        socket: &mut Option<ChatSocket>,
        request: &ChatRequest,
        intended_ns: u64,
    ) -> Option<u64> {
        let _permit = self.permits.acquire().await.ok()?;
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let mut invoke_ns = intended_ns;
        let (mut sent, mut connects) = (0, 0);
        let mut acked = None;
        for round in 1..=1 + client.retries {
            if round > 1 {
                tokio::time::sleep(HttpClient::backoff(round)).await;
                invoke_ns = self.clock.now_ns();
            }
            // A socket the server closed while it was idle is replaced before sending.
            if socket.as_mut().is_some_and(ChatSocket::is_gone) {
                *socket = None;
            }
            if socket.is_none() {
                let Some(endpoint) = client.pick() else { break };
                connects += 1;
                let opened = ChatSocket::open(&endpoint, &meta.tenant.id, client.timeout).await;
                let complete_ns = self.clock.now_ns();
                self.record_connect(meta, &opened, connects, invoke_ns, complete_ns)
                    .await;
                match opened {
                    Ok(s) => *socket = Some(s),
                    Err(_) => continue,
                }
                invoke_ns = complete_ns;
            }
            let Some(open) = socket.as_mut() else { break };
            sent += 1;
            let result = open.request(request, client.timeout).await;
            let complete_ns = self.clock.now_ns();
            // The reply names the replica that served it; without one, the socket's.
            let node = result
                .as_ref()
                .map_or_else(|_| open.node.clone(), |r| r.node().to_owned());
            if result.is_err() {
                *socket = None;
            }
            let (done, retry) = self
                .ws_done(request, result, node, sent, invoke_ns, complete_ns)
                .await;
            let ok = done.outcome == Outcome::Ok;
            acked = done.seq.filter(|_| ok);
            self.recorder
                .op(meta.op(&self.clock, done), meta.tenant.tier)
                .await;
            if ok || !retry {
                break;
            }
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        acked
    }

    async fn record_connect(
        &self,
        meta: &Meta<'_>,
        opened: &Result<ChatSocket, super::chat_ws::ConnectFailure>,
        attempt: u32,
        invoke_ns: u64,
        complete_ns: u64,
    ) {
        let (node, outcome, error) = match opened {
            Ok(s) => (s.node.clone(), Outcome::Ok, None),
            Err(f) => (f.node.clone(), Outcome::Fail, Some(f.error.clone())),
        };
        let done = Done {
            kind: OpKind::Connect,
            node,
            reconnected: false,
            sent_node: None,
            value: None,
            attempt,
            seq: None,
            invoke_ns,
            complete_ns,
            outcome,
            error,
            read: None,
            served_tenant: None,
        };
        self.recorder
            .op(meta.op(&self.clock, done), meta.tenant.tier)
            .await;
    }

    /// The history operation of one request on the socket, and whether to retry it.
    async fn ws_done(
        &self,
        request: &ChatRequest,
        result: Result<ChatReply, super::chat_ws::SocketFailure>,
        node: String,
        attempt: u32,
        invoke_ns: u64,
        complete_ns: u64,
    ) -> (Done, bool) {
        match request {
            ChatRequest::Write { id, .. } => {
                let (outcome, retry, seq, error) = match result {
                    Ok(ChatReply::Ack { seq, duplicate, .. }) => {
                        if duplicate {
                            self.recorder.duplicate_ack().await;
                        }
                        (Outcome::Ok, false, seq, None)
                    }
                    Ok(ChatReply::Error { status, error, .. }) => {
                        let (outcome, retry) = error_outcome(status);
                        (outcome, retry, None, Some(format!("{status}: {error}")))
                    }
                    // Not an answer to a write: whether it was stored is unknown.
                    Ok(ChatReply::Records { .. }) => (
                        Outcome::Info,
                        true,
                        None,
                        Some("a records frame answered a write".to_owned()),
                    ),
                    Err(f) => (f.write_outcome(), true, None, Some(f.describe(&node))),
                };
                let done = Done {
                    kind: OpKind::Write,
                    node,
                    reconnected: false,
                    sent_node: None,
                    value: Some(id.clone()),
                    attempt,
                    seq,
                    invoke_ns,
                    complete_ns,
                    outcome,
                    error,
                    read: None,
                    served_tenant: None,
                };
                (done, retry)
            }
            ChatRequest::Read { .. } => {
                let (result, retry) = match result {
                    Ok(ChatReply::Records {
                        tenant, records, ..
                    }) => {
                        let items = records
                            .into_iter()
                            .map(|r| ReadItem {
                                seq: r.seq,
                                value: r.id,
                            })
                            .collect();
                        (Ok((items, tenant)), false)
                    }
                    Ok(ChatReply::Error { status, error, .. }) => {
                        (Err(format!("{status}: {error}")), error_outcome(status).1)
                    }
                    Ok(ChatReply::Ack { .. }) => {
                        (Err("an ack frame answered a read".to_owned()), true)
                    }
                    Err(f) => (Err(f.describe(&node)), true),
                };
                (
                    Done::read(node, attempt, invoke_ns, complete_ns, result),
                    retry,
                )
            }
        }
    }
}

/// A work-queue consumer of one tenant: pulls jobs, records each delivery, acks it. After
/// `drain` it stops at the first empty pull; after `hard_stop` at once.
async fn job_worker(
    exec: Arc<Exec>,
    tenant: usize,
    process: String,
    consumer: PullConsumer,
    conn: NatsConn,
    drain: CancellationToken,
    hard_stop: CancellationToken,
) {
    let spec = &exec.tenants[tenant];
    let meta = Meta {
        tenant: spec,
        process: &process,
        pattern: Pattern::Job,
    };
    loop {
        if hard_stop.is_cancelled() {
            break;
        }
        let draining = drain.is_cancelled();
        let batch = tokio::select! {
            () = hard_stop.cancelled() => break,
            b = consumer.batch().max_messages(32).expires(Duration::from_millis(500)).messages() => b,
        };
        let Ok(mut batch) = batch else {
            if draining {
                break;
            }
            tokio::select! {
                () = hard_stop.cancelled() => break,
                () = tokio::time::sleep(Duration::from_millis(250)) => continue,
            }
        };
        let mut got = 0u32;
        loop {
            let next = tokio::select! {
                () = hard_stop.cancelled() => None,
                m = batch.next() => m,
            };
            let Some(Ok(message)) = next else { break };
            got += 1;
            let received = exec.clock.now_ns();
            // It arrived through the server the connection is on now.
            let node = conn.node();
            let value = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned());
            let seq = message.info().ok().map(|i| i.stream_sequence);
            let ack = message
                .ack()
                .await
                .err()
                .map(|e| format!("ack not sent: {e}"));
            let done = Done {
                kind: OpKind::Deliver,
                node,
                reconnected: false,
                sent_node: None,
                value,
                attempt: 1,
                seq,
                invoke_ns: received,
                complete_ns: exec.clock.now_ns(),
                outcome: Outcome::Ok,
                error: ack,
                read: None,
                served_tenant: None,
            };
            exec.recorder
                .op(meta.op(&exec.clock, done), spec.tier)
                .await;
        }
        if got == 0 && draining {
            break;
        }
    }
}

async fn progress_loop(
    exec: Arc<Exec>,
    faults: Option<Arc<Mutex<FaultWatcher>>>,
    progress: Arc<Mutex<Progress>>,
    on_progress: Option<ProgressFn>,
    origin: u64,
    stop: CancellationToken,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = exec.clock.now_ns();
    let _ = exec.recorder.take_window();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let now = exec.clock.now_ns();
        let totals = exec.recorder.take_window();
        let active = faults
            .as_ref()
            .map(|f| f.lock().expect("faults").active())
            .unwrap_or_default();
        let (ops, _, fail, info) = totals.load_total();
        let dt = (now.saturating_sub(last)).max(1) as f64 / 1e9;
        last = now;
        let p = Progress {
            elapsed_s: now.saturating_sub(origin) as f64 / 1e9,
            ops_per_s: totals.window.ops as f64 / dt,
            ops,
            fail,
            info,
            window_fail: totals.window.fail,
            window_info: totals.window.info,
            p99_ms: totals.window.latency.quantile(0.99) as f64 / 1000.0,
            in_flight: exec.in_flight.load(Ordering::Relaxed),
            faults: active,
        };
        if let Some(f) = &on_progress {
            f(&p);
        }
        *progress.lock().expect("progress") = p;
    }
}

async fn refresh_endpoints(
    mut target: Target,
    clients: Vec<Arc<HttpClient>>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        if target.refresh().is_ok() && !target.gateways.is_empty() {
            for client in &clients {
                client.set_endpoints(&target.gateways);
            }
        }
    }
}

/// One tenant's read-back through one node: (tenant index, records and the tenant they were
/// served for, invoke ns, complete ns).
type TenantRead = (usize, Result<(Vec<ReadRecord>, String), String>, u64, u64);

fn fingerprint(records: &[ReadRecord]) -> u64 {
    records.iter().fold(records.len() as u64, |acc, r| {
        mix(&[acc, r.seq, super::rng::hash_str(&r.value)])
    })
}

/// Records the read-back operations through `node` (`pattern` says whether through it or of
/// its replica alone), in tenant order, and counts them.
async fn record_read_back(
    exec: &Exec,
    node: &str,
    pattern: Pattern,
    mut reads: Vec<TenantRead>,
    fingerprints: &mut BTreeMap<usize, Vec<Option<u64>>>,
) -> NodeReadBack {
    let mut summary = NodeReadBack {
        node: node.to_owned(),
        ..NodeReadBack::default()
    };
    let process = if pattern == Pattern::ReadBackReplica {
        format!("readback-replica/{node}")
    } else {
        format!("readback/{node}")
    };
    reads.sort_by_key(|(i, ..)| *i);
    for (index, result, invoke, complete) in reads {
        let t = &exec.tenants[index];
        let meta = Meta {
            tenant: t,
            process: &process,
            pattern,
        };
        let print = if let Ok((records, _)) = &result {
            summary.ok += 1;
            summary.records += records.len() as u64;
            Some(fingerprint(records))
        } else {
            summary.failed += 1;
            None
        };
        let result = result.map(|(records, served)| (items(&records), served));
        let mut op = meta.op(
            &exec.clock,
            Done::read(node.to_owned(), 1, invoke, complete, result),
        );
        // The read-back runs from the lab's client namespace, after every fault has healed.
        op.client_zone = None;
        fingerprints.entry(index).or_default().push(print);
        exec.recorder.read_back(op, t.tier).await;
    }
    summary
}

/// Reads one tenant's whole stream through a connection pinned to one server: the sequences
/// the server reported (`known_last`), then on until it has no more.
async fn read_whole_stream(
    conn: &NatsConn,
    tenant: &TenantSpec,
    known_last: u64,
) -> Result<(Vec<ReadRecord>, String), String> {
    let stream = &tenant.stream;
    let mut records = conn.read_span(stream, 1, known_last, 32).await?;
    records.extend(
        conn.read(stream, known_last + 1, u64::MAX, known_last)
            .await?,
    );
    let served_tenant = served(&tenant.id, &records);
    Ok((records, served_tenant))
}

async fn read_back_nats(
    exec: &Arc<Exec>,
    target: &Target,
    monitor: &Monitor,
    server: &super::target::NatsServer,
    fingerprints: &mut BTreeMap<usize, Vec<Option<u64>>>,
) -> NodeReadBack {
    let sink = exec.recorder.observations();
    let last_seqs = monitor
        .stream_infos(&target.nats, server, &exec.clock, &sink)
        .await
        .unwrap_or_default();
    let conn = connect_pinned(exec, target, server, "readback").await;
    let reads: Vec<TenantRead> = futures::stream::iter(exec.tenants.iter())
        .map(|t| {
            let conn = conn.clone();
            let known_last = last_seqs.get(&t.stream).copied().unwrap_or(0);
            let clock = exec.clock;
            async move {
                let invoke = clock.now_ns();
                let result = match &conn {
                    Ok(conn) => read_whole_stream(conn, t, known_last).await,
                    Err(e) => Err(e.clone()),
                };
                (t.index as usize, result, invoke, clock.now_ns())
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut summary =
        record_read_back(exec, &server.node, Pattern::ReadBack, reads, fingerprints).await;
    summary.error = conn.err();
    summary
}

/// The longest a replica read alone may take, on top of [`WorkloadConfig::replica_wait`];
/// reads still going then fail, so the other servers are never held past their deadline.
const REPLICA_READ_BUDGET: Duration = Duration::from_secs(120);

/// Reads `server`'s own replica of every tenant's stream with the other JetStream servers
/// stopped and held down (through the lab's ledger), recorded as `read_back_replica`
/// operations through `server`; then releases the others (the supervisor restarts them) and
/// waits until the servers agree again. Bounded: at
/// most `replica_wait` for `server` to answer alone, [`REPLICA_READ_BUDGET`] for the reads,
/// `replica_wait` for the servers to agree afterwards.
async fn read_replica_alone(
    exec: &Arc<Exec>,
    target: &Target,
    monitor: &Monitor,
    ctx: &crate::lab::control::LabContext,
    server: &super::target::NatsServer,
    fingerprints: &mut BTreeMap<usize, Vec<Option<u64>>>,
) -> NodeReadBack {
    let wait = exec.config.replica_wait;
    let hold_for = wait + REPLICA_READ_BUDGET + Duration::from_secs(10);
    // Stopping takes the ledger lock and signals processes: blocking, but brief.
    let (hold_ctx, keep) = (ctx.clone(), server.node.clone());
    let held = tokio::task::spawn_blocking(move || {
        hold_ctx
            .hold_other_nats_servers(&keep, hold_for)
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(format!("stopping the other servers panicked: {e}")));
    let (held, reads) = match held {
        Ok(held) => (
            Some(held),
            read_alone(exec, target, monitor, server, wait).await,
        ),
        Err(e) => (
            None,
            Err(format!(
                "cannot stop the other servers to read {} alone: {e}",
                server.node
            )),
        ),
    };
    let mut summary = match reads {
        Ok(reads) => {
            record_read_back(
                exec,
                &server.node,
                Pattern::ReadBackReplica,
                reads,
                fingerprints,
            )
            .await
        }
        Err(e) => {
            let now = exec.clock.now_ns();
            let reads = (0..exec.tenants.len())
                .map(|i| (i, Err(e.clone()), now, now))
                .collect();
            let mut summary = record_read_back(
                exec,
                &server.node,
                Pattern::ReadBackReplica,
                reads,
                fingerprints,
            )
            .await;
            summary.error = Some(e);
            summary
        }
    };
    if let Some(held) = held {
        let failures = tokio::task::spawn_blocking(move || held.release())
            .await
            .unwrap_or_default();
        if !failures.is_empty() {
            summary.error = Some(failures.join("; "));
        }
    }
    monitor.wait_agree(&target.nats, wait).await;
    summary
}

/// With the other servers down: waits for `server` to answer, records its own stream state,
/// then reads every tenant's stream it holds a direct-get subscription for.
async fn read_alone(
    exec: &Arc<Exec>,
    target: &Target,
    monitor: &Monitor,
    server: &super::target::NatsServer,
    wait: Duration,
) -> Result<Vec<TenantRead>, String> {
    let sink = exec.recorder.observations();
    let deadline = tokio::time::Instant::now() + wait;
    // It may itself be paused by a fault still in force; its deadline may come first.
    let last_seqs = loop {
        match monitor
            .stream_infos(&target.nats, server, &exec.clock, &sink)
            .await
        {
            Ok(last) => break last,
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(format!(
                    "{} did not answer alone within {}: {e}",
                    server.node,
                    humantime::format_duration(wait)
                ))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    // Settling gets at least 10 s, even when the server answered just before the deadline.
    let settle_by = deadline.max(tokio::time::Instant::now() + Duration::from_secs(10));
    let last_seqs = settled_stream_state(exec, target, monitor, server, last_seqs, settle_by).await;
    let conn = connect_pinned(exec, target, server, "readback-replica").await?;
    let budget_end = tokio::time::Instant::now() + REPLICA_READ_BUDGET;
    let reads = futures::stream::iter(exec.tenants.iter())
        .map(|t| {
            let conn = conn.clone();
            let known_last = last_seqs.get(&t.stream).copied().unwrap_or(0);
            let clock = exec.clock;
            async move {
                let invoke = clock.now_ns();
                let result = match monitor.serves_direct_get(server, &t.stream).await {
                    // With no subscription of its own, nothing can answer a direct get for
                    // this stream from this replica's store.
                    Ok(false) => Err(format!(
                        "{} holds no direct-get subscription of its own for {} (seen with nats-server 2.9.10), so its replica cannot be read alone",
                        server.node, t.stream
                    )),
                    Err(e) => Err(e),
                    Ok(true) => tokio::time::timeout_at(
                        budget_end,
                        read_whole_stream(&conn, t, known_last),
                    )
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "read of {} alone not done within {}",
                            server.node,
                            humantime::format_duration(REPLICA_READ_BUDGET)
                        ))
                    }),
                };
                (t.index as usize, result, invoke, clock.now_ns())
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    Ok(reads)
}

/// A server that was paused until a moment ago still holds what its peers sent before they
/// went down (in its sockets' buffers) and applies it once it runs, so its first answer is not
/// yet its store. Samples its stream state until two samples 500 ms apart agree (each sample
/// recorded), or until `deadline`, and returns the last.
async fn settled_stream_state(
    exec: &Exec,
    target: &Target,
    monitor: &Monitor,
    server: &super::target::NatsServer,
    mut last_seqs: BTreeMap<String, u64>,
    deadline: tokio::time::Instant,
) -> BTreeMap<String, u64> {
    let sink = exec.recorder.observations();
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        match monitor
            .stream_infos(&target.nats, server, &exec.clock, &sink)
            .await
        {
            Ok(now) if now == last_seqs => break,
            Ok(now) => last_seqs = now,
            Err(_) => {}
        }
    }
    last_seqs
}

/// Reads one tenant's records through one endpoint, page by page, each page retried 3 times.
pub(super) async fn read_pages(
    client: &HttpClient,
    endpoint: &super::http::Endpoint,
    tenant: &TenantSpec,
) -> Result<(Vec<ReadRecord>, String), String> {
    let headers = [(super::contract::TENANT_HEADER, tenant.id.as_str())];
    let mut records = Vec::new();
    let mut from = 1;
    let mut served_tenant = tenant.id.clone();
    loop {
        let path =
            HttpClient::read_path(&tenant.id, from, u64::from(super::contract::MAX_READ_LIMIT));
        let mut page = None;
        let mut last_error = String::new();
        for attempt in 1..=3u32 {
            let a = client
                .attempt(endpoint, Method::GET, &path, &headers, Bytes::new())
                .await;
            match a.body.as_deref().map(parse_records) {
                Some(Ok(list)) => {
                    page = Some(list);
                    break;
                }
                Some(Err(e)) => last_error = e,
                None => last_error = a.error.unwrap_or_default(),
            }
            tokio::time::sleep(HttpClient::backoff(attempt + 1)).await;
        }
        let list = page.ok_or(last_error)?;
        if list.tenant != tenant.id {
            served_tenant.clone_from(&list.tenant);
        }
        records.extend(list.records.into_iter().map(|r| ReadRecord {
            tenant: None,
            seq: r.seq,
            value: r.id,
        }));
        if !list.more {
            return Ok((records, served_tenant));
        }
        from = list.next_seq;
    }
}

async fn read_back_http(
    exec: &Arc<Exec>,
    client: &HttpClient,
    endpoint: &super::http::Endpoint,
    fingerprints: &mut BTreeMap<usize, Vec<Option<u64>>>,
) -> NodeReadBack {
    let reads: Vec<TenantRead> = futures::stream::iter(exec.tenants.iter())
        .map(|t| {
            let clock = exec.clock;
            async move {
                let invoke = clock.now_ns();
                let result = read_pages(client, endpoint, t).await;
                (t.index as usize, result, invoke, clock.now_ns())
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    record_read_back(exec, &endpoint.node, Pattern::ReadBack, reads, fingerprints).await
}

/// A read-back connection to one server only, named `faultline-PURPOSE-NODE`.
async fn connect_pinned(
    exec: &Exec,
    target: &Target,
    server: &super::target::NatsServer,
    purpose: &str,
) -> Result<NatsConn, String> {
    let spec = ConnectSpec {
        urls: vec![server.url.clone()],
        name: format!("faultline-{purpose}-{}", server.node),
        connect_timeout: Duration::from_secs(3),
        op_timeout: exec.config.op_timeout,
        ping_interval: exec.config.ping_interval,
        pinned_node: Some(server.node.clone()),
        retry_initial: false,
    };
    NatsConn::connect(&spec, target.node_of_host.clone())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", server.url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_requested_size_and_name_their_value() {
        for size in [10, 64, 128, 4096] {
            let p = payload("t001", "t001/c1/1", size);
            assert!(p.len() >= size);
            assert!(size < 64 || p.len() == size, "{size}: {}", p.len());
            assert!(String::from_utf8_lossy(&p).contains("t001/c1/1"));
        }
        let p = payload("t001", "t001/c1/1", 1000);
        assert_eq!(p.len(), 1000);
        serde_json::from_slice::<serde_json::Value>(&p).expect("valid json");
    }

    #[test]
    fn served_tenant_is_the_odd_one_out() {
        let r = |t: &str| ReadRecord {
            seq: 1,
            value: String::new(),
            tenant: Some(t.to_owned()),
        };
        assert_eq!(served("t1", &[r("t1"), r("t1")]), "t1");
        assert_eq!(served("t1", &[r("t1"), r("t2")]), "t2");
        assert_eq!(served("t1", &[]), "t1");
        assert_ne!(fingerprint(&[r("t1")]), fingerprint(&[]));
    }
}
