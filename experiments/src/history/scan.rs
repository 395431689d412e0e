//! A fast reader for the lines the recorder writes, and a rewriter for the slice's cut.
//!
//! The recorder writes every line with serde_json, so each line has one layout: the fields in
//! the order they are declared in [`Operation`](super::Operation) (or
//! [`Observation::Leader`](super::Observation::Leader)), optional fields left out when empty,
//! no whitespace, numbers in plain decimal and strings escaped only where JSON requires it.
//! This module reads exactly that layout and nothing else, borrowing every string from the line
//! and allocating nothing, several times faster than serde_json (BENCHMARKS.md, "Judging a
//! slice").
//!
//! A line in any other layout JSON allows (another key order, whitespace, an escaped character,
//! `null` or `false` for a field the recorder leaves out, an unknown field, a trailing `\r`) is
//! declined with `None`, and the caller parses it with serde_json. What the public format
//! accepts, what it rejects and the errors it gives therefore stay serde_json's: this is only a
//! shortcut for the lines serde_json itself wrote. Tests check that every line serde_json writes
//! is read here to the same fields, and that a line read here is one serde_json accepts with
//! those fields.

use std::io::{self, Write};
use std::ops::Range;

use super::{OpKind, Outcome, Pattern};

/// A position in one line. Strings are found as byte ranges; the caller turns them into
/// `&str` once the region holding them is checked to be UTF-8 (one check per region, not one
/// per string).
struct Cursor<'a> {
    line: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(line: &'a [u8]) -> Self {
        Self { line, at: 0 }
    }

    /// Steps over `lit` if the line continues with it. The length is a constant, so the
    /// comparison compiles to a few loads.
    #[inline]
    fn eat<const N: usize>(&mut self, lit: &[u8; N]) -> bool {
        match self.line.get(self.at..self.at + N) {
            Some(next) if next == lit => {
                self.at += N;
                true
            }
            _ => false,
        }
    }

    #[inline]
    fn expect<const N: usize>(&mut self, lit: &[u8; N]) -> Option<()> {
        self.eat(lit).then_some(())
    }

    /// An unsigned integer as serde_json writes it: `0`, or digits without a leading zero,
    /// that fits a `u64`. Returns it with the range of its digits.
    #[inline]
    fn number(&mut self) -> Option<(u64, Range<usize>)> {
        let start = self.at;
        let mut n: u64 = 0;
        while let Some(&b) = self.line.get(self.at) {
            if !b.is_ascii_digit() {
                break;
            }
            n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
            self.at += 1;
        }
        let digits = self.at - start;
        if digits == 0 || (digits > 1 && self.line[start] == b'0') {
            return None;
        }
        Some((n, start..self.at))
    }

    /// A string without escapes or control characters: the range of its bytes between the
    /// quotes.
    #[inline]
    fn string(&mut self) -> Option<Range<usize>> {
        if self.line.get(self.at) != Some(&b'"') {
            return None;
        }
        let start = self.at + 1;
        let len = self.line[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if self.line[start + len] != b'"' {
            return None;
        }
        self.at = start + len + 1;
        Some(start..start + len)
    }

    /// `,"key":` followed by a string, when the line continues with that key; an error when the
    /// key is there and no string follows.
    #[inline]
    fn optional_string<const N: usize>(
        &mut self,
        key: &[u8; N],
    ) -> Result<Option<Range<usize>>, Declined> {
        if self.eat(key) {
            self.string().map(Some).ok_or(Declined)
        } else {
            Ok(None)
        }
    }

    fn at_end(&self) -> bool {
        self.at == self.line.len()
    }
}

/// The line is not in the recorder's layout.
struct Declined;

/// A region of a line checked to be UTF-8, and the strings found in it.
struct Text<'a>(&'a str);

impl<'a> Text<'a> {
    /// The region `range` of `line`, if it is UTF-8.
    fn of(line: &'a [u8], range: Range<usize>) -> Option<Self> {
        std::str::from_utf8(line.get(range)?).ok().map(Self)
    }

    /// A string of the region, by its range in the line; the region starts at `offset`. The
    /// ranges end at ASCII quotes, so they fall on character boundaries.
    #[inline]
    fn get(&self, offset: usize, range: &Range<usize>) -> Option<&'a str> {
        self.0.get(range.start - offset..range.end - offset)
    }
}

fn kind(s: &[u8]) -> Option<OpKind> {
    Some(match s {
        b"write" => OpKind::Write,
        b"read" => OpKind::Read,
        b"deliver" => OpKind::Deliver,
        b"connect" => OpKind::Connect,
        _ => return None,
    })
}

fn pattern(s: &[u8]) -> Option<Pattern> {
    Some(match s {
        b"chat" => Pattern::Chat,
        b"batch" => Pattern::Batch,
        b"job" => Pattern::Job,
        b"idle" => Pattern::Idle,
        b"read_back" => Pattern::ReadBack,
        b"read_back_replica" => Pattern::ReadBackReplica,
        b"initial_state" => Pattern::InitialState,
        _ => return None,
    })
}

fn outcome(s: &[u8]) -> Option<Outcome> {
    Some(match s {
        b"ok" => Outcome::Ok,
        b"fail" => Outcome::Fail,
        b"info" => Outcome::Info,
        _ => return None,
    })
}

/// The fields of an operation line up to its completion time: all that decides whether a slice
/// keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpHead<'a> {
    /// Tenant id.
    pub tenant: &'a str,
    /// Client process.
    pub process: &'a str,
    /// Node that answered.
    pub node: &'a str,
    /// The client reconnected meanwhile.
    pub reconnected: bool,
    /// The node it was sent through, when it reconnected.
    pub sent_node: Option<&'a str>,
    /// The client's zone.
    pub client_zone: Option<&'a str>,
    /// What it did.
    pub kind: OpKind,
    /// The pattern that issued it.
    pub pattern: Pattern,
    /// Written or delivered value.
    pub value: Option<&'a str>,
    /// Attempt number.
    pub attempt: u32,
    /// Stream or key.
    pub stream: &'a str,
    /// Acknowledged or delivered sequence.
    pub seq: Option<u64>,
    /// Intended send time, ns.
    pub invoke_ns: u64,
    /// Completion time, ns.
    pub complete_ns: u64,
    invoke_digits: Range<usize>,
    complete_digits: Range<usize>,
    end: usize,
}

/// One operation line, every field borrowed from the line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpLine<'a> {
    /// The fields up to the completion time.
    pub head: OpHead<'a>,
    /// Intended send time, Unix ms.
    pub invoke_unix_ms: u64,
    /// Completion time, Unix ms.
    pub complete_unix_ms: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// Error text.
    pub error: Option<&'a str>,
    /// What a read returned.
    pub read: Option<Items<'a>>,
    /// The tenant the server says it served.
    pub served_tenant: Option<&'a str>,
}

/// The read items of an operation line, already checked; iterating reads them off the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Items<'a> {
    line: &'a [u8],
    /// The checked region holding them, and where it starts in the line.
    text: &'a str,
    offset: usize,
    /// Between the brackets.
    inner: (usize, usize),
}

/// One read item of a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemRef<'a> {
    /// Stream sequence.
    pub seq: u64,
    /// The value.
    pub value: &'a str,
    /// The item's bytes in the line, braces included.
    pub range: Range<usize>,
}

impl<'a> Items<'a> {
    /// Whether the read returned nothing.
    pub fn is_empty(&self) -> bool {
        self.inner.0 == self.inner.1
    }

    /// The items, in line order.
    pub fn iter(&self) -> ItemIter<'a> {
        ItemIter {
            cursor: Cursor {
                line: &self.line[..self.inner.1],
                at: self.inner.0,
            },
            text: Text(self.text),
            offset: self.offset,
        }
    }
}

impl<'a> IntoIterator for &Items<'a> {
    type Item = ItemRef<'a>;
    type IntoIter = ItemIter<'a>;

    fn into_iter(self) -> ItemIter<'a> {
        self.iter()
    }
}

/// Iterator over [`Items`].
pub struct ItemIter<'a> {
    cursor: Cursor<'a>,
    text: Text<'a>,
    offset: usize,
}

impl<'a> Iterator for ItemIter<'a> {
    type Item = ItemRef<'a>;

    #[inline]
    fn next(&mut self) -> Option<ItemRef<'a>> {
        let c = &mut self.cursor;
        if c.at_end() {
            return None;
        }
        c.eat(b",");
        // Checked when the line was scanned: neither can fail here.
        let (seq, value, range) = item(c)?;
        Some(ItemRef {
            seq,
            value: self.text.get(self.offset, &value)?,
            range,
        })
    }
}

/// `{"seq":N,"value":"S"}`: the sequence, the value's range and the item's range.
#[inline]
fn item(c: &mut Cursor<'_>) -> Option<(u64, Range<usize>, Range<usize>)> {
    let start = c.at;
    c.expect(b"{\"seq\":")?;
    let (seq, _) = c.number()?;
    c.expect(b",\"value\":")?;
    let value = c.string()?;
    c.expect(b"}")?;
    Some((seq, value, start..c.at))
}

/// Reads an operation line up to its completion time; `None` when the line is not in the
/// recorder's layout (then parse it with serde_json). The rest of the line is not looked at:
/// use [`operation`] for a line whose every field counts.
#[inline]
pub fn operation_head(line: &[u8]) -> Option<OpHead<'_>> {
    let mut c = Cursor::new(line);
    c.expect(b"{\"tenant\":")?;
    let tenant = c.string()?;
    c.expect(b",\"process\":")?;
    let process = c.string()?;
    c.expect(b",\"node\":")?;
    let node = c.string()?;
    let reconnected = c.eat(b",\"reconnected\":true");
    let sent_node = c.optional_string(b",\"sent_node\":").ok()?;
    let client_zone = c.optional_string(b",\"client_zone\":").ok()?;
    c.expect(b",\"kind\":")?;
    let kind = kind(&line[c.string()?])?;
    c.expect(b",\"pattern\":")?;
    let pattern = pattern(&line[c.string()?])?;
    let value = c.optional_string(b",\"value\":").ok()?;
    c.expect(b",\"attempt\":")?;
    let attempt = u32::try_from(c.number()?.0).ok()?;
    c.expect(b",\"stream\":")?;
    let stream = c.string()?;
    let seq = if c.eat(b",\"seq\":") {
        Some(c.number()?.0)
    } else {
        None
    };
    c.expect(b",\"invoke_ns\":")?;
    let (invoke_ns, invoke_digits) = c.number()?;
    c.expect(b",\"complete_ns\":")?;
    let (complete_ns, complete_digits) = c.number()?;
    let text = Text::of(line, 0..c.at)?;
    let get = |r: &Range<usize>| text.get(0, r);
    let optional = |r: &Option<Range<usize>>| match r {
        Some(r) => get(r).map(Some),
        None => Some(None),
    };
    Some(OpHead {
        tenant: get(&tenant)?,
        process: get(&process)?,
        node: get(&node)?,
        reconnected,
        sent_node: optional(&sent_node)?,
        client_zone: optional(&client_zone)?,
        kind,
        pattern,
        value: optional(&value)?,
        attempt,
        stream: get(&stream)?,
        seq,
        invoke_ns,
        complete_ns,
        invoke_digits,
        complete_digits,
        end: c.at,
    })
}

/// Reads a whole operation line; `None` when it is not in the recorder's layout (then parse it
/// with serde_json).
#[inline]
pub fn operation(line: &[u8]) -> Option<OpLine<'_>> {
    let head = operation_head(line)?;
    operation_tail(line, head)
}

/// Reads the rest of a line whose head [`operation_head`] read.
pub fn operation_tail<'a>(line: &'a [u8], head: OpHead<'a>) -> Option<OpLine<'a>> {
    let offset = head.end;
    let mut c = Cursor { line, at: offset };
    c.expect(b",\"invoke_unix_ms\":")?;
    let (invoke_unix_ms, _) = c.number()?;
    c.expect(b",\"complete_unix_ms\":")?;
    let (complete_unix_ms, _) = c.number()?;
    c.expect(b",\"outcome\":")?;
    let outcome = outcome(&line[c.string()?])?;
    let error = c.optional_string(b",\"error\":").ok()?;
    let read = if c.eat(b",\"read\":[") {
        let start = c.at;
        if !c.eat(b"]") {
            loop {
                item(&mut c)?;
                if c.eat(b"]") {
                    break;
                }
                c.expect(b",")?;
            }
        }
        Some((start, c.at - 1))
    } else {
        None
    };
    let served_tenant = c.optional_string(b",\"served_tenant\":").ok()?;
    c.expect(b"}")?;
    if !c.at_end() {
        return None;
    }
    let text = Text::of(line, offset..line.len())?;
    let optional = |r: &Option<Range<usize>>| match r {
        Some(r) => text.get(offset, r).map(Some),
        None => Some(None),
    };
    Some(OpLine {
        head,
        invoke_unix_ms,
        complete_unix_ms,
        outcome,
        error: optional(&error)?,
        read: read.map(|inner| Items {
            line,
            text: text.0,
            offset,
            inner,
        }),
        served_tenant: optional(&served_tenant)?,
    })
}

/// Writes `line` (which [`operation`] read as `op`) as serde_json would write the same operation
/// with its times moved `shift_ns` earlier (saturating at 0) and only the read items `keep`
/// accepts. Returns how many items it left out. The line is not parsed again: the times and
/// the items are spliced.
///
/// # Errors
/// `out` cannot be written.
pub fn write_rebased(
    out: &mut impl Write,
    line: &[u8],
    op: &OpLine<'_>,
    shift_ns: u64,
    mut keep: impl FnMut(&str) -> bool,
) -> io::Result<u64> {
    let h = &op.head;
    out.write_all(&line[..h.invoke_digits.start])?;
    write!(out, "{}", h.invoke_ns.saturating_sub(shift_ns))?;
    out.write_all(&line[h.invoke_digits.end..h.complete_digits.start])?;
    write!(out, "{}", h.complete_ns.saturating_sub(shift_ns))?;
    let Some(items) = &op.read else {
        out.write_all(&line[h.complete_digits.end..])?;
        return Ok(0);
    };
    out.write_all(&line[h.complete_digits.end..items.inner.0])?;
    let mut left_out = 0;
    let mut first = true;
    for item in items {
        if keep(item.value) {
            if !first {
                out.write_all(b",")?;
            }
            out.write_all(&line[item.range])?;
            first = false;
        } else {
            left_out += 1;
        }
    }
    out.write_all(&line[items.inner.1..])?;
    Ok(left_out)
}

/// A leader sample line, borrowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderLine<'a> {
    /// Sample time, ns.
    pub at_ns: u64,
    /// Node that answered.
    pub observer: &'a str,
    /// Stream, or `$meta`.
    pub stream: &'a str,
    /// The leader it named.
    pub leader: Option<&'a str>,
    at_digits: Range<usize>,
}

/// Reads a leader sample line of the observations; `None` for any other line, or one not in
/// the recorder's layout (then parse it with serde_json).
#[inline]
pub fn leader(line: &[u8]) -> Option<LeaderLine<'_>> {
    let mut c = Cursor::new(line);
    c.expect(b"{\"type\":\"leader\",\"at_ns\":")?;
    let (at_ns, at_digits) = c.number()?;
    c.expect(b",\"observer\":")?;
    let observer = c.string()?;
    c.expect(b",\"stream\":")?;
    let stream = c.string()?;
    c.expect(b",\"leader\":")?;
    let leader = if c.eat(b"null") {
        None
    } else {
        Some(c.string()?)
    };
    c.expect(b"}")?;
    if !c.at_end() {
        return None;
    }
    let text = Text::of(line, 0..line.len())?;
    Some(LeaderLine {
        at_ns,
        observer: text.get(0, &observer)?,
        stream: text.get(0, &stream)?,
        leader: match &leader {
            Some(r) => Some(text.get(0, r)?),
            None => None,
        },
        at_digits,
    })
}

/// Writes a leader sample line (which [`leader`] read as `sample`) with its time moved
/// `shift_ns` earlier, as serde_json would write it.
///
/// # Errors
/// `out` cannot be written.
pub fn write_leader_rebased(
    out: &mut impl Write,
    line: &[u8],
    sample: &LeaderLine<'_>,
    shift_ns: u64,
) -> io::Result<()> {
    out.write_all(&line[..sample.at_digits.start])?;
    write!(out, "{}", sample.at_ns.saturating_sub(shift_ns))?;
    out.write_all(&line[sample.at_digits.end..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{Observation, Operation, ReadItem};
    use proptest::prelude::*;

    /// Strings as a history holds them, and some it may hold: escapes, quotes, control and
    /// non-ASCII characters.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-z0-9/_$-]{0,12}",
            1 => any::<String>(),
            1 => Just("a\"b\\c\n\u{1}é😀\u{7f}".to_owned()),
        ]
    }

    fn options<T: std::fmt::Debug + Clone + 'static>(
        s: impl Strategy<Value = T> + 'static,
    ) -> impl Strategy<Value = Option<T>> {
        prop_oneof![Just(None), s.prop_map(Some)]
    }

    fn operation_strategy() -> impl Strategy<Value = Operation> {
        let kinds = prop_oneof![
            Just(OpKind::Write),
            Just(OpKind::Read),
            Just(OpKind::Deliver),
            Just(OpKind::Connect)
        ];
        let patterns = prop_oneof![
            Just(Pattern::Chat),
            Just(Pattern::Batch),
            Just(Pattern::Job),
            Just(Pattern::Idle),
            Just(Pattern::ReadBack),
            Just(Pattern::ReadBackReplica),
            Just(Pattern::InitialState)
        ];
        let outcomes = prop_oneof![Just(Outcome::Ok), Just(Outcome::Fail), Just(Outcome::Info)];
        let numbers = prop_oneof![Just(0u64), 1u64..1000, any::<u64>()];
        let items = proptest::collection::vec(
            (numbers.clone(), text()).prop_map(|(seq, value)| ReadItem { seq, value }),
            0..5,
        );
        (
            (text(), text(), text(), any::<bool>(), options(text())),
            (
                options(text()),
                kinds,
                patterns,
                options(text()),
                any::<u32>(),
            ),
            (
                text(),
                options(numbers.clone()),
                numbers.clone(),
                numbers.clone(),
            ),
            (numbers.clone(), numbers, outcomes, options(text())),
            (options(items), options(text())),
        )
            .prop_map(
                |(
                    (tenant, process, node, reconnected, sent_node),
                    (client_zone, kind, pattern, value, attempt),
                    (stream, seq, invoke_ns, complete_ns),
                    (invoke_unix_ms, complete_unix_ms, outcome, error),
                    (read, served_tenant),
                )| Operation {
                    tenant,
                    process,
                    node,
                    reconnected,
                    sent_node,
                    client_zone,
                    kind,
                    pattern,
                    value,
                    attempt,
                    stream,
                    seq,
                    invoke_ns,
                    complete_ns,
                    invoke_unix_ms,
                    complete_unix_ms,
                    outcome,
                    error,
                    read,
                    served_tenant,
                },
            )
    }

    /// The operation a scanned line says, owned.
    fn owned(l: &OpLine<'_>) -> Operation {
        let h = &l.head;
        let s = |x: &str| x.to_owned();
        Operation {
            tenant: s(h.tenant),
            process: s(h.process),
            node: s(h.node),
            reconnected: h.reconnected,
            sent_node: h.sent_node.map(s),
            client_zone: h.client_zone.map(s),
            kind: h.kind,
            pattern: h.pattern,
            value: h.value.map(s),
            attempt: h.attempt,
            stream: s(h.stream),
            seq: h.seq,
            invoke_ns: h.invoke_ns,
            complete_ns: h.complete_ns,
            invoke_unix_ms: l.invoke_unix_ms,
            complete_unix_ms: l.complete_unix_ms,
            outcome: l.outcome,
            error: l.error.map(s),
            read: l.read.map(|items| {
                items
                    .iter()
                    .map(|i| ReadItem {
                        seq: i.seq,
                        value: s(i.value),
                    })
                    .collect()
            }),
            served_tenant: l.served_tenant.map(s),
        }
    }

    /// Whether serde_json writes the string as its bytes between quotes.
    fn plain(s: &str) -> bool {
        !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20)
    }

    fn all_plain(op: &Operation) -> bool {
        [&op.tenant, &op.process, &op.node, &op.stream]
            .into_iter()
            .chain(&op.sent_node)
            .chain(&op.client_zone)
            .chain(&op.value)
            .chain(&op.error)
            .chain(&op.served_tenant)
            .chain(op.read.iter().flatten().map(|i| &i.value))
            .all(|s| plain(s))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every line serde_json writes is read here, unless a string in it needed an escape,
        /// and read to what serde_json reads.
        #[test]
        fn reads_what_serde_json_writes(op in operation_strategy()) {
            let line = serde_json::to_vec(&op).unwrap();
            match operation(&line) {
                Some(l) => prop_assert_eq!(owned(&l), op),
                None => prop_assert!(!all_plain(&op), "declined {}", String::from_utf8_lossy(&line)),
            }
        }

        /// Whatever a line becomes (a byte changed, added or removed), if it is read here,
        /// serde_json reads it too, to the same operation.
        #[test]
        fn reads_nothing_serde_json_would_not(
            op in operation_strategy(),
            at in any::<prop::sample::Index>(),
            byte in prop_oneof![Just(b' '), Just(b'"'), Just(b'\\'), Just(b','), Just(b'0'), Just(b'9'), Just(b'}'), Just(b'{'), Just(b'-'), Just(b'.'), Just(b'e'), Just(b'n'), Just(b'\r'), Just(0xff), any::<u8>()],
            edit in 0..3u8,
        ) {
            let mut line = serde_json::to_vec(&op).unwrap();
            let i = at.index(line.len() + 1);
            match edit {
                0 if i < line.len() => line[i] = byte,
                1 => line.insert(i, byte),
                _ if i < line.len() => { line.remove(i); }
                _ => line.push(byte),
            }
            if let Some(l) = operation(&line) {
                let parsed: Result<Operation, _> = serde_json::from_slice(&line);
                prop_assert!(parsed.is_ok(), "serde_json rejects {}: {:?}", String::from_utf8_lossy(&line), parsed);
                prop_assert_eq!(owned(&l), parsed.unwrap());
            }
        }

        /// The spliced line is what serde_json writes for the operation so changed.
        #[test]
        fn rebased_lines_are_serde_jsons(op in operation_strategy(), shift in any::<u64>(), drop_mask in any::<u64>()) {
            let line = serde_json::to_vec(&op).unwrap();
            let Some(l) = operation(&line) else { return Ok(()); };
            let mut k = 0;
            let mut out = Vec::new();
            let left_out = write_rebased(&mut out, &line, &l, shift, |_| { k += 1; drop_mask & (1 << (k % 64)) == 0 }).unwrap();
            let mut expected = op.clone();
            expected.invoke_ns = op.invoke_ns.saturating_sub(shift);
            expected.complete_ns = op.complete_ns.saturating_sub(shift);
            let mut k = 0;
            let mut dropped = 0;
            if let Some(items) = expected.read.as_mut() {
                items.retain(|_| { k += 1; let keep = drop_mask & (1 << (k % 64)) == 0; dropped += u64::from(!keep); keep });
            }
            prop_assert_eq!(left_out, dropped);
            prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&expected).unwrap());
        }

        #[test]
        fn leader_lines(at_ns in any::<u64>(), observer in text(), stream in text(), leader in options(text()), shift in any::<u64>()) {
            let o = Observation::Leader { at_ns, observer: observer.clone(), stream: stream.clone(), leader: leader.clone() };
            let line = serde_json::to_vec(&o).unwrap();
            match super::leader(&line) {
                Some(l) => {
                    prop_assert_eq!((l.at_ns, l.observer, l.stream, l.leader), (at_ns, observer.as_str(), stream.as_str(), leader.as_deref()));
                    let mut out = Vec::new();
                    write_leader_rebased(&mut out, &line, &l, shift).unwrap();
                    let moved = Observation::Leader { at_ns: at_ns.saturating_sub(shift), observer, stream, leader };
                    prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&moved).unwrap());
                }
                None => prop_assert!(!(plain(&observer) && plain(&stream) && leader.as_deref().is_none_or(plain))),
            }
        }
    }

    #[test]
    fn declines_other_layouts_json_allows() {
        let canonical = r#"{"tenant":"t","process":"p","node":"n","kind":"write","pattern":"chat","value":"t/p/1","attempt":1,"stream":"s","invoke_ns":1,"complete_ns":2,"invoke_unix_ms":3,"complete_unix_ms":4,"outcome":"ok"}"#;
        assert!(operation(canonical.as_bytes()).is_some());
        for (other, serde_reads_it) in [
            (canonical.replace(':', ": "), true),
            (
                canonical.replace("\"node\":\"n\",", "\"node\":\"n\",\"reconnected\":false,"),
                true,
            ),
            (canonical.replace("\"t/p/1\"", "\"t\\/p/1\""), true),
            (canonical.replace("\"attempt\":1,", ""), true),
            (canonical.replace("\"ok\"}", "\"ok\",\"error\":null}"), true),
            (canonical.to_owned() + "\r", true),
            (canonical.to_owned() + " ", true),
            (
                canonical.replace("\"invoke_ns\":1", "\"invoke_ns\":01"),
                false,
            ),
            (
                canonical.replace("\"invoke_ns\":1", "\"invoke_ns\":1.0"),
                false,
            ),
        ] {
            assert!(operation(other.as_bytes()).is_none(), "{other}");
            assert_eq!(
                serde_json::from_str::<Operation>(&other).is_ok(),
                serde_reads_it,
                "{other}"
            );
        }
        let leader =
            r#"{"type":"leader","at_ns":5,"observer":"n1","stream":"$meta","leader":null}"#;
        assert_eq!(super::leader(leader.as_bytes()).map(|l| l.at_ns), Some(5));
        assert!(super::leader(leader.replace("null", "\"n2\"").as_bytes()).is_some());
        assert!(super::leader(br#"{"type":"settled","at_ns":5}"#).is_none());
    }
}
