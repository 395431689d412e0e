//! `chaosctl --context C run NAME|FILE`, `report` and `runs` on a cluster.
//!
//! `run` creates an Experiment (the spec as on the lab, with `target: kubernetes`) and follows
//! its status: phase changes and the live progress the runner writes, then the verdicts. The
//! exit code is the verdict's, as on the lab. Ctrl-C deletes the Experiment: the controller
//! deletes its runner Job and its Faults, and the runner heals on SIGTERM.
//!
//! `report` and `runs` read the controller's report server through the API server's service
//! proxy (`/api/v1/namespaces/NS/services/faultline-controller:http/proxy/...`), so no
//! port-forward is needed; the caller needs `get` on `services/proxy` in Faultline's namespace.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::ValueEnum;
use faultline_experiments::kubernetes::defaults::{apply_defaults, defaults_source, read_defaults};
use faultline_experiments::kubernetes::drain::FAULTLINE_NAMESPACE;
use faultline_experiments::kubernetes::experiment::{
    Experiment, ExperimentBody, ExperimentPhase, ExperimentStatus,
};
use faultline_experiments::spec::{ExperimentSpec, Target as SpecTarget};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};

use super::cluster::{Target, REQUEST_DEADLINE};
use crate::controller::reports::RunEntry;

/// The controller's Service.
pub const CONTROLLER_SERVICE: &str = "faultline-controller";
/// The name of its port.
pub const CONTROLLER_PORT: &str = "http";

/// Which report to fetch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportKind {
    /// The self-contained HTML page.
    Html,
    /// The JSON report (versioned schema).
    Json,
    /// JUnit XML.
    Xml,
}

impl ReportKind {
    fn file(self) -> &'static str {
        match self {
            ReportKind::Html => "report.html",
            ReportKind::Json => "report.json",
            ReportKind::Xml => "report.xml",
        }
    }
}

/// The service-proxy path of the controller's `tail` (e.g. `runs`).
pub fn proxy_path(controller_namespace: &str, tail: &str) -> String {
    format!(
        "/api/v1/namespaces/{controller_namespace}/services/{CONTROLLER_SERVICE}:{CONTROLLER_PORT}/proxy/{tail}"
    )
}

async fn proxy_get(client: &Client, path: &str, what: &str) -> anyhow::Result<String> {
    let request = http::Request::get(path)
        .body(Vec::new())
        .context("building the request")?;
    match tokio::time::timeout(REQUEST_DEADLINE, client.request_text(request)).await {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(kube::Error::Api(status))) if status.code == 404 => bail!(
            "{what}: not found ({}); `chaosctl --context C runs` lists the runs",
            status.message
        ),
        Ok(Err(kube::Error::Api(status))) if status.code == 503 => bail!(
            "{what}: the controller's Service has no ready endpoint ({}); is `faultlined controller` running (`kubectl -n faultline-system get pods`)?",
            status.message
        ),
        Ok(Err(kube::Error::Api(status))) if status.code == 403 => bail!(
            "{what}: forbidden ({}); reading reports needs `get` on `services/proxy` in Faultline's namespace",
            status.message
        ),
        Ok(Err(error)) => Err(error).with_context(|| format!("{what} failed")),
        Err(_) => bail!(
            "{what}: the API server did not answer within {}s; is the cluster reachable?",
            REQUEST_DEADLINE.as_secs()
        ),
    }
}

/// Fetches one run's report through the service proxy.
///
/// # Errors
/// The run or report does not exist, the controller is down, or the API fails.
pub async fn fetch_report(
    client: &Client,
    controller_namespace: &str,
    run_id: &str,
    kind: ReportKind,
) -> anyhow::Result<String> {
    if !crate::controller::reports::valid_run_id(run_id) {
        bail!("{run_id:?} is not a run id; `chaosctl --context C runs` lists them");
    }
    let path = proxy_path(
        controller_namespace,
        &format!("runs/{run_id}/{}", kind.file()),
    );
    proxy_get(
        client,
        &path,
        &format!("fetching {} of run {run_id}", kind.file()),
    )
    .await
}

/// Lists the runs on the report volume through the service proxy.
///
/// # Errors
/// The controller is down or the API fails.
pub async fn list_runs(
    client: &Client,
    controller_namespace: &str,
) -> anyhow::Result<Vec<RunEntry>> {
    let text = proxy_get(
        client,
        &proxy_path(controller_namespace, "runs"),
        "listing runs",
    )
    .await?;
    serde_json::from_str(&text).context("the controller's /runs answer is not a run list")
}

/// Creates the Experiment (named after the scenario, with a generated suffix) in the client's
/// default namespace; returns its name.
///
/// # Errors
/// The Experiment CRD is missing, or the API fails.
pub async fn create_experiment(
    client: &Client,
    namespace: &str,
    spec: ExperimentSpec,
) -> anyhow::Result<String> {
    let api: Api<Experiment> = Api::namespaced(client.clone(), namespace);
    let mut experiment = Experiment::new("", ExperimentBody(spec));
    experiment.metadata.name = None;
    experiment.metadata.generate_name = Some(format!("{}-", experiment.spec.name));
    match tokio::time::timeout(REQUEST_DEADLINE, api.create(&PostParams::default(), &experiment)).await {
        Ok(Ok(created)) => Ok(created.name_any()),
        Ok(Err(kube::Error::Api(status))) if status.code == 404 => bail!(
            "the Experiment resource is not installed (or namespace {namespace} does not exist): apply the manifests first (`kubectl apply -f manifests/`)"
        ),
        Ok(Err(error)) => Err(error).with_context(|| format!("creating the Experiment in namespace {namespace}")),
        Err(_) => bail!(
            "creating the Experiment: the API server did not answer within {}s; is the cluster reachable (`kubectl --context ... get nodes`)?",
            REQUEST_DEADLINE.as_secs()
        ),
    }
}

/// How following an Experiment ended.
#[derive(Debug)]
pub struct FollowEnd {
    /// The exit code: the verdict's, or 2 when aborted, failed without a verdict, or
    /// interrupted.
    pub exit_code: u8,
    /// The last status seen.
    pub status: ExperimentStatus,
    /// Whether Ctrl-C ended it (and the Experiment was deleted).
    pub interrupted: bool,
}

/// Follows an Experiment until it finishes, calling `say` with each line of the live display
/// (phase changes, progress, then the verdicts). Once `interrupts` is above zero it deletes the
/// Experiment and returns.
///
/// # Errors
/// The API fails or the Experiment disappears without finishing.
pub async fn follow(
    client: &Client,
    namespace: &str,
    name: &str,
    interrupts: &AtomicUsize,
    poll: Duration,
    say: &mut dyn FnMut(&str),
) -> anyhow::Result<FollowEnd> {
    let api: Api<Experiment> = Api::namespaced(client.clone(), namespace);
    let mut last = ExperimentStatus::default();
    let mut shown_phase: Option<ExperimentPhase> = None;
    let mut shown_progress = String::new();
    loop {
        if interrupts.load(Ordering::SeqCst) > 0 {
            match tokio::time::timeout(REQUEST_DEADLINE, api.delete(name, &DeleteParams::default())).await {
                Ok(Ok(_)) => say(&format!(
                    "interrupted: deleted experiment {namespace}/{name}; the controller stops its runner, which heals every fault"
                )),
                Ok(Err(kube::Error::Api(status))) if status.code == 404 => {}
                Ok(Err(error)) => return Err(error).with_context(|| format!(
                    "deleting experiment {namespace}/{name}; delete it by hand (`kubectl -n {namespace} delete experiment {name}`)"
                )),
                Err(_) => bail!(
                    "deleting experiment {namespace}/{name}: the API server did not answer; delete it by hand (`kubectl -n {namespace} delete experiment {name}`); its faults end at their deadlines anyway"
                ),
            }
            return Ok(FollowEnd {
                exit_code: 2,
                status: last,
                interrupted: true,
            });
        }
        let experiment = match tokio::time::timeout(REQUEST_DEADLINE, api.get_opt(name)).await {
            Ok(Ok(Some(experiment))) => experiment,
            Ok(Ok(None)) => bail!(
                "experiment {namespace}/{name} was deleted before it finished (last phase {})",
                last.phase.unwrap_or_default().as_str()
            ),
            Ok(Err(error)) => {
                return Err(error).with_context(|| format!("reading experiment {namespace}/{name}"))
            }
            Err(_) => bail!(
                "reading experiment {namespace}/{name}: the API server did not answer within {}s; the experiment goes on in the cluster (`kubectl -n {namespace} get experiment {name}`)",
                REQUEST_DEADLINE.as_secs()
            ),
        };
        last = experiment.status.clone().unwrap_or_default();
        let phase = last.phase.unwrap_or_default();
        if shown_phase != Some(phase) {
            shown_phase = Some(phase);
            say(&format!(
                "{namespace}/{name}: {}{}",
                phase.as_str(),
                last.message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ));
        }
        if let Some(progress) = &last.progress {
            let line = progress.line();
            if line != shown_progress {
                say(&line);
                shown_progress = line;
            }
        }
        if phase.is_finished() {
            for verdict in &last.verdicts {
                say(&format!(
                    "  {:<12} {:<8} {}",
                    verdict.name, verdict.status, verdict.summary
                ));
            }
            if let Some(verdict) = &last.verdict {
                say(&format!(
                    "verdict: {verdict}{}",
                    last.score
                        .map(|s| format!(" (score {s})"))
                        .unwrap_or_default()
                ));
            }
            let exit_code = last
                .exit_code
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or(2);
            return Ok(FollowEnd {
                exit_code,
                status: last,
                interrupted: false,
            });
        }
        tokio::time::sleep(poll).await;
    }
}

fn count_interrupts() -> anyhow::Result<Arc<AtomicUsize>> {
    let count = Arc::new(AtomicUsize::new(0));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_usize(signal, Arc::clone(&count), 1)
            .context("cannot handle SIGINT/SIGTERM")?;
    }
    Ok(count)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// How long reading the cluster's defaults may take.
const DEFAULTS_TIMEOUT: Duration = Duration::from_secs(5);

/// `chaosctl --context C run NAME|FILE`.
pub fn run(
    target: &Target,
    scenario: &str,
    duration: Option<Duration>,
    tenants: Option<u32>,
    rate: Option<f64>,
) -> anyhow::Result<ExitCode> {
    let (mut spec, source) = super::scenarios::read(scenario)?;
    // The catalog's scenarios are written for the lab; on a cluster the same scenario runs
    // against the cluster target.
    let written_for_lab = spec.target == SpecTarget::Lab;
    spec.target = SpecTarget::Kubernetes;
    spec.apply_overrides(duration, tenants, rate);
    let runtime = runtime()?;
    // A spec without selectors (a catalog scenario) gets the cluster's defaults, and the
    // Experiment records them, so that it shows what ran.
    let defaults = defaults_source(FAULTLINE_NAMESPACE);
    let from_defaults = if spec.kubernetes.is_none() {
        let read = runtime.block_on(async {
            let client = target.client().await?;
            anyhow::Ok(read_defaults(&client, FAULTLINE_NAMESPACE, DEFAULTS_TIMEOUT).await)
        })?;
        let read = read.map_err(|e| {
            anyhow::anyhow!("{e}\n{source} has no kubernetes: section, so it needs the cluster's defaults; give it its own section (start from `chaosctl show {}`)", spec.name)
        })?;
        apply_defaults(&mut spec, read.as_ref(), &defaults).map_err(anyhow::Error::msg)?
    } else {
        false
    };
    if let Err(error) = spec.validate(&source) {
        if from_defaults {
            bail!(
                "{error}\nthe kubernetes: section came from the cluster's defaults ({defaults}): complete them (the chart's clusterDefaults.kubernetes values), or give the spec its own section (start from `chaosctl show {}`)",
                spec.name
            );
        }
        if written_for_lab {
            bail!(
                "{error}\n{source} is written for the lab; for a cluster, start from `chaosctl show {}` and set `target: kubernetes` with what it needs there",
                spec.name
            );
        }
        return Err(error.into());
    }
    let interrupts = count_interrupts()?;
    runtime.block_on(async {
        let client = target.client().await?;
        let namespace = client.default_namespace().to_owned();
        let name = create_experiment(&client, &namespace, spec).await?;
        println!(
            "created experiment {namespace}/{name} in {}; following it (Ctrl-C deletes it, which heals every fault)",
            target.describe()
        );
        let end = follow(
            &client,
            &namespace,
            &name,
            &interrupts,
            Duration::from_secs(1),
            &mut |line| println!("{line}"),
        )
        .await?;
        if let Some(run_id) = &end.status.run_id {
            println!(
                "report: chaosctl{} report {run_id}   (on the report volume: {})",
                target.flags(),
                end.status.report_path.as_deref().unwrap_or("-")
            );
        }
        Ok(ExitCode::from(end.exit_code))
    })
}

/// `chaosctl --context C report RUN_ID`: saves one report fetched through the service proxy.
pub fn report(
    target: &Target,
    run_id: &str,
    kind: ReportKind,
    output: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let client = target.client().await?;
        let text = fetch_report(&client, &target.controller_namespace, run_id, kind).await?;
        let path = output.unwrap_or_else(|| PathBuf::from(format!("{run_id}.{}", kind.file())));
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!(
            "saved {} of run {run_id} to {}",
            kind.file(),
            path.display()
        );
        Ok(ExitCode::SUCCESS)
    })
}

/// `chaosctl --context C runs`: the runs on the report volume, newest first.
pub fn runs(target: &Target) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async {
        let client = target.client().await?;
        let runs = list_runs(&client, &target.controller_namespace).await?;
        if runs.is_empty() {
            println!("no runs on the report volume yet");
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "{:<48} {:<28} {:<8} {:<5} STARTED",
            "RUN", "EXPERIMENT", "VERDICT", "SCORE"
        );
        for run in runs {
            println!(
                "{:<48} {:<28} {:<8} {:<5} {}",
                run.id,
                run.experiment.as_deref().unwrap_or("-"),
                run.verdict.as_deref().unwrap_or("-"),
                run.score.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                run.started_at.as_deref().unwrap_or("-"),
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
