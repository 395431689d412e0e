//! A run as a slice of a load that keeps running (the daemon's background load): the run takes
//! the running load's handle ([`LiveLoad`]) instead of starting its own, injects its faults on
//! the load's clock, reads every tenant back through every node while the load goes on
//! ([`LiveLoad::read_back`]), and cuts its history out of the load's ([`cut`]).
//!
//! What the cut keeps, so that the checkers judge the run's span and nothing before it:
//! - writes and reads that began at or after the slice's start and completed by the cut (when
//!   the read-back was asked for); deliveries that completed by the slice's end (after the
//!   read-back), so work-queue values written just before the cut count as delivered;
//! - the read-back's operations;
//! - in every read, only the values written in the slice. The streams already held values when
//!   the slice began (the load's earlier writes): that is the model's initial state, taken as
//!   given, so a read of one is neither `unexpected` nor a loss. Values written after the cut
//!   (the load went on during the read-back) are left out of the reads the same way, so a view
//!   read later than another is not missing anything the slice wrote;
//! - leader samples within the span and the run's fault windows. Stream-state samples are left
//!   out: with writes going on the servers never report equal states at one instant.
//!
//! Times are rebased to the slice's start, and the header's start moves with them, so the
//! slice reads as an ordinary run history.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead as _, BufReader, BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;

use crate::history::{
    HistoryHeader, Observation, OpKind, Operation, Outcome, Pattern, ReadItem, OBSERVATIONS_FORMAT,
};

use super::clock::RunClock;
use super::config::{AdapterKind, WorkloadConfig};
use super::nats::{ConnectSpec, NatsConn};
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
    pub(super) op_timeout: Duration,
    pub(super) ping_interval: Duration,
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
    /// Read-back operations.
    pub read_backs: u64,
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
            op_timeout: config.op_timeout,
            ping_interval: config.ping_interval,
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

    /// Tenants of the load.
    pub fn tenant_count(&self) -> usize {
        self.tenants.len()
    }

    /// Reads every tenant's whole stream through every NATS server, each through a connection
    /// pinned to that server, after waiting until `settle_until_ns` on the load's clock. Runs
    /// on a thread of its own that enters the lab's client namespace; the load goes on
    /// meanwhile. Returns the `read_back` operations (not recorded in the load's history,
    /// whose later segments would take them for a final read-back).
    ///
    /// Each server's own replica is not read alone here: that holds the other servers down,
    /// which would be a fault on the load that keeps running.
    ///
    /// # Errors
    /// The load is not a NATS load, or the thread cannot enter the namespace or start its
    /// runtime.
    pub fn read_back(&self, settle_until_ns: u64) -> Result<Vec<Operation>, WorkloadError> {
        if self.adapter != AdapterKind::Nats {
            return Err(WorkloadError::Config(
                "a slice's read-back reads NATS streams; this load uses the HTTP adapter"
                    .to_owned(),
            ));
        }
        let live = self.clone();
        let thread = std::thread::Builder::new()
            .name("slice-read-back".to_owned())
            .spawn(move || -> Result<Vec<Operation>, WorkloadError> {
                if let Some((dir, netns)) = live.target.client_netns() {
                    enter_netns(&dir, &netns)?;
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(WorkloadError::Runtime)?;
                runtime.block_on(live.read_back_async(settle_until_ns))
            })
            .map_err(WorkloadError::Runtime)?;
        thread.join().map_err(|_| {
            WorkloadError::Config("the slice's read-back thread panicked".to_owned())
        })?
    }

    async fn read_back_async(&self, settle_until_ns: u64) -> Result<Vec<Operation>, WorkloadError> {
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            self.clock.instant_at(settle_until_ns),
        ))
        .await;
        let mut target = self.target.clone();
        let _ = target.refresh();
        let mut ops = Vec::new();
        for server in &target.nats {
            let spec = ConnectSpec {
                urls: vec![server.url.clone()],
                name: format!("faultline-slice-readback-{}", server.node),
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
            let mut reads: Vec<Operation> = futures::stream::iter(self.tenants.iter())
                .map(|tenant| async move {
                    let invoke = clock.now_ns();
                    let result = match conn {
                        Ok(conn) => conn.read(&tenant.stream, 1, u64::MAX, 0).await,
                        Err(e) => Err(e.clone()),
                    };
                    let complete = clock.now_ns();
                    read_back_op(&clock, &server.node, tenant, invoke, complete, result)
                })
                .buffer_unordered(8)
                .collect()
                .await;
            reads.sort_by(|a, b| a.tenant.cmp(&b.tenant));
            ops.extend(reads);
        }
        Ok(ops)
    }
}

fn read_back_op(
    clock: &RunClock,
    node: &str,
    tenant: &TenantSpec,
    invoke_ns: u64,
    complete_ns: u64,
    result: Result<Vec<super::nats::ReadRecord>, String>,
) -> Operation {
    let (outcome, error, read, served_tenant) = match result {
        Ok(records) => {
            let other = records
                .iter()
                .filter_map(|r| r.tenant.as_deref())
                .find(|t| *t != tenant.id)
                .map(str::to_owned);
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
        process: format!("readback/{node}"),
        node: node.to_owned(),
        reconnected: false,
        sent_node: None,
        kind: OpKind::Read,
        pattern: Pattern::ReadBack,
        value: None,
        attempt: 1,
        stream: tenant.stream.clone(),
        seq: None,
        invoke_ns,
        complete_ns,
        invoke_unix_ms: clock.unix_ms_at(invoke_ns),
        complete_unix_ms: clock.unix_ms_at(complete_ns),
        outcome,
        error,
        read,
        served_tenant,
        client_zone: None,
    }
}

/// Picks the slice's operations out of the load's (in any order) and appends `read_backs`,
/// keeping in every read only values written in the slice, and rebases times to the slice's
/// start (see the module doc). Returns the operations and how many read items it left out.
pub fn select(
    ops: impl IntoIterator<Item = Operation>,
    read_backs: Vec<Operation>,
    span: SliceSpan,
) -> (Vec<Operation>, u64) {
    let mut kept: Vec<Operation> = ops
        .into_iter()
        .filter(|op| {
            if op.invoke_ns < span.start_ns || op.pattern.is_read_back() {
                return false;
            }
            let until = if op.kind == OpKind::Deliver {
                span.end_ns
            } else {
                span.cut_ns
            };
            op.complete_ns <= until
        })
        .collect();
    let written: HashSet<String> = kept
        .iter()
        .filter(|op| op.kind == OpKind::Write)
        .filter_map(|op| op.value.clone())
        .collect();
    // A delivery of a value the slice did not write is the initial state's (or later's).
    kept.retain(|op| {
        op.kind != OpKind::Deliver || op.value.as_ref().is_some_and(|v| written.contains(v))
    });
    kept.extend(read_backs);
    let mut outside = 0_u64;
    for op in &mut kept {
        if let Some(items) = op.read.as_mut() {
            let before = items.len();
            items.retain(|item| written.contains(&item.value));
            outside += (before - items.len()) as u64;
        }
        op.invoke_ns = op.invoke_ns.saturating_sub(span.start_ns);
        op.complete_ns = op.complete_ns.saturating_sub(span.start_ns);
    }
    (kept, outside)
}

/// Picks the slice's observations: leader samples within the span and fault windows that
/// began in it, rebased to the slice's start.
pub fn select_observations(
    observations: impl IntoIterator<Item = Observation>,
    span: SliceSpan,
) -> Vec<Observation> {
    let shift = |ns: u64| ns.saturating_sub(span.start_ns);
    observations
        .into_iter()
        .filter_map(|o| match o {
            Observation::Leader {
                at_ns,
                observer,
                stream,
                leader,
            } if (span.start_ns..=span.end_ns).contains(&at_ns) => Some(Observation::Leader {
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
            }),
            _ => None,
        })
        .collect()
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
/// # Errors
/// A file cannot be read or written, or the load's history has no header.
pub fn cut(
    files: &CutFiles<'_>,
    span: SliceSpan,
    run_id: &str,
    read_backs: Vec<Operation>,
) -> Result<SliceCounts, WorkloadError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |error: std::io::Error| WorkloadError::Output {
            what: "load history",
            path: path.clone(),
            error,
        }
    };
    let mut lines =
        BufReader::new(File::open(files.history_in).map_err(read_err(files.history_in))?).lines();
    let mut header: HistoryHeader = lines
        .next()
        .transpose()
        .map_err(read_err(files.history_in))?
        .and_then(|l| serde_json::from_str(&l).ok())
        .ok_or_else(|| {
            WorkloadError::Config(format!(
                "the load's history {} has no header; is it a faultline history?",
                files.history_in.display()
            ))
        })?;
    let ops = lines
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Operation>(&l).ok());
    let read_back_count = read_backs.len() as u64;
    let (ops, items_outside) = select(ops, read_backs, span);
    run_id.clone_into(&mut header.run_id);
    header.started_at_unix_ms += span.start_ns / 1_000_000;
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |error: std::io::Error| WorkloadError::Output {
            what: "history",
            path: path.clone(),
            error,
        }
    };
    let mut out =
        BufWriter::new(File::create(files.history_out).map_err(write_err(files.history_out))?);
    write_json(&mut out, &header).map_err(write_err(files.history_out))?;
    for op in &ops {
        write_json(&mut out, op).map_err(write_err(files.history_out))?;
    }
    out.flush().map_err(write_err(files.history_out))?;

    let observations =
        BufReader::new(File::open(files.observations_in).map_err(read_err(files.observations_in))?)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str::<Observation>(&l).ok());
    let mut out = BufWriter::new(
        File::create(files.observations_out).map_err(write_err(files.observations_out))?,
    );
    let obs_header = Observation::Header {
        format: OBSERVATIONS_FORMAT.to_owned(),
        version: header.version,
        run_id: run_id.to_owned(),
    };
    write_json(&mut out, &obs_header).map_err(write_err(files.observations_out))?;
    for o in select_observations(observations, span) {
        write_json(&mut out, &o).map_err(write_err(files.observations_out))?;
    }
    out.flush().map_err(write_err(files.observations_out))?;
    Ok(SliceCounts {
        operations: ops.len() as u64 - read_back_count,
        read_backs: read_back_count,
        items_outside,
    })
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

    fn anomalies(ops: &[Operation]) -> (crate::checkers::Status, Vec<(String, u64)>) {
        let header = HistoryHeader {
            format: crate::history::HISTORY_FORMAT.to_owned(),
            version: crate::history::HISTORY_FORMAT_VERSION,
            run_id: "slice".to_owned(),
            started_at_unix_ms: 0,
            adapter: "nats".to_owned(),
            client: None,
        };
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
}
