//! Lab operations behind `chaosctl lab up | down | status` and the agent's reconcile.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use faultline_injectors::audit::AuditLog;
use faultline_injectors::fault::Injectors;
use faultline_injectors::ledger::{now_unix_ms, FaultRecord, Ledger};
use faultline_injectors::lifecycle::{self, ReconcileReport, ReconcileScope};
use faultline_injectors::net_partition::NetlinkRuleTable;
use faultline_injectors::process::{read_proc_stat, NixSignaller, ProcessTarget, Signaller};
use nix::sys::signal::Signal;
use serde::Serialize;

use super::net;
use super::scheduler::LabScheduler;
use super::servers::{self, ResolvedTopology};
use super::state::{
    read_json, topology_digest, write_json, LabPaths, LabRecord, ServicesState, StartFailureKind,
};
use super::topology::{Topology, CLIENT_ADDRESS};
use super::{check_lab_name, is_root, LabError};
use crate::checkers::ServerVersion;

/// Where the host keeps things; passed in so tests can point elsewhere.
#[derive(Clone, Debug)]
pub struct HostPaths {
    /// Root of Faultline's state (`/var/lib/faultline`).
    pub state_root: PathBuf,
    /// Network namespace bind mounts (`/run/netns`).
    pub netns_dir: PathBuf,
    /// procfs (`/proc`).
    pub proc_root: PathBuf,
}

impl HostPaths {
    /// The standard host paths with the given state root.
    pub fn with_state_root(state_root: impl Into<PathBuf>) -> Self {
        Self {
            state_root: state_root.into(),
            netns_dir: PathBuf::from(faultline_injectors::netns::DEFAULT_NETNS_DIR),
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// One lab that is up (its `lab.json` exists).
#[derive(Clone, Debug)]
pub struct LabContext {
    /// The lab's paths.
    pub paths: LabPaths,
    /// Its topology.
    pub topology: Topology,
    /// Network namespace directory.
    pub netns_dir: PathBuf,
    /// procfs.
    pub proc_root: PathBuf,
    /// The `faultlined` binary `lab up` recorded: deadline guards run it, and a guard that
    /// finds the agent dead starts the agent with it. `None` in a lab brought up before it was
    /// recorded.
    pub agent_binary: Option<PathBuf>,
}

impl LabContext {
    /// Opens lab `name`; [`LabError::NotUp`] if it has no `lab.json`.
    pub fn open(host: &HostPaths, name: &str) -> Result<Self, LabError> {
        check_lab_name(name)?;
        let paths = LabPaths::new(&host.state_root, name);
        let record: LabRecord =
            read_json(&paths.lab_file())?.ok_or_else(|| LabError::NotUp(name.to_owned()))?;
        Ok(Self {
            paths,
            topology: record.topology,
            netns_dir: host.netns_dir.clone(),
            proc_root: host.proc_root.clone(),
            agent_binary: record.agent_binary,
        })
    }

    /// The lab's fault ledger. Its halt marker is the state root's, so one `chaosctl halt`
    /// covers every lab, including labs brought up after it.
    pub fn ledger(&self) -> Ledger {
        Ledger::new(self.paths.ledger_dir())
            .with_shared_halt(self.paths.halt_marker_file())
            .with_audit(AuditLog::new(
                self.paths.audit_log_file(),
                self.paths.name.clone(),
            ))
    }

    /// The replicas as the agent last wrote them.
    pub fn services(&self) -> Result<ServicesState, LabError> {
        Ok(read_json(&self.paths.services_file())?.unwrap_or_default())
    }

    /// Runs `f` with the real privileged implementations for this lab.
    pub fn with_injectors<T>(&self, f: impl FnOnce(&Injectors<'_>) -> T) -> T {
        let rules = NetlinkRuleTable::new(self.netns_dir.clone());
        let signals = NixSignaller::new(self.proc_root.clone());
        let scheduler = LabScheduler::new(
            self.paths.clone(),
            self.topology.nodes().into_iter().map(|n| n.name).collect(),
            self.proc_root.clone(),
        );
        f(&Injectors {
            rules: &rules,
            signals: &signals,
            scheduler: &scheduler,
            holder: &scheduler,
        })
    }

    /// Everything of ours that reconcile should inspect: the lab's namespaces and its replicas.
    pub fn reconcile_scope(&self) -> ReconcileScope {
        let processes = self
            .services()
            .unwrap_or_default()
            .replicas
            .into_iter()
            .filter_map(|r| {
                Some(ProcessTarget {
                    pid: r.pid?,
                    start_ticks: r.start_ticks?,
                    label: r.key(),
                })
            })
            .collect();
        ReconcileScope {
            namespaces: net::lab_namespaces(&self.paths, &self.netns_dir),
            processes,
        }
    }

    /// Reverts expired faults and orphans in this lab.
    pub fn reconcile(&self) -> Result<ReconcileReport, LabError> {
        let scope = self.reconcile_scope();
        Ok(self.with_injectors(|env| {
            lifecycle::reconcile(&self.ledger(), env, &scope, now_unix_ms())
        })?)
    }

    /// Active faults, oldest first.
    pub fn faults(&self) -> Result<Vec<FaultRecord>, LabError> {
        Ok(self.ledger().list()?.0)
    }

    /// Every service's program and the version it printed when the lab came up.
    pub fn servers(&self) -> Result<Vec<ServerVersion>, LabError> {
        Ok(read_json::<LabRecord>(&self.paths.lab_file())?
            .map(|record| record.servers)
            .unwrap_or_default())
    }

    /// Where the lab's topology came from: a file, `<built-in default>`, or `an unrecorded
    /// source` for a lab brought up before it was recorded.
    pub fn source(&self) -> Result<String, LabError> {
        Ok(read_json::<LabRecord>(&self.paths.lab_file())?
            .map(|record| record.source)
            .filter(|source| !source.is_empty())
            .unwrap_or_else(|| "an unrecorded source".to_owned()))
    }

    /// The agent process, if it runs.
    pub fn agent(&self) -> Option<ProcessTarget> {
        let target: ProcessTarget = read_json(&self.paths.agent_pid_file()).ok()??;
        read_proc_stat(&self.proc_root, target.pid)
            .filter(|stat| stat.start_ticks == target.start_ticks && stat.state != 'Z')
            .map(|_| target)
    }
}

/// Refuses while `chaosctl halt` is in force for `state_root` (every lab under it, including
/// labs brought up after the halt).
///
/// # Errors
/// [`faultline_injectors::Error::Halted`] with the halt's time; [`LabError::Fault`] when the
/// marker cannot be read.
pub fn refuse_if_halted(state_root: &Path) -> Result<(), LabError> {
    let path = super::state::halt_marker_file(state_root);
    match faultline_injectors::ledger::read_halt_marker(&path)? {
        Some(marker) => Err(faultline_injectors::Error::Halted {
            since: lifecycle::time_and_age(marker.since_unix_ms, now_unix_ms()),
        }
        .into()),
        None => Ok(()),
    }
}

/// Brings a lab up, or checks that it is up with the same topology (the same programs too);
/// records every service's version; starts the agent if it does not run; waits until every
/// replica is ready.
pub fn up(
    host: &HostPaths,
    name: &str,
    resolved: &ResolvedTopology,
    agent_binary: &Path,
    ready_timeout: Duration,
) -> Result<(LabContext, bool), LabError> {
    check_lab_name(name)?;
    if !is_root() {
        return Err(LabError::NotRoot);
    }
    let topology = &resolved.topology;
    let paths = LabPaths::new(&host.state_root, name);
    let digest = topology_digest(topology);
    // Absolute, so a deadline guard started from another directory finds it.
    let agent_binary = fs::canonicalize(agent_binary).unwrap_or_else(|_| agent_binary.to_owned());
    let existing = read_json::<LabRecord>(&paths.lab_file())?;
    let created = existing.is_none();
    let mut record = if let Some(existing) = existing {
        if existing.digest != digest {
            return Err(LabError::NameInUse {
                name: name.to_owned(),
                existing_source: if existing.source.is_empty() {
                    "an unrecorded source".to_owned()
                } else {
                    existing.source.clone()
                },
                requested_source: resolved.source.clone(),
                difference: servers::describe_difference(
                    &existing.topology,
                    &existing.servers,
                    topology,
                ),
            });
        }
        let mut existing = existing;
        if existing.agent_binary.as_ref() != Some(&agent_binary) {
            existing.agent_binary = Some(agent_binary.clone());
            write_json(&paths.lab_file(), &existing)?;
        }
        existing
    } else {
        let record = LabRecord {
            name: name.to_owned(),
            digest,
            topology: topology.clone(),
            created_unix_ms: now_unix_ms(),
            source: resolved.source.clone(),
            servers: vec![],
            agent_binary: Some(agent_binary.clone()),
        };
        // Written before anything is created, so `lab down` finds a half-built lab.
        write_json(&paths.lab_file(), &record)?;
        record
    };
    let result = build_and_wait(host, &paths, &mut record, &agent_binary, ready_timeout);
    // A lab this call created whose service cannot run is taken down again at once: nothing of
    // it is worth keeping, and the error says why (with the end of the replica's log).
    if created
        && matches!(
            result,
            Err(LabError::ServiceStart { .. } | LabError::ServiceExited { .. })
        )
    {
        if let Err(error) = down(host, name) {
            stderr_line!(
                "lab `{name}`: taking the failed lab down failed too: {error}; run `chaosctl lab down --lab {name}`"
            );
        }
    }
    result
}

/// The part of [`up`] after `lab.json` is written: the network, the versions, the agent, and
/// the wait until every replica is ready.
fn build_and_wait(
    host: &HostPaths,
    paths: &LabPaths,
    record: &mut LabRecord,
    agent_binary: &Path,
    ready_timeout: Duration,
) -> Result<(LabContext, bool), LabError> {
    let topology = &record.topology;
    let name = &paths.name;
    net::build(paths, topology)?;
    if record.servers.is_empty() {
        let bin_dir = agent_binary.parent().unwrap_or(Path::new("."));
        record.servers = servers::probe_versions(
            topology,
            bin_dir,
            &host.netns_dir,
            &paths.netns("client"),
            &paths.dir.join("versions"),
        );
        write_json(&paths.lab_file(), &*record)?;
    }
    let ctx = LabContext::open(host, name)?;
    let started_agent = if ctx.agent().is_none() {
        start_agent(&ctx, host, agent_binary)?;
        true
    } else {
        false
    };
    wait_ready(&ctx, ready_timeout)?;
    Ok((ctx, started_agent))
}

/// Starts `faultlined lab` for this lab, detached from the caller's terminal and process group.
pub fn start_agent(
    ctx: &LabContext,
    host: &HostPaths,
    agent_binary: &Path,
) -> Result<(), LabError> {
    let log =
        super::agent::open_agent_log(&ctx.paths.agent_log()).map_err(|source| LabError::State {
            path: ctx.paths.agent_log(),
            source,
        })?;
    let log_err = log.try_clone().map_err(|source| LabError::State {
        path: ctx.paths.agent_log(),
        source,
    })?;
    let child = Command::new(agent_binary)
        .arg("lab")
        .arg("--name")
        .arg(&ctx.paths.name)
        .arg("--state-root")
        .arg(&host.state_root)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err))
        .process_group(0)
        .spawn()
        .map_err(|source| LabError::Agent {
            path: agent_binary.to_path_buf(),
            source,
        })?;
    // Record the PID ourselves too: a `lab up` killed right after the spawn still lets
    // `lab down` find the agent.
    if let Some(stat) = read_proc_stat(&ctx.proc_root, child.id() as i32) {
        write_json(
            &ctx.paths.agent_pid_file(),
            &ProcessTarget {
                pid: child.id() as i32,
                start_ticks: stat.start_ticks,
                label: format!("faultlined lab {}", ctx.paths.name),
            },
        )?;
    }
    Ok(())
}

/// How long [`wait_ready`] gives an agent it cannot find before it reports it dead.
const AGENT_DEATH_GRACE: Duration = Duration::from_secs(2);
/// How many exits in a row before it was ever ready make a replica a failed start: one exit may
/// be a start that raced something; three, a quarter second to a few seconds apart, are a
/// crash loop.
const CRASH_LOOP_EXITS: u32 = 3;
/// How many lines of a crashing replica's log its error quotes.
const LOG_TAIL_LINES: usize = 5;

/// Waits until every replica that should run is ready, as seen by a live agent after this call
/// began: `services.json` may be left by an agent that died, with replicas marked ready whose
/// processes are gone, so it counts only once a running agent has rewritten it, and every
/// replica's PID must still be its process (same start time).
pub fn wait_ready(ctx: &LabContext, timeout: Duration) -> Result<(), LabError> {
    let start = Instant::now();
    let since = now_unix_ms();
    loop {
        let services = ctx.services()?;
        let expected: u32 = ctx.topology.services.iter().map(|s| s.replicas).sum();
        let fresh = services.updated_unix_ms >= since;
        let agent_alive = ctx.agent().is_some();
        let waiting: Vec<String> = services
            .replicas
            .iter()
            .filter(|r| !r.ready || !replica_alive(ctx, r))
            .map(|r| match &r.down_reason {
                Some(reason) => format!("{} ({reason})", r.key()),
                None => r.key(),
            })
            .collect();
        if agent_alive && fresh && services.replicas.len() as u32 == expected && waiting.is_empty()
        {
            return Ok(());
        }
        if agent_alive && fresh {
            if let Some(error) = failed_start(ctx, &services) {
                return Err(error);
            }
        }
        // An agent that died stays dead until a Faultline command restarts it: say so after a
        // short grace instead of waiting out the whole timeout.
        let agent_gone = !agent_alive && start.elapsed() >= AGENT_DEATH_GRACE;
        if agent_gone || start.elapsed() >= timeout {
            return Err(LabError::NotReady {
                lab: ctx.paths.name.clone(),
                seconds: start.elapsed().as_secs(),
                waiting: if !agent_alive {
                    "the lab agent exited (its log says why)".to_owned()
                } else if !fresh || waiting.is_empty() {
                    "the agent has not reported yet".to_owned()
                } else {
                    waiting.join(", ")
                },
                log: ctx.paths.agent_log(),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The first replica that will not come up by waiting: its program could not be started, or
/// it exited before it was ready and its restart policy leaves it down, or it did so
/// [`CRASH_LOOP_EXITS`] times in a row.
fn failed_start(ctx: &LabContext, services: &ServicesState) -> Option<LabError> {
    services.replicas.iter().find_map(|r| {
        let failure = r.start_failure.as_ref()?;
        match failure.kind {
            StartFailureKind::Spawn => Some(LabError::ServiceStart {
                service: r.service.clone(),
                replica: r.replica,
                program: failure.program.clone(),
                source: failure.os_error.map_or_else(
                    || std::io::Error::other(failure.reason.clone()),
                    std::io::Error::from_raw_os_error,
                ),
            }),
            StartFailureKind::ExitedBeforeReady
                if !failure.retrying || failure.times >= CRASH_LOOP_EXITS =>
            {
                Some(LabError::ServiceExited {
                    service: r.service.clone(),
                    replica: r.replica,
                    program: failure.program.clone(),
                    how: failure.reason.clone(),
                    times: failure.times,
                    retrying: failure.retrying,
                    log_tail: log_tail(
                        &ctx.paths
                            .logs_dir()
                            .join(format!("{}-{}.log", r.service, r.replica)),
                        LOG_TAIL_LINES,
                    ),
                })
            }
            StartFailureKind::ExitedBeforeReady => None,
        }
    })
}

/// The last `n` non-empty lines of a log, each cut to 200 characters; none if it cannot be read.
fn log_tail(path: &Path, n: usize) -> Vec<String> {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| line.chars().take(200).collect())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

/// One replica as `lab status` shows it, checked against the processes and holds as they are
/// now rather than as the agent last recorded them.
fn replica_status(
    ctx: &LabContext,
    mut r: super::state::ReplicaState,
    holds: &super::state::HeldReplicas,
    signaller: &NixSignaller,
) -> ReplicaStatus {
    let node = ctx.topology.node(&r.node);
    let dead = r.pid.is_some() && !replica_alive(ctx, &r);
    if dead {
        r.down_reason = Some(format!(
            "pid {} is gone; the agent has not restarted it yet",
            r.pid.unwrap_or_default()
        ));
        r.pid = None;
    }
    let paused = match (r.pid, r.start_ticks) {
        (Some(pid), Some(start_ticks)) => signaller.is_stopped(&ProcessTarget {
            pid,
            start_ticks,
            label: String::new(),
        }),
        _ => false,
    };
    let held = holds.replicas.contains(&r.key());
    if !held
        && r.pid.is_none()
        && r.down_reason
            .as_deref()
            .is_some_and(|d| d.starts_with("held down"))
    {
        r.down_reason = Some("released; the agent starts it again".to_owned());
    }
    let health = match (r.pid, r.ready, paused) {
        (None, _, _) if dead => "dead",
        (None, _, _) if held => "held",
        (None, _, _) => "down",
        (Some(_), _, true) => "paused",
        (Some(_), true, false) => "ready",
        (Some(_), false, false) => "starting",
    };
    let endpoints = ctx
        .topology
        .service(&r.service)
        .map(|s| {
            s.ports
                .iter()
                .map(|(port_name, port)| {
                    (
                        port_name.clone(),
                        format!(
                            "{}:{port}",
                            node.as_ref()
                                .map(|n| n.address.to_string())
                                .unwrap_or_default()
                        ),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    ReplicaStatus {
        replica: r.key(),
        zone: node.map(|n| n.zone).unwrap_or_default(),
        node: r.node,
        pid: r.pid,
        health: health.to_owned(),
        restarts: r.restarts.len(),
        last_restart: r.restarts.last().map(|e| e.reason.clone()),
        endpoints,
        down_reason: r.down_reason,
    }
}

/// Whether the process recorded for `replica` still runs: same PID, same start time, not a
/// zombie. A replica with no PID is not alive.
fn replica_alive(ctx: &LabContext, replica: &super::state::ReplicaState) -> bool {
    match (replica.pid, replica.start_ticks) {
        (Some(pid), Some(start_ticks)) => read_proc_stat(&ctx.proc_root, pid)
            .is_some_and(|stat| stat.start_ticks == start_ticks && stat.state != 'Z'),
        _ => false,
    }
}

/// SIGKILLs every deadline guard recorded for the lab whose process still runs (same PID, same
/// start time); returns their PIDs.
fn stop_guards(paths: &LabPaths, proc_root: &Path) -> Result<Vec<i32>, LabError> {
    let signaller = NixSignaller::new(proc_root.to_path_buf());
    let mut stopped = Vec::new();
    for (_, guard) in paths.recorded_guards() {
        if signaller.signal(&guard, Signal::SIGKILL)? {
            stopped.push(guard.pid);
        }
    }
    stopped.sort_unstable();
    Ok(stopped)
}

/// What `lab down` removed.
#[derive(Debug, Default, Serialize)]
pub struct DownReport {
    /// Deadline guards stopped (their PIDs).
    pub guards_stopped: Vec<i32>,
    /// Whether an agent was stopped.
    pub agent_stopped: bool,
    /// Processes killed inside the lab's namespaces.
    pub killed: Vec<i32>,
    /// Namespaces deleted.
    pub namespaces: Vec<String>,
    /// Whether the state directory was removed.
    pub state_removed: bool,
}

/// Removes every namespace, process and file of lab `name`, working from the state on disk and
/// from the namespace prefix, so it also cleans up after a `lab up` killed halfway.
pub fn down(host: &HostPaths, name: &str) -> Result<DownReport, LabError> {
    check_lab_name(name)?;
    if !is_root() {
        return Err(LabError::NotRoot);
    }
    let paths = LabPaths::new(&host.state_root, name);
    // Deadline guards first: none may start an agent again while the lab goes.
    let mut report = DownReport {
        guards_stopped: stop_guards(&paths, &host.proc_root)?,
        ..DownReport::default()
    };
    if let Ok(Some(agent)) = read_json::<ProcessTarget>(&paths.agent_pid_file()) {
        let signaller = NixSignaller::new(host.proc_root.clone());
        if signaller.signal(&agent, Signal::SIGKILL)? {
            report.agent_stopped = true;
            for _ in 0..200 {
                if super::agent::is_zombie(&host.proc_root, agent.pid) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    // Services started by any agent, found by PID: they may have left their namespace's
    // process list only if the namespace is gone already.
    if let Ok(Some(services)) = read_json::<ServicesState>(&paths.services_file()) {
        let signaller = NixSignaller::new(host.proc_root.clone());
        for replica in services.replicas {
            if let (Some(pid), Some(start_ticks)) = (replica.pid, replica.start_ticks) {
                let target = ProcessTarget {
                    pid,
                    start_ticks,
                    label: replica.service,
                };
                if signaller.signal(&target, Signal::SIGKILL)? {
                    report.killed.push(pid);
                }
            }
        }
    }
    let (killed, namespaces) = net::teardown(&paths, &host.netns_dir, &host.proc_root)?;
    report.killed.extend(killed);
    report.killed.sort_unstable();
    report.killed.dedup();
    report.namespaces = namespaces;
    if paths.dir.exists() {
        fs::remove_dir_all(&paths.dir).map_err(|source| LabError::State {
            path: paths.dir.clone(),
            source,
        })?;
        report.state_removed = true;
    }
    Ok(report)
}

/// One replica as `lab status` shows it.
#[derive(Debug, Serialize)]
pub struct ReplicaStatus {
    /// `service/replica`.
    pub replica: String,
    /// Node.
    pub node: String,
    /// Zone.
    pub zone: String,
    /// PID, when running.
    pub pid: Option<i32>,
    /// `ready`, `starting`, `paused`, `held` (down by a stop fault), `down`, or `dead` (the
    /// recorded process is gone and no agent has noticed yet; its PID is not shown).
    pub health: String,
    /// Number of restarts.
    pub restarts: usize,
    /// Last restart reason.
    pub last_restart: Option<String>,
    /// Endpoints by port name, e.g. `client: 10.203.1.11:4222`.
    pub endpoints: std::collections::BTreeMap<String, String>,
    /// Why it is down.
    pub down_reason: Option<String>,
}

/// One node as `lab status` shows it.
#[derive(Debug, Serialize)]
pub struct NodeStatus {
    /// Node.
    pub name: String,
    /// Zone.
    pub zone: String,
    /// Address.
    pub address: String,
    /// Network namespace.
    pub netns: String,
    /// Whether the namespace exists.
    pub present: bool,
    /// Whether it is cordoned.
    pub cordoned: bool,
}

/// `lab status`.
#[derive(Debug, Serialize)]
pub struct LabStatus {
    /// Lab name.
    pub name: String,
    /// Where its topology came from: a file, or `<built-in default>`.
    pub topology: String,
    /// The system under test: every service's program and the version it printed when the
    /// lab came up.
    pub servers: Vec<ServerVersion>,
    /// The agent's PID, if it runs.
    pub agent_pid: Option<i32>,
    /// The PID of an agent that was started for this lab and is no longer running. While it is
    /// dead, no replica is restarted and the replicas' recorded state may be stale (`chaosctl
    /// lab up` starts a new agent); faults still end at their deadlines: partitions in the
    /// kernel, pauses, holds and cordons by their deadline guards (see `guards`), which start
    /// the agent again.
    pub agent_dead: Option<i32>,
    /// The client namespace, where workloads and probes run.
    pub client_netns: String,
    /// The client namespace's address.
    pub client_address: String,
    /// One client namespace per zone, where a `per-zone` workload's clients run.
    pub zone_clients: Vec<ZoneClientStatus>,
    /// Nodes.
    pub nodes: Vec<NodeStatus>,
    /// Replicas.
    pub services: Vec<ReplicaStatus>,
    /// Active faults.
    pub faults: Vec<FaultRecord>,
    /// The deadline guards running now (same PID, same start time as recorded), one per
    /// active pause, hold or drain: each ends its fault at the deadline even with no agent.
    pub guards: Vec<GuardStatus>,
    /// Whether new faults are halted.
    pub halted: bool,
}

/// One running deadline guard in `lab status`.
#[derive(Debug, Serialize)]
pub struct GuardStatus {
    /// The fault it ends at its deadline.
    pub fault: String,
    /// Its PID.
    pub pid: i32,
}

/// One zone's client namespace in `lab status`.
#[derive(Debug, Serialize)]
pub struct ZoneClientStatus {
    /// The zone.
    pub zone: String,
    /// The namespace.
    pub netns: String,
    /// Its address.
    pub address: String,
    /// Whether the namespace exists.
    pub present: bool,
}

/// Collects the status of a lab.
pub fn status(ctx: &LabContext) -> Result<LabStatus, LabError> {
    let cordoned = ctx.with_injectors(|env| env.scheduler.cordoned())?;
    let present = net::lab_namespaces(&ctx.paths, &ctx.netns_dir);
    let signaller = NixSignaller::new(ctx.proc_root.clone());
    // Holds as they are now, not as the agent last wrote them into `services.json`.
    let holds: super::state::HeldReplicas = read_json(&ctx.paths.held_file())?.unwrap_or_default();
    let nodes = ctx
        .topology
        .nodes()
        .into_iter()
        .map(|node| {
            let netns = ctx.paths.netns(&node.name);
            NodeStatus {
                present: present.contains(&netns),
                cordoned: cordoned.contains(&node.name),
                name: node.name,
                zone: node.zone,
                address: node.address.to_string(),
                netns,
            }
        })
        .collect();
    let services = ctx
        .services()?
        .replicas
        .into_iter()
        .map(|r| replica_status(ctx, r, &holds, &signaller))
        .collect();
    let agent = ctx.agent();
    let recorded_agent: Option<ProcessTarget> = read_json(&ctx.paths.agent_pid_file())?;
    let record: Option<LabRecord> = read_json(&ctx.paths.lab_file())?;
    let (topology, servers) = record.map_or_else(Default::default, |r| (r.source, r.servers));
    Ok(LabStatus {
        name: ctx.paths.name.clone(),
        topology,
        servers,
        agent_pid: agent.as_ref().map(|a| a.pid),
        agent_dead: if agent.is_none() {
            recorded_agent.map(|a| a.pid)
        } else {
            None
        },
        client_netns: ctx.paths.netns("client"),
        client_address: CLIENT_ADDRESS.to_string(),
        zone_clients: ctx
            .topology
            .zone_clients()
            .into_iter()
            .map(|client| {
                let netns = ctx.paths.netns(&client.name);
                ZoneClientStatus {
                    present: present.contains(&netns),
                    zone: client.zone,
                    netns,
                    address: client.address.to_string(),
                }
            })
            .collect(),
        nodes,
        services,
        faults: ctx.faults()?,
        guards: ctx
            .paths
            .recorded_guards()
            .into_iter()
            .filter(|(_, guard)| {
                read_proc_stat(&ctx.proc_root, guard.pid)
                    .is_some_and(|stat| stat.start_ticks == guard.start_ticks && stat.state != 'Z')
            })
            .map(|(fault, guard)| GuardStatus {
                fault,
                pid: guard.pid,
            })
            .collect(),
        halted: ctx.ledger().halted()?.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::state::{ReplicaState, StartFailure};
    use crate::lab::topology::Topology;
    use StartFailureKind::{ExitedBeforeReady, Spawn};

    fn context(root: &Path) -> LabContext {
        LabContext {
            paths: LabPaths::new(root, "t"),
            topology: Topology::default_lab(),
            netns_dir: root.join("netns"),
            proc_root: root.join("proc"),
            agent_binary: None,
        }
    }

    fn replica(failure: Option<StartFailure>) -> ReplicaState {
        ReplicaState {
            service: "web".into(),
            replica: 1,
            node: "a1".into(),
            pid: None,
            start_ticks: None,
            ready: false,
            restarts: vec![],
            down_reason: None,
            start_failure: failure,
        }
    }

    fn failure(kind: StartFailureKind, times: u32, retrying: bool) -> StartFailure {
        StartFailure {
            program: "/bin/web".into(),
            kind,
            reason: match kind {
                StartFailureKind::Spawn => "No such file or directory (os error 2)".into(),
                StartFailureKind::ExitedBeforeReady => "exited with 3".into(),
            },
            os_error: (kind == StartFailureKind::Spawn).then_some(2),
            times,
            retrying,
        }
    }

    #[test]
    fn a_start_fails_at_once_on_spawn_errors_and_on_crash_loops_but_not_one_exit() {
        let root = tempfile::tempdir().expect("tempdir");
        let ctx = context(root.path());
        let logs = ctx.paths.logs_dir();
        fs::create_dir_all(&logs).expect("logs");
        let log = (1..=7)
            .map(|i| format!("line {i}\n"))
            .collect::<Vec<_>>()
            .join("\n");
        fs::write(logs.join("web-1.log"), log).expect("log");
        let cases = [
            (None, None),
            (
                Some(failure(Spawn, 1, true)),
                Some("cannot start web/1: `/bin/web`: No such file or directory (os error 2); check the service's command"),
            ),
            (Some(failure(ExitedBeforeReady, 1, true)), None),
            (Some(failure(ExitedBeforeReady, 2, true)), None),
            (
                Some(failure(ExitedBeforeReady, 3, true)),
                Some("web/1 (`/bin/web`) exited with 3 before it was ready, 3 times in a row; its log ends: line 3 | line 4 | line 5 | line 6 | line 7; check the service's command"),
            ),
            (
                Some(failure(ExitedBeforeReady, 1, false)),
                Some("web/1 (`/bin/web`) exited with 3 before it was ready, and its restart policy leaves it down; its log ends: line 3"),
            ),
        ];
        for (failure, expected) in cases {
            let services = ServicesState {
                replicas: vec![replica(failure.clone())],
                updated_unix_ms: 0,
            };
            let got = failed_start(&ctx, &services).map(|e| e.to_string());
            match expected {
                None => assert_eq!(got, None, "{failure:?}"),
                Some(prefix) => assert!(
                    got.as_deref().is_some_and(|g| g.starts_with(prefix)),
                    "{failure:?}: {got:?}"
                ),
            }
        }
    }
}
