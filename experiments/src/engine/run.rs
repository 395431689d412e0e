//! The phase runner behind `chaosctl run` on the lab and the runner Job on a cluster: one phase
//! loop ([`run_on_site`]) for both, which sees the lab or the cluster only through
//! [`RunSite`]. [`run_experiment`] opens the lab; [`run_on_cluster`] builds the cluster's site.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::checkers::{self, CheckConfig, CheckReport, ExperimentInfo, FaultWindow, ServerVersion};
use crate::history::Observation;
use crate::kubernetes::run_site::ClusterSite;
use crate::kubernetes::target::{ClusterOptions, ClusterTarget};
use crate::lab::control::{self, HostPaths, LabContext};
use crate::lab::servers::{self, ResolvedTopology};
use crate::lab::target::LabSite;
use crate::lab::topology::{Topology, DEFAULT_TOPOLOGY_SOURCE};
use crate::report::{self, ReportFormat};
use crate::spec::ExperimentSpec;
use crate::workload::{self, AdapterKind, LiveLoad, Progress, WorkloadConfig};

use super::execute::{Injected, InjectedFault};
use super::load::RunLoad;
use super::plan::{plan, PlannedFault};
use super::site::RunSite;
use super::EngineError;

const TICK: Duration = Duration::from_millis(100);

/// What `chaosctl run` asks for.
pub struct RunOptions {
    /// The experiment.
    pub spec: ExperimentSpec,
    /// Where the spec came from (file or `catalog:NAME`).
    pub source: String,
    /// Host paths.
    pub host: HostPaths,
    /// Lab name.
    pub lab: String,
    /// `faultlined`, to start the lab when it is not up.
    pub agent_binary: PathBuf,
    /// Results go to `<results_root>/<run id>/`.
    pub results_root: PathBuf,
    /// Seed for random selectors and the load schedule.
    pub seed: u64,
    /// Cap on any fault's duration.
    pub max_fault_duration: Duration,
    /// SIGINT/SIGTERM count, bumped by the caller's signal handler.
    pub interrupts: Arc<AtomicUsize>,
    /// The topology (programs resolved) the run asks for: the lab is brought up with it, and
    /// refused if it is up with another. `None`: the lab that is up, else the built-in
    /// topology with the default NATS server.
    pub lab_topology: Option<ResolvedTopology>,
    /// The run id, when the caller made it already (to name the run in the lab's run lock);
    /// `None`: made from the spec's name and the time.
    pub run_id: Option<String>,
    /// A load that keeps running (the daemon's background load): the run is a slice of it
    /// instead of starting its own. `None`: the run starts its own load, as `chaosctl run`.
    pub slice_of: Option<LiveLoad>,
}

/// The live state shown while a run goes on.
#[derive(Clone, Debug)]
pub struct LiveStatus {
    /// Current phase.
    pub phase: Phase,
    /// Time since the run started.
    pub elapsed: Duration,
    /// Time left of the planned run.
    pub left: Duration,
    /// The workload's latest progress.
    pub progress: Progress,
    /// Active faults, described.
    pub active_faults: Vec<String>,
    /// Until the next planned fault's injection, while one is still to come.
    pub next_fault_in: Option<Duration>,
}

/// The phases, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Lab, plan, workload start.
    Setup,
    /// Healthy load before any fault.
    Baseline,
    /// Faults being injected and held.
    Inject,
    /// Every fault healed; waiting for recovery.
    RecoveryWatch,
    /// Reading every tenant back through every node.
    ReadBack,
    /// Checkers.
    Check,
    /// Writing reports.
    Report,
}

/// The experiment part of a run's record (`run.json`), next to the checkers' report.
#[derive(Debug, Serialize)]
pub struct RunRecord {
    /// Run id.
    pub run_id: String,
    /// Scenario name.
    pub scenario: String,
    /// Where the spec came from.
    pub source: String,
    /// Lab name, or `cluster`.
    pub lab: String,
    /// Whether the engine brought the lab up.
    pub started_lab: bool,
    /// Seed used.
    pub seed: u64,
    /// The system under test: every service's program and its version.
    pub system_under_test: Vec<ServerVersion>,
    /// The plan.
    pub plan: Vec<PlannedFault>,
    /// What was injected and healed.
    pub injected: Vec<InjectedFault>,
    /// Why the run ended early, if it did.
    pub aborted: Option<String>,
    /// Whether the steady state held during the baseline.
    pub steady_state: Option<String>,
    /// Reverts that failed during the final heal (their ledger deadlines still apply).
    pub heal_failures: Vec<String>,
    /// Exit code: 0 pass, 1 SLO or consistency failure, 2 error, unknown or aborted.
    pub exit_code: u8,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct RunOutcome {
    /// The run's record.
    pub record: RunRecord,
    /// The results directory.
    pub dir: PathBuf,
    /// The checkers' report, when the run got that far.
    pub report: Option<CheckReport>,
}

impl RunOutcome {
    /// Path of the HTML report.
    pub fn html(&self) -> PathBuf {
        self.dir.join("report.html")
    }
}

/// A run id: the scenario's name and the time, e.g. `az-failure-20261203T073500`.
pub fn make_run_id(spec: &ExperimentSpec) -> String {
    let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        .to_string()
        .replace([':', '-'], "")
        .trim_end_matches('Z')
        .to_owned();
    format!("{}-{stamp}", spec.name)
}

/// Opens the lab, bringing it up with the default topology if it is not; says whether it did.
fn ensure_lab(options: &RunOptions) -> Result<(LabContext, bool), EngineError> {
    if options.spec.target != crate::spec::Target::Lab {
        return Err(crate::spec::SpecError::Invalid {
            source_name: options.source.clone(),
            field: "target".into(),
            message: "this spec targets a cluster; run it with --context (or --kubeconfig), not on the lab".into(),
        }
        .into());
    }
    let up = |resolved: &ResolvedTopology| {
        control::up(
            &options.host,
            &options.lab,
            resolved,
            &options.agent_binary,
            Duration::from_secs(90),
        )
    };
    match (
        LabContext::open(&options.host, &options.lab),
        &options.lab_topology,
    ) {
        (Ok(ctx), None) => {
            if ctx.agent().is_none() {
                control::start_agent(&ctx, &options.host, &options.agent_binary)?;
            }
            control::wait_ready(&ctx, Duration::from_secs(90))?;
            Ok((ctx, false))
        }
        // Asked for a topology: `up` keeps a lab that runs it and refuses one that does not.
        (Ok(_), Some(resolved)) => Ok((up(resolved)?.0, false)),
        (Err(crate::lab::LabError::NotUp(_)), Some(resolved)) => Ok((up(resolved)?.0, true)),
        (Err(crate::lab::LabError::NotUp(_)), None) => {
            let resolved =
                servers::resolve_here(&Topology::default_lab(), DEFAULT_TOPOLOGY_SOURCE, None)?;
            Ok((up(&resolved)?.0, true))
        }
        (Err(error), _) => Err(error.into()),
    }
}

/// The checker configuration a run of `spec` judges with: the scenario's seed SLO overridden by
/// the spec's `slo` (recovery deadline, success rate, p99, throughput) and its `settle` as the
/// convergence deadline. `chaosctl check RUN_DIR` judges a recorded run with the same.
pub fn check_config(spec: &ExperimentSpec) -> CheckConfig {
    let mut config = CheckConfig::for_scenario(&spec.name);
    config.slo.recovery_deadline_ms = spec.slo.max_ttr.as_millis() as u64;
    config.slo.min_success_rate = spec.slo.min_success_rate;
    config.slo.max_p99_ms = spec.slo.max_p99.as_millis() as u64;
    config.slo.min_throughput_ratio = spec.slo.min_throughput_ratio;
    // One convergence deadline for the read-back's settle and the judge.
    config.convergence_deadline_ms = spec.settle.as_millis() as u64;
    config
}

/// Runs one experiment end to end on the lab. `on_status` is called about ten times a second.
pub fn run_experiment(
    options: &RunOptions,
    on_status: &mut dyn FnMut(&LiveStatus),
) -> Result<RunOutcome, EngineError> {
    options.spec.validate(&options.source)?;
    // Before the lab, the load and the baseline: a halted state root starts nothing.
    control::refuse_if_halted(&options.host.state_root)?;
    let (ctx, started_lab) = ensure_lab(options)?;
    ctx.reconcile()?;
    let system_under_test = ctx.servers()?;
    let site = LabSite::new(ctx);
    let run_id = options
        .run_id
        .clone()
        .unwrap_or_else(|| make_run_id(&options.spec));
    let settings = RunSettings {
        spec: &options.spec,
        source: &options.source,
        seed: options.seed,
        max_fault_duration: options.max_fault_duration,
        interrupts: &options.interrupts,
        dir: options.results_root.join(&run_id),
        run_id,
        started_lab,
        system_under_test,
        slice_of: options.slice_of.clone(),
    };
    run_on_site(&site, &settings, on_status)
}

/// What a run on a cluster needs (the runner Job's side of it).
pub struct ClusterRunOptions {
    /// The experiment; a cluster spec (`target: kubernetes` with its `kubernetes:` section).
    pub spec: ExperimentSpec,
    /// Where the spec came from, for messages (e.g. `experiment NS/NAME`).
    pub source: String,
    /// The run id.
    pub run_id: String,
    /// The run's directory (on the report volume).
    pub dir: PathBuf,
    /// The API client.
    pub client: kube::Client,
    /// The runtime the client's requests run on; the engine blocks on it from its own thread.
    pub runtime: tokio::runtime::Handle,
    /// Faults' label and name prefix, creator, timeouts, exempt CIDRs.
    pub cluster: ClusterOptions,
    /// Seed for random selectors and the load schedule.
    pub seed: u64,
    /// Cap on any fault's duration.
    pub max_fault_duration: Duration,
    /// Interrupt count (SIGTERM): heal and end early.
    pub interrupts: Arc<AtomicUsize>,
}

/// Runs one experiment end to end on a cluster: the faults as Fault objects, drains and pod
/// deletes through the API; the tenant load from this process to the NATS pods (or the
/// `gateway` workload's pods); the same phases, checkers and reports as on the lab. Call it
/// from a plain thread (it blocks on `options.runtime`).
///
/// # Errors
/// The spec is not a valid cluster spec, the plan is refused, the load cannot start, or the
/// results cannot be written; every fault injected is healed first.
pub fn run_on_cluster(
    options: &ClusterRunOptions,
    on_status: &mut dyn FnMut(&LiveStatus),
) -> Result<RunOutcome, EngineError> {
    options.spec.validate(&options.source)?;
    let target = ClusterTarget::new(
        options.client.clone(),
        options.runtime.clone(),
        &options.spec,
        options.cluster.clone(),
    )?;
    let site = ClusterSite::new(target, &options.spec, options.runtime.clone())?;
    let settings = RunSettings {
        spec: &options.spec,
        source: &options.source,
        seed: options.seed,
        max_fault_duration: options.max_fault_duration,
        interrupts: &options.interrupts,
        run_id: options.run_id.clone(),
        dir: options.dir.clone(),
        started_lab: false,
        // Not probed on a cluster yet: the report says nothing rather than something wrong.
        system_under_test: vec![],
        slice_of: None,
    };
    run_on_site(&site, &settings, on_status)
}

/// What one run is, wherever it runs.
pub struct RunSettings<'a> {
    /// The validated experiment.
    pub spec: &'a ExperimentSpec,
    /// Where the spec came from.
    pub source: &'a str,
    /// Seed for random selectors and the load schedule.
    pub seed: u64,
    /// Cap on any fault's duration.
    pub max_fault_duration: Duration,
    /// SIGINT/SIGTERM count.
    pub interrupts: &'a Arc<AtomicUsize>,
    /// The run id.
    pub run_id: String,
    /// The run directory (created if missing).
    pub dir: PathBuf,
    /// Whether the engine brought the lab up (for the record).
    pub started_lab: bool,
    /// The system under test: every service's program and version, as far as the site knows.
    pub system_under_test: Vec<ServerVersion>,
    /// A running load the run is a slice of, instead of starting its own.
    pub slice_of: Option<LiveLoad>,
}

/// The phases of one run on `site`: plan (refusals happen here, before anything is touched),
/// load, baseline and steady state, inject, recovery watch, the final heal (always), read-back,
/// check, reports and `run.json`. `on_status` is called about ten times a second.
///
/// # Errors
/// The plan is refused, the load cannot start or fails, or the results cannot be written.
pub fn run_on_site(
    site: &dyn RunSite,
    settings: &RunSettings<'_>,
    on_status: &mut dyn FnMut(&LiveStatus),
) -> Result<RunOutcome, EngineError> {
    let log = std::cell::RefCell::new(RunLog::default());
    let mut on_status = |status: &LiveStatus| {
        log.borrow_mut().line(status);
        on_status(status);
    };
    let on_status: &mut dyn FnMut(&LiveStatus) = &mut on_status;
    let spec = settings.spec;
    let planned = plan(site.target(), spec, settings.seed)?;
    let run_id = settings.run_id.clone();
    let dir = settings.dir.clone();
    fs::create_dir_all(&dir).map_err(|source| EngineError::Results {
        path: dir.clone(),
        source,
    })?;
    log.borrow_mut().open(&dir.join("run.log"));
    write_file(
        &dir.join("spec.yaml"),
        serde_yaml::to_string(spec).unwrap_or_default().as_bytes(),
    )?;

    let config = workload_config(spec, &run_id, &dir, settings.seed);
    let mut record = RunRecord {
        run_id: run_id.clone(),
        scenario: spec.name.clone(),
        source: settings.source.to_owned(),
        lab: site.name(),
        started_lab: settings.started_lab,
        seed: settings.seed,
        system_under_test: settings.system_under_test.clone(),
        plan: planned.clone(),
        injected: vec![],
        aborted: None,
        steady_state: None,
        heal_failures: vec![],
        exit_code: 2,
    };
    let load = RunLoad::start(site, settings.slice_of.as_ref(), config)?;
    let clock = load.clock();
    let now_ns = || clock.now_ns();
    let mut injected = Injected::new(site.target(), settings.max_fault_duration, &now_ns);
    let watch = Watch::run(
        settings,
        site,
        &planned,
        &load,
        &mut injected,
        &clock,
        on_status,
        &recovery_rule(load.live_files(&dir), spec),
        &mut record,
    );
    // The final heal runs whatever happened above.
    final_heal(injected, &mut record, &load.observations());
    load.stop();
    let second_interrupt = settings.interrupts.load(Ordering::SeqCst) >= 2;
    let read_back = watch.is_ok() && record.steady_state.is_none() && !second_interrupt;
    on_status(&status(Phase::ReadBack, spec, &load, vec![]));
    let start_ns = load.start_ns();
    let settle = settle_until_ns(&record, &clock, spec);
    let (finished, completed) = load.finish(read_back, settle, settings.interrupts, &dir, &run_id);
    // After the read-back, so that replacements had the recovery watch and the read-back's
    // settle to become Ready.
    for fault in &mut record.injected {
        fault.time_to_ready_ms = site
            .time_to_ready(fault)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    }
    if let Some(reason) = interrupted(settings.interrupts, read_back, completed) {
        record.aborted = Some(reason);
    }
    watch?;
    finished?;

    let elapsed = Duration::from_nanos(clock.now_ns().saturating_sub(start_ns));
    on_status(&status_without_load(Phase::Check, elapsed, spec));
    let mut report = checkers::check_files(
        &dir.join("history.jsonl"),
        Some(&dir.join("observations.jsonl")),
        &check_config(spec),
    )?;
    report.experiment = Some(experiment_info(spec, &record));
    on_status(&status_without_load(Phase::Report, elapsed, spec));
    write_reports(&report, &dir)?;
    site.collect_logs(&dir.join("logs"));
    // A signal while judging or writing the reports still marks them aborted.
    if mark_late_interrupt(settings.interrupts, &mut record) {
        report.experiment = Some(experiment_info(spec, &record));
        write_reports(&report, &dir)?;
    }
    record.exit_code = if record.aborted.is_some() || record.steady_state.is_some() {
        2
    } else {
        report.exit_code().clamp(0, 255) as u8
    };
    write_file(
        &dir.join("run.json"),
        serde_json::to_string_pretty(&record)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    Ok(RunOutcome {
        record,
        dir,
        report: Some(report),
    })
}

/// Why the run was aborted, if a signal came before the read-back ended.
fn interrupted(interrupts: &AtomicUsize, read_back: bool, read_back_done: bool) -> Option<String> {
    let interrupts = interrupts.load(Ordering::SeqCst);
    (interrupts > 0).then(|| {
        format!(
            "interrupted (signal received {interrupts}x); every fault was healed{}",
            if read_back_done {
                ""
            } else if read_back {
                "; the final read-back was cut short"
            } else {
                "; the final read-back was skipped"
            }
        )
    })
}

/// Marks a run aborted by a signal that came after the faults were healed (while judging or
/// writing the reports): every signal after the start gives `aborted` and exit 2. Returns
/// whether it changed the record.
fn mark_late_interrupt(interrupts: &AtomicUsize, record: &mut RunRecord) -> bool {
    let interrupts = interrupts.load(Ordering::SeqCst);
    if interrupts == 0 || record.aborted.is_some() {
        return false;
    }
    record.aborted = Some(format!(
        "interrupted (signal received {interrupts}x) while judging; every fault was healed and \
         the verdicts are complete, but the run did not finish on its own"
    ));
    true
}

/// The convergence deadline of the final read-back: the last heal plus the spec's `settle`,
/// as the checkers count it.
fn settle_until_ns(record: &RunRecord, clock: &workload::RunClock, spec: &ExperimentSpec) -> u64 {
    let last_heal_ns = record
        .injected
        .iter()
        .filter_map(|f| f.end_ns)
        .max()
        .unwrap_or_else(|| clock.now_ns());
    last_heal_ns + spec.settle.as_nanos() as u64
}

/// The recovery checker's own rule, on the run's history so far: the recovery watch ends when
/// it holds for every fault.
fn recovery_rule(
    (history, observations): (PathBuf, PathBuf),
    spec: &ExperimentSpec,
) -> impl Fn(&[InjectedFault]) -> bool {
    let judge = check_config(spec);
    move |faults: &[InjectedFault]| {
        let windows: Vec<FaultWindow> = faults.iter().map(fault_window).collect();
        checkers::recovered_so_far(&history, &observations, &windows, &judge).unwrap_or(false)
    }
}

/// One injected fault's window, as the checkers read it.
fn fault_window(fault: &InjectedFault) -> FaultWindow {
    FaultWindow {
        fault_id: fault.fault_ids.first().cloned().unwrap_or_default(),
        kind: fault.kind.clone(),
        start_ns: fault.start_ns,
        end_ns: fault.end_ns,
        injecting_ns: Some(fault.injecting_ns),
        reverting_ns: fault.reverting_ns,
        sides: fault.sides.clone(),
        affected: fault.affected.clone(),
        survivable: fault.survivable,
    }
}

/// Heals every fault still active and records what was injected, in the run's record and as
/// fault windows for the checkers.
fn final_heal(
    mut injected: Injected<'_>,
    record: &mut RunRecord,
    sink: &workload::ObservationSink,
) {
    record.heal_failures = injected.heal_all();
    record.injected = injected.faults().to_vec();
    record_fault_windows(injected.faults(), sink);
}

/// Records each injected fault's window as an observation, for the checkers.
fn record_fault_windows(faults: &[InjectedFault], sink: &workload::ObservationSink) {
    for fault in faults {
        let w = fault_window(fault);
        sink.record(Observation::Fault {
            fault_id: w.fault_id,
            kind: w.kind,
            start_ns: w.start_ns,
            end_ns: w.end_ns,
            injecting_ns: w.injecting_ns,
            reverting_ns: w.reverting_ns,
            sides: w.sides,
            affected: w.affected,
            survivable: w.survivable,
            chosen: fault.chosen.clone(),
        });
    }
}

/// The experiment section of the report.
fn experiment_info(spec: &ExperimentSpec, record: &RunRecord) -> ExperimentInfo {
    ExperimentInfo {
        scenario: spec.name.clone(),
        plan_id: spec.plan_id.clone(),
        lab: record.lab.clone(),
        seed: record.seed,
        aborted: record.aborted.clone(),
        system_under_test: record.system_under_test.clone(),
        faults: record.injected.iter().map(describe_injected).collect(),
    }
}

/// One fault for the report: what it did, to what, and how long deleted pods took to come back.
fn describe_injected(fault: &InjectedFault) -> String {
    let mut text = fault.description.clone();
    if !fault.affected.is_empty() {
        text = format!("{text}: {}", fault.affected.join(", "));
    }
    if let Some(ms) = fault.time_to_ready_ms {
        text = format!(
            "{text}; replacements Ready after {}",
            humantime::format_duration(Duration::from_millis(ms))
        );
    }
    text
}

fn workload_config(spec: &ExperimentSpec, run_id: &str, dir: &Path, seed: u64) -> WorkloadConfig {
    WorkloadConfig {
        run_id: Some(run_id.to_owned()),
        tenants: spec.workload.tenants,
        rate: spec.workload.rate,
        duration: spec.duration,
        seed,
        adapter: if spec.workload.adapter == "http" {
            AdapterKind::Http
        } else {
            AdapterKind::Nats
        },
        stream_replicas: spec.workload.stream_replicas as usize,
        clients: spec.workload.clients.clone(),
        http_services: spec.workload.services.clone(),
        chat: spec.workload.chat,
        replica_read_back: spec.workload.replica_read_back,
        history: dir.join("history.jsonl"),
        observations: dir.join("observations.jsonl"),
        // The engine records its own fault windows, with exact heal times and the spec's
        // survivability; the workload's ledger watcher would record each one a second time.
        record_faults: false,
        ..WorkloadConfig::default()
    }
}

/// Writes the four report formats into a run directory: `report.json`, `report.html`,
/// `report.xml` (JUnit) and `summary.txt`.
pub fn write_reports(report: &CheckReport, dir: &Path) -> Result<(), EngineError> {
    for (format, name) in [
        (ReportFormat::Json, "report.json"),
        (ReportFormat::Html, "report.html"),
        (ReportFormat::Junit, "report.xml"),
        (ReportFormat::Text, "summary.txt"),
    ] {
        report::write_file(report, format, &dir.join(name))?;
    }
    Ok(())
}

/// `run.log`: the live status once a second and at every phase change, for the record.
#[derive(Default)]
struct RunLog {
    file: Option<fs::File>,
    last: Option<(Phase, u64)>,
}

impl RunLog {
    fn open(&mut self, path: &Path) {
        // The log is a convenience: a run does not fail because it cannot be written.
        self.file = fs::File::create(path).ok();
    }

    fn line(&mut self, status: &LiveStatus) {
        use std::io::Write as _;
        let key = (status.phase, status.elapsed.as_secs());
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if self.last == Some(key) {
            return;
        }
        self.last = Some(key);
        let p = &status.progress;
        let _ = writeln!(
            file,
            "t={:>4}s {:<14} {:>6.0} ops/s  fail {} (+{})  info {} (+{})  p99 {:.0} ms  faults: {}",
            status.elapsed.as_secs(),
            format!("{:?}", status.phase).to_lowercase(),
            p.ops_per_s,
            p.fail,
            p.window_fail,
            p.info,
            p.window_info,
            p.p99_ms,
            if status.active_faults.is_empty() {
                "none".to_owned()
            } else {
                status.active_faults.join("; ")
            }
        );
    }
}

/// Copies the lab agent's log and every service's log into the run directory; best effort.
pub(crate) fn copy_lab_logs(ctx: &LabContext, to: &Path) {
    if fs::create_dir_all(to).is_err() {
        return;
    }
    let _ = fs::copy(ctx.paths.agent_log(), to.join("agent.log"));
    if let Ok(entries) = fs::read_dir(ctx.paths.logs_dir()) {
        for entry in entries.flatten() {
            let _ = fs::copy(entry.path(), to.join(entry.file_name()));
        }
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    fs::write(path, bytes).map_err(|source| EngineError::Results {
        path: path.to_path_buf(),
        source,
    })
}

fn status(phase: Phase, spec: &ExperimentSpec, load: &RunLoad, active: Vec<String>) -> LiveStatus {
    let elapsed = load.elapsed();
    LiveStatus {
        phase,
        elapsed,
        left: spec.duration.saturating_sub(elapsed),
        progress: load.progress(),
        active_faults: active,
        next_fault_in: None,
    }
}

fn status_without_load(phase: Phase, elapsed: Duration, spec: &ExperimentSpec) -> LiveStatus {
    LiveStatus {
        phase,
        elapsed,
        left: spec.duration.saturating_sub(elapsed),
        progress: Progress::default(),
        active_faults: vec![],
        next_fault_in: None,
    }
}

/// The baseline, inject and recovery-watch phases.
struct Watch;

impl Watch {
    #[allow(clippy::too_many_arguments)]
    fn run(
        settings: &RunSettings<'_>,
        site: &dyn RunSite,
        planned: &[PlannedFault],
        load: &RunLoad,
        injected: &mut Injected<'_>,
        clock: &workload::RunClock,
        on_status: &mut dyn FnMut(&LiveStatus),
        recovered: &dyn Fn(&[InjectedFault]) -> bool,
        record: &mut RunRecord,
    ) -> Result<(), EngineError> {
        let spec = settings.spec;
        let start = Instant::now();
        let baseline_end = spec.baseline;
        let mut next = 0;
        let mut abort_since: Vec<Option<Instant>> = vec![None; spec.abort.len()];
        let mut last_second = 0_u64;
        let mut last_heal: Option<Duration> = None;
        let mut baseline_checked = false;
        loop {
            std::thread::sleep(TICK);
            let elapsed = start.elapsed();
            let now_ns = clock.now_ns();
            let interrupts = settings.interrupts.load(Ordering::SeqCst);
            if interrupts > 0 {
                record.aborted = Some(format!(
                    "interrupted (signal received {interrupts}x); every fault was healed"
                ));
                return Ok(());
            }
            if let Some(since) = site.halted() {
                // The halt reverted (or is reverting) our faults: their windows end now, not
                // at their planned ends.
                record.heal_failures.extend(injected.heal_all());
                record.aborted = Some(format!(
                    "halted (`chaosctl halt` at {since}); every fault was reverted by the halt, \
                     the fault windows end then"
                ));
                return Ok(());
            }
            let progress = load.progress();
            let phase = if elapsed < baseline_end {
                Phase::Baseline
            } else if next < planned.len() || injected.any_active() {
                Phase::Inject
            } else {
                Phase::RecoveryWatch
            };

            if !baseline_checked && elapsed >= baseline_end {
                baseline_checked = true;
                if let Err(reason) = steady_state_holds(spec, site, &progress) {
                    record.steady_state = Some(reason.clone());
                    record.aborted = Some(format!("steady state did not hold during the baseline: {reason}; nothing was injected"));
                    return Ok(());
                }
            }
            if baseline_checked {
                while next < planned.len() && planned[next].at <= elapsed {
                    injected.inject(next, &planned[next])?;
                    next += 1;
                }
                // Held for its duration from when its injection began, as the ledger's deadline
                // counts it, so the engine's heal comes before the agent's.
                let heal_failures = injected.heal_due(|fault| {
                    let duration = planned[fault.plan_index].duration;
                    now_ns >= fault.injecting_ns + duration.as_nanos() as u64
                });
                record.heal_failures.extend(heal_failures);
                if !injected.any_active() && next == planned.len() && last_heal.is_none() {
                    last_heal = Some(elapsed);
                }
            }

            // Once a second: abort conditions and the recovery watch.
            let second = elapsed.as_secs();
            if second != last_second {
                last_second = second;
                let window_ops = progress.ops_per_s.max(1.0);
                let error_rate = (progress.window_fail + progress.window_info) as f64 / window_ops;
                let in_fault = injected.any_active();
                for (i, condition) in spec.abort.iter().enumerate() {
                    if !in_fault && baseline_checked && error_rate > condition.error_rate_above {
                        let since = *abort_since[i].get_or_insert_with(Instant::now);
                        if since.elapsed() >= condition.sustained {
                            record.aborted = Some(format!(
                                "abort condition {i} fired: error rate {:.0}% above {:.0}% for {} outside fault windows; every fault was healed",
                                error_rate * 100.0,
                                condition.error_rate_above * 100.0,
                                humantime::format_duration(condition.sustained)
                            ));
                            return Ok(());
                        }
                    } else {
                        abort_since[i] = None;
                    }
                }
                if let Some(healed_at) = last_heal {
                    let watched = elapsed.saturating_sub(healed_at);
                    if watched >= spec.recovery_deadline || recovered(injected.faults()) {
                        return Ok(());
                    }
                }
            }
            if elapsed >= spec.duration {
                return Ok(());
            }
            let active = injected
                .faults()
                .iter()
                .filter(|f| f.end_ns.is_none())
                .map(|f| f.description.clone())
                .collect();
            let mut live = status(phase, spec, load, active);
            live.next_fault_in = planned.get(next).map(|p| p.at.saturating_sub(elapsed));
            on_status(&live);
        }
    }
}

/// The steady-state hypothesis, judged at the end of the baseline: the load's own success rate
/// and p99, then the spec's probes through the site.
fn steady_state_holds(
    spec: &ExperimentSpec,
    site: &dyn RunSite,
    progress: &Progress,
) -> Result<(), String> {
    let steady = &spec.steady_state;
    if progress.ops == 0 {
        return Err("no operation completed during the baseline".to_owned());
    }
    let success = 1.0 - (progress.fail + progress.info) as f64 / progress.ops as f64;
    if success < steady.min_success_rate {
        return Err(format!(
            "success rate {:.2}% is below {:.2}%",
            success * 100.0,
            steady.min_success_rate * 100.0
        ));
    }
    let max_p99_ms = steady.max_p99.as_millis() as f64;
    if progress.p99_ms > max_p99_ms {
        return Err(format!(
            "p99 latency {:.0} ms is above {max_p99_ms:.0} ms",
            progress.p99_ms
        ));
    }
    for probe in &steady.probes {
        site.probe(probe)?;
    }
    Ok(())
}
