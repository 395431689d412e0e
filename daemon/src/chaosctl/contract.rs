//! `chaosctl contract check URL`: does a running endpoint implement the HTTP tenant-records
//! contract? It runs `faultline_experiments::workload::conformance` against it and lists every
//! deviation. With `--lab` it runs inside the lab's client namespace and also checks that
//! `X-Served-By` names one of the lab's nodes.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use faultline_experiments::lab::control::{HostPaths, LabContext};
use faultline_experiments::workload::conformance::{check_endpoint, ConformanceOptions};
use faultline_experiments::workload::target::enter_netns;

use super::Output;

#[derive(Subcommand)]
pub(crate) enum ContractCommand {
    /// Exercise a running endpoint (provision, writes, retries, reads, paging, the refusals,
    /// unknown tenants, deletion, X-Served-By) and report every deviation from the contract in
    /// docs/workload.md. It creates two tenants of its own and deletes them at the end. Exit
    /// code: 0 conforms, 1 deviations, 2 error.
    Check(CheckArgs),
}

#[derive(Args)]
pub(crate) struct CheckArgs {
    /// The endpoint, http://IP:PORT.
    url: String,
    /// Run inside this lab's client namespace (where the lab's addresses are reachable), and
    /// require X-Served-By to be one of its node names.
    #[arg(long, env = "FAULTLINE_LAB")]
    lab: Option<String>,
    /// Longest wait for one answer.
    #[arg(long, value_parser = super::duration_arg, default_value = "5s")]
    timeout: Duration,
    /// Longest wait for an acknowledged write to show in a read (a replica that is behind may
    /// answer a read).
    #[arg(long, value_parser = super::duration_arg, default_value = "5s")]
    read_wait: Duration,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

fn endpoint(url: &str) -> anyhow::Result<SocketAddr> {
    let hostport = url
        .strip_prefix("http://")
        .unwrap_or(url)
        .trim_end_matches('/');
    hostport.parse().map_err(|_| {
        anyhow::anyhow!(
            "`{url}` is not an endpoint: give http://IP:PORT, e.g. http://10.203.1.11:8080"
        )
    })
}

pub(crate) fn run(host: &HostPaths, command: &ContractCommand) -> anyhow::Result<ExitCode> {
    let ContractCommand::Check(args) = command;
    let addr = endpoint(&args.url)?;
    let mut nodes = Vec::new();
    if let Some(lab) = &args.lab {
        super::require_root()?;
        let ctx = LabContext::open(host, lab)?;
        nodes = ctx.topology.nodes().into_iter().map(|n| n.name).collect();
        // Before the runtime, so its threads are born in the namespace.
        enter_netns(&ctx.netns_dir, &ctx.paths.netns("client"))?;
    }
    let unique = format!(
        "{}x{}",
        std::process::id(),
        faultline_injectors::ledger::now_unix_ms() % 100_000_000
    );
    let options = ConformanceOptions {
        addr,
        nodes,
        timeout: args.timeout,
        read_wait: args.read_wait,
        unique,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let report = runtime.block_on(check_endpoint(options));
    if !args.output.print_data(&report)? {
        print!("{}", report.render());
    }
    Ok(if report.conforms() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
