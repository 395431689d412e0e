//! What was observed during the run besides operations: fault windows, leaders and stream info.

use crate::history::{
    Observation, HISTORY_FORMAT_VERSION, OBSERVATIONS_FORMAT, OLDEST_HISTORY_FORMAT_VERSION,
};

use super::intern::{Interner, Sym, NO_SYM};
use super::model::FaultWindow;
use super::CheckError;

/// One leader sample: what `observer` said the leader of `stream` was at `at_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderSample<'a> {
    /// Sample time, ns since the run start.
    pub at_ns: u64,
    /// The node that answered.
    pub observer: &'a str,
    /// Stream name, or `$meta`.
    pub stream: &'a str,
    /// The leader it reported.
    pub leader: Option<&'a str>,
}

/// The leader samples of a run, 16 bytes each: a run samples every stream's leader from every
/// server every second (13 M samples in a day of 50 tenants on 3 servers), so each name is kept
/// once and a sample holds its time and two symbols, grouped by stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leaders {
    /// Observer and leader names.
    pub(crate) nodes: Interner,
    /// Stream names.
    pub(crate) streams: Interner,
    /// By stream symbol: (time, observer, leader or [`NO_SYM`]), in file order.
    pub(crate) by_stream: Vec<Vec<(u64, Sym, Sym)>>,
    len: usize,
}

impl Leaders {
    /// Adds a sample.
    pub fn push(&mut self, at_ns: u64, observer: &str, stream: &str, leader: Option<&str>) {
        let observer = self.nodes.intern(observer);
        let leader = leader.map_or(NO_SYM, |l| self.nodes.intern(l));
        let stream = self.streams.intern(stream) as usize;
        if stream >= self.by_stream.len() {
            self.by_stream.resize_with(stream + 1, Vec::new);
        }
        self.by_stream[stream].push((at_ns, observer, leader));
        self.len += 1;
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every sample, stream by stream (in order of first appearance), each stream's in file
    /// order.
    pub fn iter(&self) -> impl Iterator<Item = LeaderSample<'_>> + '_ {
        self.by_stream
            .iter()
            .enumerate()
            .flat_map(move |(s, list)| {
                let stream = self.streams.name(s as Sym);
                list.iter()
                    .map(move |&(at_ns, observer, leader)| LeaderSample {
                        at_ns,
                        observer: self.nodes.name(observer),
                        stream,
                        leader: (leader != NO_SYM).then(|| self.nodes.name(leader)),
                    })
            })
    }
}

/// Stream state as one node reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfoSample {
    /// Sample time, ns since the run start.
    pub at_ns: u64,
    /// The node that answered.
    pub observer: String,
    /// Stream name.
    pub stream: String,
    /// Replica peer names.
    pub replicas: Vec<String>,
    /// Last sequence.
    pub last_seq: u64,
    /// First sequence, messages and bytes stored, when recorded.
    pub state: Option<(u64, u64, u64)>,
    /// The leader it reported.
    pub leader: Option<String>,
}

/// The end of the settle before the final read-back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettleSample {
    /// When the wait ended, ns since the run start.
    pub at_ns: u64,
    /// The convergence deadline, ns since the run start.
    pub deadline_ns: u64,
    /// Whether every stream's per-server states agreed.
    pub converged: bool,
    /// Servers that did not answer at the end.
    pub unanswered: Vec<String>,
}

/// Everything observed during a run, ready for the checkers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observations {
    /// Whether an observations file (or list) was given at all. Without one, fault windows are
    /// unknown and the recovery and split-brain checkers cannot be sure.
    pub present: bool,
    /// The run id from the observations header.
    pub run_id: Option<String>,
    /// Fault windows, ordered by start time.
    pub faults: Vec<FaultWindow>,
    /// Leader samples.
    pub leaders: Leaders,
    /// Stream info samples, in file order.
    pub stream_infos: Vec<StreamInfoSample>,
    /// The settle before the final read-back, when one was recorded (the last one).
    pub settled: Option<SettleSample>,
    /// The file's last line was cut off (a killed run) and skipped.
    pub truncated_last_line: bool,
    /// That cut-off line may have been a fault window (its `type` is `fault` or was cut off
    /// too), so fault windows may be missing.
    pub truncated_line_may_hold_fault: bool,
}

impl Observations {
    /// No observations at all.
    pub fn none() -> Self {
        Self::default()
    }

    /// Collects observations. A header, if present, must name the observations format and a
    /// known version.
    pub fn from_observations(
        observations: impl IntoIterator<Item = Observation>,
    ) -> Result<Self, CheckError> {
        let mut out = Self {
            present: true,
            ..Self::default()
        };
        for o in observations {
            out.add(o)?;
        }
        out.finish();
        Ok(out)
    }

    pub(crate) fn add(&mut self, o: Observation) -> Result<(), CheckError> {
        match o {
            Observation::Header {
                format,
                version,
                run_id,
            } => {
                if format != OBSERVATIONS_FORMAT {
                    return Err(CheckError::WrongFormat {
                        path: "observations".into(),
                        expected: OBSERVATIONS_FORMAT,
                        found: format,
                    });
                }
                if !(OLDEST_HISTORY_FORMAT_VERSION..=HISTORY_FORMAT_VERSION).contains(&version) {
                    return Err(CheckError::UnsupportedVersion {
                        path: "observations".into(),
                        found: version,
                        supported: HISTORY_FORMAT_VERSION,
                    });
                }
                self.run_id = Some(run_id);
            }
            Observation::Leader {
                at_ns,
                observer,
                stream,
                leader,
            } => self
                .leaders
                .push(at_ns, &observer, &stream, leader.as_deref()),
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
                chosen: _,
            } => self.faults.push(FaultWindow {
                fault_id,
                kind,
                start_ns,
                end_ns,
                injecting_ns,
                reverting_ns,
                sides,
                affected,
                survivable,
            }),
            Observation::StreamInfo {
                at_ns,
                observer,
                stream,
                leader,
                replicas,
                last_seq,
                first_seq,
                messages,
                bytes,
            } => self.stream_infos.push(StreamInfoSample {
                at_ns,
                observer,
                stream,
                replicas,
                last_seq,
                state: match (first_seq, messages, bytes) {
                    (Some(f), Some(m), Some(b)) => Some((f, m, b)),
                    _ => None,
                },
                leader,
            }),
            Observation::Settled {
                at_ns,
                deadline_ns,
                converged,
                unanswered,
            } => {
                self.settled = Some(SettleSample {
                    at_ns,
                    deadline_ns,
                    converged,
                    unanswered,
                });
            }
        }
        Ok(())
    }

    pub(crate) fn finish(&mut self) {
        self.faults.sort_by(|a, b| {
            a.start_ns
                .cmp(&b.start_ns)
                .then_with(|| a.fault_id.cmp(&b.fault_id))
        });
    }

    /// When the first fault began to be injected, if any: the baseline ends there.
    pub fn first_fault_ns(&self) -> Option<u64> {
        self.faults
            .iter()
            .map(|f| f.injecting_ns.unwrap_or(f.start_ns).min(f.start_ns))
            .min()
    }

    /// When replicas must have converged: the last heal plus `deadline_ms`. `None` when some
    /// fault never healed during the run.
    pub fn converge_at_ns(&self, deadline_ms: u64) -> Option<u64> {
        let mut last = 0u64;
        for f in &self.faults {
            last = last.max(f.end_ns?);
        }
        Some(last.saturating_add(deadline_ms.saturating_mul(1_000_000)))
    }
}
