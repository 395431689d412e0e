//! `faultlined run --experiment NS/NAME`: the runner Job the controller starts for one
//! Experiment. It reads the Experiment, validates its spec with the same `validate` as
//! `chaosctl validate`, runs it through the cluster engine ([`ClusterEngine`]), writes the
//! reports into the report volume (`REPORTS_DIR/RUN_ID/`) and records the phase, the live
//! progress, the verdicts and the score in the Experiment's status.
//!
//! SIGTERM (the controller deletes the Job when the Experiment is deleted, e.g. by Ctrl-C in
//! `chaosctl run`) is passed to the engine as an interrupt: it heals and ends early, and the
//! status says Healing, then Aborted.

use faultline_experiments::stderr_line;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Args;
use faultline_experiments::checkers::CheckReport;
use faultline_experiments::engine::run::{
    run_on_cluster, write_reports, ClusterRunOptions, LiveStatus,
};
use faultline_experiments::kubernetes::defaults::{apply_defaults, defaults_source, read_defaults};
use faultline_experiments::kubernetes::experiment::{
    parse_spec, Experiment, ExperimentPhase, ExperimentProgress, ExperimentStatus,
};
use faultline_experiments::kubernetes::target::ClusterOptions;
use faultline_experiments::spec::{ExperimentSpec, KubernetesSpec, Target};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::json;

use crate::controller::reconcile::status_patch;
use crate::controller::reports::RUN_RECORD;

/// `faultlined run`'s options.
#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// The Experiment to run, `NAMESPACE/NAME`.
    #[arg(long)]
    pub experiment: String,
    /// Faultline's namespace, where the cluster's default `kubernetes:` section is (ConfigMap
    /// `faultline-cluster-defaults`), for specs without one.
    #[arg(long, env = "POD_NAMESPACE", default_value = "faultline-system")]
    pub defaults_namespace: String,
    /// The report volume: the run's reports go to `REPORTS_DIR/RUN_ID/`.
    #[arg(long, default_value = "/var/lib/faultline/reports")]
    pub reports_dir: PathBuf,
    /// The longest one API request may take.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub api_timeout: Duration,
    /// A kubeconfig to use instead of the in-cluster service account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Cap on any fault's duration (each Fault's deadline is at most this far away).
    #[arg(long, default_value = "2h", value_parser = humantime::parse_duration)]
    pub max_fault_duration: Duration,
    /// A destination no partition cuts (IPv4 address or CIDR), on top of the API server's
    /// endpoints; repeat for more.
    #[arg(long = "exempt-cidr")]
    pub exempt_cidrs: Vec<String>,
    /// Seed for random selectors and the load schedule (default: the spec's workload.seed).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// What the engine gets for one run on the cluster.
pub struct EngineRequest<'a> {
    /// The validated spec.
    pub spec: &'a ExperimentSpec,
    /// The Experiment, `NAMESPACE/NAME` (Faults carry it).
    pub experiment: &'a str,
    /// The run id.
    pub run_id: &'a str,
    /// The run's directory on the report volume (history, logs).
    pub dir: &'a Path,
    /// The API client.
    pub client: kube::Client,
    /// Bumped on SIGTERM: heal and end early.
    pub interrupts: Arc<AtomicUsize>,
}

/// The engine's cluster target, as the runner calls it. Blocking: the engine runs its own
/// phases; `on_status` is called about ten times a second.
pub trait ClusterEngine: Send + Sync {
    /// Runs one experiment to its checkers' report.
    ///
    /// # Errors
    /// The run could not produce a report; the message says what and what to do.
    fn run(
        &self,
        request: EngineRequest<'_>,
        on_status: &mut dyn FnMut(&LiveStatus),
    ) -> Result<CheckReport, String>;
}

/// The engine on a cluster: `engine::run::run_on_cluster`, the same phases, checkers and
/// reports as on the lab, with the faults as Fault objects (drains and pod deletes through the
/// API) and the tenant load from this process straight to the pods.
#[derive(Clone, Debug)]
pub struct EngineOnCluster {
    /// The bound on each API request.
    pub api_timeout: Duration,
    /// The bound on each NATS monitoring or probe request.
    pub monitor_timeout: Duration,
    /// Cap on any fault's duration.
    pub max_fault_duration: Duration,
    /// Destinations no partition cuts, on top of the API server's endpoints.
    pub exempt_cidrs: Vec<String>,
    /// The seed; `None`: the spec's `workload.seed`.
    pub seed: Option<u64>,
}

impl Default for EngineOnCluster {
    fn default() -> Self {
        Self {
            api_timeout: Duration::from_secs(10),
            monitor_timeout: Duration::from_secs(5),
            max_fault_duration: Duration::from_secs(2 * 3600),
            exempt_cidrs: Vec::new(),
            seed: None,
        }
    }
}

/// The label value of an Experiment's Faults: `NAMESPACE.NAME`, within a label's 63 characters.
pub fn experiment_label(experiment: &str) -> String {
    let mut label = experiment.replace('/', ".");
    label.truncate(63);
    label.trim_end_matches(['.', '-']).to_owned()
}

impl ClusterEngine for EngineOnCluster {
    fn run(
        &self,
        request: EngineRequest<'_>,
        on_status: &mut dyn FnMut(&LiveStatus),
    ) -> Result<CheckReport, String> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            "the cluster engine must run on a thread of the runner's runtime (spawn_blocking)"
                .to_owned()
        })?;
        let options = ClusterRunOptions {
            spec: request.spec.clone(),
            source: format!("experiment {}", request.experiment),
            run_id: request.run_id.to_owned(),
            dir: request.dir.to_path_buf(),
            client: request.client,
            runtime,
            cluster: ClusterOptions {
                experiment: experiment_label(request.experiment),
                owner: Some(request.experiment.to_owned()),
                created_by: format!("faultline-runner {}", request.experiment),
                api_timeout: self.api_timeout,
                monitor_timeout: self.monitor_timeout,
                exempt_cidrs: self.exempt_cidrs.clone(),
                ..ClusterOptions::default()
            },
            seed: self.seed.unwrap_or(request.spec.workload.seed),
            max_fault_duration: self.max_fault_duration,
            interrupts: request.interrupts,
        };
        let outcome = run_on_cluster(&options, on_status).map_err(|e| e.to_string())?;
        outcome
            .report
            .ok_or_else(|| "the run ended without a checkers' report".to_owned())
    }
}

/// The run id: the scenario and the start time, as on the lab.
pub fn run_id(spec: &ExperimentSpec, experiment_name: &str) -> String {
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
    format!("{}-{experiment_name}-{stamp}", spec.name)
}

fn progress_of(status: &LiveStatus) -> ExperimentProgress {
    let p = &status.progress;
    ExperimentProgress {
        step: serde_json::to_value(status.phase)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        elapsed_seconds: status.elapsed.as_secs(),
        left_seconds: status.left.as_secs(),
        ops_per_second: p.ops_per_s.round() as u64,
        ops: p.ops,
        failed: p.fail,
        info: p.info,
        p99_ms: p.p99_ms.round() as u64,
        active_faults: status.active_faults.clone(),
    }
}

/// Writes the Experiment's status (merge patch, unset fields cleared).
struct StatusWriter {
    api: Api<DynamicObject>,
    name: String,
    timeout: Duration,
}

impl StatusWriter {
    async fn write(&self, status: &ExperimentStatus) -> anyhow::Result<()> {
        let patch = json!({"status": status_patch(status)});
        tokio::time::timeout(
            self.timeout,
            self.api
                .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&patch)),
        )
        .await
        .map_err(|_| anyhow::anyhow!("the API server did not answer in time"))?
        .with_context(|| format!("writing the status of experiment {}", self.name))?;
        Ok(())
    }
}

/// The status of an Experiment that failed without a verdict.
fn failed(mut status: ExperimentStatus, message: String) -> ExperimentStatus {
    status.phase = Some(ExperimentPhase::Failed);
    status.exit_code = Some(2);
    status.message = Some(message);
    status.progress = None;
    status.finished_at = Some(chrono::Utc::now().to_rfc3339());
    status
}

/// The spec of the Experiment, parsed, given the cluster's default `kubernetes:` section when
/// it has none (`defaults`, read from `defaults_source`), validated as `chaosctl validate`
/// does, and meant for a cluster; else why not.
fn checked_spec(
    value: &serde_json::Value,
    qualified: &str,
    defaults: Result<Option<KubernetesSpec>, String>,
    defaults_source: &str,
) -> Result<ExperimentSpec, String> {
    let mut spec = parse_spec(value, qualified).map_err(|e| e.to_string())?;
    let from_defaults = if spec.target == Target::Kubernetes && spec.kubernetes.is_none() {
        let defaults = defaults?;
        apply_defaults(&mut spec, defaults.as_ref(), defaults_source)
            .map_err(|e| format!("experiment {qualified}: {e}"))?
    } else {
        false
    };
    spec.validate(&format!("experiment {qualified}"))
        .map_err(|e| {
            if from_defaults {
                format!("{e} (the kubernetes: section is the cluster's defaults, {defaults_source}: complete them with the chart's clusterDefaults.kubernetes values, or give the spec its own section)")
            } else {
                e.to_string()
            }
        })?;
    if spec.target != Target::Kubernetes {
        return Err(format!(
            "experiment {qualified}: target: the spec says `target: lab`; on a cluster write `target: kubernetes` (with its kubernetes: selectors)"
        ));
    }
    Ok(spec)
}

/// [`checked_spec`], with the cluster's defaults read only when the spec needs them.
async fn spec_for_cluster(
    client: &kube::Client,
    value: &serde_json::Value,
    qualified: &str,
    defaults_namespace: &str,
    api_timeout: Duration,
) -> Result<ExperimentSpec, String> {
    let needs_defaults = value["target"] == "kubernetes"
        && value
            .get("kubernetes")
            .is_none_or(serde_json::Value::is_null);
    let defaults = if needs_defaults {
        read_defaults(client, defaults_namespace, api_timeout).await
    } else {
        Ok(None)
    };
    checked_spec(
        value,
        qualified,
        defaults,
        &defaults_source(defaults_namespace),
    )
}

/// The outcome of a runner: the exit code it ends with and the status it left.
#[derive(Debug)]
pub struct RunnerOutcome {
    /// 0 pass, 1 SLO or consistency failure, 2 error, unknown or aborted.
    pub exit_code: u8,
    /// The final status.
    pub status: ExperimentStatus,
}

/// Runs one Experiment with `engine`. Errors before the run (no such Experiment, no API) are
/// errors; a spec that does not validate, or a run that fails, ends as a Failed status. A spec
/// without a `kubernetes:` section gets the cluster's defaults from `defaults_namespace`.
///
/// # Errors
/// The Experiment cannot be read, or its status cannot be written.
pub async fn run_experiment(
    client: kube::Client,
    qualified: &str,
    defaults_namespace: &str,
    reports_dir: &Path,
    api_timeout: Duration,
    interrupts: Arc<AtomicUsize>,
    engine: Arc<dyn ClusterEngine>,
) -> anyhow::Result<RunnerOutcome> {
    let (namespace, name) = qualified.split_once('/').with_context(|| {
        format!("--experiment {qualified:?}: write NAMESPACE/NAME, e.g. default/az-failure")
    })?;
    let resource = ApiResource::erase::<Experiment>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let object = tokio::time::timeout(api_timeout, api.get(name))
        .await
        .map_err(|_| {
            anyhow::anyhow!("reading experiment {qualified}: the API server did not answer in time")
        })?
        .with_context(|| format!("reading experiment {qualified}"))?;
    let writer = StatusWriter {
        api,
        name: object.name_any(),
        timeout: api_timeout,
    };
    let mut status: ExperimentStatus =
        serde_json::from_value(object.data["status"].clone()).unwrap_or_default();
    let spec = match spec_for_cluster(
        &client,
        &object.data["spec"],
        qualified,
        defaults_namespace,
        api_timeout,
    )
    .await
    {
        Ok(spec) => spec,
        Err(message) => {
            let status = failed(status, message);
            writer.write(&status).await?;
            return Ok(RunnerOutcome {
                exit_code: 2,
                status,
            });
        }
    };

    let id = run_id(&spec, name);
    let dir = reports_dir.join(&id);
    std::fs::create_dir_all(&dir).with_context(|| {
        format!(
            "creating the run directory {}; is the report volume mounted?",
            dir.display()
        )
    })?;
    let started_at = chrono::Utc::now().to_rfc3339();
    std::fs::write(
        dir.join(RUN_RECORD),
        serde_json::to_vec_pretty(&json!({
            "experiment": qualified,
            "uid": object.uid(),
            "scenario": spec.name,
            "runId": id,
            "startedAt": started_at,
        }))?,
    )
    .with_context(|| format!("writing {}", dir.join(RUN_RECORD).display()))?;
    status.phase = Some(ExperimentPhase::Running);
    status.run_id = Some(id.clone());
    status.report_path = Some(dir.display().to_string());
    status.started_at = Some(started_at);
    status.message = Some(format!("running {} (run {id})", spec.name));
    writer.write(&status).await?;

    let result = drive(
        engine,
        Owned {
            spec,
            experiment: qualified.to_owned(),
            run_id: id,
            dir: dir.clone(),
            client,
            interrupts: Arc::clone(&interrupts),
        },
        &writer,
        &mut status,
    )
    .await;
    let status = final_status(status, result, &dir, interrupts.load(Ordering::SeqCst) > 0);
    writer.write(&status).await?;
    Ok(RunnerOutcome {
        exit_code: status
            .exit_code
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(2),
        status,
    })
}

/// The status once the engine is done: its report's verdicts (Aborted when interrupted), or
/// Failed with why. The reports are (re)written into `dir` with the report.
fn final_status(
    mut status: ExperimentStatus,
    result: Result<Result<CheckReport, String>, tokio::task::JoinError>,
    dir: &Path,
    interrupted: bool,
) -> ExperimentStatus {
    status.progress = None;
    status.finished_at = Some(chrono::Utc::now().to_rfc3339());
    match result {
        Ok(Ok(report)) => {
            if let Err(error) = write_reports(&report, dir) {
                failed(
                    status,
                    format!("the run finished but its reports could not be written: {error}"),
                )
            } else {
                status.record_report(&report);
                if interrupted {
                    status.phase = Some(ExperimentPhase::Aborted);
                    status.exit_code = Some(2);
                }
                status
            }
        }
        Ok(Err(message)) => failed(status, message),
        Err(panic) => failed(status, format!("the engine failed unexpectedly: {panic}")),
    }
}

/// What the engine's thread owns for one run.
struct Owned {
    spec: ExperimentSpec,
    experiment: String,
    run_id: String,
    dir: PathBuf,
    client: kube::Client,
    interrupts: Arc<AtomicUsize>,
}

/// Runs the engine on a blocking thread and, while it runs, writes its live progress (about
/// once a second) and Healing once interrupted.
async fn drive(
    engine: Arc<dyn ClusterEngine>,
    run: Owned,
    writer: &StatusWriter,
    status: &mut ExperimentStatus,
) -> Result<Result<CheckReport, String>, tokio::task::JoinError> {
    // The engine runs on a blocking thread; its live status reaches the API about once a second.
    let latest: Arc<Mutex<Option<ExperimentProgress>>> = Arc::default();
    let interrupts = Arc::clone(&run.interrupts);
    let engine_run = {
        let latest = Arc::clone(&latest);
        tokio::task::spawn_blocking(move || {
            let mut on_status = |live: &LiveStatus| {
                *latest
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(progress_of(live));
            };
            engine.run(
                EngineRequest {
                    spec: &run.spec,
                    experiment: &run.experiment,
                    run_id: &run.run_id,
                    dir: &run.dir,
                    client: run.client,
                    interrupts: run.interrupts,
                },
                &mut on_status,
            )
        })
    };
    tokio::pin!(engine_run);
    let mut last_write = Instant::now();
    let mut healing = false;
    loop {
        tokio::select! {
            result = &mut engine_run => return result,
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
        let interrupted = interrupts.load(Ordering::SeqCst) > 0;
        if interrupted && !healing {
            healing = true;
            status.phase = Some(ExperimentPhase::Healing);
            status.message = Some("interrupted (SIGTERM): healing every fault".into());
            let _ = writer.write(status).await;
        }
        if last_write.elapsed() >= Duration::from_secs(1) {
            last_write = Instant::now();
            let progress = latest
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            if progress.is_some() && progress != status.progress {
                status.progress = progress;
                // Progress is best effort: the final status is what must land.
                let _ = writer.write(status).await;
            }
        }
    }
}

/// `faultlined run`: the runner Job's entry point.
pub fn main(args: &RunArgs) -> anyhow::Result<std::process::ExitCode> {
    let interrupts = Arc::new(AtomicUsize::new(0));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register_usize(signal, Arc::clone(&interrupts), 1)
            .context("installing signal handlers")?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let client = crate::kube_client(args.kubeconfig.as_deref(), false).await?;
        let outcome = run_experiment(
            client,
            &args.experiment,
            &args.defaults_namespace,
            &args.reports_dir,
            args.api_timeout,
            interrupts,
            Arc::new(EngineOnCluster {
                api_timeout: args.api_timeout,
                max_fault_duration: args.max_fault_duration,
                exempt_cidrs: args.exempt_cidrs.clone(),
                seed: args.seed,
                ..EngineOnCluster::default()
            }),
        )
        .await?;
        stderr_line!(
            "faultlined run: experiment {}: {} ({})",
            args.experiment,
            outcome.status.phase.unwrap_or_default().as_str(),
            outcome.status.message.as_deref().unwrap_or("-")
        );
        Ok(std::process::ExitCode::from(outcome.exit_code))
    })
}
