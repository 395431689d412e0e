//! The lab agent: `faultlined` in lab mode. It supervises the services (start, restart on exit
//! by policy, move off cordoned nodes, readiness) and enforces fault deadlines by reconciling
//! every second.
//!
//! It holds `agent.lock` for its whole life, so at most one agent runs per lab. Services run in
//! sessions of their own and outlive the agent: a restarted agent adopts them by PID and start
//! time from `services.json`.
//!
//! Why a session each: a service in its own process group but in the agent's session is in an
//! orphaned process group once the agent dies, and if it is stopped (paused) at that moment the
//! kernel sends it SIGHUP and SIGCONT. The pause would end early while its record stays, and a
//! service without a SIGHUP handler would die. The kernel sends those signals only to groups in
//! the dying parent's session, so a service that is alone in its session is left as it is.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use faultline_injectors::ledger::now_unix_ms;
use faultline_injectors::netns::run_in_netns;
use faultline_injectors::process::{read_proc_stat, NixSignaller, ProcessTarget, Signaller};
use nix::fcntl::{Flock, FlockArg};
use nix::sys::signal::Signal;

use super::control::LabContext;
use super::probe;
use super::session::InOwnSession;
use super::state::{
    read_json, write_json, CordonedNodes, HeldReplicas, ReplicaState, RestartEvent, ServicesState,
    StartFailure, StartFailureKind,
};
use super::topology::{placeholders, RestartPolicy, Service, Topology};
use super::LabError;

const TICK: Duration = Duration::from_millis(200);
const READINESS_EVERY: Duration = Duration::from_millis(500);
const RECONCILE_EVERY: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A replica that ran this long is healthy again: its backoff resets.
const STABLE_AFTER: Duration = Duration::from_secs(10);
const EVICTION_GRACE: Duration = Duration::from_secs(3);

/// Whether `pid` is a zombie (or gone).
pub fn is_zombie(proc_root: &Path, pid: i32) -> bool {
    read_proc_stat(proc_root, pid).is_none_or(|stat| stat.state == 'Z')
}

struct Replica {
    state: ReplicaState,
    child: Option<Child>,
    started: Option<Instant>,
    backoff: Duration,
    /// When to start it next; `None` while it runs or when its policy leaves it down.
    next_start: Option<Instant>,
    evicting_since: Option<Instant>,
    /// Why the next start is a restart; `None` for the first start.
    pending_reason: Option<String>,
    /// The program its running process was started from, placeholders expanded.
    program: Option<String>,
    /// Whether its readiness check passed since its process started: an exit before that is
    /// a failed start.
    ready_since_start: bool,
}

/// Runs the agent until `stop` is set or the lab's state directory disappears.
pub fn run_agent(ctx: &LabContext, stop: &AtomicBool) -> Result<(), LabError> {
    let paths = &ctx.paths;
    fs::create_dir_all(&paths.dir).map_err(|source| LabError::State {
        path: paths.dir.clone(),
        source,
    })?;
    let lock_path = paths.dir.join("agent.lock");
    let lock_file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| LabError::State {
            path: lock_path.clone(),
            source,
        })?;
    let Ok(_lock) = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock) else {
        stderr_line!(
            "faultlined: another agent already supervises lab `{}`",
            paths.name
        );
        return Ok(());
    };
    let me = std::process::id() as i32;
    if let Some(stat) = read_proc_stat(&ctx.proc_root, me) {
        write_json(
            &paths.agent_pid_file(),
            &ProcessTarget {
                pid: me,
                start_ticks: stat.start_ticks,
                label: format!("faultlined lab {}", paths.name),
            },
        )?;
    }
    fs::create_dir_all(paths.logs_dir()).map_err(|source| LabError::State {
        path: paths.logs_dir(),
        source,
    })?;

    let topology = ctx.topology.clone();
    let signaller = NixSignaller::new(&ctx.proc_root);
    let mut replicas = adopt(ctx, &topology, &signaller)?;
    let mut last_readiness = Instant::now()
        .checked_sub(READINESS_EVERY)
        .unwrap_or_else(Instant::now);
    let mut last_reconcile = last_readiness;
    let mut last_written: Option<Vec<ReplicaState>> = None;
    let mut last_write_at = Instant::now();

    while !stop.load(Ordering::Relaxed) {
        if !paths.lab_file().exists() {
            stderr_line!("faultlined: lab `{}` is gone; exiting", paths.name);
            break;
        }
        let cordoned: CordonedNodes = read_json(&paths.cordoned_file())?.unwrap_or_default();
        let held: HeldReplicas = read_json(&paths.held_file())?.unwrap_or_default();
        supervise(ctx, &topology, &cordoned, &held, &signaller, &mut replicas);

        if last_readiness.elapsed() >= READINESS_EVERY {
            last_readiness = Instant::now();
            check_readiness(ctx, &topology, &mut replicas);
        }
        if last_reconcile.elapsed() >= RECONCILE_EVERY {
            last_reconcile = Instant::now();
            match ctx.reconcile() {
                Ok(report) if !report.is_empty() => {
                    stderr_line!(
                        "faultlined: reconcile: {}",
                        serde_json::to_string(&report).unwrap_or_default()
                    );
                }
                Ok(_) => {}
                Err(error) => stderr_line!("faultlined: reconcile failed: {error}"),
            }
        }
        let snapshot: Vec<ReplicaState> = replicas.iter().map(|r| r.state.clone()).collect();
        if last_written.as_ref() != Some(&snapshot)
            || last_write_at.elapsed() >= Duration::from_secs(1)
        {
            write_json(
                &paths.services_file(),
                &ServicesState {
                    replicas: snapshot.clone(),
                    updated_unix_ms: now_unix_ms(),
                },
            )?;
            last_written = Some(snapshot);
            last_write_at = Instant::now();
        }
        std::thread::sleep(TICK);
    }
    Ok(())
}

/// Builds the replica table, adopting processes that a previous agent started.
fn adopt(
    ctx: &LabContext,
    topology: &Topology,
    signaller: &NixSignaller,
) -> Result<Vec<Replica>, LabError> {
    let previous: ServicesState = read_json(&ctx.paths.services_file())?.unwrap_or_default();
    let mut by_key: BTreeMap<String, ReplicaState> = previous
        .replicas
        .into_iter()
        .map(|r| (r.key(), r))
        .collect();
    let now = Instant::now();
    let mut replicas = Vec::new();
    for service in &topology.services {
        for replica in 1..=service.replicas {
            let key = format!("{}/{replica}", service.name);
            let mut state = by_key.remove(&key).unwrap_or_else(|| ReplicaState {
                service: service.name.clone(),
                replica,
                node: topology.eligible_nodes(service, replica)[0].clone(),
                pid: None,
                start_ticks: None,
                ready: false,
                restarts: vec![],
                down_reason: None,
                start_failure: None,
            });
            let alive = match (state.pid, state.start_ticks) {
                (Some(pid), Some(start_ticks)) => {
                    let target = ProcessTarget {
                        pid,
                        start_ticks,
                        label: key.clone(),
                    };
                    // A paused replica is alive; signal 0 style check through the stat file.
                    signaller.is_stopped(&target)
                        || read_proc_stat(&ctx.proc_root, pid)
                            .is_some_and(|s| s.start_ticks == start_ticks && s.state != 'Z')
                }
                _ => false,
            };
            // Readiness is probed again before it is first written: a ready flag from a
            // previous agent says nothing about now.
            state.ready = false;
            let pending_reason = if alive {
                None
            } else if state.pid.is_some() {
                state.pid = None;
                state.start_ticks = None;
                state.ready = false;
                Some("exited while no agent was watching".to_owned())
            } else {
                None
            };
            replicas.push(Replica {
                state,
                child: None,
                started: alive.then_some(now),
                backoff: FIRST_BACKOFF,
                next_start: (!alive).then_some(now),
                evicting_since: None,
                pending_reason,
                program: None,
                ready_since_start: false,
            });
        }
    }
    Ok(replicas)
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with {code}"),
        (None, Some(signal)) => Signal::try_from(signal).map_or_else(
            |_| format!("killed by signal {signal}"),
            |s| format!("killed by {}", s.as_str()),
        ),
        _ => "exited".to_owned(),
    }
}

fn supervise(
    ctx: &LabContext,
    topology: &Topology,
    cordoned: &CordonedNodes,
    held: &HeldReplicas,
    signaller: &NixSignaller,
    replicas: &mut [Replica],
) {
    let now = Instant::now();
    for replica in replicas.iter_mut() {
        notice_exit(ctx, topology, cordoned, replica, now);
        evict_if_cordoned(cordoned, signaller, replica, now);
    }
    start_due(ctx, topology, cordoned, held, replicas, now);
}

/// Records the exit of a replica's process, if it exited, and schedules its restart by policy.
fn notice_exit(
    ctx: &LabContext,
    topology: &Topology,
    cordoned: &CordonedNodes,
    replica: &mut Replica,
    now: Instant,
) {
    let Some(pid) = replica.state.pid else { return };
    let exit = if let Some(child) = replica.child.as_mut() {
        match child.try_wait() {
            Ok(Some(status)) => Some(describe_exit(status)),
            Ok(None) => None,
            Err(e) => Some(format!("lost track of it: {e}")),
        }
    } else if is_zombie(&ctx.proc_root, pid)
        || read_proc_stat(&ctx.proc_root, pid).map(|s| s.start_ticks) != replica.state.start_ticks
    {
        Some("exited".to_owned())
    } else {
        None
    };
    let Some(exit) = exit else { return };
    // The drain itself may have sent the SIGTERM before this loop noticed the cordon.
    let evicted =
        replica.evicting_since.take().is_some() || cordoned.nodes.contains(&replica.state.node);
    let service = topology
        .service(&replica.state.service)
        .expect("replicas come from the topology");
    let reason = if evicted {
        format!("evicted from {} (cordoned)", replica.state.node)
    } else {
        exit
    };
    let restart = evicted
        || match service.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => reason != "exited with 0",
            RestartPolicy::Never => false,
        };
    let ran_for = replica
        .started
        .map(|s| now.duration_since(s))
        .unwrap_or_default();
    replica.backoff = if ran_for >= STABLE_AFTER {
        FIRST_BACKOFF
    } else {
        (replica.backoff * 2).min(MAX_BACKOFF)
    };
    stderr_line!("faultlined: {} (pid {pid}) {reason}", replica.state.key());
    replica.state.start_failure = if evicted || replica.ready_since_start {
        None
    } else {
        let before = replica
            .state
            .start_failure
            .as_ref()
            .filter(|f| f.kind == StartFailureKind::ExitedBeforeReady)
            .map_or(0, |f| f.times);
        Some(StartFailure {
            program: replica
                .program
                .clone()
                .unwrap_or_else(|| service.command[0].clone()),
            kind: StartFailureKind::ExitedBeforeReady,
            reason: reason.clone(),
            os_error: None,
            times: before + 1,
            retrying: restart,
        })
    };
    replica.child = None;
    replica.program = None;
    replica.ready_since_start = false;
    replica.started = None;
    replica.state.pid = None;
    replica.state.start_ticks = None;
    replica.state.ready = false;
    if restart {
        replica.state.down_reason = Some(reason.clone());
        // An evicted replica moves at once; a crashed one waits out its backoff.
        replica.next_start = Some(if evicted {
            now
        } else {
            now + replica.backoff / 2
        });
        replica.pending_reason = Some(reason);
    } else {
        replica.state.down_reason = Some(format!("{reason}; restart policy says leave it down"));
        replica.next_start = None;
        replica.pending_reason = None;
    }
}

/// Asks a replica on a cordoned node to leave: SIGTERM, then SIGKILL after a grace period.
fn evict_if_cordoned(
    cordoned: &CordonedNodes,
    signaller: &NixSignaller,
    replica: &mut Replica,
    now: Instant,
) {
    let (Some(pid), Some(start_ticks)) = (replica.state.pid, replica.state.start_ticks) else {
        return;
    };
    if !cordoned.nodes.contains(&replica.state.node) {
        return;
    }
    let target = ProcessTarget {
        pid,
        start_ticks,
        label: replica.state.key(),
    };
    match replica.evicting_since {
        None => {
            replica.evicting_since = Some(now);
            // A paused process cannot handle SIGTERM; let it run to its exit.
            let _ = signaller.signal(&target, Signal::SIGCONT);
            let _ = signaller.signal(&target, Signal::SIGTERM);
        }
        Some(since) if now.duration_since(since) >= EVICTION_GRACE => {
            let _ = signaller.signal(&target, Signal::SIGKILL);
        }
        Some(_) => {}
    }
}

/// Starts every replica that is down and due, on its current node if still allowed, else on the
/// first schedulable eligible node.
fn start_due(
    ctx: &LabContext,
    topology: &Topology,
    cordoned: &CordonedNodes,
    held: &HeldReplicas,
    replicas: &mut [Replica],
    now: Instant,
) {
    let placements: BTreeMap<(String, u32), String> = replicas
        .iter()
        .map(|r| {
            (
                (r.state.service.clone(), r.state.replica),
                r.state.node.clone(),
            )
        })
        .collect();
    for replica in replicas.iter_mut() {
        if replica.state.pid.is_some() || replica.next_start.is_none_or(|due| now < due) {
            continue;
        }
        if held.replicas.contains(&replica.state.key()) {
            replica.state.down_reason = Some("held down by a stop fault".to_owned());
            continue;
        }
        let service = topology
            .service(&replica.state.service)
            .expect("replicas come from the topology");
        let eligible = topology.eligible_nodes(service, replica.state.replica);
        let current = &replica.state.node;
        let node = std::iter::once(current)
            .filter(|n| eligible.contains(n))
            .chain(eligible.iter())
            .find(|n| !cordoned.nodes.contains(*n))
            .cloned();
        let Some(node) = node else {
            replica.state.down_reason = Some(format!(
                "no schedulable node: every eligible node ({}) is cordoned",
                eligible.join(", ")
            ));
            continue;
        };
        let mut planned = placements.clone();
        planned.insert((service.name.clone(), replica.state.replica), node.clone());
        match start_replica(
            ctx,
            topology,
            service,
            replica.state.replica,
            &node,
            &planned,
        ) {
            Ok((child, program)) => {
                let pid = child.id() as i32;
                replica.state.start_ticks =
                    read_proc_stat(&ctx.proc_root, pid).map(|s| s.start_ticks);
                replica.state.pid = Some(pid);
                if let Some(reason) = replica.pending_reason.take() {
                    replica.state.restarts.push(RestartEvent {
                        at_unix_ms: now_unix_ms(),
                        reason,
                        node: node.clone(),
                    });
                }
                stderr_line!(
                    "faultlined: started {} on {node} (pid {pid})",
                    replica.state.key()
                );
                replica.state.node = node;
                replica.state.down_reason = None;
                replica.child = Some(child);
                replica.program = Some(program);
                replica.ready_since_start = false;
                replica.started = Some(now);
                replica.next_start = None;
            }
            Err(error) => {
                if let LabError::ServiceStart {
                    program, source, ..
                } = &error
                {
                    let before = replica
                        .state
                        .start_failure
                        .as_ref()
                        .filter(|f| f.kind == StartFailureKind::Spawn)
                        .map_or(0, |f| f.times);
                    replica.state.start_failure = Some(StartFailure {
                        program: program.clone(),
                        kind: StartFailureKind::Spawn,
                        reason: source.to_string(),
                        os_error: source.raw_os_error(),
                        times: before + 1,
                        retrying: true,
                    });
                }
                replica.state.down_reason = Some(format!("cannot start: {error}"));
                replica.backoff = (replica.backoff * 2).min(MAX_BACKOFF);
                replica.next_start = Some(now + replica.backoff);
                replica
                    .pending_reason
                    .get_or_insert_with(|| "start failed".to_owned());
            }
        }
    }
}

/// Expands the placeholders of one argument.
pub fn render_arg(
    arg: &str,
    ctx: &LabContext,
    topology: &Topology,
    service: &Service,
    replica: u32,
    node: &str,
    placements: &BTreeMap<(String, u32), String>,
) -> String {
    let address_of = |node: &str| {
        topology
            .node(node)
            .map(|n| n.address.to_string())
            .unwrap_or_default()
    };
    // The other replicas of this service, in replica order.
    let peers: Vec<&String> = placements
        .iter()
        .filter(|((s, r), _)| *s == service.name && *r != replica)
        .map(|(_, n)| n)
        .collect();
    let mut rendered = arg.to_owned();
    for placeholder in placeholders(arg) {
        let parts: Vec<&str> = placeholder.split(':').collect();
        let value = match parts.as_slice() {
            ["lab"] => ctx.paths.name.clone(),
            ["service"] => service.name.clone(),
            ["replica"] => replica.to_string(),
            ["index"] => replica.saturating_sub(1).to_string(),
            ["replicas"] => service.replicas.to_string(),
            ["node"] => node.to_owned(),
            ["zone"] => topology.node(node).map(|n| n.zone).unwrap_or_default(),
            ["node_ip"] => address_of(node),
            ["data_dir"] => ctx
                .paths
                .data_dir()
                .join(format!("{}-{replica}", service.name))
                .display()
                .to_string(),
            // Faultline's own binaries (e.g. tenant-gateway) live next to the agent.
            ["bin_dir"] => std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|d| d.display().to_string()))
                .unwrap_or_default(),
            ["peers", scheme, port] => peers
                .iter()
                .map(|n| format!("{scheme}://{}:{port}", address_of(n)))
                .collect::<Vec<_>>()
                .join(","),
            ["peers", port] => peers
                .iter()
                .map(|n| format!("{}:{port}", address_of(n)))
                .collect::<Vec<_>>()
                .join(","),
            ["peer_ips"] => peers
                .iter()
                .map(|n| address_of(n))
                .collect::<Vec<_>>()
                .join(","),
            ["members", scheme, port] => placements
                .iter()
                .filter(|((s, _), _)| *s == service.name)
                .map(|((s, r), n)| format!("{s}{r}={scheme}://{}:{port}", address_of(n)))
                .collect::<Vec<_>>()
                .join(","),
            ["ip", other, wanted] => placements
                .iter()
                .find(|((s, r), _)| s == other && wanted.parse() == Ok(*r))
                .map(|(_, n)| address_of(n))
                .unwrap_or_default(),
            ["endpoints", other, scheme, port] => placements
                .iter()
                .filter(|((s, _), _)| s == other)
                .map(|(_, n)| format!("{scheme}://{}:{port}", address_of(n)))
                .collect::<Vec<_>>()
                .join(","),
            _ => continue,
        };
        rendered = rendered.replace(&format!("{{{placeholder}}}"), &value);
    }
    rendered
}

fn start_replica(
    ctx: &LabContext,
    topology: &Topology,
    service: &Service,
    replica: u32,
    node: &str,
    placements: &BTreeMap<(String, u32), String>,
) -> Result<(Child, String), LabError> {
    let args: Vec<String> = service
        .command
        .iter()
        .map(|arg| render_arg(arg, ctx, topology, service, replica, node, placements))
        .collect();
    let data_dir = ctx
        .paths
        .data_dir()
        .join(format!("{}-{replica}", service.name));
    fs::create_dir_all(&data_dir).map_err(|source| LabError::State {
        path: data_dir.clone(),
        source,
    })?;
    let log_path = ctx
        .paths
        .logs_dir()
        .join(format!("{}-{replica}.log", service.name));
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|source| LabError::State {
            path: log_path.clone(),
            source,
        })?;
    let log_err = log.try_clone().map_err(|source| LabError::State {
        path: log_path.clone(),
        source,
    })?;
    let netns = ctx.paths.netns(node);
    let env: Vec<(String, String)> = service
        .env
        .iter()
        .map(|(name, value)| {
            (
                name.clone(),
                render_arg(value, ctx, topology, service, replica, node, placements),
            )
        })
        .collect();
    let program = PathBuf::from(&args[0]);
    let rest = args[1..].to_vec();
    // Forked from a thread inside the node's namespace, the child is born there.
    let spawned = run_in_netns(&ctx.netns_dir, &netns, move || {
        Command::new(&program)
            .args(&rest)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .in_own_session()
            .spawn()
    })?;
    match spawned {
        Ok(child) => Ok((child, args[0].clone())),
        Err(source) => Err(LabError::ServiceStart {
            service: service.name.clone(),
            replica,
            program: args[0].clone(),
            source,
        }),
    }
}

fn check_readiness(ctx: &LabContext, topology: &Topology, replicas: &mut [Replica]) {
    let client = ctx.paths.netns("client");
    for replica in replicas.iter_mut() {
        if replica.state.pid.is_none() {
            replica.state.ready = false;
            continue;
        }
        let service = topology
            .service(&replica.state.service)
            .expect("replicas come from the topology");
        let Some(node) = topology.node(&replica.state.node) else {
            continue;
        };
        replica.state.ready =
            probe::is_ready(&ctx.netns_dir, &client, node.address, &service.ready);
        if replica.state.ready {
            replica.ready_since_start = true;
            replica.state.start_failure = None;
        }
    }
}

/// Opens (creating) the agent's log for appending.
pub fn open_agent_log(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}
