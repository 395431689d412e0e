//! `faultlined controller`: the cluster's one Experiment runner, elected through a Lease.
//!
//! Every replica serves the reports on the report volume ([`reports`]). Only the leader works,
//! one reconcile pass every tick ([`reconcile`]):
//! - one Experiment at a time per cluster: the oldest waiting one gets a runner Job
//!   (`faultlined run --experiment NS/NAME`, the controller's own image); the others are Queued
//!   and say behind which;
//! - a runner Job whose Experiment is gone is deleted (its pod heals on SIGTERM), and so are
//!   the Faults of an Experiment that is gone: deleting an Experiment heals it;
//! - expired Faults are deleted (the agents heal at the deadline anyway);
//! - nodes whose `faultline.dev/cordoned-by` names a Fault that is gone or expired are
//!   uncordoned;
//! - every created, reverted and expired Fault becomes an Event on its Experiment and a line in
//!   this log ([`audit`]).
//!
//! Losing the Lease stops the work at once: the pass in flight is dropped mid-request.
//!
//! With `--schedule FILE` the leader also hosts the scheduler ([`schedule`]): each due run
//! becomes an Experiment in the same queue, and `/metrics` serves the run index's figures.

pub mod audit;
pub mod lease;
pub mod reconcile;
pub mod reports;
pub mod schedule;

use faultline_experiments::stderr_line;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Args;
use tokio::sync::watch;

use lease::{Election, LeaseElector};

/// `faultlined controller`'s options.
#[derive(Args, Clone, Debug)]
pub struct ControllerArgs {
    /// The controller's namespace: its Lease, runner Jobs and report volume live here.
    #[arg(long, env = "POD_NAMESPACE", default_value = "faultline-system")]
    pub namespace: String,
    /// This replica's identity in the Lease (the pod's name).
    #[arg(long, env = "POD_NAME")]
    pub identity: String,
    /// The runner Jobs' image [default: this pod's own image, read from the API].
    #[arg(long)]
    pub runner_image: Option<String>,
    /// The runner Jobs' service account.
    #[arg(long, default_value = "faultline-runner")]
    pub runner_service_account: String,
    /// The PersistentVolumeClaim holding the reports, mounted by the runners.
    #[arg(long, default_value = "faultline-reports")]
    pub report_claim: String,
    /// Where the report volume is mounted, here and in the runners.
    #[arg(long, default_value = "/var/lib/faultline/reports")]
    pub reports_dir: PathBuf,
    /// Address of the reports (`/runs`) and `/healthz`.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// The Lease's name.
    #[arg(long, default_value = "faultline-controller")]
    pub lease_name: String,
    /// How long the Lease holds without renewal.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// How often the leader renews (and followers retry).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub renew_every: Duration,
    /// How often the leader reconciles.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub tick: Duration,
    /// The longest one API request may take.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub api_timeout: Duration,
    /// A kubeconfig to use instead of the in-cluster service account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// A schedule file (`chaosctl validate` accepts it): the leader runs its suites as
    /// Experiments, keeps the run index on the report volume and serves `/metrics`. A changed
    /// file (a ConfigMap update) is reloaded; an invalid one keeps the old schedule.
    #[arg(long, conflicts_with = "shipped_schedule")]
    pub schedule: Option<PathBuf>,
    /// Host the shipped schedule (`chaosctl schedule show` prints it) instead of a file.
    #[arg(long)]
    pub shipped_schedule: bool,
    /// Where scheduled Experiments are created [default: the controller's namespace].
    #[arg(long)]
    pub experiment_namespace: Option<String>,
}

/// What the controller needs, resolved.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// Its namespace.
    pub namespace: String,
    /// Its identity in the Lease.
    pub identity: String,
    /// The runners' image.
    pub runner_image: String,
    /// The runners' service account.
    pub runner_service_account: String,
    /// The report volume's claim.
    pub report_claim: String,
    /// Where the report volume is mounted.
    pub reports_dir: PathBuf,
    /// The Lease's name.
    pub lease_name: String,
    /// How long the Lease holds.
    pub lease_duration: Duration,
    /// How often to renew.
    pub renew_every: Duration,
    /// How often to reconcile.
    pub tick: Duration,
    /// The longest one API request may take.
    pub api_timeout: Duration,
}

impl ControllerConfig {
    /// A configuration for tests and embedding: the defaults of the command line, with short
    /// periods scaled from `lease_duration`.
    pub fn new(namespace: &str, identity: &str, lease_duration: Duration) -> Self {
        Self {
            namespace: namespace.to_owned(),
            identity: identity.to_owned(),
            runner_image: "faultlined".into(),
            runner_service_account: "faultline-runner".into(),
            report_claim: "faultline-reports".into(),
            reports_dir: PathBuf::from("/var/lib/faultline/reports"),
            lease_name: "faultline-controller".into(),
            lease_duration,
            renew_every: lease_duration / 3,
            tick: lease_duration / 5,
            api_timeout: Duration::from_secs(5),
        }
    }
}

/// Writes one line of the controller's log, stamped.
pub fn log(identity: &str, message: &str) {
    stderr_line!(
        "{} faultlined controller {identity}: {message}",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ")
    );
}

/// One controller replica.
pub struct Controller {
    client: kube::Client,
    config: ControllerConfig,
    elector: LeaseElector,
    leading: watch::Sender<bool>,
    passes: AtomicU64,
    state: tokio::sync::Mutex<reconcile::Memory>,
}

impl Controller {
    /// A replica; nothing runs until [`Controller::run`].
    pub fn new(client: kube::Client, config: ControllerConfig) -> Arc<Self> {
        let elector = LeaseElector::new(
            client.clone(),
            &config.namespace,
            &config.lease_name,
            &config.identity,
            config.lease_duration,
        );
        Arc::new(Self {
            client,
            config,
            elector,
            leading: watch::channel(false).0,
            passes: AtomicU64::new(0),
            state: tokio::sync::Mutex::new(reconcile::Memory::default()),
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// Whether it leads now.
    pub fn is_leader(&self) -> bool {
        *self.leading.borrow()
    }

    /// Reconcile passes completed so far (they stop when the Lease is lost).
    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::SeqCst)
    }

    fn set_leading(&self, leading: bool, why: &str) {
        let changed = self.leading.send_if_modified(|current| {
            let changed = *current != leading;
            *current = leading;
            changed
        });
        if changed {
            log(&self.config.identity, why);
        }
    }

    /// One reconcile pass, as the leader runs it every tick. Public for tests that step the
    /// controller by hand.
    ///
    /// # Errors
    /// The API fails; the next pass starts over.
    pub async fn reconcile_once(&self) -> Result<reconcile::PassReport, reconcile::PassError> {
        let mut memory = self.state.lock().await;
        let report = reconcile::pass(&self.client, &self.config, &mut memory).await;
        self.passes.fetch_add(1, Ordering::SeqCst);
        report
    }

    /// Elects and works until `stop` is set; then gives the Lease up. The election and the work
    /// are one task: aborting it (a killed replica) stops both, and leaves the Lease to lapse.
    pub async fn run(self: Arc<Self>, stop: Arc<AtomicBool>) {
        let work = Arc::clone(&self).work();
        let elect = self.elect(&stop);
        tokio::select! {
            () = work => {}
            () = elect => {}
        }
        self.set_leading(false, "stopping");
        self.elector.release().await;
    }

    async fn elect(&self, stop: &AtomicBool) {
        let mut until: Option<SystemTime> = None;
        while !stop.load(Ordering::SeqCst) {
            let now = SystemTime::now();
            if until.is_some_and(|u| u <= now) {
                until = None;
                self.set_leading(
                    false,
                    "could not renew the lease before it lapsed; work stopped",
                );
            }
            // A round may not outlast our own claim: past it, someone else may lead.
            let budget = until
                .and_then(|u| u.duration_since(now).ok())
                .unwrap_or(self.config.api_timeout)
                .min(self.config.api_timeout);
            match tokio::time::timeout(budget, self.elector.round(now)).await {
                Ok(Ok(Election::Leader { until: u, acquired })) => {
                    until = Some(u);
                    if acquired {
                        self.set_leading(true, "acquired the lease; leading");
                    } else {
                        self.set_leading(true, "holding the lease; leading");
                    }
                }
                Ok(Ok(Election::Follower { holder })) => {
                    until = None;
                    self.set_leading(
                        false,
                        &format!(
                            "lease held by {}; following, no work",
                            holder.as_deref().unwrap_or("another replica")
                        ),
                    );
                }
                Ok(Err(error)) => log(&self.config.identity, &format!("election: {error}")),
                Err(_) => log(
                    &self.config.identity,
                    "election: the API server did not answer in time",
                ),
            }
            if until.is_some_and(|u| u <= SystemTime::now()) {
                until = None;
                self.set_leading(
                    false,
                    "could not renew the lease before it lapsed; work stopped",
                );
            }
            tokio::time::sleep(self.config.renew_every.max(Duration::from_millis(50))).await;
        }
    }

    async fn work(self: Arc<Self>) {
        let mut leading = self.leading.subscribe();
        loop {
            if leading.wait_for(|l| *l).await.is_err() {
                return;
            }
            let passes = async {
                loop {
                    if let Err(error) = self.reconcile_once().await {
                        log(&self.config.identity, &format!("reconcile: {error}"));
                    }
                    tokio::time::sleep(self.config.tick.max(Duration::from_millis(20))).await;
                }
            };
            // Dropping the pass future abandons its requests: no write after the lease is lost.
            tokio::select! {
                result = leading.wait_for(|l| !*l) => if result.is_err() { return },
                () = passes => {}
            }
        }
    }
}

/// Reads the image of this pod's own container, for the runners ("the same image").
///
/// # Errors
/// The pod cannot be read or names no image.
pub async fn own_image(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(client.clone(), namespace);
    let me = pods.get(pod).await.with_context(|| {
        format!("reading this pod {namespace}/{pod} to find its image; pass --runner-image instead")
    })?;
    me.spec
        .and_then(|spec| spec.containers.into_iter().find_map(|c| c.image))
        .with_context(|| format!("pod {namespace}/{pod} names no image; pass --runner-image"))
}

/// `faultlined controller`: serves the reports on every replica and runs Experiments on the
/// leader until SIGTERM.
pub fn main(args: &ControllerArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let client = crate::kube_client(args.kubeconfig.as_deref(), true).await?;
        let runner_image = match &args.runner_image {
            Some(image) => image.clone(),
            None => own_image(&client, &args.namespace, &args.identity).await?,
        };
        let config = ControllerConfig {
            namespace: args.namespace.clone(),
            identity: args.identity.clone(),
            runner_image,
            runner_service_account: args.runner_service_account.clone(),
            report_claim: args.report_claim.clone(),
            reports_dir: args.reports_dir.clone(),
            lease_name: args.lease_name.clone(),
            lease_duration: args.lease_duration,
            renew_every: args.renew_every,
            tick: args.tick,
            api_timeout: args.api_timeout,
        };
        let schedule_source = match (&args.schedule, args.shipped_schedule) {
            (Some(path), _) => {
                let loaded = std::fs::read(path)
                    .with_context(|| format!("reading the schedule {}", path.display()))?;
                let parsed = faultline_experiments::schedule::load_schedule(path)?;
                Some((parsed, Some(path.clone()), loaded))
            }
            (None, true) => Some((faultline_experiments::schedule::shipped_schedule(), None, Vec::new())),
            (None, false) => None,
        };
        let cluster_schedule = schedule_source.map(|(parsed, path, loaded)| {
            if parsed.background.enabled {
                log(
                    &args.identity,
                    "the schedule's background section is for `faultlined serve`; on a cluster each Experiment runs its own tenant load",
                );
            }
            ScheduleHost {
                schedule: schedule::ClusterSchedule::new(
                    client.clone(),
                    tokio::runtime::Handle::current(),
                    args.experiment_namespace.as_deref().unwrap_or(&args.namespace),
                    &args.reports_dir,
                    parsed,
                    Arc::new(faultline_experiments::schedule::SystemClock),
                    Duration::from_secs(2),
                    args.api_timeout,
                ),
                path,
                loaded,
            }
        });
        let metrics = cluster_schedule
            .as_ref()
            .map(|host| (host.schedule.scheduler(), client.clone()));
        let (addr, _server) = reports::serve(args.reports_dir.clone(), args.listen, metrics)
            .await
            .with_context(|| format!("binding the reports address {}", args.listen))?;
        log(
            &config.identity,
            &format!(
                "serving reports from {} on {addr}; runners use {}",
                config.reports_dir.display(),
                config.runner_image
            ),
        );
        let controller = Controller::new(client.clone(), config);
        let run = tokio::spawn(Arc::clone(&controller).run(Arc::clone(&stop)));
        let host = cluster_schedule.map(|schedule| {
            let controller = Arc::clone(&controller);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || host_schedule(schedule, &controller, &stop))
        });
        while !stop.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = run.await;
        if let Some(host) = host {
            let _ = tokio::task::spawn_blocking(move || host.join()).await;
        }
        Ok(())
    })
}

/// The schedule's thread: steps it once a second with this replica's leadership, and reloads
/// the file when its contents change.
fn host_schedule(mut host: ScheduleHost, controller: &Controller, stop: &AtomicBool) {
    let identity = controller.config().identity.clone();
    while !stop.load(Ordering::SeqCst) {
        if let Some(path) = &host.path {
            match std::fs::read(path) {
                Ok(bytes) if bytes != host.loaded => {
                    match faultline_experiments::schedule::load_schedule(path) {
                        Ok(new) => {
                            host.schedule.reload(new);
                            log(
                                &identity,
                                &format!("reloaded the schedule {}", path.display()),
                            );
                        }
                        Err(e) => log(
                            &identity,
                            &format!("kept the old schedule: {} is invalid: {e}", path.display()),
                        ),
                    }
                    host.loaded = bytes;
                }
                Ok(_) => {}
                Err(e) => log(&identity, &format!("reading {}: {e}", path.display())),
            }
        }
        for line in host.schedule.step(controller.is_leader()) {
            log(&identity, &line);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    for line in host.schedule.step(false) {
        log(&identity, &line);
    }
}

/// The schedule and the file it came from.
struct ScheduleHost {
    schedule: schedule::ClusterSchedule,
    path: Option<PathBuf>,
    loaded: Vec<u8>,
}
