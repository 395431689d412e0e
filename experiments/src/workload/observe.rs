//! Observations besides operations: stream leaders as each NATS server sees them (sampled about
//! once a second from the monitoring endpoint, `/jsz?accounts=true&streams=true`), stream state
//! per server for the final read-back, and fault windows from the lab's ledger.
//!
//! Leaders and replicas are reported by node name: server names are mapped to the node the
//! server runs on through each server's `/varz`. A name that cannot be mapped is kept as is.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use faultline_injectors::fault::FaultAction;
use faultline_injectors::ledger::{FaultRecord, Ledger};
use serde::Deserialize;

use crate::history::Observation;
use crate::lab::control::LabContext;

use super::clock::RunClock;
use super::httpc::Pool;
use super::recorder::ObservationSink;
use super::schedule::STREAM_PREFIX;
use super::target::{NatsServer, Target};

const MONITOR_TIMEOUT: Duration = Duration::from_millis(900);

#[derive(Debug, Default, Deserialize)]
struct Jsz {
    #[serde(default)]
    meta_cluster: Option<MetaCluster>,
    #[serde(default)]
    account_details: Vec<AccountDetail>,
}

#[derive(Debug, Default, Deserialize)]
struct MetaCluster {
    #[serde(default)]
    leader: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct AccountDetail {
    #[serde(default)]
    stream_detail: Vec<StreamDetail>,
}

#[derive(Debug, Default, Deserialize)]
struct StreamDetail {
    name: String,
    #[serde(default)]
    cluster: Option<ClusterInfo>,
    #[serde(default)]
    state: Option<StreamState>,
}

#[derive(Debug, Default, Deserialize)]
struct ClusterInfo {
    #[serde(default)]
    leader: Option<String>,
    #[serde(default)]
    replicas: Vec<PeerInfo>,
}

#[derive(Debug, Default, Deserialize)]
struct PeerInfo {
    name: String,
}

#[derive(Debug, Default, Deserialize)]
struct StreamState {
    #[serde(default)]
    messages: u64,
    #[serde(default)]
    bytes: u64,
    #[serde(default)]
    first_seq: u64,
    #[serde(default)]
    last_seq: u64,
}

/// One stream as one server reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamView {
    /// Stream name.
    pub stream: String,
    /// Leader server name, as reported.
    pub leader: Option<String>,
    /// Peer server names as the server lists them: the leader, then the other replicas (a
    /// server does not list itself).
    pub peers: Vec<String>,
    /// The server's last sequence.
    pub last_seq: u64,
    /// The server's first sequence.
    pub first_seq: u64,
    /// Messages the server stores.
    pub messages: u64,
    /// Bytes the server stores.
    pub bytes: u64,
}

impl StreamView {
    /// What must agree between replicas once they have converged.
    fn state(&self) -> (u64, u64, u64, u64, Option<&str>) {
        (
            self.messages,
            self.bytes,
            self.first_seq,
            self.last_seq,
            self.leader.as_deref(),
        )
    }
}

/// What one server's `/jsz` said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerView {
    /// Meta leader server name.
    pub meta_leader: Option<String>,
    /// Our streams (`FL_…`) on this server.
    pub streams: Vec<StreamView>,
}

/// Parses a `/jsz?accounts=true&streams=true` body.
pub fn parse_jsz(body: &[u8]) -> Result<ServerView, String> {
    let jsz: Jsz = serde_json::from_slice(body).map_err(|e| format!("unreadable /jsz: {e}"))?;
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let mut streams = Vec::new();
    for account in jsz.account_details {
        for s in account.stream_detail {
            if !s.name.starts_with(STREAM_PREFIX) {
                continue;
            }
            let cluster = s.cluster.unwrap_or_default();
            let leader = non_empty(cluster.leader);
            let mut peers: Vec<String> = leader.iter().cloned().collect();
            for p in cluster.replicas {
                if !peers.contains(&p.name) {
                    peers.push(p.name);
                }
            }
            let state = s.state.unwrap_or_default();
            streams.push(StreamView {
                stream: s.name,
                leader,
                peers,
                last_seq: state.last_seq,
                first_seq: state.first_seq,
                messages: state.messages,
                bytes: state.bytes,
            });
        }
    }
    Ok(ServerView {
        meta_leader: non_empty(jsz.meta_cluster.and_then(|m| m.leader)),
        streams,
    })
}

/// Monitoring client for the NATS servers, with the server-name → node map.
pub struct Monitor {
    pools: Mutex<HashMap<SocketAddr, std::sync::Arc<Pool>>>,
    names: Mutex<HashMap<String, String>>,
}

impl Default for Monitor {
    fn default() -> Self {
        Self::new()
    }
}

impl Monitor {
    /// An empty monitor.
    pub fn new() -> Self {
        Self {
            pools: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
        }
    }

    fn pool(&self, addr: SocketAddr) -> std::sync::Arc<Pool> {
        self.pools
            .lock()
            .expect("pools")
            .entry(addr)
            .or_insert_with(|| std::sync::Arc::new(Pool::new(addr, 2)))
            .clone()
    }

    /// One server's view, or why it could not be had.
    pub async fn jsz(&self, server: &NatsServer) -> Result<ServerView, String> {
        let addr = server
            .monitor
            .ok_or_else(|| format!("no monitoring endpoint known for {}", server.node))?;
        let response = self
            .pool(addr)
            .get("/jsz?accounts=true&streams=true", MONITOR_TIMEOUT)
            .await
            .map_err(|e| e.describe(addr))?;
        if !response.status.is_success() {
            return Err(format!("{addr}/jsz answered {}", response.status));
        }
        parse_jsz(&response.body)
    }

    /// Maps a server name to its node, asking every server's `/varz` when the name is new.
    pub async fn node_of(&self, servers: &[NatsServer], name: &str) -> String {
        if let Some(node) = self.names.lock().expect("names").get(name) {
            return node.clone();
        }
        self.learn_names(servers).await;
        self.names
            .lock()
            .expect("names")
            .get(name)
            .cloned()
            .unwrap_or_else(|| name.to_owned())
    }

    /// Forgets the name map (after replicas moved).
    pub fn forget_names(&self) {
        self.names.lock().expect("names").clear();
    }

    async fn learn_names(&self, servers: &[NatsServer]) {
        #[derive(Deserialize)]
        struct Varz {
            server_name: String,
        }
        for server in servers {
            let Some(addr) = server.monitor else { continue };
            let Ok(response) = self.pool(addr).get("/varz", MONITOR_TIMEOUT).await else {
                continue;
            };
            if let Ok(varz) = serde_json::from_slice::<Varz>(&response.body) {
                self.names
                    .lock()
                    .expect("names")
                    .insert(varz.server_name, server.node.clone());
            }
        }
    }

    /// One round of leader samples: for every server that answers, the meta leader and the
    /// leader of each of our streams, as that server sees them.
    pub async fn sample_leaders(
        &self,
        servers: &[NatsServer],
        clock: &RunClock,
        sink: &ObservationSink,
    ) {
        let views = futures::future::join_all(
            servers
                .iter()
                .map(|s| async move { (s, self.jsz(s).await) }),
        )
        .await;
        for (server, view) in views {
            let Ok(view) = view else { continue };
            let at_ns = clock.now_ns();
            let meta = match &view.meta_leader {
                Some(name) => Some(self.node_of(servers, name).await),
                None => None,
            };
            sink.record(Observation::Leader {
                at_ns,
                observer: server.node.clone(),
                stream: "$meta".to_owned(),
                leader: meta,
            });
            for s in view.streams {
                let leader = match &s.leader {
                    Some(name) => Some(self.node_of(servers, name).await),
                    None => None,
                };
                sink.record(Observation::Leader {
                    at_ns,
                    observer: server.node.clone(),
                    stream: s.stream,
                    leader,
                });
            }
        }
    }

    /// Stream state of every one of our streams as `server` reports it, with names mapped to
    /// nodes; recorded as `StreamInfo` observations and returned by stream name.
    pub async fn stream_infos(
        &self,
        servers: &[NatsServer],
        server: &NatsServer,
        clock: &RunClock,
        sink: &ObservationSink,
    ) -> Result<BTreeMap<String, u64>, String> {
        let view = self.jsz(server).await?;
        let at_ns = clock.now_ns();
        Ok(self
            .record_stream_infos(servers, server, view, at_ns, sink)
            .await)
    }

    async fn record_stream_infos(
        &self,
        servers: &[NatsServer],
        server: &NatsServer,
        view: ServerView,
        at_ns: u64,
        sink: &ObservationSink,
    ) -> BTreeMap<String, u64> {
        let mut last = BTreeMap::new();
        for s in view.streams {
            let leader = match &s.leader {
                Some(name) => Some(self.node_of(servers, name).await),
                None => None,
            };
            // A server lists the other peers; it holds a replica itself, or it would not
            // report the stream.
            let mut replicas = vec![server.node.clone()];
            for p in &s.peers {
                let node = self.node_of(servers, p).await;
                if !replicas.contains(&node) {
                    replicas.push(node);
                }
            }
            replicas.sort();
            sink.record(Observation::StreamInfo {
                at_ns,
                observer: server.node.clone(),
                stream: s.stream.clone(),
                leader,
                replicas,
                last_seq: s.last_seq,
                first_seq: Some(s.first_seq),
                messages: Some(s.messages),
                bytes: Some(s.bytes),
            });
            last.insert(s.stream, s.last_seq);
        }
        last
    }

    /// Whether `server` holds a direct-get subscription of its own for `stream`, i.e. can
    /// answer a direct get without another server (`/subsz` lists only local subscriptions).
    /// A server that restarted may have none (nats-server 2.9.10).
    pub async fn serves_direct_get(
        &self,
        server: &NatsServer,
        stream: &str,
    ) -> Result<bool, String> {
        #[derive(Deserialize)]
        struct Subsz {
            #[serde(default)]
            subscriptions_list: Vec<Sub>,
        }
        #[derive(Deserialize)]
        struct Sub {
            subject: String,
        }
        let addr = server
            .monitor
            .ok_or_else(|| format!("no monitoring endpoint known for {}", server.node))?;
        let subject = format!("$JS.API.DIRECT.GET.{stream}");
        let path = format!("/subsz?subs=1&test=%24{}", &subject[1..]);
        let response = self
            .pool(addr)
            .get(&path, MONITOR_TIMEOUT)
            .await
            .map_err(|e| e.describe(addr))?;
        if !response.status.is_success() {
            return Err(format!("{addr}/subsz answered {}", response.status));
        }
        let subsz: Subsz = serde_json::from_slice(&response.body)
            .map_err(|e| format!("{addr}/subsz: unreadable answer: {e}"))?;
        Ok(subsz
            .subscriptions_list
            .iter()
            .any(|s| s.subject == subject))
    }

    /// Polls every server's `/jsz` every 250 ms until all agree on every stream (as
    /// [`Monitor::settle`] judges it) or `timeout` passes; records nothing. Whether they agreed.
    pub async fn wait_agree(&self, servers: &[NatsServer], timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let views: Vec<(&NatsServer, Result<ServerView, String>)> = futures::future::join_all(
                servers
                    .iter()
                    .map(|s| async move { (s, self.jsz(s).await) }),
            )
            .await;
            if states_agree(&views) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until every server reports the same state (messages, bytes, first and last
    /// sequence, leader) for every one of our streams, or until `deadline_ns` on `clock`,
    /// polling every 500 ms; then records every server's stream state and a `Settled`
    /// observation, all at one time. Returns whether the states agreed. A server that does
    /// not answer counts as disagreeing.
    pub async fn settle(
        &self,
        servers: &[NatsServer],
        clock: &RunClock,
        sink: &ObservationSink,
        deadline_ns: u64,
    ) -> bool {
        loop {
            let views: Vec<(&NatsServer, Result<ServerView, String>)> = futures::future::join_all(
                servers
                    .iter()
                    .map(|s| async move { (s, self.jsz(s).await) }),
            )
            .await;
            let at_ns = clock.now_ns();
            let converged = states_agree(&views);
            if converged || at_ns >= deadline_ns {
                let mut unanswered = Vec::new();
                for (server, view) in views {
                    match view {
                        Ok(view) => {
                            self.record_stream_infos(servers, server, view, at_ns, sink)
                                .await;
                        }
                        Err(_) => unanswered.push(server.node.clone()),
                    }
                }
                sink.record(Observation::Settled {
                    at_ns,
                    deadline_ns,
                    converged,
                    unanswered,
                });
                return converged;
            }
            let left = Duration::from_nanos(deadline_ns - at_ns);
            tokio::time::sleep(left.min(Duration::from_millis(500))).await;
        }
    }
}

/// Whether every server answered and, for every stream, all the servers that hold it report
/// the same state, and as many hold it as its leader lists (a replica that lost the stream
/// entirely is a disagreement too).
fn states_agree(views: &[(&NatsServer, Result<ServerView, String>)]) -> bool {
    type State<'a> = (u64, u64, u64, u64, Option<&'a str>);
    let mut by_stream: BTreeMap<&str, (usize, Vec<State<'_>>)> = BTreeMap::new();
    for (_, view) in views {
        let Ok(view) = view else {
            return false;
        };
        for s in &view.streams {
            let entry = by_stream.entry(s.stream.as_str()).or_default();
            entry.0 = entry.0.max(s.peers.len());
            entry.1.push(s.state());
        }
    }
    by_stream.values().all(|(replicas, states)| {
        states.len() >= *replicas && states.windows(2).all(|w| w[0] == w[1])
    })
}

/// Samples leaders every `interval` until `stop`.
pub async fn leader_loop(
    target: Target,
    monitor: std::sync::Arc<Monitor>,
    clock: RunClock,
    sink: ObservationSink,
    interval: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut target = target;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut placements = target.nats.clone();
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if target.refresh().is_ok() && target.nats != placements {
            placements.clone_from(&target.nats);
            monitor.forget_names();
        }
        monitor.sample_leaders(&target.nats, &clock, &sink).await;
    }
}

/// What a partition does: the nodes cut off from the biggest side (the first of the biggest,
/// by node count), and whether some side still holds a majority of the NATS servers (so the
/// system is expected to keep serving).
pub fn partition_effect(sides: &[Vec<String>], nats_nodes: &[String]) -> (Vec<String>, bool) {
    let biggest = sides.iter().rev().max_by_key(|side| side.len());
    let mut cut_off = Vec::new();
    if let Some(biggest) = biggest {
        for n in sides.iter().flatten() {
            if !biggest.contains(n) && !cut_off.contains(n) {
                cut_off.push(n.clone());
            }
        }
    }
    let majority = nats_nodes.len() / 2 + 1;
    let survivable = !nats_nodes.is_empty()
        && sides
            .iter()
            .any(|side| side.iter().filter(|n| nats_nodes.contains(n)).count() >= majority);
    (cut_off, survivable)
}

/// Polls the fault watcher every 250 ms until `stop`.
pub async fn fault_loop(
    watcher: std::sync::Arc<Mutex<FaultWatcher>>,
    clock: RunClock,
    sink: ObservationSink,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        watcher.lock().expect("faults").poll(&clock, &sink);
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// One fault as the watcher remembers it.
#[derive(Clone, Debug)]
struct Seen {
    record: FaultRecord,
    /// When its injection began (the record's creation).
    injecting_ns: u64,
    /// When it was fully in effect: the record's completion time, or, for records without one,
    /// the first poll that saw it under the ledger lock.
    start_ns: u64,
    /// The last poll that saw it under the ledger lock: its heal had not begun then.
    last_seen_ns: u64,
}

/// Watches the lab's fault ledger and records a `Fault` observation for each fault when it
/// ends (or at once for instant faults such as kills, with end = start).
pub struct FaultWatcher {
    ledger: Ledger,
    active: BTreeMap<String, Seen>,
    /// Nodes that run NATS servers, to judge whether a partition leaves a majority serving.
    nats_nodes: Vec<String>,
    /// The lab, to notice replica restarts (kills leave no ledger record behind).
    lab: Option<LabContext>,
    /// Restart events already seen, per replica.
    restarts_seen: BTreeMap<String, usize>,
}

/// Fields of a fault action we read generically (so new fault kinds need no change here).
#[derive(Default, Deserialize)]
struct ActionFields {
    #[serde(default)]
    sides: Vec<Vec<String>>,
    #[serde(default)]
    process: Option<ProcessFields>,
    #[serde(default)]
    node: Option<String>,
}

#[derive(Deserialize)]
struct ProcessFields {
    #[serde(default)]
    label: String,
}

impl FaultWatcher {
    /// Watches `ledger_dir`.
    pub fn new(
        ledger_dir: &std::path::Path,
        nats_nodes: Vec<String>,
        lab: Option<LabContext>,
    ) -> Self {
        let restarts_seen = lab
            .as_ref()
            .and_then(|ctx| ctx.services().ok())
            .map(|s| {
                s.replicas
                    .iter()
                    .map(|r| (r.key(), r.restarts.len()))
                    .collect()
            })
            .unwrap_or_default();
        Self {
            ledger: Ledger::new(ledger_dir),
            active: BTreeMap::new(),
            nats_nodes,
            lab,
            restarts_seen,
        }
    }

    /// Replica restarts since the last poll, as instant faults: a kill by `chaosctl inject
    /// kill` is removed from the ledger at once, so the supervisor's restart is what remains
    /// to be seen. The time is when the replacement started (shortly after the exit).
    fn poll_restarts(&mut self, clock: &RunClock, sink: &ObservationSink) {
        let Some(services) = self.lab.as_ref().and_then(|ctx| ctx.services().ok()) else {
            return;
        };
        for replica in services.replicas {
            let key = replica.key();
            let seen = self.restarts_seen.entry(key.clone()).or_insert(0);
            for event in replica.restarts.iter().skip(*seen) {
                let at_ns = clock.ns_from_unix_ms(event.at_unix_ms);
                let kind = if event.reason.starts_with("killed by") {
                    "kill"
                } else {
                    "restart"
                };
                sink.record(Observation::Fault {
                    fault_id: format!("restart:{key}:{}", event.at_unix_ms),
                    kind: kind.to_owned(),
                    start_ns: at_ns,
                    end_ns: Some(at_ns),
                    injecting_ns: None,
                    reverting_ns: None,
                    sides: Vec::new(),
                    affected: vec![event.node.clone()],
                    survivable: self.nats_nodes.len() >= 3,
                    chosen: None,
                });
            }
            *seen = (*seen).max(replica.restarts.len());
        }
    }

    /// Takes every replica restart so far as seen without recording it: the restarts of the
    /// servers the replica read-back held down are not faults of the run.
    pub fn forget_restarts(&mut self) {
        let Some(services) = self.lab.as_ref().and_then(|ctx| ctx.services().ok()) else {
            return;
        };
        for replica in services.replicas {
            let seen = self.restarts_seen.entry(replica.key()).or_insert(0);
            *seen = (*seen).max(replica.restarts.len());
        }
    }

    fn observation(&self, seen: &Seen, healed: Option<(u64, u64)>) -> Observation {
        let action = &seen.record.action;
        let kind = action.kind_name().to_owned();
        let fields: ActionFields = serde_json::to_value(action)
            .ok()
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let mut affected = Vec::new();
        if let Some(p) = &fields.process {
            if let Some((_, node)) = p.label.rsplit_once(" on ") {
                affected.push(node.to_owned());
            }
        }
        if let Some(node) = &fields.node {
            affected.push(node.clone());
        }
        let survivable = if fields.sides.is_empty() {
            // One node or replica down out of several.
            affected.len() <= 1 && self.nats_nodes.len() >= 3
        } else {
            let (cut_off, survivable) = partition_effect(&fields.sides, &self.nats_nodes);
            affected.extend(cut_off);
            survivable
        };
        Observation::Fault {
            fault_id: seen.record.id.clone(),
            kind,
            start_ns: seen.start_ns,
            end_ns: healed.map(|(_, end)| end),
            injecting_ns: Some(seen.injecting_ns.min(seen.start_ns)),
            reverting_ns: healed.map(|(reverting, _)| reverting),
            sides: fields.sides,
            affected,
            survivable,
            chosen: None,
        }
    }

    /// Reads the ledger; records faults that ended (and instant ones); returns the active ones
    /// as `kind target` for the progress line.
    pub fn poll(&mut self, clock: &RunClock, sink: &ObservationSink) -> Vec<String> {
        self.poll_restarts(clock, sink);
        // Under the ledger's lock no injection or heal is half-way: a record seen is fully in
        // effect, and one gone has been healed. Without the lock (no permission to take it)
        // the record's own times are all there is.
        let lock = self.ledger.lock().ok();
        let Ok((records, _)) = self.ledger.list() else {
            return self.active();
        };
        let now_ns = clock.now_ns();
        let locked = lock.is_some();
        drop(lock);
        let live: BTreeMap<String, FaultRecord> =
            records.into_iter().map(|r| (r.id.clone(), r)).collect();
        let gone: Vec<String> = self
            .active
            .keys()
            .filter(|id| !live.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(seen) = self.active.remove(&id) {
                if !seen.record.action.is_instant() {
                    let reverting_ns = heal_began_ns(
                        &seen.record.action,
                        locked,
                        seen.last_seen_ns,
                        clock.ns_from_unix_ms(seen.record.deadline_unix_ms),
                        now_ns,
                    )
                    .max(seen.start_ns);
                    let end_ns = now_ns.max(reverting_ns);
                    sink.record(self.observation(&seen, Some((reverting_ns, end_ns))));
                }
            }
        }
        for (id, record) in live {
            if let Some(seen) = self.active.get_mut(&id) {
                seen.last_seen_ns = now_ns;
                continue;
            }
            let injecting_ns = clock.ns_from_unix_ms(record.created_unix_ms);
            let start_ns = match record.applied_unix_ms {
                Some(applied) => clock.ns_from_unix_ms(applied),
                // A record from before completion times were written, or seen without the
                // lock: in effect no later than now only if the lock was held.
                None if locked => now_ns,
                None => injecting_ns,
            };
            let seen = Seen {
                injecting_ns,
                start_ns: start_ns.max(injecting_ns),
                last_seen_ns: now_ns,
                record,
            };
            if seen.record.action.is_instant() {
                sink.record(self.observation(&seen, Some((seen.start_ns, seen.start_ns))));
            }
            self.active.insert(id, seen);
        }
        self.active()
    }

    /// The active faults, as `kind target`.
    pub fn active(&self) -> Vec<String> {
        self.active
            .values()
            .map(|s| format!("{} {}", s.record.action.kind_name(), s.record.target))
            .collect()
    }

    /// Records the faults still active as open windows (`end_ns: None`).
    pub fn close(&mut self, sink: &ObservationSink) {
        let active = std::mem::take(&mut self.active);
        for seen in active.values() {
            if !seen.record.action.is_instant() {
                sink.record(self.observation(seen, None));
            }
        }
    }
}

/// When the heal of a fault whose record left the ledger by `now_ns` began, at the latest.
///
/// The record leaves the ledger once the revert completed, so the heal was complete by now.
/// Under the lock it began after the last poll that saw the record; without it, only a heal
/// at the deadline is certain. A partition's rules are set elements that the kernel expires
/// at the deadline, so its heal began then at the latest, even while its record waited for
/// the next reconcile.
fn heal_began_ns(
    action: &FaultAction,
    locked: bool,
    last_seen_ns: u64,
    deadline_ns: u64,
    now_ns: u64,
) -> u64 {
    let seen = if locked { last_seen_ns } else { now_ns };
    if locked && !matches!(action, FaultAction::Partition { .. }) {
        seen
    } else {
        seen.min(deadline_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_heals_at_its_deadline_at_the_latest() {
        let partition = FaultAction::Partition {
            slot: 1,
            sides: Vec::new(),
            rules: Vec::new(),
        };
        let drain = FaultAction::Drain {
            node: "b1".to_owned(),
        };
        // (action, locked, last seen, deadline, now) -> heal began
        let cases = [
            // The kernel expired the rules at 18 s; the record was seen until 19 s.
            (&partition, true, 19, 18, 20, 18),
            (&partition, true, 15, 18, 16, 15),
            (&partition, false, 19, 18, 20, 18),
            // A drain has no kernel timer: in effect until its revert.
            (&drain, true, 19, 18, 20, 19),
            (&drain, false, 19, 18, 20, 18),
            (&drain, false, 15, 18, 16, 16),
        ];
        for (action, locked, seen, deadline, now, expected) in cases {
            assert_eq!(
                heal_began_ns(action, locked, seen, deadline, now),
                expected,
                "{} locked={locked} seen={seen} deadline={deadline} now={now}",
                action.kind_name()
            );
        }
    }

    #[test]
    fn partition_effect_table() {
        let v = |xs: &[&str]| xs.iter().map(|x| (*x).to_owned()).collect::<Vec<String>>();
        let nats = v(&["a1", "b1", "c1"]);
        let cases = [
            // A majority of the NATS servers isolated: not survivable.
            (
                vec![v(&["a1"]), v(&["a2", "b2", "c1", "c2"]), v(&["b1"])],
                v(&["a1", "b1"]),
                false,
            ),
            // One zone cut off: the rest keep a majority.
            (
                vec![v(&["a1", "a2"]), v(&["b1", "b2", "c1", "c2"])],
                v(&["a1", "a2"]),
                true,
            ),
            // Halves by node: the bigger side has two NATS servers.
            (
                vec![v(&["a1", "a2", "b1"]), v(&["b2", "c1", "c2"])],
                v(&["b2", "c1", "c2"]),
                true,
            ),
        ];
        for (sides, cut, survivable) in cases {
            assert_eq!(
                partition_effect(&sides, &nats),
                (cut, survivable),
                "{sides:?}"
            );
        }
    }

    #[test]
    fn jsz_parses_leaders_peers_and_last_seq() {
        let body = br#"{
            "meta_cluster": {"name": "fl-x", "leader": "nats2", "replicas": []},
            "account_details": [{"name": "$G", "stream_detail": [
                {"name": "FL_t001", "cluster": {"leader": "nats1", "replicas": [{"name": "nats1"}, {"name": "nats3"}]},
                 "state": {"messages": 5, "first_seq": 1, "last_seq": 5}},
                {"name": "OTHER", "cluster": {"leader": "nats1"}, "state": {"last_seq": 9}},
                {"name": "FL_t002", "cluster": {"leader": ""}, "state": {"last_seq": 0}}
            ]}]
        }"#;
        let view = parse_jsz(body).expect("parse");
        assert_eq!(view.meta_leader.as_deref(), Some("nats2"));
        assert_eq!(view.streams.len(), 2);
        assert_eq!(view.streams[0].peers, vec!["nats1", "nats3"]);
        assert_eq!(view.streams[0].last_seq, 5);
        assert_eq!(view.streams[1].leader, None);
        assert!(parse_jsz(b"{}").expect("empty").streams.is_empty());
        assert!(parse_jsz(b"nope").is_err());
    }
}
