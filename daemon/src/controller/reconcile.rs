//! One reconcile pass of the leading controller. Each pass reads the whole picture (Experiments,
//! runner Jobs, Faults, our cordons) and moves it one step; a pass cut short by a lost Lease or
//! a failed request leaves nothing that the next pass (here or on another replica) cannot
//! finish. Every write is idempotent: Job names are derived from the Experiment, Event names
//! from the Fault, and status is written only when it changes.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use faultline_experiments::kubernetes::cordon::{reconcile_orphaned_cordons, LiveFaults};
use faultline_experiments::kubernetes::crd::Fault;
use faultline_experiments::kubernetes::experiment::{
    parse_spec, Experiment, ExperimentPhase, ExperimentStatus,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    PropagationPolicy,
};
use kube::ResourceExt;
use serde_json::json;

use super::audit::{Auditor, Happening, Regarding};
use super::{log, ControllerConfig};

/// Label on every runner Job.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY: &str = "faultline-controller";
/// Annotation on a runner Job naming its Experiment, `NAMESPACE/NAME`.
pub const EXPERIMENT_ANNOTATION: &str = "faultline.dev/experiment";
/// Annotation on a runner Job holding its Experiment's uid.
pub const EXPERIMENT_UID_ANNOTATION: &str = "faultline.dev/experiment-uid";
/// Annotation on a runner Job naming the controller replica that started it.
pub const STARTED_BY_ANNOTATION: &str = "faultline.dev/started-by";

/// What a pass remembers between passes (the audit entries already written).
#[derive(Default)]
pub struct Memory {
    auditor: Option<Auditor>,
}

/// Errors of a pass.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// A request failed.
    #[error("{what}: {source}")]
    Api {
        /// What the pass was doing.
        what: String,
        /// The error.
        source: kube::Error,
    },
    /// A request took longer than the API timeout.
    #[error("{0}: the API server did not answer in time")]
    Timeout(String),
    /// The cordon reconcile failed.
    #[error(transparent)]
    Cordon(#[from] faultline_experiments::kubernetes::cordon::CordonError),
}

/// What one pass did, for tests and the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Runner Jobs created, by name.
    pub jobs_started: Vec<String>,
    /// Experiments newly Queued, `NS/NAME`.
    pub queued: Vec<String>,
    /// Runner Jobs deleted because their Experiment is gone.
    pub jobs_deleted: Vec<String>,
    /// Faults deleted because their deadline passed.
    pub expired_faults: Vec<String>,
    /// Faults deleted because their Experiment is gone.
    pub orphaned_faults: Vec<String>,
    /// Nodes uncordoned.
    pub uncordoned: Vec<String>,
    /// Experiments whose runner ended without a verdict, marked so.
    pub runner_lost: Vec<String>,
}

async fn bounded<T>(
    timeout: Duration,
    what: impl Into<String>,
    request: impl std::future::Future<Output = kube::Result<T>>,
) -> Result<T, PassError> {
    let what = what.into();
    match tokio::time::timeout(timeout, request).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(source)) => Err(PassError::Api { what, source }),
        Err(_) => Err(PassError::Timeout(what)),
    }
}

/// An Experiment as the pass sees it. Read as a dynamic object, so that one Experiment with a
/// spec this version cannot parse fails alone (with its status saying why), not the whole list.
#[derive(Clone, Debug)]
struct Seen {
    namespace: String,
    name: String,
    uid: String,
    created: String,
    deleting: bool,
    status: ExperimentStatus,
    spec: serde_json::Value,
}

impl Seen {
    fn qualified(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn phase(&self) -> ExperimentPhase {
        self.status.phase.unwrap_or_default()
    }

    fn regarding(&self) -> Regarding {
        Regarding {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
        }
    }
}

fn experiment_resource() -> ApiResource {
    ApiResource::erase::<Experiment>(&())
}

fn seen(object: &DynamicObject) -> Seen {
    Seen {
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
        uid: object.uid().unwrap_or_default(),
        created: object
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
        deleting: object.metadata.deletion_timestamp.is_some(),
        status: serde_json::from_value(object.data["status"].clone()).unwrap_or_default(),
        spec: object.data["spec"].clone(),
    }
}

/// The runner Job's name for an Experiment: stable, so a second leader cannot start a second
/// runner (its create gets 409), and within the 63 characters a Job's pods label it with.
pub fn job_name(namespace: &str, name: &str, uid: &str) -> String {
    let mut stem = format!("run-{namespace}-{name}");
    stem.truncate(50);
    let stem = stem.trim_end_matches('-');
    let short: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect();
    format!("{stem}-{short}").to_lowercase()
}

/// How long past the spec's own run time (baseline, faults, recovery deadline) a runner may
/// take for setup, the read-back, the checkers and the reports before Kubernetes stops it.
pub const RUNNER_SLACK: Duration = Duration::from_secs(30 * 60);

/// The runner Job for an Experiment. `run_time` bounds it (`activeDeadlineSeconds`, plus
/// [`RUNNER_SLACK`]): a runner stuck for good would otherwise hold the cluster's one slot.
pub fn runner_job(
    config: &ControllerConfig,
    experiment: &str,
    uid: &str,
    job: &str,
    run_time: Duration,
) -> Job {
    let reports = config.reports_dir.display().to_string();
    let labels: BTreeMap<String, String> = [
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
        ("app.kubernetes.io/name".to_owned(), "faultline".to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            "runner".to_owned(),
        ),
    ]
    .into();
    Job {
        metadata: ObjectMeta {
            name: Some(job.to_owned()),
            namespace: Some(config.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(
                [
                    (EXPERIMENT_ANNOTATION.to_owned(), experiment.to_owned()),
                    (EXPERIMENT_UID_ANNOTATION.to_owned(), uid.to_owned()),
                    (STARTED_BY_ANNOTATION.to_owned(), config.identity.clone()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            // A runner that dies is not retried: the Experiment is marked and a person decides.
            backoff_limit: Some(0),
            active_deadline_seconds: Some(
                i64::try_from((run_time + RUNNER_SLACK).as_secs()).unwrap_or(i64::MAX),
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: Some(config.runner_service_account.clone()),
                    // Room for the final heal after SIGTERM.
                    termination_grace_period_seconds: Some(60),
                    containers: vec![Container {
                        name: "runner".into(),
                        image: Some(config.runner_image.clone()),
                        args: Some(vec![
                            "run".into(),
                            "--experiment".into(),
                            experiment.to_owned(),
                            "--reports-dir".into(),
                            reports.clone(),
                            "--defaults-namespace".into(),
                            config.namespace.clone(),
                        ]),
                        volume_mounts: Some(vec![VolumeMount {
                            name: "reports".into(),
                            mount_path: reports,
                            ..VolumeMount::default()
                        }]),
                        ..Container::default()
                    }],
                    volumes: Some(vec![Volume {
                        name: "reports".into(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: config.report_claim.clone(),
                            read_only: Some(false),
                        }),
                        ..Volume::default()
                    }]),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

fn job_finished(job: &Job) -> Option<&'static str> {
    let status = job.status.as_ref()?;
    if status.succeeded.unwrap_or(0) > 0 {
        return Some("succeeded");
    }
    if status.failed.unwrap_or(0) > 0 {
        return Some("failed");
    }
    status.conditions.iter().flatten().find_map(|c| {
        (c.status == "True").then_some(match c.type_.as_str() {
            "Complete" => Some("succeeded"),
            "Failed" => Some("failed"),
            _ => None,
        })?
    })
}

async fn write_status(
    client: &kube::Client,
    config: &ControllerConfig,
    experiment: &Seen,
    status: &ExperimentStatus,
) -> Result<(), PassError> {
    if *status == experiment.status {
        return Ok(());
    }
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &experiment.namespace,
        &experiment_resource(),
    );
    let patch = json!({"status": status_patch(status)});
    match tokio::time::timeout(
        config.api_timeout,
        api.patch_status(
            &experiment.name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        ),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        // Deleted meanwhile: nothing left to say.
        Ok(Err(kube::Error::Api(status))) if status.code == 404 => Ok(()),
        Ok(Err(source)) => Err(PassError::Api {
            what: format!(
                "writing the status of experiment {}",
                experiment.qualified()
            ),
            source,
        }),
        Err(_) => Err(PassError::Timeout(format!(
            "writing the status of experiment {}",
            experiment.qualified()
        ))),
    }
}

/// The status as a merge patch: a field that is unset now is written as null, so that a value
/// from an earlier phase (`queuedBehind`, `progress`) goes away instead of lingering.
pub fn status_patch(status: &ExperimentStatus) -> serde_json::Value {
    let mut value = serde_json::to_value(status).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        for key in ["message", "queuedBehind", "progress"] {
            map.entry(key).or_insert(serde_json::Value::Null);
        }
    }
    value
}

fn fault_expired(fault: &Fault, now: SystemTime) -> bool {
    humantime::parse_rfc3339_weak(&fault.spec.deadline).is_ok_and(|deadline| deadline <= now)
}

fn fault_reverted_everywhere(fault: &Fault) -> bool {
    fault.status.as_ref().is_some_and(|status| {
        !status.nodes.is_empty()
            && status
                .nodes
                .values()
                .all(|n| n.reverted_at.is_some() || n.applied_at.is_none())
            && status.nodes.values().any(|n| n.reverted_at.is_some())
    })
}

/// One pass. See the module documentation for what it does, in order.
///
/// # Errors
/// A request fails or times out; what was done before stays done.
#[allow(clippy::too_many_lines)] // One pass, read top to bottom, in the order it acts.
pub async fn pass(
    client: &kube::Client,
    config: &ControllerConfig,
    memory: &mut Memory,
) -> Result<PassReport, PassError> {
    let timeout = config.api_timeout;
    let now = SystemTime::now();
    let mut report = PassReport::default();
    let auditor = memory
        .auditor
        .get_or_insert_with(|| Auditor::new(client.clone(), &config.identity));

    let experiments_api: Api<DynamicObject> = Api::all_with(client.clone(), &experiment_resource());
    let mut experiments: Vec<Seen> = bounded(
        timeout,
        "listing Experiments",
        experiments_api.list(&ListParams::default()),
    )
    .await?
    .items
    .iter()
    .map(seen)
    .collect();
    experiments.sort_by(|a, b| {
        (a.created.as_str(), a.namespace.as_str(), a.name.as_str()).cmp(&(
            b.created.as_str(),
            b.namespace.as_str(),
            b.name.as_str(),
        ))
    });
    let by_name: BTreeMap<String, &Seen> = experiments.iter().map(|e| (e.qualified(), e)).collect();

    let jobs_api: Api<Job> = Api::namespaced(client.clone(), &config.namespace);
    let jobs = bounded(
        timeout,
        "listing runner Jobs",
        jobs_api.list(&ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"))),
    )
    .await?
    .items;

    // Runners of Experiments that are gone (or being deleted): SIGTERM makes them heal.
    let background = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    for job in &jobs {
        let annotations = job.annotations();
        let owner = annotations
            .get(EXPERIMENT_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        let uid = annotations
            .get(EXPERIMENT_UID_ANNOTATION)
            .cloned()
            .unwrap_or_default();
        let alive = by_name
            .get(&owner)
            .is_some_and(|e| e.uid == uid && !e.deleting);
        if alive || job.metadata.deletion_timestamp.is_some() {
            continue;
        }
        match tokio::time::timeout(timeout, jobs_api.delete(&job.name_any(), &background)).await {
            Ok(Ok(_)) => {
                log(
                    &config.identity,
                    &format!(
                        "experiment {owner} is gone: deleted its runner Job {} (the runner heals on SIGTERM)",
                        job.name_any()
                    ),
                );
                report.jobs_deleted.push(job.name_any());
            }
            Ok(Err(kube::Error::Api(status))) if status.code == 404 => {}
            Ok(Err(source)) => {
                return Err(PassError::Api {
                    what: format!("deleting runner Job {}", job.name_any()),
                    source,
                })
            }
            Err(_) => {
                return Err(PassError::Timeout(format!(
                    "deleting runner Job {}",
                    job.name_any()
                )))
            }
        }
    }

    // Faults: audit, expiry, orphans.
    let faults_api: Api<Fault> = Api::all(client.clone());
    let faults = bounded(
        timeout,
        "listing Faults",
        faults_api.list(&ListParams::default()),
    )
    .await?
    .items;
    let mut live_faults = Vec::new();
    for fault in faults {
        let owner = fault.spec.experiment.clone();
        let regarding = owner
            .as_deref()
            .and_then(|o| by_name.get(o))
            .map(|e| e.regarding());
        let audit = |error: kube::Error| PassError::Api {
            what: format!("writing the audit Event of fault {}", fault.name_any()),
            source: error,
        };
        auditor
            .record(&fault, Happening::Created, regarding.as_ref())
            .await
            .map_err(audit)?;
        if fault_reverted_everywhere(&fault) {
            auditor
                .record(&fault, Happening::Reverted, regarding.as_ref())
                .await
                .map_err(audit)?;
        }
        if fault.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let orphaned = owner
            .as_deref()
            .is_some_and(|o| by_name.get(o).is_none_or(|e| e.deleting));
        let expired = fault_expired(&fault, now);
        if !orphaned && !expired {
            live_faults.push(fault);
            continue;
        }
        match tokio::time::timeout(
            timeout,
            faults_api.delete(&fault.name_any(), &DeleteParams::default()),
        )
        .await
        {
            Ok(Ok(_)) => {}
            Ok(Err(kube::Error::Api(status))) if status.code == 404 => {}
            Ok(Err(source)) => {
                return Err(PassError::Api {
                    what: format!("deleting fault {}", fault.name_any()),
                    source,
                })
            }
            Err(_) => {
                return Err(PassError::Timeout(format!(
                    "deleting fault {}",
                    fault.name_any()
                )))
            }
        }
        if expired {
            auditor
                .record(&fault, Happening::Expired, regarding.as_ref())
                .await
                .map_err(audit)?;
            report.expired_faults.push(fault.name_any());
        } else {
            auditor
                .record(&fault, Happening::Orphaned, None)
                .await
                .map_err(audit)?;
            report.orphaned_faults.push(fault.name_any());
        }
    }

    // Cordons whose Fault is gone or expired: the node itself is the record a dead runner left.
    let cordons =
        reconcile_orphaned_cordons(client, &LiveFaults::from_faults(&live_faults), now, timeout)
            .await?;
    for (node, fault, reason) in cordons.uncordoned {
        log(
            &config.identity,
            &format!("audit: uncordoned node {node}: cordoned by fault {fault}, and {reason}"),
        );
        report.uncordoned.push(node);
    }

    // The one slot: who runs, who waits.
    let job_of = |e: &Seen| {
        jobs.iter().find(|j| {
            j.annotations().get(EXPERIMENT_UID_ANNOTATION) == Some(&e.uid)
                && j.metadata.deletion_timestamp.is_none()
        })
    };
    let mut running: Option<String> = None;
    for experiment in experiments
        .iter()
        .filter(|e| !e.deleting && e.phase().is_active())
    {
        let mut status = experiment.status.clone();
        if let Some(job) = job_of(experiment) {
            let Some(how) = job_finished(job) else {
                running.get_or_insert_with(|| experiment.qualified());
                continue;
            };
            status.phase = Some(ExperimentPhase::Failed);
            status.exit_code = Some(2);
            status.message = Some(format!(
                "the runner Job {} {how} without recording a verdict; see `kubectl -n {} logs job/{}`",
                job.name_any(),
                config.namespace,
                job.name_any()
            ));
        } else {
            status.phase = Some(ExperimentPhase::Aborted);
            status.exit_code = Some(2);
            status.message = Some(
                "the runner Job is gone (deleted, or its node failed) before a verdict; its Faults expire at their deadlines".into(),
            );
        }
        status.progress = None;
        status.finished_at = Some(chrono::Utc::now().to_rfc3339());
        write_status(client, config, experiment, &status).await?;
        report.runner_lost.push(experiment.qualified());
    }

    for experiment in experiments.iter().filter(|e| {
        !e.deleting
            && matches!(
                e.phase(),
                ExperimentPhase::Pending | ExperimentPhase::Queued
            )
    }) {
        let mut status = experiment.status.clone();
        if let Some(active) = &running {
            status.phase = Some(ExperimentPhase::Queued);
            status.queued_behind = Some(active.clone());
            status.message = Some(format!(
                "waiting for experiment {active} to finish: one experiment runs at a time per cluster"
            ));
            if status != experiment.status {
                report.queued.push(experiment.qualified());
            }
            write_status(client, config, experiment, &status).await?;
            continue;
        }
        let spec = match parse_spec(&experiment.spec, &experiment.qualified()) {
            Ok(spec) => spec,
            Err(error) => {
                status.phase = Some(ExperimentPhase::Failed);
                status.exit_code = Some(2);
                status.message = Some(error.to_string());
                write_status(client, config, experiment, &status).await?;
                continue;
            }
        };
        let name = job_name(&experiment.namespace, &experiment.name, &experiment.uid);
        let run_time = spec.duration.max(spec.last_fault_end()) + spec.recovery_deadline;
        let job = runner_job(
            config,
            &experiment.qualified(),
            &experiment.uid,
            &name,
            run_time,
        );
        match tokio::time::timeout(timeout, jobs_api.create(&PostParams::default(), &job)).await {
            Ok(Ok(_)) => {
                log(
                    &config.identity,
                    &format!(
                        "experiment {}: started runner Job {name}",
                        experiment.qualified()
                    ),
                );
                report.jobs_started.push(name.clone());
            }
            // An earlier leader created it and lost the lease before writing the status.
            Ok(Err(kube::Error::Api(e))) if e.code == 409 => {}
            Ok(Err(source)) => {
                return Err(PassError::Api {
                    what: format!("creating runner Job {name}"),
                    source,
                })
            }
            Err(_) => return Err(PassError::Timeout(format!("creating runner Job {name}"))),
        }
        status.phase = Some(ExperimentPhase::Running);
        status.queued_behind = None;
        status.job_name = Some(name.clone());
        status.message = Some(format!("runner Job {}/{name} started", config.namespace));
        write_status(client, config, experiment, &status).await?;
        running = Some(experiment.qualified());
    }
    Ok(report)
}
