//! A workload on its own thread and runtime, for callers that inject faults while the load runs
//! (the engine). On the lab the thread enters the lab's client namespace; on a cluster it stays
//! where the runner is (its pod reaches the NATS pods directly).

use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::lab::control::LabContext;

use super::clock::RunClock;
use super::config::WorkloadConfig;
use super::recorder::ObservationSink;
use super::run::{ProgressFn, Workload, WorkloadReport};
use super::slice::LiveLoad;
use super::stats::{Progress, Summary};
use super::target::{enter_netns, Target};
use super::WorkloadError;

/// A running background workload. Dropping it cancels the load and waits for the thread.
pub struct BackgroundWorkload {
    clock: RunClock,
    observations: ObservationSink,
    cancel: CancellationToken,
    skip_read_back: CancellationToken,
    progress: std::sync::Arc<std::sync::Mutex<Progress>>,
    proceed: Option<oneshot::Sender<(bool, Option<u64>)>>,
    loaded: Option<mpsc::Receiver<Result<Summary, String>>>,
    thread: Option<JoinHandle<Result<WorkloadReport, WorkloadError>>>,
    live: LiveLoad,
}

/// Starts `config` against the lab `ctx` on a dedicated thread that enters the lab's client
/// namespace and runs its own runtime (two workers). Returns once the workload has started
/// (tenants provisioned, clock running) or failed to.
pub fn spawn_in_lab(
    ctx: &LabContext,
    config: WorkloadConfig,
) -> Result<BackgroundWorkload, WorkloadError> {
    spawn(Target::from_lab(ctx, config.lab_http_services())?, config)
}

/// Starts `config` against `target` on a dedicated thread with its own runtime (two workers).
/// A lab target's thread first enters the lab's client namespace; any other target is reached
/// from the caller's network namespace. Returns once the workload has started (tenants
/// provisioned, clock running) or failed to.
pub fn spawn(target: Target, config: WorkloadConfig) -> Result<BackgroundWorkload, WorkloadError> {
    type Started = (
        RunClock,
        ObservationSink,
        std::sync::Arc<Vec<super::schedule::TenantSpec>>,
    );
    let netns = target.client_netns();
    let (started_tx, started_rx) = mpsc::channel::<Result<Started, WorkloadError>>();
    let live_target = target.clone();
    let live_config = config.clone();
    let (loaded_tx, loaded_rx) = mpsc::channel::<Result<Summary, String>>();
    // Whether to read back, and the convergence deadline to settle until (ns on the run's
    // clock) when the caller sets one.
    let (proceed_tx, proceed_rx) = oneshot::channel::<(bool, Option<u64>)>();
    let cancel = CancellationToken::new();
    let skip_read_back = CancellationToken::new();
    let thread_skip = skip_read_back.clone();
    let progress = std::sync::Arc::new(std::sync::Mutex::new(Progress::default()));
    let thread_cancel = cancel.clone();
    let thread_progress = progress.clone();
    let thread = std::thread::Builder::new()
        .name("workload".to_owned())
        .spawn(move || -> Result<WorkloadReport, WorkloadError> {
            let started = &started_tx;
            let fail_start = |e: WorkloadError| {
                let text = e.to_string();
                let _ = started.send(Err(e));
                WorkloadError::Config(text)
            };
            if let Some((netns_dir, netns)) = &netns {
                enter_netns(netns_dir, netns).map_err(fail_start)?;
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| fail_start(WorkloadError::Runtime(e)))?;
            runtime.block_on(async move {
                let mut workload = match Workload::start(config, target).await {
                    Ok(w) => w,
                    Err(e) => return Err(fail_start(e)),
                };
                let _ = started.send(Ok((
                    workload.clock(),
                    workload.observations(),
                    std::sync::Arc::new(workload.tenants().to_vec()),
                )));
                let shared = thread_progress.clone();
                let f: ProgressFn = std::sync::Arc::new(move |p: &Progress| {
                    *shared.lock().expect("progress") = p.clone();
                });
                workload.on_progress(f);
                let summary = workload.run(thread_cancel).await;
                let _ = loaded_tx.send(
                    summary
                        .as_ref()
                        .map(Clone::clone)
                        .map_err(ToString::to_string),
                );
                summary?;
                let (read_back, settle_until) = proceed_rx.await.unwrap_or((false, None));
                if read_back {
                    if let Some(deadline_ns) = settle_until {
                        workload.settle_until(deadline_ns);
                    }
                    // Cut short: the report then has no read-back summary, and the values
                    // no read-back covered are judged unknown, never lost.
                    tokio::select! {
                        result = workload.read_back() => { result?; }
                        () = thread_skip.cancelled() => {}
                    }
                }
                workload.finish().await
            })
        })
        .map_err(WorkloadError::Runtime)?;
    match started_rx.recv() {
        Ok(Ok((clock, observations, tenants))) => Ok(BackgroundWorkload {
            live: LiveLoad::new(
                clock,
                observations.clone(),
                progress.clone(),
                &live_config,
                tenants,
                live_target,
            ),
            clock,
            observations,
            cancel,
            skip_read_back,
            progress,
            proceed: Some(proceed_tx),
            loaded: Some(loaded_rx),
            thread: Some(thread),
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(match thread.join() {
            Ok(Err(e)) => e,
            _ => WorkloadError::Config("the workload thread ended before starting".to_owned()),
        }),
    }
}

impl BackgroundWorkload {
    /// The run's time base (record fault windows with it).
    pub fn clock(&self) -> RunClock {
        self.clock
    }

    /// Where to record observations such as fault windows.
    pub fn observations(&self) -> ObservationSink {
        self.observations.clone()
    }

    /// The running load as a run that is a slice of it takes it.
    pub fn live(&self) -> LiveLoad {
        self.live.clone()
    }

    /// The latest progress.
    pub fn progress(&self) -> Progress {
        self.progress.lock().expect("progress").clone()
    }

    /// A token that, once cancelled, skips the final read-back, or cuts it short if it has
    /// begun (a second Ctrl-C).
    pub fn read_back_skipper(&self) -> CancellationToken {
        self.skip_read_back.clone()
    }

    /// Stops the load now (it also stops by itself when its duration has passed).
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// Waits until the load has ended (its duration passed, or [`Self::stop`]) and returns
    /// its summary. Faults may still be healed after this, before [`Self::finish`].
    pub fn wait_load(&mut self) -> Result<Summary, WorkloadError> {
        let rx = self
            .loaded
            .take()
            .ok_or_else(|| WorkloadError::Config("wait_load called twice".to_owned()))?;
        match rx.recv() {
            Ok(Ok(summary)) => Ok(summary),
            Ok(Err(e)) => Err(WorkloadError::Config(e)),
            Err(_) => Err(WorkloadError::Config(
                "the workload thread ended unexpectedly".to_owned(),
            )),
        }
    }

    /// Ends the workload: waits for the load, runs the final read-back when `read_back` (call
    /// it after healing), closes the files and returns the report.
    pub fn finish(self, read_back: bool) -> Result<WorkloadReport, WorkloadError> {
        self.finish_with(read_back, None)
    }

    /// As [`Self::finish`], the read-back waiting for the servers to agree until
    /// `settle_until_ns` on the run's clock (`None`: the config's `settle` from its start).
    pub fn finish_with(
        mut self,
        read_back: bool,
        settle_until_ns: Option<u64>,
    ) -> Result<WorkloadReport, WorkloadError> {
        if let Some(proceed) = self.proceed.take() {
            let _ = proceed.send((read_back, settle_until_ns));
        }
        let thread = self.thread.take().expect("finished once");
        thread
            .join()
            .map_err(|_| WorkloadError::Config("the workload thread panicked".to_owned()))?
    }
}

impl Drop for BackgroundWorkload {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(proceed) = self.proceed.take() {
            let _ = proceed.send((false, None));
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
