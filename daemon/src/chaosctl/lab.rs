//! `chaosctl lab up | down | status | list | topology`.

use faultline_experiments::stderr_line;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use faultline_experiments::checkers::ServerVersion;
use faultline_experiments::lab::control::{self, HostPaths, LabContext, LabStatus};
use faultline_experiments::lab::servers::{self, ResolvedTopology};
use faultline_experiments::lab::DEFAULT_LAB_NAME;

use super::Output;

#[derive(Subcommand)]
pub(crate) enum LabCommand {
    /// Create the lab (namespaces, bridge, services), start its agent, and wait until every
    /// service is ready. Safe to run again: an existing lab with the same topology is kept.
    Up {
        /// Topology YAML; the built-in default is 3 zones x 2 nodes with a 3-node NATS
        /// JetStream cluster (print it with `chaosctl lab topology`).
        #[arg(long)]
        topology: Option<PathBuf>,
        /// Lab name: 1 to 12 lowercase letters or digits. Several labs can coexist.
        #[arg(long = "lab", alias = "name", env = "FAULTLINE_LAB", default_value = DEFAULT_LAB_NAME)]
        name: String,
        /// The nats-server binary every NATS service runs [default: the pinned current
        /// release that scripts/setup.sh installs, else nats-server on PATH with a warning].
        /// E.g. /usr/sbin/nats-server for Debian's 2.9.10, whose known bugs the judge catches.
        #[arg(long, env = "FAULTLINE_NATS_SERVER")]
        nats_server: Option<PathBuf>,
        /// How long to wait for every service to be ready. A service whose program cannot be
        /// started, or that exits before it is ready three times in a row, ends the wait at once
        /// (and a lab this command created is taken down again).
        #[arg(long, value_parser = super::duration_arg, allow_hyphen_values = true, default_value = "90s")]
        timeout: Duration,
    },
    /// Remove every namespace, process and file of the lab, also after a `lab up` that was
    /// killed halfway.
    Down {
        /// Lab name [default: the only lab up, else `default`].
        #[arg(long = "lab", alias = "name", env = "FAULTLINE_LAB", default_value = DEFAULT_LAB_NAME, hide_default_value = true)]
        name: String,
    },
    /// Show nodes, zones, addresses, services with health and restarts, and active faults.
    Status {
        /// Lab name [default: the only lab up, else `default`].
        #[arg(long = "lab", alias = "name", env = "FAULTLINE_LAB", default_value = DEFAULT_LAB_NAME, hide_default_value = true)]
        name: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Every lab under the state root: up or not, its agent, services ready, active faults.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print the built-in default topology, ready to copy and edit.
    Topology,
}

/// One row of `lab list`.
#[derive(serde::Serialize)]
struct LabRow {
    name: String,
    up: bool,
    agent: String,
    nodes: usize,
    ready: usize,
    replicas: usize,
    faults: usize,
    halted: bool,
}

fn lab_rows(host: &HostPaths) -> Vec<LabRow> {
    faultline_experiments::lab::state::known_labs(&host.state_root)
        .into_iter()
        .map(|name| {
            let status = LabContext::open(host, &name)
                .ok()
                .and_then(|ctx| control::status(&ctx).ok());
            match status {
                Some(status) => LabRow {
                    name,
                    up: true,
                    agent: match (status.agent_pid, status.agent_dead) {
                        (Some(pid), _) => format!("pid {pid}"),
                        (None, Some(_)) => "DEAD".to_owned(),
                        (None, None) => "not running".to_owned(),
                    },
                    nodes: status.nodes.len(),
                    ready: status
                        .services
                        .iter()
                        .filter(|s| s.health == "ready")
                        .count(),
                    replicas: status.services.len(),
                    faults: status.faults.len(),
                    halted: status.halted,
                },
                None => LabRow {
                    name,
                    up: false,
                    agent: "-".to_owned(),
                    nodes: 0,
                    ready: 0,
                    replicas: 0,
                    faults: 0,
                    halted: false,
                },
            }
        })
        .collect()
}

pub(crate) fn run(host: &HostPaths, command: LabCommand) -> anyhow::Result<ExitCode> {
    match command {
        LabCommand::Up {
            topology,
            name,
            nats_server,
            timeout,
        } => {
            let resolved = resolve_topology(topology.as_deref(), nats_server)?;
            let agent = crate::agent_binary();
            let (ctx, started_agent) = control::up(host, &name, &resolved, &agent, timeout)?;
            if started_agent {
                println!(
                    "lab {name}: agent started (log: {})",
                    ctx.paths.agent_log().display()
                );
            }
            let status = control::status(&ctx)?;
            print_status(&status);
            warn_about_servers(&resolved.warnings, &status.servers);
            if let Some(example) = reach_example(&resolved.topology, &status) {
                println!(
                    "\nServices are reachable from the lab's client namespace, e.g.\n  ip netns exec {} {example}",
                    status.client_netns
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Down { name } => {
            let report = control::down(host, &name)?;
            println!(
                "lab {name}: down ({} processes killed, {} namespaces removed{}{}{})",
                report.killed.len(),
                report.namespaces.len(),
                if report.guards_stopped.is_empty() {
                    String::new()
                } else {
                    format!(", {} deadline guards stopped", report.guards_stopped.len())
                },
                if report.agent_stopped {
                    ", agent stopped"
                } else {
                    ""
                },
                if report.state_removed {
                    ", state removed"
                } else {
                    ""
                },
            );
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Status { name, output } => {
            let ctx = LabContext::open(host, &name)?;
            let status = control::status(&ctx)?;
            if !output.print_data(&status)? {
                print_status(&status);
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::List { output } => {
            let rows = lab_rows(host);
            match output {
                Output::Json | Output::Yaml => {
                    output.print_data(&rows)?;
                }
                Output::Text if rows.is_empty() => {
                    println!(
                        "no lab under {}; start one with `chaosctl lab up`",
                        host.state_root.display()
                    );
                }
                Output::Text => {
                    println!("LAB           STATE  AGENT         NODES  READY   FAULTS");
                    for row in &rows {
                        println!(
                            "{:<13} {:<6} {:<13} {:<6} {:<7} {}{}",
                            row.name,
                            if row.up { "up" } else { "down" },
                            row.agent,
                            row.nodes,
                            format!("{}/{}", row.ready, row.replicas),
                            row.faults,
                            if row.halted { "  (halted)" } else { "" }
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Topology => {
            print!(
                "{}",
                faultline_experiments::lab::topology::DEFAULT_TOPOLOGY_YAML
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A command that reaches one of this lab's own services from the client namespace: a NATS
/// server's `/jsz` if the lab runs NATS, else the readiness URL of an HTTP service, else a TCP
/// port; `None` when no service has a port to show.
fn reach_example(
    topology: &faultline_experiments::lab::topology::Topology,
    status: &LabStatus,
) -> Option<String> {
    use faultline_experiments::lab::topology::Readiness;
    let address = |service: &str| {
        let replica = status
            .services
            .iter()
            .find(|r| r.replica.split('/').next() == Some(service))?;
        status
            .nodes
            .iter()
            .find(|n| n.name == replica.node)
            .map(|n| n.address.clone())
    };
    let jetstream = topology.services.iter().find_map(|s| match &s.ready {
        Readiness::NatsJetstream { monitor_port } => Some((s, format!(":{monitor_port}/jsz"))),
        _ => None,
    });
    let http = || {
        topology.services.iter().find_map(|s| match &s.ready {
            Readiness::Http { port, path } => Some((s, format!(":{port}{path}"))),
            _ => None,
        })
    };
    if let Some((service, tail)) = jetstream.or_else(http) {
        return Some(format!("curl -s http://{}{tail}", address(&service.name)?));
    }
    let (service, port) = topology
        .services
        .iter()
        .find_map(|s| s.ports.values().next().map(|p| (s, *p)))?;
    Some(format!("nc -zv {} {port}", address(&service.name)?))
}

/// The topology of `path` (else the built-in one) with every program resolved: the NATS
/// server by `nats_server`, else the pinned release, else PATH.
pub(crate) fn resolve_topology(
    path: Option<&Path>,
    nats_server: Option<PathBuf>,
) -> anyhow::Result<ResolvedTopology> {
    Ok(servers::resolve_file(path, nats_server)?)
}

/// Prints what resolving the programs said, and each known defect of a server that runs.
pub(crate) fn warn_about_servers(warnings: &[String], versions: &[ServerVersion]) {
    for warning in warnings {
        stderr_line!("chaosctl: warning: {warning}");
    }
    for defect in versions.iter().filter_map(servers::known_defect) {
        stderr_line!("chaosctl: warning: {defect}");
    }
}

fn print_status(status: &LabStatus) {
    let agent = match (status.agent_pid, status.agent_dead) {
        (Some(pid), _) => format!("pid {pid}"),
        (None, Some(pid)) => format!("DEAD (pid {pid} is gone)"),
        (None, None) => "NOT RUNNING (run `chaosctl lab up`)".to_owned(),
    };
    println!(
        "lab {}  agent: {agent}  client: {} ({}){}",
        status.name,
        status.client_netns,
        status.client_address,
        if status.halted {
            "  FAULTS HALTED in every lab of this state root (chaosctl resume)"
        } else {
            ""
        }
    );
    if let Some(pid) = status.agent_dead {
        println!(
            "\n!! agent dead: the lab agent (pid {pid}) is not running, so nothing restarts replicas.\n!! Faults still end at their deadline: partitions in the kernel, pauses, holds and cordons\n!! by their deadline guards ({} running), which start the agent again. Run `chaosctl lab up`.",
            status.guards.len()
        );
    }
    println!(
        "\nSERVICE      VERSION                        PROGRAM (topology: {})",
        if status.topology.is_empty() {
            "not recorded"
        } else {
            &status.topology
        }
    );
    for server in &status.servers {
        println!(
            "{:<12} {:<30} {}",
            server.service, server.version, server.program
        );
    }
    if status.servers.is_empty() {
        println!("(not recorded: this lab came up before versions were; `chaosctl lab down` and up again)");
    }
    println!("\nNODE      ZONE  ADDRESS        NAMESPACE              STATE");
    for node in &status.nodes {
        let state = match (node.present, node.cordoned) {
            (false, _) => "MISSING",
            (true, true) => "cordoned",
            (true, false) => "ok",
        };
        println!(
            "{:<9} {:<5} {:<14} {:<22} {state}",
            node.name, node.zone, node.address, node.netns
        );
    }
    println!("\nZONE CLIENTS (clients: per-zone)");
    for client in &status.zone_clients {
        println!(
            "{:<9} {:<5} {:<14} {:<22} {}",
            "",
            client.zone,
            client.address,
            client.netns,
            if client.present { "ok" } else { "MISSING" }
        );
    }
    println!("\nSERVICE      NODE      HEALTH    PID      RESTARTS  ENDPOINTS");
    for service in &status.services {
        let endpoints: Vec<String> = service
            .endpoints
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "{:<12} {:<9} {:<9} {:<8} {:<9} {}",
            service.replica,
            service.node,
            service.health,
            service
                .pid
                .map_or_else(|| "-".to_owned(), |p| p.to_string()),
            service.restarts,
            endpoints.join(" ")
        );
        if let Some(reason) = &service.last_restart {
            println!("             last restart: {reason}");
        }
        if let Some(reason) = &service.down_reason {
            if service.pid.is_none() {
                println!("             down: {reason}");
            }
        }
    }
    println!();
    super::faults::print_faults(&status.faults);
    print_guards(status);
}

/// For each pause, hold and drain: the guard that ends it at its deadline, or a warning that
/// none runs.
fn print_guards(status: &LabStatus) {
    for fault in &status.faults {
        if fault.action.ends_by_itself() {
            continue;
        }
        match status.guards.iter().find(|g| g.fault == fault.id) {
            Some(guard) => println!(
                "{}: deadline guard pid {} ends it then, with or without the agent",
                fault.id, guard.pid
            ),
            None => println!(
                "!! {}: its deadline guard is not running; it ends at its deadline only if the agent or a chaosctl command runs then",
                fault.id
            ),
        }
    }
}
