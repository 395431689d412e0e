//! `chaosctl` against a cluster (`--context`, `--kubeconfig`, `-n`): halt, resume and the list
//! of Faults, through the API server (`run`, `report` and `runs` are in `cluster_run`). Every request has a deadline, so an unreachable cluster gives
//! a clear error in seconds instead of a hang.

use faultline_experiments::stderr_line;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};
use faultline_experiments::kubernetes::crd::{Fault, Halt, HaltSpec, HALT_NAME};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client, ResourceExt};

use super::Output;

/// How long one API request may take before chaosctl gives up.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(8);
/// How long `halt` waits for the agents to report every fault reverted.
const HALT_WAIT: Duration = Duration::from_secs(5);

/// Which cluster to talk to, as kubectl's flags name it.
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// The kubeconfig context (`--context`).
    pub context: Option<String>,
    /// The kubeconfig file (`--kubeconfig`), else `KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// The namespace for Experiments (`-n`), else the context's.
    pub namespace: Option<String>,
    /// Faultline's own namespace (the controller's Service, for reports).
    pub controller_namespace: String,
}

impl Target {
    /// Whether a cluster was asked for at all.
    pub fn is_cluster(&self) -> bool {
        self.context.is_some() || self.kubeconfig.is_some()
    }

    /// The flags that name this cluster again, for commands printed to the user.
    pub fn flags(&self) -> String {
        let mut flags = String::new();
        if let Some(context) = &self.context {
            flags = format!(" --context {context}");
        }
        if let Some(kubeconfig) = &self.kubeconfig {
            flags = format!("{flags} --kubeconfig {}", kubeconfig.display());
        }
        flags
    }

    /// The cluster, for messages.
    pub fn describe(&self) -> String {
        match (&self.context, &self.kubeconfig) {
            (Some(c), _) => format!("context {c}"),
            (None, Some(k)) => format!("kubeconfig {}", k.display()),
            (None, None) => "the current context".into(),
        }
    }

    /// An API client for the cluster; every request has [`REQUEST_DEADLINE`].
    ///
    /// # Errors
    /// The kubeconfig or context cannot be used.
    pub async fn client(&self) -> anyhow::Result<Client> {
        let options = kube::config::KubeConfigOptions {
            context: self.context.clone(),
            ..Default::default()
        };
        let config = match &self.kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path)
                    .with_context(|| format!("cannot read kubeconfig {}", path.display()))?;
                kube::Config::from_custom_kubeconfig(file, &options).await
            }
            None => kube::Config::from_kubeconfig(&options).await,
        }
        .with_context(|| {
            format!(
                "cannot use {}; check `kubectl config get-contexts`",
                self.describe()
            )
        })?;
        let mut config = config;
        config.connect_timeout = Some(REQUEST_DEADLINE);
        config.read_timeout = Some(REQUEST_DEADLINE);
        // kube retries 429, 503 and 504 by default, for longer than the deadline: a CLI says
        // what the API server answered at once instead (e.g. 503, no controller behind the
        // report Service).
        config.default_retry = false;
        if let Some(namespace) = &self.namespace {
            config.default_namespace.clone_from(namespace);
        }
        Client::try_from(config).context("cannot build the API client")
    }
}

async fn within<T>(
    target: &Target,
    what: &str,
    request: impl std::future::Future<Output = kube::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(REQUEST_DEADLINE, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(kube::Error::Api(status))) if status.code == 404 && what.contains("Faults") => bail!(
            "the Fault resource is not installed in {}: apply the manifests first (`kubectl apply -f manifests/`)",
            target.describe()
        ),
        Ok(Err(error)) => Err(error).with_context(|| format!("{what} in {} failed", target.describe())),
        Err(_) => bail!(
            "{what}: the API server of {} did not answer within {}s; is the cluster reachable (`kubectl --context ... get nodes`)?",
            target.describe(),
            REQUEST_DEADLINE.as_secs()
        ),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Faults with a node that applied them and has not reverted yet: (fault, node).
fn still_active(faults: &[Fault]) -> Vec<(String, String)> {
    faults
        .iter()
        .flat_map(|fault| {
            fault
                .status
                .iter()
                .flat_map(|s| s.nodes.iter())
                .filter(|(_, n)| n.applied_at.is_some() && n.reverted_at.is_none())
                .map(|(node, _)| (fault.name_any(), node.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `chaosctl halt --context C`: creates the Halt object that every agent obeys within a
/// second, then waits briefly for the agents to report every fault reverted.
pub fn halt(target: &Target, reason: &str) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let client = target.client().await?;
        let halts: Api<Halt> = Api::all(client.clone());
        let who = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
        let halt = Halt::new(
            HALT_NAME,
            HaltSpec {
                reason: reason.to_owned(),
                requested_by: format!("chaosctl ({who})"),
            },
        );
        match tokio::time::timeout(REQUEST_DEADLINE, halts.create(&PostParams::default(), &halt)).await {
            Ok(Ok(_)) => println!("halt set in {}: agents revert every fault and apply none until `chaosctl resume`", target.describe()),
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => {
                println!("already halted in {}", target.describe());
            }
            Ok(Err(kube::Error::Api(status))) if status.code == 404 => bail!(
                "the Halt resource is not installed in {}: apply the manifests first (`kubectl apply -f manifests/`)",
                target.describe()
            ),
            Ok(Err(error)) => return Err(error).with_context(|| format!("creating the Halt in {}", target.describe())),
            Err(_) => bail!(
                "creating the Halt: the API server of {} did not answer within {}s; is the cluster reachable?",
                target.describe(),
                REQUEST_DEADLINE.as_secs()
            ),
        }
        let faults: Api<Fault> = Api::all(client);
        let start = Instant::now();
        loop {
            let listed = within(target, "listing Faults", faults.list(&ListParams::default())).await?;
            let active = still_active(&listed.items);
            if active.is_empty() {
                println!("every node reports its faults reverted ({:.1}s)", start.elapsed().as_secs_f64());
                return Ok(ExitCode::SUCCESS);
            }
            if start.elapsed() > HALT_WAIT {
                for (fault, node) in &active {
                    stderr_line!("chaosctl: {fault} on {node}: not reported reverted yet (the agent may be cut off; it heals at the deadline on its own)");
                }
                return Ok(ExitCode::from(1));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// `chaosctl resume --context C`: deletes the Halt object.
pub fn resume(target: &Target) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let halts: Api<Halt> = Api::all(target.client().await?);
        match tokio::time::timeout(REQUEST_DEADLINE, halts.delete(HALT_NAME, &DeleteParams::default())).await {
            Ok(Ok(_)) => println!("resumed in {}: new faults are allowed again", target.describe()),
            Ok(Err(kube::Error::Api(status))) if status.code == 404 => {
                println!("{} is not halted; nothing to do", target.describe());
            }
            Ok(Err(error)) => return Err(error).with_context(|| format!("deleting the Halt in {}", target.describe())),
            Err(_) => bail!(
                "deleting the Halt: the API server of {} did not answer within {}s; is the cluster reachable?",
                target.describe(),
                REQUEST_DEADLINE.as_secs()
            ),
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `chaosctl faults --context C`: every Fault with what each node did.
pub fn list(target: &Target, output: Output) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let client = target.client().await?;
        let faults: Api<Fault> = Api::all(client.clone());
        let listed = within(
            target,
            "listing Faults",
            faults.list(&ListParams::default()),
        )
        .await?;
        let halts: Api<Halt> = Api::all(client);
        let halted = within(target, "listing Halts", halts.list(&ListParams::default())).await?;
        if output.print_data(&serde_json::json!({
            "halted": !halted.items.is_empty(),
            "faults": listed.items,
        }))? {
            return Ok(ExitCode::SUCCESS);
        }
        if let Some(halt) = halted.items.first() {
            println!(
                "HALTED ({}): no fault is applied until `chaosctl resume`",
                halt.spec.reason
            );
        }
        if listed.items.is_empty() {
            println!("no Faults in {}", target.describe());
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "{:<28} {:<10} {:<24} {:<22} NODES",
            "NAME", "ACTION", "DEADLINE", "EXPERIMENT"
        );
        for fault in &listed.items {
            let nodes: Vec<String> = fault
                .status
                .iter()
                .flat_map(|s| s.nodes.iter())
                .map(|(node, s)| {
                    let state = match (&s.applied_at, &s.reverted_at, &s.reason) {
                        (_, Some(_), Some(reason)) => reason.clone(),
                        (Some(_), None, _) => "active".into(),
                        _ => s
                            .last_error
                            .clone()
                            .map_or_else(|| "pending".into(), |_| "error".into()),
                    };
                    format!("{node}={state}")
                })
                .collect();
            println!(
                "{:<28} {:<10} {:<24} {:<22} {}",
                fault.name_any(),
                fault.spec.action.as_str(),
                describe_deadline(&fault.spec.deadline),
                fault.spec.experiment.as_deref().unwrap_or("-"),
                if nodes.is_empty() {
                    "-".into()
                } else {
                    nodes.join(",")
                }
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn describe_deadline(deadline: &str) -> String {
    let Ok(at) = humantime::parse_rfc3339_weak(deadline) else {
        return deadline.to_owned();
    };
    match at.duration_since(SystemTime::now()) {
        Ok(left) => format!(
            "in {}",
            humantime::format_duration(Duration::from_secs(left.as_secs()))
        ),
        Err(past) => format!(
            "{} ago",
            humantime::format_duration(Duration::from_secs(past.duration().as_secs()))
        ),
    }
}
