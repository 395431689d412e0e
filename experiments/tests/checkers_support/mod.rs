//! Builders for small, hand-made histories used by the checker tests.

#![allow(dead_code, missing_docs)] // Each test file uses a different subset.

use faultline_experiments::checkers::{check_operations, CheckConfig, CheckReport};
use faultline_experiments::history::{
    HistoryHeader, Observation, OpKind, Operation, Outcome, Pattern, ReadItem, HISTORY_FORMAT,
    HISTORY_FORMAT_VERSION, OBSERVATIONS_FORMAT,
};

pub const MS: u64 = 1_000_000;
pub const NODES: [&str; 3] = ["n1", "n2", "n3"];

pub fn header() -> HistoryHeader {
    HistoryHeader {
        format: HISTORY_FORMAT.into(),
        version: HISTORY_FORMAT_VERSION,
        run_id: "run-1".into(),
        started_at_unix_ms: 1_764_129_600_000,
        adapter: "nats".into(),
        client: None,
    }
}

pub fn obs_header() -> Observation {
    Observation::Header {
        format: OBSERVATIONS_FORMAT.into(),
        version: HISTORY_FORMAT_VERSION,
        run_id: "run-1".into(),
    }
}

/// Any operation, with sensible defaults.
pub fn op(
    tenant: &str,
    node: &str,
    kind: OpKind,
    pattern: Pattern,
    stream: &str,
    at_ms: u64,
) -> Operation {
    Operation {
        tenant: tenant.into(),
        process: format!("{tenant}-p"),
        node: node.into(),
        reconnected: false,
        sent_node: None,
        client_zone: None,
        kind,
        pattern,
        value: None,
        attempt: 1,
        stream: stream.into(),
        seq: None,
        invoke_ns: at_ms * MS,
        complete_ns: at_ms * MS + 5 * MS,
        invoke_unix_ms: 1_764_129_600_000 + at_ms,
        complete_unix_ms: 1_764_129_600_000 + at_ms + 5,
        outcome: Outcome::Ok,
        error: None,
        read: None,
        served_tenant: None,
    }
}

pub fn items(list: &[(u64, &str)]) -> Vec<ReadItem> {
    list.iter()
        .map(|(seq, v)| ReadItem {
            seq: *seq,
            value: (*v).to_string(),
        })
        .collect()
}

/// A history under construction: operations plus observations.
#[derive(Clone, Debug)]
pub struct H {
    pub ops: Vec<Operation>,
    pub obs: Vec<Observation>,
    pub config: CheckConfig,
}

impl H {
    /// The clean reference history: two tenants, each writing 200 chat values (one every
    /// 100 ms for 20 s, rotating over three nodes) into its own stream; node n2 killed from 5 s
    /// to 7 s; a final read-back of both streams through every node at 25 s; n1 leads all
    /// along; stream info after convergence. Every checker finds it valid.
    pub fn clean() -> Self {
        let mut ops = Vec::new();
        for tenant in ["t1", "t2"] {
            let stream = format!("s-{tenant}");
            let mut stored = Vec::new();
            for i in 0..200u64 {
                let node = NODES[(i % 3) as usize];
                let mut w = op(tenant, node, OpKind::Write, Pattern::Chat, &stream, i * 100);
                let value = format!("{tenant}/p/{i}");
                w.value = Some(value.clone());
                w.seq = Some(i + 1);
                ops.push(w);
                stored.push((i + 1, value));
            }
            for node in NODES {
                let mut r = op(
                    tenant,
                    node,
                    OpKind::Read,
                    Pattern::ReadBack,
                    &stream,
                    25_000,
                );
                r.read = Some(
                    stored
                        .iter()
                        .map(|(seq, v)| ReadItem {
                            seq: *seq,
                            value: v.clone(),
                        })
                        .collect(),
                );
                ops.push(r);
            }
        }
        let mut obs = vec![
            obs_header(),
            Observation::Fault {
                fault_id: "f1".into(),
                kind: "kill".into(),
                start_ns: 5_000 * MS,
                end_ns: Some(7_000 * MS),
                injecting_ns: None,
                reverting_ns: None,
                sides: vec![],
                affected: vec!["n2".into()],
                survivable: false,
                chosen: None,
            },
        ];
        for s in 0..27u64 {
            for node in NODES {
                if node == "n2" && (5..7).contains(&s) {
                    continue;
                }
                for stream in ["s-t1", "s-t2"] {
                    obs.push(Observation::Leader {
                        at_ns: s * 1_000 * MS,
                        observer: node.into(),
                        stream: stream.into(),
                        leader: Some("n1".into()),
                    });
                }
            }
        }
        for node in NODES {
            for stream in ["s-t1", "s-t2"] {
                obs.push(Observation::StreamInfo {
                    at_ns: 26_000 * MS,
                    observer: node.into(),
                    stream: stream.into(),
                    leader: Some("n1".into()),
                    replicas: NODES.iter().map(ToString::to_string).collect(),
                    last_seq: 200,
                    first_seq: None,
                    messages: None,
                    bytes: None,
                });
            }
        }
        Self {
            ops,
            obs,
            config: CheckConfig::for_scenario("pod-failure"),
        }
    }

    pub fn check(&self) -> CheckReport {
        check_operations(&header(), &self.ops, Some(self.obs.clone()), &self.config)
            .expect("check runs")
    }

    /// The read-backs of `stream` through `node` (all nodes when `None`).
    pub fn readbacks(&mut self, stream: &str, node: Option<&str>) -> Vec<&mut Operation> {
        self.ops
            .iter_mut()
            .filter(|o| {
                o.pattern == Pattern::ReadBack
                    && o.stream == stream
                    && node.is_none_or(|n| o.node == n)
            })
            .collect()
    }

    /// The write of `value`.
    pub fn write_of(&mut self, value: &str) -> &mut Operation {
        self.ops
            .iter_mut()
            .find(|o| o.kind == OpKind::Write && o.value.as_deref() == Some(value))
            .expect("value was written")
    }

    /// Removes `value` from the read-backs (through `node`, or all).
    pub fn drop_from_readbacks(&mut self, stream: &str, node: Option<&str>, value: &str) {
        for r in self.readbacks(stream, node) {
            r.read.as_mut().unwrap().retain(|i| i.value != value);
        }
    }

    /// Appends an item to the read-backs (through `node`, or all).
    pub fn add_to_readbacks(&mut self, stream: &str, node: Option<&str>, seq: u64, value: &str) {
        for r in self.readbacks(stream, node) {
            let list = r.read.as_mut().unwrap();
            list.push(ReadItem {
                seq,
                value: value.into(),
            });
            list.sort_by_key(|i| i.seq);
        }
    }

    pub fn push_fault(
        &mut self,
        id: &str,
        kind: &str,
        start_ms: u64,
        end_ms: u64,
        sides: &[&[&str]],
        affected: &[&str],
    ) {
        self.obs.push(Observation::Fault {
            fault_id: id.into(),
            kind: kind.into(),
            start_ns: start_ms * MS,
            end_ns: Some(end_ms * MS),
            injecting_ns: None,
            reverting_ns: None,
            sides: sides
                .iter()
                .map(|s| s.iter().map(ToString::to_string).collect())
                .collect(),
            affected: affected.iter().map(ToString::to_string).collect(),
            survivable: false,
            chosen: None,
        });
    }

    /// Serializes to (history JSONL, observations JSONL).
    pub fn to_jsonl(&self) -> (String, String) {
        let mut h = serde_json::to_string(&header()).unwrap();
        h.push('\n');
        for o in &self.ops {
            h.push_str(&serde_json::to_string(o).unwrap());
            h.push('\n');
        }
        let mut ob = String::new();
        for o in &self.obs {
            ob.push_str(&serde_json::to_string(o).unwrap());
            ob.push('\n');
        }
        (h, ob)
    }
}
