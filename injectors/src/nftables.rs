//! Partitions the kernel ends on its own: nf_tables objects written over nfnetlink.
//!
//! Why nf_tables: a policy rule (`ip rule … prohibit`) has no expiry, so a partition made of
//! them lasts until some process of ours deletes it. An nf_tables set element can carry a
//! timeout, and the kernel stops matching it when the timeout runs out, with no process alive.
//! So each partition slot gets, inside every namespace it touches:
//! - a set of blocked IPv4 destinations with flag `timeout`, whose elements carry a timeout
//!   equal to the time left until the fault's deadline: `p<priority>` (a hash set of single
//!   addresses) or, when a wider prefix is blocked, `p<priority>n` (an interval set);
//! - two base chains `p<priority>-out` (hook `output`) and `p<priority>-fwd` (hook `forward`),
//!   each with one rule `ip daddr @<set> reject with icmp admin-prohibited`;
//!
//! all in Faultline's own table `ip faultline`. Nothing else is ever put there, so the table
//! name marks everything as ours, and the set name carries the slot's priority, as the policy
//! rules' priority did.
//!
//! Costs measured on kernel 6.18 shape the rest: a batch that fails after creating a base
//! chain, deleting a base chain, and closing the socket after a deletion each make the kernel
//! wait for an RCU grace period (10–20 ms). So an install looks before it creates, a revert
//! deletes only elements (empty sets and chains stay for reuse until [`tidy`]), and sockets are
//! closed on a separate thread.
//!
//! Why no crate: `rustables` is GPL-3.0 (this project is Apache-2.0), `nftnl` binds the C
//! libraries libnftnl and libmnl, and `netlink-packet-netfilter` has no nf_tables messages.
//! The handful of messages we need are short attribute lists, written here on top of
//! `netlink-sys` (already in the tree under `rtnetlink`). No `nft` is exec'ed.
//!
//! Every change in one namespace is one nf_tables batch, which the kernel applies atomically:
//! a namespace holds all of a slot's objects or none. A batch is processed synchronously while
//! `send` runs, so every answer is waiting on the socket when `send` returns.

use std::collections::BTreeSet;
use std::io;
use std::net::Ipv4Addr;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket};

use crate::net_partition::{is_ours, PartitionRule};

/// Faultline's nf_tables table in every namespace it partitions (family `ip`).
pub const TABLE: &str = "faultline";

/// One partition slot's set in one namespace: its priority, and whether it holds prefixes
/// wider than one address. Single addresses go in a hash set (`p<priority>`); wider prefixes
/// need an interval set (`p<priority>n`), whose changes the kernel commits far more slowly
/// (some 15 ms against 0.3 ms here), so it is used only when needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Slot {
    priority: u32,
    wide: bool,
}

impl Slot {
    fn set(self) -> String {
        if self.wide {
            format!("p{}n", self.priority)
        } else {
            format!("p{}", self.priority)
        }
    }

    fn chain(self, suffix: &str) -> String {
        format!("p{}-{suffix}", self.priority)
    }
}

/// The slot one of our set names stands for, if it is one and its priority is in our range.
pub(crate) fn slot_of_set(name: &str) -> Option<Slot> {
    let digits = name.strip_prefix('p')?;
    let (digits, wide) = match digits.strip_suffix('n') {
        Some(rest) => (rest, true),
        None => (digits, false),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let priority = digits.parse().ok().filter(|p| is_ours(*p))?;
    Some(Slot { priority, wide })
}

/// A half-open range of IPv4 addresses `[start, end)`; `end` is `2^32` for a range that runs to
/// the top of the address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Interval {
    start: u32,
    end: u64,
}

impl Interval {
    /// The addresses of `destination/prefix_len`; the host bits of `destination` are ignored.
    pub(crate) fn of_prefix(destination: Ipv4Addr, prefix_len: u8) -> Interval {
        let prefix_len = prefix_len.min(32);
        let size = 1u64 << (32 - u32::from(prefix_len));
        let start = u64::from(u32::from(destination)) & !(size - 1);
        Interval {
            start: start as u32,
            end: start + size,
        }
    }

    /// The prefix this interval is, as address and length. Our sets only ever hold prefixes; a
    /// range that is not one is shown by the largest aligned prefix it starts with.
    pub(crate) fn as_prefix(self) -> (Ipv4Addr, u8) {
        let size = self.end - u64::from(self.start);
        let by_size = size.max(1).ilog2();
        let by_alignment = if self.start == 0 {
            32
        } else {
            self.start.trailing_zeros()
        };
        let bits = by_size.min(by_alignment).min(32);
        (Ipv4Addr::from(self.start), (32 - bits) as u8)
    }

    fn contains(self, other: Interval) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

/// Keeps the intervals that no other interval of the list contains, sorted: the kernel refuses
/// overlapping elements in one set, and a covered prefix is blocked by its cover anyway.
fn outermost(intervals: impl IntoIterator<Item = Interval>) -> Vec<Interval> {
    let all: BTreeSet<Interval> = intervals.into_iter().collect();
    all.iter()
        .copied()
        .filter(|inner| {
            !all.iter()
                .any(|outer| outer != inner && outer.contains(*inner))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// What a namespace's share of a partition turns into.
// ---------------------------------------------------------------------------------------------

/// Installs, in the current thread's namespace, the slots of `rules` (all of one namespace),
/// each element expiring after `timeout_ms`. Idempotent: a slot whose set already exists only
/// gets its elements (again).
pub(crate) fn install(rules: &[PartitionRule], timeout_ms: u64) -> Result<(), String> {
    let socket = open()?;
    // Look before creating: a batch that fails after registering a hook costs the kernel an
    // RCU grace period to undo.
    let existing = dump_slots(&socket)?;
    for (priority, intervals) in by_slot(rules) {
        let intervals = outermost(intervals);
        let wide = intervals.iter().any(|i| i.end - u64::from(i.start) > 1);
        if let Some(slot) = existing.iter().find(|s| s.priority == priority) {
            if wide && !slot.wide {
                return Err(format!(
                    "set {} holds single addresses only and cannot take prefixes; revert the partition at priority {priority} first",
                    slot.set()
                ));
            }
            let mut elements = Batch::new();
            elements.new_elements(*slot, &intervals, timeout_ms);
            let failures = elements.send(&socket)?;
            if !failures.is_empty() {
                return Err(describe_failures(&elements, &failures));
            }
            continue;
        }
        let slot = Slot { priority, wide };
        let mut batch = Batch::new();
        batch.new_table();
        batch.new_set(slot);
        for (suffix, hook) in CHAINS {
            batch.new_chain(slot, suffix, hook);
            batch.new_rule(slot, suffix);
        }
        batch.new_elements(slot, &intervals, timeout_ms);
        let failures = batch.send(&socket)?;
        if !failures.is_empty() {
            return Err(describe_failures(&batch, &failures));
        }
    }
    Ok(())
}

/// Removes, in the current thread's namespace, the elements of `rules` (all of one
/// namespace). Whatever is gone already (expired, never installed) counts as removed.
///
/// The slot's set and chains stay, empty, and the next partition in that slot reuses them:
/// deleting a base chain makes the kernel wait for an RCU grace period (10–20 ms here), which
/// would make a revert far slower than an install. An empty set matches nothing; reconcile
/// removes such leftovers with [`tidy`].
pub(crate) fn remove(rules: &[PartitionRule]) -> Result<(), String> {
    let socket = open()?;
    remove_with(&socket, rules)
}

fn remove_with(socket: &Socket, rules: &[PartitionRule]) -> Result<(), String> {
    let existing = dump_slots(socket)?;
    for (priority, intervals) in by_slot(rules) {
        let Some(slot) = existing.iter().find(|s| s.priority == priority).copied() else {
            continue;
        };
        let requested: BTreeSet<Interval> = intervals.into_iter().collect();
        // Usually every element is there: delete them at once. Listing a set's elements first
        // costs more than the delete itself, so that is kept for when one is missing.
        let mut batch = Batch::new();
        batch.delete_elements(slot, &requested.iter().copied().collect::<Vec<_>>());
        let failures = batch.send(socket)?;
        if failures.is_empty() {
            continue;
        }
        if !failures.iter().all(|f| f.errno == libc::ENOENT) {
            return Err(describe_failures(&batch, &failures));
        }
        // Some element expired or was never installed, which fails the whole batch: delete
        // those that are present. One can expire between the dump and the delete: a few tries.
        let mut last = None;
        for _ in 0..3 {
            let present = dump_elements(socket, slot)?.unwrap_or_default();
            let doomed: Vec<Interval> = present
                .into_iter()
                .filter(|i| requested.contains(i))
                .collect();
            if doomed.is_empty() {
                last = None;
                break;
            }
            let mut batch = Batch::new();
            batch.delete_elements(slot, &doomed);
            let failures = batch.send(socket)?;
            if failures.is_empty() {
                last = None;
                break;
            }
            let message = describe_failures(&batch, &failures);
            if !failures.iter().all(|f| f.errno == libc::ENOENT) {
                return Err(message);
            }
            last = Some(message);
        }
        if let Some(message) = last {
            return Err(message);
        }
    }
    Ok(())
}

/// Deletes, in the current thread's namespace, the chains and set of every slot of ours that
/// holds no unexpired element and whose priority is not in `keep`: what expired or reverted
/// partitions left. Slow (an RCU grace period per batch), so reconcile calls it, not revert.
pub(crate) fn tidy(keep: &BTreeSet<u32>) -> Result<Vec<u32>, String> {
    let socket = open()?;
    let mut removed = Vec::new();
    for slot in dump_slots(&socket)? {
        if keep.contains(&slot.priority) {
            continue;
        }
        if !dump_elements(&socket, slot)?.unwrap_or_default().is_empty() {
            continue;
        }
        let mut batch = Batch::new();
        for (suffix, _) in CHAINS {
            batch.delete_chain(slot, suffix);
        }
        batch.delete_set(slot);
        let failures = batch.send(&socket)?;
        // ENOENT: somebody else tidied it first.
        if !failures.iter().all(|f| f.errno == libc::ENOENT) {
            return Err(describe_failures(&batch, &failures));
        }
        removed.push(slot.priority);
    }
    Ok(removed)
}

/// Lists, in the current thread's namespace, the unexpired elements of our sets as rules of
/// namespace `netns`, sorted. A namespace without our table has none.
pub(crate) fn list(netns: &str) -> Result<Vec<PartitionRule>, String> {
    let socket = open()?;
    let mut rules = Vec::new();
    for slot in dump_slots(&socket)? {
        for interval in dump_elements(&socket, slot)?.unwrap_or_default() {
            let (destination, prefix_len) = interval.as_prefix();
            rules.push(PartitionRule {
                netns: netns.to_owned(),
                destination,
                prefix_len,
                priority: slot.priority,
            });
        }
    }
    rules.sort();
    Ok(rules)
}

/// A blocked prefix (address, length) with the milliseconds it has left.
pub type Expiring = (Ipv4Addr, u8, u64);

/// Every element of our set at `priority` with the time it has left, in milliseconds: for
/// tests and diagnostics. `None` when the slot has no set here.
pub(crate) fn expirations(priority: u32) -> Result<Option<Vec<Expiring>>, String> {
    let socket = open()?;
    let Some(slot) = dump_slots(&socket)?
        .into_iter()
        .find(|s| s.priority == priority)
    else {
        return Ok(None);
    };
    let Some(elements) = dump_raw_elements(&socket, slot)? else {
        return Ok(None);
    };
    Ok(Some(
        pair_intervals(slot, &elements)
            .into_iter()
            .map(|(interval, left)| {
                let (address, len) = interval.as_prefix();
                (address, len, left)
            })
            .collect(),
    ))
}

/// The two base chains of a slot: name suffix and netfilter hook.
const CHAINS: [(&str, u32); 2] = [("out", NF_INET_LOCAL_OUT), ("fwd", NF_INET_FORWARD)];

fn by_slot(rules: &[PartitionRule]) -> std::collections::BTreeMap<u32, Vec<Interval>> {
    let mut slots = std::collections::BTreeMap::<u32, Vec<Interval>>::new();
    for rule in rules {
        slots
            .entry(rule.priority)
            .or_default()
            .push(Interval::of_prefix(rule.destination, rule.prefix_len));
    }
    slots
}

/// An nfnetlink socket that is closed on another thread.
///
/// Closing an nfnetlink socket waits for the kernel to finish releasing whatever any earlier
/// transaction in the namespace deleted (an RCU grace period, some 10 ms). Every change is
/// complete once its batch is answered, so the close need not hold up the caller.
struct NftSocket(Option<Socket>);

impl std::ops::Deref for NftSocket {
    type Target = Socket;

    fn deref(&self) -> &Socket {
        self.0.as_ref().expect("the socket lives until drop")
    }
}

impl Drop for NftSocket {
    fn drop(&mut self) {
        if let Some(socket) = self.0.take() {
            let closer = std::thread::Builder::new()
                .name("nft close".into())
                .spawn(move || drop(socket));
            // Without a thread, close it here: slower, never wrong.
            if let Err(error) = closer {
                drop(error);
            }
        }
    }
}

fn open() -> Result<NftSocket, String> {
    let mut socket = Socket::new(NETLINK_NETFILTER)
        .map_err(|e| format!("cannot open an nfnetlink socket: {e}"))?;
    socket
        .bind_auto()
        .map_err(|e| format!("cannot bind an nfnetlink socket: {e}"))?;
    Ok(NftSocket(Some(socket)))
}

/// Our slots' sets in our table; none when the table does not exist.
fn dump_slots(socket: &Socket) -> Result<Vec<Slot>, String> {
    let mut request = Message::new(NFT_MSG_GETSET, NLM_F_REQUEST | NLM_F_DUMP, 1, NFPROTO_IPV4);
    request.attr_str(NFTA_SET_TABLE, TABLE);
    let Some(answers) = dump(socket, &request.finish(), "listing our sets")? else {
        return Ok(Vec::new());
    };
    let mut slots = Vec::new();
    for payload in answers {
        for (kind, value) in attributes(&payload) {
            if kind == NFTA_SET_NAME {
                if let Some(slot) = as_str(value).and_then(slot_of_set) {
                    slots.push(slot);
                }
            }
        }
    }
    slots.sort_unstable();
    slots.dedup();
    Ok(slots)
}

/// One element as dumped: key, whether it ends an interval, milliseconds left.
type RawElement = (u32, bool, u64);

fn dump_raw_elements(socket: &Socket, slot: Slot) -> Result<Option<Vec<RawElement>>, String> {
    let mut request = Message::new(
        NFT_MSG_GETSETELEM,
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
        NFPROTO_IPV4,
    );
    request.attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
    request.attr_str(NFTA_SET_ELEM_LIST_SET, &slot.set());
    let Some(answers) = dump(socket, &request.finish(), "listing a set's elements")? else {
        return Ok(None);
    };
    let mut elements = Vec::new();
    for payload in answers {
        for (kind, list) in attributes(&payload) {
            if kind != NFTA_SET_ELEM_LIST_ELEMENTS {
                continue;
            }
            for (_, element) in attributes(list) {
                let mut key = None;
                let mut end = false;
                let mut left = 0;
                for (kind, value) in attributes(element) {
                    match kind {
                        NFTA_SET_ELEM_KEY => {
                            key = attributes(value)
                                .find(|(k, _)| *k == NFTA_DATA_VALUE)
                                .and_then(|(_, v)| <[u8; 4]>::try_from(v).ok())
                                .map(u32::from_be_bytes);
                        }
                        NFTA_SET_ELEM_FLAGS => {
                            end = be_u32(value).is_some_and(|f| f & NFT_SET_ELEM_INTERVAL_END != 0);
                        }
                        NFTA_SET_ELEM_EXPIRATION => left = be_u64(value).unwrap_or(0),
                        _ => {}
                    }
                }
                if let Some(key) = key {
                    elements.push((key, end, left));
                }
            }
        }
    }
    Ok(Some(elements))
}

/// The intervals of our set for `slot`; `None` when the set (or our table) does not exist.
fn dump_elements(socket: &Socket, slot: Slot) -> Result<Option<Vec<Interval>>, String> {
    Ok(dump_raw_elements(socket, slot)?.map(|raw| {
        pair_intervals(slot, &raw)
            .into_iter()
            .map(|(i, _)| i)
            .collect()
    }))
}

/// The intervals of a set's elements, with the time each has left. A hash set's elements are
/// single addresses. An interval set keeps starts and ends as separate elements, and an
/// interval's end is the lowest end above its start (our intervals never overlap).
fn pair_intervals(slot: Slot, elements: &[RawElement]) -> Vec<(Interval, u64)> {
    let ends: BTreeSet<u64> = elements
        .iter()
        .filter(|(_, end, _)| *end)
        .map(|(key, _, _)| u64::from(*key))
        .collect();
    let mut intervals: Vec<(Interval, u64)> = elements
        .iter()
        .filter(|(_, end, _)| !*end)
        .map(|(key, _, left)| {
            let start = u64::from(*key);
            let end = if slot.wide {
                ends.range(start + 1..).next().copied().unwrap_or(1 << 32)
            } else {
                start + 1
            };
            (Interval { start: *key, end }, *left)
        })
        .collect();
    intervals.sort();
    intervals
}

// ---------------------------------------------------------------------------------------------
// Messages.
// ---------------------------------------------------------------------------------------------

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_APPEND: u16 = 0x800;
const NLA_F_NESTED: u16 = 0x8000;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFPROTO_UNSPEC: u8 = 0;
const NFPROTO_IPV4: u8 = 2;
const NF_INET_FORWARD: u32 = 2;
const NF_INET_LOCAL_OUT: u32 = 3;
const NF_ACCEPT: u32 = 1;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_DELSET: u16 = 11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_REG_1: u32 = 1;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_REJECT_TYPE: u16 = 1;
const NFTA_REJECT_ICMP_CODE: u16 = 2;
const NFT_REJECT_ICMP_UNREACH: u32 = 0;
/// ICMP "communication administratively prohibited": the sender's socket fails at once
/// (EHOSTUNREACH), as it did with a `prohibit` rule, instead of waiting for a timeout.
const ICMP_PKT_FILTERED: u8 = 13;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_ID: u16 = 10;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_TIMEOUT: u32 = 0x10;
/// nft's own data type number for `ipv4_addr`, so that `nft list` shows addresses.
const NFT_DATATYPE_IPADDR: u32 = 7;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
const NFTA_DATA_VALUE: u16 = 1;

/// The set id that ties a rule's lookup to a set created in the same batch.
const SET_ID: u32 = 1;

/// One netlink message being written: header, `nfgenmsg`, attributes.
struct Message {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Message {
    fn new(nft_type: u16, flags: u16, seq: u32, family: u8) -> Message {
        Message::raw(
            (NFNL_SUBSYS_NFTABLES << 8) | nft_type,
            flags,
            seq,
            family,
            0,
        )
    }

    fn raw(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Message {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        buf.push(family);
        buf.push(0); // NFNETLINK_V0
        buf.extend_from_slice(&res_id.to_be_bytes());
        Message {
            buf,
            nests: Vec::new(),
        }
    }

    fn attr(&mut self, kind: u16, value: &[u8]) {
        let len = 4 + value.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.pad();
    }

    fn attr_str(&mut self, kind: u16, value: &str) {
        let mut bytes = Vec::with_capacity(value.len() + 1);
        bytes.extend_from_slice(value.as_bytes());
        bytes.push(0);
        self.attr(kind, &bytes);
    }

    fn attr_u32(&mut self, kind: u16, value: u32) {
        self.attr(kind, &value.to_be_bytes());
    }

    fn attr_u64(&mut self, kind: u16, value: u64) {
        self.attr(kind, &value.to_be_bytes());
    }

    fn nest(&mut self, kind: u16) {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
    }

    fn end_nest(&mut self) {
        let start = self.nests.pop().expect("end_nest without nest");
        let len = (self.buf.len() - start) as u16;
        self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        debug_assert!(self.nests.is_empty(), "unclosed nested attribute");
        let len = self.buf.len() as u32;
        self.buf[..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// An nf_tables batch: messages between BATCH_BEGIN and BATCH_END, applied atomically.
struct Batch {
    buf: Vec<u8>,
    /// What each acknowledged message does, by sequence number, for error messages.
    steps: Vec<(u32, String)>,
    next_seq: u32,
}

/// A message of a batch that the kernel refused.
struct Failure {
    seq: u32,
    errno: i32,
}

impl Batch {
    fn new() -> Batch {
        let mut batch = Batch {
            buf: Vec::with_capacity(2048),
            steps: Vec::new(),
            next_seq: 1,
        };
        let begin = Message::raw(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            0,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
        );
        batch.buf.extend_from_slice(&begin.finish());
        batch
    }

    /// Starts the next message; the caller adds its attributes and hands it to `push`.
    fn message(&mut self, nft_type: u16, flags: u16) -> (u32, Message) {
        let seq = self.next_seq;
        self.next_seq += 1;
        (
            seq,
            Message::new(
                nft_type,
                NLM_F_REQUEST | NLM_F_ACK | flags,
                seq,
                NFPROTO_IPV4,
            ),
        )
    }

    fn push(&mut self, seq: u32, message: Message, what: String) {
        self.buf.extend_from_slice(&message.finish());
        self.steps.push((seq, what));
    }

    fn new_table(&mut self) {
        let (seq, mut m) = self.message(NFT_MSG_NEWTABLE, NLM_F_CREATE);
        m.attr_str(NFTA_TABLE_NAME, TABLE);
        self.push(seq, m, format!("creating table ip {TABLE}"));
    }

    fn new_set(&mut self, slot: Slot) {
        let (seq, mut m) = self.message(NFT_MSG_NEWSET, NLM_F_CREATE | NLM_F_EXCL);
        let flags = if slot.wide {
            NFT_SET_INTERVAL | NFT_SET_TIMEOUT
        } else {
            NFT_SET_TIMEOUT
        };
        m.attr_str(NFTA_SET_TABLE, TABLE);
        m.attr_str(NFTA_SET_NAME, &slot.set());
        m.attr_u32(NFTA_SET_FLAGS, flags);
        m.attr_u32(NFTA_SET_KEY_TYPE, NFT_DATATYPE_IPADDR);
        m.attr_u32(NFTA_SET_KEY_LEN, 4);
        m.attr_u32(NFTA_SET_ID, SET_ID);
        self.push(seq, m, format!("creating set {}", slot.set()));
    }

    fn new_chain(&mut self, slot: Slot, suffix: &str, hook: u32) {
        let (seq, mut m) = self.message(NFT_MSG_NEWCHAIN, NLM_F_CREATE);
        let name = slot.chain(suffix);
        m.attr_str(NFTA_CHAIN_TABLE, TABLE);
        m.attr_str(NFTA_CHAIN_NAME, &name);
        m.nest(NFTA_CHAIN_HOOK);
        m.attr_u32(NFTA_HOOK_HOOKNUM, hook);
        m.attr_u32(NFTA_HOOK_PRIORITY, 0);
        m.end_nest();
        m.attr_u32(NFTA_CHAIN_POLICY, NF_ACCEPT);
        m.attr_str(NFTA_CHAIN_TYPE, "filter");
        self.push(seq, m, format!("creating chain {name}"));
    }

    /// `ip daddr @<set> reject with icmp admin-prohibited`.
    fn new_rule(&mut self, slot: Slot, suffix: &str) {
        let (seq, mut m) = self.message(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND);
        let chain = slot.chain(suffix);
        m.attr_str(NFTA_RULE_TABLE, TABLE);
        m.attr_str(NFTA_RULE_CHAIN, &chain);
        m.nest(NFTA_RULE_EXPRESSIONS);
        m.nest(NFTA_LIST_ELEM);
        m.attr_str(NFTA_EXPR_NAME, "payload");
        m.nest(NFTA_EXPR_DATA);
        m.attr_u32(NFTA_PAYLOAD_DREG, NFT_REG_1);
        m.attr_u32(NFTA_PAYLOAD_BASE, NFT_PAYLOAD_NETWORK_HEADER);
        m.attr_u32(NFTA_PAYLOAD_OFFSET, 16); // IPv4 destination address
        m.attr_u32(NFTA_PAYLOAD_LEN, 4);
        m.end_nest();
        m.end_nest();
        m.nest(NFTA_LIST_ELEM);
        m.attr_str(NFTA_EXPR_NAME, "lookup");
        m.nest(NFTA_EXPR_DATA);
        m.attr_str(NFTA_LOOKUP_SET, &slot.set());
        m.attr_u32(NFTA_LOOKUP_SREG, NFT_REG_1);
        m.attr_u32(NFTA_LOOKUP_SET_ID, SET_ID);
        m.end_nest();
        m.end_nest();
        m.nest(NFTA_LIST_ELEM);
        m.attr_str(NFTA_EXPR_NAME, "reject");
        m.nest(NFTA_EXPR_DATA);
        m.attr_u32(NFTA_REJECT_TYPE, NFT_REJECT_ICMP_UNREACH);
        m.attr(NFTA_REJECT_ICMP_CODE, &[ICMP_PKT_FILTERED]);
        m.end_nest();
        m.end_nest();
        m.end_nest();
        self.push(seq, m, format!("adding the reject rule to chain {chain}"));
    }

    fn new_elements(&mut self, slot: Slot, intervals: &[Interval], timeout_ms: u64) {
        let (seq, mut m) = self.message(NFT_MSG_NEWSETELEM, NLM_F_CREATE);
        write_elements(&mut m, slot, intervals, Some(timeout_ms));
        self.push(
            seq,
            m,
            format!(
                "adding {} elements to set {} with a timeout of {timeout_ms} ms",
                intervals.len(),
                slot.set()
            ),
        );
    }

    fn delete_elements(&mut self, slot: Slot, intervals: &[Interval]) {
        let (seq, mut m) = self.message(NFT_MSG_DELSETELEM, 0);
        write_elements(&mut m, slot, intervals, None);
        self.push(
            seq,
            m,
            format!(
                "deleting {} elements of set {}",
                intervals.len(),
                slot.set()
            ),
        );
    }

    /// Deletes a chain with its rules (no `NLM_F_NONREC`, so the kernel removes the rules).
    fn delete_chain(&mut self, slot: Slot, suffix: &str) {
        let (seq, mut m) = self.message(NFT_MSG_DELCHAIN, 0);
        let name = slot.chain(suffix);
        m.attr_str(NFTA_CHAIN_TABLE, TABLE);
        m.attr_str(NFTA_CHAIN_NAME, &name);
        self.push(seq, m, format!("deleting chain {name}"));
    }

    fn delete_set(&mut self, slot: Slot) {
        let (seq, mut m) = self.message(NFT_MSG_DELSET, 0);
        m.attr_str(NFTA_SET_TABLE, TABLE);
        m.attr_str(NFTA_SET_NAME, &slot.set());
        self.push(seq, m, format!("deleting set {}", slot.set()));
    }

    /// Sends the batch and returns the messages the kernel refused (none: it was applied).
    fn send(&mut self, socket: &Socket) -> Result<Vec<Failure>, String> {
        let end = Message::raw(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            0,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
        );
        let mut buf = self.buf.clone();
        buf.extend_from_slice(&end.finish());
        socket
            .send(&buf, 0)
            .map_err(|e| format!("sending an nf_tables batch: {e}"))?;
        let mut failures = Vec::new();
        let mut answered = 0;
        let mut recv = Vec::with_capacity(RECV_BUFFER);
        // The kernel handled the batch inside `send`; read what is queued, without waiting.
        loop {
            recv.clear();
            match socket.recv(&mut recv, libc::MSG_DONTWAIT) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("reading the nf_tables answer: {e}")),
            }
            for (kind, seq, payload) in messages(&recv) {
                if kind != NLMSG_ERROR {
                    continue;
                }
                answered += 1;
                let code = payload
                    .get(..4)
                    .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                if code != 0 {
                    failures.push(Failure {
                        seq,
                        errno: code.abs(),
                    });
                }
            }
        }
        if answered == 0 {
            return Err("the kernel did not answer the nf_tables batch; is nf_tables available (module nf_tables)?".into());
        }
        Ok(failures)
    }
}

fn write_elements(m: &mut Message, slot: Slot, intervals: &[Interval], timeout_ms: Option<u64>) {
    m.attr_str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
    m.attr_str(NFTA_SET_ELEM_LIST_SET, &slot.set());
    m.nest(NFTA_SET_ELEM_LIST_ELEMENTS);
    for interval in intervals {
        m.nest(NFTA_LIST_ELEM);
        m.nest(NFTA_SET_ELEM_KEY);
        m.attr(NFTA_DATA_VALUE, &interval.start.to_be_bytes());
        m.end_nest();
        if let Some(timeout) = timeout_ms {
            m.attr_u64(NFTA_SET_ELEM_TIMEOUT, timeout.max(1));
        }
        m.end_nest();
        // In an interval set, a range ends with an end element, unless it runs to the top of
        // the address space.
        let end = u32::try_from(interval.end).ok().filter(|_| slot.wide);
        if let Some(end) = end {
            m.nest(NFTA_LIST_ELEM);
            m.nest(NFTA_SET_ELEM_KEY);
            m.attr(NFTA_DATA_VALUE, &end.to_be_bytes());
            m.end_nest();
            m.attr_u32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
            m.end_nest();
        }
    }
    m.end_nest();
}

fn describe_failures(batch: &Batch, failures: &[Failure]) -> String {
    failures
        .iter()
        .map(|failure| {
            let what = batch
                .steps
                .iter()
                .find(|(seq, _)| *seq == failure.seq)
                .map_or("the nf_tables batch", |(_, what)| what.as_str());
            format!("{what}: {}", io::Error::from_raw_os_error(failure.errno))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

const RECV_BUFFER: usize = 64 * 1024;

/// Sends a dump request and collects the payloads (after `nfgenmsg`) of its answers. `None`
/// when the kernel says the object asked about does not exist (`ENOENT`).
fn dump(socket: &Socket, request: &[u8], what: &str) -> Result<Option<Vec<Vec<u8>>>, String> {
    socket
        .send(request, 0)
        .map_err(|e| format!("{what}: {e}"))?;
    let mut answers = Vec::new();
    let mut recv = Vec::with_capacity(RECV_BUFFER);
    loop {
        recv.clear();
        socket
            .recv(&mut recv, 0)
            .map_err(|e| format!("{what}: {e}"))?;
        for (kind, _, payload) in messages(&recv) {
            match kind {
                NLMSG_DONE => return Ok(Some(answers)),
                NLMSG_ERROR => {
                    let code = payload
                        .get(..4)
                        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    if code == 0 {
                        continue;
                    }
                    if code.abs() == libc::ENOENT {
                        return Ok(None);
                    }
                    return Err(format!(
                        "{what}: {}",
                        io::Error::from_raw_os_error(code.abs())
                    ));
                }
                _ => answers.push(payload.get(4..).unwrap_or_default().to_vec()),
            }
        }
    }
}

/// The netlink messages in `buf`: type, sequence number, payload (after the 16-byte header).
fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < 16 {
            return None;
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < 16 || len > rest.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
        let payload = &rest[16..len];
        rest = &rest[(len + 3) & !3..];
        Some((kind, seq, payload))
    })
}

/// The attributes in `buf`: type (without flag bits) and value.
fn attributes(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        if len < 4 || len > rest.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        let value = &rest[4..len];
        rest = &rest[((len + 3) & !3).min(rest.len())..];
        Some((kind, value))
    })
}

fn as_str(value: &[u8]) -> Option<&str> {
    std::str::from_utf8(value.split(|b| *b == 0).next()?).ok()
}

fn be_u32(value: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(value.try_into().ok()?))
}

fn be_u64(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_become_intervals_and_back() {
        let cases: &[([u8; 4], u8, u32, u64)] = &[
            ([10, 203, 2, 1], 32, 0x0acb_0201, 0x0acb_0202),
            ([10, 244, 9, 0], 24, 0x0af4_0900, 0x0af4_0a00),
            // Host bits are ignored, as the kernel's prefix match would.
            ([10, 244, 9, 77], 24, 0x0af4_0900, 0x0af4_0a00),
            ([255, 255, 255, 255], 32, 0xffff_ffff, 1 << 32),
            ([0, 0, 0, 0], 0, 0, 1 << 32),
        ];
        for (address, len, start, end) in cases {
            let interval = Interval::of_prefix((*address).into(), *len);
            assert_eq!(
                interval,
                Interval {
                    start: *start,
                    end: *end
                },
                "{address:?}/{len}"
            );
            let (back, back_len) = interval.as_prefix();
            assert_eq!(back_len, *len);
            assert_eq!(Interval::of_prefix(back, back_len), interval);
        }
    }

    #[test]
    fn covered_prefixes_are_dropped() {
        let wide = Interval::of_prefix([10, 244, 9, 0].into(), 24);
        let inside = Interval::of_prefix([10, 244, 9, 5].into(), 32);
        let outside = Interval::of_prefix([10, 203, 1, 1].into(), 32);
        assert_eq!(
            outermost([inside, wide, outside, wide]),
            vec![outside, wide]
        );
    }

    #[test]
    fn dumped_elements_pair_into_intervals_even_when_adjacent() {
        // Two adjacent /32s share a key: the first one's end is the second one's start.
        let elements = [
            (0x0acb_0203, true, 0),
            (0x0acb_0202, false, 900),
            (0x0acb_0202, true, 0),
            (0x0acb_0201, false, 800),
            (0xffff_ffff, false, 700),
        ];
        let pairs = pair_intervals(
            Slot {
                priority: 24_000,
                wide: true,
            },
            &elements,
        );
        let shown: Vec<(Ipv4Addr, u8, u64)> = pairs
            .iter()
            .map(|(i, left)| {
                let (a, l) = i.as_prefix();
                (a, l, *left)
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                (Ipv4Addr::new(10, 203, 2, 1), 32, 800),
                (Ipv4Addr::new(10, 203, 2, 2), 32, 900),
                (Ipv4Addr::BROADCAST, 32, 700),
            ]
        );
    }

    #[test]
    fn only_our_set_names_carry_a_slot() {
        let narrow = Slot {
            priority: 24_007,
            wide: false,
        };
        let wide = Slot {
            priority: 24_007,
            wide: true,
        };
        assert_eq!(
            (narrow.set(), wide.set()),
            ("p24007".into(), "p24007n".into())
        );
        assert_eq!(slot_of_set("p24007"), Some(narrow));
        assert_eq!(slot_of_set("p24007n"), Some(wide));
        assert_eq!(narrow.chain("out"), wide.chain("out"));
        for other in [
            "p",
            "pn",
            "p24007-out",
            "p100",
            "q24007",
            "p+24007",
            "p 24007",
        ] {
            assert_eq!(slot_of_set(other), None, "{other:?}");
        }
    }

    #[test]
    fn single_addresses_in_a_hash_set_have_no_end_elements() {
        let mut m = Message::new(NFT_MSG_NEWSETELEM, 0, 1, NFPROTO_IPV4);
        let one = Interval::of_prefix([10, 203, 2, 1].into(), 32);
        let narrow = Slot {
            priority: 24_001,
            wide: false,
        };
        write_elements(&mut m, narrow, &[one], Some(5));
        let narrow_len = m.finish().len();
        let mut m = Message::new(NFT_MSG_NEWSETELEM, 0, 1, NFPROTO_IPV4);
        write_elements(
            &mut m,
            Slot {
                wide: true,
                ..narrow
            },
            &[one],
            Some(5),
        );
        assert!(
            m.finish().len() > narrow_len,
            "the interval set gets an end element"
        );
        assert_eq!(
            pair_intervals(narrow, &[(0x0acb_0201, false, 5)]),
            vec![(one, 5)]
        );
    }

    #[test]
    fn messages_are_well_formed_netlink() {
        let slot = Slot {
            priority: 24_003,
            wide: false,
        };
        let mut batch = Batch::new();
        batch.new_table();
        batch.new_set(slot);
        batch.new_chain(slot, "out", NF_INET_LOCAL_OUT);
        batch.new_rule(slot, "out");
        batch.new_elements(
            slot,
            &[Interval::of_prefix([10, 203, 2, 1].into(), 32)],
            1_500,
        );
        let parsed: Vec<(u16, u32, &[u8])> = messages(&batch.buf).collect();
        let kinds: Vec<u16> = parsed.iter().map(|(k, _, _)| *k).collect();
        let nft = |t: u16| (NFNL_SUBSYS_NFTABLES << 8) | t;
        assert_eq!(
            kinds,
            vec![
                NFNL_MSG_BATCH_BEGIN,
                nft(NFT_MSG_NEWTABLE),
                nft(NFT_MSG_NEWSET),
                nft(NFT_MSG_NEWCHAIN),
                nft(NFT_MSG_NEWRULE),
                nft(NFT_MSG_NEWSETELEM),
            ]
        );
        assert_eq!(parsed[2].1, 2, "sequence numbers count the messages");
        // The element carries its timeout, big-endian, inside the nested element list.
        let elements = parsed[5].2;
        let list = attributes(&elements[4..])
            .find(|(k, _)| *k == NFTA_SET_ELEM_LIST_ELEMENTS)
            .unwrap()
            .1;
        let first = attributes(list).next().unwrap().1;
        let timeout = attributes(first)
            .find(|(k, _)| *k == NFTA_SET_ELEM_TIMEOUT)
            .and_then(|(_, v)| be_u64(v));
        assert_eq!(timeout, Some(1_500));
        assert_eq!(batch.buf.len() % 4, 0);
    }
}
