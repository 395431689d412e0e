//! Judging a long slice of the background load, as `faultlined serve` does at a run's end:
//! `slice::cut` of a segment's history and observations into the run's files, then
//! `check_files` on them.
//!
//! ```text
//! cargo bench -p faultline-experiments --bench slice -- [--hours 1,4] [--rate 200] [--tenants 50] [--dir DIR]
//! ```
//!
//! For each length it writes a synthetic segment in the real formats, at the background load's
//! shape: `--tenants` tenants at `--rate` operations per second in all (70 % writes, 20 % reads
//! of a tenant's last 1 to 50 values as a chat reply reads them, 5 % work-queue jobs and 5 %
//! their deliveries; 0.1 % of writes `info`), and every second a leader sample of `$meta` and of
//! every tenant's stream from each of 3 servers, as the load's observer records them. The
//! slice begins a minute into the segment and ends with it; its initial-state reads and
//! read-back through the 3 servers are written to a file, as the daemon's read threads write
//! them.
//!
//! Each phase runs in a process of its own (this program, started again with `--phase`), so
//! that its peak RSS (`VmHWM`) is its own: the generator, a plain read of the cut's input files
//! (the baseline: every byte read and its newlines counted, as `wc -l` does), the cut, a plain
//! read of the check's input files, and the check. It prints, per phase, the time, the bytes
//! per second and the peak RSS, and the cut and the check as ratios of the plain read of the
//! same files in the same run. One thread. The files are removed at the end of each length.

use std::fmt::Write as _;
use std::io::{BufWriter, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
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
const MIB: f64 = (1u64 << 20) as f64;
/// Where the slice begins in the segment.
const START_NS: u64 = 60 * SECOND;

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

/// CPU time this process has run, s (from `/proc/self/schedstat`; one thread): on a shared
/// machine the wall time also counts waiting for a core.
fn cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1e9
}

struct Args {
    hours: Vec<u64>,
    rate: u64,
    tenants: usize,
    dir: PathBuf,
    /// Set in a child: the phase it runs, in `dir`.
    phase: Option<String>,
    end_ns: u64,
    files: Vec<PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        hours: vec![1, 4],
        rate: 200,
        tenants: 50,
        dir: std::env::temp_dir(),
        phase: None,
        end_ns: 0,
        files: Vec::new(),
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
            "--phase" => a.phase = Some(value()),
            "--end-ns" => a.end_ns = value().parse().unwrap_or(0),
            "--files" => a.files = value().split(',').map(PathBuf::from).collect(),
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

/// Every tenant's stored values, by sequence, compactly: (pattern, counter).
type Stored = Vec<Vec<(Pattern, u32)>>;

fn value_name(tenant: usize, (pattern, counter): (Pattern, u32)) -> String {
    format!("t{tenant:03}/{}/{counter}", pattern_process(pattern))
}

/// What the generator wrote.
struct Segment {
    operations: u64,
    end_ns: u64,
}

/// Writes the segment's history, observations and the slice's views into `dir`.
fn generate(hours: u64, a: &Args, dir: &Path) -> Segment {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let n = hours * 3600 * a.rate;
    let step = SECOND / a.rate;
    let history = dir.join("segment.jsonl");
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
    let mut stored: Stored = vec![Vec::new(); a.tenants];
    let mut counter = vec![0u32; a.tenants];
    let mut jobs: Vec<std::collections::VecDeque<String>> =
        vec![std::collections::VecDeque::new(); a.tenants];
    // What each tenant's stream held a second into the slice: the initial state.
    let mut held: Option<Vec<usize>> = None;
    for i in 0..n {
        let t = rng.below(a.tenants as u64) as usize;
        let at = i * step;
        if held.is_none() && at >= START_NS + SECOND {
            held = Some(stored.iter().map(Vec::len).collect());
        }
        let roll = rng.below(100);
        let line = if roll < 75 {
            let pattern = match roll {
                0..=69 if roll.is_multiple_of(3) => Pattern::Batch,
                0..=69 => Pattern::Chat,
                _ => Pattern::Job,
            };
            counter[t] += 1;
            let value = value_name(t, (pattern, counter[t]));
            let mut w = op(t, OpKind::Write, pattern, at);
            if rng.below(1000) == 0 {
                w.outcome = Outcome::Info;
                w.error = Some("timed out waiting for the acknowledgement".into());
            } else {
                stored[t].push((pattern, counter[t]));
                w.seq = Some(stored[t].len() as u64);
                if pattern == Pattern::Job {
                    jobs[t].push_back(value.clone());
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
                        value: value_name(t, stored[t][k]),
                    })
                    .collect(),
            );
            r
        } else {
            let mut d = op(t, OpKind::Deliver, Pattern::Job, at);
            d.value = jobs[t].pop_front();
            d
        };
        write_line(&mut out, &line);
    }
    out.flush().unwrap();
    let end_ns = n * step;
    write_leader_samples(a.tenants, end_ns, &dir.join("segment-obs.jsonl"));
    let held = held.unwrap_or_else(|| stored.iter().map(Vec::len).collect());
    write_views(&stored, &held, end_ns + SECOND, &dir.join("views.jsonl"));
    Segment {
        operations: n,
        end_ns,
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

/// The slice's initial-state reads (what each stream held a second in) and read-back (all of
/// it), through every server, one line at a time.
fn write_views(stored: &Stored, held: &[usize], read_back_ns: u64, path: &Path) {
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    for (pattern, at) in [
        (Pattern::InitialState, START_NS + SECOND),
        (Pattern::ReadBack, read_back_ns),
    ] {
        for node in NODES {
            for (t, values) in stored.iter().enumerate() {
                let upto = if pattern == Pattern::InitialState {
                    held[t]
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
                            value: value_name(t, *v),
                        })
                        .collect(),
                );
                write_line(&mut out, &r);
            }
        }
    }
    out.flush().unwrap();
}

fn file_bytes(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum()
}

/// The baseline: reads every byte of `files` and counts their lines.
fn plain_read(files: &[PathBuf]) -> u64 {
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0u64;
    for f in files {
        let mut file = std::fs::File::open(f).expect("open");
        loop {
            let n = file.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        }
    }
    lines
}

/// Runs one phase in this process and prints its result as one JSON line.
fn run_phase(phase: &str, a: &Args) {
    let dir = &a.dir;
    let p = |name: &str| dir.join(name);
    let t = Instant::now();
    let result = match phase {
        "generate" => {
            let hours = a.hours.first().copied().unwrap_or(1);
            let s = generate(hours, a, dir);
            serde_json::json!({"operations": s.operations, "end_ns": s.end_ns})
        }
        "read" => serde_json::json!({"lines": plain_read(&a.files)}),
        "cut" => {
            let span = SliceSpan {
                start_ns: START_NS,
                cut_ns: a.end_ns,
                end_ns: a.end_ns + 5 * SECOND,
            };
            let views = p("views.jsonl");
            let counts = cut(
                &CutFiles {
                    history_in: &p("segment.jsonl"),
                    observations_in: &p("segment-obs.jsonl"),
                    history_out: &p("history.jsonl"),
                    observations_out: &p("observations.jsonl"),
                },
                span,
                "slice-bench",
                &[views.as_path()],
            )
            .expect("cut");
            serde_json::json!({"operations": counts.operations, "views": counts.views})
        }
        "check" => {
            let report = check_files(
                &p("history.jsonl"),
                Some(&p("observations.jsonl")),
                &CheckConfig::default(),
            )
            .expect("check");
            let consistency = report
                .verdict("consistency")
                .map(|v| format!("{:?}: {}", v.status, v.summary))
                .unwrap_or_default();
            serde_json::json!({"status": format!("{:?}", report.status), "consistency": consistency})
        }
        other => panic!("unknown phase {other}"),
    };
    let mut result = result;
    result["seconds"] = t.elapsed().as_secs_f64().into();
    result["cpu_seconds"] = cpu_seconds().into();
    result["peak_rss_mib"] = peak_rss_mib().into();
    println!("{result}");
}

/// Runs one phase in a child process; returns its result.
fn phase(a: &Args, dir: &Path, phase: &str, extra: &[String]) -> serde_json::Value {
    let exe = std::env::current_exe().expect("own executable");
    let out = Command::new(exe)
        .args(["--phase", phase, "--dir"])
        .arg(dir)
        .args([
            "--rate",
            &a.rate.to_string(),
            "--tenants",
            &a.tenants.to_string(),
        ])
        .args(extra)
        .output()
        .expect("start phase");
    assert!(
        out.status.success(),
        "phase {phase} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default()).expect("phase result")
}

fn secs(v: &serde_json::Value) -> f64 {
    v["seconds"].as_f64().unwrap_or(0.0)
}

fn cpu(v: &serde_json::Value) -> f64 {
    v["cpu_seconds"].as_f64().unwrap_or(0.0)
}

fn rss(v: &serde_json::Value) -> f64 {
    v["peak_rss_mib"].as_f64().unwrap_or(0.0)
}

/// One phase's figures: wall and CPU seconds, MiB/s of `bytes`, and the ratio of its CPU time
/// to `baseline`'s.
fn figures(v: &serde_json::Value, bytes: u64, baseline: Option<&serde_json::Value>) -> String {
    let mut text = format!(
        "{:.1} s ({:.1} s CPU, {:.0} MiB/s of CPU)",
        secs(v),
        cpu(v),
        bytes as f64 / MIB / cpu(v).max(1e-9)
    );
    if let Some(b) = baseline {
        let _ = write!(
            text,
            ", {:.2}x the plain read's CPU",
            cpu(v) / cpu(b).max(1e-9)
        );
    }
    let _ = write!(text, ", peak RSS {:.0} MiB", rss(v));
    text
}

/// Generates, cuts and checks a slice of `hours`, printing each phase.
fn measure(args: &Args, hours: u64) {
    let dir = tempfile::tempdir_in(&args.dir).expect("temp dir");
    let path = dir.path();
    let files = |names: &[&str]| -> Vec<PathBuf> { names.iter().map(|f| path.join(f)).collect() };
    let list = |files: &[PathBuf]| {
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let generated = phase(
        args,
        path,
        "generate",
        &["--hours".into(), hours.to_string()],
    );
    let end_ns = generated["end_ns"].as_u64().unwrap_or(0);
    let inputs = files(&["segment.jsonl", "segment-obs.jsonl", "views.jsonl"]);
    let in_bytes = file_bytes(&inputs);
    println!(
        "{hours} h: generated {} operations, {:.0} MiB of segment and views files, in {:.1} s",
        generated["operations"],
        in_bytes as f64 / MIB,
        secs(&generated)
    );
    let read_in = phase(args, path, "read", &["--files".into(), list(&inputs)]);
    println!(
        "{hours} h: plain read of the cut's input: {}",
        figures(&read_in, in_bytes, None)
    );
    let cut_run = phase(args, path, "cut", &["--end-ns".into(), end_ns.to_string()]);
    println!(
        "{hours} h: cut {} operations + {} views: {}",
        cut_run["operations"],
        cut_run["views"],
        figures(&cut_run, in_bytes, Some(&read_in))
    );
    for f in &inputs {
        let _ = std::fs::remove_file(f);
    }
    let outputs = files(&["history.jsonl", "observations.jsonl"]);
    let out_bytes = file_bytes(&outputs);
    let read_out = phase(args, path, "read", &["--files".into(), list(&outputs)]);
    println!(
        "{hours} h: plain read of the check's input ({:.0} MiB): {}",
        out_bytes as f64 / MIB,
        figures(&read_out, out_bytes, None)
    );
    let check_run = phase(args, path, "check", &[]);
    println!(
        "{hours} h: check: {}; {}: consistency {}",
        figures(&check_run, out_bytes, Some(&read_out)),
        check_run["status"],
        check_run["consistency"]
    );
    println!(
        "{hours} h: judged (cut + check) in {:.1} s ({:.1} s CPU, {:.2}x the plain reads' CPU), peak RSS {:.0} MiB",
        secs(&cut_run) + secs(&check_run),
        cpu(&cut_run) + cpu(&check_run),
        (cpu(&cut_run) + cpu(&check_run)) / (cpu(&read_in) + cpu(&read_out)).max(1e-9),
        rss(&cut_run).max(rss(&check_run))
    );
}

fn main() {
    let a = args();
    if let Some(p) = &a.phase {
        run_phase(p, &a);
        return;
    }
    println!(
        "slice judging: {} tenants at {} ops/s, 3 servers; lengths {:?} h",
        a.tenants, a.rate, a.hours
    );
    for &hours in &a.hours {
        measure(&a, hours);
    }
}
