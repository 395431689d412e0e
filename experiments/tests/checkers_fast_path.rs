//! The fast path and the plain JSON Lines path judge alike.
//!
//! Lines in the recorder's own layout are read by `history::scan` (and spliced by the slice's
//! cut); lines in any other layout JSON allows go through serde_json. The same history, written
//! once as the recorder writes it and once with its keys in another order (as another tool may
//! write the public format), must give the same report, and its slice the same files, byte for
//! byte. The history holds anomalies (lost, duplicate-stored, unexpected, duplicate-delivered,
//! two-leaders), so the comparison covers evidence, not only "valid".

#[path = "checkers_support/mod.rs"]
mod support;

use std::io::Write as _;
use std::path::Path;

use faultline_experiments::checkers::{check_files, check_operations, CheckConfig, CheckReport};
use faultline_experiments::history::{scan, Observation, OpKind, Operation, Outcome, Pattern};
use faultline_experiments::workload::slice::{cut, CutFiles};
use faultline_experiments::workload::SliceSpan;
use support::{header, items, obs_header, op, MS};

/// How a file's lines are laid out.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// As the recorder writes them (serde_json, fields in declaration order).
    Recorder,
    /// Keys in alphabetical order, as a tool writing through a JSON map would.
    Sorted,
}

fn line<T: serde::Serialize>(v: &T, layout: Layout) -> String {
    match layout {
        Layout::Recorder => serde_json::to_string(v).unwrap(),
        // serde_json's map is ordered by key.
        Layout::Sorted => serde_json::to_value(v).unwrap().to_string(),
    }
}

fn write_file(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut f = std::fs::File::create(path).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

fn write(at_ms: u64, tenant: &str, value: &str, outcome: Outcome, seq: Option<u64>) -> Operation {
    let mut w = op(
        tenant,
        "n1",
        OpKind::Write,
        Pattern::Chat,
        &format!("s-{tenant}"),
        at_ms,
    );
    w.value = Some(value.into());
    w.outcome = outcome;
    w.seq = seq;
    w
}

fn read(at_ms: u64, tenant: &str, node: &str, pattern: Pattern, list: &[(u64, &str)]) -> Operation {
    let mut r = op(
        tenant,
        node,
        OpKind::Read,
        pattern,
        &format!("s-{tenant}"),
        at_ms,
    );
    r.read = Some(items(list));
    if pattern != Pattern::Chat {
        r.process = format!("{pattern:?}/{node}");
    }
    r
}

fn leader(at_ms: u64, observer: &str, stream: &str, leader: Option<&str>) -> Observation {
    Observation::Leader {
        at_ns: at_ms * MS,
        observer: observer.into(),
        stream: stream.into(),
        leader: leader.map(Into::into),
    }
}

/// A load from 0 to 12 s. Tenant t1 writes 1..=8 (6 fails, 7 is a job delivered twice); t2
/// writes 1..=3. The read-back (at 10.5 s) misses t1/p/4 (lost), holds t1/p/5 at two sequences
/// (duplicate-stored), t1/p/6 (written, failed: aborted-read) and t2/p/9 (never written:
/// unexpected). n1 and n2 both claim s-t1 from 3 to 6 s (two-leaders).
fn load() -> (Vec<Operation>, Vec<Operation>, Vec<Observation>) {
    let mut ops = Vec::new();
    for (i, at) in [(1, 200), (2, 1_500), (3, 2_500), (4, 3_500), (5, 4_500)] {
        ops.push(write(at, "t1", &format!("t1/p/{i}"), Outcome::Ok, Some(i)));
    }
    ops.push(write(5_000, "t1", "t1/p/6", Outcome::Fail, None));
    let mut job = write(5_500, "t1", "t1/p/7", Outcome::Ok, Some(6));
    job.pattern = Pattern::Job;
    ops.push(job);
    for at in [6_000, 6_100] {
        let mut d = op("t1", "n2", OpKind::Deliver, Pattern::Job, "s-t1", at);
        d.value = Some("t1/p/7".into());
        d.seq = Some(6);
        ops.push(d);
    }
    // An error text with a quote: serde_json escapes it, so even the recorder's layout takes
    // the plain path for this line.
    let mut info = write(6_500, "t1", "t1/p/8", Outcome::Info, None);
    info.error = Some("timed out waiting for \"ack\"".into());
    ops.push(info);
    for (i, at) in [(1, 300), (2, 2_600), (3, 7_000)] {
        ops.push(write(at, "t2", &format!("t2/p/{i}"), Outcome::Ok, Some(i)));
    }
    ops.push(read(
        3_000,
        "t1",
        "n1",
        Pattern::Chat,
        &[(1, "t1/p/1"), (2, "t1/p/2")],
    ));
    ops.push(read(
        7_500,
        "t2",
        "n3",
        Pattern::Chat,
        &[(1, "t2/p/1"), (2, "t2/p/2"), (3, "t2/p/3")],
    ));
    // After the cut (10 s): not the slice's.
    ops.push(write(10_200, "t2", "t2/p/4", Outcome::Ok, Some(4)));

    let initial = vec![read(
        1_001,
        "t1",
        "n1",
        Pattern::InitialState,
        &[(1, "t1/p/1")],
    )];
    let mut views = initial;
    for node in ["n1", "n2"] {
        views.push(read(
            10_500,
            "t1",
            node,
            Pattern::ReadBack,
            &[
                (1, "t1/p/1"),
                (2, "t1/p/2"),
                (3, "t1/p/3"),
                (5, "t1/p/5"),
                (6, "t1/p/7"),
                (7, "t1/p/5"),
                (8, "t1/p/6"),
            ],
        ));
        views.push(read(
            10_500,
            "t2",
            node,
            Pattern::ReadBack,
            &[
                (1, "t2/p/1"),
                (2, "t2/p/2"),
                (3, "t2/p/3"),
                (4, "t2/p/4"),
                (5, "t2/p/9"),
            ],
        ));
    }

    let mut obs = vec![obs_header()];
    for s in 0..12 {
        let at = s * 1_000;
        for node in ["n1", "n2", "n3"] {
            let claimed = if (3..=6).contains(&s) && node != "n3" {
                Some(node)
            } else {
                Some("n1")
            };
            obs.push(leader(at, node, "s-t1", claimed));
            obs.push(leader(at + 1, node, "$meta", None));
        }
    }
    obs.push(Observation::Fault {
        fault_id: "f1".into(),
        kind: "pause".into(),
        start_ns: 4_000 * MS,
        end_ns: Some(6_000 * MS),
        injecting_ns: Some(3_900 * MS),
        reverting_ns: Some(5_900 * MS),
        sides: vec![],
        affected: vec!["n3".into()],
        survivable: true,
        chosen: None,
    });
    (ops, views, obs)
}

/// The report as JSON, without the input files' names.
fn comparable(report: &CheckReport) -> serde_json::Value {
    let mut v = serde_json::to_value(report).unwrap();
    let input = v["input"].as_object_mut().unwrap();
    input.remove("history");
    input.remove("observations");
    v
}

fn anomaly_count(report: &CheckReport, checker: &str, name: &str) -> u64 {
    report
        .verdict(checker)
        .and_then(|v| v.anomalies.iter().find(|a| a.name == name))
        .map_or(0, |a| a.count)
}

fn write_history(dir: &Path, name: &str, ops: &[Operation], layout: Layout) -> std::path::PathBuf {
    let path = dir.join(name);
    write_file(
        &path,
        std::iter::once(line(&header(), layout)).chain(ops.iter().map(|o| line(o, layout))),
    );
    path
}

#[test]
fn a_history_is_judged_alike_in_either_layout() {
    let dir = tempfile::tempdir().unwrap();
    let (mut ops, views, obs) = load();
    ops.extend(views);
    let config = CheckConfig::default();
    let mut reports = Vec::new();
    for layout in [Layout::Recorder, Layout::Sorted] {
        let name = format!("{layout:?}");
        let history = write_history(dir.path(), &format!("{name}.jsonl"), &ops, layout);
        let observations = dir.path().join(format!("{name}-obs.jsonl"));
        write_file(&observations, obs.iter().map(|o| line(o, layout)));
        // The layouts take the paths this test is about.
        let text = std::fs::read_to_string(&history).unwrap();
        let fast = text
            .lines()
            .skip(1)
            .filter(|l| scan::operation(l.as_bytes()).is_some())
            .count();
        let expected = if layout == Layout::Recorder {
            ops.len() - 1
        } else {
            0
        };
        assert_eq!(fast, expected, "{layout:?}: lines read by the fast path");
        let leaders = std::fs::read_to_string(&observations)
            .unwrap()
            .lines()
            .filter(|l| scan::leader(l.as_bytes()).is_some())
            .count();
        assert_eq!(leaders > 0, layout == Layout::Recorder, "{layout:?}");
        reports.push(check_files(&history, Some(&observations), &config).unwrap());
    }
    let in_memory = check_operations(&header(), &ops, Some(obs), &config).unwrap();

    let recorder = &reports[0];
    for (name, checker, at_least) in [
        ("lost", "consistency", 1),
        ("duplicate-stored", "consistency", 1),
        ("unexpected", "consistency", 1),
        ("aborted-read", "consistency", 1),
        ("duplicate-delivered", "consistency", 1),
        ("two-leaders", "split-brain", 1),
    ] {
        assert!(
            anomaly_count(recorder, checker, name) >= at_least,
            "{name}: {:#?}",
            recorder.verdict(checker)
        );
    }
    assert_eq!(comparable(&reports[0]), comparable(&reports[1]));
    // check_operations numbers no lines: compare it on what it has.
    for (a, b) in reports[0].verdicts.iter().zip(&in_memory.verdicts) {
        assert_eq!((&a.name, a.status), (&b.name, b.status));
        let counts = |v: &faultline_experiments::checkers::Verdict| {
            v.anomalies
                .iter()
                .map(|x| (x.name.clone(), x.count))
                .collect::<Vec<_>>()
        };
        assert_eq!(counts(a), counts(b), "{}", a.name);
    }
}

#[test]
fn a_slice_is_cut_alike_from_either_layout() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let (ops, views, obs) = load();
    let span = SliceSpan {
        start_ns: 1_000 * MS,
        cut_ns: 10_000 * MS,
        end_ns: 11_000 * MS,
    };
    let mut outputs = Vec::new();
    for layout in [Layout::Recorder, Layout::Sorted] {
        let name = format!("{layout:?}");
        let history_in = write_history(dir.path(), &format!("{name}-load.jsonl"), &ops, layout);
        let observations_in = p(&format!("{name}-load-obs.jsonl"));
        write_file(&observations_in, obs.iter().map(|o| line(o, layout)));
        let views_file = p(&format!("{name}-views.jsonl"));
        write_file(&views_file, views.iter().map(|o| line(o, layout)));
        let history_out = p(&format!("{name}-history.jsonl"));
        let observations_out = p(&format!("{name}-observations.jsonl"));
        let counts = cut(
            &CutFiles {
                history_in: &history_in,
                observations_in: &observations_in,
                history_out: &history_out,
                observations_out: &observations_out,
            },
            span,
            "slice-1",
            &[views_file.as_path()],
        )
        .unwrap();
        let report = check_files(
            &history_out,
            Some(&observations_out),
            &CheckConfig::default(),
        )
        .unwrap();
        outputs.push((
            counts,
            std::fs::read_to_string(&history_out).unwrap(),
            std::fs::read_to_string(&observations_out).unwrap(),
            report,
        ));
    }
    let (recorder, sorted) = (&outputs[0], &outputs[1]);
    assert_eq!(recorder.0, sorted.0, "counts");
    assert!(recorder.0.items_outside > 0, "{:?}", recorder.0);
    assert_eq!(recorder.1, sorted.1, "the slice's history");
    assert_eq!(recorder.2, sorted.2, "the slice's observations");
    assert_eq!(comparable(&recorder.3), comparable(&sorted.3));
    // What the slice keeps is judged: t1/p/4 lost, t1/p/5 stored twice, the job delivered
    // twice; t2/p/9, never written, is not the slice's and is left out.
    let report = &recorder.3;
    assert_eq!(anomaly_count(report, "consistency", "lost"), 1);
    assert_eq!(anomaly_count(report, "consistency", "duplicate-stored"), 1);
    assert_eq!(
        anomaly_count(report, "consistency", "duplicate-delivered"),
        1
    );
    assert_eq!(anomaly_count(report, "consistency", "unexpected"), 0);
    assert!(anomaly_count(report, "split-brain", "two-leaders") >= 1);
    assert!(!recorder.1.contains("t2/p/9"), "{}", recorder.1);
}
