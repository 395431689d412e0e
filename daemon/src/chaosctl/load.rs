//! `chaosctl load`: the tenant workload on its own, with a live progress line and a k6-style
//! summary. Inside a lab it enters the lab's client namespace (once, before its runtime starts,
//! so every thread is there) and records fault windows from the lab's ledger; with
//! `--nats`/`--gateway` URLs it loads those, from inside the lab when `--lab` names one, else
//! from where it is.

use faultline_experiments::stderr_line;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use faultline_experiments::lab::control::{HostPaths, LabContext};
use faultline_experiments::lab::DEFAULT_LAB_NAME;
use faultline_experiments::workload::clients::Clients;
use faultline_experiments::workload::recorder::check_writable;
use faultline_experiments::workload::target::enter_netns;
use faultline_experiments::workload::{
    AdapterKind, CancellationToken, ChatMode, Progress, ProgressFn, Target, Workload,
    WorkloadConfig, WorkloadReport,
};

use super::Output;

#[derive(Args)]
// Independent on/off flags of the command line, not states of one machine.
#[allow(clippy::struct_excessive_bools)]
pub(crate) struct LoadArgs {
    /// Number of tenants: 70% small, 25% medium, 5% large.
    #[arg(long, default_value_t = 100)]
    tenants: u32,
    /// Mean scheduled operations per second of the active tenants, all together (idle tenants'
    /// bursts come on top).
    #[arg(long, default_value_t = 200.0, allow_negative_numbers = true)]
    rate: f64,
    /// How long the load runs.
    #[arg(long, value_parser = super::duration_arg, allow_hyphen_values = true, default_value = "60s")]
    duration: Duration,
    /// Lab to load (its NATS servers and tenant gateways) [default: the only lab up, else
    /// `default`].
    #[arg(long, env = "FAULTLINE_LAB", default_value = DEFAULT_LAB_NAME, hide_default_value = true)]
    pub(crate) lab: String,
    /// History file (JSON Lines, the faultline-history format).
    #[arg(long, default_value = "history.jsonl")]
    history: PathBuf,
    /// Observations file; defaults to the history's name with `.observations.jsonl`.
    #[arg(long)]
    observations: Option<PathBuf>,
    /// Where the load goes: NATS JetStream directly, or the HTTP tenant-records contract.
    #[arg(long, default_value = "nats")]
    adapter: AdapterKind,
    /// Seed of the schedule; the same seed gives the same schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the clients stand during a partition: `majority` (with the largest side),
    /// `per-zone` (one client namespace per zone, sharing its zone's fate, using its own
    /// zone's servers or gateways first; tenant i in zone i mod zones) or `zone:NAME` (all in
    /// that zone). Other than majority: on a lab.
    #[arg(long, default_value = "majority")]
    clients: Clients,
    /// Replicas of each tenant's stream.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// NATS connections shared by the tenants.
    #[arg(long, default_value_t = 3)]
    connections: usize,
    /// How often each NATS connection pings its server when idle; a dead server is noticed
    /// within three intervals.
    #[arg(long, value_parser = super::duration_arg, allow_hyphen_values = true, default_value = "2s")]
    ping_interval: Duration,
    /// NATS servers to load instead of the lab's (nats://IP:PORT, comma-separated). Runs in
    /// the current network namespace.
    #[arg(long, value_delimiter = ',')]
    nats: Vec<String>,
    /// Tenant-records endpoints to load instead of the lab's services (http://IP:PORT,
    /// comma-separated), with `--adapter http`. With `--lab` (or FAULTLINE_LAB) it runs in that
    /// lab's client namespace and records its fault windows; else in the current namespace.
    #[arg(long, value_delimiter = ',')]
    gateway: Vec<String>,
    /// With `--adapter http` on a lab: the lab services that serve the HTTP tenant-records
    /// contract (comma-separated); the load goes to every replica of each.
    #[arg(long = "service", value_delimiter = ',', default_value = "gateway")]
    services: Vec<String>,
    /// With `--adapter http`: chat sessions as HTTP requests (`http`) or over one WebSocket per
    /// session (`websocket`: the contract's chat socket; opening it is a `connect` operation).
    #[arg(long, default_value = "http")]
    chat: ChatMode,
    /// Skip the final read-back through every node.
    #[arg(long)]
    no_read_back: bool,
    /// Before the final read-back, wait up to this long for every NATS server to report the
    /// same state for every stream (messages, bytes, first and last sequence, leader).
    #[arg(long, value_parser = super::duration_arg, allow_hyphen_values = true, default_value = "0s")]
    settle: Duration,
    /// NATS on a lab: skip reading each server's own replica alone (the other servers stopped
    /// and held down) after the read-back through every server.
    #[arg(long)]
    no_replica_read_back: bool,
    /// Per replica read alone: how long to wait for it to answer with the others down, and
    /// then for the servers to be back and agree again.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    replica_wait: Duration,
    /// Keep the tenants' existing streams instead of recreating them.
    #[arg(long)]
    keep_data: bool,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
    /// Output format of the summary.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

fn default_observations(history: &Path) -> PathBuf {
    let stem = history
        .file_stem()
        .map_or_else(|| "history".into(), |s| s.to_string_lossy().into_owned());
    history.with_file_name(format!("{stem}.observations.jsonl"))
}

fn progress_printer(quiet: bool) -> Option<ProgressFn> {
    if quiet {
        return None;
    }
    let tty = std::io::stderr().is_terminal();
    let last = Mutex::new(
        Instant::now()
            .checked_sub(Duration::from_secs(60))
            .unwrap_or_else(Instant::now),
    );
    Some(Arc::new(move |p: &Progress| {
        let mut stderr = std::io::stderr().lock();
        if tty {
            let _ = write!(stderr, "\r\x1b[2K{}", p.line());
            let _ = stderr.flush();
        } else {
            let mut last = last.lock().expect("last");
            if last.elapsed() >= Duration::from_secs(5) {
                *last = Instant::now();
                let _ = writeln!(stderr, "{}", p.line());
            }
        }
    }))
}

fn print_report(report: &WorkloadReport, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json | Output::Yaml => {
            output.print_data(report)?;
        }
        Output::Text => {
            print!("{}", report.summary.render());
            if let Some(rb) = &report.read_back {
                println!("\n  read-back through every node:");
                for n in &rb.nodes {
                    print_node_read(n);
                }
                if !rb.replicas.is_empty() {
                    println!(
                        "  each node's own replica, read alone (the other servers held down):"
                    );
                }
                for n in &rb.replicas {
                    print_node_read(n);
                }
                println!(
                    "     views through the nodes agree on {} of {} tenants{}",
                    rb.agreeing,
                    rb.tenants,
                    if rb.disagreeing.is_empty() {
                        String::new()
                    } else {
                        format!("; differ or incomplete: {}", rb.disagreeing.join(", "))
                    }
                );
            }
            println!(
                "\n  history: {}\n  observations: {}",
                report.history.display(),
                report.observations.display()
            );
        }
    }
    Ok(())
}

pub(crate) fn run(host: &HostPaths, args: &LoadArgs, lab_named: bool) -> anyhow::Result<ExitCode> {
    let observations = args
        .observations
        .clone()
        .unwrap_or_else(|| default_observations(&args.history));
    let config = WorkloadConfig {
        tenants: args.tenants,
        rate: args.rate,
        duration: args.duration,
        seed: args.seed,
        adapter: args.adapter,
        clients: args.clients.clone(),
        stream_replicas: args.replicas,
        http_services: args.services.clone(),
        chat: args.chat,
        connections: args.connections,
        ping_interval: args.ping_interval,
        settle: args.settle,
        replica_read_back: !args.no_replica_read_back,
        replica_wait: args.replica_wait,
        history: args.history.clone(),
        observations,
        fresh: !args.keep_data,
        ..WorkloadConfig::default()
    };
    // Everything that can be checked without touching the system, first.
    config.validate()?;
    check_writable("history", &config.history)?;
    check_writable("observations", &config.observations)?;
    let external = !args.nats.is_empty() || !args.gateway.is_empty();
    let target = if external && !lab_named {
        Target::from_urls(&args.nats, &args.gateway)?
    } else if external {
        // The user's endpoints, from inside the lab: its network, its fault windows.
        let urls = Target::from_urls(&args.nats, &args.gateway)?;
        super::require_root()?;
        urls.in_lab(&LabContext::open(host, &args.lab)?)
    } else {
        super::require_root()?;
        let ctx = LabContext::open(host, &args.lab)?;
        Target::from_lab(&ctx, config.lab_http_services())?
    };
    if let Some((netns_dir, netns)) = target.client_netns() {
        // Before the runtime exists, so every one of its threads is born in the namespace.
        enter_netns(&netns_dir, &netns)?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let report = runtime.block_on(async {
        let mut workload = Workload::start(config.clone(), target).await?;
        if let Some(printer) = progress_printer(args.quiet) {
            workload.on_progress(printer);
        }
        let cancel = CancellationToken::new();
        let on_interrupt = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stderr_line!(
                    "\nchaosctl: interrupted; stopping the load (in-flight operations finish first; \
                     interrupt again to quit at once)"
                );
                on_interrupt.cancel();
            }
            if tokio::signal::ctrl_c().await.is_ok() {
                // The history is flushed every 200 ms; readers tolerate a truncated last line.
                stderr_line!("\nchaosctl: interrupted twice; quitting");
                std::process::exit(130);
            }
        });
        if !args.quiet {
            stderr_line!(
                "load: {} tenants, {} ops/s, {} via {}, seed {}; history {}",
                config.tenants,
                config.rate,
                humantime::format_duration(config.duration),
                config.adapter.name(),
                config.seed,
                config.history.display()
            );
        }
        workload.run(cancel).await?;
        if !args.quiet && std::io::stderr().is_terminal() {
            stderr_line!();
        }
        if !args.no_read_back {
            if !args.quiet {
                stderr_line!("load: reading every tenant back through every node");
            }
            workload.read_back().await?;
        }
        Ok::<_, anyhow::Error>(workload.finish().await?)
    })?;
    print_report(&report, args.output)?;
    Ok(ExitCode::SUCCESS)
}

/// One node's read-back line of the summary.
fn print_node_read(n: &faultline_experiments::workload::NodeReadBack) {
    println!(
        "     {:<8} {} tenants ok, {} failed, {} records{}",
        n.node,
        n.ok,
        n.failed,
        n.records,
        n.error
            .as_ref()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_default_next_to_the_history() {
        assert_eq!(
            default_observations(Path::new("/tmp/run/h.jsonl")),
            PathBuf::from("/tmp/run/h.observations.jsonl")
        );
        assert_eq!(
            default_observations(Path::new("history.jsonl")),
            PathBuf::from("history.observations.jsonl")
        );
    }
}
