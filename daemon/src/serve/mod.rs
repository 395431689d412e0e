//! `faultlined serve`: runs the schedule's suites on the lab, unattended, one experiment at a
//! time, with the HTTP API, `/metrics` and the web page. SIGHUP reloads the schedule (an
//! invalid file keeps the old one and logs why); SIGTERM or SIGINT heals the running run,
//! records it and exits.
//!
//! The scheduler itself is target-agnostic (`faultline_experiments::schedule`); this module
//! supplies the lab's side of it: [`LabRunner`] runs a scenario through the engine, and
//! [`LabTarget`] answers readiness, active faults, halt and resume.

pub mod api;
pub mod background;
pub mod client;
pub mod metrics;
pub mod page;

use faultline_experiments::stderr_line;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use faultline_experiments::engine::run::{run_experiment, RunOptions};
use faultline_experiments::lab::control::{self, HostPaths, LabContext};
use faultline_experiments::lab::servers;
use faultline_experiments::lab::topology::{Topology, DEFAULT_TOPOLOGY_SOURCE};
use faultline_experiments::lab::{LabError, DEFAULT_LAB_NAME, DEFAULT_STATE_ROOT};
use faultline_experiments::schedule::webhook::{Backoff, WebhookSender};
use faultline_experiments::schedule::{
    load_schedule, shipped_schedule, Event, RunIndex, RunRequest, RunResult, RunStatus, Schedule,
    Scheduler, StopSignal, SuiteRunner, SystemClock,
};
use faultline_experiments::spec::ExperimentSpec;
use faultline_experiments::workload::{AdapterKind, LiveLoad};

use api::{AppState, ServeTarget};

/// `faultlined serve`'s options.
#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// Root of Faultline's state: labs, runs, the run index.
    #[arg(long, env = "FAULTLINE_STATE_ROOT", default_value = DEFAULT_STATE_ROOT)]
    pub state_root: PathBuf,
    /// Lab to run the suites on; brought up with the default topology if it is not up.
    #[arg(long, env = "FAULTLINE_LAB", default_value = DEFAULT_LAB_NAME)]
    pub lab: String,
    /// Schedule file (`chaosctl schedule show` prints the shipped one to start from). Default:
    /// the shipped schedule.
    #[arg(long)]
    pub schedule: Option<PathBuf>,
    /// Address of the HTTP API, `/metrics` and the page.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,
    /// File holding the bearer token for the API; must be mode 0600.
    #[arg(long)]
    pub token_file: PathBuf,
    /// Serve read-only endpoints (runs, schedules, /metrics, the page) without a token.
    /// Mutating endpoints always need it.
    #[arg(long)]
    pub open_reads: bool,
    /// Longest fault any run may ask for.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2h")]
    pub max_fault_duration: Duration,
    /// Where run directories go (default: <state root>/runs).
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
}

fn log(message: &str) {
    stderr_line!(
        "{} faultlined serve: {message}",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
    );
}

/// Reads the bearer token, refusing a file that others can read or write.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let metadata = std::fs::metadata(path).with_context(|| {
        format!(
            "cannot read the token file {}; create it with e.g. `head -c 32 /dev/urandom | base64 > {0} && chmod 600 {0}`",
            path.display()
        )
    })?;
    let mode = metadata.permissions().mode() & 0o777;
    // Any group or other permission bit (as `chmod` speaks of them) is refused.
    let shared = mode & 0o077 != 0;
    anyhow::ensure!(
        !shared,
        "token file {} has mode {mode:04o}; it must be readable by its owner only: chmod 600 {}",
        path.display(),
        path.display()
    );
    let token = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the token file {}", path.display()))?
        .trim()
        .to_owned();
    anyhow::ensure!(
        token.len() >= 16,
        "the token in {} is {} characters long; use at least 16 random characters",
        path.display(),
        token.len()
    );
    Ok(token)
}

/// Opens the lab, bringing it up with the default topology if it is not up, and waits until it
/// is ready.
fn ensure_lab(host: &HostPaths, lab: &str) -> Result<LabContext, LabError> {
    let agent = crate::agent_binary();
    match LabContext::open(host, lab) {
        Ok(ctx) => {
            if ctx.agent().is_none() {
                control::start_agent(&ctx, host, &agent)?;
            }
            control::wait_ready(&ctx, Duration::from_secs(90))?;
            Ok(ctx)
        }
        Err(LabError::NotUp(_)) => {
            // The same choice of NATS server as `chaosctl lab up`: explicit, else pinned.
            let resolved = servers::resolve_here(
                &Topology::default_lab(),
                DEFAULT_TOPOLOGY_SOURCE,
                std::env::var_os("FAULTLINE_NATS_SERVER").map(PathBuf::from),
            )?;
            for warning in &resolved.warnings {
                log(&format!("warning: {warning}"));
            }
            Ok(control::up(host, lab, &resolved, &agent, Duration::from_secs(90))?.0)
        }
        Err(error) => Err(error),
    }
}

/// Runs a suite's scenario on the lab through the engine.
pub struct LabRunner {
    host: HostPaths,
    lab: String,
    results_root: PathBuf,
    max_fault_duration: Duration,
    background: Option<Arc<background::Background>>,
}

impl SuiteRunner for LabRunner {
    fn run(&self, request: &RunRequest, stop: &StopSignal) -> RunResult {
        let Some(background) = &self.background else {
            return self.run_engine(request, stop, None);
        };
        // The background load's last minute is the steady-state check: a loaded machine or
        // cluster skips the run here, with the reason, before anything is touched.
        if let Some(window) = background.recent() {
            if let Err(reason) = window.judge(&request.entry.spec.steady_state) {
                return RunResult {
                    status: Some(RunStatus::Aborted),
                    exit_code: Some(2),
                    note: Some(reason),
                    ..RunResult::default()
                };
            }
        }
        // The run is a slice of the background load when the load can serve it: one load,
        // never paused.
        if let Some(live) = background.hold(Duration::from_secs(60)) {
            match slice_refusal(&live, &request.entry.spec) {
                None => {
                    let result = self.run_engine(request, stop, Some(live));
                    background.release();
                    return result;
                }
                Some(why) => {
                    background.release();
                    log(&format!(
                        "run {} ({}): {why}; pausing the background load and starting the run's own",
                        request.index_id, request.entry.scenario
                    ));
                }
            }
        } else {
            log("no background segment runs; pausing it and starting the run's own load");
        }
        if !background.pause(Duration::from_secs(60)) {
            log("background load did not pause within 60 s; running anyway");
        }
        let result = self.run_engine(request, stop, None);
        background.resume();
        result
    }
}

/// Why a run cannot be a slice of the background load, if it cannot: the slice's operations
/// are the background load's, so the scenario must ask for that load. Both adapters slice (a
/// NATS load is read back through each server, an HTTP one through each of its gateways); the
/// adapter, a NATS load's stream replica count and an HTTP load's services must be the
/// background load's. Its tenants and rate stand in for the scenario's.
fn slice_refusal(live: &LiveLoad, spec: &ExperimentSpec) -> Option<String> {
    let wanted = if spec.workload.adapter == "http" {
        AdapterKind::Http
    } else {
        AdapterKind::Nats
    };
    if live.adapter() != wanted {
        return Some(format!(
            "the scenario's load uses the {} adapter and the background load the {}; a slice is of the same load",
            wanted.name(),
            live.adapter().name()
        ));
    }
    match wanted {
        AdapterKind::Nats if live.stream_replicas() != spec.workload.stream_replicas as usize => {
            Some(format!(
                "the scenario asks for {} stream replicas and the background load has {}",
                spec.workload.stream_replicas,
                live.stream_replicas()
            ))
        }
        AdapterKind::Http if live.http_services() != spec.workload.services.as_slice() => {
            Some(format!(
                "the scenario's HTTP load goes to services [{}] and the background load to [{}]; set background.services to the scenario's",
                spec.workload.services.join(", "),
                live.http_services().join(", ")
            ))
        }
        _ => None,
    }
}

impl LabRunner {
    fn run_engine(
        &self,
        request: &RunRequest,
        stop: &StopSignal,
        slice_of: Option<LiveLoad>,
    ) -> RunResult {
        let spec = request.entry.spec.clone();
        let seed = spec.workload.seed;
        // A suite's spec that names a topology gets it, or is refused if the lab runs another.
        let lab_topology = match spec.topology_path(&request.entry.source) {
            Some(path) => match servers::resolve_file(
                Some(&path),
                std::env::var_os("FAULTLINE_NATS_SERVER").map(PathBuf::from),
            ) {
                Ok(resolved) => Some(resolved),
                Err(error) => return RunResult::error(error.to_string()),
            },
            None => None,
        };
        let run_id = faultline_experiments::engine::run::make_run_id(&spec);
        // One run per lab: a `chaosctl inject` or `run` on it meanwhile is refused.
        let holder = faultline_experiments::lab::run_lock::RunHolder::this_process(
            format!("faultlined serve run {}", request.entry.scenario),
            Some(run_id.clone()),
        );
        let _lock = match faultline_experiments::lab::run_lock::RunLock::acquire(
            &self.host.state_root,
            &self.lab,
            &holder,
        ) {
            Ok(acquired) => {
                if let Some(dead) = acquired.took_over {
                    log(&format!(
                        "took over lab {}'s run lock from {}, which ended without releasing it",
                        self.lab,
                        dead.describe()
                    ));
                }
                acquired.lock
            }
            Err(error) => return RunResult::error(error.to_string()),
        };
        let options = RunOptions {
            spec,
            source: request.entry.source.clone(),
            host: self.host.clone(),
            lab: self.lab.clone(),
            agent_binary: crate::agent_binary(),
            results_root: self.results_root.clone(),
            seed,
            max_fault_duration: self.max_fault_duration,
            interrupts: stop.counter(),
            lab_topology,
            run_id: Some(run_id),
            slice_of,
        };
        let mut last_phase = None;
        let id = request.index_id;
        let outcome = run_experiment(&options, &mut |status| {
            if last_phase != Some(status.phase) {
                last_phase = Some(status.phase);
                log(&format!(
                    "run {id} ({}): {:?}",
                    request.entry.scenario, status.phase
                ));
            }
        });
        match outcome {
            Ok(outcome) => RunResult::from_outcome(&outcome),
            Err(error) => RunResult::error(error.to_string()),
        }
    }
}

/// The lab as the API sees it.
pub struct LabTarget {
    host: HostPaths,
    lab: String,
    background: Option<Arc<background::Background>>,
}

impl ServeTarget for LabTarget {
    fn background_ops(&self) -> Option<std::collections::BTreeMap<String, u64>> {
        self.background.as_ref().map(|b| b.ops_by_outcome())
    }

    fn ready(&self) -> Result<(), String> {
        let ctx = LabContext::open(&self.host, &self.lab).map_err(|e| e.to_string())?;
        if ctx.agent().is_none() {
            return Err(format!(
                "the agent of lab {} is not running; the next run restarts it",
                self.lab
            ));
        }
        Ok(())
    }

    fn active_faults(&self) -> Vec<String> {
        let Ok(ctx) = LabContext::open(&self.host, &self.lab) else {
            return vec![];
        };
        ctx.faults()
            .unwrap_or_default()
            .iter()
            .map(|f| {
                format!(
                    "{} on {} until {}",
                    f.id,
                    f.target,
                    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(
                        f.deadline_unix_ms as i64
                    )
                    .map_or_else(|| "?".to_owned(), |t| t.to_rfc3339())
                )
            })
            .collect()
    }

    fn halt(&self) -> Result<String, String> {
        let ctx = LabContext::open(&self.host, &self.lab).map_err(|e| e.to_string())?;
        let scope = ctx.reconcile_scope();
        let now = faultline_injectors::ledger::now_unix_ms();
        let report = ctx
            .with_injectors(|env| {
                faultline_injectors::lifecycle::halt(&ctx.ledger(), env, &scope, now)
            })
            .map_err(|e| e.to_string())?;
        Ok(format!(
            "lab {}: halted; reverted {} fault(s)",
            self.lab,
            report.halted.len() + report.expired.len()
        ))
    }

    fn resume(&self) -> Result<String, String> {
        let ctx = LabContext::open(&self.host, &self.lab).map_err(|e| e.to_string())?;
        faultline_injectors::lifecycle::resume(&ctx.ledger()).map_err(|e| e.to_string())?;
        Ok(format!("lab {}: new faults allowed again", self.lab))
    }
}

fn load(path: Option<&Path>) -> Result<Schedule, String> {
    match path {
        Some(path) => load_schedule(path).map_err(|e| e.to_string()),
        None => Ok(shipped_schedule()),
    }
}

fn log_events(events: &[Event]) {
    for event in events {
        log(&event.to_string());
    }
}

/// Runs `faultlined serve` until SIGTERM or SIGINT.
pub fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let token = read_token(&args.token_file)?;
    // Checked before anything is touched.
    let schedule = load(args.schedule.as_deref()).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        faultline_experiments::lab::is_root(),
        "faultlined serve runs experiments on the lab, which needs root (network namespaces, netlink, signals)"
    );
    if let Some(other) = client::find(&args.state_root) {
        anyhow::bail!(
            "faultlined serve (pid {}) already runs for {} and listens on {}; stop it first",
            other.pid,
            args.state_root.display(),
            other.listen
        );
    }
    let host = HostPaths::with_state_root(&args.state_root);
    log(&format!(
        "bringing lab {} up (or checking it is up)",
        args.lab
    ));
    ensure_lab(&host, &args.lab)?;
    let background = start_background(args, &host, &schedule)?;
    let scheduler = start_scheduler(args, &host, schedule, background.clone())?;

    let stop = Arc::new(AtomicBool::new(false));
    let reload_requested = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot handle SIGTERM/SIGINT")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload_requested))
        .context("cannot handle SIGHUP")?;

    let reload = reloader(args.schedule.clone(), background.clone());
    let state = Arc::new(AppState {
        scheduler: Arc::clone(&scheduler),
        target: Arc::new(LabTarget {
            host: host.clone(),
            lab: args.lab.clone(),
            background: background.clone(),
        }),
        token,
        open_reads: args.open_reads,
        reload: Arc::clone(&reload),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the HTTP runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(args.listen))
        .with_context(|| format!("cannot listen on {}; choose another --listen", args.listen))?;
    let listen = listener.local_addr()?;
    let http_stop = Arc::new(tokio::sync::Notify::new());
    let server = {
        let router = api::router(state);
        let http_stop = http_stop.clone();
        runtime.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { http_stop.notified().await })
                .await
        })
    };
    write_info(&args.state_root, listen, &args.token_file)?;
    log(&format!(
        "listening on http://{listen} (page /, API /api/v1, /metrics, /healthz, /readyz)"
    ));

    tick_until_stopped(&scheduler, reload.as_ref(), &stop, &reload_requested);
    log("stopping: healing the running run, if any");
    let events = scheduler
        .lock()
        .expect("scheduler")
        .shutdown("faultlined serve was stopped", Duration::from_secs(300));
    match events {
        Ok(events) => log_events(&events),
        Err(e) => log(&format!("could not record the last run: {e}")),
    }
    if let Some(background) = background {
        log("stopping the background load");
        if !background.shutdown(Duration::from_secs(60)) {
            log("the background load did not stop within 60 s");
        }
    }
    http_stop.notify_one();
    let _ = runtime.block_on(server);
    let _ = std::fs::remove_file(client::info_path(&args.state_root));
    log("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Re-reads the schedule file (or the shipped schedule): the scheduler takes its suites,
/// blackouts and retention, the background load its settings.
fn reloader(
    schedule_path: Option<PathBuf>,
    reloaded_background: Option<Arc<background::Background>>,
) -> Arc<api::Reload> {
    Arc::new(move |scheduler: &mut Scheduler| {
        let schedule = load(schedule_path.as_deref())?;
        let mut what = format!("{} ({} suites)", schedule.source, schedule.suites.len());
        match &reloaded_background {
            Some(background) => {
                if let Some(change) = background.reconfigure(schedule.background.clone()) {
                    what = format!("{what}; {change}");
                }
            }
            None if schedule.background.enabled => {
                what = format!(
                    "{what}; the background load is enabled now but was not at the start: restart the daemon to start it"
                );
            }
            None => {}
        }
        scheduler.reload(schedule);
        Ok(what)
    })
}

/// Opens the index, starts the scheduler on the lab (missed runs, orphaned runs), with webhooks
/// and retention, and logs each suite's next run.
fn start_scheduler(
    args: &ServeArgs,
    host: &HostPaths,
    schedule: Schedule,
    background: Option<Arc<background::Background>>,
) -> anyhow::Result<Arc<Mutex<Scheduler>>> {
    let results_root = args
        .output_dir
        .clone()
        .unwrap_or_else(|| args.state_root.join("runs"));
    let index = RunIndex::open(&RunIndex::default_path(&args.state_root))?;
    let runner = Arc::new(LabRunner {
        host: host.clone(),
        lab: args.lab.clone(),
        results_root: results_root.clone(),
        max_fault_duration: args.max_fault_duration,
        background,
    });
    let (scheduler, events) = Scheduler::start(schedule, index, runner, Arc::new(SystemClock))?;
    log_events(&events);
    let webhooks = WebhookSender::start(Backoff::default(), |delivery| match &delivery.error {
        None => log(&format!(
            "webhook {} delivered ({} attempt(s))",
            delivery.url, delivery.attempts
        )),
        Some(e) => log(&format!(
            "webhook {} FAILED after {} attempts: {e}",
            delivery.url, delivery.attempts
        )),
    });
    let scheduler = Arc::new(Mutex::new(
        scheduler
            .with_observer(Arc::new(webhooks))
            .with_results_root(results_root),
    ));
    for next in scheduler.lock().expect("scheduler").next_runs() {
        log(&format!(
            "suite {} ({} {}): next run {}",
            next.suite,
            next.cron,
            next.time_zone,
            next.at
                .map_or_else(|| "disabled".to_owned(), |t| t.to_rfc3339())
        ));
    }

    Ok(scheduler)
}

/// Ticks the scheduler every second until SIGTERM or SIGINT; reloads on SIGHUP.
fn tick_until_stopped(
    scheduler: &Mutex<Scheduler>,
    reload: &api::Reload,
    stop: &AtomicBool,
    reload_requested: &AtomicBool,
) {
    let mut last_tick = Instant::now()
        .checked_sub(Duration::from_secs(1))
        .unwrap_or_else(Instant::now);
    while !stop.load(Ordering::SeqCst) {
        if reload_requested.swap(false, Ordering::SeqCst) {
            match reload(&mut scheduler.lock().expect("scheduler")) {
                Ok(what) => log(&format!("SIGHUP: reloaded {what}")),
                Err(e) => log(&format!("SIGHUP: kept the old schedule: {e}")),
            }
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            match scheduler.lock().expect("scheduler").tick() {
                Ok(events) => log_events(&events),
                Err(e) => log(&format!("tick failed (will retry): {e}")),
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Starts the background load when the schedule asks for it.
fn start_background(
    args: &ServeArgs,
    host: &HostPaths,
    schedule: &Schedule,
) -> anyhow::Result<Option<Arc<background::Background>>> {
    Ok(if schedule.background.enabled {
        let dir = args.state_root.join("background");
        log(&format!(
            "background load: {} tenants at {} ops/s, history in {} (rotated every {})",
            schedule.background.tenants,
            schedule.background.rate,
            dir.display(),
            humantime::format_duration(schedule.background.rotate_every)
        ));
        Some(Arc::new(
            background::Background::start(
                host.clone(),
                args.lab.clone(),
                schedule.background.clone(),
                dir,
                log,
            )
            .context("cannot start the background load")?,
        ))
    } else {
        None
    })
}

fn write_info(state_root: &Path, listen: SocketAddr, token_file: &Path) -> anyhow::Result<()> {
    let pid = std::process::id() as i32;
    let info = client::ServeInfo {
        pid,
        start_ticks: faultline_injectors::process::read_proc_stat(Path::new("/proc"), pid)
            .map_or(0, |s| s.start_ticks),
        listen,
        token_file: std::fs::canonicalize(token_file).unwrap_or_else(|_| token_file.to_path_buf()),
    };
    let path = client::info_path(state_root);
    std::fs::create_dir_all(state_root)
        .and_then(|()| std::fs::write(&path, serde_json::to_string_pretty(&info)?))
        .with_context(|| format!("cannot write {}", path.display()))
}
