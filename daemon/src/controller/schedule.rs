//! The schedule on a cluster. With `--schedule FILE`, the leading controller hosts the same
//! scheduler as `faultlined serve` (suites, cron with time zones, one run at a time with a queue,
//! missed runs, blackouts, retention, webhooks, the run index). Each run it hands out becomes an
//! Experiment, which the controller's reconcile then runs like any other, so a scheduled run
//! and an SRE's `chaosctl --context C run` share one queue, one runner and one report volume.
//!
//! The run index lives on the report volume, so a new leader finds the history. A leader that
//! loses the Lease stops scheduling at once and leaves the Experiment it was following to the
//! new leader; its row is marked aborted with that reason. A Halt object pauses the schedule
//! (due runs are skipped) and stops the run in progress, like `chaosctl halt` on the lab.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::ResourceExt as _;

use faultline_experiments::checkers::CheckReport;
use faultline_experiments::kubernetes::crd::Halt;
use faultline_experiments::kubernetes::experiment::{
    Experiment, ExperimentBody, ExperimentPhase, ExperimentStatus,
};
use faultline_experiments::schedule::webhook::{Backoff, WebhookSender};
use faultline_experiments::schedule::{
    Clock, Event, RunIndex, RunRequest, RunResult, RunStatus, Schedule, Scheduler, StopSignal,
    SuiteRunner,
};
use faultline_experiments::spec::Target as SpecTarget;

/// Labels on the Experiments the schedule creates, so `kubectl get flx -l` finds them.
pub const SUITE_LABEL: &str = "faultline.dev/suite";
/// The run's id in the run index.
pub const RUN_INDEX_LABEL: &str = "faultline.dev/run-index";

/// Why a run ends when its controller stops leading.
const LEASE_LOST: &str = "this controller lost the lease";

/// Runs each scheduled scenario as an Experiment and follows it to its end.
pub struct ExperimentSuiteRunner {
    client: kube::Client,
    runtime: tokio::runtime::Handle,
    namespace: String,
    poll: Duration,
    api_timeout: Duration,
    lease_lost: Arc<AtomicBool>,
}

impl ExperimentSuiteRunner {
    /// A runner that creates Experiments in `namespace` and polls them every `poll`. API calls
    /// run on `runtime` (the scheduler calls [`SuiteRunner::run`] on a thread of its own).
    pub fn new(
        client: kube::Client,
        runtime: tokio::runtime::Handle,
        namespace: &str,
        poll: Duration,
        api_timeout: Duration,
    ) -> Self {
        Self {
            client,
            runtime,
            namespace: namespace.to_owned(),
            poll,
            api_timeout,
            lease_lost: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Raised when this controller loses the Lease: the run in progress is left to the new
    /// leader instead of being deleted.
    pub fn lease_lost_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.lease_lost)
    }

    fn api(&self) -> Api<Experiment> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn call<T>(
        &self,
        what: &str,
        request: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, String> {
        // The timer must be made inside the runtime, hence the async block.
        let timeout = self.api_timeout;
        match self
            .runtime
            .block_on(async move { tokio::time::timeout(timeout, request).await })
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(format!("{what}: {error}")),
            Err(_) => Err(format!(
                "{what}: the API server did not answer within {:?}",
                self.api_timeout
            )),
        }
    }

    fn create(&self, request: &RunRequest) -> Result<String, String> {
        let mut spec = request.entry.spec.clone();
        // Suites name catalog scenarios, which are written for the lab; here they run on the
        // cluster, with the spec's `kubernetes:` section or the cluster's defaults, which the runner
        // reads (ConfigMap faultline-cluster-defaults).
        spec.target = SpecTarget::Kubernetes;
        let mut experiment = Experiment::new("", ExperimentBody(spec));
        experiment.metadata.name = None;
        experiment.metadata.generate_name = Some(format!(
            "{}-",
            dns_label(&format!("{}-{}", request.suite, request.entry.scenario), 50)
        ));
        experiment.metadata.labels = Some(
            [
                (SUITE_LABEL.to_owned(), dns_label(&request.suite, 63)),
                (RUN_INDEX_LABEL.to_owned(), request.index_id.to_string()),
            ]
            .into(),
        );
        experiment.metadata.annotations = Some(
            [
                ("faultline.dev/trigger".to_owned(), request.trigger.clone()),
                (
                    "faultline.dev/spec-source".to_owned(),
                    request.entry.source.clone(),
                ),
            ]
            .into(),
        );
        let api = self.api();
        let created = self.call(
            &format!("creating the Experiment in namespace {}", self.namespace),
            api.create(&PostParams::default(), &experiment),
        )?;
        Ok(created.name_any())
    }

    /// Deletes the Experiment (the controller then stops its runner, which heals) and waits
    /// until it is gone.
    fn delete(&self, name: &str) -> Result<(), String> {
        let api = self.api();
        match self.call(
            &format!("deleting experiment {}/{name}", self.namespace),
            api.delete(name, &DeleteParams::default()),
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.contains("404") || e.contains("NotFound") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl SuiteRunner for ExperimentSuiteRunner {
    fn run(&self, request: &RunRequest, stop: &StopSignal) -> RunResult {
        let qualified = |name: &str| format!("{}/{name}", self.namespace);
        let name = match self.create(request) {
            Ok(name) => name,
            Err(error) => return RunResult::error(error),
        };
        let api = self.api();
        loop {
            if self.lease_lost.load(Ordering::SeqCst) {
                return aborted(format!(
                    "{LEASE_LOST}; experiment {} goes on under the new leader, and its report lands on the report volume",
                    qualified(&name)
                ));
            }
            if stop.is_stopped() {
                let reason = stop.reason().unwrap_or_else(|| "stopped".to_owned());
                return match self.delete(&name) {
                    Ok(()) => aborted(format!(
                        "{reason}; deleted experiment {}, whose runner heals every fault",
                        qualified(&name)
                    )),
                    Err(error) => aborted(format!(
                        "{reason}; could not delete experiment {} ({error}); its faults end at their deadlines",
                        qualified(&name)
                    )),
                };
            }
            match self.call(
                &format!("reading experiment {}", qualified(&name)),
                api.get_opt(&name),
            ) {
                Ok(None) => {
                    return aborted(format!(
                        "experiment {} was deleted before it finished",
                        qualified(&name)
                    ))
                }
                Ok(Some(experiment)) => {
                    let status = experiment.status.unwrap_or_default();
                    if status.phase.unwrap_or_default().is_finished() {
                        return result_from_status(&qualified(&name), &status);
                    }
                }
                // The API may be briefly away; the Experiment goes on meanwhile.
                Err(error) => super::log("schedule", &error),
            }
            std::thread::sleep(self.poll);
        }
    }
}

fn aborted(note: String) -> RunResult {
    RunResult {
        status: Some(RunStatus::Aborted),
        exit_code: Some(2),
        note: Some(note),
        ..RunResult::default()
    }
}

/// What the index records of a finished Experiment: the full report from the report volume
/// when the runner wrote one (TTRs and anomalies for the trends), else what the status says.
pub fn result_from_status(qualified: &str, status: &ExperimentStatus) -> RunResult {
    let report = status
        .report_path
        .as_deref()
        .and_then(|dir| std::fs::read(Path::new(dir).join("report.json")).ok())
        .and_then(|bytes| serde_json::from_slice::<CheckReport>(&bytes).ok());
    let mut result = report
        .as_ref()
        .map(RunResult::from_report)
        .unwrap_or_default();
    if result.verdicts.is_empty() {
        result.verdicts = status
            .verdicts
            .iter()
            .map(|v| (v.name.clone(), v.status.clone()))
            .collect::<BTreeMap<_, _>>();
    }
    result.score = result.score.or(status.score);
    result.run_id.clone_from(&status.run_id);
    result.dir = status.report_path.as_ref().map(PathBuf::from);
    result.exit_code = status.exit_code.and_then(|c| u8::try_from(c).ok());
    let phase = status.phase.unwrap_or_default();
    let run_status = match (phase, status.verdict.as_deref()) {
        (ExperimentPhase::Aborted, _) => RunStatus::Aborted,
        (ExperimentPhase::Succeeded, _) => RunStatus::Passed,
        (_, None) => RunStatus::Error,
        (_, Some("invalid")) => RunStatus::Failed,
        (_, Some(_)) => RunStatus::Unknown,
    };
    result.status = Some(run_status);
    if result.exit_code.is_none() {
        result.exit_code = Some(u8::from(run_status != RunStatus::Passed) * 2);
    }
    if run_status != RunStatus::Passed {
        result.note = Some(format!(
            "experiment {qualified}: {}",
            status.message.as_deref().unwrap_or(phase.as_str())
        ));
    }
    result
}

/// `text` as a DNS label: lower case, `[a-z0-9-]`, at most `max` characters, no dash at the ends.
fn dns_label(text: &str, max: usize) -> String {
    let mapped: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(max)
        .collect();
    let trimmed = mapped.trim_matches('-');
    if trimmed.is_empty() {
        "run".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// The scheduler as the controller hosts it: started when this replica leads, stopped when it
/// stops leading. Step it about once a second.
pub struct ClusterSchedule {
    client: kube::Client,
    runtime: tokio::runtime::Handle,
    namespace: String,
    reports_dir: PathBuf,
    schedule: Schedule,
    clock: Arc<dyn Clock>,
    poll: Duration,
    api_timeout: Duration,
    active: Arc<Mutex<Option<Scheduler>>>,
    lease_lost: Option<Arc<AtomicBool>>,
    halted_by: Option<String>,
}

impl ClusterSchedule {
    /// A schedule whose Experiments go to `namespace` and whose index lives in `reports_dir`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        runtime: tokio::runtime::Handle,
        namespace: &str,
        reports_dir: &Path,
        schedule: Schedule,
        clock: Arc<dyn Clock>,
        poll: Duration,
        api_timeout: Duration,
    ) -> Self {
        Self {
            client,
            runtime,
            namespace: namespace.to_owned(),
            reports_dir: reports_dir.to_path_buf(),
            schedule,
            clock,
            poll,
            api_timeout,
            active: Arc::new(Mutex::new(None)),
            lease_lost: None,
            halted_by: None,
        }
    }

    /// The scheduler while this replica leads, for `/metrics`.
    pub fn scheduler(&self) -> Arc<Mutex<Option<Scheduler>>> {
        Arc::clone(&self.active)
    }

    /// Replaces the schedule, in the running scheduler too (suites whose cron did not change
    /// keep their next due time).
    pub fn reload(&mut self, schedule: Schedule) {
        if let Some(scheduler) = self.active.lock().expect("scheduler").as_mut() {
            scheduler.reload(schedule.clone());
        }
        self.schedule = schedule;
    }

    /// Where the run index is.
    pub fn index_path(&self) -> PathBuf {
        RunIndex::default_path(&self.reports_dir)
    }

    /// One step: start or stop with leadership, follow Halt objects, tick. Returns what
    /// happened, one line each, for the log.
    pub fn step(&mut self, leading: bool) -> Vec<String> {
        let mut lines = Vec::new();
        let shared = Arc::clone(&self.active);
        let mut active = shared.lock().expect("scheduler");
        if !leading {
            if let Some(mut scheduler) = active.take() {
                if let Some(flag) = self.lease_lost.take() {
                    flag.store(true, Ordering::SeqCst);
                }
                // The run thread sees the flag within one poll and returns without deleting.
                let events = scheduler
                    .shutdown(LEASE_LOST, self.poll * 5)
                    .unwrap_or_default();
                lines.extend(events.iter().map(Event::to_string));
                lines.push("stopped the schedule: not leading".to_owned());
                self.halted_by = None;
            }
            return lines;
        }
        if active.is_none() {
            match self.start() {
                Ok((scheduler, events)) => {
                    lines.extend(events.iter().map(Event::to_string));
                    lines.push(format!(
                        "leading: started the schedule {} (index {})",
                        scheduler.schedule().source,
                        self.index_path().display()
                    ));
                    for next in scheduler.next_runs() {
                        lines.push(format!(
                            "suite {} ({} {}): next run {}",
                            next.suite,
                            next.cron,
                            next.time_zone,
                            next.at
                                .map_or_else(|| "disabled".to_owned(), |t| t.to_rfc3339())
                        ));
                    }
                    *active = Some(scheduler);
                }
                Err(error) => {
                    lines.push(format!("cannot start the schedule (retrying): {error}"));
                    return lines;
                }
            }
        }
        let scheduler = active.as_mut().expect("started above");
        match self.halt_in_force() {
            Ok(Some(halt)) if self.halted_by.as_deref() != Some(halt.as_str()) => {
                let reason = format!("Halt {halt} exists (chaosctl halt)");
                if let Some(id) = scheduler.halt(&reason) {
                    lines.push(format!("halted: stopping run {id}: {reason}"));
                } else {
                    lines.push(format!("halted: {reason}"));
                }
                self.halted_by = Some(halt);
            }
            Ok(None) if self.halted_by.is_some() => {
                scheduler.resume();
                self.halted_by = None;
                lines.push("resumed: no Halt object is left".to_owned());
            }
            Ok(_) => {}
            Err(error) => lines.push(format!("listing Halt objects: {error}")),
        }
        match scheduler.tick() {
            Ok(events) => lines.extend(events.iter().map(Event::to_string)),
            Err(error) => lines.push(format!("tick failed (will retry): {error}")),
        }
        lines
    }

    fn start(&mut self) -> anyhow::Result<(Scheduler, Vec<Event>)> {
        let index = RunIndex::open(&self.index_path())?;
        let runner = ExperimentSuiteRunner::new(
            self.client.clone(),
            self.runtime.clone(),
            &self.namespace,
            self.poll,
            self.api_timeout,
        );
        self.lease_lost = Some(runner.lease_lost_flag());
        let (scheduler, events) = Scheduler::start(
            self.schedule.clone(),
            index,
            Arc::new(runner),
            Arc::clone(&self.clock),
        )?;
        let webhooks = WebhookSender::start(Backoff::default(), |delivery| {
            super::log(
                "schedule",
                &match &delivery.error {
                    None => format!(
                        "webhook {} delivered ({} attempt(s))",
                        delivery.url, delivery.attempts
                    ),
                    Some(e) => format!(
                        "webhook {} FAILED after {} attempts: {e}",
                        delivery.url, delivery.attempts
                    ),
                },
            );
        });
        Ok((
            scheduler
                .with_observer(Arc::new(webhooks))
                .with_results_root(self.reports_dir.clone()),
            events,
        ))
    }

    fn halt_in_force(&self) -> Result<Option<String>, String> {
        let halts: Api<Halt> = Api::all(self.client.clone());
        let list = self
            .runtime
            .block_on(async {
                tokio::time::timeout(self.api_timeout, halts.list(&ListParams::default())).await
            })
            .map_err(|_| "the API server did not answer in time".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok(list.items.first().map(kube::ResourceExt::name_any))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_dns_labels() {
        assert_eq!(
            dns_label("Nightly_Suite/pod-failure", 63),
            "nightly-suite-pod-failure"
        );
        assert_eq!(dns_label("--x--", 63), "x");
        assert_eq!(dns_label("___", 63), "run");
        assert_eq!(dns_label(&"a".repeat(80), 50).len(), 50);
    }

    fn status(
        phase: ExperimentPhase,
        verdict: Option<&str>,
        exit_code: Option<i32>,
    ) -> ExperimentStatus {
        ExperimentStatus {
            phase: Some(phase),
            verdict: verdict.map(str::to_owned),
            exit_code,
            message: Some("why".into()),
            ..ExperimentStatus::default()
        }
    }

    #[test]
    fn finished_experiments_map_to_index_statuses() {
        let cases = [
            (
                status(ExperimentPhase::Succeeded, Some("valid"), Some(0)),
                RunStatus::Passed,
                0,
            ),
            (
                status(ExperimentPhase::Failed, Some("invalid"), Some(1)),
                RunStatus::Failed,
                1,
            ),
            (
                status(ExperimentPhase::Failed, Some("unknown"), Some(2)),
                RunStatus::Unknown,
                2,
            ),
            // Failed without a verdict: it could not run.
            (
                status(ExperimentPhase::Failed, None, None),
                RunStatus::Error,
                2,
            ),
            (
                status(ExperimentPhase::Aborted, None, Some(2)),
                RunStatus::Aborted,
                2,
            ),
        ];
        for (status, expected, exit_code) in cases {
            let result = result_from_status("ns/x", &status);
            assert_eq!(result.status, Some(expected), "{status:?}");
            assert_eq!(result.exit_code, Some(exit_code), "{status:?}");
            assert_eq!(
                result.note.is_some(),
                expected != RunStatus::Passed,
                "{status:?}"
            );
        }
    }
}
