//! `faultlined`: the Faultline agent. In lab mode it supervises one lab's services and enforces
//! fault deadlines; in serve mode it runs suites unattended on a schedule; on a cluster it runs
//! as a privileged DaemonSet on every node.

use faultline_experiments::stderr_line;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use faultline_experiments::kubernetes::node_plan::Prefix;
use faultline_experiments::lab::agent::run_agent;
use faultline_experiments::lab::control::{HostPaths, LabContext};
use faultline_experiments::lab::{guard, LabError};

/// The Faultline agent.
#[derive(Parser)]
#[command(name = "faultlined", version)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Supervise one embedded lab: start and restart its services, keep them off cordoned nodes,
    /// and revert faults whose deadline passed (every second). Started by `chaosctl lab up`.
    Lab {
        /// Lab name.
        #[arg(long, default_value = faultline_experiments::lab::DEFAULT_LAB_NAME)]
        name: String,
        /// Root of Faultline's state.
        #[arg(long, env = "FAULTLINE_STATE_ROOT", default_value = faultline_experiments::lab::DEFAULT_STATE_ROOT)]
        state_root: PathBuf,
    },
    /// The deadline guard of one pause, hold or drain in a lab, started by whatever recorded
    /// the fault: sleeps until the deadline, reverts whatever of the lab has expired (the lab's
    /// reconcile), starts the lab agent if it is dead, and exits. Exits at once, changing
    /// nothing, when the fault is reverted earlier or the lab is torn down.
    #[command(hide = true)]
    Guard {
        /// Lab name.
        #[arg(long)]
        lab: String,
        /// Root of Faultline's state.
        #[arg(long)]
        state_root: PathBuf,
        /// The fault's id.
        #[arg(long)]
        fault: String,
        /// The fault's deadline, Unix milliseconds.
        #[arg(long)]
        deadline_unix_ms: u64,
    },
    /// The node agent on a cluster (run by the DaemonSet in manifests/): watches Fault and Halt
    /// objects and applies, on this node only, each Fault's part (prohibit rules in the host and
    /// pod network namespaces, signals to a pod's processes). Every fault is written to the
    /// node-local ledger first and healed at its deadline on this node's clock, with or without
    /// the API server. On SIGTERM it heals its node before exiting.
    Agent(Box<AgentArgs>),
    /// Run the schedule's suites on the lab unattended, one experiment at a time, and serve the
    /// HTTP API, /metrics and the web page. SIGHUP reloads the schedule; SIGTERM heals the
    /// running experiment and stops.
    Serve(faultline_daemon::serve::ServeArgs),
    /// The cluster controller (the Deployment in manifests/, one leader through a Lease): runs
    /// one Experiment at a time in a runner Job and queues the others, deletes expired Faults and
    /// those of deleted Experiments, uncordons nodes whose cordoning Fault is gone, writes the
    /// audit trail as Events, and serves the reports (`/runs`) on every replica.
    Controller(Box<faultline_daemon::controller::ControllerArgs>),
    /// Run one Experiment (started by the controller as a Job): validate it, run it, write the
    /// reports to the report volume and the verdict to its status. Exit code as `chaosctl run`.
    Run(faultline_daemon::run::RunArgs),
}

#[derive(clap::Args)]
struct AgentArgs {
    /// This node's name (the downward API's `spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// The agent's own pod UID; the guards never act on it.
    #[arg(long, env = "POD_UID", default_value = "")]
    pod_uid: String,
    /// The agent's namespace; the guards protect its pods.
    #[arg(long, env = "POD_NAMESPACE", default_value = "faultline-system")]
    pod_namespace: String,
    /// Node-local state (ledger, journal, holds); a hostPath so it outlives the pod.
    #[arg(long, default_value = "/var/lib/faultline")]
    state_dir: PathBuf,
    /// Where the agent keeps its network namespace entries (`node`, `pod-<uid>`); tmpfs.
    #[arg(long, default_value = "/run/faultline/netns")]
    netns_dir: PathBuf,
    /// The host's /proc (hostPID), where pods and their namespaces are found.
    #[arg(long, default_value = "/proc")]
    proc_root: PathBuf,
    /// The node's own network namespace file [default: PROC_ROOT/1/ns/net].
    #[arg(long)]
    host_netns: Option<PathBuf>,
    /// Address of `/healthz` and `/readyz`.
    #[arg(long, default_value = "0.0.0.0:9797")]
    health_addr: std::net::SocketAddr,
    /// How often deadlines and orphans are reconciled.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    tick: std::time::Duration,
    /// The longest a Fault may last once applied here.
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
    max_fault_duration: std::time::Duration,
    /// The longest one API request may take before the agent retries later.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    api_timeout: std::time::Duration,
    /// A kubeconfig to use instead of the in-cluster service account (also `KUBECONFIG`).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// An IPv4 address or CIDR that no partition on this node ever cuts, whatever the Fault
    /// says (the API server's endpoints are exempt already). Repeat for more, e.g. DNS, the
    /// monitoring stack, a cloud metadata service.
    #[arg(long = "exempt-cidr", value_name = "CIDR", value_parser = parse_exempt_cidr)]
    exempt_cidrs: Vec<Prefix>,
}

fn parse_exempt_cidr(text: &str) -> Result<Prefix, String> {
    Prefix::parse(text).map_err(|reason| format!("{reason} (example: --exempt-cidr 10.96.0.10/32)"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.mode {
        Mode::Serve(args) => match faultline_daemon::serve::run(&args) {
            Ok(code) => code,
            Err(error) => {
                stderr_line!("faultlined serve: error: {error:#}");
                ExitCode::from(2)
            }
        },
        Mode::Lab { name, state_root } => {
            let stop = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
                if let Err(error) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
                    stderr_line!("faultlined: cannot handle signal {signal}: {error}");
                    return ExitCode::from(2);
                }
            }
            let host = HostPaths::with_state_root(state_root);
            let result = LabContext::open(&host, &name).and_then(|ctx| run_agent(&ctx, &stop));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    stderr_line!("faultlined: {error}");
                    ExitCode::from(2)
                }
            }
        }
        Mode::Guard {
            lab,
            state_root,
            fault,
            deadline_unix_ms,
        } => {
            let host = HostPaths::with_state_root(state_root);
            let outcome = LabContext::open(&host, &lab)
                .and_then(|ctx| guard::run(&ctx, &fault, deadline_unix_ms));
            match outcome {
                Ok(outcome) => {
                    stderr_line!(
                        "faultlined guard {fault} (lab {lab}): {}",
                        serde_json::to_string(&outcome).unwrap_or_default()
                    );
                    ExitCode::SUCCESS
                }
                // A lab torn down before the guard even looked is nothing to guard.
                Err(LabError::NotUp(_)) => ExitCode::SUCCESS,
                Err(error) => {
                    stderr_line!("faultlined guard {fault} (lab {lab}): {error}");
                    ExitCode::from(2)
                }
            }
        }
        Mode::Controller(args) => match faultline_daemon::controller::main(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                stderr_line!("faultlined controller: {error:#}");
                ExitCode::from(2)
            }
        },
        Mode::Run(args) => match faultline_daemon::run::main(&args) {
            Ok(code) => code,
            Err(error) => {
                stderr_line!("faultlined run: {error:#}");
                ExitCode::from(2)
            }
        },
        Mode::Agent(args) => match run_node_agent(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                stderr_line!("faultlined agent: {error:#}");
                ExitCode::from(2)
            }
        },
    }
}

fn run_node_agent(args: AgentArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use faultline_daemon::agent::node::ProcNodeProcesses;
    use faultline_daemon::agent::{AgentConfig, Core, NodeAgent, Privileged};
    use faultline_injectors::net_partition::NetlinkRuleTable;
    use faultline_injectors::pod_discovery::PodNetnsDir;
    use faultline_injectors::process::NixSignaller;

    let mut netns = PodNetnsDir::open(&args.netns_dir, &args.proc_root)
        .with_context(|| format!("namespace directory {}", args.netns_dir.display()))?;
    if let Some(host) = &args.host_netns {
        netns = netns.with_host_netns(host);
    }
    let rules = NetlinkRuleTable::new(netns.dir());
    let privileged = Privileged {
        rules: Box::new(rules),
        signals: Box::new(NixSignaller::new(&args.proc_root)),
        processes: Box::new(ProcNodeProcesses::new(netns)),
    };
    let config = AgentConfig {
        node_name: args.node_name,
        pod_uid: args.pod_uid,
        pod_namespace: args.pod_namespace,
        state_dir: args.state_dir,
        tick: args.tick,
        max_fault_duration: args.max_fault_duration,
        api_timeout: args.api_timeout,
        exempt_cidrs: args.exempt_cidrs,
    };
    let core = Core::open(config, privileged).context("opening the node-local state")?;
    // Heal what an earlier agent left before anything else, API server or not.
    core.safety_pass(faultline_injectors::ledger::now_unix_ms());

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    // One thread is plenty for two watches and a health endpoint, and every extra thread costs
    // a stack and a malloc arena of the agent's idle memory (goal: 15 MB). Ledger and netlink work
    // runs on the blocking pool, whose threads exit when idle; deadlines are the safety loop's.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let client = faultline_daemon::kube_client(args.kubeconfig.as_deref(), true).await?;
        let agent = Arc::new(NodeAgent::new(core, client));
        let safety = agent.spawn_safety_loop(Arc::clone(&stop));
        let _health = faultline_daemon::agent::health::serve(Arc::clone(&agent), args.health_addr)
            .await
            .with_context(|| format!("binding the health address {}", args.health_addr))?;
        stderr_line!(
            "faultlined agent: node {} ready to watch Faults (health on {})",
            agent.core().config().node_name,
            args.health_addr
        );
        agent.run(Arc::clone(&stop)).await;
        let _ = safety.join();
        stderr_line!("faultlined agent: stopped; this node's faults are healed");
        Ok(())
    })
}
