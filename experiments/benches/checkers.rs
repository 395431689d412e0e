//! Checker throughput on a synthetic history, and peak memory.
//!
//! ```text
//! cargo bench -p faultline-experiments --bench checkers -- [--ops N] [--file-ops M]
//! ```
//!
//! Phase 1 (default 10 000 000 operations) feeds synthetic operations straight into the
//! checkers' streaming pipeline; each new value is interned from its string when first written
//! (read items then carry the interned id, as the reader's interner would return it). It
//! measures the checkers themselves: the fold and the four checkers. Phase 2 (default 1 000 000 operations, 0 to skip)
//! writes a JSON Lines history to a temporary file and runs `check_files` on it, so JSON parsing
//! is included. Each phase prints operations per second and the peak RSS (`VmHWM` from
//! `/proc/self/status`, reset between phases through `/proc/self/clear_refs`). One thread.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use faultline_experiments::checkers::{
    check_files, CheckConfig, Checks, Item, Observations, Op, ValueId,
};
use faultline_experiments::history::{
    HistoryHeader, Observation, OpKind, Outcome, Pattern, HISTORY_FORMAT, HISTORY_FORMAT_VERSION,
    OBSERVATIONS_FORMAT,
};

const TENANTS: usize = 100;
const PRODUCERS: usize = 4;
const NODES: [&str; 3] = ["n1", "n2", "n3"];
/// Spacing of intended send times: 10 M operations span 10 minutes.
const STEP_NS: u64 = 60_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn header() -> HistoryHeader {
    HistoryHeader {
        format: HISTORY_FORMAT.into(),
        version: HISTORY_FORMAT_VERSION,
        run_id: "bench".into(),
        started_at_unix_ms: 0,
        adapter: "synthetic".into(),
        client: None,
    }
}

fn observations(end_ns: u64) -> Vec<Observation> {
    let mut obs = vec![
        Observation::Header {
            format: OBSERVATIONS_FORMAT.into(),
            version: HISTORY_FORMAT_VERSION,
            run_id: "bench".into(),
        },
        Observation::Fault {
            fault_id: "kill-n2".into(),
            kind: "kill".into(),
            start_ns: end_ns / 3,
            end_ns: Some(end_ns / 3 + end_ns / 20),
            injecting_ns: None,
            reverting_ns: None,
            sides: vec![],
            affected: vec!["n2".into()],
            survivable: false,
            chosen: None,
        },
    ];
    for t in 0..TENANTS {
        obs.push(Observation::StreamInfo {
            at_ns: end_ns + 60_000_000_000,
            observer: "n1".into(),
            stream: format!("s-t{t:03}"),
            leader: Some("n1".into()),
            replicas: NODES.iter().map(ToString::to_string).collect(),
            last_seq: 0,
            first_seq: None,
            messages: None,
            bytes: None,
        });
    }
    obs
}

/// One synthetic operation, before interning.
#[derive(Clone, Copy)]
struct Synth {
    tenant: usize,
    node: usize,
    kind: OpKind,
    pattern: Pattern,
    outcome: Outcome,
    /// (producer, counter) of the written or delivered value.
    value: Option<(usize, u64)>,
    seq: Option<u64>,
    invoke_ns: u64,
    complete_ns: u64,
    /// For reads: the tenant's stored positions [from, to).
    read: Option<(usize, usize)>,
}

/// Generates the history: 85% writes (99.7% ok, 0.2% info, 0.1% fail), 10% reads of a tenant's
/// last 8 stored values, 5% deliveries of one of its last 256; then a final read-back of every
/// stream through every node. `emit` gets each operation and the tenants' stored
/// (producer, counter) lists.
fn generate(n: u64, mut emit: impl FnMut(&Synth, &[Vec<(usize, u64)>])) -> u64 {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut counters = vec![[0u64; PRODUCERS]; TENANTS];
    let mut stored: Vec<Vec<(usize, u64)>> = vec![Vec::new(); TENANTS];
    let load = n.saturating_sub((TENANTS * NODES.len()) as u64);
    for i in 0..load {
        let r = rng.next();
        let tenant = (r % TENANTS as u64) as usize;
        let node = ((r >> 8) % 3) as usize;
        let dice = (r >> 16) % 1000;
        let invoke_ns = i * STEP_NS;
        let complete_ns = invoke_ns + 2_000_000 + (r >> 32) % 8_000_000;
        let mut op = Synth {
            tenant,
            node,
            kind: OpKind::Write,
            pattern: Pattern::Chat,
            outcome: Outcome::Ok,
            value: None,
            seq: None,
            invoke_ns,
            complete_ns,
            read: None,
        };
        if dice < 850 {
            let p = ((r >> 24) % PRODUCERS as u64) as usize;
            counters[tenant][p] += 1;
            op.value = Some((p, counters[tenant][p]));
            let o = (r >> 40) % 1000;
            op.outcome = if o < 997 {
                Outcome::Ok
            } else if o < 999 {
                Outcome::Info
            } else {
                Outcome::Fail
            };
            if op.outcome != Outcome::Fail {
                stored[tenant].push((p, counters[tenant][p]));
                if op.outcome == Outcome::Ok {
                    op.seq = Some(stored[tenant].len() as u64);
                }
            }
        } else if dice < 950 {
            op.kind = OpKind::Read;
            let len = stored[tenant].len();
            op.read = Some((len.saturating_sub(8), len));
        } else {
            let len = stored[tenant].len();
            if len == 0 {
                continue;
            }
            op.kind = OpKind::Deliver;
            op.pattern = Pattern::Job;
            // Work queues deliver soon after publishing: one of the last 256 stored values.
            let pos = len - 1 - ((r >> 40) as usize) % len.min(256);
            op.value = Some(stored[tenant][pos]);
            op.seq = Some(pos as u64 + 1);
        }
        emit(&op, &stored);
    }
    let end = load * STEP_NS + 30_000_000_000;
    for tenant in 0..TENANTS {
        for node in 0..NODES.len() {
            let op = Synth {
                tenant,
                node,
                kind: OpKind::Read,
                pattern: Pattern::ReadBack,
                outcome: Outcome::Ok,
                value: None,
                seq: None,
                invoke_ns: end,
                complete_ns: end + 50_000_000,
                read: Some((0, stored[tenant].len())),
            };
            emit(&op, &stored);
        }
    }
    stored.iter().map(Vec::len).sum::<usize>() as u64 * NODES.len() as u64
}

fn value_string(buf: &mut String, tenant: usize, (p, c): (usize, u64)) -> &str {
    buf.clear();
    let _ = write!(buf, "t{tenant:03}/p{p}/{c}");
    buf
}

/// A chunk of synthetic operations waiting to be interned and pushed.
#[derive(Default)]
struct Chunk {
    ops: Vec<Synth>,
    /// Formatted values of `ops` (written values only), one after the other.
    text: String,
    ends: Vec<usize>,
}

/// Interned ids of the stored values, per tenant, parallel to the generator's stored lists.
type Ids = Vec<Vec<ValueId>>;

struct Phase1 {
    checks: Checks,
    syms: [Vec<u32>; 4],
    ids: Ids,
    items: Vec<Item>,
    values: Vec<Option<ValueId>>,
    intern: Duration,
    fold: Duration,
    ops: u64,
}

impl Phase1 {
    /// Interns the chunk's new values (timed as interning), then pushes its operations (timed
    /// as checking). Formatting the values is the generator's work and is not timed.
    fn flush(&mut self, chunk: &mut Chunk) {
        let start = Instant::now();
        let s = self.checks.symbols_mut();
        let mut k = 0;
        self.values.clear();
        for o in &chunk.ops {
            let id = match (o.kind, o.value) {
                (OpKind::Write, Some(_)) => {
                    let id = s.intern_value(&chunk.text[chunk.ends[k]..chunk.ends[k + 1]]);
                    k += 1;
                    if o.outcome != Outcome::Fail {
                        self.ids[o.tenant].push(id);
                    }
                    Some(id)
                }
                (_, Some(_)) => o.seq.map(|seq| self.ids[o.tenant][seq as usize - 1]),
                (_, None) => None,
            };
            self.values.push(id);
        }
        self.intern += start.elapsed();
        // Timed as checking: building each read's item list (as the reader fills its scratch
        // vector) and pushing the operation.
        let start = Instant::now();
        for (o, value) in chunk.ops.iter().zip(&self.values) {
            self.items.clear();
            if let Some((from, to)) = o.read {
                let ids = &self.ids[o.tenant][from..to];
                self.items
                    .extend(ids.iter().enumerate().map(|(i, id)| Item {
                        seq: (from + i) as u64 + 1,
                        value: *id,
                    }));
            }
            self.checks.push(&Op {
                tenant: self.syms[0][o.tenant],
                process: self.syms[1][o.tenant],
                node: self.syms[3][o.node],
                stream: self.syms[2][o.tenant],
                kind: o.kind,
                pattern: o.pattern,
                outcome: o.outcome,
                attempt: 1,
                value: *value,
                seq: o.seq,
                invoke_ns: o.invoke_ns,
                complete_ns: o.complete_ns,
                read: o.read.map(|_| &self.items[..]),
                served_tenant: None,
                node_uncertain: false,
                client_zone: None,
                line: 0,
            });
            self.ops += 1;
        }
        self.fold += start.elapsed();
        chunk.ops.clear();
        chunk.text.clear();
        chunk.ends.clear();
        chunk.ends.push(0);
    }
}

fn in_memory(n: u64) {
    reset_peak_rss();
    let end_ns = n * STEP_NS;
    let obs = Observations::from_observations(observations(end_ns)).expect("observations");
    let mut checks = Checks::new(&header(), obs, CheckConfig::default()).expect("config");
    let s = checks.symbols_mut();
    let names = |f: &dyn Fn(usize) -> String, n: usize| -> Vec<String> { (0..n).map(f).collect() };
    let syms = [
        names(&|t| format!("t{t:03}"), TENANTS)
            .iter()
            .map(|x| s.tenants.intern(x))
            .collect(),
        names(&|t| format!("t{t:03}-client"), TENANTS)
            .iter()
            .map(|x| s.processes.intern(x))
            .collect(),
        names(&|t| format!("s-t{t:03}"), TENANTS)
            .iter()
            .map(|x| s.streams.intern(x))
            .collect(),
        NODES.iter().map(|x| s.nodes.intern(x)).collect(),
    ];
    let mut p = Phase1 {
        checks,
        syms,
        ids: vec![Vec::new(); TENANTS],
        items: Vec::new(),
        values: Vec::new(),
        intern: Duration::ZERO,
        fold: Duration::ZERO,
        ops: 0,
    };
    let mut chunk = Chunk {
        ends: vec![0],
        ..Chunk::default()
    };
    let wall = Instant::now();
    let read_back_items = generate(n, |o, _stored| {
        if let (OpKind::Write, Some(v)) = (o.kind, o.value) {
            let _ = write!(chunk.text, "t{:03}/p{}/{}", o.tenant, v.0, v.1);
            chunk.ends.push(chunk.text.len());
        }
        chunk.ops.push(*o);
        if chunk.ops.len() == 1 << 16 || o.pattern == Pattern::ReadBack {
            p.flush(&mut chunk);
        }
    });
    p.flush(&mut chunk);
    let start = Instant::now();
    let report = p.checks.finish();
    let finish = start.elapsed();
    let wall = wall.elapsed();
    let checking = (p.fold + finish).as_secs_f64();
    println!(
        "phase 1: the checkers on {} synthetic operations (+{read_back_items} read-back items), in memory",
        p.ops
    );
    println!(
        "  fold {:.2} s + checkers {:.2} s = {checking:.2} s: {:.2} M operations/s",
        p.fold.as_secs_f64(),
        finish.as_secs_f64(),
        p.ops as f64 / checking / 1e6
    );
    println!(
        "  interning {} values from strings: {:.2} s more ({:.2} M operations/s with it); wall {:.1} s",
        report.input.values,
        p.intern.as_secs_f64(),
        p.ops as f64 / (checking + p.intern.as_secs_f64()) / 1e6,
        wall.as_secs_f64()
    );
    println!(
        "  status {}; peak RSS {} MiB",
        report.status.as_str(),
        peak_rss_kib() / 1024
    );
    for v in &report.verdicts {
        println!("  {}: {} ({})", v.name, v.status.as_str(), v.summary);
    }
}

fn from_file(n: u64) {
    let dir = std::env::temp_dir().join(format!("faultline-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("history.jsonl");
    {
        let mut out = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&path).expect("create"),
        );
        writeln!(out, "{}", serde_json::to_string(&header()).unwrap()).unwrap();
        let mut buf = String::new();
        generate(n, |o, stored| {
            let kind = match o.kind {
                OpKind::Write => "write",
                OpKind::Read => "read",
                OpKind::Deliver => "deliver",
                OpKind::Connect => "connect",
            };
            let pattern = match o.pattern {
                Pattern::Job => "job",
                Pattern::ReadBack => "read_back",
                _ => "chat",
            };
            let outcome = match o.outcome {
                Outcome::Ok => "ok",
                Outcome::Info => "info",
                Outcome::Fail => "fail",
            };
            let mut line = format!(
                r#"{{"tenant":"t{:03}","process":"t{:03}-client","node":"{}","kind":"{kind}","pattern":"{pattern}","stream":"s-t{:03}","invoke_ns":{},"complete_ns":{},"invoke_unix_ms":{},"complete_unix_ms":{},"outcome":"{outcome}""#,
                o.tenant,
                o.tenant,
                NODES[o.node],
                o.tenant,
                o.invoke_ns,
                o.complete_ns,
                o.invoke_ns / 1_000_000,
                o.complete_ns / 1_000_000
            );
            if let Some(v) = o.value {
                let _ = write!(
                    line,
                    r#","value":"{}""#,
                    value_string(&mut buf, o.tenant, v)
                );
            }
            if let Some(seq) = o.seq {
                let _ = write!(line, r#","seq":{seq}"#);
            }
            if let Some((from, to)) = o.read {
                line.push_str(r#","read":["#);
                for (i, v) in stored[o.tenant][from..to].iter().enumerate() {
                    if i > 0 {
                        line.push(',');
                    }
                    let _ = write!(
                        line,
                        r#"{{"seq":{},"value":"{}"}}"#,
                        from + i + 1,
                        value_string(&mut buf, o.tenant, *v)
                    );
                }
                line.push(']');
            }
            line.push('}');
            writeln!(out, "{line}").unwrap();
        });
    }
    let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    let obs_path = dir.join("observations.jsonl");
    let obs: Vec<String> = observations(n * STEP_NS)
        .iter()
        .map(|o| serde_json::to_string(o).unwrap())
        .collect();
    std::fs::write(&obs_path, obs.join("\n") + "\n").expect("write observations");
    reset_peak_rss();
    let start = Instant::now();
    let report = check_files(&path, Some(&obs_path), &CheckConfig::default()).expect("check");
    let secs = start.elapsed().as_secs_f64();
    println!(
        "phase 2: check_files on a {:.0} MiB history of {} operations (JSON parsing included)",
        bytes as f64 / 1_048_576.0,
        report.input.operations
    );
    println!(
        "  {secs:.2} s: {:.2} M operations/s, {:.0} MiB/s; status {}; peak RSS {} MiB",
        report.input.operations as f64 / secs / 1e6,
        bytes as f64 / 1_048_576.0 / secs,
        report.status.as_str(),
        peak_rss_kib() / 1024
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn main() {
    let mut ops = 10_000_000u64;
    let mut file_ops = 1_000_000u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--ops" => ops = args.next().and_then(|v| v.parse().ok()).unwrap_or(ops),
            "--file-ops" => file_ops = args.next().and_then(|v| v.parse().ok()).unwrap_or(file_ops),
            _ => {} // `cargo bench` passes `--bench`; ignore what we do not know.
        }
    }
    in_memory(ops);
    if file_ops > 0 {
        from_file(file_ops);
    }
}
