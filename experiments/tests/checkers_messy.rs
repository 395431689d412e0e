//! Messy input: unsorted, truncated, corrupt, foreign, over-long and large files get either a
//! verdict or a clear error, never a panic.

#[path = "checkers_support/mod.rs"]
mod support;

use std::io::{Cursor, Write};
use std::path::Path;

use faultline_experiments::checkers::{
    check_files, check_reader, read_observations, CheckConfig, CheckError, Observations, Status,
};
use faultline_experiments::history::HISTORY_FORMAT_VERSION;
use proptest::prelude::*;
use support::H;

fn write(dir: &Path, name: &str, data: &[u8]) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

fn from_bytes(data: &[u8]) -> Result<faultline_experiments::checkers::CheckReport, CheckError> {
    check_reader(
        Cursor::new(data),
        Path::new("history.jsonl"),
        Observations::none(),
        &CheckConfig::default(),
    )
}

/// Per verdict: name, status and (anomaly, count) pairs.
type Shape = Vec<(String, Status, Vec<(String, u64)>)>;

fn anomaly_counts(r: &faultline_experiments::checkers::CheckReport) -> Shape {
    r.verdicts
        .iter()
        .map(|v| {
            (
                v.name.clone(),
                v.status,
                v.anomalies
                    .iter()
                    .map(|a| (a.name.clone(), a.count))
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn unsorted_lines_give_the_same_verdicts() {
    let mut h = H::clean();
    h.drop_from_readbacks("s-t1", None, "t1/p/100");
    let (history, observations) = h.to_jsonl();
    let dir = tempfile::tempdir().unwrap();
    let obs = write(dir.path(), "obs.jsonl", observations.as_bytes());
    let sorted = check_files(
        &write(dir.path(), "a.jsonl", history.as_bytes()),
        Some(&obs),
        &h.config,
    )
    .unwrap();
    let mut lines: Vec<&str> = history.lines().collect();
    let header = lines.remove(0);
    // A deterministic shuffle.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for i in (1..lines.len()).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        lines.swap(i, (state % (i as u64 + 1)) as usize);
    }
    let shuffled = format!("{header}\n{}\n", lines.join("\n"));
    let r = check_files(
        &write(dir.path(), "b.jsonl", shuffled.as_bytes()),
        Some(&obs),
        &h.config,
    )
    .unwrap();
    assert!(r.input.out_of_order_lines > 0);
    assert_eq!(anomaly_counts(&r), anomaly_counts(&sorted));
    assert_eq!(r.score, sorted.score);
    assert_eq!(r.recovery, sorted.recovery);
}

#[test]
fn truncated_last_line_is_skipped_with_a_note() {
    let (history, _) = H::clean().to_jsonl();
    let cut = &history.as_bytes()[..history.len() - 40];
    let r = from_bytes(cut).unwrap();
    assert!(r.input.truncated_last_line);
    assert_eq!(r.input.operations, 405);
    assert!(r
        .verdicts
        .iter()
        .all(|v| v.notes.iter().any(|n| n.contains("truncated"))));
    // A cut line that still got its newline was not cut by a kill: it is an error.
    let mut cut = cut.to_vec();
    cut.push(b'\n');
    assert!(matches!(
        from_bytes(&cut),
        Err(CheckError::BadLine { line: 407, .. })
    ));
}

#[test]
fn every_cut_gives_a_verdict_or_a_clear_error() {
    let (history, _) = H::clean().to_jsonl();
    let bytes = history.as_bytes();
    let header_len = bytes.iter().position(|b| *b == b'\n').unwrap();
    let positions = (0..bytes.len())
        .step_by(bytes.len() / 300)
        .chain(0..header_len + 3);
    for cut in positions {
        match from_bytes(&bytes[..cut]) {
            Ok(r) => assert!(r.input.operations <= 406),
            Err(e) => {
                assert!(cut <= header_len + 1, "cut at {cut}: {e}");
                let msg = e.to_string();
                assert!(msg.contains("history.jsonl"), "{msg}");
            }
        }
    }
}

#[test]
fn corrupt_middle_line_is_an_error_with_its_position() {
    let (history, _) = H::clean().to_jsonl();
    let mut lines: Vec<String> = history.lines().map(String::from).collect();
    lines[10] = lines[10].replacen("\"outcome\":\"ok\"", "\"outcome\":\"maybe\"", 1);
    let err = from_bytes(lines.join("\n").as_bytes()).unwrap_err();
    match &err {
        CheckError::BadLine { line, column, .. } => {
            assert_eq!(*line, 11);
            assert!(*column > 0);
        }
        other => panic!("unexpected error {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.starts_with("history.jsonl:11:"), "{msg}");
    assert!(msg.contains("maybe"), "{msg}");
    assert_eq!(err.metric_label(), "bad_line");
}

/// The file with its header's version replaced; fails if the header does not carry this
/// build's version (so the test cannot quietly check an unchanged file).
fn with_version(file: &str, version: &str) -> String {
    let current = format!("\"version\":{HISTORY_FORMAT_VERSION}");
    assert!(file.contains(&current), "no {current} in the header");
    file.replacen(&current, &format!("\"version\":{version}"), 1)
}

#[test]
fn foreign_and_future_files_are_refused_clearly() {
    let (history, _) = H::clean().to_jsonl();
    let current = HISTORY_FORMAT_VERSION;
    let next = current + 1;
    let future = with_version(&history, &next.to_string());
    let err = from_bytes(future.as_bytes()).unwrap_err();
    assert!(
        matches!(err, CheckError::UnsupportedVersion { found, supported, .. } if found == next && supported == current),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("format version {next} is not supported")),
        "{err}"
    );
    // A newer header with fields we do not know still gets the version error.
    let newer = with_version(&history, &format!("{},\"compression\":\"zstd\"", next + 1));
    assert!(matches!(
        from_bytes(newer.as_bytes()),
        Err(CheckError::UnsupportedVersion { found, .. }) if found == next + 1
    ));
    let foreign = history.replacen("faultline-history", "jepsen-history", 1);
    let err = from_bytes(foreign.as_bytes()).unwrap_err();
    assert!(matches!(err, CheckError::WrongFormat { .. }), "{err}");
    assert!(err.to_string().contains("jepsen-history"));
    assert!(matches!(from_bytes(b""), Err(CheckError::Empty { .. })));
    assert!(matches!(
        from_bytes(b"\n\n  \n"),
        Err(CheckError::Empty { .. })
    ));
    assert!(matches!(
        from_bytes(b"\x00\xff\xfe garbage\n{}"),
        Err(CheckError::BadLine { line: 1, .. })
    ));
    assert!(matches!(
        from_bytes(b"[1,2,3]\n"),
        Err(CheckError::BadLine { line: 1, .. })
    ));
    let missing = check_files(
        Path::new("/nonexistent/history.jsonl"),
        None,
        &CheckConfig::default(),
    )
    .unwrap_err();
    assert!(matches!(missing, CheckError::Io { .. }));
    assert!(missing.to_string().contains("/nonexistent/history.jsonl"));
}

#[test]
fn blank_lines_and_crlf_are_fine() {
    let (history, _) = H::clean().to_jsonl();
    let crlf = history.replace('\n', "\r\n\r\n");
    let r = from_bytes(crlf.as_bytes()).unwrap();
    assert_eq!(r.input.operations, 406);
    assert!(!r.input.truncated_last_line);
}

#[test]
fn over_long_lines_are_refused() {
    let (history, _) = H::clean().to_jsonl();
    let config = CheckConfig {
        max_line_bytes: 4096,
        ..CheckConfig::default()
    };
    let err = check_reader(
        Cursor::new(history.as_bytes()),
        Path::new("h"),
        Observations::none(),
        &config,
    )
    .unwrap_err();
    assert!(
        matches!(err, CheckError::LineTooLong { limit: 4096, .. }),
        "{err}"
    );
}

#[test]
fn observations_files_are_checked_too() {
    let h = H::clean();
    let (history, observations) = h.to_jsonl();
    let dir = tempfile::tempdir().unwrap();
    let hp = write(dir.path(), "h.jsonl", history.as_bytes());
    // Truncated last line: fine.
    let op = write(
        dir.path(),
        "o1.jsonl",
        &observations.as_bytes()[..observations.len() - 10],
    );
    let obs = read_observations(&op, &h.config).unwrap();
    assert!(obs.present && !obs.faults.is_empty());
    // Another run.
    let other = observations.replacen("run-1", "run-2", 1);
    let op = write(dir.path(), "o2.jsonl", other.as_bytes());
    assert!(matches!(
        check_files(&hp, Some(&op), &h.config),
        Err(CheckError::RunMismatch { .. })
    ));
    // Future version.
    let future = with_version(&observations, "9");
    let op = write(dir.path(), "o3.jsonl", future.as_bytes());
    let err = check_files(&hp, Some(&op), &h.config).unwrap_err();
    assert!(
        matches!(err, CheckError::UnsupportedVersion { found: 9, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("o3.jsonl"));
    // A history passed as observations.
    let err = check_files(&hp, Some(&hp), &h.config).unwrap_err();
    assert!(matches!(err, CheckError::WrongFormat { .. }), "{err}");
    // Unknown observation type in the middle.
    let mut lines: Vec<&str> = observations.lines().collect();
    lines.insert(2, r#"{"type":"weather","at_ns":1}"#);
    let op = write(dir.path(), "o4.jsonl", lines.join("\n").as_bytes());
    let err = check_files(&hp, Some(&op), &h.config).unwrap_err();
    assert!(matches!(err, CheckError::BadLine { line: 3, .. }), "{err}");
}

#[test]
fn a_large_history_streams() {
    // 200 000 operations written by hand (fast), read back through the file path.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(
        out,
        "{}",
        serde_json::to_string(&support::header()).unwrap()
    )
    .unwrap();
    let n = 200_000u64;
    for i in 0..n {
        let t = i % 50;
        let at = i * 1_000_000;
        writeln!(
            out,
            r#"{{"tenant":"t{t}","process":"p","node":"n{}","kind":"write","pattern":"chat","value":"t{t}/p/{i}","stream":"s{t}","seq":{},"invoke_ns":{at},"complete_ns":{},"invoke_unix_ms":0,"complete_unix_ms":0,"outcome":"ok"}}"#,
            i % 3,
            i / 50 + 1,
            at + 3_000_000
        )
        .unwrap();
    }
    drop(out);
    let r = check_files(&path, None, &CheckConfig::default()).unwrap();
    assert_eq!(r.input.operations, n);
    assert_eq!(r.input.values, n);
    // No read-back: consistency cannot rule out loss.
    assert_eq!(r.verdict("consistency").unwrap().status, Status::Unknown);
    // Sends over 200 s; the bucket of the last send is partial and not plotted.
    assert_eq!(r.timeline.points.len(), 199);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Arbitrary damage to a history never panics.
    #[test]
    fn damaged_files_never_panic(pos in 0usize..20_000, junk in proptest::collection::vec(any::<u8>(), 0..64), cut in any::<bool>()) {
        let (history, _) = H::clean().to_jsonl();
        let mut bytes = history.into_bytes();
        let pos = pos.min(bytes.len());
        if cut {
            bytes.truncate(pos);
        }
        bytes.splice(pos..pos, junk);
        let _ = from_bytes(&bytes);
    }
}

#[test]
fn an_internal_failure_is_unknown_never_valid() {
    use faultline_experiments::checkers::{Checks, Op, ValueId};
    use faultline_experiments::history::{OpKind, Outcome, Pattern};
    let h = H::clean();
    let obs = Observations::from_observations(h.obs.clone()).unwrap();
    let mut checks = Checks::new(&support::header(), obs, h.config.clone()).unwrap();
    for o in &h.ops {
        checks.push_operation(o);
    }
    // An operation naming a value that was never interned: the fold panics on it.
    let s = checks.symbols_mut();
    let (tenant, node, stream) = (
        s.tenants.intern("t1"),
        s.nodes.intern("n1"),
        s.streams.intern("s-t1"),
    );
    checks.push(&Op {
        tenant,
        process: 0,
        node,
        stream,
        kind: OpKind::Write,
        pattern: Pattern::Chat,
        outcome: Outcome::Ok,
        attempt: 1,
        value: Some(ValueId(u32::MAX - 7)),
        seq: Some(1),
        invoke_ns: 0,
        complete_ns: 1,
        read: None,
        served_tenant: None,
        node_uncertain: false,
        client_zone: None,
        line: 42,
    });
    let r = checks.finish();
    assert_eq!(r.status, Status::Unknown);
    assert_eq!(r.exit_code(), 2);
    for v in &r.verdicts {
        assert_eq!(v.status, Status::Unknown, "{v:?}");
        assert!(v.notes[0].contains("line 42"), "{:?}", v.notes);
    }
}
