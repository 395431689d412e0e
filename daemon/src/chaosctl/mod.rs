//! The `chaosctl` command line.

mod check;
pub mod cluster;
pub mod cluster_run;
mod contract;
mod faults;
mod lab;
mod load;
mod run;
mod runs;
mod scenarios;
mod schedule;

use faultline_experiments::stderr_line;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use faultline_experiments::lab::control::{HostPaths, LabContext};
use faultline_experiments::lab::state::{audit_log_file, halt_marker_file, known_labs};
use faultline_experiments::lab::{is_root, DEFAULT_LAB_NAME, DEFAULT_STATE_ROOT};
use faultline_injectors::audit::{read_audit_log, AuditEvent, AuditLog};

const EXAMPLES: &str = "\
Examples:
  chaosctl list                                    # the built-in scenarios (T6.1-T6.6)
  chaosctl run az-failure --duration 10m           # a whole scenario: a zone cut off for 10m,
                                                   # judged, with reports (it prints its phases)
  chaosctl lab up                                  # 3 zones x 2 nodes, 3-node NATS JetStream
  chaosctl inject partition --zone a --for 30s     # cut zone a off for 30 s
  chaosctl inject kill --service nats --replica 1  # SIGKILL one replica; the lab restarts it
  chaosctl faults                                  # what is active, and until when
  chaosctl halt                                    # revert everything now, block new faults
  chaosctl audit --since 1d                        # who injected, reverted, halted what, when
  chaosctl --context staging run az-failure --duration 10m  # the same on a cluster
  chaosctl --context staging report RUN_ID         # its HTML report, through the API server
  chaosctl --context staging halt                  # revert everything on a cluster
  chaosctl lab down                                # remove every namespace, process and file

Every command first reverts faults whose deadline has passed, and anything of ours that no
live fault owns, so a crashed chaosctl or agent never leaves a fault behind for long.";

/// Chaos engineering for multi-tenant platforms: inject real faults, judge recovery and data
/// safety with evidence.
#[derive(Parser)]
#[command(name = "chaosctl", version, after_help = EXAMPLES)]
pub struct Cli {
    /// Root of Faultline's state: labs, ledgers, logs.
    #[arg(long, global = true, env = "FAULTLINE_STATE_ROOT", default_value = DEFAULT_STATE_ROOT)]
    state_root: PathBuf,
    /// Longest fault anyone may ask for; longer requests are refused.
    #[arg(long, global = true, value_parser = duration_arg, allow_hyphen_values = true, default_value = "2h")]
    max_fault_duration: Duration,
    /// Act on a Kubernetes cluster through this kubeconfig context instead of the lab (`run`,
    /// `report`, `runs`, `faults`, `halt`, `resume`).
    #[arg(long, global = true)]
    context: Option<String>,
    /// The kubeconfig file for `--context` [default: KUBECONFIG, else ~/.kube/config]; given
    /// alone, its current context is used.
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// On a cluster: the namespace of Experiments [default: the context's namespace].
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,
    /// On a cluster: Faultline's own namespace, where the controller serves the reports.
    #[arg(
        long,
        global = true,
        env = "FAULTLINE_NAMESPACE",
        default_value = "faultline-system"
    )]
    faultline_namespace: String,
    #[command(subcommand)]
    command: Command,
    /// Whether the command line or FAULTLINE_LAB named a lab (else one is chosen).
    #[arg(skip)]
    lab_named: bool,
}

impl Cli {
    /// Parses the command line (exiting with clap's message on bad input), noting whether a
    /// lab was named.
    pub fn parse_args() -> Self {
        let matches = Self::command().get_matches();
        let mut cli = Self::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
        cli.lab_named = lab_named(&matches);
        cli
    }
}

/// A duration on the command line (`30s`, `5m`, `1h30m`), with errors in the user's words:
/// clap names the flag in front of them.
pub(crate) fn duration_arg(text: &str) -> Result<Duration, String> {
    const EXAMPLES: &str = "e.g. 30s, 5m or 1h30m";
    let trimmed = text.trim();
    if trimmed.starts_with('-') {
        return Err(format!(
            "a duration cannot be negative: `{text}`; {EXAMPLES}"
        ));
    }
    if trimmed.is_empty() {
        return Err(format!("give a duration, {EXAMPLES}"));
    }
    if trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "`{text}` has no unit: write {trimmed}s for seconds or {trimmed}m for minutes"
        ));
    }
    humantime::parse_duration(trimmed)
        .map_err(|_| format!("`{text}` is not a duration: use a number and a unit, {EXAMPLES}"))
}

/// Whether `--lab` (or its alias `--name`, or FAULTLINE_LAB) was given to the innermost command.
fn lab_named(matches: &ArgMatches) -> bool {
    let mut innermost = matches;
    while let Some((_, sub)) = innermost.subcommand() {
        innermost = sub;
    }
    ["lab", "name"].iter().any(|id| {
        innermost.ids().any(|known| known.as_str() == *id)
            && innermost
                .value_source(id)
                .is_some_and(|source| source != ValueSource::DefaultValue)
    })
}

/// The lab a command means when none was named: `default` if it is up or no lab is; else the
/// only lab that is up (said on stderr); with several up and `default` not among them, an error
/// that lists them.
fn choose_lab(host: &HostPaths, lab: &mut String) -> anyhow::Result<()> {
    let up: Vec<String> = known_labs(&host.state_root)
        .into_iter()
        .filter(|name| LabContext::open(host, name).is_ok())
        .collect();
    if up.is_empty() || up.contains(lab) {
        return Ok(());
    }
    if let [only] = up.as_slice() {
        stderr_line!("chaosctl: using lab {only}, the only lab up (choose with --lab NAME)");
        only.clone_into(lab);
        return Ok(());
    }
    anyhow::bail!(
        "no --lab given, lab `{lab}` is not up, and {} labs are: {}; choose one with --lab NAME \
         (or FAULTLINE_LAB)",
        up.len(),
        up.join(", ")
    )
}

/// The lab field of a command that acts on one lab and may have it chosen for it (`lab up`
/// always means the lab it names, `default` unless told).
fn lab_to_choose(command: &mut Command) -> Option<&mut String> {
    match command {
        Command::Lab(lab::LabCommand::Down { name } | lab::LabCommand::Status { name, .. }) => {
            Some(name)
        }
        Command::Load(args) => Some(&mut args.lab),
        Command::Run(args) => Some(&mut args.lab),
        Command::Inject(args) => Some(&mut args.lab),
        Command::Faults { lab, .. } | Command::Revert { lab, .. } => Some(lab),
        _ => None,
    }
}

#[derive(Subcommand)]
enum Command {
    /// Manage the embedded lab: network namespaces as nodes and zones, real services.
    #[command(subcommand)]
    Lab(lab::LabCommand),
    /// Re-run the checkers on a recorded history, or on a run directory with the SLOs of its
    /// spec (says on stderr which it used). Exit code: 0 valid, 1 invalid (an SLO or
    /// consistency failure), 2 unknown or error.
    Check(check::CheckArgs),
    /// Run an experiment end to end: bring the lab up if needed, run the tenant load, take a
    /// baseline, inject the faults, heal, watch recovery, read everything back, judge, report.
    /// Exit code: 0 pass, 1 SLO or consistency failure, 2 error, unknown or aborted. Ctrl-C,
    /// SIGTERM, SIGHUP and a closed stdout (SIGPIPE) heal every fault and still write a partial
    /// report, marked aborted (exit 2); a second one skips the read-back. One run or inject per
    /// lab at a time: refused, naming the holder, while another holds the lab; refused before
    /// anything starts while halted. The live display counts `failed` and `unknown outcome`
    /// operations so far, with the last second's rate; an unknown outcome is one the client
    /// could not learn (a timeout: the write may or may not have happened), and the checkers
    /// count it as either. With `--context`/`--kubeconfig`, creates an Experiment on the
    /// cluster and follows it; a spec without a `kubernetes:` section (a catalog scenario) gets
    /// the cluster's defaults (ConfigMap faultline-system/faultline-cluster-defaults).
    Run(run::RunArgs),
    /// Re-render the reports of an earlier run from its recorded history.
    Report(run::ReportArgs),
    /// List the built-in scenarios (the test plan's T6.1-T6.6).
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print a built-in scenario's spec as YAML, ready to copy and edit.
    Show {
        /// Scenario name, e.g. az-failure.
        name: String,
    },
    /// Check a spec file or a schedule file without touching anything (the pure validation
    /// only; a schedule's spec files are read and checked too).
    Validate {
        /// Spec file or schedule file (YAML), or the name of a built-in scenario.
        file: String,
    },
    /// Run the multi-tenant background load on its own and record its history: live progress,
    /// a k6-style summary, and a final read-back through every node.
    Load(load::LoadArgs),
    /// The HTTP tenant-records contract (docs/workload.md) that your own services implement
    /// for the `http` adapter.
    #[command(subcommand)]
    Contract(contract::ContractCommand),
    /// Inject one fault by hand (game days). Prints the fault id and when it will be reverted.
    /// Refused while a run holds the lab (one run or inject per lab at a time), or while
    /// halted.
    Inject(faults::InjectArgs),
    /// List the active faults.
    Faults {
        /// Lab name [default: the only lab up, else `default`].
        #[arg(long, env = "FAULTLINE_LAB", default_value = DEFAULT_LAB_NAME, hide_default_value = true)]
        lab: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Revert one active fault now.
    Revert {
        /// The fault id, as printed by `inject` or `faults`.
        id: String,
        /// Lab name [default: the only lab up, else `default`].
        #[arg(long, env = "FAULTLINE_LAB", default_value = DEFAULT_LAB_NAME, hide_default_value = true)]
        lab: String,
    },
    /// Revert every active fault in every lab now, and block new faults and runs until
    /// `resume`, in every lab under the state root, labs brought up later included. A running
    /// `faultlined serve` is halted first: its experiment heals and stops; a running `chaosctl
    /// run` sees the halt within 0.1 s, ends its fault windows and is marked aborted.
    Halt,
    /// Allow new faults and runs again after `halt`.
    Resume,
    /// The audit log (`<state root>/audit.jsonl`): every injection, revert, expiry, halt and
    /// resume in the labs, with time, uid, command line, fault, target, deadline and outcome.
    Audit {
        /// Only entries from this long ago on, e.g. `1h` or `7d`.
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
        /// Output format (`json`: one entry per line, as stored).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// The run index: every run, scheduled or manual, newest first (kubectl-style table).
    Runs(runs::RunsArgs),
    /// TTR (p50 and max) and score per scenario, week by week, as text, JSON or an HTML page.
    Trends(runs::TrendsArgs),
    /// The schedule of unattended suites, and the running `faultlined serve`.
    #[command(subcommand)]
    Schedule(schedule::ScheduleCommand),
    /// Print a shell completion script, e.g. `chaosctl completion bash >
    /// /etc/bash_completion.d/chaosctl`, or `source <(chaosctl completion zsh)`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Revert expired faults and orphaned rules, pauses and cordons now (every command does this
    /// first anyway); prints what it did.
    Reconcile {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// For programs.
    Json,
    /// For programs and people who keep their inventory in YAML.
    Yaml,
}

impl Output {
    /// Prints `value` as JSON or YAML and returns true; returns false for text, which each
    /// command lays out itself.
    pub(crate) fn print_data<T: serde::Serialize>(self, value: &T) -> anyhow::Result<bool> {
        match self {
            Output::Text => Ok(false),
            Output::Json => {
                println!("{}", serde_json::to_string_pretty(value)?);
                Ok(true)
            }
            Output::Yaml => {
                print!("{}", serde_yaml::to_string(value)?);
                Ok(true)
            }
        }
    }
}

fn host(cli: &Cli) -> HostPaths {
    HostPaths::with_state_root(&cli.state_root)
}

/// Reconciles every lab that is up. Failures are reported, not fatal: the command the user asked
/// for should still run.
fn reconcile_all(
    host: &HostPaths,
    quiet: bool,
) -> Vec<(String, faultline_injectors::lifecycle::ReconcileReport)> {
    let mut done = Vec::new();
    if !is_root() {
        return done;
    }
    for name in known_labs(&host.state_root) {
        let Ok(ctx) = LabContext::open(host, &name) else {
            continue;
        };
        match ctx.reconcile() {
            Ok(report) => {
                if !report.is_empty() && !quiet {
                    stderr_line!(
                        "chaosctl: reconciled lab {name}: {}",
                        describe_reconcile(&report)
                    );
                }
                done.push((name, report));
            }
            Err(error) => {
                stderr_line!("chaosctl: warning: reconcile of lab {name} failed: {error}");
            }
        }
    }
    done
}

fn describe_reconcile(report: &faultline_injectors::lifecycle::ReconcileReport) -> String {
    let mut parts = Vec::new();
    if !report.expired.is_empty() {
        parts.push(format!("reverted expired {}", report.expired.join(", ")));
    }
    if !report.halted.is_empty() {
        parts.push(format!("reverted (halt) {}", report.halted.join(", ")));
    }
    if !report.orphan_rules.is_empty() {
        parts.push(format!(
            "removed {} orphaned rules",
            report.orphan_rules.len()
        ));
    }
    if !report.orphan_pauses.is_empty() {
        parts.push(format!(
            "continued {} orphaned pauses",
            report.orphan_pauses.len()
        ));
    }
    if !report.orphan_cordons.is_empty() {
        parts.push(format!("uncordoned {}", report.orphan_cordons.join(", ")));
    }
    if !report.failed.is_empty() {
        parts.push(format!(
            "FAILED to revert {} (will retry)",
            report.failed.join(", ")
        ));
    }
    if parts.is_empty() {
        "nothing to do".to_owned()
    } else {
        parts.join("; ")
    }
}

fn require_root() -> anyhow::Result<()> {
    anyhow::ensure!(
        is_root(),
        "faults and the lab need root (network namespaces, netlink, signals): run chaosctl as root, e.g. with sudo"
    );
    Ok(())
}

/// Runs one command against a cluster instead of the lab.
fn run_on_cluster(target: &cluster::Target, command: &Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Halt => cluster::halt(target, "chaosctl halt"),
        Command::Resume => cluster::resume(target),
        Command::Faults { output, .. } => cluster::list(target, *output),
        Command::Run(args) => {
            let (scenario, duration, tenants, rate) = args.overrides();
            cluster_run::run(target, scenario, duration, tenants, rate)
        }
        Command::Report(args) => cluster_run::report(
            target,
            args.run_id(),
            args.format.unwrap_or(cluster_run::ReportKind::Html),
            args.output.clone(),
        ),
        Command::Runs(_) => cluster_run::runs(target),
        _ => anyhow::bail!(
            "on a cluster (--context/--kubeconfig) chaosctl runs run, report, runs, faults, halt \
             and resume; the other commands act on the embedded lab: drop --context to use it"
        ),
    }
}

/// `chaosctl halt`: the running daemon first (its experiment heals and stops), then the state
/// root's halt marker, which every lab obeys (labs brought up later too), then each lab's
/// faults are reverted.
fn halt_everything(host: &HostPaths) -> anyhow::Result<ExitCode> {
    schedule::through_daemon(&host.state_root, true)?;
    let now = faultline_injectors::ledger::now_unix_ms();
    // First the marker: a fault that slips in before it is reverted below, none after it.
    faultline_injectors::ledger::write_halt_marker(
        &halt_marker_file(&host.state_root),
        &faultline_injectors::ledger::HaltMarker { since_unix_ms: now },
    )?;
    AuditLog::new(audit_log_file(&host.state_root), "*").record(AuditEvent::Halt, None, "ok");
    let labs = known_labs(&host.state_root);
    for name in &labs {
        let ctx = match LabContext::open(host, name) {
            Ok(ctx) => ctx,
            // A lab half torn down has no faults of its own to revert; the marker covers it.
            Err(faultline_experiments::lab::LabError::NotUp(_)) => continue,
            Err(error) => return Err(error).with_context(|| format!("lab {name}")),
        };
        let scope = ctx.reconcile_scope();
        let report = ctx.with_injectors(|env| {
            faultline_injectors::lifecycle::halt(&ctx.ledger(), env, &scope, now)
        })?;
        println!("lab {name}: halted; {}", describe_reconcile(&report));
    }
    println!(
        "halted: every lab under {} refuses new faults and runs, including labs brought up \
         later, until `chaosctl resume`",
        host.state_root.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `chaosctl resume`: the running daemon, the state root's halt marker, then every lab's own
/// marker (left by earlier versions).
fn resume_everything(host: &HostPaths) -> anyhow::Result<ExitCode> {
    schedule::through_daemon(&host.state_root, false)?;
    faultline_injectors::ledger::clear_halt_marker(&halt_marker_file(&host.state_root))?;
    AuditLog::new(audit_log_file(&host.state_root), "*").record(AuditEvent::Resume, None, "ok");
    for name in known_labs(&host.state_root) {
        let Ok(ctx) = LabContext::open(host, &name) else {
            continue;
        };
        faultline_injectors::lifecycle::resume(&ctx.ledger())?;
    }
    println!(
        "resumed: new faults and runs are allowed again in every lab under {}",
        host.state_root.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `chaosctl revert ID`.
fn revert_one(host: &HostPaths, id: &str, lab: &str) -> anyhow::Result<ExitCode> {
    let ctx = LabContext::open(host, lab)?;
    let reverted = ctx.with_injectors(|env| {
        faultline_injectors::lifecycle::revert_fault(&ctx.ledger(), env, id)
    })?;
    if reverted {
        println!("reverted {id}");
        return Ok(ExitCode::SUCCESS);
    }
    // Not active: an id the audit log knows has ended; any other id is a mistake.
    let history = faultline_injectors::audit::read_audit_log(&audit_log_file(&host.state_root))
        .unwrap_or_default();
    if let Some(last) = history
        .iter()
        .rev()
        .find(|entry| entry.fault.as_deref() == Some(id))
    {
        println!(
            "{id} already ended in lab {}: {} {} at {}; nothing to do",
            last.lab,
            last.event.as_str(),
            last.outcome,
            last.time
        );
        return Ok(ExitCode::SUCCESS);
    }
    let (active, _) = ctx.ledger().list()?;
    let ids: Vec<&str> = active.iter().map(|record| record.id.as_str()).collect();
    anyhow::bail!(
        "no fault `{id}` in lab {lab}, active or ended; {}",
        if ids.is_empty() {
            "no fault is active there".to_owned()
        } else {
            format!("active: {} (`chaosctl faults --lab {lab}`)", ids.join(", "))
        }
    )
}

/// `chaosctl audit [--since D]`.
fn audit(host: &HostPaths, since: Option<Duration>, output: Output) -> anyhow::Result<ExitCode> {
    let path = audit_log_file(&host.state_root);
    let from = since.map_or(0, |d| {
        faultline_injectors::ledger::now_unix_ms().saturating_sub(d.as_millis() as u64)
    });
    let entries: Vec<_> = read_audit_log(&path)?
        .into_iter()
        .filter(|e| e.unix_ms >= from)
        .collect();
    // JSON as one entry per line, like the file itself.
    if output == Output::Json {
        for entry in &entries {
            println!("{}", serde_json::to_string(entry)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if output.print_data(&entries)? {
        return Ok(ExitCode::SUCCESS);
    }
    if entries.is_empty() {
        println!("no audit entries in {}", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<5} {:<8} {:<7} {:<18} {:<10} {:<26} {:<20} {:<18} COMMAND",
        "TIME", "UID", "LAB", "EVENT", "FAULT", "KIND", "TARGET", "DEADLINE", "OUTCOME"
    );
    for e in &entries {
        let deadline = e.deadline_unix_ms.map_or_else(
            || "-".to_owned(),
            |ms| {
                humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms))
                    .to_string()
            },
        );
        let uid = match &e.sudo_user {
            Some(user) => format!("{}({user})", e.uid),
            None => e.uid.to_string(),
        };
        println!(
            "{:<24} {:<5} {:<8} {:<7} {:<18} {:<10} {:<26} {:<20} {:<18} {}",
            e.time,
            uid,
            e.lab,
            e.event.as_str(),
            e.fault.as_deref().unwrap_or("-"),
            e.kind.as_deref().unwrap_or("-"),
            e.target.as_deref().unwrap_or("-"),
            deadline,
            e.outcome,
            e.command
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs one command; the exit code follows the command's verdict.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let host = host(&cli);
    let target = cluster::Target {
        context: cli.context.clone(),
        kubeconfig: cli.kubeconfig.clone(),
        namespace: cli.namespace.clone(),
        controller_namespace: cli.faultline_namespace.clone(),
    };
    if target.is_cluster() {
        return run_on_cluster(&target, &cli.command);
    }
    // Pure commands touch nothing, so they need no reconcile (and no root).
    let touches_system = !matches!(
        cli.command,
        Command::Reconcile { .. }
            | Command::List { .. }
            | Command::Show { .. }
            | Command::Validate { .. }
            | Command::Check(_)
            | Command::Contract(_)
            | Command::Runs(_)
            | Command::Trends(_)
            | Command::Schedule(_)
            | Command::Completion { .. }
            | Command::Audit { .. }
    );
    if touches_system {
        reconcile_all(&host, false);
    }
    let mut command = cli.command;
    if !cli.lab_named {
        if let Some(lab) = lab_to_choose(&mut command) {
            choose_lab(&host, lab)?;
        }
    }
    match command {
        Command::Lab(command) => lab::run(&host, command),
        Command::Load(args) => load::run(&host, &args, cli.lab_named),
        Command::Check(args) => Ok(check::run(&args)),
        Command::Contract(command) => contract::run(&host, &command),
        Command::Run(args) => {
            require_root()?;
            run::run(&host, &args, cli.max_fault_duration)
        }
        Command::Report(args) => run::report(&host, &args),
        Command::Runs(args) => runs::runs(&host.state_root, &args),
        Command::Trends(args) => runs::trends(&host.state_root, &args),
        Command::Schedule(command) => schedule::run(&host.state_root, &command),
        Command::Completion { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "chaosctl",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::List { output } => scenarios::list(output),
        Command::Show { name } => scenarios::show(&name),
        Command::Validate { file } => scenarios::validate(&file),
        Command::Inject(args) => {
            require_root()?;
            faults::inject(&host, args, cli.max_fault_duration)
        }
        Command::Faults { lab, output } => faults::list(&host, &lab, output),
        Command::Revert { id, lab } => {
            require_root()?;
            revert_one(&host, &id, &lab)
        }
        Command::Halt => {
            require_root()?;
            halt_everything(&host)
        }
        Command::Resume => {
            require_root()?;
            resume_everything(&host)
        }
        Command::Audit { since, output } => audit(&host, since, output),
        Command::Reconcile { output } => {
            require_root()?;
            let done = reconcile_all(&host, true);
            let data: Vec<_> = done
                .iter()
                .map(|(lab, report)| serde_json::json!({"lab": lab, "report": report}))
                .collect();
            if !output.print_data(&data)? {
                for (lab, report) in &done {
                    println!("lab {lab}: {}", describe_reconcile(report));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
