//! Judging a long slice of the background load, as `faultlined serve` does at a run's end:
//! `slice::cut` of a segment's history and observations into the run's files, then
//! `check_files` on them.
//!
//! ```text
//! cargo bench -p faultline-experiments --bench slice -- [--hours 1,6] [--rate 200] [--tenants 50] [--dir DIR]
//! ```
//!
//! For each length it writes a synthetic segment in the real formats, at the background load's
//! shape: `--tenants` tenants at `--rate` operations per second in all (70 % writes, 20 % reads
//! of a tenant's last 1 to 50 values as a chat reply reads them, 5 % work-queue jobs and 5 %
//! their deliveries; 0.1 % of writes `info`), and every second a leader sample of `$meta` and of
//! every tenant's stream from each of 3 servers, as the load's observer records them. The
//! slice begins a minute into the segment and ends with it; its initial-state reads and
//! read-back through the 3 servers are written to a file, as the daemon's read threads write
//! them (not timed). It prints,
//! per phase, the time and the peak RSS (`VmHWM`, reset between phases through
//! `/proc/self/clear_refs`). One thread. The files are removed at the end of each length.

use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use faultline_experiments::checkers::{check_files, CheckConfig};
use faultline_experiments::history::{
    HistoryHeader, Observation, OpKind, Operation, Outcome, Pattern, ReadItem, HISTORY_FORMAT,
    HISTORY_FORMAT_VERSION, OBSERVATIONS_FORMAT,
};
use faultline_experiments::workload::slice::{cut, CutFiles};
use faultline_experiments::workload::SliceSpan;

const NODES: [&str; 3] = ["n1", "n2", "n3"];
const SECOND: u64 = 1_000_000_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
        / 1024.0
}

fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

struct Args {
    hours: Vec<u64>,
    rate: u64,
    tenants: usize,
    dir: PathBuf,
}

fn args() -> Args {
    let mut a = Args {
        hours: vec![1, 6],
        rate: 200,
        tenants: 50,
        dir: std::env::temp_dir(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_default();
        match flag.as_str() {
            "--hours" => {
                a.hours = value()
                    .split(',')
                    .filter_map(|h| h.trim().parse().ok())
                    .collect();
            }
            "--rate" => a.rate = value().parse().unwrap_or(a.rate),
            "--tenants" => a.tenants = value().parse().unwrap_or(a.tenants),
            "--dir" => a.dir = PathBuf::from(value()),
            // `cargo bench` passes `--bench`.
            _ => {}
        }
    }
    a
}

fn op(tenant: usize, kind: OpKind, pattern: Pattern, invoke_ns: u64) -> Operation {
    Operation {
        tenant: format!("t{tenant:03}"),
        process: format!("t{tenant:03}/{}", pattern_process(pattern)),
        node: NODES[tenant % NODES.len()].to_owned(),
        reconnected: false,
        sent_node: None,
        client_zone: None,
        kind,
        pattern,
        value: None,
        attempt: 1,
        stream: format!("FL_t{tenant:03}"),
        seq: None,
        invoke_ns,
        complete_ns: invoke_ns + 1_500_000,
        invoke_unix_ms: 1_800_000_000_000 + invoke_ns / 1_000_000,
        complete_unix_ms: 1_800_000_000_000 + invoke_ns / 1_000_000 + 1,
        outcome: Outcome::Ok,
        error: None,
        read: None,
        served_tenant: None,
    }
}

fn pattern_process(p: Pattern) -> &'static str {
    match p {
        Pattern::Job => "jobs",
        Pattern::Batch => "batch",
        _ => "chat",
    }
}

fn write_line<T: serde::Serialize>(out: &mut impl std::io::Write, v: &T) {
    serde_json::to_writer(&mut *out, v).expect("serialize");
    out.write_all(b"\n").expect("write");
}

/// What the generator leaves: every tenant's stored values, by sequence.
struct Segment {
    stored: Vec<Vec<String>>,
    operations: u64,
    end_ns: u64,
    bytes: u64,
}

/// Writes the segment's history and observations.
fn generate(hours: u64, a: &Args, history: &Path, observations: &Path) -> Segment {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let n = hours * 3600 * a.rate;
    let step = SECOND / a.rate;
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(history).unwrap());
    write_line(
        &mut out,
        &HistoryHeader {
            format: HISTORY_FORMAT.into(),
            version: HISTORY_FORMAT_VERSION,
            run_id: "background-bench".into(),
            started_at_unix_ms: 1_800_000_000_000,
            adapter: "nats".into(),
            client: None,
        },
    );
    let mut stored: Vec<Vec<String>> = vec![Vec::new(); a.tenants];
    let mut counter = vec![0u64; a.tenants];
    let mut jobs: Vec<Vec<String>> = vec![Vec::new(); a.tenants];
    for i in 0..n {
        let t = rng.below(a.tenants as u64) as usize;
        let at = i * step;
        let roll = rng.below(100);
        let line = if roll < 75 {
            let pattern = match roll {
                0..=69 if roll.is_multiple_of(3) => Pattern::Batch,
                0..=69 => Pattern::Chat,
                _ => Pattern::Job,
            };
            counter[t] += 1;
            let value = format!("t{t:03}/{}/{}", pattern_process(pattern), counter[t]);
            let mut w = op(t, OpKind::Write, pattern, at);
            if rng.below(1000) == 0 {
                w.outcome = Outcome::Info;
                w.error = Some("timed out waiting for the acknowledgement".into());
            } else {
                stored[t].push(value.clone());
                w.seq = Some(stored[t].len() as u64);
                if pattern == Pattern::Job {
                    jobs[t].push(value.clone());
                }
            }
            w.value = Some(value);
            w
        } else if roll < 95 || jobs[t].is_empty() {
            let mut r = op(t, OpKind::Read, Pattern::Chat, at);
            let len = stored[t].len();
            let take = (1 + rng.below(50) as usize).min(len);
            r.read = Some(
                (len - take..len)
                    .map(|k| ReadItem {
                        seq: k as u64 + 1,
                        value: stored[t][k].clone(),
                    })
                    .collect(),
            );
            r
        } else {
            let mut d = op(t, OpKind::Deliver, Pattern::Job, at);
            d.value = Some(jobs[t].remove(0));
            d
        };
        write_line(&mut out, &line);
    }
    out.flush().unwrap();
    let end_ns = n * step;

    write_leader_samples(a.tenants, end_ns, observations);
    let bytes = std::fs::metadata(history).map_or(0, |m| m.len())
        + std::fs::metadata(observations).map_or(0, |m| m.len());
    Segment {
        stored,
        operations: n,
        end_ns,
        bytes,
    }
}

/// Every second, each server's view of the leader of `$meta` and of every tenant's stream.
fn write_leader_samples(tenants: usize, end_ns: u64, observations: &Path) {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(observations).unwrap());
    write_line(
        &mut out,
        &Observation::Header {
            format: OBSERVATIONS_FORMAT.into(),
            version: HISTORY_FORMAT_VERSION,
            run_id: "background-bench".into(),
        },
    );
    let streams: Vec<String> = std::iter::once("$meta".to_owned())
        .chain((0..tenants).map(|t| format!("FL_t{t:03}")))
        .collect();
    for s in 0..end_ns / SECOND {
        for observer in NODES {
            for (k, stream) in streams.iter().enumerate() {
                write_line(
                    &mut out,
                    &Observation::Leader {
                        at_ns: s * SECOND + 1000 * k as u64,
                        observer: observer.into(),
                        stream: stream.clone(),
                        leader: Some(NODES[k % NODES.len()].into()),
                    },
                );
            }
        }
    }
    out.flush().unwrap();
}

/// The slice's initial-state reads (what each stream held a minute in) and read-back (all of
/// it), through every server.
fn views(segment: &Segment, start_ns: u64, read_back_ns: u64, rate: u64) -> Vec<Operation> {
    // Roughly what a minute of writes stored.
    let held_per_tenant = |t: usize| {
        let share = (start_ns / SECOND) * rate * 3 / 4 / segment.stored.len().max(1) as u64;
        segment.stored[t].len().min(share as usize)
    };
    let mut views = Vec::new();
    for (pattern, at) in [
        (Pattern::InitialState, start_ns),
        (Pattern::ReadBack, read_back_ns),
    ] {
        for node in NODES {
            for (t, values) in segment.stored.iter().enumerate() {
                let upto = if pattern == Pattern::InitialState {
                    held_per_tenant(t)
                } else {
                    values.len()
                };
                let mut r = op(t, OpKind::Read, pattern, at);
                r.process = format!("{}/{node}", pattern_process(pattern));
                node.clone_into(&mut r.node);
                r.read = Some(
                    values[..upto]
                        .iter()
                        .enumerate()
                        .map(|(k, v)| ReadItem {
                            seq: k as u64 + 1,
                            value: v.clone(),
                        })
                        .collect(),
                );
                views.push(r);
            }
        }
    }
    views
}

fn main() {
    let a = args();
    println!(
        "slice judging: {} tenants at {} ops/s, 3 servers; lengths {:?} h",
        a.tenants, a.rate, a.hours
    );
    for &hours in &a.hours {
        let dir = tempfile::tempdir_in(&a.dir).expect("temp dir");
        let p = |name: &str| dir.path().join(name);
        let t = Instant::now();
        let segment = generate(hours, &a, &p("segment.jsonl"), &p("segment-obs.jsonl"));
        println!(
            "{hours} h: generated {} operations, {:.2} GiB of segment files, in {:.1} s",
            segment.operations,
            segment.bytes as f64 / (1u64 << 30) as f64,
            t.elapsed().as_secs_f64()
        );
        let start_ns = 60 * SECOND;
        let span = SliceSpan {
            start_ns,
            cut_ns: segment.end_ns,
            end_ns: segment.end_ns + 5 * SECOND,
        };
        // The daemon's read threads write these as they read.
        let views = views(&segment, start_ns + SECOND, segment.end_ns + SECOND, a.rate);
        drop(segment);
        let views_file = p("views.jsonl");
        {
            let mut out = BufWriter::new(std::fs::File::create(&views_file).unwrap());
            for v in &views {
                write_line(&mut out, v);
            }
            out.flush().unwrap();
        }
        drop(views);
        reset_peak_rss();
        let t = Instant::now();
        let counts = cut(
            &CutFiles {
                history_in: &p("segment.jsonl"),
                observations_in: &p("segment-obs.jsonl"),
                history_out: &p("history.jsonl"),
                observations_out: &p("observations.jsonl"),
            },
            span,
            "slice-bench",
            &[views_file.as_path()],
        )
        .expect("cut");
        let cut_s = t.elapsed().as_secs_f64();
        let cut_rss = peak_rss_mib();
        let _ = std::fs::remove_file(p("segment.jsonl"));
        let _ = std::fs::remove_file(p("segment-obs.jsonl"));
        println!(
            "{hours} h: cut {} operations + {} views in {cut_s:.1} s, peak RSS {cut_rss:.0} MiB",
            counts.operations, counts.views
        );
        reset_peak_rss();
        let t = Instant::now();
        let report = check_files(
            &p("history.jsonl"),
            Some(&p("observations.jsonl")),
            &CheckConfig::default(),
        )
        .expect("check");
        let check_s = t.elapsed().as_secs_f64();
        let check_rss = peak_rss_mib();
        let consistency = report
            .verdict("consistency")
            .map(|v| format!("{:?}: {}", v.status, v.summary))
            .unwrap_or_default();
        println!(
            "{hours} h: checked in {check_s:.1} s, peak RSS {check_rss:.0} MiB; consistency {consistency}"
        );
        println!(
            "{hours} h: judged (cut + check) in {:.1} s, peak RSS {:.0} MiB",
            cut_s + check_s,
            cut_rss.max(check_rss)
        );
    }
}
