//! `faultlined agent`: the node agent of the cluster target (a privileged DaemonSet).
//!
//! It watches Fault and Halt objects and applies, on its own node only, the part of each Fault
//! that concerns it: expiring nf_tables elements in the host and pod network namespaces, or
//! signals to a pod's processes. Two loops share one [`Core`]:
//! - the **safety loop**, a plain thread that never talks to the API server: every tick it
//!   reconciles the node-local ledger (deadlines on the node's own clock, orphans of ours) and
//!   keeps stopped pods down. A partition that cuts the node off from the control plane
//!   therefore still heals on time.
//! - the **API loop**, async: it keeps a view of Faults and Halts through watches, applies new
//!   Faults (ledger first, through `lifecycle::start_fault`), reverts deleted ones, obeys a
//!   halt, reports each node's status with server-side apply (one field manager per node), and
//!   releases the finalizer once every node that applied a deleted Fault has reverted it or
//!   has left the cluster.

pub mod health;
pub mod journal;
pub mod node;

use faultline_experiments::stderr_line;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use faultline_experiments::kubernetes::crd::{
    Fault, FaultKind, FaultStatus, Halt, NodeFaultStatus, NODE_AGENTS_FINALIZER, VERSION,
};
use faultline_experiments::kubernetes::node_plan::{
    plan_for_node, LocalPod, NodeFacts, NodePlan, Prefix,
};
use faultline_injectors::fault::{FaultAction, Injectors};
use faultline_injectors::ledger::{now_unix_ms, FaultRecord, Ledger};
use faultline_injectors::lifecycle::{self, FaultRequest, ReconcileScope};
use faultline_injectors::net_partition::RuleTable;
use faultline_injectors::process::{ProcessTarget, Signaller};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, ResourceExt};
use nix::sys::signal::Signal;
use serde_json::json;

use self::journal::{EndReason, Entry, Journal};
use self::node::{NoCordons, NodeProcesses, PodHolder, HELD_POD_PREFIX};

/// The field manager prefix of node agents' status writes: `faultline-agent-<node>`.
pub const FIELD_MANAGER_PREFIX: &str = "faultline-agent-";

/// How the agent is set up.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// This node (`NODE_NAME`, from the downward API).
    pub node_name: String,
    /// The agent's own pod UID (`POD_UID`), protected by the guards.
    pub pod_uid: String,
    /// The agent's namespace (`POD_NAMESPACE`), protected by the guards.
    pub pod_namespace: String,
    /// Node-local state: the ledger, the journal, the holds.
    pub state_dir: PathBuf,
    /// How often the safety loop reconciles and the API loop re-checks.
    pub tick: Duration,
    /// The longest a Fault may last from when this agent applies it.
    pub max_fault_duration: Duration,
    /// The longest any single API request may take before the agent gives up on it for now.
    pub api_timeout: Duration,
    /// Destinations no partition on this node ever cuts (`--exempt-cidr`).
    pub exempt_cidrs: Vec<Prefix>,
}

impl AgentConfig {
    /// The field manager of this node's status writes.
    pub fn field_manager(&self) -> String {
        format!("{FIELD_MANAGER_PREFIX}{}", self.node_name)
    }

    /// Where the ledger lives.
    pub fn ledger_dir(&self) -> PathBuf {
        self.state_dir.join("ledger")
    }
}

/// The privileged seams the agent acts through.
pub struct Privileged {
    /// Blocked destinations (nf_tables), in the namespaces named by the node processes'
    /// namespace directory.
    pub rules: Box<dyn RuleTable>,
    /// Signals to pod processes.
    pub signals: Box<dyn Signaller>,
    /// Pod processes and namespace entries.
    pub processes: Box<dyn NodeProcesses>,
}

/// What the ledger's `target` says about a record: which Fault it belongs to.
fn ledger_target(name: &str, uid: &str, what: &str) -> String {
    format!("fault/{name}/{uid} {what}")
}

/// The Fault uid a ledger record belongs to, if it is one of the agent's.
pub fn fault_uid_of(record: &FaultRecord) -> Option<&str> {
    let (head, _) = record.target.strip_prefix("fault/")?.split_once(' ')?;
    head.rsplit_once('/').map(|(_, uid)| uid)
}

/// Parses an RFC 3339 time to Unix milliseconds.
pub fn parse_rfc3339_ms(text: &str) -> Option<u64> {
    let parsed =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).ok()
}

fn rfc3339(unix_ms: u64) -> String {
    humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + Duration::from_millis(unix_ms))
        .to_string()
}

/// The state both loops share; everything here works without the API server.
pub struct Core {
    config: AgentConfig,
    ledger: Ledger,
    holder: PodHolder,
    scheduler: NoCordons,
    privileged: Privileged,
    journal: Mutex<Journal>,
    heartbeat_ms: AtomicU64,
}

impl Core {
    /// Opens the node-local state.
    ///
    /// # Errors
    /// The state directory, the journal or the holds file cannot be read.
    pub fn open(config: AgentConfig, privileged: Privileged) -> std::io::Result<Self> {
        std::fs::create_dir_all(&config.state_dir)?;
        let journal = Journal::open(config.state_dir.join("agent-journal.json"))?;
        let holder = PodHolder::open(config.state_dir.join("agent-holds.json"))?;
        Ok(Self {
            ledger: Ledger::new(config.ledger_dir()),
            config,
            holder,
            scheduler: NoCordons,
            privileged,
            journal: Mutex::new(journal),
            heartbeat_ms: AtomicU64::new(0),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The node-local ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn env(&self) -> Injectors<'_> {
        Injectors {
            rules: self.privileged.rules.as_ref(),
            signals: self.privileged.signals.as_ref(),
            scheduler: &self.scheduler,
            holder: &self.holder,
        }
    }

    fn scope(&self) -> ReconcileScope {
        ReconcileScope {
            namespaces: self.privileged.processes.refresh_namespaces(),
            processes: self.privileged.processes.all_pod_processes(),
        }
    }

    /// The journal (what this node did with each Fault).
    pub fn journal(&self) -> MutexGuard<'_, Journal> {
        self.journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn records(&self) -> Vec<FaultRecord> {
        self.ledger
            .list()
            .map(|(records, _)| records)
            .unwrap_or_default()
    }

    fn records_of(&self, uid: &str) -> Vec<FaultRecord> {
        self.records()
            .into_iter()
            .filter(|r| fault_uid_of(r) == Some(uid))
            .collect()
    }

    fn journal_update(&self, uid: &str, change: impl FnOnce(&mut Entry)) {
        if let Err(error) = self.journal().update(uid, change) {
            stderr_line!("faultlined agent: cannot write the journal: {error}");
        }
    }

    /// One pass of the safety loop: revert what has expired (all, when halted) and anything of
    /// ours with no live record, keep held pods down, and note in the journal what ended.
    pub fn safety_pass(&self, now_ms: u64) {
        self.heartbeat_ms.store(now_ms, Ordering::Relaxed);
        if let Err(error) = lifecycle::reconcile(&self.ledger, &self.env(), &self.scope(), now_ms) {
            stderr_line!("faultlined agent: reconcile failed: {error}");
        }
        self.kill_held_pods();
        self.settle_journal(now_ms);
    }

    /// Marks journal entries whose records are all gone as ended.
    fn settle_journal(&self, now_ms: u64) {
        let live: BTreeSet<String> = self
            .records()
            .iter()
            .filter_map(|r| fault_uid_of(r).map(str::to_owned))
            .collect();
        let halted = self.ledger.halted().ok().flatten().is_some();
        let ended: Vec<(String, EndReason)> = self
            .journal()
            .entries()
            .iter()
            .filter(|(uid, e)| e.applied_at.is_some() && !e.is_over() && !live.contains(*uid))
            .map(|(uid, e)| {
                let reason = if halted {
                    EndReason::Halted
                } else if now_ms >= e.deadline_unix_ms {
                    EndReason::Deadline
                } else {
                    EndReason::Deleted
                };
                (uid.clone(), reason)
            })
            .collect();
        for (uid, reason) in ended {
            self.journal_update(&uid, |e| {
                e.ended_at = Some(rfc3339(now_ms));
                e.reason = Some(reason);
            });
        }
    }

    fn kill_held_pods(&self) {
        for uid in self.holder.held_pod_uids() {
            for process in self.privileged.processes.pod_processes(&uid) {
                if let Err(error) = self.privileged.signals.signal(&process, Signal::SIGKILL) {
                    stderr_line!("faultlined agent: cannot keep pod {uid} down: {error}");
                }
            }
        }
    }

    /// Reverts every fault and blocks new ones (a Halt object exists).
    pub fn halt(&self, now_ms: u64) {
        match self.ledger.halted() {
            Ok(Some(_)) => return,
            Ok(None) => {}
            Err(error) => stderr_line!("faultlined agent: cannot read the halt marker: {error}"),
        }
        match lifecycle::halt(&self.ledger, &self.env(), &self.scope(), now_ms) {
            Ok(report) if !report.halted.is_empty() => {
                stderr_line!(
                    "faultlined agent: halted: reverted {}",
                    report.halted.join(", ")
                );
            }
            Ok(_) => {
                stderr_line!("faultlined agent: halted: nothing was active");
            }
            Err(error) => {
                stderr_line!("faultlined agent: halt failed: {error}");
            }
        }
        self.settle_journal(now_ms);
    }

    /// Allows new faults again (no Halt object is left).
    pub fn resume(&self) {
        if matches!(self.ledger.halted(), Ok(Some(_))) {
            if let Err(error) = lifecycle::resume(&self.ledger) {
                stderr_line!("faultlined agent: resume failed: {error}");
            } else {
                stderr_line!("faultlined agent: resumed");
            }
        }
    }

    /// Whether new faults are blocked.
    pub fn is_halted(&self) -> bool {
        matches!(self.ledger.halted(), Ok(Some(_)))
    }

    /// Reverts this node's part of a Fault that was deleted.
    pub fn revert_deleted(&self, uid: &str, now_ms: u64) {
        let mut failed = None;
        for record in self.records_of(uid) {
            if let Err(error) = lifecycle::revert_fault(&self.ledger, &self.env(), &record.id) {
                failed = Some(error.to_string());
            }
        }
        self.journal_update(uid, |e| {
            if let Some(error) = failed {
                e.last_error = Some(format!("revert failed, retrying: {error}"));
            } else {
                e.ended_at = Some(rfc3339(now_ms));
                e.reason = Some(EndReason::Deleted);
            }
        });
    }

    /// Applies this node's part of `fault` as planned. Ledger first: every action is recorded
    /// (fsynced) before it touches the kernel. A crash in the middle leaves records that the
    /// next call re-injects (idempotent) instead of applying twice.
    pub fn apply(&self, fault: &Fault, plan: NodePlan, now_ms: u64) {
        let uid = fault.uid().unwrap_or_default();
        let name = fault.name_any();
        let Some(deadline_ms) = parse_rfc3339_ms(&fault.spec.deadline) else {
            self.refuse(
                &uid,
                &name,
                0,
                now_ms,
                format!(
                    "spec.deadline {:?} is not an RFC 3339 time",
                    fault.spec.deadline
                ),
            );
            return;
        };
        if now_ms >= deadline_ms {
            self.journal_update(&uid, |e| {
                e.name.clone_from(&name);
                e.deadline_unix_ms = deadline_ms;
                e.ended_at = Some(rfc3339(now_ms));
                e.reason = Some(EndReason::Deadline);
            });
            return;
        }
        let remaining = Duration::from_millis(deadline_ms - now_ms);
        if remaining > self.config.max_fault_duration {
            self.refuse(
                &uid,
                &name,
                deadline_ms,
                now_ms,
                format!(
                    "spec.deadline is {} away, beyond this agent's limit of {}; use a nearer deadline or raise --max-fault-duration",
                    humantime::format_duration(Duration::from_secs(remaining.as_secs())),
                    humantime::format_duration(self.config.max_fault_duration)
                ),
            );
            return;
        }
        // Known before anything is touched, so a crash mid-way is recognised at restart.
        self.journal_update(&uid, |e| {
            e.name.clone_from(&name);
            e.deadline_unix_ms = deadline_ms;
        });
        let result = match plan {
            NodePlan::NotMine => return,
            NodePlan::Refused(reason) => {
                self.refuse(&uid, &name, deadline_ms, now_ms, reason);
                return;
            }
            NodePlan::Partition {
                slot,
                sides,
                rules,
                skipped_pods,
            } => {
                // Two active Faults on one slot is a planning error upstream: refuse, do not wait.
                if let Some(reason) = self.slot_taken_by_another(&uid, slot) {
                    self.refuse(&uid, &name, deadline_ms, now_ms, reason);
                    return;
                }
                self.apply_partition(&uid, &name, slot, sides, rules, remaining, now_ms)
                    .map(|count| (Some(count), None, skipped_pods))
            }
            NodePlan::Pod { kind, pod } => self
                .apply_pod(
                    &uid,
                    &name,
                    kind,
                    &pod.uid,
                    &format!("{}/{}", pod.namespace, pod.name),
                    remaining,
                    now_ms,
                )
                .map(|count| (None, Some(count), Vec::new())),
        };
        let instant = fault.spec.action == FaultKind::Kill;
        let applied_at = rfc3339(now_unix_ms());
        self.journal_update(&uid, |e| match result {
            Ok((rules, processes, skipped)) => {
                e.applied_at = Some(applied_at.clone());
                e.rules = rules;
                e.processes = processes;
                e.last_error = (!skipped.is_empty()).then(|| {
                    format!("left alone by the guards (set spec.overrides.allowSystemPods to include them): {}", skipped.join(", "))
                });
                if instant {
                    e.ended_at = Some(applied_at);
                    e.reason = Some(EndReason::Instant);
                }
            }
            Err(error) => e.last_error = Some(error),
        });
    }

    /// Why `slot` cannot be used by the Fault `uid`: another Fault's record holds it here.
    fn slot_taken_by_another(&self, uid: &str, slot: u32) -> Option<String> {
        self.records()
            .iter()
            .find(|r| {
                fault_uid_of(r) != Some(uid)
                    && matches!(&r.action, FaultAction::Partition { slot: s, .. } if *s == slot)
            })
            .map(|holder| {
                format!(
                    "rule-priority slot {slot} is already used by {} on this node; give each active Fault its own slot",
                    holder.target
                )
            })
    }

    fn refuse(&self, uid: &str, name: &str, deadline_ms: u64, now_ms: u64, reason: String) {
        stderr_line!(
            "faultlined agent: refused Fault {name} on node {}: {reason}",
            self.config.node_name
        );
        self.journal_update(uid, |e| {
            name.clone_into(&mut e.name);
            e.deadline_unix_ms = deadline_ms;
            e.ended_at = Some(rfc3339(now_ms));
            e.reason = Some(EndReason::Refused);
            e.last_error = Some(reason);
        });
    }

    #[allow(clippy::too_many_arguments)] // One call site; a struct would only rename the list.
    fn apply_partition(
        &self,
        uid: &str,
        name: &str,
        slot: u32,
        sides: Vec<Vec<String>>,
        rules: Vec<faultline_injectors::net_partition::PartitionRule>,
        remaining: Duration,
        now_ms: u64,
    ) -> Result<u32, String> {
        let count = rules.len() as u32;
        let existing = self.records_of(uid);
        if !existing.is_empty() {
            // A previous agent recorded it and may have died mid-inject: finish the job.
            for record in &existing {
                record
                    .action
                    .inject(&self.env(), record.deadline_unix_ms)
                    .map_err(|e| e.to_string())?;
            }
            return Ok(count);
        }
        lifecycle::start_fault(
            &self.ledger,
            &self.env(),
            FaultRequest {
                target: ledger_target(name, uid, &format!("partition of {} rules", rules.len())),
                duration: remaining,
                max_duration: self.config.max_fault_duration,
                build: Box::new(move |_local_slot| FaultAction::Partition { slot, sides, rules }),
            },
            now_ms,
        )
        .map(|_| count)
        .map_err(|e| e.to_string())
    }

    #[allow(clippy::too_many_arguments)] // One call site; a struct would only rename the list.
    fn apply_pod(
        &self,
        uid: &str,
        name: &str,
        kind: FaultKind,
        pod_uid: &str,
        pod_label: &str,
        remaining: Duration,
        now_ms: u64,
    ) -> Result<u32, String> {
        let processes = self.privileged.processes.pod_processes(pod_uid);
        if processes.is_empty() {
            return Err(format!(
                "pod {pod_label} (uid {pod_uid}) has no running process on this node"
            ));
        }
        let existing = self.records_of(uid);
        let covered: BTreeSet<(i32, u64)> = existing
            .iter()
            .filter_map(|r| match &r.action {
                FaultAction::Pause { process } | FaultAction::Stop { process, .. } => {
                    Some((process.pid, process.start_ticks))
                }
                _ => None,
            })
            .collect();
        for record in &existing {
            record
                .action
                .inject(&self.env(), record.deadline_unix_ms)
                .map_err(|e| e.to_string())?;
        }
        let build = |process: ProcessTarget| -> Box<dyn FnOnce(u32) -> FaultAction> {
            match kind {
                FaultKind::Pause => Box::new(move |_| FaultAction::Pause { process }),
                FaultKind::Kill => Box::new(move |_| FaultAction::Kill { process }),
                FaultKind::Stop | FaultKind::Partition => Box::new(move |_| FaultAction::Stop {
                    replica: format!("{HELD_POD_PREFIX}{pod_uid}"),
                    process,
                }),
            }
        };
        let targets: Vec<ProcessTarget> = if kind == FaultKind::Stop {
            // One record holds the pod; the safety loop kills every process of a held pod.
            if existing.is_empty() {
                processes.iter().take(1).cloned().collect()
            } else {
                Vec::new()
            }
        } else {
            processes
                .iter()
                .filter(|p| !covered.contains(&(p.pid, p.start_ticks)))
                .cloned()
                .collect()
        };
        for process in targets {
            let what = format!("{} {pod_label} pid {}", kind.as_str(), process.pid);
            lifecycle::start_fault(
                &self.ledger,
                &self.env(),
                FaultRequest {
                    target: ledger_target(name, uid, &what),
                    duration: remaining,
                    max_duration: self.config.max_fault_duration,
                    build: build(process),
                },
                now_ms,
            )
            .map_err(|e| e.to_string())?;
        }
        if kind == FaultKind::Stop {
            self.kill_held_pods();
        }
        Ok(processes.len() as u32)
    }
}

/// The API loop's view of the cluster, from the watches.
#[derive(Default)]
struct View {
    faults: BTreeMap<String, Fault>,
    faults_buffer: Option<BTreeMap<String, Fault>>,
    faults_synced: bool,
    halts: BTreeSet<String>,
    halts_buffer: Option<BTreeSet<String>>,
    halts_synced: bool,
}

impl View {
    fn on_fault(&mut self, event: Event<Fault>) {
        match event {
            Event::Apply(fault) => {
                self.faults.insert(fault.name_any(), fault);
            }
            Event::Delete(fault) => {
                self.faults.remove(&fault.name_any());
            }
            Event::Init => self.faults_buffer = Some(BTreeMap::new()),
            Event::InitApply(fault) => {
                self.faults_buffer
                    .get_or_insert_with(BTreeMap::new)
                    .insert(fault.name_any(), fault);
            }
            Event::InitDone => {
                self.faults = self.faults_buffer.take().unwrap_or_default();
                self.faults_synced = true;
            }
        }
    }

    fn on_halt(&mut self, event: Event<Halt>) {
        match event {
            Event::Apply(halt) => {
                self.halts.insert(halt.name_any());
            }
            Event::Delete(halt) => {
                self.halts.remove(&halt.name_any());
            }
            Event::Init => self.halts_buffer = Some(BTreeSet::new()),
            Event::InitApply(halt) => {
                self.halts_buffer
                    .get_or_insert_with(BTreeSet::new)
                    .insert(halt.name_any());
            }
            Event::InitDone => {
                self.halts = self.halts_buffer.take().unwrap_or_default();
                self.halts_synced = true;
            }
        }
    }
}

/// The node agent: the safety loop and the API loop around one [`Core`].
pub struct NodeAgent {
    core: Arc<Core>,
    client: Client,
    view: Mutex<View>,
    api_reachable: AtomicBool,
}

impl NodeAgent {
    /// An agent for `core` talking to the API server through `client`.
    pub fn new(core: Core, client: Client) -> Self {
        Self {
            core: Arc::new(core),
            client,
            view: Mutex::new(View::default()),
            api_reachable: AtomicBool::new(false),
        }
    }

    /// The shared core.
    pub fn core(&self) -> &Arc<Core> {
        &self.core
    }

    fn view(&self) -> MutexGuard<'_, View> {
        self.view
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether both watches have listed everything once (the readiness of the agent).
    pub fn is_synced(&self) -> bool {
        let view = self.view();
        view.faults_synced && view.halts_synced
    }

    /// Whether the last API request succeeded.
    pub fn api_reachable(&self) -> bool {
        self.api_reachable.load(Ordering::Relaxed)
    }

    /// Starts the safety loop on its own thread; it runs until `stop` is set.
    pub fn spawn_safety_loop(&self, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
        let core = Arc::clone(&self.core);
        std::thread::Builder::new()
            .name("safety loop".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    core.safety_pass(now_unix_ms());
                    std::thread::sleep(core.config.tick);
                }
            })
            .expect("spawn the safety loop")
    }

    /// Runs the API loop until `stop` is set. On the way out the node is healed: every fault of
    /// this node is reverted, so an agent that is removed leaves nothing behind.
    pub async fn run(&self, stop: Arc<AtomicBool>) {
        let faults = kube::runtime::watcher(
            Api::<Fault>::all(self.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .boxed();
        let halts = kube::runtime::watcher(
            Api::<Halt>::all(self.client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .boxed();
        let mut faults = faults;
        let mut halts = halts;
        let mut ticker = tokio::time::interval(self.core.config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !stop.load(Ordering::Relaxed) {
            tokio::select! {
                Some(event) = faults.next() => self.on_fault_event(event),
                Some(event) = halts.next() => self.on_halt_event(event),
                _ = ticker.tick() => {}
            }
            // Take whatever else is ready before acting once.
            while let Some(Some(event)) = futures::FutureExt::now_or_never(faults.next()) {
                self.on_fault_event(event);
            }
            while let Some(Some(event)) = futures::FutureExt::now_or_never(halts.next()) {
                self.on_halt_event(event);
            }
            self.step().await;
        }
        let core = Arc::clone(&self.core);
        let _ = tokio::task::spawn_blocking(move || core.heal_all(now_unix_ms())).await;
        self.push_statuses().await;
    }

    fn on_fault_event(&self, event: Result<Event<Fault>, watcher::Error>) {
        match event {
            Ok(event) => {
                self.api_reachable.store(true, Ordering::Relaxed);
                self.view().on_fault(event);
            }
            Err(error) => self.api_failed(&format!("watch of Faults: {error}")),
        }
    }

    fn on_halt_event(&self, event: Result<Event<Halt>, watcher::Error>) {
        match event {
            Ok(event) => {
                self.api_reachable.store(true, Ordering::Relaxed);
                self.view().on_halt(event);
            }
            Err(error) => self.api_failed(&format!("watch of Halts: {error}")),
        }
    }

    fn api_failed(&self, what: &str) {
        if self.api_reachable.swap(false, Ordering::Relaxed) {
            stderr_line!("faultlined agent: API server unreachable ({what}); deadlines still heal on this node's clock");
        }
    }

    /// One pass of the API loop: halt or resume, revert deleted Faults, apply new ones, report,
    /// release finalizers.
    pub async fn step(&self) {
        let now_ms = now_unix_ms();
        let (halted, synced, faults) = {
            let view = self.view();
            (
                view.halts_synced.then_some(!view.halts.is_empty()),
                view.faults_synced,
                view.faults.values().cloned().collect::<Vec<_>>(),
            )
        };
        match halted {
            Some(true) => {
                let core = Arc::clone(&self.core);
                let _ = tokio::task::spawn_blocking(move || core.halt(now_ms)).await;
            }
            Some(false) => self.core.resume(),
            None => {}
        }
        if synced {
            self.revert_gone(&faults, now_ms).await;
            if halted == Some(false) {
                for fault in &faults {
                    self.maybe_apply(fault).await;
                }
            }
        }
        self.push_statuses().await;
        if synced {
            for fault in faults
                .iter()
                .filter(|f| f.metadata.deletion_timestamp.is_some())
            {
                self.maybe_release_finalizer(fault).await;
            }
            self.forget_old_entries(&faults, now_ms);
        }
    }

    async fn revert_gone(&self, faults: &[Fault], now_ms: u64) {
        let live: BTreeSet<String> = faults
            .iter()
            .filter(|f| f.metadata.deletion_timestamp.is_none())
            .filter_map(ResourceExt::uid)
            .collect();
        let gone: Vec<String> = self
            .core
            .journal()
            .entries()
            .iter()
            .filter(|(uid, e)| e.applied_at.is_some() && !e.is_over() && !live.contains(*uid))
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in gone {
            let core = Arc::clone(&self.core);
            let _ = tokio::task::spawn_blocking(move || core.revert_deleted(&uid, now_ms)).await;
        }
    }

    async fn maybe_apply(&self, fault: &Fault) {
        if fault.metadata.deletion_timestamp.is_some() {
            return;
        }
        let Some(uid) = fault.uid() else { return };
        if self
            .core
            .journal()
            .get(&uid)
            .is_some_and(|e| e.applied_at.is_some() || e.is_over())
        {
            return;
        }
        if !self.concerns_this_node(fault) {
            return;
        }
        let facts = match self.node_facts(fault).await {
            Ok(facts) => facts,
            Err(error) => {
                self.core.journal_update(&uid, |e| {
                    e.name = fault.name_any();
                    e.last_error = Some(format!("waiting for the API server to plan: {error}"));
                });
                return;
            }
        };
        let plan = plan_for_node(&fault.spec, &facts);
        let core = Arc::clone(&self.core);
        let fault = fault.clone();
        let _ = tokio::task::spawn_blocking(move || core.apply(&fault, plan, now_unix_ms())).await;
    }

    /// A cheap check before any API call: is this node named by the Fault at all?
    fn concerns_this_node(&self, fault: &Fault) -> bool {
        let node = &self.core.config.node_name;
        match fault.spec.action {
            FaultKind::Partition => fault
                .spec
                .partition
                .as_ref()
                .is_none_or(|p| p.sides.iter().any(|s| s.nodes.contains(node))),
            _ => fault.spec.pod.as_ref().is_none_or(|p| &p.node_name == node),
        }
    }

    /// What the plan needs from the API server for `fault`: the API server's endpoints (unless
    /// the control plane is to be cut too) and, for pod-level partitions, the pods on this node.
    ///
    /// # Errors
    /// The API server did not answer in time, or refused.
    pub async fn node_facts(&self, fault: &Fault) -> Result<NodeFacts, String> {
        let config = &self.core.config;
        let mut facts = NodeFacts {
            node_name: config.node_name.clone(),
            agent_pod_uid: config.pod_uid.clone(),
            agent_namespace: config.pod_namespace.clone(),
            api_server_endpoints: Vec::new(),
            pods: Vec::new(),
            exempt_prefixes: config.exempt_cidrs.clone(),
        };
        let Some(partition) = &fault.spec.partition else {
            return Ok(facts);
        };
        if fault.spec.action != FaultKind::Partition {
            return Ok(facts);
        }
        if !fault.spec.overrides.isolate_control_plane {
            let slices: Api<EndpointSlice> = Api::namespaced(self.client.clone(), "default");
            let params = ListParams::default().labels("kubernetes.io/service-name=kubernetes");
            let list = self.timed(slices.list(&params)).await?;
            facts.api_server_endpoints = list
                .items
                .iter()
                .flat_map(|slice| slice.endpoints.iter())
                .flat_map(|endpoint| endpoint.addresses.iter())
                .filter_map(|address| address.parse().ok())
                .collect();
            if facts.api_server_endpoints.is_empty() {
                return Err("the kubernetes Service has no IPv4 endpoints to exempt; set spec.overrides.isolateControlPlane to cut without an exemption".into());
            }
        }
        if partition.mode != faultline_experiments::kubernetes::crd::PartitionMode::Nodes {
            let pods: Api<Pod> = Api::all(self.client.clone());
            let params =
                ListParams::default().fields(&format!("spec.nodeName={}", config.node_name));
            let list = self.timed(pods.list(&params)).await?;
            facts.pods = list
                .items
                .iter()
                .map(|pod| LocalPod {
                    namespace: pod.namespace().unwrap_or_default(),
                    name: pod.name_any(),
                    uid: pod.uid().unwrap_or_default(),
                    host_network: pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.host_network)
                        .unwrap_or(false),
                })
                .collect();
        }
        Ok(facts)
    }

    async fn timed<T>(
        &self,
        request: impl std::future::Future<Output = kube::Result<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.core.config.api_timeout, request).await {
            Ok(Ok(value)) => {
                self.api_reachable.store(true, Ordering::Relaxed);
                Ok(value)
            }
            Ok(Err(error)) => {
                if !matches!(error, kube::Error::Api(_)) {
                    self.api_failed(&error.to_string());
                }
                Err(error.to_string())
            }
            Err(_) => {
                self.api_failed("request timed out");
                Err(format!(
                    "no answer within {:?}",
                    self.core.config.api_timeout
                ))
            }
        }
    }

    /// Reports every entry the API server has not seen yet, with server-side apply under this
    /// node's own field manager.
    pub async fn push_statuses(&self) {
        let dirty: Vec<(String, Entry)> = self
            .core
            .journal()
            .entries()
            .iter()
            .filter(|(_, e)| e.dirty && !e.name.is_empty())
            .map(|(uid, e)| (uid.clone(), e.clone()))
            .collect();
        let api: Api<Fault> = Api::all(self.client.clone());
        let params = PatchParams::apply(&self.core.config.field_manager()).force();
        for (uid, entry) in dirty {
            let patch = json!({
                "apiVersion": format!("{}/{VERSION}", faultline_experiments::kubernetes::crd::GROUP),
                "kind": "Fault",
                "status": FaultStatus {
                    nodes: BTreeMap::from([(self.core.config.node_name.clone(), entry.status())]),
                },
            });
            match self
                .timed(api.patch_status(&entry.name, &params, &Patch::Apply(patch)))
                .await
            {
                Ok(_) => {}
                Err(error) if error.contains("404") || error.contains("NotFound") => {}
                Err(_) => return,
            }
            if let Err(error) = self.core.journal().mark_clean(&uid) {
                stderr_line!("faultlined agent: cannot write the journal: {error}");
            }
        }
    }

    /// Removes the finalizer from a deleted Fault once no node that applied it still holds it:
    /// every node with an `appliedAt` has a `revertedAt`, or its Node object is gone.
    pub async fn maybe_release_finalizer(&self, fault: &Fault) {
        let Some(index) = fault
            .finalizers()
            .iter()
            .position(|f| f == NODE_AGENTS_FINALIZER)
        else {
            return;
        };
        let mut statuses: BTreeMap<String, NodeFaultStatus> =
            fault.status.clone().unwrap_or_default().nodes;
        if let Some(entry) = fault
            .uid()
            .and_then(|uid| self.core.journal().get(&uid).cloned())
        {
            if entry.dirty {
                return; // Our own status is not reported yet.
            }
            statuses.insert(self.core.config.node_name.clone(), entry.status());
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        for (node, status) in &statuses {
            if status.applied_at.is_none() || status.reverted_at.is_some() {
                continue;
            }
            match self.timed(nodes.get_opt(node)).await {
                Ok(None) => {}                  // The node left the cluster.
                Ok(Some(_)) | Err(_) => return, // Still holding it, or unknown yet.
            }
        }
        let patch: json_patch::Patch = serde_json::from_value(json!([
            {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": NODE_AGENTS_FINALIZER},
            {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
        ]))
        .expect("a valid JSON patch");
        let api: Api<Fault> = Api::all(self.client.clone());
        // Another agent may win the race; its removal makes our test fail, which is fine.
        let _ = self
            .timed(api.patch(
                &fault.name_any(),
                &PatchParams::default(),
                &Patch::Json::<()>(patch),
            ))
            .await;
    }

    fn forget_old_entries(&self, faults: &[Fault], now_ms: u64) {
        let present: BTreeSet<String> = faults.iter().filter_map(ResourceExt::uid).collect();
        let records: BTreeSet<String> = self
            .core
            .records()
            .iter()
            .filter_map(|r| fault_uid_of(r).map(str::to_owned))
            .collect();
        let result = self.core.journal().retain(|uid, entry| {
            entry.dirty
                || present.contains(uid)
                || records.contains(uid)
                || (!entry.is_over() && entry.applied_at.is_some())
                || now_ms < entry.deadline_unix_ms
        });
        if let Err(error) = result {
            stderr_line!("faultlined agent: cannot write the journal: {error}");
        }
    }
}

impl Core {
    /// Reverts every fault of this node (the agent is stopping).
    pub fn heal_all(&self, now_ms: u64) {
        for record in self.records() {
            let Some(uid) = fault_uid_of(&record).map(str::to_owned) else {
                continue;
            };
            if let Err(error) = lifecycle::revert_fault(&self.ledger, &self.env(), &record.id) {
                stderr_line!("faultlined agent: cannot revert {}: {error}", record.id);
                continue;
            }
            if self.records_of(&uid).is_empty() {
                self.journal_update(&uid, |e| {
                    e.ended_at = Some(rfc3339(now_ms));
                    e.reason = Some(EndReason::AgentStopped);
                });
            }
        }
    }
}
