//! `chaosctl inject …` and `chaosctl faults`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use clap::{Args, Subcommand, ValueEnum};
use faultline_experiments::lab::control::{HostPaths, LabContext};
use faultline_experiments::lab::faults::{PartitionTarget, QuorumLossMode, Shape};
use faultline_experiments::lab::{DEFAULT_LAB_NAME, DEFAULT_STATE_ROOT};
use faultline_injectors::fault::FaultAction;
use faultline_injectors::ledger::{now_unix_ms, FaultRecord};

use super::Output;

#[derive(Args)]
pub(crate) struct InjectArgs {
    /// Lab name [default: the only lab up, else `default`].
    #[arg(long, global = true, env = "FAULTLINE_LAB", default_value = DEFAULT_LAB_NAME, hide_default_value = true)]
    pub(crate) lab: String,
    #[command(subcommand)]
    fault: FaultCommand,
}

#[derive(Subcommand)]
enum FaultCommand {
    /// Cut nodes off from each other, in both directions, until a deadline the kernel itself
    /// enforces (nf_tables set elements with a timeout). Exactly
    /// one of --zone, --node, --isolate or --shape. The lab's clients (the client namespace)
    /// stand with the largest side: what it cannot reach, they cannot reach either.
    Partition {
        /// Cut this zone off from every other zone.
        #[arg(long, group = "partition_target")]
        zone: Option<String>,
        /// Cut this node off from every other node.
        #[arg(long, group = "partition_target")]
        node: Option<String>,
        /// Cut off the zone of this service's primary (asked of its role probe now).
        #[arg(long, value_name = "SERVICE", group = "partition_target")]
        zone_of_primary: Option<String>,
        /// Cut off the node of this service's primary (asked of its role probe now).
        #[arg(long, value_name = "SERVICE", group = "partition_target")]
        node_of_primary: Option<String>,
        /// Cut each of these nodes off from everyone (comma-separated), e.g. a majority of a
        /// NATS cluster's servers.
        #[arg(long, value_delimiter = ',', group = "partition_target")]
        isolate: Vec<String>,
        /// A shape: halves, majorities-ring or bridge.
        #[arg(long, group = "partition_target")]
        shape: Option<Shape>,
        /// What the shape splits: zones (every node follows its zone) or nodes.
        #[arg(long, value_enum, default_value_t = ShapeBy::Zone, requires = "shape")]
        by: ShapeBy,
        /// How long the partition holds; reverted automatically afterwards.
        #[arg(long = "for", value_parser = super::duration_arg, allow_hyphen_values = true)]
        duration: Duration,
    },
    /// SIGKILL one replica of a service; the lab supervisor restarts it by its restart policy.
    Kill {
        /// Service name, e.g. nats.
        #[arg(long)]
        service: String,
        /// Replica number, from 1, or `primary`: the replica whose role probe says primary
        /// (or leader) now.
        #[arg(long)]
        replica: ReplicaArg,
    },
    /// SIGSTOP one replica of a service; SIGCONT when the time is up.
    Pause {
        /// Service name.
        #[arg(long)]
        service: String,
        /// Replica number, from 1, or `primary`: the replica whose role probe says primary
        /// (or leader) now.
        #[arg(long)]
        replica: ReplicaArg,
        /// How long it stays paused.
        #[arg(long = "for", value_parser = super::duration_arg, allow_hyphen_values = true)]
        duration: Duration,
    },
    /// SIGKILL one replica and keep it down (no restarts) until the time is up.
    Stop {
        /// Service name.
        #[arg(long)]
        service: String,
        /// Replica number, from 1, or `primary`: the replica whose role probe says primary
        /// (or leader) now.
        #[arg(long)]
        replica: ReplicaArg,
        /// How long it stays down.
        #[arg(long = "for", value_parser = super::duration_arg, allow_hyphen_values = true)]
        duration: Duration,
    },
    /// JetStream quorum loss: ask the servers which of them hold the stream and who leads, then
    /// stop, pause or isolate a majority of those peers (leader first) until the time is up.
    QuorumLoss {
        /// A stream name, `tenants` (the peer set most streams share) or `$meta` (the meta group).
        #[arg(long, default_value = "tenants")]
        stream: String,
        /// How to take the chosen peers out: stop, pause or isolate.
        #[arg(long, default_value = "isolate")]
        mode: QuorumLossMode,
        /// How long quorum stays lost.
        #[arg(long = "for", value_parser = super::duration_arg, allow_hyphen_values = true)]
        duration: Duration,
    },
    /// Cordon a node and evict its services, which move to other nodes where their placement
    /// allows; uncordon when the time is up.
    Drain {
        /// Node name, e.g. a1.
        #[arg(long)]
        node: String,
        /// How long the node stays cordoned.
        #[arg(long = "for", value_parser = super::duration_arg, allow_hyphen_values = true)]
        duration: Duration,
    },
}

impl FaultCommand {
    fn name(&self) -> &'static str {
        match self {
            Self::Partition { .. } => "partition",
            Self::Kill { .. } => "kill",
            Self::Pause { .. } => "pause",
            Self::Stop { .. } => "stop",
            Self::QuorumLoss { .. } => "quorum-loss",
            Self::Drain { .. } => "drain",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ShapeBy {
    Zone,
    Node,
}

impl FaultCommand {
    /// How long the fault holds (`--for`), for the faults that hold.
    fn held_for(&self) -> Option<Duration> {
        match self {
            Self::Partition { duration, .. }
            | Self::Pause { duration, .. }
            | Self::Stop { duration, .. }
            | Self::QuorumLoss { duration, .. }
            | Self::Drain { duration, .. } => Some(*duration),
            Self::Kill { .. } => None,
        }
    }
}

/// `--for` against the limit, said in the user's units and naming the flags.
fn check_held_for(held: Duration, max: Duration) -> anyhow::Result<()> {
    let text = |d: Duration| humantime::format_duration(d).to_string();
    anyhow::ensure!(
        !held.is_zero(),
        "--for 0s: a fault must hold for some time, e.g. --for 30s"
    );
    anyhow::ensure!(
        held <= max,
        "--for {} is longer than the {} limit; ask for less, or raise the limit with \
         --max-fault-duration {}",
        text(held),
        text(max),
        text(held)
    );
    Ok(())
}

pub(crate) fn inject(
    host: &HostPaths,
    args: InjectArgs,
    max: Duration,
) -> anyhow::Result<ExitCode> {
    if let Some(held) = args.fault.held_for() {
        check_held_for(held, max)?;
    }
    let ctx = LabContext::open(host, &args.lab)?;
    let hint = LabArgs::new(host, &args.lab);
    // Not into a lab that a run is judging: its checkers would count this fault's damage.
    let _lock = super::run::lock_lab(
        host,
        &args.lab,
        &format!("inject {}", args.fault.name()),
        None,
    )?;
    let record = match args.fault {
        FaultCommand::Partition {
            zone,
            node,
            zone_of_primary,
            node_of_primary,
            isolate,
            shape,
            by,
            duration,
        } => {
            let zone = match zone_of_primary {
                Some(service) => Some(announce(ctx.primary_of(&service)?).zone),
                None => zone,
            };
            let node = match node_of_primary {
                Some(service) => Some(announce(ctx.primary_of(&service)?).node),
                None => node,
            };
            let target = match (zone, node, shape) {
                (Some(zone), _, _) => PartitionTarget::Zone(zone),
                (_, Some(node), _) => PartitionTarget::Node(node),
                (_, _, Some(shape)) => PartitionTarget::Shape {
                    shape,
                    by_zone: by == ShapeBy::Zone,
                },
                _ if !isolate.is_empty() => PartitionTarget::Singletons(isolate),
                _ => anyhow::bail!(
                    "say what to partition: --zone Z, --node N, --isolate N1,N2 or --shape S"
                ),
            };
            ctx.inject_partition(&target, duration, max)?
        }
        FaultCommand::Kill { service, replica } => {
            let replica = replica.resolve(&ctx, &service)?;
            ctx.inject_kill(&service, replica)?
        }
        FaultCommand::Pause {
            service,
            replica,
            duration,
        } => {
            let replica = replica.resolve(&ctx, &service)?;
            ctx.inject_pause(&service, replica, duration, max)?
        }
        FaultCommand::Drain { node, duration } => ctx.inject_drain(&node, duration, max)?,
        FaultCommand::Stop {
            service,
            replica,
            duration,
        } => {
            let replica = replica.resolve(&ctx, &service)?;
            ctx.inject_stop(&service, replica, duration, max)?
        }
        FaultCommand::QuorumLoss {
            stream,
            mode,
            duration,
        } => {
            let loss = ctx.inject_quorum_loss(&stream, mode, duration, max)?;
            println!(
                "quorum loss on {}: peers {} (leader {}); {:?} of {}",
                loss.stream,
                loss.peers.join(", "),
                loss.leader.as_deref().unwrap_or("none"),
                loss.mode,
                loss.chosen
                    .iter()
                    .map(|s| format!("{} ({} on {})", s.name, s.replica, s.node))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            for record in &loss.faults {
                println!("{}", describe_injected(record, &hint, now_unix_ms()));
            }
            return Ok(ExitCode::SUCCESS);
        }
    };
    println!("{}", describe_injected(&record, &hint, now_unix_ms()));
    Ok(ExitCode::SUCCESS)
}

/// What a user must repeat to reach this lab again from another shell: the lab name always (the
/// environment that chose it may be gone), and the state root when it is not the default.
pub(crate) struct LabArgs {
    lab: String,
    state_root: Option<PathBuf>,
}

impl LabArgs {
    pub(crate) fn new(host: &HostPaths, lab: &str) -> Self {
        Self {
            lab: lab.to_owned(),
            state_root: (host.state_root != Path::new(DEFAULT_STATE_ROOT))
                .then(|| host.state_root.clone()),
        }
    }

    /// `--lab L` and, when needed, `--state-root P`, for a command line.
    fn flags(&self) -> String {
        let mut flags = format!("--lab {}", self.lab);
        if let Some(root) = &self.state_root {
            let _ = write!(
                flags,
                " --state-root {}",
                shell_word(&root.display().to_string())
            );
        }
        flags
    }
}

/// `word` quoted for a POSIX shell when it holds anything but plain path characters.
fn shell_word(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:,=@".contains(&b))
    {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn describe_injected(record: &FaultRecord, lab: &LabArgs, now_unix_ms: u64) -> String {
    let what = match &record.action {
        FaultAction::Partition { rules, sides, .. } => format!(
            "partitioned {} ({} rules; sides: {})",
            record.target,
            rules.len(),
            sides
                .iter()
                .map(|s| format!("[{}]", s.join(" ")))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        FaultAction::Kill { process } => format!(
            "killed {} (pid {}) with SIGKILL",
            process.label, process.pid
        ),
        FaultAction::Pause { process } => format!(
            "paused {} (pid {}) with SIGSTOP",
            process.label, process.pid
        ),
        FaultAction::Drain { node } => format!("cordoned node {node} and evicted its services"),
        FaultAction::Stop { process, .. } => format!(
            "stopped {} (pid {}) and holding it down",
            process.label, process.pid
        ),
    };
    if record.action.is_instant() {
        format!(
            "{what}\nfault {}: nothing to revert; the supervisor restarts it",
            record.id
        )
    } else {
        format!(
            "{what}\nfault {}: reverted at {} (in {}); `chaosctl revert {} {}` ends it now",
            record.id,
            rfc3339(record.deadline_unix_ms),
            humantime::format_duration(Duration::from_secs(
                record
                    .deadline_unix_ms
                    .saturating_sub(now_unix_ms)
                    .div_ceil(1000)
            )),
            record.id,
            lab.flags()
        )
    }
}

fn rfc3339(unix_ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(unix_ms)).to_string()
}

pub(crate) fn print_faults(faults: &[FaultRecord]) {
    if faults.is_empty() {
        println!("no active faults");
        return;
    }
    println!("FAULT              KIND       TARGET                          REVERTED AT");
    for fault in faults {
        println!(
            "{:<18} {:<10} {:<31} {}",
            fault.id,
            fault.action.kind_name(),
            fault.target,
            rfc3339(fault.deadline_unix_ms)
        );
    }
}

pub(crate) fn list(host: &HostPaths, lab: &str, output: Output) -> anyhow::Result<ExitCode> {
    let ctx = LabContext::open(host, lab)?;
    let faults = ctx.faults()?;
    if !output.print_data(&faults)? {
        print_faults(&faults);
        // A halt is the first thing to know when faults are listed: nothing new will start.
        if let Some(halt) = ctx.ledger().halted()? {
            println!(
                "\nHALTED since {}: new faults and runs are refused in every lab under {} until `chaosctl resume`",
                faultline_injectors::lifecycle::time_and_age(
                    halt.since_unix_ms,
                    faultline_injectors::ledger::now_unix_ms()
                ),
                host.state_root.display()
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use faultline_injectors::process::ProcessTarget;

    fn pause_record() -> FaultRecord {
        FaultRecord {
            id: "f-0001".to_owned(),
            action: FaultAction::Pause {
                process: ProcessTarget {
                    pid: 4242,
                    start_ticks: 7,
                    label: "nats/2".to_owned(),
                },
            },
            target: "nats/2".to_owned(),
            created_unix_ms: 1_800_000_000_000,
            deadline_unix_ms: 1_800_000_020_000,
            applied_unix_ms: Some(1_800_000_000_003),
        }
    }

    /// Golden: the hint is a whole command that reaches the same lab from a fresh shell.
    #[test]
    fn revert_hint_names_the_lab_and_a_non_default_state_root() {
        let now = 1_800_000_000_000;
        let default_root = HostPaths::with_state_root(DEFAULT_STATE_ROOT);
        assert_eq!(
            describe_injected(&pause_record(), &LabArgs::new(&default_root, "demo"), now),
            "paused nats/2 (pid 4242) with SIGSTOP\n\
             fault f-0001: reverted at 2027-01-15T08:00:20Z (in 20s); \
             `chaosctl revert f-0001 --lab demo` ends it now"
        );
        let other_root = HostPaths::with_state_root("/tmp/my labs");
        assert_eq!(
            describe_injected(&pause_record(), &LabArgs::new(&other_root, "default"), now),
            "paused nats/2 (pid 4242) with SIGSTOP\n\
             fault f-0001: reverted at 2027-01-15T08:00:20Z (in 20s); \
             `chaosctl revert f-0001 --lab default --state-root '/tmp/my labs'` ends it now"
        );
    }
}

/// A replica on the command line: a number, or `primary`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ReplicaArg {
    Number(u32),
    Primary,
}

impl std::str::FromStr for ReplicaArg {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "primary" | "leader" => Ok(Self::Primary),
            _ => text
                .parse()
                .map(Self::Number)
                .map_err(|_| format!("`{text}`: give a replica number (from 1) or `primary`")),
        }
    }
}

impl ReplicaArg {
    /// The replica number, asking the service's role probe for `primary`.
    fn resolve(
        self,
        ctx: &LabContext,
        service: &str,
    ) -> Result<u32, faultline_experiments::lab::LabError> {
        match self {
            Self::Number(replica) => Ok(replica),
            Self::Primary => Ok(announce(ctx.primary_of(service)?).replica),
        }
    }
}

/// Says which replica a role selector chose, and what each replica answered.
fn announce(
    choice: faultline_experiments::lab::role::RoleChoice,
) -> faultline_experiments::lab::role::RoleChoice {
    println!(
        "primary of {}: {}/{} on {} (zone {}); answers: {}",
        choice.service,
        choice.service,
        choice.replica,
        choice.node,
        choice.zone,
        choice
            .answers
            .iter()
            .map(|(replica, answer)| format!("{replica}={answer}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    choice
}
