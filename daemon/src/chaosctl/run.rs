//! `chaosctl run` and `chaosctl report`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use faultline_experiments::checkers::{CheckConfig, ExperimentInfo};
use faultline_experiments::engine::run::{
    make_run_id, run_experiment, write_reports, LiveStatus, Phase, RunOptions,
};
use faultline_experiments::lab::control::{HostPaths, LabContext};
use faultline_experiments::lab::run_lock::{RunHolder, RunLock};
use faultline_experiments::lab::servers::{self, ResolvedTopology};
use faultline_experiments::lab::LabError;
use faultline_experiments::lab::DEFAULT_LAB_NAME;
use faultline_experiments::report;
use faultline_experiments::schedule::{Owner, RunIndex, RunResult};
use faultline_experiments::spec::{ExperimentSpec, FaultKind, Selector};
use faultline_experiments::workload::stats::Progress;
use signal_hook::consts::{SIGHUP, SIGINT, SIGPIPE, SIGTERM};
use signal_hook::iterator::Signals;

#[derive(Args)]
pub(crate) struct RunArgs {
    /// A built-in scenario (`chaosctl list`) or a spec file.
    scenario: String,
    /// How long each fault holds; the run grows to fit the baseline, the faults and the
    /// recovery deadline.
    #[arg(long, value_parser = super::duration_arg, allow_hyphen_values = true)]
    duration: Option<Duration>,
    /// Number of tenants.
    #[arg(long)]
    tenants: Option<u32>,
    /// Total operations per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Lab to run on; brought up if it is not up (with --topology, else the spec's `topology:`,
    /// else the built-in one) [default: the only lab up, else `default`].
    #[arg(long, env = "FAULTLINE_LAB", default_value = DEFAULT_LAB_NAME, hide_default_value = true)]
    pub(crate) lab: String,
    /// Topology YAML for the lab, instead of the spec's `topology:`. A lab that is up with
    /// another topology (or other server binaries) is refused, naming both.
    #[arg(long)]
    topology: Option<PathBuf>,
    /// The nats-server binary the lab's NATS services run (as `chaosctl lab up
    /// --nats-server`). A lab that is up with another one is refused.
    #[arg(long, env = "FAULTLINE_NATS_SERVER")]
    nats_server: Option<PathBuf>,
    /// Seed for random selectors and the load schedule; a run is reproducible from it.
    #[arg(long)]
    seed: Option<u64>,
    /// Where run directories go (default: <state root>/runs).
    #[arg(long)]
    output_dir: Option<PathBuf>,
}

impl RunArgs {
    /// What a cluster run uses: the scenario and the overrides.
    pub(crate) fn overrides(&self) -> (&str, Option<Duration>, Option<u32>, Option<f64>) {
        (&self.scenario, self.duration, self.tenants, self.rate)
    }
}

#[derive(Args)]
pub(crate) struct ReportArgs {
    /// The run id (the directory name under the results directory).
    run_id: String,
    /// Where run directories are (default: <state root>/runs).
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// On a cluster: which report to fetch [default: html].
    #[arg(long, value_enum)]
    pub(crate) format: Option<super::cluster_run::ReportKind>,
    /// On a cluster: where to save it [default: RUN_ID.report.EXT].
    #[arg(short = 'o', long)]
    pub(crate) output: Option<PathBuf>,
}

impl ReportArgs {
    /// The run id.
    pub(crate) fn run_id(&self) -> &str {
        &self.run_id
    }
}

fn results_root(host: &HostPaths, output_dir: Option<&PathBuf>) -> PathBuf {
    output_dir
        .cloned()
        .unwrap_or_else(|| host.state_root.join("runs"))
}

/// Writes a line to stdout, or nowhere: a closed stdout (`chaosctl run … | head`) must never
/// end a run. The SIGPIPE that comes with it is counted as an interrupt instead.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// As [`say!`], on stderr (gone with the terminal after a SIGHUP).
macro_rules! warn {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// The phase the run is in, as the live display last saw it, so that a second signal's
/// message says what it really does.
#[derive(Default)]
struct SharedPhase(AtomicU8);

impl SharedPhase {
    fn set(&self, phase: Phase) {
        self.0.store(phase as u8 + 1, Ordering::SeqCst);
    }

    /// Whether the read-back is over (the run is judging or writing reports).
    fn past_read_back(&self) -> bool {
        self.0.load(Ordering::SeqCst) > Phase::ReadBack as u8 + 1
    }
}

/// Counts SIGINT, SIGTERM, SIGHUP (the terminal went away) and SIGPIPE (stdout was closed)
/// instead of dying, so the engine heals first and still writes a partial report.
fn count_interrupts(phase: Arc<SharedPhase>) -> anyhow::Result<Arc<AtomicUsize>> {
    let count = Arc::new(AtomicUsize::new(0));
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP, SIGPIPE])
        .context("cannot handle SIGINT, SIGTERM, SIGHUP and SIGPIPE")?;
    let counter = Arc::clone(&count);
    std::thread::spawn(move || {
        for signal in signals.forever() {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let name = match signal {
                SIGINT => "SIGINT",
                SIGTERM => "SIGTERM",
                SIGHUP => "SIGHUP",
                _ => "SIGPIPE (stdout closed)",
            };
            if phase.past_read_back() {
                warn!("\nchaosctl: {name}: the faults are healed and the read-back is done; finishing the report, marked aborted");
            } else if n == 1 {
                warn!("\nchaosctl: {name}: healing every fault, then writing a partial report (again to skip the read-back)");
            } else {
                warn!("\nchaosctl: {name} again: skipping the read-back (or cutting it short); still healing before exit");
            }
        }
    });
    Ok(count)
}

/// What the run will do, phase by phase, printed before it starts: `--duration` is how long each
/// fault holds, so the run's own length is said here rather than guessed from the flag.
pub(crate) fn run_outline(spec: &ExperimentSpec, lab: &str, seed: u64) -> String {
    let text = |d: Duration| humantime::format_duration(d).to_string();
    let mut lines = vec![format!(
        "running {} on lab {lab} (seed {seed}), at most {} in all:",
        spec.name,
        text(spec.duration)
    )];
    lines.push(format!(
        "  baseline        {:<8} healthy load, then the steady-state check",
        text(spec.baseline)
    ));
    for fault in &spec.faults {
        let times = fault.repeat.as_ref().map_or(1, |r| r.times.max(1));
        let held = if fault.kind == FaultKind::Kill {
            "instant".to_owned()
        } else {
            format!("held {}", text(fault.duration))
        };
        let repeat = fault.repeat.as_ref().map_or(String::new(), |r| {
            format!(", {times} times, every {}", text(r.every))
        });
        lines.push(format!(
            "  fault           {} {} at +{} after the baseline, {held}{repeat}",
            fault.kind.as_str(),
            selector_text(&fault.selector),
            text(fault.start)
        ));
    }
    lines.push(format!(
        "  recovery watch  up to {} after the last heal (ends early once every tenant recovers)",
        text(spec.recovery_deadline)
    ));
    lines.push(format!(
        "  read-back       waits up to {} after the last heal for the servers to agree, then reads every value back",
        text(spec.settle)
    ));
    lines.push("  judge           checkers, then the reports".to_owned());
    let mut outline = lines.join("\n");
    outline.push('\n');
    outline
}

/// A phase as people say it.
fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Setup => "setup",
        Phase::Baseline => "baseline",
        Phase::Inject => "inject",
        Phase::RecoveryWatch => "recovery watch",
        Phase::ReadBack => "read-back",
        Phase::Check => "judging",
        Phase::Report => "reports",
    }
}

/// One line of the live display. The counts are totals so far, `/s` the last second; once the
/// load has ended (judging, reports) the last figures stay rather than dropping to zero.
/// `unknown` counts operations whose outcome the client could not learn (a timeout: the write
/// may or may not have happened), which the checkers treat as either.
fn live_line(status: &LiveStatus, last_figures: &mut Progress) -> String {
    if status.progress.ops > 0 || last_figures.ops == 0 {
        *last_figures = status.progress.clone();
    }
    let load_ended = matches!(status.phase, Phase::Check | Phase::Report);
    let p = if load_ended {
        &*last_figures
    } else {
        &status.progress
    };
    let rate = |n: u64| {
        if load_ended {
            String::new()
        } else {
            format!(" ({n}/s)")
        }
    };
    format!(
        "{:<14} {:>4}s left  {:>5.0} ops/s  failed {}{}  unknown outcome {}{}  p99 {:.0} ms  faults: {}",
        phase_name(status.phase),
        status.left.as_secs(),
        if load_ended { 0.0 } else { p.ops_per_s },
        p.fail,
        rate(p.window_fail),
        p.info,
        rate(p.window_info),
        p.p99_ms,
        match (status.active_faults.is_empty(), status.next_fault_in) {
            (true, Some(next)) => format!("none yet, next in {} s", next.as_secs()),
            (true, None) => "none".to_owned(),
            (false, _) => status.active_faults.join("; "),
        }
    )
}

/// A fault's selector in a few words, e.g. `zone a` or `service nats, replica 1`.
fn selector_text(selector: &Selector) -> String {
    let text = |value: &Option<String>| value.clone();
    let place = |value: &Option<faultline_experiments::spec::Place>| {
        value.as_ref().map(ToString::to_string)
    };
    [
        ("zone", place(&selector.zone)),
        ("node", place(&selector.node)),
        ("service", text(&selector.service)),
        ("replica", text(&selector.replica)),
        ("stream", text(&selector.stream)),
        ("shape", text(&selector.shape)),
    ]
    .iter()
    .filter_map(|(field, value)| value.as_ref().map(|v| format!("{field} {v}")))
    .collect::<Vec<_>>()
    .join(", ")
}

/// Takes the lab's run lock for `what`, saying so when it takes over from a holder that died.
pub(crate) fn lock_lab(
    host: &HostPaths,
    lab: &str,
    what: &str,
    run_id: Option<String>,
) -> anyhow::Result<RunLock> {
    let acquired = RunLock::acquire(
        &host.state_root,
        lab,
        &RunHolder::this_process(what, run_id),
    )?;
    if let Some(dead) = acquired.took_over {
        warn!(
            "chaosctl: took over lab {lab}'s run lock from {}, which ended without releasing it ({})",
            dead.describe(),
            if dead.alive(Path::new("/proc")) {
                "its process no longer holds it"
            } else {
                "its process is gone"
            }
        );
    }
    Ok(acquired.lock)
}

pub(crate) fn run(
    host: &HostPaths,
    args: &RunArgs,
    max_fault_duration: Duration,
) -> anyhow::Result<ExitCode> {
    // Signals count from here on: whatever comes later heals and marks the run aborted.
    let phase = Arc::new(SharedPhase::default());
    let interrupts = count_interrupts(Arc::clone(&phase))?;
    one_experiment_at_a_time(host)?;
    if let Err(error) = faultline_experiments::lab::control::refuse_if_halted(&host.state_root) {
        anyhow::bail!("{error}; nothing was started (no lab, no load)");
    }
    let (mut spec, source) = super::scenarios::load(&args.scenario)?;
    spec.apply_overrides(args.duration, args.tenants, args.rate);
    spec.validate(&source)?;
    let seed = args.seed.unwrap_or(spec.workload.seed);
    let lab_up = LabContext::open(host, &args.lab).is_ok();
    let lab_topology = lab_topology(host, args, &spec, &source, lab_up)?;
    let run_id = make_run_id(&spec);
    let _lock = lock_lab(
        host,
        &args.lab,
        &format!("run {}", spec.name),
        Some(run_id.clone()),
    )?;
    let options = RunOptions {
        spec,
        source,
        host: host.clone(),
        lab: args.lab.clone(),
        agent_binary: crate::agent_binary(),
        results_root: results_root(host, args.output_dir.as_ref()),
        seed,
        max_fault_duration,
        interrupts: Arc::clone(&interrupts),
        run_id: Some(run_id),
        lab_topology,
        // By hand the run starts its own load.
        slice_of: None,
    };
    if let (false, Some(resolved)) = (lab_up, &options.lab_topology) {
        say!(
            "lab {} is not up: bringing it up with topology {}",
            args.lab,
            resolved.source
        );
    }
    let _ = write!(
        std::io::stdout(),
        "{}",
        run_outline(&options.spec, &options.lab, seed)
    );
    let tty = std::io::stdout().is_terminal();
    let mut last_line = Instant::now()
        .checked_sub(Duration::from_secs(10))
        .unwrap_or_else(Instant::now);
    let mut last_phase = None;
    let mut last_figures = Progress::default();
    let mut show = |status: &LiveStatus| {
        phase.set(status.phase);
        let phase_changed = last_phase != Some(status.phase);
        if !(tty || phase_changed || last_line.elapsed() >= Duration::from_secs(5)) {
            return;
        }
        last_phase = Some(status.phase);
        last_line = Instant::now();
        let line = live_line(status, &mut last_figures);
        if tty {
            let mut out = std::io::stdout();
            let _ = write!(out, "\r\x1b[2K{line}").and_then(|()| out.flush());
        } else {
            say!("{line}");
        }
    };
    let indexed = index_manual_run(host, &options.spec.name);
    let outcome = run_experiment(&options, &mut show);
    if tty {
        say!();
    }
    if let Some((index, id)) = &indexed {
        let result = match &outcome {
            Ok(outcome) => RunResult::from_outcome(outcome),
            Err(error) => RunResult::error(error.to_string()),
        };
        if let Err(error) = index.finish(*id, chrono::Utc::now(), &result) {
            warn!("chaosctl: warning: cannot record the run in the index: {error}");
        }
    }
    Ok(print_outcome(&outcome?, &options.lab, tty, &interrupts))
}

/// Prints how the run ended and where its reports are; returns its exit code.
fn print_outcome(
    outcome: &faultline_experiments::engine::run::RunOutcome,
    lab: &str,
    tty: bool,
    interrupts: &AtomicUsize,
) -> ExitCode {
    super::lab::warn_about_servers(&[], &outcome.record.system_under_test);
    if outcome.record.started_lab {
        say!(
            "brought lab {} up for this run (it stays up; `chaosctl lab down` removes it)",
            lab
        );
    }
    if let Some(report) = &outcome.report {
        let _ = write!(
            std::io::stdout(),
            "{}",
            report::terminal_summary(report, tty)
        );
    }
    if let Some(reason) = &outcome.record.aborted {
        say!("ABORTED: {reason}");
    }
    for failure in &outcome.record.heal_failures {
        say!("WARNING: revert failed, the ledger deadline still applies: {failure}");
    }
    say!("results: {}", outcome.dir.display());
    say!("report:  {}", outcome.html().display());
    // A signal after the engine wrote its record still makes the run aborted (exit 2); the
    // record says when signals came earlier.
    let late = interrupts.load(Ordering::SeqCst) > 0 && outcome.record.aborted.is_none();
    if late {
        say!("ABORTED: interrupted after the run was judged; its reports stand as written");
    }
    ExitCode::from(if late { 2 } else { outcome.record.exit_code })
}

/// The topology the run asks for (`--topology`, else the spec's `topology:`), with its
/// programs resolved. Resolved whenever the run names a topology or a server, so that a lab up
/// with anything else is refused; and when the lab is not up, so the choice of binaries is
/// printed before it comes up.
fn lab_topology(
    host: &HostPaths,
    args: &RunArgs,
    spec: &ExperimentSpec,
    source: &str,
    lab_up: bool,
) -> anyhow::Result<Option<ResolvedTopology>> {
    let file = args.topology.clone().or_else(|| spec.topology_path(source));
    if file.is_none() && lab_up {
        // Only a server named: the lab that is up may run the user's own topology, so only
        // its NATS binary is compared.
        if let Some(asked) = &args.nats_server {
            let ctx = LabContext::open(host, &args.lab)?;
            if let Some(difference) =
                servers::nats_server_difference(&ctx.topology, &ctx.servers()?, asked)
            {
                return Err(LabError::NameInUse {
                    name: args.lab.clone(),
                    existing_source: ctx.source()?,
                    requested_source: format!("--nats-server {}", asked.display()),
                    difference,
                }
                .into());
            }
        }
        return Ok(None);
    }
    let resolved = super::lab::resolve_topology(file.as_deref(), args.nats_server.clone())?;
    super::lab::warn_about_servers(&resolved.warnings, &[]);
    Ok(Some(resolved))
}

/// Refuses a manual run while `faultlined serve` may start one on the same state root, unless
/// it is halted and idle: two experiments at once would judge each other's faults.
fn one_experiment_at_a_time(host: &HostPaths) -> anyhow::Result<()> {
    let Some(info) = crate::serve::client::find(&host.state_root) else {
        return Ok(());
    };
    let status: Option<serde_json::Value> =
        crate::serve::client::call(&info, "GET", "/api/v1/schedules")
            .ok()
            .and_then(|a| serde_json::from_str(&a.body).ok());
    let idle_and_halted = status
        .as_ref()
        .is_some_and(|s| !s["halted"].is_null() && s["running"].is_null());
    anyhow::ensure!(
        idle_and_halted,
        "faultlined serve (pid {}) runs suites on {}; one experiment at a time: queue a suite with `chaosctl schedule trigger SUITE`, or `chaosctl halt` it first",
        info.pid,
        host.state_root.display()
    );
    Ok(())
}

/// Records a manual run in the run index; a broken index warns but never stops the run.
fn index_manual_run(host: &HostPaths, scenario: &str) -> Option<(RunIndex, i64)> {
    let started = RunIndex::open(&RunIndex::default_path(&host.state_root)).and_then(|index| {
        let id = index.begin_manual(scenario, chrono::Utc::now(), Owner::this_process())?;
        Ok((index, id))
    });
    match started {
        Ok(pair) => Some(pair),
        Err(error) => {
            warn!("chaosctl: warning: this run will not be in the run index: {error}");
            None
        }
    }
}

pub(crate) fn report(host: &HostPaths, args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let dir = results_root(host, args.output_dir.as_ref()).join(&args.run_id);
    anyhow::ensure!(
        dir.is_dir(),
        "no run {} in {}; `ls` that directory for run ids",
        args.run_id,
        dir.parent()
            .map_or_else(String::new, |p| p.display().to_string())
    );
    let history = dir.join("history.jsonl");
    let observations = dir.join("observations.jsonl");
    let (config, experiment) = read_previous(&dir.join("report.json"))?;
    let mut report = faultline_experiments::checkers::check_files(
        &history,
        observations.exists().then_some(observations.as_path()),
        &config,
    )?;
    report.experiment = experiment;
    write_reports(&report, &dir)?;
    print!(
        "{}",
        report::terminal_summary(&report, std::io::stdout().is_terminal())
    );
    println!("report: {}", dir.join("report.html").display());
    let aborted = report
        .experiment
        .as_ref()
        .is_some_and(|e| e.aborted.is_some());
    Ok(ExitCode::from(if aborted {
        2
    } else {
        report.exit_code().clamp(0, 255) as u8
    }))
}

/// The checker configuration and the experiment section of the run's JSON report, so a
/// re-render judges alike and still says what the run was (and whether it was aborted).
fn read_previous(report: &Path) -> anyhow::Result<(CheckConfig, Option<ExperimentInfo>)> {
    let Ok(text) = std::fs::read_to_string(report) else {
        return Ok((CheckConfig::default(), None));
    };
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", report.display()))?;
    Ok((
        serde_json::from_value(json["config"].clone()).unwrap_or_default(),
        serde_json::from_value(json["experiment"].clone()).ok(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_outline_says_the_runs_real_length_and_each_phase() {
        let (mut spec, _) = crate::chaosctl::scenarios::load("az-failure").expect("catalog");
        spec.apply_overrides(Some(Duration::from_secs(600)), None, None);
        let outline = run_outline(&spec, "demo", 7);
        let lines: Vec<&str> = outline.lines().collect();
        // --duration is how long the zone stays cut off; the run is longer, and says so.
        assert_eq!(
            lines[0],
            format!(
                "running az-failure on lab demo (seed 7), at most {} in all:",
                humantime::format_duration(spec.duration)
            )
        );
        assert!(spec.duration > Duration::from_secs(600));
        assert!(lines[1].starts_with("  baseline        15s"), "{outline}");
        assert_eq!(
            lines[2],
            "  fault           partition zone random at +5s after the baseline, held 10m"
        );
        assert!(
            lines[3].contains("up to 1m after the last heal"),
            "{outline}"
        );
        assert!(
            lines[4].contains("up to 10s after the last heal"),
            "{outline}"
        );
        assert_eq!(lines.len(), 6);
    }

    #[test]
    fn the_live_line_reads_plainly_and_keeps_its_figures_while_judging() {
        let mut last = Progress::default();
        let mut status = LiveStatus {
            phase: Phase::RecoveryWatch,
            elapsed: Duration::from_secs(40),
            left: Duration::from_secs(20),
            progress: Progress {
                ops: 5000,
                ops_per_s: 198.0,
                fail: 494,
                window_fail: 54,
                info: 7,
                window_info: 1,
                p99_ms: 12.0,
                ..Progress::default()
            },
            active_faults: vec![],
            next_fault_in: None,
        };
        let line = live_line(&status, &mut last);
        assert!(line.starts_with("recovery watch "), "{line}");
        assert!(line.ends_with("faults: none"), "{line}");
        assert!(line.contains("failed 494 (54/s)"), "{line}");
        assert!(line.contains("unknown outcome 7 (1/s)"), "{line}");
        assert!(!line.contains("info"), "{line}");
        // Judging: the load has ended and reports no figures; the last ones stay.
        status.phase = Phase::Check;
        status.progress = Progress::default();
        let line = live_line(&status, &mut last);
        assert!(line.starts_with("judging "), "{line}");
        assert!(
            line.contains("failed 494  unknown outcome 7  p99 12 ms"),
            "{line}"
        );
    }

    #[test]
    fn before_the_first_fault_the_live_line_counts_down_to_it() {
        let status = LiveStatus {
            phase: Phase::Inject,
            elapsed: Duration::from_secs(16),
            left: Duration::from_secs(74),
            progress: Progress::default(),
            active_faults: vec![],
            next_fault_in: Some(Duration::from_millis(4_200)),
        };
        let line = live_line(&status, &mut Progress::default());
        assert!(line.starts_with("inject "), "{line}");
        assert!(line.ends_with("faults: none yet, next in 4 s"), "{line}");
        // Once one is in effect, it is named.
        let status = LiveStatus {
            active_faults: vec!["partition zone a".to_owned()],
            ..status
        };
        let line = live_line(&status, &mut Progress::default());
        assert!(line.ends_with("faults: partition zone a"), "{line}");
    }

    #[test]
    fn instant_and_repeated_faults_are_said_as_such() {
        let (spec, _) = crate::chaosctl::scenarios::load("pod-failure").expect("catalog");
        let outline = run_outline(&spec, "lab1", 1);
        let fault_lines: Vec<&str> = outline
            .lines()
            .filter(|l| l.starts_with("  fault"))
            .collect();
        assert!(!fault_lines.is_empty(), "{outline}");
        for (line, fault) in fault_lines.iter().zip(&spec.faults) {
            if fault.kind == FaultKind::Kill {
                assert!(line.contains("instant"), "{line}");
            }
            if let Some(repeat) = &fault.repeat {
                assert!(line.contains(&format!("{} times", repeat.times)), "{line}");
            }
        }
    }
}
