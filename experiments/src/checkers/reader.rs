//! Streaming readers for history and observations files.
//!
//! Lines are read one at a time into a reused buffer and parsed without copying strings, so a
//! history of any length is read in constant memory (apart from what the checkers keep). The
//! readers accept lines in any order, skip blank lines, tolerate a truncated last line (a run
//! that was killed mid-write: the file ends without a newline in the middle of a record) and
//! reject anything else that is not a known format, a complete last line included, with an
//! error that names the file, line and column.

use std::borrow::Cow;
use std::io::{self, BufRead};
use std::path::Path;

use serde::Deserialize;

use crate::history::scan::{self, OpLine};
use crate::history::{
    HistoryHeader, Observation, OpKind, Outcome, Pattern, HISTORY_FORMAT, HISTORY_FORMAT_VERSION,
    OBSERVATIONS_FORMAT, OLDEST_HISTORY_FORMAT_VERSION,
};

use super::facts::{Item, Op};
use super::intern::Symbols;
use super::observations::Observations;
use super::CheckError;

/// Reads lines into a reused buffer, with a length limit.
pub(crate) struct Lines<R> {
    inner: R,
    buf: Vec<u8>,
    line: u64,
    max: usize,
}

/// One line read by [`Lines`].
#[derive(Debug)]
pub(crate) struct Line {
    /// 1-based line number.
    pub number: u64,
    /// Whether a newline ended it (false only for the last line of a file).
    pub terminated: bool,
}

impl<R: BufRead> Lines<R> {
    pub(crate) fn new(inner: R, max: usize) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            line: 0,
            max,
        }
    }

    pub(crate) fn buf(&self) -> &[u8] {
        &self.buf
    }

    /// The next non-blank line, `Ok(None)` at the end. `Err(Ok(line))` when the line is longer
    /// than the limit.
    pub(crate) fn next_line(&mut self) -> io::Result<Result<Option<Line>, u64>> {
        loop {
            self.buf.clear();
            let mut terminated = false;
            let mut too_long = false;
            loop {
                let avail = match self.inner.fill_buf() {
                    Ok(b) => b,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                if avail.is_empty() {
                    break;
                }
                let (take, consume, ends) = match memchr::memchr(b'\n', avail) {
                    Some(i) => (i, i + 1, true),
                    None => (avail.len(), avail.len(), false),
                };
                if self.buf.len() + take > self.max {
                    too_long = true;
                } else {
                    self.buf.extend_from_slice(&avail[..take]);
                }
                self.inner.consume(consume);
                if ends {
                    terminated = true;
                    break;
                }
                if too_long {
                    break;
                }
            }
            if too_long {
                return Ok(Err(self.line + 1));
            }
            if self.buf.is_empty() && !terminated {
                return Ok(Ok(None));
            }
            self.line += 1;
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Ok(Some(Line {
                number: self.line,
                terminated,
            })));
        }
    }
}

/// One read item, borrowed from the line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem<'a> {
    seq: u64,
    #[serde(borrow)]
    value: Cow<'a, str>,
}

fn first_attempt() -> u32 {
    1
}

/// One operation, borrowed from the line. Mirrors [`crate::history::Operation`] field for field
/// (a unit test checks they agree).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOp<'a> {
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    #[serde(borrow)]
    process: Cow<'a, str>,
    #[serde(borrow)]
    node: Cow<'a, str>,
    #[serde(default)]
    reconnected: bool,
    #[serde(borrow, default)]
    #[allow(dead_code)]
    // Part of the format; the checkers only need to know the node is uncertain.
    sent_node: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    client_zone: Option<Cow<'a, str>>,
    kind: OpKind,
    pattern: Pattern,
    #[serde(borrow, default)]
    value: Option<Cow<'a, str>>,
    #[serde(default = "first_attempt")]
    attempt: u32,
    #[serde(borrow)]
    stream: Cow<'a, str>,
    #[serde(default)]
    seq: Option<u64>,
    invoke_ns: u64,
    complete_ns: u64,
    #[allow(dead_code)] // Part of the format; the checkers use the monotonic times.
    invoke_unix_ms: u64,
    #[allow(dead_code)] // As above.
    complete_unix_ms: u64,
    outcome: Outcome,
    #[serde(borrow, default)]
    #[allow(dead_code)] // Kept for the format's sake; evidence quotes values, not error texts.
    error: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    read: Option<Vec<RawItem<'a>>>,
    #[serde(borrow, default)]
    served_tenant: Option<Cow<'a, str>>,
}

/// Interns a parsed line into an [`Op`] whose read items live in `scratch`.
pub(crate) fn intern_op<'s>(
    symbols: &mut Symbols,
    raw: &RawOp<'_>,
    line: u64,
    scratch: &'s mut Vec<Item>,
) -> Op<'s> {
    scratch.clear();
    if let Some(items) = &raw.read {
        scratch.extend(items.iter().map(|i| Item {
            seq: i.seq,
            value: symbols.intern_value(&i.value),
        }));
    }
    let scratch: &'s Vec<Item> = scratch;
    Op {
        tenant: symbols.tenants.intern(&raw.tenant),
        process: symbols.processes.intern(&raw.process),
        node: symbols.nodes.intern(&raw.node),
        stream: symbols.streams.intern(&raw.stream),
        kind: raw.kind,
        pattern: raw.pattern,
        outcome: raw.outcome,
        attempt: raw.attempt,
        value: raw.value.as_deref().map(|v| symbols.intern_value(v)),
        seq: raw.seq,
        invoke_ns: raw.invoke_ns,
        complete_ns: raw.complete_ns,
        read: raw.read.as_ref().map(|_| &scratch[..]),
        served_tenant: raw
            .served_tenant
            .as_deref()
            .map(|t| symbols.tenants.intern(t)),
        node_uncertain: raw.reconnected,
        client_zone: raw.client_zone.as_deref().map(|z| symbols.zones.intern(z)),
        line,
    }
}

/// Interns a line [`scan::operation`] read, as [`intern_op`] interns one serde_json read.
pub(crate) fn intern_line<'s>(
    symbols: &mut Symbols,
    l: &OpLine<'_>,
    line: u64,
    scratch: &'s mut Vec<Item>,
) -> Op<'s> {
    scratch.clear();
    if let Some(items) = &l.read {
        scratch.extend(items.iter().map(|i| Item {
            seq: i.seq,
            value: symbols.intern_value(i.value),
        }));
    }
    let scratch: &'s Vec<Item> = scratch;
    let h = &l.head;
    Op {
        tenant: symbols.tenants.intern(h.tenant),
        process: symbols.processes.intern(h.process),
        node: symbols.nodes.intern(h.node),
        stream: symbols.streams.intern(h.stream),
        kind: h.kind,
        pattern: h.pattern,
        outcome: l.outcome,
        attempt: h.attempt,
        value: h.value.map(|v| symbols.intern_value(v)),
        seq: h.seq,
        invoke_ns: h.invoke_ns,
        complete_ns: h.complete_ns,
        read: l.read.as_ref().map(|_| &scratch[..]),
        served_tenant: l.served_tenant.map(|t| symbols.tenants.intern(t)),
        node_uncertain: h.reconnected,
        client_zone: h.client_zone.map(|z| symbols.zones.intern(z)),
        line,
    }
}

/// One operation line, read by [`scan::operation`] when it is in the recorder's layout, else
/// by serde_json.
pub(crate) enum OpText<'a> {
    /// The recorder's layout.
    Fast(OpLine<'a>),
    /// Any other.
    Serde(RawOp<'a>),
}

/// The first line's format and version, read leniently so a newer header still gets a clear
/// "unsupported version" error rather than a parse error.
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "type")]
    kind: Option<String>,
    format: Option<String>,
    version: Option<u32>,
}

/// serde_json's message without the position it appends (" at line 1 column 7"): that line is
/// the parsed slice's, not the file's, and the position is reported on its own.
fn serde_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    match text.strip_suffix(&suffix) {
        Some(message) => message.to_string(),
        None => text,
    }
}

/// A parse error of line `line`, whose text is `text`.
fn bad_line(path: &Path, line: u64, text: &[u8], e: &serde_json::Error, hint: &str) -> CheckError {
    // serde_json knows no position (line 0) for errors found once the whole object was read,
    // such as a missing field inside an observation: those concern the record, so point at its
    // first character.
    let column = if e.line() == 0 {
        text.iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(0) as u64
            + 1
    } else {
        (e.column() as u64).max(1)
    };
    CheckError::BadLine {
        path: path.to_path_buf(),
        line,
        column,
        message: format!("{}{hint}", serde_message(e)),
    }
}

/// Whether a cut-off observation line may have been a fault window. The recorder writes the
/// `type` tag first, so a line whose tag survived the cut and names another type was not one.
fn may_hold_fault(partial: &[u8]) -> bool {
    let tag = partial
        .trim_ascii_start()
        .strip_prefix(b"{")
        .map(<[u8]>::trim_ascii_start)
        .and_then(|r| r.strip_prefix(b"\"type\""))
        .map(<[u8]>::trim_ascii_start)
        .and_then(|r| r.strip_prefix(b":"))
        .map(<[u8]>::trim_ascii_start)
        .and_then(|r| r.strip_prefix(b"\""));
    match tag {
        None => true,
        Some(rest) => match rest.iter().position(|b| *b == b'"') {
            Some(end) => &rest[..end] == b"fault",
            None => b"fault".starts_with(rest),
        },
    }
}

fn io_err(path: &Path, source: io::Error) -> CheckError {
    CheckError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn next<R: BufRead>(
    lines: &mut Lines<R>,
    path: &Path,
    max: usize,
) -> Result<Option<Line>, CheckError> {
    match lines.next_line().map_err(|e| io_err(path, e))? {
        Ok(l) => Ok(l),
        Err(line) => Err(CheckError::LineTooLong {
            path: path.to_path_buf(),
            line,
            limit: max,
        }),
    }
}

/// Reads and checks the header line of a history.
pub(crate) fn read_history_header<R: BufRead>(
    lines: &mut Lines<R>,
    path: &Path,
    max: usize,
) -> Result<HistoryHeader, CheckError> {
    let Some(line) = next(lines, path, max)? else {
        return Err(CheckError::Empty {
            path: path.to_path_buf(),
            expected: HISTORY_FORMAT,
        });
    };
    let probe: Probe = serde_json::from_slice(lines.buf()).map_err(|e| {
        bad_line(
            path,
            line.number,
            lines.buf(),
            &e,
            "; the first line must be the history header",
        )
    })?;
    let format = probe.format.unwrap_or_default();
    if format != HISTORY_FORMAT {
        return Err(CheckError::WrongFormat {
            path: path.to_path_buf(),
            expected: HISTORY_FORMAT,
            found: format,
        });
    }
    let version = probe.version.unwrap_or(0);
    if !(OLDEST_HISTORY_FORMAT_VERSION..=HISTORY_FORMAT_VERSION).contains(&version) {
        return Err(CheckError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: HISTORY_FORMAT_VERSION,
        });
    }
    serde_json::from_slice(lines.buf())
        .map_err(|e| bad_line(path, line.number, lines.buf(), &e, " (history header)"))
}

/// What reading the body of a file found besides the records.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct BodyStats {
    /// The last line was cut off and skipped.
    pub truncated_last_line: bool,
    /// Observations only: the cut-off line may have been a fault window.
    pub truncated_may_hold_fault: bool,
}

/// Reads every operation line after the header and hands each to `f`. A line that does not
/// parse is an error, except a last line that the file ends in the middle of (no newline),
/// which is skipped as truncated.
pub(crate) fn read_history_body<R: BufRead>(
    lines: &mut Lines<R>,
    path: &Path,
    max: usize,
    mut f: impl FnMut(&OpText<'_>, u64),
) -> Result<BodyStats, CheckError> {
    let mut stats = BodyStats::default();
    while let Some(line) = next(lines, path, max)? {
        if let Some(fast) = scan::operation(lines.buf()) {
            f(&OpText::Fast(fast), line.number);
            continue;
        }
        let parsed = serde_json::from_slice::<RawOp<'_>>(lines.buf());
        match parsed {
            Ok(raw) => f(&OpText::Serde(raw), line.number),
            Err(e) => {
                if line.terminated {
                    return Err(bad_line(path, line.number, lines.buf(), &e, ""));
                }
                stats.truncated_last_line = true;
                break;
            }
        }
    }
    Ok(stats)
}

/// Reads an observations file (header first, then one observation per line) into `out`.
/// Leader samples in the recorder's layout are read by [`scan::leader`] straight into
/// `out.leaders`; other lines by serde_json. A line that does not parse is an error at once;
/// an observation [`Observations::add`] refuses (a second header of another format) is an
/// error once every line parsed, so errors come in the order they did when the whole file was
/// parsed first.
pub(crate) fn read_observations<R: BufRead>(
    reader: R,
    path: &Path,
    max: usize,
    out: &mut Observations,
) -> Result<BodyStats, CheckError> {
    let mut lines = Lines::new(reader, max);
    let Some(line) = next(&mut lines, path, max)? else {
        return Err(CheckError::Empty {
            path: path.to_path_buf(),
            expected: OBSERVATIONS_FORMAT,
        });
    };
    let probe: Probe = serde_json::from_slice(lines.buf()).map_err(|e| {
        bad_line(
            path,
            line.number,
            lines.buf(),
            &e,
            "; the first line must be the observations header",
        )
    })?;
    let format = probe.format.unwrap_or_default();
    if probe.kind.as_deref() != Some("header") || format != OBSERVATIONS_FORMAT {
        return Err(CheckError::WrongFormat {
            path: path.to_path_buf(),
            expected: OBSERVATIONS_FORMAT,
            found: format,
        });
    }
    let version = probe.version.unwrap_or(0);
    if !(OLDEST_HISTORY_FORMAT_VERSION..=HISTORY_FORMAT_VERSION).contains(&version) {
        return Err(CheckError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: HISTORY_FORMAT_VERSION,
        });
    }
    let header = serde_json::from_slice::<Observation>(lines.buf())
        .map_err(|e| bad_line(path, line.number, lines.buf(), &e, " (observations header)"))?;
    let mut refused = out.add(header).err();
    let mut stats = BodyStats::default();
    while let Some(line) = next(&mut lines, path, max)? {
        if let Some(l) = scan::leader(lines.buf()) {
            out.leaders.push(l.at_ns, l.observer, l.stream, l.leader);
            continue;
        }
        match serde_json::from_slice::<Observation>(lines.buf()) {
            Ok(o) => {
                if let Err(e) = out.add(o) {
                    refused.get_or_insert(e);
                }
            }
            Err(e) if line.terminated => {
                let kind = serde_json::from_slice::<Probe>(lines.buf())
                    .ok()
                    .and_then(|p| p.kind)
                    .map(|k| format!(" (in a {k:?} observation)"))
                    .unwrap_or_default();
                return Err(bad_line(path, line.number, lines.buf(), &e, &kind));
            }
            Err(_) => {
                stats.truncated_last_line = true;
                stats.truncated_may_hold_fault = may_hold_fault(lines.buf());
                break;
            }
        }
    }
    match refused {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Operation, ReadItem};

    #[test]
    fn raw_op_mirrors_operation() {
        let op = Operation {
            tenant: "t1".into(),
            process: "p1".into(),
            node: "n1".into(),
            reconnected: true,
            sent_node: Some("n0".into()),
            client_zone: None,
            kind: OpKind::Read,
            pattern: Pattern::ReadBack,
            value: Some("t1/p1/3".into()),
            attempt: 2,
            stream: "s\"1".into(),
            seq: Some(4),
            invoke_ns: 5,
            complete_ns: 6,
            invoke_unix_ms: 7,
            complete_unix_ms: 8,
            outcome: Outcome::Info,
            error: Some("e".into()),
            read: Some(vec![ReadItem {
                seq: 9,
                value: "t1/p1/9".into(),
            }]),
            served_tenant: Some("t2".into()),
        };
        let line = serde_json::to_string(&op).unwrap();
        let raw: RawOp<'_> = serde_json::from_str(&line).unwrap();
        let mut symbols = Symbols::new();
        let mut scratch = Vec::new();
        let o = intern_op(&mut symbols, &raw, 1, &mut scratch);
        let s = &symbols;
        assert_eq!(s.tenant(o.tenant), "t1");
        assert_eq!(s.stream(o.stream), "s\"1");
        assert_eq!(o.attempt, 2);
        assert_eq!(s.value_name(o.value.unwrap()), "t1/p1/3");
        assert_eq!(o.read.unwrap().len(), 1);
        assert_eq!(s.value_name(o.read.unwrap()[0].value), "t1/p1/9");
        assert_eq!(s.tenant(o.served_tenant.unwrap()), "t2");
        assert!(o.node_uncertain);
        assert_eq!((o.invoke_ns, o.complete_ns, o.seq), (5, 6, Some(4)));
        // Minimal line: defaults agree with Operation's.
        let min = r#"{"tenant":"t","process":"p","node":"n","kind":"write","pattern":"chat","stream":"s","invoke_ns":1,"complete_ns":2,"invoke_unix_ms":3,"complete_unix_ms":4,"outcome":"ok"}"#;
        let op: Operation = serde_json::from_str(min).unwrap();
        let raw: RawOp<'_> = serde_json::from_str(min).unwrap();
        assert_eq!(op.attempt, raw.attempt);
        assert_eq!(op.reconnected, raw.reconnected);
        assert!(
            serde_json::from_str::<RawOp<'_>>(&min.replace("\"ok\"}", "\"ok\",\"x\":1}")).is_err()
        );
    }

    #[test]
    fn a_cut_observation_may_hold_a_fault_unless_its_type_says_otherwise() {
        for (partial, fault) in [
            (&br#"{"type":"fault","fault_id":"f"#[..], true),
            (br#"{"type":"fa"#, true),
            (br#"{"type":""#, true),
            (br#"{"ty"#, true),
            (br"{", true),
            (b"", true),
            (br#"{"type":"leader","at_ns":12"#, false),
            (br#" { "type" : "stream_info", "at"#, false),
            (br#"{"type":"lea"#, false),
            (br#"{"at_ns":1,"type":"leader""#, true),
        ] {
            assert_eq!(
                may_hold_fault(partial),
                fault,
                "{}",
                String::from_utf8_lossy(partial)
            );
        }
    }

    #[test]
    fn parse_errors_name_the_file_position_once() {
        let path = Path::new("o.jsonl");
        // A field error inside an observation: serde_json gives no position.
        let text = br#"  {"type":"leader","observer":"n1","stream":"s","leader":null}"#;
        let e = serde_json::from_slice::<Observation>(text).unwrap_err();
        assert_eq!(e.line(), 0, "serde_json changed: {e}");
        let err = bad_line(path, 7, text, &e, "");
        let msg = err.to_string();
        assert!(
            msg.starts_with("o.jsonl:7:3: missing field `at_ns`"),
            "{msg}"
        );
        // A syntax error: serde_json's own "line 1 column N" is not repeated.
        let text = br#"{"tenant":"t","process":"p",,}"#;
        let Err(e) = serde_json::from_slice::<RawOp<'_>>(text) else {
            panic!("parsed");
        };
        let msg = bad_line(path, 9, text, &e, "").to_string();
        assert!(msg.starts_with("o.jsonl:9:29: "), "{msg}");
        assert!(!msg.contains("line 1"), "{msg}");
    }

    #[test]
    fn lines_limit_and_blank_lines() {
        let data = b"a\r\n\n  \nbbbb\ncc";
        let mut l = Lines::new(&data[..], 3);
        let first = l.next_line().unwrap().unwrap().unwrap();
        assert_eq!(
            (first.number, first.terminated, l.buf()),
            (1, true, &b"a"[..])
        );
        assert_eq!(l.next_line().unwrap().unwrap_err(), 4);
        let mut l = Lines::new(&data[..], 100);
        l.next_line().unwrap().unwrap().unwrap();
        let second = l.next_line().unwrap().unwrap().unwrap();
        assert_eq!((second.number, l.buf()), (4, &b"bbbb"[..]));
        let last = l.next_line().unwrap().unwrap().unwrap();
        assert_eq!(
            (last.number, last.terminated, l.buf()),
            (5, false, &b"cc"[..])
        );
        assert!(l.next_line().unwrap().unwrap().is_none());
    }
}
