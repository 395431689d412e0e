//! The one streaming pass over a history. Each operation is folded into order-independent
//! facts (per value, per stream, per recovery bucket), so the history never has to be held in
//! memory and its line order does not matter. The checkers are pure functions of these facts,
//! the observations and the configuration.
//!
//! Memory: one [`ValueFacts`] (64 bytes) per distinct value, one `u32` per stored and per acked
//! sequence number, 12 bytes per load operation for latency percentiles, 16 bytes per series and
//! bucket that holds data (never per empty bucket: see [`super::buckets`]), and a small record
//! per read; nothing per read item beyond that.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::history::{OpKind, Outcome, Pattern};

use super::buckets::BucketCells;
use super::config::CheckConfig;
use super::intern::{Paged, SeqMap, Sym, Symbols, ValueId, NO_SYM};
use super::model::Evidence;
use super::observations::{Leaders, Observations};

/// One value seen by a read, interned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item {
    /// Stream sequence.
    pub seq: u64,
    /// The value.
    pub value: ValueId,
}

/// One operation with its strings interned: what the checkers consume.
#[derive(Clone, Copy, Debug)]
pub struct Op<'a> {
    /// Tenant.
    pub tenant: Sym,
    /// Client process.
    pub process: Sym,
    /// Node or endpoint the operation went through.
    pub node: Sym,
    /// Stream or key.
    pub stream: Sym,
    /// What it did.
    pub kind: OpKind,
    /// Which workload pattern issued it.
    pub pattern: Pattern,
    /// How it ended.
    pub outcome: Outcome,
    /// Attempt number.
    pub attempt: u32,
    /// Written or delivered value.
    pub value: Option<ValueId>,
    /// Acknowledged or delivered sequence.
    pub seq: Option<u64>,
    /// Intended send time, ns since the run start.
    pub invoke_ns: u64,
    /// Completion time, ns since the run start.
    pub complete_ns: u64,
    /// What a read returned.
    pub read: Option<&'a [Item]>,
    /// The tenant the server says it served.
    pub served_tenant: Option<Sym>,
    /// Whether `node` may not be the node that served it (the client reconnected while the
    /// operation was under way). No verdict about sides rests on such an operation.
    pub node_uncertain: bool,
    /// The zone its client stood in (`clients: per-zone` or `{zone: X}`), if any.
    pub client_zone: Option<Sym>,
    /// Line in the history file (1-based), 0 when unknown.
    pub line: u64,
}

/// The load operations of the clients standing in one zone, by how they ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneCounts {
    /// Load operations (read-back excluded).
    pub operations: u64,
    /// Writes acknowledged.
    pub acked_writes: u64,
    /// Operations that ended `fail`.
    pub failed: u64,
    /// Operations that ended `info`.
    pub unknown: u64,
}

/// "No sequence" in packed tables.
pub const NO_SEQ: u64 = u64::MAX;

/// Value flags.
pub mod flag {
    /// Some write of the value was attempted.
    pub const ATTEMPTED: u16 = 1;
    /// Some write was acknowledged.
    pub const OK: u16 = 1 << 1;
    /// Some write ended `info`.
    pub const INFO: u16 = 1 << 2;
    /// Some write ended `fail`.
    pub const FAIL: u16 = 1 << 3;
    /// Seen by an `ok` read (any pattern).
    pub const READ: u16 = 1 << 4;
    /// Seen by a final read-back.
    pub const READBACK: u16 = 1 << 5;
    /// Delivered to a consumer.
    pub const DELIVERED: u16 = 1 << 6;
    /// Written by the background-job pattern (checked by delivery).
    pub const JOB: u16 = 1 << 7;
    /// Already reported as stored at two sequences.
    pub const STORED_DUP: u16 = 1 << 8;
    /// Seen by an `ok` initial-state read: the stream held it when the run began.
    pub const INITIAL: u16 = 1 << 9;
}

/// Everything known about one value.
#[derive(Clone, Copy, Debug)]
pub struct ValueFacts {
    /// Sequence of the first acknowledgement seen, or [`NO_SEQ`].
    pub ack_seq: u64,
    /// Completion time of the earliest acknowledgement, or `u64::MAX`.
    pub ack_ns: u64,
    /// First sequence at which a read saw it, or [`NO_SEQ`].
    pub stored_seq: u64,
    /// Earliest intended send time of a read or delivery that saw it, or `u64::MAX`.
    pub read_ns: u64,
    /// Read-back nodes (bits of [`Facts::readback_nodes`]) whose read-back contained it.
    pub readback_nodes: u64,
    /// The value's tenant prefix (a copy of the interner's, kept here so the hot loops touch
    /// one cache line per value).
    pub tenant: Sym,
    /// Stream of its first write.
    pub write_stream: Sym,
    /// Node of its earliest acknowledgement (else of a write attempt).
    pub write_node: Sym,
    /// Stream of `stored_seq`.
    pub stored_stream: Sym,
    /// Node of the earliest read that saw it.
    pub read_node: Sym,
    /// `ok` deliveries (saturating).
    pub deliveries: u16,
    /// [`flag`] bits.
    pub flags: u16,
}

impl Default for ValueFacts {
    fn default() -> Self {
        Self {
            ack_seq: NO_SEQ,
            ack_ns: u64::MAX,
            stored_seq: NO_SEQ,
            read_ns: u64::MAX,
            readback_nodes: 0,
            tenant: NO_SYM,
            deliveries: 0,
            write_stream: NO_SYM,
            write_node: NO_SYM,
            stored_stream: NO_SYM,
            read_node: NO_SYM,
            flags: 0,
        }
    }
}

/// Per-stream sequence tables.
#[derive(Debug, Clone)]
pub struct StreamFacts {
    /// Sequence to the first value a read saw there.
    pub stored: SeqMap<u32>,
    /// Sequence to the first value acknowledged there.
    pub acked: SeqMap<u32>,
    /// The one tenant whose values reads saw in this stream, [`MULTI_TENANT`] when several,
    /// [`NO_SYM`] when none yet.
    pub tenant: Sym,
}

/// Marks a stream holding values of several tenants.
pub const MULTI_TENANT: Sym = u32::MAX - 1;

impl Default for StreamFacts {
    fn default() -> Self {
        Self {
            stored: SeqMap::new(u32::MAX),
            acked: SeqMap::new(u32::MAX),
            tenant: NO_SYM,
        }
    }
}

/// A summary of one `ok` read, for the prefix check.
#[derive(Clone, Copy, Debug)]
pub struct ReadRecord {
    /// Reader's tenant.
    pub tenant: Sym,
    /// Stream read.
    pub stream: Sym,
    /// Node it went through.
    pub node: Sym,
    /// Intended send time.
    pub invoke_ns: u64,
    /// Lowest sequence among its items of its own tenant.
    pub first: u64,
    /// Highest sequence.
    pub last: u64,
    /// Number of its items of its own tenant.
    pub count: u64,
    /// Wrapping sum of their sequences.
    pub seq_sum: u64,
    /// History line.
    pub line: u64,
    /// Whether it was a final read-back.
    pub readback: bool,
}

/// The latest read-back of one (tenant, stream) through one node, as a fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// When the read was sent.
    pub at_ns: u64,
    /// Items of the tenant.
    pub count: u64,
    /// Order-independent hash of its (seq, value) pairs.
    pub hash: u64,
    /// Highest sequence, 0 when empty.
    pub last_seq: u64,
}

/// Counts of one recovery bucket of one series.
#[derive(Clone, Copy, Debug, Default)]
pub struct BucketCounts {
    /// Operations sent in the bucket that ended `ok`.
    pub ok: u32,
    /// ... `fail`.
    pub fail: u32,
    /// ... `info`.
    pub info: u32,
    /// `ok` completions in the bucket (throughput).
    pub done_ok: u32,
}

/// One recovery series: a tenant and an operation class.
#[derive(Clone, Debug)]
pub struct Series {
    /// Tenant.
    pub tenant: Sym,
    /// Pattern of its operations.
    pub pattern: Pattern,
    /// Kind of its operations.
    pub kind: OpKind,
    /// Counts per bucket that holds data, indexed by cell ([`Facts::cells`]); only as long as
    /// the highest cell this series touched.
    pub buckets: Vec<BucketCounts>,
}

/// One latency sample.
#[derive(Clone, Copy, Debug)]
pub struct LatencySample {
    /// Series index.
    pub series: u32,
    /// Cell ([`Facts::cells`]) of the intended send time's bucket.
    pub cell: u32,
    /// Completion minus intended send time, µs (saturating).
    pub latency_us: u32,
}

/// A bounded, deterministic sample of evidence with an exact count.
#[derive(Clone, Debug, Default)]
pub struct EvidenceBuf {
    /// Exact number of occurrences.
    pub count: u64,
    items: Vec<Evidence>,
    cap: usize,
}

impl EvidenceBuf {
    /// An empty buffer keeping at most `cap` items.
    pub fn new(cap: usize) -> Self {
        Self {
            count: 0,
            items: Vec::new(),
            cap: cap.max(1),
        }
    }

    /// Counts one occurrence and keeps its evidence if it is among the earliest.
    pub fn push(&mut self, e: Evidence) {
        self.count += 1;
        self.push_sample(e);
    }

    /// Keeps evidence without counting it (the count is kept elsewhere).
    pub fn push_sample(&mut self, e: Evidence) {
        self.items.push(e);
        if self.items.len() >= 4 * self.cap {
            self.compact();
        }
    }

    /// Whether another sample could still be kept (cheap pre-check before building evidence).
    pub fn wants(&self, at_ns: u64) -> bool {
        self.items.len() < self.cap
            || self
                .items
                .iter()
                .any(|e| e.at_ns.is_none_or(|t| t >= at_ns))
    }

    fn compact(&mut self) {
        self.items.sort();
        self.items.dedup();
        self.items.truncate(self.cap);
    }

    /// The earliest evidence, sorted.
    pub fn into_sorted(mut self) -> Vec<Evidence> {
        self.compact();
        self.items
    }
}

/// A fault window prepared for the per-operation checks.
#[derive(Clone, Debug)]
pub struct FaultIndex {
    /// Start of the effective window (injection completed), ns.
    pub start: u64,
    /// End of the effective window (heal began), ns (`u64::MAX` when never healed).
    pub end: u64,
    /// The whole window including the injection and the heal, when they took time: an
    /// operation that overlaps it but does not lie inside `start..=end` rests on a fault that
    /// was only partly in effect.
    pub outer: (u64, u64),
    /// Node to partition side.
    pub sides: Vec<(Sym, u8)>,
    /// Nodes stopped, paused or cut off.
    pub affected: Vec<Sym>,
}

impl FaultIndex {
    fn side_of(&self, node: Sym) -> Option<u8> {
        self.sides.iter().find(|(n, _)| *n == node).map(|(_, s)| *s)
    }
}

/// Acknowledgements seen on each side of one partition for one stream.
#[derive(Clone, Debug, Default)]
pub struct SideAcks {
    /// Bit per side that acknowledged.
    pub sides: u64,
    /// Earliest acknowledgement per side.
    pub first: Vec<SideAck>,
}

/// One acknowledgement placed on a partition side.
#[derive(Clone, Copy, Debug)]
pub struct SideAck {
    /// Side index in the fault's `sides`.
    pub side: u8,
    /// Intended send time.
    pub invoke_ns: u64,
    /// Completion time.
    pub complete_ns: u64,
    /// The value.
    pub value: ValueId,
    /// The node that answered.
    pub node: Sym,
    /// History line.
    pub line: u64,
}

/// One leader sample, interned: (time, observer, leader or [`NO_SYM`]).
pub type LeaderSample = (u64, Sym, Sym);

/// Read items are processed in groups of this many; the facts of the next group are loaded while
/// this one is processed, in a tight loop, so their cache misses overlap instead of stalling the
/// main loop one by one.
const TOUCH_AHEAD: usize = 32;

/// Loads the facts of the next [`TOUCH_AHEAD`] items (a software prefetch without `unsafe`).
#[inline]
fn touch_ahead(values: &Paged<ValueFacts>, items: &[Item]) {
    let mut acc = 0u16;
    for it in items.iter().take(TOUCH_AHEAD) {
        if let Some(f) = values.get(it.value.index()) {
            acc ^= f.flags;
        }
    }
    std::hint::black_box(acc);
}

/// Bounds on bucket indexes (about 194 days of 1 s buckets).
const MAX_BUCKET: u64 = 1 << 24;

/// All facts folded from one history.
#[derive(Debug)]
pub struct Facts {
    /// Interned names.
    pub symbols: Symbols,
    /// Per value, indexed by [`ValueId`].
    pub values: Paged<ValueFacts>,
    /// Per stream, indexed by stream symbol.
    pub streams: Vec<StreamFacts>,
    /// One record per `ok` read with items of its own tenant.
    pub reads: Vec<ReadRecord>,
    /// Read-back view bit to node symbol (at most 64 views). A node read both through the
    /// cluster (`read_back`) and alone (`read_back_replica`) has a bit for each.
    pub readback_nodes: Vec<Sym>,
    /// The bits of [`Facts::readback_nodes`] that are replica views (`read_back_replica`): what
    /// that node's own store held.
    pub replica_bits: u64,
    /// (tenant, stream) to the bits of the nodes whose read-back of it succeeded.
    pub coverage: FxHashMap<(Sym, Sym), u64>,
    /// (tenant, stream) to the nodes whose read-back of it failed or returned nothing usable.
    pub readback_failed: FxHashMap<(Sym, Sym), u64>,
    /// (tenant, stream, node) to the latest read-back fingerprint.
    pub fingerprints: FxHashMap<(Sym, Sym, Sym), Fingerprint>,
    /// Recovery series.
    pub series: Vec<Series>,
    series_index: FxHashMap<(Sym, u8, u8), u32>,
    /// Latency samples of load operations.
    pub latencies: Vec<LatencySample>,
    /// The buckets that hold load operations, as cells.
    pub cells: BucketCells,
    /// Bucket width, ns.
    pub bucket_ns: u64,
    /// Evidence collected while reading: sequence conflicts (consistency).
    pub sequence_conflicts: EvidenceBuf,
    /// One value stored (or acknowledged) at two sequences.
    pub duplicate_stored: EvidenceBuf,
    /// Two acknowledgements for one sequence (split-brain).
    pub duplicate_ack_seq: EvidenceBuf,
    /// Acknowledgements while a majority of peers was down or cut off.
    pub ack_without_quorum: EvidenceBuf,
    /// Cross-tenant reads.
    pub cross_tenant: EvidenceBuf,
    /// Per tenant, cross-tenant reads it did or suffered.
    pub cross_tenant_by_tenant: FxHashMap<Sym, u64>,
    /// Load operations per client zone; operations that name no zone are not counted here.
    pub by_zone: FxHashMap<Sym, ZoneCounts>,
    /// Which zones each tenant's clients stood in, as `(tenant, zone)`.
    pub tenant_zones: FxHashSet<(Sym, Sym)>,
    /// Read values with no tenant prefix.
    pub unattributable_reads: u64,
    /// Initial-state reads that failed: what those views held when the run began is unknown.
    pub initial_failed: u64,
    /// Acknowledgements inside a partition window through a node on no side of it.
    pub unplaced_partition_acks: u64,
    /// Acknowledgements inside a partition window whose node is uncertain (the client
    /// reconnected meanwhile, or the history is version 1 from the NATS adapter): left out of
    /// every condition about sides.
    pub uncertain_node_acks: u64,
    /// Acknowledgements that overlap a fault's injection or heal, when it was only partly in
    /// effect: no condition about that fault rests on them.
    pub partly_in_effect_acks: u64,
    /// The history's nodes were taken when operations were sent (format version 1, NATS
    /// adapter), so none of them is certain. Set by the caller that read the header.
    pub nodes_at_send: bool,
    /// Stream symbol to its leader samples, by time.
    pub leaders: FxHashMap<Sym, Vec<LeaderSample>>,
    /// (fault index, stream) to acknowledgements per side.
    pub partition_acks: BTreeMap<(usize, Sym), SideAcks>,
    /// Fault windows prepared for the per-operation checks, in observation order.
    pub faults: Vec<FaultIndex>,
    /// Stream symbol to its replica peers (from stream info).
    pub stream_peers: FxHashMap<Sym, Vec<Sym>>,
    /// Inconsistent operations by kind, with the first line.
    pub defects: BTreeMap<&'static str, (u64, u64)>,
    /// Operations folded.
    pub operations: u64,
    /// Operations completing earlier than the previous one.
    pub out_of_order: u64,
    /// Earliest intended send time.
    pub first_invoke_ns: u64,
    /// Latest completion.
    pub last_complete_ns: u64,
    /// Earliest intended send time of a load operation (not read-back).
    pub load_first_invoke_ns: u64,
    /// Latest intended send time of a load operation.
    pub load_last_invoke_ns: u64,
    prev_complete_ns: u64,
    conflict_keys: FxHashSet<(Sym, u64)>,
    ack_conflict_keys: FxHashSet<(Sym, u64)>,
    max_evidence: usize,
}

/// Mixes a (seq, value) pair for fingerprints.
fn mix(seq: u64, value: ValueId) -> u64 {
    let mut z = seq ^ (u64::from(value.0) << 32 | u64::from(value.0)).rotate_left(17);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The leader samples by stream, in this history's symbols: the samples' own symbols are
/// rewritten in place, and each stream's samples sorted by time.
fn leader_table(symbols: &mut Symbols, samples: Leaders) -> FxHashMap<Sym, Vec<LeaderSample>> {
    // The samples' own symbols become these symbols, in place.
    let Leaders {
        nodes: sample_nodes,
        streams: sample_streams,
        by_stream,
        ..
    } = samples;
    let node_syms: Vec<Sym> = (0..sample_nodes.len())
        .map(|i| symbols.nodes.intern(sample_nodes.name(i as Sym)))
        .collect();
    let mut leaders: FxHashMap<Sym, Vec<LeaderSample>> = FxHashMap::default();
    for (i, mut samples) in by_stream.into_iter().enumerate() {
        if samples.is_empty() {
            continue;
        }
        let stream = symbols.streams.intern(sample_streams.name(i as Sym));
        for (_, observer, leader) in &mut samples {
            *observer = node_syms[*observer as usize];
            if *leader != NO_SYM {
                *leader = node_syms[*leader as usize];
            }
        }
        samples.sort_unstable();
        leaders.insert(stream, samples);
    }
    leaders
}

impl Facts {
    /// Empty facts for a history checked with `observations` and `config`.
    pub fn new(observations: &Observations, config: &CheckConfig) -> Self {
        Self::with_leaders(observations, observations.leaders.clone(), config)
    }

    /// As [`Facts::new`], taking the leader samples out of `observations` instead of copying
    /// them (a day's are a few hundred MB): the checkers then read them from here.
    pub fn taking_leaders(observations: &mut Observations, config: &CheckConfig) -> Self {
        let leaders = std::mem::take(&mut observations.leaders);
        Self::with_leaders(observations, leaders, config)
    }

    fn with_leaders(observations: &Observations, samples: Leaders, config: &CheckConfig) -> Self {
        let mut symbols = Symbols::new();
        let faults = observations
            .faults
            .iter()
            .map(|f| {
                let mut sides = Vec::new();
                for (i, side) in f.sides.iter().enumerate() {
                    for n in side {
                        sides.push((symbols.nodes.intern(n), i.min(63) as u8));
                    }
                }
                let (start, end) = f.effective();
                FaultIndex {
                    start,
                    end,
                    outer: (
                        f.injecting_ns.unwrap_or(start).min(start),
                        f.end_ns.unwrap_or(u64::MAX).max(end),
                    ),
                    sides,
                    affected: f.affected.iter().map(|n| symbols.nodes.intern(n)).collect(),
                }
            })
            .collect();
        let mut stream_peers: FxHashMap<Sym, Vec<Sym>> = FxHashMap::default();
        for s in &observations.stream_infos {
            let stream = symbols.streams.intern(&s.stream);
            let peers = stream_peers.entry(stream).or_default();
            for r in &s.replicas {
                let r = symbols.nodes.intern(r);
                if !peers.contains(&r) {
                    peers.push(r);
                }
            }
        }
        let leaders = leader_table(&mut symbols, samples);
        let cap = config.max_evidence;
        Self {
            symbols,
            values: Paged::default(),
            streams: Vec::new(),
            reads: Vec::new(),
            readback_nodes: Vec::new(),
            replica_bits: 0,
            coverage: FxHashMap::default(),
            readback_failed: FxHashMap::default(),
            fingerprints: FxHashMap::default(),
            series: Vec::new(),
            series_index: FxHashMap::default(),
            latencies: Vec::new(),
            cells: BucketCells::default(),
            bucket_ns: config.bucket_ms.saturating_mul(1_000_000).max(1),
            sequence_conflicts: EvidenceBuf::new(cap),
            duplicate_stored: EvidenceBuf::new(cap),
            duplicate_ack_seq: EvidenceBuf::new(cap),
            ack_without_quorum: EvidenceBuf::new(cap),
            cross_tenant: EvidenceBuf::new(cap),
            cross_tenant_by_tenant: FxHashMap::default(),
            by_zone: FxHashMap::default(),
            tenant_zones: FxHashSet::default(),
            unattributable_reads: 0,
            initial_failed: 0,
            unplaced_partition_acks: 0,
            uncertain_node_acks: 0,
            partly_in_effect_acks: 0,
            nodes_at_send: false,
            leaders,
            partition_acks: BTreeMap::new(),
            faults,
            stream_peers,
            defects: BTreeMap::new(),
            operations: 0,
            out_of_order: 0,
            first_invoke_ns: u64::MAX,
            last_complete_ns: 0,
            load_first_invoke_ns: u64::MAX,
            load_last_invoke_ns: 0,
            prev_complete_ns: 0,
            conflict_keys: FxHashSet::default(),
            ack_conflict_keys: FxHashSet::default(),
            max_evidence: cap,
        }
    }

    /// Records an inconsistent operation.
    pub fn defect(&mut self, kind: &'static str, line: u64) {
        let e = self.defects.entry(kind).or_insert((0, line));
        e.0 += 1;
    }

    /// Whether any defect of these kinds was seen.
    pub fn has_defect(&self, kinds: &[&str]) -> bool {
        kinds.iter().any(|k| self.defects.contains_key(k))
    }

    #[inline]
    fn value_mut(&mut self, v: ValueId) -> &mut ValueFacts {
        let i = v.index();
        if i >= self.values.len() {
            self.grow_values();
        }
        &mut self.values[i]
    }

    /// Extends the per-value table to every interned value.
    #[cold]
    fn grow_values(&mut self) {
        let syms = &self.symbols;
        self.values
            .grow_to(syms.value_count(), &ValueFacts::default(), |i| ValueFacts {
                tenant: syms.value_tenant(ValueId(i as u32)),
                ..ValueFacts::default()
            });
    }

    #[inline]
    fn stream_mut(&mut self, s: Sym) -> &mut StreamFacts {
        let i = s as usize;
        if i >= self.streams.len() {
            self.streams.resize_with(i + 1, StreamFacts::default);
        }
        &mut self.streams[i]
    }

    /// The bit of the read-back view of `node`, alone (`replica`) or through the cluster.
    fn readback_bit(&mut self, node: Sym, replica: bool) -> Option<u64> {
        let is_replica = |i: usize, bits: u64| bits & (1 << i) != 0;
        if let Some(i) = self
            .readback_nodes
            .iter()
            .enumerate()
            .position(|(i, n)| *n == node && is_replica(i, self.replica_bits) == replica)
        {
            return Some(1 << i);
        }
        if self.readback_nodes.len() >= 64 {
            return None;
        }
        self.readback_nodes.push(node);
        let bit = 1 << (self.readback_nodes.len() - 1);
        if replica {
            self.replica_bits |= bit;
        }
        Some(bit)
    }

    fn evidence(&self, op: &Op<'_>, value: Option<ValueId>, detail: String) -> Evidence {
        let s = &self.symbols;
        Evidence {
            at_ns: Some(op.invoke_ns),
            value: value.map(|v| s.value_name(v)),
            tenant: Some(s.tenant(op.tenant).to_string()),
            node: Some(s.node(op.node).to_string()),
            stream: Some(s.stream(op.stream).to_string()),
            line: (op.line > 0).then_some(op.line),
            detail,
            ..Evidence::default()
        }
    }

    /// Folds one operation in. Order does not matter.
    pub fn ingest(&mut self, op: &Op<'_>) {
        self.operations += 1;
        if op.complete_ns < self.prev_complete_ns {
            self.out_of_order += 1;
        }
        self.prev_complete_ns = op.complete_ns;
        self.first_invoke_ns = self.first_invoke_ns.min(op.invoke_ns);
        self.last_complete_ns = self.last_complete_ns.max(op.complete_ns);
        if op.complete_ns < op.invoke_ns {
            self.defect("complete-before-invoke", op.line);
        }
        if let Some(served) = op.served_tenant {
            if served != op.tenant {
                self.cross_tenant_read(op, None, served);
            }
        }
        match op.kind {
            OpKind::Write => self.ingest_write(op),
            OpKind::Read => self.ingest_read(op),
            OpKind::Deliver => self.ingest_deliver(op),
            // Opening a socket stores and reads nothing; it counts as load (recovery) only.
            OpKind::Connect => {}
        }
        if op.pattern.is_load() {
            if let Some(zone) = op.client_zone {
                self.ingest_zone(op, zone);
            }
            self.ingest_load(op);
        }
    }

    fn ingest_zone(&mut self, op: &Op<'_>, zone: Sym) {
        let counts = self.by_zone.entry(zone).or_default();
        counts.operations += 1;
        match op.outcome {
            Outcome::Ok if op.kind == OpKind::Write => counts.acked_writes += 1,
            Outcome::Ok => {}
            Outcome::Fail => counts.failed += 1,
            Outcome::Info => counts.unknown += 1,
        }
        self.tenant_zones.insert((op.tenant, zone));
    }

    fn ingest_write(&mut self, op: &Op<'_>) {
        let Some(v) = op.value else {
            self.defect("write-without-value", op.line);
            return;
        };
        let f = self.value_mut(v);
        let mismatch = f.tenant != op.tenant;
        f.flags |= flag::ATTEMPTED;
        if op.pattern == Pattern::Job {
            f.flags |= flag::JOB;
        }
        if f.write_stream == NO_SYM {
            f.write_stream = op.stream;
        }
        if f.write_node == NO_SYM {
            f.write_node = op.node;
        }
        match op.outcome {
            Outcome::Fail => f.flags |= flag::FAIL,
            Outcome::Info => f.flags |= flag::INFO,
            Outcome::Ok => {
                f.flags |= flag::OK;
                if op.complete_ns < f.ack_ns {
                    f.ack_ns = op.complete_ns;
                    f.write_node = op.node;
                }
                let mut twice = None;
                if let Some(seq) = op.seq {
                    let first = f.ack_seq;
                    if first == NO_SEQ {
                        f.ack_seq = seq;
                    } else if first != seq && f.flags & flag::STORED_DUP == 0 {
                        f.flags |= flag::STORED_DUP;
                        twice = Some(first);
                    }
                }
                if let (Some(first), Some(seq)) = (twice, op.seq) {
                    let detail = format!("acknowledged at seq {first} and again at seq {seq}");
                    let e = self.evidence(op, Some(v), detail);
                    self.duplicate_stored.push(Evidence {
                        seq: Some(seq),
                        ..e
                    });
                }
                if let Some(seq) = op.seq {
                    self.ack_seq(op, v, seq);
                }
                if !self.faults.is_empty() {
                    self.ack_during_faults(op, v);
                }
            }
        }
        if mismatch {
            self.defect("value-tenant-mismatch", op.line);
        }
    }

    fn ack_seq(&mut self, op: &Op<'_>, v: ValueId, seq: u64) {
        let prev = self.stream_mut(op.stream).acked.get_or_insert(seq, v.0);
        if prev != v.0 && self.ack_conflict_keys.insert((op.stream, seq)) {
            let other = ValueId(prev);
            let e = self.evidence(
                op,
                Some(v),
                "two different values acknowledged at one sequence".to_string(),
            );
            let other_node = self.values.get(other.index()).map(|f| f.write_node);
            self.duplicate_ack_seq.push(Evidence {
                seq: Some(seq),
                other_value: Some(self.symbols.value_name(other)),
                other_node: other_node.map(|n| self.symbols.node(n).to_string()),
                ..e
            });
        }
    }

    fn ack_during_faults(&mut self, op: &Op<'_>, v: ValueId) {
        let uncertain = op.node_uncertain || self.nodes_at_send;
        let mut down: Vec<Sym> = Vec::new();
        let mut active = false;
        let mut left_out = false;
        let mut partly = false;
        for (i, f) in self.faults.iter().enumerate() {
            if op.invoke_ns < f.start || op.complete_ns > f.end {
                // Inside the injection or the heal: the fault was partly in effect, so no
                // verdict may rest on this operation.
                partly |= (f.outer.0 < f.start
                    && op.invoke_ns < f.start
                    && op.complete_ns >= f.outer.0)
                    || (f.end < f.outer.1 && op.complete_ns > f.end && op.invoke_ns <= f.outer.1);
                continue;
            }
            active = true;
            if f.sides.is_empty() {
                // Stopped, paused or killed: down whichever node answered.
                down.extend_from_slice(&f.affected);
                continue;
            }
            if uncertain {
                // Who is cut off depends on the side of the node that answered, which is not
                // known: this partition is left out for this operation.
                left_out = true;
                continue;
            }
            let Some(side) = f.side_of(op.node) else {
                self.unplaced_partition_acks += 1;
                down.extend_from_slice(&f.affected);
                continue;
            };
            // From its own side, a node is cut off from the other sides, and only from them:
            // `affected` names the minority, which is not down as seen from within it.
            down.extend(f.sides.iter().filter(|(_, s)| *s != side).map(|(n, _)| *n));
            let acks = self.partition_acks.entry((i, op.stream)).or_default();
            acks.sides |= 1 << side;
            let ack = SideAck {
                side,
                invoke_ns: op.invoke_ns,
                complete_ns: op.complete_ns,
                value: v,
                node: op.node,
                line: op.line,
            };
            match acks.first.iter_mut().find(|e| e.side == side) {
                Some(e) if e.invoke_ns <= op.invoke_ns => {}
                Some(e) => *e = ack,
                None => acks.first.push(ack),
            }
        }
        if left_out {
            self.uncertain_node_acks += 1;
        }
        if partly {
            self.partly_in_effect_acks += 1;
        }
        if !active {
            return;
        }
        let Some(peers) = self.stream_peers.get(&op.stream) else {
            return;
        };
        if peers.is_empty() {
            return;
        }
        let alive = peers.iter().filter(|p| !down.contains(p)).count();
        if alive * 2 <= peers.len() {
            let names: Vec<&str> = peers
                .iter()
                .filter(|p| down.contains(p))
                .map(|n| self.symbols.node(*n))
                .collect();
            let whose = if uncertain {
                "down (stopped, paused or killed)".to_string()
            } else {
                format!("down or cut off from {}", self.symbols.node(op.node))
            };
            self.ack_without_quorum.count += 1;
            if self.ack_without_quorum.wants(op.invoke_ns) {
                let detail = format!(
                    "acknowledged while {} of {} peers ({}) were {whose}; {}",
                    names.len(),
                    peers.len(),
                    names.join(", "),
                    self.leader_quote(op.stream, op.invoke_ns, op.complete_ns)
                );
                let e = self.evidence(op, Some(v), detail);
                self.ack_without_quorum
                    .push_sample(Evidence { seq: op.seq, ..e });
            }
        }
    }

    /// What the servers themselves said about the leader of `stream` from about a second
    /// before `from_ns` to a second after `to_ns`: each leader named, with who named it.
    pub fn leader_quote(&self, stream: Sym, from_ns: u64, to_ns: u64) -> String {
        const MARGIN_NS: u64 = 1_000_000_000;
        let s = &self.symbols;
        let (lo, hi) = (
            from_ns.saturating_sub(MARGIN_NS),
            to_ns.saturating_add(MARGIN_NS),
        );
        let samples = self.leaders.get(&stream).map_or(&[][..], Vec::as_slice);
        let start = samples.partition_point(|x| x.0 < lo);
        let mut said: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for &(_, observer, leader) in samples[start..].iter().take_while(|x| x.0 <= hi) {
            let leader = if leader == NO_SYM {
                "no leader"
            } else {
                s.node(leader)
            };
            let observers = said.entry(leader).or_default();
            let observer = s.node(observer);
            if !observers.contains(&observer) {
                observers.push(observer);
            }
        }
        let secs = |ns: u64| ns as f64 / 1e9;
        if said.is_empty() {
            return format!(
                "no leader of {} was observed from {:.1} s to {:.1} s",
                s.stream(stream),
                secs(lo),
                secs(hi)
            );
        }
        let list: Vec<String> = said
            .into_iter()
            .map(|(leader, mut by)| {
                by.sort_unstable();
                format!("{leader} (said by {})", by.join(", "))
            })
            .collect();
        format!(
            "leader of {} as the servers reported it from {:.1} s to {:.1} s: {}",
            s.stream(stream),
            secs(lo),
            secs(hi),
            list.join("; ")
        )
    }

    fn cross_tenant_read(&mut self, op: &Op<'_>, item: Option<Item>, other: Sym) {
        *self.cross_tenant_by_tenant.entry(op.tenant).or_default() += 1;
        *self.cross_tenant_by_tenant.entry(other).or_default() += 1;
        self.cross_tenant.count += 1;
        if self.cross_tenant.wants(op.invoke_ns) {
            let what = match op.kind {
                OpKind::Deliver => "was delivered",
                _ => "read",
            };
            let detail = format!(
                "tenant {} {what} a record of tenant {}",
                self.symbols.tenant(op.tenant),
                self.symbols.tenant(other)
            );
            let e = self.evidence(op, item.map(|i| i.value), detail);
            self.cross_tenant.push_sample(Evidence {
                other_tenant: Some(self.symbols.tenant(other).to_string()),
                seq: item.map(|i| i.seq),
                ..e
            });
        }
    }

    // The hot loop over read items and its rare-case follow-up belong together: splitting them
    // costs a function boundary per item or a pile of parameters.
    #[allow(clippy::too_many_lines)]
    fn ingest_read(&mut self, op: &Op<'_>) {
        let readback = op.pattern.is_read_back();
        let replica = op.pattern == Pattern::ReadBackReplica;
        let initial = if op.pattern == Pattern::InitialState {
            flag::INITIAL
        } else {
            0
        };
        let items = match (op.outcome, op.read) {
            (Outcome::Ok, Some(items)) => items,
            (outcome, items) => {
                // Data returned to the client leaks even if the read then failed.
                for &it in items.unwrap_or(&[]) {
                    let vt = self.symbols.value_tenant(it.value);
                    if vt != op.tenant && vt != NO_SYM {
                        self.cross_tenant_read(op, Some(it), vt);
                    }
                }
                if outcome == Outcome::Ok {
                    self.defect("read-without-items", op.line);
                }
                if initial != 0 {
                    self.initial_failed += 1;
                }
                if readback {
                    if let Some(bit) = self.readback_bit(op.node, replica) {
                        *self
                            .readback_failed
                            .entry((op.tenant, op.stream))
                            .or_default() |= bit;
                    }
                }
                return;
            }
        };
        let bit = if readback {
            let b = self.readback_bit(op.node, replica);
            if b.is_none() {
                self.defect("too-many-read-back-nodes", op.line);
            }
            b
        } else {
            None
        };
        if self.values.len() < self.symbols.value_count() {
            self.grow_values();
        }
        let si = op.stream as usize;
        if si >= self.streams.len() {
            self.streams.resize_with(si + 1, StreamFacts::default);
        }
        // Rare findings are collected here and turned into evidence after the hot loop.
        let mut foreign: Vec<(Item, Sym)> = Vec::new();
        let mut twice: Vec<(Item, u64)> = Vec::new();
        let mut conflicts: Vec<(Item, u32)> = Vec::new();
        let (mut count, mut sum, mut first, mut last, mut hash) =
            (0u64, 0u64, u64::MAX, 0u64, 0u64);
        {
            let values = &mut self.values;
            let sf = &mut self.streams[si];
            let mut unattributable = 0u64;
            for (k, &it) in items.iter().enumerate() {
                if k % TOUCH_AHEAD == 0 {
                    if k == 0 {
                        touch_ahead(values, items);
                    }
                    touch_ahead(values, items.get(k + TOUCH_AHEAD..).unwrap_or_default());
                }
                let f = &mut values[it.value.index()];
                let vt = f.tenant;
                if vt != op.tenant {
                    if vt == NO_SYM {
                        unattributable += 1;
                    } else {
                        foreign.push((it, vt));
                    }
                }
                if sf.tenant != vt {
                    sf.tenant = if sf.tenant == NO_SYM {
                        vt
                    } else {
                        MULTI_TENANT
                    };
                }
                f.flags |= flag::READ | initial;
                if op.invoke_ns < f.read_ns {
                    f.read_ns = op.invoke_ns;
                    f.read_node = op.node;
                }
                if let Some(b) = bit {
                    f.flags |= flag::READBACK;
                    f.readback_nodes |= b;
                }
                if f.stored_seq == NO_SEQ {
                    f.stored_seq = it.seq;
                    f.stored_stream = op.stream;
                } else if (f.stored_seq != it.seq || f.stored_stream != op.stream)
                    && f.flags & flag::STORED_DUP == 0
                {
                    f.flags |= flag::STORED_DUP;
                    twice.push((it, f.stored_seq));
                }
                let prev = sf.stored.get_or_insert(it.seq, it.value.0);
                if prev != it.value.0 {
                    conflicts.push((it, prev));
                }
                if vt == op.tenant {
                    count += 1;
                    sum = sum.wrapping_add(it.seq);
                    first = first.min(it.seq);
                    last = last.max(it.seq);
                    hash = hash.wrapping_add(mix(it.seq, it.value));
                }
            }
            self.unattributable_reads += unattributable;
        }
        for (it, vt) in foreign {
            self.cross_tenant_read(op, Some(it), vt);
        }
        for (it, first) in twice {
            let (lo, hi) = (first.min(it.seq), first.max(it.seq));
            let detail = format!("stored at seq {lo} and at seq {hi}");
            let e = self.evidence(op, Some(it.value), detail);
            self.duplicate_stored.push(Evidence {
                seq: Some(it.seq),
                ..e
            });
        }
        for (it, prev) in conflicts {
            if !self.conflict_keys.insert((op.stream, it.seq)) {
                continue;
            }
            let other = ValueId(prev);
            let e = self.evidence(
                op,
                Some(it.value),
                "two different values at one sequence".to_string(),
            );
            let other_node = self.values.get(other.index()).map(|f| f.read_node);
            self.sequence_conflicts.push(Evidence {
                seq: Some(it.seq),
                other_value: Some(self.symbols.value_name(other)),
                other_node: other_node.map(|n| self.symbols.node(n).to_string()),
                ..e
            });
        }
        if count > 0 && op.pattern != Pattern::Job {
            self.reads.push(ReadRecord {
                tenant: op.tenant,
                stream: op.stream,
                node: op.node,
                invoke_ns: op.invoke_ns,
                first,
                last,
                count,
                seq_sum: sum,
                line: op.line,
                readback,
            });
        }
        if let Some(b) = bit {
            *self.coverage.entry((op.tenant, op.stream)).or_default() |= b;
            let fp = Fingerprint {
                at_ns: op.invoke_ns,
                count,
                hash,
                last_seq: if count > 0 { last } else { 0 },
            };
            self.fingerprints
                .entry((op.tenant, op.stream, op.node))
                .and_modify(|old| {
                    if fp.at_ns >= old.at_ns {
                        *old = fp;
                    }
                })
                .or_insert(fp);
        }
    }

    fn ingest_deliver(&mut self, op: &Op<'_>) {
        let Some(v) = op.value else {
            self.defect("deliver-without-value", op.line);
            return;
        };
        if op.outcome != Outcome::Ok {
            return;
        }
        let vt = self.value_mut(v).tenant;
        if vt != op.tenant && vt != NO_SYM {
            let item = Item {
                seq: op.seq.unwrap_or(0),
                value: v,
            };
            self.cross_tenant_read(op, Some(item), vt);
        }
        let f = self.value_mut(v);
        f.flags |= flag::DELIVERED;
        f.deliveries = f.deliveries.saturating_add(1);
        if op.invoke_ns < f.read_ns {
            f.read_ns = op.invoke_ns;
            f.read_node = op.node;
        }
    }

    fn ingest_load(&mut self, op: &Op<'_>) {
        self.load_first_invoke_ns = self.load_first_invoke_ns.min(op.invoke_ns);
        self.load_last_invoke_ns = self.load_last_invoke_ns.max(op.invoke_ns);
        let b = op.invoke_ns / self.bucket_ns;
        let done = op.complete_ns.max(op.invoke_ns) / self.bucket_ns;
        if done >= MAX_BUCKET {
            self.defect("time-out-of-range", op.line);
            return;
        }
        let key = (op.tenant, op.pattern as u8, op.kind as u8);
        let s = if let Some(&s) = self.series_index.get(&key) {
            s
        } else {
            let s = self.series.len() as u32;
            self.series.push(Series {
                tenant: op.tenant,
                pattern: op.pattern,
                kind: op.kind,
                buckets: Vec::new(),
            });
            self.series_index.insert(key, s);
            s
        };
        // In range of u32: both are below MAX_BUCKET.
        let (cell, done_cell) = (self.cells.cell(b as u32), self.cells.cell(done as u32));
        let buckets = &mut self.series[s as usize].buckets;
        let needed = cell.max(done_cell) as usize + 1;
        if buckets.len() < needed {
            buckets.resize(needed, BucketCounts::default());
        }
        let c = &mut buckets[cell as usize];
        match op.outcome {
            Outcome::Ok => c.ok += 1,
            Outcome::Fail => c.fail += 1,
            Outcome::Info => c.info += 1,
        }
        if op.outcome == Outcome::Ok {
            buckets[done_cell as usize].done_ok += 1;
        }
        let latency_us =
            (op.complete_ns.saturating_sub(op.invoke_ns) / 1_000).min(u64::from(u32::MAX)) as u32;
        self.latencies.push(LatencySample {
            series: s,
            cell,
            latency_us,
        });
    }

    /// The configured evidence cap.
    pub fn max_evidence(&self) -> usize {
        self.max_evidence
    }
}
