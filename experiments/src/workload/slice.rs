//! A run as a slice of a load that keeps running (the daemon's background load): the run takes
//! the running load's handle ([`LiveLoad`]) instead of starting its own, reads what every
//! tenant holds as it begins ([`LiveLoad::read_initial_state`]), injects its faults on the
//! load's clock, reads every tenant back through every node while the load goes on
//! ([`LiveLoad::read_back`]), and cuts its history out of the load's ([`cut`]). Either adapter:
//! a NATS load's tenants are read as streams through each NATS server, an HTTP load's through
//! the contract's read endpoint on each gateway the load goes to.
//!
//! What the cut keeps, so that the checkers judge the run's span and nothing before it:
//! - writes and reads that began at or after the slice's start and completed by the cut (when
//!   the read-back was asked for); deliveries that completed by the slice's end (after the
//!   read-back), so work-queue values written just before the cut count as delivered;
//! - the initial-state reads (`initial_state`) and the read-back's operations;
//! - in every read, only the values written in the slice or held when it began. The values
//!   the initial-state reads saw are the run's initial state: they count as acknowledged
//!   before the run, so reading one is not `unexpected` and its absence from the read-back is
//!   a loss. Other values are left out: a write in flight as the slice began that no
//!   initial-state read saw, and values written after the cut (the load went on during the
//!   read-back), so a view read later than another is not missing anything the slice wrote;
//! - leader samples within the span and the run's fault windows. Stream-state samples are left
//!   out: with writes going on the servers never report equal states at one instant.
//!
//! Times are rebased to the slice's start, and the header's start moves with them, so the
//! slice reads as an ordinary run history.

use std::fs::File;
use std::io::{BufRead as _, BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use rustc_hash::{FxHashMap, FxHashSet};

use crate::checkers::intern::split_value;
use crate::history::scan::{self, OpHead};
use crate::history::{
    HistoryHeader, Observation, OpKind, Operation, Outcome, Pattern, ReadItem, OBSERVATIONS_FORMAT,
};

use super::clock::RunClock;
use super::config::{AdapterKind, WorkloadConfig};
use super::http::HttpClient;
use super::nats::{ConnectSpec, NatsConn, ReadRecord};
use super::recorder::ObservationSink;
use super::schedule::TenantSpec;
use super::stats::Progress;
use super::target::{enter_netns, Target};
use super::WorkloadError;

/// A running load as a run sees it: its clock, where its fault windows go, its progress, its
/// files and what it takes to read its tenants back. Cheap to clone.
#[derive(Clone)]
pub struct LiveLoad {
    pub(super) clock: RunClock,
    pub(super) observations: ObservationSink,
    pub(super) progress: Arc<Mutex<Progress>>,
    pub(super) history_path: PathBuf,
    pub(super) observations_path: PathBuf,
    pub(super) tenants: Arc<Vec<TenantSpec>>,
    pub(super) target: Target,
    pub(super) adapter: AdapterKind,
    pub(super) stream_replicas: usize,
    pub(super) http_services: Vec<String>,
    pub(super) op_timeout: Duration,
    pub(super) ping_interval: Duration,
    pub(super) http_timeout: Duration,
}

/// A slice's span on the load's clock, ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceSpan {
    /// The run began.
    pub start_ns: u64,
    /// The read-back was asked for: writes and reads completed by then are the run's.
    pub cut_ns: u64,
    /// The read-back ended: deliveries completed by then are the run's.
    pub end_ns: u64,
}

/// What a cut wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SliceCounts {
    /// Operations of the load in the slice.
    pub operations: u64,
    /// The slice's own reads: initial-state reads and read-back operations.
    pub views: u64,
    /// Read items left out: values written before the slice or after the cut.
    pub items_outside: u64,
}

impl LiveLoad {
    /// Builds the handle of a started workload.
    pub(super) fn new(
        clock: RunClock,
        observations: ObservationSink,
        progress: Arc<Mutex<Progress>>,
        config: &WorkloadConfig,
        tenants: Arc<Vec<TenantSpec>>,
        target: Target,
    ) -> Self {
        Self {
            clock,
            observations,
            progress,
            history_path: config.history.clone(),
            observations_path: config.observations.clone(),
            tenants,
            target,
            adapter: config.adapter,
            stream_replicas: config.stream_replicas,
            http_services: config.http_services.clone(),
            op_timeout: config.op_timeout,
            ping_interval: config.ping_interval,
            http_timeout: config.http_timeout,
        }
    }

    /// The load's time base: a slice's fault windows are recorded on it.
    pub fn clock(&self) -> RunClock {
        self.clock
    }

    /// The load's observation sink (fault windows land in its observations file).
    pub fn observations(&self) -> ObservationSink {
        self.observations.clone()
    }

    /// The load's latest progress, counted from the load's start.
    pub fn progress(&self) -> Progress {
        self.progress
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The load's history file (growing).
    pub fn history_path(&self) -> &Path {
        &self.history_path
    }

    /// The load's observations file (growing).
    pub fn observations_path(&self) -> &Path {
        &self.observations_path
    }

    /// The load's adapter.
    pub fn adapter(&self) -> AdapterKind {
        self.adapter
    }

    /// The load's stream replica count.
    pub fn stream_replicas(&self) -> usize {
        self.stream_replicas
    }

    /// The lab services an HTTP load goes to (those that serve the contract).
    pub fn http_services(&self) -> &[String] {
        &self.http_services
    }

    /// Tenants of the load.
    pub fn tenant_count(&self) -> usize {
        self.tenants.len()
    }

    /// Reads every tenant's whole stream through every NATS server, each through a connection
    /// pinned to that server (an HTTP load: every tenant's records through each gateway's read
    /// endpoint, page by page, that gateway alone), after waiting until `settle_until_ns` on
    /// the load's clock. Runs on a thread of its own that enters the lab's client namespace;
    /// the load goes on meanwhile. Writes the `read_back` operations to `out` (JSON Lines, one operation a
    /// line, as they complete, so a long slice's read-back is not held in memory) and returns
    /// how many. They are not recorded in the load's history, whose later segments would take
    /// them for a final read-back.
    ///
    /// Each server's own replica is not read alone here: that holds the other servers down,
    /// which would be a fault on the load that keeps running.
    ///
    /// # Errors
    /// The thread cannot enter the namespace or start its runtime, or `out` cannot be
    /// written. A server or gateway that does not answer is not an error: its reads are
    /// recorded as failed.
    pub fn read_back(&self, settle_until_ns: u64, out: &Path) -> Result<u64, WorkloadError> {
        self.read_views_on_thread(Pattern::ReadBack, settle_until_ns, out.to_path_buf())?
            .join()
            .map_err(|_| {
                WorkloadError::Config("the slice's read-back thread panicked".to_owned())
            })?
    }

    /// Starts reading what every tenant holds now, through every NATS server (or gateway), on
    /// a thread of its own: the initial state of a slice that begins now (`initial_state`
    /// operations, written to `out` as [`LiveLoad::read_back`] writes its own). The load goes
    /// on meanwhile; [`InitialRead::wait`] waits for the end.
    ///
    /// # Errors
    /// The thread cannot start.
    pub fn read_initial_state(&self, out: PathBuf) -> Result<InitialRead, WorkloadError> {
        let thread = self.read_views_on_thread(Pattern::InitialState, 0, out)?;
        Ok(InitialRead { thread })
    }

    fn read_views_on_thread(
        &self,
        pattern: Pattern,
        not_before_ns: u64,
        out: PathBuf,
    ) -> Result<ReadThread, WorkloadError> {
        let live = self.clone();
        std::thread::Builder::new()
            .name(format!("slice-{}", process_prefix(pattern)))
            .spawn(move || -> Result<u64, WorkloadError> {
                if let Some((dir, netns)) = live.target.client_netns() {
                    enter_netns(&dir, &netns)?;
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(WorkloadError::Runtime)?;
                runtime.block_on(live.read_views(pattern, not_before_ns, &out))
            })
            .map_err(WorkloadError::Runtime)
    }

    /// Every tenant through every server (NATS) or gateway (HTTP), from `not_before_ns` on the
    /// load's clock, as operations of `pattern` written to `out`.
    async fn read_views(
        &self,
        pattern: Pattern,
        not_before_ns: u64,
        out: &Path,
    ) -> Result<u64, WorkloadError> {
        let write_err = |error| WorkloadError::Output {
            what: "slice reads",
            path: out.to_path_buf(),
            error,
        };
        let mut file = BufWriter::new(File::create(out).map_err(write_err)?);
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            self.clock.instant_at(not_before_ns),
        ))
        .await;
        let mut target = self.target.clone();
        // The replicas where they are now (a drained node's moved).
        let _ = target.refresh();
        let count = match self.adapter {
            AdapterKind::Nats => self.read_nats_views(&target, pattern, &mut file).await,
            AdapterKind::Http => self.read_http_views(&target, pattern, &mut file).await,
        }
        .map_err(write_err)?;
        file.flush().map_err(write_err)?;
        Ok(count)
    }

    /// Every tenant's whole stream through each NATS server, on a connection pinned to it.
    async fn read_nats_views(
        &self,
        target: &Target,
        pattern: Pattern,
        file: &mut impl std::io::Write,
    ) -> std::io::Result<u64> {
        let mut count = 0;
        for server in &target.nats {
            let spec = ConnectSpec {
                urls: vec![server.url.clone()],
                name: format!(
                    "faultline-slice-{}-{}",
                    process_prefix(pattern),
                    server.node
                ),
                connect_timeout: Duration::from_secs(3),
                op_timeout: self.op_timeout,
                ping_interval: self.ping_interval,
                pinned_node: Some(server.node.clone()),
                retry_initial: false,
            };
            let conn = NatsConn::connect(&spec, target.node_of_host.clone())
                .await
                .map_err(|e| format!("cannot connect to {}: {e}", server.url));
            let clock = self.clock;
            let conn = &conn;
            let mut reads = futures::stream::iter(self.tenants.iter())
                .map(|tenant| async move {
                    let invoke = clock.now_ns();
                    let result = match conn {
                        Ok(conn) => conn.read(&tenant.stream, 1, u64::MAX, 0).await,
                        Err(e) => Err(e.clone()),
                    };
                    let complete = clock.now_ns();
                    let view = View {
                        node: &server.node,
                        pattern,
                        invoke_ns: invoke,
                        complete_ns: complete,
                    };
                    let result = result.map(|records| {
                        let other = records
                            .iter()
                            .filter_map(|r| r.tenant.as_deref())
                            .find(|t| *t != tenant.id)
                            .map(str::to_owned);
                        (records, other)
                    });
                    view_op(&clock, &view, tenant, result)
                })
                .buffer_unordered(8);
            while let Some(op) = reads.next().await {
                write_json(file, &op)?;
                count += 1;
            }
        }
        Ok(count)
    }

    /// Every tenant's records through each gateway's read endpoint, that gateway alone (no
    /// failover to another), page by page, as the final read-back of an HTTP load reads them.
    async fn read_http_views(
        &self,
        target: &Target,
        pattern: Pattern,
        file: &mut impl std::io::Write,
    ) -> std::io::Result<u64> {
        let client = HttpClient::new(&target.gateways, self.http_timeout, 0);
        let mut count = 0;
        for endpoint in client.endpoints() {
            let clock = self.clock;
            let (client, endpoint) = (&client, &endpoint);
            let mut reads = futures::stream::iter(self.tenants.iter())
                .map(|tenant| async move {
                    let invoke = clock.now_ns();
                    let result = super::run::read_pages(client, endpoint, tenant).await;
                    let complete = clock.now_ns();
                    let view = View {
                        node: &endpoint.node,
                        pattern,
                        invoke_ns: invoke,
                        complete_ns: complete,
                    };
                    let result = result.map(|(records, served)| {
                        let other = (served != tenant.id).then_some(served);
                        (records, other)
                    });
                    view_op(&clock, &view, tenant, result)
                })
                .buffer_unordered(8);
            while let Some(op) = reads.next().await {
                write_json(file, &op)?;
                count += 1;
            }
        }
        Ok(count)
    }
}

type ReadThread = std::thread::JoinHandle<Result<u64, WorkloadError>>;

/// The initial-state read of a slice, under way on its own thread.
pub struct InitialRead {
    thread: ReadThread,
}

impl InitialRead {
    /// Waits for the reads; returns how many it wrote.
    ///
    /// # Errors
    /// The thread could not enter the namespace, start its runtime or write, or panicked.
    pub fn wait(self) -> Result<u64, WorkloadError> {
        self.thread.join().map_err(|_| {
            WorkloadError::Config("the slice's initial-state read thread panicked".to_owned())
        })?
    }
}

fn process_prefix(pattern: Pattern) -> &'static str {
    if pattern == Pattern::InitialState {
        "initial"
    } else {
        "readback"
    }
}

/// One read of one view: through which server, which pattern, when.
struct View<'a> {
    node: &'a str,
    pattern: Pattern,
    invoke_ns: u64,
    complete_ns: u64,
}

/// A view's read as an operation: `result` is the records and the other tenant they were
/// served for, if another's.
fn view_op(
    clock: &RunClock,
    view: &View<'_>,
    tenant: &TenantSpec,
    result: Result<(Vec<ReadRecord>, Option<String>), String>,
) -> Operation {
    let (outcome, error, read, served_tenant) = match result {
        Ok((records, other)) => {
            let items = records
                .into_iter()
                .map(|r| ReadItem {
                    seq: r.seq,
                    value: r.value,
                })
                .collect();
            (Outcome::Ok, None, Some(items), other)
        }
        Err(e) => (Outcome::Fail, Some(e), None, None),
    };
    Operation {
        tenant: tenant.id.clone(),
        process: format!("{}/{}", process_prefix(view.pattern), view.node),
        node: view.node.to_owned(),
        reconnected: false,
        sent_node: None,
        kind: OpKind::Read,
        pattern: view.pattern,
        value: None,
        attempt: 1,
        stream: tenant.stream.clone(),
        seq: None,
        invoke_ns: view.invoke_ns,
        complete_ns: view.complete_ns,
        invoke_unix_ms: clock.unix_ms_at(view.invoke_ns),
        complete_unix_ms: clock.unix_ms_at(view.complete_ns),
        outcome,
        error,
        read,
        served_tenant,
        client_zone: None,
    }
}

/// A set of values as the cut remembers them. A value of the recorder's shape
/// `tenant/producer/counter` is one bit of its producer's table, indexed by the counter (dense
/// while the producer's counters are, as they are: a 24 h slice's 13 M values take a few MB);
/// any other value is kept whole. Exact: no two values share an entry.
#[derive(Default)]
struct ValueSet {
    producers: FxHashMap<Box<str>, Counters>,
    other: FxHashSet<Box<str>>,
}

impl ValueSet {
    fn insert(&mut self, value: &str) {
        match split_value(value) {
            Some((producer, counter)) => {
                if let Some(counters) = self.producers.get_mut(producer) {
                    counters.insert(counter);
                } else {
                    let mut counters = Counters::default();
                    counters.insert(counter);
                    self.producers.insert(producer.into(), counters);
                }
            }
            None => {
                if !self.other.contains(value) {
                    self.other.insert(value.into());
                }
            }
        }
    }

    fn contains(&self, value: &str) -> bool {
        match split_value(value) {
            Some((producer, counter)) => self
                .producers
                .get(producer)
                .is_some_and(|c| c.contains(counter)),
            None => self.other.contains(value),
        }
    }
}

/// A set of counters: a bitmap while they are dense (at most 128 bits an insertion, plus
/// 128 bytes), a hash set for the outliers.
#[derive(Default)]
struct Counters {
    bits: Vec<u64>,
    sparse: FxHashSet<u64>,
    inserted: u64,
}

impl Counters {
    fn insert(&mut self, counter: u64) {
        self.inserted += 1;
        let word = counter / 64;
        let bit = 1u64 << (counter % 64);
        if let Some(w) = usize::try_from(word)
            .ok()
            .and_then(|w| self.bits.get_mut(w))
        {
            *w |= bit;
            return;
        }
        if word <= 2 * self.inserted + 16 {
            // Within u32 here, so within usize.
            let word = word as usize;
            self.bits.resize(word + 1, 0);
            self.bits[word] |= bit;
        } else {
            self.sparse.insert(counter);
        }
    }

    fn contains(&self, counter: u64) -> bool {
        let in_bits = usize::try_from(counter / 64)
            .ok()
            .and_then(|w| self.bits.get(w))
            .is_some_and(|w| w & (1u64 << (counter % 64)) != 0);
        in_bits || (!self.sparse.is_empty() && self.sparse.contains(&counter))
    }
}

/// What decides a slice's operations and read items (see the module doc).
struct SliceFilter {
    span: SliceSpan,
    /// Values written in the slice.
    written: ValueSet,
    /// Values the initial-state reads saw.
    held: ValueSet,
}

impl SliceFilter {
    fn new(span: SliceSpan) -> Self {
        Self {
            span,
            written: ValueSet::default(),
            held: ValueSet::default(),
        }
    }

    /// Remembers the values a view holds when it is an initial-state read.
    fn hold(&mut self, view: &Operation) {
        if view.pattern == Pattern::InitialState && view.outcome == Outcome::Ok {
            for item in view.read.iter().flatten() {
                self.held.insert(&item.value);
            }
        }
    }

    /// Whether a load operation lies in the span.
    fn in_span(&self, kind: OpKind, pattern: Pattern, invoke_ns: u64, complete_ns: u64) -> bool {
        if invoke_ns < self.span.start_ns || !pattern.is_load() {
            return false;
        }
        let until = if kind == OpKind::Deliver {
            self.span.end_ns
        } else {
            self.span.cut_ns
        };
        complete_ns <= until
    }

    /// First pass: remembers the values the slice wrote.
    fn note(&mut self, probe: &Probe<'_>) {
        if probe.kind == OpKind::Write
            && self.in_span(
                probe.kind,
                probe.pattern,
                probe.invoke_ns,
                probe.complete_ns,
            )
        {
            if let Some(value) = &probe.value {
                self.written.insert(value);
            }
        }
    }

    /// Second pass: whether the operation is the slice's. A delivery of a value the slice did
    /// not write is the initial state's (or later's).
    fn keeps(&self, probe: &Probe<'_>) -> bool {
        self.in_span(
            probe.kind,
            probe.pattern,
            probe.invoke_ns,
            probe.complete_ns,
        ) && (probe.kind != OpKind::Deliver
            || probe
                .value
                .as_ref()
                .is_some_and(|v| self.written.contains(v)))
    }

    /// [`SliceFilter::hold`] of one line of a views file.
    fn hold_line(&mut self, line: &[u8]) {
        if let Some(head) = scan::operation_head(line) {
            // Whatever the rest of the line says, `hold` passes over any other pattern.
            if head.pattern != Pattern::InitialState {
                return;
            }
            if let Some(view) = scan::operation_tail(line, head) {
                if view.outcome == Outcome::Ok {
                    if let Some(items) = &view.read {
                        for item in items {
                            self.held.insert(item.value);
                        }
                    }
                }
                return;
            }
        }
        if let Ok(view) = serde_json::from_slice::<Operation>(line) {
            self.hold(&view);
        }
    }

    /// [`SliceFilter::note`] of one line of the load's history.
    fn note_line(&mut self, line: &[u8]) {
        if let Some(head) = scan::operation_head(line) {
            // `note` passes over anything but writes.
            if head.kind != OpKind::Write {
                return;
            }
            if let Some(op) = scan::operation_tail(line, head) {
                self.note(&Probe::from(&op.head));
                return;
            }
        }
        if let Ok(probe) = serde_json::from_slice::<Probe<'_>>(line) {
            self.note(&probe);
        }
    }

    /// Whether a read item of `value` stays in the slice.
    fn covers(&self, value: &str) -> bool {
        self.written.contains(value) || self.held.contains(value)
    }

    /// Writes one line of the load's history (`view`: of a views file, kept whole) to the
    /// slice if the slice keeps it, adjusted; returns how many read items it left out, or
    /// `None` when it did not keep the line. A line in the recorder's layout is spliced
    /// ([`scan::write_rebased`]); any other is parsed and written again by serde_json.
    fn write_kept(
        &self,
        out: &mut impl std::io::Write,
        line: &[u8],
        view: bool,
    ) -> std::io::Result<Option<u64>> {
        if let Some(head) = scan::operation_head(line) {
            if !view && !self.keeps(&Probe::from(&head)) {
                return Ok(None);
            }
            if let Some(op) = scan::operation_tail(line, head) {
                let outside =
                    scan::write_rebased(out, line, &op, self.span.start_ns, |v| self.covers(v))?;
                out.write_all(b"\n")?;
                return Ok(Some(outside));
            }
        }
        if !view && !serde_json::from_slice::<Probe<'_>>(line).is_ok_and(|p| self.keeps(&p)) {
            return Ok(None);
        }
        let Ok(mut op) = serde_json::from_slice::<Operation>(line) else {
            return Ok(None);
        };
        let outside = self.adjust(&mut op);
        write_json(out, &op)?;
        Ok(Some(outside))
    }

    /// Keeps in a read only the values written in the slice or held when it began, and
    /// rebases the times; returns how many items it left out.
    fn adjust(&self, op: &mut Operation) -> u64 {
        let mut outside = 0;
        if let Some(items) = op.read.as_mut() {
            let before = items.len();
            items.retain(|item| self.covers(&item.value));
            outside = (before - items.len()) as u64;
        }
        op.invoke_ns = op.invoke_ns.saturating_sub(self.span.start_ns);
        op.complete_ns = op.complete_ns.saturating_sub(self.span.start_ns);
        outside
    }
}

/// The fields of a history line that decide whether the slice keeps it, read without the rest.
#[derive(serde::Deserialize)]
struct Probe<'a> {
    kind: OpKind,
    pattern: Pattern,
    #[serde(borrow, default)]
    value: Option<std::borrow::Cow<'a, str>>,
    invoke_ns: u64,
    complete_ns: u64,
}

impl<'a> From<&OpHead<'a>> for Probe<'a> {
    fn from(head: &OpHead<'a>) -> Self {
        Self {
            kind: head.kind,
            pattern: head.pattern,
            value: head.value.map(std::borrow::Cow::Borrowed),
            invoke_ns: head.invoke_ns,
            complete_ns: head.complete_ns,
        }
    }
}

impl<'a> From<&'a Operation> for Probe<'a> {
    fn from(op: &'a Operation) -> Self {
        Self {
            kind: op.kind,
            pattern: op.pattern,
            value: op.value.as_deref().map(std::borrow::Cow::Borrowed),
            invoke_ns: op.invoke_ns,
            complete_ns: op.complete_ns,
        }
    }
}

/// Picks the slice's operations out of the load's (in any order) and appends `views` (the
/// slice's own reads: its initial-state reads and its read-back), keeping in every read only
/// values written in the slice or held when it began, and rebases times to the slice's start
/// (see the module doc). Returns the operations and how many read items it left out. [`cut`]
/// does the same on files, streaming.
pub fn select(
    ops: impl IntoIterator<Item = Operation>,
    views: Vec<Operation>,
    span: SliceSpan,
) -> (Vec<Operation>, u64) {
    let ops: Vec<Operation> = ops.into_iter().collect();
    let mut filter = SliceFilter::new(span);
    for view in &views {
        filter.hold(view);
    }
    for op in &ops {
        filter.note(&Probe::from(op));
    }
    let mut kept: Vec<Operation> = ops
        .into_iter()
        .filter(|op| filter.keeps(&Probe::from(op)))
        .collect();
    kept.extend(views);
    let outside = kept.iter_mut().map(|op| filter.adjust(op)).sum();
    (kept, outside)
}

/// Picks the slice's observations: leader samples within the span and fault windows that
/// began in it, rebased to the slice's start.
pub fn select_observations(
    observations: impl IntoIterator<Item = Observation>,
    span: SliceSpan,
) -> Vec<Observation> {
    observations
        .into_iter()
        .filter_map(|o| select_observation(o, span))
        .collect()
}

/// One observation as [`select_observations`] picks it: rebased, or `None` when the slice
/// leaves it out.
fn select_observation(o: Observation, span: SliceSpan) -> Option<Observation> {
    let shift = |ns: u64| ns.saturating_sub(span.start_ns);
    match o {
        Observation::Leader {
            at_ns,
            observer,
            stream,
            leader,
        } if leader_in_span(at_ns, span) => Some(Observation::Leader {
            at_ns: shift(at_ns),
            observer,
            stream,
            leader,
        }),
        Observation::Fault {
            fault_id,
            kind,
            start_ns,
            end_ns,
            injecting_ns,
            reverting_ns,
            sides,
            affected,
            survivable,
            chosen,
        } if injecting_ns.unwrap_or(start_ns) >= span.start_ns => Some(Observation::Fault {
            fault_id,
            kind,
            start_ns: shift(start_ns),
            end_ns: end_ns.map(shift),
            injecting_ns: injecting_ns.map(shift),
            reverting_ns: reverting_ns.map(shift),
            sides,
            affected,
            survivable,
            chosen,
        }),
        _ => None,
    }
}

fn leader_in_span(at_ns: u64, span: SliceSpan) -> bool {
    (span.start_ns..=span.end_ns).contains(&at_ns)
}

/// Where a cut reads from and writes to.
pub struct CutFiles<'a> {
    /// The load's history.
    pub history_in: &'a Path,
    /// The load's observations.
    pub observations_in: &'a Path,
    /// The slice's history.
    pub history_out: &'a Path,
    /// The slice's observations.
    pub observations_out: &'a Path,
}

/// Cuts a slice out of the load's files into the run's: the history (header with `run_id`,
/// the start moved to the slice's start) and the observations. Lines the load is still
/// writing (a partial last line) are skipped.
///
/// `views` are files of the slice's own reads (JSON Lines of operations: the initial-state
/// reads and the read-back, as [`LiveLoad::read_initial_state`] and [`LiveLoad::read_back`]
/// write them); they are appended.
///
/// Streaming, in two passes over the load's history: the first remembers the values the
/// slice wrote (a bit each, [`ValueSet`]), the second writes the slice's operations. Lines in
/// the recorder's layout are read by [`scan`] and spliced (times rebased, read items left out)
/// without being parsed and written again; any other line goes through serde_json, with the
/// same result. Memory does not grow with the number of operations otherwise: a 24 h slice is
/// cut in a few MB (BENCHMARKS.md).
///
/// # Errors
/// A file cannot be read or written, or the load's history has no header.
pub fn cut(
    files: &CutFiles<'_>,
    span: SliceSpan,
    run_id: &str,
    views: &[&Path],
) -> Result<SliceCounts, WorkloadError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |error: std::io::Error| WorkloadError::Output {
            what: "load history",
            path: path.clone(),
            error,
        }
    };
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |error: std::io::Error| WorkloadError::Output {
            what: "history",
            path: path.clone(),
            error,
        }
    };
    let open_at = |path: &Path| -> Result<Lines, WorkloadError> {
        let file = File::open(path).map_err(read_err(path))?;
        Ok(Lines::new(BufReader::with_capacity(1 << 20, file)))
    };
    let open = || open_at(files.history_in);
    let mut lines = open()?;
    let mut header: HistoryHeader = lines
        .next()
        .map_err(read_err(files.history_in))?
        .and_then(|l| serde_json::from_slice(l).ok())
        .ok_or_else(|| {
            WorkloadError::Config(format!(
                "the load's history {} has no header; is it a faultline history?",
                files.history_in.display()
            ))
        })?;
    let mut filter = SliceFilter::new(span);
    for path in views {
        let mut lines = open_at(path)?;
        while let Some(line) = lines.next().map_err(read_err(path))? {
            filter.hold_line(line);
        }
    }
    while let Some(line) = lines.next().map_err(read_err(files.history_in))? {
        filter.note_line(line);
    }

    run_id.clone_into(&mut header.run_id);
    header.started_at_unix_ms += span.start_ns / 1_000_000;
    // The slice's initial-state reads are of the current version, whatever wrote the load's.
    header.version = crate::history::HISTORY_FORMAT_VERSION;
    let mut out = BufWriter::with_capacity(
        1 << 20,
        File::create(files.history_out).map_err(write_err(files.history_out))?,
    );
    write_json(&mut out, &header).map_err(write_err(files.history_out))?;
    let mut lines = open()?;
    lines.next().map_err(read_err(files.history_in))?;
    let (mut operations, mut items_outside) = (0_u64, 0_u64);
    while let Some(line) = lines.next().map_err(read_err(files.history_in))? {
        if let Some(outside) = filter
            .write_kept(&mut out, line, false)
            .map_err(write_err(files.history_out))?
        {
            items_outside += outside;
            operations += 1;
        }
    }
    let mut view_count = 0;
    for path in views {
        let mut lines = open_at(path)?;
        while let Some(line) = lines.next().map_err(read_err(path))? {
            if let Some(outside) = filter
                .write_kept(&mut out, line, true)
                .map_err(write_err(files.history_out))?
            {
                items_outside += outside;
                view_count += 1;
            }
        }
    }
    out.flush().map_err(write_err(files.history_out))?;

    cut_observations(files, span, run_id, header.version)?;
    Ok(SliceCounts {
        operations,
        views: view_count,
        items_outside,
    })
}

/// The slice's observations (see [`select_observations`]).
fn cut_observations(
    files: &CutFiles<'_>,
    span: SliceSpan,
    run_id: &str,
    version: u32,
) -> Result<(), WorkloadError> {
    let read_err = |error| WorkloadError::Output {
        what: "load observations",
        path: files.observations_in.to_path_buf(),
        error,
    };
    let write_err = |error| WorkloadError::Output {
        what: "observations",
        path: files.observations_out.to_path_buf(),
        error,
    };
    let mut input = BufReader::with_capacity(
        1 << 20,
        File::open(files.observations_in).map_err(read_err)?,
    );
    let mut out = BufWriter::with_capacity(
        1 << 20,
        File::create(files.observations_out).map_err(write_err)?,
    );
    let header = Observation::Header {
        format: OBSERVATIONS_FORMAT.to_owned(),
        version,
        run_id: run_id.to_owned(),
    };
    write_json(&mut out, &header).map_err(write_err)?;
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).map_err(read_err)? == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        // The recorder's leader samples, spliced; anything else through serde_json.
        if let Some(sample) = scan::leader(&line) {
            if leader_in_span(sample.at_ns, span) {
                scan::write_leader_rebased(&mut out, &line, &sample, span.start_ns)
                    .and_then(|()| out.write_all(b"\n"))
                    .map_err(write_err)?;
            }
            continue;
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        // Lines are text: the file ends for the cut where it stops being UTF-8.
        let Ok(text) = std::str::from_utf8(&line) else {
            break;
        };
        if let Some(o) = serde_json::from_str::<Observation>(text)
            .ok()
            .and_then(|o| select_observation(o, span))
        {
            write_json(&mut out, &o).map_err(write_err)?;
        }
    }
    out.flush().map_err(write_err)
}

/// Complete lines of a file, one buffer reused: a last line without its newline (still being
/// written) is left out.
struct Lines {
    reader: BufReader<File>,
    line: Vec<u8>,
}

impl Lines {
    fn new(reader: BufReader<File>) -> Self {
        Self {
            reader,
            line: Vec::with_capacity(4096),
        }
    }

    fn next(&mut self) -> std::io::Result<Option<&[u8]>> {
        self.line.clear();
        let n = self.reader.read_until(b'\n', &mut self.line)?;
        if n == 0 || self.line.last() != Some(&b'\n') {
            return Ok(None);
        }
        Ok(Some(&self.line[..self.line.len() - 1]))
    }
}

fn write_json<T: serde::Serialize>(
    out: &mut impl std::io::Write,
    value: &T,
) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    out.write_all(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: OpKind, value: &str, invoke_ns: u64, complete_ns: u64) -> Operation {
        Operation {
            tenant: "t000".into(),
            process: "t000/p1".into(),
            node: "n1".into(),
            reconnected: false,
            sent_node: None,
            kind,
            pattern: if kind == OpKind::Deliver {
                Pattern::Job
            } else {
                Pattern::Chat
            },
            value: (kind != OpKind::Read).then(|| value.to_owned()),
            attempt: 1,
            stream: "FL_t000".into(),
            seq: None,
            invoke_ns,
            complete_ns,
            invoke_unix_ms: 0,
            complete_unix_ms: 0,
            outcome: Outcome::Ok,
            error: None,
            read: None,
            served_tenant: None,
            client_zone: None,
        }
    }

    fn read(values: &[&str], invoke_ns: u64, complete_ns: u64) -> Operation {
        let mut r = op(OpKind::Read, "", invoke_ns, complete_ns);
        r.read = Some(
            values
                .iter()
                .enumerate()
                .map(|(i, v)| ReadItem {
                    seq: i as u64 + 1,
                    value: (*v).to_owned(),
                })
                .collect(),
        );
        r
    }

    const SPAN: SliceSpan = SliceSpan {
        start_ns: 100,
        cut_ns: 200,
        end_ns: 300,
    };

    fn values(ops: &[Operation]) -> Vec<(OpKind, String, u64)> {
        ops.iter()
            .map(|o| {
                let v = o.value.clone().unwrap_or_else(|| {
                    o.read
                        .as_ref()
                        .map(|r| {
                            r.iter()
                                .map(|i| i.value.as_str())
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default()
                });
                (o.kind, v, o.invoke_ns)
            })
            .collect()
    }

    #[test]
    fn the_slice_keeps_its_span_and_reads_only_its_own_values() {
        let load = vec![
            // Before the slice: the initial state.
            op(OpKind::Write, "t000/p1/1", 10, 20),
            // In flight when the slice began: not the slice's.
            op(OpKind::Write, "t000/p1/2", 90, 110),
            // The slice's writes.
            op(OpKind::Write, "t000/p1/3", 120, 130),
            op(OpKind::Write, "t000/p1/4", 150, 190),
            // In flight at the cut: not the slice's (the read-back may or may not see it).
            op(OpKind::Write, "t000/p1/5", 195, 210),
            // After the cut.
            op(OpKind::Write, "t000/p1/6", 220, 230),
            // A read in the slice sees initial state and its own write.
            read(&["t000/p1/1", "t000/p1/2", "t000/p1/3"], 140, 145),
            // A delivery after the cut of a value the slice wrote is the slice's; of one it
            // did not write, not.
            op(OpKind::Deliver, "t000/p1/4", 250, 260),
            op(OpKind::Deliver, "t000/p1/1", 250, 260),
            // A delivery after the slice's end is not.
            op(OpKind::Deliver, "t000/p1/3", 310, 320),
        ];
        let read_back = read(
            &[
                "t000/p1/1",
                "t000/p1/2",
                "t000/p1/3",
                "t000/p1/4",
                "t000/p1/5",
                "t000/p1/6",
            ],
            240,
            245,
        );
        let mut read_back = read_back;
        read_back.pattern = Pattern::ReadBack;
        let (ops, outside) = select(load, vec![read_back], SPAN);
        assert_eq!(
            values(&ops),
            vec![
                (OpKind::Write, "t000/p1/3".into(), 20),
                (OpKind::Write, "t000/p1/4".into(), 50),
                (OpKind::Read, "t000/p1/3".into(), 40),
                (OpKind::Deliver, "t000/p1/4".into(), 150),
                (OpKind::Read, "t000/p1/3,t000/p1/4".into(), 140),
            ]
        );
        assert_eq!(outside, 2 + 4);
        assert_eq!(ops[4].pattern, Pattern::ReadBack);
        assert_eq!(ops[4].complete_ns, 145, "rebased to the slice's start");
    }

    #[test]
    fn observations_keep_the_runs_faults_and_leaders_in_the_span() {
        let fault = |injecting: u64| Observation::Fault {
            fault_id: format!("f{injecting}"),
            kind: "pause".into(),
            start_ns: injecting + 5,
            end_ns: Some(injecting + 50),
            injecting_ns: Some(injecting),
            reverting_ns: Some(injecting + 45),
            sides: vec![],
            affected: vec!["n1".into()],
            survivable: true,
            chosen: None,
        };
        let leader = |at_ns: u64| Observation::Leader {
            at_ns,
            observer: "n1".into(),
            stream: "$meta".into(),
            leader: Some("n2".into()),
        };
        let settled = Observation::Settled {
            at_ns: 250,
            deadline_ns: 260,
            converged: false,
            unanswered: vec![],
        };
        let kept = select_observations(
            vec![
                fault(50),
                fault(120),
                leader(90),
                leader(150),
                leader(400),
                settled,
            ],
            SPAN,
        );
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert!(matches!(
            kept[0],
            Observation::Fault {
                start_ns: 25,
                injecting_ns: Some(20),
                end_ns: Some(70),
                ..
            }
        ));
        assert!(matches!(kept[1], Observation::Leader { at_ns: 50, .. }));
    }

    fn slice_header() -> HistoryHeader {
        HistoryHeader {
            format: crate::history::HISTORY_FORMAT.to_owned(),
            version: crate::history::HISTORY_FORMAT_VERSION,
            run_id: "slice".to_owned(),
            started_at_unix_ms: 0,
            adapter: "nats".to_owned(),
            client: None,
        }
    }

    fn anomalies(ops: &[Operation]) -> (crate::checkers::Status, Vec<(String, u64)>) {
        let header = slice_header();
        let config = crate::checkers::CheckConfig::default();
        let report =
            crate::checkers::check_operations(&header, ops, Some(vec![]), &config).expect("check");
        let verdict = report.verdict("consistency").expect("consistency");
        let found = verdict
            .anomalies
            .iter()
            .filter(|a| a.count > 0 && a.severity == crate::checkers::Severity::Invalid)
            .map(|a| (a.name.clone(), a.count))
            .collect();
        (verdict.status, found)
    }

    /// The consistency checker on the raw span finds `unexpected` values at both ends (written
    /// before the slice, or during its read-back); on the slice it finds none, yet still
    /// finds a value the slice wrote and lost.
    #[test]
    fn the_checker_sees_no_false_anomaly_at_the_slices_ends_and_still_sees_a_loss() {
        let load = vec![
            op(OpKind::Write, "t000/p1/1", 10, 20),
            op(OpKind::Write, "t000/p1/2", 30, 40),
            op(OpKind::Write, "t000/p1/3", 120, 130),
            op(OpKind::Write, "t000/p1/4", 150, 160),
            op(OpKind::Write, "t000/p1/5", 170, 180),
            // Written during the read-back: only the later view has it.
            op(OpKind::Write, "t000/p1/6", 230, 235),
        ];
        let read_back = |node: &str, values: &[&str], at: u64| {
            let mut r = read(values, at, at + 2);
            r.pattern = Pattern::ReadBack;
            r.node = node.to_owned();
            r.process = format!("readback/{node}");
            r
        };
        let views = |lose_5: bool| {
            let mut early = vec!["t000/p1/1", "t000/p1/2", "t000/p1/3", "t000/p1/4"];
            if !lose_5 {
                early.push("t000/p1/5");
            }
            let mut late = early.clone();
            late.push("t000/p1/6");
            vec![read_back("n1", &early, 220), read_back("n2", &late, 240)]
        };
        let raw: Vec<Operation> = load
            .iter()
            .filter(|o| o.invoke_ns >= SPAN.start_ns && o.complete_ns <= SPAN.cut_ns)
            .cloned()
            .chain(views(false))
            .collect();
        let (status, found) = anomalies(&raw);
        assert_eq!(status, crate::checkers::Status::Invalid);
        assert_eq!(found, vec![("unexpected".to_owned(), 3)], "{found:?}");

        let (slice, _) = select(load.clone(), views(false), SPAN);
        let (status, found) = anomalies(&slice);
        assert_eq!(status, crate::checkers::Status::Valid, "{found:?}");

        let (slice, _) = select(load, views(true), SPAN);
        let (status, found) = anomalies(&slice);
        assert_eq!(status, crate::checkers::Status::Invalid);
        assert_eq!(found, vec![("lost".to_owned(), 1)], "{found:?}");
    }
    /// A read of the slice's own, each value at the sequence of its counter.
    fn view(pattern: Pattern, node: &str, values: &[&str], at: u64) -> Operation {
        let mut r = read(values, at, at + 2);
        for item in r.read.iter_mut().flatten() {
            item.seq = item
                .value
                .rsplit('/')
                .next()
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
        }
        r.pattern = pattern;
        r.node = node.to_owned();
        r.process = format!("{}/{node}", process_prefix(pattern));
        r
    }

    /// The load before the slice wrote 1 and 2 (2 in flight as the slice began), the slice
    /// wrote 3 and 4. The initial-state reads saw 1, and 2 through n2 only.
    fn load_and_initial_state() -> (Vec<Operation>, Vec<Operation>) {
        let load = vec![
            op(OpKind::Write, "t000/p1/1", 10, 20),
            op(OpKind::Write, "t000/p1/2", 95, 105),
            op(OpKind::Write, "t000/p1/3", 120, 130),
            op(OpKind::Write, "t000/p1/4", 150, 160),
        ];
        let initial = vec![
            view(Pattern::InitialState, "n1", &["t000/p1/1"], 101),
            view(
                Pattern::InitialState,
                "n2",
                &["t000/p1/1", "t000/p1/2"],
                103,
            ),
        ];
        (load, initial)
    }

    #[test]
    fn the_slice_keeps_the_values_held_when_it_began() {
        let (load, mut views) = load_and_initial_state();
        // A write in flight as the slice began that no initial-state read saw is left out.
        let mut load = load;
        load.push(op(OpKind::Write, "t000/p1/9", 99, 108));
        views.push(view(
            Pattern::ReadBack,
            "n1",
            &[
                "t000/p1/1",
                "t000/p1/2",
                "t000/p1/9",
                "t000/p1/3",
                "t000/p1/4",
            ],
            250,
        ));
        let (ops, outside) = select(load, views, SPAN);
        let reads: Vec<(Pattern, String)> = values(&ops)
            .into_iter()
            .zip(&ops)
            .filter(|(_, o)| o.kind == OpKind::Read)
            .map(|((_, v, _), o)| (o.pattern, v))
            .collect();
        assert_eq!(
            reads,
            vec![
                (Pattern::InitialState, "t000/p1/1".to_owned()),
                (Pattern::InitialState, "t000/p1/1,t000/p1/2".to_owned()),
                (
                    Pattern::ReadBack,
                    "t000/p1/1,t000/p1/2,t000/p1/3,t000/p1/4".to_owned()
                ),
            ]
        );
        assert_eq!(outside, 1, "t000/p1/9");
        assert_eq!(ops[2].invoke_ns, 1, "rebased to the slice's start");
    }

    /// A value acknowledged before the slice and held when it began, then lost during it, is
    /// `lost`; a value held before and kept is not, and nothing is `unexpected`.
    #[test]
    fn the_checker_sees_the_loss_of_a_value_held_when_the_slice_began() {
        let read_backs = |lose: Option<&str>| {
            let all = ["t000/p1/1", "t000/p1/2", "t000/p1/3", "t000/p1/4"];
            let kept: Vec<&str> = all.into_iter().filter(|v| Some(*v) != lose).collect();
            vec![
                view(Pattern::ReadBack, "n1", &kept, 240),
                view(Pattern::ReadBack, "n2", &kept, 250),
            ]
        };
        for (lose, expected) in [
            (None, vec![]),
            (Some("t000/p1/1"), vec![("lost".to_owned(), 1)]),
            (Some("t000/p1/2"), vec![("lost".to_owned(), 1)]),
            (Some("t000/p1/3"), vec![("lost".to_owned(), 1)]),
        ] {
            let (load, mut views) = load_and_initial_state();
            views.extend(read_backs(lose));
            let (slice, _) = select(load, views, SPAN);
            let (status, found) = anomalies(&slice);
            assert_eq!(found, expected, "losing {lose:?}");
            let valid = expected.is_empty();
            assert_eq!(
                status == crate::checkers::Status::Valid,
                valid,
                "losing {lose:?}"
            );
        }

        // Without the initial-state reads (as slices were judged before), the loss of a value
        // held before goes unseen.
        let (load, _) = load_and_initial_state();
        let (slice, _) = select(load, read_backs(Some("t000/p1/1")), SPAN);
        assert_eq!(anomalies(&slice).0, crate::checkers::Status::Valid);
    }

    /// The lost value's evidence says it was held when the run began, and the verdict's
    /// summary counts the values held before.
    #[test]
    fn the_verdict_names_values_held_when_the_run_began() {
        let header = slice_header();
        let config = crate::checkers::CheckConfig::default();
        let judge = |lose: bool| {
            let (load, mut views) = load_and_initial_state();
            let kept: &[&str] = if lose {
                &["t000/p1/2", "t000/p1/3", "t000/p1/4"]
            } else {
                &["t000/p1/1", "t000/p1/2", "t000/p1/3", "t000/p1/4"]
            };
            views.push(view(Pattern::ReadBack, "n1", kept, 240));
            let (slice, _) = select(load, views, SPAN);
            let report = crate::checkers::check_operations(&header, &slice, Some(vec![]), &config)
                .expect("check");
            report.verdict("consistency").expect("consistency").clone()
        };
        let kept = judge(false);
        assert!(
            kept.summary.starts_with(
                "4 acknowledged writes (2 of them held when the run began), none lost"
            ),
            "{}",
            kept.summary
        );
        let lost = judge(true);
        let evidence = &lost
            .anomalies
            .iter()
            .find(|a| a.name == "lost")
            .expect("lost")
            .evidence[0];
        assert_eq!(evidence.value.as_deref(), Some("t000/p1/1"));
        assert!(
            evidence
                .detail
                .starts_with("held when the run began (read through n1) but absent"),
            "{}",
            evidence.detail
        );
    }
    /// The cut on files writes what `select` picks, skips a partial last line, and appends the
    /// views from their files.
    #[test]
    fn the_cut_on_files_agrees_with_select() {
        let dir = tempfile::tempdir().expect("dir");
        let p = |name: &str| dir.path().join(name);
        let header = HistoryHeader {
            format: crate::history::HISTORY_FORMAT.to_owned(),
            version: 2,
            run_id: "background".to_owned(),
            started_at_unix_ms: 1_000,
            adapter: "nats".to_owned(),
            client: None,
        };
        let (load, initial) = load_and_initial_state();
        let read_back = vec![view(
            Pattern::ReadBack,
            "n1",
            &["t000/p1/1", "t000/p1/2", "t000/p1/3", "t000/p1/4"],
            250,
        )];
        let mut text = serde_json::to_string(&header).expect("json") + "\n";
        for op in &load {
            text += &(serde_json::to_string(op).expect("json") + "\n");
        }
        text += "{\"tenant\":\"t000\",\"proc";
        std::fs::write(p("load.jsonl"), text).expect("write");
        std::fs::write(p("load-obs.jsonl"), "").expect("write");
        for (name, views) in [("initial.jsonl", &initial), ("read-back.jsonl", &read_back)] {
            let mut out = File::create(p(name)).expect("create");
            for v in views {
                write_json(&mut out, v).expect("write");
            }
        }
        let counts = cut(
            &CutFiles {
                history_in: &p("load.jsonl"),
                observations_in: &p("load-obs.jsonl"),
                history_out: &p("history.jsonl"),
                observations_out: &p("observations.jsonl"),
            },
            SPAN,
            "run-1",
            &[&p("initial.jsonl"), &p("read-back.jsonl")],
        )
        .expect("cut");
        let written = std::fs::read_to_string(p("history.jsonl")).expect("read");
        let mut lines = written.lines();
        let out_header: HistoryHeader =
            serde_json::from_str(lines.next().expect("header")).expect("header");
        assert_eq!(out_header.run_id, "run-1");
        assert_eq!(out_header.version, crate::history::HISTORY_FORMAT_VERSION);
        assert_eq!(out_header.started_at_unix_ms, 1_000, "100 ns is under a ms");
        let ops: Vec<Operation> = lines
            .map(|l| serde_json::from_str(l).expect("operation"))
            .collect();
        let views: Vec<Operation> = initial.into_iter().chain(read_back).collect();
        let (expected, outside) = select(load, views, SPAN);
        assert_eq!(ops, expected);
        assert_eq!(
            counts,
            SliceCounts {
                operations: 2,
                views: 3,
                items_outside: outside,
            }
        );
    }
}
